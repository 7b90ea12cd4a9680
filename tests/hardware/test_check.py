"""`python -m hardware.check` on anyone's preset: a good plugin passes, broken ones fail naming the check."""
import pathlib
import subprocess
import sys
import textwrap

import pytest

from hardware import check

REPO = pathlib.Path(__file__).resolve().parents[2]

# The plugin of hardware/README.md ("Add your hardware"); BREAK swaps in one deliberate bug.
PLUGIN = '''
import numpy as np
from hardware.base import Cost, broadcast_choices, require_kind, round_up_to_supported

class MyAccelerator:
  bits_monotone = True

  def __init__(self, name, macs_per_s, power_w):
    self.name, self.macs_per_s, self.power_w = name, float(macs_per_s), float(power_w)

  def check_bits(self, w_bits, a_bits):
    round_up_to_supported(w_bits, [2, 4, 8], "w_bits", self.name)
    round_up_to_supported(a_bits, [2, 4, 8], "a_bits", self.name)

  def cost(self, layer, w_bits, a_bits, cin, cout):
    BREAK_KIND
    w, a, ci, co = broadcast_choices(w_bits, a_bits, cin, cout)
    bits = np.maximum(round_up_to_supported(w, [2, 4, 8], "w_bits", self.name),
                      round_up_to_supported(a, [2, 4, 8], "a_bits", self.name))
    latency = layer.macs(ci, co) / (self.macs_per_s * 8.0 / bits)
    BREAK_LATENCY
    return Cost(latency_s=latency, energy_j=latency * self.power_w)
'''
GOOD = {"BREAK_KIND": 'require_kind(layer, ("conv", "dwconv", "dense"), self.name)', "BREAK_LATENCY": "pass"}


def write_preset(tmp_path, monkeypatch, module, **breaks) -> str:
  """The plugin as ``module`` on sys.path and its preset ``<tmp>/conf/hardware/myhw.yaml``; returns the path."""
  source = PLUGIN
  for marker, code in {**GOOD, **breaks}.items():
    source = source.replace(marker, code)
  (tmp_path / f"{module}.py").write_text(source)
  monkeypatch.syspath_prepend(str(tmp_path))
  preset = tmp_path / "conf" / "hardware" / "myhw.yaml"
  preset.parent.mkdir(parents=True)
  preset.write_text(textwrap.dedent(f"""\
      _target_: {module}.MyAccelerator
      name: myhw
      macs_per_s: 1.0e11   # datasheet X, table Y
      power_w: 2.0         # measured with meter Z
      """))
  return str(preset)


def run_cli(*args, **kwargs):
  return subprocess.run([sys.executable, "-m", "hardware.check", *args], cwd=REPO, capture_output=True, text=True,
                        timeout=120, **kwargs)


def test_shipped_preset_passes_from_the_command_line():
  result = run_cli("conf/hardware/riscv.yaml")
  assert result.returncode == 0, result.stdout + result.stderr
  lines = result.stdout.splitlines()
  assert "PASS riscv grid[conv3x3]" in lines and "PASS riscv unknown_kind" in lines
  assert not [l for l in lines if l.startswith("FAIL")]


def test_readme_plugin_passes_every_check(tmp_path, monkeypatch, capsys):
  # The README plugin is CNN-only: it raises (require_kind) for linear, matmul, softmax and layernorm, so their
  # 12 checks (grid, channels, bits_monotone each) and sparsity[linear] are SKIPped, deliberately, not failed;
  # everything else passes, including 2:4 / 1:4 conv and dense layers (it ignores nm: they cost as dense).
  path = write_preset(tmp_path, monkeypatch, "goodhw")
  assert check.main([path]) == 0
  out = capsys.readouterr().out
  assert "FAIL" not in out and "myhw: 21 passed, 0 failed, 13 skipped" in out
  skipped = [l for l in out.splitlines() if l.startswith("SKIP")]
  assert all(l.endswith(": transformer kinds not modelled") for l in skipped), skipped
  assert "SKIP myhw grid[matmul]: transformer kinds not modelled" in skipped
  assert "PASS myhw sparsity[conv3x3]" in out and "PASS myhw sparsity[fc]" in out


