"""What each benchmark's PyTorch side runs with: the step really receives
channels-last clips and weights when asked (PyTorch's CPU guide), the
contiguous layout when asked, and the side's environment carries the
allocator and thread settings; vidjax gets the best XLA flags by default.

The steps are real (the scripts' own torch_side), stopped at their first
convolution, which records what it was given: nothing is timed and no
network runs through.
"""
import pytest

from benchmarks import cpu_settings
from benchmarks import harness
from benchmarks import s3d_vs_torchvision as s3d
from benchmarks import timesformer_vs_hf as timesformer
from benchmarks import tsm_vs_torch as tsm

torch = pytest.importorskip('torch')
pytest.importorskip('torchvision')


class _Stop(Exception):
  """Raised by the first conv: the step got as far as its input."""


def _first_conv_input(monkeypatch, script, conv, argv):
  """Runs `script`'s torch side with `argv`; the first `conv` call's input
  and weight, and the settings the side reported to the harness."""
  seen = {}

  def first_conv(self, x):
    seen.setdefault('input', x)
    seen.setdefault('weight', self.weight)
    raise _Stop

  def run_side(step, **kwargs):
    seen['settings'] = kwargs['settings']
    with pytest.raises(_Stop):
      step()

  monkeypatch.setattr(conv, 'forward', first_conv)
  monkeypatch.setattr(harness, 'run_side', run_side)
  script.torch_side(script._parse(argv))
  return seen


@pytest.mark.parametrize('kind', ['infer', 'train'])
def test_s3d_step_receives_channels_last_3d(monkeypatch, kind):
  # torchvision's head needs >= 13 frames of >= 209 px.
  seen = _first_conv_input(monkeypatch, s3d, torch.nn.Conv3d, [
      '--batch=1', '--frames=13', '--size=209', f'--kind={kind}'])
  x, w = seen['input'], seen['weight']
  assert x.shape == (1, 3, 13, 209, 209)
  assert x.is_contiguous(memory_format=torch.channels_last_3d)
  assert not x.is_contiguous()
  assert w.is_contiguous(memory_format=torch.channels_last_3d)
  assert seen['settings']['memory_format'] == 'channels_last_3d'
  assert seen['settings']['weights'] == 'channels_last_3d'
  assert seen['settings']['allocator'] == cpu_settings.loaded_allocator()


def test_s3d_contiguous_when_asked(monkeypatch):
  seen = _first_conv_input(monkeypatch, s3d, torch.nn.Conv3d, [
      '--batch=1', '--frames=13', '--size=209', '--kind=infer',
      '--torch-layout=contiguous'])
  assert seen['input'].is_contiguous() and seen['weight'].is_contiguous()
  assert not seen['input'].is_contiguous(
      memory_format=torch.channels_last_3d)
  assert seen['settings']['memory_format'] == 'contiguous'


@pytest.mark.parametrize('kind', ['infer', 'train', 'stream'])
def test_tsm_resnet_receives_channels_last_frames(monkeypatch, kind):
  seen = _first_conv_input(monkeypatch, tsm, torch.nn.Conv2d, [
      '--batch=2', '--segments=3', '--size=32', '--depth=18',
      f'--kind={kind}'])
  x = seen['input']
  frames = 1 if kind == 'stream' else 6
  assert x.shape == (frames, 3, 32, 32)
  assert x.is_contiguous(memory_format=torch.channels_last)
  assert not x.is_contiguous()
  assert seen['weight'].is_contiguous(memory_format=torch.channels_last)
  assert seen['settings']['memory_format'] == 'channels_last'
  assert seen['settings']['weights'] == 'channels_last'


def test_tsm_contiguous_when_asked(monkeypatch):
  seen = _first_conv_input(monkeypatch, tsm, torch.nn.Conv2d, [
      '--batch=1', '--segments=2', '--size=32', '--depth=18', '--kind=infer',
      '--torch-layout=contiguous'])
  assert seen['input'].is_contiguous() and seen['weight'].is_contiguous()
  assert seen['settings']['memory_format'] == 'contiguous'


