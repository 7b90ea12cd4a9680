"""model.onnx of a ViT: int8 matmuls in QDQ form, softmax, LayerNorm and GELU in float, as the network trains.

Why this form. ``nas.models.vit`` fake-quantises only the operands of its matmuls: every linear's input and
weights, Q and K (the operands of Q K^T), the softmax output P (unsigned) and V; LayerNorm, the softmax, GELU,
the residual additions, the class token and the positions are float32. The QDQ graph computes exactly that:
QuantizeLinear -> DequantizeLinear around each quantised tensor, float ops between them, and onnxruntime's CPU
provider fuses each DQ(x) x DQ(w) -> MatMul into an integer kernel (MatMulIntegerToFloat: int8 / uint8 operands,
int32 accumulation, the float scale after it; QLinearMatMul where an 8-bit QuantizeLinear follows; read from its
optimised graph by :func:`kernel_counts`). I-BERT's
integer-only polynomials for GELU, softmax and LayerNorm (Kim et al., ICML 2021) would compute another function
than the one the search measured and fine-tuned; its accuracy would have to be recovered by training through
them, and onnxruntime's CPU provider has no kernels for that form.

The graph, per image (NHWC float input ``image``, float ``logits``):
  patches   the image cut into patch x patch tiles (Reshape, Transpose): the patch embedding's convolution
            (kernel = stride = patch, no padding) is a MatMul over the tiles' (kh, kw, c) rows, so it runs in
            the same integer kernel; the class-token row is a zero row padded in front, the class token added
            with the positions (one float32 constant, the same sums the JAX pass makes).
  block     x + proj(attn(LN(x))), then x + fc2(GELU(fc1(LN(x)))): LayerNormalization (opset 17, the model's
            epsilon); each linear QDQ(x) @ DQ(int8 w, per-column scales) + float bias; attention per head
            QDQ(Q) @ QDQ(K)^T x d^-1/2 -> Softmax -> QDQ(P, uint8) @ QDQ(V); GELU x 0.5 (1 + erf(x sqrt(1/2)))
            (JAX's approximate=False: 0.5 x erfc(-x sqrt(1/2)), equal in exact arithmetic).
  head      LayerNormalization, the class token (or the mean of the tokens), QDQ, MatMul, bias, kept (N, 1, embed)
            until the end: onnxruntime turns a 2-D MatMul + Add into a float Gemm before its QDQ fusions.
A skipped sub-block (``nas.deploy.vit_int``) is no node. Each quantised tensor is stored in int8 / uint8 whatever
its bit-width (a sub-8-bit weight is an int8 value in its own range). QuantizeLinear rounds half to even, as the
fake quantiser does, but saturates at the 8-bit range only, so a sub-8-bit activation is first clipped in float
to [-Q_N s, Q_P s]: ``round(clip(x, -Q_N s, Q_P s) / s)`` equals ``round(clip(x / s, -Q_N, Q_P))`` for every
float32 x (a clipped bound divides to Q_P within float rounding, which rounds to Q_P). An integer Clip after
QuantizeLinear would be exact too, but keeps onnxruntime from fusing a matmul that reads a signed sub-8-bit
tensor (measured: float MatMuls). N:M weights are dense int8 tensors with zeros where the pattern prunes (ONNX
has no N:M format; ``nas.deploy.vit_pack`` stores them compressed). Node names start with the layer or block
they belong to.

References:
  Kim et al., "I-BERT: Integer-only BERT Quantization", ICML 2021 (the integer-only alternative not taken).
  Dosovitskiy et al., ICLR 2021 (ViT). ONNX operators QuantizeLinear, DequantizeLinear, LayerNormalization.
"""
from __future__ import annotations

import numpy as np

from nas.deploy.onnx_graph import Graph
from nas.deploy.vit_int import ActQ, Attention, Linear, Mlp, Norm, VitNetwork
from nas.ops.quant import qrange

OPSET = 21  # LayerNormalization needs 17; per-axis DequantizeLinear 13
INT_KERNELS = ("MatMulIntegerToFloat", "QLinearMatMul", "MatMulInteger", "DynamicQuantizeMatMul", "QGemm")  # integer matmuls


