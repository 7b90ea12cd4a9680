"""Where one search job (``experiments.search``) spends its wall time, by phase.

  python -m experiments.profile_job -- dataset=fashion_mnist model=fmnist_cnn "model.args.skip=[]" \\
      baseline.kind=uniform baseline.w_bits=4 baseline.a_bits=4 baseline.steps=300 checkpoint.dir=null \\
      wandb.mode=disabled
  python -m experiments.profile_job --json prof.json --cprofile prof.out -- <the same Hydra overrides>

The job runs as ``python -m experiments.search`` runs it (Hydra app, same overrides), with the pipeline's
functions wrapped in timers: imports, data loading, model building, cost tables, calibration, the training
loops (shared supernet, search, fine-tuning; their compilation, batch preparation, steps, evaluation and
checkpoints apart) and the writing of results. It prints the table, then compilation by stage and by function.
Compilation is JAX's own measure (tracing, lowering to MLIR, XLA compilation or a persistent-cache read:
``jax.monitoring`` duration events) and is taken out of the phase it happened in. Steps are dispatched
asynchronously, but on the CPU client the next batch's host-to-device transfer (``jnp.asarray`` in
``DataParallel.batch``) waits for the running step: that row is step computation too. What is left
is "other" (Hydra, config validation, the tracker, Python between phases).
"""
from __future__ import annotations

if __name__ == "__main__":  # first, before the heavy imports: restart on a caching allocator
  from nas import allocator as _allocator  # where one is installed (nas/allocator.py)
  _allocator.reexec()

import time

T_START = time.perf_counter()

import contextlib  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402

COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")


class Phases:
  """Exclusive wall time per phase: a phase entered inside another is taken out of the outer one, and
  compilation (reported by JAX's monitoring events) out of whichever phase it happened in."""

  def __init__(self):
    self.seconds: dict[str, float] = {}
    self.stack: list[list] = []  # [name, start, time taken out by inner phases]
    self.compile_counts = 0
    self.compile_kinds: dict[str, float] = {}  # tracing, lowering to MLIR, XLA compilation (or cache read)
    self.compile_funs: dict[str, float] = {}  # per jitted function (or eager primitive)

  def add(self, name: str, seconds: float) -> None:
    self.seconds[name] = self.seconds.get(name, 0.0) + seconds

  @contextlib.contextmanager
  def phase(self, name: str):
    entry = [name, time.perf_counter(), 0.0]
    self.stack.append(entry)
    try:
      yield
    finally:
      self.stack.pop()
      total = time.perf_counter() - entry[1]
      self.add(name, total - entry[2])
      if self.stack:
        self.stack[-1][2] += total

  def on_event(self, event: str, duration: float, fun_name: str = "?", **_) -> None:
    if event not in COMPILE_EVENTS:
      return
    self.compile_counts += event == COMPILE_EVENTS[-1]
    kind = event.rsplit("/", 1)[-1].replace("_duration", "")
    self.compile_kinds[kind] = self.compile_kinds.get(kind, 0.0) + duration
    self.compile_funs[fun_name] = self.compile_funs.get(fun_name, 0.0) + duration
    self.add("compilation", duration)
    if self.stack:
      self.stack[-1][2] += duration

  def current(self) -> str:
    return self.stack[-1][0] if self.stack else "other"

  def wrap(self, obj, attr: str, name) -> None:
    """Times ``obj.attr`` as phase ``name`` (or ``name()``, decided at each call)."""
    fn = getattr(obj, attr)

    @functools.wraps(fn)
    def timed(*args, **kwargs):
      with self.phase(name() if callable(name) else name):
        return fn(*args, **kwargs)
    setattr(obj, attr, timed)

  def wrap_stream(self, obj, attr: str, name: str) -> None:
    """A generator function whose every ``next`` is timed as ``name`` (the mini-batch stream)."""
    fn = getattr(obj, attr)
    phases = self

    @functools.wraps(fn)
    def timed(*args, **kwargs):
      it = fn(*args, **kwargs)
      while True:
        with phases.phase(name):
          item = next(it)
        yield item
    setattr(obj, attr, timed)


