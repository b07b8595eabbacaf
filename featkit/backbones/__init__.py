"""Feature backbones behind one interface: Keras applications (by name) and ONNX files (by path).

    bb = get_backbone("mobilenetv2", size=128)            # Keras, ImageNet weights
    bb = get_backbone("../shared/models/mobilenet-v2.onnx")  # ONNX, contract from the JSON beside it
    feats = bb(photos_uint8)                                # (N, size, size, 3) uint8 RGB -> (N, D) float32
    same = get_backbone_from_spec(bb.spec)                  # rebuild from a saved spec

Importing this package, and using ONNX backbones, never imports TensorFlow.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from featkit.backbones.base import Backbone, check_file_identity, file_identity, file_sha256
from featkit.backbones.keras_zoo import MODELS as KERAS_MODELS
from featkit.backbones.keras_zoo import (  # no TF import
    KerasModel,
    build_keras_base,
    is_keras_name,
    keras_base,
    keras_table,
    lookup,
)
from featkit.backbones.names import default_backbone, locate, models_dir
from featkit.core.errors import FeatkitError
from featkit.core.schema import BackboneSpec

__all__ = [
    "Backbone",
    "BackboneSpec",
    "resolve",
    "get_backbone",
    "get_backbone_from_spec",
    "list_backbones",
    "keras_base",
    "build_keras_base",
    "KERAS_MODELS",
    "KerasModel",
    "file_sha256",
    "locate",
    "models_dir",
    "default_backbone",
]


def _is_onnx(name_or_path: str) -> bool:
    """Of a located name (see locate): an .onnx path, or a file that is not a Keras weights file or name."""
    s = str(name_or_path)
    if s.lower().endswith(".onnx"):
        return True
    return os.path.isfile(s) and not s.lower().endswith(".h5") and not is_keras_name(s)


def resolve(
    name_or_path: str, size: int | None = None, weights: str | None = "imagenet", pooling: str = "avg"
) -> BackboneSpec:
    """The spec of what `get_backbone` would build with these arguments, without building it (no TensorFlow
    import, no ONNX session): kind, name, size, pooling, weights (a file by its sha256), and, where the registry or
    the JSON contract says, preprocessing and feature size. Argument problems raise FeatkitError. Names are
    located first (featkit.backbones.names.locate: an .onnx file of the models folder by its name)."""
    name_or_path = locate(str(name_or_path))
    if _is_onnx(name_or_path):
        from featkit.backbones.onnx_model import contract_size, read_contract

        path = Path(os.path.expanduser(str(name_or_path)))
        if not path.is_file():
            raise FeatkitError(
                f"ONNX model {path} does not exist: give the path of an .onnx model or a name from `featkit backbones`."
            )
        _check_onnx_weights(weights, path)
        contract = read_contract(path)
        size = size or contract_size(contract)
        if not size:
            raise FeatkitError(f"{path} has no JSON contract beside it giving its input size: pass --size.")
        return BackboneSpec(
            kind="onnx",
            name=contract.name or path.stem,
            size=int(size),
            pooling=pooling,
            weights=file_identity(path),
            feature_dim=contract.feature_size,
            preprocessing=contract.preprocessing_in_graph or "",
        )
    from featkit.backbones.keras_zoo import weights_arg

    entry = lookup(name_or_path)
    w = weights_arg(weights, entry.name)
    spec_weights = "none" if w is None else w if w == "imagenet" else file_identity(w)
    return BackboneSpec(
        kind="keras",
        name=entry.name,
        size=int(size or entry.native_size),
        pooling=pooling,
        weights=spec_weights,
        preprocessing=entry.preprocessing,
        feature_dim=entry.feature_dim,
    )


def _check_onnx_weights(weights: str | None, path: str | os.PathLike) -> None:
    if weights is not None and str(weights).lower() != "imagenet":
        raise FeatkitError(
            f"--weights does not apply to an ONNX backbone ({Path(path).name}): its weights are inside the .onnx file."
        )


def get_backbone(
    name_or_path: str,
    size: int | None = None,
    weights: str | None = "imagenet",
    pooling: str = "avg",
    batch_size: int | None = None,
    **onnx_options: Any,
) -> Backbone:
    """A Keras registry name ("vgg16", "efficientnetb0", ...) or the path of a .onnx file -> Backbone.

    size: square input size (None = the model's native size). weights (Keras only): "imagenet", "none"
    (random, seeded), or a local .weights.h5 / .h5 path. pooling: "avg" or "max" (ONNX outputs are
    already average-pooled: only "avg"). onnx_options (ONNX only): onnx_input, onnx_output, input_dtype,
    input_layout, input_mean, input_std. Arguments are checked before anything is built; problems raise
    FeatkitError with a one-line message. A name of an .onnx file in the models folder (`featkit backbones`) is
    that file (featkit.backbones.names.locate); `keras:NAME` / `onnx:NAME` say which where both exist.
    """
    name_or_path = locate(str(name_or_path))
    if _is_onnx(name_or_path):
        from featkit.backbones.onnx_model import OnnxBackbone

        _check_onnx_weights(weights, name_or_path)
        return OnnxBackbone(name_or_path, size=size, pooling=pooling, batch_size=batch_size, **onnx_options)
    if onnx_options:
        raise FeatkitError(
            f"options {', '.join(sorted(onnx_options))} apply only to ONNX backbones, not to {name_or_path!r}."
        )
    from featkit.backbones.keras_zoo import KerasBackbone

    return KerasBackbone(name_or_path, size=size, weights=weights, pooling=pooling, batch_size=batch_size)


def get_backbone_from_spec(spec: BackboneSpec | dict, batch_size: int | None = None) -> Backbone:
    """Rebuild the backbone a saved `spec` describes; FeatkitError if a weights file is gone or changed."""
    if not isinstance(spec, BackboneSpec):
        spec = BackboneSpec.from_dict(spec)
    kind, name, size, pooling, weights = spec.kind, spec.name, spec.size, spec.pooling, spec.weights
    if kind == "onnx":
        path = check_file_identity(weights, "the ONNX model")
        bb = get_backbone(str(path), size=size, pooling=pooling, batch_size=batch_size, **spec.options)
    elif kind == "keras":
        if isinstance(weights, dict):
            weights = str(check_file_identity(weights, "the weights file"))
        bb = get_backbone(f"keras:{name}", size=size, weights=weights, pooling=pooling, batch_size=batch_size)
    else:
        raise FeatkitError(f"unknown backbone kind {kind!r} in the saved spec (expected keras or onnx).")
    if spec.feature_dim not in (None, bb.feature_dim):
        raise FeatkitError(
            f"{name} now gives {bb.feature_dim} features, but the saved spec says "
            f"{spec.feature_dim}: re-run `featkit extract`."
        )
    return bb


def list_backbones(onnx_folder: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """The Keras registry (name, kind, native_size, min_size, feature_dim, preprocessing, weights_file,
    weights_url, keras) plus, if `onnx_folder` is given, one row per .onnx file in it (name, kind, path,
    native_size, feature_dim, preprocessing, weights_file, or error). Builds no Keras model."""
    rows = keras_table()
    if onnx_folder is not None:
        from featkit.backbones.onnx_model import onnx_table

        rows += onnx_table(onnx_folder)
    return rows
