"""What every supernet shares: its named choices, sampling them once per step, deriving, and layer lists."""
from __future__ import annotations

import math
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hardware.base import LayerSpec
from nas.models.arch import Architecture, LayerChoice
from nas.ops.choices import CategoricalChoice, SDQChoice, check_mode, gumbel_softmax, rowwise, uniform_noise
from nas.ops.layers import ChoiceKeys, QLayer, width_mask
from nas.models.space import SearchSpace

FLOAT_BITS = 32  # the "bit-width" recorded for a floating-point layer


class Supernet(nnx.Module):
  """Base of the searchable networks. Subclasses build layers with ``add_choice`` and ``conv``/``dense``.

  Choices are named (``"conv1.w_bits"``, ``"conv1.width"``); two layers that must share a width (the
  two sides of a residual sum) name the same choice, so they are tied by construction. With ``arch`` given
  every choice holds the one chosen value: the derived fixed network is the same class.
  """

  name = "supernet"

  def _setup(self, space: SearchSpace, arch: Architecture | None, rngs: nnx.Rngs):
    self.space = space
    self.arch = arch
    self.rngs = rngs
    self.choices = nnx.Dict()
    self.reference = {}  # choice name -> value of the reference network (W8A8 at base width)
    self._bit_choices = ()  # names of the bit-width choices
    self._onehot_choices = ()  # other choices whose consumers take a OneHot (N:M: nas.ops.sparsity.mix_patterns)
    self._layer_names = []
    self.killers = {}  # layer name -> choices whose 0 candidate leaves the layer out (a skipped conv)

  def add_choice(self, name: str, candidates, reference: int, bits: bool = False,
                 channels: int | None = None, init: np.ndarray | None = None, absent: int | None = None) -> str:
    """Registers choice ``name`` (once: layers naming the same choice share it) and returns its name.

    Bit-width choices follow ``space.method`` (Gumbel-softmax or SDQ); width choices are always Gumbel.
    ``channels`` makes a per-output-channel choice (channel-wise mixed precision). ``init``: starting
    probabilities (default uniform). ``absent``: the value an architecture saved before this choice existed
    had (a layer that could not be skipped was kept); without it such an architecture is an error.
    """
    if name in self.choices:
      return name
    self.reference[name] = reference
    if self.arch is not None:
      if name not in self.arch.choices and absent is None:
        raise ValueError(f"the architecture has no value for choice {name!r}; it was saved for another search "
                         f"space (model.args).")
      value = self.arch.choices.get(name, absent)
      if isinstance(value, (tuple, list)):
        self.choices[name] = CategoricalChoice.assigned(value)
      else:
        self.choices[name] = CategoricalChoice((value,))
      return name
    values = tuple(candidates)
    if len(values) == 1:
      channels = None
    if bits and self.space.method == "sdq":
      self.choices[name] = SDQChoice(values, channels=channels)
    else:
      self.choices[name] = CategoricalChoice(values, hard=self.space.hard, channels=channels)
      if init is not None:
        self.choices[name].logits[...] = jnp.broadcast_to(jnp.log(jnp.asarray(init, jnp.float32)),
                                                          self.choices[name].logits[...].shape)
    return name

  def bits_choice(self, name: str, fixed: int | None, candidates,
                  channels: int | None = None) -> tuple[str, tuple[int, ...] | None]:
    """A bit-width choice; returns (name, the quantiser's candidate bits or None when float)."""
    if not self.space.quantize:
      return self.add_choice(name, (FLOAT_BITS,), FLOAT_BITS), None
    values = (fixed,) if fixed is not None else candidates
    key = self.add_choice(name, values, fixed if fixed is not None else 8, bits=True, channels=channels)
    if key not in self._bit_choices:
      self._bit_choices += (key,)
    return key, self.choices[key].values

  def width_choice(self, name: str, base: int) -> str:
    return self.add_choice(name, self.space.channels(base), self.space.base_channels(base))

  def max_channels(self, key: str) -> int:
    return max(self.choices[key].values)

  def qlayer(self, attr: str, kind: str, cin_key: str | None, cin: int, cout_key: str | None, cout: int,
             kernel: int, stride: int, in_hw: tuple[int, int], *, first: bool = False, last: bool = False,
             a_signed: bool = False) -> QLayer:
    """Builds searchable layer ``attr`` with its bit choices; cin/cout are fixed counts when keys are None."""
    s = self.space
    cin_max = self.max_channels(cin_key) if cin_key else cin
    cout_max = cin_max if kind == "dwconv" else (self.max_channels(cout_key) if cout_key else cout)
    fixed = s.first_layer_bits if first else s.last_layer_bits if last else None
    wk, wb = self.bits_choice(f"{attr}.w_bits", fixed, s.w_bits, channels=cout_max if s.per_channel_w else None)
    ak, ab = self.bits_choice(f"{attr}.a_bits", fixed, s.a_bits)
    spec = LayerSpec(kind, cin_max, cout_max, kernel, stride, in_hw[0], in_hw[1], attr)
    keys = ChoiceKeys(wk, ak, cin_key, None if kind == "dwconv" else cout_key)
    self._layer_names.append(attr)
    return QLayer(spec, keys, wb, ab, a_signed, rngs=self.rngs)

  def qlayers(self) -> list[QLayer]:
    return [getattr(self, n) if "." not in n else self._lookup(n) for n in self._layer_names]

  def _lookup(self, path: str):
    obj = self
    for part in path.split("."):
      obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    return obj

  def mask(self, x: jax.Array, key: str, arch: Mapping[str, jax.Array]) -> jax.Array:
    choice = self.choices[key]
    if choice.fixed:
      return x
    return x * width_mask(choice.values, arch[key], x.shape[-1])

  def mixing_weights(self, mode: str, key: jax.Array | None = None, tau=1.0) -> dict[str, jax.Array]:
    """Every choice's mixing weights for one forward pass (one draw of noise for all of them in ``"sample"``
    mode). Bit-width and N:M choices give theirs as quantisers take them (``OneHot`` where one-hot forward)."""
    check_mode(mode)
    names = list(self.choices.keys())
    noise = {}
    if mode == "sample":
      if key is None:
        raise ValueError("mode='sample' needs a random key.")
      shapes = {n: self.choices[n].noise_shape for n in names if not self.choices[n].fixed}
      sizes = [math.prod(s) for s in shapes.values()]
      flat = uniform_noise(key, (sum(sizes),))
      offsets = np.cumsum([0] + sizes)
      noise = {n: flat[offsets[i]:offsets[i + 1]].reshape(s) for i, (n, s) in enumerate(shapes.items())}
    out = self._categorical_samples(noise, tau) if mode == "sample" else {}
    for n in names:
      choice = self.choices[n]
      onehot = n in self._bit_choices or n in self._onehot_choices
      if n in out:  # sampled with the others: the quantiser's weights, or dense ones (y itself)
        out[n] = choice.sampled(*out[n]) if onehot else out[n][0]
        continue
      weights = choice.quantizer_weights if onehot else choice.mixing_weights
      out[n] = weights(mode, tau=tau, uniform=noise.get(n))
    return out

  def _categorical(self) -> dict[str, CategoricalChoice]:
    return {n: c for n, c in self.choices.items() if isinstance(c, CategoricalChoice) and not c.fixed}

  def _categorical_samples(self, noise: Mapping[str, jax.Array], tau) -> dict[str, tuple[jax.Array, jax.Array]]:
    """Every categorical choice's Gumbel sample and its argmax, drawn from ``noise`` as each choice would draw
    its own, computed as one softmax per candidate count (``rowwise``)."""
    out = {}
    cats = self._categorical()
    for hard in sorted({c.hard for c in cats.values()}):
      logits = {n: c.logits[...] for n, c in cats.items() if c.hard == hard}

      def draw(lg, u, hard=hard):
        y = gumbel_softmax(None, lg, tau, hard, u)
        return y, jnp.argmax(y, axis=-1)

      out.update(rowwise(draw, logits, {n: noise[n] for n in logits}))
    return out

  def project(self) -> None:
    """Keeps constrained architecture parameters in their range (SDQ's beta) after an update."""
    for c in self.choices.values():
      if hasattr(c, "project"):
        c.project()

  def probs(self) -> dict[str, jax.Array]:
    """Every choice's categorical distribution (``probs``); the categorical choices' softmaxes as one per
    candidate count."""
    logits = {n: c.logits[...] for n, c in self._categorical().items()}
    cats = rowwise(lambda lg: jax.nn.softmax(lg, axis=-1), logits)
    return {n: cats[n] if n in cats else c.probs() for n, c in self.choices.items()}

  def derive(self) -> dict[str, int]:
    return {n: c.derive() for n, c in self.choices.items()}

  def architecture(self, choices: Mapping[str, int] | None = None) -> Architecture:
    """The discrete network for ``choices`` (default: the derived argmax), with its layers' specs."""
    choices = dict(self.derive() if choices is None else choices)
    layers = []
    for layer in self.qlayers():
      spec, k = layer.spec, layer.keys
      if self.skipped(spec.name, choices):
        continue  # left out: its choices stay recorded, the hardware never runs it
      cin = choices[k.cin] if k.cin else spec.cin
      cout = cin if spec.kind == "dwconv" else (choices[k.cout] if k.cout else spec.cout)
      s = LayerSpec(spec.kind, cin, cout, spec.kernel, spec.stride, spec.in_h, spec.in_w, spec.name)
      w_bits = choices[k.w_bits]
      if isinstance(w_bits, (tuple, list)):  # per-channel: keep the channels the width keeps
        w_bits = tuple(int(b) for b in w_bits[:cout])
        choices[k.w_bits] = w_bits
      layers.append(LayerChoice(s, w_bits, choices[k.a_bits]))
    return Architecture(self.name, choices, tuple(layers))

  def skipped(self, layer: str, choices: Mapping) -> bool:
    """Whether ``choices`` leave layer ``layer`` out (one of its ``killers`` at 0)."""
    return any(choices[c] == 0 for c in self.killers.get(layer, ()))

  def reference_architecture(self) -> Architecture:
    """All layers at 8 bits (or their fixed bits) and base width: what budget fractions are relative to."""
    return self.architecture(self.reference)

  def max_probs(self) -> dict[str, float]:
    """Each searchable choice's largest probability (mean over channels for a per-channel choice): which
    choices the search left undecided. 1.0 when a choice is one-hot.

    A per-channel choice counts only the channels the derived network keeps: a pruned channel's bit-width
    choice gets no gradient (its output is masked) and stays where it started, but it is no part of the
    network either.
    """
    kept = self.kept_channels(self.derive())
    out = {}
    for n, c in self.choices.items():
      if c.fixed:
        continue
      top = jnp.max(c.probs(), axis=-1)
      if top.ndim == 1:
        top = top[:kept.get(n, top.shape[0])]
      out[n] = float(jnp.mean(top))
    return out

  def kept_channels(self, derived: Mapping) -> dict[str, int]:
    """Per-channel weight-bit choice -> how many of its rows the network ``derived`` keeps (its output width)."""
    kept = {}
    for layer in self.qlayers():
      spec, k = layer.spec, layer.keys
      cin = derived[k.cin] if k.cin else spec.cin
      kept[k.w_bits] = cin if spec.kind == "dwconv" else (derived[k.cout] if k.cout else spec.cout)
    return kept

  def mean_max_prob(self) -> float:
    """Mean over searchable choices of ``max_probs``: 1.0 when every choice is one-hot."""
    return mean_max_prob(self.max_probs())


def mean_max_prob(max_probs: Mapping[str, float]) -> float:
  """The mean of per-choice largest probabilities (``Supernet.max_probs``); 1.0 with no searchable choice."""
  return sum(max_probs.values()) / len(max_probs) if max_probs else 1.0
