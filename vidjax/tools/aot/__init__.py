"""Does a config's train step fit a TPU? Compiled ahead of time, on this CPU.

`python -m vidjax.tools.aot --config=... --topology=v5e:4x4` (the command
line and what it prints: command.py). One file per job:

  topology.py     TPU chips (peak figures) and libtpu's compile-only
                  devices of a topology;
  collectives.py  the collectives in optimized HLO text;
  compiling.py    the train step compiled for a topology (`compile_step`)
                  and the search for the largest batch that fits;
  report.py       a compile's per-chip figures (`Report`), the roofline
                  estimate and the text table;
  command.py      flags and main.
"""
