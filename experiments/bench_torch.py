"""Backend gap: the same float network's training step in JAX and in PyTorch (CPU), timed in one run.

  python -m experiments.bench_torch                                # fmnist_cnn and resnet20, batch 64
  python -m experiments.bench_torch --models fmnist_cnn --iters 200
  python -m experiments.bench_torch --jax pure --layout NCHW       # the functional JAX network, NCHW convs
  python -m experiments.bench_torch --sweep                        # every option below, each in its own process

Networks: fmnist_cnn's float form (convs 16/32/32/64, strides 2/1/2/1, 3x3, BatchNorm, ReLU, a 7x7 "flatten"
conv classifier; 28x28x1) and ResNet-20 (32x32x3; 1x1-conv shortcuts where the shape changes). Both sides
train with AdamW (lr 1e-3, weight decay 1e-4) on one fixed batch, and are timed alternately in blocks
(``experiments.bench._block_times``): the JAX/PyTorch ratio is the median of adjacent blocks' ratios, so that a
change of the machine's load hits both alike.

JAX sides (``--jax``): ``project`` is the project's network (``build_model`` with a float search space) and its
fine-tuning step (``nas.train.finetune._train_step`` as ``finetune`` runs it); ``pure`` is the same network
written as plain functions over a parameter tree (``lax.conv_general_dilated``, ``optax.adamw``, ``jax.jit``),
in NHWC or NCHW (``--layout``), with donated buffers (``--donate``) or a preferred element type. ``--qat`` adds
the project's W8A8 fine-tuning step (LSQ fake quantisation of every weight and activation) next to the float
one, and reports QAT / float. PyTorch runs NCHW (its default) or channels_last (``--torch-layout``), with its default thread count
(``--torch-threads``) and, timed in the same blocks, on one thread: "ratio 1t" is JAX / PyTorch-on-one-thread.

XLA flags act only when set before JAX starts: ``--sweep`` runs each option in a fresh process (XLA_FLAGS and
JAX_* in its environment). PyTorch is optional (``pip install 'hwnas[bench]'``); without it the benchmark
says so and exits 0.
"""
from __future__ import annotations

if __name__ == "__main__":  # first, before the heavy imports: restart on a caching allocator
  from nas import allocator as _allocator  # where one is installed (nas/allocator.py)
  _allocator.reexec()

import argparse
import dataclasses
import functools
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np

DEFAULT_ITERS = {"fmnist_cnn": 120, "resnet20": 10}
SHAPES = {"fmnist_cnn": (28, 28, 1), "resnet20": (32, 32, 3)}
LR, WEIGHT_DECAY, BN_EPS, BN_MOMENTUM = 1e-3, 1e-4, 1e-3, 0.9
CNN_WIDTHS, CNN_STRIDES = (16, 32, 32, 64), (2, 1, 2, 1)
RESNET_WIDTHS, RESNET_BLOCKS = (16, 32, 64), 3

DEFAULT_TORCH_THREADS: dict = {}  # PyTorch's own intra-op thread count, read once before any change
NO_TORCH = "PyTorch is not installed (pip install 'hwnas[bench]'): only the JAX side can be measured; skipping."

