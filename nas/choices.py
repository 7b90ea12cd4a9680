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

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx


class ArchParam(nnx.Variable):
  """An architecture parameter: trained by its own optimiser, never by the weights' one."""


def gumbel_softmax(key: jax.Array, logits: jax.Array, tau, hard: bool = False) -> jax.Array:
  """A relaxed one-hot sample over the last axis: ``softmax((logits + G) / tau)``, G ~ Gumbel(0, 1).

  With ``hard=True`` the forward value is the one-hot argmax of the relaxed sample and the gradient is the
  relaxed one's (straight-through).
  """
  g = jax.random.gumbel(key, logits.shape, dtype=logits.dtype)
  y = jax.nn.softmax((logits + g) / tau, axis=-1)
  if not hard:
    return y
  one_hot = jax.nn.one_hot(jnp.argmax(y, axis=-1), logits.shape[-1], dtype=y.dtype)
  return y + jax.lax.stop_gradient(one_hot - y)


class CategoricalChoice(nnx.Module):
  """A choice among ``values`` with one trainable logit each (all zero: uniform at the start).

  Args:
    values: the candidates (bit-widths or channel counts), in ascending order.
    hard: straight-through one-hot samples instead of relaxed ones.
  """

  def __init__(self, values: Sequence[int], hard: bool = False):
    self.values = tuple(int(v) for v in values)
    self.hard = hard
    self.logits = ArchParam(jnp.zeros((len(self.values),), jnp.float32))

  @property
  def fixed(self) -> bool:
    return len(self.values) == 1

  def probs(self) -> jax.Array:
    """The categorical distribution the derived choice and the expected cost are read from."""
    return jax.nn.softmax(self.logits[...])

  def mixing_weights(self, mode: str, key: jax.Array | None = None, tau=1.0) -> jax.Array:
    """Weights of the candidates in the forward pass.

    Args:
      mode: ``"sample"`` (Gumbel-softmax, needs ``key``), ``"expected"`` (softmax), ``"argmax"`` (one-hot).
    """
    n = len(self.values)
    if self.fixed:
      return jnp.ones((1,), jnp.float32)
    if mode == "sample":
      return gumbel_softmax(key, self.logits[...], tau, self.hard)
    if mode == "expected":
      return self.probs()
    if mode == "argmax":
      return jax.nn.one_hot(jnp.argmax(self.logits[...]), n)
    raise ValueError(f"mode={mode!r}; use 'sample', 'expected' or 'argmax'.")

  def derive(self) -> int:
    """The chosen candidate: the most probable one."""
    return self.values[int(jnp.argmax(self.logits[...]))]
