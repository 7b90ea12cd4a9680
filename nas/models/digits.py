"""A small searchable CNN for scikit-learn's 8x8 digits (and other small images)."""
from __future__ import annotations

import dataclasses

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from nas.models.arch import Architecture
from nas.ops.layers import batch_norm
from nas.models import register
from nas.models.base import Supernet
from nas.models.space import SearchSpace


@register
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
    skip: the conv layers (0-based; not the first) the search may leave out: choice ``convs.<i>.keep`` in
      {0, 1}. A skipped layer's output is its shortcut: the input subsampled by the layer's stride
      (``x[:, ::s, ::s]``, the map size the conv gives) with its channels cut or zero-padded to the layer's
      width: the parameter-free shortcut of He et al., "Deep Residual Learning", CVPR 2016 (option A), used
      as a layer-skip candidate as FBNet's "skip" block does (Wu et al., CVPR 2019). The supernet mixes the
      two paths with the choice's Gumbel weights; a skipped layer costs nothing (``OpAxes.dead_if``) and the
      next layer reads the shortcut (in the integer network, as a dilated convolution: ``nas.deploy.integer``).
      On launch-bound targets (a GPU at batch 8: a fixed time per layer) fewer layers is the only way to a
      much cheaper network.
    keep_init: P(keep) each keep choice starts at, so that the supernet's weights train mostly on the whole
      network (at 0.5, three skippable layers would leave all three in for 1 step in 8). Stochastic depth
      (Huang et al., ECCV 2016) keeps its layers with probability 0.5 to 1 for the same reason.
  """

  name = "digits_cnn"

  def __init__(self, space: SearchSpace, *, rngs: nnx.Rngs, arch: Architecture | None = None,
               num_classes: int = 10, input_shape: Sequence[int] = (8, 8, 1),
               widths: Sequence[int] = (16, 32, 32), strides: Sequence[int] = (1, 2, 1),
               input_signed: bool = False, classifier: str = "pool", skip: Sequence[int] = (),
               keep_init: float = 0.9):
    if len(widths) != len(strides):
      raise ValueError(f"model.widths ({len(widths)}) and model.strides ({len(strides)}) must have equal length.")
    if classifier not in ("pool", "flatten"):
      raise ValueError(f"model.args.classifier={classifier!r}; use 'pool' or 'flatten'.")
    skip = tuple(int(i) for i in skip)
    if any(not 1 <= i < len(widths) for i in skip) or len(set(skip)) != len(skip):
      raise ValueError(f"model.args.skip={list(skip)}: list distinct conv layers 1..{len(widths) - 1} "
                       f"(the first layer cannot be skipped), or [] for none.")
    if not 0.0 < keep_init < 1.0:
      raise ValueError(f"model.args.keep_init={keep_init}: give P(keep) at the start, strictly between 0 and 1.")
    self.classifier = classifier
    self.strides = tuple(int(v) for v in strides)
    self._setup(space, arch, rngs)
    h, w, c = input_shape
    convs, bns, self.width_keys, self.keep_keys = [], [], [], []
    cin_key, cin = None, c
    for i, (base, stride) in enumerate(zip(widths, strides)):
      name = f"convs.{i}"
      keep = None
      if i in skip:
        keep = self.add_choice(f"{name}.keep", (0, 1), 1, init=(1.0 - keep_init, keep_init), absent=1)
        self.killers[name] = (keep,)
      self.keep_keys.append(keep)
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

  def architecture(self, choices=None) -> Architecture:
    """The discrete network, with the channels the layers around a skipped one really exchange.

    A skipped layer passes on min(its input's channels, its width): its shortcut cuts the input to its width
    or pads it with zeros. So the layer before it computes only the channels that reach the next running
    layer, and the next one reads only the real ones; the integer network is built that way
    (``nas.deploy.integer``), and so are the costs of the derived network here. (The search's cost tables
    price the nominal widths, an over-estimate, so a searched network still honours its budget.)
    """
    arch = super().architecture(choices)
    specs = {l.spec.name: l for l in arch.layers}
    real, last, changed = self.convs[0].spec.cin, None, {}
    for i, (conv, wkey) in enumerate(zip(self.convs, self.width_keys)):
      width = arch.choices[wkey] if wkey else conv.spec.cout
      if conv.spec.name in specs:  # running: reads `real`, writes its width
        changed[conv.spec.name] = [real, width]
        if last is not None:
          changed[last][1] = real
        last, real = conv.spec.name, width
      else:  # skipped: its shortcut passes the first min(real, width) channels on
        real = min(real, width)
    if last is not None:
      changed[last][1] = real
    changed["head"] = [real, specs["head"].spec.cout]
    layers = []
    for l in arch.layers:
      cin, cout = changed.get(l.spec.name, (l.spec.cin, l.spec.cout))
      w_bits = l.w_bits[:cout] if isinstance(l.w_bits, tuple) else l.w_bits
      layers.append(dataclasses.replace(l, spec=dataclasses.replace(l.spec, cin=cin, cout=cout), w_bits=w_bits))
    return dataclasses.replace(arch, layers=tuple(layers))

  def __call__(self, x: jax.Array, *, mode: str = "sample", key: jax.Array | None = None, tau=1.0) -> jax.Array:
    arch = self.mixing_weights(mode, key, tau)
    for conv, bn, wkey, kkey, stride in zip(self.convs, self.bns, self.width_keys, self.keep_keys, self.strides):
      keep = self.choices[kkey] if kkey else None
      if keep is not None and keep.values == (0,):  # a derived network that skips this layer
        x = self.mask(shortcut(x, stride, conv.spec.cout), wkey, arch)
        continue
      y = self.mask(jax.nn.relu(bn(conv(x, arch))), wkey, arch)
      if keep is not None and not keep.fixed:
        z = arch[kkey]  # weights of (skip, keep): one-hot forward when hard, straight-through
        y = z[1] * y + z[0] * self.mask(shortcut(x, stride, conv.spec.cout), wkey, arch)
      x = y
    if self.classifier == "flatten":  # kernel = stride = the map: one output position
      return self.head(x, arch)[:, 0, 0, :]
    x = jnp.mean(x, axis=(1, 2))
    return self.head(x, arch)


def shortcut(x: jax.Array, stride: int, channels: int) -> jax.Array:
  """A skipped layer's output: ``x`` (NHWC) subsampled by ``stride``, its channels cut or zero-padded to
  ``channels`` (the first ones kept, as width masks keep them)."""
  x = x[:, ::stride, ::stride, :channels]
  return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, channels - x.shape[-1])))


@register
class FashionCNN(DigitsCNN):
  """The CNN for 28x28 grey images (Fashion-MNIST, MNIST): four searchable 3x3 convs, base widths
  16/32/32/64 with strides 2/1/2/1 (28 -> 14 -> 7), and a flattening classifier over the 7x7x64 map.

  A strided first layer, because on a CPU a 3x3 convolution over the full 28x28 map with one input channel
  costs as much time as the rest of the network (training step 47 against 27 ms at batch 64, 2 cores).
  Global average pooling, as in ``digits_cnn``, throws away where a feature is, which Fashion-MNIST needs.
  Layers 1-3 may be skipped (``skip``): the cheapest network is then the first conv and the classifier, 2
  layers of 5, which on the targets that pay a fixed time per layer is the only way below 0.4 of the reference.
  """

  name = "fmnist_cnn"

  def __init__(self, space: SearchSpace, *, rngs: nnx.Rngs, arch: Architecture | None = None,
               num_classes: int = 10, input_shape: Sequence[int] = (28, 28, 1),
               widths: Sequence[int] = (16, 32, 32, 64), strides: Sequence[int] = (2, 1, 2, 1),
               input_signed: bool = False, classifier: str = "flatten", skip: Sequence[int] = (1, 2, 3),
               keep_init: float = 0.9):
    super().__init__(space, rngs=rngs, arch=arch, num_classes=num_classes, input_shape=input_shape,
                     widths=widths, strides=strides, input_signed=input_signed, classifier=classifier, skip=skip,
                     keep_init=keep_init)
