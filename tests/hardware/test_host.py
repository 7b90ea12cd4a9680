"""A host-calibrated preset says, in one sentence, when it runs on another machine than the one it was fitted on."""
import pathlib

import hydra.utils
import pytest
from omegaconf import OmegaConf

from hardware import calibrate, host

CONF = pathlib.Path(__file__).resolve().parents[2] / "conf" / "hardware"
SAPPHIRE = {"cpu": "Intel(R) Xeon(R) Platinum 8480+",
            "flags": ["amx_int8", "amx_tile", "avx2", "avx512_vnni", "avx512f", "fma"]}
EPYC = {"cpu": "AMD EPYC 7763 64-Core Processor", "flags": ["avx2", "fma"]}


def preset(name="cpu_host", fitted_on=None):
  cfg = OmegaConf.load(CONF / f"{name}.yaml")
  if fitted_on is not None:
    cfg.fitted_on = fitted_on
  return hydra.utils.instantiate(cfg, _convert_="all")


def fake_host(monkeypatch, machine):
  monkeypatch.setattr(host, "current_host", lambda: {"cpu": machine["cpu"], "flags": list(machine["flags"])})


def test_other_cpu_gets_one_sentence_naming_both_machines_and_the_command(monkeypatch):
  fake_host(monkeypatch, EPYC)
  message = host.host_mismatch(preset(fitted_on=SAPPHIRE))
  assert SAPPHIRE["cpu"] in message and EPYC["cpu"] in message
  assert "lacks amx_int8 amx_tile avx512_vnni avx512f" in message and "far off" in message
  assert "`python -m hardware.calibrate --measure --out conf/hardware/cpu_host.yaml --force`" in message
  assert "\n" not in message and message.endswith(".") and message.count(". ") == 0


def test_same_cpu_and_flags_is_not_a_mismatch(monkeypatch):
  fake_host(monkeypatch, SAPPHIRE)
  assert host.host_mismatch(preset(fitted_on=SAPPHIRE)) is None
  fake_host(monkeypatch, {**SAPPHIRE, "flags": SAPPHIRE["flags"][:-1]})  # same model name, one flag fewer
  assert "lacks fma" in host.host_mismatch(preset(fitted_on=SAPPHIRE))


def test_shipped_cpu_host_has_unrecorded_flags_and_never_matches(monkeypatch):
  fake_host(monkeypatch, {"cpu": "Intel(R) Xeon(R) Processor", "flags": SAPPHIRE["flags"]})
  model = preset()
  assert model.fitted_on == {"cpu": "Intel(R) Xeon(R) Processor", "flags": None}
  message = host.host_mismatch(model)
  assert "flags were not recorded" in message and "different CPU model" not in message


@pytest.mark.parametrize("name", ["riscv", "cpu", "cpu_x86_vnni", "gpu", "bitfusion"])
def test_presets_not_calibrated_on_a_host_return_none(monkeypatch, name):
  fake_host(monkeypatch, EPYC)
  assert host.host_mismatch(preset(name)) is None


def test_calibrate_records_the_measured_machine(monkeypatch, tmp_path):
  params = {"rate_conv": 1e11, "rate_dwconv": 1e9, "rate_dense": 1e10, "rate_fallback": 1e9, "mem_bw": 1e10,
            "overhead_conv": 1e-6, "overhead_dwconv": 1e-6, "overhead_dense": 1e-7, "cin_multiple": 64,
            "cout_multiple": 1, "fallback_channels": 16}
  quality = {"n": 10, "spearman": 0.9, "median_rel_err": 0.3}
  out = tmp_path / "cpu_host.yaml"
  out.write_text(calibrate.preset_yaml(params, {"cpu": SAPPHIRE["cpu"], "cpu_flags": SAPPHIRE["flags"]}, quality,
                                       quality, "m.json"))
  model = hydra.utils.instantiate(OmegaConf.load(out), _convert_="all")
  assert model.fitted_on == SAPPHIRE
  fake_host(monkeypatch, SAPPHIRE)
  assert host.host_mismatch(model) is None
  out.write_text(calibrate.preset_yaml(params, {"cpu": "old"}, quality, quality, "m.json"))  # predates flags
  assert hydra.utils.instantiate(OmegaConf.load(out)).fitted_on == {"cpu": "old", "flags": None}


def test_cpuinfo_parsing_x86_and_arm():
  x86 = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R)\nflags\t\t: fpu sse avx2 fma amx_tile avx512f\n"
  assert host.cpu_from_cpuinfo(x86) == {"cpu": "Intel(R) Xeon(R)", "flags": ["amx_tile", "avx2", "avx512f", "fma"]}
  arm = "processor\t: 0\nFeatures\t: fp asimd asimddp i8mm\nCPU part\t: 0xd0c\n"
  assert host.cpu_from_cpuinfo(arm) == {"cpu": None, "flags": ["asimddp", "i8mm"]}


def test_malformed_fitted_on_raises_naming_the_field():
  with pytest.raises(ValueError, match="fitted_on of 'cpu_host' must be a mapping"):
    host.machine_record("somewhere", "cpu_host")
