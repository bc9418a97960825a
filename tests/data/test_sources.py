"""What a prepared dataset's source says about how its frames were stored."""
import types

from vidjax.data import sources
from vidjax.inference import contract as contract_lib


def fake_builder(metadata, jpeg_quality=90):
  return types.SimpleNamespace(
      data_dir='/data', class_names=('a', 'b'), split_names=('train',),
      info=types.SimpleNamespace(metadata=metadata),
      JPEG_QUALITY=jpeg_quality)


def test_an_older_embedded_dataset_gets_the_builders_jpeg_quality():
  # Rendered before builders wrote jpeg_quality into metadata.json (the demo
  # workdirs of earlier versions): the builder's constant wrote the frames.
  source = sources.BuilderSource(fake_builder(
      {'format': 'dmvr', 'num_frames': 17, 'image_size': 64}))
  assert source.metadata == {'jpeg_quality': 90, 'num_frames': 17,
                             'image_size': 64}
  assert contract_lib.preparation_of(source.metadata) == {
      'fps': 'source', 'short_side': 64, 'jpeg_quality': 90}


def test_a_recorded_quality_wins_over_the_builders_constant():
  source = sources.BuilderSource(fake_builder(
      {'fps': 25, 'short_side': 256, 'jpeg_quality': 75}))
  assert contract_lib.preparation_of(source.metadata) == {
      'fps': 25, 'short_side': 256, 'jpeg_quality': 75}
