"""nas.deploy.calibrate_ort: the grid runs as exported integer kernels, the fit recovers constants SIMDCPU itself
generated, and bad inputs stop it before any fitting."""
import json
import pathlib
import subprocess
import sys

import hydra.utils
import numpy as np
import pytest
from omegaconf import OmegaConf

from hardware import host

from nas.deploy import calibrate_ort as co
from hardware.base import LayerSpec
from hardware.cpu import SIMDCPU

REPO = pathlib.Path(__file__).resolve().parents[3]
# Known constants, unlike any fitted preset's; cin/cout multiples among the fit's candidates (no fallback path).
TRUE = SIMDCPU("truth", mac_rate={"conv": 3.0e10, "dwconv": 1.0e9, "dense": 8.0e9}, mem_bw=1.5e10,
               layer_overhead_s={"conv": 3.0e-6, "dwconv": 1.0e-6, "dense": 1.5e-6}, e_mac_j=0, e_byte_j=0,
               static_power_w=0, cin_multiple=4, cout_multiple=16)


# The input stage of the synthetic networks: 2.5 us per call plus 1 ns an element (1e9 elements/s).
TRUE_CALL_S, TRUE_INPUT_RATE = 2.5e-6, 1.0e9


def synthetic_measurements(path, noise=0.05, seed=3, with_input=True):
  """The ORT grid costed by SIMDCPU with the TRUE constants (8 bits), times log-normal noise, as a file; each
  network's input stage (``with_input``) from TRUE_CALL_S and TRUE_INPUT_RATE, four noisy passes."""
  records = []
  rng = np.random.default_rng(seed)
  for g in co.default_grid():
    s = g.spec
    t = float(TRUE.cost(s, 8, 8, s.cin, s.cout).latency_s) * float(np.exp(rng.normal(0.0, noise)))
    records.append({"kind": s.kind, "cin": s.cin, "cout": s.cout, "kernel": s.kernel, "stride": s.stride,
                    "in_h": s.in_h, "in_w": s.in_w, "name": s.name, "path": g.path, "median_s": t})
    if with_input:
      n = int(np.prod(co.network(g).input_shape))
      true_us = 1e6 * (TRUE_CALL_S + n / TRUE_INPUT_RATE)
      records[-1].update(input_elements=n, input_us=[true_us * float(np.exp(abs(rng.normal(0.0, noise))))
                                                     for _ in range(4)])
  path.write_text(json.dumps({"host": {"cpu": "synthetic", "cores": 2, "date": "today", "onnxruntime": "x",
                                       "intra_op_threads": 1}, "records": records}))


def test_fit_recovers_constants_simdcpu_generated(tmp_path):
  data, out = tmp_path / "m.json", tmp_path / "cpu_ort.yaml"
  synthetic_measurements(data)
  co.main(["--measurements", str(data), "--out", str(out)])
  text = out.read_text()
  assert "Held out" in text and "intra-op threads 1" in text and "every bit-width as 8 bits" in text
  model = hydra.utils.instantiate(OmegaConf.load(out), _convert_="all")
  assert model.name == "cpu_ort" and model.fitted_on == {"cpu": "synthetic", "flags": None, "recalibrate":
                                                          f"python -m nas.deploy.calibrate_ort --measure --out {co.PRESET} --force"}
  assert f"`python -m nas.deploy.calibrate_ort --measure --out {co.PRESET} --force`" in host.host_mismatch(model)
  assert (model.cin_multiple, model.cout_multiple, model.fallback_channels) == (4, 16, 0)
  for kind in ("conv", "dense"):
    assert model.mac_rate[kind] == pytest.approx(TRUE.mac_rate[kind], rel=0.15), kind
    assert model.layer_overhead_s[kind] == pytest.approx(TRUE.layer_overhead_s[kind], rel=0.3), kind
  assert model.mem_bw == pytest.approx(TRUE.mem_bw, rel=0.15)
  # The input stage: the smallest of the noisy passes (noise only slows a run down) fitted back.
  assert model.inference_overhead_s == pytest.approx(TRUE_CALL_S, rel=0.1)
  assert model.input_rate == pytest.approx(TRUE_INPUT_RATE, rel=0.1)
  assert "inference_overhead_s:" in text and "input elements quantised per second" in text


def test_measurements_without_input_stage_model_none(tmp_path):
  data, out = tmp_path / "m.json", tmp_path / "cpu_ort.yaml"
  synthetic_measurements(data, with_input=False)
  co.main(["--measurements", str(data), "--out", str(out)])
  assert "NOT MEASURED (measurements without the input stage" in out.read_text()
  model = hydra.utils.instantiate(OmegaConf.load(out), _convert_="all")
  assert (model.inference_overhead_s, model.input_rate) == (0.0, None)
  assert float(model.inference_cost(LayerSpec("conv", 1, 16, 3, 2, 28, 28)).latency_s) == 0.0


def test_preset_costs_every_bit_width_as_8_bits():
  model = hydra.utils.instantiate(OmegaConf.load(REPO / "conf" / "hardware" / "cpu_ort.yaml"), _convert_="all")
  for layer in (LayerSpec("conv", 16, 32, 3, 1, 8, 8), LayerSpec("dense", 64, 10)):
    eight = model.cost(layer, 8, 8, layer.cin, layer.cout)
    for w, a in ((2, 2), (4, 4), (2, 8), (8, 4)):
      low = model.cost(layer, w, a, layer.cin, layer.cout)
      assert float(low.latency_s) == float(eight.latency_s) and float(low.energy_j) == float(eight.energy_j)


