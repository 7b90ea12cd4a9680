"""Deploy what a search found: integer network, packed weights, ONNX (QDQ, int8 kernels) and QONNX files,
agreement, timing.

  python -m experiments.export RUN_DIR [--out DIR] [--measure] [--force]    # writes RUN_DIR/export (or DIR)

Reads a finished run folder (``result.json``, ``.hydra/config.yaml``, ``network.npz``), rebuilds the fine-tuned
network and writes its export with ``nas.deploy.export`` (the files and the output folder's rules are described
there; each format in ``nas.deploy.formats``, timing in ``nas.deploy.ort``): model.onnx, model.int8.onnx,
model.qonnx.onnx, weights.bin, export.json, and with --measure measure.json (onnxruntime CPU latency of
model.int8.onnx, batch 1, beside result.json's costs and the run's preset's per-layer prediction). A ViT run
(model=vit) writes model.onnx (int8 matmuls in QDQ form, float softmax / LayerNorm / GELU), weights.bin,
export.json and with --measure measure.json (model.onnx end to end): ``nas.deploy.vit_export``.

It never deletes or overwrites its own input nor a file it did not write: --out may not be the run folder or a
folder holding it, an existing non-empty --out must be a previous export (it holds export.json), and replacing
one takes --force. Takes a few seconds on digits (most of it importing JAX and the first compilation). Bad input
(no finished network in the folder, a truncated result.json or network.npz, a model the exporter does not know,
an output folder that cannot or may not be written) stops with one sentence on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

from nas.deploy.export import ExportError, NetworkSpec, Options, Run, check_options, check_out, export_run
from nas.deploy.ort import INTEGER_KERNELS
from nas.deploy.vit_onnx import INT_KERNELS

__all__ = ["ExportError", "export", "load_run", "main", "summary"]

_RERUN = "re-run the search job that wrote it"


def _read_result(path: pathlib.Path) -> dict:
  """result.json's content, or an ExportError naming the file and the fix if it is truncated or corrupt."""
  try:
    result = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise ExportError(f"{path} is truncated or corrupt (not valid JSON: {e}); {_RERUN}.") from None
  except UnicodeDecodeError as e:
    raise ExportError(f"{path} is truncated or corrupt ({e.reason}); {_RERUN}.") from None
  if not isinstance(result, dict) or not isinstance(result.get("architecture"), dict):
    raise ExportError(f"{path} holds no architecture (a result.json of a finished job has one); {_RERUN}.")
  return result


def _read_config(path: pathlib.Path):
  """The run's Hydra config, or an ExportError naming the file and the fix."""
  from omegaconf import OmegaConf
  import yaml
  try:
    return OmegaConf.load(path)
  except (yaml.YAMLError, UnicodeDecodeError, ValueError) as e:
    raise ExportError(f"{path} is truncated or corrupt ({type(e).__name__}); {_RERUN}.") from None


def load_run(run_dir: pathlib.Path):
  """(config, result, network in eval mode, dataset) of a finished run folder.

  Raises:
    ExportError: if the folder holds no finished network, a truncated file, or a model that is not exportable.
  """
  run_dir = pathlib.Path(run_dir)
  for name in ("result.json", "network.npz", ".hydra/config.yaml"):
    if not (run_dir / name).is_file():
      raise ExportError(f"{run_dir} holds no finished network: {name} is missing; export a run folder written "
                        f"by a finished `python -m experiments.search` job.")
  result = _read_result(run_dir / "result.json")
  from experiments.search import _model_args, apply_debug, load_dataset, search_space
  from nas.deploy.export import EXPORTABLE_MODELS, restore_network
  from nas.models.arch import Architecture
  model = result["architecture"].get("model")
  if model not in EXPORTABLE_MODELS:
    raise ExportError(f"{run_dir}: model {model!r} cannot be exported; the exporter knows "
                      f"{list(EXPORTABLE_MODELS)}.")
  cfg = _read_config(run_dir / ".hydra/config.yaml")
  if cfg.get("debug"):
    apply_debug(cfg)
  data = load_dataset(cfg)
  net = restore_network(NetworkSpec(model, search_space(cfg), _model_args(cfg, data),
                                    Architecture.from_dict(result["architecture"]), run_dir / "network.npz",
                                    seed=cfg.seed))
  return cfg, result, net, data


def _hardware(cfg):
  """The run's hardware preset, or None if it cannot be built here (a user's preset whose module is missing)."""
  try:
    from experiments.search import instantiate_hardware
    return instantiate_hardware(cfg.hardware)
  except Exception:
    return None


def export(run_dir, out=None, do_measure: bool = False, repeats: int = 300, threads: int = 1,
           force: bool = False) -> dict:
  """Writes the export of ``run_dir`` into ``out`` (default ``run_dir/export``) and returns export.json's content.

  Raises:
    ExportError: bad input (see the module docstring), before anything is written.
  """
  run_dir = pathlib.Path(run_dir)
  out = pathlib.Path(out) if out is not None else run_dir / "export"
  if not run_dir.is_dir():
    raise ExportError(f"{run_dir} is not a folder; pass the run folder of a finished search job.")
  options = Options(measure=do_measure, repeats=repeats, threads=threads, force=force)
  check_options(options)
  check_out(out, run_dir, force)  # before loading anything: a refused folder costs no JAX start
  cfg, result, net, data = load_run(run_dir)
  run = Run(run_dir, result, net, data.x_test, data.y_test, _hardware(cfg) if do_measure else None)
  return export_run(run, out, options)