class _Builder:
  """The graph under construction: ``g`` (nodes, initializers) and the ops shared by every part."""

  def __init__(self):
    from onnx import TensorProto
    self.g = Graph()
    self.T = TensorProto

  def const(self, name, value, dtype=None):
    return self.g.const(name, value, dtype)

  def node(self, op, inputs, prefix, **attrs):
    return self.g.node(op, inputs, prefix, **attrs)

  def qdq(self, x: str, act: ActQ, prefix: str) -> str:
    """x [-> float Clip to the quantiser's own range] -> QuantizeLinear (int8 / uint8) -> DequantizeLinear."""
    qn, qp = qrange(act.bits, act.signed)
    dtype = self.T.INT8 if act.signed else self.T.UINT8
    step = np.float32(act.step)
    if act.bits < 8:  # QuantizeLinear saturates at the 8-bit range only; see the module docstring
      x = self.node("Clip", [x, self.const(f"{prefix}/min", np.float32(-qn * step)),
                             self.const(f"{prefix}/max", np.float32(qp * step))], prefix)
    s, zp = self.const(f"{prefix}/scale", step), self.const(f"{prefix}/zero", 0, dtype)
    return self.node("DequantizeLinear", [self.node("QuantizeLinear", [x, s, zp], prefix), s, zp], prefix)

  def linear(self, x: str, layer: Linear, bias: bool = True) -> str:
    """QDQ(x) @ DQ(int8 weights, one scale per output column) [+ float bias], over the last axis."""
    p = layer.name
    cout = layer.w_int.shape[1]
    w = self.node("DequantizeLinear", [self.const(f"{p}/w_int", layer.w_int, self.T.INT8),
                                       self.const(f"{p}/w_scale", layer.w_step.astype(np.float32)),
                                       self.const(f"{p}/w_zero", np.zeros(cout, np.int64), self.T.INT8)], p, axis=1)
    y = self.node("MatMul", [self.qdq(x, layer.act, f"{p}/input"), w], p)
    return self.node("Add", [y, self.const(f"{p}/bias", layer.bias)], p) if bias else y

  def layer_norm(self, x: str, norm: Norm, prefix: str) -> str:
    return self.node("LayerNormalization", [x, self.const(f"{prefix}/scale", norm.scale),
                                            self.const(f"{prefix}/bias", norm.bias)], prefix, axis=-1,
                     epsilon=norm.epsilon)

  def heads(self, x: str, a: Attention, perm, prefix: str) -> str:
    """(N, T, H d) -> (N, H, T, d) (perm [0, 2, 1, 3]) or (N, H, d, T) ([0, 2, 3, 1])."""
    shape = self.const(f"{prefix}/shape", np.asarray([0, 0, a.heads, a.head_dim], np.int64))
    return self.node("Transpose", [self.node("Reshape", [x, shape], prefix)], prefix, perm=perm)


def _attention(b: _Builder, x: str, a: Attention, prefix: str) -> str:
  """x + proj(softmax(QDQ(Q) QDQ(K)^T / sqrt(d)) -> QDQ(P) @ QDQ(V)) on LN(x); no heads left: x + proj's bias."""
  if a.heads == 0:
    return b.node("Add", [x, b.const(f"{a.proj.name}/bias", a.proj.bias)], prefix)
  y = b.layer_norm(x, a.ln, f"{prefix}.ln1")
  q = b.qdq(b.heads(b.linear(y, a.q), a, [0, 2, 1, 3], f"{prefix}.q"), a.q_act, f"{prefix}.q/act")
  k = b.qdq(b.heads(b.linear(y, a.k), a, [0, 2, 3, 1], f"{prefix}.k"), a.k_act, f"{prefix}.k/act")
  v = b.qdq(b.heads(b.linear(y, a.v), a, [0, 2, 1, 3], f"{prefix}.v"), a.v_act, f"{prefix}.v/act")
  scores = b.node("Mul", [b.node("MatMul", [q, k], f"{prefix}.qk"),
                          b.const(f"{prefix}.qk/scale", np.float32(a.head_dim ** -0.5))], f"{prefix}.qk")
  p = b.qdq(b.node("Softmax", [scores], f"{prefix}.softmax", axis=-1), a.p_act, f"{prefix}.p/act")
  o = b.node("Transpose", [b.node("MatMul", [p, v], f"{prefix}.av")], f"{prefix}.av", perm=[0, 2, 1, 3])
  o = b.node("Reshape", [o, b.const(f"{prefix}.av/shape", np.asarray([0, 0, a.heads * a.head_dim], np.int64))],
             f"{prefix}.av")
  return b.node("Add", [x, b.linear(o, a.proj)], prefix)


