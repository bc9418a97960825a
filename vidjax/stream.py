"""`python -m vidjax.stream`: online TSM over a video file, frame by frame.

The command line and the code are in vidjax/inference/stream.py (it has
the usage); this file keeps the command's name.
"""
import sys

from vidjax.inference import stream

if __name__ == '__main__':
  sys.exit(stream.main(sys.argv))
