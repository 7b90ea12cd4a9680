"""A training step run as one pure ``jax.jit`` function over the flat state of its NNX objects.

``nnx.jit`` walks the object graph in Python at every call; ``nnx.cached_partial`` caches that walk, but each
call still rebuilds the state pytrees on the way in and writes every variable back on the way out: Python work
that grows with the number of arrays and, on a 2-core CPU, takes a core from XLA's threads (0 to 15 % of a 15 to
60 ms step, ``python -m experiments.bench_dispatch``; docs/speed.md, section 7). Flax's own remedy is the
"functional training loop" (Flax documentation, "Performance considerations"): split the objects once, carry
their state as plain arrays through ``jax.jit``, merge them back when Python needs to read them.
:class:`StagedStep` is that loop's step.

The objects are stale while the step runs: their arrays were donated to the first call (reading one raises
JAX's "deleted buffer" error instead of returning an old value). :meth:`StagedStep.sync` writes the current
state back; the loops call it before they log from, checkpoint or return the objects.
"""
from __future__ import annotations

from typing import Callable

import jax
from flax import nnx


class StagedStep:
  """``fn(*objects, *args, **kwargs)``, an NNX step that updates ``objects`` in place, as a pure jitted
  function of their flat state.

  Args:
    fn: the step; an ``nnx.jit``-decorated function is unwrapped.
    objects: the NNX objects the step reads and updates (model, optimisers, a teacher).
    static_argnames: arguments that are Python values (one program per value), as in ``jax.jit``; they must
      be passed by keyword.

  The compiled program carries ``fn``'s name, so compile logs and profiles name it as before.
  """

  def __init__(self, fn: Callable, *objects, static_argnames: tuple[str, ...] = ()):
    fn = getattr(fn, "fun", fn)  # nnx.jit's wrapper holds the plain function as ``fun``
    self._objects = objects
    self._graphdef, state = nnx.split(objects)
    self._leaves, self._treedef = jax.tree.flatten(state)
    graphdef, treedef = self._graphdef, self._treedef

    def pure(leaves, *args, **kwargs):
      objs = nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves))
      out = fn(*objs, *args, **kwargs)
      return jax.tree.leaves(nnx.state(objs)), out
    pure.__name__, pure.__qualname__ = fn.__name__, fn.__qualname__

    self._step = jax.jit(pure, donate_argnums=0, static_argnames=static_argnames)
    self._synced = True

  def __call__(self, *args, **kwargs):
    leaves, out = self._step(self._leaves, *args, **kwargs)
    self._leaves, self._synced = leaves, False
    return out

  def sync(self) -> None:
    """Writes the current state into the objects (after which they can be read, saved or stepped eagerly)."""
    if not self._synced:
      nnx.update(self._objects, jax.tree.unflatten(self._treedef, self._leaves))
      self._synced = True
