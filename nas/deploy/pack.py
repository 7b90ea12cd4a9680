"""Bit-packing of integer weights at their own bit-widths, and the ``weights.bin`` file of an integer network.

Packing: a layer's weights form one little-endian bitstream. Values are taken output channel by output channel
(for a convolution each channel's (kh, kw, cin) block in that order: OHWI; for a dense layer each channel's cin
column), each value as its b low bits in two's complement, least significant bit first, with b the bit-width of
its channel. With one bit-width b per layer this puts 8 / b values in each byte, the first in the low bits (four
2-bit values per byte, two 4-bit ones); 3-, 5-, 6- and 7-bit values straddle bytes. Only the end of a layer's
stream is padded, to a whole byte, so a layer of n weights at b bits takes ceil(n b / 8) bytes: the
``weight_bytes`` the cost models count (n b / 8, ``hardware.metrics.weight_bytes``) up to under one byte.

``weights.bin`` (all integers little-endian):

  header   8 bytes  magic b"HWNASW02"
           u32      number of layers L
  L times  u16      length of the layer's name, then the name (UTF-8)
           u8       kind (0: conv, 1: dense)
           u8       input bits, u8 input signed (0/1), u8 output bits (0: the layer's output is not requantised
                    to an activation: logits, or a wide map before pooling)
           u16 x 6  kernel, stride, dilation, cin, cout, number of requantisation outputs R (cout, or 0 if
                    none). A convolution runs at stride x dilation with taps dilation apart (its input is the
                    map a skipped strided layer left unsubsampled), padded as ``nas.deploy.integer.dilated_pads``
           u8       bias shift r (the accumulator is shifted left by r before the bias is added)
           f32      input step (the input activation's LSQ step)
           u8[cout]     weight bits per output channel
           f32[cout]    weight steps per output channel (LSQ steps; for dequantisation and checks)
           i32[cout]    bias, in steps of the shifted accumulator (BatchNorm folded)
           f64[cout]    the real value of one step of the shifted accumulator (input step x weight step x
                        BatchNorm gain / 2^r), for the output layer's logits
           i32[R]       requantisation multipliers m, u8[R] shifts k: q = clip((acc + bias) m / 2^k)
           i32 x 2      the requantisation's clip range (lo, hi)
           u32      packed weight bytes P, then P bytes of packed weights (above)
  then     u8       pooling stage present (0/1); if 1: i32 multiplier, u8 shift, i32 lo, i32 hi

The metadata after the header and the packed weights is the overhead ``export.json`` reports next to the
packed bytes.
"""
from __future__ import annotations

import pathlib
import struct

import numpy as np

MAGIC = b"HWNASW02"  # 02: the dilation field


