"""The search app end to end (debug config), and bad input stopping before any training."""
import json
import os
import pathlib
import subprocess
import sys
import time

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from experiments import search as app
from experiments.baselines import baseline_choices
from nas.train.checkpoint import code_fingerprint, source_hash

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONF = str(ROOT / "conf")


def _compose(overrides, checkpoint_dir=None):
  extra = [f"checkpoint.dir={checkpoint_dir}"] if checkpoint_dir else ["checkpoint.dir=null"]
  with initialize_config_dir(config_dir=CONF, version_base="1.3"):
    return compose(config_name="config", overrides=[*extra, *overrides])


def _run_cli(args, cwd, timeout=300):
  env = dict(os.environ, WANDB_MODE="offline", PYTHONPATH=str(ROOT))
  return subprocess.run([sys.executable, "-m", "experiments.search", *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=timeout)


def test_cli_debug_run_writes_result(tmp_path):
  out = tmp_path / "run"
  p = _run_cli(["debug=true", f"hydra.run.dir={out}", "budget.fraction=0.5", f"checkpoint.dir={tmp_path / 'ck'}"],
               cwd=ROOT)
  assert p.returncode == 0, p.stderr[-2000:]
  r = json.loads((out / "result.json").read_text())
  assert r["target"] == "riscv" and r["kind"] == "searched"
  assert r["budget"]["metric"] == "latency_s" and r["budget"]["fraction"] == 0.5
  assert r["budget"]["value"] == pytest.approx(0.5 * r["budget"]["reference"])
  assert 0.0 <= r["accuracy"] <= 1.0
  # The derived network's latency honours the budget (the derive step projects onto it).
  assert r["cost"]["riscv"]["latency_s"] <= r["budget"]["value"] * (1 + 1e-9)
  assert r["weight_bytes"] > 0 and r["architecture"]["layers"]
  assert (out / "network.npz").is_file()  # the fine-tuned network travels with its result (experiments.export)
  # Every hardware preset is reported, not only the searched one.
  presets = {p.stem for p in (ROOT / "conf" / "hardware").glob("*.yaml")}
  assert len(r["cost"]) >= 1 and "riscv" in r["cost"]
  assert len(r["cost"]) >= len(presets) - sum(1 for c in r["cost"].values() if "error" in c)
  # The run was tracked: training curves and the architecture table in the mirror, an offline wandb run.
  records = [json.loads(l) for l in (out / "tracking.jsonl").read_text().splitlines()]
  assert any(rec["event"] == "log" and "search/ce" in rec["metrics"] for rec in records)
  assert any(rec["event"] == "table" and rec["key"] == "architecture" for rec in records)
  assert records[-1] == {"event": "finish", "exit_code": 0}
  assert list((out / "wandb").glob("offline-run-*/run-*.wandb"))


def test_cli_bad_input_exits_with_one_sentence(tmp_path):
  out = tmp_path / "run"
  t0 = time.time()
  p = _run_cli([f"hydra.run.dir={out}", "budget.fraction=0", "wandb.mode=disabled", "checkpoint.dir=null"], cwd=ROOT)
  assert p.returncode == 2
  lines = [l for l in p.stderr.strip().splitlines() if l.startswith("error:")]
  assert len(lines) == 1 and "budget.fraction" in lines[0], p.stderr[-2000:]
  assert not (out / "result.json").exists()
  assert json.loads((out / "error.json").read_text())["type"] == "ValueError"
  assert time.time() - t0 < 60  # stopped before training, not after


@pytest.mark.parametrize("overrides, field", [
    (["budget.fraction=-0.2"], "budget.fraction"),
    (["search.w_bits=[1,4]"], "search.w_bits"),
    (["search.a_bits=[4,9]"], "search.a_bits"),
    (["search.w_bits=[]"], "search.w_bits"),
    (["search.width_mults=[]"], "search.width_mults"),
    (["budget.metric=power"], "budget.metric"),
    (["budget.fraction=0.001"], "budget.fraction"),  # below the cheapest network of the space
    # every network of the digits space costs ~the reference on a GPU (fixed time per kernel): the sentence
    # names the fraction to use, other metrics and the batch size
    (["hardware=gpu", "budget.fraction=0.5"],
     r"budget.fraction=1 or more, budget.room .*another budget.metric .*hardware.batch_size"),
    (["budget.room=1.5"], "budget.room"),
    (["budget.room=-0.1"], "budget.room"),
    (["budget.fraction=0.3", "budget.room=0.2"], r"budget.fraction=0.3 and budget.room=0.2 are both set"),
    (["model=fmnist_cnn", "model.args.skip=[0,2]"], r"model.args.skip=\[0, 2\]: .*the first layer cannot"),
    (["model=fmnist_cnn", "model.args.keep_init=1"], "model.args.keep_init"),
])
def test_bad_input_names_the_field_before_training(tmp_path, overrides, field, monkeypatch):
  import nas.search.loop as searchlib
  called = []
  monkeypatch.setattr(searchlib, "_search_step", lambda *a, **k: called.append(1))
  cfg = _compose(["wandb.mode=disabled", *overrides])
  with pytest.raises(ValueError, match=field.replace(".", r"\.") if "*" not in field else field):
    app.run(cfg, tmp_path)
  assert not called, "training started before the input was rejected"
  assert not (tmp_path / "result.json").exists()


def test_unknown_hardware_preset_is_rejected_by_hydra():
  from hydra.errors import MissingConfigException
  with pytest.raises(MissingConfigException, match="hardware"):
    _compose(["hardware=tpu_v9"])


def test_typo_in_a_config_key_fails_at_startup():
  from hydra.errors import ConfigCompositionException
  with pytest.raises(ConfigCompositionException, match="search.stepz"):
    _compose(["search.stepz=10"])


def test_a_uniform_baseline_keeps_every_skippable_layer():
  from nas import models
  from nas.models.space import SearchSpace
  cfg = _compose(["model=fmnist_cnn", "baseline.kind=uniform", "baseline.w_bits=4", "baseline.a_bits=4"])
  net = models.build_model("fmnist_cnn", SearchSpace(), seed=0)
  choices = baseline_choices(net, cfg)
  assert {choices[f"convs.{i}.keep"] for i in (1, 2, 3)} == {1}
  assert [l.spec.name for l in net.architecture(choices).layers] == [f"convs.{i}" for i in range(4)] + ["head"]


def test_baselines_run_in_process(tmp_path):
  for kind, extra in (("uniform", ["baseline.w_bits=4", "baseline.a_bits=4"]), ("random", [])):
    cfg = _compose(["debug=true", "wandb.mode=disabled", f"baseline.kind={kind}", *extra])
    r = app.run(cfg, tmp_path / kind)
    assert r["kind"] == f"baseline:{kind}"
    if kind == "uniform":
      searchable = [l for l in r["architecture"]["layers"] if l["name"] not in ("convs.0", "head")]
      assert all(l["w_bits"] == 4 and l["a_bits"] == 4 for l in searchable)


def test_per_channel_search_is_tracked_in_wandb(tmp_path):
  cfg = _compose(["debug=true", "wandb.mode=offline", "search.per_channel_w=true", "budget.fraction=0.6"],
                 checkpoint_dir=tmp_path / "ck")
  r = app.run(cfg, tmp_path / "run")
  per_channel = [l for l in r["architecture"]["layers"] if isinstance(l["w_bits"], list)]
  assert per_channel, "per-channel layers record one bit-width per output channel"
  for l in per_channel:
    assert len(l["w_bits"]) == l["cout"]
  assert r["cost"]["riscv"]["latency_s"] <= r["budget"]["value"] * (1 + 1e-9)
  records = [json.loads(l) for l in (tmp_path / "run" / "tracking.jsonl").read_text().splitlines()]
  table = next(rec for rec in records if rec["event"] == "table" and rec["key"] == "architecture")
  assert all(isinstance(row[table["columns"].index("w_bits")], str) for row in table["rows"])
  # Each choice's largest probability is in result.json and in the run's summary, named by choice.
  summary = next(rec["values"] for rec in records if rec["event"] == "summary")
  assert r["search"]["max_prob"] and "convs.1.w_bits" in r["search"]["max_prob"]
  for name, value in r["search"]["max_prob"].items():
    assert 0 < value <= 1 + 1e-6
    assert summary[f"search/max_prob/{name}"] == value


def test_checkpoint_folders_change_with_the_code(monkeypatch):
  """A job's checkpoints are keyed by config and code: after a code change the same command starts afresh."""
  cfg = _compose(["debug=true"], checkpoint_dir="ck")
  first = app.checkpoint_dirs(cfg)
  assert app.checkpoint_dirs(cfg) == first
  monkeypatch.setattr(app, "code_fingerprint", lambda packages: "another-version")
  second = app.checkpoint_dirs(cfg)
  assert all(second[k] != first[k] for k in ("search", "finetune", "teacher"))


def test_source_hash_follows_the_sources(tmp_path):
  pkg = tmp_path / "pkg"
  (pkg / "sub").mkdir(parents=True)
  (pkg / "a.py").write_text("x = 1\n")
  (pkg / "sub" / "b.py").write_text("y = 2\n")
  (pkg / "notes.txt").write_text("not code")
  first = source_hash([pkg])
  (pkg / "notes.txt").write_text("edited")
  assert source_hash([pkg]) == first
  (pkg / "sub" / "b.py").write_text("y = 3\n")
  assert source_hash([pkg]) != first


def test_code_fingerprint_names_a_missing_package():
  with pytest.raises(ValueError, match="not_a_package"):
    code_fingerprint(("nas", "not_a_package"))
  assert code_fingerprint(("nas",)) != code_fingerprint(("nas", "hardware"))


def test_jobs_that_differ_only_in_fine_tuning_share_one_search_checkpoint():
  """Inherited weights or from scratch, other fine-tuning steps: the search is the same, so is its folder;
  anything the search depends on (its steps, the budget, the seed) gives another."""
  base = app.checkpoint_dirs(_compose(["debug=true"], checkpoint_dir="ck"))
  other_ft = app.checkpoint_dirs(_compose(["debug=true", "finetune.inherit=false", "finetune.steps=7"],
                                          checkpoint_dir="ck"))
  assert other_ft["search"] == base["search"] and other_ft["finetune"] != base["finetune"]
  for override in ("search.steps=31", "budget.fraction=0.3", "seed=1"):
    assert app.checkpoint_dirs(_compose(["debug=true", override], checkpoint_dir="ck"))["search"] != base["search"]


@pytest.mark.parametrize("overrides, message", [
    (["search.lr=-0.01"], "search.lr=-0.01 must be > 0"),
    (["finetune.lr=-1"], "finetune.lr=-1.0 must be > 0"),
    (["search.arch_lr=0"], "search.arch_lr=0.0 must be > 0"),
    (["finetune.steps=0"], "finetune.steps=0 must be > 0"),
    (["baseline.steps=0"], "baseline.steps=0 must be > 0"),
    (["search.weight_decay=-1e-4"], "search.weight_decay=-0.0001 must be >= 0"),
    (["checkpoint.every=0"], "checkpoint.every=0 must be > 0"),
    (["+budget.fracton=0.5"], "budget.fracton is not a setting of this app (added with '+', it would be ignored); "
                              "did you mean budget.fraction?"),
    (["+search.lrr=0.1"], "did you mean search.lr?"),
    (["+nonsense=1"], "nonsense is not a setting of this app"),
])
def test_rates_steps_and_unknown_keys_are_refused_before_any_work(overrides, message):
  from experiments.config import validate
  cfg = _compose(overrides)
  with pytest.raises(ValueError) as e:
    validate(cfg)
  assert message in str(e.value)


def test_shipped_presets_and_free_nodes_pass_the_unknown_key_check():
  from experiments.config import unknown_keys
  for overrides in ([], ["+sweep=budgets"], ["+sweep=optuna"], ["hardware=gpu", "model=resnet20"],
                    ["model=fmnist_cnn", "dataset=fashion_mnist", "model.args.widths=[8,8,8,8]"]):
    assert unknown_keys(_compose(overrides)) == [], overrides


def test_cli_misspelt_plus_key_exits_2_naming_it_and_the_closest_key(tmp_path):
  p = _run_cli([f"hydra.run.dir={tmp_path / 'run'}", "+budget.fracton=0.5", "wandb.mode=disabled",
                "checkpoint.dir=null"], cwd=ROOT)
  assert p.returncode == 2 and "Traceback" not in p.stderr
  lines = [l for l in p.stderr.strip().splitlines() if l.startswith("error:")]
  assert len(lines) == 1 and "budget.fracton" in lines[0] and "budget.fraction" in lines[0], p.stderr[-2000:]


def test_checkpoint_key_follows_the_source_of_a_plugin_cost_model(tmp_path, monkeypatch):
  """A cost model defined outside this repository (a user's plugin): editing its formula must start the
  search afresh, not resume the old one."""
  plugin = tmp_path / "my_hw_plugin.py"
  plugin.write_text("class MyHW:\n  latency_per_mac = 1.0\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  cfg = _compose(["hardware._target_=my_hw_plugin.MyHW"], checkpoint_dir="ck")
  first = app.checkpoint_dirs(cfg)
  assert app.checkpoint_dirs(cfg) == first
  plugin.write_text("class MyHW:\n  latency_per_mac = 2.0\n")
  second = app.checkpoint_dirs(cfg)
  assert second["search"] != first["search"] and second["finetune"] != first["finetune"]


def test_a_host_calibrated_preset_used_on_another_machine_says_so_in_result_and_summary(tmp_path, monkeypatch):
  """cpu_host was fitted on one machine; on another (faked here) the run warns, and result.json and the wandb
  summary carry the sentence with the command that recalibrates."""
  from hardware import host
  monkeypatch.setattr(host, "current_host", lambda: {"cpu": "Imaginary CPU 9000", "flags": ["avx2"]})
  cfg = _compose(["debug=true", "hardware=cpu_host", "baseline.kind=uniform", "wandb.mode=disabled"])
  result = app.run(cfg, tmp_path)
  assert len(result["warnings"]) == 1
  text = result["warnings"][0]
  assert "Imaginary CPU 9000" in text and "python -m hardware.calibrate" in text
  assert json.loads((tmp_path / "result.json").read_text())["warnings"] == [text]
  summary = [json.loads(l) for l in (tmp_path / "tracking.jsonl").read_text().splitlines()
             if json.loads(l)["event"] == "summary"]
  assert summary and summary[-1]["values"]["warnings/host_mismatch"] == text


def test_every_preset_is_searchable_with_its_defaults():
  """The default budget (budget.room=0.5) is feasible on every shipped preset, on the default model: halfway
  between the cheapest network of the space and the reference. On four presets the cheapest network is found
  by brute force over all 5,184 architectures of digits_cnn (costed layer by layer by architecture_cost, not
  from the search's tables); cpu_host is one where the per-layer lower bound is no network's cost."""
  import itertools
  from hydra.utils import instantiate
  from nas.search import cost as costlib
  from nas.models import build_model
  from nas.search import check_room, cheapest_network, cost_lower_bound, resolve_budget
  cfg = _compose(["wandb.mode=disabled"])
  data = app.load_dataset(cfg)
  supernet = build_model(cfg.model.name, app.search_space(cfg), seed=0, **app._model_args(cfg, data))
  names = list(supernet.choices)
  grid = list(itertools.product(*(supernet.choices[n].values for n in names)))
  assert len(grid) == 5184
  for yaml in sorted((ROOT / "conf" / "hardware").glob("*.yaml")):
    target = instantiate(_compose([f"hardware={yaml.stem}"]).hardware)
    reference = costlib.architecture_cost(supernet.reference_architecture(), target)["latency_s"]
    tables = costlib.build_cost_tables(supernet, target)
    cheapest = cheapest_network(supernet, tables, "latency_s")[1]
    b = resolve_budget(cheapest, "latency_s", reference, cfg.budget.fraction, cfg.budget.room)
    assert b.room == 0.5 and 0 < b.cheapest <= 1.0, yaml.stem
    assert b.value == pytest.approx(reference * (b.cheapest + 0.5 * (1 - b.cheapest)), rel=1e-9)
    check_room({"latency_s": cheapest}, [app.Constraint("latency_s", b.value)], {"latency_s": reference}, target.name)
    if yaml.stem in ("cpu_host", "bitfusion", "riscv", "gpu"):
      least = min(costlib.architecture_cost(supernet.architecture(dict(zip(names, c))), target)["latency_s"]
                  for c in grid)
      assert b.cheapest * reference == pytest.approx(least, rel=1e-9), yaml.stem
      if yaml.stem == "cpu_host":  # the per-layer bound is below every network here
        bound = cost_lower_bound(tables, ["latency_s"])["latency_s"]
        assert bound < least * 0.99
    # room 0 is exactly the cheapest network; fraction wins when it is the one set
    zero = resolve_budget(cheapest, "latency_s", reference, room=0.0)
    assert zero.value == pytest.approx(b.cheapest * reference, rel=1e-12)
  frac = resolve_budget(cheapest, "latency_s", reference, fraction=0.7)
  assert frac.room is None and frac.value == pytest.approx(0.7 * reference, rel=1e-12)


def test_an_absolute_memory_bound_holds_for_the_derived_network(tmp_path):
  """budget.extra with a limit in bytes (a core's memory) instead of a fraction of the reference."""
  cfg = _compose(["wandb.mode=disabled", "debug=true", "checkpoint.dir=null",
                  "budget.extra=[{metric: weight_bytes, limit: 3000}]"])
  result = app.run(cfg, tmp_path)
  assert {"metric": "weight_bytes", "limit": 3000.0} in result["constraints"]
  assert result["weight_bytes"] <= 3000


@pytest.mark.parametrize("extra,message", [
    ("[{metric: weight_bytes}]", r"budget.extra\[0\] needs exactly one of fraction .* and limit"),
    ("[{metric: weight_bytes, fraction: 0.5, limit: 3000}]", r"budget.extra\[0\] needs exactly one"),
    ("[{metric: weight_bytes, limit: -1}]", r"budget.extra\[0\].limit=-1.0 must be > 0"),
])
def test_an_extra_bound_needs_one_positive_fraction_or_limit(tmp_path, extra, message):
  with pytest.raises(ValueError, match=message):
    app.run(_compose(["wandb.mode=disabled", f"budget.extra={extra}"]), tmp_path)
