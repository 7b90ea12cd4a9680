"""Bad input that was accepted silently, gave a traceback or a misleading sentence: each is now one sentence that
names the field (or the file or folder) and the fix, given before any training."""
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir

from experiments import benchmark
from experiments import preflight
from experiments import search as app

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONF = str(ROOT / "conf")
BROKEN_YAML = "_target_: hardware.riscv.MPIC\nname: mine\n  bits: [2, 4\n"


def _compose(overrides, checkpoint_dir=None):
  extra = [f"checkpoint.dir={checkpoint_dir}"] if checkpoint_dir else ["checkpoint.dir=null"]
  with initialize_config_dir(config_dir=CONF, version_base="1.3"):
    return compose(config_name="config", overrides=[*extra, "wandb.mode=disabled", *overrides])


@pytest.fixture
def no_training(monkeypatch):
  """Every training step raises: a test that passes stopped before any training."""
  import nas.search.loop as searchlib
  import nas.train.finetune as finetunelib

  def step(*args, **kwargs):
    raise AssertionError("a training step ran before the input was refused")
  for module, name in ((searchlib, "_search_step"), (searchlib, "_supernet_step"), (finetunelib, "_train_step")):
    monkeypatch.setattr(module, name, step)


def _refused(cfg, out, match):
  with pytest.raises(ValueError, match=match) as info:
    app.run(cfg, out)
  assert not (out / "result.json").exists()
  return str(info.value)


def _run_cli(args, cwd=ROOT, env=None):
  env = {**{k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}, "WANDB_MODE": "disabled",
         "PYTHONPATH": str(ROOT), **(env or {})}
  return subprocess.run([sys.executable, "-m", "experiments.search", *args], cwd=cwd, env=env, capture_output=True,
                        text=True, timeout=300)


def _one_sentence(proc) -> str:
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  lines = [l for l in proc.stderr.strip().splitlines() if l.startswith("error:")]
  assert len(lines) == 1, proc.stderr[-3000:]
  return lines[0]


@pytest.fixture
def readonly(tmp_path):
  """A folder nothing can be written in: a chmod 555 folder, or (root ignores permission bits) one under /sys."""
  folder = tmp_path / "readonly"
  folder.mkdir()
  folder.chmod(0o555)
  if preflight.unwritable(folder) is None:
    folder.chmod(0o755)
    folder = pathlib.Path("/sys/hwnas-readonly-test")
    if preflight.unwritable(folder) is None:
      pytest.skip("no read-only folder on this machine")
  yield folder
  if folder.is_relative_to(tmp_path):
    folder.chmod(0o755)


# ---------------------------------------------------------------------------------------- accepted silently
def test_nm_baseline_on_a_model_without_nm_choices_is_refused(tmp_path, no_training):
  text = _refused(_compose(["baseline.kind=uniform", "baseline.nm=2:4"]), tmp_path,
                  r"baseline\.nm='2:4': model=digits_cnn has no N:M choice")
  assert "model=vit" in text and "baseline.nm=null" in text


def test_vit_nm_pattern_whose_m_does_not_divide_a_reduction_width_is_refused(tmp_path, no_training):
  text = _refused(_compose(["model=vit", "model.args.patch=2", "model.args.nm_patterns=[[2,5]]"]), tmp_path,
                  r"model\.args\.nm_patterns entry \[2, 5\]")
  assert "multiple of M = 5" in text


def test_vit_nm_pattern_checks_every_mlp_width_candidate():
  """M = 8 divides the embedding (64) but not the MLP width 36 of model.args.mlp=36."""
  from flax import nnx
  from nas.models.space import SearchSpace
  from nas.models.vit import ViT
  tiny = dict(input_shape=(8, 8, 1), patch=4, embed=16, heads=2, mlp=36, depth=1)
  with pytest.raises(ValueError, match=r"nm_patterns entry \[1, 8\], input of mlp\.fc2 .*\(36\)"):
    ViT(SearchSpace(width_mults=(1.0,)), rngs=nnx.Rngs(0), nm_patterns=[[1, 8]], **tiny)
  ViT(SearchSpace(width_mults=(1.0,)), rngs=nnx.Rngs(0), nm_patterns=[[1, 4]], **tiny)  # 4 divides 16 and 36


def test_per_channel_bits_on_a_vit_are_refused(tmp_path, no_training):
  text = _refused(_compose(["model=vit", "model.args.patch=2", "search.per_channel_w=true"]), tmp_path,
                  r"search\.per_channel_w=true has no meaning for model=vit")
  assert "AQ-BERT" in text and "search.per_channel_w=false" in text


@pytest.mark.parametrize("field", ["seed", "baseline.arch_seed", "dataset.split_seed"])
def test_a_negative_seed_names_its_field(tmp_path, no_training, field):
  _refused(_compose([f"{field}=-1"]), tmp_path, rf"^{field.replace('.', '[.]')}=-1 must be a non-negative integer")


