"""How a discrete choice becomes trainable.

``CategoricalChoice`` holds one logit per candidate (EdMIPS / FBNet): the search mixes candidates with
Gumbel-softmax weights and reads the categorical ``softmax(logits)`` for the expected cost; deriving takes
the argmax. A choice with one candidate is fixed and costs nothing at run time.

References:
  Jang, Gu, Poole, "Categorical Reparameterization with Gumbel-Softmax", ICLR 2017.
  Wu et al., "FBNet", CVPR 2019. Cai & Vasconcelos, "Rethinking Differentiable Search for
  Mixed-Precision Neural Networks" (EdMIPS), CVPR 2020.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping, NamedTuple, Sequence

import jax
import numpy as np
import jax.numpy as jnp
from flax import nnx


MODES = ("sample", "expected", "argmax")


def check_mode(mode: str) -> None:
  if mode not in MODES:
    raise ValueError(f"mode={mode!r}; use 'sample', 'expected' or 'argmax'.")


class ArchParam(nnx.Variable):
  """An architecture parameter: trained by its own optimiser, never by the weights' one."""


class OneHot(NamedTuple):
  """Mixing weights whose forward value is one-hot (a hard Gumbel sample, an SDQ draw, an argmax).

  ``weights[..., j]`` belongs to candidate ``cands[..., j]``; only the one at position ``drawn`` is non-zero
  forward. A quantiser given a OneHot quantises at the drawn candidate only; backward, every weight still
  gets the gradient it has in the full mix, <dL/dout, Q_j(x)> (``nas.ops.layers``). Shapes: (k,) and () per
  tensor, (C, k) and (C,) per output channel.
  """
  cands: jax.Array
  drawn: jax.Array
  weights: jax.Array

  def dense(self, n: int) -> jax.Array:
    """The same weights over all ``n`` candidates (zeros elsewhere), with the same gradients."""
    return jnp.sum(jax.nn.one_hot(self.cands, n, dtype=self.weights.dtype) * self.weights[..., None], axis=-2)


def uniform_noise(key: jax.Array, shape) -> jax.Array:
  """Uniform samples in [tiny, 1) (as ``jax.random.gumbel`` draws them): the noise every choice's sample is
  a function of, so that a supernet can draw all its choices' noise in one call."""
  return jax.random.uniform(key, shape, jnp.float32, minval=jnp.finfo(jnp.float32).tiny, maxval=1.0)


def _noise(key: jax.Array | None, uniform: jax.Array | None, shape) -> jax.Array:
  if uniform is not None:
    return jnp.reshape(uniform, shape)
  if key is None:
    raise ValueError("mode='sample' needs a random key (or uniform noise).")
  return uniform_noise(key, shape)


def gumbel_softmax(key: jax.Array | None, logits: jax.Array, tau, hard: bool = False,
                   uniform: jax.Array | None = None) -> jax.Array:
  """A relaxed one-hot sample over the last axis: ``softmax((logits + G) / tau)``, G ~ Gumbel(0, 1).

  With ``hard=True`` the forward value is the one-hot argmax of the relaxed sample and the gradient is the
  relaxed one's (straight-through). G = -log(-log(U)) with U from ``key``, or ``uniform`` if given.
  """
  g = -jnp.log(-jnp.log(_noise(key, uniform, logits.shape)))
  y = jax.nn.softmax((logits + g) / tau, axis=-1)
  if not hard:
    return y
  one_hot = jax.nn.one_hot(jnp.argmax(y, axis=-1), logits.shape[-1], dtype=y.dtype)
  return y + jax.lax.stop_gradient(one_hot - y)


def rowwise(fn: Callable, *arrays: Mapping[str, jax.Array]) -> dict:
  """``fn`` over the last axis of many small arrays at once: the arrays of each length of that axis are
  stacked as rows, ``fn`` runs once on each stack (and on the stacks of the other mappings, whose arrays have
  the same shapes), and its results are split back per name (an array, or a tuple of arrays, with the rows
  first). Used for the choices' softmaxes: XLA on a CPU runs every small operation as a call of its own
  (about 1 us each here), and a supernet has about a hundred choices.
  """
  first = arrays[0]
  stacks = {}
  for name, x in first.items():
    stacks.setdefault(x.shape[-1], []).append(name)
  out = {}
  for n, names in stacks.items():
    lead = [first[k].shape[:-1] for k in names]
    stacked = [jnp.concatenate([d[k].reshape(-1, n) for k in names]) for d in arrays]
    result = fn(*stacked)
    bounds = np.cumsum([0] + [math.prod(s) for s in lead]).tolist()  # rows [a, b) of each name
    for k, shape, a, b in zip(names, lead, bounds[:-1], bounds[1:]):
      out[k] = jax.tree.map(lambda r, s=shape, a=a, b=b: r[a:b].reshape(s + r.shape[1:]), result)
  return out


