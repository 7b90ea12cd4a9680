"""Shared fixtures. Strict dtype promotion: an implicit float32 -> float64 (or int -> float) promotion in the
code under test is an error here, not a silent slowdown or precision change (as equinox's test suite does)."""
import jax
import pytest

jax.config.update("jax_numpy_dtype_promotion", "strict")


@pytest.fixture
def key() -> jax.Array:
  return jax.random.key(0)
