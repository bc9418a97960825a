"""vidjax.export: every family's SavedModel equals JAX; the online TSM step
streams through the SavedModel and TFLite as the offline causal model;
bad input is one `vidjax: error:` line and leaves --out as it was.

Tiny on purpose: Inception at depth_multiplier 1/8 (min_depth 8) on
4×32², ResNet-18 at width 8 on 32², TimeSformer of one block, 16 dims and
2 heads on 2×16² (one parametrised case per attention scheme). Weights are
random (from eval_shape: nothing is initialised), BN statistics too, so a
dropped collection or a swapped layer shows.
"""
import contextlib
import errno
import io
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from tests.inference import cli_runs
from tests.inference import workdirs
from vidjax.errors import VidjaxError
from vidjax.inference import contract as contract_lib
from vidjax.inference import export
from vidjax.inference import export_command
from vidjax.inference import export_savedmodel
from vidjax.inference import loader
from vidjax.models import create_model
from vidjax.models import timesformer

CLASS_NAMES = workdirs.CLASS_NAMES
PREPARATION = {'fps': 12.5, 'short_side': 36, 'jpeg_quality': 90}
_INCEPTION = dict(depth_multiplier=0.125, min_depth=8)
_RESNET = dict(width=8)
_TIMESFORMER = dict(embed_dim=16, depth=1, num_heads=2, patch_size=8,
                    image_size=16, num_frames=2)
# name -> (model, frames, crop, options).
CASES = {
    's3dg': ('s3dg', 4, 32, _INCEPTION),
    'i2d': ('i2d', 4, 32, _INCEPTION),
    'tsn_r18': ('tsn_r18', 2, 32, _RESNET),
    'tsm_r18': ('tsm_r18', 2, 32, _RESNET),
    **{f'timesformer_{s}': ('timesformer', 2, 16, dict(_TIMESFORMER,
                                                       scheme=s))
       for s in timesformer.SCHEMES},
}


def random_variables(model, clip_shape, seed=0) -> dict:
  """Every parameter and BN statistic random (He-scaled kernels), numpy."""
  abstract = nn.unbox(jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros(clip_shape), train=False)))
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name == 'kernel':
      scale = np.sqrt(2.0 / np.prod(leaf.shape[:-1]))
      return (rng.standard_normal(leaf.shape) * scale).astype(np.float32)
    if name in ('scale', 'var'):
      return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
    return (0.1 * rng.standard_normal(leaf.shape)).astype(np.float32)

  return jax.tree_util.tree_map_with_path(
      fill, {k: v for k, v in abstract.items()
             if k in ('params', 'batch_stats')})


def random_loaded(case: str, path: str) -> loader.Loaded:
  """What `loader.load` returns for a case's checkpoint, without one."""
  name, frames, crop, options = CASES[case]
  others = {k: v for k, v in options.items() if k != 'num_frames'}
  config = workdirs.tiny_config(name, frames, crop, **others)
  config.model.update(options)  # TimeSformer's num_frames too.
  model = create_model(name, num_classes=len(CLASS_NAMES), **options)
  contract = contract_lib.from_config(
      config, num_classes=len(CLASS_NAMES), class_names=CLASS_NAMES,
      preparation=PREPARATION)
  variables = random_variables(model, (1, frames, crop, crop, 3))
  return loader.Loaded(model, variables, contract,
                       loader.Source(path, 'converted'))


def write_random_workdir(path: str, config, **kwargs):
  """`workdirs.write_workdir` with every weight random (the initialiser's
  are zero in places), without compiling an initialisation."""
  model = create_model(config.model_name, num_classes=len(CLASS_NAMES),
                       **config.model.to_dict())
  crop = config.data.crop_size
  variables = random_variables(
      model, (1, config.data.num_frames, crop, crop, 3))
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(workdirs, 'random_variables',
                  lambda *_, **__: (model, variables))
    workdirs.write_workdir(path, config, **kwargs)


def assert_close(actual, expected):
  """Equal within float32 rounding, relative to the output's scale."""
  expected = np.asarray(expected)
  assert np.std(expected) > 1e-2  # Random weights: not ~0.
  np.testing.assert_allclose(actual, expected, rtol=1e-5,
                             atol=1e-5 * np.max(np.abs(expected)))


