"""experiments.export on a tiny run folder: ONNX and QONNX files, agreement, timing, and each bad input."""
import json
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
import yaml

from experiments import export as ex
from nas.deploy import integer
from nas.deploy import exact8
from nas.deploy import pack
from nas.deploy import ort
from nas.deploy.formats.int8 import int8_model
from nas.deploy.formats.qdq import qdq_model
from nas.deploy.formats.qonnx import qonnx_model
from nas.deploy.verify import jax_logits
from nas.models.arch import Architecture
from nas.train.checkpoint import save_network
from nas.search.cost import architecture_metrics
from nas.train.datasets import load_digits
from nas.models import build_model
from nas.models.space import SearchSpace
from nas.train.finetune import calibrate

ROOT = pathlib.Path(__file__).resolve().parents[2]
WIDTHS, STRIDES = (4, 6, 8), (1, 2, 1)
SPACE = dict(w_bits=[2, 4, 8], a_bits=[2, 4, 8], width_mults=[1.0], first_layer_bits=8, last_layer_bits=8,
             channel_multiple=1, method="gumbel", hard=True, per_channel_w=True)


def _tiny_network(classifier: str = "pool"):
  """A calibrated (untrained) digits_cnn with 2/4/8-bit layers, one of them per channel, and one BatchNorm gain
  made negative (a negative requantisation multiplier)."""
  data = load_digits(limit=64)
  space = SearchSpace(**{k: tuple(v) if isinstance(v, list) else v for k, v in SPACE.items()})
  kwargs = dict(widths=WIDTHS, strides=STRIDES, classifier=classifier)
  sup = build_model("digits_cnn", space, seed=0, **kwargs)
  choices = {n: max(c.values) for n, c in sup.choices.items()}
  choices.update({"convs.1.w_bits": (2, 4, 8, 2, 4, 8), "convs.1.a_bits": 2, "convs.2.w_bits": 2,
                  "convs.2.a_bits": 4})
  arch = sup.architecture(choices)
  net = build_model("digits_cnn", space, seed=0, arch=arch, **kwargs)
  calibrate(net, data.x_train[:64])
  net.bns[1].scale[...] = net.bns[1].scale[...].at[0].multiply(-1.0)
  net.eval()
  return net, arch, data


