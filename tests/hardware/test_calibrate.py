"""Calibration recovers known constants from synthetic measurements made by the model itself plus noise."""
import json
import pathlib
import subprocess
import sys

import hydra.utils
import numpy as np
import pytest
from omegaconf import OmegaConf

from hardware import calibrate
from hardware.measure import default_grid

REPO = pathlib.Path(__file__).resolve().parents[2]

TRUE = {"rate_conv": 2.0e11, "rate_dwconv": 5.0e9, "rate_dense": 5.0e9, "rate_fallback": 4.0e9, "mem_bw": 2.0e10,
        "overhead_conv": 2.0e-6, "overhead_dwconv": 1.0e-6, "overhead_dense": 5.0e-7,
        "cin_multiple": 4, "cout_multiple": 16, "fallback_channels": 16}


def synthetic(noise=0.05, seed=1, every=2):
  layers = default_grid()[::every]  # a subset for speed; still every kind and the few-channel stratum
  t = calibrate.predict(TRUE, layers)
  return layers, t * np.exp(np.random.default_rng(seed).normal(0.0, noise, len(t)))


def test_fit_recovers_known_constants_and_multiples():
  layers, t = synthetic()
  p = calibrate.fit(layers, t, multiples=((1, 1), (4, 16), (64, 1)), fallbacks=(0, 16, 32))
  assert (p["cin_multiple"], p["cout_multiple"], p["fallback_channels"]) == (4, 16, 16)
  for k in ("rate_conv", "rate_dwconv", "rate_dense", "rate_fallback", "mem_bw"):
    assert p[k] == pytest.approx(TRUE[k], rel=0.1), k
  for k in ("overhead_conv", "overhead_dwconv", "overhead_dense"):
    assert p[k] == pytest.approx(TRUE[k], rel=0.3), k
  q = calibrate.fit_quality(t, calibrate.predict(p, layers))
  assert q["spearman"] > 0.98 and q["median_rel_err"] < 0.06


def test_split_is_seeded_and_disjoint():
  a, b = calibrate.split(100)
  assert len(a) == 75 and len(b) == 25 and not set(a) & set(b)
  np.testing.assert_array_equal(calibrate.split(100)[1], b)


def test_main_writes_a_preset_hydra_instantiates(tmp_path):
  layers, t = synthetic(every=3)
  records = [{"kind": l.kind, "cin": l.cin, "cout": l.cout, "kernel": l.kernel, "stride": l.stride,
              "in_h": l.in_h, "in_w": l.in_w, "name": l.name, "median_s": float(s)} for l, s in zip(layers, t)]
  data = tmp_path / "m.json"
  data.write_text(json.dumps({"host": {"cpu": "synthetic", "cores": 2, "date": "today"}, "records": records}))
  out = tmp_path / "cpu_host.yaml"
  calibrate.main(["--measurements", str(data), "--out", str(out)])
  text = out.read_text()
  assert "Held out" in text and "Spearman" in text
  model = hydra.utils.instantiate(OmegaConf.load(out))
  assert model.name == "cpu_host"
  assert model.mac_rate["conv"] == pytest.approx(TRUE["rate_conv"], rel=0.1)
  assert model.fitted_on == {"cpu": "synthetic", "flags": None}  # this host record predates CPU flags


def test_fit_rejects_too_few_layers():
  with pytest.raises(ValueError, match="at least"):
    calibrate.fit_constants(default_grid()[:3], [1e-5] * 3)


