"""ONNX export of a folded model (issue 18): the exact integer graph, which must reproduce the
float32 folded model bit for bit, and the deployable QDQ graph that onnxruntime fuses into its
integer kernels.

Imports onnx and onnxruntime (the `export` extra): only a run that asks for an export, or the
bench, imports this package.
"""

from gdrq_bench.export.builder import OPSET
from gdrq_bench.export.exact import export_exact
from gdrq_bench.export.parity import ParityError, check_parity
from gdrq_bench.export.qdq import export_qdq
from gdrq_bench.export.runtime import (
    OnnxModule,
    check_integer_kernels,
    optimized_op_types,
    session,
)

__all__ = [
    "OPSET",
    "OnnxModule",
    "ParityError",
    "check_integer_kernels",
    "check_parity",
    "export_exact",
    "export_qdq",
    "optimized_op_types",
    "session",
]
