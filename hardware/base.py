"""What the hardware sees of a layer, and the protocol every cost model implements.

A cost model answers for ONE layer over a GRID of choices: ``cost(layer, w_bits, a_bits, cin, cout)``
where each of the four choice arguments may be an array; they broadcast together (NumPy rules) and the
returned ``Cost`` holds arrays of the broadcast shape. The search contracts such a grid with the choice
probabilities, so a model need not be differentiable: an analytic roofline, a measured table or a fitted
regressor all plug in the same way.
"""
from __future__ import annotations

import dataclasses
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

LAYER_KINDS = ("conv", "dwconv", "dense")


@dataclasses.dataclass(frozen=True)
class LayerSpec:
  """One layer as the hardware sees it, at its nominal (usually widest) channel counts.

  Attributes:
    kind: ``"conv"`` (dense 2-D convolution), ``"dwconv"`` (depthwise: groups == cin == cout) or ``"dense"``.
    cin: input channels (features for ``dense``).
    cout: output channels (features for ``dense``).
    kernel: square kernel size (1 for ``dense``).
    stride: spatial stride; 'SAME' padding, so the output is ``ceil(in / stride)``.
    in_h: input feature-map height (1 for ``dense``).
    in_w: input feature-map width (1 for ``dense``).
    name: the layer's name in its network, for messages.
  """
  kind: str
  cin: int
  cout: int
  kernel: int = 1
  stride: int = 1
  in_h: int = 1
  in_w: int = 1
  name: str = ""

  def __post_init__(self):
    if self.kind not in LAYER_KINDS:
      raise ValueError(f"LayerSpec.kind={self.kind!r} of layer {self.name!r} is unknown; use one of {LAYER_KINDS}.")
    for field in ("cin", "cout", "kernel", "stride", "in_h", "in_w"):
      if int(getattr(self, field)) < 1:
        raise ValueError(f"LayerSpec.{field}={getattr(self, field)} of layer {self.name!r} must be >= 1.")
    if self.kind == "dwconv" and self.cin != self.cout:
      raise ValueError(f"LayerSpec of depthwise layer {self.name!r} needs cin == cout (got {self.cin}, {self.cout}).")

  @property
  def out_h(self) -> int:
    return -(-self.in_h // self.stride)

  @property
  def out_w(self) -> int:
    return -(-self.in_w // self.stride)

  @property
  def groups(self) -> int:
    return self.cin if self.kind == "dwconv" else 1

  def _channels(self, cin, cout):
    cin = np.asarray(self.cin if cin is None else cin, dtype=np.float64)
    cout = np.asarray(self.cout if cout is None else cout, dtype=np.float64)
    return cin, cout

  def macs(self, cin=None, cout=None) -> np.ndarray:
    """Multiply-accumulates at the given channel counts (arrays broadcast). Depthwise uses ``cout``."""
    cin, cout = self._channels(cin, cout)
    spatial = self.out_h * self.out_w * self.kernel * self.kernel
    if self.kind == "dwconv":
      return spatial * cout + 0 * cin
    return spatial * cin * cout

  def weight_count(self, cin=None, cout=None) -> np.ndarray:
    """Number of weights (no bias) at the given channel counts."""
    cin, cout = self._channels(cin, cout)
    if self.kind == "dwconv":
      return self.kernel * self.kernel * cout + 0 * cin
    return self.kernel * self.kernel * cin * cout

  def input_count(self, cin=None) -> np.ndarray:
    """Number of input activations (one image) at the given input channel count."""
    cin, _ = self._channels(cin, None)
    return self.in_h * self.in_w * cin

  def output_count(self, cout=None) -> np.ndarray:
    """Number of output activations (one image) at the given output channel count."""
    _, cout = self._channels(None, cout)
    return self.out_h * self.out_w * cout


@dataclasses.dataclass(frozen=True)
class Cost:
  """Latency in seconds and energy in joules of one layer for one image (arrays of a choice grid)."""
  latency_s: np.ndarray
  energy_j: np.ndarray


@runtime_checkable
class CostModel(Protocol):
  """A hardware target's latency and energy, per layer, over a grid of choices.

  Implementations must: return finite, non-negative arrays of the broadcast shape of their four choice
  arguments; raise ``ValueError`` for a layer kind they do not model (never cost it zero); raise
  ``ValueError`` naming the bit-width for a precision the hardware cannot run (``check_bits``).

  Optional attributes: ``bits_monotone`` (True if fewer bits never cost more; ``python -m hardware.check``
  then verifies it) and ``fitted_on`` (the machine a calibrated model was fitted on; see ``hardware.host``).

  Optional method ``inference_cost(input_layer) -> Cost``: what one inference costs outside every layer (a
  runtime's call overhead, quantising the input), per image, given the network's first layer (its input is
  the network's input). A model without it costs nothing outside its layers (:func:`inference_cost`).
  """

  name: str

  def check_bits(self, w_bits, a_bits) -> None:
    """Raise ValueError if the hardware cannot run any of these bit-widths."""

  def cost(self, layer: LayerSpec, w_bits, a_bits, cin, cout) -> Cost:
    """Latency and energy of ``layer`` at each point of the broadcast grid of choices."""


def inference_cost(model: CostModel, input_layer: LayerSpec) -> Cost:
  """``model.inference_cost(input_layer)`` as float64 scalars, zero for a model without that method.

  Raises:
    ValueError: the model returned a non-finite or negative cost.
  """
  method = getattr(model, "inference_cost", None)
  if method is None:
    return Cost(np.float64(0.0), np.float64(0.0))
  c = method(input_layer)
  lat, en = (np.float64(np.asarray(v, dtype=np.float64)) for v in (c.latency_s, c.energy_j))
  if not (np.isfinite(lat) and np.isfinite(en) and lat >= 0 and en >= 0):
    raise ValueError(f"cost model {model.name!r} returned a non-finite or negative inference_cost "
                     f"({lat}, {en}); return finite scalars >= 0.")
  return Cost(lat, en)


def broadcast_choices(w_bits, a_bits, cin, cout):
  """The four choice arguments as float64 arrays broadcast to one shape."""
  return np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (w_bits, a_bits, cin, cout)))


