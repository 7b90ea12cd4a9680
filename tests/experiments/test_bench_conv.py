"""experiments.bench_conv: the convolutions it lists are the networks' own, its JAX sides compute the operations
they name (against NumPy), and without PyTorch it says so in one sentence. No timing is asserted."""
import sys

import numpy as np

from experiments import bench_conv, bench_torch


def test_the_networks_convolutions():
  resnet = bench_conv.convolutions("resnet20")
  # ResNet-20 (He et al. 2016, CIFAR): a stem conv, 9 blocks of two 3x3 convs, two 1x1 projection shortcuts.
  assert sum(resnet.values()) == 21
  assert sum(n for c, n in resnet.items() if c.k == 1) == 2
  assert resnet[bench_conv.Conv(32, 16, 16, 3, 1, False)] == 6
  assert resnet[bench_conv.Conv(8, 64, 64, 3, 1, False)] == 5
  cnn = bench_conv.convolutions("fmnist_cnn")
  assert sum(cnn.values()) == 5 and bench_conv.Conv(7, 64, 10, 7, 7, False) in cnn


def _numpy_conv(x, w, stride, pad):  # NHWC, HWIO, direct loops
  x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  k = w.shape[0]
  out = (x.shape[1] - k) // stride + 1
  y = np.zeros((x.shape[0], out, out, w.shape[3]))
  for i in range(out):
    for j in range(out):
      patch = x[:, i * stride:i * stride + k, j * stride:j * stride + k, :]
      y[:, i, j, :] = np.einsum("nhwc,hwco->no", patch, w)
  return y


def test_the_jax_sides_compute_a_convolution_and_a_batchnorm():
  conv = bench_conv.Conv(5, 2, 3, 3, 2, False)
  y, (gx, gw) = bench_conv.jax_fn(conv, batch=2)()
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 5, 5, 2)).astype(np.float32)
  w = rng.normal(size=(3, 3, 2, 3)).astype(np.float32)
  np.testing.assert_allclose(np.asarray(y), _numpy_conv(x, w, 2, 1), rtol=1e-4, atol=1e-4)
  assert gx.shape == x.shape and gw.shape == w.shape
  y, (gp, gx), new = bench_conv.jax_bn_fn(conv, batch=2)()
  x = np.random.default_rng(0).normal(size=(2, 3, 3, 3))
  mean, var = x.mean((0, 1, 2)), x.var((0, 1, 2))
  ref = np.maximum(0.0, (x - mean) / np.sqrt(var + bench_torch.BN_EPS))
  np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(np.asarray(new["mean"]), 0.1 * mean, rtol=1e-4, atol=1e-6)


def test_without_torch_it_says_so(monkeypatch, capsys):
  monkeypatch.setitem(sys.modules, "torch", None)
  assert bench_conv.main(["--iters", "1"]) == []
  assert capsys.readouterr().out.count(bench_torch.NO_TORCH) == 1
