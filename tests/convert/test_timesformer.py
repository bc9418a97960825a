"""TimeSformer checkpoints → vidjax: Hugging Face directories and state dicts,
the official .pyth layout and ImageNet ViT initialisation, with logit parity
against Hugging Face's `TimesformerForVideoClassification` and `ViT*` at a
tiny width, embeddings resized at other clip sizes, and one clear error per
bad checkpoint."""
import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip(
    'torch', reason='converter parity tests need PyTorch (pip install torch)')
transformers = pytest.importorskip(
    'transformers', reason='TimeSformer parity tests need Hugging Face '
    'transformers (pip install transformers)')

# pylint: disable=g-import-not-at-top,wrong-import-position
from vidjax import VidjaxError
from vidjax import convert
from vidjax.convert import mapping
from vidjax.convert import timesformer as timesformer_convert
from vidjax.models import create_model
from vidjax.models import timesformer
from tests.convert import torch_reference

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

# A TimeSformer far narrower than Base: 2 blocks of width 64, 4 heads, 4×4
# patches of 8 px on 32 px frames, 4 frames, 5 classes.
WIDTH, DEPTH, HEADS, PATCH, SIZE, FRAMES, CLASSES = 64, 2, 4, 8, 32, 4, 5
TOLERANCE = 1e-4  # ||vidjax − torch|| / ||torch||, float32.
SCHEME_NAMES = {'divided_space_time': 'timesformer',
                'joint_space_time': 'timesformer_joint',
                'space_only': 'timesformer_space'}
# Relative errors measured, printed at the end of the module (pytest -s).
ERRORS = {}

# Hugging Face → official (facebookresearch/TimeSformer, timesformer/models/
# vit.py: VisionTransformer.{cls_token, pos_embed, time_embed,
# patch_embed.proj, blocks[i], norm, head}; Block.{norm1, attn.{qkv, proj},
# temporal_norm1, temporal_attn.{qkv, proj}, temporal_fc, norm2,
# mlp.{fc1, fc2}}) module names, as HF's port documents them.
HF_TO_OFFICIAL = (
    ('timesformer.embeddings.cls_token', 'cls_token'),
    ('timesformer.embeddings.position_embeddings', 'pos_embed'),
    ('timesformer.embeddings.time_embeddings', 'time_embed'),
    ('timesformer.embeddings.patch_embeddings.projection.',
     'patch_embed.proj.'),
    ('timesformer.encoder.layer.', 'blocks.'),
    ('.temporal_attention.attention.qkv.', '.temporal_attn.qkv.'),
    ('.temporal_attention.output.dense.', '.temporal_attn.proj.'),
    ('.attention.attention.qkv.', '.attn.qkv.'),
    ('.attention.output.dense.', '.attn.proj.'),
    ('.temporal_layernorm.', '.temporal_norm1.'),
    ('.temporal_dense.', '.temporal_fc.'),
    ('.layernorm_before.', '.norm1.'),
    ('.layernorm_after.', '.norm2.'),
    ('.intermediate.dense.', '.mlp.fc1.'),
    ('.output.dense.', '.mlp.fc2.'),
    ('timesformer.layernorm.', 'norm.'),
    ('classifier.', 'head.'),
)
# Hugging Face ViT (as save_pretrained writes it) → timm's ViT: blocks[i].
# {norm1, attn.qkv (query, key, value stacked), attn.proj, norm2, mlp.fc1,
# mlp.fc2}, the official TimeSformer's ViT names without the temporal ones.
HF_VIT_TO_TIMM = (
    ('vit.embeddings.cls_token', 'cls_token'),
    ('vit.embeddings.position_embeddings', 'pos_embed'),
    ('vit.embeddings.patch_embeddings.projection.', 'patch_embed.proj.'),
    ('vit.encoder.layer.', 'blocks.'),
    ('.attention.output.dense.', '.attn.proj.'),
    ('.layernorm_before.', '.norm1.'),
    ('.layernorm_after.', '.norm2.'),
    ('.intermediate.dense.', '.mlp.fc1.'),
    ('.output.dense.', '.mlp.fc2.'),
    ('vit.layernorm.', 'norm.'),
    ('classifier.', 'head.'),
)


