"""What a trained model looks at (`python -m vidjax.explain`).

  rollout.py  attention rollout for every TimeSformer scheme
  gradcam.py  Grad-CAM at a named layer of a convolutional model
  overlay.py  heat maps over the frames (PNG grid, GIF) and the .npz
  command.py  the command line
"""
