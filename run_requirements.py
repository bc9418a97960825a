"""run.sh's helper: prints pyproject.toml's dependency lines plus extras.

run.sh installs these lines into its environment (vidjax itself goes on
PYTHONPATH, not into it) and keys the cached environment by their hash, so
the output must not change for the same pyproject.toml: a changed line
would build a new environment.

Usage: python run_requirements.py PYPROJECT [extra,extra]
"""
import sys
import tomllib


def main(argv):
  with open(argv[1], 'rb') as f:
    project = tomllib.load(f)['project']
  lines = list(project['dependencies'])
  extras = [e for e in (argv[2] if len(argv) > 2 else '').split(',') if e]
  for extra in extras:
    lines += project['optional-dependencies'][extra]
  print('\n'.join(lines))


if __name__ == '__main__':
  main(sys.argv)
