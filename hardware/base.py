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

from hardware.nm import NM

LAYER_KINDS = ("conv", "dwconv", "dense", "linear", "matmul", "softmax", "layernorm")
WEIGHTED_KINDS = ("conv", "dwconv", "dense", "linear")  # kinds with stored weights
SPARSE_KINDS = ("conv", "dense", "linear")  # kinds that may carry N:M weight sparsity (``LayerSpec.nm``)
ELEMENTWISE_KINDS = ("softmax", "layernorm")  # no MACs, no weights; computed in floating point


@dataclasses.dataclass(frozen=True)
class LayerSpec:
  """One layer as the hardware sees it, at its nominal (usually widest) channel counts.

  Attributes:
    kind: one of ``LAYER_KINDS``:
      ``"conv"``: dense 2-D convolution; ``"dwconv"``: depthwise (groups == cin == cout); ``"dense"``: a fully
      connected layer on one vector per image;
      ``"linear"``: a token-wise dense layer over a sequence of ``in_h`` tokens (``in_w`` = 1; a GEMM of
      in_h x cin by cin x cout);
      ``"matmul"``: a product of two activations batched over heads (attention's QK^T and attention x V):
      per head, rows ``in_h`` by reduction ``cin`` times ``cin`` by ``head_cols`` columns; ``cout`` = heads x
      ``head_cols``, so the number of heads is a choice of ``cout``. Its "weights" are the second operand
      (keys or values), made at run time: in a cost call ``w_bits`` is that operand's bit-width, ``a_bits``
      the first's; nothing is stored (``metrics.weight_bytes`` is 0);
      ``"softmax"``, ``"layernorm"``: element-wise work over ``in_h`` rows of ``cin`` values (``cout`` ==
      ``cin``), in floating point: the bit-widths of a cost call are ignored.
    cin: input channels (features for ``dense`` / ``linear``; the per-head reduction length for ``matmul``).
    cout: output channels (features; heads x head_cols for ``matmul``).
    kernel: square kernel size (1 for every kind but the convolutions).
    stride: spatial stride; 'SAME' padding, so the output is ``ceil(in / stride)``.
    in_h: input feature-map height (1 for ``dense``; tokens or rows for the sequence kinds).
    in_w: input feature-map width (1 for ``dense`` and the sequence kinds).
    name: the layer's name in its network, for messages.
    head_cols: ``matmul`` only: output columns per head (``cout`` is a multiple of it).
    nm: N:M semi-structured weight sparsity, (N, M): N weights kept in every M consecutive weights along the
      reduction (input) axis; None is dense. Only for ``SPARSE_KINDS``. MAC, weight and traffic counts stay
      dense here: what the pattern buys is each cost model's to say (``density``, ``metrics.weight_bytes``).
  """
  kind: str
  cin: int
  cout: int
  kernel: int = 1
  stride: int = 1
  in_h: int = 1
  in_w: int = 1
  name: str = ""
  head_cols: int = 0
  nm: tuple[int, int] | None = None

  def __post_init__(self):
    if self.kind not in LAYER_KINDS:
      raise ValueError(f"LayerSpec.kind={self.kind!r} of layer {self.name!r} is unknown; use one of {LAYER_KINDS}.")
    for field in ("cin", "cout", "kernel", "stride", "in_h", "in_w"):
      if int(getattr(self, field)) < 1:
        raise ValueError(f"LayerSpec.{field}={getattr(self, field)} of layer {self.name!r} must be >= 1.")
    if self.kind in ("dwconv",) + ELEMENTWISE_KINDS and self.cin != self.cout:
      raise ValueError(f"LayerSpec of {self.kind} layer {self.name!r} needs cin == cout (got {self.cin}, {self.cout}).")
    if self.kind in ("linear", "matmul") + ELEMENTWISE_KINDS and (self.kernel, self.stride, self.in_w) != (1, 1, 1):
      raise ValueError(f"LayerSpec of {self.kind} layer {self.name!r} needs kernel = stride = in_w = 1 (a sequence of "
                       f"in_h rows); got kernel={self.kernel}, stride={self.stride}, in_w={self.in_w}.")
    if self.kind == "matmul":
      if self.head_cols < 1 or self.cout % self.head_cols:
        raise ValueError(f"LayerSpec of matmul layer {self.name!r} needs head_cols >= 1 dividing cout={self.cout} "
                         f"(cout = heads x head_cols); got head_cols={self.head_cols}.")
    elif self.head_cols:
      raise ValueError(f"LayerSpec.head_cols={self.head_cols} of {self.kind} layer {self.name!r}: only a matmul has "
                       f"heads; leave it 0.")
    if self.nm is not None:
      nm = NM.parse(self.nm, f"LayerSpec.nm of layer {self.name!r}")
      if nm is not None and self.kind not in SPARSE_KINDS:
        raise ValueError(f"LayerSpec.nm={self.nm} of {self.kind} layer {self.name!r}: N:M sparsity applies to "
                         f"{SPARSE_KINDS} only.")
      object.__setattr__(self, "nm", nm)

  @property
  def out_h(self) -> int:
    return -(-self.in_h // self.stride)

  @property
  def out_w(self) -> int:
    return -(-self.in_w // self.stride)

  @property
  def groups(self) -> int:
    return self.cin if self.kind == "dwconv" else 1

  @property
  def density(self) -> float:
    """Fraction of the weights an N:M pattern keeps (N / M); 1.0 when dense."""
    return 1.0 if self.nm is None else self.nm[0] / self.nm[1]

  def heads(self, cout=None) -> np.ndarray:
    """``matmul``: heads at ``cout`` output columns (cout / head_cols); 1 for every other kind."""
    if self.kind != "matmul":
      return np.asarray(1.0)
    _, cout = self._channels(None, cout)
    return cout / self.head_cols

  def _channels(self, cin, cout):
    cin = np.asarray(self.cin if cin is None else cin, dtype=np.float64)
    cout = np.asarray(self.cout if cout is None else cout, dtype=np.float64)
    return cin, cout

  def elements(self, cin=None) -> np.ndarray:
    """Element-wise kinds: values processed per image (rows x cin); 0 for the others."""
    cin, _ = self._channels(cin, None)
    return self.in_h * cin if self.kind in ELEMENTWISE_KINDS else 0 * cin

  def macs(self, cin=None, cout=None) -> np.ndarray:
    """Multiply-accumulates at the given channel counts (arrays broadcast). Depthwise uses ``cout``; element-wise
    kinds have none (``elements``)."""
    cin, cout = self._channels(cin, cout)
    spatial = self.out_h * self.out_w * self.kernel * self.kernel
    if self.kind == "dwconv":
      return spatial * cout + 0 * cin
    if self.kind in ELEMENTWISE_KINDS:
      return 0 * cin * cout
    return spatial * cin * cout

  def weight_count(self, cin=None, cout=None) -> np.ndarray:
    """Number of weights (no bias) at the given channel counts, dense (an N:M pattern keeps ``density`` of
    them); for ``matmul`` the second operand's values (made at run time, not stored); 0 for element-wise kinds."""
    cin, cout = self._channels(cin, cout)
    if self.kind == "dwconv":
      return self.kernel * self.kernel * cout + 0 * cin
    if self.kind in ELEMENTWISE_KINDS:
      return 0 * cin * cout
    return self.kernel * self.kernel * cin * cout

  def input_count(self, cin=None, cout=None) -> np.ndarray:
    """Number of input activations (one image) at the given input channel count (``matmul``: the first
    operand, rows x cin per head, at the heads ``cout`` gives)."""
    cin, _ = self._channels(cin, None)
    return self.in_h * self.in_w * cin * self.heads(cout)

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

  For a depthwise or an element-wise layer (softmax, layernorm), ``cout`` is ignored: output channels follow
  input channels, and the grid's last axis has length 1.
  """
  w = np.asarray(w_bits, dtype=np.float64).reshape(-1, 1, 1, 1)
  a = np.asarray(a_bits, dtype=np.float64).reshape(1, -1, 1, 1)
  ci = np.asarray(cin, dtype=np.float64).reshape(1, 1, -1, 1)
  tied = layer.kind in ("dwconv",) + ELEMENTWISE_KINDS  # one channel count: cout follows cin
  co = ci if tied else np.asarray(cout, dtype=np.float64).reshape(1, 1, 1, -1)
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
