"""Fit the CPU roofline's constants to layers timed on this host, and write them as a preset YAML.

The fitted constants are those of :class:`hardware.cpu.SIMDCPU`: the effective MAC rate and the fixed
overhead per layer kind, the memory bandwidth, the rate of the generic few-channel convolution path, and
(chosen from a few candidates by fit loss) the SIMD channel multiples and the few-channel threshold. They are fitted by soft-L1 least squares on log latency on a seeded 75% of the
measured layers; the other 25% are held out and the written YAML reports the fit on them. Energy cannot be
measured here: the preset's energy constants are labelled assumptions (Horowitz 2014 45 nm proxies).

The preset records the machine it was fitted on (``fitted_on``: CPU model and kernel-relevant flags), so
:func:`hardware.host.host_mismatch` can warn when it is used on another one.

Usage (measure, then fit; 1-2 minutes on 2 cores; --force replaces the shipped measurements and preset):
  python -m hardware.calibrate --measure --out conf/hardware/cpu_host.yaml --force
Fit existing measurements only:
  python -m hardware.calibrate --measurements hardware/data/cpu_host_measurements.json --out conf/hardware/cpu_host.yaml --force
A missing or corrupt measurements file, an ``--out`` that cannot be written, that is the measurements file, or
that exists (without --force; likewise the measurements file --measure writes), stops it before any fitting with
one sentence on stderr and exit status 2.

References:
  Williams, Waterman and Patterson, "Roofline", CACM 2009.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from typing import Dict, Sequence, Tuple

import numpy as np
from scipy import optimize, stats

from hardware import host as host_info
from hardware.base import LayerSpec
from hardware.cpu import KINDS, SIMDCPU

PARAMS = ("rate_conv", "rate_dwconv", "rate_dense", "rate_fallback", "mem_bw",
          "overhead_conv", "overhead_dwconv", "overhead_dense")
# (cin_multiple, cout_multiple) candidates: scalar, VNNI 4-wide dot, 16 int32 lanes, an AMX int8 tile row.
MULTIPLES = ((1, 1), (4, 16), (16, 16), (64, 16), (64, 1))
# fallback_channels candidates: convolutions with max(cin, cout) at or below it use a generic loop.
FALLBACKS = (0, 8, 12, 16, 24, 32)
_F_SCALE = 0.2  # log residuals beyond ~20% count linearly, not quadratically (timing outliers)
DEFAULT_MEASUREMENTS = os.path.join(os.path.dirname(__file__), "data", "cpu_host_measurements.json")


def split(n: int, holdout_fraction: float = 0.25, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
  """Seeded split of ``n`` records into (fit, held-out) index arrays; shared with ``hardware.validate``."""
  order = np.random.default_rng(seed).permutation(n)
  n_out = int(round(n * holdout_fraction))
  return np.sort(order[n_out:]), np.sort(order[:n_out])


def model_from_params(p: Dict[str, float], name: str = "fit", bits: int = 8, **energy) -> SIMDCPU:
  """A SIMDCPU with the fitted timing constants (and the given energy constants, zero by default)."""
  energy = {"e_mac_j": 0.0, "e_byte_j": 0.0, "static_power_w": 0.0, **energy}
  fallback = int(p.get("fallback_channels", 0))
  return SIMDCPU(name=name, mac_rate={k: p[f"rate_{k}"] for k in KINDS}, mem_bw=p["mem_bw"],
                 layer_overhead_s={k: p[f"overhead_{k}"] for k in KINDS}, kernel_bits=bits,
                 cin_multiple=int(p.get("cin_multiple", 1)), cout_multiple=int(p.get("cout_multiple", 1)),
                 fallback_channels=fallback, fallback_mac_rate=p["rate_fallback"] if fallback else None, **energy)


def predict(p: Dict[str, float], layers: Sequence[LayerSpec], bits: int = 8) -> np.ndarray:
  """Predicted latency of each layer at ``bits`` weights and activations (the measured precision)."""
  model = model_from_params(p, bits=bits)
  return np.asarray([float(model.cost(l, bits, bits, l.cin, l.cout).latency_s) for l in layers])


def _terms(layers: Sequence[LayerSpec], bits: int, multiples: Tuple[int, int], fallback: int):
  """Per layer: MACs (padded, or raw on the generic path), bytes, and the index of its rate and overhead."""
  ones = dict.fromkeys(PARAMS, 1.0)
  model = model_from_params({**ones, "cin_multiple": multiples[0], "cout_multiple": multiples[1]}, bits=bits)
  macs, traffic = (np.asarray(v, dtype=np.float64) for v in zip(*(model.terms(l, bits, bits, l.cin, l.cout)
                                                                     for l in layers)))
  kind = np.asarray([KINDS.index(l.kind) for l in layers])
  generic = np.asarray([l.kind == "conv" and max(l.cin, l.cout) <= fallback for l in layers])
  macs = np.where(generic, [float(l.macs()) for l in layers], macs)
  return macs, traffic, np.where(generic, 3, kind), kind


def fit_constants(layers: Sequence[LayerSpec], seconds: Sequence[float], multiples: Tuple[int, int] = (1, 1),
                  fallback: int = 0, bits: int = 8, seed: int = 0) -> Tuple[Dict[str, float], float]:
  """Fit rates, bandwidth and overheads at fixed channel multiples and fallback; returns (params, loss).

  The max() of the roofline makes the loss piecewise smooth with several local minima (which layers are
  compute- or memory-bound), so a seeded differential evolution over wide log-bounds finds the basin and
  ``least_squares`` polishes it. Overheads are bounded below by 1 ns: a kind whose overhead the data
  cannot see gets a tiny, printable value.
  """
  t = np.asarray(seconds, dtype=np.float64)
  if len(layers) != len(t) or len(t) < len(PARAMS):
    raise ValueError(f"calibrate needs one time per layer and at least {len(PARAMS)} layers; "
                     f"got {len(layers)} layers and {len(t)} times.")
  macs, traffic, rate_idx, kind = _terms(layers, bits, multiples, fallback)

  def residuals(log_p):
    p = np.exp(log_p)
    return np.log(p[5 + kind] + np.maximum(macs / p[rate_idx], traffic / p[4])) - np.log(t)

  def soft_l1(log_p):
    return np.sum(np.sqrt(1.0 + (residuals(log_p) / _F_SCALE) ** 2) - 1.0)

  # MAC/s 1e6..1e14, bytes/s 1e8..1e13, overhead 1 ns..1 ms: wider than any CPU.
  lower = np.log([1e6] * 4 + [1e8] + [1e-9] * 3)
  upper = np.log([1e14] * 4 + [1e13] + [1e-3] * 3)
  coarse = optimize.differential_evolution(soft_l1, list(zip(lower, upper)), seed=seed, tol=1e-8,
                                           maxiter=2000, polish=False)
  res = optimize.least_squares(residuals, coarse.x, bounds=(lower, upper), loss="soft_l1", f_scale=_F_SCALE)
  params = dict(zip(PARAMS, np.exp(res.x).tolist()))
  used = bool(np.any(rate_idx == 3))
  params.update(cin_multiple=multiples[0], cout_multiple=multiples[1], fallback_channels=fallback if used else 0)
  return params, float(res.cost)


def fit(layers: Sequence[LayerSpec], seconds: Sequence[float], bits: int = 8,
        multiples: Sequence[Tuple[int, int]] = MULTIPLES, fallbacks: Sequence[int] = FALLBACKS) -> Dict[str, float]:
  """Choose the fallback threshold (at multiples (1, 1)), then the channel multiples, by fit loss; fit the rest."""
  fb = min((fit_constants(layers, seconds, (1, 1), f, bits) for f in fallbacks), key=lambda pc: pc[1])[0]
  fits = [fit_constants(layers, seconds, m, fb["fallback_channels"], bits) for m in multiples]
  return min(fits, key=lambda pc: pc[1])[0]


def fit_quality(measured: np.ndarray, predicted: np.ndarray) -> Dict[str, float]:
  """Spearman rank correlation and median relative error |pred - meas| / meas."""
  measured, predicted = np.asarray(measured), np.asarray(predicted)
  rel = np.abs(predicted - measured) / measured
  return {"spearman": float(stats.spearmanr(predicted, measured)[0]), "median_rel_err": float(np.median(rel)),
          "n": int(len(measured))}


def _fmt(x: float) -> str:
  return f"{x:.4e}"  # always has a dot, so YAML reads it as a float


def _bound(overhead: float) -> str:
  return " (at the fit's 1 ns lower bound: no overhead visible)" if overhead < 1.01e-9 else ""


def _load(value) -> str:
  return "unknown" if value is None else f"{value:.2f}"


def _fitted_flags(host: Dict) -> str:
  """The measured machine's kernel flags as a YAML value; a sentence where they were not recorded."""
  if "cpu_flags" not in host:
    return json.dumps(host_info.UNKNOWN)
  if host["cpu_flags"] is None:
    return json.dumps("unknown (not readable on the measured machine)")
  return json.dumps(sorted(host["cpu_flags"]))


