"""The Pareto aggregator on synthetic sweeps in the real Hydra multirun layout, and its offline wandb run."""
import json
import os
import pathlib
import struct
import subprocess
import sys
import time

import pytest

from experiments import pareto as app
from experiments import pareto_report
from experiments.tracking import read_mirror

ROOT = pathlib.Path(__file__).resolve().parents[2]
REF_LATENCY = 4e-4  # the all-W8A8 base-width network's latency on riscv


def _layers(bits, widths):
  cin, layers = 1, []
  for i, ((w, a), cout) in enumerate(zip(bits, widths)):
    layers.append({"kind": "conv", "cin": cin, "cout": cout, "kernel": 3, "stride": 1, "in_h": 8, "in_w": 8,
                   "name": f"convs.{i}", "w_bits": w, "a_bits": a})
    cin = cout
  return layers


def _result(kind, acc, latency, fraction=None, label=None, bits=((8, 8), (8, 8)), widths=(16, 32)):
  searched = kind == "searched"
  return {
      "kind": kind, "label": label, "target": "riscv", "model": "digits_cnn", "dataset": "digits",
      "num_classes": 10, "method": "gumbel", "seed": 0,
      "budget": {"metric": "latency_s", "fraction": fraction, "value": fraction * REF_LATENCY,
                 "reference": REF_LATENCY} if searched else None,
      "accuracy": acc,
      "cost": {"riscv": {"latency_s": latency, "energy_j": latency * 5e-3},
               "cpu": {"latency_s": latency / 100, "energy_j": latency * 1e-2}},
      "weight_bytes": 1000.0 * latency / REF_LATENCY,
      "metrics": {"weight_bytes": 1000.0 * latency / REF_LATENCY, "macs": 1e5, "bops": 1e7,
                  "input_peak_bytes": 1024.0},
      "expected_cost": {"latency_s": latency, "energy_j": latency * 5e-3, "weight_bytes": 1000.0}
      if searched else None,
      "search": {"mean_max_prob": 0.95, "repairs": 0, "multipliers": {"latency_s": 0.2}} if searched else None,
      "architecture": {"model": "digits_cnn",
                       "choices": {f"convs.{i}.width": c for i, c in enumerate(widths)},
                       "layers": _layers(bits, widths)},
  }


# The hand-checked sweep. Searched front: jobs 0, 1, 3 (job 2 is dominated by job 1).
# r = (0.1, 4e-4). HV_searched = 0.8 * 3e-4 + 0.05 * 2e-4 + 0.02 * 0.5e-4 = 2.51e-4.
# Uniform baselines: w4a8 (0.92, 2e-4) and w8a8 (0.96, 4e-4), both on their front, but w8a8 sits on r_c:
# HV_uniform = 0.82 * 2e-4 = 1.64e-4. Ratio = 2.51 / 1.64.
SWEEP = [
    _result("searched", 0.90, 1.0e-4, 0.25, "riscv-latency-0.25", bits=((4, 4), (2, 4)), widths=(8, 16)),
    _result("searched", 0.95, 2.0e-4, 0.5, "riscv-latency-0.5", bits=((8, 8), (3, 6)), widths=(12, 24)),
    _result("searched", 0.93, 3.0e-4, 0.75, "riscv-latency-0.75", bits=((6, 8), (5, 5)), widths=(16, 32)),
    _result("searched", 0.97, 3.5e-4, 0.9, "riscv-latency-0.9", bits=((8, 7), (7, 8)), widths=(16, 32)),
    _result("baseline:uniform", 0.92, 2.0e-4, label="w4a8", bits=((4, 8), (4, 8))),
    _result("baseline:uniform", 0.96, 4.0e-4, label="w8a8"),
]
HV_SEARCHED = 0.8 * 3e-4 + 0.05 * 2e-4 + 0.02 * 0.5e-4
HV_UNIFORM = 0.82 * 2e-4


