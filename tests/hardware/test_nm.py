"""hardware.nm.NM: every written form of an N:M pattern parses to the same value, through one validator."""
import pytest

from hardware.base import LayerSpec
from hardware.nm import DENSE, NM, code_of


@pytest.mark.parametrize("form", ["2:4", " 2:4 ", (2, 4), [2, 4], NM(2, 4), 204, [2.0, 4.0]])
def test_every_form_parses_to_the_same_pattern(form):
  nm = NM.parse(form)
  assert nm == (2, 4) and isinstance(nm, NM)
  assert (nm.n, nm.m, nm.code, str(nm), nm.density, nm.index_bits) == (2, 4, 204, "2:4", 0.5, 2)


@pytest.mark.parametrize("form", [None, "dense", "null", "", DENSE])
def test_dense_forms(form):
  assert NM.parse(form) is None and code_of(form) == DENSE


def test_codes_round_trip():
  for n, m in [(1, 4), (2, 4), (1, 2), (2, 8), (3, 16)]:
    assert NM.from_code(NM(n, m).code) == (n, m)
  assert NM(1, 8).index_bits == 3 and NM(1, 2).index_bits == 1  # ceil(log2 M): the position among M


@pytest.mark.parametrize("bad", [(4, 4), (0, 4), (2,), "2-4", "2:4:8", (2, 100), (1.5, 4), "a:b", True, (5, 4)])
def test_bad_patterns_name_the_field(bad):
  with pytest.raises(ValueError, match=r"baseline\.nm="):
    NM.parse(bad, "baseline.nm")


def test_reduction_must_be_a_multiple_of_m():
  NM(2, 4).check_reduction(64, "qkv")
  with pytest.raises(ValueError, match=r"blocks.0.q: the N:M pattern 2:5 needs the reduction width \(64\)"):
    NM(2, 5).check_reduction(64, "blocks.0.q")


def test_layer_spec_reads_every_form():
  assert LayerSpec("linear", 64, 64, nm="2:4").nm == NM(2, 4)
  assert LayerSpec("linear", 64, 64, nm=[1, 4]).density == 0.25
  with pytest.raises(ValueError, match="LayerSpec.nm"):
    LayerSpec("linear", 64, 64, nm=(4, 4))
