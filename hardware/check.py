"""Check any preset YAML against the CostModel protocol: the suite every shipped preset passes.

Checks: the preset instantiates as a cost model named after its file, with and without Hydra's
``_convert_="all"``; over a grid of choices its costs are finite, non-negative (latency positive) and
broadcast; latency never falls as channels grow; cost never rises as bits fall where the model declares
``bits_monotone = True``; the same over the transformer kinds (``linear``, ``matmul``, ``softmax``,
``layernorm``), SKIPped when the model raises ValueError naming the kind for all four (a CNN-only model); a
2:4 and a 1:4 version of a conv, dense and linear layer never cost more than the dense one; an unknown layer
kind raises; bit-widths it cannot run raise naming ``w_bits``/``a_bits`` while 2..8 bits run; every constant in
the YAML has a comment citing its source.
``tests/hardware/test_conformance.py`` calls these same functions on ``conf/hardware/*.yaml``.

Usage (the module of the preset's ``_target_`` must be importable):
  PYTHONPATH=/path/to python -m hardware.check /path/to/conf/hardware/myhw.yaml [more.yaml ...]
Prints one line per check (PASS, FAIL with what failed, SKIP with why) and exits 0 if every check passes,
1 if one fails, 2 if a YAML cannot be read or its ``_target_`` cannot be imported.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import re
import sys
from typing import Callable, List, Optional, Sequence

import numpy as np
from omegaconf import DictConfig, OmegaConf

from hardware.base import ELEMENTWISE_KINDS, CostModel, LayerSpec, choice_grid, inference_cost
from hardware.host import host_mismatch

LAYERS = (
    LayerSpec("conv", 16, 32, 3, 1, 8, 8, name="conv3x3"),
    LayerSpec("conv", 64, 128, 1, 2, 16, 16, name="pw_stride2"),
    LayerSpec("dwconv", 64, 64, 3, 2, 16, 16, name="dw3x3"),
    LayerSpec("dense", 256, 10, name="fc"),
)
# The transformer kinds: one encoder block's shapes (17 tokens). The matmul has 32 columns per head so that its
# cout grid (heads x 32) and the bits_monotone check's 32 / 64 channels stay on tensor-core multiples.
TRANSFORMER_LAYERS = (
    LayerSpec("linear", 64, 128, in_h=17, name="linear"),
    LayerSpec("matmul", 32, 64, in_h=17, head_cols=32, name="matmul"),
    LayerSpec("softmax", 68, 68, in_h=17, name="softmax"),
    LayerSpec("layernorm", 64, 64, in_h=17, name="layernorm"),
)
SPARSE_LAYERS = (LAYERS[0], LAYERS[3], TRANSFORMER_LAYERS[0])  # conv3x3, fc, linear: each at 2:4 and 1:4
NOT_MODELLED = "transformer kinds not modelled"
BITS = (2, 3, 4, 5, 6, 7, 8)  # the search's bit-width range: every model must run it
CIN = (8, 16, 24, 32, 64)
COUT = (8, 16, 32, 48, 64)
BAD_BITS = (0, 2.5, 33)  # below 1, not an integer, above any part's widest precision


class CheckFailed(Exception):
  """A preset breaks the protocol; the message says how and what to change."""


class PresetError(Exception):
  """A preset cannot be checked at all: its YAML is unreadable or its ``_target_`` does not import."""


def read_yaml(path: str, what: str = "preset"):
  """The YAML at ``path`` (OmegaConf), or :class:`PresetError`: one sentence naming the file, what is wrong
  with it and the fix (also the search app's sentence for a broken preset or config file)."""
  try:
    return OmegaConf.load(path)
  except Exception as e:  # OSError, YAML syntax errors, bad encodings: all mean "not a readable preset"
    reason = " ".join(str(e).split())
    raise PresetError(f"{what} {path} cannot be read as YAML ({type(e).__name__}: {reason}); fix the file.") from None


def load_config(path: str) -> DictConfig:
  """The preset's YAML, with its ``_target_`` imported once to tell a bad path from a broken model.

  Raises:
    PresetError: one sentence naming the file (missing, unreadable, not a mapping, no ``_target_``) or the
      ``_target_`` that cannot be imported, and the fix.
  """
  if not os.path.isfile(path):
    raise PresetError(f"preset {path} does not exist; pass the path of a preset YAML, e.g. conf/hardware/riscv.yaml.")
  cfg = read_yaml(path)
  target = cfg.get("_target_") if isinstance(cfg, DictConfig) else None
  if not isinstance(target, str) or "." not in target:
    raise PresetError(f"preset {path} has no `_target_: module.Class` line; name the cost model's class there.")
  module, _, attr = target.rpartition(".")
  try:
    found = hasattr(importlib.import_module(module), attr)
  except Exception as e:  # ImportError, or any error raised while the user's module runs
    raise PresetError(f"`_target_: {target}` of {path} cannot be imported ({type(e).__name__}: {e}); put the folder "
                      f"of module {module!r} on PYTHONPATH, e.g. `PYTHONPATH=/path/to python -m hardware.check "
                      f"{path}`.") from None
  if not found:
    raise PresetError(f"`_target_: {target}` of {path} cannot be imported: module {module!r} has no {attr!r}; "
                      f"correct the class name.")
  return cfg


def instantiate(path: str, convert: str = "all"):
  """The preset's cost model as the search app builds it (``hydra.utils.instantiate``, ``_convert_="all"``)."""
  import hydra.utils  # deferred: only instantiation needs Hydra
  return hydra.utils.instantiate(load_config(path), _convert_=convert)


def _require(condition, message: str) -> None:
  if not condition:
    raise CheckFailed(message)


def check_protocol(model, path: str) -> None:
  """A CostModel (name, check_bits, cost) whose ``name`` is the file's stem (``hardware=<stem>`` picks it)."""
  _require(isinstance(model, CostModel), f"{type(model).__name__} lacks one of name, check_bits, cost; implement "
                                         f"the CostModel protocol of hardware/base.py.")
  stem = os.path.splitext(os.path.basename(path))[0]
  _require(model.name == stem, f"name={model.name!r} differs from the file name; set `name: {stem}`.")


def check_convert_all(model, path: str) -> None:
  """Instantiated without ``_convert_`` (OmegaConf containers), the model costs a layer exactly the same."""
  other = instantiate(path, convert="none")
  a, b = model.cost(LAYERS[0], 8, 8, 16, 32), other.cost(LAYERS[0], 8, 8, 16, 32)
  _require(float(a.latency_s) == float(b.latency_s) and float(a.energy_j) == float(b.energy_j),
           "costs differ between plain containers (_convert_='all') and OmegaConf ones; convert every "
           "constructor argument (e.g. dict(value), float(value)) before use.")


def _cout(layer: LayerSpec) -> int:
  return 16 if layer.kind in ("dwconv",) + ELEMENTWISE_KINDS else 32  # one channel count: cout follows cin


def grid_channels(layer: LayerSpec, cin=CIN, cout=COUT):
  """(cin, cout) candidates for a layer: a matmul's cout is heads x head_cols, so 1..4 heads of it."""
  if layer.kind == "matmul":
    return cin, tuple(h * layer.head_cols for h in (1, 2, 3, 4))
  return cin, cout


def check_grid(model, layer: LayerSpec) -> None:
  """Over the choice grid: broadcast shapes, finite values, latency > 0, energy >= 0; a direct call agrees."""
  cin, cout = grid_channels(layer)
  c = choice_grid(model, layer, BITS, BITS, cin, cout)
  shape = (len(BITS), len(BITS), len(cin), 1 if layer.kind in ("dwconv",) + ELEMENTWISE_KINDS else len(cout))
  _require(c.latency_s.shape == c.energy_j.shape == shape,
           f"{layer.name}: grid costs have shapes {c.latency_s.shape}, {c.energy_j.shape}, expected {shape}.")
  _require(np.all(np.isfinite(c.latency_s)) and np.all(np.isfinite(c.energy_j)),
           f"{layer.name}: some costs are not finite; return finite arrays.")
  _require(np.all(c.latency_s > 0), f"{layer.name}: a latency is <= 0, so the layer would be free; every layer "
                                    f"takes time.")
  _require(np.all(c.energy_j >= 0), f"{layer.name}: an energy is negative.")
  d = model.cost(layer, np.array([[2], [4], [8]]), np.array([[4, 8]]), 16, _cout(layer))
  _require(np.shape(d.latency_s) == np.shape(d.energy_j) == (3, 2),
           f"{layer.name}: cost(w of shape (3, 1), a of shape (1, 2), scalar, scalar) returned shapes "
           f"{np.shape(d.latency_s)}, {np.shape(d.energy_j)}, expected (3, 2); broadcast the four choices "
           f"(hardware.base.broadcast_choices).")
  single = model.cost(layer, 4, 8, 16, _cout(layer))
  _require(np.allclose(np.asarray(d.latency_s)[1, 1], single.latency_s, rtol=1e-12, atol=0),
           f"{layer.name}: a broadcast call and a scalar call disagree at w=4, a=8.")


def channel_values(model):
  """(cin, cout) along which latency must not fall: above a CPU's few-channel fallback path, if it has one."""
  fallback = getattr(model, "fallback_channels", 0)
  if fallback:  # XLA's generic loop for <= fallback channels is slower than the library kernel above it
    return ([c for c in CIN if c > fallback] or [fallback + 8, fallback + 16],
            [c for c in COUT if c > fallback] or [fallback + 8, fallback + 16])
  return CIN, COUT


def check_channels(model, layer: LayerSpec) -> None:
  """Latency never falls as cin or cout grow (except across a CPU's few-channel fallback)."""
  cin, cout = grid_channels(layer, *channel_values(model))
  lat = choice_grid(model, layer, [4, 8], [4, 8], cin, cout).latency_s
  _require(np.all(np.diff(lat, axis=2) >= -1e-12 * lat[:, :, 1:, :]),
           f"{layer.name}: latency falls as cin grows over {list(cin)}.")
  _require(np.all(np.diff(lat, axis=3) >= -1e-12 * lat[:, :, :, 1:]),
           f"{layer.name}: latency falls as cout grows over {list(cout)}.")


def check_bits_monotone(model, layer: LayerSpec) -> Optional[str]:
  """Where the model declares ``bits_monotone = True``: latency and energy never rise as bits fall.

  Returns:
    None when checked, or why it was skipped (the model declares False, or declares nothing).
  """
  declared = getattr(model, "bits_monotone", None)
  if declared is not True:
    return (f"{type(model).__name__} declares bits_monotone={declared}" if declared is False else
            f"{type(model).__name__} does not declare bits_monotone; set the class attribute to True (fewer bits "
            f"never cost more) to have it checked, or False")
  c = choice_grid(model, layer, BITS, BITS, [32, 64], [32, 64])
  for label, arr in (("latency", c.latency_s), ("energy", c.energy_j)):
    _require(np.all(np.diff(arr, axis=0) >= -1e-12 * arr[1:]), f"{layer.name}: {label} falls as weight bits rise "
                                                               f"although bits_monotone = True.")
    _require(np.all(np.diff(arr, axis=1) >= -1e-12 * arr[:, 1:]), f"{layer.name}: {label} falls as activation "
                                                                  f"bits rise although bits_monotone = True.")
  return None


def transformer_skip(model) -> Optional[str]:
  """``NOT_MODELLED`` if the model raises ValueError naming the kind for every transformer kind (a CNN-only
  model: its transformer checks are skipped, not failed); None otherwise (a kind that raises then fails)."""
  for layer in TRANSFORMER_LAYERS:
    try:
      model.cost(layer, 8, 8, layer.cin, layer.cout)
    except ValueError as e:
      if re.search(rf"\b{layer.kind}\b", str(e)):
        continue
    except Exception:  # a crash: not "not modelled"; the checks themselves report it as a FAIL
      pass
    return None
  return NOT_MODELLED


def check_sparsity(model, layer: LayerSpec) -> None:
  """A 2:4 and a 1:4 version of ``layer`` cost no more than the dense one (latency and energy) over the grid,
  with finite, non-negative costs of the grid's broadcast shape."""
  dense = choice_grid(model, layer, BITS, BITS, CIN, COUT)
  for nm in ((2, 4), (1, 4)):
    sparse = choice_grid(model, dataclasses.replace(layer, nm=nm), BITS, BITS, CIN, COUT)
    _require(sparse.latency_s.shape == dense.latency_s.shape, f"{layer.name} at {nm[0]}:{nm[1]}: grid shape "
                                                              f"{sparse.latency_s.shape}, expected {dense.latency_s.shape}.")
    for label, s, d in (("latency", sparse.latency_s, dense.latency_s), ("energy", sparse.energy_j, dense.energy_j)):
      _require(np.all(s <= d * (1 + 1e-12)), f"{layer.name} at {nm[0]}:{nm[1]}: {label} exceeds the dense layer's "
                                             f"(max ratio {np.max(s / np.maximum(d, 1e-300)):.4g}); an N:M pattern "
                                             f"must never cost more than dense (store it dense if that is smaller).")


def check_inference_cost(model) -> None:
  """An ``inference_cost`` (optional: a model without one costs nothing outside its layers) returns finite
  scalars >= 0 for a network's first layer."""
  if getattr(model, "inference_cost", None) is None:
    return None
  c = model.inference_cost(LAYERS[0])
  _require(np.ndim(c.latency_s) == 0 and np.ndim(c.energy_j) == 0,
           f"inference_cost returned shapes {np.shape(c.latency_s)}, {np.shape(c.energy_j)}; return scalars "
           f"(one inference's cost outside every layer).")
  try:
    inference_cost(model, LAYERS[0])
  except ValueError as e:  # a non-finite or negative value
    raise CheckFailed(str(e)) from None


def check_unknown_kind(model) -> None:
  """A layer of a kind the model does not know (``pool``) raises ValueError naming it, never costs zero."""
  bad = object.__new__(LayerSpec)  # bypasses LayerSpec's own kind check, as a foreign layer object would
  for field in dataclasses.fields(LayerSpec):
    object.__setattr__(bad, field.name, getattr(LAYERS[0], field.name))
  object.__setattr__(bad, "kind", "pool")
  for call, run in (("cost", lambda: model.cost(bad, 8, 8, 16, 32)),
                    ("choice_grid", lambda: choice_grid(model, bad, [8], [8], [16], [32]))):
    try:
      run()
    except ValueError as e:
      _require("pool" in str(e), f"{call} of a kind='pool' layer raised ValueError without naming the kind: {e}")
      continue
    raise CheckFailed(f"{call} of a layer of kind 'pool' returned a cost instead of raising ValueError; call "
                      f"hardware.base.require_kind(layer, kinds, name) first.")


def _raises_naming(run: Callable, field: str) -> bool:
  try:
    run()
  except ValueError as e:
    return bool(re.search(rf"\b{field}\b", str(e)))
  return False


def check_bad_bits(model, bad_bits: Sequence = BAD_BITS) -> None:
  """Bit-widths the hardware cannot run raise ValueError naming the field; the search's 2..8 bits run."""
  for bad in bad_bits:
    for field, run in (("w_bits", lambda: model.check_bits(bad, 8)), ("a_bits", lambda: model.check_bits(8, bad)),
                       ("w_bits", lambda: model.cost(LAYERS[0], bad, 8, 16, 32))):
      _require(_raises_naming(run, field), f"{field}={bad} did not raise a ValueError naming {field}; use "
                                           f"hardware.base.round_up_to_supported in check_bits and cost.")
  model.check_bits(np.array(BITS), np.array(BITS))


def check_sources(path: str) -> None:
  """Each top-level constant has a comment on its line, on the line above, or on one of its child lines."""
  with open(path) as f:
    lines = f.read().splitlines()
  for i, line in enumerate(lines):
    match = re.match(r"^([A-Za-z_]\w*):", line)
    if not match or match.group(1) in ("_target_", "name"):
      continue
    block = [line]
    for nxt in lines[i + 1:]:
      if nxt and not nxt.startswith((" ", "-")):
        break
      block.append(nxt)
    above = lines[i - 1] if i else ""
    _require("#" in "".join(block) or above.lstrip().startswith("#"),
             f"{match.group(1)} (line {i + 1}) has no comment; cite the datasheet, paper or measurement it comes from.")


@dataclasses.dataclass(frozen=True)
class Outcome:
  """One check's result: ``status`` is PASS, FAIL or SKIP (or NOTE for the host check, which never fails)."""
  status: str
  check: str
  detail: str = ""


def run_checks(path: str) -> List[Outcome]:
  """Every check on one preset, in order; a check that raises anything is a FAIL with what it raised.

  Raises:
    PresetError: the YAML cannot be read or its ``_target_`` cannot be imported.
  """
  load_config(path)
  try:
    model = instantiate(path)
  except Exception as e:
    return [Outcome("FAIL", "instantiates", " ".join(f"{type(e).__name__}: {e}".split()))]
  checks = [("protocol", lambda: check_protocol(model, path)), ("convert_all", lambda: check_convert_all(model, path))]
  skip = transformer_skip(model)

  def guarded(layer, run):  # a transformer layer's check returns the SKIP reason when the model has none of them
    return (lambda: skip or run()) if layer in TRANSFORMER_LAYERS else run

  for layer in LAYERS + TRANSFORMER_LAYERS:
    checks += [(f"grid[{layer.name}]", guarded(layer, lambda l=layer: check_grid(model, l))),
               (f"channels[{layer.name}]", guarded(layer, lambda l=layer: check_channels(model, l))),
               (f"bits_monotone[{layer.name}]", guarded(layer, lambda l=layer: check_bits_monotone(model, l)))]
  checks += [(f"sparsity[{layer.name}]", guarded(layer, lambda l=layer: check_sparsity(model, l)))
             for layer in SPARSE_LAYERS]
  checks += [("inference_cost", lambda: check_inference_cost(model)),
             ("unknown_kind", lambda: check_unknown_kind(model)), ("bad_bits", lambda: check_bad_bits(model)),
             ("sources", lambda: check_sources(path))]
  out = [Outcome("PASS", "instantiates", type(model).__name__)]
  for name, run in checks:
    try:
      skipped = run()
    except CheckFailed as e:
      out.append(Outcome("FAIL", name, str(e)))
    except Exception as e:  # a crash inside the model is a failure of that check, not of the tool
      out.append(Outcome("FAIL", name, " ".join(f"raised {type(e).__name__}: {e}".split())))
    else:
      out.append(Outcome("SKIP", name, skipped) if skipped else Outcome("PASS", name))
  mismatch = host_mismatch(model)
  if mismatch:
    out.append(Outcome("NOTE", "host", mismatch))
  return out


def main(argv=None) -> int:
  """Check each preset; print one line per check; return 0 (all pass), 1 (a check fails) or 2 (unusable YAML)."""
  parser = argparse.ArgumentParser(prog="python -m hardware.check", description=__doc__.splitlines()[0])
  parser.add_argument("presets", nargs="+", help="preset YAML files, e.g. conf/hardware/riscv.yaml")
  args = parser.parse_args(argv)
  code = 0
  for path in args.presets:
    label = os.path.splitext(os.path.basename(path))[0]
    try:
      outcomes = run_checks(path)
    except PresetError as e:
      print(f"hardware.check: {e}", file=sys.stderr)
      code = 2
      continue
    for o in outcomes:
      print(f"{o.status} {label} {o.check}" + (f": {o.detail}" if o.detail else ""))
    failed = sum(o.status == "FAIL" for o in outcomes)
    print(f"{label}: {sum(o.status == 'PASS' for o in outcomes)} passed, {failed} failed, "
          f"{sum(o.status == 'SKIP' for o in outcomes)} skipped")
    if failed:
      code = max(code, 1)
  return code


if __name__ == "__main__":
  sys.exit(main())
