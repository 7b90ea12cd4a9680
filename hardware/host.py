"""Which machine a calibrated cost model was fitted on, and whether this machine is that one.

A preset calibrated with ``python -m hardware.calibrate`` predicts the CPU it was timed on. XLA's CPU
backend picks its convolution kernels by the CPU's vector extensions (oneDNN uses AMX tiles or AVX-512 VNNI
where they exist, plain AVX2 loops where they do not), so on a machine without the same extensions the
fitted rates can be an order of magnitude off. Such a preset records ``fitted_on`` (the CPU model name and
the flags in :data:`KERNEL_FLAGS`); :func:`host_mismatch` compares that record with this machine.
"""
from __future__ import annotations

import platform
from typing import Dict, Mapping, Optional

# CPU flags (as /proc/cpuinfo spells them) that change which int8 kernels XLA/oneDNN run.
KERNEL_FLAGS = (
    "amx_tile", "amx_int8", "amx_bf16",  # x86 AMX tile matrix multiply
    "avx512f", "avx512bw", "avx512_vnni",  # 512-bit vectors, byte/word ops, 4-wide int8 dot products
    "avx_vnni", "avx2", "fma",  # 256-bit VNNI, 256-bit integer vectors, fused multiply-add
    "asimddp", "i8mm", "sve",  # Arm: SDOT/UDOT, int8 matrix multiply, scalable vectors
)
UNKNOWN = "unknown (measurements predate recording)"
RECALIBRATE = "python -m hardware.calibrate --measure --out conf/hardware/cpu_host.yaml --force"


def cpu_from_cpuinfo(text: str) -> Dict[str, object]:
  """CPU model name and the :data:`KERNEL_FLAGS` it has, from the text of Linux's /proc/cpuinfo.

  Returns:
    ``{"cpu": model name or None, "flags": sorted list of kernel flags, or None if no flags line}``.
  """
  model, flags = None, None
  for line in text.splitlines():
    key, _, value = line.partition(":")
    key = key.strip()
    if key == "model name" and model is None:
      model = value.strip()
    elif key in ("flags", "Features") and flags is None:  # x86 says "flags", Arm "Features"
      present = set(value.split())
      flags = sorted(f for f in KERNEL_FLAGS if f in present)
  return {"cpu": model, "flags": flags}


def current_host() -> Dict[str, object]:
  """This machine's CPU: ``{"cpu": model name, "flags": sorted kernel flags, or None where unreadable}``.

  Reads /proc/cpuinfo (Linux); elsewhere the model is ``platform.processor()`` and the flags are unknown.
  """
  try:
    with open("/proc/cpuinfo") as f:
      info = cpu_from_cpuinfo(f.read())
  except OSError:
    info = {"cpu": None, "flags": None}
  info["cpu"] = info["cpu"] or platform.processor() or platform.machine() or "unknown CPU"
  return info


def machine_record(value, model: str) -> Optional[Dict[str, object]]:
  """A preset's ``fitted_on`` as ``{"cpu": str, "flags": sorted list or None (not recorded)}``; None if absent.

  Args:
    value: None, or a mapping with ``cpu`` (model name) and ``flags`` (a list of CPU flags, or a sentence
      saying why they are unknown), and optionally ``recalibrate`` (the command that refits the preset, default
      :data:`RECALIBRATE`). OmegaConf containers and plain dicts both work.
    model: the cost model's name, for the error message.

  Raises:
    ValueError: naming ``fitted_on`` if ``value`` is not such a mapping.
  """
  if value is None:
    return None
  if not isinstance(value, Mapping) or not isinstance(value.get("cpu"), str):
    raise ValueError(f"fitted_on of {model!r} must be a mapping with `cpu: <model name>` and `flags: [...]` "
                     f"(got {value!r}); write it as `python -m hardware.calibrate` does.")
  flags = value.get("flags")
  flags = None if flags is None or isinstance(flags, str) else sorted(str(f) for f in flags)
  record = {"cpu": value["cpu"], "flags": flags}
  if value.get("recalibrate") is not None:  # the command that fits this preset again, if not hardware.calibrate
    record["recalibrate"] = str(value["recalibrate"])
  return record


def _describe(machine: Mapping) -> str:
  flags = machine["flags"]
  if flags is None:
    return f"{machine['cpu']} (CPU flags not recorded)"
  return f"{machine['cpu']} (flags: {' '.join(flags) or 'none of ' + '/'.join(KERNEL_FLAGS)})"


def _differences(fitted: Mapping, here: Mapping) -> str:
  parts = []
  if fitted["cpu"] != here["cpu"]:
    parts.append("a different CPU model")
  if fitted["flags"] is None:
    parts.append("the fitted machine's flags were not recorded")
  elif here["flags"] is None:
    parts.append("this machine's flags cannot be read")
  else:
    missing = sorted(set(fitted["flags"]) - set(here["flags"]))
    extra = sorted(set(here["flags"]) - set(fitted["flags"]))
    if missing:
      parts.append(f"this machine lacks {' '.join(missing)}")
    if extra:
      parts.append(f"this machine adds {' '.join(extra)}")
  return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def host_mismatch(cost_model) -> Optional[str]:
  """One sentence if ``cost_model`` was calibrated on another machine than this one, else None.

  A model is host-calibrated if it has a ``fitted_on`` record (``SIMDCPU`` from ``hardware.calibrate`` or
  ``nas.deploy.calibrate_ort``).
  It matches this machine when the CPU model name and the :data:`KERNEL_FLAGS` present are the same; an
  unrecorded side (flags that predate recording, or an unreadable /proc/cpuinfo) counts as a mismatch.

  Args:
    cost_model: any cost model; one without ``fitted_on`` (or with ``fitted_on: null``) returns None.

  Returns:
    None, or a sentence naming both machines, what differs, and the command that recalibrates here.
  """
  fitted = machine_record(getattr(cost_model, "fitted_on", None), getattr(cost_model, "name", "?"))
  if fitted is None:
    return None
  here = current_host()
  known = fitted["flags"] is not None and here["flags"] is not None
  if known and fitted["cpu"] == here["cpu"] and set(fitted["flags"]) == set(here["flags"]):
    return None
  return (f"hardware {getattr(cost_model, 'name', '?')!r} was calibrated on {_describe(fitted)} but this machine is "
          f"{_describe(here)}: {_differences(fitted, here)}, so its latencies may be far off (XLA and onnxruntime "
          f"pick their CPU kernels by these features); recalibrate on this machine with "
          f"`{fitted.get('recalibrate', RECALIBRATE)}` in the repository root (1-2 minutes).")