def rename(key, table):
  for old, new in table:
    key = key.replace(old, new)
  return key


def relative_error(actual, reference, what):
  error = torch_reference.relative_error(np.asarray(actual),
                                         np.asarray(reference))
  ERRORS[what] = error
  return error


@pytest.fixture(scope='module', autouse=True)
def report_errors():
  yield
  print('\nrelative errors:', ', '.join(f'{k} {v:.2e}'
                                        for k, v in ERRORS.items()))


def randomise(model):
  """Every weight non-trivial and well scaled: LayerNorms not the identity,
  time embedding and temporal_fc not HF's zeros/small init, attention not
  uniform (Linear weights ~ 1/√fan_in)."""
  generator = torch.Generator().manual_seed(1)
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, torch.nn.LayerNorm):
        module.weight.uniform_(0.5, 1.5, generator=generator)
        module.bias.normal_(0.0, 0.2, generator=generator)
      elif isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
        fan_in = module.weight[0].numel()
        module.weight.normal_(0.0, fan_in ** -0.5, generator=generator)
        module.bias.normal_(0.0, 0.1, generator=generator)
    for name, param in model.named_parameters():
      if name.endswith(('cls_token', 'position_embeddings',
                        'time_embeddings')):
        param.normal_(0.0, 0.5, generator=generator)
  return model.eval()


def hf_timesformer(attention_type='divided_space_time', **config):
  torch.manual_seed(0)
  options = dict(hidden_size=WIDTH, num_hidden_layers=DEPTH,
                 num_attention_heads=HEADS, intermediate_size=4 * WIDTH,
                 image_size=SIZE, patch_size=PATCH, num_frames=FRAMES,
                 num_labels=CLASSES, attention_type=attention_type)
  options.update(config)
  return randomise(transformers.TimesformerForVideoClassification(
      transformers.TimesformerConfig(**options)))


def hf_vit(head=True):
  torch.manual_seed(0)
  config = transformers.ViTConfig(
      hidden_size=WIDTH, num_hidden_layers=DEPTH, num_attention_heads=HEADS,
      intermediate_size=4 * WIDTH, image_size=SIZE, patch_size=PATCH,
      num_labels=CLASSES, layer_norm_eps=1e-6)
  cls = (transformers.ViTForImageClassification if head else
         transformers.ViTModel)
  return randomise(cls(config))


def clip(frames=FRAMES, size=SIZE, batch=2, seed=0):
  """A random clip, NTHWC for vidjax."""
  return np.random.default_rng(seed).standard_normal(
      (batch, frames, size, size, 3)).astype(np.float32)


def hf_run(model, video, **kwargs):
  """HF takes pixel_values [B, T, C, H, W]."""
  with torch.no_grad():
    return model(torch.from_numpy(video.transpose(0, 1, 4, 2, 3)).contiguous(),
                 **kwargs)


def run(model, variables, video, **kwargs):
  return jax.jit(lambda v, x: model.apply(v, x, **kwargs))(variables, video)


def save_hf(model, directory):
  model.save_pretrained(str(directory))
  return str(directory)


def numpy_state(model):
  return {k: v.numpy() for k, v in model.state_dict().items()}


def assert_same_variables(actual, expected):
  actual, expected = mapping.flatten(actual), mapping.flatten(expected)
  assert sorted(actual) == sorted(expected)
  for path in expected:
    np.testing.assert_array_equal(actual[path], expected[path],
                                  err_msg='/'.join(path))


@pytest.fixture(scope='module')
def divided(tmp_path_factory):
  """HF divided-attention model, its save_pretrained directory, and its
  conversion."""
  hf = hf_timesformer()
  directory = save_hf(hf, tmp_path_factory.mktemp('hf_divided'))
  model, variables = convert.load_torch('timesformer', directory)
  return hf, directory, model, variables


