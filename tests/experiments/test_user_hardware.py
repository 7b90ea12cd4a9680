"""The README's "Add your hardware" path, exactly as documented: a class in the user's own module outside the
package, a YAML in the user's own config folder, and a sweep against it from another folder."""
import json
import os
import pathlib
import re
import subprocess
import sys
import textwrap

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _blocks(lang):
  text = (ROOT / "hardware" / "README.md").read_text()
  section = text[text.index("## Add your hardware"):]
  return [textwrap.dedent(b) for b in re.findall(rf"```{lang}\n(.*?)```", section, flags=re.S)]


def test_user_cost_model_runs_a_sweep_from_a_temporary_folder(tmp_path):
  (tmp_path / "mymodule.py").write_text(_blocks("python")[0])
  conf = tmp_path / "conf" / "hardware"
  conf.mkdir(parents=True)
  (conf / "myhw.yaml").write_text(_blocks("yaml")[0])
  work = tmp_path / "elsewhere"
  work.mkdir()
  env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}", WANDB_MODE="disabled")
  sweep = tmp_path / "sweep"
  p = subprocess.run(
      [sys.executable, "-m", "experiments.search", "-m", f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
       "hardware=myhw", "budget.fraction=0.4,0.9", "debug=true", f"hydra.sweep.dir={sweep}",
       f"checkpoint.dir={tmp_path / 'ck'}"], cwd=work, env=env, capture_output=True, text=True, timeout=400)
  assert p.returncode == 0, p.stderr[-3000:]
  results = [json.loads((sweep / str(i) / "result.json").read_text()) for i in range(2)]
  for r in results:
    assert r["target"] == "myhw"
    assert r["cost"]["myhw"]["latency_s"] <= r["budget"]["value"] * (1 + 1e-9)
    assert "riscv" in r["cost"]  # the package's own presets are still reported beside the user's
  assert results[0]["cost"]["myhw"]["latency_s"] <= results[1]["cost"]["myhw"]["latency_s"]
