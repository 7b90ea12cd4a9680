"""XLA settings measured to pay on CPU, put into ``XLA_FLAGS`` before JAX creates its CPU backend.

jaxlib 0.10 hands every convolution to YNNPACK (``__ynn_fusion``), which runs it on one thread: the float step
of ResNet-20 took the same time with XLA on one core as on two, where PyTorch gained 1.8x from its second thread.
Removing convolutions from the YNNPACK fusion types sends them back to XLA's Eigen convolution, which uses the
intra-op pool; YNNPACK keeps its reductions and elementwise fusions (BatchNorm's statistics are 2x slower
without them). Measured on a 2-core AMD EPYC (docs/speed.md, section 6): ResNet-20's float step 283-312 ms ->
240-247 ms, fmnist_cnn's 12.4-13.1 ms -> 10.8-10.9 ms. The summation order of the convolutions changes, so
results differ from the YNNPACK ones in the last float bits, as any change of kernel does.

``nas`` applies it when imported (``nas/__init__.py``). It is skipped when ``XLA_FLAGS`` already sets YNNPACK's
fusion types (yours win), when ``HWNAS_XLA_DEFAULTS=0``, and on a jaxlib outside the versions where the flag was
measured (an XLA flag a jaxlib does not know stops the process). It acts only if no JAX computation has run yet
in the process: XLA reads its flags once, when the first backend is created.

It pays for a job that has the cores to itself, not for jobs that fill them: with 2 jobs at once on the 2 cores
(``experiments.benchmark --workers 2``) each job's Eigen convolutions and the other job's compete for the same
cores, and the quick Fashion-MNIST protocol took 310 s against 296 s with YNNPACK's one-thread convolutions.
:func:`job_environment` is the environment a launcher gives its jobs: the default only where each job has at
least 2 cores (``experiments.benchmark`` for its workers, ``experiments.xla_env`` for a Hydra joblib sweep).
"""
from __future__ import annotations

import os

YNN_FUSION_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
# Every fusion type YNNPACK had by default but the single convolutions ('-' removes one from the default list).
CONV_TO_EIGEN = f"{YNN_FUSION_FLAG}=-LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"
# jaxlib versions where the flag exists and was measured: [first, last) as (major, minor, patch).
TESTED_JAXLIB = ((0, 10, 2), (0, 11, 0))
OPT_OUT = "HWNAS_XLA_DEFAULTS"


def _version(text: str) -> tuple[int, ...]:
  parts = []
  for piece in text.split(".")[:3]:
    digits = "".join(ch for ch in piece if ch.isdigit())
    parts.append(int(digits) if digits else 0)
  return tuple(parts + [0] * (3 - len(parts)))


def xla_defaults(environ, jaxlib_version: str) -> str | None:
  """The ``XLA_FLAGS`` value with the project's CPU default added, or None where it is not to be added."""
  flags = environ.get("XLA_FLAGS", "")
  if environ.get(OPT_OUT, "1") == "0" or YNN_FUSION_FLAG in flags:
    return None
  first, last = TESTED_JAXLIB
  if not first <= _version(jaxlib_version) < last:
    return None
  return f"{flags} {CONV_TO_EIGEN}".strip()


def apply_xla_defaults(environ=None) -> bool:
  """Adds the CPU default to ``environ`` (``os.environ``) where :func:`xla_defaults` allows; True if added."""
  environ = os.environ if environ is None else environ
  try:
    import jaxlib
    version = jaxlib.__version__
  except (ImportError, AttributeError):
    return False
  flags = xla_defaults(environ, version)
  if flags is None:
    return False
  environ["XLA_FLAGS"] = flags
  return True


def job_environment(environ, jobs_at_once: int, cores: int | None = None) -> dict:
  """A copy of ``environ`` for a job that runs beside ``jobs_at_once - 1`` others on ``cores`` cores (this
  process's, by default): the default stays where each job has at least 2 cores; elsewhere it is taken out
  (and ``HWNAS_XLA_DEFAULTS=0`` keeps the job's own import of ``nas`` from adding it again). A user's own
  YNNPACK setting is left as it is."""
  cores = cores if cores is not None else len(os.sched_getaffinity(0))
  if cores // max(1, jobs_at_once) >= 2:
    return dict(environ)
  return {**without_default(environ), OPT_OUT: "0"}


def without_default(environ) -> dict:
  """A copy of ``environ`` with the flag this module added taken out of ``XLA_FLAGS`` (a child process that
  imports ``nas`` adds it again unless told otherwise)."""
  env = dict(environ)
  env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split() if f != CONV_TO_EIGEN)
  return env
