"""Searchable convolution, depthwise convolution and dense layers.

One weight tensor at the widest width is shared by every candidate: each candidate bit-width quantises it
(LSQ, one step per candidate), the quantised tensors are mixed with the choice's weights, and ONE
convolution runs (EdMIPS's weight sharing; by bilinearity this equals mixing the convolutions). Input
activations are mixed the same way. Width candidates are masks over output channels, applied by the model
after the nonlinearity (FBNetV2 channel masking).

References:
  Cai & Vasconcelos, EdMIPS, CVPR 2020. Wan et al., FBNetV2, CVPR 2020. Esser et al., LSQ, ICLR 2020.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hardware.base import LayerSpec
from nas import quant
from nas.choices import Pair


class QuantStep(nnx.Param):
  """A learned LSQ step size (a Param, trained with the weights, but excluded from weight decay)."""


def _pair_quantize(x: jax.Array, steps: jax.Array, bits: tuple[int, ...], signed: bool, n_elements: int,
                   pair: Pair) -> jax.Array:
  """w_lo Q_lo(x) + w_hi Q_hi(x) with the two candidates picked inside the jitted step (SDQ).

  ``steps`` is (n,) per tensor or (n, C) per channel; the pair's indices are scalars or (C,) per channel.
  """
  b = jnp.asarray(bits, jnp.float32)
  qn = 2.0 ** (b - 1) if signed else jnp.zeros_like(b)
  qp = 2.0 ** (b - 1) - 1 if signed else 2.0 ** b - 1
  out = 0.0
  for idx, w in ((pair.lo, pair.w_lo), (pair.hi, pair.w_hi)):
    if steps.ndim == 1 or idx.ndim == 0:
      step = steps[idx]
    else:
      step = jnp.take_along_axis(steps, idx[None, :], axis=0)[0]
    grad_scale = 1.0 / jnp.sqrt(n_elements * qp[idx])
    out = out + w * quant.lsq_quantize_range(x, step, qn[idx], qp[idx], grad_scale)
  return out


def mix(candidates: list[jax.Array], weights: jax.Array) -> jax.Array:
  """Sum of candidates weighted by ``weights[..., i]`` (shape (n,) or (channels, n): per-channel mixing)."""
  if len(candidates) == 1:
    return candidates[0] * weights[..., 0]
  out = candidates[0] * weights[..., 0]
  for i in range(1, len(candidates)):
    out = out + candidates[i] * weights[..., i]
  return out


class WeightQuantizer(nnx.Module):
  """Signed per-output-channel LSQ of a weight tensor (output channels on the last axis), per candidate.

  ``bits=None`` leaves the weights in floating point.
  """

  def __init__(self, bits: tuple[int, ...] | None, kernel: jax.Array):
    self.bits = bits
    if bits is None:
      return
    cout = kernel.shape[-1]
    self.fan = int(np.prod(kernel.shape[:-1]))  # weights one step quantises
    self.step = QuantStep(jnp.ones((len(bits), cout), jnp.float32))
    self.init_from(kernel)

  def init_from(self, kernel: jax.Array) -> None:
    """LSQ initial steps from the weights: 2 mean|w| / sqrt(Q_P) per channel and candidate."""
    if self.bits is None:
      return
    axes = tuple(range(kernel.ndim - 1))
    self.step[...] = jnp.stack([quant.lsq_init_step(kernel, b, True, axes) for b in self.bits])

  def __call__(self, kernel: jax.Array, weights: jax.Array) -> jax.Array:
    if self.bits is None:
      return kernel
    if isinstance(weights, Pair):
      return _pair_quantize(kernel, self.step[...], self.bits, True, self.fan, weights)
    qs = [quant.lsq_quantize(kernel, self.step[i], b, True, quant.lsq_grad_scale(self.fan, b, True))
          for i, b in enumerate(self.bits)]
    return mix(qs, weights)


class ActQuantizer(nnx.Module):
  """Per-tensor LSQ of activations, per candidate; unsigned after ReLU, signed otherwise.

  The steps start from the first batch seen in calibration mode (``calibrate(model, x)``).
  """

  def __init__(self, bits: tuple[int, ...] | None, signed: bool):
    self.bits = bits
    self.signed = signed
    self.calibrating = False
    if bits is not None:
      self.step = QuantStep(jnp.ones((len(bits),), jnp.float32))

  def __call__(self, x: jax.Array, weights: jax.Array) -> jax.Array:
    if self.bits is None:
      return x
    if self.calibrating:
      self.step[...] = jnp.stack([quant.lsq_init_step(x, b, self.signed) for b in self.bits])
    n_features = int(np.prod(x.shape[1:]))  # per example: LSQ's N_F must not depend on the batch size
    if isinstance(weights, Pair):
      return _pair_quantize(x, self.step[...], self.bits, self.signed, n_features, weights)
    qs = [quant.lsq_quantize(x, self.step[i], b, self.signed, quant.lsq_grad_scale(n_features, b, self.signed))
          for i, b in enumerate(self.bits)]
    return mix(qs, weights)


@dataclasses.dataclass(frozen=True)
class ChoiceKeys:
  """Names of the choices a layer's cost depends on; ``None`` means fixed at the spec's value."""
  w_bits: str
  a_bits: str
  cin: str | None
  cout: str | None


class QLayer(nnx.Module):
  """A quantised conv / depthwise conv / dense layer over choice mixing weights.

  Args:
    spec: the layer at its widest channel counts (what the hardware sees).
    keys: the names of its weight-bit, activation-bit, input-width and output-width choices.
    w_bits: weight bit-width candidates (None: float).
    a_bits: input-activation bit-width candidates (None: float).
    a_signed: whether the input activations are signed (False after ReLU).
    rngs: NNX random streams for the weight init.
  """

  def __init__(self, spec: LayerSpec, keys: ChoiceKeys, w_bits, a_bits, a_signed: bool, *, rngs: nnx.Rngs):
    self.spec = spec
    self.keys = keys
    if spec.kind == "dense":
      shape, fan_in = (spec.cin, spec.cout), spec.cin
    else:
      cin_group = 1 if spec.kind == "dwconv" else spec.cin
      shape, fan_in = (spec.kernel, spec.kernel, cin_group, spec.cout), spec.kernel ** 2 * cin_group
    # He et al. 2015 init, drawn with NumPy from a seed taken off the NNX key: an eager jax.random draw
    # compiles once per kernel shape (about a second each on a small CPU, 15 s for a ResNet-20).
    key = rngs.params()
    scale = np.float32((2.0 / fan_in) ** 0.5)
    if isinstance(key, jax.core.Tracer):  # abstract construction (nnx.eval_shape): no values needed
      init = jax.random.normal(key, shape, jnp.float32) * scale
    else:
      seed = np.asarray(jax.random.key_data(key)).astype(np.uint64).ravel()
      init = jnp.asarray(np.random.default_rng(seed.tolist()).standard_normal(shape).astype(np.float32) * scale)
    self.kernel = nnx.Param(init)
    self.bias = nnx.Param(jnp.zeros((spec.cout,), jnp.float32)) if spec.kind == "dense" else None
    self.wq = WeightQuantizer(w_bits, init)
    self.aq = ActQuantizer(a_bits, a_signed)

  def __call__(self, x: jax.Array, arch: Mapping[str, jax.Array]) -> jax.Array:
    x = self.aq(x, arch[self.keys.a_bits])
    w = self.wq(self.kernel[...], arch[self.keys.w_bits])
    if self.spec.kind == "dense":
      return x @ w + self.bias[...]
    groups = self.spec.cin if self.spec.kind == "dwconv" else 1
    return jax.lax.conv_general_dilated(
        x, w, (self.spec.stride,) * 2, "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=groups)


def width_mask(values: tuple[int, ...], weights: jax.Array, max_channels: int) -> jax.Array:
  """FBNetV2 mask sum_k g_k 1[c < values_k] over the output channels, shape (max_channels,)."""
  masks = (np.arange(max_channels)[None, :] < np.asarray(values)[:, None]).astype(np.float32)
  return weights @ jnp.asarray(masks)


def set_calibrating(model: nnx.Module, on: bool) -> None:
  for _, m in model.iter_modules():
    if isinstance(m, ActQuantizer):
      m.calibrating = on
