"""Orbax checkpoints of a training loop's state (model, optimisers, multipliers, step), for resuming.

A loop saves every ``every`` steps; Orbax writes each checkpoint to a temporary folder and renames it when
complete, so a process killed mid-save leaves the previous checkpoint intact. Resuming restores the latest
complete checkpoint; with the batch stream and the per-step PRNG keys derived from (seed, step), the resumed
run follows the same trajectory as an uninterrupted one. Callers key checkpoint folders by what determines
the results, the code included (``code_fingerprint``).
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import pathlib
import types

import jax
import orbax.checkpoint as ocp
from flax import nnx


def source_hash(roots) -> str:
  """A short hash of the ``.py`` files under ``roots`` (their paths and contents)."""
  h = hashlib.sha256()
  for root in map(pathlib.Path, roots):
    for f in sorted(root.rglob("*.py")):
      h.update(str(f.relative_to(root.parent)).encode())
      h.update(f.read_bytes())
  return h.hexdigest()[:16]


@functools.cache
def code_fingerprint(packages: tuple[str, ...] = ("nas", "hardware")) -> str:
  """The hash of the sources of ``packages`` (importable names): the code that computes a job's results.

  Part of every checkpoint folder's key: after a change of the code (a pull, an edit) the same command starts
  afresh instead of resuming, or returning at once, the state the old code left.
  """
  roots = []
  for name in packages:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
      raise ValueError(f"code_fingerprint: {name!r} is not an importable package.")
    roots.extend(spec.submodule_search_locations)
  return source_hash(roots)


def module_source_hash(dotted: str) -> str | None:
  """The hash of the code behind ``dotted`` (a ``_target_`` such as ``pkg.Class``), or None if it cannot be
  found. Keys checkpoints on a user's plugin: a cost model defined outside this repository's packages is not in
  ``code_fingerprint``.

  The object is imported and the module that DEFINES it (``obj.__module__``, not the one it was imported
  from: ``mypkg.MyAccelerator`` re-exported by ``mypkg/__init__.py`` and defined in ``mypkg/model.py``) is
  followed to its top-level package, whose ``.py`` files are all hashed (:func:`source_hash`), since the class
  may call code anywhere in it; a top-level module outside any package is hashed alone (never a whole
  ``site-packages``). When the object cannot be imported, the source of the longest importable module prefix
  of ``dotted`` is hashed.
  """
  parts = dotted.split(".")
  defining = None
  for i in range(len(parts), 0, -1):
    try:
      obj = importlib.import_module(".".join(parts[:i]))
    except Exception:  # not a module (a class's name), or a module that fails to import
      continue
    try:
      for attr in parts[i:]:
        obj = getattr(obj, attr)
    except AttributeError:
      break
    defining = obj.__name__ if isinstance(obj, types.ModuleType) else getattr(obj, "__module__", None)
    break
  if defining:
    spec = _find_spec(defining.split(".")[0])
    if spec is not None and spec.submodule_search_locations:  # a package: all of it
      return source_hash(list(spec.submodule_search_locations))
    if spec is not None and spec.origin and pathlib.Path(spec.origin).is_file():
      return hashlib.sha256(pathlib.Path(spec.origin).read_bytes()).hexdigest()[:16]
  for i in range(len(parts), 0, -1):
    spec = _find_spec(".".join(parts[:i]))
    if spec is not None and spec.origin and pathlib.Path(spec.origin).is_file():
      return hashlib.sha256(pathlib.Path(spec.origin).read_bytes()).hexdigest()[:16]
  return None


def _find_spec(name: str):
  try:
    return importlib.util.find_spec(name)
  except (ImportError, ValueError):
    return None


def _pure(tree):
  """Pure (array) pytrees of NNX objects; other leaves pass through."""
  return {k: (nnx.to_pure_dict(nnx.state(v)) if isinstance(v, nnx.Pytree) else v) for k, v in tree.items()}


def _str_keys(tree):
  """Orbax sorts dict keys; NNX lists give int keys beside str ones, so store every key as a string."""
  if isinstance(tree, dict):
    return {str(k): _str_keys(v) for k, v in tree.items()}
  return tree


def _like(restored, target):
  """``restored`` (string keys) with the key types of ``target``."""
  if isinstance(target, dict):
    return {k: _like(restored[str(k)], v) for k, v in target.items()}
  return restored


def _short(e: BaseException, limit: int = 80) -> str:
  """The first line of an exception, without TensorStore's spec dump, at most ``limit`` characters."""
  text = " ".join(str(e).split("See full TensorStore")[0].split("\n", 1)[0].split())
  text = f"{type(e).__name__}: {text}" if text else type(e).__name__
  return text if len(text) <= limit else text[:limit - 3].rstrip() + "..."


