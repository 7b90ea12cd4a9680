"""experiments.bench_torch: its JAX sides run (tiny batch, one timed step), and without PyTorch the benchmark says
so in one sentence and exits cleanly. No timing is asserted."""
import sys

from experiments import bench_torch


def test_the_jax_sides_run_without_torch():
  row = bench_torch.bench_model("fmnist_cnn", batch=4, iters=1, with_torch=False)
  assert row["jax_step_s"] > 0 and "ratio" not in row
  row = bench_torch.bench_model("fmnist_cnn", batch=4, iters=1,
                                jax_side=bench_torch.JaxSide("pure", layout="NCHW", donate=True), with_torch=False)
  assert row["jax_step_s"] > 0 and row["layout"] == "NCHW"


def test_without_torch_it_says_so_and_exits_cleanly(monkeypatch, capsys):
  monkeypatch.setitem(sys.modules, "torch", None)  # import torch raises ImportError
  assert not bench_torch.torch_available()
  assert bench_torch.main(["--models", "fmnist_cnn", "--iters", "1"]) == []
  assert bench_torch.main(["--sweep"]) == []
  out = capsys.readouterr().out
  assert out.count(bench_torch.NO_TORCH) == 2


def test_sweep_rows_start_from_the_environment_before_the_xla_default(monkeypatch, tmp_path):
  """Each --sweep row runs in a child whose XLA settings are its own: the default nas added to this process is
  taken out (the child's import of nas adds it again unless the row opts out with HWNAS_XLA_DEFAULTS=0)."""
  from nas import runtime
  monkeypatch.setenv("XLA_FLAGS", f"--xla_dump_to=/x {runtime.CONV_TO_EIGEN}")
  envs = {}

  class Failed:
    returncode, stdout, stderr = 1, "", "skipped by the test"

  def fake_run(cmd, env=None, **kw):
    envs[len(envs)] = env
    return Failed()

  monkeypatch.setattr(bench_torch.subprocess, "run", fake_run)
  labels = [label for label, _, _ in bench_torch.SWEEP]
  ynn = next(i for i, label in enumerate(labels) if label.startswith("HWNAS_XLA_DEFAULTS=0"))
  eigen1 = labels.index("XLA_FLAGS=--xla_cpu_multi_thread_eigen=false")
  bench_torch.sweep(["fmnist_cnn"], 1, str(tmp_path), only=[0, eigen1, ynn])
  base, one_thread, opt_out = envs[0], envs[1], envs[2]
  assert base["XLA_FLAGS"] == "--xla_dump_to=/x" and runtime.OPT_OUT not in base
  assert one_thread["XLA_FLAGS"] == "--xla_cpu_multi_thread_eigen=false"
  assert opt_out["XLA_FLAGS"] == "--xla_dump_to=/x" and opt_out[runtime.OPT_OUT] == "0"
  assert runtime.xla_defaults(base, "0.10.2") == f"--xla_dump_to=/x {runtime.CONV_TO_EIGEN}"
  assert runtime.xla_defaults(opt_out, "0.10.2") is None
