"""`python -m vidjax.features`: per-window features of a trained model.

The command line and the code are in vidjax/inference/ (features.py has
the usage); this file keeps the command's name.
"""
import sys

from vidjax.inference import features

if __name__ == '__main__':
  sys.exit(features.main(sys.argv))
