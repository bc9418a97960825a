"""One loader for every checkpoint: a workdir (latest, best, a step), one
step dir (also copied elsewhere, alone), a conversion; the contract with
each; one line for every kind of bad source.

(The fourth kind, the workdir of a real trainer run, is in
tests/train/test_trainer.py: it reuses that file's session run.)
"""
import os
import shutil

from absl import flags
import jax
import numpy as np
import pytest

from tests.data.test_preflight import one_line  # One VidjaxError line.
from tests.inference import workdirs
from vidjax import VidjaxError
from vidjax.convert import save_converted
from vidjax.inference import contract as contract_lib
from vidjax.inference import loader
from vidjax.inference import source_flags

PREPARATION = {'fps': 25.0, 'short_side': 32, 'jpeg_quality': 90}


@pytest.fixture(scope='module')
def saved(tmp_path_factory):
  """A workdir with steps 10 and 20 (best: 10), and what each holds."""
  root = tmp_path_factory.mktemp('loader')
  config = workdirs.tiny_config()
  model, variables = workdirs.write_workdir(
      root / 'wd', config, steps=(10, 20), best=10, preparation=PREPARATION)
  contract = contract_lib.from_config(
      config, num_classes=len(workdirs.CLASS_NAMES),
      class_names=workdirs.CLASS_NAMES, preparation=PREPARATION)
  return dict(root=root, workdir=str(root / 'wd'), config=config,
              model=model, variables=variables, contract=contract)


def assert_bitwise_equal(actual, expected):
  flat_a = jax.tree_util.tree_leaves_with_path(actual)
  flat_e = jax.tree_util.tree_leaves_with_path(expected)
  assert [p for p, _ in flat_a] == [p for p, _ in flat_e]
  for (path, a), (_, e) in zip(flat_a, flat_e):
    assert isinstance(a, np.ndarray), path
    assert a.dtype == e.dtype and a.shape == e.shape, path
    assert a.tobytes() == np.asarray(e).tobytes(), path


# ---------------------------------------------------------- Four sources.


def test_workdir_latest_best_and_a_step(saved):
  wd = saved['workdir']
  latest = loader.load(wd)
  assert (latest.source.kind, latest.source.step, latest.source.workdir) == (
      'workdir', 20, wd)
  assert latest.source.describe() == f'{wd} (step 20)'
  assert_bitwise_equal(latest.variables, saved['variables'][20])
  assert latest.contract == saved['contract']
  assert latest.model == saved['model']
  best = loader.load(wd, which='best')
  assert best.source.step_dir == os.path.join(wd, 'best', '10')
  assert best.source.describe() == f'{wd} (best checkpoint, step 10)'
  assert_bitwise_equal(best.variables, saved['variables'][10])
  assert best.contract == saved['contract']
  step = loader.load(wd, step=10)
  assert step.source.step_dir == os.path.join(wd, 'checkpoints', '10')
  assert_bitwise_equal(step.variables, saved['variables'][10])
  # The fingerprint is the weights': stable, equal for equal weights.
  assert len(latest.fingerprint) == 16
  assert latest.fingerprint == loader.load(wd).fingerprint
  assert step.fingerprint == best.fingerprint != latest.fingerprint
  # The checkpoints directory itself names the workdir.
  assert loader.load(os.path.join(wd, 'checkpoints')).source.step == 20


def test_one_step_dir_also_copied_alone(saved):
  wd = saved['workdir']
  inside = loader.load(os.path.join(wd, 'checkpoints', '20'))
  assert (inside.source.kind, inside.source.step, inside.source.workdir) == (
      'step', 20, wd)
  assert_bitwise_equal(inside.variables, saved['variables'][20])
  # Copied elsewhere under another name: it carries its contract.
  alone = saved['root'] / 'copies' / 'k400_final'
  shutil.copytree(os.path.join(wd, 'checkpoints', '20'), alone)
  loaded = loader.load(str(alone))
  assert (loaded.source.kind, loaded.source.workdir, loaded.source.step) == (
      'step', None, None)
  assert loaded.source.describe() == f'checkpoint step {alone}'
  assert loaded.contract == saved['contract']
  assert_bitwise_equal(loaded.variables, saved['variables'][20])
  assert loaded.fingerprint == inside.fingerprint
  assert loaded.model == saved['model']  # Same model, same weights.


