"""`python -m vidjax.predict`: top-k classes of video files.

The command line and the code are in vidjax/inference/predict.py (it has
the usage); this file keeps the command's name.
"""
import sys

from vidjax.inference import predict

if __name__ == '__main__':
  sys.exit(predict.main(sys.argv))
