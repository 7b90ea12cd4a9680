"""Many fixed-architecture networks trained in ONE compiled step (a prototype; not wired into the protocol).

A fixed network of a search space can run as its supernet's "masked form": the supernet whose every choice is
pinned to the network's value (its logits one-hot, read in ``argmax`` mode: bit-widths quantise at the chosen
candidate, width masks zero the channels beyond the chosen width, skip choices take the chosen path). K such
networks have the same graph and differ only in their state (weights, quantiser steps, BatchNorm statistics,
optimiser state, and the pinned logits), so their states stack along a leading axis and ``jax.vmap`` of the
fine-tuning step (``nas.train.finetune._train_step``'s loss and update) trains all K in one XLA program. Each
network reads its own mini-batches (its own index stream, gathered on the device from one copy of the data).

The masked form computes the widest network's multiply-accumulates whatever widths are chosen, so it can only
pay where the K networks are about as wide as the space's widest one (uniform baselines at base width in a space
narrowed to it). Measured on a 2-core CPU (docs/speed.md, section 3): it does not pay for the steps there. XLA's
CPU backend runs the vmapped convolutions (grouped convolutions, ``feature_group_count=K``) 3 to 6 times slower
than K separate steps, and ``mode="unroll"`` (K copies in one program) runs at 0.4 to 0.8 of their speed. It pays
only in compilation: one vmapped program serves any K (8 to 16 s, against 5 to 9 s per derived network).
``python -m experiments.bench_multi`` repeats the measurement.

The masked form is not numerically the derived network (``build_model(arch=...)``): its activation quantisers
are calibrated, and LSQ's gradient scale counts features, over the widest tensors (masked channels are zeros).
"""
from __future__ import annotations

import functools
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from nas.ops.choices import CategoricalChoice
from nas.train import finetune as trainlib

PIN = 1e4  # the pinned candidate's logit (the others 0): argmax picks it, softmax puts all mass on it


def pin(supernet, choices: Mapping[str, object]) -> None:
  """Pins every searchable choice of ``supernet`` to ``choices[name]`` (per-channel choices: a value for all
  channels, or one per channel), so that ``supernet(x, mode="argmax")`` is the masked form of that network."""
  for name, choice in supernet.choices.items():
    if choice.fixed:
      continue
    if not isinstance(choice, CategoricalChoice):
      raise ValueError(f"choice {name!r} is a {type(choice).__name__}; pinning needs Gumbel (categorical) choices "
                       f"(search.method=gumbel).")
    if name not in choices:
      raise ValueError(f"the architecture has no value for choice {name!r}.")
    value = choices[name]
    shape = choice.logits[...].shape
    if isinstance(value, (tuple, list)):
      idx = np.asarray([choice.values.index(int(v)) for v in value])
      if len(shape) != 2 or len(idx) != shape[0]:
        raise ValueError(f"choice {name!r}: {len(idx)} per-channel values for logits of shape {shape}.")
    else:
      idx = np.full(shape[:-1], choice.values.index(int(value)))
    choice.logits[...] = jnp.asarray(np.eye(len(choice.values), dtype=np.float32)[idx] * PIN)


def _stack(trees):
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def unstack(tree, k: int):
  """Network ``k``'s slice of a stacked state."""
  return jax.tree.map(lambda a: a[k], tree)


