"""Searchable convolution, depthwise convolution, dense and token-wise linear layers.

One weight tensor at the widest width is shared by every candidate: each candidate bit-width quantises it
(with the layer's quantiser, ``nas.ops.quantizers``: LSQ by default; one learned step per candidate), the
quantised tensors are mixed with the choice's weights, and ONE convolution runs (EdMIPS's weight sharing; by
bilinearity this equals mixing the convolutions). Input activations are mixed the same way. Width candidates
are masks over output channels, applied by the model after the nonlinearity (FBNetV2 channel masking).

When the weights are one-hot forward (hard Gumbel samples, SDQ draws, argmax: a ``OneHot``), only the drawn
candidate is quantised; a custom VJP gives the weights the gradients of the full mix with one pass over the
tensor per other candidate. Values and gradients equal the full mix (tests/nas/test_onehot.py).

Sub-group weight bits (AQ-BERT): a per-channel bit choice with one row per GROUP of ``group_size`` output
columns (one group per attention head, say) is expanded to the columns it drives before the quantiser sees
it, so the per-channel machinery (and the OneHot path) serves groups unchanged. A weight candidate of 0 bits
(``PRUNED``) quantises to zeros and has no LSQ step: choosing it prunes the group (its bias too).

N:M sparsity: a layer may carry an N:M choice (``nas.ops.sparsity``); its candidates' SR-STE kernels are mixed by
the choice's weights before quantisation.

References:
  Cai & Vasconcelos, EdMIPS, CVPR 2020. Wan et al., FBNetV2, CVPR 2020. Esser et al., LSQ, ICLR 2020.
  Zhao et al., "Automatic Mixed-Precision Quantization Search of BERT" (AQ-BERT), IJCAI 2021.
  Zhou et al., "Learning N:M Fine-grained Structured Sparse Neural Networks From Scratch", ICLR 2021.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hardware.base import LayerSpec
from nas.ops import quant
from nas.ops import quantizers
from nas.ops import sparsity
from nas.ops.choices import OneHot

PRUNED = 0  # the weight bit-width candidate that prunes: no weights, zero output, no LSQ step


class QuantStep(nnx.Param):
  """A quantiser's learned parameter (LSQ's step, PACT's alpha): a Param, trained with the weights in the log
  domain, excluded from the weights' decay."""


@functools.cache
def _weights_tap_for(step_fn):
  """``_weights_tap`` for a quantiser whose step is ``step_fn(param, qn, qp)`` (one custom VJP per quantiser,
  built once: the quantiser is static, resolved at trace time)."""
  tap = jax.custom_vjp(_weights_tap)
  tap.defvjp(_weights_tap_fwd, functools.partial(_weights_tap_bwd, step_fn))
  return tap


def _weights_tap(weights: jax.Array, out: jax.Array, x: jax.Array, steps: jax.Array, qn: jax.Array,
                 qp: jax.Array, place: jax.Array) -> jax.Array:
  """``out`` unchanged; backward, the mixing weights get their gradients without Q_j(x) in the forward pass.

  In the full mix sum_j w_j Q_j(x), weight j's gradient is a_j = <g, Q_j(x)>. Weights that sum to one
  (softmax, Bernoulli) give every parameter the same gradient from a_j - c as from a_j, for any c; with c the
  drawn candidate's a_d the tap needs the k - 1 sums <g, Q_j(x) - Q_d(x)> of the other candidates, with
  ``out`` standing for Q_d(x) (it is Q_d(x) times the drawn weight, 1 to rounding; the convolution keeps it
  for its own backward pass anyway). Rows 1.. of ``steps``, ``qn`` and ``qp`` are the other candidates (row
  0, the drawn one, is not read); ``place[i - 1]`` one-hot encodes where row i's candidate sits in
  ``weights``' last axis. Per-channel weights (C, k) sum over all axes of x but the last. Only ``weights``
  and ``out`` get gradients. ``steps`` are the quantiser's parameters; ``_weights_tap_for`` binds the
  quantiser's step function (every quantiser computes Q_j(x) = round(clip(x / s_j)) s_j).
  """
  del weights, x, steps, qn, qp, place
  return out