def make_sweep(root: pathlib.Path, results, failed_job=True) -> pathlib.Path:
  """A Hydra multirun folder: multirun.yaml at the root, one numbered job folder with .hydra/ per job."""
  root.mkdir(parents=True)
  (root / "multirun.yaml").write_text("hydra:\n  mode: MULTIRUN\n")
  for n, r in enumerate(results):
    job = root / str(n)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text(f"seed: 0\njob: {n}\n")
    (job / "result.json").write_text(json.dumps(r))
  if failed_job:
    job = root / str(len(results))
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text("budget:\n  fraction: 0.001\n")
    (job / "error.json").write_text(json.dumps(
        {"error": "budget.fraction=0.001 is below the cheapest network", "type": "ValueError"}))
  return root


def test_aggregate_front_hypervolume_failures_and_reports(tmp_path):
  sweep = make_sweep(tmp_path / "multirun" / "2026-11-24" / "20-48-43", SWEEP)
  report = app.aggregate([sweep], wandb_mode="disabled")
  assert json.loads((sweep / "pareto.json").read_text()) == json.loads(json.dumps(report))

  (group,) = report["groups"]
  assert (group["target"], group["metric"]) == ("riscv", "latency_s")
  assert group["reference"]["accuracy"] == pytest.approx(0.1)
  assert group["reference"]["cost"] == pytest.approx(REF_LATENCY)
  series = group["series"]
  assert set(series) == {"searched:20-48-43", "baseline:uniform"}
  jobs = lambda s: [group["points"][i]["job"] for i in series[s]["front"]]
  assert jobs("searched:20-48-43") == ["0", "1", "3"]
  assert jobs("baseline:uniform") == ["4", "5"]
  assert series["searched:20-48-43"]["hypervolume"] == pytest.approx(HV_SEARCHED)
  assert series["baseline:uniform"]["hypervolume"] == pytest.approx(HV_UNIFORM)
  assert group["ratio"]["searched:20-48-43"] == pytest.approx(HV_SEARCHED / HV_UNIFORM)
  assert report["hypervolume"]["riscv/latency_s/searched:20-48-43"] == pytest.approx(HV_SEARCHED)
  assert [p["on_front"] for p in group["points"]] == [True, True, False, True, True, True]

  # The failed job is listed with its message and does not sink the aggregation.
  assert report["failures"] == [{"job": "6", "error": "budget.fraction=0.001 is below the cheapest network",
                                 "type": "ValueError", "sweep": "20-48-43"}]
  assert report["sweeps"] == [{"dir": str(sweep), "label": "20-48-43", "results": 6, "failed": 1}]

  assert (sweep / "pareto.png").stat().st_size > 10_000
  page = (sweep / "pareto.html").read_text()
  assert "W3A6 · 24" in page and "W4A4 · 8" in page  # front architectures' per-layer bits and widths
  assert "W6A8" not in page  # job 2 is dominated
  assert "budget.fraction=0.001" in page


def test_target_and_metric_overrides_read_other_costs(tmp_path):
  sweep = make_sweep(tmp_path / "sweep", SWEEP, failed_job=False)
  report = app.aggregate([sweep], target="cpu", metric="energy_j", out_dir=tmp_path / "out", wandb_mode="disabled")
  (group,) = report["groups"]
  assert (group["target"], group["metric"]) == ("cpu", "energy_j")
  assert sorted(p["cost"] for p in group["points"]) == pytest.approx(sorted(r["cost"]["cpu"]["energy_j"]
                                                                            for r in SWEEP))
  # No reference cost for cpu energy in these results: 1.1 x the largest cost, and it says so.
  assert group["reference"]["cost"] == pytest.approx(1.1 * 4e-4 * 1e-2)
  assert "1.1 x" in group["reference"]["cost_source"]
  wb = app.aggregate([sweep], metric="weight_bytes", out_dir=tmp_path / "wb", wandb_mode="disabled")
  assert sorted(p["cost"] for p in wb["groups"][0]["points"]) == pytest.approx(
      sorted(r["weight_bytes"] for r in SWEEP))
  assert (tmp_path / "out" / "pareto.png").exists() and not (sweep / "pareto.json").exists()


