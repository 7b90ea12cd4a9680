"""Shared fixtures.

``strict_dtypes``: strict dtype promotion for numerics tests, so an implicit promotion in the code under test
(int -> float, float32 -> float64) is an error there, not a silent precision change (as equinox's suite does).
It is opt-in, not global: optax's own Adam bias correction (``decay ** count`` with an int32 count) does not
pass strict promotion in optax 0.2.8.
"""
import jax
import pytest


@pytest.fixture
def strict_dtypes():
  with jax.numpy_dtype_promotion("strict"):
    yield


@pytest.fixture
def key() -> jax.Array:
  return jax.random.key(0)
