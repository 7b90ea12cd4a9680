"""The export of a finished run: the integer network in every registered format, the packed weights, agreement
checks and (optionally) onnxruntime latency, written into one output folder.

The folder (default ``RUN/export``) is written through a temporary folder beside it, renamed at the end: nothing
half-written on failure. An export never deletes or overwrites its own input nor a file it did not write: the
output folder may not be the run folder or contain it, and an existing non-empty folder is replaced only when
it is a previous export (it holds ``export.json``, the marker, and only files an export writes) and ``force``
is given.

  model.onnx, model.int8.onnx, model.qonnx.onnx   the formats of ``nas.deploy.formats`` (their docstrings)
  weights.bin   the packed integer network (layout: ``nas.deploy.pack``).
  export.json   per layer bits, scales, shapes; packed bytes against result.json's weight_bytes; agreement of
                the integer reference, onnxruntime and the JAX network on the run's test set; for
                model.int8.onnx the kernels onnxruntime runs per layer and its agreement (``nas.deploy.verify``).
  measure.json  (``measure``) onnxruntime CPU latency of model.int8.onnx (``nas.deploy.ort``) beside result.json's
                costs and the run's preset's per-layer prediction.

A ViT run (``model=vit``) writes model.onnx, weights.bin, export.json and measure.json of its own kind
(``nas.deploy.vit_export``: int8 matmuls in QDQ form, softmax / LayerNorm / GELU in float) into the same folder
under the same rules.

This module takes a run in typed pieces (:class:`NetworkSpec`, :class:`Run`); reading a run folder's Hydra config
is ``experiments.export``'s.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import tempfile
import zipfile
import zlib

import numpy as np

from nas.deploy import integer, pack, vit_export, vit_int
from nas.deploy.formats import FORMATS
from nas.deploy.formats.base import write
from nas.deploy.onnx_graph import storage_table
from nas.deploy.ort import measure, ort_session
from nas.deploy.verify import agreement, int8_check, jax_logits, layer_table, qonnx_logits

EXPORTABLE_MODELS = integer.EXPORTABLE_MODELS + (vit_int.MODEL,)  # the CNNs' integer network, and the ViT
MARKER = "export.json"  # every export folder holds it: how a previous export is recognised
OTHER_FILES = ("weights.bin", MARKER, "measure.json")


class ExportError(Exception):
  """Bad input to the exporter: the message is the one sentence printed."""


@dataclasses.dataclass(frozen=True)
class NetworkSpec:
  """How to rebuild a run's fine-tuned network (its config and result.json, read by the caller)."""
  model: str  # a model name of nas.models (EXPORTABLE_MODELS)
  space: object  # nas.models.space.SearchSpace
  args: dict  # the model's keyword arguments (widths, strides, num_classes, input_shape, ...)
  architecture: object  # nas.models.arch.Architecture
  weights: pathlib.Path  # the run's network.npz
  seed: int = 0


@dataclasses.dataclass(frozen=True)
class Run:
  """A finished run, loaded: the folder (for export.json and the output check), result.json's content, the network
  in eval mode, the test set and the run's hardware preset (None: no per-layer prediction in measure.json)."""
  folder: pathlib.Path
  result: dict
  network: object
  x_test: np.ndarray
  y_test: np.ndarray
  hardware: object | None = None


@dataclasses.dataclass(frozen=True)
class Options:
  measure: bool = False  # also write measure.json
  repeats: int = 300  # timed runs for measure
  threads: int = 1  # onnxruntime intra-op threads for measure
  force: bool = False  # replace a previous export


def export_files() -> set[str]:
  """The names an export folder may hold."""
  return {f.file_name for f in FORMATS.values()} | set(OTHER_FILES)


# --- the input -----------------------------------------------------------------------------------------------------

def restore_network(spec: NetworkSpec):
  """The fine-tuned network of ``spec`` in eval mode.

  Raises:
    ExportError: the model cannot be exported, or network.npz is truncated or corrupt.
  """
  from nas.models import build_model
  from nas.train.checkpoint import load_network
  if spec.model not in EXPORTABLE_MODELS:
    raise ExportError(f"{spec.weights.parent}: model {spec.model!r} cannot be exported; the exporter knows "
                      f"{list(EXPORTABLE_MODELS)}.")
  check_npz(spec.weights)
  net = build_model(spec.model, spec.space, seed=spec.seed, arch=spec.architecture, **spec.args)
  load_network(net, spec.weights)
  net.eval()
  return net


def check_npz(path: pathlib.Path) -> None:
  """Raise ExportError (one sentence: the file and the fix) unless every array of ``path`` can be read."""
  try:
    with open(path, "rb") as f, np.load(f) as data:  # np.load(path) leaves the file open when it is no zip
      for name in data.files:
        data[name]
  except (zipfile.BadZipFile, EOFError, OSError, ValueError, zlib.error) as e:
    raise ExportError(f"{path} is truncated or corrupt ({type(e).__name__}: {e}); re-run the search job that "
                      f"wrote it.") from None


