"""``weights.bin`` of a ViT: every linear's integers packed at their own per-column bit-widths, N:M layers
compressed to their kept values and positions, and the float tensors (LayerNorms, positions, class token) as
float32, so the file holds the whole network.

Packing is ``nas.deploy.pack``'s LSB-first bitstream (two's complement, each value at its column's width), column
by column (a column's cin values in row order; for the patch embedding the rows are (kh, kw, c)); a pruned
column (0 bits) stores nothing. An N:M layer stores, per column, only the N kept values of every group of M rows
(in row order), and after all values the kept rows' positions in their group, ceil(log2 M) bits each (2 for 2:4),
in the same order: the ``density`` x (bits + index bits) per weight that ``hardware.metrics.weight_bytes`` counts.
The pattern keeps exactly N positions per group (``nas.ops.sparsity.nm_mask``), a kept weight may be 0.

Layout (little-endian):

  header   8 bytes  magic b"HWNASV01"
           u32      number of records
  record   u16      length of the name, then the name (UTF-8)
           u8       type: 0 a float32 tensor, 1 a quantised linear, 2 an activation quantiser
  type 0   u8       rank, u32 x rank  shape, then f32 values (C order)
  type 1   u16 x 2  cin, cout; u8 x 2  N, M (0, 0: dense); u8 x 2  input bits, input signed; f32 input step
           u8[cout] bits per column, f32[cout] steps, f32[cout] bias
           u32      value bytes V, V bytes of packed values; u32 index bytes I, I bytes of packed positions
  type 2   u8 bits, u8 signed, f32 step
"""
from __future__ import annotations

import pathlib
import struct

import numpy as np

from nas.deploy.pack import pack, unpack
from nas.deploy.vit_int import ActQ, Linear, VitNetwork

MAGIC = b"HWNASV01"
FLOAT, LINEAR, ACT = 0, 1, 2


def _name(name: str) -> list[bytes]:
  data = name.encode()
  return [struct.pack("<H", len(data)), data]


def _float(name: str, value: np.ndarray) -> list[bytes]:
  v = np.asarray(value, "<f4")
  return _name(name) + [struct.pack("<BB", FLOAT, v.ndim), struct.pack(f"<{v.ndim}I", *v.shape), v.tobytes()]


def _act(name: str, act: ActQ) -> list[bytes]:
  return _name(name) + [struct.pack("<BBBf", ACT, act.bits, int(act.signed), float(act.step))]


def _as_unsigned_bits(values: np.ndarray, bits: int) -> np.ndarray:
  """Unsigned values < 2^bits as the signed integers with the same ``bits`` low bits (what ``pack`` takes)."""
  return np.where(values >= 1 << (bits - 1), values - (1 << bits), values)


def linear_streams(layer: Linear) -> tuple[bytes, bytes]:
  """(packed values, packed N:M positions) of one linear (see the module docstring)."""
  values, widths, index = [], [], []
  for c in np.flatnonzero(layer.w_bits > 0):
    column = layer.w_int[:, c]
    if layer.nm is None:
      values.append(column)
      widths.append(np.full(len(column), layer.w_bits[c]))
      continue
    kept = np.flatnonzero(layer.mask[:, c])
    values.append(column[kept])
    widths.append(np.full(len(kept), layer.w_bits[c]))
    index.append(kept % layer.nm.m)
  if not values:
    return b"", b""
  packed = pack(np.concatenate(values), np.concatenate(widths))
  if not index:
    return packed, b""
  ib = layer.nm.index_bits
  return packed, pack(_as_unsigned_bits(np.concatenate(index), ib), ib)


def _linear(layer: Linear) -> tuple[list[bytes], int]:
  """The record of one linear and its packed bytes (values and positions)."""
  cin, cout = layer.w_int.shape
  if layer.nm is not None:
    groups = layer.mask.reshape(-1, layer.nm.m, cout).sum(1) if cin % layer.nm.m == 0 else None
    if groups is None or np.any(groups != layer.nm.n):
      raise ValueError(f"{layer.name}: its N:M mask does not keep {layer.nm.n} of every {layer.nm.m} rows.")
  n, m = (0, 0) if layer.nm is None else layer.nm
  values, index = linear_streams(layer)
  out = _name(layer.name) + [
      struct.pack("<BHHBBBBf", LINEAR, cin, cout, n, m, layer.act.bits, int(layer.act.signed), float(layer.act.step)),
      np.asarray(layer.w_bits, "<u1").tobytes(), np.asarray(layer.w_step, "<f4").tobytes(),
      np.asarray(layer.bias, "<f4").tobytes(), struct.pack("<I", len(values)), values,
      struct.pack("<I", len(index)), index]
  return out, len(values) + len(index)


