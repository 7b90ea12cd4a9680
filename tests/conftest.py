"""Shared fixtures.

``strict_dtypes``: strict dtype promotion for numerics tests, so an implicit promotion in the code under test
(int -> float, float32 -> float64) is an error there, not a silent precision change (as equinox's suite does).
It is opt-in, not global: optax's own Adam bias correction (``decay ** count`` with an int32 count) does not
pass strict promotion in optax 0.2.8.
"""
import os
import tempfile

import jax
import pytest

# One persistent compilation cache for the whole session, shared with the apps the tests start (they inherit
# the variable): the many short end-to-end runs compile the same steps. Never the user's own cache.
if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
  os.environ["JAX_COMPILATION_CACHE_DIR"] = os.path.join(tempfile.gettempdir(), f"hwnas-test-jax-cache-{os.getuid()}")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs",
                  float(os.environ.get("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")))


@pytest.fixture
def strict_dtypes():
  with jax.numpy_dtype_promotion("strict"):
    yield


@pytest.fixture
def key() -> jax.Array:
  return jax.random.key(0)