def check_options(options: Options) -> None:
  for name, value in (("--repeats", options.repeats), ("--threads", options.threads)):
    if int(value) != value or value < 1:
      raise ExportError(f"{name}={value} must be a whole number >= 1.")


def check_out(out: pathlib.Path, run_folder: pathlib.Path, force: bool = False, marker: str = MARKER,
              files=None, noun: str = "export") -> None:
  """Raise ExportError unless writing the export to ``out`` deletes nothing it did not write (see the module
  docstring): ``out`` is not the run folder nor holds it, and is new, empty, or a previous export with ``force``.

  ``marker``, ``files`` and ``noun`` describe another kind of export folder (the C export: ``export_c.json``,
  its files, "C export"); ``files`` defaults to :func:`export_files`.
  """
  out, run_folder = pathlib.Path(out), pathlib.Path(run_folder)
  known = export_files() if files is None else set(files)
  sub = "export" if noun == "export" else noun.lower().replace(" ", "_").replace("c_export", "export_c")
  resolved, run = out.resolve(), run_folder.resolve()
  if resolved == run or resolved in run.parents:
    raise ExportError(f"--out {out} is the run folder {run_folder} or contains it, and the {noun} would replace "
                      f"the run's own files; pass a new folder such as {run_folder / sub}.")
  if not out.parent.is_dir():
    raise ExportError(f"cannot write {out}: its parent {out.parent} is not an existing folder; pass another --out.")
  if out.exists() and not out.is_dir():
    raise ExportError(f"cannot write {out}: it exists and is not a folder; pass another --out.")
  if not out.is_dir() or not any(out.iterdir()):
    return
  if not (out / marker).is_file():
    raise ExportError(f"--out {out} is a folder that holds files but no previous {noun} (no {marker}), and "
                      f"exporting would delete them; pass a new or empty folder.")
  strangers = sorted(p.name for p in out.iterdir() if p.name not in known)
  if strangers:
    raise ExportError(f"--out {out} holds a previous {noun} and files the exporter did not write "
                      f"({', '.join(strangers[:3])}), which replacing it would delete; move them or pass another --out.")
  if not force:
    raise ExportError(f"--out {out} holds a previous {noun}; pass --force to replace it, or another --out.")
  try:
    with tempfile.TemporaryFile(dir=out):  # its files are deleted on replacing it
      pass
  except OSError as e:
    raise ExportError(f"cannot replace {out}: it is not writable ({e.strerror}); make it writable or pass "
                      f"another --out.") from None


# --- the output folder ---------------------------------------------------------------------------------------------

def staging(out: pathlib.Path) -> pathlib.Path:
  """A temporary folder beside ``out`` (renamed to it at the end), or an ExportError if it cannot be written."""
  parent = out.parent
  if not parent.is_dir():
    raise ExportError(f"cannot write {out}: its parent {parent} is not an existing folder; pass another --out.")
  if out.exists() and not out.is_dir():
    raise ExportError(f"cannot write {out}: it exists and is not a folder; pass another --out.")
  try:
    tmp = pathlib.Path(tempfile.mkdtemp(dir=parent, prefix=f".{out.name}.tmp-"))
    tmp.chmod(0o755)  # mkdtemp's 0700 would carry over to the export folder
    return tmp
  except OSError as e:
    raise ExportError(f"cannot write into {parent} ({e.strerror}); pass a writable --out.") from None


def commit(tmp: pathlib.Path, out: pathlib.Path) -> None:
  """Replaces ``out`` with ``tmp`` (an old export is moved aside first and removed after the rename); on failure
  the old export is put back, ``tmp`` removed and an ExportError raised."""
  old = None
  try:
    if out.exists():
      old = out.with_name(f".{out.name}.old-{os.getpid()}")
      out.rename(old)
    tmp.rename(out)
  except OSError as e:
    if old is not None and old.exists() and not out.exists():
      old.rename(out)
    shutil.rmtree(tmp, ignore_errors=True)
    raise ExportError(f"cannot write {out} ({e.strerror}); make its folder writable or pass another --out.") from None
  if old is not None:
    shutil.rmtree(old, ignore_errors=True)


# --- the export ----------------------------------------------------------------------------------------------------

def export_run(run: Run, out, options: Options = Options()) -> dict:
  """Writes the export of ``run`` into ``out`` and returns export.json's content.

  Raises:
    ExportError: bad options or output folder (see :func:`check_out`), before anything is written.
  """
  out = pathlib.Path(out)
  check_options(options)
  check_out(out, run.folder, options.force)
  tmp = staging(out)
  try:
    info = _write(run, tmp, options)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  commit(tmp, out)
  return info


