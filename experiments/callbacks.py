"""Hydra callbacks of the search app (registered in conf/config.yaml under hydra.callbacks)."""
from __future__ import annotations

import json
import pathlib
import sys

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


def failed_jobs(sweep_dir: pathlib.Path) -> list[tuple[str, str]]:
  """(job folder, error) of every job under a sweep folder that wrote error.json and no result.json."""
  out = []
  for err in sorted(pathlib.Path(sweep_dir).rglob("error.json")):
    if (err.parent / "result.json").exists():
      continue
    try:
      text = json.loads(err.read_text()).get("error", "?")
    except (OSError, ValueError):
      text = "unreadable error.json"
    out.append((str(err.parent.relative_to(sweep_dir)), text))
  return out


class ExitNonZeroOnFailedJobs(Callback):
  """After a multirun, when jobs failed: lists them and exits with status 1, so a script can tell.

  A failed job does not stop the others (each writes error.json and returns); only the end of the sweep
  reports the failure.
  """

  def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
    sweep_dir = pathlib.Path(config.hydra.sweep.dir)
    failed = failed_jobs(sweep_dir)
    if not failed:
      return
    lines = "\n".join(f"  job {job}: {error}" for job, error in failed)
    print(f"{len(failed)} job(s) of the sweep in {sweep_dir} failed (error.json in each folder):\n{lines}",
          file=sys.stderr, flush=True)
    sys.exit(1)