def test_the_channels_last_clip_holds_the_same_values():
  args = tsm._parse(['--batch=1', '--segments=2', '--size=8', '--depth=18'])
  args.kind = 'infer'
  _, last, _ = tsm.torch_model_and_data(args)
  args.torch_layout = 'contiguous'
  _, plain, _ = tsm.torch_model_and_data(args)
  assert torch.equal(last, plain)
  args = s3d._parse(['--batch=1', '--frames=2', '--size=4'])
  _, last, _ = s3d.torch_model_and_data(args)
  args.torch_layout = 'contiguous'
  _, plain, _ = s3d.torch_model_and_data(args)
  assert torch.equal(last, plain)


# The sides' environments and defaults.


@pytest.mark.parametrize('script,peer', [(s3d, 'torch'), (tsm, 'torch'),
                                         (timesformer, 'hf')])
def test_sides_carry_the_settings(script, peer):
  args = script._parse([])
  assert args.settings == 'ynn'
  assert (args.torch_layout, args.torch_allocator, args.torch_threads) == (
      'channels_last', 'auto', 'pinned')
  vidjax, torch_side = script.sides(args, 'ynn', 'infer')
  assert torch_side.name == peer
  assert vidjax.env['XLA_FLAGS'] == cpu_settings.BEST_XLA_FLAGS
  expected = cpu_settings.torch_settings().env()
  assert {k: torch_side.env[k] for k in expected} == expected
  assert torch_side.env['XLA_FLAGS'] is None
  assert torch_side.env['OMP_NUM_THREADS'] == str(
      len(cpu_settings.physical_cpus()))
  assert '--torch-layout=channels_last' in torch_side.argv
  # The allocator and threads are the torch side's alone.
  assert 'LD_PRELOAD' not in vidjax.env
  assert 'OMP_NUM_THREADS' not in vidjax.env


def test_old_peer_settings_by_flag():
  args = s3d._parse(['--torch-layout=contiguous', '--torch-allocator=glibc',
                     '--torch-threads=default'])
  _, torch_side = s3d.sides(args, 'ynn', 'train')
  assert '--torch-layout=contiguous' in torch_side.argv
  for key in ('LD_PRELOAD', 'MALLOC_CONF', 'OMP_NUM_THREADS',
              'GOMP_CPU_AFFINITY'):
    assert key not in torch_side.env


def test_the_transformer_side_says_it_has_no_layout(monkeypatch):
  pytest.importorskip('transformers')
  seen = {}

  def run_side(step, **kwargs):
    seen.update(kwargs['settings'])

  class _NoModel:
    """Hugging Face's model unbuilt: 121M parameters to initialise."""

    def __init__(self, config):
      self.config = config

    def eval(self):
      return self

  monkeypatch.setattr(harness, 'run_side', run_side)
  monkeypatch.setattr('transformers.TimesformerForVideoClassification',
                      _NoModel)
  args = timesformer._parse([])
  args.kind = 'infer'
  timesformer.hf_side(args)
  assert seen['memory_format'] == timesformer.NO_LAYOUT
  assert seen['allocator'] == cpu_settings.loaded_allocator()


def test_no_allocator_library_is_a_note_in_the_header(monkeypatch, tmp_path,
                                                      capsys):
  monkeypatch.setattr(cpu_settings, 'LIBRARY_DIRS', (str(tmp_path),))
  monkeypatch.setattr(harness, 'measure_grid', lambda *a, **k: [])
  monkeypatch.setattr('sys.argv', ['s3d_vs_torchvision.py', '--rounds=1'])
  s3d.main()
  header = capsys.readouterr().out.splitlines()[1]
  assert header.startswith("torch: layout channels_last; allocator glibc's "
                           'malloc [tcmalloc or jemalloc not found in ')
  args = s3d._parse([])
  _, torch_side = s3d.sides(args, 'ynn', 'infer')
  # The side still runs, on glibc, with its threads set.
  assert 'LD_PRELOAD' not in torch_side.env
  assert torch_side.env['OMP_NUM_THREADS'] == str(
      len(cpu_settings.physical_cpus()))
