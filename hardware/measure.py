"""Time real layers compiled by XLA on this machine, for calibrating and checking the CPU model.

Each layer runs as ``jax.jit`` of ``lax.conv_general_dilated`` (conv, depthwise via ``feature_group_count``)
or ``lax.dot`` (dense) on int8 inputs and weights with int32 accumulation (``preferred_element_type``),
then a requantisation back to int8 (shift and clip), as an integer inference layer would. XLA's CPU backend
runs all three in int8; :func:`check_int8` verifies the result against float32 before timing.
Batch 1, NHWC, 'SAME' padding. Time per layer = the layer run n times in a loop inside one XLA program
(n doubled until a run takes ~2 ms, so Python dispatch is amortised away, as it is for a layer inside a
compiled network), median over repeats after warm-up, the smaller of two passes over the whole grid.

Usage:
  python -m hardware.measure --out /tmp/cpu_measurements.json [--grid tiny]
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import time
from typing import Dict, List, Tuple

import numpy as np

from hardware import host
from hardware.base import LayerSpec

DTYPE_NOTE = "int8 x int8 -> int32 accumulate (preferred_element_type), requantised to int8; XLA CPU"
_REQUANT_SHIFT = 6  # arbitrary: keeps the requantisation a real op without changing what is timed


def default_grid(seed: int = 0, per_kind: Tuple[int, int, int] = (200, 60, 60),
                 few_channel_convs: int = 40) -> List[LayerSpec]:
  """A seeded sample of layer shapes, spread evenly over log-MACs within each kind (1-2 minutes on 2 cores).

  Candidates come from the product of the channel counts, kernels, strides and map sizes that supernets use
  (non-powers of two included, since width search produces them); within each kind the sample takes the
  same number of layers from each of 10 log-MAC bins, so small and large layers are equally represented.
  A kernel wider than its map is left out: XLA's CPU convolution then takes a path up to 250x slower than
  its MACs and bytes predict (k=5 on a 4x4 map: 75 ms for 0.4 MMAC), which no roofline can say.
  """
  rng = np.random.default_rng(seed)
  channels = [8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512]
  candidates = {"conv": [], "dwconv": [], "dense": []}
  for cin in channels:
    for h in (4, 7, 8, 14, 16, 28, 32, 56):
      for stride in (1, 2):
        for kernel in (1, 3, 5):
          if kernel <= h:
            if kernel > 1:  # a 1x1 depthwise "convolution" is a per-channel scale, not a layer networks use
              candidates["dwconv"].append(LayerSpec("dwconv", cin, cin, kernel, stride, h, h))
            candidates["conv"].extend(LayerSpec("conv", cin, cout, kernel, stride, h, h) for cout in channels)
    candidates["dense"].extend(LayerSpec("dense", cin, cout) for cout in channels + [1000, 1024, 2048])
  # MAC limits keep each timed call under ~15 ms (XLA's depthwise path runs ~0.3 GMAC/s here).
  limits = {"conv": (1e4, 3e8), "dwconv": (1e3, 4e6), "dense": (1e2, 3e6)}
  layers: List[LayerSpec] = []
  for kind, count in zip(("conv", "dwconv", "dense"), per_kind):
    pool = [l for l in candidates[kind] if limits[kind][0] <= float(l.macs()) <= limits[kind][1]]
    log_macs = np.log(np.asarray([float(l.macs()) for l in pool]))
    bins = np.minimum((10 * (log_macs - log_macs.min()) / np.ptp(log_macs)).astype(int), 9)
    chosen = []
    for b in range(10):
      members = np.flatnonzero(bins == b)
      take = min(len(members), -(-count // 10))
      chosen.extend(rng.choice(members, size=take, replace=False).tolist())
    layers.extend(pool[i] for i in sorted(chosen)[:count])
  # Few-channel convolutions (stems, narrow width choices) take a different kernel path in XLA (see
  # cpu.SIMDCPU's fallback_channels); a stratum of them lets calibration find where that path starts.
  few = [8, 12, 16, 24, 32]
  pool = [LayerSpec("conv", cin, cout, k, s, h, h) for cin in [3] + few for cout in few for k in (1, 3, 5)
          for s in (1, 2) for h in (8, 16, 32) if k <= h]
  pool = [l for l in pool if l not in layers]
  layers.extend(pool[i] for i in sorted(rng.choice(len(pool), size=few_channel_convs, replace=False)))
  return [dataclasses.replace(l, name=f"m{i}") for i, l in enumerate(layers)]


def tiny_grid() -> List[LayerSpec]:
  """Three small layers, one per kind: a seconds-long run for tests."""
  return [LayerSpec("conv", 8, 16, 3, 1, 8, 8, name="t0"), LayerSpec("dwconv", 16, 16, 3, 2, 8, 8, name="t1"),
          LayerSpec("dense", 32, 10, name="t2")]


def _layer_fn(layer: LayerSpec):
  """The jitted int8 layer and random int8 arguments for it."""
  import jax
  import jax.numpy as jnp
  from jax import lax

  rng = np.random.default_rng(0)

  def requant(acc):
    return jnp.clip(acc >> _REQUANT_SHIFT, -128, 127).astype(jnp.int8)

  if layer.kind == "dense":
    x = rng.integers(-8, 8, (1, layer.cin), dtype=np.int8)
    w = rng.integers(-8, 8, (layer.cin, layer.cout), dtype=np.int8)
    f = lambda x, w: requant(lax.dot(x, w, preferred_element_type=jnp.int32))
  elif layer.kind in ("conv", "dwconv"):
    groups = layer.groups
    x = rng.integers(-8, 8, (1, layer.in_h, layer.in_w, layer.cin), dtype=np.int8)
    w = rng.integers(-8, 8, (layer.kernel, layer.kernel, layer.cin // groups, layer.cout), dtype=np.int8)
    f = lambda x, w: requant(lax.conv_general_dilated(
        x, w, (layer.stride, layer.stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=groups, preferred_element_type=jnp.int32))
  else:
    raise ValueError(f"measure: layer {layer.name!r} has kind={layer.kind!r}; only conv, dwconv, dense are timed.")
  return jax.jit(f), (jnp.asarray(x), jnp.asarray(w))


def check_int8(layer: LayerSpec) -> bool:
  """True if XLA's int8 result equals the float32 computation of the same layer (exact for small integers)."""
  import jax.numpy as jnp
  from jax import lax
  fn, (x, w) = _layer_fn(layer)
  got = np.asarray(fn(x, w))
  xf, wf = x.astype(jnp.float32), w.astype(jnp.float32)
  if layer.kind == "dense":
    ref = np.asarray(lax.dot(xf, wf))
  else:
    ref = np.asarray(lax.conv_general_dilated(
        xf, wf, (layer.stride, layer.stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=layer.groups))
  ref = np.clip(np.floor(ref / 2 ** _REQUANT_SHIFT), -128, 127).astype(np.int8)
  return bool(np.array_equal(got, ref))


def _looped(fn, out_shape):
  """``run(n, x, w)``: the layer applied ``n`` times inside one XLA program (n is traced: one compile).

  The whole output is loop-carried and returned, so XLA must compute all of it every iteration (carrying
  one element would let it slice the elementwise requantisation, or a whole 1x1 depthwise layer, down to
  one value). The previous output's first element is written into the input (an in-place one-element
  update), so the layer cannot be hoisted out of the loop. Timing inside one program leaves out Python
  dispatch, which a layer of a compiled network does not pay.
  """
  import jax
  import jax.numpy as jnp
  from jax import lax

  def run(n, x, w):
    def body(_, carry):
      x, out = carry
      first = jnp.reshape(out, (-1,))[0]
      x = lax.dynamic_update_slice(x, jnp.reshape(first, (1,) * x.ndim), (0,) * x.ndim)
      return x, fn(x, w)
    return lax.fori_loop(0, n, body, (x, jnp.zeros(out_shape, jnp.int8)))[1]
  return jax.jit(run)


class _Prepared:
  """A compiled looped layer with its arguments and the loop count that makes one run ~``target_s``."""

  def __init__(self, layer: LayerSpec, target_s: float):
    self.layer = layer
    fn, self.args = _layer_fn(layer)
    self.run = _looped(fn, fn.eval_shape(*self.args).shape)
    t0 = time.perf_counter()
    self.run(1, *self.args).block_until_ready()  # compiles
    self.compile_s = time.perf_counter() - t0
    self.target_s = target_s
    self.find_loop_count()

  def find_loop_count(self, start: int = 1) -> None:
    """Double n until a run takes target_s; the best of two runs decides, so one hiccup cannot stop it early."""
    self.n = start
    while self.n < 4096 and min(self._once(self.n) for _ in range(2)) < self.target_s:
      self.n *= 2

  def _once(self, n: int) -> float:
    t0 = time.perf_counter()
    self.run(n, *self.args).block_until_ready()
    return time.perf_counter() - t0

  def median(self, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
      self._once(self.n)
    return float(np.median([self._once(self.n) / self.n for _ in range(repeats)]))


def host_description() -> Dict:
  """What was measured on: CPU model and kernel-relevant flags, cores, platform, jax and backend, dtype, UTC date."""
  import jax
  cpu = host.current_host()  # flags None where /proc/cpuinfo cannot be read
  try:
    load = os.getloadavg()[0]  # other work on the machine inflates and scatters the timings
  except OSError:
    load = None
  return {"cpu": cpu["cpu"], "cpu_flags": cpu["flags"], "cores": os.cpu_count(), "load_avg_1min": load,
          "platform": platform.platform(), "jax": jax.__version__,
          "backend": jax.default_backend(), "dtype": DTYPE_NOTE,
          "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def measure(layers: List[LayerSpec], repeats: int = 9, warmup: int = 1, passes: int = 2, target_s: float = 2e-3,
            verbose: bool = False) -> Dict:
  """Time every layer; returns a JSON-ready dict ``{"host": ..., "records": [...]}``.

  Seconds per layer application = the smallest, over ``passes`` passes through all layers (the second in
  reverse order), of the median of ``repeats`` timed runs; a pass-long disturbance on a shared machine
  then needs to hit both passes to bias a layer.
  """
  t0 = time.perf_counter()
  load_before = host_description()["load_avg_1min"]
  if layers and not check_int8(layers[0]):
    raise RuntimeError("XLA's int8 convolution disagrees with float32 on this host; measurements would be wrong.")
  prepared = [_Prepared(layer, target_s) for layer in layers]
  medians = [[] for _ in layers]
  for p in range(passes):
    order = range(len(layers)) if p % 2 == 0 else reversed(range(len(layers)))
    for i in order:
      medians[i].append(prepared[i].median(repeats, warmup))
  for i, prep in enumerate(prepared):
    # A disturbance while n was chosen leaves n too small (dispatch then dominates): choose again, re-time.
    if prep.n < 4096 and min(medians[i]) * prep.n < target_s / 8:
      prep.find_loop_count(start=prep.n)
      medians[i] = [prep.median(repeats, warmup) for _ in range(passes)]
  records = []
  for layer, prep, meds in zip(layers, prepared, medians):
    records.append({"kind": layer.kind, "cin": layer.cin, "cout": layer.cout, "kernel": layer.kernel,
                    "stride": layer.stride, "in_h": layer.in_h, "in_w": layer.in_w, "name": layer.name,
                    "macs": float(layer.macs()), "median_s": min(meds), "pass_medians_s": meds,
                    "repeats": repeats, "loop_count": prep.n, "compile_s": prep.compile_s})
    if verbose:
      print(f"{layer.name}: {layer.kind} {layer.cin}->{layer.cout} k{layer.kernel} s{layer.stride} "
            f"{layer.in_h}x{layer.in_w}: {min(meds) * 1e6:.2f} us (loop of {prep.n})", flush=True)
  host = host_description()
  host["load_avg_1min_before"] = load_before
  host["runtime_s"] = round(time.perf_counter() - t0, 1)
  return {"host": host, "records": records}


def records_to_layers(records: List[Dict]) -> List[LayerSpec]:
  return [LayerSpec(r["kind"], r["cin"], r["cout"], r["kernel"], r["stride"], r["in_h"], r["in_w"], r.get("name", ""))
          for r in records]


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True, help="JSON file to write the measurements to")
  parser.add_argument("--grid", choices=("default", "tiny"), default="default")
  parser.add_argument("--repeats", type=int, default=9)
  parser.add_argument("--passes", type=int, default=2)
  args = parser.parse_args(argv)
  layers = default_grid() if args.grid == "default" else tiny_grid()
  result = measure(layers, repeats=args.repeats, passes=args.passes, verbose=True)
  with open(args.out, "w") as f:
    json.dump(result, f, indent=1)
  print(f"wrote {len(result['records'])} measurements to {args.out} in {result['host']['runtime_s']} s")


if __name__ == "__main__":
  main()