def test_a_budget_above_the_costliest_network_warns_that_it_does_not_bind(tmp_path, caplog):
  """budget.fraction=1e9 runs (it is feasible) but says, in the log and in result.json, that it does not bind."""
  from nas.models import build_model
  from nas.search import Constraint, cost as costlib
  from nas.search.budget import costliest_network, unbound_budget
  from nas.models.space import SearchSpace
  from hydra.utils import instantiate
  from omegaconf import OmegaConf
  hw = instantiate(OmegaConf.load(ROOT / "conf" / "hardware" / "riscv.yaml"), _convert_="all")
  net = build_model("digits_cnn", SearchSpace(), seed=0)
  tables = costlib.build_cost_tables(net, hw)
  largest, most = costliest_network(net, tables, "latency_s")
  ref = costlib.architecture_cost(net.reference_architecture(), hw)["latency_s"]
  assert most >= ref  # the largest widths and bits cost at least the reference
  assert unbound_budget(net, tables, Constraint("latency_s", 0.9 * most), ref, "riscv", "budget.fraction=x") is None
  assert "does not bind" in unbound_budget(net, tables, Constraint("latency_s", most), ref, "riscv",
                                           "budget.fraction=x")

  caplog.set_level("WARNING", logger="experiments.search")
  r = app.run(_compose(["debug=true", "budget.fraction=1e9"]), tmp_path)
  loose = [w for w in r["warnings"] if "does not bind" in w]
  assert len(loose) == 1 and loose[0].startswith("budget.fraction=1e+09 puts the latency_s budget")
  assert "set budget.fraction below" in loose[0]
  assert json.loads((tmp_path / "result.json").read_text())["warnings"] == r["warnings"]
  assert any("does not bind" in rec.getMessage() for rec in caplog.records)


# ---------------------------------------------------------------------------------------- tracebacks
@pytest.mark.parametrize("how", ["--config-dir", "hydra.searchpath"])
def test_a_preset_that_is_not_yaml_is_one_sentence(tmp_path, how):
  conf = tmp_path / "conf"
  (conf / "hardware").mkdir(parents=True)
  (conf / "hardware" / "mine.yaml").write_text(BROKEN_YAML)
  where = ["--config-dir", str(conf)] if how == "--config-dir" else [f"hydra.searchpath=[file://{conf}]"]
  p = _run_cli([*where, "hardware=mine", f"hydra.run.dir={tmp_path / 'run'}", "debug=true", "checkpoint.dir=null"])
  line = _one_sentence(p)
  # hardware.check's own sentence for the file
  assert line.startswith(f"error: preset {conf / 'hardware' / 'mine.yaml'} cannot be read as YAML (ScannerError:")
  assert line.endswith("fix the file.")
  full = _run_cli([*where, "hardware=mine", f"hydra.run.dir={tmp_path / 'run'}"], env={"HYDRA_FULL_ERROR": "1"})
  assert full.returncode != 0 and "Traceback" in full.stderr  # asked for: the full trace


PLUGIN = '''
from hardware.riscv import MPIC


class Broken(MPIC):
  def cost(self, layer, w_bits, a_bits, cin, cout):
    if layer.name == "convs.1":
      return {}["latency"]  # a bug in the user's formula
    return super().cost(layer, w_bits, a_bits, cin, cout)
'''


def test_a_plugin_cost_model_that_raises_names_its_file_and_the_layer(tmp_path, monkeypatch, no_training):
  (tmp_path / "broken_hw_plugin.py").write_text(PLUGIN)
  monkeypatch.syspath_prepend(str(tmp_path))
  text = _refused(_compose(["hardware._target_=broken_hw_plugin.Broken"]), tmp_path / "run",
                  r"^the cost model broken_hw_plugin\.Broken \(.*broken_hw_plugin\.py\) raised KeyError: 'latency' "
                  r"while costing layer 'convs\.1'")
  assert "\n" not in text


def test_a_protocol_that_is_not_yaml_or_lacks_seeds_is_one_sentence(tmp_path, monkeypatch):
  def no_jobs(*args, **kwargs):
    raise AssertionError("a job started")
  monkeypatch.setattr(benchmark, "run_job", no_jobs)
  monkeypatch.setattr(benchmark, "preflight", no_jobs)
  good = {"name": "t", "steps": "{search: 10, finetune: 10, baseline: 10}", "seeds": "[0]",
          "comparisons": "[{target: riscv, metric: latency, budgets: [0.5], default: g, families: {g: {}}}]",
          "baselines": "{}"}
  cases = {
      "syntax": ("seeds: [0, 1\nsteps: {}\n", r"^protocol .*syntax\.yaml cannot be read as YAML \(ParserError: "),
      "no_seeds": ({k: v for k, v in good.items() if k != "seeds"}, r"^protocol .*no_seeds\.yaml has no `seeds`"),
      "no_comparisons": ({k: v for k, v in good.items() if k != "comparisons"},
                         r"^protocol .*no_comparisons\.yaml has no `comparisons`"),
      "bad_comparison": ({**good, "comparisons": "[{target: riscv, metric: latency}]"},
                         r"comparisons\[0\] has no `budgets`"),
  }
  for name, (text, match) in cases.items():
    path = tmp_path / f"{name}.yaml"
    path.write_text(text if isinstance(text, str) else "".join(f"{k}: {v}\n" for k, v in text.items()))
    with pytest.raises(ValueError, match=match):
      benchmark.load_protocol(str(path), quick=False)
    assert benchmark.main([str(path), "--out", str(tmp_path / "out")]) == 2
  assert not (tmp_path / "out").exists()


