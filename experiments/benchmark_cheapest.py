"""The uniform precision that is cheapest per MAC on a protocol's target, for the baselines of its comparison.

A protocol's ``baselines.cheapest: {widths: [0.5, 0.75]}`` adds, for each comparison (target, metric), the uniform
networks at that target's cheapest precision per MAC at each listed width (``experiments.benchmark`` plans them).
The strongest simple networks depend on the target: a core without sub-byte SIMD pays more per MAC for 2- and
4-bit operands than for 8-bit ones, an array that runs 2-bit operands as 4-bit gains nothing below 4 bits. So
the pair is priced, not listed: the uniform network of every (w_bits, a_bits) pair of the search space at base
width (the network a uniform baseline trains, ``experiments.baselines``) is costed on the target's preset by the
cost model the search uses (``nas.search.cost``), and the pair of least cost per MAC is chosen; on a tie (e.g. a
target that runs 2-bit as 4-bit prices W2A2 and W4A4 alike) the higher precision: most bits, then most weight
bits. MACs are the same for every pair at one width, so the least cost per MAC is the least cost.

The network is built abstractly (``nnx.eval_shape``: no weights, nothing compiled) from the search app's config
with the protocol's ``common`` overrides; the dataset is read once for its input shape and class count.
"""
from __future__ import annotations

import functools
import pathlib
from typing import Sequence

from experiments.config import BUDGET_METRICS

CONF_DIR = pathlib.Path(__file__).resolve().parent.parent / "conf"
TIE_RTOL = 1e-9  # costs per MAC within this relative difference of the least are a tie
FAMILY = "uniform-cheapest"  # the baseline family of the networks this adds
RULE = ("least cost per MAC of the uniform network at base width over the search space's (w_bits, a_bits) pairs; "
        "on a tie the higher precision (most bits, then most weight bits)")


def check_option(option, where: str) -> list[float]:
  """The widths of ``baselines.cheapest`` (a mapping with a non-empty list of positive ``widths``)."""
  widths = option.get("widths") if isinstance(option, dict) else None
  if not (isinstance(widths, list) and widths and all(isinstance(w, (int, float)) and w > 0 for w in widths)):
    raise ValueError(f"{where}: baselines.cheapest={option!r} must be a mapping with a non-empty list of positive "
                     f"width multiples, e.g. `cheapest: {{widths: [0.5, 0.75]}}`.")
  return [float(w) for w in widths]


def _compose(overrides: Sequence[str]):
  from hydra import compose, initialize_config_dir
  from hydra.errors import HydraException
  from omegaconf.errors import OmegaConfBaseException

  from experiments import config as appconfig
  appconfig.register()
  try:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
      return compose(config_name="config", overrides=list(overrides))
  except (HydraException, OmegaConfBaseException) as e:
    raise ValueError(f"baselines.cheapest prices the search app's config with the protocol's overrides "
                     f"{list(overrides)}, which does not compose: {e}") from None


@functools.lru_cache(maxsize=8)
def _supernet(common: tuple[str, ...]):
  """(config, search space, the supernet built abstractly) for the protocol's common overrides; the network
  does not depend on the target, so it is built once per ``common``."""
  from flax import nnx

  from experiments import search as app
  from nas.models import build_model
  cfg = _compose(common)
  space = app.search_space(cfg)
  data = app.load_dataset(cfg)
  args = app._model_args(cfg, data)
  model = nnx.eval_shape(lambda: build_model(cfg.model.name, space, seed=0, **args))
  return cfg, space, model


@functools.lru_cache(maxsize=32)
def price_pairs(common: tuple[str, ...], target: str) -> tuple[dict, ...]:
  """Every (w_bits, a_bits) pair of the search space: its uniform network's MACs and costs on ``target`` (one
  key per metric of ``BUDGET_METRICS``) at base width, or ``error`` when the target cannot run it."""
  from omegaconf import open_dict

  from experiments import search as app
  from experiments.baselines import baseline_choices
  from nas.search import cost as costlib
  _, space, model = _supernet(common)
  cfg = _compose([*common, f"hardware={target}", "baseline.kind=uniform", "baseline.width_mult=1.0",
                  "baseline.nm=null"])
  hw = app.instantiate_hardware(cfg.hardware)
  rows = []
  for w in space.w_bits:
    for a in space.a_bits:
      with open_dict(cfg):
        cfg.baseline.w_bits, cfg.baseline.a_bits = int(w), int(a)
      arch = model.architecture(baseline_choices(model, cfg))
      metrics = costlib.architecture_metrics(arch)
      try:
        costs = {**costlib.architecture_cost(arch, hw), "weight_bytes": metrics["weight_bytes"]}
      except ValueError as e:  # a bit-width this target cannot run: not a candidate here
        rows.append({"w_bits": int(w), "a_bits": int(a), "error": str(e)})
        continue
      rows.append({"w_bits": int(w), "a_bits": int(a), "macs": metrics["macs"], **costs})
  return tuple(rows)


def choose(rows: Sequence[dict], metric: str) -> dict:
  """The pair of least ``metric`` per MAC among ``rows`` (``price_pairs``), the higher precision on a tie.

  Returns:
    ``pair`` [w_bits, a_bits], ``tied`` (every pair within TIE_RTOL of the least, the chosen one included) and
    ``pairs``: each pair's cost, MACs and cost per MAC (or its error).

  Raises:
    ValueError: the target can run no pair of the space.
  """
  table = [{"w_bits": r["w_bits"], "a_bits": r["a_bits"], "error": r["error"]} if "error" in r else
           {"w_bits": r["w_bits"], "a_bits": r["a_bits"], "cost": r[metric], "macs": r["macs"],
            "cost_per_mac": r[metric] / r["macs"]} for r in rows]
  priced = [r for r in table if "error" not in r]
  if not priced:
    raise ValueError(f"baselines.cheapest: the target runs no (w_bits, a_bits) pair of the search space "
                     f"({table[0]['error'] if table else 'no pairs'}).")
  least = min(r["cost_per_mac"] for r in priced)
  tied = [r for r in priced if r["cost_per_mac"] <= least * (1 + TIE_RTOL)]
  best = max(tied, key=lambda r: (r["w_bits"] + r["a_bits"], r["w_bits"]))
  return {"pair": [best["w_bits"], best["a_bits"]], "tied": [[r["w_bits"], r["a_bits"]] for r in tied],
          "pairs": table}


def cheapest_table(spec: dict) -> list[dict] | None:
  """Per comparison of the protocol: the chosen pair, the widths and every pair's cost per MAC (the manifest's
  ``cheapest``); None when the protocol has no ``baselines.cheapest``."""
  option = (spec.get("baselines") or {}).get("cheapest")
  if option is None:
    return None
  widths = check_option(option, f"protocol {spec.get('name')}")
  common = tuple(spec.get("common") or [])
  out = []
  for comp in spec["comparisons"]:
    metric = BUDGET_METRICS[comp["metric"]]
    out.append({"target": comp["target"], "metric": metric, "widths": widths, "rule": RULE,
                **choose(price_pairs(common, comp["target"]), metric)})
  return out
