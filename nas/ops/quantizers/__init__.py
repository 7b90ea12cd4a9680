"""Quantisers, registered by name (``search.quantizer``): the protocol and registry are in ``base``; each other
module here is one quantiser and registers itself when imported. Every module of this folder is imported with
the package, so adding a quantiser is adding a module (docs/extending/quantizer.md)."""
from __future__ import annotations

import importlib
import pkgutil

from nas.ops.quantizers.base import DEFAULT, REGISTRY, Quantizer, current, get, names, register, using

for _module in pkgutil.iter_modules(__path__):
  if _module.name != "base":
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["DEFAULT", "REGISTRY", "Quantizer", "current", "get", "names", "register", "using"]
