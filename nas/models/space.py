"""The search space: candidate bit-widths and widths, and how a choice is made trainable."""
from __future__ import annotations

import dataclasses

from nas.ops import quant
from nas.ops import quantizers

METHODS = ("gumbel", "sdq")


@dataclasses.dataclass(frozen=True)
class SearchSpace:
  """Candidates shared by every searchable layer of a supernet.

  Attributes:
    w_bits: weight bit-width candidates (integers 2..8).
    a_bits: activation bit-width candidates (integers 2..8).
    width_mults: output-width candidates as multiples of each layer's base width; below 1 prunes,
      above 1 expands (Neural Channel Expansion).
    first_layer_bits: fixed weight and activation bits of the first layer (None: searched like the rest).
    last_layer_bits: fixed bits of the classifier (None: searched).
    channel_multiple: width candidates are rounded to a multiple of this (e.g. 8 for tensor-core tiles).
    method: how a choice is trained: ``gumbel`` (Gumbel-softmax over candidates) or ``sdq``.
    hard: straight-through one-hot Gumbel samples (default) instead of relaxed ones: the weights then
      train on discrete networks, so the derived network's inherited weights already work.
    per_channel_w: one weight bit-width choice per output channel instead of per layer.
    quantize: False builds a floating-point network (a teacher); bit choices are then ignored.
    quantizer: the fake quantiser of every weight and activation, by its registered name
      (``nas.ops.quantizers``): ``lsq`` (Esser et al. 2020) or ``pact`` (Choi et al. 2018), or one added as a
      module there (docs/extending/quantizer.md).
  """
  w_bits: tuple[int, ...] = (2, 4, 8)
  a_bits: tuple[int, ...] = (2, 4, 8)
  width_mults: tuple[float, ...] = (0.5, 0.75, 1.0, 1.5)
  first_layer_bits: int | None = 8
  last_layer_bits: int | None = 8
  channel_multiple: int = 1
  method: str = "gumbel"
  hard: bool = True
  per_channel_w: bool = False
  quantize: bool = True
  quantizer: str = "lsq"

  def __post_init__(self):
    object.__setattr__(self, "w_bits", quant.check_bits(self.w_bits, "search.w_bits"))
    object.__setattr__(self, "a_bits", quant.check_bits(self.a_bits, "search.a_bits"))
    for field in ("first_layer_bits", "last_layer_bits"):
      value = getattr(self, field)
      if value is not None:
        quant.check_bits([value], f"search.{field}")
    mults = tuple(float(m) for m in (self.width_mults or ()))
    if not mults:
      raise ValueError("search.width_mults is empty; give at least one width multiple, e.g. [0.5, 1.0].")
    if any(m <= 0 for m in mults):
      raise ValueError(f"search.width_mults={list(mults)} must all be > 0 (1.0 is the base width).")
    object.__setattr__(self, "width_mults", tuple(sorted(set(mults))))
    if self.channel_multiple < 1:
      raise ValueError(f"search.channel_multiple={self.channel_multiple} must be >= 1.")
    if self.quantizer not in quantizers.names():
      raise ValueError(f"search.quantizer={self.quantizer!r} is unknown; use one of {list(quantizers.names())}, "
                       f"or add a module to nas/ops/quantizers/ (docs/extending/quantizer.md).")
    if self.method not in METHODS:
      raise ValueError(f"search.method={self.method!r} is unknown; use one of {METHODS}.")

  def channels(self, base: int) -> tuple[int, ...]:
    """Distinct channel counts of the width candidates for a layer of ``base`` channels."""
    m = self.channel_multiple
    return tuple(sorted({max(m, int(round(base * w / m)) * m) for w in self.width_mults}))

  def base_channels(self, base: int) -> int:
    m = self.channel_multiple
    return max(m, int(round(base / m)) * m)
