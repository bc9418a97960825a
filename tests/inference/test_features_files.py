"""Feature files and the resumable folder loop, on fake features (no model)."""
import errno
import json
import os
import types

import numpy as np
import pytest

from tests.inference import workdirs
from vidjax.errors import VidjaxError
from vidjax.inference import contract as contract_lib
from vidjax.inference import feature_files
from vidjax.inference import features as features_lib

CONTRACT = contract_lib.from_config(
    workdirs.tiny_config(), num_classes=5, class_names=workdirs.CLASS_NAMES,
    preparation={'fps': 25.0, 'short_side': 32, 'jpeg_quality': 90})


def fake_loaded(fingerprint='00ff00ff00ff00ff', **contract):
  return types.SimpleNamespace(contract=CONTRACT.replace(**contract),
                               fingerprint=fingerprint)


def make_output(directory, layer='prelogits', window_s=2.0, **loaded):
  settings = feature_files.settings(
      fake_loaded(**loaded), layer=layer, pool='mean', views='mean',
      window_s=window_s, stride_s=1.0)
  return feature_files.Output(str(directory), settings,
                              {'checkpoint': 'ckpt (step 10)'})


def videos(names):
  return [features_lib.Video(f'/videos/{n}.mp4', n) for n in names]


class FakeCompute:
  """(features, start_s, end_s) of `windows[path]` windows; counts calls,
  raises `fail[path]` for the paths given there."""

  def __init__(self, fail=None, windows=3):
    self.calls = []
    self.fail = fail or {}
    self.windows = windows

  def __call__(self, path):
    self.calls.append(path)
    if path in self.fail:
      raise self.fail[path]
    w = self.windows
    seed = sum(map(ord, path))
    return (np.random.default_rng(seed).normal(size=(w, 8)),
            np.arange(w, dtype=float), np.arange(w, dtype=float) + 2)


def files_in(directory):
  return sorted(os.path.relpath(os.path.join(r, n), directory)
                for r, _, names in os.walk(directory) for n in names)


def test_manifest_records_what_determines_the_features(tmp_path):
  out = make_output(tmp_path)
  compute = FakeCompute()
  progress = features_lib.extract_all(videos(['a', 'sub/b']), out, compute,
                                      out=open(os.devnull, 'w'))
  assert (progress.extracted, progress.skipped, progress.failed) == (2, 0, 0)
  assert files_in(tmp_path) == ['a.npz', 'manifest.json', 'sub/b.npz']
  manifest = json.loads((tmp_path / 'manifest.json').read_text())
  settings = manifest['settings']
  assert settings['checkpoint_fingerprint'] == '00ff00ff00ff00ff'
  assert (settings['layer'], settings['pool'], settings['views']) == (
      'prelogits', 'mean', 'mean')
  assert (settings['window_s'], settings['stride_s']) == (2.0, 1.0)
  contract = settings['contract']
  assert {k: contract[k] for k in (
      'fps', 'short_side', 'jpeg_quality', 'num_frames', 'frame_stride',
      'crop_size', 'eval_resize_ratio', 'num_test_clips', 'num_test_crops',
      'normalization', 'model_name')} == {
          'fps': 25.0, 'short_side': 32, 'jpeg_quality': 90, 'num_frames': 4,
          'frame_stride': 2, 'crop_size': 24, 'eval_resize_ratio': 1.15,
          'num_test_clips': 1, 'num_test_crops': 1,
          'normalization': 'imagenet', 'model_name': 's3dg'}
  assert len(contract['mean']) == len(contract['std']) == 3
  assert 'class_names' not in contract  # Names change no feature.
  assert manifest['digest'] == feature_files.digest(settings)
  assert manifest['checkpoint'] == 'ckpt (step 10)'
  assert manifest['videos'] == {
      'a': {'source': '/videos/a.mp4', 'windows': 3},
      'sub/b': {'source': '/videos/sub/b.mp4', 'windows': 3}}
  assert manifest['failed'] == {}
  # Each file: the arrays, and the same settings inside.
  with np.load(tmp_path / 'a.npz') as z:
    assert sorted(z.files) == ['end_s', 'features', 'manifest', 'start_s']
    want = compute('/videos/a.mp4')
    assert z['features'].dtype == np.float32
    np.testing.assert_allclose(z['features'], want[0], rtol=1e-6)
    np.testing.assert_array_equal(z['start_s'], want[1])
    np.testing.assert_array_equal(z['end_s'], want[2])
    embedded = json.loads(z['manifest'].item())
  assert embedded['settings'] == settings
  assert (embedded['source'], embedded['windows']) == ('/videos/a.mp4', 3)