def preset_yaml(p: Dict[str, float], host: Dict, fit_q: Dict, held_q: Dict, measurements_path: str) -> str:
  """The preset's text; every constant's comment says where it came from."""
  return f"""# THIS HOST's CPU as seen by XLA, calibrated: written by `python -m hardware.calibrate --measure --out ...`.
# Measured on: {host.get('cpu')} ({host.get('cores')} cores), {host.get('platform')}, jax {host.get('jax')},
#   {host.get('date')}, 1-min load average {_load(host.get('load_avg_1min_before'))} before / {_load(host.get('load_avg_1min'))} after
#   (other processes on a shared machine scatter the timings); {host.get('dtype')}.
# Measurements: {measurements_path} (per layer: median of repeats of an in-program loop; see measure.py).
# Fit: soft-L1 least squares on log latency, {fit_q['n']} layers. Held out {held_q['n']} layers:
#   Spearman {held_q['spearman']:.3f}, median relative error {held_q['median_rel_err']:.3f}
#   (fit set: Spearman {fit_q['spearman']:.3f}, median relative error {fit_q['median_rel_err']:.3f}).
# Timing constants are fitted to int8 layers; sub-byte choices are predicted by the model (unpack to int8,
# packed memory traffic), not measured: XLA has no sub-byte kernels.
_target_: hardware.cpu.SIMDCPU
name: cpu_host
mac_rate:
  conv: {_fmt(p['rate_conv'])}      # fitted effective int8 MAC/s of XLA convolutions on this host
  dwconv: {_fmt(p['rate_dwconv'])}    # fitted; XLA's CPU depthwise path is far from SIMD peak
  dense: {_fmt(p['rate_dense'])}     # fitted; batch-1 GEMV
mem_bw: {_fmt(p['mem_bw'])}          # fitted effective bytes/s (data mostly cache-resident when a layer is timed in a loop)
layer_overhead_s:               # fitted fixed time per layer inside a compiled program
  conv: {_fmt(p['overhead_conv'])}      # fitted{_bound(p['overhead_conv'])}
  dwconv: {_fmt(p['overhead_dwconv'])}    # fitted{_bound(p['overhead_dwconv'])}
  dense: {_fmt(p['overhead_dense'])}     # fitted{_bound(p['overhead_dense'])}
cin_multiple: {int(p['cin_multiple'])}                 # chosen by fit loss among (cin, cout) multiples {list(MULTIPLES)}
cout_multiple: {int(p['cout_multiple'])}                # (64 int8 = one AMX tile row; 4 = one VNNI dot product)
fallback_channels: {int(p['fallback_channels'])}            # chosen by fit loss among {list(FALLBACKS)}: convs with max(cin, cout) <= it
fallback_mac_rate: {_fmt(p['rate_fallback']) if p['fallback_channels'] else 'null'}  # fitted MAC/s of XLA's generic (non-library) convolution loop
kernel_bits: 8                  # timed kernels are int8 x int8 -> int32 (measure.py)
e_mac_j: 0.3e-12                # ASSUMPTION, 45 nm proxy: Horowitz ISSCC 2014 int8 mult 0.2 pJ + int32 add 0.1 pJ
e_byte_j: 162.5e-12             # ASSUMPTION (U: unverified figure), 45 nm proxy: Horowitz ISSCC 2014 DRAM read 1.3 nJ per 64 b, /8 B
static_power_w: 12.5            # ASSUMPTION (U): 2 cores' share of a 56-core 350 W Xeon, 350/56 x 2; energy is not measured here
float_ops_per_s: null           # NOT MEASURED (softmax / layernorm were not timed): null = mac_rate.conv / 4, fp32 lanes 4x int8 (ASSUMPTION U)
nm_weights: dense               # XLA's CPU dot / convolution take dense operands (no N:M sparse format, U): an N:M layer costs as dense
fitted_on:                      # the machine timed; hardware.host.host_mismatch warns on any other (hardware/README.md)
  cpu: {json.dumps(str(host.get('cpu')))}  # `host.cpu` of {measurements_path} (/proc/cpuinfo model name)
  flags: {_fitted_flags(host)}  # its CPU flags among hardware.host.KERNEL_FLAGS (those that change XLA's kernels)
"""


