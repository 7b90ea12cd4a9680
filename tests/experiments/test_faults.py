"""Fault injection: SIGKILL (of the whole process group) at a seeded point of a search job, of its fine-tuning,
of a shared-supernet sweep (while the supernet trains and another job waits on its lock), of an export and of a
benchmark protocol; then the same command again. The result equals an uninterrupted run's, finished jobs are
untouched and no stale lock blocks. And a full disk and a read-only output folder: one sentence, no traceback.

The kill points are drawn from HWNAS_FAULT_SEED (default 0): which checkpoint (the k-th step folder of a loop) or
how long after a file appears. Every run uses the digits debug config; the uninterrupted reference runs are
module fixtures shared by the scenarios.
"""
import contextlib
import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import pytest

from test_benchmark import _tiny_protocol

ROOT = pathlib.Path(__file__).resolve().parents[2]
FAULT_SEED = int(os.environ.get("HWNAS_FAULT_SEED", "0"))
TIMEOUT = 300
# The searched job of the tiny benchmark protocol (tests/experiments/test_benchmark.py), spelled out: the search
# scenario's reference run is also the reference of the benchmark's searched job.
JOB = ["debug=true", "wandb.mode=disabled", "search.steps=30", "finetune.steps=20", "hardware=riscv",
       "budget.metric=latency", "budget.fraction=0.5", "seed=0"]
SEARCH_STEPS, FINETUNE_STEPS, SUPERNET_STEPS = 30, 20, 30  # debug=true caps search.shared_steps at 30
SHARED = ["debug=true", "wandb.mode=disabled", "search.shared=true"]
NO_SAVES = 10_000  # checkpoint.every of the uninterrupted references: only each loop's last step is saved


def _rng(scenario: str) -> random.Random:
  return random.Random(f"{FAULT_SEED}:{scenario}")


def _env():
  return dict(os.environ, PYTHONPATH=str(ROOT), WANDB_MODE="disabled")


def _module(name, *args):
  return [sys.executable, "-m", f"experiments.{name}", *map(str, args)]


def _search(run_dir, ckpt, every=2):
  return _module("search", *JOB, f"hydra.run.dir={run_dir}", f"checkpoint.dir={ckpt}", f"checkpoint.every={every}")


def _shared_sweep(sweep_dir, ckpt, every=1):
  return _module("search", "-m", "budget.room=0.3,0.6", *SHARED, f"hydra.sweep.dir={sweep_dir}",
                 f"checkpoint.dir={ckpt}", f"checkpoint.every={every}")


def _run(cmd, log: pathlib.Path | None = None) -> subprocess.CompletedProcess:
  proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
  if log is not None:
    log.write_text(proc.stdout + proc.stderr)
  assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stderr[-3000:]}"
  return proc


def _spawn(cmd, log: pathlib.Path) -> subprocess.Popen:
  """The command in its own process group (a session), its output in ``log``."""
  with open(log, "w") as f:
    return subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=f, stderr=subprocess.STDOUT, start_new_session=True)


def _kill(proc: subprocess.Popen) -> None:
  """kill -9 of the process's whole group (a benchmark's jobs are its children)."""
  with contextlib.suppress(ProcessLookupError):
    os.killpg(proc.pid, signal.SIGKILL)
  proc.wait(timeout=30)


def _kill_when(cmd, trigger, log: pathlib.Path, delay: float = 0.0) -> None:
  """Runs ``cmd`` and kills its group ``delay`` seconds after ``trigger()`` first holds; fails if it ends first."""
  proc = _spawn(cmd, log)
  try:
    deadline = time.monotonic() + TIMEOUT
    while not trigger():
      assert proc.poll() is None, f"ended (status {proc.returncode}) before its kill point:\n{log.read_text()[-3000:]}"
      assert time.monotonic() < deadline, "the kill point never came"
      time.sleep(0.01)
    time.sleep(delay)
  finally:
    _kill(proc)


