"""numpy references of the transformer layers, shared by the tests.

float64, one sequence or token at a time, addressing TimeSformer tokens by
index arithmetic (patch (s, t) is token 1 + s·T + t in the official order),
independently of the regroupings in vidjax.
"""
import math

import jax
import numpy as np


def np_params(tree):
  return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def np_layer_norm(p, x, eps=1e-6):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * p['scale'] + p['bias']


def np_dense(p, x):
  return x @ p['kernel'] + (p['bias'] if 'bias' in p else 0.0)


def np_mhsa(p, x, num_heads, mask=None):
  """One sequence x [L, D]; heads are explicit column slices of q, k, v.

  `mask` [L, L]: True where query i may attend to key j.
  """
  length, dim = x.shape
  hd = dim // num_heads
  qkv = np_dense(p['qkv'], x)
  out = np.zeros((length, dim))
  weights = np.zeros((num_heads, length, length))
  for h in range(num_heads):
    q, k, v = (qkv[:, i * dim + h * hd:i * dim + (h + 1) * hd]
               for i in range(3))
    logits = q @ k.T / math.sqrt(hd)
    if mask is not None:
      logits = np.where(mask, logits, -np.inf)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    weights[h] = e / e.sum(-1, keepdims=True)
    out[:, h * hd:(h + 1) * hd] = weights[h] @ v
  return np_dense(p['proj'], out), weights


def np_divided(p, x, num_frames, num_heads, temporal=True):
  """The official divided block's attention part, token by token."""
  batch, length, _ = x.shape
  t_len = num_frames
  s_len = (length - 1) // t_len
  tok = lambda s, t: 1 + s * t_len + t
  xt = x.copy()
  if temporal:
    for b in range(batch):
      for s in range(s_len):
        idx = [tok(s, t) for t in range(t_len)]
        y, _ = np_mhsa(p['temporal_attn'],
                       np_layer_norm(p['temporal_norm1'], x[b, idx]),
                       num_heads)
        xt[b, idx] = x[b, idx] + np_dense(p['temporal_fc'], y)
  out = np.zeros_like(x)
  for b in range(batch):
    cls_update = 0.0
    for t in range(t_len):
      idx = [tok(s, t) for s in range(s_len)]
      seq = np.concatenate([x[b, :1], xt[b, idx]], axis=0)
      r, _ = np_mhsa(p['attn'], np_layer_norm(p['norm1'], seq), num_heads)
      cls_update = cls_update + r[0] / t_len
      out[b, idx] = xt[b, idx] + r[1:]
    out[b, 0] = x[b, 0] + cls_update
  return out


def np_gelu(x, exact=True):
  if exact:
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))
  return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