def test_read_only_folders_are_one_sentence_before_any_work(tmp_path, readonly, no_training):
  text = _refused(_compose([], checkpoint_dir=readonly / "ck"), tmp_path / "run",
                  rf"^checkpoint\.dir={readonly}/ck cannot be written \(")
  assert "checkpoint.dir=null" in text
  _refused(_compose([]), readonly / "run", rf"^the run folder {readonly}/run cannot be written \(")
  for args, key in (([f"hydra.run.dir={readonly / 'run'}"], "hydra.run.dir"),
                    (["-m", f"hydra.sweep.dir={readonly / 'sweep'}", "budget.fraction=0.4,0.6"], "hydra.sweep.dir")):
    line = _one_sentence(_run_cli([*args, "debug=true", "checkpoint.dir=null"]))
    assert line.startswith(f"error: the {key.split('.')[1]} folder {key}={readonly}/"), line
    assert f"choose a writable one with {key}=" in line


def test_benchmark_output_folder_that_cannot_be_written_is_one_sentence(tmp_path, readonly, capsys):
  assert benchmark.main(["digits", "--out", str(readonly / "bench")]) == 2
  assert f"the output folder {readonly}/bench cannot be written" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------- misleading
def test_a_damaged_checkpoint_says_damaged_names_the_folder_and_is_short(tmp_path):
  """Run as a user would (the command line, in its own process: Orbax leaves the failed restore's coroutines to
  the garbage collector, whose 'Event loop is closed' noise must not reach this test session)."""
  ck = tmp_path / "ck"
  overrides = ["debug=true", "budget.fraction=0.5", "finetune.kd_alpha=0", f"checkpoint.dir={ck}"]
  first = _run_cli([*overrides, f"hydra.run.dir={tmp_path / 'first'}"])
  assert first.returncode == 0, first.stderr[-3000:]
  steps = sorted((ck / "searches").glob("*/[0-9]*"))
  assert steps
  for step in steps:  # truncate every array file of every saved step
    for f in step.rglob("*"):
      if f.is_file() and f.parent.name == "d":
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
  second = _run_cli([*overrides, f"hydra.run.dir={tmp_path / 'second'}"])
  text = _one_sentence(second)
  assert re.match(r"error: the checkpoint .* is damaged \(", text), text
  assert str(steps[-1]) in text and "delete that folder" in text
  assert "does not match" not in text and "TensorStore" not in text and len(text) < 310, text
  assert not (tmp_path / "second" / "result.json").exists()


def test_a_checkpoint_of_another_network_still_says_it_does_not_match(tmp_path):
  import jax.numpy as jnp
  from nas.train.checkpoint import LoopCheckpointer
  saver = LoopCheckpointer(tmp_path, every=1)
  saver.maybe_save(0, {"w": jnp.zeros((4, 8))}, last=True)
  saver.close()
  with pytest.raises(ValueError, match=r"does not match this run \(w has shape \(4, 8\) there, \(4, 16\) here\)"):
    LoopCheckpointer(tmp_path).restore({"w": jnp.zeros((4, 16))})
  with pytest.raises(ValueError, match=r"does not match this run \(it has no v\)"):
    LoopCheckpointer(tmp_path).restore({"w": jnp.zeros((4, 8)), "v": jnp.zeros(3)})


# ---------------------------------------------------------------------------------------- stale result
def test_checkpoint_key_follows_every_file_of_a_plugin_package(tmp_path, monkeypatch):
  """``_target_: mypkg.MyAccelerator``, the class in mypkg/model.py, re-exported by mypkg/__init__.py: editing
  model.py (or any module of the package) changes the key; other packages on sys.path do not enter it."""
  pkg = tmp_path / "hwnas_plugin_pkg"
  pkg.mkdir()
  (pkg / "__init__.py").write_text("from hwnas_plugin_pkg.model import MyAccelerator\n")
  (pkg / "model.py").write_text("from hwnas_plugin_pkg import util\n\nclass MyAccelerator:\n  rate = 1.0\n")
  (pkg / "util.py").write_text("SCALE = 1.0\n")
  (tmp_path / "unrelated.py").write_text("x = 1\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  cfg = _compose(["hardware._target_=hwnas_plugin_pkg.MyAccelerator"], checkpoint_dir="ck")
  first = app.checkpoint_dirs(cfg)
  (tmp_path / "unrelated.py").write_text("x = 2\n")
  assert app.checkpoint_dirs(cfg) == first
  (pkg / "model.py").write_text("from hwnas_plugin_pkg import util\n\nclass MyAccelerator:\n  rate = 2.0\n")
  second = app.checkpoint_dirs(cfg)
  assert second["search"] != first["search"] and second["finetune"] != first["finetune"]
  (pkg / "util.py").write_text("SCALE = 2.0\n")
  assert app.checkpoint_dirs(cfg)["search"] != second["search"]
