"""nas.deploy.formats: the registry of export formats and its interface; nas.deploy.export's output rules."""
import pathlib

import pytest

from nas.deploy import export as deploy_export
from nas.deploy.formats import FORMATS, ExportFormat, register
from nas.deploy.formats import base


def test_the_three_onnx_formats_are_registered_in_writing_order():
  assert [(f.name, f.file_name) for f in FORMATS.values()][:3] == [
      ("qdq", "model.onnx"), ("int8", "model.int8.onnx"), ("qonnx", "model.qonnx.onnx")]
  assert {"model.onnx", "weights.bin", "export.json", "measure.json"} <= deploy_export.export_files()


def test_a_new_format_is_one_registration(tmp_path, monkeypatch):
  monkeypatch.setattr(base, "FORMATS", dict(FORMATS))
  fmt = base.register(ExportFormat("text", "model.txt", lambda inet: b"layers"))
  assert base.FORMATS["text"] is fmt
  assert base.write(fmt, fmt.build(None), tmp_path) == b"layers" and (tmp_path / "model.txt").read_bytes() == b"layers"
  with pytest.raises(ValueError, match="both write model.txt"):
    base.register(ExportFormat("other", "model.txt", lambda inet: b""))
  with pytest.raises(ValueError, match="already registered"):
    base.register(ExportFormat("text", "model2.txt", lambda inet: b""))
  assert register is base.register


def test_check_out_rules(tmp_path):
  run = tmp_path / "sweep" / "run"
  run.mkdir(parents=True)
  (run / "result.json").write_text("{}")
  for out in (run, run.parent, tmp_path):
    with pytest.raises(deploy_export.ExportError, match="is the run folder .* or contains it"):
      deploy_export.check_out(out, run, force=True)
  deploy_export.check_out(run / "export", run)  # new
  (tmp_path / "empty").mkdir()
  deploy_export.check_out(tmp_path / "empty", run)  # empty
  old = tmp_path / "old"
  old.mkdir()
  (old / "export.json").write_text("{}")
  (old / "model.onnx").write_bytes(b"")
  with pytest.raises(deploy_export.ExportError, match="holds a previous export; pass --force"):
    deploy_export.check_out(old, run)
  deploy_export.check_out(old, run, force=True)
  (old / "export.json").unlink()
  with pytest.raises(deploy_export.ExportError, match="no previous export"):
    deploy_export.check_out(old, run, force=True)


def test_a_corrupt_npz_is_one_sentence(tmp_path):
  bad = tmp_path / "network.npz"
  bad.write_bytes(b"PK\x03\x04 not really")
  with pytest.raises(deploy_export.ExportError, match=r"network.npz is truncated or corrupt .*; re-run the search"):
    deploy_export.check_npz(bad)