def _steps(folder: pathlib.Path, pattern: str = "*") -> list[int]:
  """Finished Orbax checkpoints (step folders; a checkpoint being written has a temporary name) under folder."""
  return sorted(int(p.name) for p in folder.glob(f"{pattern}/*") if p.name.isdigit())


def _saved(folder: pathlib.Path, k: int, every: int, pattern: str = "*") -> bool:
  """Whether the loop under ``folder`` has saved its k-th checkpoint (step k * every - 1 or later: it keeps two)."""
  return max(_steps(folder, pattern), default=-1) >= k * every - 1


def _code() -> str:
  """The hash of the code that keys the checkpoint folders (nas.train.checkpoint.code_fingerprint)."""
  from nas.train.checkpoint import source_hash
  return source_hash([ROOT / "nas", ROOT / "hardware", ROOT / "experiments"])


def _result(run_dir) -> dict:
  return json.loads((pathlib.Path(run_dir) / "result.json").read_text())


def _same_network(a: dict, b: dict) -> None:
  assert a["architecture"] == b["architecture"]
  assert a["accuracy"] == b["accuracy"]
  assert a["cost"][a["target"]] == b["cost"][b["target"]]  # (presets may be added meanwhile: not all of them)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> pathlib.Path:
  """The uninterrupted search job (and its run folder, the export scenarios' input)."""
  tmp = tmp_path_factory.mktemp("reference")
  _run(_search(tmp / "run", tmp / "ckpt", NO_SAVES))
  return tmp / "run"


@pytest.fixture(scope="module")
def reference_sweep(tmp_path_factory) -> pathlib.Path:
  """The uninterrupted shared-supernet sweep (budget.room=0.3,0.6: jobs 0 and 1)."""
  tmp = tmp_path_factory.mktemp("reference_sweep")
  _run(_shared_sweep(tmp / "sweep", tmp / "ckpt", NO_SAVES))
  return tmp / "sweep"


# ----------------------------------------------------------------------------------------------- kill -9


def test_search_killed_in_search_then_in_finetuning_ends_as_the_uninterrupted_run(reference, tmp_path):
  rng = _rng("search")
  ckpt, run = tmp_path / "ckpt", tmp_path / "run"
  cmd = _search(run, ckpt)
  code = _code()
  k = rng.randint(1, 4)  # the k-th of the search's 15 checkpoints
  _kill_when(cmd, lambda: _saved(ckpt / "searches", k, 2), tmp_path / "kill1.log")
  assert not (run / "result.json").exists()
  assert max(_steps(ckpt / "searches")) < SEARCH_STEPS - 1  # killed while searching

  k = rng.randint(1, 3)  # then the k-th of the fine-tuning's 10 checkpoints
  _kill_when(cmd, lambda: _saved(ckpt, k, 2, "*/finetune"), tmp_path / "kill2.log")
  assert not (run / "result.json").exists()
  assert SEARCH_STEPS - 1 in _steps(ckpt / "searches")  # the search had finished: it resumed to its end
  assert max(_steps(ckpt, "*/finetune")) < FINETUNE_STEPS - 1  # killed while fine-tuning

  _run(cmd, tmp_path / "resumed.log")
  _same_network(_result(run), _result(reference))
  # It resumed (one checkpoint folder per loop, the same key), not started over; unless the code changed
  # meanwhile (someone editing the checkout): a new code is a new key, and the job rightly starts afresh.
  if _code() == code:
    assert len(list((ckpt / "searches").iterdir())) == 1 and len(list(ckpt.glob("*/finetune"))) == 1


