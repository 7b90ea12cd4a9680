"""XLA timing on this host: a sane record on a seconds-long grid."""
import json

from hardware import measure


def test_tiny_grid_gives_sane_records():
  data = measure.measure(measure.tiny_grid(), repeats=3, passes=1, target_s=2e-4)
  json.dumps(data)  # JSON-ready
  assert data["host"]["backend"] == "cpu" and "int8" in data["host"]["dtype"]
  assert [r["kind"] for r in data["records"]] == ["conv", "dwconv", "dense"]
  for r in data["records"]:
    assert 1e-9 < r["median_s"] < 0.1 and r["loop_count"] >= 1 and r["repeats"] == 3
  layers = measure.records_to_layers(data["records"])
  assert layers == measure.tiny_grid()


def test_int8_layers_compute_what_float32_computes():
  for layer in measure.tiny_grid():
    assert measure.check_int8(layer)


def test_default_grid_is_seeded_and_covers_every_kind():
  grid = measure.default_grid()
  assert grid == measure.default_grid()
  kinds = [l.kind for l in grid]
  assert kinds.count("conv") == 240 and kinds.count("dwconv") == 60 and kinds.count("dense") > 50
  assert all(l.kernel <= l.in_h for l in grid if l.kind != "dense")
  assert sum(l.kind == "conv" and max(l.cin, l.cout) <= 16 for l in grid) >= 15  # the few-channel path