def run_cli(capfd, *args):
  return cli_runs.run_main(capfd, export_command.main, 'vidjax.export', *args)


def error_line(err: str) -> str:
  lines = [l for l in err.splitlines() if l.startswith('vidjax: error:')]
  assert len(lines) == 1, err
  assert 'Traceback' not in err
  return lines[0]


def listing(directory) -> dict[str, int]:
  return {os.path.relpath(os.path.join(root, f), directory):
          os.path.getsize(os.path.join(root, f))
          for root, _, files in os.walk(directory) for f in files}


# ---------------------------------------------------------------------------
# (a) Every family: the SavedModel's outputs equal JAX's.
# ---------------------------------------------------------------------------


@pytest.fixture(scope='module')
def clip_exports(tmp_path_factory):
  """case -> (Loaded, SavedModel dir, export info): each exported once."""
  root = tmp_path_factory.mktemp('export')
  done = {}

  def get(case):
    if case not in done:
      loaded = random_loaded(case, str(root / f'{case}_weights'))
      out = str(root / case)
      done[case] = loaded, out, export.export(loaded, out)
    return done[case]

  return get


@pytest.mark.parametrize('case', list(CASES))
def test_savedmodel_equals_jax(clip_exports, case):
  loaded, out, info = clip_exports(case)
  _, frames, crop, _ = CASES[case]
  clip = np.asarray(jax.random.normal(jax.random.key(1),
                                      (2, frames, crop, crop, 3)))
  # JAX as the user has it: the loaded model, its own kernels.
  logits, features = jax.jit(
      lambda v, x: export_savedmodel.pre_logits(loaded.model, v, x))(
          loaded.variables, clip)
  assert features.ndim == 2 and features.shape[0] == 2

  serve = tf.saved_model.load(out).signatures['serving_default']
  assert serve.structured_input_signature[1]['clip'].shape.as_list() == [
      None, frames, crop, crop, 3]  # Any batch.
  assert info['signatures']['serving_default']['outputs'] == {
      'features': [[None, features.shape[1]], 'float32'],
      'logits': [[None, len(CLASS_NAMES)], 'float32']}
  saved = serve(clip=tf.constant(clip))
  assert_close(saved['logits'].numpy(), logits)
  assert_close(saved['features'].numpy(), features)
  if case == 'tsn_r18':  # Another batch than the first call's.
    assert_close(serve(clip=tf.constant(clip[1:]))['logits'].numpy(),
                 logits[1:])


def test_savedmodel_says_how_to_make_its_input(clip_exports):
  loaded, out, info = clip_exports('tsn_r18')
  with open(os.path.join(out, 'assets', export.CONTRACT_ASSET)) as f:
    saved = contract_lib.Contract.from_json(f.read(), 'asset')
  assert saved == loaded.contract
  with open(os.path.join(out, 'assets', export.EXPORT_ASSET)) as f:
    assert json.load(f) == json.loads(json.dumps(info))
  metadata = tf.saved_model.load(out).signatures['metadata']()
  assert contract_lib.Contract.from_json(
      metadata['contract'].numpy().decode(), 'signature') == loaded.contract
  assert json.loads(metadata['export'].numpy().decode()) == json.loads(
      json.dumps(info))
  assert info['input']['shape'] == [None, 2, 32, 32, 3]
  assert info['input']['how'] == (
      'Decode at 12.5 fps, short side 36 (as the training records were '
      'prepared, JPEG quality 90); take 2 consecutive frames, one every 2; '
      'resize the short side to 37; cut the centre 32x32 (the test '
      'protocol: 1 clip x 1 crop, softmax averaged); scale RGB to [0, 1], '
      f'subtract mean {list(loaded.contract.mean)}, divide by std '
      f'{list(loaded.contract.std)}; float32 [N, T, H, W, 3] (NTHWC).')
  assert info['fingerprint'] == loaded.fingerprint
  assert info['batch'] == 'polymorphic'
  assert info['platforms'] == ['cpu', 'cuda', 'tpu']
  assert sorted(os.listdir(out)) == ['assets', 'fingerprint.pb',
                                     'saved_model.pb', 'variables']


