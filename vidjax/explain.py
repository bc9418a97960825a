"""`python -m vidjax.explain`: attention rollout or Grad-CAM on a video.

The command line and the code are in vidjax/inference/explain/ (command.py
has the usage); this file keeps the command's name.
"""
import sys

from vidjax.inference.explain import command

if __name__ == '__main__':
  sys.exit(command.main(sys.argv))