def test_a_conversion_with_and_without_its_contract(saved):
  variables = saved['variables'][20]
  out = save_converted(str(saved['root'] / 'converted'), 's3dg', 5,
                       variables, options={}, contract=saved['contract'])
  loaded = loader.load(out)
  assert (loaded.source.kind, loaded.source.step) == ('converted', None)
  assert loaded.contract == saved['contract']
  assert_bitwise_equal(loaded.variables, variables)
  assert loaded.fingerprint == loader.load(saved['workdir']).fingerprint
  # Converted before conversions carried a contract: --config names it.
  old = save_converted(str(saved['root'] / 'old'), 's3dg', 5, variables)
  assert one_line(loader.load, old) == (
      f'{old} (converted checkpoint) carries no preprocessing contract '
      '(saved before vidjax wrote one) and no config.json beside it: '
      'convert it again with python -m vidjax.convert ... --config=CONFIG.py'
      ', or give the training config with --config=CONFIG.py')
  given = loader.load(old, config=saved['config'])
  assert given.contract == saved['contract'].replace(
      class_names=None, fps=None, short_side=None, jpeg_quality=None)
  other = workdirs.tiny_config('i3d')
  assert one_line(loader.load, old, config=other) == (
      f"{old} (converted checkpoint) holds 's3dg' weights but the config "
      "names model 'i3d'")
  assert one_line(loader.load, out, step=3) == (
      f'{out} is a conversion: it has one set of weights, no steps or best '
      'to choose (drop --step and --which)')


# ------------------------------------------ Older checkpoints: the flag.


def test_a_workdir_without_a_contract(saved):
  wd = str(saved['root'] / 'old_wd')
  workdirs.write_workdir(wd, saved['config'], with_contract=False)
  loaded = loader.load(wd)  # The clips from its config.json.
  assert loaded.contract == saved['contract'].replace(
      class_names=None, fps=None, short_side=None, jpeg_quality=None)
  for field, flag in (('fps', '--fps'), ('class_names',
                                         '--class_names_file')):
    assert one_line(loaded.contract.require, [field],
                    loaded.source.describe()) == (
                        f"{wd} (step 10) has no '{field}' in its "
                        'preprocessing contract (written before vidjax saved '
                        'one, or not known when it was trained); give it '
                        f'with {flag}=...')
  # The flags fill it in.
  names = saved['root'] / 'names.txt'
  names.write_text('\n'.join(f'n{i}' for i in range(5)) + '\n')
  filled = load_with_flags(wd, '--fps=source', '--short_side=32',
                           f'--class_names_file={names}')
  assert (filled.contract.fps, filled.contract.short_side,
          filled.contract.label(4)) == ('source', 32, 'n4')
  # A step of it alone has neither contract nor config.json.
  alone = saved['root'] / 'old_alone' / '10'
  shutil.copytree(os.path.join(wd, 'checkpoints', '10'), alone)
  assert one_line(loader.load, str(alone)) == (
      f'checkpoint step {alone} (step 10) carries no preprocessing contract '
      '(saved before vidjax wrote one) and no config.json beside it: give '
      'the training config with --config=CONFIG.py')
  assert loader.load(str(alone), config=saved['config']).contract == (
      loaded.contract)


def load_with_flags(path, *args):
  """`source_flags` as a command defines and reads them."""
  fv = flags.FlagValues()
  argv = ['tool', f'--checkpoint={path}', *args]
  holders = source_flags.define(fv, argv)
  fv(argv)
  return source_flags.load(holders)


