"""The quantiser extension point: a ``Quantizer`` protocol (a few pure functions) and the registry.

A quantiser is one module in ``nas/ops/quantizers/`` that defines the functions of ``Quantizer`` at module
level, a ``name`` and a ``step_decay`` flag, and ends with ``register(sys.modules[__name__])``. Every module
in the folder is imported with the package, so that is all a new quantiser needs; a search selects it with
``search.quantizer=NAME`` (``SearchSpace.quantizer``). Recipe: docs/extending/quantizer.md.

Every quantiser maps a real tensor to ``round(clip(x / s, -Q_N, Q_P)) * s`` on the symmetric integer grid the
cost model and the integer export assume (``nas.ops.quant.qrange``); what it chooses is how its learned
parameter (one per tensor, or one per output channel on the last axis) gives the step ``s``, how that
parameter starts, and the gradients. The parameter lives in a ``QuantStep`` (``nas.ops.layers``) whatever it
means (LSQ: the step; PACT: the clipping level alpha) and trains with Adam in the log domain
(``nas.train.finetune.log_domain``), so it must stay positive.

The quantiser is resolved by name when a layer is traced (a Python lookup, no op in the jitted step).
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Iterator, Protocol, runtime_checkable

import jax

DEFAULT = "lsq"


@runtime_checkable
class Quantizer(Protocol):
  """What a quantiser provides (optax style: small pure functions; a module of functions satisfies it).

  Arguments shared by the functions: ``x`` the tensor; ``param`` the learned parameter, broadcastable to ``x``
  (a scalar, or one per output channel on the last axis); ``qn``, ``qp`` the integer range [-qn, qp]
  (``nas.ops.quant.qrange``), Python ints or traced float arrays broadcastable to ``param`` (a candidate
  chosen inside the jitted step: the SDQ / one-hot path); ``qp`` is 0 for a pruned candidate (everything
  must then quantise to 0, with no NaN).

  Attributes:
    name: the registry key (``search.quantizer``).
    step_decay: whether the parameter gets L2 regularisation at the recipe's weight decay (PACT's
      lambda_alpha); the steps optimiser (``nas.train.finetune.weights_optimizer``) adds it.
  """

  name: str
  step_decay: bool

  def init(self, x: jax.Array, bits: int, signed: bool, axis: Any = None, kind: str = "activation") -> jax.Array:
    """The parameter's initial value from data ``x``, reduced over ``axis`` (None: the whole tensor).
    ``kind``: ``"weight"`` (per output channel, at construction and after weight inheritance) or
    ``"activation"`` (per tensor, from a calibration batch). Must be positive."""

  def quantize(self, x: jax.Array, param: jax.Array, qn, qp, grad_scale, out_scale=None) -> jax.Array:
    """Fake quantisation with its training gradients (to ``x`` and ``param``): the value is
    ``value(x, param, qn, qp)`` (times ``out_scale``, a constant broadcastable to ``param`` folded into the
    last multiply); ``grad_scale`` multiplies the parameter's gradient."""

  def value(self, x: jax.Array, param: jax.Array, qn, qp) -> jax.Array:
    """The forward value only, no gradient paths: ``round(clip(x / s, -qn, qp)) * s`` with
    ``s = step(param, qn, qp)`` (the hand-written backward passes of ``nas.ops.layers`` recompute it)."""

  def grad_scale(self, n_elements: int, qp):
    """The parameter's gradient scale for a tensor of ``n_elements`` per example (per step): a Python float
    for a Python int ``qp``; a float32 NumPy array for a float32 NumPy array of ``qp`` (one per candidate)."""

  def step(self, param, qn, qp):
    """The real value of one integer step: the integer export maps x to ``round(clip(x / s, -qn, qp))``."""


REGISTRY: dict[str, Quantizer] = {}
_FIELDS = ("name", "step_decay", "init", "quantize", "value", "grad_scale", "step")


def register(q):
  """Registers quantiser ``q`` (a module or any object with ``Quantizer``'s members) under ``q.name``.

  Registering the same object twice is a no-op; another object under a taken name is an error.
  """
  missing = [f for f in _FIELDS if not hasattr(q, f)]
  if missing:
    raise TypeError(f"quantizer {getattr(q, 'name', q)!r} lacks {missing}; see nas.ops.quantizers.base.Quantizer.")
  prior = REGISTRY.get(q.name)
  if prior is not None and prior is not q and getattr(prior, "__name__", None) != getattr(q, "__name__", 0):
    raise ValueError(f"quantizer {q.name!r} is registered twice ({_where(prior)}, {_where(q)}).")
  REGISTRY[q.name] = q
  return q


def _where(q) -> str:
  return getattr(q, "__name__", None) or type(q).__name__


def names() -> tuple[str, ...]:
  return tuple(sorted(REGISTRY))


def get(name: str) -> Quantizer:
  """The quantiser registered as ``name``."""
  try:
    return REGISTRY[name]
  except KeyError:
    raise ValueError(f"search.quantizer={name!r} is unknown; use one of {list(names())}, or add a module "
                     f"to nas/ops/quantizers/ (docs/extending/quantizer.md).") from None


_CURRENT = contextvars.ContextVar("quantizer", default=DEFAULT)


def current() -> str:
  """The quantiser layers built now take when given none (``using``; default ``lsq``)."""
  return _CURRENT.get()


@contextlib.contextmanager
def using(name: str) -> Iterator[str]:
  """Layers (``QLayer``, ``ActQuantizer``) built inside this block quantise with ``name``."""
  get(name)
  token = _CURRENT.set(name)
  try:
    yield name
  finally:
    _CURRENT.reset(token)
