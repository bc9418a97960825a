"""`python -m vidjax.tools.aot ...`: see vidjax/tools/aot/command.py."""
from vidjax.tools.aot import command

if __name__ == '__main__':
  command.run()
