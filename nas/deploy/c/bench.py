"""MAC per cycle of one int8 3x3 convolution on the CV32E40P RTL, plain RV32IMC against PULP SIMD.

``conv_benchmark()`` builds an integer network whose first layer is the convolution (default 32 -> 32
channels, 16x16 map, stride 1, "SAME", 8-bit weights and activations, random integers), followed by a small
flattening output layer, writes its C inference (``write_c``), runs it on the Verilator model of CV32E40P
(``simulate``) and returns the convolution stage's mcycle count and MAC/cycle, after checking the logits
against ``integer.run``. ``python -m nas.deploy.c.bench`` prints both variants.
"""
from __future__ import annotations

import json
import pathlib
import tempfile

import numpy as np

from nas.deploy import integer
from nas.deploy.integer import IntegerNetwork, IntLayer, Requant


def conv_network(h: int = 16, cin: int = 32, cout: int = 32, kernel: int = 3, seed: int = 0) -> IntegerNetwork:
  """A W8A8 ``kernel`` x ``kernel`` convolution h x h x cin -> h x h x cout, then a 2-class output layer
  reading the whole map (a convolution with kernel and stride h)."""
  rng = np.random.default_rng(seed)
  w = rng.integers(-128, 128, (kernel, kernel, cin, cout)).astype(np.int8)
  ones = np.ones(cout)
  m, k = integer.dyadic(np.full(cout, 1.0 / 2 ** 12))
  conv = IntLayer("conv", "conv", w, np.full(cout, 8), ones.astype(np.float32), kernel, 1, (h, h), 8, 1.0, False,
                  ones, np.zeros(cout), 0, ones, rng.integers(-4096, 4096, cout).astype(np.int32),
                  Requant(m, k, 0, 255), 8, 1.0)
  wh = rng.integers(-128, 128, (h, h, cout, 2)).astype(np.int8)
  head = IntLayer("head", "conv", wh, np.full(2, 8), np.ones(2, np.float32), h, h, (h, h), 8, 1.0, False,
                  np.ones(2), np.zeros(2), 0, np.ones(2), np.zeros(2, np.int32), None, None, None)
  return IntegerNetwork("conv_bench", (h, h, cin), (conv, head), None, 1, "flatten")


def conv_benchmark(pulp: bool, images: int = 2, out_dir=None, **kwargs) -> dict:
  """Cycles of the convolution of ``conv_network(**kwargs)`` on CV32E40P (``pulp``: SIMD build on the
  COREV_PULP=1 core), with the logits checked bit-exact against ``integer.run``."""
  from nas.deploy import c as cb
  inet = conv_network(**kwargs)
  conv = inet.layers[0]
  h, w = conv.in_hw
  kh, _, cin, cout = conv.weight.shape
  x = np.random.default_rng(1).integers(0, 256, (images, h, w, cin)).astype(np.float32)
  out = pathlib.Path(out_dir or tempfile.mkdtemp(prefix="hwnas-conv-bench-"))
  cb.write_c(inet, out, images=x)
  r = cb.simulate(out, pulp=pulp)
  acc, _ = integer.run(inet, x)
  if not np.array_equal(r["logits"], acc):
    raise AssertionError("the simulated logits differ from the integer reference.")
  macs = h * w * cout * kh * kh * cin
  cycles = float(np.mean(r["cycles"][:, 0]))
  return {"core": r["core"], "conv": f"{kh}x{kh} {cin}->{cout} on {h}x{w}, W8A8", "macs": macs,
          "cycles": cycles, "mac_per_cycle": macs / cycles, "bit_exact_images": images}


if __name__ == "__main__":
  print(json.dumps([conv_benchmark(False), conv_benchmark(True)], indent=2))