# Options tried by --sweep: (label, extra command-line arguments, extra environment).
SWEEP = [
    ("baseline (project step, NHWC; torch NCHW)", ["--vs-pure"], {}),
    ("pure JAX step, NHWC", ["--jax", "pure"], {}),
    ("pure JAX step, NCHW", ["--jax", "pure", "--layout", "NCHW"], {}),
    ("pure JAX step, donate_argnums", ["--jax", "pure", "--donate"], {}),
    ("pure JAX step, preferred_element_type=f32", ["--jax", "pure", "--preferred", "float32"], {}),
    ("XLA_FLAGS=--xla_cpu_multi_thread_eigen=false", [], {"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false"}),
    ("XLA_FLAGS=--xla_cpu_use_thunk_runtime=false", [], {"XLA_FLAGS": "--xla_cpu_use_thunk_runtime=false"}),
    ("XLA_FLAGS=--xla_cpu_use_onednn=true", [], {"XLA_FLAGS": "--xla_cpu_use_onednn=true"}),
    ("XLA_FLAGS=--xla_cpu_use_xnnpack=true", [], {"XLA_FLAGS": "--xla_cpu_use_xnnpack=true"}),
    ("XLA_FLAGS=--xla_cpu_enable_fast_math=true", [], {"XLA_FLAGS": "--xla_cpu_enable_fast_math=true"}),
    ("JAX_CPU_ENABLE_ASYNC_DISPATCH=false", [], {"JAX_CPU_ENABLE_ASYNC_DISPATCH": "false"}),
    ("torch channels_last", ["--torch-layout", "channels_last"], {}),
    ("torch OMP_WAIT_POLICY=PASSIVE", [], {"OMP_WAIT_POLICY": "PASSIVE"}),
    ("batch 32", ["--batch", "32"], {}),
    ("batch 128", ["--batch", "128"], {}),
    ("batch 256", ["--batch", "256"], {}),
    ("QAT W8A8 step (project) next to the float one", ["--qat"], {}),
    ("HWNAS_XLA_DEFAULTS=0 (convolutions in YNNPACK, jaxlib's own default)", [], {"HWNAS_XLA_DEFAULTS": "0"}),
]


def torch_available() -> bool:
  try:
    import torch  # noqa: F401
  except ImportError:
    return False
  return True


# ----------------------------------------------------------------------------------------------- PyTorch side

def torch_step(name: str, batch: int, layout: str = "NCHW", threads: int | None = None, seed: int = 0):
  """A function running one AdamW training step of the PyTorch network ``name`` on a fixed batch."""
  import torch
  from torch import nn
  torch.manual_seed(seed)
  threads = threads or DEFAULT_TORCH_THREADS.setdefault("n", torch.get_num_threads())

  def bn(c):  # PyTorch's momentum is the weight of the new statistic: 1 - Flax's 0.9
    return nn.BatchNorm2d(c, eps=BN_EPS, momentum=1.0 - BN_MOMENTUM)

  if name == "fmnist_cnn":
    layers, cin = [], SHAPES[name][2]
    for w, s in zip(CNN_WIDTHS, CNN_STRIDES):
      layers += [nn.Conv2d(cin, w, 3, s, padding=1, bias=False), bn(w), nn.ReLU()]
      cin = w
    layers += [nn.Conv2d(cin, 10, 7, 7, bias=False), nn.Flatten()]
    net = nn.Sequential(*layers)
  elif name == "resnet20":
    class Block(nn.Module):
      def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), bn(cout)
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), bn(cout)
        self.short = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), bn(cout))
                      if stride != 1 or cin != cout else nn.Identity())

      def forward(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(h)) + self.short(x))

    layers, cin = [nn.Conv2d(3, RESNET_WIDTHS[0], 3, 1, 1, bias=False), bn(RESNET_WIDTHS[0]), nn.ReLU()], RESNET_WIDTHS[0]
    for s, w in enumerate(RESNET_WIDTHS):
      for b in range(RESNET_BLOCKS):
        layers.append(Block(cin, w, 2 if s > 0 and b == 0 else 1))
        cin = w
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 10)]
    net = nn.Sequential(*layers)
  else:
    raise ValueError(f"--models: {name!r} is not one of {sorted(SHAPES)}.")
  h, w, c = SHAPES[name]
  rng = np.random.default_rng(seed)
  x = torch.from_numpy(rng.normal(size=(batch, c, h, w)).astype(np.float32))
  y = torch.from_numpy(rng.integers(0, 10, size=batch).astype(np.int64))
  if layout == "channels_last":
    net = net.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
  net.train()
  opt = torch.optim.AdamW(net.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
  loss_fn = nn.CrossEntropyLoss()

  def step():
    if torch.get_num_threads() != threads:  # two PyTorch sides with different thread counts, in turn
      torch.set_num_threads(threads)
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(net(x), y)
    loss.backward()
    opt.step()
    return None
  return step


# --------------------------------------------------------------------------------------------------- JAX sides

def _data(name: str, batch: int, seed: int = 0):
  import jax.numpy as jnp
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(size=(batch, *SHAPES[name])).astype(np.float32))
  y = jnp.asarray(rng.integers(0, 10, size=batch).astype(np.int32))
  return x, y