class InputError(Exception):
  """A command-line input calibrate cannot use; the message is one sentence naming the flag, the file and the fix."""


def check_writable(path: str, flag: str, example: str = "cpu_host.yaml") -> None:
  """Raise InputError unless ``path`` can be written (checked before measuring or fitting, not after)."""
  if os.path.isdir(path):
    raise InputError(f"{flag} {path} is a folder; give a file path, e.g. {os.path.join(path, example)}.")
  folder = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(folder):
    raise InputError(f"{flag} {path} cannot be written: its folder {folder} does not exist; create it or choose "
                     f"another path.")
  try:
    with tempfile.TemporaryFile(dir=folder):  # a real write: os.access says yes to root even on read-only mounts
      pass
  except OSError as e:
    raise InputError(f"{flag} {path} cannot be written: its folder {folder} is not writable ({e.strerror}); "
                     f"choose a folder you can write to.") from None
  if os.path.exists(path) and not os.access(path, os.W_OK):
    raise InputError(f"{flag} {path} exists and is read-only; make it writable or choose another path.")


def check_outputs(out: str, measurements: str, measure: bool, force: bool, out_example: str = "cpu_host.yaml",
                  measurements_example: str = "cpu_host_measurements.json") -> None:
  """Raise InputError unless the command's outputs can be written without destroying a file it did not mean to:
  ``out`` (and with ``measure`` the ``measurements`` file it writes) writable, ``out`` not the measurements file,
  and an existing output replaced only with ``force``."""
  check_writable(out, "--out", example=out_example)
  if measure:
    check_writable(measurements, "--measurements", example=measurements_example)
  if os.path.realpath(out) == os.path.realpath(measurements):
    raise InputError(f"--out {out} is the measurements file, which writing the preset would overwrite; choose "
                     f"another --out, e.g. {os.path.join(os.path.dirname(out) or '.', out_example)}.")
  outputs = (("--out", out), ("--measurements", measurements)) if measure else (("--out", out),)
  for flag, path in outputs:
    if os.path.exists(path) and not force:
      raise InputError(f"{flag} {path} exists and would be overwritten; pass --force to replace it or choose "
                       f"another path.")