# -----------------------------------------------------------------------------
# Hugging Face TimeSformer.
# -----------------------------------------------------------------------------


def test_hf_directory_divided_logits_equal_hf(divided):
  hf, _, model, variables = divided
  assert (model.scheme, model.embed_dim, model.depth, model.num_heads,
          model.num_frames, model.image_size, model.patch_size,
          model.num_classes) == ('divided_space_time', WIDTH, DEPTH, HEADS,
                                 FRAMES, SIZE, PATCH, CLASSES)
  # The sizes travel with the weights (python -m vidjax.convert saves them).
  assert convert.model_options('timesformer', model) == dict(
      embed_dim=WIDTH, depth=DEPTH, num_heads=HEADS, num_frames=FRAMES,
      image_size=SIZE, patch_size=PATCH)
  video = clip()
  want = hf_run(hf, video).logits.numpy()
  assert relative_error(run(model, variables, video), want,
                        'divided') < TOLERANCE


def test_hf_directory_joint_logits_equal_hf(tmp_path):
  hf = hf_timesformer('joint_space_time')
  model, variables = convert.load_torch('timesformer_joint',
                                        save_hf(hf, tmp_path))
  video = clip()
  want = hf_run(hf, video).logits.numpy()
  assert relative_error(run(model, variables, video), want,
                        'joint') < TOLERANCE


def test_hf_directory_space_only_logits(tmp_path):
  """HF's space-only model classifies every frame ([B·T, classes]) where the
  official one averages the tokens over the frames before the final norm
  (vit.py: `torch.mean(x, 1)`), as vidjax does. So: on single-frame clips
  vidjax equals HF's per-frame logits; on T frames, the official reduction
  applied to HF's last encoder states."""
  hf = hf_timesformer('space_only')
  model, variables = convert.load_torch('timesformer_space',
                                        save_hf(hf, tmp_path))
  assert 'time_embed' not in variables['params']
  video = clip()
  out = hf_run(hf, video, output_hidden_states=True)
  frames = video.reshape(-1, 1, *video.shape[2:])  # Each frame a clip.
  assert relative_error(run(model, variables, frames), out.logits.numpy(),
                        'space_only per frame') < TOLERANCE
  with torch.no_grad():
    states = out.hidden_states[-1]  # [B·T, 1 + S, D], before the final norm.
    states = states.reshape(video.shape[0], FRAMES, *states.shape[1:]).mean(1)
    want = hf.classifier(hf.timesformer.layernorm(states)[:, 0]).numpy()
  assert relative_error(run(model, variables, video), want,
                        'space_only') < TOLERANCE


def test_pytorch_model_bin_and_sharded_directories(divided, tmp_path):
  """The same tensors as pytorch_model.bin (what transformers 4 wrote by
  default) and as sharded safetensors with an index."""
  hf, directory, _, expected = divided
  with open(os.path.join(directory, 'config.json')) as f:
    config = f.read()
  (tmp_path / 'bin').mkdir()
  (tmp_path / 'bin' / 'config.json').write_text(config)
  torch.save(hf.state_dict(), tmp_path / 'bin' / 'pytorch_model.bin')
  _, variables = convert.load_torch('timesformer', str(tmp_path / 'bin'))
  assert_same_variables(variables, expected)
  hf.save_pretrained(str(tmp_path / 'sharded'), max_shard_size='100KB')
  assert (tmp_path / 'sharded' / 'model.safetensors.index.json').exists()
  _, variables = convert.load_torch('timesformer', str(tmp_path / 'sharded'))
  assert_same_variables(variables, expected)


def test_bare_state_dict_with_overrides(divided, tmp_path):
  hf, directory, model, expected = divided
  for source in (hf.state_dict(), numpy_state(hf),
                 os.path.join(directory, 'model.safetensors')):
    got_model, variables = convert.load_torch('timesformer', source,
                                              num_heads=HEADS)
    assert got_model == model
    assert_same_variables(variables, expected)
  # Overrides the tensors confirm are fine.
  convert.load_torch('timesformer', hf.state_dict(), num_heads=HEADS,
                     embed_dim=WIDTH, depth=DEPTH, num_frames=FRAMES,
                     image_size=SIZE, patch_size=PATCH)