def test_grid_layers_run_as_the_exporter_writes_them():
  data = co.measure(co.tiny_grid(), repeats=3, passes=1)  # no timing asserted: too few runs to mean anything
  ops = {r["path"]: r["op_types"] for r in data["records"]}
  assert ops["conv"] == ["QLinearConv"] and ops["dense"] == ["QGemm"] and ops["flatten_head"] == ["Flatten", "QGemm"]
  assert ops["pool_conv"] == ["QLinearConv", "QLinearGlobalAveragePool", "Flatten"]
  assert data["host"]["intra_op_threads"] == 1 and data["host"]["onnxruntime"]
  # Each network's input stage is recorded with its size: t1 pools a 4x4x16 map, t2's network starts 1x1x1.
  sizes = {r["name"]: r["input_elements"] for r in data["records"]}
  assert sizes == {"t0": 8 * 8 * 8, "t1": 4 * 4 * 16, "t2": 1, "t3": 7 * 7 * 16}
  assert all(len(r["input_us"]) == 1 and r["input_us"][0] > 0 for r in data["records"])


def test_default_grid_covers_the_shipped_models_layers():
  specs = [g.spec for g in co.default_grid()]
  names = {(s.kind, s.cin, s.cout, s.kernel, s.stride, s.in_h) for s in specs}
  assert ("conv", 1, 24, 3, 1, 8) in names and ("conv", 48, 48, 3, 1, 4) in names  # digits_cnn, widest
  assert ("dense", 48, 10, 1, 1, 1) in names
  assert ("conv", 48, 96, 3, 1, 7) in names and ("conv", 96, 10, 7, 7, 7) in names  # fmnist_cnn, widest
  assert {("conv", 1), ("conv", 2)} <= {(s.kind, s.stride) for s in specs if s.kernel == 1}


def run_cli(*args):
  result = subprocess.run([sys.executable, "-m", "nas.deploy.calibrate_ort", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
  return result.returncode, result.stdout, result.stderr


def _one_sentence(stderr, *words):
  assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
  for word in words:
    assert word in stderr, (word, stderr)


def test_cli_missing_measurements_exits_2(tmp_path):
  missing = tmp_path / "none.json"
  code, out, err = run_cli("--measurements", str(missing), "--out", str(tmp_path / "cpu_ort.yaml"))
  assert code == 2 and out == ""
  _one_sentence(err, "nas.deploy.calibrate_ort", "--measurements", str(missing), "does not exist",
                "python -m nas.deploy.calibrate_ort --measure")


def test_cli_corrupt_measurements_exits_2(tmp_path):
  corrupt = tmp_path / "m.json"
  corrupt.write_text('{"host": {"cpu": "x"}, "records": [')
  code, out, err = run_cli("--measurements", str(corrupt), "--out", str(tmp_path / "cpu_ort.yaml"))
  assert code == 2 and out == ""
  _one_sentence(err, "--measurements", str(corrupt), "not valid JSON")


def test_cli_unwritable_out_exits_2_before_fitting(tmp_path):
  out = tmp_path / "no_such_folder" / "cpu_ort.yaml"
  code, stdout, err = run_cli("--out", str(out))  # the shipped measurements would fit
  assert code == 2 and stdout == ""  # nothing fitted: the fit prints its quality
  _one_sentence(err, "--out", str(out), "does not exist")
  code, stdout, err = run_cli("--out", str(tmp_path))
  assert code == 2 and stdout == ""
  _one_sentence(err, "--out", "is a folder", "cpu_ort.yaml")


def test_cli_refuses_to_overwrite_its_input_or_an_existing_preset(tmp_path):
  data, out = tmp_path / "m.json", tmp_path / "cpu_ort.yaml"
  synthetic_measurements(data)
  before = data.read_bytes()
  code, stdout, err = run_cli("--measurements", str(data), "--out", str(data), "--force")
  assert code == 2 and stdout == "" and data.read_bytes() == before
  _one_sentence(err, "nas.deploy.calibrate_ort", f"--out {data} is the measurements file")
  out.write_text("mine")
  code, stdout, err = run_cli("--measurements", str(data), "--out", str(out))
  assert code == 2 and stdout == "" and out.read_text() == "mine"
  _one_sentence(err, f"--out {out} exists and would be overwritten; pass --force")
  code, stdout, err = run_cli("--measure", "--grid", "tiny", "--measurements", str(data), "--out",
                              str(tmp_path / "new.yaml"))
  assert code == 2 and stdout == "" and data.read_bytes() == before  # --measure would rewrite the measurements
  _one_sentence(err, f"--measurements {data} exists and would be overwritten")
  co.main(["--measurements", str(data), "--out", str(out), "--force"])
  assert "Held out" in out.read_text()


def test_the_shipped_measurements_are_the_default():
  assert pathlib.Path(co.DEFAULT_MEASUREMENTS).resolve() == REPO / "hardware" / "data" / "cpu_ort_measurements.json"
  assert co.repo_path(co.DEFAULT_MEASUREMENTS) == "hardware/data/cpu_ort_measurements.json"


def test_calibrate_ort_imports_no_experiments():
  code = ("import sys; import nas.deploy.calibrate_ort, nas.deploy.export, nas.deploy.formats, nas.deploy.ort; "
          "print(sorted(m for m in sys.modules if m.split('.')[0] in ('experiments', 'hydra', 'wandb')))")
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr
