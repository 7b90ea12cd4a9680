"""The Pareto aggregator's wandb run logs its fronts as native, explorable wandb charts: a ``networks`` table
(one row per network: family, label, target, budget, accuracy, costs, front flag, architecture, seed, run
folder), and per (target, metric) group a scatter of accuracy against cost and a line chart of each family's
front. Checked offline on the run's own files: the tracking.jsonl mirror, and the .wandb transaction log with
the table files it points to."""
import json
import pathlib
import time

import pytest

from experiments import pareto as app
from experiments import pareto_report
from experiments.tracking import read_mirror
from test_pareto_app import SWEEP, _wandb_records, make_sweep

COL = {c: i for i, c in enumerate(pareto_report.NETWORK_COLUMNS)}


@pytest.fixture(scope="module")
def aggregated(tmp_path_factory):
  """Two labelled sweeps on two targets: riscv (4 searched + 2 uniform baselines, one failed job) and cpu (the
  4 searched networks again, 1 point better): two (target, metric) groups, three families."""
  tmp = tmp_path_factory.mktemp("wandb_front")
  a = make_sweep(tmp / "a" / "20-48-43", SWEEP)
  b = make_sweep(tmp / "b" / "21-00-00", [dict(r, target="cpu", accuracy=r["accuracy"] + 0.01) for r in SWEEP[:4]],
                 failed_job=False)
  report = app.aggregate([a, b], labels=["gumbel", "darts"], out_dir=tmp / "out", wandb_mode="offline")
  assert "error" not in report["wandb"], report["wandb"]
  return {"report": report, "out": tmp / "out", "sweeps": {"gumbel": a, "darts": b}}


def _expected_rows(report) -> dict:
  """run folder -> the aggregator's own view of that network (its group's point)."""
  return {p["run"]: (g, p) for g in report["groups"] for p in g["points"]}


def _own_front(report) -> set:
  return {g["points"][i]["run"] for g in report["groups"] for s in g["series"].values() for i in s["front"]}


def _check_network_rows(rows, report, sweeps):
  expected = _expected_rows(report)
  assert len(rows) == len(expected) == 10  # one row per network, 6 + 4 (the failed job has none)
  assert {r[COL["run"]] for r in rows} == set(expected)
  assert {r[COL["run"]] for r in rows if r[COL["on_front"]]} == _own_front(report)
  for r in rows:
    g, p = expected[r[COL["run"]]]
    result = json.loads((pathlib.Path(r[COL["run"]]) / "result.json").read_text())
    assert r[COL["family"]] == p["series"] and r[COL["target"]] == g["target"] == result["target"]
    assert r[COL["metric"]] == g["metric"] == "latency_s"
    assert r[COL["label"]] == result["label"] and r[COL["seed"]] == result["seed"]
    assert r[COL["accuracy"]] == pytest.approx(result["accuracy"])
    assert r[COL["cost"]] == pytest.approx(result["cost"][g["target"]]["latency_s"])
    assert r[COL["latency_s"]] == pytest.approx(result["cost"][g["target"]]["latency_s"])
    assert r[COL["energy_j"]] == pytest.approx(result["cost"][g["target"]]["energy_j"])
    assert r[COL["weight_bytes"]] == pytest.approx(result["weight_bytes"])
    assert r[COL["budget"]] == (result["budget"] or {}).get("fraction")
    layers = result["architecture"]["layers"]
    assert r[COL["architecture"]] == " ".join(f"W{l['w_bits']}A{l['a_bits']}:{l['cout']}" for l in layers)
    assert r[COL["on_front"]] is p["on_front"]
  # Filtering by target gives each sweep's networks (sweep b was searched for cpu).
  cpu = [r for r in rows if r[COL["target"]] == "cpu"]
  assert len(cpu) == 4 and {r[COL["sweep"]] for r in cpu} == {"darts"}
  assert all(r[COL["run"]].startswith(str(sweeps["darts"])) for r in cpu)
  first = next(r for r in rows if r[COL["run"]] == str(sweeps["gumbel"] / "0"))
  assert first[COL["architecture"]] == "W4A4:8 W2A4:16" and first[COL["budget"]] == 0.25