def stored_mismatch(step_dir: pathlib.Path, abstract) -> str | None:
  """How the checkpoint in ``step_dir`` differs from ``abstract`` (the arrays this run restores): the first path
  missing, extra or of another shape; None when its metadata names the same arrays.

  Raises:
    Exception: whatever Orbax raises when the metadata cannot be read (a damaged checkpoint).
  """
  with ocp.StandardCheckpointer() as reader:
    meta = reader.metadata(step_dir / "default")
  tree = getattr(getattr(meta, "item_metadata", meta), "tree", None)
  if tree is None:
    raise ValueError("no array metadata")
  stored = {k: tuple(getattr(v, "shape", ())) for k, v in _flatten(dict(tree)).items()}
  wanted = {k: tuple(getattr(v, "shape", ())) for k, v in _flatten(abstract).items()}
  for k in sorted(set(wanted) | set(stored)):
    if k not in stored:
      return f"it has no {k}"
    if k not in wanted:
      return f"it holds {k}, which this run has not"
    if stored[k] != wanted[k]:
      return f"{k} has shape {stored[k]} there, {wanted[k]} here"
  return None


def restore_error(step_dir: pathlib.Path, abstract, error: BaseException) -> str:
  """One sentence for a checkpoint that failed to restore: damaged (its files cannot be read, or they name
  the same arrays as this run and still fail) or of another network (its metadata differs from this run's)."""
  try:
    with _quiet_unraisable():
      mismatch = stored_mismatch(step_dir, abstract)
  except Exception:
    mismatch = None
  if mismatch:
    mismatch = mismatch if len(mismatch) <= 120 else mismatch[:117] + "..."
    return (f"the checkpoint {step_dir} does not match this run ({mismatch}): another network or "
            f"version of the code saved it; delete that folder to start over, or set checkpoint.dir elsewhere.")
  return (f"the checkpoint {step_dir} is damaged ({_short(error, 60)}); delete that folder to resume from the "
          f"checkpoint before it, or start over.")


class _quiet_unraisable:
  """Silences "Exception ignored in <coroutine ...>" while Orbax gives up on a damaged checkpoint (its pending
  reads fail after the error was raised, each with a 2 KB TensorStore spec)."""

  def __enter__(self):
    import sys
    self.sys, self.hook = sys, sys.unraisablehook
    sys.unraisablehook = lambda unraisable: None

  def __exit__(self, *exc):
    import gc
    gc.collect()  # the abandoned coroutines die here, while the hook is off
    self.sys.unraisablehook = self.hook
    return False