def run_cli(*args):
  """`python -m hardware.calibrate` in a subprocess: (exit status, stdout, stderr)."""
  result = subprocess.run([sys.executable, "-m", "hardware.calibrate", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
  return result.returncode, result.stdout, result.stderr


def assert_one_sentence_naming(stderr, *words):
  assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
  for word in words:
    assert word in stderr, (word, stderr)


def test_cli_missing_measurements_exits_2_naming_the_file(tmp_path):
  missing = tmp_path / "none.json"
  code, out, err = run_cli("--measurements", str(missing), "--out", str(tmp_path / "cpu_host.yaml"))
  assert code == 2 and out == ""
  assert_one_sentence_naming(err, "--measurements", str(missing), "does not exist", "--measure")


def test_cli_corrupt_measurements_exits_2_naming_the_file(tmp_path):
  corrupt = tmp_path / "m.json"
  corrupt.write_text('{"host": {"cpu": "x"}, "records": [')
  code, out, err = run_cli("--measurements", str(corrupt), "--out", str(tmp_path / "cpu_host.yaml"))
  assert code == 2 and out == ""
  assert_one_sentence_naming(err, "--measurements", str(corrupt), "not valid JSON")


def test_cli_unwritable_out_exits_2_before_fitting(tmp_path):
  out = tmp_path / "no_such_folder" / "cpu_host.yaml"
  code, stdout, err = run_cli("--measurements", calibrate.DEFAULT_MEASUREMENTS, "--out", str(out))
  assert code == 2 and stdout == ""  # nothing fitted: the fit prints its quality
  assert_one_sentence_naming(err, "--out", str(out), "does not exist")


def test_out_in_a_read_only_folder_is_refused(tmp_path, monkeypatch):
  def refuse(*args, **kwargs):
    raise PermissionError(13, "Permission denied")
  monkeypatch.setattr(calibrate.tempfile, "TemporaryFile", refuse)  # tests may run as root, where chmod is moot
  with pytest.raises(calibrate.InputError, match=r"--out .*cpu_host.yaml cannot be written: .*not writable"):
    calibrate.check_writable(str(tmp_path / "cpu_host.yaml"), "--out")


@pytest.mark.parametrize("content, match", [
    ({"records": []}, "lacks a \"records\" list or a \"host\""),
    ({"host": {"cpu": "x"}, "records": [{"kind": "conv"}]}, "record 0 is not a measured layer"),
    ({"host": {"cpu": "x"}, "records": [{"kind": "conv", "cin": 8, "cout": 8, "kernel": 1, "stride": 1, "in_h": 4,
                                         "in_w": 4, "median_s": -1.0}]}, "record 0 has median_s=-1.0"),
    ({"host": {"cpu": "x"}, "records": []}, "has 0 records and the fit needs at least 10"),
])
def test_measurements_that_cannot_be_fitted_are_refused_up_front(tmp_path, content, match):
  path = tmp_path / "m.json"
  path.write_text(json.dumps(content))
  with pytest.raises(calibrate.InputError, match=match):
    calibrate.read_measurements(str(path))


def _measurements(tmp_path) -> pathlib.Path:
  layers, t = synthetic(every=3)
  records = [{"kind": l.kind, "cin": l.cin, "cout": l.cout, "kernel": l.kernel, "stride": l.stride,
              "in_h": l.in_h, "in_w": l.in_w, "name": l.name, "median_s": float(s)} for l, s in zip(layers, t)]
  data = tmp_path / "m.json"
  data.write_text(json.dumps({"host": {"cpu": "synthetic", "cores": 2, "date": "today"}, "records": records}))
  return data


def test_cli_out_equal_to_the_measurements_is_refused(tmp_path):
  data = _measurements(tmp_path)
  before = data.read_bytes()
  for extra in ((), ("--force",)):
    code, stdout, err = run_cli("--measurements", str(data), "--out", str(data), *extra)
    assert code == 2 and stdout == ""
    assert_one_sentence_naming(err, f"--out {data} is the measurements file, which writing the preset would "
                                    "overwrite; choose another --out")
  assert data.read_bytes() == before


def test_an_existing_out_is_replaced_only_with_force(tmp_path, capsys):
  data, out = _measurements(tmp_path), tmp_path / "cpu_host.yaml"
  out.write_text("mine")
  with pytest.raises(SystemExit) as e:
    calibrate.main(["--measurements", str(data), "--out", str(out)])
  assert e.value.code == 2 and out.read_text() == "mine"
  err = capsys.readouterr().err
  assert_one_sentence_naming(err, f"--out {out} exists and would be overwritten; pass --force to replace it")
  calibrate.main(["--measurements", str(data), "--out", str(out), "--force"])
  assert "Held out" in out.read_text()


def test_measure_would_not_overwrite_existing_measurements_without_force(tmp_path):
  data = _measurements(tmp_path)
  with pytest.raises(calibrate.InputError, match=r"--measurements .*m.json exists and would be overwritten; pass "
                                                 r"--force"):
    calibrate.check_outputs(str(tmp_path / "new.yaml"), str(data), measure=True, force=False)
  calibrate.check_outputs(str(tmp_path / "new.yaml"), str(data), measure=True, force=True)
  calibrate.check_outputs(str(tmp_path / "new.yaml"), str(data), measure=False, force=False)  # only read
