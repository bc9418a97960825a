"""Prints the pip requirement lines of pyproject.toml's dependencies plus extras.

Used by run.sh to build (and key the cache of) an environment without
installing vidjax itself into it. Usage: requirements.py PYPROJECT [extra,extra]
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
