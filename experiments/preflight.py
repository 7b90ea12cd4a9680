"""Checks of a command line before Hydra runs it (``python -m experiments.search``): what Hydra itself would
fail on with a traceback before the app's code runs, as one sentence."""
from __future__ import annotations

import os
import pathlib
import tempfile

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from hardware.check import PresetError, read_yaml

CONF_DIR = pathlib.Path(__file__).resolve().parent.parent / "conf"
PROBE_BYTES = 64 * 1024  # what the write check writes: a folder that cannot take it cannot take a run


def unwritable(folder) -> str | None:
  """Why files cannot be created in ``folder`` (where it does not exist yet: in its deepest existing parent, where
  it would be created), or None. A file of ``PROBE_BYTES`` is written there and removed: permissions, read-only
  mounts, a full disk and a root user all answer truthfully."""
  path = pathlib.Path(os.path.expanduser(str(folder))).absolute()
  probe = path
  while not probe.exists() and probe.parent != probe:
    probe = probe.parent
  if not probe.is_dir():
    return f"{probe} is a file, not a folder"
  name = None
  try:
    fd, name = tempfile.mkstemp(dir=probe, prefix=".hwnas-write-test-")
    with os.fdopen(fd, "wb") as f:  # a full disk still takes an empty file: write a block and flush it
      f.write(b"\0" * PROBE_BYTES)
      f.flush()
      os.fsync(f.fileno())
  except OSError as e:
    return f"{e.strerror or type(e).__name__} in {probe}"
  finally:
    if name is not None and os.path.exists(name):
      os.unlink(name)
  return None


def preflight(argv) -> str | None:
  try:
    return _preflight(argv)
  except Exception:  # never in the way: Hydra reports what this check could not follow
    return None


def _preflight(argv) -> str | None:
  """What Hydra itself would fail on with a traceback before this app's code runs, as one sentence (None: nothing
  found, or a command line this check does not follow, left to Hydra): a config file of the selected groups
  (``hardware=mine``, from conf/ or a folder of ``--config-dir`` / ``hydra.searchpath``) that is not valid YAML,
  and a run or sweep folder (``hydra.run.dir``, ``hydra.sweep.dir``) that cannot be written."""
  parsed_argv = _parse_argv(argv)
  if parsed_argv is None:
    return None
  multirun, dirs, name, overrides = parsed_argv
  try:
    parsed = OverridesParser.create().parse_overrides(overrides)
  except Exception:  # Hydra's own sentence
    return None
  chosen, folders = {}, {}
  for o in parsed:
    key = o.key_or_group
    if key == "hydra.searchpath":
      dirs += [pathlib.Path(v[len("file://"):] if v.startswith("file://") else v) for v in _values(o)
               if not v.startswith("pkg://")]
    elif key in ("hydra.run.dir", "hydra.sweep.dir"):
      folders[key] = _values(o)
    elif "." not in key and o.package is None and not o.is_delete():
      chosen[key] = _values(o)
  try:
    top = _read_configs(dirs, name, chosen)
  except PresetError as e:
    return str(e)
  if top is None:
    return None
  return _unwritable_folder(top, folders, multirun)


def _parse_argv(argv):
  """(multirun, config folders, config name, overrides) of a command line, or None where Hydra should answer."""
  flags_with_value = {"--config-dir", "-cd", "--config-name", "-cn", "--config-path", "-cp", "--package", "-p",
                      "--experimental-rerun"}
  multirun, dirs, name, overrides = False, [CONF_DIR], "config", []
  args = list(argv)
  while args:
    a = args.pop(0)
    flag, eq, value = a.partition("=")
    if flag in flags_with_value:
      value = value if eq else (args.pop(0) if args else "")
      if flag in ("--config-dir", "-cd"):
        dirs.append(pathlib.Path(value))
      elif flag in ("--config-name", "-cn"):
        name = value
      elif flag in ("--config-path", "-cp", "--experimental-rerun"):
        return None  # another primary config folder: left to Hydra
    elif a in ("-m", "--multirun"):
      multirun = True
    elif a.startswith("-"):
      return None  # --cfg, --help, --info, --run, ...: no job runs, or a flag this check does not know
    else:
      overrides.append(a)
  return multirun, dirs, name, overrides


def _values(o) -> list:
  """The values an override sets (every value of a sweep)."""
  if o.is_sweep_override():
    try:
      return [str(v) for v in o.sweep_string_iterator()]
    except Exception:
      return []
  v = o.value()
  return [str(x) for x in v] if isinstance(v, (list, tuple)) else [str(v)]


def _read_configs(dirs, name: str, chosen: dict):
  """Reads the primary config and every selected group option as YAML (raises PresetError naming a broken
  file); returns the primary config, or None when it is not in ``dirs``."""
  primary = next((d / f"{name}.yaml" for d in dirs if (d / f"{name}.yaml").is_file()), None)
  if primary is None:
    return None
  top = read_yaml(str(primary), "config")
  for entry in top.get("defaults", []):
    if OmegaConf.is_dict(entry) or isinstance(entry, dict):
      for group, option in dict(entry).items():
        if isinstance(option, str) and "/" not in str(group) and not str(group).startswith("override"):
          chosen.setdefault(str(group), [option])
  for group, options in chosen.items():
    for option in options:
      path = next((d / group / f"{option}.yaml" for d in dirs if (d / group / f"{option}.yaml").is_file()), None)
      if path is not None:
        read_yaml(str(path), "preset" if group == "hardware" else "config")
  return top


def _unwritable_folder(top, folders: dict, multirun: bool) -> str | None:
  """A sentence when the run (sweep) folder of the command line, or the config's default, cannot be written."""
  key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
  raw = OmegaConf.to_container(top, resolve=False).get("hydra") or {}
  default = (raw.get("sweep" if multirun else "run") or {}).get("dir") or ""
  for folder in folders.get(key) or [str(default)]:
    fixed = folder.split("${")[0]  # the part before any interpolation (${now:...}) already names a folder
    if not fixed:
      continue
    reason = unwritable(fixed if fixed == folder else (pathlib.Path(fixed).parent if not fixed.endswith("/")
                                                        else pathlib.Path(fixed)))
    if reason:
      kind = "sweep" if multirun else "run"
      return (f"the {kind} folder {key}={folder} cannot be written ({reason}); choose a writable one with "
              f"{key}=..., or make it writable.")
  return None
