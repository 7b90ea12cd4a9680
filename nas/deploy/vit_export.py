"""The export of a finished ViT run (``model=vit``): model.onnx, weights.bin, export.json and, with ``measure``,
measure.json, written by ``nas.deploy.export`` into its staging folder (the folder rules are that module's).

  model.onnx    int8 matmuls in QDQ form, softmax / LayerNorm / GELU in float (``nas.deploy.vit_onnx``: the form
                and why), checked by ``onnx.checker`` (full check) and run by onnxruntime's CPU provider.
  weights.bin   every linear packed at its per-column bit-widths, N:M layers as kept values + positions
                (``nas.deploy.vit_pack``), and the float tensors.
  export.json   per linear its shape, bits, N:M pattern, input quantiser and packed bytes; the attention
                quantisers; skipped sub-blocks and dropped heads; the kernels onnxruntime runs; the top-1
                agreement of onnxruntime on model.onnx with the fake-quantised JAX network on the run's test set,
                both accuracies, and how far their logits are apart.
  measure.json  onnxruntime CPU latency of model.onnx, one image (batch 1, io_binding; ``nas.deploy.ort``'s
                timing: the median of the fastest block of runs), beside result.json's predicted cost.
"""
from __future__ import annotations

import json
import pathlib

import numpy as np

from nas.deploy import vit_int, vit_onnx, vit_pack
from nas.deploy.ort import _stats, _timed, ort_session
from nas.deploy.verify import agreement, jax_logits

ORT_BATCH = 1000  # test images per onnxruntime call


