"""A small searchable CNN for scikit-learn's 8x8 digits (and other small images)."""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from nas.arch import Architecture
from nas.layers import batch_norm
from nas.models.base import Supernet
from nas.space import SearchSpace


class DigitsCNN(Supernet):
  """conv3x3 x len(widths) (BN, ReLU, width mask) -> global average pool -> dense classifier.

  Args:
    space: the candidates.
    rngs: NNX random streams.
    arch: build the fixed network of this architecture instead of the supernet.
    num_classes: classifier outputs.
    input_shape: (H, W, C) of one image.
    widths: base output channels of the conv layers.
    strides: their strides.
    input_signed: whether the input pixels can be negative (normalised data) or not ([0, 1] pixels).
    classifier: ``pool`` (global average pooling, then a dense layer) or ``flatten`` (a dense layer over the
      whole last feature map, which keeps where in the image a feature was; built as a convolution whose
      kernel and stride cover the map, so the cost models see its true multiply-accumulates).
  """

  name = "digits_cnn"

  def __init__(self, space: SearchSpace, *, rngs: nnx.Rngs, arch: Architecture | None = None,
               num_classes: int = 10, input_shape: Sequence[int] = (8, 8, 1),
               widths: Sequence[int] = (16, 32, 32), strides: Sequence[int] = (1, 2, 1),
               input_signed: bool = False, classifier: str = "pool"):
    if len(widths) != len(strides):
      raise ValueError(f"model.widths ({len(widths)}) and model.strides ({len(strides)}) must have equal length.")
    if classifier not in ("pool", "flatten"):
      raise ValueError(f"model.args.classifier={classifier!r}; use 'pool' or 'flatten'.")
    self.classifier = classifier
    self._setup(space, arch, rngs)
    h, w, c = input_shape
    convs, bns, self.width_keys = [], [], []
    cin_key, cin = None, c
    for i, (base, stride) in enumerate(zip(widths, strides)):
      name = f"convs.{i}"
      wkey = self.width_choice(f"{name}.width", base)
      layer = self.qlayer(name, "conv", cin_key, cin, wkey, 0, 3, stride, (h, w), first=(i == 0),
                          a_signed=(i == 0 and input_signed))
      convs.append(layer)
      bns.append(batch_norm(layer.spec.cout, rngs))
      self.width_keys.append(wkey)
      h, w = layer.spec.out_h, layer.spec.out_w
      cin_key, cin = wkey, layer.spec.cout
    self.convs = nnx.List(convs)
    self.bns = nnx.List(bns)
    if classifier == "flatten":
      if h != w:
        raise ValueError(f"model.args.classifier='flatten' needs a square last feature map, got {h}x{w}.")
      self.head = self.qlayer("head", "conv", cin_key, cin, None, num_classes, h, h, (h, w), last=True)
    else:
      self.head = self.qlayer("head", "dense", cin_key, cin, None, num_classes, 1, 1, (1, 1), last=True)

  def qlayers(self):
    return list(self.convs) + [self.head]

  def __call__(self, x: jax.Array, *, mode: str = "sample", key: jax.Array | None = None, tau=1.0) -> jax.Array:
    arch = self.mixing_weights(mode, key, tau)
    for conv, bn, wkey in zip(self.convs, self.bns, self.width_keys):
      x = jax.nn.relu(bn(conv(x, arch)))
      x = self.mask(x, wkey, arch)
    if self.classifier == "flatten":  # kernel = stride = the map: one output position
      return self.head(x, arch)[:, 0, 0, :]
    x = jnp.mean(x, axis=(1, 2))
    return self.head(x, arch)


class FashionCNN(DigitsCNN):
  """The CNN for 28x28 grey images (Fashion-MNIST, MNIST): four searchable 3x3 convs, base widths
  16/32/32/64 with strides 2/1/2/1 (28 -> 14 -> 7), and a flattening classifier over the 7x7x64 map.

  A strided first layer, because on a CPU a 3x3 convolution over the full 28x28 map with one input channel
  costs as much time as the rest of the network (training step 47 against 27 ms at batch 64, 2 cores).
  Global average pooling, as in ``digits_cnn``, throws away where a feature is, which Fashion-MNIST needs.
  """

  name = "fmnist_cnn"

  def __init__(self, space: SearchSpace, *, rngs: nnx.Rngs, arch: Architecture | None = None,
               num_classes: int = 10, input_shape: Sequence[int] = (28, 28, 1),
               widths: Sequence[int] = (16, 32, 32, 64), strides: Sequence[int] = (2, 1, 2, 1),
               input_signed: bool = False, classifier: str = "flatten"):
    super().__init__(space, rngs=rngs, arch=arch, num_classes=num_classes, input_shape=input_shape,
                     widths=widths, strides=strides, input_signed=input_signed, classifier=classifier)