def test_shared_supernet_killed_while_another_job_waits_on_its_lock(reference_sweep, tmp_path):
  """A sweep (budget.room=0.3,0.6) and a single job (room 0.6) start together on one checkpoint folder: one
  holds the supernet's file lock and trains it, the other waits. The holder is killed while it trains; the
  waiter takes the lock (flock locks die with their process), resumes the supernet and ends; the killed
  command, run again, ends too; every result equals the uninterrupted sweep's."""
  rng = _rng("shared")
  ckpt = tmp_path / "ckpt"
  cmds = {"sweep": _shared_sweep(tmp_path / "sweep", ckpt),
          "single": _module("search", *SHARED, "budget.room=0.6", f"hydra.run.dir={tmp_path / 'single'}",
                            f"checkpoint.dir={ckpt}", "checkpoint.every=1")}
  code = _code()
  procs = {name: _spawn(cmd, tmp_path / f"{name}.log") for name, cmd in cmds.items()}
  k = rng.randint(1, 4)  # the holder's k-th supernet checkpoint
  try:
    deadline = time.monotonic() + TIMEOUT
    while True:
      locks = _flocks(ckpt / "supernets")
      holder = next((n for n, p in procs.items() if any(l == ("held", p.pid) for l in locks)), None)
      waiting = [n for n, p in procs.items() if ("waits", p.pid) in locks]
      if holder and waiting and _saved(ckpt / "supernets", k, 1):
        break
      assert max(_steps(ckpt / "supernets"), default=-1) < SUPERNET_STEPS - 1, \
          "the supernet was trained before the second job waited on its lock"
      assert all(p.poll() is None for p in procs.values()), "a job ended before the kill point"
      assert time.monotonic() < deadline, "the kill point never came"
      time.sleep(0.01)
    _kill(procs[holder])
    (waiter,) = waiting
    assert procs[waiter].wait(timeout=TIMEOUT) == 0, (tmp_path / f"{waiter}.log").read_text()[-3000:]
  finally:
    for p in procs.values():
      _kill(p)
  locks = list((ckpt / "supernets").glob("*/.lock"))  # the killed holder's lock file is still there ...
  assert locks and all(map(_lockable, locks))  # ... and locks nobody out
  _run(cmds[holder], tmp_path / "rerun.log")
  ref = {room: _result(reference_sweep / job) for job, room in (("0", 0.3), ("1", 0.6))}
  for job, room in (("0", 0.3), ("1", 0.6)):
    _same_network(_result(tmp_path / "sweep" / job), ref[room])
  _same_network(_result(tmp_path / "single"), ref[0.6])
  if _code() == code:  # one supernet, resumed, for all of them (see the search scenario)
    assert len(list((ckpt / "supernets").iterdir())) == 1


def _flocks(folder: pathlib.Path) -> set[tuple[str, int]]:
  """("held" or "waits", pid) of the flock locks on ``folder/*/.lock``, from /proc/locks."""
  inodes = {p.stat().st_ino for p in folder.glob("*/.lock")} if folder.is_dir() else set()
  out = set()
  for line in pathlib.Path("/proc/locks").read_text().splitlines():
    fields = line.split()
    blocked = fields[1] == "->"
    fields = fields[2:] if blocked else fields[1:]
    if fields[0] == "FLOCK" and int(fields[4].split(":")[-1]) in inodes:
      out.add(("waits" if blocked else "held", int(fields[3])))
  return out


def _lockable(path: pathlib.Path) -> bool:
  import fcntl
  with open(path, "a") as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      return False
    fcntl.flock(f, fcntl.LOCK_UN)
  return True


@pytest.fixture(scope="module")
def reference_export(reference, tmp_path_factory) -> pathlib.Path:
  out = tmp_path_factory.mktemp("reference_export") / "export"
  _run(_module("export", reference, "--out", out))
  return out


def test_export_killed_midway_then_the_same_command_exports_the_same_files(reference, reference_export, tmp_path):
  out = tmp_path / "export"
  cmd = _module("export", reference, "--out", out)
  staged = lambda: any(tmp_path.glob(".export.tmp-*"))  # the exporter writes into a staging folder beside --out
  _kill_when(cmd, staged, tmp_path / "kill.log", delay=_rng("export").uniform(0.0, 0.3))
  assert not out.exists()  # killed before the staging folder was renamed: no half export under --out
  before = {p.name: p.stat().st_mtime_ns for p in reference.iterdir()}
  _run(cmd, tmp_path / "rerun.log")
  assert {p.name: p.stat().st_mtime_ns for p in reference.iterdir()} == before  # the run folder is untouched
  got, want = json.loads((out / "export.json").read_text()), json.loads((reference_export / "export.json").read_text())
  assert got["agreement"] == want["agreement"] and got["sizes"] == want["sizes"]
  for name in ("weights.bin", "model.onnx", "model.int8.onnx"):
    assert (out / name).read_bytes() == (reference_export / name).read_bytes(), name


