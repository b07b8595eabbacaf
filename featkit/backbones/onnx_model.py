"""ONNX backbones run with onnxruntime (no TensorFlow import).

A model's contract is read from the JSON beside it (same stem, `.json`: input_name, input_layout, input_dtype,
input_size, dynamic_size, output_name, feature_size, preprocessing_in_graph), else inferred from the graph:
the first input, and a 2-D output (preferring one named like 'features'). Keyword options override both.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from featkit.backbones.base import Backbone, check_pooling, check_size, file_identity
from featkit.core.errors import FeatkitError
from featkit.core.schema import BackboneSpec, OnnxContract

MIN_DYNAMIC_SIZE = 32  # CNN graphs downsample by 32; the shared models run at any H, W >= 32
_DTYPES = {"tensor(uint8)": "uint8", "tensor(float)": "float32"}
_FEATURE_WORDS = ("feature", "embed", "pool")


def read_contract(path: Path) -> OnnxContract:
    """The JSON beside `path` (same stem) as an OnnxContract (every field None when there is no JSON)."""
    meta_path = path.with_suffix(".json")
    if not meta_path.is_file():
        return OnnxContract()
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise FeatkitError(f"{meta_path} is not valid JSON ({e}): fix or remove it.") from None
    if not isinstance(meta, dict):
        raise FeatkitError(f"{meta_path} should hold a JSON object describing {path.name}.")
    return OnnxContract.from_dict(meta, where=str(meta_path))


def contract_size(meta: OnnxContract) -> int | None:
    """The native input size a contract gives (input_size: N or [N, N]), or None."""
    return meta.size


def providers() -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    return (["CUDAExecutionProvider"] if "CUDAExecutionProvider" in available else []) + ["CPUExecutionProvider"]


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the cores this process may use (containers, taskset)
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# int8 models on x86-64 CPUs without VNNI (SSE4.1, AVX2, AVX-512 before VNNI): ORT's fast uint8 x int8 kernels sum
# pairs of products in int16 (vpmaddubsw), which saturates for weights outside [-64, 63]. This session option has ORT
# convert such weights to its uint8 x uint8 kernels on those CPUs only (a no-op with VNNI, on ARM, or for float32
# models). Without it, MobileNetV2 int8 features on an AVX2-only CPU had a median cosine of 0.86 to float32 (0.98
# with it; 0.98 also when ORT runs the QDQ graph unfused, so the model was never the problem).
X64_QUANT_PRECISION = "session.x64quantprecision"


def session_settings() -> dict[str, Any]:
    """onnxruntime session settings for this machine, recorded in the cache meta (`onnxruntime_session`).

    One intra-op thread per core this process may use (ORT's own default counts physical cores of the whole
    machine, which oversubscribes a container limited to fewer); all graph optimisations (constant folding,
    fusions, and for int8 models the QDQ -> integer-kernel fusions); sequential execution (a CNN is a chain of
    operators: the parallel executor only adds scheduling overhead). FEATKIT_ONNX_THREADS overrides the thread
    count: one Ray actor among several on a node must not spin on every core.
    """
    threads = onnx_threads() or available_cores()
    return {
        "intra_op_num_threads": threads,
        "inter_op_num_threads": 1,
        "graph_optimization_level": "ORT_ENABLE_ALL",
        "execution_mode": "ORT_SEQUENTIAL",
        "config": {X64_QUANT_PRECISION: "1"},
    }


THREADS_VAR = "FEATKIT_ONNX_THREADS"


def onnx_threads() -> int | None:
    """The thread count FEATKIT_ONNX_THREADS asks for (None when unset or empty); a one-line error naming the
    variable unless it is a whole number >= 1."""
    raw = os.environ.get(THREADS_VAR, "").strip()
    if not raw:
        return None
    try:
        threads = int(raw)
    except ValueError:
        threads = 0
    if threads < 1:
        raise FeatkitError(
            f"{THREADS_VAR}={raw!r}: give a whole number of threads >= 1 (e.g. {THREADS_VAR}=4), or unset it "
            "to use every core this process may use."
        )
    return threads


def open_session(path: Path, settings: dict[str, Any] | None = None):
    import onnxruntime as ort

    settings = settings or session_settings()
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # errors only
    opts.intra_op_num_threads = settings["intra_op_num_threads"]
    opts.inter_op_num_threads = settings["inter_op_num_threads"]
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, settings["graph_optimization_level"])
    opts.execution_mode = getattr(ort.ExecutionMode, settings["execution_mode"])
    for key, value in settings.get("config", {}).items():
        opts.add_session_config_entry(key, value)
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=providers())
    except Exception as e:  # onnxruntime raises its own exception types
        first = " ".join(str(e).split())[:300]
        raise FeatkitError(f"{path} could not be loaded by onnxruntime ({first}).") from None


def _pick_output(sess, path: Path) -> Any:
    outs = sess.get_outputs()
    two_d = [o for o in outs if len(o.shape) == 2]
    named = [o for o in two_d if any(w in o.name.lower() for w in _FEATURE_WORDS)]
    if len(named) >= 1:
        return named[0]
    if len(two_d) == 1:
        return two_d[0]
    listing = ", ".join(f"{o.name} {o.shape}" for o in outs)
    raise FeatkitError(
        f"{path} has no single 2-D feature output to use (outputs: {listing}): "
        f"name one with onnx_output=NAME or in {path.with_suffix('.json').name}."
    )


class OnnxBackbone(Backbone):
    kind = "onnx"

    def __init__(
        self,
        path: str | os.PathLike,
        size: int | None = None,
        pooling: str = "avg",
        batch_size: int | None = None,
        *,
        onnx_input: str | None = None,
        onnx_output: str | None = None,
        input_dtype: str | None = None,
        input_layout: str | None = None,
        input_mean: list[float] | None = None,
        input_std: list[float] | None = None,
    ):
        path = Path(os.path.expanduser(str(path)))
        if not path.is_file():
            raise FeatkitError(f"ONNX model {path} does not exist: give the path of a .onnx file.")
        check_pooling(pooling, path.name)
        if pooling != "avg":
            raise FeatkitError(
                f"{path.name} outputs features that are already pooled (global average), so "
                f"pooling={pooling!r} is not possible: use pooling 'avg' or a Keras backbone."
            )
        meta = read_contract(path)
        self.path = path.resolve()
        self.name = meta.name or path.stem
        self.pooling = "avg"
        self.weights = file_identity(self.path)
        self.precision = meta.precision
        self.quantization = meta.quantization if self.precision != "float32" else None
        self.session_settings = session_settings()
        self._sess = sess = open_session(self.path, self.session_settings)

        # input
        inputs = {i.name: i for i in sess.get_inputs()}
        in_name = onnx_input or meta.input_name or sess.get_inputs()[0].name
        if in_name not in inputs:
            raise FeatkitError(f"{path} has no input {in_name!r} (inputs: {', '.join(inputs)}).")
        inp = inputs[in_name]
        graph_dtype = _DTYPES.get(inp.type)
        dtype = input_dtype or meta.input_dtype or graph_dtype
        dtype = {"float": "float32"}.get(str(dtype), str(dtype))
        if graph_dtype is None or dtype != graph_dtype:
            raise FeatkitError(
                f"{path}: input {in_name!r} is {inp.type}, declared {dtype}; only uint8 or float32 "
                f"image inputs are supported."
            )
        shape = list(inp.shape)
        if len(shape) != 4:
            raise FeatkitError(f"{path}: input {in_name!r} has shape {shape}; a 4-D image batch is needed.")
        layout = input_layout or meta.input_layout or ("NHWC" if shape[3] == 3 else "NCHW" if shape[1] == 3 else None)
        if layout not in ("NHWC", "NCHW"):
            raise FeatkitError(
                f"{path}: cannot tell the layout of input {in_name!r} {shape}; pass input_layout='NHWC' or 'NCHW'."
            )
        channels, other = (shape[3], shape[1]) if layout == "NHWC" else (shape[1], shape[3])
        # checked here: onnxruntime would fail on the first batch, or (a symbolic size) read the photos sideways
        if (isinstance(channels, int) and channels != 3) or (not isinstance(channels, int) and other == 3):
            given = "input_layout" if input_layout else f"{path.with_suffix('.json').name}: input_layout"
            raise FeatkitError(
                f"{given} {layout} does not fit input {in_name!r} {shape} of {path} ("
                + (
                    f"{channels} channels where {layout} puts them"
                    if isinstance(channels, int)
                    else f"its 3 channels are where {'NCHW' if layout == 'NHWC' else 'NHWC'} puts them"
                )
                + "): fix input_layout (NHWC or NCHW)."
            )
        hw = shape[1:3] if layout == "NHWC" else shape[2:4]
        fixed = all(isinstance(d, int) and d > 0 for d in hw)
        if fixed and hw[0] != hw[1]:
            raise FeatkitError(
                f"{path}: input {in_name!r} is fixed at {hw[0]}x{hw[1]}; only square inputs are supported."
            )
        if meta.dynamic_size is False and not fixed and meta.size:
            hw = [meta.size, meta.size]
            fixed = True
        native = contract_size(meta) or (hw[0] if fixed else None)
        if size is None:
            if native is None:
                raise FeatkitError(f"{path} accepts any input size and says no native one: pass --size.")
            size = native
        if fixed:
            if size != hw[0]:
                raise FeatkitError(
                    f"{path} has a fixed input size of {hw[0]}x{hw[1]}; size={size} is not "
                    f"possible (use --size {hw[0]})."
                )
            self.size = check_size(size, 1, self.name)
        else:
            self.size = check_size(size, MIN_DYNAMIC_SIZE, self.name)
        self.native_size = int(native) if native else self.size
        self._in_name, self._layout, self._dtype = in_name, layout, dtype

        # preprocessing
        in_graph = meta.preprocessing_in_graph
        self._mean = self._std = None
        if input_mean is not None or input_std is not None:
            if dtype != "float32":
                raise FeatkitError(f"{path}: input_mean/input_std need a float32 input; {in_name!r} is {dtype}.")
            self._mean = np.asarray(input_mean if input_mean is not None else 0.0, np.float32)
            self._std = np.asarray(input_std if input_std is not None else 1.0, np.float32)
            self.preprocessing = f"outside graph: (x - {self._mean.tolist()}) / {self._std.tolist()}"
        elif in_graph:
            self.preprocessing = f"in graph: {in_graph}"
        elif dtype == "uint8":
            self.preprocessing = "in graph (uint8 input; not described)"
        else:
            raise FeatkitError(
                f"{path} takes float input but says nothing about its preprocessing: add "
                f"'preprocessing_in_graph' to {path.with_suffix('.json').name} if it takes "
                f"0..255 values, or pass input_mean/input_std (0..255 units)."
            )

        # output
        if onnx_output or meta.output_name:
            out_name = onnx_output or meta.output_name
            outs = {o.name: o for o in sess.get_outputs()}
            if out_name not in outs:
                raise FeatkitError(f"{path} has no output {out_name!r} (outputs: {', '.join(outs)}).")
            out = outs[out_name]
        else:
            out = _pick_output(sess, path)
        if len(out.shape) != 2:
            raise FeatkitError(
                f"{path}: output {out.name!r} has shape {out.shape}; a 2-D (N, features) output is needed."
            )
        self._out_name = out.name
        self._providers = sess.get_providers()
        self.batch_size = int(batch_size) if batch_size else (256 if "CUDAExecutionProvider" in self._providers else 64)
        if self.batch_size < 1:
            raise FeatkitError(f"batch size should be at least 1; got {batch_size}.")
        dim = out.shape[1] if isinstance(out.shape[1], int) else None
        if dim is None:  # symbolic: ask the graph
            dim = self._run(np.zeros((1, self.size, self.size, 3), np.uint8)).shape[1]
        claimed = meta.feature_size
        if claimed is not None and claimed != dim:  # the cache's metadata would disagree with its arrays
            raise FeatkitError(
                f"{path.with_suffix('.json')}: feature_size is {claimed}, but output {out.name!r} of {path.name} "
                f"gives {dim} features: fix feature_size (or remove it: the graph says it)."
            )
        self.feature_dim = int(dim)

    def feed(self, chunk: np.ndarray) -> dict[str, np.ndarray]:
        """The model's input for a batch of uint8 RGB photos (layout, dtype, normalisation as the contract says)."""
        x = chunk
        if self._layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        if self._dtype == "float32":
            x = x.astype(np.float32)
            if self._mean is not None and self._std is not None:
                shape = (1, -1, 1, 1) if self._layout == "NCHW" else (1, 1, 1, -1)
                x -= self._mean.reshape(shape) if self._mean.ndim else self._mean
                x /= self._std.reshape(shape) if self._std.ndim else self._std
        else:
            x = np.ascontiguousarray(x)  # no copy for a contiguous NHWC uint8 batch
        return {self._in_name: x}

    def _run(self, chunk: np.ndarray) -> np.ndarray:
        out = self._sess.run([self._out_name], self.feed(chunk))[0]
        return out if out.dtype == np.float32 else out.astype(np.float32)

    @property
    def options(self) -> dict[str, Any]:
        """The keyword options that rebuild exactly this backbone (stored in the spec)."""
        opts: dict[str, Any] = {
            "onnx_input": self._in_name,
            "onnx_output": self._out_name,
            "input_dtype": self._dtype,
            "input_layout": self._layout,
        }
        if self._mean is not None and self._std is not None:
            opts["input_mean"], opts["input_std"] = self._mean.tolist(), self._std.tolist()
        return opts

    @property
    def spec(self) -> BackboneSpec:
        import onnxruntime as ort

        from featkit.core.version import __version__

        extra = {"input": f"{self._dtype} RGB {self._layout}", "native_size": self.native_size}
        if self.precision != "float32":
            q = self.quantization or {}
            extra["precision"] = self.precision
            extra["quantization"] = {
                k: q.get(k) for k in ("method", "source_model", "calibration_photos", "calibration_size")
            }
        return BackboneSpec(
            kind="onnx",
            name=self.name,
            size=self.size,
            pooling=self.pooling,
            weights=dict(self.weights),
            preprocessing=self.preprocessing,
            feature_dim=self.feature_dim,
            options=self.options,
            versions={"featkit": __version__, "onnxruntime": ort.__version__, "numpy": np.__version__},
            extra=extra,
        )


def onnx_table(folder: str | os.PathLike) -> list[dict[str, Any]]:
    """One row per .onnx file in `folder`: from its JSON when present, else from the graph."""
    rows = []
    for path in sorted(Path(folder).expanduser().glob("*.onnx")):
        row: dict[str, Any] = {"name": path.stem, "kind": "onnx", "path": str(path), "weights_file": path.name}
        try:
            meta = read_contract(path)
            if meta.feature_size and meta.size:
                row.update(
                    native_size=meta.size,
                    feature_dim=meta.feature_size,
                    preprocessing=f"in graph: {meta.preprocessing_in_graph or 'not described'}",
                    dynamic_size=bool(meta.dynamic_size),
                )
            else:
                try:
                    bb = OnnxBackbone(path)
                except FeatkitError:  # dynamic size and no native one: probe at 224
                    bb = OnnxBackbone(path, size=224)
                row.update(native_size=bb.native_size, feature_dim=bb.feature_dim, preprocessing=bb.preprocessing)
        except FeatkitError as e:
            row["error"] = str(e)
        rows.append(row)
    return rows
