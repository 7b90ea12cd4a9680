"""What every quantiser shares: the bit-width checks, the integer range, and the straight-through pieces.

The quantisers themselves (LSQ, PACT, ...) are in ``nas.ops.quantizers``, one module each; LSQ's functions are
still importable from here under their old names.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

MIN_BITS, MAX_BITS = 2, 8
STEP_FLOOR = 1e-8  # keeps the step positive (LSQ's step can otherwise cross zero; ZouJiu1/LSQplus#12)


def check_bits(bits, field: str) -> tuple[int, ...]:
  """Validates a candidate list of bit-widths and returns it as a tuple of ints.

  Raises:
    ValueError: naming ``field`` if the list is empty or holds a value outside 2..8.
  """
  values = tuple(bits) if bits is not None else ()
  if not values:
    raise ValueError(f"{field} is empty; give at least one bit-width in {MIN_BITS}..{MAX_BITS}, e.g. [2, 4, 8].")
  for b in values:
    if isinstance(b, bool) or int(b) != b or not MIN_BITS <= int(b) <= MAX_BITS:
      raise ValueError(f"{field} holds {b!r}; bit-widths must be integers in {MIN_BITS}..{MAX_BITS}.")
  if len(set(values)) != len(values):
    raise ValueError(f"{field}={list(values)} repeats a bit-width; list each candidate once.")
  return tuple(sorted(int(b) for b in values))


def qrange(bits: int, signed: bool) -> tuple[int, int]:
  """(Q_N, Q_P): the integer range is [-Q_N, Q_P]. Signed: 2^(b-1), 2^(b-1)-1; unsigned: 0, 2^b-1."""
  if signed:
    return 2 ** (bits - 1), 2 ** (bits - 1) - 1
  return 0, 2 ** bits - 1


def round_ste(v: jax.Array) -> jax.Array:
  """round() forward, identity backward. Rounds half to even (as numpy and torch do)."""
  return v + jax.lax.stop_gradient(jnp.round(v) - v)


def scale_grad(x: jax.Array, scale) -> jax.Array:
  """x forward (exactly); gradient multiplied by ``scale`` backward."""
  x_const = jax.lax.stop_gradient(x)
  return x_const + (x - x_const) * scale


def floor_ste(x: jax.Array, floor: float) -> jax.Array:
  """max(x, floor) forward, identity backward: a step pushed below the floor still gets a gradient back up."""
  x_const = jax.lax.stop_gradient(x)
  return jnp.maximum(x_const, floor) + (x - x_const)  # exact forward (x + (floor - x) can round to 0)


_LSQ_NAMES = ("lsq_quantize", "lsq_quantize_range", "lsq_value", "lsq_grad_scale", "lsq_init_step")


def __getattr__(name: str):
  """LSQ's functions, which moved to ``nas.ops.quantizers.lsq``, under their old names here."""
  if name in _LSQ_NAMES:
    from nas.ops.quantizers import lsq
    return getattr(lsq, name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
