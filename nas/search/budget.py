"""Budgets: what a search may spend, and the cheapest network of a search space.

A budget is a :class:`Constraint` on one metric. The app states it as ``budget.fraction`` (of the reference
network: every searchable layer W8A8 at base width) or ``budget.room`` (between the cheapest network of the
space on the target, room 0, and the reference, room 1), so one value is feasible on every target;
:func:`resolve_budget` turns either into a limit, and :func:`check_room` stops a budget that no network of the
space meets before any training.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

from nas.search import cost as costlib
from nas.search.derive import discrete_costs

DEFAULT_ROOM = 0.5  # neither budget.fraction nor budget.room set: halfway between the cheapest and the reference


@dataclasses.dataclass(frozen=True)
class Constraint:
  """Expected ``metric`` (one of nas.search.cost.METRICS) must stay at or below ``limit`` (its unit)."""
  metric: str
  limit: float

  def __post_init__(self):
    if self.metric not in costlib.METRICS:
      raise ValueError(f"budget metric {self.metric!r} is unknown; use one of {costlib.METRICS}.")
    if not self.limit > 0:
      raise ValueError(f"budget limit for {self.metric} must be > 0, got {self.limit}.")


def cheapest_choices(model) -> dict:
  out = {}
  for n, c in model.choices.items():
    per_channel = getattr(c, "per_channel", False)
    out[n] = (min(c.values),) * c.logits[...].shape[0] if per_channel else min(c.values)
  return out


def cost_lower_bound(tables, metrics) -> dict[str, float]:
  """Sum over layers of each layer's cheapest grid entry (0 for an op that can be left out, ``OpAxes.dead_if``):
  no network of the space costs less.

  (Costs need not fall with bits or widths, e.g. a CPU whose narrow convolutions take a slow path, so the
  network of smallest candidates is not always the cheapest.)
  """
  def least(t, m):  # an op that can be left out (``OpAxes.dead_if``) can cost nothing
    return 0.0 if (t.keys is not None and t.keys.dead_if) else float(np.min(t.grids[m]))
  return {m: float(sum(least(t, m) for t in tables)) for m in metrics}


def cheapest_network(model, tables, metric: str) -> tuple[dict, float]:
  """A network of the space at (or near) the least cost on ``metric``: (choices, its cost).

  The per-layer bound (``cost_lower_bound``) need not be reached by any network: a width is both one layer's
  output and the next one's input, and a target whose narrow layers take a slow path has each layer's minimum
  at a different width. This descends coordinate-wise (every candidate of one choice at a time, per-channel
  choices kept uniform, until no single change lowers the cost) from the all-smallest and the all-largest
  networks and keeps the cheaper end point: a real network, so a budget at its cost is always feasible.
  """
  return _coordinate_search(model, tables, metric, minimise=True)


def _coordinate_search(model, tables, metric: str, minimise: bool) -> tuple[dict, float]:
  """Coordinate descent (``minimise``) or ascent on ``metric`` from both uniform end points of the space (the
  one of the goal's direction first), every candidate of one choice at a time, per-channel choices kept
  uniform, until no single change improves; the better end point: (choices, its cost)."""
  def uniform(c, v):
    return (v,) * c.logits[...].shape[0] if getattr(c, "per_channel", False) else v

  def cost(choices):
    return discrete_costs(tables, choices, model, [metric])[metric]

  def better(a, b, tol):
    return a < b * (1 - tol) if minimise else a > b * (1 + tol)

  best = None
  for pick in ((min, max) if minimise else (max, min)):
    choices = {n: uniform(c, pick(c.values)) for n, c in model.choices.items()}
    current = cost(choices)
    improved = True
    while improved:
      improved = False
      for n, c in model.choices.items():
        for v in c.values:
          trial = dict(choices, **{n: uniform(c, v)})
          tc = cost(trial)
          if better(tc, current, 1e-12):
            choices, current, improved = trial, tc, True
    if best is None or better(current, best[1], 0.0):
      best = (choices, current)
  return best


def check_feasible(model, tables, constraints: Sequence[Constraint]) -> None:
  """Raises before training if a budget is below what any network of the space can cost."""
  bound = cost_lower_bound(tables, [c.metric for c in constraints])
  for c in constraints:
    if bound[c.metric] > c.limit:
      raise ValueError(f"budget on {c.metric} ({c.limit:.4g}) is below the cheapest network of the search space "
                       f"({bound[c.metric]:.4g}); raise budget.fraction or add smaller candidates (search.w_bits, "
                       f"search.a_bits, search.width_mults).")


@dataclasses.dataclass(frozen=True)
class Budget:
  """A resolved budget: its ``value`` (the metric's unit), ``fraction`` (value / reference), ``room`` (None when
  given as a fraction), ``cheapest`` (the cheapest network's cost / reference) and a sentence for the log."""
  value: float
  fraction: float
  room: float | None
  cheapest: float
  text: str


def resolve_budget(least: float, metric: str, reference: float, fraction: float | None = None,
                   room: float | None = None) -> Budget:
  """The searched budget from ``fraction`` or ``room`` (neither: room 0.5).

  room r puts the limit at least + r x (reference - least), where ``least`` is the cost of the cheapest network
  of the search space on the target (:func:`cheapest_network`): room 0 allows only it, 1 the reference's cost.
  """
  if fraction is not None:
    room, value = None, float(fraction) * reference
    text = f"{fraction:g} x the reference {metric} (budget.fraction)"
  else:
    room = DEFAULT_ROOM if room is None else float(room)
    value = least + room * max(0.0, reference - least)  # room 0: exactly the cheapest network's cost
    text = (f"{value / reference:.4g} x the reference {metric}: budget.room={room:g} between the cheapest network "
            f"({least / reference:.4g} x) and the reference")
  return Budget(value=value, fraction=value / reference, room=room, cheapest=least / reference, text=text)


def check_room(cheapest: dict[str, float], constraints: Sequence[Constraint], reference: dict[str, float],
               target: str, batch_hint: bool = False) -> None:
  """One sentence before any training when a budget is below every network of the space, with the fraction
  of the reference the cheapest one costs and what to change.

  Args:
    cheapest: per constrained metric, the cost of the cheapest network (:func:`cheapest_network`).
    constraints: the budgets.
    reference: per metric, the reference network's cost.
    target: the hardware preset's name, for the message.
    batch_hint: the target has a batch size (a larger one shares the fixed time per layer).
  """
  for c in constraints:
    if cheapest[c.metric] > c.limit:
      least = cheapest[c.metric] / reference[c.metric]
      raise ValueError(
          f"budget {c.limit:.4g} on {c.metric} ({c.limit / reference[c.metric]:.3g} x the reference) is below the "
          f"cheapest network of the search space on {target!r} ({least:.3g} x the reference); use "
          f"budget.fraction={min(1.0, math.ceil(least * 100) / 100 + 0.01):g} or more, budget.room (0-1: between "
          f"the cheapest network and the reference, on any target), another budget.metric "
          f"(e.g. weight_bytes), smaller candidates (search.width_mults, search.w_bits)"
          + (", or a larger hardware.batch_size (it shares the fixed time per layer)" if batch_hint else "") + ".")


def costliest_network(model, tables, metric: str) -> tuple[dict, float]:
  """A network of the space at (or near) the greatest cost on ``metric``: (choices, its cost).

  The mirror of :func:`cheapest_network`: coordinate ascent (every candidate of one choice at a time,
  per-channel choices kept uniform, until no single change raises the cost) from the all-largest and the
  all-smallest networks, keeping the costlier end point. A real network, so the space's greatest cost is at
  least this; where costs rise with bits and widths (every shipped preset's models) it is the all-largest
  network itself.
  """
  return _coordinate_search(model, tables, metric, minimise=False)


def unbound_budget(model, tables, constraint: Constraint, reference: float, target: str,
                   field: str) -> str | None:
  """A sentence when ``constraint`` is at or above the costliest network of the space (:func:`costliest_network`)
  on ``target``, so it does not bind (the search then trades nothing for cost); None when it binds.

  Cheap when it binds: the all-largest network is costed first, and the ascent runs only when the budget is at
  or above it.

  Args:
    reference: the reference network's cost on the constraint's metric (for the fractions in the sentence).
    field: the setting that set the budget, for the sentence (``budget.fraction=1e+09``).
  """
  largest = {n: ((max(c.values),) * c.logits[...].shape[0] if getattr(c, "per_channel", False) else max(c.values))
             for n, c in model.choices.items()}
  if constraint.limit < discrete_costs(tables, largest, model, [constraint.metric])[constraint.metric]:
    return None
  _, most = costliest_network(model, tables, constraint.metric)
  if constraint.limit < most:
    return None
  below = math.floor(most / reference * 100) / 100
  name = field.split("=")[0]
  fix = (f"use a smaller budget.room, or budget.fraction below {below:g}" if name == "budget.room" else
         f"set {name} below {below:g}, or use budget.room (0-1)" if name == "budget.fraction" else
         f"set {name} below {below:g}")
  return (f"{field} puts the {constraint.metric} budget ({constraint.limit:.4g}, {constraint.limit / reference:.4g} x "
          f"the reference) at or above the costliest network of the search space on {target!r} ({most:.4g}, "
          f"{most / reference:.4g} x the reference, by coordinate ascent from the largest and smallest networks), "
          f"so it does not bind and the search trades no accuracy for cost; {fix}.")