class _Choice(nnx.Module):
  """What both kinds of choice share; a subclass sets ``values`` and ``logits`` and defines ``probs``,
  ``quantizer_weights`` and ``derive``."""

  @property
  def fixed(self) -> bool:
    return len(self.values) == 1

  @property
  def noise_shape(self) -> tuple[int, ...]:
    """Shape of the uniform noise one sample takes (nothing for a fixed choice)."""
    return () if self.fixed else tuple(self.logits[...].shape)

  def mixing_weights(self, mode: str, key: jax.Array | None = None, tau=1.0,
                     uniform: jax.Array | None = None) -> jax.Array:
    """Weights of all candidates in the forward pass, over the last axis.

    Args:
      mode: ``"sample"`` (a draw from ``key``, or from the ``uniform`` noise of ``noise_shape``),
        ``"expected"`` (``probs``) or ``"argmax"`` (one-hot at the derived candidate).
    """
    w = self.quantizer_weights(mode, key, tau, uniform)
    return w.dense(len(self.values)) if isinstance(w, OneHot) else w


class CategoricalChoice(_Choice):
  """A choice among ``values`` with one trainable logit each (all zero: uniform at the start).

  Args:
    values: the candidates (bit-widths or channel counts), in ascending order.
    hard: straight-through one-hot samples instead of relaxed ones.
  """

  def __init__(self, values: Sequence[int], hard: bool = False, channels: int | None = None):
    self.values = tuple(int(v) for v in values)
    self.hard = hard
    shape = (len(self.values),) if channels is None else (channels, len(self.values))
    self.logits = ArchParam(jnp.zeros(shape, jnp.float32))

  @classmethod
  def assigned(cls, per_channel: Sequence[int]) -> "CategoricalChoice":
    """A fixed per-channel assignment (a derived network's per-channel bits): one-hot logits, argmax mode."""
    values = sorted(set(int(v) for v in per_channel))
    choice = cls(values, channels=len(per_channel))
    idx = np.asarray([values.index(int(v)) for v in per_channel])
    choice.logits[...] = jnp.asarray(np.eye(len(values), dtype=np.float32)[idx] * 1e4)
    return choice

  @property
  def per_channel(self) -> bool:
    return self.logits[...].ndim == 2

  def probs(self) -> jax.Array:
    """The categorical distribution the derived choice and the expected cost are read from."""
    return jax.nn.softmax(self.logits[...], axis=-1)

  def quantizer_weights(self, mode: str, key: jax.Array | None = None, tau=1.0,
                        uniform: jax.Array | None = None) -> "OneHot | jax.Array":
    """``mixing_weights`` as a quantiser takes them: a ``OneHot`` where the forward value is one-hot (hard
    samples, argmax), so that the quantiser computes one candidate instead of all; same values and gradients."""
    n = len(self.values)
    check_mode(mode)
    if self.fixed:
      return jnp.ones(self.logits[...].shape[:-1] + (1,), jnp.float32)
    logits = self.logits[...]
    if mode == "sample":
      y = gumbel_softmax(key, logits, tau, self.hard, uniform)
      return self.sampled(y, jnp.argmax(y, axis=-1))
    if mode == "expected":
      return self.probs()
    drawn = jnp.argmax(logits, axis=-1)
    return OneHot(jnp.broadcast_to(jnp.arange(n), logits.shape), drawn, jax.nn.one_hot(drawn, n))

  def sampled(self, y: jax.Array, drawn: jax.Array) -> "OneHot | jax.Array":
    """The quantiser's weights for a Gumbel sample ``y`` (as ``gumbel_softmax`` gives it) and its argmax."""
    cands = jnp.broadcast_to(jnp.arange(len(self.values)), y.shape)
    return OneHot(cands, drawn, y) if self.hard else y  # hard: y is one-hot forward

  def derive(self):
    """The chosen candidate: the most probable one (a tuple, one per channel, for per-channel choices)."""
    idx = np.asarray(jnp.argmax(self.logits[...], axis=-1))
    return self.values[int(idx)] if idx.ndim == 0 else tuple(self.values[int(i)] for i in idx)