def test_bare_state_dict_without_heads_is_one_error(divided):
  hf = divided[0]
  with pytest.raises(VidjaxError, match=r'attention heads.*num_heads='):
    convert.load_torch('timesformer', hf.state_dict())
  with pytest.raises(VidjaxError, match='num_heads=5 does not divide the '
                     'width 64'):
    convert.load_torch('timesformer', hf.state_dict(), num_heads=5)


def test_official_pyth_layout(divided, tmp_path):
  """{'model_state': {'model.' + official key}}, as PySlowFast saves it."""
  hf, _, model, expected = divided
  official = {rename(k, HF_TO_OFFICIAL): v for k, v in hf.state_dict().items()}
  assert 'blocks.1.temporal_attn.qkv.weight' in official
  assert 'head.bias' in official and 'time_embed' in official
  path = tmp_path / 'TimeSformer_tiny.pyth'
  torch.save({'epoch': 15, 'model_state': {'model.' + k: v
                                           for k, v in official.items()},
              'optimizer_state': {}, 'cfg': 'TIMESFORMER: ...'}, path)
  got_model, variables = convert.load_torch('timesformer', str(path),
                                            num_heads=HEADS)
  assert got_model == model
  assert_same_variables(variables, expected)
  # DataParallel's module. and the state dict alone convert too.
  _, variables = convert.load_torch(
      'timesformer', {'module.model.' + k: v for k, v in official.items()},
      num_heads=HEADS)
  assert_same_variables(variables, expected)


def test_official_base_width_defaults_to_twelve_heads():
  """The official code builds only ViT-B: 768 wide, 12 heads."""
  width, hidden, classes = 768, 3072, 400
  state = {'cls_token': np.zeros((1, 1, width)),
           'pos_embed': np.zeros((1, 1 + 14 * 14, width)),
           'time_embed': np.zeros((1, 8, width)),
           'patch_embed.proj.weight': np.zeros((width, 3, 16, 16)),
           'patch_embed.proj.bias': np.zeros(width),
           'norm.weight': np.ones(width), 'norm.bias': np.zeros(width),
           'head.weight': np.zeros((classes, width)),
           'head.bias': np.zeros(classes)}
  for module, (n_out, n_in) in {
      'norm1': (width, None), 'attn.qkv': (3 * width, width),
      'attn.proj': (width, width), 'temporal_norm1': (width, None),
      'temporal_attn.qkv': (3 * width, width),
      'temporal_attn.proj': (width, width), 'temporal_fc': (width, width),
      'norm2': (width, None), 'mlp.fc1': (hidden, width),
      'mlp.fc2': (width, hidden)}.items():
    shape = (n_out,) if n_in is None else (n_out, n_in)
    state[f'model.blocks.0.{module}.weight'] = np.zeros(shape)
    state[f'model.blocks.0.{module}.bias'] = np.zeros(n_out)
  state = {k if k.startswith('model.') else 'model.' + k: v
           for k, v in state.items()}
  model, _ = convert.load_torch('timesformer', {'model_state': state})
  assert (model.num_heads, model.embed_dim, model.depth) == (12, 768, 1)
  assert convert.model_options('timesformer', model) == {'depth': 1}


# -----------------------------------------------------------------------------
# Other clip lengths and frame sizes.
# -----------------------------------------------------------------------------


@pytest.mark.parametrize('frames,size', [(8, SIZE), (6, 48)])
def test_resized_embeddings_match_hf(divided, frames, size):
  """A 4-frame, 32 px checkpoint run on 8 frames or 6 frames of 48 px: the
  model resizes time_embed and pos_embed at run time (nearest, as the
  official forward_features). HF's embeddings resize the same way
  (F.interpolate(mode='nearest')), but its layers regroup tokens by
  config.num_frames and config.image_size, not the input's (a longer clip
  runs without an error and computes something else), so HF runs here with
  its config set to the clip."""
  hf, _, model, variables = divided
  video = clip(frames, size, batch=1, seed=1)
  try:
    hf.config.num_frames, hf.config.image_size = frames, size
    want = hf_run(hf, video).logits.numpy()
  finally:
    hf.config.num_frames, hf.config.image_size = FRAMES, SIZE
  assert model.num_frames == FRAMES and model.image_size == SIZE
  assert relative_error(run(model, variables, video), want,
                        f'divided at {frames}x{size}') < TOLERANCE