def onnx_logits(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
  """model.onnx's logits in onnxruntime (CPU), ``ORT_BATCH`` images a call."""
  sess = ort_session(model_bytes)
  x = np.asarray(x, np.float32)
  return np.concatenate([sess.run(None, {"image": x[i:i + ORT_BATCH]})[0] for i in range(0, len(x), ORT_BATCH)])


def logit_gap(a: np.ndarray, b: np.ndarray) -> dict:
  """How far two runners' logits are apart: the largest absolute difference, relative to the largest |logit|,
  and the share of images whose logits differ by more than 1e-4 of that."""
  d = np.abs(a - b)
  scale = float(np.max(np.abs(b))) or 1.0
  return {"max_abs": float(d.max()), "max_rel_to_max_logit": float(d.max()) / scale,
          "images_over_1e-4_rel": float(np.mean(d.max(-1) > 1e-4 * scale))}


def _bits_summary(bits: np.ndarray):
  values = [int(b) for b in bits]
  return values[0] if len(set(values)) == 1 else {str(b): values.count(b) for b in sorted(set(values))}


def layer_table(vnet: vit_int.VitNetwork, packed: dict) -> list[dict]:
  """export.json's per-linear rows (in forward order)."""
  return [{"name": l.name, "weight_shape": list(l.w_int.shape), "w_bits": _bits_summary(l.w_bits),
           "pruned_columns": int(np.sum(l.w_bits == 0)), "nm": None if l.nm is None else str(l.nm),
           "a_bits_in": l.act.bits, "a_signed_in": l.act.signed, "a_step_in": float(l.act.step),
           "packed_bytes": packed["layers"][l.name]} for l in vnet.linears()]


def block_table(vnet: vit_int.VitNetwork) -> list[dict]:
  """Per block: which sub-blocks run, the heads kept, the MLP columns kept, the attention quantisers."""
  rows = []
  for i, b in enumerate(vnet.blocks):
    a, m = b.attn, b.mlp
    acts = {} if a is None else {n: {"bits": q.bits, "signed": q.signed, "step": float(q.step)}
                                 for n, q in (("q", a.q_act), ("k", a.k_act), ("p", a.p_act), ("v", a.v_act))}
    rows.append({"block": i, "attention": "skipped" if a is None else "runs",
                 "mlp": "skipped" if m is None else "runs",
                 "heads_kept": None if a is None else list(a.kept_heads), "head_dim": None if a is None else a.head_dim,
                 "mlp_columns_kept": None if m is None else int(m.fc1.w_int.shape[1]), "attention_quantisers": acts})
  return rows


def write(run, tmp: pathlib.Path, options) -> dict:
  """Writes the ViT export of ``run`` (a ``nas.deploy.export.Run``) into ``tmp``; export.json's content."""
  import onnx
  vnet = vit_int.from_vit(run.network)
  model = vit_onnx.vit_model(vnet)
  onnx.checker.check_model(model, full_check=True)
  data = model.SerializeToString()
  (tmp / "model.onnx").write_bytes(data)
  packed = vit_pack.write_weights(tmp / "weights.bin", vnet)
  x, y = run.x_test, run.y_test
  ort_out, jax_out = onnx_logits(data, x), jax_logits(run.network, x)
  check = agreement({"onnxruntime": ort_out.argmax(-1), "jax_fake_quant": jax_out.argmax(-1)}, y)
  check.update(logits=logit_gap(ort_out, jax_out), result_json_accuracy=run.result.get("accuracy"))
  kernels = vit_onnx.kernel_counts(data)
  float_matmuls = sum(kernels.get(op, 0) for op in ("MatMul", "FusedMatMul", "Gemm"))
  weight_bytes = run.result.get("weight_bytes", run.result.get("metrics", {}).get("weight_bytes"))
  info = {
      "run": str(run.folder), "model": vit_int.MODEL, "form": "QDQ: int8 matmuls, float softmax / LayerNorm / "
      "GELU (nas/deploy/vit_onnx.py)",
      "input": {"layout": "NHWC float32", "shape": list(vnet.input_shape), "patch": vnet.patch_size,
                "pool": vnet.pool},
      "layers": layer_table(vnet, packed), "blocks": block_table(vnet),
      "sizes": {"packed_weight_bytes": packed["packed_weight_bytes"], "result_weight_bytes": weight_bytes,
                "packed_minus_weight_bytes": None if weight_bytes is None
                else packed["packed_weight_bytes"] - weight_bytes,
                "weights_bin_bytes": packed["file_bytes"], "overhead_bytes": packed["overhead_bytes"],
                "overhead_note": "names, per-column bits, steps and biases, activation quantisers, LayerNorms, "
                                 "positions and class token in float32 (nas/deploy/vit_pack.py); each layer's "
                                 "packed values and N:M positions are padded to a whole byte",
                "model_onnx_bytes": len(data)},
      "agreement": check,
      "onnx": {"opset": model.opset_import[0].version, "onnxruntime_nodes": kernels,
               "integer_kernels": float_matmuls == 0 and any(k in kernels for k in vit_onnx.INT_KERNELS),
               "float_matmuls": float_matmuls,
               "note": "onnxruntime_nodes: op type -> count after onnxruntime's CPU graph optimisations (QDQ "
                       "fusion); integer_kernels: every MatMul runs as an integer kernel"},
  }
  if options.measure:
    m = measure(data, x, options.repeats, options.threads)
    m.update(predicted_cost=run.result.get("cost"), predicted_target=run.result.get("target"))
    (tmp / "measure.json").write_text(json.dumps(m, indent=1))
    info["measure"] = {"graph": "model.onnx", "end_to_end_us": m["end_to_end_us"],
                       "intra_op_threads": m["intra_op_threads"]}
  (tmp / "export.json").write_text(json.dumps(info, indent=1))
  return info


def measure(model_bytes: bytes, x: np.ndarray, repeats: int = 300, threads: int = 1) -> dict:
  """onnxruntime CPU latency of model.onnx on one image, end to end (``nas.deploy.ort``'s timing)."""
  import onnxruntime as ort
  one = np.asarray(x[:1], np.float32)
  times = _timed([ort_session(model_bytes, threads)], one, repeats)[0]
  return {"graph": "model.onnx", "provider": "CPUExecutionProvider", "onnxruntime": ort.__version__, "batch": 1,
          "intra_op_threads": threads, "inter_op_threads": 1, "repeats": repeats, "end_to_end_us": _stats(times),
          "note": "wall time of InferenceSession.run_with_iobinding on one image from Python (input and output "
                  "bound once), best_block_median the headline (the median of the fastest of consecutive blocks "
                  "of runs), median/p10/p90 over all runs"}
