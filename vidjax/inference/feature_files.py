"""Feature files: one .npz per video, and a manifest of what made them.

  OUT/manifest.json   the settings (below), the checkpoint, the videos done
                      and those that failed, with their reasons
  OUT/<name>.npz      features [W, ...] float32, start_s [W], end_s [W]
                      (seconds of the window in the video) and manifest,
                      the same settings as a JSON string (np.load(...)
                      ['manifest'].item()), so a file alone says what it is

<name> is the video's path inside the folder given (or its file name)
without its extension.

The settings are everything that determines the numbers: the checkpoint's
fingerprint (its weights), the layer, pooling and views, the window and
stride, and the preprocessing contract (fps, short side, frames, stride,
crop, normalisation, test views; not the class names, which change no
feature). Their sha256 (`digest`) tells whether a file on disk was made
with the settings of this run.

Resuming: a video whose .npz exists with this run's digest is skipped. An
output folder that holds features of other settings is one error naming
what differs, never a silent mix and never an overwrite: give another
--out, or delete the old files. Every file is written to a temporary file
beside it, fsynced and renamed (vidjax/tools/files.py), so a killed run
leaves whole files or none; the temporary files of a run killed outright
(SIGKILL) are removed by the next run. Two runs into one folder at once
are not supported.
"""
from __future__ import annotations

from collections.abc import Mapping
import contextlib
import hashlib
import io
import json
import os
import re
from typing import Any

import numpy as np

from vidjax.errors import VidjaxError
from vidjax.tools import files

VERSION = 1
MANIFEST = 'manifest.json'
SUFFIX = '.npz'
# tools/files.py's temporary files: '.NAME.XXXXXXXX.tmp'.
_TEMPORARY = re.compile(r'^\..+\.[0-9a-f]{8}\.tmp$')


def settings(loaded, *, layer: str, pool: str, views: str,
             window_s: float | None, stride_s: float | None
             ) -> dict[str, Any]:
  """What determines the features of a run (compared when resuming)."""
  contract = loaded.contract.to_dict()
  contract.pop('class_names')  # Names change no feature.
  return {'version': VERSION, 'checkpoint_fingerprint': loaded.fingerprint,
          'layer': layer, 'pool': pool, 'views': views,
          'window_s': window_s, 'stride_s': stride_s, 'contract': contract}


def digest(values: Mapping[str, Any]) -> str:
  text = json.dumps(values, sort_keys=True, separators=(',', ':'))
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def _flat(tree: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
  out = {}
  for key, value in tree.items():
    if isinstance(value, Mapping):
      out.update(_flat(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = value
  return out


def differences(old: Mapping[str, Any], new: Mapping[str, Any],
                limit: int = 4) -> str:
  """'layer: 'Mixed_5c' -> 'Mixed_4b', window_s: 2.0 -> 4.0'."""
  old, new = _flat(old), _flat(new)
  changed = [f'{k}: {old.get(k)!r} -> {new.get(k)!r}'
             for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
  more = f' (+{len(changed) - limit} more)' if len(changed) > limit else ''
  return ', '.join(changed[:limit]) + more


def read_embedded(path: str) -> dict | None:
  """The manifest inside a feature file; None if it cannot be read."""
  try:
    with np.load(path) as z:
      return json.loads(z['manifest'].item())
  except Exception:  # pylint: disable=broad-except
    return None  # Not ours, or damaged by something else: made again.


def encode(features: np.ndarray, start_s: np.ndarray, end_s: np.ndarray,
           manifest: Mapping[str, Any]) -> bytes:
  buffer = io.BytesIO()
  np.savez(buffer, features=np.asarray(features, np.float32),
           start_s=np.asarray(start_s, np.float64),
           end_s=np.asarray(end_s, np.float64),
           manifest=np.array(json.dumps(manifest, sort_keys=True)))
  return buffer.getvalue()


class Output:
  """An output folder of feature files with one run's settings.

  Attributes:
    directory: the folder (absolute).
    settings: what determines the features (`settings`); `digest` theirs.
    record: facts written beside them that change no number (where the
      checkpoint was read, the feature shape, library versions).
  """

  def __init__(self, directory: str, run_settings: Mapping[str, Any],
               record: Mapping[str, Any]):
    self.directory = os.path.abspath(os.path.expanduser(directory))
    self.settings = dict(run_settings)
    self.digest = digest(run_settings)
    self.record = dict(record)
    self.videos = {}  # name -> {'source', 'windows'}: files with settings.
    self.failed = {}  # source -> reason, this run's.

  @property
  def manifest_path(self) -> str:
    return os.path.join(self.directory, MANIFEST)

  def path(self, name: str) -> str:
    return os.path.join(self.directory, name + SUFFIX)

  def _header(self) -> dict[str, Any]:
    return {'settings': self.settings, 'digest': self.digest, **self.record}

  def _mismatch(self, where: str, old: Mapping[str, Any]) -> VidjaxError:
    return VidjaxError(
        f'{where} holds features made with other settings '
        f'({differences(old, self.settings)}); give another --out, or delete '
        f'the old files to extract them again')

  def open(self):
    """Creates the folder, or checks that its manifest has our settings;
    removes the temporary files a killed run left."""
    try:
      os.makedirs(self.directory, exist_ok=True)
    except OSError as e:
      raise VidjaxError(f'cannot create --out={self.directory}: '
                        f'{e.strerror}') from None
    if os.path.exists(self.manifest_path):
      try:
        with open(self.manifest_path) as f:
          old = json.load(f)
      except (OSError, ValueError) as e:
        raise VidjaxError(f'cannot read {self.manifest_path}: {e}') from None
      if not isinstance(old, dict) or old.get('digest') != self.digest:
        raise self._mismatch(self.manifest_path, (old or {}).get('settings')
                             if isinstance(old, dict) else {})
      self.videos = dict(old.get('videos') or {})
    else:
      self.write_manifest()
    for root, _, names in os.walk(self.directory):
      for name in names:
        if _TEMPORARY.match(name):
          with contextlib.suppress(OSError):
            os.remove(os.path.join(root, name))

  def is_done(self, name: str) -> bool:
    """Whether `name`'s features exist with these settings.

    Raises:
      VidjaxError: the file exists, made with other settings.
    """
    path = self.path(name)
    embedded = read_embedded(path) if os.path.exists(path) else None
    if embedded is None:
      return False
    if embedded.get('digest') != self.digest:
      raise self._mismatch(path, embedded.get('settings') or {})
    self.videos[name] = _entry(embedded['source'], embedded['windows'])
    return True

  def write(self, name: str, source: str, features: np.ndarray,
            start_s: np.ndarray, end_s: np.ndarray):
    """`name`'s features, whole or not at all."""
    path = self.path(name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    entry = _entry(source, len(features))
    files.write_text(path, encode(features, start_s, end_s,
                                  {**self._header(), **entry}))
    self.videos[name] = entry
    self.failed.pop(source, None)

  def fail(self, source: str, reason: str):
    self.failed[source] = reason

  def write_manifest(self):
    """manifest.json: the settings, the videos done (in this run or an
    earlier one) and those that failed in this run."""
    payload = {**self._header(), 'videos': self.videos,
               'failed': self.failed}
    files.write_text(self.manifest_path,
                     json.dumps(payload, indent=2, sort_keys=True) + '\n')


def _entry(source: str, windows: int) -> dict[str, Any]:
  return {'source': source, 'windows': int(windows)}