# torch's nearest computes floor(i · float32(g/n)), which the exact
# floor(i·g/n) misses at a few sizes (14→46 positions, 8→82 frames).
@pytest.mark.parametrize('source,size', [(14, 46), (8, 82)])
def test_resize_at_float32_edge_sizes_is_torch_nearest(source, size):
  embed = np.arange(source, dtype=np.float32).reshape(1, source, 1)
  got = np.asarray(timesformer.resize_time_embed(jnp.asarray(embed), size))
  want = torch.nn.functional.interpolate(
      torch.from_numpy(embed).transpose(1, 2), size=size,
      mode='nearest').transpose(1, 2).numpy()
  np.testing.assert_array_equal(got, want)


# -----------------------------------------------------------------------------
# ImageNet ViT initialisation.
# -----------------------------------------------------------------------------


def hf_vit_logits(vit, frames):
  """ViT logits (or normed class token) on single frames [N, H, W, C]."""
  with torch.no_grad():
    return vit(torch.from_numpy(frames.transpose(0, 3, 1, 2)).contiguous())


@pytest.fixture(scope='module')
def vit_directory(tmp_path_factory):
  vit = hf_vit()
  return vit, save_hf(vit, tmp_path_factory.mktemp('hf_vit'))


@pytest.mark.parametrize('name', ['timesformer', 'timesformer_space'])
def test_vit_init_on_identical_frames_equals_vit(vit_directory, name):
  """With temporal_fc and time_embed zero, divided attention on T copies of
  a frame is the ViT on that frame (the temporal step adds nothing, the
  class token's T spatial outputs are equal); so is space-only."""
  vit, directory = vit_directory
  model, variables = convert.load_torch(name, directory, num_frames=FRAMES,
                                        image_size=SIZE)
  frames = clip(batch=2)[:, 0]
  video = np.repeat(frames[:, None], FRAMES, axis=1)
  want = hf_vit_logits(vit, frames).logits.numpy()
  assert relative_error(run(model, variables, video), want,
                        f'ViT init {name}') < TOLERANCE


def test_vit_init_copies_attention_into_the_temporal_step(vit_directory):
  _, directory = vit_directory
  model, variables = convert.load_torch('timesformer', directory,
                                        num_frames=8, image_size=SIZE)
  params = variables['params']
  assert model.num_frames == 8 and model.num_classes == CLASSES
  np.testing.assert_array_equal(params['time_embed'], np.zeros((1, 8, WIDTH)))
  for i in range(DEPTH):
    block = params[f'blocks_{i}']
    assert_same_variables(block['temporal_attn'], block['attn'])
    assert_same_variables(block['temporal_norm1'], block['norm1'])
    for value in block['temporal_fc'].values():
      assert not value.any()


