"""Agreement of the exported graphs with the integer reference and the JAX network, and export.json's tables.

export.json ``agreement``: the top-1 of the integer reference, onnxruntime on model.onnx and the JAX network on
the run's test set (and qonnx's own executor on model.qonnx.onnx against JAX); ``int8``: the kernels onnxruntime
runs per layer in model.int8.onnx (read from its optimised graph), per layer the output channels its kernel computes
exactly and the largest bias rounding of the others in output steps, and its top-1 agreement with the integer
reference and JAX.
"""
from __future__ import annotations

import numpy as np

from nas.deploy import integer

from nas.deploy import exact8
from nas.deploy.ort import INTEGER_KERNELS, kernels, ort_session


def jax_logits(net, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
  """The fake-quantised JAX network's eval-mode logits (BatchNorm running statistics, argmax choices)."""
  import jax.numpy as jnp
  from nas.train.finetune import _eval_logits
  net.eval()
  return np.concatenate([np.asarray(_eval_logits(net, jnp.asarray(x[i:i + batch_size]), "argmax"))
                         for i in range(0, len(x), batch_size)])


def qonnx_logits(model, x: np.ndarray) -> np.ndarray:
  """Logits from qonnx's own executor (node by node; its Quant implementation)."""
  from qonnx.core.modelwrapper import ModelWrapper
  from qonnx.core.onnx_exec import execute_onnx
  from qonnx.transformation.infer_shapes import InferShapes
  fixed = type(model)()
  fixed.CopyFrom(model)
  for value in list(fixed.graph.input) + list(fixed.graph.output):  # its executor wants a fixed batch
    value.type.tensor_type.shape.dim[0].dim_value = len(x)
  wrapper = ModelWrapper(fixed).transform(InferShapes())
  return execute_onnx(wrapper, {"image": np.asarray(x, np.float32)})["logits"]


def agreement(preds: dict[str, np.ndarray], labels: np.ndarray) -> dict:
  """Accuracies of each runner and the fraction of images where all give the same top-1 class."""
  first = next(iter(preds.values()))
  same = np.all([p == first for p in preds.values()], axis=0)
  acc = {n: float(np.mean(p == labels)) for n, p in preds.items()}
  spread = max(acc.values()) - min(acc.values())
  return {"images": int(len(labels)), "identical_top1": float(np.mean(same)), "accuracy": acc,
          "accuracy_spread_points": 100 * spread,
          "meets_target": bool(np.mean(same) >= 0.995 and 100 * spread <= 0.2),
          "target": "identical top-1 on >= 99.5 % of images, accuracies within 0.2 points"}


def layer_table(inet: integer.IntegerNetwork, packed: dict) -> list[dict]:
  """export.json's per-layer rows: shapes, bits (a list where per channel), steps and the integer parameters."""
  return [{"name": l.name, "kind": l.kind, "weight_shape": list(l.weight.shape),
           "w_bits": l.w_bits.tolist() if len(set(l.w_bits.tolist())) > 1 else int(l.w_bits[0]),
           "a_bits_in": l.in_bits, "a_step_in": l.in_step, "out_bits": l.out_bits, "out_step": l.out_step,
           "w_steps": l.w_step.tolist(), "bn_gain": l.bn_gain.tolist(), "bias_int32": l.bias.tolist(),
           "bias_shift": l.bias_shift, "multiplier": None if l.requant is None else l.requant.multiplier.tolist(),
           "shift": None if l.requant is None else l.requant.shift.tolist(), "weights": int(l.weight.size),
           "packed_bytes": packed["layers"][l.name]} for l in inet.layers]


def int8_check(int8_bytes: bytes, inet: integer.IntegerNetwork, x: np.ndarray, y: np.ndarray, preds: dict) -> dict:
  """export.json's ``int8`` block: the kernels onnxruntime runs per layer, per layer the output channels whose
  kernel is exact (``nas.deploy.exact8.int8_scaled``: thresholds fitted) and the bias rounding of the others, and
  the top-1 agreement of model.int8.onnx with the integer reference, the model of what it computes
  (``nas.deploy.exact8.int8_kernels``), the JAX network, and the whole-step-bias network it was before."""
  ops = kernels(int8_bytes, inet)
  int8_pred = ort_session(int8_bytes).run(None, {"image": np.asarray(x, np.float32)})[0].argmax(-1)
  kernel_pred = integer.run(exact8.int8_kernels(inet), x)[1].argmax(-1)
  whole_pred = integer.run(exact8.whole_step_kernels(inet), x)[1].argmax(-1)
  check = agreement({"integer": preds["integer"], "onnxruntime_int8": int8_pred,
                     "jax_fake_quant": preds["jax_fake_quant"]}, y)
  check.update(vs_integer_top1=float(np.mean(int8_pred == preds["integer"])),
               vs_jax_top1=float(np.mean(int8_pred == preds["jax_fake_quant"])),
               vs_integer_int8_kernels_top1=float(np.mean(int8_pred == kernel_pred)),
               integer_int8_kernels_vs_integer_top1=float(np.mean(kernel_pred == preds["integer"])),
               whole_step_vs_integer_top1=float(np.mean(whole_pred == preds["integer"])),
               whole_step_vs_jax_top1=float(np.mean(whole_pred == preds["jax_fake_quant"])),
               note="integer_int8_kernels: the integer reference as 8-bit kernels run it "
                    "(nas.deploy.exact8.int8_kernels: the bias's fractional bits in left-shifted int8 weights, each "
                    "layer's bias and multiplier fitted to its output thresholds where possible, the map before "
                    "pooling in uint8), which model.int8.onnx computes; whole_step: what it computed before "
                    "(nas.deploy.exact8.whole_step_kernels: every bias in whole accumulator steps)")
  report = exact8.int8_report(inet)
  convs = [l.name for l in inet.layers if l.kind == "conv"]
  return {"file": "model.int8.onnx", "kernels": ops,
          "integer_kernels": all(any(o in INTEGER_KERNELS for o in ops.get(n, [])) for n in convs + [inet.layers[-1].name]),
          "bias_rounding_max": {n: r["bias_rounding_max"] for n, r in report.items()},
          "exact_channels": {n: [r["fitted"], r["channels"]] for n, r in report.items()},
          "bias_rounding_note": "largest |kernel bias - exact bias| per layer over the channels whose kernel is not "
                                "fitted exactly, in output steps (the next activation's, for the map before "
                                "pooling the head input's; steps s_in s_w of the unshifted accumulator for the "
                                "output layer); exact_channels: [fitted, channels] per layer",
          "layers": report,
          "agreement": check}
