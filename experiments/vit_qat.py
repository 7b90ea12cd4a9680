"""Where the quantised ViT loses accuracy: uniform W8A8 against the float ViT, each suspected cause alone.

  python -m experiments.vit_qat --steps 3000 --seeds 0 1 2                      # Fashion-MNIST, every variant
  python -m experiments.vit_qat --steps 10000 --seeds 0 --variants float w8a8   # the length alone
  python -m experiments.vit_qat --dataset digits --steps 200 --seeds 0          # a smoke run (seconds)

Every variant trains the ViT of ``conf/model/vit.yaml`` (base widths, dense) with the protocol's recipe
(``nas.train.finetune``: AdamW 3e-3, cosine to zero, batch 64, the same batches per seed) for ``--steps``
steps, and reports test accuracy; variants differ in ONE thing from ``w8a8``:

* ``float``: no quantiser (the distillation teacher's network: ``experiments.search.train_teacher``).
* ``w8a8``: the uniform W8A8 baseline of the protocol (``baseline.kind=uniform``): every linear's input and
  weights, and Q, K, the softmax probabilities P and V, at 8 bits (LSQ steps).
* ``w8a8-float-attn``: the same, with the four attention operands (Q, K, P, V) left in float: only the linears
  are quantised, so what is lost to the attention path shows alone.
* ``w8a8-float-probs``: only P (the softmax output, unsigned, per tensor: most of its mass lies in a few
  levels near zero) left in float.
* ``w8a8-kd``: distilled from the ``float`` variant's network of the same seed and steps (alpha 0.5,
  temperature 4; ``finetune.kd_alpha``). The teacher's steps are extra compute, said in the table.
* ``w8a8-from-float``: QAT started from the ``float`` variant's weights trained for half the steps, then
  quantised and trained for the other half: the same total steps as ``w8a8`` (QAT from a float checkpoint, as
  deployments usually do).

Writes ``--out`` (default ``benchmarks/vit-qat/results.json``) after each run and skips the runs it already
holds, so the same command resumes; prints mean +- std over the seeds.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import statistics
import sys
import time

VARIANTS = ("float", "w8a8", "w8a8-float-attn", "w8a8-float-probs", "w8a8-kd", "w8a8-from-float")
CONF_DIR = pathlib.Path(__file__).resolve().parent.parent / "conf"


def _compose(overrides):
  from hydra import compose, initialize_config_dir

  from experiments import config as appconfig
  appconfig.register()
  with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
    return compose(config_name="config", overrides=list(overrides))


def _float_attention(net, which: str) -> None:
  """Leaves the attention operands ``which`` ("all": Q, K, P, V; "probs": P) of every block in float."""
  from nas.ops.layers import ActQuantizer
  names = {"all": ("q_act", "k_act", "p_act", "v_act"), "probs": ("p_act",)}[which]
  for block in net.blocks:
    for name in names:
      old = getattr(block.attn, name)
      setattr(block.attn, name, ActQuantizer(None, signed=old.signed))


class Runner:
  """Builds and trains the variants of one dataset; keeps each seed's float network (teacher, initial weights)."""

  def __init__(self, dataset: str, steps: int):
    from experiments import search as app
    self.cfg = _compose([f"dataset={dataset}", "model=vit", "baseline.kind=uniform", "baseline.w_bits=8",
                         "baseline.a_bits=8", "baseline.width_mult=1.0", "baseline.nm=null"])
    self.data = app.load_dataset(self.cfg)
    self.args = app._model_args(self.cfg, self.data)
    self.steps = steps
    self.floats: dict[tuple[int, int], object] = {}

  def recipe(self, seed: int, steps: int, kd: float = 0.0):
    """The app's fine-tuning recipe (``experiments.search.train_config``) for ``seed``, ``steps`` and ``kd``."""
    from omegaconf import open_dict

    from experiments import search as app
    with open_dict(self.cfg):
      self.cfg.seed = seed
    return dataclasses.replace(app.train_config(self.cfg), steps=steps, kd_alpha=kd)

  def float_net(self, seed: int, steps: int):
    """The float ViT of ``seed`` trained ``steps`` steps (trained once per process), and its accuracy."""
    from nas.models import build_model
    from nas.models.space import SearchSpace
    from nas.train.finetune import finetune
    if (seed, steps) not in self.floats:
      net = build_model("vit", SearchSpace(quantize=False, width_mults=(1.0,)), seed=seed + 7, **self.args)
      out = finetune(net, self.data, self.recipe(seed, steps))
      self.floats[(seed, steps)] = (net, out["test_accuracy"])
    return self.floats[(seed, steps)]

  def w8a8_net(self, seed: int):
    from experiments import search as app
    from experiments.baselines import baseline_choices
    from nas.models import build_model
    space = app.search_space(self.cfg)
    supernet = build_model("vit", space, seed=seed, **self.args)
    arch = supernet.architecture(baseline_choices(supernet, self.cfg))
    return build_model("vit", space, seed=seed, arch=arch, **self.args)

  def run(self, variant: str, seed: int) -> dict:
    """Trains ``variant`` for ``seed``; returns its test accuracy and the steps it and its teacher ran."""
    from nas.train.finetune import calibrate, finetune, inherit_weights
    if variant == "float":
      return {"accuracy": self.float_net(seed, self.steps)[1], "steps": self.steps, "teacher_steps": 0}
    net = self.w8a8_net(seed)
    steps, teacher, kd, extra = self.steps, None, 0.0, 0
    if variant == "w8a8-float-attn":
      _float_attention(net, "all")
    elif variant == "w8a8-float-probs":
      _float_attention(net, "probs")
    elif variant == "w8a8-kd":
      teacher, kd, extra = self.float_net(seed, self.steps)[0], 0.5, self.steps
    elif variant == "w8a8-from-float":
      inherit_weights(net, self.float_net(seed, self.steps // 2)[0])
      steps = self.steps - self.steps // 2
    calibrate(net, self.data.x_train[:64], mode="argmax")
    out = finetune(net, self.data, self.recipe(seed, steps, kd), teacher=teacher)
    return {"accuracy": out["test_accuracy"], "steps": self.steps, "teacher_steps": extra}


def table(results: dict, steps: int) -> str:
  rows = [f"| variant | seeds | test accuracy (mean +- std) | per seed | vs w8a8 | vs float |", "|---|---:|---:|---|---:|---:|"]
  means = {}
  for v in VARIANTS:
    accs = [r["accuracy"] for k, r in sorted(results.items()) if k.split("/")[0] == v and r["steps"] == steps]
    if accs:
      means[v] = statistics.mean(accs)
  for v, m in means.items():
    accs = [r["accuracy"] for k, r in sorted(results.items()) if k.split("/")[0] == v and r["steps"] == steps]
    sd = f"{100 * statistics.stdev(accs):.2f}" if len(accs) > 1 else "-"
    d = lambda ref: f"{100 * (m - means[ref]):+.2f}" if ref in means and ref != v else ""
    rows.append(f"| {v} | {len(accs)} | {100 * m:.2f} +- {sd} % | "
                f"{', '.join(f'{100 * a:.2f}' for a in accs)} | {d('w8a8')} | {d('float')} |")
  return "\n".join(rows)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m experiments.vit_qat", description=__doc__.split("\n")[0])
  p.add_argument("--dataset", default="fashion_mnist")
  p.add_argument("--steps", type=int, default=3000)
  p.add_argument("--seeds", type=int, nargs="+", default=[0])
  p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
  p.add_argument("--out", default="benchmarks/vit-qat/results.json")
  a = p.parse_args(argv)
  if a.steps < 2 or any(s < 0 for s in a.seeds):
    print(f"error: --steps={a.steps} must be >= 2 and --seeds non-negative integers.", file=sys.stderr)
    return 2
  out = pathlib.Path(a.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  results = json.loads(out.read_text()) if out.is_file() else {}
  runner = Runner(a.dataset, a.steps)
  for seed in a.seeds:
    for v in a.variants:
      key = f"{v}/{a.dataset}/steps{a.steps}/seed{seed}"
      if key in results:
        continue
      t0 = time.time()
      results[key] = {**runner.run(v, seed), "seed": seed, "dataset": a.dataset, "time_s": time.time() - t0}
      print(f"{key}: {100 * results[key]['accuracy']:.2f} % ({results[key]['time_s']:.0f} s)", flush=True)
      tmp = out.with_suffix(".tmp")
      tmp.write_text(json.dumps(results, indent=1))
      tmp.replace(out)
  mine = {k.split("/")[0] + "/" + k.split("/")[3]: r for k, r in results.items()
          if r["dataset"] == a.dataset}
  print(table(mine, a.steps))
  return 0


if __name__ == "__main__":
  sys.exit(main())
