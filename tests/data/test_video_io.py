"""PyAV decoding/encoding: resampling, resizing, windows, broken files."""

import av
import numpy as np
import pytest

from tests.data import raw_video_fixtures as fx
from vidjax.data import video_io
from vidjax.errors import VidjaxError

SRC_FPS = {'mp4': 24, 'webm': 12}
NUM_FRAMES = {'mp4': 48, 'webm': 24}  # Both 2 s long.


@pytest.fixture(scope='module')
def videos(tmp_path_factory):
  root = tmp_path_factory.mktemp('videos')
  out = {}
  for ext in ('mp4', 'webm'):
    out[ext] = fx.write_video(str(root / f'clip.{ext}'), NUM_FRAMES[ext],
                              SRC_FPS[ext])
  out['portrait'] = fx.write_video(str(root / 'portrait.mp4'), 12, 24,
                                   height=48, width=32)
  return out


def _nearest(times, src_fps, num_src):
  """Independent nearest-in-time selection (ties to the earlier frame)."""
  src = np.arange(num_src) / src_fps
  return np.array([np.argmin(np.abs(src - t)) for t in times])


@pytest.mark.parametrize('ext', ['mp4', 'webm'])
def test_native_rate_returns_every_frame_in_order(videos, ext):
  frames, info = video_io.decode_video(videos[ext])
  assert frames.dtype == np.uint8
  assert frames.shape == (NUM_FRAMES[ext], fx.HEIGHT, fx.WIDTH, 3)
  np.testing.assert_array_equal(fx.frame_indices(frames),
                                np.arange(NUM_FRAMES[ext]))
  assert info.source_fps == pytest.approx(SRC_FPS[ext])
  assert info.source_duration_s == pytest.approx(2.0, abs=1e-3)
  assert info.duration_s == pytest.approx(2.0, abs=1e-3)
  assert info.num_frames == info.num_source_frames == NUM_FRAMES[ext]
  assert (info.source_height, info.source_width) == (fx.HEIGHT, fx.WIDTH)
  assert info.codec == {'mp4': 'h264', 'webm': 'vp9'}[ext]


@pytest.mark.parametrize('ext', ['mp4', 'webm'])
@pytest.mark.parametrize('fps', [5, 10, 30])
def test_resampling_picks_the_nearest_frame(videos, ext, fps):
  frames, info = video_io.decode_video(videos[ext], fps=fps)
  assert len(frames) == info.num_frames == 2 * fps  # fps x duration.
  expected = _nearest(np.arange(2 * fps) / fps, SRC_FPS[ext], NUM_FRAMES[ext])
  np.testing.assert_array_equal(fx.frame_indices(frames), expected)


@pytest.mark.parametrize('ext', ['mp4', 'webm'])
def test_time_window(videos, ext):
  frames, info = video_io.decode_video(videos[ext], fps=10, start_s=0.5,
                                       end_s=1.5)
  assert len(frames) == 10
  expected = _nearest(0.5 + np.arange(10) / 10, SRC_FPS[ext], NUM_FRAMES[ext])
  np.testing.assert_array_equal(fx.frame_indices(frames), expected)
  assert (info.start_s, info.end_s) == (0.5, 1.5)
  # A window past the end is clipped to the video.
  frames, info = video_io.decode_video(videos[ext], start_s=1.0, end_s=9.0)
  n = NUM_FRAMES[ext]
  np.testing.assert_array_equal(fx.frame_indices(frames),
                                np.arange(n // 2, n))
  assert info.end_s == pytest.approx(2.0, abs=1e-3)


def test_resize_short_side(videos):
  frames, _ = video_io.decode_video(videos['mp4'], short_side=16)
  assert frames.shape[1:] == (16, 24, 3)
  frames, _ = video_io.decode_video(videos['portrait'], short_side=16)
  assert frames.shape[1:] == (24, 16, 3)
  np.testing.assert_array_equal(fx.frame_indices(frames), np.arange(12))
  frames, _ = video_io.decode_video(videos['mp4'], short_side=64)
  assert frames.shape[1:] == (64, 96, 3)
  assert video_io.resized_shape(240, 427, 256) == (256, 455)


def _zero_frame_mp4(path):
  with av.open(path, mode='w') as container:
    stream = container.add_stream('libx264', rate=24)
    stream.width, stream.height, stream.pix_fmt = 48, 32, 'yuv420p'
    container.start_encoding()  # A valid header, then no frame at all.
    container.mux(stream.encode(None))


@pytest.mark.parametrize('ext', ['mp4', 'webm'])
def test_broken_files_raise_video_errors_with_reasons(videos, tmp_path, ext):
  truncated = str(tmp_path / f'truncated.{ext}')
  with open(videos[ext], 'rb') as f:
    data = f.read()
  with open(truncated, 'wb') as f:
    f.write(data[: len(data) // 2])
  with pytest.raises(video_io.VideoDecodeError, match='truncated') as e:
    video_io.decode_video(truncated)
  assert isinstance(e.value, VidjaxError) and e.value.path == truncated

  junk = tmp_path / f'junk.{ext}'
  junk.write_bytes(np.random.default_rng(0).bytes(4000))
  with pytest.raises(video_io.VideoDecodeError, match='cannot open'):
    video_io.decode_video(junk)
  empty = tmp_path / f'empty.{ext}'
  empty.write_bytes(b'')
  with pytest.raises(video_io.VideoDecodeError, match='0 bytes'):
    video_io.decode_video(empty)
  with pytest.raises(video_io.VideoNotFoundError, match='not found'):
    video_io.decode_video(tmp_path / f'absent.{ext}')
  with pytest.raises(video_io.VideoDecodeError, match='starts at 5'):
    video_io.decode_video(videos[ext], start_s=5.0)


def test_zero_frame_video(tmp_path):
  path = str(tmp_path / 'zero.mp4')
  _zero_frame_mp4(path)
  with pytest.raises(video_io.VideoDecodeError) as e:
    video_io.decode_video(path)
  # FFmpeg drops a stream without a sample description on opening.
  assert e.value.reason in ('no video stream', 'no decodable video frames')


def test_bad_arguments(videos):
  with pytest.raises(VidjaxError, match='fps'):
    video_io.decode_video(videos['mp4'], fps=0)
  with pytest.raises(VidjaxError, match='not after start'):
    video_io.decode_video(videos['mp4'], start_s=1.0, end_s=1.0)
  with pytest.raises(VidjaxError, match='even'):
    video_io.encode_video('/tmp/odd.mp4', np.zeros((2, 31, 48, 3), np.uint8),
                          24)
