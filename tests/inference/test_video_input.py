"""video_input: the frames preparation stores, evaluation's views, windows."""
import os

import numpy as np
import pytest

from tests.data import raw_video_fixtures as rv
from tests.inference import workdirs
from vidjax.data import video_io
from vidjax.data import video_worker
from vidjax.errors import VidjaxError
from vidjax.inference import contract as contract_lib
from vidjax.inference import video_input

FPS = 10.0  # The contract's; the file is written at 15 fps (resampled).


def make_contract(clips=2, crops=3, fps=FPS, short_side=24, **data):
  config = workdirs.tiny_config(num_frames=4, crop_size=16)
  config.data.num_test_clips = clips
  config.data.num_test_crops = crops
  config.data.update(data)
  return contract_lib.from_config(
      config, num_classes=5, class_names=None,
      preparation={'fps': fps, 'short_side': short_side, 'jpeg_quality': 90})


@pytest.fixture(scope='module')
def video(tmp_path_factory):
  # 30 frames at 15 fps: 2 s, resampled to 20 frames at 10 fps.
  path = str(tmp_path_factory.mktemp('videos') / 'v.mp4')
  return rv.write_video(path, 30, 15.0)


def test_reader_yields_preparations_frames(video):
  contract = make_contract()
  expected, info = video_io.decode_video(video, fps=FPS, short_side=24)
  with video_input.VideoReader(video, contract) as reader:
    assert (reader.fps, reader.source_fps) == (FPS, 15.0)
    assert (reader.height, reader.width) == (24, 36)
    assert reader.num_frames == 20 and reader.duration_s == pytest.approx(2.0)
    got = list(reader.frames())
  times = [t for t, _ in got]
  np.testing.assert_allclose(times, np.arange(20) / FPS, atol=1e-9)
  # Each frame as the record stores it: JPEG at quality 90, decoded.
  want = video_input.decode_jpegs(
      [video_worker.encode_jpeg(f, 90) for f in expected])
  np.testing.assert_array_equal(np.stack([f for _, f in got]), want)
  assert info.num_frames == reader.num_frames == 20
  with video_input.VideoReader(video, contract,
                               jpeg_roundtrip=False) as reader:
    raw = np.stack([f for _, f in reader.frames()])
  np.testing.assert_array_equal(raw, expected)
  assert np.abs(raw.astype(int) - want).max() > 0  # JPEG is lossy.


def test_reader_errors(tmp_path, video):
  contract = make_contract()
  empty = tmp_path / 'empty.mp4'
  empty.write_bytes(b'')
  garbage = tmp_path / 'garbage.mp4'
  garbage.write_bytes(b'not a video' * 100)
  cases = [
      (tmp_path / 'missing.mp4', video_io.VideoNotFoundError,
       'file not found'),
      (empty, video_io.VideoDecodeError, 'empty file (0 bytes)'),
      (garbage, video_io.VideoDecodeError, 'cannot open'),
  ]
  for path, kind, reason in cases:
    with pytest.raises(kind) as e:
      video_input.VideoReader(path, contract)
    assert isinstance(e.value, VidjaxError)
    assert str(e.value).startswith(f'{path}: {reason}')
    assert '\n' not in str(e.value)
  with pytest.raises(VidjaxError, match=r"no 'jpeg_quality'.*--jpeg_quality"):
    video_input.VideoReader(video, contract.replace(jpeg_quality=None))
  with pytest.raises(VidjaxError, match=r"no 'fps'.*--fps="):
    video_input.VideoReader(video, contract.replace(fps=None),
                            jpeg_roundtrip=False)


def test_clip_views_order_and_inputs(video):
  contract = make_contract()
  with video_input.VideoReader(video, contract) as reader:
    jpegs = [j for _, j in reader.encoded()]
  views = video_input.clip_views(jpegs, contract)
  assert views.shape == (6, 4, 16, 16, 3) and views.dtype == np.float32
  # Decoded frames fed past 'decode' give the same views as the JPEGs.
  decoded = video_input.decode_jpegs(jpegs)
  np.testing.assert_array_equal(
      video_input.clip_views(decoded, contract), views)
  # View order is clip * crops + crop: clip 1's crops are views 3..5.
  np.testing.assert_array_equal(
      video_input.clip_views(decoded, contract, clip_index=1), views[3:])
  # The clips differ in time (frame brightness), the crops in space.
  assert views[0].mean() < views[3].mean()
  assert not np.array_equal(views[0, :, 4:], views[2, :, 4:])
  with pytest.raises(VidjaxError, match=r'clip_index 2 not in \[0, 2\)'):
    video_input.clip_views(decoded, contract, clip_index=2)


def test_frame_view():
  contract = make_contract()
  frame = np.full((24, 36, 3), 255, np.uint8)
  frame[:, 18:] = 0
  view = video_input.frame_view(frame, contract)
  assert view.shape == (16, 16, 3) and view.dtype == np.float32
  # The centre crop of the resized frame (short side 24 -> 18, 27 wide)
  # straddles the edge: white on the left, black on the right, normalised.
  assert contract.eval_short_side == 18
  mean, std = np.array(contract.mean), np.array(contract.std)
  np.testing.assert_allclose(view[:, 0], np.broadcast_to(
      (1 - mean) / std, (16, 3)), rtol=1e-6)
  np.testing.assert_allclose(view[:, -1], np.broadcast_to(
      -mean / std, (16, 3)), rtol=1e-6)


def test_windows(video):
  contract = make_contract(clips=1, crops=1)
  with video_input.VideoReader(video, contract) as reader:
    whole = list(video_input.windows(reader, contract))
  assert [(w.index, w.start_s, w.num_frames) for w in whole] == [(0, 0.0, 20)]
  assert whole[0].end_s == pytest.approx(2.0)
  with video_input.VideoReader(video, contract) as reader:
    got = list(video_input.windows(reader, contract, window_s=0.8,
                                   stride_s=0.5))
  # Windows start every 0.5 s while the one before stops short of the end;
  # the last is cut at the video's end (2 s).
  assert [(w.start_s, round(w.end_s, 6), w.num_frames) for w in got] == [
      (0.0, 0.8, 8), (0.5, 1.3, 8), (1.0, 1.8, 8), (1.5, 2.0, 5)]
  with video_input.VideoReader(video, contract) as reader:
    got = list(video_input.windows(reader, contract, window_s=1.0))
  assert [(w.start_s, w.end_s, w.num_frames) for w in got] == [
      (0.0, 1.0, 10), (1.0, 2.0, 10)]
  with pytest.raises(VidjaxError, match='--stride_s needs --window_s'):
    video_input.check_window(None, 1.0)
  with pytest.raises(VidjaxError, match='--window_s must be a positive'):
    video_input.check_window(0.0, None)