def test_vit_model_without_head_gets_a_fresh_head():
  """transformers 5's in-memory ViTModel names (layers.{i}.attention.q_proj,
  ...), no classifier, a pooler (dropped): the class token's features equal
  the ViT's normed class token; the head is initialised as the model's."""
  vit = hf_vit(head=False)
  state = vit.state_dict()
  assert 'layers.0.attention.q_proj.weight' in state
  assert 'pooler.dense.weight' in state
  with pytest.raises(VidjaxError, match='no classifier.*num_classes='):
    convert.load_torch('timesformer', state, num_heads=HEADS,
                       image_size=SIZE)
  model, variables = convert.load_torch(
      'timesformer', state, num_heads=HEADS, num_classes=7,
      image_size=SIZE, num_frames=2)
  frames = clip(batch=2, seed=3)[:, 0]
  video = np.repeat(frames[:, None], 2, axis=1)
  _, features = run(model, variables, video, return_features=True)
  want = hf_vit_logits(vit, frames).last_hidden_state[:, 0].numpy()
  assert relative_error(features['features'], want,
                        'ViTModel features') < TOLERANCE
  head = variables['params']['head']
  assert head['kernel'].shape == (WIDTH, 7) and not head['bias'].any()
  assert 0.015 < head['kernel'].std() < 0.025  # std 0.02, truncated at 2σ.
  assert np.abs(head['kernel']).max() <= 0.04 + 1e-6
  _, again = convert.load_torch('timesformer', state, num_heads=HEADS,
                                num_classes=7, image_size=SIZE, num_frames=2)
  np.testing.assert_array_equal(again['params']['head']['kernel'],
                                head['kernel'])


def timm_vit_state(directory):
  """A timm-layout ViT state dict from an HF ViT directory's tensors (as
  save_pretrained writes them), query, key and value stacked into timm's
  fused qkv ([q; k; v] along the outputs)."""
  from safetensors.torch import load_file  # pylint: disable=g-import-not-at-top
  hf = load_file(os.path.join(directory, 'model.safetensors'))
  state = {}
  for i in range(DEPTH):
    base = f'vit.encoder.layer.{i}.attention.attention.'
    for kind in ('weight', 'bias'):
      state[f'blocks.{i}.attn.qkv.{kind}'] = torch.cat(
          [hf[f'{base}{p}.{kind}'] for p in ('query', 'key', 'value')])
  state.update({rename(k, HF_VIT_TO_TIMM): v for k, v in hf.items()
                if '.attention.attention.' not in k})
  return state


@pytest.mark.parametrize('name,steps', [
    ('timesformer_axial', ('temporal_', 'width_')),
    ('timesformer_local_global', ('local_',))])
def test_timm_vit_init_of_extra_steps(vit_directory, name, steps):
  _, directory = vit_directory
  state = timm_vit_state(directory)
  assert 'blocks.0.attn.qkv.weight' in state and 'head.weight' in state
  model, variables = convert.load_torch(name, state, num_heads=HEADS,
                                        num_frames=FRAMES, image_size=SIZE)
  params = variables['params']
  # The ViT's own weights: the same as from the HF directory.
  _, from_hf = convert.load_torch(name, directory, num_frames=FRAMES,
                                  image_size=SIZE)
  assert_same_variables(variables, from_hf)
  assert model.num_classes == CLASSES  # Same class count: the ViT's head.
  np.testing.assert_array_equal(params['head']['bias'],
                                state['head.bias'].numpy())
  for i in range(DEPTH):
    block = params[f'blocks_{i}']
    for step in steps:
      assert_same_variables(block[f'{step}attn'], block['attn'])
      assert_same_variables(block[f'{step}norm1'], block['norm1'])
      for value in block[f'{step}fc'].values():
        assert not value.any()
  # Another class count: a fresh head, the ViT's dropped without complaint.
  model, variables = convert.load_torch(name, state, num_heads=HEADS,
                                        num_classes=7, image_size=SIZE)
  assert variables['params']['head']['kernel'].shape == (WIDTH, 7)


def test_vit_position_embedding_resized_to_the_model_grid(vit_directory):
  """A 32 px ViT (4×4 positions) into a 64 px model: pos_embed resized to
  8×8 by the model's run-time rule (each position covers 2×2), so running
  the model at 32 px reads the ViT's positions back."""
  vit, directory = vit_directory
  model, variables = convert.load_torch('timesformer_space', directory,
                                        image_size=64)
  pos = vit.state_dict()['vit.embeddings.position_embeddings'].numpy()
  got = variables['params']['pos_embed']
  assert model.image_size == 64 and got.shape == (1, 1 + 64, WIDTH)
  grid = pos[0, 1:].reshape(4, 4, WIDTH)
  np.testing.assert_array_equal(got[0, 0], pos[0, 0])
  np.testing.assert_array_equal(
      got[0, 1:].reshape(8, 8, WIDTH), grid.repeat(2, 0).repeat(2, 1))
  np.testing.assert_array_equal(
      np.asarray(timesformer.resize_pos_embed(got, (4, 4))), pos)


