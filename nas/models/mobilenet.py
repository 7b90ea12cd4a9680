"""A small MobileNetV2 as a supernet: bits per layer, the expanded width of each block, a width per stage.

References:
  Sandler, Howard, Zhu, Zhmoginov, Chen, "MobileNetV2: Inverted Residuals and Linear Bottlenecks",
  CVPR 2018 (Table 2: stages of (t, c, n, s); ReLU6, chosen there for robustness at low precision).
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from nas.models.arch import Architecture
from nas.ops.layers import batch_norm
from nas.models import register
from nas.models.base import Supernet
from nas.models.space import SearchSpace

# (expansion t, base output channels c, blocks n, stride of the first block s) for 32x32 inputs: Table 2 of
# Sandler et al. cut after the 64-channel stage, with the strides of a CIFAR-sized network.
CIFAR_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 2, 2), (6, 64, 2, 2))


class InvertedResidual(nnx.Module):
  """1x1 expand (BN, ReLU6) -> 3x3 depthwise (BN, ReLU6) -> 1x1 linear projection (BN) (+ input).

  The expanded width is the block's own choice ``{name}.expand.width``; the depthwise layer has none (its
  output channels are its input channels). With t = 1 there is no expand layer and the depthwise layer
  reads the block input. The residual is added when the input and output share a width choice and the
  stride is 1. The output is linear, hence signed: whoever reads it quantises it signed.

  Args:
    net: the supernet that owns the choices and registers the layers.
    name: the block's attribute path in ``net`` (``"blocks.2"``), the prefix of its layer and choice names.
    in_key: width choice of the block's input; in_base its base channels.
    in_signed: whether the block's input can be negative.
    out_key: width choice of the block's output.
    expansion: t, hidden base width = round(t * in_base).
    stride: the depthwise layer's stride.
    in_hw: input feature-map size.
    rngs: NNX random streams (BatchNorm).
  """

  def __init__(self, net: Supernet, name: str, in_key: str, in_base: int, in_signed: bool, out_key: str,
               expansion: float, stride: int, in_hw: tuple[int, int], rngs: nnx.Rngs):
    if expansion != 1:
      self.hidden_key = net.width_choice(f"{name}.expand.width", int(round(in_base * expansion)))
      self.expand = net.qlayer(f"{name}.expand", "conv", in_key, 0, self.hidden_key, 0, 1, 1, in_hw,
                               a_signed=in_signed)
      self.expand_bn = batch_norm(self.expand.spec.cout, rngs)
      dw_signed = False  # after ReLU6
    else:
      self.hidden_key, self.expand, self.expand_bn, dw_signed = in_key, None, None, in_signed
    self.dw = net.qlayer(f"{name}.dw", "dwconv", self.hidden_key, 0, None, 0, 3, stride, in_hw, a_signed=dw_signed)
    self.dw_bn = batch_norm(self.dw.spec.cout, rngs)
    self.out_hw = (self.dw.spec.out_h, self.dw.spec.out_w)
    self.project = net.qlayer(f"{name}.project", "conv", self.hidden_key, 0, out_key, 0, 1, 1, self.out_hw)
    self.project_bn = batch_norm(self.project.spec.cout, rngs)
    self.out_key = out_key
    self.residual = stride == 1 and in_key == out_key

  def __call__(self, x: jax.Array, arch, mask: Callable) -> jax.Array:
    h = x
    if self.expand is not None:
      h = mask(jax.nn.relu6(self.expand_bn(self.expand(h, arch))), self.hidden_key, arch)
    h = mask(jax.nn.relu6(self.dw_bn(self.dw(h, arch))), self.hidden_key, arch)
    h = self.project_bn(self.project(h, arch))
    if self.residual:
      h = h + x
    return mask(h, self.out_key, arch)


@register
class MobileNetV2(Supernet):
  """conv3x3 stem (BN, ReLU6) -> inverted residual blocks -> 1x1 conv (BN, ReLU6) -> average pool -> dense.

  Activations are ReLU6 (as in Sandler et al.): bounded, so an unsigned LSQ range covers them well. Choice
  names: ``stem.width``; ``stage{k}.width`` (k from 1) for the outputs of stage k when its first block
  changes shape; a stage whose first block keeps the input's width and resolution (stride 1, c equal to
  the input's base width) stays tied to its input's choice, and so do all later blocks of a stage, since
  residual sums need equal widths; ``blocks.{i}.expand.width`` (block i over the whole network, t != 1);
  ``last.width``; and ``{layer}.w_bits`` / ``{layer}.a_bits`` per layer (``stem``, ``blocks.{i}.expand``,
  ``blocks.{i}.dw``, ``blocks.{i}.project``, ``last``, ``head``).

  Args:
    space: the candidates.
    rngs: NNX random streams.
    arch: build the fixed network of this architecture instead of the supernet.
    num_classes: classifier outputs.
    input_shape: (H, W, C) of one image.
    stages: (t, c, n, s) per stage: expansion, base output channels, blocks, first block's stride.
    stem_width: base output channels of the stem (32 in Sandler et al.).
    stem_stride: the stem's stride (1 for 32x32 inputs, 2 for ImageNet).
    last_width: base output channels of the final 1x1 convolution (1280 in Sandler et al.; smaller here).
    input_signed: whether the input pixels can be negative (normalised data) or not ([0, 1] pixels).
  """

  name = "mobilenetv2"

  def __init__(self, space: SearchSpace, *, rngs: nnx.Rngs, arch: Architecture | None = None,
               num_classes: int = 10, input_shape: Sequence[int] = (32, 32, 3),
               stages: Sequence[Sequence[float]] = CIFAR_STAGES, stem_width: int = 32, stem_stride: int = 1,
               last_width: int = 256, input_signed: bool = True):
    stages = tuple(tuple(st) for st in stages)
    if not stages or any(len(st) != 4 or st[0] <= 0 or int(st[1]) < 1 or int(st[2]) < 1 or int(st[3]) < 1
                         for st in stages):
      raise ValueError(f"model.stages={[list(st) for st in stages]} must be a non-empty list of [t, c, n, s] "
                       f"with t > 0 and c, n, s >= 1.")
    self._setup(space, arch, rngs)
    h, w, c = input_shape
    key = self.width_choice("stem.width", stem_width)
    self.stem = self.qlayer("stem", "conv", None, c, key, 0, 3, stem_stride, (h, w), first=True,
                            a_signed=input_signed)
    self.stem_bn = batch_norm(self.stem.spec.cout, rngs)
    self.stem_key = key
    h, w = self.stem.spec.out_h, self.stem.spec.out_w
    base, signed, blocks = stem_width, False, []
    for k, (t, out_base, n, s) in enumerate(stages):
      out_base, n, s = int(out_base), int(n), int(s)
      for b in range(n):
        stride = s if b == 0 else 1
        out_key = key if stride == 1 and base == out_base else self.width_choice(f"stage{k + 1}.width", out_base)
        block = InvertedResidual(self, f"blocks.{len(blocks)}", key, base, signed, out_key, t, stride, (h, w), rngs)
        blocks.append(block)
        key, base, signed, (h, w) = out_key, out_base, True, block.out_hw
    self.blocks = nnx.List(blocks)
    self.last_key = self.width_choice("last.width", last_width)
    self.last = self.qlayer("last", "conv", key, 0, self.last_key, 0, 1, 1, (h, w), a_signed=True)
    self.last_bn = batch_norm(self.last.spec.cout, rngs)
    self.head = self.qlayer("head", "dense", self.last_key, 0, None, num_classes, 1, 1, (1, 1), last=True)

  def __call__(self, x: jax.Array, *, mode: str = "sample", key: jax.Array | None = None, tau=1.0) -> jax.Array:
    arch = self.mixing_weights(mode, key, tau)
    x = self.mask(jax.nn.relu6(self.stem_bn(self.stem(x, arch))), self.stem_key, arch)
    for block in self.blocks:
      x = block(x, arch, self.mask)
    x = self.mask(jax.nn.relu6(self.last_bn(self.last(x, arch))), self.last_key, arch)
    x = jnp.mean(x, axis=(1, 2))
    return self.head(x, arch)
