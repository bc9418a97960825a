"""What a trained model is used for (docs/inference.md).

  contract.py         the preprocessing contract saved with every checkpoint
  loader.py           one loader: a training workdir, a checkpoint step or a
                      conversion -> model, variables, contract
  source_flags.py     the flags every inference command shares
  video_input.py      a video file -> the model's views, as evaluation
                      makes them (prepare's decoding, the contract's steps)
  batching.py         views packed into fixed batches over a device mesh
  predict.py          python -m vidjax.predict (predict_results.py: output)
  layers.py           a model's layers by name, captured
  features.py         python -m vidjax.features (feature_files.py: .npz +
                      manifest, resumable)
  export.py           jax2tf SavedModel (export_savedmodel.py), the online
                      step with explicit state (export_stream.py), TFLite
                      (export_tflite.py), python -m vidjax.export
                      (export_command.py)
  explain/            attention rollout, Grad-CAM, overlays,
                      python -m vidjax.explain
  stream.py           python -m vidjax.stream: online TSM over a video file
  online.py           the online TSM step, its state, the running prediction

Nothing is imported here: `vidjax.train` saves the contract
(`inference.contract`) without pulling in the tools.
"""
