"""Where the float step's JAX / PyTorch gap lies: each convolution of a network alone, JAX against PyTorch.

  python -m experiments.bench_conv                      # ResNet-20's convolutions, batch 64
  python -m experiments.bench_conv --model fmnist_cnn --iters 60

For every distinct convolution of the network (input size, channels in and out, kernel, stride; the counts say
how often the network has it) one training step's convolution work is timed on each side: the forward pass
and the gradients with respect to the kernel and the input (the first layer's input, the data, needs none), on
a fixed batch, in float32. JAX: ``lax.conv_general_dilated`` (NHWC, HWIO) under ``jax.jit`` of
``jax.vjp``; PyTorch: ``F.conv2d`` (NCHW) and ``torch.autograd.grad`` on one thread, and on its default
threads when asked (``--torch-threads``). The two sides are timed in alternating blocks
(``experiments.bench._block_times``); "ratio" is the median of adjacent blocks' JAX / PyTorch ratios, so that a
change of the machine's load hits both alike.

The last line weights each convolution by its count: the convolutions' share of the gap, to set against the
whole step's ratio (``python -m experiments.bench_torch``). PyTorch is optional (``pip install 'hwnas[bench]'``);
without it the benchmark says so and exits 0.
"""
from __future__ import annotations

if __name__ == "__main__":  # first, before the heavy imports: restart on a caching allocator
  from nas import allocator as _allocator  # where one is installed (nas/allocator.py)
  _allocator.reexec()

import argparse
import collections
import json
import pathlib

import numpy as np

from experiments.bench_torch import CNN_STRIDES, CNN_WIDTHS, NO_TORCH, RESNET_BLOCKS, RESNET_WIDTHS, SHAPES
from experiments.bench_torch import torch_available

Conv = collections.namedtuple("Conv", "size cin cout k stride first")


def convolutions(model: str) -> collections.Counter:
  """The network's convolutions (as in ``experiments.bench_torch``), each with how often it occurs."""
  h, _, c = SHAPES[model]
  convs = []
  if model == "resnet20":
    convs.append(Conv(h, c, RESNET_WIDTHS[0], 3, 1, True))
    cin, size = RESNET_WIDTHS[0], h
    for s, w in enumerate(RESNET_WIDTHS):
      for b in range(RESNET_BLOCKS):
        stride = 2 if s > 0 and b == 0 else 1
        convs.append(Conv(size, cin, w, 3, stride, False))
        if stride != 1 or cin != w:
          convs.append(Conv(size, cin, w, 1, stride, False))
        size //= stride
        convs.append(Conv(size, w, w, 3, 1, False))
        cin = w
  elif model == "fmnist_cnn":
    cin, size = c, h
    for i, (w, s) in enumerate(zip(CNN_WIDTHS, CNN_STRIDES)):
      convs.append(Conv(size, cin, w, 3, s, i == 0))
      cin, size = w, size // s
    convs.append(Conv(size, cin, 10, size, size, False))  # the 7x7 classifier conv
  else:
    raise ValueError(f"--model: {model!r} is not one of {sorted(SHAPES)}.")
  return collections.Counter(convs)


def _padding(conv: Conv) -> int:
  return 0 if conv.k == conv.size else conv.k // 2


def jax_fn(conv: Conv, batch: int, seed: int = 0):
  """One convolution's forward and backward (kernel and, but for the first layer, input) in JAX."""
  import jax
  import jax.numpy as jnp
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(size=(batch, conv.size, conv.size, conv.cin)).astype(np.float32))
  w = jnp.asarray(rng.normal(size=(conv.k, conv.k, conv.cin, conv.cout)).astype(np.float32))
  p = _padding(conv)

  def f(x, w):
    return jax.lax.conv_general_dilated(x, w, (conv.stride,) * 2, [(p, p)] * 2,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))
  out = jax.eval_shape(f, x, w)
  g = jnp.asarray(rng.normal(size=out.shape).astype(np.float32))

  @jax.jit
  def step(x, w, g):
    if conv.first:
      y, vjp = jax.vjp(lambda w: f(x, w), w)
      return y, vjp(g)
    y, vjp = jax.vjp(f, x, w)
    return y, vjp(g)
  return lambda: step(x, w, g)


def torch_fn(conv: Conv, batch: int, threads: int, seed: int = 0):
  """The same in PyTorch (NCHW) on ``threads`` threads."""
  import torch
  import torch.nn.functional as F
  rng = np.random.default_rng(seed)
  x = torch.from_numpy(rng.normal(size=(batch, conv.cin, conv.size, conv.size)).astype(np.float32))
  w = torch.from_numpy(rng.normal(size=(conv.cout, conv.cin, conv.k, conv.k)).astype(np.float32))
  x.requires_grad_(not conv.first)
  w.requires_grad_(True)
  p = _padding(conv)
  with torch.no_grad():
    g = torch.from_numpy(rng.normal(size=tuple(F.conv2d(x, w, stride=conv.stride, padding=p).shape))
                         .astype(np.float32))
  wrt = (w,) if conv.first else (x, w)

  def step():
    if torch.get_num_threads() != threads:
      torch.set_num_threads(threads)
    y = F.conv2d(x, w, stride=conv.stride, padding=p)
    torch.autograd.grad(y, wrt, g)
    return None
  return step