class SDQChoice(_Choice):
  """A bit-width chosen by a differentiable bit-width parameter (DBP), this project's reading of SDQ.

  One real parameter beta per tensor (or per output channel, ``channels``), kept in [b_min, b_max] and
  initialised at b_max. With b_lo <= beta <= b_hi the adjacent candidates, p = (beta - b_lo) / (b_hi - b_lo)
  is the probability of quantising at b_hi. The forward pass draws z ~ Bernoulli(p) and uses b_hi if z else
  b_lo; the backward pass is straight-through around the expectation, so d(mix)/dp = Q_hi - Q_lo and beta
  learns how much the higher precision helps the loss. The categorical distribution it exposes (``probs``)
  puts p on b_hi and 1 - p on b_lo, so the expected cost p C(b_hi) + (1 - p) C(b_lo) is the cost grid
  interpolated in beta, and the same contraction as for Gumbel choices applies.

  References:
    Huang et al., "SDQ: Stochastic Differentiable Quantization with Mixed Precision", ICML 2022 (formulation
    adopted from the abstract; the paper's exact DBP estimator is not public).
  """

  def __init__(self, values: Sequence[int], channels: int | None = None):
    self.values = tuple(int(v) for v in values)
    shape = () if channels is None else (channels,)
    self.logits = ArchParam(jnp.full(shape, float(self.values[-1]), jnp.float32))  # beta, in bits

  @property
  def per_channel(self) -> bool:
    return self.logits[...].ndim == 1

  def project(self) -> None:
    """Keeps beta within [b_min, b_max] (called after each architecture update)."""
    self.logits[...] = jnp.clip(self.logits[...], self.values[0], self.values[-1])

  def _pair(self):
    v = jnp.asarray(self.values, jnp.float32)
    raw = self.logits[...]
    # Clipped forward, straight-through backward: jnp.clip would halve the gradient at the range ends,
    # where every beta starts (b_max); project() keeps beta in range between steps.
    beta = raw + jax.lax.stop_gradient(jnp.clip(raw, v[0], v[-1]) - raw)
    hi = jnp.clip(jnp.searchsorted(v, beta, side="left"), 1, len(self.values) - 1)
    lo = hi - 1
    p = (beta - v[lo]) / (v[hi] - v[lo])
    return lo, hi, p

  def probs(self) -> jax.Array:
    if self.fixed:
      return jnp.ones(self.logits[...].shape + (1,), jnp.float32)
    lo, hi, p = self._pair()
    n = len(self.values)
    return jax.nn.one_hot(hi, n) * p[..., None] + jax.nn.one_hot(lo, n) * (1.0 - p)[..., None]

  def quantizer_weights(self, mode: str, key: jax.Array | None = None, tau=1.0,
                        uniform: jax.Array | None = None) -> "OneHot | jax.Array":
    """``mixing_weights`` as a quantiser takes them: a ``OneHot`` over the two adjacent candidates when the
    forward value is one-hot, so that the quantiser computes one candidate instead of all."""
    del tau  # SDQ's draw has no temperature
    check_mode(mode)
    if self.fixed:
      return jnp.ones(self.logits[...].shape + (1,), jnp.float32)
    if mode == "expected":
      return self.probs()
    lo, hi, p = self._pair()
    if mode == "sample":
      z = _noise(key, uniform, p.shape) < p  # Bernoulli(p), as jax.random.bernoulli draws it
    else:
      z = p >= 0.5  # argmax: the nearer candidate
    w_hi = p + jax.lax.stop_gradient(z.astype(p.dtype) - p)
    w_lo = (1.0 - p) + jax.lax.stop_gradient((~z).astype(p.dtype) - (1.0 - p))
    return OneHot(jnp.stack([lo, hi], -1), z.astype(jnp.int32), jnp.stack([w_lo, w_hi], -1))

  def derive(self):
    """The nearest candidate to beta (p >= 0.5 -> b_hi); a tuple per channel for per-channel choices."""
    if self.fixed:
      return self.values[0] if self.logits[...].ndim == 0 else (self.values[0],) * self.logits[...].shape[0]
    lo, hi, p = self._pair()
    idx = np.asarray(jnp.where(p >= 0.5, hi, lo))
    return self.values[int(idx)] if idx.ndim == 0 else tuple(self.values[int(i)] for i in idx)
