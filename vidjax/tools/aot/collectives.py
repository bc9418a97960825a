"""Collectives in optimized HLO text: how many, of what kind, how many bytes.

A static count of the program a compile produced (`compiled.as_text()`):
all-reduce, all-gather, reduce-scatter, collective-permute and all-to-all,
their async `-start` forms included.
"""
import math
import re

COLLECTIVES = ('all-reduce', 'all-gather', 'reduce-scatter',
               'collective-permute', 'all-to-all')
_DTYPE_BITS = {'pred': 8, 's2': 2, 'u2': 2, 's4': 4, 'u4': 4, 's8': 8,
               'u8': 8, 's16': 16, 'u16': 16, 'f16': 16, 'bf16': 16,
               's32': 32, 'u32': 32, 'f32': 32, 's64': 64, 'u64': 64,
               'f64': 64, 'c64': 64, 'c128': 128, 'token': 0}
_INSTRUCTION = re.compile(r'^\s*(?:ROOT\s+)?%?[^\s=]+\s*=\s*(.*)$')
_OP = re.compile(r'^(.*?)\s*\b([a-z][a-z0-9\-]*)\(')
_SHAPE_TOKEN = re.compile(r'\(|\)|([a-z][a-z0-9]*)\[([^\]]*)\]')


def _strip_hlo_decorations(text: str) -> str:
  """Removes /*comments*/ and {layouts}, which may hold parentheses."""
  text = re.sub(r'/\*.*?\*/', '', text)
  while True:
    stripped = re.sub(r'\{[^{}]*\}', '', text)
    if stripped == text:
      return text
    text = stripped


def _array_bytes(dtype: str, dims: str) -> int:
  bits = _DTYPE_BITS.get(dtype)
  if bits is None:
    bits = 8 if dtype.startswith('f8') else 4 if dtype.startswith('f4') else 32
  size = math.prod(int(d) for d in re.findall(r'\d+', dims))
  return (size * bits + 7) // 8


def parse_shape(shape: str):
  """An HLO shape as nested lists of leaf byte counts.

  'f32[8,16]{1,0}' → 512; '(f32[2]{0}, (bf16[4]{0}, u32[]))' → [8, [8, 4]].
  """
  shape = _strip_hlo_decorations(shape)
  stack = [[]]
  for match in _SHAPE_TOKEN.finditer(shape):
    token = match.group(0)
    if token == '(':
      stack.append([])
    elif token == ')':
      inner = stack.pop()
      stack[-1].append(inner)
    else:
      stack[-1].append(_array_bytes(match.group(1), match.group(2)))
  top = stack[0]
  return top[0] if len(top) == 1 else top


def _total(tree) -> int:
  return tree if isinstance(tree, int) else sum(_total(t) for t in tree)


def parse_collectives(hlo_text: str) -> dict[str, dict[str, int]]:
  """{kind: {'count', 'bytes', 'async'}} of the collectives in `hlo_text`.

  Counts instructions of every computation (so a collective XLA wrapped in
  an async computation counts once, by its inner instruction); `-done`
  halves and `async-start/-done` wrappers are not counted again. Bytes are
  the results': the whole shape for synchronous ops and `all-reduce-start`
  (a tuple when XLA combined several all-reduces), the second element for
  `all-gather-start` and `collective-permute-start`, whose shapes are
  (operands, results[, context]).
  """
  out = {}
  names = tuple(COLLECTIVES)
  for line in hlo_text.splitlines():
    if not any(n in line for n in names):
      continue
    match = _INSTRUCTION.match(line)
    if not match:
      continue
    op_match = _OP.match(_strip_hlo_decorations(match.group(1)))
    if not op_match:
      continue
    shape, op = op_match.groups()
    is_async = op.endswith('-start')
    kind = op[:-len('-start')] if is_async else op
    if kind not in COLLECTIVES:
      continue
    tree = parse_shape(shape)
    if (is_async and kind in ('all-gather', 'collective-permute')
        and isinstance(tree, list) and len(tree) >= 2):
      tree = tree[1]
    entry = out.setdefault(kind, {'count': 0, 'bytes': 0, 'async': 0})
    entry['count'] += 1
    entry['bytes'] += _total(tree)
    entry['async'] += int(is_async)
  return {k: out[k] for k in COLLECTIVES if k in out}
