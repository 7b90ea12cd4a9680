"""nas.deploy.calibrate_ort_transformer: the transformer grid's graphs compute what they claim and run as onnxruntime
fuses them, the fit recovers rates a hand-written formula generated, and the shipped preset costs a ViT's layers
from measurements (no NOT MEASURED fallback for these kinds)."""
import dataclasses
import json
import pathlib

import hydra.utils
import numpy as np
import pytest
from omegaconf import OmegaConf

from hardware.base import LayerSpec
from hardware.cpu import SIMDCPU
from nas.deploy import calibrate_ort as co
from nas.deploy import calibrate_ort_transformer as ct

REPO = pathlib.Path(__file__).resolve().parents[3]
PRESET = REPO / "conf" / "hardware" / "cpu_ort.yaml"
SEQUENCE = ("linear", "matmul", "softmax", "layernorm")


def _reference(g, after, feeds):
  """What the layer computes, in NumPy, from the scales, weights and zero points ``network`` wrote."""
  from onnx import numpy_helper
  init = {i.name: numpy_helper.to_array(i) for i in after.graph.initializer}
  quant = lambda v, step, lo, hi: np.clip(np.round(v / step), lo, hi) * step  # ties to even, as QuantizeLinear
  if g.path == "linear":
    x = quant(0.5 * feeds["x_in"], init["x_s"], -128, 127)
    return x @ (init["w"].astype(np.float32) * init["w_s"]) + init["bias"]
  if g.path.startswith("matmul"):
    a, b = 0.5 * feeds["a_in"], 0.5 * feeds["b_in"]
    a = quant(a, init["a_s"], 0, 255) if g.path == "matmul_av" else quant(a, init["a_s"], -128, 127)
    return a @ quant(b, init["b_s"], -128, 127)
  x = 0.5 * feeds["x_in"]
  if g.path == "softmax":
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)
  return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-6) * init["gamma"] + init["beta"]


