"""experiments.export_sweep on a sweep folder of two tiny jobs: per-job measure.json, the summary, bad input."""
import json
import pathlib
import sys

import pytest
import yaml

from experiments import export_sweep

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from test_export import _tiny_network, write_run  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
  folder = tmp_path_factory.mktemp("sweep")
  hardware = yaml.safe_load((ROOT / "conf" / "hardware" / "cpu_ort.yaml").read_text())
  for job, classifier in enumerate(("pool", "flatten")):
    net, arch, _ = _tiny_network(classifier)
    write_run(folder / str(job), net, arch,
              result={"target": "cpu_ort", "cost": {"cpu_ort": {"latency_s": 1e-5 * (job + 1)}},
                      "budget": {"metric": "latency_s", "value": 1.2e-5 * (job + 1)}},
              cfg={"hardware": hardware, "model": {"name": "digits_cnn", "args": {
                  "widths": [4, 6, 8], "strides": [1, 2, 1], "classifier": classifier}}})
  return folder, export_sweep.sweep(folder, repeats=3)


def test_every_job_is_exported_measured_and_summarised(sweep):
  folder, s = sweep
  assert [r["job"] for r in s["jobs"]] == ["0", "1"]
  for job in ("0", "1"):
    m = json.loads((folder / job / "export" / "measure.json").read_text())
    assert m["graph"] == "model.int8.onnx" and m["predicted_layers_s"]["target"] == "cpu_ort"
  assert json.loads((folder / "export_sweep.json").read_text()) == json.loads(json.dumps(s))
  r = s["jobs"][1]
  assert r["budget_s"] == 2.4e-5 and r["predicted_s"] == 2e-5
  assert r["measured_over_budget"] == pytest.approx(r["measured_s"] / r["budget_s"])
  assert len(s["layers"]) == 8  # 4 layers per job, each with a prediction on the run's preset
  assert {"layer_spearman", "layer_median_rel_err", "network_spearman", "measured_over_budget_max"} <= set(s)
  assert s["network_spearman"] is None  # two networks: too few to rank
  assert "per layer (8 layers)" in export_sweep.table(s)


def test_a_folder_without_jobs_exits_2_with_one_sentence(tmp_path, capsys):
  assert export_sweep.main([str(tmp_path)]) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("error: ") and "\n" not in err and "holds no finished search job" in err


def _files(folder: pathlib.Path) -> dict:
  return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_second_sweep_replaces_nothing_without_force(sweep, capsys):
  folder, _ = sweep
  before = _files(folder)
  assert export_sweep.main([str(folder)]) == 2
  err = capsys.readouterr().err.strip()
  assert err == f"error: --out {folder / '0' / 'export'} holds a previous export; pass --force to replace it, or " \
                "another --out.", err
  (folder / "0" / "export" / "notes.txt").write_text("keep me")
  assert export_sweep.main([str(folder), "--force"]) == 2  # a file the export did not write: refused, even forced
  err = capsys.readouterr().err.strip()
  assert "files the exporter did not write (notes.txt)" in err and "\n" not in err
  (folder / "0" / "export" / "notes.txt").unlink()
  assert _files(folder) == before
  again = export_sweep.sweep(folder, repeats=3, force=True)
  assert [r["job"] for r in again["jobs"]] == ["0", "1"]
  assert sorted(p.name for p in folder.iterdir()) == ["0", "1", "export_sweep.json"]  # nothing staged left


def test_an_existing_summary_is_replaced_only_with_force(tmp_path):
  (tmp_path / "job").mkdir()
  (tmp_path / "job" / "result.json").write_text("{}")
  (tmp_path / "export_sweep.json").write_text("mine")
  assert export_sweep.main([str(tmp_path)]) == 2
  assert (tmp_path / "export_sweep.json").read_text() == "mine"
