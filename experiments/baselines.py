"""Baselines of the search app: a uniform network (one precision, one width, one N:M pattern everywhere) or a
random network of the search space, as choices of the supernet."""
from __future__ import annotations

import numpy as np
from omegaconf import DictConfig

from hardware.nm import DENSE, NM


def models_with_nm() -> list[str]:
  """The registered models that search N:M sparsity (their constructor takes ``nm_patterns``)."""
  import inspect
  from nas.models import MODELS
  return sorted(name for name, cls in MODELS.items() if "nm_patterns" in inspect.signature(cls.__init__).parameters)


def baseline_choices(model, cfg: DictConfig) -> dict:
  """Uniform precision at one width, or a random architecture of the space (seeded)."""
  b = cfg.baseline
  if b.kind == "uniform":
    nm = NM.parse(b.get("nm"), "baseline.nm")
    if nm is not None and not any(name.endswith(".nm") for name in model.choices):
      raise ValueError(f"baseline.nm={b.nm!r}: model={cfg.model.name} has no N:M choice, so its layers would stay "
                       f"dense under a sparse label; set baseline.nm=null, or use a model with N:M candidates "
                       f"({', '.join(f'model={m}' for m in models_with_nm())}, model.args.nm_patterns).")
    choices = {}
    for name, c in model.choices.items():
      if c.fixed:
        choices[name] = c.values[0]
      elif name.endswith((".width", ".heads")):
        target = model.reference[name] * b.width_mult
        choices[name] = min(c.values, key=lambda v: abs(v - target))
      elif name.endswith(".keep"):  # a uniform network has every layer
        choices[name] = 1
      elif name.endswith(".nm"):
        want = DENSE if nm is None else nm.code
        if want not in c.values:
          raise ValueError(f"baseline.nm={b.nm!r} is not a candidate of {name} "
                           f"({[str(NM.from_code(v) or 'dense') for v in c.values]}); choose one of the model's "
                           f"model.args.nm_patterns, or null for dense.")
        choices[name] = want
      else:
        want = b.w_bits if name.endswith(".w_bits") else b.a_bits
        if want not in c.values:
          raise ValueError(f"baseline bits {want} of {name} is not a candidate {list(c.values)}; "
                           f"choose baseline.w_bits/a_bits among search.w_bits/a_bits.")
        choices[name] = want
    return choices
  rng = np.random.default_rng(cfg.seed if b.arch_seed is None else b.arch_seed)
  return {n: c.values[int(rng.integers(len(c.values)))] for n, c in model.choices.items()}