def test_tflite_refusal_names_the_op(clip_exports, tmp_path):
  """At batch 1 the converter folds the Inception head's Dense on
  [1, T, 1, 1, C] into a rank-5 batch_matmul it cannot lower, with builtin
  ops or SELECT_TF_OPS. (S3D-G stops earlier, at its first self-gating
  Dense: Conv2d_2c_3x3_gating.)"""
  loaded, _, _ = clip_exports('i2d')
  with pytest.raises(VidjaxError) as error:
    export.export(loaded, str(tmp_path / 'lite'), tflite=True, batch_size=1)
  assert str(error.value) == (
      "TFLite cannot convert i2d at batch 1: 'tfl.batch_matmul' op found "
      'invalid output rank, expected 3 but got 5 (from the JAX op '
      'InceptionVideoNet/InceptionVideoNet.head/Logits/dot_general); tried '
      'builtin ops and builtin + SELECT_TF_OPS (the SavedModel itself '
      'exports: run without --tflite)')
  assert os.listdir(tmp_path) == []  # Nothing written, no temporary left.


def test_inception_tflite_takes_any_batch(clip_exports, tmp_path):
  """Without --batch_size, what batch 1 refuses converts at any batch."""
  loaded, _, _ = clip_exports('i2d')
  out = tmp_path / 'lite'
  info = export.export(loaded, str(out), tflite=True, platforms=('cpu',))
  assert info['tflite']['batch_size'] is None
  assert info['tflite']['ops'] == 'builtin ops'
  assert info['tflite']['refused'] == {'batch 1': (
      "'tfl.batch_matmul' op found invalid output rank, expected 3 but got "
      '5 (from the JAX op '
      'InceptionVideoNet/InceptionVideoNet.head/Logits/dot_general)')}
  clip = np.asarray(jax.random.normal(jax.random.key(4), (1, 4, 32, 32, 3)))
  logits = jax.jit(lambda v, x: loaded.model.apply(v, x, train=False))(
      loaded.variables, clip)
  runner = tf.lite.Interpreter(
      model_path=str(out / 'model.tflite')).get_signature_runner()
  assert_close(runner(clip=clip)['logits'], logits)


def test_fixed_batch_and_clip_tflite(clip_exports, tmp_path):
  loaded, _, _ = clip_exports('tsn_r18')
  out = tmp_path / 'fixed'
  info = export.export(loaded, str(out), batch_size=2, tflite=True,
                       platforms=('cpu',))
  assert info['tflite'] == {
      'file': 'model.tflite', 'batch_size': 2, 'ops': 'builtin ops',
      'signatures': {'serving_default': {'inputs': ['clip'],
                                         'outputs': ['features', 'logits']}},
      'refused': {}}
  clip = np.asarray(jax.random.normal(jax.random.key(3), (2, 2, 32, 32, 3)))
  logits = jax.jit(lambda v, x: loaded.model.apply(v, x, train=False))(
      loaded.variables, clip)
  serve = tf.saved_model.load(str(out)).signatures['serving_default']
  assert serve.structured_input_signature[1]['clip'].shape.as_list() == [
      2, 2, 32, 32, 3]
  assert_close(serve(clip=tf.constant(clip))['logits'].numpy(), logits)
  runner = tf.lite.Interpreter(
      model_path=str(out / 'model.tflite')).get_signature_runner()
  assert_close(runner(clip=clip)['logits'], logits)


# ---------------------------------------------------------------------------
# (b) The online TSM step: state explicit, through SavedModel and TFLite.
# ---------------------------------------------------------------------------

ONLINE_FRAMES, ONLINE_CROP = 4, 32


