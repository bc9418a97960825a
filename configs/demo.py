"""The embedded default: a small S3D-G learns the moving-shapes dataset.

Runs in minutes on a laptop CPU and needs no download: the dataset is
rendered on first use (vidjax/data/builders/moving_shapes.py).

  bash run.sh demo
  # which is: python -m vidjax.main --config=configs/demo.py --workdir=workdirs/demo
  # e.g. longer:  ... --config.total_steps=1000

Everything not set here is vidjax/config.py's default (the demo's data,
batch and schedule are the defaults).
"""
import ml_collections

from vidjax import config as config_lib


def get_config():
  config = config_lib.default_config()
  # S3D-G (the default model_name) with TF-slim's depth multiplier: the real
  # architecture (separable convs + gating in every block), a quarter of the
  # channels.
  config.model = ml_collections.ConfigDict(
      dict(depth_multiplier=0.25, dropout_rate=0.2, bn_momentum=0.9))
  config.label_smoothing = 0.1

  # A 600-step run: log, save and evaluate often.
  config.log_every_steps = 20
  config.checkpoint_every_steps = 100
  config.keep_checkpoints = 2
  # A cheap pass over data.val_split every 200 steps (one centre clip per
  # video); the best checkpoint by val/top1 is kept under <workdir>/best;
  # test_checkpoint='best' makes the final test read it.
  config.eval_every_steps = 200
  return config