def _min_records() -> int:
  """Fewest records whose seeded split leaves one per fitted constant and two held-out layers."""
  return next(n for n in range(len(PARAMS), 10 * len(PARAMS))
              if len(split(n)[0]) >= len(PARAMS) and len(split(n)[1]) >= 2)


def layer_of_record(r: Dict) -> LayerSpec:
  """A measurement record as the layer it timed; ``head_cols`` (a ``matmul``'s columns per head) where recorded."""
  return LayerSpec(r["kind"], r["cin"], r["cout"], r["kernel"], r["stride"], r["in_h"], r["in_w"], r.get("name", ""),
                   int(r.get("head_cols", 0)))


def read_measurements(path: str, redo: str | None = None) -> Dict:
  """The measurements JSON of ``hardware.measure`` (or ``nas.deploy.calibrate_ort``), checked so that fitting
  cannot fail on it; ``redo``: the fix the messages end with (default: measure again with this module).

  Raises:
    InputError: naming ``--measurements`` and ``path``: missing, unreadable, not JSON, no machine record,
      a record that is not a layer with a positive time, or too few records.
  """
  redo = redo or (f"measure again with `python -m hardware.calibrate --measure --measurements {path} "
                  f"--out conf/hardware/cpu_host.yaml`")
  if not os.path.isfile(path):
    raise InputError(f"--measurements {path} does not exist; pass a measurements file this command wrote with "
                     f"--measure, or {redo}.")
  try:
    with open(path) as f:
      data = json.load(f)
  except json.JSONDecodeError as e:
    raise InputError(f"--measurements {path} is not valid JSON ({e.msg} at line {e.lineno}); {redo}.") from None
  except (OSError, UnicodeDecodeError) as e:
    raise InputError(f"--measurements {path} cannot be read ({type(e).__name__}: {e}); {redo}.") from None
  records = data.get("records") if isinstance(data, dict) else None
  if not isinstance(records, list) or not isinstance(data.get("host"), dict) or "cpu" not in data["host"]:
    raise InputError(f"--measurements {path} lacks a \"records\" list or a \"host\" record with \"cpu\"; {redo}.")
  for i, r in enumerate(records):
    try:
      layer_of_record(r)
      seconds = float(r["median_s"])
    except (KeyError, TypeError, ValueError, AttributeError) as e:
      raise InputError(f"--measurements {path}: record {i} is not a measured layer ({type(e).__name__}: {e}); "
                       f"{redo}.") from None
    if not (math.isfinite(seconds) and seconds > 0):
      raise InputError(f"--measurements {path}: record {i} has median_s={r['median_s']}, not a positive time; "
                       f"{redo}.")
  if len(records) < _min_records():
    raise InputError(f"--measurements {path} has {len(records)} records and the fit needs at least "
                     f"{_min_records()}; {redo} (its default grid times far more layers).")
  return data