def project_step(name: str, batch: int, qat: bool = False):
  """The project's fine-tuning step of ``name``'s float network (or its W8A8 reference network with ``qat``),
  as ``nas.train.finetune.finetune`` runs it."""
  from nas.models import build_model
  from nas.models.space import SearchSpace
  from nas.train import finetune as trainlib
  from nas.train.staged import StagedStep
  x, y = _data(name, batch)
  kwargs = dict(input_shape=SHAPES[name], num_classes=10)
  if name == "fmnist_cnn":
    kwargs["skip"] = ()
  if qat:
    space = SearchSpace()
    arch = build_model(name, space, **kwargs).reference_architecture()  # every layer W8A8, base widths
    model = build_model(name, space, arch=arch, **kwargs)
  else:
    space = SearchSpace(quantize=False, width_mults=(1.0,))
    model = build_model(name, space, **kwargs)
  trainlib.calibrate(model, x, mode="argmax")
  opt = trainlib.weights_optimizer(model, LR, WEIGHT_DECAY)
  model.train()
  train_step = StagedStep(trainlib._train_step, model, opt, static_argnames=("augment",))  # as finetune runs it
  return lambda: train_step(x, y)[0]


def _he(rng, shape, fan_in):
  import jax.numpy as jnp
  return jnp.asarray(rng.standard_normal(shape).astype(np.float32) * np.float32((2.0 / fan_in) ** 0.5))


def pure_network(name: str, layout: str = "NHWC", preferred=None, seed: int = 0):
  """(params, batch statistics, forward(params, stats, x) -> (logits, new stats)) of ``name`` as plain JAX
  functions. Kernels are HWIO for NHWC and OIHW for NCHW.

  Long: both networks and their layout-dependent helpers side by side, to be read against ``torch_step``'s."""
  import jax
  import jax.numpy as jnp
  rng = np.random.default_rng(seed)
  nhwc = layout == "NHWC"
  red = (0, 1, 2) if nhwc else (0, 2, 3)
  dn = ("NHWC", "HWIO", "NHWC") if nhwc else ("NCHW", "OIHW", "NCHW")

  def kernel(k, cin, cout):
    w = _he(rng, (k, k, cin, cout), k * k * cin)
    return w if nhwc else jnp.transpose(w, (3, 2, 0, 1))

  def conv(x, w, stride):
    return jax.lax.conv_general_dilated(x, w, (stride, stride), "SAME", dimension_numbers=dn,
                                        preferred_element_type=preferred)

  def bcast(v):
    return v.reshape((1, 1, 1, -1) if nhwc else (1, -1, 1, 1))

  def bn(x, p, s):
    mean = jnp.mean(x, red)
    var = jnp.mean(jnp.square(x), red) - jnp.square(mean)
    y = (x - bcast(mean)) * bcast(jax.lax.rsqrt(var + BN_EPS) * p["scale"]) + bcast(p["bias"])
    new = {"mean": BN_MOMENTUM * s["mean"] + (1 - BN_MOMENTUM) * mean,
           "var": BN_MOMENTUM * s["var"] + (1 - BN_MOMENTUM) * var}
    return y, new

  def bn_init(c):
    return ({"scale": jnp.ones((c,), jnp.float32), "bias": jnp.zeros((c,), jnp.float32)},
            {"mean": jnp.zeros((c,), jnp.float32), "var": jnp.ones((c,), jnp.float32)})

  params, stats = {}, {}
  if name == "fmnist_cnn":
    cin = SHAPES[name][2]
    for i, w in enumerate(CNN_WIDTHS):
      params[f"conv{i}"] = kernel(3, cin, w)
      params[f"bn{i}"], stats[f"bn{i}"] = bn_init(w)
      cin = w
    params["head"] = kernel(7, cin, 10)

    def forward(p, s, x):
      new = {}
      for i, stride in enumerate(CNN_STRIDES):
        x, new[f"bn{i}"] = bn(conv(x, p[f"conv{i}"], stride), p[f"bn{i}"], s[f"bn{i}"])
        x = jax.nn.relu(x)
      return conv(x, p["head"], 7).reshape(x.shape[0], 10), new
  elif name == "resnet20":
    cin = RESNET_WIDTHS[0]
    params["stem"] = kernel(3, 3, cin)
    params["stem_bn"], stats["stem_bn"] = bn_init(cin)
    blocks = []
    for st, w in enumerate(RESNET_WIDTHS):
      for b in range(RESNET_BLOCKS):
        stride = 2 if st > 0 and b == 0 else 1
        i = len(blocks)
        params[f"b{i}c1"], params[f"b{i}c2"] = kernel(3, cin, w), kernel(3, w, w)
        params[f"b{i}n1"], stats[f"b{i}n1"] = bn_init(w)
        params[f"b{i}n2"], stats[f"b{i}n2"] = bn_init(w)
        proj = stride != 1 or cin != w
        if proj:
          params[f"b{i}sc"] = kernel(1, cin, w)
          params[f"b{i}sn"], stats[f"b{i}sn"] = bn_init(w)
        blocks.append((stride, proj))
        cin = w
    params["head_w"] = _he(rng, (cin, 10), cin)
    params["head_b"] = jnp.zeros((10,), jnp.float32)

    def forward(p, s, x):
      new = {}
      x, new["stem_bn"] = bn(conv(x, p["stem"], 1), p["stem_bn"], s["stem_bn"])
      x = jax.nn.relu(x)
      for i, (stride, proj) in enumerate(blocks):
        h, new[f"b{i}n1"] = bn(conv(x, p[f"b{i}c1"], stride), p[f"b{i}n1"], s[f"b{i}n1"])
        h, new[f"b{i}n2"] = bn(conv(jax.nn.relu(h), p[f"b{i}c2"], 1), p[f"b{i}n2"], s[f"b{i}n2"])
        if proj:
          sc, new[f"b{i}sn"] = bn(conv(x, p[f"b{i}sc"], stride), p[f"b{i}sn"], s[f"b{i}sn"])
        else:
          sc = x
        x = jax.nn.relu(h + sc)
      x = jnp.mean(x, red[1:])
      return x @ p["head_w"] + p["head_b"], new
  else:
    raise ValueError(f"--models: {name!r} is not one of {sorted(SHAPES)}.")
  return params, stats, forward


