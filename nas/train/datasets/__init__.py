"""Dataset loaders, registered by name: a new dataset is one module in this folder (a loader decorated with
``@register("name")``) and one ``conf/dataset/<name>.yaml`` (``name: <name>`` and the fields it reads).

A loader returns a ``nas.train.data.Dataset`` and takes keyword arguments among the ``dataset`` config group's
fields (``root``, ``limit``, ``test_fraction``, ``split_seed``); :func:`load` passes it the ones it declares.
Every module here is imported when the package is, so registering is all a new module has to do.
"""
from __future__ import annotations

import functools
import importlib
import json
import inspect
import pkgutil
from typing import Callable

DATASETS: dict[str, Callable] = {}


def register(name: str):
  """Decorator: registers a loader under ``name`` (the config's ``dataset.name``)."""
  def add(fn: Callable) -> Callable:
    if name in DATASETS and DATASETS[name] is not fn:
      raise ValueError(f"dataset {name!r} is registered twice ({DATASETS[name].__module__}, {fn.__module__}).")
    DATASETS[name] = fn
    return fn
  return add


def load(name: str, **fields):
  """The dataset ``name``, its loader called with the ``fields`` it declares (the others are ignored).

  Raises:
    ValueError: naming ``dataset.name`` and the registered names, when ``name`` is unknown.
  """
  if name not in DATASETS:
    raise ValueError(f"dataset.name={name!r} is unknown; use one of {sorted(DATASETS)} ('digits' is bundled, "
                     f"'fashion_mnist' reads Debian's dataset-fashion-mnist package, the others need "
                     f"dataset.root=/path/to/folder), or add a module to nas/train/datasets/.")
  fn = DATASETS[name]
  params = inspect.signature(fn).parameters
  return fn(**{k: v for k, v in fields.items() if k in params})


for _module in pkgutil.iter_modules(__path__):
  importlib.import_module(f"{__name__}.{_module.name}")

from nas.train.datasets.cifar10 import load_cifar10  # noqa: E402  (the loaders by their own names)
from nas.train.datasets.digits import load_digits  # noqa: E402
from nas.train.datasets.idx import FASHION_MNIST_ROOT, load_fashion_mnist, load_mnist  # noqa: E402


def load_shared(name: str, **fields):
  """``load(name, **fields)``, loaded once per process for the same name and fields (the jobs of a sweep run in
  one process share it), its arrays read-only: a caller that needs to change them copies them first."""
  return _load_shared(json.dumps({"name": name, **fields}, sort_keys=True, default=str))


@functools.lru_cache(maxsize=2)
def _load_shared(key: str):
  fields = json.loads(key)
  data = load(fields.pop("name"), **fields)
  for a in (data.x_train, data.y_train, data.x_test, data.y_test):
    a.flags.writeable = False
  return data
