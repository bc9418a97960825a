"""The multi-view test protocol: aggregation against numpy, batch-size
independence, and the counts in eval_results.json."""
import json
import os

import flax
import flax.linen as nn
import jax
import ml_collections
import numpy as np
import pytest

from tests.data import records as R
from vidjax.data import pipeline
from vidjax.models import registry
from vidjax.parallel import mesh as mesh_lib
from vidjax.train import evaluate
from vidjax.train import trainer

NUM_CLASSES = 6
LENGTHS = (12, 20, 5, 30, 16)  # Frames per video; 5 < the clip span 7.
LABELS = (0, 3, 5, 1, 3)


class Linear(nn.Module):
  """Order- and position-sensitive, compiles in a blink."""
  num_classes: int

  @nn.compact
  def __call__(self, x, train=False):
    del train
    return nn.Dense(self.num_classes)(x.reshape(x.shape[0], -1) * 4.0)


@flax.struct.dataclass
class State:
  params: dict
  batch_stats: dict


@pytest.fixture(scope='module')
def data(tmp_path_factory):
  d = str(tmp_path_factory.mktemp('eval'))
  recs = [R.record(v, n, label) for v, (n, label)
          in enumerate(zip(LENGTHS, LABELS))]
  R.write_shards(d, 'val', recs, 2)
  return d


def _config(data_dir, batch, **overrides):
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.eval_batch_size = batch
  config.data = R.data_config(
      eval_pattern=os.path.join(data_dir, 'val-*'), num_classes=NUM_CLASSES,
      num_test_clips=2, num_test_crops=3, **overrides)
  return config


@pytest.fixture(scope='module')
def model_and_state():
  model = Linear(NUM_CLASSES)
  variables = nn.unbox(model.init(jax.random.key(3), np.zeros((1, 4, 16, 16, 3))))
  return model, State(params=variables['params'], batch_stats={})


def _numpy_reference(model_and_state, data_dir):
  """Views from the stream, logits by numpy, aggregation by numpy."""
  _, state = model_and_state
  cfg = _config(data_dir, 64)
  (batch,) = pipeline.build_dataset(cfg.data, 'validation', train=False,
                                    batch_size=64).as_numpy_iterator()
  real = batch['mask'] == 1
  kernel = np.asarray(state.params['Dense_0']['kernel'], np.float64)
  bias = np.asarray(state.params['Dense_0']['bias'], np.float64)
  logits = batch['video'][real].reshape(real.sum(), -1) * 4.0 @ kernel + bias
  logits -= logits.max(-1, keepdims=True)
  log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  labels, videos = batch['label'][real], batch['video_index'][real]
  loss = -log_probs[np.arange(len(labels)), labels].mean()
  clip_top1 = (log_probs.argmax(-1) == labels).mean()
  video_probs = np.stack([np.exp(log_probs[videos == v]).mean(0)
                          for v in range(len(LENGTHS))])
  video_labels = np.array([labels[videos == v][0] for v in range(5)])
  order = np.argsort(-video_probs, axis=-1)
  top1 = (order[:, 0] == video_labels).mean()
  top5 = np.mean([l in o[:5] for l, o in zip(video_labels, order)])
  return dict(loss=loss, clip_top1=clip_top1, top1=top1, top5=top5,
              num_clips=int(real.sum()))


def test_aggregator_against_numpy():
  rng = np.random.default_rng(0)
  num_videos, views, classes = 9, 6, 7
  logits = rng.normal(size=(num_videos, views, classes)) * 2
  log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  labels = rng.integers(0, classes, num_videos)
  # Views in a shuffled order, in uneven batches, with padding rows.
  rows = [(v, k) for v in range(num_videos) for k in range(views)]
  rows = [rows[i] for i in rng.permutation(len(rows))] + [(-1, 0)] * 5
  agg = evaluate.ViewAggregator(classes)
  cuts = [0, 1, 8, 20, 21, len(rows)]
  for lo, hi in zip(cuts[:-1], cuts[1:]):
    part = rows[lo:hi]
    v = np.array([r[0] for r in part])
    agg.add(
        np.stack([log_probs[a, k] if a >= 0 else np.zeros(classes)
                  for a, k in part]),
        {'label': np.where(v >= 0, labels[v], 0), 'mask': (v >= 0) * 1.0,
         'video_index': v, 'status': np.zeros(len(v), int),
         'padded': np.zeros(len(v), bool), 'filename': [b''] * len(v)})
  result = evaluate._results(agg.sums(), 'test', num_videos)
  mean_probs = np.exp(log_probs).mean(1)
  ranks = (mean_probs > mean_probs[np.arange(num_videos), labels][:, None])
  np.testing.assert_allclose(result['top1'], np.mean(ranks.sum(1) == 0))
  np.testing.assert_allclose(result['top5'], np.mean(ranks.sum(1) < 5))
  clip_labels = np.repeat(labels, views)
  flat = log_probs.reshape(-1, classes)
  np.testing.assert_allclose(
      result['clip_top1'], np.mean(flat.argmax(-1) == clip_labels))
  np.testing.assert_allclose(
      result['loss'], -flat[np.arange(len(flat)), clip_labels].mean())
  assert result['num_clips'] == num_videos * views
  assert result['num_examples'] == num_videos
  scores = agg.video_scores()
  for v in range(num_videos):
    np.testing.assert_allclose(scores[v], mean_probs[v])