def pure_step(name: str, batch: int, layout: str = "NHWC", donate: bool = False, preferred=None):
  """One AdamW step of the functional network (``pure_network``), jitted, state carried between calls."""
  import jax
  import jax.numpy as jnp
  import optax
  params, stats, forward = pure_network(name, layout, None if preferred is None else jnp.dtype(preferred))
  tx = optax.adamw(LR, weight_decay=WEIGHT_DECAY, mask=lambda p: jax.tree.map(lambda v: v.ndim > 1, p))
  x, y = _data(name, batch)
  if layout == "NCHW":
    x = jnp.transpose(x, (0, 3, 1, 2))

  @functools.partial(jax.jit, donate_argnums=(0, 1, 2) if donate else ())
  def step(params, stats, opt_state, x, y):
    def loss_fn(p):
      logits, new = forward(p, stats, x)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new
    (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), new_stats, opt_state, loss

  state = [params, stats, tx.init(params)]

  def run():
    out = step(*state, x, y)
    state[:] = out[:3]
    return out[3]
  return run


# ------------------------------------------------------------------------------------------------------ driver

@dataclasses.dataclass(frozen=True)
class JaxSide:
  """Which JAX step: ``project`` or ``pure`` (``kind``); the pure one's layout, donation and preferred element
  type; ``qat``: also the project's W8A8 step."""
  kind: str = "project"
  layout: str = "NHWC"
  donate: bool = False
  preferred: str | None = None
  qat: bool = False
  vs_pure: bool = False  # also the pure step (NHWC), timed in the same blocks: project / pure


@dataclasses.dataclass(frozen=True)
class TorchSide:
  """PyTorch's memory layout (``NCHW`` or ``channels_last``) and intra-op threads (None: its default)."""
  layout: str = "NCHW"
  threads: int | None = None


