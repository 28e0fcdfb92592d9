"""A BERT encoder with sentence-transformers' mean pooling and L2 normalisation, as one ONNX graph.

Inputs ``input_ids`` and ``attention_mask`` (int64, batch x tokens); output ``embedding``
(float32, batch x hidden), each row unit-length. The arithmetic is Hugging Face's ``BertModel``
(post-LayerNorm, erf GELU, absolute positions, token type 0) followed by
``sentence_transformers.models.Pooling(mean)`` and ``Normalize``:

    h   = LN(word[ids] + pos[0..S) + type[0])
    per layer: a = LN(h + Wo·attn(Wq·h, Wk·h, Wv·h, mask) + bo);  h = LN(a + W2·gelu(W1·a + b1) + b2)
    out = normalise(sum(h · mask) / max(sum(mask), 1e-9))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17  # LayerNormalization


@dataclass(frozen=True)
class BertShape:
    hidden: int
    heads: int
    layers: int
    eps: float

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> BertShape:
        positions = config.get("position_embedding_type", "absolute")
        if config.get("hidden_act", "gelu") != "gelu" or positions != "absolute":
            raise ValueError("only BERT with erf GELU and absolute positions is supported")
        return cls(
            hidden=int(config["hidden_size"]),
            heads=int(config["num_attention_heads"]),
            layers=int(config["num_hidden_layers"]),
            eps=float(config["layer_norm_eps"]),
        )


class _Graph:
    def __init__(self, weights: dict[str, npt.NDArray[np.generic]]) -> None:
        self.weights = weights
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0
        self._names: set[str] = set()

    def const(self, name: str, value: npt.ArrayLike, dtype: type = np.float32) -> str:
        if name in self._names:
            return name
        self._names.add(name)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value, dtype=dtype), name))
        return name

    def weight(self, name: str) -> str:
        return self.const(name, self.weights[name])

    def op(self, op_type: str, *inputs: str, **attrs: Any) -> str:
        self._count += 1
        out = f"{op_type.lower()}_{self._count}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out

    def linear(self, x: str, prefix: str, scale: float = 1.0) -> str:
        """``x @ W.T + b`` of the torch ``Linear`` named ``prefix`` (its output scaled by ``scale``)."""
        w = np.asarray(self.weights[f"{prefix}.weight"], dtype=np.float32).T * scale
        b = np.asarray(self.weights[f"{prefix}.bias"], dtype=np.float32) * scale
        product = self.op("MatMul", x, self.const(f"{prefix}.weight.T", w))
        return self.op("Add", product, self.const(f"{prefix}.bias", b))

    def layer_norm(self, x: str, prefix: str, eps: float) -> str:
        scale, shift = self.weight(f"{prefix}.weight"), self.weight(f"{prefix}.bias")
        return self.op("LayerNormalization", x, scale, shift, axis=-1, epsilon=eps)


def build_sentence_encoder(weights: dict[str, npt.NDArray[np.generic]], shape: BertShape) -> onnx.ModelProto:
    """The float32 graph of the BERT ``weights`` (Hugging Face names, ``BertModel`` without prefix)."""
    g = _Graph(weights)
    head_dim = shape.hidden // shape.heads
    ids, mask = "input_ids", "attention_mask"
    zero, one = g.const("i_0", [0], np.int64), g.const("i_1", [1], np.int64)

    # embeddings: token type is always 0 here, so its row is folded into the position table
    positions = np.asarray(weights["embeddings.position_embeddings.weight"], dtype=np.float32)
    positions = positions + np.asarray(weights["embeddings.token_type_embeddings.weight"], dtype=np.float32)[0]
    seq_len = g.op("Slice", g.op("Shape", ids), one, g.const("i_2", [2], np.int64))
    words = g.op("Gather", g.weight("embeddings.word_embeddings.weight"), ids, axis=0)
    pos = g.op("Slice", g.const("embeddings.position_and_type", positions), zero, seq_len)
    h = g.layer_norm(g.op("Add", words, pos), "embeddings.LayerNorm", shape.eps)

    # additive attention mask, batch x 1 x 1 x S: 0 where attended, a large negative where padded
    mask_f = g.op("Cast", mask, to=TensorProto.FLOAT)
    keep = g.op("Unsqueeze", mask_f, g.const("i_1_2", [1, 2], np.int64))
    bias = g.op("Mul", g.op("Sub", g.const("f_1", 1.0), keep), g.const("f_masked", float(np.finfo(np.float32).min)))

    split_heads = g.const("heads_shape", [0, 0, shape.heads, head_dim], np.int64)
    merge_heads = g.const("hidden_shape", [0, 0, shape.hidden], np.int64)
    for i in range(shape.layers):
        p = f"encoder.layer.{i}"
        # 1/sqrt(d) folded into the query projection
        q = g.linear(h, f"{p}.attention.self.query", scale=1.0 / float(np.sqrt(head_dim)))
        k = g.linear(h, f"{p}.attention.self.key")
        v = g.linear(h, f"{p}.attention.self.value")
        q = g.op("Transpose", g.op("Reshape", q, split_heads), perm=[0, 2, 1, 3])
        k = g.op("Transpose", g.op("Reshape", k, split_heads), perm=[0, 2, 3, 1])
        v = g.op("Transpose", g.op("Reshape", v, split_heads), perm=[0, 2, 1, 3])
        probs = g.op("Softmax", g.op("Add", g.op("MatMul", q, k), bias), axis=-1)
        context = g.op("Reshape", g.op("Transpose", g.op("MatMul", probs, v), perm=[0, 2, 1, 3]), merge_heads)
        attended = g.linear(context, f"{p}.attention.output.dense")
        a = g.layer_norm(g.op("Add", attended, h), f"{p}.attention.output.LayerNorm", shape.eps)
        inner = g.linear(a, f"{p}.intermediate.dense")
        gelu = g.op(
            "Mul",
            g.op("Mul", inner, g.const("f_half", 0.5)),
            g.op("Add", g.op("Erf", g.op("Div", inner, g.const("f_sqrt2", float(np.sqrt(2.0))))), "f_1"),
        )
        h = g.layer_norm(g.op("Add", g.linear(gelu, f"{p}.output.dense"), a), f"{p}.output.LayerNorm", shape.eps)

    # mean pooling over attended tokens, then L2 normalisation (sentence-transformers' clamps)
    weights_3d = g.op("Unsqueeze", mask_f, g.const("i_neg1", [-1], np.int64))
    summed = g.op("ReduceSum", g.op("Mul", h, weights_3d), one, keepdims=0)
    counts = g.op("Max", g.op("ReduceSum", weights_3d, one, keepdims=0), g.const("f_1e-9", 1e-9))
    mean = g.op("Div", summed, counts)
    norm = g.op("Max", g.op("ReduceL2", mean, axes=[1], keepdims=1), g.const("f_1e-12", 1e-12))
    out = g.op("Div", mean, norm)
    g.nodes.append(helper.make_node("Identity", [out], ["embedding"], name="embedding"))

    graph = helper.make_graph(
        g.nodes,
        "sentence_encoder",
        [
            helper.make_tensor_value_info(ids, TensorProto.INT64, ["batch", "tokens"]),
            helper.make_tensor_value_info(mask, TensorProto.INT64, ["batch", "tokens"]),
        ],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", shape.hidden])],
        g.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="opsctl")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model