def _weights_tap_fwd(weights, out, x, steps, qn, qp, place):
  return out, (weights, out, x, steps, qn, qp, place)


def _weights_tap_bwd(step_fn, res, g):
  weights, q_drawn, x, steps, qn, qp, place = res

  def others(a):  # rows 1.. of a (k, ...) table, on a leading axis that broadcasts against x[None]
    a = a[1:]
    return a.reshape(a.shape[:1] + (1,) * (x.ndim + 1 - a.ndim) + a.shape[1:])

  # All other candidates in one reduction over a broadcast candidate axis, so that x and g are read once.
  # One reduction per candidate cost 1.5x as much on a CPU, and stacking the candidates' tensors (a
  # concatenate) made XLA write them out. Per-channel weights keep x's last axis.
  axes = tuple(range(1, x.ndim)) if weights.ndim == 2 else tuple(range(1, x.ndim + 1))
  # <g, Q_j(x)> = s_j <g, round(clip(x / s_j))>: the step multiplies after the reduction, and <g, Q_d(x)> is
  # reduced once for all j (12 % less time than reducing g (Q_j(x) - Q_d(x)) per candidate, measured on CPU).
  s = step_fn(others(steps), others(qn), others(qp))
  r = jnp.round(jnp.clip(x[None] / s, -others(qn), others(qp)))
  a_drawn = jnp.sum(g * q_drawn, axis=tuple(a - 1 for a in axes))
  if all(s.shape[a] == 1 for a in axes):  # one step per reduced slice: factor it out
    sums = jnp.sum(g[None] * r, axis=axes)
    diffs = sums * jnp.reshape(s, sums.shape) - a_drawn
  else:  # per-channel steps under a per-tensor choice
    diffs = jnp.sum(g[None] * r * s, axis=axes) - a_drawn
  # The barrier keeps XLA from sinking the placement below into the reductions (k times the work).
  diffs = jax.lax.optimization_barrier(diffs)
  grads = jnp.sum(place * diffs[..., None], axis=0)
  zeros = jax.tree.map(jnp.zeros_like, (x, steps, qn, qp, place))
  return (grads, g) + zeros


def _qtables(bits: tuple[int, ...], signed: bool, n_elements: int, q=None):
  """(Q_N, Q_P, gradient scale of quantiser ``q``, default LSQ) per candidate as float32 arrays; a ``PRUNED``
  candidate gets (0, 0, 0): it clips everything to 0, and its (unused) step gets no gradient."""
  # float32 arithmetic throughout, as the quantisers have always computed these (a float64 detour changes the
  # last bit of the gradient scale, and with it every trajectory).
  b = np.asarray(bits, np.float32)
  live = b > 0
  bl = np.where(live, b, np.float32(2.0))
  qp = np.where(live, 2.0 ** (bl - 1) - 1 if signed else 2.0 ** bl - 1, np.float32(0.0)).astype(np.float32)
  qn = (np.where(live, 2.0 ** (bl - 1), np.float32(0.0)) if signed else np.zeros_like(b)).astype(np.float32)
  q = quantizers.get(quantizers.DEFAULT) if q is None else q
  gs = np.where(live, q.grad_scale(n_elements, qp), np.float32(0.0))
  return tuple(jnp.asarray(t.astype(np.float32)) for t in (qn, qp, gs))