def summary(info: dict) -> str:
  if info.get("model") == "vit":
    return vit_summary(info)
  a, s = info["agreement"], info["sizes"]
  acc = ", ".join(f"{k} {100 * v:.2f} %" for k, v in a["accuracy"].items())
  lines = [f"identical top-1 (integer, onnxruntime, JAX): {100 * a['identical_top1']:.2f} % of {a['images']} "
           f"test images; accuracy {acc}; {'meets' if a['meets_target'] else 'MISSES'} the target",
           f"packed weights {s['packed_weight_bytes']} B against result.json weight_bytes {s['result_weight_bytes']} "
           f"B; weights.bin {s['weights_bin_bytes']} B ({s['overhead_bytes']} B scales, biases, header)"]
  i8 = info["int8"]
  lines.append(f"model.int8.onnx ({'integer kernels' if i8['integer_kernels'] else 'NOT all integer kernels'}: "
               f"{', '.join(sorted({o for ops in i8['kernels'].values() for o in ops if o in INTEGER_KERNELS}))}): "
               f"top-1 identical to the integer reference on {100 * i8['agreement']['vs_integer_top1']:.2f} %, to "
               f"JAX on {100 * i8['agreement']['vs_jax_top1']:.2f} % (8-bit kernels' deviations: nas.deploy.exact8.int8_kernels)")
  if "measure" in info:
    m = info["measure"]
    lines.append(f"onnxruntime CPU, batch 1, {m['intra_op_threads']} thread(s): model.int8.onnx "
                 f"{m['end_to_end_us']['best_block_median']:.1f} us (median of the fastest block of runs; all runs "
                 f"{m['end_to_end_us']['median']:.1f} us; the input stage {m['input_us']:.1f} us), float-QDQ "
                 f"model.onnx {m['float_qdq_end_to_end_us']['best_block_median']:.1f} us")
  return "\n".join(lines)


def vit_summary(info: dict) -> str:
  """The printed summary of a ViT export (nas.deploy.vit_export)."""
  a, s, o = info["agreement"], info["sizes"], info["onnx"]
  acc = ", ".join(f"{k} {100 * v:.2f} %" for k, v in a["accuracy"].items())
  fused = ", ".join(f"{n} x{c}" for n, c in o["onnxruntime_nodes"].items() if n in INT_KERNELS)
  skipped = [f"{b['block']}.{part}" for b in info["blocks"] for part in ("attention", "mlp") if b[part] == "skipped"]
  lines = [f"identical top-1 (onnxruntime on model.onnx, JAX): {100 * a['identical_top1']:.2f} % of {a['images']} "
           f"test images; accuracy {acc}; largest logit difference {a['logits']['max_abs']:.3g} "
           f"({a['logits']['max_rel_to_max_logit']:.2g} of the largest logit); "
           f"{'meets' if a['meets_target'] else 'MISSES'} the target",
           f"matmuls in onnxruntime: {'all integer kernels' if o['integer_kernels'] else 'NOT all integer kernels'} "
           f"({fused}); skipped sub-blocks: {', '.join(skipped) or 'none'}",
           f"packed weights {s['packed_weight_bytes']} B (N:M as kept values + positions) against result.json "
           f"weight_bytes {s['result_weight_bytes']} B; weights.bin {s['weights_bin_bytes']} B"]
  if "measure" in info:
    m = info["measure"]
    lines.append(f"onnxruntime CPU, batch 1, {m['intra_op_threads']} thread(s): model.onnx "
                 f"{m['end_to_end_us']['best_block_median']:.1f} us (median of the fastest block of runs; all runs "
                 f"{m['end_to_end_us']['median']:.1f} us)")
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m experiments.export", description=__doc__.split("\n")[0])
  parser.add_argument("run_dir", help="a finished run folder (result.json, network.npz, .hydra/config.yaml)")
  parser.add_argument("--out", default=None,
                      help="output folder (default RUN_DIR/export): new, empty, or a previous export with --force")
  parser.add_argument("--force", action="store_true", help="replace a previous export in the output folder")
  parser.add_argument("--measure", action="store_true",
                      help="time model.int8.onnx (and model.onnx end to end) in onnxruntime (CPU, batch 1)")
  parser.add_argument("--repeats", type=int, default=300, help="timed runs for --measure (300)")
  parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads for --measure (1)")
  args = parser.parse_args(argv)
  try:
    info = export(args.run_dir, args.out, args.measure, args.repeats, args.threads, args.force)
  except (ExportError, ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except OSError as e:  # a read-only or full output folder: nothing of the run was touched
    print(f"error: cannot write {e.filename or args.out} ({e.strerror or e}); pass a writable --out with room "
          f"to spare.", file=sys.stderr)
    return 2
  print(summary(info))
  print(f"wrote {pathlib.Path(args.out) if args.out else pathlib.Path(args.run_dir) / 'export'}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