def write_run(run: pathlib.Path, net, arch, result=None, cfg=None) -> pathlib.Path:
  """A run folder as the search app writes it (result.json, network.npz, .hydra/config.yaml); ``result`` and
  ``cfg`` update the defaults."""
  run.mkdir(parents=True, exist_ok=True)
  save_network(net, run / "network.npz")
  (run / "result.json").write_text(json.dumps({
      "architecture": arch.to_dict(), "accuracy": None, "target": "cpu",
      "weight_bytes": architecture_metrics(arch)["weight_bytes"], "cost": {"cpu": {"latency_s": 1e-5}},
      **(result or {})}))
  (run / ".hydra").mkdir(exist_ok=True)
  config = {"dataset": {"name": "digits", "root": None, "test_fraction": 0.3, "split_seed": 0, "limit": 64},
            "model": {"name": "digits_cnn", "args": {"widths": list(WIDTHS), "strides": list(STRIDES)}},
            "search": SPACE, "seed": 0, "debug": False, **(cfg or {})}
  (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
  return run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  net, arch, _ = _tiny_network()
  return write_run(tmp_path_factory.mktemp("run"), net, arch)


@pytest.fixture(scope="module")
def exported(run_dir):
  info = ex.export(run_dir, do_measure=True, repeats=10)
  return run_dir / "export", info


def test_export_writes_every_file_and_the_onnx_checker_passes(exported):
  out, info = exported
  assert {p.name for p in out.iterdir()} == {"model.onnx", "model.int8.onnx", "model.qonnx.onnx", "weights.bin",
                                             "export.json", "measure.json"}
  onnx.checker.check_model(onnx.load(out / "model.onnx"), full_check=True)
  onnx.checker.check_model(onnx.load(out / "model.int8.onnx"), full_check=True)
  assert json.loads((out / "export.json").read_text()) == json.loads(json.dumps(info))


def test_integers_are_stored_in_the_narrowest_onnx_type(exported):
  out, info = exported
  # convs.0 and head: 8 bits; convs.1: per channel 2/4/8 (its widest); convs.2: 2 bits, which needs opset 25
  assert info["onnx"]["opset"] == 25
  assert {k: v for k, v in info["onnx"]["storage"].items() if k.endswith("w_int")} == {
      "convs.0/w_int": "INT8", "convs.1/w_int": "INT8", "convs.2/w_int": "INT2", "head/w_int": "INT8"}
  model = onnx.load(out / "model.onnx")
  zero_points = {i.name: onnx.TensorProto.DataType.Name(i.data_type) for i in model.graph.initializer
                 if i.name.endswith("/a_zero")}
  # activations: input 8 bits, into convs.1 2 bits, into convs.2 4 bits, into the head 8 bits
  assert zero_points == {"convs.0/input/a_zero": "UINT8", "convs.0/out/a_zero": "UINT2",
                         "convs.1/out/a_zero": "UINT4", "convs.2/pool/a_zero": "UINT8"}


def test_onnxruntime_gives_the_integer_reference_predictions(exported, run_dir):
  out, info = exported
  _, _, net, data = ex.load_run(run_dir)
  inet = integer.from_network(net)
  acc, logits = integer.run(inet, data.x_test)
  ort_logits = ort.ort_session((out / "model.onnx").read_bytes()).run(None, {"image": data.x_test})[0]
  np.testing.assert_array_equal(ort_logits.argmax(-1), logits.argmax(-1))
  np.testing.assert_allclose(ort_logits, logits, rtol=1e-4, atol=1e-4 * np.abs(logits).max())
  assert info["agreement"]["identical_top1"] >= 0.98  # an untrained network: near-ties are common
  assert info["agreement"]["qonnx_executor_vs_jax_identical_top1"] >= 0.98


def test_flattening_classifier_agrees_too():
  net, _, data = _tiny_network("flatten")
  inet = integer.from_network(net)
  _, logits = integer.run(inet, data.x_test)
  ort_logits = ort.ort_session(qdq_model(inet).SerializeToString()).run(None, {"image": data.x_test})[0]
  np.testing.assert_array_equal(ort_logits.argmax(-1), logits.argmax(-1))
  assert np.mean(jax_logits(net, data.x_test).argmax(-1) == logits.argmax(-1)) >= 0.98


def _tiny_skipping_network(classifier: str, strides=STRIDES, skipped: int = 1):
  """A calibrated digits_cnn (widths 8/4/6) whose strided layer ``skipped`` is skipped: its shortcut subsamples
  the map and keeps 4 of the 8 channels before it; the next layer reads it (dilation 2, 4 input channels)."""
  data = load_digits(limit=64)
  space = SearchSpace(**{k: tuple(v) if isinstance(v, list) else v for k, v in SPACE.items()})
  kwargs = dict(widths=(8, 4, 6), strides=strides, classifier=classifier, skip=(skipped,))
  sup = build_model("digits_cnn", space, seed=0, **kwargs)
  choices = {n: max(c.values) for n, c in sup.choices.items()}
  choices.update({f"convs.{skipped}.keep": 0, "convs.2.w_bits": (2, 4, 8, 2, 4, 8), "convs.2.a_bits": 4})
  arch = sup.architecture(choices)
  net = build_model("digits_cnn", space, seed=0, arch=arch, **kwargs)
  calibrate(net, data.x_train[:64])
  net.eval()
  return net, arch, data


@pytest.mark.parametrize("classifier, strides, skipped, reader", [
    ("pool", (1, 2, 1), 1, 1), ("flatten", (1, 2, 1), 1, 1),  # conv 2 reads the unsubsampled map
    ("flatten", (1, 1, 2), 2, 2)])  # the classifier does (the int8 graph's Gemm through a strided Slice)
def test_a_skipped_layer_exports_as_the_next_layers_dilation(classifier, strides, skipped, reader, tmp_path):
  net, arch, data = _tiny_skipping_network(classifier, strides, skipped)
  names = [f"convs.{i}" for i in range(3) if i != skipped] + ["head"]
  assert [l.spec.name for l in arch.layers] == names
  inet = integer.from_network(net)
  assert [l.name for l in inet.layers] == names
  before, after = inet.layers[reader - 1:reader + 1]
  assert before.weight.shape[-1] == 4 and after.weight.shape[2] == 4  # the channels the shortcut passes on
  assert (after.dilation, after.in_hw) == (2, (8, 8))
  _, logits = integer.run(inet, data.x_test)
  assert np.mean(jax_logits(net, data.x_test).argmax(-1) == logits.argmax(-1)) >= 0.98
  qdq = ort.ort_session(qdq_model(inet).SerializeToString()).run(None, {"image": data.x_test})[0]
  np.testing.assert_array_equal(qdq.argmax(-1), logits.argmax(-1))
  np.testing.assert_allclose(qdq, logits, rtol=1e-4, atol=1e-4 * np.abs(logits).max())
  model = int8_model(inet)
  onnx.checker.check_model(model, full_check=True)
  assert _optimized_ops(model.SerializeToString(), tmp_path).count("QLinearConv") == 2
  int8 = ort.ort_session(model.SerializeToString()).run(None, {"image": data.x_test})[0]
  _, ref = integer.run(exact8.int8_kernels(inet), data.x_test)
  np.testing.assert_allclose(int8, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
  qonnx = qonnx_model(inet)
  onnx.checker.check_model(qonnx)
  pack.write_weights(tmp_path / "weights.bin", inet)
  assert pack.read_packed_weights(tmp_path / "weights.bin")[after.name].shape[1] == after.kernel ** 2 * 4


def test_a_skipped_strided_layer_before_global_pooling_is_refused_in_one_sentence():
  net, _, _ = _tiny_skipping_network("pool", (1, 1, 2), 2)
  with pytest.raises(ValueError, match=r"before global average pooling cannot be exported yet; keep it"):
    integer.from_network(net)


def _optimized_ops(model_bytes: bytes, tmp_path) -> list[str]:
  """Op types of the graph onnxruntime runs, read from the file it writes (SessionOptions.optimized_model_filepath)."""
  import onnxruntime as ort
  opts = ort.SessionOptions()
  opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
  opts.optimized_model_filepath, opts.log_severity_level = str(tmp_path / "optimized.onnx"), 3
  ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
  return [n.op_type for n in onnx.load(tmp_path / "optimized.onnx").graph.node]


@pytest.mark.parametrize("classifier", ["pool", "flatten"])
def test_int8_graph_runs_integer_kernels_and_equals_the_int8_kernels_reference(classifier, tmp_path):
  net, _, data = _tiny_network(classifier)
  inet = integer.from_network(net)
  model = int8_model(inet)
  onnx.checker.check_model(model, full_check=True)
  ops = _optimized_ops(model.SerializeToString(), tmp_path)
  # 3 convs as QLinearConv, the pooling (pool) as QLinearGlobalAveragePool, the head as QGemm
  assert ops.count("QLinearConv") == 3 and ops.count("QGemm") == 1
  assert ops.count("QLinearGlobalAveragePool") == (classifier == "pool")
  assert not {"Conv", "Gemm", "MatMul", "DequantizeLinear", "GlobalAveragePool"} & set(ops), ops  # none in float
  logits = ort.ort_session(model.SerializeToString()).run(None, {"image": data.x_test})[0]
  _, ref = integer.run(exact8.int8_kernels(inet), data.x_test)
  np.testing.assert_array_equal(logits.argmax(-1), ref.argmax(-1))  # exact: the documented deviations only
  np.testing.assert_allclose(logits, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_whole_step_rounds_each_bias_to_whole_accumulator_steps():
  net, _, _ = _tiny_network("flatten")
  inet = integer.from_network(net)
  assert any(l.bias_shift > 0 for l in inet.layers)
  for exact, whole in zip(inet.layers, exact8.whole_step(inet).layers):
    unit = exact.acc_scale * 2.0 ** exact.bias_shift  # one step of the unshifted accumulator
    assert whole.bias_shift == 0 and np.allclose(whole.acc_scale, unit, rtol=0)
    assert np.all(np.abs(whole.bias * unit - exact.offset) <= 0.5 * np.abs(unit) * (1 + 1e-9))
    if exact.requant is not None:  # the same real rescaling, now from the unshifted accumulator
      m, k = whole.requant.multiplier.astype(np.float64), whole.requant.shift.astype(np.float64)
      np.testing.assert_allclose(m / 2 ** k, unit / exact.out_step, rtol=2 ** -29)


def test_export_records_the_int8_graph_kernels_and_agreement(exported):
  out, info = exported
  i8 = info["int8"]
  assert i8["file"] == "model.int8.onnx" and i8["integer_kernels"]
  assert i8["kernels"]["convs.0"] == ["QLinearConv", "Clip"] and i8["kernels"]["head"] == ["QGemm"]
  assert i8["kernels"]["convs.2"] == ["QLinearConv", "QLinearGlobalAveragePool", "Flatten"]
  a = i8["agreement"]
  assert a["vs_integer_int8_kernels_top1"] == 1.0
  assert a["vs_integer_top1"] == a["integer_int8_kernels_vs_integer_top1"]  # the deviations are the difference
  assert 0 < max(i8["bias_rounding_max"].values()) and i8["bias_rounding_max"]["head"] <= 0.5


def _weight_bits(graph, name: str, nodes: dict, inits: dict) -> list[int]:
  """Per-output-channel bit-widths of a weight input, read from the Quant nodes (through Concat/Gather)."""
  node = nodes[name]
  if node.op_type == "Quant":
    n = inits[node.input[1]].size
    return [int(inits[node.input[3]])] * n
  if node.op_type == "Gather":
    cat = _weight_bits(graph, node.input[0], nodes, inits)
    return [cat[i] for i in inits[node.input[1]]]
  assert node.op_type == "Concat", node.op_type
  return [b for i in node.input for b in _weight_bits(graph, i, nodes, inits)]


def test_qonnx_bit_widths_equal_the_architecture(exported, run_dir):
  out, _ = exported
  from qonnx.core.modelwrapper import ModelWrapper
  model = ModelWrapper(str(out / "model.qonnx.onnx"))
  graph = model.graph
  nodes = {o: n for n in graph.node for o in n.output}
  inits = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
  arch = Architecture.from_dict(json.loads((run_dir / "result.json").read_text())["architecture"])
  compute = [n for n in graph.node if n.op_type in ("Conv", "MatMul")]
  assert len(compute) == len(arch.layers)
  for node, layer in zip(compute, arch.layers):
    act = nodes[node.input[0]]
    assert act.op_type == "Quant" and int(inits[act.input[3]]) == layer.a_bits, layer.spec.name
    expected = list(layer.w_bits) if isinstance(layer.w_bits, tuple) else [layer.w_bits] * layer.spec.cout
    assert _weight_bits(graph, node.input[1], nodes, inits) == expected, layer.spec.name


def test_packed_weights_agree_with_weight_bytes(exported):
  _, info = exported
  sizes = info["sizes"]
  # ceil(n b / 8) per layer: at most one byte of padding per layer over result.json's n b / 8
  assert 0 <= sizes["packed_weight_bytes"] - sizes["result_weight_bytes"] < len(info["layers"])
  assert sizes["weights_bin_bytes"] == sizes["packed_weight_bytes"] + sizes["overhead_bytes"]


def test_measure_writes_end_to_end_and_per_node_latency(exported):
  out, _ = exported
  m = json.loads((out / "measure.json").read_text())
  assert m["graph"] == "model.int8.onnx" and m["float_qdq"]["graph"] == "model.onnx"
  assert m["batch"] == 1 and m["intra_op_threads"] == 1 and m["end_to_end_us"]["median"] > 0
  assert m["float_qdq"]["end_to_end_us"]["median"] > 0
  assert m["predicted_cost"] == {"cpu": {"latency_s": 1e-5}}
  convs = [n for n in m["nodes"] if n["layer"] == "convs.1" and n["op_type"] == "QLinearConv"]
  assert convs and convs[0]["w_bits"] == {"2": 2, "4": 2, "8": 2} and convs[0]["a_bits_in"] == 2
  assert all({"op_type", "input_shapes", "output_shapes", "measured_us"} <= set(n) for n in m["nodes"])
  layers = {r["layer"]: r for r in m["layers"]}
  assert list(layers) == ["convs.0", "convs.1", "convs.2", "head"]
  assert layers["convs.1"]["op_types"] == ["QLinearConv", "Clip"] and layers["head"]["op_types"] == ["QGemm"]
  assert layers["convs.1"]["profiler_us"] == pytest.approx(sum(n["measured_us"] for n in m["nodes"]
                                                               if n["layer"] == "convs.1"))
  # the marginal times (graph cut after a layer minus cut before it) add up to the whole graph's time
  total = m["input_us"] + sum(r["marginal_us"] for r in m["layers"])
  assert total == pytest.approx(m["end_to_end_us"]["best_block_median"], rel=1e-9)


def test_prefix_models_cut_the_graph_after_each_layer(exported):
  out, _ = exported
  model = onnx.load(out / "model.int8.onnx")
  names = ["convs.0", "convs.1", "convs.2", "head"]
  cuts = ort.prefix_models(model, names)
  assert len(cuts) == 5 and cuts[-1].graph.node[-1].op_type == "Gemm"
  for k, cut in enumerate(cuts):
    onnx.checker.check_model(cut, full_check=True)
    assert {n.name.split("/")[0] for n in cut.graph.node} == {"input", *names[:k]}


# --- bad input ---------------------------------------------------------------------------------------------------

def _copy(run_dir, tmp_path) -> pathlib.Path:
  run = tmp_path / "run"
  shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns("export"))
  return run


def _fails(capsys, argv, match: str, parent: pathlib.Path):
  before = set(parent.iterdir()) if parent.is_dir() else set()
  assert ex.main([str(a) for a in argv]) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("error: ") and "\n" not in err and match in err, err
  assert (set(parent.iterdir()) if parent.is_dir() else set()) == before  # nothing half-written


@pytest.mark.parametrize("missing", ["result.json", "network.npz"])
def test_a_run_without_a_finished_network_is_refused(run_dir, tmp_path, capsys, missing):
  run = _copy(run_dir, tmp_path)
  (run / missing).unlink()
  _fails(capsys, [run], f"{missing} is missing", run)


def test_an_unknown_model_is_refused(run_dir, tmp_path, capsys):
  run = _copy(run_dir, tmp_path)
  result = json.loads((run / "result.json").read_text())
  result["architecture"]["model"] = "resnet20"
  (run / "result.json").write_text(json.dumps(result))
  _fails(capsys, [run], "model 'resnet20' cannot be exported", run)


def test_an_unwritable_output_folder_is_refused(run_dir, tmp_path, capsys):
  (tmp_path / "a_file").write_text("")
  _fails(capsys, [run_dir, "--out", tmp_path / "a_file" / "export"], "cannot write", tmp_path)
  _fails(capsys, [run_dir, "--out", tmp_path / "a_file"], "cannot write", tmp_path)


def test_a_failure_half_way_leaves_nothing_behind(run_dir, tmp_path, monkeypatch):
  def boom(*args):
    raise RuntimeError("disk full")
  monkeypatch.setattr(pack, "write_weights", boom)
  with pytest.raises(RuntimeError, match="disk full"):
    ex.export(run_dir, tmp_path / "out")
  assert list(tmp_path.iterdir()) == []


def test_the_command_exits_with_status_2(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "experiments.export", str(tmp_path)], cwd=ROOT,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [f"error: {tmp_path} holds no finished network: result.json is "
                                              "missing; export a run folder written by a finished "
                                              "`python -m experiments.search` job."]


# --- hardening: an export deletes or overwrites nothing it did not write ------------------------------------------

def _snapshot(folder: pathlib.Path) -> dict:
  """Every file below ``folder`` -> its bytes."""
  return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _refused(capsys, argv, match: str, keep: pathlib.Path):
  """``argv`` exits 2 with one sentence holding ``match`` and leaves every file below ``keep`` as it was."""
  before = _snapshot(keep)
  assert ex.main([str(a) for a in argv]) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("error: ") and "\n" not in err and match in err, err
  assert _snapshot(keep) == before


def test_out_the_run_folder_or_a_folder_holding_it_is_refused(run_dir, tmp_path, capsys):
  sweep = tmp_path / "sweep"
  run = _copy(run_dir, sweep)
  (sweep / "other_job").mkdir()
  (sweep / "other_job" / "result.json").write_text("{}")
  for out in (sweep, run, tmp_path):
    _refused(capsys, [run, "--out", out, "--force"], f"--out {out} is the run folder {run} or contains it", tmp_path)


def test_a_folder_that_is_not_an_export_is_refused(run_dir, tmp_path, capsys):
  run = _copy(run_dir, tmp_path)
  mine = tmp_path / "mine"
  mine.mkdir()
  (mine / "notes.txt").write_text("keep me")
  _refused(capsys, [run, "--out", mine, "--force"], "holds files but no previous export (no export.json)", tmp_path)
  _refused(capsys, [run, "--out", run / ".hydra", "--force"], "no previous export", tmp_path)


def test_a_previous_export_is_replaced_only_with_force(run_dir, tmp_path, capsys):
  run = _copy(run_dir, tmp_path)
  out = tmp_path / "out"
  ex.export(run, out)
  _refused(capsys, [run, "--out", out], f"--out {out} holds a previous export; pass --force to replace it", tmp_path)
  (out / "model.onnx").write_bytes(b"stale")
  assert ex.main([str(run), "--out", str(out), "--force"]) == 0
  assert (out / "model.onnx").read_bytes() != b"stale"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "run"]  # no staging or old folder left
  (out / "notes.txt").write_text("keep me")
  _refused(capsys, [run, "--out", out, "--force"], "files the exporter did not write (notes.txt)", tmp_path)


@pytest.mark.parametrize("name, content, match", [
    ("network.npz", None, "network.npz is truncated or corrupt (BadZipFile"),
    ("result.json", None, "result.json is truncated or corrupt (not valid JSON"),
    (".hydra/config.yaml", "model: {name: [", "config.yaml is truncated or corrupt")])
def test_a_truncated_file_of_the_run_is_named_with_the_fix(run_dir, tmp_path, capsys, name, content, match):
  run = _copy(run_dir, tmp_path)
  path = run / name
  if content is None:
    path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])
  else:
    path.write_text(content)
  _refused(capsys, [run], match, tmp_path)
  err_path = str(path)
  _refused(capsys, [run], err_path, tmp_path)
  _refused(capsys, [run], "re-run the search job that wrote it.", tmp_path)