def test_two_labelled_sweeps_share_one_plot(tmp_path):
  a = make_sweep(tmp_path / "a" / "12-00-00", SWEEP[:4] + SWEEP[4:5], failed_job=False)
  better = [dict(r, accuracy=min(r["accuracy"] + 0.01, 1.0)) for r in SWEEP[:4]]
  b = make_sweep(tmp_path / "b" / "12-00-00", better)
  report = app.aggregate([a, b], labels=["gumbel", "darts"], out_dir=tmp_path / "cmp", wandb_mode="disabled")
  (group,) = report["groups"]
  assert {"searched:gumbel", "searched:darts", "baseline:uniform:gumbel"} == set(group["series"])
  assert {p["sweep"] for p in group["points"]} == {"gumbel", "darts"}
  assert group["series"]["searched:darts"]["hypervolume"] > group["series"]["searched:gumbel"]["hypervolume"]
  assert [f["sweep"] for f in report["failures"]] == ["darts"]
  assert (tmp_path / "cmp" / "pareto.png").exists()
  with pytest.raises(ValueError, match="once per sweep"):
    app.aggregate([a, b], labels=["only-one"], wandb_mode="disabled")


def test_labelled_baseline_sweeps_keep_their_own_series_and_hypervolumes(tmp_path):
  # Two uniform sweeps, full width and half width, each its own --label. Reference r = (0.1, 4e-4), from the
  # reference cost the search app writes into every result.
  baseline = lambda acc, latency, label: dict(_result("baseline:uniform", acc, latency, label=label),
                                              reference={"latency_s": REF_LATENCY})
  full = [baseline(0.92, 2.0e-4, "w4a8"), baseline(0.95, 3.0e-4, "w8a8")]
  half = [baseline(0.85, 1.0e-4, "w4a8-x0.5"), baseline(0.90, 1.5e-4, "w8a8-x0.5")]
  a = make_sweep(tmp_path / "full", full, failed_job=False)
  b = make_sweep(tmp_path / "half", half, failed_job=False)
  report = app.aggregate([a, b], labels=["uniform-full", "uniform-half"], out_dir=tmp_path / "cmp",
                         wandb_mode="disabled")
  (group,) = report["groups"]
  series = group["series"]
  assert set(series) == {"baseline:uniform:uniform-full", "baseline:uniform:uniform-half"}
  # full: (0.92 - 0.1) * (4 - 2)e-4 + (0.95 - 0.92) * (4 - 3)e-4 = 1.64e-4 + 0.03e-4 = 1.67e-4
  assert series["baseline:uniform:uniform-full"]["hypervolume"] == pytest.approx(1.67e-4)
  # half: (0.85 - 0.1) * (4 - 1)e-4 + (0.90 - 0.85) * (4 - 1.5)e-4 = 2.25e-4 + 0.125e-4 = 2.375e-4
  assert series["baseline:uniform:uniform-half"]["hypervolume"] == pytest.approx(2.375e-4)
  assert all(s["kind"] == "baseline:uniform" and s["points"] == 2 for s in series.values())
  assert group["best_baseline"] == "baseline:uniform:uniform-half"
  assert (tmp_path / "cmp" / "pareto.png").exists()
  # Without --label the two sweeps' baselines are one series, as before.
  merged = app.aggregate([a, b], out_dir=tmp_path / "merged", wandb_mode="disabled")
  assert set(merged["groups"][0]["series"]) == {"baseline:uniform"}
  assert merged["groups"][0]["series"]["baseline:uniform"]["points"] == 4