def choice_grid(model: CostModel, layer: LayerSpec, w_bits, a_bits, cin, cout) -> Cost:
  """Cost over the outer product of candidate lists: arrays of shape (len(w), len(a), len(cin), len(cout)).

  For a depthwise layer, ``cout`` is ignored: output channels follow input channels, and the grid's
  last axis has length 1.
  """
  w = np.asarray(w_bits, dtype=np.float64).reshape(-1, 1, 1, 1)
  a = np.asarray(a_bits, dtype=np.float64).reshape(1, -1, 1, 1)
  ci = np.asarray(cin, dtype=np.float64).reshape(1, 1, -1, 1)
  co = ci if layer.kind == "dwconv" else np.asarray(cout, dtype=np.float64).reshape(1, 1, 1, -1)
  model.check_bits(w, a)
  c = model.cost(layer, w, a, ci, co)
  shape = np.broadcast_shapes(w.shape, a.shape, ci.shape, co.shape)
  lat = np.broadcast_to(np.asarray(c.latency_s, dtype=np.float64), shape)
  en = np.broadcast_to(np.asarray(c.energy_j, dtype=np.float64), shape)
  for label, arr in (("latency_s", lat), ("energy_j", en)):
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
      raise ValueError(f"cost model {model.name!r} returned a non-finite or negative {label} for layer {layer.name!r}.")
  return Cost(lat, en)


def require_kind(layer, kinds: Sequence[str], model: str) -> None:
  """Raise ValueError unless ``layer.kind`` is one this model costs (unknown is an error, never a zero).

  Checked by every model itself: a LayerSpec-like object that bypassed ``LayerSpec.__post_init__`` must
  not slip through as a silently free layer.
  """
  kind = getattr(layer, "kind", None)
  if kind not in kinds:
    raise ValueError(f"layer {getattr(layer, 'name', '')!r} has kind={kind!r}, which cost model {model!r} does "
                     f"not model; use one of {tuple(kinds)} or add that kind to the model.")


def check_batch_size(batch_size, model: str) -> int:
  """``batch_size`` as an int >= 1, or one ValueError naming the field and the fix."""
  if isinstance(batch_size, bool) or not float(batch_size).is_integer() or int(batch_size) < 1:
    raise ValueError(f"batch_size={batch_size!r} of {model!r} must be an integer >= 1 (images per kernel call; "
                     f"costs are per image at that batch), e.g. hardware.batch_size=1.")
  return int(batch_size)


def round_up_to_supported(bits, supported: Sequence[int], field: str, model: str) -> np.ndarray:
  """Each bit-width mapped to the smallest supported precision >= it (a kernel of that precision runs it).

  Raises:
    ValueError: naming ``field`` if a bit-width is not an integer, is below 1 or is above the widest
      supported precision.
  """
  supported = np.asarray(sorted(int(b) for b in supported), dtype=np.float64)
  bits = np.asarray(bits, dtype=np.float64)
  bad = ~np.isfinite(bits) | (bits < 1) | (bits > supported[-1]) | (bits != np.round(bits))
  if np.any(bad):
    shown = [int(v) if np.isfinite(v) and v == round(v) else v for v in np.unique(bits[bad]).tolist()]
    raise ValueError(
        f"{field}={shown} cannot run on {model!r}: it runs integer precisions up to {int(supported[-1])} bits "
        f"({[int(b) for b in supported]}); choose integer candidates in 1..{int(supported[-1])}.")
  idx = np.searchsorted(supported, bits, side="left")
  return supported[idx]
