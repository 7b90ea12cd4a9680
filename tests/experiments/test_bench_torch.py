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
