"""Target-independent metrics, including the peak activation memory of a network."""
import numpy as np
import pytest

from hardware import metrics
from hardware.base import LayerSpec

NET = [LayerSpec("conv", 3, 16, 3, 1, 32, 32), LayerSpec("conv", 16, 32, 3, 2, 32, 32),
       LayerSpec("dwconv", 32, 32, 3, 1, 16, 16), LayerSpec("dense", 32, 10)]


def test_layer_metrics_by_hand():
  layer = NET[1]
  assert float(metrics.weight_bytes(layer, 4)) == 9 * 16 * 32 / 2
  assert float(metrics.input_bytes(layer, 8)) == 32 * 32 * 16
  assert float(metrics.output_bytes(layer, 2)) == 16 * 16 * 32 / 4
  assert float(metrics.bops(layer, 4, 8)) == float(layer.macs()) * 32


def test_activation_peak_bytes_by_hand():
  # Layer i's output is stored at layer i+1's a_bits; the last at last_out_bits (8).
  peak = metrics.activation_peak_bytes(NET, a_bits=[8, 4, 4, 8])
  per_layer = [32 * 32 * 3 + 32 * 32 * 16 / 2, 32 * 32 * 16 / 2 + 16 * 16 * 32 / 2,
               16 * 16 * 32 / 2 + 16 * 16 * 32, 32 + 10]
  assert float(peak) == max(per_layer)
  explicit = metrics.activation_peak_bytes(NET, a_bits=[8, 8, 8, 8], out_bits=[2, 2, 2, 2])
  assert float(explicit) == 32 * 32 * 16 + 16 * 16 * 32 / 4


def test_activation_peak_bytes_broadcasts_over_choices():
  peak = metrics.activation_peak_bytes(NET, a_bits=[np.array([4, 8])] * 4)
  assert peak.shape == (2,)
  assert np.all(np.diff(peak) > 0)


def test_activation_peak_bytes_rejects_mismatched_lists():
  with pytest.raises(ValueError, match="a_bits"):
    metrics.activation_peak_bytes(NET, a_bits=[8, 8])
  with pytest.raises(ValueError, match="empty"):
    metrics.activation_peak_bytes([], a_bits=[])
