"""Per-step Python overhead: the loops' staged step against ``nnx.cached_partial``, timed alternately in one run.

  python -m experiments.bench_dispatch                          # fmnist_cnn, resnet20 and the ViT, batch 64
  python -m experiments.bench_dispatch --models fmnist_cnn --iters 300

For each model, two steps as the loops run them, each built twice on identical copies of the network:
``finetune``: the fine-tuning step of the plain network (the widest network of the space at 8 bits, as
``experiments.bench`` builds it); ``search``: the supernet's search step. One copy is stepped by
``nnx.cached_partial`` (``nnx.jit``'s graph traversal cached; the state still rebuilt and written back at each
call), the other by ``nas.train.staged.StagedStep`` (one ``jax.jit`` of the flat state). "speed-up" is the
median ratio of adjacent blocks, cached_partial / staged: above 1, the staged step is faster.
"""
from __future__ import annotations

if __name__ == "__main__":  # first, before the heavy imports: restart on a caching allocator
  from nas import allocator as _allocator  # where one is installed (nas/allocator.py)
  _allocator.reexec()

import argparse
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from hydra.utils import instantiate
from omegaconf import OmegaConf

from experiments.bench import ROOT, _block_times, widest_value
from nas.models import build_model, default_input_shape
from nas.models.space import SearchSpace
from nas.search import cost as costlib
from nas.search import loop as searchlib
from nas.train import finetune as trainlib
from nas.train.staged import StagedStep


def _steps(name: str, batch: int, hardware: str):
  """{kind: (build() -> (objects, args, static kwargs), step function, static names)}."""
  shape = default_input_shape(name)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(batch, *shape)).astype(np.float32))
  y = jnp.asarray(rng.integers(0, 10, size=batch).astype(np.int32))
  kwargs = dict(input_shape=shape, num_classes=10)
  space = SearchSpace(method="gumbel")
  hw = instantiate(OmegaConf.load(ROOT / "conf" / "hardware" / f"{hardware}.yaml"), _convert_="all")

  def finetune():
    probe = build_model(name, space, **kwargs)
    widest = {n: widest_value(n, c) for n, c in probe.choices.items()}
    model = build_model(name, space, arch=probe.architecture(widest), **kwargs)
    trainlib.calibrate(model, x, mode="argmax")
    opt = trainlib.weights_optimizer(model, 1e-3, 1e-4)
    model.train()
    return (model, opt), (x, y, jax.random.key(0)), {"augment": False}

  def search():
    model = build_model(name, space, **kwargs)
    tables = costlib.build_cost_tables(model, hw)
    config = searchlib.step_config(tables, [searchlib.Constraint("latency_s", 1e9)],
                                   searchlib.SearchConfig(penalty="lagrange", target_rho=10.0, dual_lr=0.05))
    trainlib.calibrate(model, x, mode="expected")
    w_opt = trainlib.weights_optimizer(model, 1e-3, 1e-4)
    a_opt = searchlib.arch_optimizer(model, 1e-2)
    model.train()
    inputs = searchlib.StepInputs(x=x, y=y, key=jax.random.key(0), tau=jnp.float32(1.0),
                                  arch_on=jnp.float32(1.0), entropy_weight=jnp.float32(0.3))
    return (model, w_opt, a_opt), (jnp.zeros((1,), jnp.float32), inputs, config), {}

  return {"finetune": (finetune, trainlib._train_step, ("augment",)),
          "search": (search, searchlib._search_step, ())}


def bench_model(name: str, batch: int, iters: int, hardware: str) -> list[dict]:
  rows = []
  for kind, (build, fn, static) in _steps(name, batch, hardware).items():
    objs_a, args, kw = build()
    cached = nnx.cached_partial(fn, *objs_a)
    objs_b, _, _ = build()
    staged = StagedStep(fn, *objs_b, static_argnames=static)
    t_cached, t_staged = _block_times([lambda: cached(*args, **kw)[0], lambda: staged(*args, **kw)[0]], iters)
    rows.append({"model": name, "step": kind, "batch": batch, "cached_partial_s": float(np.median(t_cached)),
                 "staged_s": float(np.median(t_staged)), "speedup": float(np.median(t_cached / t_staged))})
  return rows


def main(argv=None) -> list[dict]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", nargs="+", default=["fmnist_cnn", "resnet20", "vit"])
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--iters", type=int, default=None, help="steps timed per side (default: 200, 20 for resnet20)")
  parser.add_argument("--hardware", default="riscv")
  parser.add_argument("--out", default=None, help="write the rows as JSON here")
  args = parser.parse_args(argv)
  rows = []
  print(f"{'model':<12} {'step':<9} {'cached_partial ms':>18} {'staged ms':>10} {'speed-up':>9}")
  for name in args.models:
    iters = args.iters or (20 if name == "resnet20" else 200)
    for r in bench_model(name, args.batch, iters, args.hardware):
      rows.append(r)
      print(f"{r['model']:<12} {r['step']:<9} {r['cached_partial_s'] * 1e3:>18.2f} {r['staged_s'] * 1e3:>10.2f} "
            f"{r['speedup']:>9.3f}", flush=True)
  if args.out:
    pathlib.Path(args.out).write_text(json.dumps(rows, indent=1))
  return rows


if __name__ == "__main__":
  main()
