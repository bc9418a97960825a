"""`python -m vidjax.stream`: online TSM over a video file, frame by frame.

The command line and the code are in vidjax/streaming/ (command.py has the
usage); this file keeps the command's name.
"""
import sys

from vidjax.streaming import command

if __name__ == '__main__':
  sys.exit(command.main(sys.argv))
