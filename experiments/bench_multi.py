"""Steps per second of K fixed networks trained in one compiled step (``nas.train.multi``) against K separate
derived-network steps, on one CPU or GPU (docs/speed.md, section 3).

  python -m experiments.bench_multi [--model fmnist_cnn] [--ks 1 2 4 8]
"""
from __future__ import annotations

if __name__ == "__main__":  # first, before the heavy imports: restart on a caching allocator
  from nas import allocator as _allocator  # where one is installed (nas/allocator.py)
  _allocator.reexec()

import functools
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from experiments.bench import _block_times
from nas.ops.sparsity import DENSE
from nas.train import finetune as trainlib
from nas.train.multi import MODES, MultiTrainer, index_streams
from nas.train.staged import StagedStep


def _uniform_archs(supernet, k: int, width_mult: float = 1.0) -> list[dict]:
  """K uniform-precision networks at one width (the protocol's uniform baselines, bit pairs in turn)."""
  pairs = [(8, 8), (4, 4), (2, 2), (8, 4), (4, 8), (4, 2), (2, 4), (8, 2)]
  out = []
  for i in range(k):
    wb, ab = pairs[i % len(pairs)]
    choices = {}
    for name, c in supernet.choices.items():
      if c.fixed:
        choices[name] = c.values[0]
      elif name.endswith((".width", ".heads")):
        choices[name] = min(c.values, key=lambda v: abs(v - supernet.reference[name] * width_mult))
      elif name.endswith(".keep"):
        choices[name] = 1
      elif name.endswith(".nm"):  # dense (the ViT's N:M choices)
        choices[name] = DENSE
      else:
        choices[name] = wb if name.endswith(".w_bits") else ab
    out.append(choices)
  return out


def _random_archs(supernet, k: int, seed: int = 0) -> list[dict]:
  rng = np.random.default_rng(seed)
  return [{n: c.values[int(rng.integers(len(c.values)))] for n, c in supernet.choices.items()} for _ in range(k)]


def measure(model: str = "fmnist_cnn", ks=(1, 2, 4, 8), batch: int = 64, iters: int = 40, sets=None,
            model_args: Mapping | None = None, modes=("vmap",)) -> list[dict]:
  """Steps per second of K networks trained by one vmapped step against K separate derived-network steps
  (each its own ``finetune._train_step``, called one after the other as K jobs' loops would, on one process),
  timed in alternating blocks; and the compile time of each (one vmapped program against K derived programs).
  ``sets``: which K networks, among ``uniform`` (the uniform baselines at base width, in the default space:
  the masked form computes the 1.5x-wide supernet), ``uniform-base-space`` (the same networks, in a space whose
  only width is the base one: the masked form computes what they compute) and ``random`` (random networks of
  the default space)."""
  import time
  from nas.models import build_model, default_input_shape
  from nas.models.space import SearchSpace
  shape = default_input_shape(model)
  kw = dict(input_shape=shape, num_classes=10, **dict(model_args or {}))
  rng = np.random.default_rng(0)
  x_all = rng.uniform(size=(4096, *shape)).astype(np.float32)
  y_all = rng.integers(0, 10, size=4096).astype(np.int32)
  x_dev, y_dev = jnp.asarray(x_all), jnp.asarray(y_all)
  rows = []
  for set_name in sets or ("uniform", "uniform-base-space", "random"):
    space = SearchSpace(width_mults=(1.0,)) if set_name == "uniform-base-space" else SearchSpace()
    probe = build_model(model, space, **kw)
    for k in ks:
      archs = (_random_archs(probe, k) if set_name == "random" else _uniform_archs(probe, k))
      streams = index_streams(len(x_all), batch, list(range(k)))
      idx0 = next(index_streams(len(x_all), batch, list(range(k))))
      trainers, compile_multi = {}, {}
      for mode in modes:
        trainers[mode] = MultiTrainer(lambda i: build_model(model, space, seed=i, **kw), archs,
                                      np.stack([x_all[i] for i in idx0]), 1e-3, 1e-4, mode=mode)
        t0 = time.perf_counter()
        jax.block_until_ready(trainers[mode].step(x_dev, y_dev, next(streams)))
        compile_multi[mode] = time.perf_counter() - t0
      steps, compile_sep = [], 0.0
      for i, choices in enumerate(archs):
        net = build_model(model, space, seed=i, arch=probe.architecture(choices), **kw)
        trainlib.calibrate(net, x_all[idx0[i]], mode="argmax")
        opt = trainlib.weights_optimizer(net, 1e-3, 1e-4)
        net.train()
        step = StagedStep(trainlib._train_step, net, opt, static_argnames=("augment",))  # as finetune runs it
        t0 = time.perf_counter()
        jax.block_until_ready(step(jnp.asarray(x_all[idx0[i]]), jnp.asarray(y_all[idx0[i]])))
        compile_sep += time.perf_counter() - t0
        steps.append(step)

      def separate_fn():
        idx = next(streams)
        return [steps[i](jnp.asarray(x_all[idx[i]]), jnp.asarray(y_all[idx[i]]))[0] for i in range(k)]

      fns = [functools.partial(lambda t: t.step(x_dev, y_dev, next(streams))[0], trainers[m]) for m in modes]
      *t_multi, t_sep = _block_times(fns + [separate_fn], iters, block=max(1, min(10, iters // 4)))
      for mode, t in zip(modes, t_multi):
        row = {"set": set_name, "mode": mode, "k": k, "batch": batch, "multi_step_s": float(np.median(t)),
               "separate_steps_s": float(np.median(t_sep)), "speedup": float(np.median(t_sep / t)),
               "multi_nets_per_s": k / float(np.median(t)), "separate_nets_per_s": k / float(np.median(t_sep)),
               "compile_multi_s": compile_multi[mode], "compile_separate_s": compile_sep}
        rows.append(row)
        print(f"{set_name:<19} {mode:<6} K={k}  one program {row['multi_step_s'] * 1e3:7.1f} ms "
              f"({row['multi_nets_per_s']:6.1f} network-steps/s)  separate {row['separate_steps_s'] * 1e3:7.1f} ms "
              f"({row['separate_nets_per_s']:6.1f}/s)  speed-up {row['speedup']:.2f}  compile "
              f"{compile_multi[mode]:.1f} s vs {compile_sep:.1f} s", flush=True)
  return rows


if __name__ == "__main__":
  import argparse
  import json
  parser = argparse.ArgumentParser(description="K networks per vmapped step against K separate steps.")
  parser.add_argument("--model", default="fmnist_cnn")
  parser.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8])
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--iters", type=int, default=40)
  parser.add_argument("--sets", nargs="+", default=None)
  parser.add_argument("--modes", nargs="+", default=["vmap"], choices=MODES)
  parser.add_argument("--out", default=None)
  a = parser.parse_args()
  extra = {"skip": ()} if a.model == "fmnist_cnn" else {}  # the protocol's space (model.args.skip=[])
  result = measure(a.model, a.ks, a.batch, a.iters, a.sets, extra, a.modes)
  if a.out:
    with open(a.out, "w") as f:
      json.dump(result, f, indent=1)
