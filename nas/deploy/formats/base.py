"""An export format: a name, the file it is written to, and a function from the integer network to the file's
content (an ONNX ModelProto, or bytes); ``check`` validates what ``build`` returned (default: nothing).

A new format is one module that builds its content and calls :func:`register` at import (and is imported by
``nas.deploy.formats``); the exporter (``nas.deploy.export``) writes every registered format.
"""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Callable

from nas.deploy.integer import IntegerNetwork


def _no_check(content) -> None:
  del content


@dataclasses.dataclass(frozen=True)
class ExportFormat:
  name: str  # the registry key, e.g. "qdq"
  file_name: str  # where the export folder holds it, e.g. "model.onnx"
  build: Callable[[IntegerNetwork], object]  # -> onnx.ModelProto or bytes
  check: Callable[[object], None] = _no_check  # raises on invalid content (e.g. the ONNX checker)


FORMATS: dict[str, ExportFormat] = {}  # name -> format, in the order they are written


def register(fmt: ExportFormat) -> ExportFormat:
  """Adds ``fmt`` to :data:`FORMATS` (a second format with the same name or file name is refused)."""
  for other in FORMATS.values():
    if other.name != fmt.name and other.file_name == fmt.file_name:
      raise ValueError(f"export formats {other.name!r} and {fmt.name!r} both write {fmt.file_name}.")
  if fmt.name in FORMATS and FORMATS[fmt.name] != fmt:
    raise ValueError(f"an export format named {fmt.name!r} is already registered.")
  FORMATS[fmt.name] = fmt
  return fmt


def to_bytes(content) -> bytes:
  """A format's content as the bytes of its file (a ModelProto serialised as ``onnx.save`` writes it)."""
  return content if isinstance(content, (bytes, bytearray)) else content.SerializeToString()


def write(fmt: ExportFormat, content, folder: pathlib.Path) -> bytes:
  """Writes ``content`` to ``folder / fmt.file_name``; returns the bytes written."""
  data = to_bytes(content)
  (folder / fmt.file_name).write_bytes(data)
  return data


def onnx_checker(full_check: bool) -> Callable[[object], None]:
  """A ``check`` running the ONNX checker (``full_check``: with shape inference)."""
  def check(model) -> None:
    import onnx
    onnx.checker.check_model(model, full_check=full_check)
  return check
