"""Supernets, registered by name."""
from __future__ import annotations

from flax import nnx

from nas.arch import Architecture
from nas.models.base import Supernet
from nas.models.digits import DigitsCNN, FashionCNN
from nas.models.mobilenet import MobileNetV2
from nas.models.resnet import ResNet20
from nas.models.vit import ViT
from nas.space import SearchSpace

MODELS: dict[str, type[Supernet]] = {"digits_cnn": DigitsCNN, "fmnist_cnn": FashionCNN, "resnet20": ResNet20, "mobilenetv2": MobileNetV2,
                                     "vit": ViT}


def build_model(name: str, space: SearchSpace, *, seed: int = 0, arch: Architecture | None = None,
                **kwargs) -> Supernet:
  """The supernet ``name`` over ``space`` (or, with ``arch``, the fixed network it derives)."""
  if name not in MODELS:
    raise ValueError(f"model.name={name!r} is unknown; use one of {sorted(MODELS)}.")
  return MODELS[name](space, rngs=nnx.Rngs(seed), arch=arch, **kwargs)
