"""Long-lived job processes: each worker runs many ``experiments.search`` jobs, one after another, in one process.

A protocol's jobs import the same modules, read the same dataset and run many of the same small eager
operations. A process per job pays for all of that again; a worker pays once: the imports (2 to 3 s a job), the
dataset (``datasets.load_shared``), and JAX's in-memory caches of the eager operations and of module-level jitted
functions (which the persistent compilation cache does not keep when they compile in under 0.2 s). The training
loops' steps (``nas.train.staged``) are still traced and lowered in every job and read from the persistent cache.
Each job runs as ``python -m experiments.search`` runs it (its command line, Hydra, its own folder, seed and
random streams), so its results are the ones a separate process gives: ``tests/experiments/test_jobpool.py``
checks that, bit for bit.

A job's output (Python's and XLA's, file descriptors 1 and 2) goes to its log file; a worker answers on a pipe
of its own. A job that fails is reported and its worker replaced (nothing a failed job left behind reaches the
next one); a job that kills its worker (a crash, the out-of-memory killer) fails alone, with the signal's status.
A worker is also replaced after ``max_jobs`` jobs, which bounds what its caches hold (about 10 MB a job). Workers
run in sessions of their own: Ctrl-C reaches the pool's owner, which stops them (``close(now=True)``).

  python -m experiments.jobpool --reply-fd N   # a worker (started by :class:`WorkerPool`); reads JSON lines
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import queue
import runpy
import signal
import subprocess
import sys
import threading
import time
import warnings
from typing import Mapping, Sequence

from nas import allocator

ROOT = pathlib.Path(__file__).resolve().parent.parent
INTERRUPTED = 130  # a job stopped by SIGINT (the shell's status for it)


def _exit_code(e: SystemExit) -> int:
  if e.code is None:
    return 0
  return e.code if isinstance(e.code, int) else 1


_JOB = {"running": False, "interrupted": False}


def _on_sigint(signum, frame) -> None:
  """SIGINT stops the running job (KeyboardInterrupt), again at each signal until it has: one raised inside a
  garbage-collection callback is lost (Python reports it and goes on); between jobs and in a stopped job's clean-up
  it only marks the worker as stopping."""
  _JOB["interrupted"] = True
  if _JOB["running"]:
    raise KeyboardInterrupt


def run_in_process(argv: Sequence[str], log_path: str) -> int:
  """``python -m experiments.search *argv`` in this process, its output appended to ``log_path`` (and nothing to
  read on its standard input); the exit status it would have had."""
  saved_argv = sys.argv
  sys.stdout.flush()
  sys.stderr.flush()
  with open(log_path, "ab", buffering=0) as log, open(os.devnull, "rb") as nothing:
    saved = os.dup(0), os.dup(1), os.dup(2)
    os.dup2(nothing.fileno(), 0)
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    sys.argv = ["experiments.search", *argv]
    _JOB["running"] = True
    try:
      # As ``python -m`` runs it: the module's code runs as __main__ (Hydra finds conf/ from its file); the
      # modules it imports are this process's, already imported.
      runpy.run_module("experiments.search", run_name="__main__", alter_sys=True)
      rc = 0
    except SystemExit as e:  # Hydra and the app exit this way on errors (2: bad input, 1: a failure)
      rc = _exit_code(e)
    except KeyboardInterrupt:  # the pool stops its workers with SIGINT: the job stops, and so does the worker
      _JOB["running"] = False  # at once: a repeated SIGINT must not interrupt this handler
      rc = INTERRUPTED
    except BaseException:  # noqa: BLE001 - a job's failure is reported, the worker goes on
      import traceback
      traceback.print_exc()
      rc = 1
    finally:
      _JOB["running"] = False
      sys.stdout.flush()
      sys.stderr.flush()
      for fd, copy in enumerate(saved):
        os.dup2(copy, fd)
        os.close(copy)
      sys.argv = saved_argv
  return rc


def serve(reply_fd: int) -> None:
  """The worker's loop: a JSON line ``{"argv": [...], "log": path}`` in on stdin, ``{"rc": n}`` out on
  ``reply_fd``, until stdin closes (or a job is interrupted)."""
  os.set_inheritable(reply_fd, False)  # a job's own subprocesses do not hold the pool's pipe
  os.environ[allocator.REEXEC_MARK] = "1"  # a job's __main__ must not restart this worker (nas.allocator.reexec)
  signal.signal(signal.SIGINT, _on_sigint)
  reply = os.fdopen(reply_fd, "w", buffering=1)
  import experiments.search  # noqa: F401 - the imports every job shares, before the first job is timed
  # runpy's note that the module it runs as __main__ is also imported (it is, as a library): true, and harmless
  warnings.filterwarnings("ignore", message=".*found in sys.modules after import of package", category=RuntimeWarning)
  while True:
    line = sys.stdin.readline()  # one line at a time: nothing is read ahead while a job runs
    if not line:
      return
    job = json.loads(line)
    reply.write(json.dumps({"rc": run_in_process(job["argv"], job["log"])}) + "\n")
    if _JOB["interrupted"]:  # stopped (the job may have finished first): no further job
      return


def _signal_name(rc: int) -> str:
  try:
    return f" ({signal.Signals(-rc).name})" if rc < 0 else ""
  except ValueError:
    return ""


class _Worker:
  def __init__(self, python: str, env: Mapping[str, str], log_path: pathlib.Path):
    read, write = os.pipe()
    self.log_path = log_path
    self.log = open(log_path, "ab")
    # A session of its own: the terminal's Ctrl-C goes to the pool's owner, which stops the workers.
    self.proc = subprocess.Popen([python, "-m", "experiments.jobpool", "--reply-fd", str(write)],
                                 stdin=subprocess.PIPE, stdout=self.log, stderr=subprocess.STDOUT, env=dict(env),
                                 cwd=ROOT, pass_fds=(write,), text=True, start_new_session=True)
    os.close(write)
    self.replies = os.fdopen(read, "r")
    self.jobs = 0

  def run(self, argv: Sequence[str], log_path: pathlib.Path) -> int:
    self.jobs += 1
    try:
      self.proc.stdin.write(json.dumps({"argv": list(argv), "log": str(log_path)}) + "\n")
      self.proc.stdin.flush()
      line = self.replies.readline()
    except (OSError, ValueError):  # a broken pipe, or the pool closed while the job ran
      line = ""
    if not line:  # the worker died in the job: its exit status, as a process per job would have given it
      rc = self.proc.wait()
      with open(log_path, "a") as log:
        log.write(f"\nthe job's worker process ended with status {rc}{_signal_name(rc)} (its own output: "
                  f"{self.log_path})\n")
      return rc or 1
    return int(json.loads(line)["rc"])

  @property
  def alive(self) -> bool:
    return self.proc.poll() is None

  def interrupt(self) -> None:
    """Stops the running job as Ctrl-C stops a process (its last checkpoint is kept); the worker then ends."""
    if self.alive:
      self.proc.send_signal(signal.SIGINT)

  def close(self, interrupted: bool = False) -> None:
    """Ends the worker after its job; ``interrupted``: repeats the SIGINT every 2 s until the job has stopped."""
    try:
      self.proc.stdin.close()
    except OSError:
      pass
    deadline = time.time() + 120
    while self.proc.poll() is None and time.time() < deadline:
      try:
        self.proc.wait(timeout=2)
      except subprocess.TimeoutExpired:
        if interrupted:
          self.interrupt()
    if self.proc.poll() is None:
      self.proc.kill()
      self.proc.wait()
    self.replies.close()  # after the worker has ended: a reader of the pipe has had its reply or end of file
    self.log.close()


class WorkerPool:
  """Up to ``size`` worker processes, started on first use, each running one job at a time.

  ``run`` blocks its calling thread until a worker is free and the job has finished (call it from ``size``
  threads to run ``size`` jobs at once). Workers' own output (between jobs) goes to ``log_dir/worker-<i>.log``.
  Once the pool is closed, or a job was interrupted, ``run`` starts nothing and returns ``INTERRUPTED``.
  """

  def __init__(self, size: int, env: Mapping[str, str], log_dir: pathlib.Path, python: str = sys.executable,
               max_jobs: int = 50):
    self.env, self.python, self.max_jobs = dict(env), python, max_jobs
    self.log_dir = pathlib.Path(log_dir)
    self.size = max(1, size)
    self._idle: queue.Queue = queue.Queue()
    for i in range(self.size):
      self._idle.put((i, None))
    self._lock = threading.Lock()
    self._all: list[_Worker] = []
    self._stopped = False

  def run(self, argv: Sequence[str], log_path: pathlib.Path) -> int:
    slot, worker = self._idle.get()
    try:
      if self._stopped:
        return INTERRUPTED
      if worker is None or not worker.alive or worker.jobs >= self.max_jobs:
        worker = self._replace(slot, worker)
      rc = worker.run(argv, log_path)
      if rc == INTERRUPTED:
        self._stopped = True
      elif rc != 0:  # a failed job may leave state behind (an open checkpoint manager, a setting): not for the next
        worker = self._replace(slot, worker, start=False)
      return rc
    finally:
      self._idle.put((slot, worker))

  def _replace(self, slot: int, worker: _Worker | None, start: bool = True) -> _Worker | None:
    if worker is not None:
      worker.close()
      with self._lock:
        self._all = [w for w in self._all if w is not worker]
    if not start:
      return None
    self.log_dir.mkdir(parents=True, exist_ok=True)
    worker = _Worker(self.python, self.env, self.log_dir / f"worker-{slot}.log")
    with self._lock:
      self._all.append(worker)
    return worker

  def close(self, now: bool = False) -> None:
    """Ends every worker: after its job, or (``now``) stopping the jobs first, all at once."""
    self._stopped = True
    with self._lock:
      workers, self._all = self._all, []
    if now:
      for w in workers:
        w.interrupt()
    for w in workers:
      w.close(interrupted=now)

  def __enter__(self) -> "WorkerPool":
    return self

  def __exit__(self, exc_type, *exc) -> None:
    self.close(now=exc_type is not None)


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--reply-fd", type=int, required=True)
  serve(parser.parse_args(argv).reply_fd)


if __name__ == "__main__":
  main()
