"""experiments.export_c: the C export of a run folder, its refusals in one sentence, and (with the RISC-V tools) the
simulated cycles and ELF memory beside the measured preset's prediction; experiments.export_sweep --c."""
import json
import pathlib
import sys

import pytest

from experiments import export_c as exc
from nas.deploy import c as cb

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from test_export import _tiny_network, write_run  # noqa: E402

needs_tools = pytest.mark.skipif(bool(cb.missing_tools()), reason=(
    f"RISC-V tools missing ({', '.join(cb.missing_tools())}); install them with `make riscv-tools`."))


def _error(capsys) -> str:
  err = capsys.readouterr().err.strip()
  assert err.startswith("error: ") and err.count("\n") == 0
  return err


def test_a_folder_without_a_run_exits_2_with_one_sentence(tmp_path, capsys):
  assert exc.main([str(tmp_path), "--out", str(tmp_path / "c")]) == 2
  assert "result.json is missing" in _error(capsys)


def test_a_folder_that_is_no_c_export_is_never_written(tmp_path, capsys):
  out = tmp_path / "mine"
  out.mkdir()
  (out / "notes.txt").write_text("keep")
  assert exc.main([str(tmp_path), "--out", str(out), "--force"]) == 2
  assert "no previous C export" in _error(capsys)
  assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_a_previous_c_export_is_replaced_only_with_force_and_strangers_block_it(tmp_path, capsys):
  out = tmp_path / "c"
  out.mkdir()
  (out / exc.MARKER).write_text("{}")
  (out / "network.c").write_text("")
  with pytest.raises(exc.ExportError, match="pass --force"):
    exc.check_out(out, tmp_path / "run")
  exc.check_out(out, tmp_path / "run", force=True)
  (out / "mine.txt").write_text("")
  with pytest.raises(exc.ExportError, match=r"files the exporter did not write \(mine.txt\)"):
    exc.check_out(out, tmp_path / "run", force=True)
  with pytest.raises(exc.ExportError, match="is the run folder"):
    exc.check_out(tmp_path, tmp_path)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  net, arch, _ = _tiny_network()
  return write_run(tmp_path_factory.mktemp("run"), net, arch,
                   result={"target": "riscv_cv32e40p", "cost": {"riscv_cv32e40p": {"latency_s": 1e-3}},
                           "budget": {"metric": "latency_s", "value": 2e-3}})


@needs_tools
def test_simulate_reports_measured_against_predicted_cycles_and_memory(run_dir, tmp_path, capsys):
  out = tmp_path / "c"
  assert exc.main([str(run_dir), "--out", str(out), "--simulate", "--pulp", "--images", "2"]) == 0
  info = json.loads((out / exc.MARKER).read_text())
  s, c = info["simulate"], info["compare"]
  assert s["bit_exact_images"] == s["images"] == 2
  assert c["preset"] == "riscv_cv32e40p"
  named = {r["layer"]: r for r in c["layers"]}
  assert set(named) == {"convs.0", "convs.1", "convs.2", "pool", "head"} and c["unmodelled_stages"] == ["pool"]
  for r in c["layers"]:
    if r["predicted_cycles"] is not None:
      assert abs(r["rel_err"]) < 0.5, r
  assert 0.7 < c["measured_over_predicted"] < 1.3
  m = c["memory"]
  # packed weights: the predicted bytes rounded up per bit-width group, plus one padding byte per layer
  assert m["predicted_weight_bytes"] <= m["weights_bytes"] <= m["predicted_weight_bytes"] + 3 * 4
  assert m["activation_bytes"] > 0 and m["sections"][".bss"] >= m["activation_bytes"]
  text = capsys.readouterr().out
  assert "end to end" in text and "memory:" in text
  # the same folder again: only with --force
  assert exc.main([str(run_dir), "--out", str(out)]) == 2
  assert "pass --force" in _error(capsys)


@needs_tools
def test_export_sweep_c_summarises_measured_over_budget(run_dir, tmp_path):
  from experiments import export_sweep
  import shutil
  sweep = tmp_path / "sweep"
  shutil.copytree(run_dir, sweep / "0")
  s = export_sweep.sweep_c(sweep, log=lambda *_: None)
  (row,) = s["jobs"]
  assert row["budget_cycles"] == pytest.approx(2e-3 * 40e6)
  assert row["measured_over_budget"] == pytest.approx(row["measured_cycles"] / row["budget_cycles"])
  assert len(s["layers"]) == 4 and (sweep / export_sweep.C_SUMMARY).is_file()
  with pytest.raises(exc.ExportError, match="pass --force"):
    export_sweep.sweep_c(sweep)
