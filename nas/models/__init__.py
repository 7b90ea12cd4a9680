"""Supernets, registered by name, with the search space (``space``) and the discrete architecture (``arch``).

A new model is one module in this folder whose ``Supernet`` subclass is decorated with ``@register`` (its
``name`` is the config's ``model.name``), and one ``conf/model/<name>.yaml``. Every module here is imported
when the package is, so registering is all a new module has to do.
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil

from flax import nnx

MODELS: dict[str, type] = {}


def register(cls):
  """Class decorator: registers a Supernet subclass under its ``name``."""
  if cls.name in MODELS and MODELS[cls.name] is not cls:
    raise ValueError(f"model {cls.name!r} is registered twice ({MODELS[cls.name].__module__}, {cls.__module__}).")
  MODELS[cls.name] = cls
  return cls


def build_model(name: str, space, *, seed: int = 0, arch=None, **kwargs):
  """The supernet ``name`` over ``space`` (or, with ``arch``, the fixed network it derives)."""
  if name not in MODELS:
    raise ValueError(f"model.name={name!r} is unknown; use one of {sorted(MODELS)}, or add a module to nas/models/.")
  from nas.ops import quantizers  # the space's quantiser is bound when the layers are built
  with quantizers.using(getattr(space, "quantizer", quantizers.DEFAULT)):
    return MODELS[name](space, rngs=nnx.Rngs(seed), arch=arch, **kwargs)


def default_input_shape(name: str) -> tuple[int, ...]:
  """The (H, W, C) a model is built for when the data does not say (its constructor's default)."""
  return tuple(inspect.signature(MODELS[name].__init__).parameters["input_shape"].default)


for _module in pkgutil.iter_modules(__path__):
  importlib.import_module(f"{__name__}.{_module.name}")

from nas.models.arch import Architecture  # noqa: E402
from nas.models.base import Supernet  # noqa: E402
from nas.models.space import SearchSpace  # noqa: E402