def test_killed_run_resumes_without_recomputing(tmp_path):
  """A run killed after the first video (a KeyboardInterrupt while the
  second computes), then run again: the first is not computed again (call
  count and mtime), and no partial file ever exists."""
  names = ['a', 'b', 'c']
  seen_during = []

  class Killed(FakeCompute):
    def __call__(self, path):
      seen_during.append(files_in(tmp_path))
      if path == '/videos/b.mp4':
        raise KeyboardInterrupt
      return super().__call__(path)

  with pytest.raises(KeyboardInterrupt):
    features_lib.extract_all(videos(names), make_output(tmp_path), Killed(),
                             out=open(os.devnull, 'w'))
  assert seen_during == [['manifest.json'], ['a.npz', 'manifest.json']]
  assert files_in(tmp_path) == ['a.npz', 'manifest.json']
  mtime = os.stat(tmp_path / 'a.npz').st_mtime_ns
  assert json.loads((tmp_path / 'manifest.json').read_text())['videos'] == {
      'a': {'source': '/videos/a.mp4', 'windows': 3}}

  compute = FakeCompute()
  progress = features_lib.extract_all(videos(names), make_output(tmp_path),
                                      compute, out=open(os.devnull, 'w'))
  assert compute.calls == ['/videos/b.mp4', '/videos/c.mp4']
  assert (progress.extracted, progress.skipped) == (2, 1)
  assert os.stat(tmp_path / 'a.npz').st_mtime_ns == mtime
  assert files_in(tmp_path) == ['a.npz', 'b.npz', 'c.npz', 'manifest.json']
  assert sorted(json.loads(
      (tmp_path / 'manifest.json').read_text())['videos']) == names


def test_full_disk_leaves_no_file(tmp_path, monkeypatch):
  """A write that fails (ENOSPC from fsync, monkeypatched) stops the run
  with one line and leaves neither the file nor its temporary."""
  out = make_output(tmp_path)
  out.open()
  real_fsync = os.fsync

  def full(fd):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(os, 'fsync', full)
  with pytest.raises(VidjaxError) as e:
    features_lib.extract_all(videos(['a']), out, FakeCompute(),
                             out=open(os.devnull, 'w'))
  assert str(e.value) == (f'cannot write {tmp_path}/a.npz: No space left on '
                          'device')
  monkeypatch.setattr(os, 'fsync', real_fsync)
  assert files_in(tmp_path) == ['manifest.json']


def test_temporaries_of_a_killed_run_are_removed(tmp_path):
  (tmp_path / 'sub').mkdir()
  left = ['.a.npz.0123abcd.tmp', 'sub/.b.npz.deadbeef.tmp',
          '.manifest.json.00000000.tmp']
  for name in left:
    (tmp_path / name).write_bytes(b'half')
  (tmp_path / 'notes.tmp').write_text('mine')
  make_output(tmp_path).open()
  assert files_in(tmp_path) == ['manifest.json', 'notes.tmp']


def test_other_settings_are_one_error(tmp_path):
  features_lib.extract_all(videos(['a']), make_output(tmp_path),
                           FakeCompute(), out=open(os.devnull, 'w'))
  before = files_in(tmp_path)
  with pytest.raises(VidjaxError) as e:
    make_output(tmp_path, layer='Mixed_4b', window_s=4.0).open()
  assert str(e.value) == (
      f"{tmp_path}/manifest.json holds features made with other settings "
      "(layer: 'prelogits' -> 'Mixed_4b', window_s: 2.0 -> 4.0); give "
      'another --out, or delete the old files to extract them again')
  with pytest.raises(VidjaxError, match=r'checkpoint_fingerprint: '
                     r"'00ff00ff00ff00ff' -> '1111111111111111'"):
    make_output(tmp_path, fingerprint='1111111111111111').open()
  with pytest.raises(VidjaxError, match=r"contract.fps: 25.0 -> 30.0"):
    make_output(tmp_path, fps=30.0).open()
  # A file of other settings without the folder's manifest: the same.
  os.remove(tmp_path / 'manifest.json')
  other = make_output(tmp_path, layer='Mixed_4b')
  other.open()
  with pytest.raises(VidjaxError, match=r'a\.npz holds features made with '
                     r"other settings \(layer: 'prelogits' -> 'Mixed_4b'\)"):
    other.is_done('a')
  # Class names change no feature: the files are reused.
  renamed = make_output(tmp_path, class_names=tuple('vwxyz'))
  assert renamed.digest == make_output(tmp_path).digest
  assert 'a.npz' in before


