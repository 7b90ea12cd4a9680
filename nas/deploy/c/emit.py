"""C99 source of an ``IntegerNetwork``: static buffers, packed weights, the integer kernels of ``runtime/``.

``write_c(inet, out_dir, images=None)`` writes a folder that builds on its own (``make host``, ``make riscv``):

  network.h / network.c   the network: per layer a ``hw_layer_t`` (geometry, packed weights, bias,
                          requantisation), two static ping-pong activation buffers sized to the largest map
                          each holds, one scratch buffer for an output channel's unpacked weights, and
                          ``hw_infer(image, logits, cycles)``, which runs the stages in order and records each
                          stage's mcycle delta (0 on the host)
  images.h / images.c     quantised input images compiled in for the bare-metal build (none: an empty set)
  hwnas.h / hwnas.c       the kernels: one convolution kernel (any square kernel, stride, dilation, "SAME"
                          padding as ``integer.dilated_pads``; a dense layer is a 1x1 convolution of a 1x1
                          map), global average pooling, the requantisation
  main_host.c, main_riscv.c, crt0.S, link.ld, Makefile, tb_cv32e40p.cpp (the Verilator testbench)

The arithmetic is that of ``nas.deploy.integer.run``, bit for bit: int32 accumulators, the accumulator shifted
by ``bias_shift`` plus the int32 bias, and the dyadic requantisation with an int64 product, round half up (half
to even where the ``Requant`` asks for it) and the clip. The output is the output layer's int32 accumulators
(``integer.run``'s first result); the dequantised logits are those times ``acc_scale``.

Storage: weights stay packed at each output channel's bit-width (2..8 bits; the bitstream of
``nas.deploy.pack.pack_layer`` plus one padding byte per layer) and are unpacked one output channel at a time
into the scratch buffer; activations of 2..8 bits are stored one per byte (uint8; the network's input int8 when
its quantiser is signed), and the wide map before global average pooling as int32. Input images are the
quantised integers (``quantize_images``), not floats: the program has no floating point.
"""
from __future__ import annotations

import dataclasses
import pathlib
import shutil

import numpy as np

from nas.deploy import integer
from nas.deploy import pack

RUNTIME = pathlib.Path(__file__).resolve().parent / "runtime"
RUNTIME_FILES = ("hwnas.h", "hwnas.c", "main_host.c", "main_riscv.c", "crt0.S", "link.ld", "Makefile",
                 "tb_cv32e40p.cpp")
W_BITS = range(2, 9)  # weight bit-widths the kernel unpacks
OUT_U8, OUT_I32, OUT_RAW = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class Stage:
  """One step of ``hw_infer``: a layer (conv or dense) or the global average pooling before the head."""
  name: str
  kind: str  # "conv" | "dense" | "pool"
  in_elems: int
  out_elems: int
  out_bytes: int
  layer: integer.IntLayer | None = None
  geom: dict | None = None