def _onehot_quantize(x: jax.Array, steps: jax.Array, bits: tuple[int, ...], signed: bool, n_elements: int,
                     w: OneHot, q=None) -> jax.Array:
  """sum_j w_j Q_j(x) for mixing weights that are one-hot forward: the drawn candidate's quantisation only.

  Values equal the full mix exactly, and so do the gradients of x, of the steps and of every parameter the
  weights are a function of: x and the drawn step get theirs through the drawn quantisation (the other
  weights are zero forward), the weights get theirs from the tap. ``steps`` is (n,) per tensor or (n, C) per
  output channel; ``w``'s shapes are OneHot's. A ``PRUNED`` candidate quantises to zeros (its step row is
  read but has no effect). ``q``: the quantiser (default LSQ).
  """
  q = quantizers.get(quantizers.DEFAULT) if q is None else q
  qn_all, qp_all, gs_all = _qtables(bits, signed, n_elements, q)
  per_channel = w.weights.ndim == 2
  k = w.weights.shape[-1]

  def at(table, idx):  # table[idx]: a scalar or a (C,) row, per tensor; one entry per channel, per channel
    if table.ndim == 1 or not per_channel:
      return table[idx]
    return jnp.take_along_axis(table, idx[None, :], axis=0)[0]

  # Positions in the candidate axis: the drawn one first, then the others.
  positions = [(w.drawn + i) % k for i in range(k)]
  index = [jnp.take_along_axis(w.cands, p[..., None], axis=-1)[..., 0] for p in positions]
  w_drawn = jnp.take_along_axis(w.weights, w.drawn[..., None], axis=-1)[..., 0]  # 1 forward
  # w_drawn is 1 (to rounding); a PRUNED draw multiplies by 0, so that x gets no gradient either (clip(0, 0, 0)
  # would pass some). Both are folded into the step's multiply: no extra pass over the tensor.
  scale = jax.lax.stop_gradient(w_drawn)
  if PRUNED in bits:
    scale = scale * (qp_all[index[0]] > 0)
  out = q.quantize(x, at(steps, index[0]), qn_all[index[0]], qp_all[index[0]], gs_all[index[0]],
                   out_scale=scale)
  tap_steps = jax.lax.stop_gradient(jnp.stack([at(steps, i) for i in index]))
  place = jnp.stack([jax.nn.one_hot(p, k, dtype=w.weights.dtype) for p in positions[1:]])
  return _weights_tap_for(q.step)(w.weights, out, jax.lax.stop_gradient(x), tap_steps,
                                  jnp.stack([qn_all[i] for i in index]), jnp.stack([qp_all[i] for i in index]), place)


def mix(candidates: list[jax.Array], weights: jax.Array) -> jax.Array:
  """Sum of candidates weighted by ``weights[..., i]`` (shape (n,) or (channels, n): per-channel mixing)."""
  if len(candidates) == 1:
    return candidates[0] * weights[..., 0]
  out = candidates[0] * weights[..., 0]
  for i in range(1, len(candidates)):
    out = out + candidates[i] * weights[..., i]
  return out


class WeightQuantizer(nnx.Module):
  """Signed per-output-channel quantisation of a weight tensor (output channels on the last axis), per
  candidate, by the quantiser named ``quantizer`` (None: ``quantizers.current()``, LSQ by default).

  ``bits=None`` leaves the weights in floating point. A ``PRUNED`` (0) candidate gives zeros and has no step:
  ``step`` holds one row per non-zero candidate.
  """

  def __init__(self, bits: tuple[int, ...] | None, kernel: jax.Array, quantizer: str | None = None):
    self.bits = bits
    self.quantizer = quantizers.get(quantizers.current() if quantizer is None else quantizer).name
    if bits is None:
      return
    cout = kernel.shape[-1]
    self.fan = int(np.prod(kernel.shape[:-1]))  # weights one step quantises
    self._live = tuple(b for b in bits if b != PRUNED)
    self.step = QuantStep(jnp.ones((len(self._live), cout), jnp.float32)) if self._live else None
    self.init_from(kernel)

  def init_from(self, kernel: jax.Array) -> None:
    """The quantiser's initial parameters from the weights, per channel and candidate (LSQ: 2 mean|w| /
    sqrt(Q_P))."""
    if self.bits is None or not self._live:
      return
    axes = tuple(range(kernel.ndim - 1))
    q = quantizers.get(self.quantizer)
    self.step[...] = jnp.stack([q.init(kernel, b, True, axes, "weight") for b in self._live])

  def _steps(self, cout: int) -> jax.Array:
    """One step row per candidate, ``PRUNED`` ones a constant 1 (never used: that candidate clips to 0)."""
    if PRUNED not in self.bits:  # no candidate prunes: the steps as they are (no extra op in the step)
      return self.step[...]
    rows, live = [], 0
    for b in self.bits:
      if b == PRUNED:
        rows.append(jnp.ones((cout,), jnp.float32))
      else:
        rows.append(self.step[live])
        live += 1
    return jnp.stack(rows)

  def __call__(self, kernel: jax.Array, weights: jax.Array) -> jax.Array:
    if self.bits is None:
      return kernel
    steps = self._steps(kernel.shape[-1])
    q = quantizers.get(self.quantizer)
    if isinstance(weights, OneHot):
      return _onehot_quantize(kernel, steps, self.bits, True, self.fan, weights, q)
    qs = [jnp.zeros_like(kernel) if b == PRUNED else _quantize_bits(q, kernel, steps[i], b, True, self.fan)
          for i, b in enumerate(self.bits)]
    return mix(qs, weights)


