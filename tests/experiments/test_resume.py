"""Kill -9 a search mid-run, run the same command again: it resumes and ends where an uninterrupted run ends."""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


# The shared mode (search.shared): one run killed while the supernet trains, then the same command killed again
# during a budget's architecture search, then run to the end (one test for both phases: each run of the command
# compiles its steps again, about a sixth of the suite's time when they were separate tests).
SHARED = ["search.shared=true", "search.shared_steps=300", "search.arch_steps=100"]
MODES = {"independent": ([], [("searches", 300)]), "shared": (SHARED, [("supernets", 300), ("searches", 100)])}


def _cmd(run_dir, ckpt_dir, extra=()):
  return [sys.executable, "-m", "experiments.search", f"hydra.run.dir={run_dir}", f"checkpoint.dir={ckpt_dir}",
          "checkpoint.every=20", "search.steps=300", "search.warmup_steps=60", "finetune.steps=30",
          "dataset.limit=300", "wandb.mode=disabled", "model.args.widths=[8,16]", "model.args.strides=[1,2]",
          *extra]


def _env():
  return dict(os.environ, PYTHONPATH=str(ROOT), WANDB_MODE="disabled")


def _kill_at_first_checkpoint(cmd, ckpt, phase: str, steps: int) -> None:
  """Runs ``cmd`` and kills it (SIGKILL) as soon as a checkpoint of ``phase`` appears; checks it died in that
  phase, before its last step, with no result written."""
  before = set(ckpt.glob(f"{phase}/*/*"))
  proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 240
  saved = []
  while time.time() < deadline and proc.poll() is None:
    saved = [p for p in set(ckpt.glob(f"{phase}/*/*")) - before if p.name.isdigit()]
    if saved:
      break
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert saved, f"no {phase} checkpoint appeared before the deadline"
  steps_at_kill = sorted(int(p.name) for p in ckpt.glob(f"{phase}/*/*") if p.name.isdigit())
  assert max(steps_at_kill) < steps - 1, steps_at_kill  # killed during that phase, not after it


@pytest.mark.parametrize("mode", list(MODES))
def test_killed_search_resumes_to_the_uninterrupted_result(tmp_path, mode):
  extra, kills = MODES[mode]
  ckpt = tmp_path / "ckpt"
  for i, (phase, steps) in enumerate(kills):
    _kill_at_first_checkpoint(_cmd(tmp_path / f"killed{i}", ckpt, extra), ckpt, phase, steps)
    assert not (tmp_path / f"killed{i}" / "result.json").exists()

  resumed = subprocess.run(_cmd(tmp_path / "resumed", ckpt, extra), cwd=ROOT, env=_env(), capture_output=True, text=True)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  fresh = subprocess.run(_cmd(tmp_path / "fresh", tmp_path / "ckpt2", extra), cwd=ROOT, env=_env(), capture_output=True,
                         text=True)
  assert fresh.returncode == 0, fresh.stderr[-2000:]
  a = json.loads((tmp_path / "resumed" / "result.json").read_text())
  b = json.loads((tmp_path / "fresh" / "result.json").read_text())
  assert a["architecture"] == b["architecture"]
  assert a["accuracy"] == b["accuracy"]
  assert a["search"]["multipliers"] == b["search"]["multipliers"]
  assert a["cost"] == b["cost"]