def test_cli_prints_hypervolumes_and_fails_cleanly_on_an_empty_folder(tmp_path):
  sweep = make_sweep(tmp_path / "sweep", SWEEP)
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  p = subprocess.run([sys.executable, "-m", "experiments.pareto", str(sweep), "--wandb-mode", "disabled"],
                     cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
  assert p.returncode == 0, p.stderr[-2000:]
  assert "searched:sweep" in p.stdout and "x best baseline (baseline:uniform)" in p.stdout
  assert "FAILED sweep/6: ValueError: budget.fraction=0.001" in p.stdout
  (tmp_path / "empty").mkdir()
  p = subprocess.run([sys.executable, "-m", "experiments.pareto", str(tmp_path / "empty"), "--wandb-mode",
                      "disabled"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
  assert p.returncode == 2 and p.stderr.startswith("error: no usable result.json")


# ------------------------------------------------------------------------------------ offline wandb run

def _wandb_records(path: pathlib.Path):
  """wandb's transaction log: a 7-byte file header, then LevelDB-style log records in 32 KiB blocks.

  Each record has a 7-byte header (crc32c, length, type: 1 full, 2 first, 3 middle, 4 last); a block tail
  shorter than a header is zero padding. wandb 0.31 ships no Python reader, hence this one.
  """
  from wandb.proto import wandb_internal_pb2 as pb
  data = path.read_bytes()
  ident, magic, _ = struct.unpack("<4sHB", data[:7])
  assert (ident, magic) == (b":W&B", 0xBEE1)
  pos, pending, records = 7, b"", []
  while pos + 7 <= len(data):
    left = 32768 - pos % 32768
    if left < 7:
      pos += left
      continue
    _, length, rtype = struct.unpack("<IHB", data[pos:pos + 7])
    if rtype == 0:  # zero padding to the block end
      pos += left
      continue
    chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
    pending = chunk if rtype in (1, 2) else pending + chunk
    if rtype in (1, 4):
      record = pb.Record()
      record.ParseFromString(pending)
      records.append(record)
  return records


def test_offline_wandb_run_holds_hypervolume_and_pareto_table(tmp_path):
  sweep = make_sweep(tmp_path / "20-48-43", SWEEP)
  report = app.aggregate([sweep], wandb_mode="offline")
  assert "error" not in report["wandb"], report["wandb"]
  (run_file,) = (sweep / "aggregate" / "wandb").glob("offline-run-*/run-*.wandb")
  # run.finish() returns once wandb-core has processed the exit, but the core writes the file when it closes
  # the stream, a few milliseconds later: wait for the exit record.
  deadline = time.monotonic() + 30
  while not any(r.HasField("exit") for r in _wandb_records(run_file)):
    assert time.monotonic() < deadline, "the offline run file never got its exit record"
    time.sleep(0.05)
  records = _wandb_records(run_file)
  summary = {item.key: json.loads(item.value_json) for r in records if r.HasField("summary")
             for item in r.summary.update if item.key}
  assert summary["hv/riscv/latency_s/searched:20-48-43"] == pytest.approx(HV_SEARCHED)
  assert summary["hv_ratio/riscv/latency_s/searched:20-48-43"] == pytest.approx(HV_SEARCHED / HV_UNIFORM)
  logged = {item.key or item.nested_key[0] for r in records if r.HasField("history")
            for item in r.history.item}
  assert {"pareto_table", "front_architectures", "pareto_plot"} <= logged
  run = next(r.run for r in records if r.HasField("run"))
  assert (run.job_type, run.run_group) == ("aggregate", "20-48-43")
  # The mirror holds the same, readable without wandb.
  mirror = read_mirror(sweep / "aggregate")
  scatter = next(m for m in mirror if m["event"] == "scatter")
  assert scatter["key"] == "pareto" and scatter["columns"] == pareto_report.NETWORK_COLUMNS
  on_front = pareto_report.NETWORK_COLUMNS.index("on_front")
  assert sum(row[on_front] for row in scatter["rows"]) == 5
