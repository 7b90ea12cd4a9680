"""A thin tracking interface over wandb: offline by default, and mirrored to a JSONL file tests can read.

Everything logged goes to wandb (``mode``: offline, online or disabled) and, line by line, to
``<run_dir>/tracking.jsonl``, so what a run logged can be checked without wandb's binary format.
``wandb sync <run_dir>/wandb/offline-run-*`` uploads an offline run later.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any, Sequence

MODES = ("offline", "online", "disabled")


@dataclasses.dataclass
class WandbConfig:
  """Where and how runs are tracked.

  Attributes:
    mode: ``offline`` (default: no account, no network), ``online`` or ``disabled``.
    project: wandb project.
    entity: wandb entity (None: the default of the logged-in account).
    group: run group; None groups by the sweep folder.
    tags: run tags.
  """
  mode: str = "offline"
  project: str = "hwnas"
  entity: str | None = None
  group: str | None = None
  tags: list[str] = dataclasses.field(default_factory=list)


class Tracker:
  """One tracked run.

  Args:
    cfg: the wandb settings.
    run_dir: folder of this run; wandb files go under ``run_dir/wandb``.
    name: run name.
    group: run group (sweeps group their jobs).
    job_type: ``search`` or ``aggregate``.
    config: the run's configuration (a plain dict).
  """

  def __init__(self, cfg: WandbConfig, run_dir: str | os.PathLike, name: str, group: str | None,
               job_type: str, config: dict):
    if cfg.mode not in MODES:
      raise ValueError(f"wandb.mode={cfg.mode!r}; use one of {MODES}.")
    self.run_dir = pathlib.Path(run_dir)
    self.run_dir.mkdir(parents=True, exist_ok=True)
    self._mirror = open(self.run_dir / "tracking.jsonl", "a")
    self._write({"event": "init", "name": name, "group": group, "job_type": job_type, "config": config})
    self.run = None
    if cfg.mode != "disabled":
      import wandb
      os.environ.setdefault("WANDB_SILENT", "true")
      self.run = wandb.init(project=cfg.project, entity=cfg.entity, group=group, job_type=job_type, name=name,
                            tags=list(cfg.tags), config=config, mode=cfg.mode, dir=str(self.run_dir),
                            reinit="finish_previous")

  def _write(self, record: dict) -> None:
    self._mirror.write(json.dumps(record, default=float) + "\n")
    self._mirror.flush()

  def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
    self._write({"event": "log", "step": step, "metrics": metrics})
    if self.run is not None:
      self.run.log(metrics, step=step)

  def table(self, key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    self._write({"event": "table", "key": key, "columns": list(columns), "rows": [list(r) for r in rows]})
    if self.run is not None:
      import wandb
      self.run.log({key: wandb.Table(columns=list(columns), data=[list(r) for r in rows])})

  def scatter(self, key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], x: str, y: str,
              title: str) -> None:
    """A wandb scatter plot (its table is stored under ``<key>_table``)."""
    self._write({"event": "scatter", "key": key, "columns": list(columns), "rows": [list(r) for r in rows],
                 "x": x, "y": y})
    if self.run is not None:
      import wandb
      table = wandb.Table(columns=list(columns), data=[list(r) for r in rows])
      self.run.log({key: wandb.plot.scatter(table, x, y, title=title)})

  def line(self, key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], x: str, y: str,
           stroke: str | None, title: str) -> None:
    """A wandb line chart, one line per value of the ``stroke`` column (its table is stored under
    ``<key>_table``)."""
    self._write({"event": "line", "key": key, "columns": list(columns), "rows": [list(r) for r in rows],
                 "x": x, "y": y, "stroke": stroke})
    if self.run is not None:
      import wandb
      table = wandb.Table(columns=list(columns), data=[list(r) for r in rows])
      self.run.log({key: wandb.plot.line(table, x, y, stroke=stroke, title=title)})

  def image(self, key: str, path: str | os.PathLike) -> None:
    self._write({"event": "image", "key": key, "path": str(path)})
    if self.run is not None:
      import wandb
      self.run.log({key: wandb.Image(str(path))})

  def summary(self, values: dict[str, Any]) -> None:
    self._write({"event": "summary", "values": values})
    if self.run is not None:
      for k, v in values.items():
        self.run.summary[k] = v

  def finish(self, exit_code: int = 0) -> None:
    self._write({"event": "finish", "exit_code": exit_code})
    self._mirror.close()
    if self.run is not None:
      self.run.finish(exit_code=exit_code)
      self.run = None


def read_mirror(run_dir: str | os.PathLike) -> list[dict]:
  """The records a Tracker mirrored in ``run_dir``."""
  path = pathlib.Path(run_dir) / "tracking.jsonl"
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
