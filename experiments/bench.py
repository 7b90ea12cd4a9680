"""Search cost benchmark: supernet step time / plain QAT step time, measured in one run on this machine.

  python -m experiments.bench                          # digits CNN and ResNet-20, batch 64
  python -m experiments.bench --models digits_cnn --batch 128 --iters 100
  python -m experiments.bench --models vit --iters 40  # the ViT for 28x28 images (heads, MLP, N:M, group bits)

"Plain" is the widest network of the space at 8 bits (dense weights where N:M is searched) (one candidate per choice: one quantisation per tensor,
no sampling, no cost term), trained with the same optimiser on the same batch. The supernet step samples
every choice, quantises at the drawn bit-widths (forward) while every candidate's weight gets its gradient
(backward), applies the width masks, adds the budget term and steps the architecture optimiser. Both steps
run as the training loops run them (``nas.train.staged.StagedStep``) and are timed alternately.
Also reported: the time of the expected-cost contraction alone, as a share of the supernet step.
"""
from __future__ import annotations

if __name__ == "__main__":  # first, before the heavy imports: restart on a caching allocator
  from nas import allocator as _allocator  # where one is installed (nas/allocator.py)
  _allocator.reexec()

import argparse
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
from hydra.utils import instantiate
from omegaconf import OmegaConf

from nas import allocator
from nas.search import cost as costlib
from nas.search import loop as searchlib  # StepInputs and the step itself
from nas.ops import sparsity
from nas.train import finetune as trainlib
from nas.train.staged import StagedStep
from nas.models import build_model, default_input_shape
from nas.models.space import SearchSpace

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Steps timed per network: a digits step takes a few ms and the ratio of 60 steps varied by +-0.04 between
# runs on 2 cores (by +-0.02 with 400); a ResNet-20 step takes most of a second on a CPU.
DEFAULT_ITERS = {"digits_cnn": 400}
FALLBACK_ITERS = 20


