"""vidjax.stream: online TSM fed frame by frame equals the offline causal
model; `python -m vidjax.stream` end to end on the loader and the shared
video input; bad input is one clear line.

Tiny on purpose (tsm_online_r18 at width 8, 32² frames, a 6-frame video):
the CLI runs in-process, so the stream step compiles once per shape and
the compilation cache of the test run (tests/conftest.py) serves repeats.
"""
import json
import textwrap
import wave

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.inference import cli_runs
from tests.inference import workdirs
from vidjax.convert import save_converted
from vidjax.data import pipeline  # noqa: F401  TF loads here, not mid-test.
from vidjax.data import video_io
from vidjax.inference import contract as contract_lib
from vidjax.inference import loader
from vidjax.inference import online
from vidjax.inference import stream as command
from vidjax.inference import video_input
from vidjax.models import create_model
from vidjax.train import checkpoint as checkpoint_lib
from vidjax.train import setup as setup_lib

NAME, WIDTH, CLASSES, SIZE, FRAMES = 'tsm_online_r18', 8, 5, 32, 6
CLASS_NAMES = ('archery', 'bowling', 'cooking', 'dancing', 'eating')


def random_variables(model, seed: int) -> dict:
  """Every parameter and BN statistic random (He-scaled kernels), numpy.

  From the shapes alone (eval_shape of a one-frame stream init): no
  initialisation is compiled.
  """
  abstract = nn.unbox(jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 3)), state={})))
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    shape = leaf.shape
    if name == 'kernel':
      scale = np.sqrt(2.0 / np.prod(shape[:-1]))
      return (rng.standard_normal(shape) * scale).astype(np.float32)
    if name in ('scale', 'var'):
      return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    return (0.1 * rng.standard_normal(shape)).astype(np.float32)

  variables = jax.tree_util.tree_map_with_path(
      fill, {k: abstract[k] for k in ('params', 'batch_stats')})
  return jax.tree.map(np.asarray, variables)


@pytest.fixture(scope='module')
def model():
  return create_model(NAME, num_classes=CLASSES, width=WIDTH)


@pytest.fixture(scope='module')
def variables(model):
  return random_variables(model, seed=0)


@pytest.fixture(scope='module')
def offline(model):
  """The offline causal model, jitted: (variables, clip) → features."""
  return jax.jit(lambda v, clip: model.apply(v, clip, return_features=True)[1])


@pytest.fixture(scope='module')
def files(tmp_path_factory, variables):
  """A converted checkpoint, a 6-frame 48×40 video, class names, a config."""
  root = tmp_path_factory.mktemp('stream')
  converted = save_converted(str(root / 'converted'), NAME, CLASSES,
                             variables)
  rng = np.random.default_rng(1)
  # Smooth frames (H.264 keeps them close) that move, so frames differ.
  base = rng.integers(0, 256, (FRAMES, 5, 6, 3)).astype(np.float32)
  frames = np.repeat(np.repeat(base, 8, axis=1), 8, axis=2).astype(np.uint8)
  video = root / 'clip.mp4'
  video_io.encode_video(video, frames, fps=25)
  names = root / 'names.txt'
  names.write_text('\n'.join(CLASS_NAMES) + '\n')
  config = root / 'config.py'
  config.write_text(textwrap.dedent(f'''\
      from configs import kinetics400_tsm_online

      def get_config():
        config = kinetics400_tsm_online.get_config()
        config.model_name = {NAME!r}
        config.model.width = {WIDTH}
        config.data.crop_size = {SIZE}
        config.data.eval_resize_ratio = 1.15  # Short side 37 of 40x48.
        config.data.class_names_file = {str(names)!r}
        return config
      '''))
  return dict(root=root, converted=converted, video=str(video),
              config=str(config), names=str(names))