def test_a_truncated_network_exits_2_without_a_traceback(run_dir, tmp_path):
  run = _copy(run_dir, tmp_path)
  data = (run / "network.npz").read_bytes()
  (run / "network.npz").write_bytes(data[:len(data) // 2])
  proc = subprocess.run([sys.executable, "-m", "experiments.export", str(run)], cwd=ROOT, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 2 and "Traceback" not in proc.stderr
  assert proc.stderr.strip().splitlines() == [
      f"error: {run / 'network.npz'} is truncated or corrupt (BadZipFile: File is not a zip file); re-run the "
      "search job that wrote it."]


def test_a_read_only_output_folder_is_one_sentence(run_dir, tmp_path, capsys, monkeypatch):
  from nas.deploy import export as deploy_export
  run = _copy(run_dir, tmp_path)
  out = tmp_path / "out"
  ex.export(run, out)

  def refuse(*args, **kwargs):  # tests may run as root, where chmod is moot
    raise PermissionError(13, "Permission denied")
  monkeypatch.setattr(deploy_export.tempfile, "TemporaryFile", refuse)
  _refused(capsys, [run, "--out", out, "--force"], f"cannot replace {out}: it is not writable (Permission denied)",
           tmp_path)
  monkeypatch.setattr(deploy_export.tempfile, "mkdtemp", refuse)
  _refused(capsys, [run, "--out", tmp_path / "new"], f"cannot write into {tmp_path} (Permission denied); pass a "
           "writable --out.", tmp_path)


def test_a_read_only_folder_for_a_real_user(run_dir, tmp_path):
  import os
  if os.geteuid() == 0:
    pytest.skip("root writes into read-only folders")
  run = _copy(run_dir, tmp_path)
  locked = tmp_path / "locked"
  locked.mkdir()
  locked.chmod(0o555)
  try:
    proc = subprocess.run([sys.executable, "-m", "experiments.export", str(run), "--out", str(locked / "x")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
  finally:
    locked.chmod(0o755)
  assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