# -----------------------------------------------------------------------------
# Bad input: one clear error each.
# -----------------------------------------------------------------------------


def test_directory_without_config_is_one_error(divided, tmp_path):
  _, directory, _, _ = divided
  (tmp_path / 'model.safetensors').write_bytes(
      open(os.path.join(directory, 'model.safetensors'), 'rb').read())
  with pytest.raises(VidjaxError, match=re.escape(
      f'{tmp_path} is a directory without config.json')):
    convert.load_torch('timesformer', str(tmp_path))
  (tmp_path / 'model.safetensors').unlink()
  (tmp_path / 'config.json').write_text(json.dumps(
      {'model_type': 'timesformer'}))
  with pytest.raises(VidjaxError, match='has config.json but no weights'):
    convert.load_torch('timesformer', str(tmp_path))


def test_unused_tensor_is_named(divided):
  state = divided[0].state_dict()
  state['timesformer.encoder.layer.0.adapter.weight'] = torch.zeros(3)
  with pytest.raises(VidjaxError, match=r'1 unexpected tensor\(s\): '
                     r'timesformer\.encoder\.layer\.0\.adapter\.weight'):
    convert.load_torch('timesformer', state, num_heads=HEADS)


def test_missing_tensor_is_named(divided):
  state = divided[0].state_dict()
  del state['timesformer.encoder.layer.1.temporal_dense.bias']
  del state['timesformer.layernorm.weight']
  with pytest.raises(VidjaxError, match=r'2 missing tensor\(s\): .*'
                     r'layer\.1\.temporal_dense\.bias.*layernorm\.weight'):
    convert.load_torch('timesformer', state, num_heads=HEADS)


def test_misshapen_tensor_is_named(divided):
  state = divided[0].state_dict()
  state['timesformer.encoder.layer.1.output.dense.weight'] = torch.zeros(
      WIDTH, 3 * WIDTH)
  with pytest.raises(VidjaxError, match=r'shape mismatch.*layer\.1\.output'
                     r'\.dense\.weight \[64, 192\] for '
                     r'params/blocks_1/mlp/fc2'):
    convert.load_torch('timesformer', state, num_heads=HEADS)


def test_scheme_mismatch_is_one_error(divided, tmp_path):
  joint = save_hf(hf_timesformer('joint_space_time', num_hidden_layers=1),
                  tmp_path / 'joint')
  with pytest.raises(VidjaxError, match=r"joint_space_time TimeSformer .*"
                     r"config.json's attention_type.*model timesformer is "
                     r'divided_space_time.*convert it as timesformer_joint'):
    convert.load_torch('timesformer', joint)
  # From the keys: temporal tensors (divided) into space-only, HR and axial.
  state = divided[0].state_dict()
  with pytest.raises(VidjaxError, match=r'divided_space_time TimeSformer.*'
                     r'temporal attention tensors.*model timesformer_hr_space'
                     r' is space_only.*convert it as timesformer_hr\b'):
    convert.load_torch('timesformer_hr_space', state, num_heads=HEADS)
  with pytest.raises(VidjaxError, match='model timesformer_axial is axial'):
    convert.load_torch('timesformer_axial', state, num_heads=HEADS)
  official = {'model.' + rename(k, HF_TO_OFFICIAL): v
              for k, v in hf_timesformer('space_only').state_dict().items()}
  with pytest.raises(VidjaxError, match=r'space_only TimeSformer \(official'
                     r'.*convert it as timesformer_space'):
    convert.load_torch('timesformer_joint', official, num_heads=HEADS)


