"""Whether a searched network is itself a uniform network: one precision everywhere, at a baseline's widths.

A search that returns a uniform network found a baseline; it did not beat one. The report says so per budget.
The uniform networks are known from the benchmark's own uniform baselines (their ``result.json`` holds their
architecture's choices), so nothing here builds a network:

- a template is a uniform baseline's choices, with its (w_bits, a_bits), width multiple and N:M pattern;
- bit choices whose value is the same in every template are fixed by the space (e.g. the first and last layers
  at 8 bits); the others are the searchable bits, which a uniform baseline sets to its pair;
- a searched network is uniform when some template has its every other choice (widths, heads, kept layers,
  N:M patterns), its fixed bits, and all its searchable weight bits one value and all its activation bits one
  value (per-group bits: every group). It *is* a baseline when its choices equal a baseline's exactly.

With uniform baselines of a single precision no bit choice can be told searchable, so only an exact match to a
baseline is found then.
"""
from __future__ import annotations

import re
from typing import Sequence

STRUCTURE_SUFFIXES = (".width", ".heads", ".keep", ".nm")  # choices that are not bit-widths (experiments.baselines)
UNIFORM_KIND = "baseline:uniform"  # result.json's kind of a uniform baseline


def _override(job: dict, key: str) -> str | None:
  for o in job.get("overrides") or []:
    if o.startswith(f"{key}="):
      return o.split("=", 1)[1].strip("'\"")
  return None


def templates(jobs: Sequence[dict]) -> list[dict]:
  """The uniform baselines among ``jobs`` (read jobs, each with ``result``): choices, bits, width, N:M, name.

  Bits, width and N:M come from the job's overrides (``baseline.w_bits`` ...), else from its config label
  (``W4A4 ×0.5``, ``W4A4 2:4``); a width that neither gives is None.
  """
  out = []
  for job in jobs:
    result = job.get("result") or {}
    choices = (result.get("architecture") or {}).get("choices")
    if job.get("role") != "baseline" or result.get("kind") != UNIFORM_KIND or not choices:
      continue
    config = str(job.get("config") or "")
    bits = re.match(r"W(\d+)A(\d+)", config)
    w, a = _override(job, "baseline.w_bits"), _override(job, "baseline.a_bits")
    if w is None and bits:
      w, a = bits.groups()
    if w is None or a is None:
      continue
    width = _override(job, "baseline.width_mult") or (re.search(r"×\s*([0-9.]+)", config) or [None, None])[1]
    nm = _override(job, "baseline.nm") or (re.search(r"\b(\d+:\d+)\b", config) or [None, None])[1]
    out.append({"choices": choices, "w_bits": int(w), "a_bits": int(a),
                "width": float(width) if width is not None else None, "nm": None if nm in (None, "null") else nm,
                "name": f"{job.get('family')} {config}".strip()})
  return out


def _is_bits(key: str) -> bool:
  return not key.endswith(STRUCTURE_SUFFIXES)


def _values(v) -> list:
  return list(v) if isinstance(v, (list, tuple)) else [v]


def fixed_bit_keys(temps: Sequence[dict]) -> set[str]:
  """Bit choices with one value in every template (fixed by the space, or indistinguishable)."""
  if not temps:
    return set()
  keys = set.intersection(*(set(t["choices"]) for t in temps))
  first = temps[0]["choices"]
  return {k for k in keys if _is_bits(k) and all(t["choices"][k] == first[k] for t in temps)}


def label(w_bits: int, a_bits: int, width: float | None, nm: str | None) -> str:
  return (f"uniform W{w_bits}A{a_bits}" + (f" {nm}" if nm else "")
          + (f" ×{width:g}" if width is not None else ""))


def uniform_network(choices: dict | None, temps: Sequence[dict], fixed: set[str]) -> dict | None:
  """What ``choices`` are when they make a uniform network (module docstring), else None.

  Returns:
    ``label`` (e.g. "uniform W4A4 ×0.75"), w_bits, a_bits, width, nm, ``baselines`` (the names of the baselines
    with exactly these choices; empty: a uniform network no baseline trained) and ``text`` for the report.
  """
  if not choices:
    return None
  for t in temps:
    tc = t["choices"]
    if set(tc) != set(choices) or any(choices[k] != tc[k] for k in choices if not _is_bits(k) or k in fixed):
      continue
    free = [k for k in choices if _is_bits(k) and k not in fixed]
    w_set = {b for k in free if k.endswith(".w_bits") for b in _values(choices[k])}
    a_set = {b for k in free if not k.endswith(".w_bits") for b in _values(choices[k])}
    if len(w_set) > 1 or len(a_set) > 1:
      return None
    w, a = (w_set.pop() if w_set else t["w_bits"]), (a_set.pop() if a_set else t["a_bits"])
    same = list(dict.fromkeys(s["name"] for s in temps if s["choices"] == choices))  # once each, not per seed
    name = label(int(w), int(a), t["width"], t["nm"])
    text = (f"{name}: the search found a baseline ({', '.join(same)})" if same else
            f"{name}: a uniform network, not among the baselines")
    return {"label": name, "w_bits": int(w), "a_bits": int(a), "width": t["width"], "nm": t["nm"],
            "baselines": same, "text": text}
  return None


def row_flags(networks: Sequence[dict], compared: str | None = None) -> list[str]:
  """One flag per distinct uniform network among a budget row's networks, with the seeds that found it, e.g.
  ``seeds 0, 2: uniform W2A2 ×0.5: the search found a baseline (uniform-pruned W2A2 ×0.5)``; ``compared``: the
  name of the baseline the row is compared with, which the flag names when it is that very network (the
  accuracy difference is then one of training, not of architecture)."""
  seeds: dict[str, list] = {}
  for n in networks:
    u = n.get("uniform")
    if u:
      text = u["text"] + ("; it is the baseline compared with here: the difference is training, not architecture"
                          if compared in u["baselines"] else "")
      seeds.setdefault(text, []).append(n["seed"])
  return [f"seed{'s' if len(s) > 1 else ''} {', '.join(str(x) for x in s)}: {text}" for text, s in seeds.items()]
