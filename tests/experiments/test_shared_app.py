"""search.shared=true from the command line: two jobs started at once share one supernet (one file lock):
one trains it, the other waits and loads it."""
import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_two_concurrent_jobs_train_the_shared_supernet_once(tmp_path):
  env = dict(os.environ, WANDB_MODE="disabled", PYTHONPATH=str(ROOT))
  procs = {}
  for fraction in (0.3, 0.7):
    procs[fraction] = subprocess.Popen(
        [sys.executable, "-m", "experiments.search", "debug=true", "search.shared=true", f"budget.fraction={fraction}",
         "wandb.mode=disabled", f"checkpoint.dir={tmp_path / 'ck'}", f"hydra.run.dir={tmp_path / str(fraction)}"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  for fraction, p in procs.items():
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-2000:]
  results = {f: json.loads((tmp_path / str(f) / "result.json").read_text()) for f in procs}
  shared = [r["search"]["shared"] for r in results.values()]
  assert sorted(s["trained_here"] for s in shared) == [False, True], shared
  # debug=true trains the supernet for 30 steps; they count once, in the job that trained it
  assert sorted(r["search"]["steps"]["supernet"] for r in results.values()) == [0, 30]
  assert all(r["search"]["steps"]["arch"] == 20 for r in results.values())
  assert len(list((tmp_path / "ck" / "supernets").iterdir())) == 1
  for f, r in results.items():
    assert r["cost"]["riscv"]["latency_s"] <= r["budget"]["value"] * (1 + 1e-9)