class MultiTrainer:
  """K masked networks of one supernet, trained together by one vmapped, jitted step.

  Args:
    build: ``build(k)`` returns network ``k``'s supernet, freshly initialised (e.g. ``build_model(name, space,
      seed=seed_k, ...)``); every call must give the same graph (class, space, arguments).
    archs: the K networks' choices (``Supernet.derive()``-style mappings, e.g. ``baseline_choices``).
    x_calib: one calibration batch per network, shape (K, B, ...), or one for all (B, ...).
    lr: the learning rate or an optax schedule; ``weight_decay``, ``kind``: as ``finetune.weights_optimizer``.
    mode: how the one program runs the K steps (``_multi_step``): ``vmap`` (default), ``map`` or ``unroll``.
  """

  def __init__(self, build, archs: Sequence[Mapping], x_calib, lr, weight_decay: float, kind: str = "adamw",
               mode: str = "vmap"):
    if mode not in MODES:
      raise ValueError(f"mode={mode!r}; use one of {MODES}.")
    self.k = len(archs)
    if self.k < 1:
      raise ValueError("MultiTrainer needs at least one architecture.")
    x_calib = np.asarray(x_calib)
    graphdef, states = None, []
    for i, choices in enumerate(archs):
      model = build(i)
      pin(model, choices)
      trainlib.calibrate(model, x_calib[i] if x_calib.ndim == 5 else x_calib, mode="argmax")
      opt = trainlib.weights_optimizer(model, lr, weight_decay, kind)
      model.train()
      g, state = nnx.split((model, opt))
      # The optimiser's graph holds its optax closures (new objects per call, the same recipe): network 0's
      # serve all; the networks' own graphs and state structures must match.
      shape = (nnx.graphdef(model), jax.tree.structure(state))
      if graphdef is None:
        graphdef, first = g, shape
      elif shape != first:
        raise ValueError(f"network {i} does not have network 0's graph; build every network from the same "
                         f"model, space and arguments.")
      states.append(state)
    self.graphdef = graphdef
    self.state = _stack(states)
    # One compiled program per trainer (a graphdef holds lists, so it cannot be a static jit argument).
    self._step = jax.jit(functools.partial(_multi_step, graphdef, mode), donate_argnums=0)

  def step(self, x_all: jax.Array, y_all: jax.Array, idx) -> tuple[jax.Array, jax.Array]:
    """One training step of every network: network k trains on ``x_all[idx[k]]``. Returns the K losses and
    training accuracies."""
    self.state, loss, acc = self._step(self.state, x_all, y_all, jnp.asarray(idx, jnp.int32))
    return loss, acc

  def network(self, k: int):
    """Network ``k`` as a (model, optimiser) pair of NNX objects (its masked supernet), e.g. to evaluate it
    (``finetune.evaluate(model, x, y)``)."""
    return nnx.merge(self.graphdef, unstack(self.state, k))


def _one_step(graphdef, state, x, y):
  model, opt = nnx.merge(graphdef, state)

  def loss_fn(model):
    logits = model(x, mode="argmax")
    return trainlib.cross_entropy(logits, y), logits
  (loss, logits), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
  opt.update(model, grads)
  return nnx.state((model, opt)), loss, jnp.mean((jnp.argmax(logits, -1) == y).astype(jnp.float32))


MODES = ("vmap", "map", "unroll")


def _multi_step(graphdef, mode, state, x_all, y_all, idx):
  """All K networks' steps in one program: ``vmap`` (one batched step: every convolution becomes a grouped
  one over the K kernels), ``map`` (``lax.map``: the K steps in a loop inside the program) or ``unroll`` (K
  copies of the step, independent, which XLA may run concurrently)."""
  def one(s, i):
    return _one_step(graphdef, s, x_all[i], y_all[i])
  if mode == "vmap":
    return jax.vmap(one)(state, idx)
  if mode == "map":
    return jax.lax.map(lambda a: one(*a), (state, idx))
  return _stack([one(unstack(state, k), idx[k]) for k in range(idx.shape[0])])


def index_streams(n: int, batch_size: int, seeds: Sequence[int]):
  """Endless (K, batch_size) index arrays: stream k is ``nas.train.data.batches``'s order for seed ``seeds[k]``
  (the same permutations, so a network here sees the batches ``finetune`` would give it)."""
  batch_size = min(batch_size, n)
  rngs = [np.random.default_rng(s) for s in seeds]

  def one(rng):
    while True:
      perm = rng.permutation(n)
      for i in range(0, n - batch_size + 1, batch_size):
        yield perm[i:i + batch_size]
  streams = [one(r) for r in rngs]
  while True:
    yield np.stack([next(s) for s in streams])


def train_many(build, archs: Sequence[Mapping], x_train, y_train, cfg: trainlib.TrainConfig,
               seeds: Sequence[int] | None = None) -> MultiTrainer:
  """Trains K masked networks together with ``finetune``'s recipe ``cfg`` (steps, batch size, optimiser, cosine
  decay; no distillation or augmentation here) and returns the trainer (its ``network(k)`` for evaluation).
  Network k reads the batches of seed ``seeds[k]`` (default k)."""
  if cfg.kd_alpha > 0 or cfg.augment:
    raise ValueError("train_many: distillation and augmentation are not part of the prototype.")
  seeds = list(range(len(archs))) if seeds is None else list(seeds)
  streams = index_streams(len(x_train), cfg.batch_size, seeds)
  first = next(index_streams(len(x_train), cfg.batch_size, seeds))
  x_calib = np.stack([x_train[i] for i in first])
  trainer = MultiTrainer(build, archs, x_calib, optax.cosine_decay_schedule(cfg.lr, max(cfg.steps, 1)),
                         cfg.weight_decay, cfg.optimizer)
  x_all, y_all = jnp.asarray(x_train), jnp.asarray(y_train)
  for _ in range(cfg.steps):
    trainer.step(x_all, y_all, next(streams))
  return trainer
