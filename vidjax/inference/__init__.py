"""What a trained model is used for.

  loader.py        one loader: a training workdir, a checkpoint step or a
                   conversion -> model, variables, preprocessing contract
  contract.py      the preprocessing contract saved with every checkpoint
  source_flags.py  the flags every inference command shares
  stream.py        python -m vidjax.stream: online TSM over a video file
  online.py        the online TSM step, its state, the running prediction

Nothing is imported here: `vidjax.train` saves the contract
(`inference.contract`) without pulling in the tools.
"""