def test_mirror_logs_networks_table_scatters_and_front_lines(aggregated):
  report, out = aggregated["report"], aggregated["out"]
  mirror = read_mirror(out / "aggregate")
  by_key = {m["key"]: m for m in mirror if "key" in m}
  networks = by_key["networks"]
  assert networks["event"] == "table" and networks["columns"] == pareto_report.NETWORK_COLUMNS
  _check_network_rows(networks["rows"], report, aggregated["sweeps"])
  # The pareto.json the aggregator wrote marks the same networks as on a front.
  on_disk = json.loads((out / "pareto.json").read_text())
  assert {p["run"] for g in on_disk["groups"] for p in g["points"] if p["on_front"]} == _own_front(report)

  keys = pareto_report.chart_keys(report["groups"])
  assert [k["scatter"] for k in keys] == ["pareto", "pareto/riscv/latency_s"]  # cpu first: a tie, by name
  assert [k["front"] for k in keys] == ["pareto_front", "pareto_front/riscv/latency_s"]
  for g, k in zip(report["groups"], keys):
    scatter, line = by_key[k["scatter"]], by_key[k["front"]]
    assert scatter["event"] == "scatter" and (scatter["x"], scatter["y"]) == ("cost", "accuracy")
    assert scatter["columns"] == pareto_report.NETWORK_COLUMNS and len(scatter["rows"]) == len(g["points"])
    assert {r[COL["target"]] for r in scatter["rows"]} == {g["target"]}
    assert line["event"] == "line" and (line["x"], line["y"], line["stroke"]) == ("cost", "accuracy", "family")
    front = {g["points"][i]["run"] for s in g["series"].values() for i in s["front"]}
    assert {r[COL["run"]] for r in line["rows"]} == front and len(line["rows"]) == len(front)
    for family in {r[COL["family"]] for r in line["rows"]}:  # each family's front as a line, by cost
      costs = [r[COL["cost"]] for r in line["rows"] if r[COL["family"]] == family]
      assert costs == sorted(costs)
  # No chart's table (stored by wandb under <key>_table) collides with another key.
  logged = {m["key"] for m in mirror if "key" in m}
  assert not {f"{k}_table" for ks in keys for k in ks.values()} & logged


def _records_when_closed(run_file: pathlib.Path):
  deadline = time.monotonic() + 30
  while True:
    records = _wandb_records(run_file)
    if any(r.HasField("exit") for r in records):
      return records
    assert time.monotonic() < deadline, "the offline run file never got its exit record"
    time.sleep(0.05)


def test_offline_wandb_run_holds_the_tables_and_native_charts(aggregated):
  report = aggregated["report"]
  run_dir = pathlib.Path(report["wandb"]["offline_run"])
  (run_file,) = run_dir.glob("run-*.wandb")
  records = _records_when_closed(run_file)
  history = {}
  for r in records:
    if r.HasField("history"):
      for item in r.history.item:
        key = item.key or "/".join(item.nested_key[:1])
        if len(item.nested_key) > 1:
          history.setdefault(key, {})[item.nested_key[1]] = json.loads(item.value_json)
  visualize = {}
  for r in records:
    if r.HasField("config"):
      for item in r.config.update:
        path = list(item.nested_key) or [item.key]
        if path[:2] == ["_wandb", "visualize"]:
          visualize[path[2]] = json.loads(item.value_json)

  def table(key):
    entry = history[key]
    assert entry["_type"] == "table-file", entry
    data = json.loads((run_dir / "files" / entry["path"]).read_text())
    assert entry["nrows"] == len(data["data"]) and entry["ncols"] == len(data["columns"])
    return data["columns"], data["data"]

  columns, rows = table("networks")
  assert columns == pareto_report.NETWORK_COLUMNS
  _check_network_rows(rows, report, aggregated["sweeps"])

  for g, k in zip(report["groups"], pareto_report.chart_keys(report["groups"])):
    spec = visualize[k["scatter"]]["panel_config"]
    assert spec["panelDefId"] == "wandb/scatter/v0"
    assert spec["fieldSettings"] == {"x": "cost", "y": "accuracy"}
    columns, rows = table(f"{k['scatter']}_table")
    assert columns == pareto_report.NETWORK_COLUMNS and len(rows) == len(g["points"])
    assert {r[COL["run"]] for r in rows if r[COL["on_front"]]} == {
        g["points"][i]["run"] for s in g["series"].values() for i in s["front"]}
    spec = visualize[k["front"]]["panel_config"]
    assert spec["panelDefId"] == "wandb/line/v0"
    assert spec["fieldSettings"] == {"x": "cost", "y": "accuracy", "stroke": "family"}
    columns, rows = table(f"{k['front']}_table")
    assert all(r[COL["on_front"]] for r in rows)
    assert {r[COL["family"]] for r in rows} == set(g["series"])
  assert {"front_architectures", "pareto_plot"} <= set(history)
  summary = {item.key: json.loads(item.value_json) for r in records if r.HasField("summary")
             for item in r.summary.update if item.key}
  assert summary["networks"] == 10
  assert summary["hv/riscv/latency_s/searched:gumbel"] == pytest.approx(
      report["hypervolume"]["riscv/latency_s/searched:gumbel"])
