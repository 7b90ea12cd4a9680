"""experiments.jobpool: jobs run one after another in a long-lived worker give what a process per job gives, and
a job that fails, or kills its worker, fails alone."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import threading
import time

import numpy as np

from experiments.benchmark import job_env
from experiments.jobpool import INTERRUPTED, ROOT, WorkerPool

# A searched job on digits, shrunk (debug=true): search, derive, fine-tune, evaluate, write the network.
JOB = ["debug=true", "wandb.mode=disabled", "hardware=riscv", "budget.fraction=0.5", "seed=1"]


def _argv(folder: pathlib.Path, ckpt: pathlib.Path) -> list[str]:
  return [*JOB, f"hydra.run.dir={folder}", f"checkpoint.dir={ckpt}", "hydra.output_subdir=.hydra"]


def _outcome(folder: pathlib.Path) -> tuple[dict, dict]:
  result = json.loads((folder / "result.json").read_text())
  with np.load(folder / "network.npz") as f:
    arrays = {k: f[k] for k in f.files}
  keep = ("accuracy", "architecture", "cost", "search")
  return {k: result.get(k) for k in keep}, arrays


def test_jobs_in_one_worker_equal_a_process_per_job(tmp_path):
  """The same job in a process of its own, then twice in one worker (the second time with every program of
  the first in the worker's caches): the same result, bit for bit."""
  alone = tmp_path / "alone"
  proc = subprocess.run([sys.executable, "-m", "experiments.search", *_argv(alone, tmp_path / "ck0")],
                        capture_output=True, text=True, cwd=ROOT, env=job_env(1), timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  with WorkerPool(1, job_env(1), tmp_path / "workers") as pool:
    runs = []
    for i in (1, 2):
      folder = tmp_path / f"pooled{i}"
      folder.mkdir()
      assert pool.run(_argv(folder, tmp_path / f"ck{i}"), folder / "log.txt") == 0, (folder / "log.txt").read_text()
      runs.append(folder)
    assert len({w.proc.pid for w in pool._all}) == 1  # both jobs ran in the one worker
  want, want_arrays = _outcome(alone)
  for folder in runs:
    got, got_arrays = _outcome(folder)
    assert got == want
    assert got_arrays.keys() == want_arrays.keys()
    for k in want_arrays:
      np.testing.assert_array_equal(got_arrays[k], want_arrays[k], err_msg=k)
    # The job's own output went to its log, with Hydra's record of the run beside it.
    assert "accuracy" in (folder / "log.txt").read_text()
    assert (folder / ".hydra" / "overrides.yaml").is_file()


def _wait_for_start(log: pathlib.Path) -> None:
  """Until the job has started (its first log line: its budget); imports and Hydra come before it."""
  deadline = time.time() + 300
  while "budget" not in (log.read_text() if log.exists() else ""):
    assert time.time() < deadline, "the job did not start within 5 minutes"
    time.sleep(0.2)


def test_a_failing_job_fails_alone_and_a_killed_worker_is_replaced(tmp_path):
  with WorkerPool(1, job_env(1), tmp_path / "workers") as pool:
    # Bad input: the job's one-sentence error and its exit status 2; its worker is not used again.
    bad = tmp_path / "bad"
    bad.mkdir()
    assert pool.run(["budget.fraction=-1", f"hydra.run.dir={bad}"], bad / "log.txt") == 2
    assert "budget.fraction=-1.0 must be > 0" in (bad / "log.txt").read_text()
    assert pool._all == []

    # A worker killed in the middle of a job: that job fails with the signal's status ...
    killed = tmp_path / "killed"
    killed.mkdir()
    rcs = []
    thread = threading.Thread(target=lambda: rcs.append(pool.run(_argv(killed, tmp_path / "ck"), killed / "log.txt")))
    thread.start()
    _wait_for_start(killed / "log.txt")
    first = pool._all[0]
    os.kill(first.proc.pid, 9)
    thread.join(120)
    assert rcs == [-9]
    assert "worker process ended with status -9 (SIGKILL)" in (killed / "log.txt").read_text()
    # ... and the next job gets a new worker, which runs it.
    ok = tmp_path / "ok"
    ok.mkdir()
    assert pool.run(_argv(ok, tmp_path / "ck2"), ok / "log.txt") == 0
    assert len(pool._all) == 1 and pool._all[0].proc.pid != first.proc.pid
    assert json.loads((ok / "result.json").read_text())["accuracy"] > 0


def test_closing_the_pool_now_stops_the_running_job_as_ctrl_c_would(tmp_path):
  pool = WorkerPool(1, job_env(1), tmp_path / "workers")
  folder = tmp_path / "job"
  folder.mkdir()
  rcs = []
  thread = threading.Thread(target=lambda: rcs.append(pool.run(_argv(folder, tmp_path / "ck"), folder / "log.txt")))
  thread.start()
  try:
    _wait_for_start(folder / "log.txt")
    worker = pool._all[0]
  finally:
    pool.close(now=True)
  thread.join(120)
  assert rcs == [INTERRUPTED] and not worker.alive
  assert not (folder / "result.json").exists()
  # A closed pool starts nothing.
  assert pool.run(_argv(folder, tmp_path / "ck"), folder / "log.txt") == INTERRUPTED and pool._all == []