def test_width_mismatch_is_one_error(divided, tmp_path):
  hf, directory, _, _ = divided
  with open(os.path.join(directory, 'config.json')) as f:
    config = json.load(f)
  config.update(hidden_size=768, num_hidden_layers=12)
  (tmp_path / 'config.json').write_text(json.dumps(config))
  os.symlink(os.path.join(directory, 'model.safetensors'),
             tmp_path / 'model.safetensors')
  with pytest.raises(VidjaxError, match=r'config.json does not fit: '
                     r'hidden_size 768 but timesformer\.embeddings\.cls_token'
                     r' gives 64; num_hidden_layers 12 but blocks gives 2'):
    convert.load_torch('timesformer', str(tmp_path))
  with pytest.raises(VidjaxError, match=r'does not fit the model asked for: '
                     r'embed_dim=768 but the checkpoint has 64'):
    convert.load_torch('timesformer', hf.state_dict(), num_heads=HEADS,
                       embed_dim=768)


def test_config_numerics_other_than_the_model_are_refused(divided, tmp_path):
  _, directory, _, _ = divided
  with open(os.path.join(directory, 'config.json')) as f:
    config = json.load(f)
  config.update(layer_norm_eps=1e-5, hidden_act='gelu_new')
  (tmp_path / 'config.json').write_text(json.dumps(config))
  os.symlink(os.path.join(directory, 'model.safetensors'),
             tmp_path / 'model.safetensors')
  with pytest.raises(VidjaxError, match=r"hidden_act 'gelu_new'.*"
                     r'layer_norm_eps 1e-05'):
    convert.load_torch('timesformer', str(tmp_path))


def test_other_checkpoints_and_options_are_one_error(divided):
  with pytest.raises(VidjaxError, match='not a TimeSformer or ViT checkpoint'
                     '.*conv1.weight'):
    convert.load_torch('timesformer', {'conv1.weight': np.zeros((8, 3, 7, 7)),
                                       'fc.weight': np.zeros((5, 8))})
  with pytest.raises(VidjaxError, match='unknown TimeSformer conversion '
                     'option.*heads'):
    convert.load_torch('timesformer', divided[1], heads=4)
  with pytest.raises(VidjaxError, match='converter takes no options'):
    convert.load_torch('tsn_r50', {}, num_heads=4)
  with pytest.raises(VidjaxError, match='no such checkpoint file'):
    convert.load_torch('timesformer', '/nonexistent/model.pyth')


def test_every_timesformer_is_convertible():
  names = set(convert.convertible_models())
  for name in ('timesformer', 'timesformer_joint', 'timesformer_space',
               'timesformer_divided', 'timesformer_local_global',
               'timesformer_axial', 'timesformer_hr', 'timesformer_hr_joint',
               'timesformer_l', 'timesformer_l_space'):
    assert name in names
  assert set(timesformer_convert.model_names()) <= names


def test_saved_conversion_rebuilds_the_model(divided, tmp_path):
  _, _, model, variables = divided
  out = convert.save_converted(str(tmp_path / 'out'), 'timesformer',
                               model.num_classes, variables,
                               options=convert.model_options('timesformer',
                                                             model))
  name, classes, restored = convert.restore_converted(out)
  rebuilt = create_model(name, num_classes=classes,
                         **convert.converted_options(out))
  assert rebuilt == model
  assert_same_variables(restored, variables)


def test_command_line_takes_options_for_a_bare_state_dict(divided, tmp_path):
  # python -m vidjax.convert --option=num_heads=... : what a CLI user needs
  # for a state dict without its config; the conversion records the sizes.
  hf, _, model, _ = divided
  source = tmp_path / 'bare.pth'
  torch.save(hf.state_dict(), source)
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu')
  command = [sys.executable, '-m', 'vidjax.convert', '--model=timesformer',
             f'--torch={source}', f'--out={tmp_path / "out"}']
  proc = subprocess.run(command + [f'--option=num_heads={HEADS}'], env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  rebuilt = create_model('timesformer', num_classes=model.num_classes,
                         **convert.converted_options(str(tmp_path / 'out')))
  assert rebuilt == model
  proc = subprocess.run(command + ['--option=heads', '--overwrite'], env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines() == [
      "vidjax: error: --option wants key=value, got 'heads'"]
