"""The embedded default: a small S3D-G learns the moving-shapes dataset.

Runs in minutes on a laptop CPU and needs no download: the dataset is
rendered on first use (vidjax/data/builders/moving_shapes.py).

  bash run.sh demo
  # which is: python -m vidjax.main --config=configs/demo.py --workdir=workdirs/demo
  # e.g. longer:  ... --config.total_steps=1000
"""
import ml_collections
from ml_collections import config_dict

from vidjax.data import schema
from vidjax.parallel import mesh
from vidjax.train import periodic_eval


def get_config():
  config = ml_collections.ConfigDict()
  config.seed = 0

  # S3D-G with TF-slim's depth multiplier: the real architecture (separable
  # convs + gating in every block), a quarter of the channels.
  config.model_name = 's3dg'
  config.model = ml_collections.ConfigDict(
      dict(depth_multiplier=0.25, dropout_rate=0.2, bn_momentum=0.9))

  config.data = schema.default_data_config()

  config.batch_size = 16
  config.eval_batch_size = 32
  config.total_steps = 600
  config.label_smoothing = 0.1
  config.optimizer = ml_collections.ConfigDict(dict(
      learning_rate=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4,
      warmup_steps=40))

  # A `python -m vidjax.convert` output directory to fine-tune from (the
  # classifier is re-initialised when the class count differs).
  # Sharding: mesh ('data', 'time'), rules, FSDP (docs/scale.md).
  config.update(mesh.default_config())

  config.init_from = config_dict.placeholder(str)

  config.log_every_steps = 20
  config.checkpoint_every_steps = 100
  config.keep_checkpoints = 2
  # A cheap pass over data.val_split every 200 steps (one centre clip per
  # video); the best checkpoint by val/top1 is kept under <workdir>/best;
  # test_checkpoint='best' makes the final test read it.
  config.update(periodic_eval.default_config(every=200))
  return config
