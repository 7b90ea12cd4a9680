"""The step benchmark (experiments/bench.py) runs the search step exactly as nas.search.loop calls it: a change of
the step's signature must break this test, not the benchmark a user runs. No timing is asserted (machines are
noisy; the benchmark prints its ratios)."""
from experiments import bench
from nas.ops import sparsity


def test_bench_runs_the_search_and_plain_steps_of_a_cnn():
  row = bench.bench_model("digits_cnn", batch=4, iters=1, method="gumbel", hardware="riscv")
  assert row["model"] == "digits_cnn" and row["supernet_step_s"] > 0 and row["plain_step_s"] > 0
  assert row["ratio"] > 0 and 0 < row["expected_cost_share"]


def test_the_plain_network_is_the_widest_dense_8_bit_one():
  class C:
    def __init__(self, values):
      self.values = values
  assert bench.widest_value("blocks.0.attn.heads", C((1, 2, 3, 4))) == 4
  assert bench.widest_value("convs.0.width", C((8, 16, 24))) == 24
  assert bench.widest_value("blocks.0.mlp.fc1.nm", C((sparsity.DENSE, 104, 204))) == sparsity.DENSE
  assert bench.widest_value("blocks.0.attn.q.w_bits", C((0, 2, 4, 8))) == 8