def test_flag_values_are_checked(saved):
  assert one_line(load_with_flags, saved['workdir'], '--fps=fast') == (
      "--fps=fast: want a positive number or 'source'")
  assert one_line(load_with_flags, saved['workdir'], '--short_side=0') == (
      "--short_side=0: want a positive integer or 'source'")
  missing = saved['root'] / 'no_names.txt'
  assert one_line(load_with_flags, saved['workdir'],
                  f'--class_names_file={missing}') == (
                      f'cannot read --class_names_file {missing}: No such '
                      'file or directory')
  three = saved['root'] / 'three.txt'
  three.write_text('a\nb\nc\n')
  assert one_line(load_with_flags, saved['workdir'],
                  f'--class_names_file={three}') == (
                      f'{saved["workdir"]} (step 20): bad preprocessing '
                      'contract: 3 class names for 5 classes')
  loaded = load_with_flags(saved['workdir'], '--which=best', '--fps=12.5')
  assert (loaded.source.step, loaded.contract.fps) == (10, 12.5)


# ------------------------------------------------------ Bad sources.


def test_bad_sources_are_one_line_each(saved, tmp_path):
  wd = saved['workdir']
  assert one_line(loader.load, wd, step=7) == (
      f'{wd}/checkpoints has no step 7; steps: 10, 20')
  only_latest = tmp_path / 'only_latest'
  workdirs.write_workdir(only_latest, saved['config'])
  assert one_line(loader.load, str(only_latest), which='best') == (
      f'{only_latest} has no best checkpoint (it is kept when training sets '
      'config.best_metric and config.eval_every_steps); use --which=latest')
  empty = tmp_path / 'empty'
  (empty / 'checkpoints').mkdir(parents=True)
  assert one_line(loader.load, str(empty)) == (
      f'{empty} has no checkpoint yet (has training saved one?)')
  neither = tmp_path / 'neither'
  neither.mkdir()
  assert one_line(loader.load, str(neither)) == (
      f'{neither} is neither a training workdir (no checkpoints/ inside), a '
      'checkpoint step, nor a python -m vidjax.convert output (no '
      'vidjax_model.json)')
  a_file = tmp_path / 'model.pth'
  a_file.write_bytes(b'\0' * 8)
  assert one_line(loader.load, str(a_file)) == (
      f'checkpoint {a_file} is not a directory (want a training workdir, a '
      'checkpoint step or a python -m vidjax.convert output)')
  assert one_line(loader.load, str(tmp_path / 'nowhere')) == (
      f'checkpoint {tmp_path}/nowhere does not exist')
  assert one_line(loader.load, wd, which='newest') == (
      "which='newest': want one of latest, best")
  step_dir = os.path.join(wd, 'checkpoints', '10')
  assert one_line(loader.load, step_dir, step=20) == (
      f'{step_dir} is one checkpoint step (10), not step 20; give its '
      'workdir to choose a step')


def test_a_damaged_step_names_the_others(saved, tmp_path):
  wd = tmp_path / 'damaged'
  shutil.copytree(saved['workdir'], wd)
  # The array data of step 20 truncated.
  data = wd / 'checkpoints' / '20' / 'default' / 'd'
  for name in os.listdir(data):
    (data / name).write_bytes(b'')
  message = one_line(loader.load, str(wd))
  assert message.startswith(f'cannot read {wd} (step 20) '
                            f'({wd}/checkpoints/20): '), message
  assert message.endswith('; choose another with --step (steps: 10)')
  assert_bitwise_equal(loader.load(str(wd), step=10).variables,
                       saved['variables'][10])
  # Its tree metadata gone.
  os.remove(wd / 'checkpoints' / '20' / 'default' / '_METADATA')
  message = one_line(loader.load, str(wd))
  assert message.startswith(f'cannot read {wd} (step 20) '
                            f'({wd}/checkpoints/20): '), message
  assert message.endswith('; choose another with --step (steps: 10)')
  # Its step metadata (the contract's home) gone: no longer a step.
  os.remove(wd / 'checkpoints' / '20' / '_CHECKPOINT_METADATA')
  assert loader.load(str(wd)).source.step == 10


def test_weights_of_another_model_are_one_line(saved, tmp_path):
  wd = tmp_path / 'lying'
  shutil.copytree(saved['workdir'], wd)
  other = saved['contract'].replace(
      model_options={'depth_multiplier': 0.25, 'min_depth': 8})
  assert one_line(loader.load, str(wd), overrides={
      'model_options': other.model_options}).startswith(
          f"{wd} (step 20) does not fit model 's3dg' with options "
          "{'depth_multiplier': 0.25, 'min_depth': 8}: other shapes: ")