def _run(args) -> None:
  check_outputs(args.out, args.measurements, args.measure, args.force)
  if args.measure:
    from hardware import measure  # imports jax only when needed
    layers = measure.default_grid() if args.grid == "default" else measure.tiny_grid()
    data = measure.measure(layers, verbose=True)
    with open(args.measurements, "w") as f:
      json.dump(data, f, indent=1)
  data = read_measurements(args.measurements)
  from hardware.measure import records_to_layers
  layers = records_to_layers(data["records"])
  t = np.asarray([r["median_s"] for r in data["records"]])
  fit_idx, held_idx = split(len(layers))
  p = fit([layers[i] for i in fit_idx], t[fit_idx])
  pred = predict(p, layers)
  fit_q, held_q = fit_quality(t[fit_idx], pred[fit_idx]), fit_quality(t[held_idx], pred[held_idx])
  write_preset(args.out, args.measurements, lambda shown: preset_yaml(p, data["host"], fit_q, held_q, shown),
               fit_q, held_q)


def write_preset(out: str, measurements: str, render, fit_q: dict, held_q: dict) -> None:
  """Writes ``render(measurements path as the YAML names it)`` to ``out`` and prints the fit quality."""
  try:
    shown = os.path.relpath(measurements, os.getcwd())
  except ValueError:
    shown = measurements
  with open(out, "w") as f:
    f.write(render(shown))
  print(f"fit set {fit_q}\nheld out {held_q}\nwrote {out}")


def main(argv=None) -> None:
  """Command line; an unusable input exits with status 2 and one sentence on stderr, before any fitting."""
  parser = argparse.ArgumentParser(prog="python -m hardware.calibrate", description=__doc__.splitlines()[0])
  parser.add_argument("--measure", action="store_true", help="time the default grid on this host first")
  parser.add_argument("--measurements", default=DEFAULT_MEASUREMENTS,
                      help="measurement JSON to read (with --measure: to write)")
  parser.add_argument("--grid", choices=("default", "tiny"), default="default")
  parser.add_argument("--out", required=True, help="preset YAML to write, e.g. conf/hardware/cpu_host.yaml")
  parser.add_argument("--force", action="store_true",
                      help="replace an existing --out (and, with --measure, an existing --measurements file)")
  args = parser.parse_args(argv)
  try:
    _run(args)
  except InputError as e:
    print(f"hardware.calibrate: {e}", file=sys.stderr)
    raise SystemExit(2) from None


if __name__ == "__main__":
  main()