def test_a_model_raising_for_only_some_transformer_kinds_fails_them(tmp_path, monkeypatch, capsys):
  # Costs linear and matmul like the plugin does but raises for the element-wise kinds: not "not modelled",
  # so the element-wise checks fail naming the layer.
  kinds = 'require_kind(layer, ("conv", "dwconv", "dense", "linear", "matmul"), self.name)'
  path = write_preset(tmp_path, monkeypatch, "partialhw", BREAK_KIND=kinds)
  assert check.main([path]) == 1
  out = capsys.readouterr().out
  fails = {l.split(":")[0] for l in out.splitlines() if l.startswith("FAIL")}
  assert fails == {f"FAIL myhw {c}[{k}]" for c in ("grid", "channels", "bits_monotone") for k in ("softmax", "layernorm")}
  assert "PASS myhw grid[linear]" in out and "PASS myhw sparsity[linear]" in out


def test_sparse_layer_costing_more_than_dense_fails_the_sparsity_check(tmp_path, monkeypatch, capsys):
  path = write_preset(tmp_path, monkeypatch, "dearhw", BREAK_LATENCY="latency = latency * (2.0 if layer.nm else 1.0)")
  assert check.main([path]) == 1
  fails = [l for l in capsys.readouterr().out.splitlines() if l.startswith("FAIL")]
  assert [l.split(":")[0] for l in fails] == ["FAIL myhw sparsity[conv3x3]", "FAIL myhw sparsity[fc]"], fails
  assert "never cost more than dense" in fails[0]


def test_the_readme_example_verbatim_passes(tmp_path, monkeypatch, capsys):
  readme = (REPO / "hardware" / "README.md").read_text()
  block = readme.split("```python\n", 1)[1].split("```", 1)[0]
  path = write_preset(tmp_path, monkeypatch, "readmehw")
  (tmp_path / "readmehw.py").write_text(textwrap.dedent(block))
  assert check.main([path]) == 0, capsys.readouterr().out


def test_negative_latency_fails_the_grid_check(tmp_path, monkeypatch, capsys):
  path = write_preset(tmp_path, monkeypatch, "neghw", BREAK_LATENCY="latency = -latency")
  assert check.main([path]) == 1
  fails = [l for l in capsys.readouterr().out.splitlines() if l.startswith("FAIL")]
  assert any(l.startswith("FAIL myhw grid[conv3x3]:") and "negative latency_s" in l for l in fails), fails


def test_unknown_kind_costed_zero_fails_the_unknown_kind_check(tmp_path, monkeypatch, capsys):
  silent = 'if layer.kind not in ("conv", "dwconv", "dense"): return Cost(np.zeros(()), np.zeros(()))'
  path = write_preset(tmp_path, monkeypatch, "silenthw", BREAK_KIND=silent)
  assert check.main([path]) == 1
  fails = [l for l in capsys.readouterr().out.splitlines() if l.startswith("FAIL")]
  unknown = [l for l in fails if l.startswith("FAIL myhw unknown_kind:")]
  assert len(unknown) == 1 and "require_kind" in unknown[0]
  # The same silent zero also costs the transformer kinds nothing (it does not raise for them), so their grid
  # checks fail too: a free layer is the bug either way.
  assert sorted(l.split(":")[0] for l in fails if l not in unknown) == sorted(
      f"FAIL myhw grid[{k}]" for k in ("linear", "matmul", "softmax", "layernorm"))


def test_missing_file_exits_2_with_one_sentence_and_no_traceback(tmp_path):
  missing = tmp_path / "nothere.yaml"
  result = run_cli(str(missing))
  assert result.returncode == 2
  assert "Traceback" not in result.stderr and result.stdout == ""
  assert str(missing) in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_unimportable_target_exits_2_naming_it(tmp_path, monkeypatch, capsys):
  path = write_preset(tmp_path, monkeypatch, "importablehw")
  pathlib.Path(path).write_text(pathlib.Path(path).read_text().replace("importablehw.", "no_such_module."))
  assert check.main([path]) == 2
  err = capsys.readouterr().err.strip()
  assert "no_such_module.MyAccelerator" in err and "PYTHONPATH" in err and len(err.splitlines()) == 1


def test_unreadable_yaml_exits_2(tmp_path, capsys):
  bad = tmp_path / "bad.yaml"
  bad.write_text("_target_: [unclosed\n")
  assert check.main([str(bad)]) == 2
  err = capsys.readouterr().err.strip()
  assert str(bad) in err and len(err.splitlines()) == 1


def test_name_other_than_the_file_fails_naming_the_fix():
  class WrongName:
    name = "other"
    def check_bits(self, w_bits, a_bits): pass
    def cost(self, layer, w_bits, a_bits, cin, cout): raise AssertionError("never reached")
  with pytest.raises(check.CheckFailed, match="set `name: myhw`"):
    check.check_protocol(WrongName(), "/x/myhw.yaml")