def bench_model(name: str, batch: int, iters: int, jax_side: JaxSide = JaxSide(), torch_side: TorchSide = TorchSide(),
                with_torch: bool | None = None, block: int | None = None) -> dict:
  """Times the JAX step (and the PyTorch step, when installed and ``with_torch`` is not False) alternately."""
  import jax
  from experiments.bench import _block_times
  j, t = jax_side, torch_side
  if j.kind == "project":
    if j.layout != "NHWC" or j.donate or j.preferred is not None:
      raise ValueError("--layout, --donate and --preferred apply to --jax pure only.")
    fns = {"jax": project_step(name, batch)}
  elif j.kind == "pure":
    fns = {"jax": pure_step(name, batch, j.layout, j.donate, j.preferred)}
  else:
    raise ValueError(f"--jax {j.kind!r}: use 'project' or 'pure'.")
  if j.qat:
    fns["jax_qat"] = project_step(name, batch, qat=True)
  if j.vs_pure:
    fns["jax_pure"] = pure_step(name, batch)
  if with_torch is None:
    with_torch = torch_available()
  if with_torch:
    fns["torch"] = torch_step(name, batch, t.layout, t.threads)
    if t.threads != 1:
      # PyTorch on one thread too: on a loaded machine its OpenMP pool (threads that spin at barriers) can be
      # slowed many times over by other processes, where one thread is not.
      fns["torch_1t"] = torch_step(name, batch, t.layout, 1)
  block = block or max(1, min(10, iters // 4))
  times = dict(zip(fns, _block_times(list(fns.values()), iters, block)))
  row = {"model": name, "batch": batch, "jax": j.kind, "layout": j.layout, "donate": j.donate,
         "preferred": j.preferred, "torch_layout": t.layout, "xla_flags": os.environ.get("XLA_FLAGS", ""),
         "device": jax.devices()[0].device_kind, "jax_step_s": float(np.median(times["jax"]))}
  if "torch" in times:
    row["torch_step_s"] = float(np.median(times["torch"]))
    row["ratio"] = float(np.median(times["jax"] / times["torch"]))  # adjacent blocks
    one = times.get("torch_1t", times["torch"])
    row["torch_1t_step_s"] = float(np.median(one))
    row["ratio_1t"] = float(np.median(times["jax"] / one))
    row["torch_threads"] = t.threads or DEFAULT_TORCH_THREADS.get("n")
  if "jax_pure" in times:
    row["jax_pure_step_s"] = float(np.median(times["jax_pure"]))
    row["jax_over_pure"] = float(np.median(times["jax"] / times["jax_pure"]))
  if "jax_qat" in times:
    row["jax_qat_step_s"] = float(np.median(times["jax_qat"]))
    row["qat_over_float"] = float(np.median(times["jax_qat"] / times["jax"]))
  return row


def _print_row(r: dict) -> None:
  torch_ms = f"{r['torch_step_s'] * 1e3:>9.2f}" if "torch_step_s" in r else f"{'-':>9}"
  ratio = (f"{r['ratio']:>6.2f} {r['torch_1t_step_s'] * 1e3:>9.2f} {r['ratio_1t']:>6.2f}" if "ratio" in r
           else f"{'-':>6} {'-':>9} {'-':>6}")
  extra = (f"  qat {r['jax_qat_step_s'] * 1e3:.2f} ms, qat/float {r['qat_over_float']:.2f}"
           if "qat_over_float" in r else "")
  if "jax_over_pure" in r:
    extra += f"  pure {r['jax_pure_step_s'] * 1e3:.2f} ms, jax/pure {r['jax_over_pure']:.2f}"
  print(f"{r['model']:<11} {r['batch']:>5} {r['jax']:<8} {r['layout']:<5} {r['jax_step_s'] * 1e3:>9.2f} "
        f"{torch_ms} {ratio}{extra}", flush=True)


def sweep(models, iters, out, only=None, torch_threads=None) -> list[dict]:
  """Runs every ``SWEEP`` option (or those numbered in ``only``) in its own process (fresh XLA flags) and prints
  the ratios side by side."""
  from nas import runtime
  rows = []
  for n, (label, args, env) in enumerate(SWEEP):
    if only is not None and n not in only:
      continue
    with_out = pathlib.Path(out or "/tmp") / f".bench_torch_{abs(hash(label))}.json"
    cmd = [sys.executable, "-m", "experiments.bench_torch", "--models", *models, "--out", str(with_out), *args]
    if iters:
      cmd += ["--iters", str(iters)]
    if torch_threads and "--torch-threads" not in args:
      cmd += ["--torch-threads", str(torch_threads)]
    t0 = time.perf_counter()
    # From the environment as it was before nas added its XLA default, so that each row's own XLA_FLAGS and
    # HWNAS_XLA_DEFAULTS decide (the child's import of nas adds the default unless the row opts out).
    proc = subprocess.run(cmd, env={**runtime.without_default(os.environ), **env}, capture_output=True, text=True)
    if proc.returncode != 0:
      print(f"{label}: failed ({proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode})",
            flush=True)
      rows.append({"option": label, "error": proc.stderr[-2000:]})
      continue
    for r in json.loads(with_out.read_text()):
      r["option"] = label
      rows.append(r)
      qat = f"  qat/float {r['qat_over_float']:.2f}" if "qat_over_float" in r else ""
      qat += f"  project/pure {r['jax_over_pure']:.2f}" if "jax_over_pure" in r else ""
      print(f"{label:<48} {r['model']:<11} jax {r['jax_step_s'] * 1e3:8.2f} ms  torch "
            f"{r.get('torch_step_s', float('nan')) * 1e3:8.2f} ms  ratio {r.get('ratio', float('nan')):5.2f}  torch 1t "
            f"{r.get('torch_1t_step_s', float('nan')) * 1e3:8.2f} ms  ratio {r.get('ratio_1t', float('nan')):5.2f}{qat}"
            f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
    with_out.unlink(missing_ok=True)
  if out:
    pathlib.Path(out).mkdir(parents=True, exist_ok=True)
    (pathlib.Path(out) / f"bench_torch_sweep_{'_'.join(models)}.json").write_text(json.dumps(rows, indent=1))
  return rows


def main(argv=None) -> list[dict]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", nargs="+", default=["fmnist_cnn", "resnet20"], choices=sorted(SHAPES))
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--iters", type=int, default=None,
                      help=f"steps timed per side (default: {DEFAULT_ITERS})")
  parser.add_argument("--jax", default="project", choices=("project", "pure"))
  parser.add_argument("--layout", default="NHWC", choices=("NHWC", "NCHW"), help="--jax pure only")
  parser.add_argument("--donate", action="store_true", help="--jax pure only: donate the state's buffers")
  parser.add_argument("--preferred", default=None, help="--jax pure only: the convs' preferred_element_type")
  parser.add_argument("--qat", action="store_true", help="also time the project's W8A8 QAT step")
  parser.add_argument("--vs-pure", action="store_true", help="also time the pure JAX step (project / pure)")
  parser.add_argument("--torch-layout", default="NCHW", choices=("NCHW", "channels_last"))
  parser.add_argument("--torch-threads", type=int, default=None)
  parser.add_argument("--no-torch", action="store_true", help="time the JAX side only")
  parser.add_argument("--sweep", action="store_true", help="every option, each in its own process")
  parser.add_argument("--only", type=int, nargs="+", default=None,
                      help="--sweep: only these options (numbers in the SWEEP list, from 0)")
  parser.add_argument("--out", default=None, help="write the rows as JSON here (a folder with --sweep)")
  args = parser.parse_args(argv)
  with_torch = not args.no_torch and torch_available()
  if not with_torch and not args.no_torch:
    print(NO_TORCH, flush=True)
    if not args.sweep:
      return []
  if args.sweep:
    return sweep(args.models, args.iters, args.out, args.only, args.torch_threads) if with_torch else []
  from nas import allocator
  print(f"allocator (JAX and PyTorch alike): {allocator.describe()}")
  print(f"{'model':<11} {'batch':>5} {'jax':<8} {'lay':<5} {'jax ms':>9} {'torch ms':>9} {'ratio':>6} "
        f"{'torch 1t':>9} {'ratio':>6}")
  rows = []
  for name in args.models:
    r = bench_model(name, args.batch, args.iters or DEFAULT_ITERS[name],
                    JaxSide(args.jax, args.layout, args.donate, args.preferred, args.qat, args.vs_pure),
                    TorchSide(args.torch_layout, args.torch_threads), with_torch)
    rows.append(r)
    _print_row(r)
  if args.out:
    pathlib.Path(args.out).write_text(json.dumps(rows, indent=1))
  return rows


if __name__ == "__main__":
  main()