def _block_times(fns, iters: int, block: int = 10) -> list[np.ndarray]:
  """Seconds per call of each function, one entry per block of ``block`` calls.

  The functions run in turn, a block each, every block dispatched back to back and waited for once at its end,
  as the training loops run their steps (they wait only to log). Compilation is excluded (two warm-up calls).
  """
  for _ in range(2):
    for fn in fns:
      jax.block_until_ready(fn())
  times = [[] for _ in fns]
  for _ in range(max(1, -(-iters // block))):
    for fn, ts in zip(fns, times):
      jax.block_until_ready(fn())
      t0 = time.perf_counter()
      jax.block_until_ready([fn() for _ in range(block)])
      ts.append((time.perf_counter() - t0) / block)
  return [np.asarray(ts) for ts in times]


def _time_pair(fn_a, fn_b, iters: int) -> tuple[float, float, float]:
  """Median seconds per call of two functions timed in alternating blocks, and the ratio a / b as the median
  of the ratios of adjacent blocks, so that a change in the machine's load hits both alike."""
  a, b = _block_times([fn_a, fn_b], iters)
  return float(np.median(a)), float(np.median(b)), float(np.median(a / b))


def _time(fn, iters: int) -> float:
  return float(np.median(_block_times([fn], iters)[0]))


def widest_value(name: str, choice):
  """The plain network's value of a choice: the widest width or head count, 8 bits, dense weights."""
  if name.endswith((".width", ".heads")):
    return max(choice.values)
  if name.endswith(".nm"):
    return sparsity.DENSE
  return 8 if 8 in choice.values else max(choice.values)


def bench_model(name: str, batch: int, iters: int, method: str, hardware: str) -> dict:
  hw = instantiate(OmegaConf.load(ROOT / "conf" / "hardware" / f"{hardware}.yaml"), _convert_="all")
  shape = default_input_shape(name)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(batch, *shape)).astype(np.float32))
  y = jnp.asarray(rng.integers(0, 10, size=batch).astype(np.int32))
  kwargs = dict(input_shape=shape, num_classes=10)

  space = SearchSpace(method=method)
  supernet = build_model(name, space, **kwargs)
  tables = costlib.build_cost_tables(supernet, hw)
  arrays = costlib.table_arrays(tables, ("latency_s",))
  # a budget that is only an upper bound (no target term), never reached
  config = searchlib.step_config(tables, [searchlib.Constraint("latency_s", 1e9)],
                                 searchlib.SearchConfig(penalty="lagrange", target_rho=10.0, dual_lr=0.05))
  trainlib.calibrate(supernet, x, mode="expected")
  w_opt = trainlib.weights_optimizer(supernet, 1e-3, 1e-4)
  a_opt = searchlib.arch_optimizer(supernet, 1e-2)  # as nas.search.loop.search builds it
  lam = jnp.zeros((1,), jnp.float32)
  key = jax.random.key(0)

  supernet.train()
  search_step = StagedStep(searchlib._search_step, supernet, w_opt, a_opt)  # as nas.search.loop.search runs it

  def supernet_step():
    inputs = searchlib.StepInputs(x=x, y=y, key=key, tau=jnp.float32(1.0), arch_on=jnp.float32(1.0),
                                  entropy_weight=jnp.float32(0.3))
    return search_step(lam, inputs, config)[0]

  widest = {n: widest_value(n, c) for n, c in supernet.choices.items()}
  plain = build_model(name, space, arch=supernet.architecture(widest), **kwargs)
  trainlib.calibrate(plain, x, mode="argmax")
  p_opt = trainlib.weights_optimizer(plain, 1e-3, 1e-4)

  plain.train()
  train_step = StagedStep(trainlib._train_step, plain, p_opt, static_argnames=("augment",))  # as finetune runs it

  def plain_step():
    return train_step(x, y)[0]

  probs = supernet.probs()
  cost_fn = jax.jit(lambda arrays, probs: costlib.expected_costs(tables, arrays, probs)["latency_s"])

  t_super, t_plain, ratio = _time_pair(supernet_step, plain_step, iters)
  t_cost = _time(lambda: cost_fn(arrays, probs), iters * 5)
  return {"model": name, "method": method, "batch": batch, "device": jax.devices()[0].device_kind,
          "supernet_step_s": t_super, "plain_step_s": t_plain, "ratio": ratio,
          "expected_cost_s": t_cost, "expected_cost_share": t_cost / t_super}


def main(argv=None) -> list[dict]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", nargs="+", default=["digits_cnn", "resnet20"])
  parser.add_argument("--methods", nargs="+", default=["gumbel", "sdq"])
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--iters", type=int, default=None,
                      help=f"steps timed per network (default: {DEFAULT_ITERS}, else {FALLBACK_ITERS})")
  parser.add_argument("--hardware", default="riscv")
  parser.add_argument("--out", default=None, help="write the rows as JSON here")
  args = parser.parse_args(argv)
  rows = []
  print(f"allocator: {allocator.describe()}")
  print(f"{'model':<12} {'method':<7} {'batch':>5} {'supernet ms':>12} {'plain ms':>9} {'ratio':>6} "
        f"{'E[cost] us':>11} {'share':>7}")
  for name in args.models:
    for method in args.methods:
      r = bench_model(name, args.batch, args.iters or DEFAULT_ITERS.get(name, FALLBACK_ITERS), method,
                      args.hardware)
      rows.append(r)
      print(f"{r['model']:<12} {r['method']:<7} {r['batch']:>5} {r['supernet_step_s'] * 1e3:>12.2f} "
            f"{r['plain_step_s'] * 1e3:>9.2f} {r['ratio']:>6.2f} {r['expected_cost_s'] * 1e6:>11.1f} "
            f"{100 * r['expected_cost_share']:>6.2f}%", flush=True)
  if args.out:
    pathlib.Path(args.out).write_text(json.dumps(rows, indent=1))
  return rows


if __name__ == "__main__":
  main()