def jax_bn_fn(conv: Conv, batch: int, seed: int = 0):
  """The convolution's BatchNorm (batch statistics, as in training) and ReLU, forward and backward, in JAX, as
  ``flax.nnx.BatchNorm`` computes it in training (``use_fast_variance``: E[x^2] - E[x]^2, clipped at 0; the
  running averages updated)."""
  import jax
  import jax.numpy as jnp
  from experiments.bench_torch import BN_EPS, BN_MOMENTUM
  size = -(-conv.size // conv.stride)
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(size=(batch, size, size, conv.cout)).astype(np.float32))
  g = jnp.asarray(rng.normal(size=x.shape).astype(np.float32))
  params = {"scale": jnp.ones(conv.cout), "bias": jnp.zeros(conv.cout)}
  stats = {"mean": jnp.zeros(conv.cout), "var": jnp.ones(conv.cout)}

  def f(params, x):
    mean = x.mean((0, 1, 2))
    var = jnp.maximum(0.0, (x * x).mean((0, 1, 2)) - mean * mean)
    y = (x - mean) * jax.lax.rsqrt(var + BN_EPS) * params["scale"] + params["bias"]
    return jax.nn.relu(y), (mean, var)

  @jax.jit
  def step(params, stats, x, g):
    y, vjp, (mean, var) = jax.vjp(f, params, x, has_aux=True)
    new = {"mean": BN_MOMENTUM * stats["mean"] + (1 - BN_MOMENTUM) * mean,
           "var": BN_MOMENTUM * stats["var"] + (1 - BN_MOMENTUM) * var}
    return y, vjp(g), new
  return lambda: step(params, stats, x, g)


def torch_bn_fn(conv: Conv, batch: int, threads: int, seed: int = 0):
  """The same in PyTorch (``nn.BatchNorm2d`` in training mode, ReLU)."""
  import torch
  from experiments.bench_torch import BN_EPS, BN_MOMENTUM
  size = -(-conv.size // conv.stride)
  rng = np.random.default_rng(seed)
  x = torch.from_numpy(rng.normal(size=(batch, conv.cout, size, size)).astype(np.float32)).requires_grad_(True)
  g = torch.from_numpy(rng.normal(size=tuple(x.shape)).astype(np.float32))
  bn = torch.nn.BatchNorm2d(conv.cout, eps=BN_EPS, momentum=1.0 - BN_MOMENTUM).train()
  wrt = (x, *bn.parameters())

  def step():
    if torch.get_num_threads() != threads:
      torch.set_num_threads(threads)
    torch.autograd.grad(torch.relu(bn(x)), wrt, g)
    return None
  return step


OPS = {"conv": (jax_fn, torch_fn), "bn_relu": (jax_bn_fn, torch_bn_fn)}


def bench(model: str, batch: int, iters: int, torch_threads: int | None = None, op: str = "conv") -> list[dict]:
  import torch
  from experiments.bench import _block_times
  default_threads = torch.get_num_threads()
  make_jax, make_torch = OPS[op]
  rows = []
  for conv, count in convolutions(model).items():
    fns = [make_jax(conv, batch), make_torch(conv, batch, 1)]
    if torch_threads:
      fns.append(make_torch(conv, batch, torch_threads))
    times = _block_times(fns, iters, block=max(1, min(10, iters // 5)))
    row = {"conv": conv._asdict(), "count": count, "jax_ms": 1e3 * float(np.median(times[0])),
           "torch1_ms": 1e3 * float(np.median(times[1])), "ratio_1t": float(np.median(times[0] / times[1]))}
    if torch_threads:
      row.update(torchn_ms=1e3 * float(np.median(times[2])), ratio_nt=float(np.median(times[0] / times[2])))
    row["op"] = op
    rows.append(row)
    c = conv
    print(f"{c.size:>3}x{c.size:<3} {c.cin:>3}->{c.cout:<3} k{c.k} s{c.stride} x{count}  "
          f"jax {row['jax_ms']:8.2f} ms  torch(1t) {row['torch1_ms']:8.2f} ms  ratio {row['ratio_1t']:5.2f}"
          + (f"  torch({torch_threads}t) {row['torchn_ms']:8.2f} ms  ratio {row['ratio_nt']:5.2f}"
             if torch_threads else ""), flush=True)
  torch.set_num_threads(default_threads)
  jax_sum = sum(r["jax_ms"] * r["count"] for r in rows)
  torch_sum = sum(r["torch1_ms"] * r["count"] for r in rows)
  print(f"{model}, {op}: every convolution once per step, weighted by count: JAX {jax_sum:.1f} ms, PyTorch (1 thread) "
        f"{torch_sum:.1f} ms, ratio {jax_sum / torch_sum:.2f}", flush=True)
  return rows


def main(argv=None) -> list[dict]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="resnet20", choices=sorted(SHAPES))
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--op", nargs="+", default=["conv", "bn_relu"], choices=sorted(OPS),
                      help="conv: the convolution; bn_relu: the BatchNorm and ReLU after it")
  parser.add_argument("--iters", type=int, default=30, help="calls timed per side and convolution")
  parser.add_argument("--torch-threads", type=int, default=None, help="also time PyTorch on this many threads")
  parser.add_argument("--out", default=None, help="write the rows as JSON here")
  args = parser.parse_args(argv)
  if not torch_available():
    print(NO_TORCH, flush=True)
    return []
  rows = [r for op in args.op for r in bench(args.model, args.batch, args.iters, args.torch_threads, op)]
  if args.out:
    pathlib.Path(args.out).write_text(json.dumps(rows, indent=1))
  return rows


if __name__ == "__main__":
  main()
