"""Re-preparing over a prepared dataset: built beside it, swapped in whole.

A first preparation is atomic already: TFDS writes the version directory as
`incomplete.<random>_<version>` and renames it only once the shards,
`dataset_info.json`, `features.json`, `label.labels.txt` and our
`manifest.csv` are all in it (`tfds.core.utils.incomplete_dir`). But TFDS's
own overwrite modes delete the prepared version directory *before*
generating the new one (`data_path.rmtree()`), so a failed or killed
re-preparation would leave nothing. So a re-preparation here:

1. prepares the new dataset under a staging data_dir,
   `<data_dir>/.vidjax_staging/<name>/<config>/<version>/`, where it too
   appears whole or not at all (the work directory of resumable shards is
   the usual one, so an interrupted re-preparation resumes);
2. renames the old version directory aside (`.vidjax_old_<version>`),
3. renames the new one into its place, and
4. deletes the old one and the staging directory.

Steps 2 and 3 are two renames within one filesystem. A failure before step
2 leaves the old dataset untouched; a kill between 2 and 3 leaves it aside,
and the next builder of that dataset (`recover`) puts it back.
"""

from __future__ import annotations

import os
import shutil

STAGING = '.vidjax_staging'


def staging_data_dir(data_dir: str, name: str, config: str,
                     version: str) -> str:
  return os.path.join(data_dir, STAGING, name, config, version)


def aside_path(final: str) -> str:
  parent, version = os.path.split(final.rstrip(os.sep))
  return os.path.join(parent, f'.vidjax_old_{version}')


def remove(path: str):
  """Deletes a file or directory tree, if there."""
  if os.path.isdir(path) and not os.path.islink(path):
    shutil.rmtree(path)
  elif os.path.lexists(path):
    os.remove(path)


def recover(final: str) -> bool:
  """Completes or undoes a swap a kill interrupted; True if it put back.

  With the old dataset aside: if `final` exists, the swap had finished and
  only the deletion was left; if not, the old dataset goes back.
  """
  aside = aside_path(final)
  if not os.path.lexists(aside):
    return False
  if os.path.lexists(final):
    remove(aside)
    return False
  os.rename(aside, final)
  return True


def swap_in(new: str, final: str):
  """Puts the complete dataset `new` at `final`; deletes the old one."""
  aside = aside_path(final)
  remove(aside)
  os.rename(final, aside)
  try:
    os.rename(new, final)
  except BaseException:
    os.rename(aside, final)
    raise
  remove(aside)


def remove_staging(data_dir: str, staging: str):
  """Deletes `staging` and its then empty parents up to data_dir."""
  remove(staging)
  parent = os.path.dirname(staging)
  while parent.startswith(os.path.join(data_dir, STAGING)):
    try:
      os.rmdir(parent)
    except OSError:
      break
    parent = os.path.dirname(parent)
