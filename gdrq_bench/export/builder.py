"""A small ONNX graph builder over onnx.helper: fresh tensor names, initializers from arrays,
one call per node."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

# Per-channel QuantizeLinear / DequantizeLinear (the `axis` attribute) need opset 13.
OPSET = 13


class GraphBuilder:
    def __init__(self, input_name: str) -> None:
        self.input = input_name
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._used: set[str] = {input_name}

    def fresh(self, hint: str) -> str:
        """A tensor name not used before, from `hint`."""
        name, index = hint, 1
        while name in self._used:
            index += 1
            name = f"{hint}_{index}"
        self._used.add(name)
        return name

    def constant(self, hint: str, value: np.ndarray | float | int, dtype: Any = None) -> str:
        """An initializer holding `value` (as `dtype` if given); its name."""
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def node(self, op: str, inputs: list[str], hint: str, **attributes: Any) -> str:
        """Append one single-output node; the name of its output."""
        output = self.fresh(hint)
        self.nodes.append(
            helper.make_node(op, inputs, [output], name=f"{op}:{output}", **attributes)
        )
        return output

    def model(self, input_shape: list[Any], outputs: list[str]) -> onnx.ModelProto:
        """The model with one float input (its batch dimension may be a name) and float
        outputs, their shapes inferred, checked."""
        graph = helper.make_graph(
            _needed(self.nodes, outputs),
            "gdrq_folded",
            [helper.make_tensor_value_info(self.input, onnx.TensorProto.FLOAT, input_shape)],
            [],
            self.initializers,
        )
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="gdrq_bench"
        )
        inferred = {
            info.name: info for info in shape_inference.infer_shapes(model).graph.value_info
        }
        model.graph.output.extend(inferred[name] for name in outputs)
        onnx.checker.check_model(model)
        return model


def _needed(nodes: list[onnx.NodeProto], outputs: list[str]) -> list[onnx.NodeProto]:
    """The nodes the outputs depend on, in their order (a Flatten whose float output gave way
    to a flattened uint8 tensor is left out)."""
    wanted, kept = set(outputs), []
    for node in reversed(nodes):
        if wanted.intersection(node.output):
            kept.append(node)
            wanted.update(node.input)
    return kept[::-1]