def packed_size(bits) -> int:
  """Bytes of one packed stream of values at ``bits`` (one bit-width per value): ceil(sum(bits) / 8)."""
  return -(-int(np.sum(np.asarray(bits, np.int64))) // 8)


def pack(values: np.ndarray, bits) -> bytes:
  """Packs integers into one LSB-first bitstream, each at its own bit-width (a scalar or one per value).

  Raises:
    ValueError: if a value does not fit its signed bit-width or a bit-width is outside 1..8.
  """
  v = np.asarray(values, np.int64).ravel()
  b = np.broadcast_to(np.asarray(bits, np.int64), v.shape)
  if b.size and (b.min() < 1 or b.max() > 8):
    raise ValueError(f"pack: bit-widths must be in 1..8, got {b.min()}..{b.max()}.")
  lo, hi = -(1 << (b - 1)), (1 << (b - 1)) - 1
  if np.any((v < lo) | (v > hi)):
    i = int(np.flatnonzero((v < lo) | (v > hi))[0])
    raise ValueError(f"pack: value {v[i]} at index {i} does not fit {b[i]} signed bits.")
  stream = np.zeros(int(b.sum()), np.uint8)
  starts = np.cumsum(b) - b
  for width in np.unique(b):
    idx = np.flatnonzero(b == width)
    offsets = np.arange(width)
    stream[starts[idx, None] + offsets] = ((v[idx, None] & ((1 << width) - 1)) >> offsets) & 1
  return np.packbits(stream, bitorder="little").tobytes()


def unpack(data: bytes, bits, count: int | None = None) -> np.ndarray:
  """The signed integers ``pack`` wrote: ``bits`` one bit-width per value (or a scalar with ``count``)."""
  b = np.asarray(bits, np.int64)
  if b.ndim == 0:
    if count is None:
      raise ValueError("unpack: a scalar bit-width needs count=.")
    b = np.full(count, int(b))
  stream = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little").astype(np.int64)
  if stream.size < b.sum():
    raise ValueError(f"unpack: {len(data)} bytes hold {stream.size} bits, {int(b.sum())} are needed.")
  starts = np.cumsum(b) - b
  out = np.zeros(b.size, np.int64)
  for width in np.unique(b):
    idx = np.flatnonzero(b == width)
    raw = (stream[starts[idx, None] + np.arange(width)] << np.arange(width)).sum(axis=1)
    out[idx] = np.where(raw >= (1 << (width - 1)), raw - (1 << width), raw)  # sign extension
  return out


def channel_major(weight: np.ndarray) -> np.ndarray:
  """(cout, fan_in) view of a kernel with output channels last (HWIO conv or (cin, cout) dense): OHWI order."""
  return np.moveaxis(weight, -1, 0).reshape(weight.shape[-1], -1)


def pack_layer(weight: np.ndarray, w_bits: np.ndarray) -> bytes:
  """A layer's weights (output channels last) packed channel by channel at each channel's bit-width."""
  rows = channel_major(weight)
  return pack(rows, np.repeat(np.asarray(w_bits, np.int64), rows.shape[1]))


def write_weights(path, net) -> dict:
  """Writes ``net`` (a ``nas.deploy.integer.IntegerNetwork``) as ``weights.bin``; returns its byte counts.

  Returns:
    {"file_bytes", "packed_weight_bytes", "overhead_bytes", "layers": {name: packed bytes}}.
  """
  out, packed_total, per_layer = [MAGIC, struct.pack("<I", len(net.layers))], 0, {}
  for layer in net.layers:
    name = layer.name.encode()
    cout = layer.weight.shape[-1]
    rq = layer.requant
    r = 0 if rq is None else cout
    out += [struct.pack("<H", len(name)), name,
            struct.pack("<BBBB", 0 if layer.kind == "conv" else 1, layer.in_bits, int(layer.in_signed),
                        layer.out_bits or 0),
            struct.pack("<HHHHHH", layer.kernel, layer.stride, layer.dilation,
                        layer.weight.shape[-2] if layer.kind == "conv" else layer.weight.shape[0], cout, r),
            struct.pack("<B", layer.bias_shift),
            struct.pack("<f", layer.in_step),
            np.asarray(layer.w_bits, "<u1").tobytes(), np.asarray(layer.w_step, "<f4").tobytes(),
            np.asarray(layer.bias, "<i4").tobytes(), np.asarray(layer.acc_scale, "<f8").tobytes()]
    if rq is not None:
      out += [np.asarray(rq.multiplier, "<i4").tobytes(), np.asarray(rq.shift, "<u1").tobytes(),
              struct.pack("<ii", rq.lo, rq.hi)]
    else:
      out.append(struct.pack("<ii", 0, 0))
    packed = pack_layer(layer.weight, layer.w_bits)
    out += [struct.pack("<I", len(packed)), packed]
    packed_total += len(packed)
    per_layer[layer.name] = len(packed)
  pool = net.pool
  if pool is None:
    out.append(struct.pack("<B", 0))
  else:
    out.append(struct.pack("<BiBii", 1, int(pool.multiplier[0]), int(pool.shift[0]), pool.lo, pool.hi))
  data = b"".join(out)
  with open(path, "wb") as f:
    f.write(data)
  return {"file_bytes": len(data), "packed_weight_bytes": packed_total,
          "overhead_bytes": len(data) - packed_total, "layers": per_layer}


def read_packed_weights(path) -> dict[str, np.ndarray]:
  """Reads ``weights.bin`` back: layer name -> its integer weights as (cout, fan_in) in OHWI order."""
  data = pathlib.Path(path).read_bytes()
  if data[:8] != MAGIC:
    raise ValueError(f"{path} is not a weights.bin file (magic {data[:8]!r}, expected {MAGIC!r}).")
  pos = 8
  (n,) = struct.unpack_from("<I", data, pos)
  pos += 4
  out = {}
  for _ in range(n):
    (ln,) = struct.unpack_from("<H", data, pos)
    name = data[pos + 2:pos + 2 + ln].decode()
    pos += 2 + ln
    kind, _, _, _ = struct.unpack_from("<BBBB", data, pos)
    kernel, _, _, cin, cout, r = struct.unpack_from("<HHHHHH", data, pos + 4)
    pos += 4 + 12 + 1 + 4
    w_bits = np.frombuffer(data, "<u1", cout, pos).astype(np.int64)
    pos += cout * (1 + 4 + 4 + 8) + r * (4 + 1) + 8
    (nbytes,) = struct.unpack_from("<I", data, pos)
    fan_in = kernel * kernel * cin if kind == 0 else cin
    values = unpack(data[pos + 4:pos + 4 + nbytes], np.repeat(w_bits, fan_in))
    out[name] = values.reshape(cout, fan_in)
    pos += 4 + nbytes
  return out