@pytest.fixture(scope='module')
def online(tmp_path_factory):
  """A tsm_online_r18 workdir exported by the command line with --tflite."""
  root = tmp_path_factory.mktemp('online')
  config = workdirs.tiny_config('tsm_online_r18', ONLINE_FRAMES, ONLINE_CROP,
                                **_RESNET)
  write_random_workdir(str(root / 'workdir'), config)
  loaded = loader.load(str(root / 'workdir'))
  out = root / 'exported'
  stdout = io.StringIO()
  with contextlib.redirect_stdout(stdout):
    code = export_command.main(['vidjax.export',
                                f'--checkpoint={root / "workdir"}',
                                f'--out={out}', '--tflite'])
  assert code == 0
  clip = np.asarray(jax.random.normal(
      jax.random.key(2), (2, ONLINE_FRAMES, ONLINE_CROP, ONLINE_CROP, 3)))
  logits, features = jax.jit(lambda v, x: loaded.model.apply(
      v, x, train=False, return_features=True))(loaded.variables, clip)
  return dict(root=root, out=out, loaded=loaded, clip=clip,
              stdout=stdout.getvalue(),
              logits=np.asarray(logits),
              frame_logits=np.asarray(features['frame_logits']))


def test_cli_writes_the_export(online):
  out = online['out']
  lines = online['stdout'].splitlines()
  assert lines[0] == (
      f'{out}: SavedModel of tsm_online_r18 (weights '
      f'{online["loaded"].fingerprint}, {online["root"] / "workdir"} (step '
      '10)), batch polymorphic, for cpu, cuda, tpu')
  assert lines[1:4] == [
      '  serving_default: (clip [None, 4, 32, 32, 3]) -> (features '
      '[None, 64], logits [None, 5])',
      '  stream_step: (frame [None, 32, 32, 3], 8 state_* tensors) -> '
      '(logits [None, 5], 8 state_* tensors)',
      '  init_state: (batch_size []) -> (8 state_* tensors)']
  assert lines[-1] == f'{out}/stream_step.tflite: TFLite (builtin ops), batch 1'
  assert sorted(os.listdir(out)) == [
      'assets', 'fingerprint.pb', 'saved_model.pb', 'stream_step.tflite',
      'variables']
  assert sorted(os.listdir(out / 'assets')) == ['contract.json',
                                                'export.json']
  assert [p for p in os.listdir(online['root'])
          if p.startswith('.')] == []  # No temporary left.
  info = json.loads((out / 'assets' / 'export.json').read_text())
  assert info['tflite']['file'] == 'stream_step.tflite'
  assert info['tflite']['ops'] == 'builtin ops'
  assert info['tflite']['batch_size'] == 1
  assert info['tflite']['refused'] == {}
  blocks = [s['block'] for s in info['stream_state']]
  assert blocks == sorted(f'layer{i}/block{j}' for i in range(1, 5)
                          for j in range(2))
  assert info['stream_state'][0] == {
      'name': 'state_layer1_block0', 'block': 'layer1/block0',
      'shape': [None, 1, 8, 8, 1]}  # 8 channels / shift_div 8.
  step = info['signatures']['stream_step']
  assert list(step['inputs']) == ['frame'] + [s['name'] for s in
                                              info['stream_state']]
  assert set(step['outputs']) == {'logits'} | {
      s['name'] for s in info['stream_state']}


def test_savedmodel_streams_like_the_offline_model(online):
  saved = tf.saved_model.load(str(online['out']))
  clip = online['clip']
  state = saved.signatures['init_state'](batch_size=tf.constant(2))
  assert all(not np.any(v.numpy()) for v in state.values())
  streamed = []
  for t in range(ONLINE_FRAMES):
    out = saved.signatures['stream_step'](frame=tf.constant(clip[:, t]),
                                          **state)
    state = {k: v for k, v in out.items() if k != 'logits'}
    streamed.append(out['logits'].numpy())
  # Frame t's logits are the offline causal model's frame logits.
  assert_close(np.stack(streamed, axis=1), online['frame_logits'])
  assert_close(saved.signatures['serving_default'](
      clip=tf.constant(clip))['logits'].numpy(), online['logits'])


def test_tflite_streams_like_the_offline_model(online):
  interpreter = tf.lite.Interpreter(
      model_path=str(online['out'] / 'stream_step.tflite'))
  runner = interpreter.get_signature_runner()
  inputs = runner.get_input_details()
  names = [n for n in inputs if n != 'frame']
  state = {n: np.zeros(inputs[n]['shape'], np.float32) for n in names}
  streamed = []
  for t in range(ONLINE_FRAMES):
    out = runner(frame=online['clip'][:1, t], **state)
    state = {n: out[n] for n in names}
    streamed.append(out['logits'])
  assert_close(np.stack(streamed, axis=1), online['frame_logits'][:1])


