"""vidjax.predict: no train/serve skew, the command line, bad input.

The skew test prepares a tiny raw video the way `python -m
vidjax.data.prepare` does (the Kinetics builder on a local copy), evaluates
its record through the evaluation pipeline and the model, and checks that
predict on the raw file gets the same views and logits. One tiny TSM
(ResNet-18 at width 8, 4 frames of 24²: a temporal model that compiles in
seconds) with random weights and one batch shape serve every test, so the
model compiles once (the run's compilation cache serves the rest).
"""
import errno
import json
import os

import flax.linen as nn
import jax
import numpy as np
import pytest

from tests.data import raw_video_fixtures as fx
from tests.data.test_video_io import _zero_frame_mp4
from tests.inference import cli_runs
from tests.inference import workdirs
from vidjax.data import pipeline
from vidjax.data import prepare
from vidjax.data import video_io
from vidjax.data.builders import kinetics
from vidjax.errors import VidjaxError
from vidjax.inference import batching
from vidjax.inference import contract as contract_lib
from vidjax.inference import loader
from vidjax.inference import predict
from vidjax.inference import predict_results
from vidjax.models import create_model
from vidjax.tools import files as files_lib

FPS, SHORT = 10, 32
CLIPS, CROPS = 2, 3  # View order matters: clip * crops + crop.
VIEWS = CLIPS * CROPS
CLASSES = tuple(sorted(fx.KINETICS_CLASSES[:2]))


