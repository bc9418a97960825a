"""The preprocessing contract: how a clip is made from a video for a model.

Saved with every checkpoint vidjax writes (trainer steps, the best
checkpoint, conversions), so that whatever uses the weights later (predict,
features, stream, export, explain) makes clips exactly as evaluation did:
the same frame rate and short side as preparation, the same frames, stride,
crop, normalisation and test views, and the class names. Extracting
features with another fps or stride than training used is the classic
train/serve skew (actionformer_release#91); the contract is what rules it
out.

A field that nobody recorded (an older checkpoint, TFRecords whose
preparation settings are unknown) is None; `require` turns a needed one
into one error that names the field and the flag that supplies it.

JSON form (`to_json` / `from_json`), version 1:

  {"version": 1, "model_name": "s3dg", "model_options": {...},
   "num_classes": 400, "class_names": ["abseiling", ...],
   "dataset": "kinetics400/fps25_short256_q90",
   "fps": 25.0, "short_side": 256, "jpeg_quality": 90,
   "eval_steps": ["parse", "sample_dense", "decode", ...],
   "num_frames": 64, "frame_stride": 1, "crop_size": 224,
   "eval_resize_ratio": 1.142857, "num_test_clips": 10,
   "num_test_crops": 3, "reverse_time": false,
   "normalization": "inception", "mean": [...], "std": [...]}

`fps` and `short_side` are a number, or 'source' when preparation kept the
video's own frame rate or size.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses
import json
import math
from typing import Any

import ml_collections

from vidjax.errors import VidjaxError

VERSION = 1
SOURCE = 'source'  # fps / short_side kept as the video has them.

# The command-line flag of the inference tools that supplies each field an
# older checkpoint lacks; the rest come with the training config.
FLAGS = {
    'fps': '--fps',
    'short_side': '--short_side',
    'jpeg_quality': '--jpeg_quality',
    'class_names': '--class_names_file',
}
CONFIG_FLAG = '--config'

# Fields the clip pipeline reads from `config.data` (see `data_config`).
_CLIP_FIELDS = ('num_frames', 'frame_stride', 'crop_size',
                'eval_resize_ratio', 'num_test_clips', 'num_test_crops',
                'reverse_time', 'normalization')


@dataclasses.dataclass(frozen=True)
class Contract:
  """What a model expects of its input, and what its outputs mean.

  Attributes:
    model_name: the registry name; `model_options` its config.model.
    num_classes: outputs of the classifier; `class_names` their names
      (None: unknown).
    dataset: the data it was trained on (config.data.name), for the record.
    fps: frames per second of the prepared records (SOURCE: the videos'
      own rate); None: unknown.
    short_side: short side of the prepared frames (SOURCE: as decoded).
    jpeg_quality: quality the prepared frames were JPEG-encoded at.
    eval_steps: the evaluation pipeline's step names (config.data).
    num_frames ... reverse_time: config.data's clip and view settings.
    normalization: the preset name, or None when mean/std were given.
    mean, std: per-channel normalisation of [0, 1] pixels (resolved).
  """
  model_name: str
  model_options: Mapping[str, Any]
  num_classes: int
  class_names: tuple[str, ...] | None
  dataset: str | None
  fps: float | str | None
  short_side: int | str | None
  jpeg_quality: int | None
  eval_steps: tuple[str, ...]
  num_frames: int
  frame_stride: int
  crop_size: int
  eval_resize_ratio: float
  num_test_clips: int
  num_test_crops: int
  reverse_time: bool
  normalization: str | None
  mean: tuple[float, ...]
  std: tuple[float, ...]

  # ------------------------------------------------------------ Derived.

  @property
  def sampling(self) -> str:
    """'segments' (TSN: one frame per segment) or 'dense' (a strided clip)."""
    return 'segments' if 'sample_segments' in self.eval_steps else 'dense'

  @property
  def eval_short_side(self) -> int:
    """The short side clips are resized to before the test crops."""
    return round(self.crop_size * self.eval_resize_ratio)

  @property
  def num_views(self) -> int:
    return self.num_test_clips * self.num_test_crops

  def seconds_per_frame(self) -> float | None:
    """1/fps of the prepared frames; None when fps is 'source' or unknown."""
    if isinstance(self.fps, (int, float)) and self.fps > 0:
      return 1.0 / float(self.fps)
    return None

  def data_config(self) -> ml_collections.ConfigDict:
    """A `config.data` whose evaluation steps make this contract's clips.

    Feed it to `vidjax.data.pipeline_steps.resolve(..., train=False)`: the
    steps then read exactly the values evaluation read.
    """
    from vidjax import config as config_lib  # pylint: disable=g-import-not-at-top
    data = config_lib.default_config().data
    with data.unlocked():
      data.eval_steps = tuple(self.eval_steps)
      for key in _CLIP_FIELDS:
        data[key] = getattr(self, key)
      data.normalization = self.normalization or data.normalization
      data.mean, data.std = tuple(self.mean), tuple(self.std)
      data.num_classes = self.num_classes
    return data

  def label(self, index: int) -> str:
    if self.class_names and 0 <= index < len(self.class_names):
      return self.class_names[index]
    return f'class {index}'

  # --------------------------------------------------------- Checking.

  def missing(self, names: Sequence[str]) -> list[str]:
    return [n for n in names if getattr(self, n) is None]

  def require(self, names: Sequence[str], where: str) -> 'Contract':
    """Raises one VidjaxError naming the first of `names` that is unknown.

    `where` names the checkpoint, e.g. 'workdirs/k400 (step 3000)'.
    """
    for name in self.missing(names):
      flag = FLAGS.get(name, CONFIG_FLAG)
      raise VidjaxError(
          f'{where} has no {name!r} in its preprocessing contract (written '
          f'before vidjax saved one, or not known when it was trained); '
          f'give it with {flag}=...')
    return self

  def replace(self, **changes) -> 'Contract':
    return dataclasses.replace(self, **changes)

  # ------------------------------------------------------ Serialising.

  def to_dict(self) -> dict[str, Any]:
    out = {'version': VERSION}
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      if isinstance(value, tuple):
        value = list(value)
      elif isinstance(value, Mapping):
        value = dict(value)
      out[field.name] = value
    return out

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), indent=2, sort_keys=True)

  @classmethod
  def from_dict(cls, payload: Mapping[str, Any], where: str) -> 'Contract':
    """Reads `to_dict`'s output; a field it lacks becomes None (unknown)
    when it may be unknown, else one VidjaxError naming it."""
    if not isinstance(payload, Mapping):
      raise VidjaxError(f'{where}: the preprocessing contract is not a JSON '
                        f'object')
    version = payload.get('version')
    if version != VERSION:
      raise VidjaxError(f'{where}: preprocessing contract version '
                        f'{version!r} is not one this vidjax reads '
                        f'({VERSION})')
    values = {}
    for field in dataclasses.fields(cls):
      if field.name not in payload:
        if field.name in FLAGS or field.name in ('dataset', 'normalization'):
          values[field.name] = None
          continue
        raise VidjaxError(f'{where}: the preprocessing contract lacks '
                          f'{field.name!r}; give the training config with '
                          f'{CONFIG_FLAG}=...')
      value = payload[field.name]
      if isinstance(value, list):
        value = tuple(value)
      values[field.name] = value
    # JSON has no tuples: options such as a schedule come back as lists,
    # which a model's (hashable) fields must not hold.
    values['model_options'] = {k: _tuples(v) for k, v in dict(
        values['model_options'] or {}).items()}
    contract = cls(**values)
    _check_values(contract, where)
    return contract

  @classmethod
  def from_json(cls, text: str, where: str) -> 'Contract':
    try:
      payload = json.loads(text)
    except ValueError as e:
      raise VidjaxError(f'{where}: the preprocessing contract is not JSON: '
                        f'{e}') from None
    return cls.from_dict(payload, where)


def _tuples(value):
  if isinstance(value, (list, tuple)):
    return tuple(_tuples(v) for v in value)
  return value


def _check_values(contract: Contract, where: str):
  """The values a tool would trip over later, named now."""
  problems = []
  for name in ('num_classes', 'num_frames', 'frame_stride', 'crop_size',
               'num_test_clips', 'num_test_crops'):
    value = getattr(contract, name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
      problems.append(f'{name}={value!r}')
  for name in ('fps', 'short_side'):
    value = getattr(contract, name)
    if value not in (None, SOURCE) and not (
        isinstance(value, (int, float)) and not isinstance(value, bool)
        and math.isfinite(value) and value > 0):
      problems.append(f'{name}={value!r}')
  if len(contract.mean) != 3 or len(contract.std) != 3 or not all(
      s > 0 for s in contract.std):
    problems.append(f'mean={list(contract.mean)} std={list(contract.std)}')
  if (contract.class_names is not None
      and len(contract.class_names) != contract.num_classes):
    problems.append(f'{len(contract.class_names)} class names for '
                    f'{contract.num_classes} classes')
  if problems:
    raise VidjaxError(f'{where}: bad preprocessing contract: '
                      + '; '.join(problems))


def preparation_of(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
  """{'fps', 'short_side', 'jpeg_quality'} from a dataset's metadata.json.

  Raw-video builders record all three; the embedded datasets are rendered
  at their `image_size` with no frame rate of their own (any fps a video
  of them was written at is theirs); unknown facts stay None.
  """
  metadata = metadata or {}
  facts = {'fps': None, 'short_side': None, 'jpeg_quality': None}
  if 'fps' in metadata or 'short_side' in metadata:
    facts['fps'] = metadata.get('fps') or SOURCE
    facts['short_side'] = metadata.get('short_side') or SOURCE
  elif 'image_size' in metadata:
    facts['fps'] = SOURCE
    facts['short_side'] = int(metadata['image_size'])
  if metadata.get('jpeg_quality'):
    facts['jpeg_quality'] = int(metadata['jpeg_quality'])
  return facts


def from_config(config: ml_collections.ConfigDict, *, num_classes: int,
                class_names: Sequence[str] | None,
                preparation: Mapping[str, Any] | None = None) -> Contract:
  """The contract of a model trained (or evaluated) with `config`.

  `preparation`: `preparation_of(the dataset's metadata)`.
  """
  from vidjax.data import pipeline_steps  # pylint: disable=g-import-not-at-top
  data = config.data
  mean, std = pipeline_steps.normalization(data)
  explicit = data.mean is not None and data.std is not None
  preparation = {'fps': None, 'short_side': None, 'jpeg_quality': None,
                 **(preparation or {})}
  model_options = config.model.to_dict() if config.get('model') else {}
  contract = Contract(
      model_name=config.model_name,
      model_options=model_options,
      num_classes=int(num_classes),
      class_names=tuple(class_names) if class_names else None,
      dataset=data.name,
      fps=preparation['fps'],
      short_side=preparation['short_side'],
      jpeg_quality=preparation['jpeg_quality'],
      eval_steps=tuple(data.eval_steps),
      num_frames=int(data.num_frames),
      frame_stride=int(data.frame_stride),
      crop_size=int(data.crop_size),
      eval_resize_ratio=float(data.eval_resize_ratio),
      num_test_clips=int(data.num_test_clips),
      num_test_crops=int(data.num_test_crops),
      reverse_time=bool(data.reverse_time),
      normalization=None if explicit else data.normalization,
      mean=tuple(float(m) for m in mean),
      std=tuple(float(s) for s in std),
  )
  _check_values(contract, f'config {config.model_name}')
  return contract
