"""The model registry: literal names, no import back from the families, and
declared options (an undeclared one is refused, a declared one accepted)."""
import ast
import os
import re

import jax.numpy as jnp
import pytest

from vidjax.errors import VidjaxError
from vidjax.models import create_model
from vidjax.models import list_models
from vidjax.models import registry
from vidjax.models.spec import ModelSpec

MODELS_DIR = os.path.dirname(os.path.abspath(registry.__file__))


def _sources() -> dict[str, str]:
  out = {}
  for name in sorted(os.listdir(MODELS_DIR)):
    if name.endswith('.py'):
      with open(os.path.join(MODELS_DIR, name)) as f:
        out[name] = f.read()
  return out


def _imported_modules(source: str) -> set[str]:
  """Every module an `import` or `from ... import` names, with its members
  (`from vidjax.models import registry` → vidjax.models.registry)."""
  out = set()
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Import):
      out |= {alias.name for alias in node.names}
    elif isinstance(node, ast.ImportFrom) and node.module:
      out.add(node.module)
      out |= {f'{node.module}.{alias.name}' for alias in node.names}
  return out


def test_every_model_name_is_written_out():
  # `grep -rn "'top_heavy_s3d_4a'" vidjax/models` finds where a model is
  # declared: no name is assembled from parts.
  source = '\n'.join(_sources().values())
  missing = [name for name in list_models()
             if not re.search(rf"""['"]{re.escape(name)}['"]""", source)]
  assert not missing
  assert len(list_models()) == 48


def test_each_name_is_a_string_of_its_familys_module():
  for family in registry.FAMILIES:
    with open(family.__file__) as f:
      strings = {node.value for node in ast.walk(ast.parse(f.read()))
                 if isinstance(node, ast.Constant)}
    for spec in family.SPECS:
      assert spec.name in strings, (family.__name__, spec.name)


def test_families_do_not_import_the_registry():
  for family in registry.FAMILIES:
    with open(family.__file__) as f:
      imported = _imported_modules(f.read())
    assert 'vidjax.models.registry' not in imported, family.__name__
    assert 'vidjax.models' not in imported, family.__name__  # Its __init__.


def test_the_check_sees_an_import_of_the_registry():
  # The check above can fail: both spellings are found.
  assert 'vidjax.models.registry' in _imported_modules(
      'from vidjax.models import registry')
  assert 'vidjax.models.registry' in _imported_modules(
      'import vidjax.models.registry')


def test_every_spec_comes_from_its_familys_table():
  declared = [spec for family in registry.FAMILIES for spec in family.SPECS]
  assert sorted(spec.name for spec in declared) == list_models()
  for spec in declared:
    assert registry.get_spec(spec.name) is spec


def test_an_undeclared_option_is_refused():
  with pytest.raises(VidjaxError) as error:
    create_model('tsm_r50', num_classes=3, not_an_option=1)
  message = str(error.value)
  assert "'tsm_r50'" in message and 'not_an_option' in message
  for option in registry.get_spec('tsm_r50').option_names:
    assert option in message
  # A field of the module that configs do not set is refused too: the
  # trainer sets the BN groups from config.bn_sync_devices.
  with pytest.raises(VidjaxError, match="'s3dg'.*bn_groups"):
    create_model('s3dg', num_classes=3, bn_groups=2)


@pytest.mark.parametrize('name', list_models())
def test_declared_options_are_accepted(name):
  spec = registry.get_spec(name)
  options = spec.options
  assert set(options) == set(spec.option_names)
  assert 'dtype' in options and 'remat' in options  # The AOT tool's.
  # Each declared option, passed explicitly with its default, builds the
  # model the name alone builds (no init: building is cheap).
  model = create_model(name, num_classes=3, **options)
  plain = create_model(name, num_classes=3)
  for option, default in options.items():
    assert getattr(model, option) == default == getattr(plain, option)


def test_an_option_replaces_the_default():
  model = create_model('s3dg', num_classes=3, depth_multiplier=0.5,
                       dtype=jnp.bfloat16)
  assert model.depth_multiplier == 0.5 and model.dtype == jnp.bfloat16
  assert registry.get_spec('s3dg').options['depth_multiplier'] == 1.0


def test_every_model_takes_a_kernel_set():
  # Convs, pools and BN (inception, resnet) and the Dense products
  # (timesformer) have platform kernels (vidjax/kernels/).
  for name in list_models():
    assert 'kernels' in registry.get_spec(name).option_names, name


def test_a_declared_option_without_a_default_is_an_error():
  spec = ModelSpec('broken', registry.get_spec('s3dg').factory, {},
                   family='inception', head='Logits',
                   normalization='inception', option_names=('no_such',))
  with pytest.raises(TypeError, match="no_such.*'broken'"):
    spec.options  # pylint: disable=pointless-statement