def test_benchmark_killed_mid_job_resumes_and_keeps_finished_jobs(reference, tmp_path):
  out = tmp_path / "bench"
  cmd = _module("benchmark", _tiny_protocol(tmp_path), "--out", out, "--workers", "1", "--no-preflight",
                "--set", "checkpoint.every=2")
  protocol = lambda: json.loads((out / "protocol.json").read_text())["jobs"]
  k = _rng("benchmark").randint(1, 4)

  def second_job_searching():  # the baseline job is done, the searched one has saved its k-th checkpoint
    return (out / "protocol.json").exists() and (out / protocol()[0]["dir"] / "result.json").exists() and \
        _saved(out / "checkpoints" / "searches", k, 2)

  _kill_when(cmd, second_job_searching, tmp_path / "kill.log")
  baseline, searched = (out / j["dir"] for j in protocol())
  assert not (searched / "result.json").exists()
  finished = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in baseline.iterdir() if p.is_file()}
  proc = _run(cmd, tmp_path / "rerun.log")
  assert "1 already done, 1 to run" in proc.stdout
  assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in baseline.iterdir() if p.is_file()} == finished
  _same_network(_result(searched), _result(reference))
  assert (out / "report.md").exists()


# ------------------------------------------------------------------------------ full disk, read-only folder


@pytest.fixture(scope="module")
def bad_folders(tmp_path_factory):
  """{"full": a folder on a full 2 MiB tmpfs, "read-only": an existing folder on a read-only tmpfs}."""
  root = tmp_path_factory.mktemp("bad")
  full, ro = root / "full", root / "ro"
  full.mkdir()
  ro.mkdir()
  mounted = []
  try:
    for folder, options in ((full, "size=2m"), (ro, "size=1m")):
      subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], check=True, capture_output=True)
      mounted.append(folder)
  except (OSError, subprocess.CalledProcessError) as e:
    for folder in mounted:
      subprocess.run(["umount", "-l", str(folder)], capture_output=True)
    pytest.skip(f"mounting a small tmpfs is not permitted here ({getattr(e, 'stderr', b'') or e!r}).")
  try:
    with open(full / "filler", "wb") as f:  # fill the disk
      with contextlib.suppress(OSError):
        while True:
          f.write(b"\0" * 65536)
          f.flush()
    (full / "out").mkdir()
    (ro / "out").mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True, capture_output=True)
    yield {"full": full / "out", "read-only": ro / "out"}
  finally:
    for folder in mounted:
      subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def _app_cmd(app, out, reference, tmp_path):
  if app == "search":
    return _module("search", *JOB, f"hydra.run.dir={out / 'run'}", f"checkpoint.dir={tmp_path / 'ckpt'}")
  if app == "export":
    return _module("export", reference, "--out", out / "export")
  if app == "benchmark":
    return _module("benchmark", _tiny_protocol(tmp_path), "--out", out / "bench", "--no-preflight")
  return _module("pareto", reference.parent, "--out", out / "pareto", "--wandb-mode", "disabled")


@pytest.mark.parametrize("where", ["full", "read-only"])
@pytest.mark.parametrize("app", ["search", "export", "benchmark", "pareto"])
def test_unwritable_output_folder_is_one_sentence(app, where, bad_folders, reference, tmp_path):
  out = bad_folders[where]
  proc = subprocess.run(_app_cmd(app, out, reference, tmp_path), cwd=ROOT, env=_env(), capture_output=True,
                        text=True, timeout=TIMEOUT)
  assert proc.returncode != 0
  assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-3000:]
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and str(out) in errors[0], proc.stderr[-3000:]
  reason = "No space left on device" if where == "full" else "Read-only file system"
  assert reason in errors[0]
