"""Video input data: DMVR TFRecords written by TFDS builders, read by tf.data.

formats    the DMVR SequenceExample layout (writer and parser)
builders/  TFDS builders (the synthetic `moving_shapes`, ...)
sampling   which frames of a video make a clip
transforms crops, resizes, flips, normalisation of decoded clips
sources    where records come from: builders or existing TFRecords
pipeline   `build_dataset` / `dataset_info`: what the trainer calls
"""
