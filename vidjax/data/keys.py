"""Feature keys of the DMVR SequenceExample layout.

In a module of their own, without TensorFlow, because the dataset
conversion workers write records without importing it (video_worker.py).
"""

LABEL_INDEX_KEY = 'clip/label/index'
LABEL_TEXT_KEY = 'clip/label/text'
FILENAME_KEY = 'video/filename'
START_TIMESTAMP_KEY = 'clip/start/timestamp'
END_TIMESTAMP_KEY = 'clip/end/timestamp'
IMAGE_KEY = 'image/encoded'
