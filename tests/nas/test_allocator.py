"""nas/allocator.py: XLA's per-step working memory is reused instead of page-faulted anew, and the caching
allocator is loaded where one is installed."""
import os
import pathlib
import subprocess
import sys

import pytest

from nas import allocator

ROOT = pathlib.Path(__file__).resolve().parents[2]

# A jitted function whose XLA temporaries are one 40 MiB buffer (over glibc's 32 MiB mmap threshold), called
# 5 times after two warm-up calls; prints the minor page faults per call and the program's temp size. (About
# 2,400 faults a call remain with either remedy: they are not the temporaries' buffer.)
_PROBE = r"""
import resource
import nas
import jax, jax.numpy as jnp, numpy as np
x = jnp.asarray(np.random.default_rng(0).standard_normal((2048, 1024)).astype(np.float32))
@jax.jit
def f(x):
  a, b, e = jnp.sort(x, axis=0), jnp.sort(x * 2.0, axis=1), jnp.sort(x + 1.0, axis=0)
  c, d = jnp.cumsum(x, axis=0), jnp.cumsum(x, axis=1)
  return (a @ b.T).sum() + (c * d * e).sum()
jax.block_until_ready(f(x)); jax.block_until_ready(f(x))
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
  jax.block_until_ready(f(x))
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0) / 5, f.lower(x).compile().memory_analysis().temp_size_in_bytes)
"""


def _faults(env: dict) -> tuple[float, int]:
  out = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  faults, temp = out.stdout.split()
  return float(faults), int(temp)


def _clean_env(**extra) -> dict:
  env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MALLOC_CONF", allocator.OPT_OUT)}
  return {**env, **extra}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc and /proc are Linux's")
def test_freed_working_memory_is_reused_not_faulted_again():
  system, temp = _faults(_clean_env(**{allocator.OPT_OUT: "system"}))
  assert temp >= 36 * 2 ** 20  # over glibc's largest mmap threshold (32 MiB): glibc maps and unmaps it per call
  pages = temp / 4096
  assert system > 0.8 * pages  # every call faults its temporaries in again (4 KiB pages)
  kept, _ = _faults(_clean_env())  # `import nas`: mallopt, no mmap for large blocks, no trimming
  assert kept < 0.5 * system, (kept, system)
  preload = allocator.find_preload()
  if preload is None:
    pytest.skip(f"no caching allocator installed ({allocator.INSTALL}); glibc's part was checked")
  cached, _ = _faults(allocator.environment(_clean_env(), preload))
  assert cached < 0.5 * system, (cached, system)


def test_environment_adds_the_preload_and_leaves_users_settings_alone():
  tc = ("libtcmalloc_minimal.so.4", None)
  je = ("libjemalloc.so.2", "dirty_decay_ms:-1,muzzy_decay_ms:-1")
  base = {"PATH": "/bin"}
  assert allocator.environment(base, tc) == {"PATH": "/bin", "LD_PRELOAD": "libtcmalloc_minimal.so.4"}
  assert allocator.environment(base, je) == {"PATH": "/bin", "LD_PRELOAD": "libjemalloc.so.2", "MALLOC_CONF": je[1]}
  assert base == {"PATH": "/bin"}  # a copy: the caller's environment is not changed
  own = {"LD_PRELOAD": "libmine.so"}
  assert allocator.environment(own, tc) == own
  assert allocator.environment({"MALLOC_CONF": "narenas:2"}, je)["MALLOC_CONF"] == "narenas:2"
  assert allocator.environment({allocator.OPT_OUT: "system"}, tc) == {allocator.OPT_OUT: "system"}


def test_opted_out_process_keeps_glibc_as_it_is():
  assert not allocator.keep_freed_memory({allocator.OPT_OUT: "System"})


@pytest.mark.skipif(allocator.find_preload() is None,
                    reason=f"no caching allocator installed; {allocator.INSTALL} (Debian/Ubuntu) provides one")
def test_reexec_restarts_the_command_once_on_the_caching_allocator():
  code = ("import sys; from nas import allocator; print('start', flush=True); allocator.reexec(); "
          "print('loaded', allocator.loaded(), sys.argv[1:])")
  out = subprocess.run([sys.executable, "-c", code, "a", "b c"], cwd=ROOT, env=_clean_env(), capture_output=True,
                       text=True, timeout=60)
  assert out.returncode == 0, out.stderr[-2000:]
  lines = out.stdout.split("\n")
  assert lines[:2] == ["start", "start"]  # the restarted command ran from its beginning, once
  name = pathlib.Path(allocator.find_preload()[0]).name.split(".")[0][3:]
  assert lines[2] == f"loaded {name} ['a', 'b c']"
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_clean_env(**{allocator.OPT_OUT: "system"}),
                       capture_output=True, text=True, timeout=60)
  assert out.stdout.split("\n")[:2] == ["start", "loaded None []"]
