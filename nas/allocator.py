"""Memory allocation on the CPU: XLA's working memory kept from step to step instead of page-faulted anew.

XLA's CPU runtime allocates each execution's temporaries as ONE buffer (36 MiB for fmnist_cnn's training step
at batch 64, 58 MiB for its search step, 86 MiB for the ViT's, 460 MiB for ResNet-20's) and frees it when the
step ends. glibc's malloc serves every block over 32 MiB with ``mmap`` and returns it with ``munmap``, so every
step page-faults its whole working memory again: 8,900 minor faults a step for fmnist_cnn's training step,
22,000 for the ViT's, 118,000 for ResNet-20's, and the kernel's time on them was 40 to 90 % of the step's wall
time (measured on a 2-core AMD EPYC, jax/jaxlib 0.10.2; docs/speed.md, section 9). PyTorch does not pay this:
its tensors are allocated one by one, each under glibc's mmap threshold.

Two remedies, applied without the user doing anything (the second where the library is installed):

* :func:`keep_freed_memory` (glibc only, applied when ``nas`` is imported): ``mallopt`` stops glibc from
  serving blocks with ``mmap`` and from trimming the heap, so freed blocks are reused. That covers every buffer
  a thread of this process allocates up to 64 MiB (a glibc thread arena's largest heap; the main thread's
  arena has no such limit). Larger blocks on other threads still go to ``mmap``.
* A caching allocator loaded before the interpreter starts (``LD_PRELOAD``): TCMalloc (gperftools;
  Debian/Ubuntu ``libtcmalloc-minimal4``), else jemalloc (``libjemalloc2``) told never to return freed pages
  (``MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1``). It keeps blocks of any size. :func:`environment` is
  the environment that loads it, for the processes a launcher starts; :func:`reexec` restarts a command-line
  entry point under it (``python -m experiments.search`` and the benchmarks call it first).

The cost is memory: the process keeps its peak heap instead of returning it between steps (it needs it again
at the next step). ``HWNAS_ALLOCATOR=system`` leaves the allocator as it is (no ``mallopt``, no preload);
``LD_PRELOAD`` set by the user is left alone.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys
from typing import Mapping

OPT_OUT = "HWNAS_ALLOCATOR"  # "system": leave the process's allocator as it is
# The libraries tried, in order: ctypes.util.find_library name, the MALLOC_CONF a library needs (or None).
PRELOADS = (("tcmalloc_minimal", None), ("tcmalloc", None),
            ("jemalloc", "dirty_decay_ms:-1,muzzy_decay_ms:-1"))
INSTALL = "apt-get install libtcmalloc-minimal4"
# <malloc.h>: mallopt parameters.
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
REEXEC_MARK = "HWNAS_ALLOCATOR_REEXEC"  # set in the restarted process: never restart twice


def opted_out(environ: Mapping[str, str]) -> bool:
  return environ.get(OPT_OUT, "").strip().lower() == "system"


def keep_freed_memory(environ: Mapping[str, str] | None = None) -> bool:
  """glibc: no ``mmap`` for large blocks and no heap trimming from now on, so that a freed block is reused
  rather than returned to the kernel and faulted in again; True if applied (Linux with glibc, not opted out)."""
  environ = os.environ if environ is None else environ
  if opted_out(environ) or not sys.platform.startswith("linux"):
    return False
  try:
    libc = ctypes.CDLL("libc.so.6")
    libc.gnu_get_libc_version  # glibc only (musl has no such tunables)
  except (OSError, AttributeError):
    return False
  return bool(libc.mallopt(_M_MMAP_MAX, 0)) & bool(libc.mallopt(_M_TRIM_THRESHOLD, 2 ** 31 - 1))


@functools.cache
def find_preload() -> tuple[str, str | None] | None:
  """(library, MALLOC_CONF or None) of the first caching allocator installed on this machine, or None; looked up
  once a process (``find_library`` runs ``ldconfig``, and ``gcc`` for a name it does not find: 10-30 ms)."""
  if not sys.platform.startswith("linux"):
    return None
  for name, conf in PRELOADS:
    path = ctypes.util.find_library(name)
    if path:
      return path, conf
  return None


def loaded() -> str | None:
  """The caching allocator this process runs on (a mapped TCMalloc or jemalloc library), or None."""
  try:
    with open("/proc/self/maps") as f:
      maps = f.read()
  except OSError:
    return None
  for name, _ in PRELOADS:
    if f"lib{name}." in maps:
      return name
  return None


def environment(environ: Mapping[str, str], preload: tuple[str, str | None] | None = None) -> dict:
  """A copy of ``environ`` that starts a process on the caching allocator (``preload``: default
  :func:`find_preload`); unchanged where none is installed, where ``LD_PRELOAD`` is already set or where the
  user opted out."""
  env = dict(environ)
  preload = find_preload() if preload is None else preload
  if preload is None or opted_out(env) or env.get("LD_PRELOAD"):
    return env
  env["LD_PRELOAD"] = preload[0]
  if preload[1] and not env.get("MALLOC_CONF"):
    env["MALLOC_CONF"] = preload[1]
  return env


def reexec(argv: list[str] | None = None) -> None:
  """Restarts this process's command line (``sys.orig_argv``) on the caching allocator where one is installed
  and not yet loaded; returns where there is nothing to do. Call it first in a ``__main__`` block, before any
  work: ``os.execve`` replaces the process (same PID, same arguments and environment plus ``LD_PRELOAD``)."""
  if os.environ.get(REEXEC_MARK) or not sys.executable or loaded():
    return
  env = environment(os.environ)
  if env.get("LD_PRELOAD") == os.environ.get("LD_PRELOAD"):
    return
  env[REEXEC_MARK] = "1"
  argv = list(sys.orig_argv if argv is None else argv)
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable] + argv[1:], env)


def describe() -> str:
  """One line on the allocator this process runs on, for logs and benchmark reports."""
  name = loaded()
  if name:
    return f"{name} (caching allocator)"
  if opted_out(os.environ):
    return f"system malloc ({OPT_OUT}=system)"
  preload = find_preload()
  why = (f"{preload[0]} is installed, but this process was not started on it" if preload else
         f"no caching allocator installed: {INSTALL} makes the larger models' steps up to 2x faster")
  return f"glibc malloc without mmap for large blocks ({why})"
