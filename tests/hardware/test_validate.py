"""The shipped host preset and measurements agree with what validate.py reports; BitFusion loads whole."""
import pathlib
import re

import numpy as np

from hardware import validate

CONF = pathlib.Path(__file__).resolve().parents[2] / "conf" / "hardware"


def test_host_cpu_figures_match_the_preset_header():
  q = validate.host_cpu(str(CONF), validate.calibrate.DEFAULT_MEASUREMENTS)["held_out"]
  header = (CONF / "cpu_host.yaml").read_text()
  match = re.search(r"Held out (\d+) layers:\s*#\s*Spearman ([\d.]+), median relative error ([\d.]+)", header)
  assert match, "cpu_host.yaml lost its fit-quality header"
  assert q["n"] == int(match.group(1))
  assert round(q["spearman"], 3) == float(match.group(2))
  assert round(q["median_rel_err"], 3) == float(match.group(3))


def test_bitfusion_entries_cover_the_table():
  layers, w, a, lat, en = validate.bitfusion_entries()
  assert len(layers) == 6567 and len(set(layers)) == 779
  assert np.all(lat > 0) and np.all(en > 0) and set(w) == set(a) == {4.0, 6.0, 8.0}


def test_load_preset_without_hydra():
  model = validate.load_preset(str(CONF / "riscv.yaml"))
  assert model.name == "riscv"
