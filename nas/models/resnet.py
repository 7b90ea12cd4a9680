"""ResNet-20 for CIFAR-sized images as a supernet: bits per layer, a width inside each block, a width per stage.

References:
  He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016 (§4.2: the CIFAR-10
  networks, 6n+2 layers; ResNet-20 is n = 3). Shortcuts that change shape are 1x1 convolutions (option B).
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


class BasicBlock(nnx.Module):
  """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU; built by its supernet, whose choices it names.

  The inner width (conv1's output) is the block's own choice ``{name}.conv1.width``: it never meets another
  tensor, so pruning or expanding it is free. The output width is ``out_key``, shared by the whole stage so
  that identity shortcuts add equal channel counts. The shortcut is the identity when input and output share
  a width choice and the stride is 1; otherwise a searchable 1x1 convolution + BN (option B).

  Args:
    net: the supernet that owns the choices and registers the layers.
    name: the block's attribute path in ``net`` (``"blocks.4"``), the prefix of its layer and choice names.
    in_key: width choice of the block's input.
    out_key: width choice of the block's output (the stage's).
    inner: base width of conv1's output.
    stride: conv1's (and the projection's) stride.
    in_hw: input feature-map size.
    rngs: NNX random streams (BatchNorm).
  """

  def __init__(self, net: Supernet, name: str, in_key: str, out_key: str, inner: int, stride: int,
               in_hw: tuple[int, int], rngs: nnx.Rngs):
    self.inner_key = net.width_choice(f"{name}.conv1.width", inner)
    self.out_key = out_key
    self.conv1 = net.qlayer(f"{name}.conv1", "conv", in_key, 0, self.inner_key, 0, 3, stride, in_hw)
    self.bn1 = batch_norm(self.conv1.spec.cout, rngs)
    out_hw = (self.conv1.spec.out_h, self.conv1.spec.out_w)
    self.conv2 = net.qlayer(f"{name}.conv2", "conv", self.inner_key, 0, out_key, 0, 3, 1, out_hw)
    self.bn2 = batch_norm(self.conv2.spec.cout, rngs)
    if stride != 1 or in_key != out_key:
      self.shortcut = net.qlayer(f"{name}.shortcut", "conv", in_key, 0, out_key, 0, 1, stride, in_hw)
      self.shortcut_bn = batch_norm(self.shortcut.spec.cout, rngs)
    else:
      self.shortcut = self.shortcut_bn = None
    self.out_hw = out_hw

  def __call__(self, x: jax.Array, arch, mask: Callable) -> jax.Array:
    h = mask(jax.nn.relu(self.bn1(self.conv1(x, arch))), self.inner_key, arch)
    h = self.bn2(self.conv2(h, arch))
    skip = x if self.shortcut is None else self.shortcut_bn(self.shortcut(x, arch))
    return mask(jax.nn.relu(h + skip), self.out_key, arch)


@register
class ResNet20(Supernet):
  """conv3x3 stem -> stages of BasicBlocks (stride 2 from the second stage on) -> global average pool -> dense.

  Choice names: ``stage{k}.width`` (k from 1; the stem's output, every block output of stage k and its
  projection shortcut), ``blocks.{i}.conv1.width`` (block i's inner width, i counted over the whole
  network), and ``{layer}.w_bits`` / ``{layer}.a_bits`` for every layer (``stem``, ``blocks.{i}.conv1``,
  ``blocks.{i}.conv2``, ``blocks.{i}.shortcut``, ``head``). Every layer's input is post-ReLU (unsigned)
  except the stem's, whose signedness is ``input_signed``.

  Args:
    space: the candidates.
    rngs: NNX random streams.
    arch: build the fixed network of this architecture instead of the supernet.
    num_classes: classifier outputs.
    input_shape: (H, W, C) of one image.
    widths: base channels of the stages (the stem has the first stage's width).
    blocks_per_stage: BasicBlocks per stage (3 for ResNet-20, 6n+2 layers in general).
    input_signed: whether the input pixels can be negative (normalised data) or not ([0, 1] pixels).
  """

  name = "resnet20"

  def __init__(self, space: SearchSpace, *, rngs: nnx.Rngs, arch: Architecture | None = None,
               num_classes: int = 10, input_shape: Sequence[int] = (32, 32, 3),
               widths: Sequence[int] = (16, 32, 64), blocks_per_stage: int = 3, input_signed: bool = True):
    widths = tuple(int(w) for w in widths)
    if not widths or min(widths) < 1:
      raise ValueError(f"model.widths={list(widths)} must be a non-empty list of channel counts >= 1.")
    if blocks_per_stage < 1:
      raise ValueError(f"model.blocks_per_stage={blocks_per_stage} must be >= 1.")
    self._setup(space, arch, rngs)
    h, w, c = input_shape
    key = self.width_choice("stage1.width", widths[0])
    self.stem = self.qlayer("stem", "conv", None, c, key, 0, 3, 1, (h, w), first=True, a_signed=input_signed)
    self.stem_bn = batch_norm(self.stem.spec.cout, rngs)
    self.stem_key = key
    blocks = []
    for s, base in enumerate(widths):
      out_key = self.width_choice(f"stage{s + 1}.width", base)
      for b in range(blocks_per_stage):
        stride = 2 if s > 0 and b == 0 else 1
        block = BasicBlock(self, f"blocks.{len(blocks)}", key, out_key, base, stride, (h, w), rngs)
        blocks.append(block)
        key, (h, w) = out_key, block.out_hw
    self.blocks = nnx.List(blocks)
    self.head = self.qlayer("head", "dense", key, 0, None, num_classes, 1, 1, (1, 1), last=True)

  def __call__(self, x: jax.Array, *, mode: str = "sample", key: jax.Array | None = None, tau=1.0) -> jax.Array:
    arch = self.mixing_weights(mode, key, tau)
    x = self.mask(jax.nn.relu(self.stem_bn(self.stem(x, arch))), self.stem_key, arch)
    for block in self.blocks:
      x = block(x, arch, self.mask)
    x = jnp.mean(x, axis=(1, 2))
    return self.head(x, arch)