def build_formats(inet: integer.IntegerNetwork) -> dict:
  """Every registered format's content for ``inet`` (name -> ModelProto or bytes), each checked."""
  contents = {name: fmt.build(inet) for name, fmt in FORMATS.items()}
  for name, content in contents.items():
    FORMATS[name].check(content)
  return contents


def _write(run: Run, tmp: pathlib.Path, options: Options) -> dict:
  """Writes every file of the export into ``tmp``; export.json's content."""
  if getattr(run.network, "name", None) == vit_int.MODEL:
    return vit_export.write(run, tmp, options)
  inet = integer.from_network(run.network)
  models = build_formats(inet)
  data = {name: write(FORMATS[name], content, tmp) for name, content in models.items()}
  packed = pack.write_weights(tmp / "weights.bin", inet)
  x, y = run.x_test, run.y_test
  _, int_logits = integer.run(inet, x)
  ort_out = ort_session(data["qdq"]).run(None, {"image": np.asarray(x, np.float32)})[0]
  preds = {"integer": int_logits.argmax(-1), "onnxruntime": ort_out.argmax(-1),
           "jax_fake_quant": jax_logits(run.network, x).argmax(-1)}
  check = agreement(preds, y)
  check.update(qonnx_executor_vs_jax_identical_top1=float(np.mean(
      qonnx_logits(models["qonnx"], x).argmax(-1) == preds["jax_fake_quant"])),
      result_json_accuracy=run.result.get("accuracy"))
  info = _info(run, inet, packed, models["qdq"], len(data["qdq"]))
  info.update(agreement=check, onnx={"opset": models["qdq"].opset_import[0].version,
                                     "storage": storage_table(models["qdq"])},
              int8=int8_check(data["int8"], inet, x, y, preds))
  if options.measure:
    m = measure(models["int8"], data["qdq"], inet, x, tmp, options.repeats, options.threads)
    m.update(predicted_cost=run.result.get("cost"), predicted_target=run.result.get("target"),
             predicted_layers_s=predicted_layers(run.hardware, run.result))
    (tmp / "measure.json").write_text(json.dumps(m, indent=1))
    info["measure"] = {"graph": m["graph"], "end_to_end_us": m["end_to_end_us"], "input_us": m["input_us"],
                       "float_qdq_end_to_end_us": m["float_qdq"]["end_to_end_us"],
                       "intra_op_threads": m["intra_op_threads"]}
  (tmp / MARKER).write_text(json.dumps(info, indent=1))
  return info


def _info(run: Run, inet: integer.IntegerNetwork, packed: dict, qdq, qdq_bytes: int) -> dict:
  """export.json's description of the network and its sizes (in the order of its keys; agreement, onnx and
  int8 follow)."""
  weight_bytes = run.result.get("weight_bytes", run.result.get("metrics", {}).get("weight_bytes"))
  first = inet.layers[0]
  return {
      "run": str(run.folder), "model": inet.model, "classifier": inet.classifier,
      "input": {"layout": "NHWC float32", "shape": list(inet.input_shape), "step": first.in_step,
                "bits": first.in_bits, "signed": first.in_signed},
      "pool": None if inet.pool is None else {"hw": inet.pool_hw, "multiplier": int(inet.pool.multiplier[0]),
                                               "shift": int(inet.pool.shift[0])},
      "layers": layer_table(inet, packed),
      "sizes": {"packed_weight_bytes": packed["packed_weight_bytes"], "result_weight_bytes": weight_bytes,
                "packed_minus_weight_bytes": None if weight_bytes is None
                else packed["packed_weight_bytes"] - weight_bytes,
                "weights_bin_bytes": packed["file_bytes"], "overhead_bytes": packed["overhead_bytes"],
                "overhead_note": "header, names, per-channel bits, steps, int32 biases, float64 accumulator "
                                 "units, int32 multipliers and u8 shifts (nas/deploy/pack.py); packed weights are "
                                 "padded to a whole byte per layer",
                "model_onnx_bytes": qdq_bytes},
      "agreement": None, "onnx": None, "int8": None,
  }


def predicted_layers(hw, result: dict) -> dict | None:
  """Per layer predicted latency (seconds) on the run's own hardware preset ``hw`` (sum over a layer's bit-width
  groups), or None without a preset."""
  from hardware.base import inference_cost
  from nas.models.arch import Architecture
  if hw is None:  # a user's preset whose module is not importable here: nothing to compare with
    return None
  out: dict[str, float] = {}
  arch = Architecture.from_dict(result["architecture"])
  for layer in arch.layers:
    for spec, w in layer.groups():
      cost = hw.cost(spec, w, layer.a_bits, spec.cin, spec.cout)
      out[layer.spec.name] = out.get(layer.spec.name, 0.0) + float(np.asarray(cost.latency_s))
  # The preset's per-inference cost (the runtime call, quantising the input): measured as input_us.
  inference = float(inference_cost(hw, arch.layers[0].spec).latency_s) if arch.layers else 0.0
  return {"target": hw.name, "latency_s": out, "inference_s": inference}