class LoopCheckpointer:
  """Saves and restores ``{name: nnx object or array}`` for one training loop.

  Args:
    directory: folder of this loop's checkpoints (created); None disables checkpointing.
    every: save every this many steps (and at the last step).
    keep: how many checkpoints to keep.
  """

  def __init__(self, directory: str | pathlib.Path | None, every: int = 100, keep: int = 2):
    self.every = max(int(every), 1)
    self.manager = None
    if directory is not None:
      path = pathlib.Path(directory).absolute()
      path.mkdir(parents=True, exist_ok=True)
      self.manager = ocp.CheckpointManager(path, options=ocp.CheckpointManagerOptions(
          max_to_keep=keep, enable_async_checkpointing=False))

  def restore(self, objects: dict) -> int:
    """Restores the latest checkpoint into ``objects`` in place (NNX objects) and returns the next step.

    Arrays (non-NNX leaves) are returned through ``objects`` replaced by their restored values. 0 if none.
    """
    if self.manager is None or self.manager.latest_step() is None:
      return 0
    step = self.manager.latest_step()
    target = _pure(objects)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _str_keys(target))
    try:
      with _quiet_unraisable():  # a damaged file leaves Orbax's read coroutines to die noisily
        restored = _like(self.manager.restore(step, args=ocp.args.StandardRestore(abstract)), target)
    except Exception as e:
      raise ValueError(restore_error(pathlib.Path(self.manager.directory) / str(step), abstract, e)) from None
    for k, v in objects.items():
      if isinstance(v, nnx.Pytree):
        state = nnx.state(v)
        nnx.replace_by_pure_dict(state, restored[k])
        nnx.update(v, state)
      else:
        objects[k] = restored[k]
    return int(step) + 1

  def due(self, step: int, last: bool = False) -> bool:
    """Whether :meth:`maybe_save` saves at ``step`` (a staged step's objects must be synced first)."""
    return self.manager is not None and (last or (step + 1) % self.every == 0)

  def maybe_save(self, step: int, objects: dict, last: bool = False) -> None:
    if not self.due(step, last):
      return
    self.manager.save(step, args=ocp.args.StandardSave(_str_keys(_pure(objects))), force=True)
    self.manager.wait_until_finished()

  def close(self) -> None:
    if self.manager is not None:
      self.manager.close()


def _flatten(tree, prefix=()) -> dict:
  if isinstance(tree, dict):
    out = {}
    for k, v in tree.items():
      out.update(_flatten(v, prefix + (str(k),)))
    return out
  return {"/".join(prefix): tree}


_SAVED = nnx.Not(nnx.RngState)  # the network: everything but its random-number streams


def save_network(model: nnx.Module, path) -> pathlib.Path:
  """The model's NNX state (parameters, LSQ steps, BatchNorm statistics; not its RNG streams) as one ``.npz``, keyed by the
  state path joined with ``/`` (e.g. ``convs/0/conv/kernel``); written to a temporary file, then renamed."""
  import numpy as np
  path = pathlib.Path(path)
  flat = {k: np.asarray(v) for k, v in _flatten(nnx.to_pure_dict(nnx.state(model, _SAVED))).items()}
  tmp = path.with_name(path.name + ".tmp.npz")
  np.savez(tmp, **flat)
  tmp.replace(path)
  return path


def load_network(model: nnx.Module, path) -> nnx.Module:
  """Loads what :func:`save_network` wrote into ``model`` (built with the same architecture), in place.

  Raises:
    ValueError: naming the first path that is missing, unexpected or of another shape.
  """
  import numpy as np
  pure = nnx.to_pure_dict(nnx.state(model, _SAVED))
  flat = _flatten(pure)
  with np.load(path) as data:
    stored = {k: data[k] for k in data.files}
  missing, extra = sorted(set(flat) - set(stored)), sorted(set(stored) - set(flat))
  if missing or extra:
    raise ValueError(f"{path} does not match the network: missing {missing[:3]}, unexpected {extra[:3]}; was it "
                     "saved from another architecture?")
  for k, v in flat.items():
    if tuple(np.shape(v)) != stored[k].shape:
      raise ValueError(f"{path}: {k} has shape {stored[k].shape}, the network expects {tuple(np.shape(v))}.")

  def fill(tree, prefix=()):
    if isinstance(tree, dict):
      return {k: fill(v, prefix + (str(k),)) for k, v in tree.items()}
    return jax.numpy.asarray(stored["/".join(prefix)])

  state = nnx.state(model, _SAVED)
  nnx.replace_by_pure_dict(state, fill(pure))
  nnx.update(model, state)
  return model