def _quantize_bits(q, x: jax.Array, param: jax.Array, bits: int, signed: bool, n_elements: int) -> jax.Array:
  """Quantiser ``q`` at one static bit-width (the range and the gradient scale are Python numbers)."""
  qn, qp = quant.qrange(bits, signed)
  return q.quantize(x, param, qn, qp, q.grad_scale(n_elements, qp))


class ActQuantizer(nnx.Module):
  """Per-tensor quantisation of activations, per candidate, by the quantiser named ``quantizer`` (None:
  ``quantizers.current()``, LSQ by default); unsigned after ReLU, signed otherwise.

  The steps start from the first batch seen in calibration mode (``calibrate(model, x)``).
  """

  def __init__(self, bits: tuple[int, ...] | None, signed: bool, quantizer: str | None = None):
    self.bits = bits
    self.signed = signed
    self.quantizer = quantizers.get(quantizers.current() if quantizer is None else quantizer).name
    self.calibrating = False
    if bits is not None:
      self.step = QuantStep(jnp.ones((len(bits),), jnp.float32))

  def __call__(self, x: jax.Array, weights: jax.Array) -> jax.Array:
    if self.bits is None:
      return x
    q = quantizers.get(self.quantizer)
    if self.calibrating:
      self.step[...] = jnp.stack([q.init(x, b, self.signed, None, "activation") for b in self.bits])
    n_features = int(np.prod(x.shape[1:]))  # per example: LSQ's N_F must not depend on the batch size
    if isinstance(weights, OneHot):
      return _onehot_quantize(x, self.step[...], self.bits, self.signed, n_features, weights, q)
    qs = [_quantize_bits(q, x, self.step[i], b, self.signed, n_features) for i, b in enumerate(self.bits)]
    return mix(qs, weights)


@dataclasses.dataclass(frozen=True)
class ChoiceKeys:
  """Names of the choices a layer's cost depends on; ``None`` means fixed at the spec's value (``nm``: dense)."""
  w_bits: str
  a_bits: str
  cin: str | None
  cout: str | None
  nm: str | None = None  # the N:M sparsity choice (values: ``nas.ops.sparsity.nm_code``)


def expand_groups(weights, group_size: int, cout: int):
  """Per-group mixing weights, (G, k) or a OneHot of those shapes, as per-column ones (cout, k): column c
  takes group ``c // group_size``'s row (AQ-BERT sub-groups). Per-tensor weights (k,) pass unchanged.

  The expansion is a gather, so each group's weights get the sum of its columns' gradients.
  """
  def rep(a):
    return jnp.repeat(a, group_size, axis=0, total_repeat_length=a.shape[0] * group_size)[:cout]
  if isinstance(weights, OneHot):
    return weights if weights.weights.ndim < 2 else OneHot(*(rep(a) for a in weights))
  return weights if weights.ndim < 2 else rep(weights)