def stream_config(files):
  """The config file of `files`, as --config loads it."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location('stream_config',
                                                files['config'])
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def run_cli(capfd, *args):
  return cli_runs.run_main(capfd, command.main, 'vidjax.stream', *args)


def rel_error(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


# ---------------------------------------------------------------------------
# (a) Streaming equals offline.
# ---------------------------------------------------------------------------


def test_streaming_equals_offline_causal_model(model, variables, offline):
  clip = jax.random.normal(jax.random.key(2), (1, FRAMES, SIZE, SIZE, 3))
  features = offline(variables, clip)
  frame_logits = np.asarray(features['frame_logits'][0])  # [T, classes]
  assert np.std(frame_logits) > 0.1  # Random BN stats and head: not ~0.

  step = online.make_stream_step(model)
  state = online.init_state(model, variables, (1, SIZE, SIZE, 3))
  streamed = []
  for t in range(FRAMES):
    logits, state = step(variables, clip[:, t], state)
    streamed.append(np.asarray(logits[0]))
  streamed = np.stack(streamed)
  assert rel_error(streamed, frame_logits) < 1e-5
  np.testing.assert_allclose(streamed, frame_logits, rtol=1e-5,
                             atol=1e-5 * np.max(np.abs(frame_logits)))
  assert step._cache_size() == 1  # The zero state keeps one compilation.

  # stream_video: per-frame logits, and the running mean of logits after n
  # frames is the offline model's clip logits on those n frames.
  updates = list(online.stream_video(
      step, variables, np.asarray(clip[0]),
      online.init_state(model, variables, (1, SIZE, SIZE, 3))))
  assert [u.count for u in updates] == list(range(1, FRAMES + 1))
  assert rel_error([u.logits for u in updates], frame_logits) < 1e-5
  for n in (1, 3, FRAMES):
    np.testing.assert_allclose(updates[n - 1].mean_logits,
                               frame_logits[:n].mean(0), rtol=1e-5,
                               atol=1e-6)
  assert rel_error(updates[-1].mean_logits, features['logits'][0]) < 1e-5
  probs = updates[-1].probabilities
  assert abs(probs.sum() - 1) < 1e-5 and np.argmax(probs) == np.argmax(
      features['logits'][0])
  assert updates[-1].frames_per_second > 0
  windowed = list(online.stream_video(
      step, variables, np.asarray(clip[0]),
      online.init_state(model, variables, (1, SIZE, SIZE, 3)), window=2))
  np.testing.assert_allclose(windowed[-1].mean_logits,
                             frame_logits[-2:].mean(0), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------
# (b) The command line, end to end.
# ---------------------------------------------------------------------------


# A conversion written without a contract: the config and the preparation
# facts come from the flags (issue 28: a contract field nobody recorded is
# asked for by its flag).
OLD_CHECKPOINT_FLAGS = ('--fps=source', '--short_side=source')


def test_cli_streams_a_video(capfd, files, variables, offline):
  code, out, err = run_cli(capfd, f'--config={files["config"]}',
                           f'--checkpoint={files["converted"]}',
                           *OLD_CHECKPOINT_FLAGS, '--top_k=3', '--every=2',
                           files['video'])
  assert code == 0, err
  assert 'Traceback' not in err and 'vidjax:' not in err, err
  lines = out.strip().splitlines()
  progress = [l for l in lines if l.startswith('frame ')]
  assert [l.split(' |')[0] for l in progress] == [
      'frame 2/6', 'frame 4/6', 'frame 6/6'], out
  for line in progress:
    assert 'frames/s, ETA ' in line and '| top-3: ' in line, line
  assert 'ETA 00:00' in progress[-1]
  assert 'short side 37, centre 32x32, imagenet normalisation' in out
  done = next(l for l in lines if l.startswith('done: '))
  assert done.startswith('done: 6 frames in ') and 'frames/s end to end' in (
      done)

  # The final top-3 is the offline model's on the same preprocessed frames.
  contract = loader.load(files['converted'], config=stream_config(files),
                         overrides={'fps': 'source',
                                    'short_side': 'source'}).contract
  assert contract.eval_short_side == 37
  assert (contract.mean, contract.std) == ((0.485, 0.456, 0.406),
                                           (0.229, 0.224, 0.225))
  with video_input.VideoReader(files['video'], contract,
                               jpeg_roundtrip=False) as reader:
    assert (reader.num_frames, reader.width, reader.height) == (6, 48, 40)
    clip = np.stack(list(command.frames(reader, contract)))[None]
  assert clip.shape == (1, FRAMES, SIZE, SIZE, 3)
  logits = np.asarray(offline(variables, clip)['logits'][0])
  top3 = [CLASS_NAMES[i] for i in np.argsort(-logits)[:3]]
  final = lines[-1]
  assert final.startswith('top-3: '), out
  assert [part.rsplit(' ', 1)[0] for part in
          final[len('top-3: '):].split(', ')] == top3, (final, top3)


def test_cli_reads_a_trainer_workdir(capfd, files, variables):
  """The trainer's own save (TrainState with an optimizer state), with its
  contract: no --config (issue 28: the contract names the model)."""
  workdir = files['root'] / 'workdir'
  params = jax.tree.map(jnp.asarray, variables['params'])
  state = setup_lib.TrainState(
      step=jnp.asarray(7, jnp.int32), params=params,
      batch_stats=jax.tree.map(jnp.asarray, variables['batch_stats']),
      opt_state=optax.sgd(0.1, momentum=0.9).init(params))
  config = stream_config(files)
  contract = loader.load(files['converted'], config=config).contract.replace(
      class_names=None, fps='source', short_side='source')
  manager = checkpoint_lib.make_manager(str(workdir), save_every_steps=1,
                                        keep=2)
  checkpoint_lib.save(manager, 7, state, force=True, custom_metadata={
      checkpoint_lib.CONTRACT_KEY: contract.to_dict()})
  manager.close()
  (workdir / 'config.json').write_text(json.dumps({'model_name': NAME}))

  loaded = loader.load(str(workdir))
  assert (loaded.source.kind, loaded.source.step, loaded.contract) == (
      'workdir', 7, contract)
  same = jax.tree.map(np.array_equal, loaded.variables, variables)
  assert all(jax.tree.leaves(same))
  # The checkpoints directory itself works too; class indices without names.
  code, out, err = run_cli(capfd, f'--checkpoint={workdir}/checkpoints',
                           '--every=6', files['video'])
  assert code == 0, err
  assert 'Traceback' not in err and 'vidjax:' not in err, err
  assert f'{NAME} ({CLASSES} classes) from {workdir} (step 7)' in out
  assert 'top-5: class ' in out.strip().splitlines()[-1], out


# ---------------------------------------------------------------------------
# (c) Bad input: exit 1, one `vidjax: error:` line, no traceback.
# ---------------------------------------------------------------------------


def assert_one_error_line(code, err, *needles):
  assert code == 1, err
  lines = err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('vidjax: error: '), err
  for needle in needles:
    assert needle in lines[0], lines[0]


@pytest.mark.parametrize('kind,needle', [
    ('missing', 'file not found'),
    ('not_a_video', 'cannot open ('),  # The shared reader's wording.
    ('empty', 'empty file'),
    ('no_frames', 'no decodable video frames'),
    ('audio_only', 'no video stream'),
])
def test_undecodable_video(capfd, files, kind, needle):
  path = files['root'] / f'{kind}.mp4'
  if kind == 'not_a_video':
    path.write_text('this is not a video\n' * 20)
  elif kind == 'empty':
    path.write_bytes(b'')
  elif kind == 'no_frames':
    # A Matroska file cut inside its first Cluster's header (ID and size):
    # it opens, has a video stream, and no frame.
    path = path.with_suffix('.mkv')
    video_io.encode_video(path, np.zeros((2, 32, 32, 3), np.uint8), fps=25)
    data = path.read_bytes()
    path.write_bytes(data[:data.index(bytes.fromhex('1f43b675')) + 12])
  elif kind == 'audio_only':
    path = path.with_suffix('.wav')
    with wave.open(str(path), 'wb') as audio:
      audio.setnchannels(1)
      audio.setsampwidth(2)
      audio.setframerate(8000)
      audio.writeframes(np.zeros(800, np.int16).tobytes())
  code, _, err = run_cli(capfd, f'--config={files["config"]}',
                         f'--checkpoint={files["converted"]}',
                         *OLD_CHECKPOINT_FLAGS, path)
  assert_one_error_line(code, err, str(path), needle)


@pytest.mark.parametrize('model_name,needle', [
    ('tsm_r18', "shift='bidirectional') reads the next frame"),
    ('tsn_r18', 'has no temporal shift'),
    ('s3dg', "model 's3dg' (inception) cannot stream"),
])
def test_model_that_cannot_stream(capfd, files, model_name, needle):
  # The contract names the model (issue 28): weights of each, converted
  # with their contract.
  options = ({'depth_multiplier': 0.125, 'min_depth': 8}
             if model_name == 's3dg' else {'width': WIDTH})
  config = workdirs.tiny_config(model_name, 4, SIZE, **options)
  _, variables = workdirs.random_variables(config, CLASSES)
  contract = contract_lib.from_config(
      config, num_classes=CLASSES, class_names=None,
      preparation={'fps': 'source', 'short_side': 'source'})
  directory = save_converted(str(files['root'] / model_name), model_name,
                             CLASSES, variables, contract=contract)
  code, _, err = run_cli(capfd, f'--checkpoint={directory}', files['video'])
  assert_one_error_line(code, err, needle, 'tsm_online_r50')


def test_checkpoint_of_another_model(capfd, files):
  other = create_model('tsm_online_r34', num_classes=CLASSES, width=WIDTH)
  directory = save_converted(str(files['root'] / 'r34'), 'tsm_online_r34',
                             CLASSES, random_variables(other, seed=3))
  code, _, err = run_cli(capfd, f'--config={files["config"]}',
                         f'--checkpoint={directory}', *OLD_CHECKPOINT_FLAGS,
                         files['video'])
  # Issue 28: the loader's one line (was a description of the ResNets).
  assert_one_error_line(
      code, err, f"{directory} (converted checkpoint) holds 'tsm_online_r34' "
      "weights but the config names model 'tsm_online_r18'")
  # Weights that do not fit the model their metadata names.
  directory = save_converted(str(files['root'] / 'lying'), 'tsm_online_r34',
                             CLASSES, random_variables(
                                 create_model(NAME, num_classes=CLASSES,
                                              width=WIDTH), seed=3))
  code, _, err = run_cli(capfd, f'--config={files["config"]}',
                         '--config.model_name=tsm_online_r34',
                         f'--checkpoint={directory}', *OLD_CHECKPOINT_FLAGS,
                         files['video'])
  assert_one_error_line(code, err, "does not fit model 'tsm_online_r34'",
                        'missing: batch_stats/layer1/block2/bn1/mean')


@pytest.mark.parametrize('what,needle', [
    ('missing', 'does not exist'),
    ('neither', 'is neither a training workdir'),  # The loader's wording.
    ('empty_workdir', 'has no checkpoint yet'),
])
def test_bad_checkpoint_directory(capfd, files, what, needle):
  directory = files['root'] / f'ckpt_{what}'
  if what == 'neither':
    directory.mkdir()
  elif what == 'empty_workdir':
    (directory / 'checkpoints').mkdir(parents=True)
  code, _, err = run_cli(capfd, f'--config={files["config"]}',
                         f'--checkpoint={directory}', files['video'])
  assert_one_error_line(code, err, needle)


def test_flag_errors(capfd, files):
  code, _, err = run_cli(capfd, f'--config={files["config"]}',
                         f'--checkpoint={files["converted"]}')
  assert_one_error_line(code, err, 'give one VIDEO file')
  # --config is optional (the contract names the model); a checkpoint
  # without a contract asks for it.
  code, _, err = run_cli(capfd, f'--checkpoint={files["converted"]}',
                         files['video'])
  assert_one_error_line(code, err, 'carries no preprocessing contract',
                        '--config=CONFIG.py')
  code, _, err = run_cli(capfd, f'--config={files["config"]}',
                         f'--checkpoint={files["converted"]}', files['video'])
  assert_one_error_line(code, err, "has no 'fps' in its preprocessing "
                        'contract', '--fps=...')
  code, _, err = run_cli(capfd, f'--config={files["config"]}',
                         '--config.no_such_key=1',
                         f'--checkpoint={files["converted"]}', files['video'])
  assert_one_error_line(code, err, 'no_such_key')
