"""N:M semi-structured weight sparsity, trained with the sparse-refined straight-through estimator (SR-STE).

An N:M pattern keeps, in every group of M consecutive weights along the reduction (input) axis of one output
column, the N of largest magnitude (NVIDIA Ampere's 2:4 sparse tensor cores read exactly that layout). A
kernel's reduction axis is all its axes but the last, flattened in row-major order: ``cin`` for a (cin, cout)
linear kernel, (kh, kw, cin) for an HWIO convolution kernel, as the authors' code groups a PyTorch weight
flattened per output channel.

Rows that do not fill the last group (``R % M != 0`` for R reduction rows) are padded to M with zeros, as a
sparse GEMM pads its reduction axis; padding never outranks a real weight (ties go to the lower row, and
padding sits last), so a partial group of r rows keeps its min(N, r) largest weights.

Ties: among equal magnitudes the lower row wins, so a mask is a deterministic function of the weights (an
all-zero group keeps its first N rows).

SR-STE: the forward pass uses W * mask; the backward pass hands the dense gradient g of the sparse weights to
every weight (straight-through, so pruned weights keep learning and can come back) plus the sparse-refined
decay lambda_W * (1 - mask) * W, which pulls pruned weights towards zero and so keeps the mask from
oscillating: dL/dW = g + lambda_W (1 - mask) W. The paper trains with SGD; under Adam (this project's
weights optimiser) the decay term is normalised with the rest of the gradient, so lambda_W does not act as
it does under SGD (not measured here).

References:
  Zhou, Ma, Zhu, Liu, Zhang, Yuan, Sun, Li, "Learning N:M Fine-grained Structured Sparse Neural Networks From
  Scratch", ICLR 2021 (SR-STE; lambda_W = 2e-4 is the default of the authors' code).
  Mishra et al., "Accelerating Sparse Deep Neural Networks", arXiv 2104.08378, 2021 (Ampere 2:4).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from hardware.nm import DENSE, NM  # noqa: F401  (DENSE: the dense choice value)
from nas.ops.choices import OneHot

SRSTE_DECAY = 2e-4
# Patterns are hardware.nm.NM (the one type and validator); a choice's values are their codes, DENSE for dense.


def nm_mask(w: jax.Array, n: int, m: int) -> jax.Array:
  """The N:M magnitude mask of ``w`` (1.0 kept, 0.0 pruned), same shape, along its flattened reduction axis.

  A weight is kept when fewer than N weights of its group beat it; a weight beats another when its magnitude
  is larger, or equal and its row lower. The pairwise comparison costs M^2 per group, cheaper than a sort for
  the small M of hardware patterns (4, 8).

  Args:
    w: a kernel with output columns on the last axis (rank >= 2).
    n: weights kept per group.
    m: group size along the reduction axis.
  """
  n, m = NM.parse((n, m))
  return (nm_rank(w, m) < n).astype(w.dtype)


def nm_rank(w: jax.Array, m: int) -> jax.Array:
  """How many weights of its group of ``m`` beat each weight of ``w`` (see :func:`nm_mask`), same shape: the
  mask of every N:M pattern with this M is ``rank < N``, so patterns sharing M share one ranking."""
  if w.ndim < 2:
    raise ValueError(f"nm_mask needs a kernel with its output columns on the last axis (rank >= 2), "
                     f"got shape {w.shape}.")
  cout = w.shape[-1]
  a = jnp.abs(jax.lax.stop_gradient(w)).reshape(-1, cout)
  rows = a.shape[0]
  pad = -rows % m
  a = jnp.pad(a, ((0, pad), (0, 0)), constant_values=-1.0)  # below every |w|: padding is never kept over a weight
  g = a.reshape(-1, m, cout)  # (groups, M, cout)
  rows_of = [g[:, i] for i in range(m)]
  # One comparison per pair j < i: row j beats row i when |w_j| >= |w_i| (ties go to the lower row), else row i
  # beats row j. M (M - 1) / 2 comparisons, each counted for both rows, instead of M^2 broadcast ones.
  rank = [jnp.zeros(rows_of[0].shape, jnp.int32) for _ in range(m)]
  for i in range(m):
    for j in range(i):
      j_beats_i = (rows_of[j] >= rows_of[i]).astype(jnp.int32)
      rank[i] = rank[i] + j_beats_i
      rank[j] = rank[j] + (1 - j_beats_i)
  rank = jnp.stack(rank, axis=1)  # (groups, M, cout): how many beat each weight
  return rank.reshape(-1, cout)[:rows].reshape(w.shape)


@jax.custom_vjp
def _masked(w: jax.Array, mask: jax.Array, decay: jax.Array) -> jax.Array:
  return w * mask


def _masked_fwd(w, mask, decay):
  return w * mask, (w, mask, decay)


def _masked_bwd(res, g):
  w, mask, decay = res
  return g + decay * (1.0 - mask) * w, jnp.zeros_like(mask), jnp.zeros_like(decay)


_masked.defvjp(_masked_fwd, _masked_bwd)


def sr_ste(w: jax.Array, n: int, m: int, decay: float = SRSTE_DECAY) -> jax.Array:
  """``w * nm_mask(w, n, m)`` forward; backward dL/dW = g + decay (1 - mask) W (SR-STE, Zhou et al. 2021).

  With ``decay=0`` this is the plain straight-through estimator of the sparse weights.
  """
  return _masked(w, nm_mask(w, n, m), jnp.asarray(decay, w.dtype))


def _pattern_masks(w: jax.Array, codes: tuple[int, ...]) -> list[jax.Array]:
  """The mask of each candidate in ``codes`` (ones for ``DENSE``); patterns sharing M share one ranking."""
  masks, ranks = [], {}
  for code in codes:
    pattern = NM.from_code(code)
    if pattern is None:
      masks.append(jnp.ones_like(w))
      continue
    n, m = pattern
    if m not in ranks:
      ranks[m] = nm_rank(w, m)
    masks.append((ranks[m] < n).astype(w.dtype))
  return masks


@jax.custom_vjp
def _mix_tap(weights: jax.Array, out: jax.Array, w: jax.Array, masks: jax.Array) -> jax.Array:
  """``out`` unchanged; backward, candidate s's mixing weight gets <g, W * mask_s> (its gradient in the full mix
  sum_s weights[s] S_s(W)), so that the forward pass needs the drawn candidate's kernel only. Only ``weights``
  and ``out`` get gradients (W gets its own through ``out``)."""
  del weights, w, masks
  return out


def _mix_tap_fwd(weights, out, w, masks):
  return out, (weights, w, masks)


def _mix_tap_bwd(res, g):
  weights, w, masks = res
  grads = jnp.sum((g * w)[None] * masks, axis=tuple(range(1, masks.ndim)))
  return grads.astype(weights.dtype), g, jnp.zeros_like(w), jnp.zeros_like(masks)


_mix_tap.defvjp(_mix_tap_fwd, _mix_tap_bwd)


def mix_patterns(w: jax.Array, codes: tuple[int, ...], weights, decay: float = SRSTE_DECAY) -> jax.Array:
  """sum_s weights[s] * S_s(W): the N:M candidates ``codes`` (``hardware.nm.NM.code`` values) of one kernel, mixed by a
  choice's weights (shape (len(codes),), or a ``nas.ops.choices.OneHot`` of them); S_s is ``sr_ste`` for a pattern
  and the identity for ``DENSE``. Candidate s's SR-STE decay is scaled by the forward value of weights[s]: the
  pruned weights of a pattern are pulled to zero while the pattern is drawn (in proportion, when mixed softly).

  Soft weights compute every candidate. A OneHot (a hard Gumbel sample, an argmax) computes the drawn
  candidate's kernel only, forward; backward, W gets the drawn candidate's SR-STE gradient and every mixing
  weight its gradient of the full mix, <dL/dW_eff, S_s(W)>, from a tap: the same values and gradients as the
  full mix (tests/nas/test_sparsity.py), with one masked product in the forward pass instead of one a candidate.
  """
  one_hot = isinstance(weights, OneHot)
  mixing = weights.weights if one_hot else weights
  if len(codes) != mixing.shape[-1]:
    raise ValueError(f"mix_patterns got {len(codes)} N:M candidates but {mixing.shape[-1]} mixing weights; "
                     f"give one weight per candidate.")
  decay = jnp.asarray(decay, w.dtype)
  masks = _pattern_masks(w, codes)
  if one_hot:
    table = jnp.stack(masks)
    index = weights.cands[weights.drawn]
    w_drawn = mixing[weights.drawn]  # 1 forward (to rounding)
    out = _masked(w, table[index], decay) * jax.lax.stop_gradient(w_drawn)
    return _mix_tap(mixing, out, jax.lax.stop_gradient(w), table)
  out = None
  for i, mask in enumerate(masks):
    # A candidate's SR-STE decay counts with its weight's forward value (0 for an undrawn one, as in the
    # OneHot path): the decay belongs to the network that uses the pattern.
    sparse = NM.from_code(codes[i]) is not None
    term = (_masked(w, mask, decay * jax.lax.stop_gradient(mixing[i])) if sparse else w) * mixing[i]
    out = term if out is None else out + term
  return out
