"""Building ONNX graphs by hand (onnx.helper): one small builder that adds nodes and constants, embeds whole models
under a name prefix (onnx.compose.add_prefix) and writes the result. Used to turn featkit's heads, backbones and
runs into ONNX; nothing here imports TensorFlow, skl2onnx or onnxmltools.

    g = GraphBuilder()
    x = g.input("features", "float32", ["N", 1280])
    p = g.op("Softmax", [g.op("MatMul", [x, g.const(w)])], axis=-1)
    g.output(p, "probabilities", "float32", ["N", 101])
    model = g.model()
"""

from __future__ import annotations

from typing import Any

import numpy as np

from featkit.core.errors import FeatkitError
from featkit.core.extras import install_hint

OPSET = 13  # the shared ONNX backbones' opset; every part featkit makes or converts uses it
PROB_FLOOR = 1e-30  # as featkit.runs.calibration: log(0) stays finite under a temperature
EXPORT_EXTRA = install_hint("export")
_DTYPES = {"float32": 1, "uint8": 2, "int64": 7, "float16": 10}


class GraphBuilder:
    """Nodes, constants, inputs and outputs of one ONNX graph under construction (opset `OPSET`)."""

    def __init__(self, name: str = "featkit"):
        import onnx

        self.onnx = onnx
        self.name = name
        self.nodes: list = []
        self.initializers: list = []
        self.inputs: list = []
        self.outputs: list = []
        self.opsets: dict[str, int] = {"": OPSET}
        self._n = 0

    def fresh(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def input(self, name: str, dtype: str, shape: list) -> str:
        self.inputs.append(self.onnx.helper.make_tensor_value_info(name, _DTYPES[dtype], shape))
        return name

    def output(self, tensor: str, name: str, dtype: str, shape: list) -> str:
        self.nodes.append(self.onnx.helper.make_node("Identity", [tensor], [name], name=self.fresh("output")))
        self.outputs.append(self.onnx.helper.make_tensor_value_info(name, _DTYPES[dtype], shape))
        return name

    def const(self, value: Any, hint: str = "const", dtype: Any = np.float32) -> str:
        name = self.fresh(hint)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, outputs: int = 1, domain: str = "", **attrs):
        """Add one node; returns its output name (or the list of names when `outputs` > 1)."""
        names = [self.fresh(hint or op_type.lower()) for _ in range(outputs)]
        self.nodes.append(
            self.onnx.helper.make_node(
                op_type, inputs, names, name=self.fresh(f"n_{op_type}"), domain=domain or None, **attrs
            )
        )
        return names[0] if outputs == 1 else names

    def embed(self, model, prefix: str, feeds: dict[str, str]) -> list[str]:
        """Copy `model`'s nodes and weights in under `prefix`, its inputs fed from this graph's tensors `feeds`
        ({model input name: tensor}); returns the (prefixed) names of its outputs, in order."""
        onnx = self.onnx
        model = same_opset(model, self.opsets[""])
        used = {n.domain or "" for n in model.graph.node}
        for op in model.opset_import:  # only domains its nodes use (an int8 model may declare ai.onnx.ml 5, which
            domain = op.domain or ""  # no longer has the TreeEnsembleClassifier a LightGBM head needs)
            if domain != "" and domain in used:
                if self.opsets.get(domain, op.version) != op.version:
                    raise FeatkitError(
                        f"two parts of the graph need different versions of the ONNX domain {domain} "
                        f"({self.opsets[domain]} and {op.version}): export the runs separately."
                    )
                self.opsets[domain] = op.version
        model = onnx.compose.add_prefix(model, prefix)
        weights = {i.name for i in model.graph.initializer}
        for inp in model.graph.input:
            if inp.name in weights:
                continue
            source = feeds.get(inp.name[len(prefix) :])
            if source is None:
                raise FeatkitError(f"internal: no tensor feeds input {inp.name[len(prefix) :]!r} of an embedded model.")
            self.nodes.append(onnx.helper.make_node("Identity", [source], [inp.name], name=self.fresh("feed")))
        self.nodes.extend(model.graph.node)
        self.initializers.extend(model.graph.initializer)
        return [o.name for o in model.graph.output]

    def model(self, doc: str = ""):
        onnx = self.onnx
        graph = onnx.helper.make_graph(self.nodes, self.name, self.inputs, self.outputs, self.initializer_list())
        model = onnx.helper.make_model(
            graph,
            opset_imports=[onnx.helper.make_opsetid(d, v) for d, v in sorted(self.opsets.items())],
            producer_name="featkit",
            doc_string=doc,
        )
        model.ir_version = min(model.ir_version, 8)  # readable by onnxruntime >= 1.14
        return model

    def initializer_list(self) -> list:
        return list(self.initializers)

    # ---- small recipes -------------------------------------------------------------------------------
    def temperature(self, probs: str, temperature: float) -> str:
        """softmax(log(max(p, 1e-30)) / T) as featkit.runs.calibration.apply_temperature; T = 1: unchanged."""
        if float(temperature) == 1.0:
            return probs
        logp = self.op("Log", [self.op("Max", [probs, self.const(PROB_FLOOR)])])
        return self.op("Softmax", [self.op("Div", [logp, self.const(float(temperature))])], "calibrated", axis=-1)

    def batch_slice(self, tensor: str, n: str, index: int, count: int) -> str:
        """Rows index*n .. (index+1)*n of `tensor` (n: a 1-element int64 tensor), for views stacked on axis 0."""
        if count == 1:
            return tensor
        start = self.op("Mul", [n, self.const([index], "i", np.int64)])
        stop = self.op("Mul", [n, self.const([index + 1], "i", np.int64)])
        return self.op("Slice", [tensor, start, stop, self.const([0], "axis", np.int64)], "view")

    def batch_size(self, tensor: str) -> str:
        """The 1-element int64 tensor holding `tensor`'s first dimension."""
        shape = self.op("Shape", [tensor])
        return self.op("Slice", [shape, *(self.const([v], "i", np.int64) for v in (0, 1, 0))], "n")


def require_export(module: str, what: str):
    """Import `module` of the [export] extra (tf2onnx, onnxmltools, skl2onnx, pyarrow), or one line naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise FeatkitError(f"{what} needs {module.split('.')[0]}, part of the export extra: {EXPORT_EXTRA}") from None


def same_opset(model, version: int):
    """`model` at main-domain opset `version` (onnx.version_converter when it differs); one line if impossible."""
    import onnx

    current = next((op.version for op in model.opset_import if (op.domain or "") == ""), version)
    if current == version:
        return model
    try:
        return onnx.version_converter.convert_version(model, version)
    except Exception as e:  # the converter raises plain RuntimeErrors
        raise FeatkitError(
            f"an ONNX part uses opset {current}, which could not be converted to opset {version} "
            f"({' '.join(str(e).split())[:160]})."
        ) from None


def prune(model, inputs: list[str], outputs: list[str]):
    """The part of `model` that computes `outputs` from `inputs` (e.g. a backbone without its ImageNet logits)."""
    import onnx.utils

    if [o.name for o in model.graph.output] == outputs:
        return model
    return onnx.utils.Extractor(model).extract_model(inputs, outputs)


__all__ = ["GraphBuilder", "OPSET", "EXPORT_EXTRA", "prune", "require_export", "same_opset"]