def test_bad_videos_are_listed_and_only_all_bad_fails(tmp_path):
  bad = {'/videos/b.mp4': VidjaxError('/videos/b.mp4: empty file (0 bytes)'),
         '/videos/c.mp4': PermissionError(13, 'Permission denied',
                                          '/videos/c.mp4')}
  lines = tmp_path / 'progress.txt'
  out = make_output(tmp_path / 'out')
  with open(lines, 'w') as f:
    progress = features_lib.extract_all(videos('abc'), out,
                                        FakeCompute(fail=bad), out=f)
  text = lines.read_text().splitlines()
  assert text[1:] == ['[2/3] /videos/b.mp4: FAILED: empty file (0 bytes)',
                      '[3/3] /videos/c.mp4: FAILED: [Errno 13] Permission '
                      "denied: '/videos/c.mp4'"]
  assert text[0].startswith('[1/3] /videos/a.mp4: 3 windows -> a.npz | ')
  assert ' windows/s, ' in text[0] and ', ETA 00:00' in text[0]
  assert features_lib.outcome(progress, out) == (
      f'1 videos extracted, 0 done before, 2 failed -> {tmp_path}/out')
  manifest = json.loads((tmp_path / 'out' / 'manifest.json').read_text())
  assert manifest['failed'] == {
      '/videos/b.mp4': 'empty file (0 bytes)',
      '/videos/c.mp4': "[Errno 13] Permission denied: '/videos/c.mp4'"}

  out = make_output(tmp_path / 'none')
  progress = features_lib.extract_all(
      videos('bc'), out, FakeCompute(fail=bad), out=open(os.devnull, 'w'))
  with pytest.raises(VidjaxError) as e:
    features_lib.outcome(progress, out)
  assert str(e.value) == ('no features extracted: 2 videos failed (first: '
                          '/videos/b.mp4: empty file (0 bytes))')


def test_videos_in_a_folder(tmp_path):
  for name in ['b.mp4', 'a.MKV', 'notes.txt', '.hidden.mp4', 'sub/c.avi',
               'sub/deeper/d.webm']:
    path = tmp_path / 'in' / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b'')
  got = features_lib.videos_in([str(tmp_path / 'in'), '/x/given.dat'])
  assert [(os.path.relpath(v.path, tmp_path), v.name) for v in got[:-1]] == [
      ('in/a.MKV', 'a'), ('in/b.mp4', 'b'), ('in/sub/c.avi', 'sub/c'),
      ('in/sub/deeper/d.webm', 'sub/deeper/d')]
  assert got[-1] == features_lib.Video('/x/given.dat', 'given')
  with pytest.raises(VidjaxError) as e:
    features_lib.videos_in([str(tmp_path / 'in' / 'b.mp4'), '/y/b.avi'])
  assert str(e.value) == (f'{tmp_path}/in/b.mp4 and /y/b.avi would both '
                          'write b.npz; give them in separate runs with '
                          'separate --out')


def test_windows_are_batched_in_order():
  """compute(): 5 fake windows through a runner of 2 windows per call
  (3 calls, the last of 1 window), rows and times in window order."""
  windows = [types.SimpleNamespace(index=i, start_s=i / 2, end_s=i / 2 + 1,
                                   views=np.full((3, 1), i, np.float32))
             for i in range(5)]
  calls = []

  def runner(views):
    calls.append(len(views))
    return np.stack([v.mean(0) * 10 for v in views])

  runner.windows_per_batch = 2
  got, start_s, end_s = features_lib.compute(iter(windows), runner)
  assert calls == [2, 2, 1]
  np.testing.assert_array_equal(got[:, 0], [0, 10, 20, 30, 40])
  np.testing.assert_array_equal(start_s, [0, 0.5, 1, 1.5, 2])
  np.testing.assert_array_equal(end_s, start_s + 1)
  with pytest.raises(VidjaxError, match='no window to extract'):
    features_lib.compute(iter([]), runner)