class QLayer(nnx.Module):
  """A quantised conv / depthwise conv / dense / token-wise linear layer over choice mixing weights.

  ``linear`` (a transformer's projections and MLP) maps x of shape (..., T, cin) to (..., T, cout) with one
  (cin, cout) kernel and a bias, like ``dense`` over every token.

  Args:
    spec: the layer at its widest channel counts (what the hardware sees).
    keys: the names of its weight-bit, activation-bit, input-width, output-width and N:M choices.
    w_bits: weight bit-width candidates (None: float); ``PRUNED`` (0) among them prunes a group or tensor.
    a_bits: input-activation bit-width candidates (None: float).
    a_signed: whether the input activations are signed (False after ReLU).
    rngs: NNX random streams for the weight init.
    group_size: output columns per weight-bit group when the ``w_bits`` choice has one row per group
      (AQ-BERT sub-groups; the last group may be cut short by ``spec.cout``); None: per tensor or per column.
    nm_codes: the candidates of the ``keys.nm`` choice (``nas.ops.sparsity.nm_code`` values).
    nm_decay: SR-STE's lambda_W for the N:M candidates.
    quantizer: the registered quantiser of its weights and input activations (``nas.ops.quantizers``; None:
      ``quantizers.current()``, LSQ unless built inside ``quantizers.using(name)``).
  """

  def __init__(self, spec: LayerSpec, keys: ChoiceKeys, w_bits, a_bits, a_signed: bool, *, rngs: nnx.Rngs,
               group_size: int | None = None, nm_codes: tuple[int, ...] = (),
               nm_decay: float = sparsity.SRSTE_DECAY, quantizer: str | None = None):
    if group_size is not None and group_size < 1:
      raise ValueError(f"QLayer {spec.name!r}: group_size={group_size} must be >= 1 (columns per bit group), "
                       f"or None for no groups.")
    if keys.nm is not None and (spec.kind == "dwconv" or not nm_codes):
      raise ValueError(f"QLayer {spec.name!r}: an N:M choice needs a conv, dense or linear layer and its "
                       f"candidate codes (nm_codes); got kind {spec.kind!r}, nm_codes={nm_codes!r}.")
    self.spec = spec
    self.keys = keys
    self.group_size = group_size
    self.nm_codes = tuple(int(c) for c in nm_codes)
    self.nm_decay = float(nm_decay)
    if spec.kind in ("dense", "linear"):
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
    self.bias = nnx.Param(jnp.zeros((spec.cout,), jnp.float32)) if spec.kind in ("dense", "linear") else None
    self.wq = WeightQuantizer(w_bits, init, quantizer)
    self.aq = ActQuantizer(a_bits, a_signed, quantizer)

  def sparse_kernel(self, arch: Mapping[str, jax.Array]) -> jax.Array:
    """The kernel after the N:M choice: sum_s g_s S_s(W) over its candidates (``nas.ops.sparsity.mix_patterns``)."""
    kernel = self.kernel[...]
    if self.keys.nm is None or self.nm_codes == (sparsity.DENSE,):
      return kernel
    return sparsity.mix_patterns(kernel, self.nm_codes, arch[self.keys.nm], self.nm_decay)

  def column_weights(self, arch: Mapping[str, jax.Array]):
    """The weight-bit mixing weights as the quantiser takes them: per group expanded to per column."""
    w = arch[self.keys.w_bits]
    return w if self.group_size is None else expand_groups(w, self.group_size, self.spec.cout)

  def _bias(self, w_sel) -> jax.Array:
    """The bias, times the weight of not being pruned per column (a pruned group's output is exactly 0)."""
    b = self.bias[...]
    bits = self.wq.bits
    if bits is None or PRUNED not in bits:
      return b
    dense = w_sel.dense(len(bits)) if isinstance(w_sel, OneHot) else w_sel
    return b * (1.0 - dense[..., bits.index(PRUNED)])

  def __call__(self, x: jax.Array, arch: Mapping[str, jax.Array], column_scale: jax.Array | None = None
               ) -> jax.Array:
    """The layer's output; ``column_scale`` (dense and linear layers, shape (cout,)) multiplies its output
    columns, applied to the quantised kernel and the bias (a pass over the kernel, not over the output)."""
    x = self.aq(x, arch[self.keys.a_bits])
    w_sel = self.column_weights(arch)
    w = self.wq(self.sparse_kernel(arch), w_sel)
    if self.spec.kind in ("dense", "linear"):
      b = self._bias(w_sel)
      if column_scale is not None:
        w, b = w * column_scale, b * column_scale
      return x @ w + b
    if column_scale is not None:
      raise ValueError(f"QLayer {self.spec.name!r}: column_scale is for dense and linear layers only.")
    if self.spec.kind == "dwconv":
      return depthwise_conv(x, w, self.spec.stride)
    return jax.lax.conv_general_dilated(x, w, (self.spec.stride,) * 2, "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def depthwise_conv(x: jax.Array, w: jax.Array, stride: int) -> jax.Array:
  """Depthwise convolution, NHWC input, kernel (kh, kw, 1, C), "SAME" padding, as ``lax.conv_general_dilated``
  with ``feature_group_count=C`` computes it.

  On a CPU it runs as kh * kw shifted slices of the padded input times a kernel row each, summed: elementwise
  work that XLA fuses into a few loops, forward and backward. XLA's CPU backend runs the grouped convolution
  itself 12 to 33 times slower (forward and both gradients, batch 64, at a standard MobileNetV2's depthwise
  sizes for 32x32 inputs, 32x32x96 to 4x4x960; ``docs/speed.md``, section 10). Other backends keep the grouped
  convolution (their libraries have depthwise kernels).
  """
  if jax.default_backend() != "cpu":
    return jax.lax.conv_general_dilated(x, w, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        feature_group_count=x.shape[-1])
  kh, kw = w.shape[:2]
  pads = jax.lax.padtype_to_pads(x.shape[1:3], (kh, kw), (stride, stride), "SAME")
  xp = jnp.pad(x, ((0, 0), *pads, (0, 0)))
  ho, wo = (xp.shape[1] - kh) // stride + 1, (xp.shape[2] - kw) // stride + 1
  out = None
  for i in range(kh):
    for j in range(kw):
      term = xp[:, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride, :] * w[i, j, 0]
      out = term if out is None else out + term
  return out


def width_mask(values: tuple[int, ...], weights: jax.Array, max_channels: int) -> jax.Array:
  """FBNetV2 mask sum_k g_k 1[c < values_k] over the output channels, shape (max_channels,)."""
  masks = (np.arange(max_channels)[None, :] < np.asarray(values)[:, None]).astype(np.float32)
  return weights @ jnp.asarray(masks)


# BatchNorm's epsilon in every supernet (and the derived networks, the same classes): Keras's 1e-3, not
# PyTorch's 1e-5. A channel whose output is constant over the batch (a low-bit channel whose weights all
# round to zero, for one) makes BatchNorm scale its gradient by 1/sqrt(eps): 316x at 1e-5. The mixing
# weights' gradients <g, Q_j(x) - Q_d(x)> carry that factor into rare spikes 10^5 times the median, which
# fill Adam's second moment (beta2 = 0.999) and freeze those choices undecided for the rest of the search.
# Measured on digits, per-channel search at budget 0.8: mean max prob 0.83 at 1e-5, 0.997 at 1e-3.
BN_EPSILON = 1e-3


def batch_norm(features: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
  """The supernets' BatchNorm: momentum 0.9, epsilon ``BN_EPSILON``."""
  return nnx.BatchNorm(features, momentum=0.9, epsilon=BN_EPSILON, rngs=rngs)


def set_calibrating(model: nnx.Module, on: bool) -> None:
  for _, m in model.iter_modules():
    if isinstance(m, ActQuantizer):
      m.calibrating = on


def model_quantizer(model: nnx.Module) -> str:
  """The quantiser ``model`` is meant to use: its search space's (``SearchSpace.quantizer``), or, for a model
  without one, the one its layers were built with (the first quantiser module's; default LSQ)."""
  name = getattr(getattr(model, "space", None), "quantizer", None)
  if name is not None:
    return name
  for _, m in model.iter_modules():
    if isinstance(m, (WeightQuantizer, ActQuantizer)):
      return m.quantizer
  return quantizers.DEFAULT


def bind_quantizer(model: nnx.Module, name: str | None = None, init: bool = True) -> str:
  """Makes every quantiser module of ``model`` use quantiser ``name`` (default ``model_quantizer(model)``) and
  returns the name. Layers built inside ``quantizers.using(name)`` already do, and then this changes nothing.
  With ``init``, a weight quantiser that changes quantiser re-initialises its parameters from its kernel
  (activation parameters start in ``calibrate``); without it the parameters are kept (a trained network loaded
  into layers built with the default quantiser)."""
  name = quantizers.get(model_quantizer(model) if name is None else name).name
  modules = [m for _, m in model.iter_modules()]
  for m in modules:
    if isinstance(m, QLayer) and m.wq.quantizer != name:
      m.wq.quantizer = name
      if init:
        m.wq.init_from(m.kernel[...])
  for m in modules:
    if isinstance(m, (WeightQuantizer, ActQuantizer)):
      m.quantizer = name
  return name
