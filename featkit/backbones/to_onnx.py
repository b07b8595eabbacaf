"""Backbones as ONNX graphs with featkit's own interface: uint8 RGB photos [N, S, S, 3] (input "images") ->
float32 features [N, D] (output "features"), the model's preprocessing and pooling inside.

- An ONNX backbone: its file, pruned to the feature output, with the feeding its contract asks for (NCHW layout,
  float input, mean / std) added in front (`onnx_features_model`).
- A Keras backbone (vgg16, resnet50, ...): converted once with tf2onnx into cache/models/, with a JSON contract
  beside it like the int8 models' (`keras_onnx`). The converted file is itself a backbone (`featkit extract
  --backbone FILE.onnx`), and what `featkit extract --backbone vgg16 --precision int8` quantises.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from featkit.backbones import resolve
from featkit.backbones.base import check_file_identity, file_sha256
from featkit.core.errors import FeatkitError
from featkit.core.fileio import atomic_path, read_json, write_json
from featkit.core.onnx_graph import OPSET, GraphBuilder, prune, require_export
from featkit.core.schema import BackboneSpec

CONVERSION = {"tool": "tf2onnx.convert.from_function", "opset": OPSET, "input": "uint8 RGB NHWC"}


def onnx_features_model(path: str | Path, size: int, options: dict[str, Any] | None = None):
    """The ONNX backbone at `path` as "images" uint8 NHWC [N, size, size, 3] -> "features" float32 [N, D]: its
    graph pruned to the feature output, with the contract's (or `options`') layout, dtype and mean / std in front."""
    import onnx

    from featkit.backbones.onnx_model import OnnxBackbone

    bb = OnnxBackbone(path, size=size, **(options or {}))
    opts = bb.options
    model = prune(onnx.load(str(bb.path)), [opts["onnx_input"]], [opts["onnx_output"]])
    g = GraphBuilder(f"{bb.name}_features")
    x = g.input("images", "uint8", ["N", bb.size, bb.size, 3])
    if opts["input_layout"] == "NCHW":
        x = g.op("Transpose", [x], "nchw", perm=[0, 3, 1, 2])
    if opts["input_dtype"] == "float32":
        x = g.op("Cast", [x], "float", to=1)
        if "input_mean" in opts:
            shape = (1, -1, 1, 1) if opts["input_layout"] == "NCHW" else (1, 1, 1, -1)
            mean, std = (np.asarray(opts[k], np.float32) for k in ("input_mean", "input_std"))
            x = g.op("Sub", [x, g.const(mean.reshape(shape) if mean.ndim else mean, "mean")])
            x = g.op("Div", [x, g.const(std.reshape(shape) if std.ndim else std, "std")])
    (features,) = g.embed(model, "backbone/", {opts["onnx_input"]: x})
    if bb.feature_dim and model.graph.output[0].type.tensor_type.elem_type != 1:
        features = g.op("Cast", [features], to=1)
    g.output(features, "features", "float32", ["N", bb.feature_dim])
    return g.model(doc=f"{bb.name} features at {bb.size} px")


def backbone_source(spec: BackboneSpec, cache_dir: str | Path = "cache", quiet: bool = False) -> Path:
    """The float32 .onnx file computing the features `spec` describes: an ONNX backbone's own file (checked to be
    unchanged by sha256), or a Keras backbone converted once into cache/models/."""
    if spec.kind == "onnx":
        return check_file_identity(spec.weights, "the ONNX model")
    if spec.kind == "keras":
        weights = spec.weights
        if isinstance(weights, dict):
            weights = str(check_file_identity(weights, "the weights file"))
        return keras_onnx(spec.name, spec.size, weights, spec.pooling, cache_dir, quiet=quiet)
    raise FeatkitError(f"a {spec.kind!r} backbone spec names no single model: export its parts.")


def keras_onnx(
    name: str,
    size: int | None = None,
    weights: str | None = "imagenet",
    pooling: str = "avg",
    cache_dir: str | Path = "cache",
    quiet: bool = False,
    convert: bool = True,
) -> Path:
    """The Keras backbone `name` (its preprocessing and pooling inside, uint8 NHWC input "images", fixed size)
    converted to ONNX with tf2onnx, once, in cache/models/<name>-<size>px-<pooling>-onnx-<key>.onnx with its
    contract (.json) beside it. `convert=False`: only find it (one line saying how to make it when missing)."""
    spec = resolve(name, size, weights, pooling)
    settings = {"name": spec.name, "size": spec.size, "pooling": pooling, "weights": spec.weights, **CONVERSION}
    key = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    path = Path(cache_dir) / "models" / f"{spec.name}-{spec.size}px-{pooling}-onnx-{key}.onnx"
    if _complete(path, settings):
        return path
    if not convert:
        raise FeatkitError(
            f"no ONNX copy of the Keras backbone {spec.name} at {spec.size} px in {path.parent}: run `featkit "
            f"extract --backbone {name} --size {spec.size} --precision int8` (or `featkit export model`) first."
        )
    tf2onnx = require_export("tf2onnx", f"converting the Keras backbone {spec.name} to ONNX")
    from featkit.backbones.keras_zoo import keras_base, weights_arg
    from featkit.core.tfkeras import tf_keras

    say = (lambda m: None) if quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    say(f"converting the Keras backbone {spec.name} ({spec.size} px) to ONNX with tf2onnx, once...")
    started = time.perf_counter()
    tf, keras = tf_keras()
    model, preprocess = keras_base(spec.name, spec.size, weights_arg(weights, spec.name), pooling)
    signature = [tf.TensorSpec((None, spec.size, spec.size, 3), tf.uint8, name="images")]

    @tf.function(input_signature=signature, autograph=False)
    def features(x):
        return {"features": model(preprocess(tf.cast(x, tf.float32)), training=False)}

    try:
        proto, _ = tf2onnx.convert.from_function(features, input_signature=signature, opset=OPSET)
    except Exception as e:  # tf2onnx raises many kinds
        raise FeatkitError(f"tf2onnx could not convert {spec.name} ({' '.join(str(e).split())[:200]}).") from None
    import onnx

    probe = np.random.default_rng(0).integers(0, 256, (2, spec.size, spec.size, 3), dtype=np.uint8)
    want = np.asarray(features(probe)["features"])
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))
        got = _run(tmp, probe)
        diff = float(np.abs(got - want).max() / max(float(np.abs(want).max()), 1e-6))
        if not diff < 1e-3:
            raise FeatkitError(f"the ONNX copy of {spec.name} differs from Keras (relative {diff:.2g}): not kept.")
    contract = {
        "name": f"{spec.name}-onnx",
        "file": path.name,
        "file_size_bytes": path.stat().st_size,
        "sha256": file_sha256(path),
        "precision": "float32",
        "input_name": "images",
        "input_layout": "NHWC",
        "input_dtype": "uint8",
        "color": "RGB",
        "input_size": [spec.size, spec.size],
        "dynamic_size": False,
        "output_name": "features",
        "feature_size": int(want.shape[1]),
        "preprocessing_in_graph": spec.preprocessing,
        "opset": OPSET,
        "conversion": {
            "settings": settings,
            "keras": keras.__version__,
            "tensorflow": tf.__version__,
            "tf2onnx": tf2onnx.__version__,
            "check_relative_max_abs_diff": diff,
            "seconds": round(time.perf_counter() - started, 1),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    }
    write_json(path.with_suffix(".json"), contract)  # last: a model without its contract is not taken as complete
    say(f"ONNX copy of {spec.name}: {path} ({time.perf_counter() - started:.0f} s)")
    return path


def _run(path: Path, images: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(["features"], {"images": images})[0]


def _complete(path: Path, settings: dict) -> bool:
    contract = path.with_suffix(".json")
    if not (path.is_file() and contract.is_file()):
        return False
    try:
        meta = read_json(contract)
    except (ValueError, FeatkitError):
        return False
    return meta.get("sha256") == file_sha256(path) and (meta.get("conversion") or {}).get("settings") == settings


__all__ = ["onnx_features_model", "backbone_source", "keras_onnx", "CONVERSION"]