def frames(num_frames, seed=0, height=48, width=64):
  """Smooth moving texture: clips differ in time, crops in space, and JPEG
  has real detail to lose."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[:height, :width]
  out = np.empty((num_frames, height, width, 3), np.uint8)
  phase = rng.uniform(0, 6, 3)
  for i in range(num_frames):
    for c in range(3):
      wave = np.sin(x / (5 + c) + i / 3 + phase[c]) * np.cos(y / 7 - i / 5)
      out[i, ..., c] = np.clip(128 + 60 * wave + 2.5 * x - 40, 0, 255)
  return out


def write(path, num_frames=30, fps=15.0, seed=0):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  video_io.encode_video(path, frames(num_frames, seed), fps)
  return str(path)


def random_variables(config, num_classes, seed=0):
  """(model, variables): every parameter and statistic random, He-scaled
  kernels. From the shapes alone (no initialisation runs); a model whose
  classifier starts at zero would make the logit comparisons vacuous."""
  model = create_model(config.model_name, num_classes=num_classes,
                       **config.model.to_dict())
  clip = jax.ShapeDtypeStruct(
      (1, config.data.num_frames, config.data.crop_size,
       config.data.crop_size, 3), np.float32)
  abstract = nn.unbox(jax.eval_shape(
      lambda x: model.init(jax.random.key(0), x, train=False), clip))
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    # Batch norm near the identity, no biases: the logits are the input's
    # doing, so a change of the input shows in them.
    name = path[-1].key
    if name in ('var', 'scale'):
      return rng.uniform(0.8, 1.2, leaf.shape).astype(np.float32)
    if name in ('mean', 'bias'):
      return np.zeros(leaf.shape, np.float32)
    fan_in = np.prod(leaf.shape[:-1])
    return (rng.standard_normal(leaf.shape)
            * np.sqrt(2.0 / fan_in)).astype(np.float32)

  return model, jax.tree_util.tree_map_with_path(
      draw, {k: abstract[k] for k in ('params', 'batch_stats')})


def config_for(data_dir=None):
  config = workdirs.tiny_config('tsm_r18', num_frames=4, crop_size=24,
                                width=8)
  config.data.num_test_clips, config.data.num_test_crops = CLIPS, CROPS
  if data_dir:
    config.data.name = f'kinetics400/fps{FPS}_short{SHORT}_q90'
    config.data.data_dir = data_dir
  return config


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
  """A Kinetics copy of one validation clip, prepared by the real builder."""
  root = str(tmp_path_factory.mktemp('k400'))
  name = kinetics.clip_name('vvvvvvvvv01', 0, 2)
  video = write(os.path.join(root, 'val', name + '.mp4'))
  train = [(CLASSES[i], f'ttttttttt0{i}', 0, 2, 'train') for i in (0, 1)]
  for label, yid, start, end, _ in train:
    write(os.path.join(root, 'train', label,
                       kinetics.clip_name(yid, start, end) + '.mp4'),
          num_frames=4, seed=1)
  fx.write_kinetics_csv(os.path.join(root, 'kinetics400', 'train.csv'),
                        train)
  fx.write_kinetics_csv(os.path.join(root, 'kinetics400', 'validate.csv'),
                        [(CLASSES[1], 'vvvvvvvvv01', 0, 2, 'validate')])
  fx.write_kinetics_csv(os.path.join(root, 'kinetics400', 'test.csv'),
                        [('', 'tttttttttt9', 0, 10, 'test')],
                        labelled=False)
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  builder = prepare.make_builder('kinetics400', data_dir=data_dir, workers=1,
                                 fps=FPS, short_side=SHORT, progress=False)
  prepare.prepare(builder, manual_dir=root)
  return video, data_dir


@pytest.fixture(scope='module')
def loaded(prepared):
  """The model and a contract made as the trainer makes it (from the
  config and the prepared dataset's metadata)."""
  config = config_for(prepared[1])
  meta = pipeline.dataset_info(config.data)
  contract = contract_lib.from_config(
      config, num_classes=meta.num_classes, class_names=meta.class_names,
      preparation=contract_lib.preparation_of(meta.metadata))
  model, variables = random_variables(config, meta.num_classes)
  source = loader.Source(path='test', kind='converted')
  return loader.Loaded(model, variables, contract, source)


@pytest.fixture(scope='module')
def evaluated(prepared, loaded):
  """(views, logits) of the record, through the evaluation pipeline."""
  config = config_for(prepared[1])
  batch = next(pipeline.build_dataset(
      config.data, 'validation', train=False,
      batch_size=VIEWS).as_numpy_iterator())
  assert list(batch['view_index']) == list(range(VIEWS))
  logits = jax.jit(lambda v, x: loaded.model.apply(v, x, train=False))(
      loaded.variables, batch['video'])
  return batch['video'], np.asarray(logits)


@pytest.fixture(scope='module')
def runner(loaded):
  return batching.ViewRunner(loaded.model, loaded.variables, VIEWS)


def predicted(loaded, runner, video, **options):
  results, failures = predict.predict_videos(
      loaded, [video], predict.Options(batch_size=VIEWS, **options),
      runner=runner)
  assert not failures
  return results[0]


def test_no_skew_with_jpeg_roundtrip(prepared, loaded, evaluated, runner):
  from vidjax.inference import video_input  # pylint: disable=g-import-not-at-top
  contract = loaded.contract
  assert (contract.fps, contract.short_side, contract.jpeg_quality) == (
      FPS, SHORT, 90)
  eval_views, eval_logits = evaluated
  with video_input.VideoReader(prepared[0], contract) as reader:
    (window,) = video_input.windows(reader, contract)
  # The very views evaluation made, bit for bit, in its order.
  np.testing.assert_array_equal(window.views, eval_views)
  result = predicted(loaded, runner, prepared[0])
  (w,) = result.windows
  # Equal within float32 rounding: predict runs a batch of 8 split over the
  # suite's 8 devices, evaluation here a batch of 6 on one; their sums
  # differ in order (measured: 9.5e-7, 2 ulps of the largest logit, 5.5).
  ulp = np.spacing(np.abs(eval_logits).max())
  np.testing.assert_allclose(w.logits, eval_logits, rtol=0, atol=8 * ulp)
  # The score is evaluation's: the mean softmax of the views.
  log_probs = jax.nn.log_softmax(eval_logits)
  np.testing.assert_allclose(
      w.scores, np.exp(np.asarray(log_probs, np.float64)).mean(0),
      rtol=1e-6)
  assert result.num_frames == 20 and result.duration_s == pytest.approx(2.0)


# Measured on this video (2 s of 48x64 texture, contract 10 fps / short
# side 32 / q90, 2x3 views of 4x24², this random TSM): without the JPEG
# round trip the views differ from the record's by at most 0.273 and on
# average 0.0373 (normalised pixels: 16 and 2.2 grey levels), the logits
# by 0.236, 4.3% of the largest logit (the views' own logits spread over
# 1.45), the scores by 0.007. The JPEG error is deterministic for given
# libraries (Pillow's libjpeg encodes, TF's decodes); the bounds leave 1.5x
# for other library versions, no more: a larger difference is skew.
MAX_VIEW_DIFF, MEAN_VIEW_DIFF = 0.41, 0.056
MAX_LOGIT_REL_DIFF = 0.065


def test_skew_without_jpeg_roundtrip_is_the_jpeg_error(prepared, loaded,
                                                       evaluated, runner):
  from vidjax.inference import video_input  # pylint: disable=g-import-not-at-top
  eval_views, eval_logits = evaluated
  with video_input.VideoReader(prepared[0], loaded.contract,
                               jpeg_roundtrip=False) as reader:
    (window,) = video_input.windows(reader, loaded.contract)
  view_diff = np.abs(window.views - eval_views)
  logits = predicted(loaded, runner, prepared[0],
                     jpeg_roundtrip=False).windows[0].logits
  logit_diff = np.abs(logits - eval_logits).max() / np.abs(eval_logits).max()
  print(f'without the JPEG round trip: views differ by {view_diff.max():.4g} '
        f'(mean {view_diff.mean():.4g}), logits by {logit_diff:.4g} of the '
        'largest')
  assert 0 < view_diff.max() < MAX_VIEW_DIFF
  assert view_diff.mean() < MEAN_VIEW_DIFF
  assert 0 < logit_diff < MAX_LOGIT_REL_DIFF


# ---------------------------------------------------------------------------
# Batching and the mesh.
# ---------------------------------------------------------------------------


def test_runner_shards_the_batch_over_every_device(runner):
  # The suite runs with 8 host devices (tests/conftest.py): the skew test's
  # 6 views ran as a batch of 8 split over all of them.
  n = len(jax.devices())
  assert n > 1 and runner.mesh.devices.size == n
  assert runner.batch_size == -(-VIEWS // n) * n
  views = np.arange(2 * n, dtype=np.float32).reshape(2 * n, 1)
  sharded = batching.shard_batch(views, runner.mesh)
  shards = sorted(sharded.addressable_shards, key=lambda s: s.index[0].start)
  assert len({s.device for s in shards}) == n
  for i, shard in enumerate(shards):
    np.testing.assert_array_equal(shard.data, views[2 * i:2 * i + 2])
  with pytest.raises(VidjaxError, match=f'3 views does not split over {n}'):
    batching.shard_batch(views[:3], runner.mesh)


class FakeRunner:
  """Logits = the view's value in every class; records the batches."""
  batch_size = 4

  def __init__(self):
    self.batches = []

  def __call__(self, views):
    self.batches.append(views[:, 0].tolist())
    logits = np.repeat(views[:, :1], 2, axis=1)
    return logits, logits - 1


def test_view_queue_packs_windows_into_full_batches():
  fake = FakeRunner()
  queue = batching.ViewQueue(fake)
  views = lambda first, n: np.arange(first, first + n, dtype=np.float32)[
      :, None]
  assert queue.add('a', views(0, 3)) == []
  done = queue.add('b', views(10, 6))  # Fills batches of 4: a0-2+b0, b1-4.
  assert fake.batches == [[0, 1, 2, 10], [11, 12, 13, 14]]
  assert [key for key, *_ in done] == ['a']
  np.testing.assert_array_equal(done[0][1][:, 0], [0, 1, 2])
  np.testing.assert_array_equal(done[0][2][:, 0], [-1, 0, 1])
  assert queue.add('c', views(20, 1)) == []
  done = queue.flush()  # The rest in one short batch.
  assert fake.batches[-1] == [15, 20]
  assert [(k, l[:, 0].tolist()) for k, l, _ in done] == [
      ('b', [10, 11, 12, 13, 14, 15]), ('c', [20])]
  queue.add('d', views(30, 1))
  with pytest.raises(VidjaxError, match="window 'd' added twice"):
    queue.add('d', views(30, 1))


# ---------------------------------------------------------------------------
# The command line.
# ---------------------------------------------------------------------------


@pytest.fixture(scope='module')
def files(tmp_path_factory):
  """Workdirs with and without a contract, and a folder of good and broken
  videos."""
  root = tmp_path_factory.mktemp('predict')
  with pytest.MonkeyPatch.context() as m:
    # The skew test's weights (and so its compiled model: same shapes).
    m.setattr(workdirs, 'random_variables', random_variables)
    preparation = {'fps': FPS, 'short_side': SHORT, 'jpeg_quality': 90}
    workdirs.write_workdir(root / 'run', config_for(), class_names=CLASSES,
                           preparation=preparation)
    workdirs.write_workdir(root / 'old', config_for(), class_names=CLASSES,
                           with_contract=False)
  folder = root / 'videos'
  good = [write(folder / 'a.mp4'), write(folder / 'sub' / 'b.mkv', 20,
                                         seed=3)]
  (folder / 'sub' / 'empty.mp4').write_bytes(b'')
  (folder / 'junk.avi').write_bytes(b'not a video' * 300)
  _zero_frame_mp4(str(folder / 'zero.mp4'))
  # Matroska keeps its header first: the cut file opens and decodes, and
  # only its end shows it is truncated (windows already made are dropped).
  fx.truncate(write(folder / 'sub' / 'truncated.mkv', 60))
  (folder / 'notes.txt').write_text('not a video')
  write(folder / '.hidden.mp4', 4)
  return dict(root=root, run=str(root / 'run'), old=str(root / 'old'),
              folder=str(folder), good=good)


def run_cli(capfd, *args):
  return cli_runs.run_main(capfd, predict.main, 'vidjax.predict',
                          f'--batch_size={VIEWS}', *args)


def error_lines(err):
  return [line for line in err.splitlines() if line.startswith('vidjax: error')]


def test_folder_of_good_and_broken_videos(capfd, files, loaded, runner):
  out_json, out_csv = files['root'] / 'r.json', files['root'] / 'r.csv'
  code, out, err = run_cli(capfd, f'--checkpoint={files["run"]}', '--top_k=2',
                           f'--json={out_json}', f'--csv={out_csv}',
                           files['folder'])
  assert code == 0, err
  assert 'Traceback' not in err and not error_lines(err)
  folder = files['folder']
  # Each broken file once, with its reason (the start of it: FFmpeg's
  # wording follows).
  broken = {
      os.path.join(folder, 'junk.avi'): ('cannot open (corrupt or '
                                         'truncated?): ',),
      # FFmpeg drops a stream without a sample description on opening.
      os.path.join(folder, 'zero.mp4'): ('no video stream',
                                         'no decodable video frames'),
      os.path.join(folder, 'sub', 'empty.mp4'): ('empty file (0 bytes)',),
      os.path.join(folder, 'sub', 'truncated.mkv'): ('truncated: frames '
                                                     'stop at ',),
  }
  for path, reason in broken.items():
    assert reason_of(err, path).startswith(reason), path
  assert 'predict: 6/6 videos (100.0%)' in err and 'ETA' in err
  assert err.rstrip().endswith('vidjax: warning: 4 of 6 videos could not be '
                               'read (listed above)')
  report = json.loads(out_json.read_text())
  assert [v['path'] for v in report['videos']] == files['good']
  assert {f['path'] for f in report['failed']} == set(broken)
  assert report['views'] == {'clips': CLIPS, 'crops': CROPS}
  assert report['fingerprint'] and report['fps'] == FPS
  # The same scores the library gives (the checkpoint holds the skew
  # test's weights): labels and order as printed.
  mine = predicted(loaded, runner, files['good'][0])
  top = [{'rank': r, 'class_index': c, 'label': CLASSES[c], 'score': s}
         for r, (c, s) in enumerate(mine.windows[0].top(2), 1)]
  got = report['videos'][0]['top_k']
  assert [{**t, 'score': 0} for t in got] == [{**t, 'score': 0} for t in top]
  assert [t['score'] for t in got] == pytest.approx(
      [t['score'] for t in top], rel=1e-6)
  block = out.split(files['good'][0])[1].splitlines()
  assert block[1] == f'  1. {top[0]["score"]:.4f}  {top[0]["label"]}'
  assert block[2] == f'  2. {top[1]["score"]:.4f}  {top[1]["label"]}'
  rows = out_csv.read_text().splitlines()
  assert rows[0] == ','.join(predict_results.CSV_COLUMNS)
  assert len(rows) == 1 + 2 * 2 + len(broken)
  assert rows[1].startswith(f'{files["good"][0]},0,0,2,1,{top[0]["class_index"]},')
  # Failures in the order met (a folder's files, then its subfolders).
  for path, row in zip(broken, rows[-len(broken):]):
    assert row == f'{path},,,,,,,,{reason_of(err, path)}'


def reason_of(err, path):
  prefix = f'vidjax: warning: skipped {path}: '
  (line,) = [l for l in err.splitlines() if l.startswith(prefix)]
  return line[len(prefix):]


def test_timeline(capfd, files):
  out_json = files['root'] / 't.json'
  code, out, err = run_cli(capfd, f'--checkpoint={files["run"]}',
                           '--window_s=1', '--stride_s=0.5', '--top_k=1',
                           f'--json={out_json}', files['good'][0])
  assert code == 0, err
  windows = json.loads(out_json.read_text())['videos'][0]['windows']
  assert [(w['start_s'], w['end_s']) for w in windows] == [
      (0.0, 1.0), (0.5, 1.5), (1.0, 2.0)]
  assert 'top_k' not in json.loads(out_json.read_text())['videos'][0]
  lines = out.splitlines()
  assert lines[0].endswith('per window, 3 windows)')
  assert lines[1].startswith('  [    0.00 s,     1.00 s)  ')
  assert lines[3].startswith('  [    1.00 s,     2.00 s)  ')
  assert len({w['top_k'][0]['score'] for w in windows}) == 3


def test_bad_input_is_one_error_line(capfd, files):
  folder = files['folder']
  cases = [
      ((os.path.join(folder, 'sub', 'empty.mp4'),),
       f'vidjax: error: {os.path.join(folder, "sub", "empty.mp4")}: empty '
       'file (0 bytes)'),
      ((os.path.join(folder, 'junk.avi'), os.path.join(folder, 'zero.mp4')),
       'vidjax: error: none of the 2 videos could be predicted (reasons '
       'above)'),
      ((str(files['root']),), None),  # Set below: a folder of no videos.
  ]
  empty_dir = files['root'] / 'no_videos'
  empty_dir.mkdir(exist_ok=True)
  cases[2] = ((str(empty_dir),),
              f'vidjax: error: no video files in {empty_dir}')
  for paths, message in cases:
    code, out, err = run_cli(capfd, f'--checkpoint={files["run"]}', *paths)
    assert (code, out, error_lines(err)) == (1, '', [message]), err
    assert 'Traceback' not in err


def test_checkpoint_without_contract(capfd, files):
  code, _, err = run_cli(capfd, f'--checkpoint={files["old"]}',
                         files['good'][0])
  assert code == 1 and 'Traceback' not in err
  (line,) = error_lines(err)
  assert line.startswith(f'vidjax: error: {files["old"]} (step 10) has no '
                         "'fps' in its preprocessing contract")
  assert line.endswith('give it with --fps=...')
  # The flags supply what it lacks.
  code, out, err = run_cli(capfd, f'--checkpoint={files["old"]}',
                           f'--fps={FPS}', f'--short_side={SHORT}',
                           '--jpeg_quality=90', files['good'][0])
  assert code == 0, err
  assert out.splitlines()[1].startswith('  1. ')


def test_flag_errors(capfd, files):
  cases = [
      ((), 'give one or more videos or folders'),
      (('--stride_s=1', files['good'][0]), '--stride_s needs --window_s'),
      (('--window_s=-1', files['good'][0]), '--window_s must be a positive'),
      ((f'--json={files["root"]}', files['good'][0]), 'is a directory'),
  ]
  for args, needle in cases:
    code, _, err = run_cli(capfd, f'--checkpoint={files["run"]}', *args)
    (line,) = error_lines(err)
    assert code == 1 and needle in line, err


def test_full_disk_keeps_the_previous_output(capfd, files, monkeypatch):
  # A full disk, simulated: the write's fsync fails with ENOSPC.
  out_dir = files['root'] / 'outputs'
  out_dir.mkdir()
  previous = out_dir / 'r.json'
  previous.write_text('{"previous": true}')

  def no_space(fd):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(files_lib.os, 'fsync', no_space)
  code, out, err = run_cli(capfd, f'--checkpoint={files["run"]}',
                           f'--json={previous}', files['good'][0])
  assert code == 1 and out.startswith(files['good'][0])
  assert error_lines(err) == [f'vidjax: error: cannot write {previous}: '
                              'No space left on device']
  assert previous.read_text() == '{"previous": true}'
  assert os.listdir(out_dir) == ['r.json']  # No temporary file left.