def _records(vnet: VitNetwork) -> list[tuple[str, list[bytes], int]]:
  """(name, record bytes, packed weight bytes) of every record: the float tensors and the attention quantisers
  block by block, then the linears in forward order."""
  out = []
  add_float = lambda name, v: out.append((name, _float(name, v), 0))
  if vnet.cls_token is not None:
    add_float("cls_token", vnet.cls_token)
  add_float("pos", vnet.pos)
  for i, b in enumerate(vnet.blocks):
    if b.attn is not None:
      a, p = b.attn, f"blocks.{i}.attn"
      add_float(f"blocks.{i}.ln1.scale", a.ln.scale)
      add_float(f"blocks.{i}.ln1.bias", a.ln.bias)
      out += [(f"{p}.{n}", _act(f"{p}.{n}", act), 0) for n, act in
              (("q_act", a.q_act), ("k_act", a.k_act), ("p_act", a.p_act), ("v_act", a.v_act))]
    if b.mlp is not None:
      add_float(f"blocks.{i}.ln2.scale", b.mlp.ln.scale)
      add_float(f"blocks.{i}.ln2.bias", b.mlp.ln.bias)
  add_float("norm.scale", vnet.norm.scale)
  add_float("norm.bias", vnet.norm.bias)
  for layer in vnet.linears():
    record, packed = _linear(layer)
    out.append((layer.name, record, packed))
  return out


def write_weights(path, vnet: VitNetwork) -> dict:
  """Writes ``vnet`` as ``weights.bin``; returns {"file_bytes", "packed_weight_bytes", "overhead_bytes",
  "layers": {name: packed bytes of values and positions}}."""
  records = _records(vnet)
  data = b"".join([MAGIC, struct.pack("<I", len(records))] + [b for _, r, _ in records for b in r])
  pathlib.Path(path).write_bytes(data)
  layers = {name: packed for name, _, packed in records if name in {l.name for l in vnet.linears()}}
  total = sum(layers.values())
  return {"file_bytes": len(data), "packed_weight_bytes": total, "overhead_bytes": len(data) - total,
          "layers": layers}


def read_weights(path) -> dict[str, object]:
  """Reads ``weights.bin`` back: a float tensor's name -> its array; a linear's -> its dense (cin, cout) integers
  (positions of an N:M layer's pruned weights 0); an activation quantiser's -> (bits, signed, step)."""
  data = pathlib.Path(path).read_bytes()
  if data[:8] != MAGIC:
    raise ValueError(f"{path} is not a ViT weights.bin (magic {data[:8]!r}, expected {MAGIC!r}).")
  (count,), pos, out = struct.unpack_from("<I", data, 8), 12, {}
  for _ in range(count):
    (ln,) = struct.unpack_from("<H", data, pos)
    name, kind = data[pos + 2:pos + 2 + ln].decode(), data[pos + 2 + ln]
    pos += 3 + ln
    if kind == FLOAT:
      rank = data[pos]
      shape = struct.unpack_from(f"<{rank}I", data, pos + 1)
      pos += 1 + 4 * rank
      size = int(np.prod(shape))
      out[name] = np.frombuffer(data, "<f4", size, pos).reshape(shape)
      pos += 4 * size
    elif kind == ACT:
      bits, signed, step = struct.unpack_from("<BBf", data, pos)
      out[name], pos = (bits, bool(signed), step), pos + 6
    else:
      out[name], pos = _read_linear(data, pos)
  return out


def _read_linear(data: bytes, pos: int) -> tuple[np.ndarray, int]:
  cin, cout, n, m, _, _, _ = struct.unpack_from("<HHBBBBf", data, pos)
  pos += 12
  bits = np.frombuffer(data, "<u1", cout, pos).astype(np.int64)
  pos += cout * 9
  (nv,) = struct.unpack_from("<I", data, pos)
  values = data[pos + 4:pos + 4 + nv]
  pos += 4 + nv
  (ni,) = struct.unpack_from("<I", data, pos)
  index = data[pos + 4:pos + 4 + ni]
  pos += 4 + ni
  live = np.flatnonzero(bits > 0)
  per_col = cin if m == 0 else cin // m * n
  flat = unpack(values, np.repeat(bits[live], per_col)) if len(live) else np.zeros(0, np.int64)
  w = np.zeros((cin, cout), np.int64)
  if m == 0:
    w[:, live] = flat.reshape(len(live), cin).T
    return w, pos
  ib = int(np.ceil(np.log2(m)))
  where = unpack(index, ib, len(live) * per_col) & ((1 << ib) - 1)
  rows = (np.repeat(np.arange(cin // m), n)[None, :] * m + where.reshape(len(live), per_col))
  w[rows, live[:, None]] = flat.reshape(len(live), per_col)
  return w, pos