def geometry(layer: integer.IntLayer) -> dict:
  """The kernel's view of a layer: input (h, w, cin), kernel, window step (stride x dilation), tap distance,
  top/left padding and output (h, w), as ``integer.conv_int`` computes them."""
  if layer.kind == "dense":
    return dict(in_h=1, in_w=1, cin=int(layer.weight.shape[0]), kernel=1, step=1, dilation=1, pad_top=0,
                pad_left=0, out_h=1, out_w=1)
  h, w = layer.in_hw
  k, s, d = int(layer.kernel), int(layer.stride), int(layer.dilation)
  (t, b), (l, r) = integer.dilated_pads(h, k, s, d), integer.dilated_pads(w, k, s, d)
  span = d * (k - 1) + 1
  out_h = -(-(h + t + b - span + 1) // (s * d))
  out_w = -(-(w + l + r - span + 1) // (s * d))
  return dict(in_h=int(h), in_w=int(w), cin=int(layer.weight.shape[2]), kernel=k, step=s * d, dilation=d,
              pad_top=int(t), pad_left=int(l), out_h=int(out_h), out_w=int(out_w))


def check(inet: integer.IntegerNetwork) -> None:
  """Raises ValueError, in one sentence naming the layer, for what the C kernels do not implement."""
  layers = inet.layers
  if not layers or layers[-1].requant is not None:
    raise ValueError("the C backend needs an integer network whose last layer is the output layer.")
  for i, l in enumerate(layers):
    if l.kind not in ("conv", "dense"):
      raise ValueError(f"layer {l.name}: kind {l.kind!r} has no C kernel; the C backend knows conv and dense layers.")
    bad = sorted(set(int(b) for b in np.asarray(l.w_bits).ravel()) - set(W_BITS))
    if bad:
      raise ValueError(f"layer {l.name}: weights of {bad[0]} bits have no C kernel; the C backend unpacks 2- to "
                       f"8-bit weights.")
    if not 1 <= int(l.in_bits) <= 8:
      raise ValueError(f"layer {l.name}: {l.in_bits}-bit input activations have no C kernel; the C backend stores "
                       f"activations of at most 8 bits in bytes.")
    if i > 0 and l.in_signed:
      raise ValueError(f"layer {l.name}: a signed input activation after the first layer has no C kernel.")
    if l.kind == "conv" and (l.weight.ndim != 4 or l.weight.shape[0] != l.weight.shape[1]
                             or l.weight.shape[0] != l.kernel):
      raise ValueError(f"layer {l.name}: a {l.weight.shape[:2]} kernel has no C kernel; the C backend knows square "
                       f"kernels of size {l.kernel}.")
    if l.requant is None and i != len(layers) - 1:
      raise ValueError(f"layer {l.name}: only the last layer may be unrequantised (logits).")
    if l.requant is not None and l.out_bits is not None and not (0 <= l.requant.lo and l.requant.hi <= 255):
      raise ValueError(f"layer {l.name}: a requantised output in [{l.requant.lo}, {l.requant.hi}] does not fit the "
                       f"uint8 activation the C backend stores.")
  if inet.pool is not None:
    if layers[-1].kind != "dense" or len(layers) < 2:
      raise ValueError(f"layer {layers[-1].name}: global average pooling before a {layers[-1].kind} head has no C "
                       f"kernel; the C backend pools into a dense head.")
    if not (0 <= inet.pool.lo and inet.pool.hi <= 255):
      raise ValueError(f"the pooling stage's output range [{inet.pool.lo}, {inet.pool.hi}] does not fit uint8.")


def stages(inet: integer.IntegerNetwork) -> list[Stage]:
  """The steps of ``hw_infer`` with their sizes (the pooling stage between the last conv and the head)."""
  check(inet)
  out = []
  for i, l in enumerate(inet.layers):
    g = geometry(l)
    if l.kind == "dense" and inet.pool is not None:
      prev = out[-1]
      c = g["cin"]
      out.append(Stage("pool", "pool", prev.out_elems, c, c))
    n_in, n_out = g["in_h"] * g["in_w"] * g["cin"], g["out_h"] * g["out_w"] * int(l.weight.shape[-1])
    mode = OUT_RAW if l.requant is None else (OUT_U8 if l.out_bits is not None else OUT_I32)
    out.append(Stage(l.name, l.kind, n_in, n_out, n_out * (1 if mode == OUT_U8 else 4), l,
                     dict(g, out_mode=mode)))
  for a, b in zip(out, out[1:]):
    if a.out_elems != b.in_elems:
      raise ValueError(f"layer {b.name}: reads {b.in_elems} values but {a.name} writes {a.out_elems}.")
  return out


def quantize_images(inet: integer.IntegerNetwork, x: np.ndarray) -> np.ndarray:
  """Float NHWC images -> the input integers the C program reads, (N, H W C) int8 (signed input) or uint8."""
  q = integer.quantize_input(np.asarray(x, np.float32), inet.layers[0])
  dtype = np.int8 if inet.layers[0].in_signed else np.uint8
  return q.reshape(q.shape[0], -1).astype(dtype)


def _array(ctype: str, name: str, values, per_line: int = 16, static: bool = True) -> str:
  v = np.asarray(values).ravel()
  if v.size == 0:
    v = np.zeros(1, np.int64)
  if ctype == "uint8_t":
    items = [f"0x{int(x):02x}" for x in v]
  else:
    items = [str(int(x)) for x in v]
  lines = [", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line)]
  body = ",\n  ".join(lines)
  return f"{'static ' if static else ''}const {ctype} {name}[{v.size}] = {{\n  {body}\n}};\n"


def _ident(i: int) -> str:
  return f"L{i}"


def network_sources(inet: integer.IntegerNetwork) -> tuple[str, str]:
  """(network.h, network.c) of ``inet``."""
  st = stages(inet)
  out_stage = st[-1]
  in_bytes = int(np.prod(inet.input_shape))
  fan_in = max(s.geom["kernel"] ** 2 * s.geom["cin"] for s in st if s.layer is not None)
  # ping-pong buffers: every stage but the last writes one, alternating; each sized to the largest it holds
  sizes = [0, 0]
  for j, s in enumerate(st[:-1]):
    sizes[j % 2] = max(sizes[j % 2], s.out_bytes)
  layer_names = [s.name for s in st]
  h = [
      "/* Generated by nas.deploy.c.write_c: the integer network " + repr(inet.model) + ". */",
      "#ifndef HWNAS_NETWORK_H", "#define HWNAS_NETWORK_H", "#include <stdint.h>", '#include "hwnas.h"', "",
      f"#define HW_MODEL \"{inet.model}\"",
      f"#define HW_INPUT_H {inet.input_shape[0]}", f"#define HW_INPUT_W {inet.input_shape[1]}",
      f"#define HW_INPUT_C {inet.input_shape[2]}",
      f"#define HW_INPUT_BYTES {in_bytes}  /* one image: HWC, {'int8' if inet.layers[0].in_signed else 'uint8'} */",
      f"#define HW_INPUT_SIGNED {int(inet.layers[0].in_signed)}",
      f"#define HW_N_LOGITS {out_stage.out_elems}",
      f"#define HW_N_STAGES {len(st)}",
      f"#define HW_BUF0_BYTES {sizes[0]}", f"#define HW_BUF1_BYTES {sizes[1]}", f"#define HW_WBUF_BYTES {fan_in}",
      "", "extern const char *const hw_stage_names[HW_N_STAGES];",
      "/* Runs the network on one image; logits: HW_N_LOGITS int32 output accumulators (bias added);",
      " * cycles: HW_N_STAGES mcycle deltas (0 on the host). */",
      "void hw_infer(const void *image, int32_t *logits, uint32_t *cycles);", "", "#endif", ""]
  c = ["/* Generated by nas.deploy.c.write_c. Weights packed at each output channel's bit-width (LSB first, OHWI),",
       " * activations one per byte (uint8), the map before global average pooling int32. */",
       '#include "network.h"', "",
       f"static int32_t hw_buf0[{max(1, -(-sizes[0] // 4))}];  /* {sizes[0]} bytes */",
       f"static int32_t hw_buf1[{max(1, -(-sizes[1] // 4))}];  /* {sizes[1]} bytes */",
       f"static int32_t hw_wbuf[{-(-fan_in // 4)}];  /* {fan_in} bytes: one output channel's unpacked weights */",
       "",
       "const char *const hw_stage_names[HW_N_STAGES] = {" + ", ".join(f'"{n}"' for n in layer_names) + "};", ""]
  for i, s in enumerate(st):
    if s.layer is None:
      continue
    l, g, p = s.layer, s.geom, _ident(i)
    cout = int(l.weight.shape[-1])
    packed = pack.pack_layer(l.weight, l.w_bits) + b"\0"
    rq = l.requant
    c.append(f"/* {l.name}: {l.kind}, {g['in_h']}x{g['in_w']}x{g['cin']} -> {g['out_h']}x{g['out_w']}x{cout}, "
             f"kernel {g['kernel']}, stride {l.stride}, dilation {g['dilation']}, weight bits "
             f"{sorted(set(int(b) for b in l.w_bits))}, input {l.in_bits} bits */")
    c.append(_array("uint8_t", f"{p}_w", np.frombuffer(packed, np.uint8)))
    c.append(_array("uint8_t", f"{p}_bits", np.asarray(l.w_bits, np.int64), 32))
    c.append(_array("int32_t", f"{p}_bias", np.asarray(l.bias, np.int64), 8))
    if rq is not None:
      c.append(_array("int32_t", f"{p}_mult", np.broadcast_to(np.asarray(rq.multiplier, np.int64), (cout,)), 8))
      c.append(_array("uint8_t", f"{p}_shift", np.broadcast_to(np.asarray(rq.shift, np.int64), (cout,)), 32))
    lo, hi = (rq.lo, rq.hi) if rq is not None else (0, 0)
    c.append(f"static const hw_layer_t {p} = {{\n  {p}_w, {p}_bits, {p}_bias, "
             f"{p + '_mult' if rq is not None else '0'}, {p + '_shift' if rq is not None else '0'}, "
             f"{int(lo)}, {int(hi)},\n  {g['in_h']}, {g['in_w']}, {g['cin']}, {cout}, {g['kernel']}, {g['step']}, "
             f"{g['dilation']}, {g['pad_top']}, {g['pad_left']}, {g['out_h']}, {g['out_w']},\n  "
             f"{int(l.bias_shift)}, {int(l.in_signed)}, {g['out_mode']}, {int(bool(rq is not None and rq.half_even))}"
             f"\n}};\n")
  body = ["void hw_infer(const void *image, int32_t *logits, uint32_t *cycles) {",
          "  uint32_t t0 = hw_cycle(), t1;"]
  src = "image"
  for j, s in enumerate(st):
    dst = "logits" if j == len(st) - 1 else f"hw_buf{j % 2}"
    if s.kind == "pool":
      pl = inet.pool
      in_u8 = int(st[j - 1].geom["out_mode"] == OUT_U8)
      body.append(f"  hw_pool({src}, {in_u8}, {inet.pool_hw}, {s.out_elems}, {int(pl.multiplier[0])}, "
                  f"{int(pl.shift[0])}, {int(pl.lo)}, {int(pl.hi)}, {int(pl.half_even)}, (uint8_t *){dst});")
    else:
      body.append(f"  hw_conv(&{_ident(j)}, {src}, {dst}, (int8_t *)hw_wbuf);  /* {s.name} */")
    body.append(f"  t1 = hw_cycle(); cycles[{j}] = t1 - t0; t0 = t1;")
    src = dst
  body.append("}")
  c += body + [""]
  if inet.pool is not None:
    pool_stage = next(s for s in st if s.kind == "pool")
    prev = st[st.index(pool_stage) - 1]
    if prev.out_elems != inet.pool_hw * pool_stage.out_elems:
      raise ValueError(f"layer {prev.name}: its {prev.out_elems} outputs are not {inet.pool_hw} positions of "
                       f"{pool_stage.out_elems} channels for global average pooling.")
  return "\n".join(h), "\n".join(c)


def images_sources(inet: integer.IntegerNetwork, images: np.ndarray | None) -> tuple[str, str]:
  """(images.h, images.c): the quantised images compiled into the bare-metal build (``hw_images``)."""
  q = np.zeros((0, int(np.prod(inet.input_shape))), np.uint8) if images is None else quantize_images(inet, images)
  ctype = "int8_t" if inet.layers[0].in_signed else "uint8_t"
  h = ["/* Generated by nas.deploy.c.write_c: the input images of the bare-metal build. */",
       "#ifndef HWNAS_IMAGES_H", "#define HWNAS_IMAGES_H", '#include "network.h"',
       f"#define HW_N_IMAGES {len(q)}",
       f"extern const {ctype} hw_images[HW_N_IMAGES ? HW_N_IMAGES : 1][HW_INPUT_BYTES];", "#endif", ""]
  rows = q if len(q) else np.zeros((1, q.shape[1]), q.dtype)
  vals = ",\n".join("  {" + ", ".join(str(int(v)) for v in row) + "}" for row in rows)
  c = ['#include "images.h"', "", "#ifdef __GNUC__", "__attribute__((aligned(4)))", "#endif",
       f"const {ctype} hw_images[HW_N_IMAGES ? HW_N_IMAGES : 1][HW_INPUT_BYTES] = {{\n{vals}\n}};", ""]
  return "\n".join(h), "\n".join(c)


def write_c(inet: integer.IntegerNetwork, out_dir, images: np.ndarray | None = None) -> pathlib.Path:
  """Writes the C inference of ``inet`` into ``out_dir`` (created; generated files overwritten).

  Args:
    inet: the integer network (``nas.deploy.integer.from_network``).
    out_dir: the folder; ``make host`` / ``make riscv`` there build it.
    images: float NHWC images (what ``integer.run`` takes) to compile into the bare-metal build (quantised
      with the network's input quantiser); None: no images (the bare-metal program then runs none).

  Returns:
    the folder.

  Raises:
    ValueError: one sentence naming a layer or bit-width the C kernels do not implement.
  """
  network_h, network_c = network_sources(inet)
  images_h, images_c = images_sources(inet, images)
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  for name in RUNTIME_FILES:
    shutil.copyfile(RUNTIME / name, out / name)
  for name, text in (("network.h", network_h), ("network.c", network_c), ("images.h", images_h),
                     ("images.c", images_c)):
    (out / name).write_text(text)
  return out