# ---------------------------------------------------------------------------
# (c) Bad input: one line, --out as it was.
# ---------------------------------------------------------------------------


def test_out_that_exists_needs_overwrite(capfd, online):
  before = listing(online['out'])
  code, _, err = run_cli(capfd, f'--checkpoint={online["root"] / "workdir"}',
                         f'--out={online["out"]}')
  assert code == 1
  assert error_line(err) == (
      f'vidjax: error: the output {online["out"]} already holds an export '
      '(pass --overwrite to replace it)')
  assert listing(online['out']) == before


def test_out_with_other_files_is_never_replaced(capfd, online, tmp_path):
  (tmp_path / 'notes.txt').write_text('mine')
  code, _, err = run_cli(capfd, f'--checkpoint={online["root"] / "workdir"}',
                         f'--out={tmp_path}', '--overwrite')
  assert code == 1
  assert error_line(err) == (
      f'vidjax: error: the output {tmp_path} holds files that are not a '
      'vidjax export (notes.txt); an export never deletes what it did not '
      'write: give --out a new or empty directory')
  assert os.listdir(tmp_path) == ['notes.txt']


def test_out_that_cannot_be_written(capfd, online, tmp_path):
  (tmp_path / 'file').write_text('')
  out = tmp_path / 'file' / 'exported'
  code, _, err = run_cli(capfd, f'--checkpoint={online["root"] / "workdir"}',
                         f'--out={out}')
  assert code == 1
  assert error_line(err) == (f'vidjax: error: cannot write {out}: '
                             f'{tmp_path / "file"} is not a directory')


def test_unknown_platform(capfd, online, tmp_path):
  code, _, err = run_cli(capfd, f'--checkpoint={online["root"] / "workdir"}',
                         f'--out={tmp_path / "x"}', '--platforms=cpu,rocm')
  assert code == 1
  assert error_line(err) == ('vidjax: error: --platforms=cpu,rocm: want some '
                             'of cpu,cuda,tpu')


def test_checkpoint_without_fps(capfd, tmp_path):
  config = workdirs.tiny_config('tsn_r18', 2, 32, **_RESNET)
  write_random_workdir(str(tmp_path / 'old'), config, preparation={
      'fps': None, 'short_side': None, 'jpeg_quality': None})
  code, _, err = run_cli(capfd, f'--checkpoint={tmp_path / "old"}',
                         f'--out={tmp_path / "exported"}')
  assert code == 1
  assert error_line(err) == (
      f"vidjax: error: {tmp_path / 'old'} (step 10) has no 'fps' in its "
      'preprocessing contract (written before vidjax saved one, or not '
      'known when it was trained); give it with --fps=...')
  assert sorted(os.listdir(tmp_path)) == ['old']


def test_full_disk_keeps_the_earlier_export(capfd, online, monkeypatch):
  """TF's writer fails with ENOSPC (monkeypatched: it writes part of the
  SavedModel, then raises as TF does for a full disk)."""
  before = listing(online['out'])

  def full_disk(module, directory, signatures):
    del module, signatures
    os.makedirs(os.path.join(directory, 'variables'))
    with open(os.path.join(directory, 'saved_model.pb'), 'wb') as f:
      f.write(b'partial')
    raise tf.errors.ResourceExhaustedError(
        None, None, f'{directory}/variables/variables.data-00000-of-00001; '
        f'{os.strerror(errno.ENOSPC)}')

  monkeypatch.setattr(tf.saved_model, 'save', full_disk)
  code, _, err = run_cli(capfd, f'--checkpoint={online["root"] / "workdir"}',
                         f'--out={online["out"]}', '--overwrite',
                         '--platforms=cpu')
  assert code == 1
  line = error_line(err)
  assert line.startswith(f'vidjax: error: cannot write {online["out"]}: ')
  assert line.endswith('No space left on device; the export there is '
                       'unchanged')
  assert listing(online['out']) == before
  assert [p for p in os.listdir(online['root']) if p.startswith('.')] == []
