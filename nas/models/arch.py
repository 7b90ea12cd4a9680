"""The discrete architecture a search derives: per-layer bits and widths, with a JSON round trip."""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping

from hardware.base import LayerSpec


@dataclasses.dataclass(frozen=True)
class LayerChoice:
  """One layer of a derived network as the hardware sees it: its spec at the chosen widths, and its bits."""
  spec: LayerSpec
  w_bits: int | tuple[int, ...]  # a tuple: one bit-width per output channel (channel-wise mixed precision)
  a_bits: int

  def groups(self) -> list[tuple[LayerSpec, int]]:
    """The layer as the hardware runs it: one sub-layer per distinct weight bit-width, with its channels."""
    if not isinstance(self.w_bits, tuple):
      return [(self.spec, self.w_bits)]
    out = []
    for b in sorted(set(self.w_bits)):
      n = sum(1 for v in self.w_bits if v == b)
      cin = n if self.spec.kind == "dwconv" else self.spec.cin
      out.append((dataclasses.replace(self.spec, cin=cin, cout=n), b))
    return out


@dataclasses.dataclass(frozen=True)
class Architecture:
  """A point of the search space.

  Attributes:
    model: the supernet's registered name.
    choices: choice name -> chosen value (bit-width or channel count). Per-channel weight bits are stored
      as a tuple of bit-widths, one per output channel.
    layers: the layers with their chosen channel counts and bits, in forward order.
  """
  model: str
  choices: Mapping[str, Any]
  layers: tuple[LayerChoice, ...]

  def layer_specs(self) -> list[tuple[LayerSpec, int, int]]:
    """(LayerSpec at the chosen widths, weight bits, activation bits) per layer, for the cost models.

    A layer with per-channel weight bits appears as one sub-layer per distinct bit-width.
    """
    return [(spec, w, l.a_bits) for l in self.layers for spec, w in l.groups()]

  def to_dict(self) -> dict:
    return {
        "model": self.model,
        "choices": {k: list(v) if isinstance(v, tuple) else v for k, v in self.choices.items()},
        "layers": [dict(dataclasses.asdict(l.spec), w_bits=list(l.w_bits) if isinstance(l.w_bits, tuple) else l.w_bits,
                        a_bits=l.a_bits) for l in self.layers],
    }

  @classmethod
  def from_dict(cls, d: Mapping) -> "Architecture":
    layers = []
    for l in d["layers"]:
      l = dict(l)
      w, a = l.pop("w_bits"), l.pop("a_bits")
      layers.append(LayerChoice(LayerSpec(**l), tuple(w) if isinstance(w, list) else w, a))
    choices = {k: tuple(v) if isinstance(v, list) else v for k, v in d["choices"].items()}
    return cls(d["model"], choices, tuple(layers))

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), indent=1)

  @classmethod
  def from_json(cls, text: str) -> "Architecture":
    return cls.from_dict(json.loads(text))

  def table(self) -> list[dict]:
    """One row per layer for reports: name, kind, channels, bits. ``w_bits`` is text, so that per-channel
    layers ("2x10 4x14": 10 channels at 2 bits, 14 at 4) and per-layer ones ("8") share one column type."""
    return [{"layer": l.spec.name, "kind": l.spec.kind, "cin": l.spec.cin, "cout": l.spec.cout,
             "kernel": l.spec.kernel, "stride": l.spec.stride, "w_bits": bits_text(l.w_bits), "a_bits": l.a_bits}
            for l in self.layers]


def bits_text(w_bits) -> str:
  """'8' for a per-layer bit-width; '2x10 4x14' (bits x channels) for per-channel bit-widths."""
  if not isinstance(w_bits, tuple):
    return str(w_bits)
  return " ".join(f"{b}x{w_bits.count(b)}" for b in sorted(set(w_bits)))