def _mlp(b: _Builder, x: str, m: Mlp, prefix: str) -> str:
  """x + fc2(GELU(fc1(LN(x)))), GELU = x 0.5 (1 + erf(x sqrt(1/2))); no fc1 column left: x + fc2's bias."""
  if m.fc1.w_int.shape[1] == 0:
    return b.node("Add", [x, b.const(f"{m.fc2.name}/bias", m.fc2.bias)], prefix)
  h = b.linear(b.layer_norm(x, m.ln, f"{prefix}.ln2"), m.fc1)
  g = f"{prefix}.gelu"
  erf = b.node("Erf", [b.node("Mul", [h, b.const(f"{g}/sqrt_half", np.sqrt(0.5).astype(np.float32))], g)], g)
  half = b.node("Mul", [h, b.const(f"{g}/half", np.float32(0.5))], g)
  gelu = b.node("Mul", [half, b.node("Add", [erf, b.const(f"{g}/one", np.float32(1.0))], g)], g)
  return b.node("Add", [x, b.linear(gelu, m.fc2)], prefix)


def _tokens(b: _Builder, vnet: VitNetwork) -> str:
  """The image's patch embeddings, the class-token row and the positions: (N, tokens, embed)."""
  h, w, c = vnet.input_shape
  p = vnet.patch_size
  tiles = b.node("Reshape", ["image", b.const("patch/tiles", np.asarray([-1, h // p, p, w // p, p, c], np.int64))],
                 "patch")
  tiles = b.node("Transpose", [tiles], "patch", perm=[0, 1, 3, 2, 4, 5])
  rows = (h // p) * (w // p)
  tiles = b.node("Reshape", [tiles, b.const("patch/rows", np.asarray([-1, rows, p * p * c], np.int64))], "patch")
  t = b.linear(tiles, vnet.patch, bias=False)
  pos = vnet.pos
  if vnet.cls_token is not None:  # JAX: concat([cls, t]) + pos; here pad(t) + [cls + pos_0, pos_1, ...]
    t = b.node("Pad", [t, b.const("tokens/pads", np.asarray([0, 1, 0, 0, 0, 0], np.int64))], "tokens")
    pos = np.concatenate([(vnet.cls_token + pos[0])[None], pos[1:]]).astype(np.float32)
  return b.node("Add", [t, b.const("tokens/pos", pos[None])], "tokens")


def vit_model(vnet: VitNetwork):
  """The ViT as an ONNX QDQ graph (see the module docstring); checked by ``onnx.checker`` by the caller."""
  b = _Builder()
  T = b.T
  h, w, c = vnet.input_shape
  x_info = b.g.h.make_tensor_value_info("image", T.FLOAT, ["N", h, w, c])
  y_info = b.g.h.make_tensor_value_info("logits", T.FLOAT, ["N", vnet.head.w_int.shape[1]])
  x = _tokens(b, vnet)
  for i, block in enumerate(vnet.blocks):
    if block.attn is not None:
      x = _attention(b, x, block.attn, f"blocks.{i}.attn")
    if block.mlp is not None:
      x = _mlp(b, x, block.mlp, f"blocks.{i}.mlp")
  x = b.layer_norm(x, vnet.norm, "norm")
  # The pooled tokens stay (N, 1, embed) through the head: a 2-D MatMul + Add would become a float Gemm
  # (onnxruntime's MatMulAddFusion runs before its QDQ fusions); a 3-D one runs as MatMulIntegerToFloat.
  if vnet.pool == "cls":
    x = b.node("Gather", [x, b.const("pool/index", np.asarray([0], np.int64))], "pool", axis=1)
  else:
    x = b.node("ReduceMean", [x, b.const("pool/axes", np.asarray([1], np.int64))], "pool", keepdims=1)
  x = b.linear(x, vnet.head)
  b.node("Squeeze", [x, b.const("head/axes", np.asarray([1], np.int64))], "head")
  b.g.nodes[-1].output[0] = "logits"
  return b.g.model([x_info], [y_info], "vit_qdq", [("", OPSET)])


def kernel_counts(model_bytes: bytes) -> dict[str, int]:
  """Op type -> count of the nodes onnxruntime runs after its graph optimisations (QDQ fusion)."""
  import pathlib
  import tempfile

  import onnx

  from nas.deploy.ort import ort_session
  with tempfile.TemporaryDirectory() as folder:
    path = pathlib.Path(folder) / "optimized.onnx"
    ort_session(model_bytes, optimized_path=path)
    nodes = onnx.load(path).graph.node
  out: dict[str, int] = {}
  for n in nodes:
    out[n.op_type] = out.get(n.op_type, 0) + 1
  return dict(sorted(out.items()))
