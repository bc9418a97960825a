"""Running a command's `main(argv)` in-process, as the tests of each do."""


def run_main(capfd, main, program: str, *args):
  """`python -m PROGRAM ARGS` through `main`: (exit code, stdout, stderr)."""
  capfd.readouterr()
  try:
    code = main([program, *map(str, args)])
  except SystemExit as e:
    code = e.code
  out, err = capfd.readouterr()
  return code, out, err