def instrument(phases: Phases) -> None:
  """Wraps the pipeline's functions where ``experiments.search`` and ``nas.train.finetune`` look them up."""
  import jax
  from experiments import search as app
  from nas.search import loop
  from nas.train import checkpoint, finetune
  jax.monitoring.register_event_duration_secs_listener(phases.on_event)
  for attr, name in [("load_dataset", "data loading"), ("build_model", "model building"),
                     ("baseline_choices", "model building"), ("_budgets", "cost tables and budget"),
                     ("all_presets", "cost tables and budget"), ("costs_everywhere", "results (cost, json, network)"),
                     ("save_network", "results (cost, json, network)"), ("write_json_atomic", "results (cost, json, network)"),
                     ("calibrate", "calibration"), ("inherit_weights", "model building"),
                     ("finetune", "steps: fine-tuning"), ("search", "steps: search"),
                     ("train_supernet", "steps: shared supernet"),
                     ("evaluate", "evaluation")]:
    phases.wrap(app, attr, name)
  phases.wrap(app.costlib, "build_cost_tables", "cost tables and budget")
  for mod in (finetune, loop):
    if hasattr(mod, "evaluate"):
      phases.wrap(mod, "evaluate", "evaluation")
    if hasattr(mod, "batches"):
      phases.wrap_stream(mod, "batches", "batches (numpy, host)")
  phases.wrap(checkpoint.LoopCheckpointer, "maybe_save", "checkpoints")
  phases.wrap(checkpoint.LoopCheckpointer, "restore", "checkpoints")
  phases.wrap(checkpoint.LoopCheckpointer, "close", "checkpoints")
  # The loop's device transfer of each batch (DataParallel.batch): host -> device.
  from nas.train import parallel
  phases.wrap(parallel.DataParallel, "batch", lambda: f"{phases.current()}: wait in the next batch's transfer")


def table(phases: Phases, wall: float) -> list[dict]:
  rows = dict(phases.seconds)
  rows["other (Hydra, config, tracker, Python)"] = wall - sum(rows.values())
  loops = [f"steps: {n}{w}" for n in ("shared supernet", "search", "fine-tuning")
           for w in ("", ": wait in the next batch's transfer")]
  order = ["imports", "data loading", "model building", "cost tables and budget", "calibration", "compilation",
           "batches (numpy, host)", *loops, "evaluation", "checkpoints", "results (cost, json, network)",
           "other (Hydra, config, tracker, Python)"]
  out = [{"phase": k, "seconds": rows.get(k, 0.0), "share": rows.get(k, 0.0) / wall} for k in order if k in rows]
  out += [{"phase": k, "seconds": v, "share": v / wall} for k, v in rows.items() if k not in order]
  return out


def main(argv=None) -> list[dict]:
  argv = list(sys.argv[1:] if argv is None else argv)
  opts, overrides = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else ([], argv)
  out_json = opts[opts.index("--json") + 1] if "--json" in opts else None
  out_prof = opts[opts.index("--cprofile") + 1] if "--cprofile" in opts else None
  phases = Phases()
  t0 = time.perf_counter()
  from experiments import search as app  # noqa: F401  (jax, flax, optax, hydra, the models, the cost models)
  phases.add("imports", time.perf_counter() - t0 + (t0 - T_START))
  instrument(phases)
  # Hydra finds conf/ from the calling file under `python -m experiments.search`; from here, name it.
  sys.argv = ["experiments.search", "--config-path", str(app.CONF_DIR), *overrides]
  profiler = None
  if out_prof:
    import cProfile
    profiler = cProfile.Profile()
    profiler.enable()
  try:
    app.main()
  except SystemExit as e:
    if e.code not in (0, None):
      raise
  finally:
    if profiler is not None:
      profiler.disable()
      profiler.dump_stats(out_prof)
  wall = time.perf_counter() - T_START
  rows = table(phases, wall)
  print(f"\n{'phase':<58} {'seconds':>8} {'share':>7}")
  for r in rows:
    print(f"{r['phase']:<58} {r['seconds']:>8.2f} {100 * r['share']:>6.1f}%")
  print(f"{'total (process wall time)':<58} {wall:>8.2f}  ({phases.compile_counts} XLA compilations or cache reads)")
  print("compilation by stage: " + ", ".join(f"{k} {v:.2f} s" for k, v in phases.compile_kinds.items()))
  top = sorted(phases.compile_funs.items(), key=lambda kv: -kv[1])
  print("compilation by function: " + ", ".join(f"{k} {v:.2f} s" for k, v in top[:8])
        + f", {len(top) - 8} others {sum(v for _, v in top[8:]):.2f} s" * (len(top) > 8))
  if out_json:
    with open(out_json, "w") as f:
      json.dump({"argv": overrides, "wall_s": wall, "compilations": phases.compile_counts, "rows": rows,
                 "compile_stages": phases.compile_kinds, "compile_functions": dict(top)}, f, indent=1)
  return rows


if __name__ == "__main__":
  main()
