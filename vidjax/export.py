"""`python -m vidjax.export`: a trained model as a TF SavedModel / TFLite.

The command line is vidjax/inference/export_command.py (usage there), the
export itself vidjax/inference/export.py; this file keeps the command's
name.
"""
import sys

from vidjax.inference import export_command

if __name__ == '__main__':
  sys.exit(export_command.main(sys.argv))
