"""The preprocessing contract a conversion is saved with.

`python -m vidjax.convert --config=CONFIG.py` takes it from the config the
weights will be used with (`contract.from_config`), which is the way to be
exact. Without one, it is the reference code's evaluation protocol for the
converted weights, where that code documents it:

  * s3d_torchvision (torchvision's S3D_Weights.KINETICS400_V1): 128
    consecutive frames at 15 fps, one clip, the centre 224² of frames
    resized to 256 ("accuracies estimated on clip-level with frame_rate=15,
    clips_per_video=1, clip_len=128", and its VideoClassification
    transform: resize 256, centre crop 224), torchvision's Kinetics
    mean/std. torchvision resizes to 256×256 (aspect not kept); a
    contract resizes the short side to 256, the nearest it can say. The
    frames are decoded at the file's own size: short side 'source'.
  * the ResNet family (tsn_r*, tsm_r*, tsm_online_r*; the official TSM
    test script): 8 segments (one frame per segment), one clip, the
    centre 224² of a 256-px short side, ImageNet mean/std. Preparation
    fps and short side are not documented there: unknown.
  * the TimeSformer family (the official configs TimeSformer_divST_8x32_224
    and its HR/L siblings): the model's frames at stride 32 (8×224),
    16 (16×448) or 4 (96×224), 1 clip × 3 crops of a short side of
    256/224 of the crop (configs/timesformer_common.py's reading of the
    test protocol), PySlowFast's 0.45/0.225 normalisation. Preparation
    fps and short side unknown.

Anything else gets `vidjax.config`'s default evaluation with the model's
registry normalisation. Unknown fps / short side stay None (tools then ask
for --fps / --short_side) unless given to the converter; class names come
from --class_names_file (or the config's data.class_names_file).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections

from vidjax import config as config_lib
from vidjax.errors import VidjaxError
from vidjax.inference import contract as contract_lib

# TimeSformer (frames, crop) -> the official configs' frame stride.
_TIMESFORMER_STRIDES = {(8, 224): 32, (16, 448): 16, (96, 224): 4}
_TSM_SEGMENTS = 8


def reference_config(name: str, model) -> tuple[ml_collections.ConfigDict,
                                                dict[str, Any]]:
  """(config, preparation facts) of converted model `name`'s reference
  evaluation (see the module docstring)."""
  from vidjax.models import registry  # pylint: disable=g-import-not-at-top
  spec = registry.get_spec(name)
  config = config_lib.default_config()
  config.model_name = name
  data = config.data
  data.normalization = spec.normalization
  data.num_test_clips, data.num_test_crops = 1, 1
  preparation = {'fps': None, 'short_side': None, 'jpeg_quality': None}
  if name == 's3d_torchvision':
    data.num_frames, data.frame_stride, data.crop_size = 128, 1, 224
    data.eval_resize_ratio = 256 / 224
    preparation.update(fps=15.0, short_side=contract_lib.SOURCE)
  elif spec.family == 'resnet':
    data.num_frames, data.crop_size = _TSM_SEGMENTS, 224
    data.frame_stride = 64 // _TSM_SEGMENTS  # Unused by segments.
    data.eval_steps = tuple('sample_segments' if s == 'sample_dense' else s
                            for s in data.eval_steps)
    data.eval_resize_ratio = 256 / 224
  elif spec.family == 'timesformer':
    frames, crop = int(model.num_frames), int(model.image_size)
    data.num_frames, data.crop_size = frames, crop
    data.frame_stride = _TIMESFORMER_STRIDES.get((frames, crop), 1)
    data.eval_resize_ratio = 256 / 224
    data.num_test_crops = 3
  return config, preparation


def contract_for(name: str, model, options: Mapping[str, Any], *,
                 config: ml_collections.ConfigDict | None = None,
                 class_names: Sequence[str] | None = None,
                 preparation: Mapping[str, Any] | None = None
                 ) -> contract_lib.Contract:
  """The contract to save with converted `model` (model name `name`).

  Args:
    name: the vidjax model name.
    model: the converted model (its class count; TimeSformer's frames).
    options: the structural options the converter read off the checkpoint
      (`convert.model_options`): they hold over the config's.
    config: the config the weights are used with; None: the reference
      protocol.
    class_names: one per class, or None (the config's
      data.class_names_file, if any).
    preparation: fps / short_side / jpeg_quality given to the converter;
      they replace the config's or the protocol's.
  """
  if config is None:
    config, facts = reference_config(name, model)
  else:
    if config.model_name != name:
      raise VidjaxError(f'--config names model {config.model_name!r} but '
                        f'the weights are converted to --model={name}')
    facts = {'fps': None, 'short_side': None, 'jpeg_quality': None}
    if class_names is None and config.data.get('class_names_file'):
      from vidjax.inference import loader  # pylint: disable=g-import-not-at-top
      class_names = loader.read_class_names(config.data.class_names_file,
                                            'config.data.class_names_file')
  facts.update({k: v for k, v in (preparation or {}).items()
                if v is not None})
  contract = contract_lib.from_config(
      config, num_classes=model.num_classes, class_names=class_names,
      preparation=facts)
  return contract.replace(
      model_options={**contract.model_options, **dict(options)})
