"""Streaming inference with online TSM: one frame at a time, state carried.

`python -m vidjax.stream` (command.py) feeds a video file's frames
(frames.py) through an online TSM's step (online.py) with the variables of
a trainer workdir or a conversion (checkpoint.py).
"""