def test_topk_ties_count_against_the_label():
  scores = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
  np.testing.assert_array_equal(
      evaluate.topk_correct(scores, np.array([0, 2]), 1), [False, True])


def test_results_do_not_depend_on_the_batch_size(data, model_and_state):
  model, state = model_and_state
  mesh = mesh_lib.make_mesh()
  meta = pipeline.dataset_info(_config(data, 1).data)
  expected = _numpy_reference(model_and_state, data)
  results = {b: evaluate.evaluate(model, state, _config(data, b), mesh, meta)
             for b in (1, 3, 8, 13)}
  first = results[1]
  assert first['num_examples'] == first['num_examples_in_split'] == 5
  assert first['num_clips'] == expected['num_clips'] == 5 * 2 * 3
  assert first['views'] == {'clips': 2, 'crops': 3}
  assert first["padded_short_videos"] == 1
  for key in ('top1', 'top5', 'clip_top1', 'loss'):
    np.testing.assert_allclose(first[key], expected[key], rtol=1e-5)
  for b, r in results.items():
    for key in ('num_examples', 'num_clips', 'top1', 'top5', 'clip_top1',
                'clip_top5', 'skipped', 'padded_short_videos'):
      assert r[key] == first[key], (b, key)
    np.testing.assert_allclose(r['loss'], first['loss'], rtol=1e-6)


def test_trainer_writes_counts(tmp_path, capsys, monkeypatch):
  """A whole (2-step) run on records with every kind of bad input."""
  d = str(tmp_path / 'data')
  recs = [R.record(v, 12, v % 4) for v in range(8)]
  recs[1] = R.record(1, 12, 1, corrupt=range(12))
  recs[2] = R.record(2, 0, 2)
  recs[3] = R.record(3, 12, 7)
  recs[4] = R.record(4, 2, 0)
  paths = R.write_shards(d, 'val', recs, 2)
  R.truncate(paths[1], 30)  # Drops record 7 (written to shard 1).
  from configs import demo  # pylint: disable=g-import-not-at-top
  # The trainer's plumbing is under test here, not S3D-G: a linear model
  # compiles in a second instead of a minute.
  # Registered for this test only: other tests list the registry's models.
  monkeypatch.setitem(registry._REGISTRY, 'test_linear', registry.ModelSpec(
      'test_linear', Linear, {}, family='test', head='Dense_0',
      normalization='imagenet'))
  config = demo.get_config()
  config.model_name = 'test_linear'
  config.model = ml_collections.ConfigDict()
  pattern = os.path.join(d, 'val-*')
  config.data = R.data_config(pattern, pattern, num_classes=4)
  config.batch_size = config.eval_batch_size = 8
  config.total_steps = 2
  config.log_every_steps = 1
  result = trainer.train_and_evaluate(config, str(tmp_path / 'wd'))
  written = json.loads((tmp_path / 'wd' / 'eval_results.json').read_text())
  assert written['num_examples'] == 4  # 0, 4, 5, 6.
  # Without metadata the cut record 7 is the only one known of.
  assert written['num_examples_in_split'] == 8
  assert written['skipped'] == {**{k: 0 for k in pipeline.SKIP_REASONS},
                                'undecodable': 1, 'no_frames': 1,
                                'bad_label': 1, 'truncated': 1}
  assert written['padded_short_videos'] == 1
  assert written['train_input']['padded'] >= 1
  assert sum(written['train_input'][k] for k in
             ('undecodable', 'no_frames', 'bad_label')) >= 3
  assert result['top1'] == written['top1']
  out = capsys.readouterr().out
  assert '4/8 videos' in out and 'undecodable 1' in out
  assert 'truncated 1' in out