def _shape(g):
  s = g.spec
  if g.path.startswith("matmul"):
    return (1, s.cout // s.head_cols, s.in_h, s.head_cols)
  if g.path == "softmax":
    return (1, s.cin // s.in_h, s.in_h, s.in_h)
  return (1, s.in_h, s.cout)


def test_grid_graphs_compute_their_layer_and_run_as_onnxruntime_fuses_them():
  from nas.deploy.ort import ort_session
  for g in ct.tiny_grid():
    after, before, feeds = ct.network(g)  # onnx.checker (full check) and strict shape inference inside
    out = ort_session(after.SerializeToString()).run(None, feeds)[0]
    assert out.shape == _shape(g), g.path
    np.testing.assert_allclose(out, _reference(g, after, feeds), rtol=1e-4, atol=1e-4, err_msg=g.path)
    assert {n.name.split("/")[0] for n in before.graph.node} == {"before"}
  # What onnxruntime 1.32 runs for each pattern (its optimised graph): every matmul an integer kernel.
  records = ct.measure(ct.tiny_grid(), repeats=3, passes=1)  # no timing asserted: too few runs to mean anything
  ops = {r["path"]: r["op_types"] for r in records}
  assert ops["matmul_qk"] == ops["matmul_av"] == ["QuantizeLinear", "QuantizeLinear", "MatMulIntegerToFloat"]
  assert ops["linear"] == ["QuantizeLinear", "MatMulIntegerToFloat", "Add"]
  assert ops["softmax"] == ["Softmax"] and ops["layernorm"] == ["LayerNormalization"]
  assert {r["kind"] for r in records} == set(SEQUENCE)
  assert all(len(r["cut_after_us"]) == len(r["cut_before_us"]) == 1 for r in records)
  qk = next(r for r in records if r["path"] == "matmul_qk")
  assert (qk["cin"], qk["cout"], qk["head_cols"], qk["in_h"]) == (16, 2 * 17, 17, 17)


def test_the_linear_fuses_only_with_a_symbolic_batch_as_the_vit_export_writes_it():
  """With a static batch of 1 onnxruntime's MatMulAddFusion makes the linear a float Gemm on dequantised weights
  (the module docstring): the grid's graphs keep the batch symbolic, at the export's opset."""
  vit_onnx = pytest.importorskip("nas.deploy.vit_onnx")
  assert ct.OPSET == vit_onnx.OPSET
  after, _, _ = ct.network(ct.tiny_grid()[0])
  assert after.graph.input[0].type.tensor_type.shape.dim[0].dim_param == ct.BATCH
  static = after.__class__()
  static.CopyFrom(after)
  static.opset_import[0].version = 17  # at 21 the static-batch session does not load in onnxruntime 1.32
  static.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
  assert "Gemm" in ct.layer_kernels(static) and "MatMulIntegerToFloat" not in ct.layer_kernels(static)


def test_default_grid_covers_the_vit_space():
  specs = {(g.spec.kind, g.spec.cin, g.spec.cout, g.spec.in_h, g.spec.head_cols) for g in ct.default_grid()}
  for t in (5, 17):
    for h in (2, 3, 4, 6):  # conf/model/vit.yaml: embed 64, 4 heads of 16, width multiples 0.5-1.5
      assert ("linear", 64, 16 * h, t, 0) in specs and ("linear", 16 * h, 64, t, 0) in specs
      assert ("matmul", 16, h * t, t, t) in specs and ("matmul", t, 16 * h, t, 16) in specs
      assert ("softmax", h * t, h * t, t, 0) in specs
    for m in (64, 96, 128, 192):  # MLP 128 x the width multiples
      assert ("linear", 64, m, t, 0) in specs and ("linear", m, 64, t, 0) in specs
    assert {("layernorm", e, e, t, 0) for e in (32, 64, 128)} <= specs
  # Heads over embeddings 32, 64, 128 (2, 4, 8 heads of 16) times the width multiples.
  assert {co_ // 16 for k, _, co_, t, hc in specs if k == "matmul" and hc == 16} >= {1, 2, 3, 4, 6, 8, 12}


# --- the fit against a hand-made set -----------------------------------------------------------------------------

# Known constants, unlike any measured ones; the CNN side's mem_bw and lane multiples (16, 16) are fixed by the fit.
TRUE = {"rate_linear": 3.0e10, "rate_matmul": 1.0e10, "float_ops_per_s": 2.0e9, "overhead_linear": 2.0e-6,
        "overhead_matmul": 1.0e-6, "overhead_softmax": 0.8e-6, "overhead_layernorm": 0.5e-6}
CNN = {"rate_conv": 2e11, "rate_dwconv": 2e11, "rate_dense": 5e10, "mem_bw": 5e10, "overhead_conv": 1e-6,
       "overhead_dwconv": 1e-6, "overhead_dense": 6e-7, "cin_multiple": 16, "cout_multiple": 16}


def _pad16(n):
  return -(-n // 16) * 16


def hand_made_seconds(s: LayerSpec) -> float:
  """Latency from the closed form, written here independently of SIMDCPU (every layer of the grid is compute-bound
  at these rates and a 5e10 B/s memory): overhead + work / rate, work = padded MACs, or ops of hardware.kinds."""
  if s.kind == "linear":
    return TRUE["overhead_linear"] + s.in_h * _pad16(s.cin) * _pad16(s.cout) / TRUE["rate_linear"]
  if s.kind == "matmul":
    heads = s.cout // s.head_cols
    return TRUE["overhead_matmul"] + heads * s.in_h * _pad16(s.cin) * _pad16(s.head_cols) / TRUE["rate_matmul"]
  ops = {"softmax": 14, "layernorm": 6}[s.kind] * s.in_h * s.cin
  return TRUE[f"overhead_{s.kind}"] + ops / TRUE["float_ops_per_s"]


def test_fit_recovers_rates_and_overheads_of_a_hand_made_set():
  rng = np.random.default_rng(1)
  records = [{**ct.record(g, [], [0.0], [0.0], 1), "median_s": hand_made_seconds(g.spec) * float(np.exp(
      rng.normal(0, 0.03)))} for g in ct.default_grid()]
  seq, fit_q, held_q = ct.fit_records(records, CNN)
  for name, value in TRUE.items():
    assert seq[name] == pytest.approx(value, rel=0.1 if name.startswith(("rate", "float")) else 0.25), name
  assert held_q["spearman"] > 0.99 and held_q["median_rel_err"] < 0.05
  assert set(held_q["by_kind"]) == set(SEQUENCE)


def _shipped_with(records, **host):
  """The shipped CNN records and host, with ``records`` as the transformer records (their host: ``host`` over the
  CNN one)."""
  shipped = json.loads((REPO / "hardware" / "data" / "cpu_ort_measurements.json").read_text())
  cnn = [r for r in shipped["records"] if r["kind"] not in SEQUENCE]
  return {"host": shipped["host"], "transformer_host": {**shipped["host"], **host}, "records": cnn + records}


def _cnn_lines(text: str) -> list:
  """The preset's lines but those the transformer fit writes (its header block, its entries, float_ops_per_s) and
  those naming the measurements file (its path differs)."""
  lines = text.splitlines()
  if any(l.startswith("# Transformer kinds") for l in lines):
    start = next(i for i, l in enumerate(lines) if l.startswith("# Transformer kinds"))
    lines = lines[:start] + lines[lines.index("_target_: hardware.cpu.SIMDCPU"):]
  return [l for l in lines if not l.startswith(("  linear:", "  matmul:", "  softmax:", "  layernorm:",
                                                "float_ops_per_s:"))
          and "cpu_ort_measurements.json" not in l and "m.json" not in l]


def test_cnn_lines_of_the_preset_unchanged_by_transformer_records(tmp_path):
  """The shipped CNN records plus hand-made transformer records give the shipped preset's CNN lines exactly (the
  shipped preset is the fit of the shipped measurements; the transformer records enter neither the CNN fit nor its
  split), and transformer lines carrying the hand-made fit."""
  rng = np.random.default_rng(2)
  records = [{**ct.record(g, ["X"], [0.0], [0.0], 1), "median_s": hand_made_seconds(g.spec) * float(np.exp(
      rng.normal(0, 0.03)))} for g in ct.default_grid()]
  (tmp_path / "m.json").write_text(json.dumps(_shipped_with(records, date="today")))
  co.main(["--measurements", str(tmp_path / "m.json"), "--out", str(tmp_path / "p.yaml")])
  text = (tmp_path / "p.yaml").read_text()
  assert _cnn_lines(PRESET.read_text()) == _cnn_lines(text)
  assert len(_cnn_lines(text)) >= 40  # the header's CNN fit quality, every CNN constant, the input stage, fitted_on
  model = hydra.utils.instantiate(OmegaConf.load(tmp_path / "p.yaml"), _convert_="all")
  assert model.mac_rate["linear"] == pytest.approx(TRUE["rate_linear"], rel=0.1)
  assert model.float_ops_per_s == pytest.approx(TRUE["float_ops_per_s"], rel=0.1)
  assert "Transformer kinds" in text and "NOT MEASURED (softmax" not in text


def test_transformer_records_of_another_cpu_stop_it_before_fitting(tmp_path, capsys):
  records = [{**ct.record(g, [], [0.0], [0.0], 1), "median_s": hand_made_seconds(g.spec)} for g in ct.default_grid()]
  (tmp_path / "m.json").write_text(json.dumps(_shipped_with(records, cpu="Other CPU")))
  with pytest.raises(SystemExit) as stop:
    co.main(["--measurements", str(tmp_path / "m.json"), "--out", str(tmp_path / "p.yaml")])
  out = capsys.readouterr()
  assert stop.value.code == 2 and not (tmp_path / "p.yaml").exists() and out.out == ""  # nothing fitted
  assert "CPU 'Other CPU'" in out.err and "one preset describes one machine" in out.err


# --- the shipped preset and lookup -------------------------------------------------------------------------------

def test_lookup_keys_matmul_by_head_cols_and_serves_elementwise(tmp_path):
  f = tmp_path / "m.json"
  rec = lambda kind, cin, cout, hc, t: {"kind": kind, "cin": cin, "cout": cout, "kernel": 1, "stride": 1, "in_h": 17,
                                        "in_w": 1, "head_cols": hc, "median_s": t}
  f.write_text(json.dumps({"records": [rec("matmul", 17, 32, 16, 7e-6), rec("softmax", 34, 34, 0, 9e-6)]}))
  args = dict(name="t", mac_rate={"conv": 1e11, "dwconv": 1e11, "dense": 1e11}, mem_bw=1e11,
              layer_overhead_s=1e-6, e_mac_j=0, e_byte_j=0, static_power_w=0)
  lut, plain = SIMDCPU(**args, measured_layers=str(f)), SIMDCPU(**args)
  two_heads = LayerSpec("matmul", 17, 32, in_h=17, head_cols=16)
  one_head = LayerSpec("matmul", 17, 32, in_h=17, head_cols=32)  # same cin, cout, tokens: another op
  assert float(lut.cost(two_heads, 8, 8, 17, 32).latency_s) == 7e-6
  assert float(lut.cost(one_head, 8, 8, 17, 32).latency_s) == float(plain.cost(one_head, 8, 8, 17, 32).latency_s)
  sm = LayerSpec("softmax", 34, 34, in_h=17)
  assert float(lut.cost(sm, 8, 8, 34, 34).latency_s) == 9e-6
  assert float(lut.cost(sm, 8, 8, 17, 17).latency_s) == float(plain.cost(sm, 8, 8, 17, 17).latency_s)


def test_lookup_and_roofline_together_never_fall_as_channels_grow(tmp_path):
  """A linear measured faster than the roofline says, and another slower: between and around them the roofline is
  clipped into the measured bracket, so latency is non-decreasing in both channel counts."""
  f = tmp_path / "m.json"
  rec = lambda cin, cout, t: {"kind": "linear", "cin": cin, "cout": cout, "kernel": 1, "stride": 1, "in_h": 17,
                              "in_w": 1, "median_s": t}
  args = dict(name="t", mac_rate={"conv": 1e10, "dwconv": 1e10, "dense": 1e10}, mem_bw=1e11,
              layer_overhead_s=1e-6, e_mac_j=0, e_byte_j=0, static_power_w=0)
  plain = SIMDCPU(**args)
  layer = LayerSpec("linear", 64, 64, in_h=17)
  roof = lambda ci, co: float(plain.cost(layer, 8, 8, ci, co).latency_s)
  f.write_text(json.dumps({"records": [rec(32, 16, 0.5 * roof(32, 16)), rec(48, 16, 2.0 * roof(48, 16))]}))
  lut = SIMDCPU(**args, measured_layers=str(f))
  ci = np.array([8, 16, 24, 32, 40, 48, 64]).reshape(-1, 1)
  lat = lut.cost(layer, 8, 8, ci, np.array([[8, 16, 24]])).latency_s
  assert np.all(np.diff(lat, axis=0) >= 0) and np.all(np.diff(lat, axis=1) >= 0)
  assert lat[3, 1] == 0.5 * roof(32, 16) and lat[5, 1] == 2.0 * roof(48, 16)  # measured shapes: their times
  # Unmeasured: capped by the faster measured layer above, raised to the slower one below, else the roofline.
  assert lat[2, 1] == 0.5 * roof(32, 16) < roof(24, 16) and lat[6, 1] == 2.0 * roof(48, 16) > roof(64, 16)
  assert lat[4, 0] == roof(40, 8)


def test_shipped_preset_costs_a_vit_from_measurements():
  from nas import models
  from nas.models.space import SearchSpace
  text = PRESET.read_text()
  assert "NOT MEASURED (softmax" not in text and "float_ops_per_s: null" not in text
  cfg = OmegaConf.to_container(OmegaConf.load(PRESET))
  assert set(SEQUENCE) <= set(cfg["layer_overhead_s"]) and {"linear", "matmul"} <= set(cfg["mac_rate"])
  model = hydra.utils.instantiate(OmegaConf.load(PRESET), _convert_="all")
  assert model.float_ops_per_s == cfg["float_ops_per_s"]  # fitted, not derived from mac_rate.conv
  records = json.loads((REPO / cfg["measured_layers"]).read_text())["records"]
  measured = {(r["kind"], r["cin"], r["cout"], r["in_h"], r.get("head_cols", 0)): r["median_s"] for r in records}
  net = models.build_model("vit", SearchSpace(), seed=0, input_shape=(28, 28, 1), num_classes=10, depth=1)
  kinds = set()
  for spec, _ in net.cost_layers():
    if spec.kind not in SEQUENCE:
      continue
    kinds.add(spec.kind)
    latency = float(model.cost(spec, 8, 8, spec.cin, spec.cout).latency_s)
    key = (spec.kind, spec.cin, spec.cout, spec.in_h, spec.head_cols)
    assert key in measured, key  # every ViT shape (T = 17, widest choices) was timed
    assert latency >= measured[key] > 0 and np.isfinite(latency), spec.name  # non-decreasing in channels
    for w, a in ((4, 4), (2, 8)):  # 8-bit kernels: fewer bits cost the same
      assert float(model.cost(spec, w, a, spec.cin, spec.cout).latency_s) == latency
    if spec.kind == "linear":  # nm_weights dense: a 2:4 linear runs as the dense one measured
      sparse = dataclasses.replace(spec, nm=(2, 4))
      assert float(model.cost(sparse, 8, 8, spec.cin, spec.cout).latency_s) == latency
  assert kinds == set(SEQUENCE)


def test_measuring_the_transformer_kinds_keeps_the_cnn_records_and_host(tmp_path):
  import argparse
  from hardware import calibrate
  shipped = REPO / "hardware" / "data" / "cpu_ort_measurements.json"
  (tmp_path / "m.json").write_bytes(shipped.read_bytes())
  args = argparse.Namespace(measurements=str(tmp_path / "m.json"), kinds="transformer", grid="tiny", threads=1)
  data = co._measure(args, redo="redo")
  old = json.loads(shipped.read_text())
  assert data["host"] == old["host"]
  assert [r for r in data["records"] if r["kind"] not in SEQUENCE] == [r for r in old["records"] if r["kind"] not in
                                                                      SEQUENCE]
  assert sorted(r["name"] for r in data["records"] if r["kind"] in SEQUENCE) == [f"u{i}" for i in range(5)]
  assert data["transformer_host"]["onnxruntime"] and data["transformer_host"]["method"] == ct.METHOD
  args.measurements = str(tmp_path / "none.json")
  with pytest.raises(calibrate.InputError, match="--kinds transformer keeps the other kinds' records"):
    co._measure(args, redo="redo")
