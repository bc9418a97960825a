"""Small checkpoints in every on-disk form, written without training.

`write_workdir` lays out what `python -m vidjax.main` leaves (config.json,
checkpoints/<step> saved by vidjax.train.checkpoint with the contract in
its metadata), from a randomly initialised model: what the inference tools
read, in a fraction of a second.
"""
import os

import flax.linen as nn
import jax
import numpy as np

from vidjax import config as config_lib
from vidjax.inference import contract as contract_lib
from vidjax.models import create_model
from vidjax.train import checkpoint
from vidjax.train import workdir as workdir_lib

CLASS_NAMES = tuple(f'class_{i}' for i in range(5))


def tiny_config(model_name='s3dg', num_frames=4, crop_size=24, **model):
  config = config_lib.default_config()
  config.model_name = model_name
  config.model.update(model or {'depth_multiplier': 0.125, 'min_depth': 8})
  config.data.num_frames = num_frames
  config.data.frame_stride = 2
  config.data.crop_size = crop_size
  return config


def random_variables(config, num_classes=len(CLASS_NAMES), seed=0):
  """(model, variables): every parameter and BN statistic random, numpy.

  From the shapes alone (`jax.eval_shape` of the init): nothing is
  compiled, where an eager init compiles each of its ops (a minute for
  S3D-G on two cores). He-scaled kernels and statistics far from the
  init's zeros and ones, so a loader that drops or swaps any is caught.
  """
  model = create_model(config.model_name, num_classes=num_classes,
                       **config.model.to_dict())
  clip = jax.ShapeDtypeStruct((1, config.data.num_frames,
                               config.data.crop_size, config.data.crop_size,
                               3), np.float32)
  abstract = nn.unbox(jax.eval_shape(
      lambda x: model.init(jax.random.key(0), x, train=False), clip))
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name, shape = path[-1].key, leaf.shape
    if name == 'kernel':
      scale = np.sqrt(2.0 / max(1, int(np.prod(shape[:-1]))))
      value = rng.standard_normal(shape) * scale
    elif name in ('scale', 'var'):
      value = rng.uniform(0.5, 1.5, shape)
    else:
      value = 0.1 * rng.standard_normal(shape)
    return value.astype(leaf.dtype)

  variables = {k: jax.tree_util.tree_map_with_path(fill, abstract[k])
               for k in ('params', 'batch_stats') if k in abstract}
  return model, variables


def write_workdir(path, config=None, *, steps=(10,), best=None,
                  with_contract=True, class_names=CLASS_NAMES,
                  preparation=None, seed=0):
  """A trainer-layout workdir; returns (model, {step: variables}).

  `best`: one of `steps`, also saved as the best checkpoint (DIR/best), as
  the trainer does when config.best_metric is set.
  """
  config = config or tiny_config()
  os.makedirs(path, exist_ok=True)
  workdir_lib.write_json(os.path.join(path, workdir_lib.CONFIG),
                         config.to_dict())
  custom = None
  if with_contract:
    custom = {checkpoint.CONTRACT_KEY: contract_lib.from_config(
        config, num_classes=len(class_names), class_names=class_names,
        preparation=preparation or {'fps': 25.0, 'short_side': 32,
                                    'jpeg_quality': 90}).to_dict()}
  manager = checkpoint.make_manager(str(path), save_every_steps=1, keep=10)
  saved = {}
  for i, step in enumerate(steps):
    model, variables = random_variables(config, len(class_names), seed + i)
    state = {**variables, 'opt_state': {'mu': np.zeros(3, np.float32)},
             'step': np.asarray(step)}
    checkpoint.save(manager, step, state, force=True, custom_metadata=custom)
    if step == best:
      best_manager = checkpoint.make_best_manager(str(path), 'top_1', 'max')
      checkpoint.save_scored(best_manager, step, state, {'top_1': 0.5},
                             custom_metadata=custom)
      best_manager.close()
    saved[step] = variables
  manager.close()
  return model, saved
