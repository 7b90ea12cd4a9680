"""Runs a benchmark protocol (conf/benchmark/<name>.yaml): every searched and baseline job, then the report.

  python -m experiments.benchmark fashion                 # the full protocol; run it again to resume
  python -m experiments.benchmark fashion --quick         # its quick variant
  python -m experiments.benchmark fashion --workers 2 --out benchmarks/my-run

Each job is one ``python -m experiments.search`` run in its own folder under the output folder, with its
checkpoints under ``<out>/checkpoints``. The ``--workers`` run in long-lived processes (``experiments.jobpool``)
that take one job after another, sharing imports, data and compiled programs (``--process-per-job``: a process of
its own for every job, as before; the results are the same bit for bit). A job with a ``result.json`` is done and
skipped, an interrupted job resumes from its last checkpoint. Baselines do not depend on the target (their
result.json holds their cost on every preset), so one set of baselines serves every comparison; with
``baselines.cheapest`` they include, for each comparison, the uniform networks at its target's cheapest precision
per MAC (experiments.benchmark_cheapest prices every pair with the target's cost model before any job).
``protocol.json`` lists the jobs; ``experiments.benchmark_report`` turns the folder into report.md, report.json and
one PNG per comparison.
The exit status is non-zero when a job failed (the report lists it).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import pathlib
import subprocess
import sys
import threading
import time
from typing import Sequence

from omegaconf import OmegaConf

from experiments import benchmark_report
from experiments.benchmark_cheapest import FAMILY as CHEAPEST, check_option, cheapest_table
from experiments.config import BUDGET_METRICS
from experiments.jobpool import ROOT, WorkerPool
from experiments.preflight import unwritable
from experiments.search import write_json_atomic
from nas import allocator, runtime

CONF_DIR = pathlib.Path(__file__).resolve().parent.parent / "conf" / "benchmark"
SAME_TOTAL = benchmark_report.SAME_TOTAL  # family of the baselines trained for search + fine-tuning steps


def load_protocol(name: str, quick: bool, extra: Sequence[str] = ()) -> dict:
  """The protocol's YAML (a name in conf/benchmark/ or a path) as a dict, with its ``quick`` section applied
  when asked and ``extra`` Hydra overrides added to every job."""
  path = pathlib.Path(name) if name.endswith((".yaml", ".yml")) else CONF_DIR / f"{name}.yaml"
  if not path.is_file():
    known = sorted(p.stem for p in CONF_DIR.glob("*.yaml"))
    raise ValueError(f"benchmark {name!r} is unknown; use one of {known} (conf/benchmark/<name>.yaml).")
  from hardware.check import PresetError, read_yaml
  try:
    spec = OmegaConf.to_container(read_yaml(str(path), "protocol"), resolve=True)
  except PresetError as e:
    raise ValueError(str(e)) from None
  if not isinstance(spec, dict):
    raise ValueError(f"protocol {path} is not a mapping of settings; write it like conf/benchmark/fashion.yaml.")
  quick_part = spec.pop("quick", None) or {}
  if quick:
    spec.update(quick_part)
  spec.setdefault("name", path.stem)
  spec["variant"] = "quick" if quick else "full"
  spec["common"] = list(spec.get("common") or []) + list(extra)
  check_protocol(spec, path)
  return spec


# What each key of a protocol must hold, for the sentence that names a missing or wrong one.
PROTOCOL_KEYS = {
    "seeds": "a non-empty list of integer seeds, e.g. `seeds: [0, 1, 2]`",
    "steps": "a mapping with search, finetune and baseline steps, e.g. `steps: {search: 800, finetune: 3000, "
             "baseline: 3000}`",
    "comparisons": "a non-empty list of comparisons, each with target, metric, budgets, default and families",
    "baselines": "a mapping of the baseline families (uniform, pruned, cheapest, random, same_total), e.g. "
                 "`baselines: {}`",
}
COMPARISON_KEYS = ("target", "metric", "budgets", "default", "families")


def check_protocol(spec: dict, path) -> None:
  """One sentence naming the first key of the protocol at ``path`` that is missing or of the wrong kind."""
  where = f"protocol {path}" + (" (its quick variant)" if spec.get("variant") == "quick" else "")
  for key, what in PROTOCOL_KEYS.items():
    value = spec.get(key)
    ok = {"seeds": lambda v: isinstance(v, list) and v and all(isinstance(x, int) and x >= 0 for x in v),
          "steps": lambda v: isinstance(v, dict) and all(k in v for k in ("search", "finetune", "baseline")),
          "comparisons": lambda v: isinstance(v, list) and v and all(isinstance(c, dict) for c in v),
          "baselines": lambda v: isinstance(v, dict)}[key](value)
    if not ok:
      state = "has no" if key not in spec else f"has {key}={value!r} for"
      raise ValueError(f"{where} {state} `{key}`: it must be {what} (see conf/benchmark/fashion.yaml).")
  for i, comp in enumerate(spec["comparisons"]):
    missing = [k for k in COMPARISON_KEYS if k not in comp]
    if missing:
      raise ValueError(f"{where}: comparisons[{i}] has no `{missing[0]}`; each comparison needs "
                       f"{', '.join(COMPARISON_KEYS)} (see conf/benchmark/fashion.yaml).")
    if comp["metric"] not in BUDGET_METRICS:
      raise ValueError(f"{where}: comparisons[{i}].metric={comp['metric']!r} is unknown; use one of "
                       f"{sorted(BUDGET_METRICS)}.")
  if spec["baselines"].get("cheapest") is not None:
    check_option(spec["baselines"]["cheapest"], where)


def plan_jobs(spec: dict, cheapest: list[dict] | None = None) -> list[dict]:
  """Every job of the protocol: manifest entry (for the report) plus the Hydra overrides that run it.

  Args:
    spec: the protocol (``load_protocol``).
    cheapest: its ``benchmark_cheapest.cheapest_table`` when already computed (None: computed here, where the
      protocol has ``baselines.cheapest``).
  """
  seeds = list(spec["seeds"])
  steps = spec["steps"]
  common = list(spec.get("common", [])) + [f"search.steps={steps['search']}", f"finetune.steps={steps['finetune']}"]
  jobs = []
  for comp in spec["comparisons"]:
    metric = BUDGET_METRICS[comp["metric"]]
    for family, fam in comp["families"].items():
      for seed in seeds[:fam.get("seeds", len(seeds))]:
        for budget in fam.get("budgets", comp["budgets"]):
          jobs.append({
              "dir": f"search/{family}-{comp['target']}-{metric}-b{budget:g}-s{seed}", "role": "searched",
              "family": family, "seed": seed, "target": comp["target"], "metric": metric, "budget": budget,
              "overrides": common + list(fam.get("overrides", [])) + [
                  f"hardware={comp['target']}", f"budget.metric={comp['metric']}", f"budget.fraction={budget}",
                  f"seed={seed}"]})
  jobs += _baseline_jobs(spec, common, cheapest_table(spec) if cheapest is None else cheapest)
  # Seed by seed, so that an interrupted protocol has whole seeds to report: the baselines, then the default
  # search of each comparison, then the other search variants.
  defaults = {(c["target"], c["default"]) for c in spec["comparisons"]}
  rank = lambda j: 0 if j["role"] == "baseline" else 1 if (j.get("target"), j["family"]) in defaults else 2
  return sorted(jobs, key=lambda j: (j["seed"], rank(j)))


def _baseline_jobs(spec: dict, common: list[str], cheapest: list[dict] | None) -> list[dict]:
  """The baseline jobs of every seed: uniform, uniformly pruned, random, same total steps, and the uniform
  networks at each target's cheapest precision per MAC (``cheapest``: benchmark_cheapest.cheapest_table) that
  no other list already has (a job is its folder, named by its overrides)."""
  base, steps, jobs = spec["baselines"], spec["steps"], []
  # A baseline is trained once; its target only sets the budget-free bookkeeping (its cost is on every preset).
  target = spec["comparisons"][0]["target"]
  for seed in spec["seeds"]:
    def add(family, config, name, overrides, n_steps=steps["baseline"], **extra):
      jobs.append({"dir": f"baseline/{name}-s{seed}", "role": "baseline", "family": family, "config": config,
                   "seed": seed, "steps": n_steps, **extra,
                   "overrides": common + overrides + [f"baseline.steps={n_steps}", f"hardware={target}",
                                                      f"seed={seed}"]})

    def uniform_job(w, a, width):
      return ["baseline.kind=uniform", f"baseline.w_bits={w}", f"baseline.a_bits={a}", f"baseline.width_mult={width}"]
    uniform = base.get("uniform") or {}
    for w, a in uniform.get("pairs", []):
      width = float(uniform.get("width", 1.0))
      for nm in uniform.get("nm") or [None]:  # N:M patterns of the weights ("2:4"; None: dense)
        tag, label = ("", "") if nm is None else (f"-nm{str(nm).replace(':', 'of')}", f" {nm}")
        add("uniform", f"W{w}A{a}{label}", f"uniform-w{w}a{a}-x{width:g}{tag}",
            uniform_job(w, a, width) + ([] if nm is None else [f"baseline.nm='{nm}'"]))
    pruned = base.get("pruned") or {}
    for w, a in pruned.get("pairs", []):
      for width in pruned.get("widths", []):
        add("uniform-pruned", f"W{w}A{a} ×{width:g}", f"uniform-w{w}a{a}-x{width:g}", uniform_job(w, a, width))
    for (w, a), width, targets in cheapest_configs(cheapest):
      same = next((j for j in jobs if j["dir"] == f"baseline/uniform-w{w}a{a}-x{width:g}-s{seed}"), None)
      if same is not None:  # already a baseline: it is marked, not run twice
        same["cheapest_for"] = targets
      else:
        add(CHEAPEST, f"W{w}A{a} ×{width:g}", f"uniform-w{w}a{a}-x{width:g}", uniform_job(w, a, width),
            cheapest_for=targets)
    for k in range(int(base.get("random", 0))):
      add("random", f"random #{k}", f"random-r{k}", ["baseline.kind=random", f"baseline.arch_seed={k}"])
    # The same uniform networks trained for the searched network's total steps (search + fine-tuning, or the
    # protocol's steps.same_total where the default search shares its steps over budgets): the "same total
    # compute" framing, kept apart as their own family.
    total = same_total_steps(steps)
    for w, a, width in (base.get("same_total") or {}).get("configs", []):
      add(SAME_TOTAL, f"W{w}A{a}" + ("" if float(width) == 1.0 else f" ×{float(width):g}"),
          f"total-uniform-w{w}a{a}-x{float(width):g}", uniform_job(w, a, float(width)), n_steps=total)
  return jobs


def cheapest_configs(cheapest: list[dict] | None) -> list[tuple[tuple[int, int], float, list[str]]]:
  """The distinct (pair, width) of the cheapest-precision baselines, each with the "target/metric" of the
  comparisons it is cheapest for (two targets with the same pair share its jobs)."""
  out: dict[tuple, list[str]] = {}
  for entry in cheapest or []:
    for width in entry["widths"]:
      out.setdefault((tuple(entry["pair"]), float(width)), []).append(f"{entry['target']}/{entry['metric']}")
  return [(pair, width, targets) for (pair, width), targets in out.items()]


def same_total_steps(steps: dict) -> int:
  """Training steps of the 'same total steps' baselines: ``steps.same_total`` when set, else search + fine-tuning."""
  total = steps.get("same_total", steps["search"] + steps["finetune"])
  if not isinstance(total, int) or total < 1:
    raise ValueError(f"steps.same_total must be a positive integer of training steps, got {total!r}.")
  return total


def manifest(spec: dict, jobs: list[dict], cheapest: list[dict] | None = None) -> dict:
  """protocol.json: the protocol's name, steps and comparisons, its jobs and, where it has
  ``baselines.cheapest``, each comparison's cheapest precision per MAC with every pair's cost per MAC."""
  steps = spec["steps"]
  cheapest = cheapest_table(spec) if cheapest is None else cheapest
  return {
      "name": spec["name"], "variant": spec["variant"], "dataset": _override(spec, "dataset"),
      "model": _override(spec, "model"),
      "steps": {"search": steps["search"], "finetune": steps["finetune"],
                "baseline": steps["baseline"], "same_total": same_total_steps(steps)},
      "comparisons": [{"target": c["target"], "metric": BUDGET_METRICS[c["metric"]], "default": c["default"]}
                      for c in spec["comparisons"]],
      **({"cheapest": cheapest} if cheapest else {}),
      "jobs": jobs}


def _override(spec: dict, key: str) -> str | None:
  """The protocol's choice of a config group (``dataset``, ``model``), else the search app's default."""
  for o in spec.get("common", []):
    if o.startswith(f"{key}="):
      return o.split("=", 1)[1]
  defaults = OmegaConf.to_container(OmegaConf.load(CONF_DIR.parent / "config.yaml")).get("defaults", [])
  return next((d[key] for d in defaults if isinstance(d, dict) and key in d), None)


def run_job(job: dict, out: pathlib.Path, python: str, jobs_at_once: int = 1, pool: WorkerPool | None = None) -> dict:
  """One experiments.search run in ``out/job['dir']``; its output goes to log.txt there. ``jobs_at_once``: the
  workers, which decide the job's XLA convolution kernels (``nas.runtime.job_environment``). With ``pool`` the
  job runs in one of its long-lived worker processes (``experiments.jobpool``), else in a process of its own."""
  folder = out / job["dir"]
  folder.mkdir(parents=True, exist_ok=True)
  argv = [*job["overrides"], f"hydra.run.dir={folder}", f"checkpoint.dir={out / 'checkpoints'}",
          "hydra.output_subdir=.hydra"]
  cmd = [python, "-m", "experiments.search", *argv]
  t0 = time.time()
  (folder / "log.txt").write_text(" ".join(cmd) + "\n")
  if pool is not None:
    rc = pool.run(argv, folder / "log.txt")
  else:
    with open(folder / "log.txt", "a") as log:
      rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=job_env(jobs_at_once), cwd=ROOT).returncode
  if rc != 0 and not (folder / "error.json").exists():
    write_json_atomic(folder / "error.json", {"error": f"exit status {rc}; see {folder / 'log.txt'}",
                                              "type": "JobFailed"})
  return {"rc": rc, "seconds": time.time() - t0}


def job_env(jobs_at_once: int) -> dict:
  """A job's environment: XLA's convolution kernels for ``jobs_at_once`` jobs sharing the cores, the caching
  allocator where one is installed, wandb off unless WANDB_MODE says otherwise."""
  env = allocator.environment(runtime.job_environment(os.environ, jobs_at_once))  # nas/allocator.py
  return dict(env, WANDB_MODE=os.environ.get("WANDB_MODE", "disabled"))


def preflight(jobs: list[dict], out: pathlib.Path, python: str, pool: WorkerPool | None = None) -> str | None:
  """Runs the first searched and the first baseline job shrunk to seconds (debug=true, no checkpoints) so
  that bad input (a missing dataset, a typo in an override) stops the protocol before hours of work; returns
  the error, or None. With ``pool`` both run at once in its workers (which then hold the imports and the
  programs the real jobs share); else one after the other, each in a process of its own."""
  firsts = [j for j in (next((j for j in jobs if j["role"] == role), None) for role in ("searched", "baseline")) if j]

  def check(job):
    folder = out / ".preflight" / job["role"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "error.json").unlink(missing_ok=True)
    argv = [*job["overrides"], "debug=true", "checkpoint.dir=null", "wandb.mode=disabled", f"hydra.run.dir={folder}"]
    if pool is not None:
      rc = pool.run(argv, folder / "log.txt")
      lines = (folder / "log.txt").read_text(errors="replace").strip().splitlines()
    else:
      proc = subprocess.run([python, "-m", "experiments.search", *argv], capture_output=True, text=True,
                            env=dict(os.environ, WANDB_MODE="disabled"), cwd=ROOT)
      rc, lines = proc.returncode, proc.stderr.strip().splitlines()
    if rc == 0:
      return None
    try:
      return json.loads((folder / "error.json").read_text())["error"]
    except (OSError, ValueError, KeyError):
      return (lines or [f"exit status {rc}"])[-1]

  if pool is not None and pool.size > 1:
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(firsts)) as threads:
      return next((e for e in threads.map(check, firsts) if e), None)
  for job in firsts:  # one after the other: the first error stops it
    error = check(job)
    if error:
      return error
  return None


RUN_SPECIFIC = ("hydra.run.dir=", "checkpoint.dir=", "hydra.output_subdir=")


def check_done_jobs(jobs: Sequence[dict], out: pathlib.Path) -> None:
  """A finished job counts as done only if it ran this protocol's overrides (its ``.hydra/overrides.yaml``; a
  folder without one, such as a trimmed published run, is taken as it is): a protocol edited since (another
  recipe, another step count) would otherwise mix old and new results in one report.

  Raises:
    ValueError: naming the first such job, what differs and the fix, before any job runs.
  """
  import yaml
  for job in jobs:
    path = out / job["dir"] / ".hydra" / "overrides.yaml"
    if not ((out / job["dir"] / "result.json").exists() and path.is_file()):
      continue
    try:
      ran = [o for o in (yaml.safe_load(path.read_text()) or []) if not str(o).startswith(RUN_SPECIFIC)]
    except yaml.YAMLError:
      continue  # a damaged record says nothing either way
    if sorted(map(str, ran)) != sorted(map(str, job["overrides"])):
      added = sorted(set(map(str, job["overrides"])) - set(map(str, ran)))
      dropped = sorted(set(map(str, ran)) - set(map(str, job["overrides"])))
      raise ValueError(f"{out / job['dir']} finished with other overrides than the protocol now gives it "
                       f"(now also {added or 'nothing'}; no longer {dropped or 'nothing'}): resuming would mix two "
                       f"recipes in one report. Run the edited protocol into a new folder (--out), or move that "
                       f"folder's finished jobs away to rerun them.")


def run_protocol(spec: dict, out: pathlib.Path, workers: int = 1, python: str = sys.executable,
                 check_first: bool = True, process_per_job: bool = False) -> int:
  """Runs the jobs not done yet, then writes the report; returns the number of failed jobs.

  Raises:
    ValueError: the first jobs fail in a seconds-long debug run (nothing is started then).
  """
  cheapest = cheapest_table(spec)  # prices every pair on each target once (a second or two per target)
  jobs = plan_jobs(spec, cheapest)
  out.mkdir(parents=True, exist_ok=True)
  check_done_jobs(jobs, out)
  todo = [j for j in jobs if not (out / j["dir"] / "result.json").exists()]
  jobs_at_once = min(workers, len(todo))
  # Workers run jobs concurrently, one process each, so that XLA's thread pools share the cores (and a job
  # that shares them keeps YNNPACK's one-thread convolutions: nas.runtime.job_environment). Each worker process
  # runs its jobs one after another (experiments.jobpool), sharing imports, data and compiled programs; with
  # process_per_job every job starts a process of its own.
  pool = None if process_per_job or not todo else WorkerPool(jobs_at_once, job_env(jobs_at_once), out / ".workers",
                                                              python)
  with pool if pool is not None else contextlib.nullcontext():  # on an exception (Ctrl-C included) the workers
    # stop their jobs, which keep their checkpoints
    if todo and check_first:
      print(f"{spec['name']} ({spec['variant']}): preflight, the first searched and baseline jobs shrunk to a debug "
            f"run (compiling them takes a minute or two)", flush=True)
      error = preflight(todo, out, python, pool)
      if error:
        raise ValueError(f"the protocol's first job fails before any work: {error}")
    write_json_atomic(out / "protocol.json", manifest(spec, jobs, cheapest))
    for j in todo:  # a previous failure is retried
      (out / j["dir"] / "error.json").unlink(missing_ok=True)
    print(f"{spec['name']} ({spec['variant']}): {len(jobs)} jobs, {len(jobs) - len(todo)} already done, "
          f"{len(todo)} to run with {workers} worker(s) -> {out}", flush=True)
    lock, done, failed, t_start = threading.Lock(), [0], [], time.time()

    def one(job):
      res = run_job(job, out, python, jobs_at_once=jobs_at_once, pool=pool)
      with lock:
        done[0] += 1
        elapsed = time.time() - t_start
        eta = elapsed / done[0] * (len(todo) - done[0])
        status = "failed" if res["rc"] else _accuracy_text(out / job["dir"])
        if res["rc"]:
          failed.append(job["dir"])
        print(f"[{done[0]}/{len(todo)}] {job['dir']}: {status} in {res['seconds']:.0f} s "
              f"(elapsed {elapsed / 60:.1f} min, about {eta / 60:.0f} min left)", flush=True)

    threads = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers))
    try:
      for f in concurrent.futures.as_completed([threads.submit(one, j) for j in todo]):
        f.result()
    except BaseException:  # Ctrl-C or a bug: no further job starts
      threads.shutdown(wait=False, cancel_futures=True)
      raise
    threads.shutdown()
    report = benchmark_report.build_report(out)
    paths = benchmark_report.write_report(out, report)
    print(f"report: {paths[0]}", flush=True)
    if failed:
      print(f"{len(failed)} job(s) failed: {', '.join(failed)} (error.json and log.txt in each folder); "
            f"run the same command again to retry them.", file=sys.stderr)
    return len(failed)


def _accuracy_text(folder: pathlib.Path) -> str:
  try:
    return f"accuracy {json.loads((folder / 'result.json').read_text())['accuracy']:.4f}"
  except (OSError, ValueError, KeyError):
    return "done"


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m experiments.benchmark", description=__doc__.split("\n")[0])
  parser.add_argument("name", help="a protocol in conf/benchmark/, e.g. fashion")
  parser.add_argument("--quick", action="store_true", help="the protocol's quick variant (fewer budgets, one seed)")
  parser.add_argument("--out", help="output folder (default benchmarks/<name>-<variant>)")
  parser.add_argument("--workers", type=int, default=1, help="jobs run at once (default 1)")
  parser.add_argument("--no-preflight", action="store_true",
                      help="skip the seconds-long debug run of the first jobs that checks the input first")
  parser.add_argument("--process-per-job", action="store_true",
                      help="start a process for every job instead of running each worker's jobs in one process")
  parser.add_argument("--set", action="append", default=[], metavar="OVERRIDE",
                      help="a Hydra override added to every job, e.g. --set dataset.root=/data/fmnist")
  args = parser.parse_args(argv)
  if args.workers < 1:
    print(f"error: --workers={args.workers} must be >= 1.", file=sys.stderr)
    return 2
  try:
    spec = load_protocol(args.name, args.quick, args.set)
    out = pathlib.Path(args.out or f"benchmarks/{spec['name']}-{spec['variant']}")
    reason = unwritable(out)
    if reason:
      raise ValueError(f"the output folder {out} cannot be written ({reason}); choose another with --out, or make "
                       f"it writable.")
    failed = run_protocol(spec, out, args.workers, check_first=not args.no_preflight,
                          process_per_job=args.process_per_job)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print("interrupted: the finished jobs are kept and the stopped ones resume from their last checkpoint; run "
          "the same command again to go on.", file=sys.stderr)
    return 130
  except OSError as e:  # the output folder filled up or went away: finished jobs are kept, rerun resumes
    print(f"error: cannot write {e.filename or out} ({e.strerror or e}); free space or choose another --out, then "
          f"run the same command again (finished jobs are kept).", file=sys.stderr)
    return 2
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
