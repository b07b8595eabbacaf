"""Keras backbones: one registry table of keras.applications models, used headless (include_top=False).

Importing this module does not import TensorFlow; the first model build does.
"""

from __future__ import annotations

import difflib
import os
import re
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from featkit.backbones.base import Backbone, check_pooling, check_size, file_identity
from featkit.core.errors import FeatkitError
from featkit.core.schema import BackboneSpec
from featkit.core.tfkeras import tf_keras

_G = "https://storage.googleapis.com/tensorflow/keras-applications/"

CAFFE = "caffe: RGB->BGR, minus ImageNet BGR mean (103.939, 116.779, 123.68), no scaling"
TF = "tf: x / 127.5 - 1"
TORCH = "torch: x / 255, minus mean (0.485, 0.456, 0.406), over std (0.229, 0.224, 0.225)"
IN_MODEL_M11 = "in model: Rescaling x / 127.5 - 1 (preprocess_input is a no-op)"
IN_MODEL_TORCH = (
    "in model: Rescaling x / 255, Normalization by ImageNet mean (0.485, 0.456, 0.406) and "
    "std (0.229, 0.224, 0.225) (preprocess_input is a no-op)"
)
IN_MODEL_V2SML = "in model: Rescaling x / 128 - 1 (preprocess_input is a no-op)"


@dataclass(frozen=True)
class KerasModel:
    """One keras.applications model: `module.ctor`, its own `module.preprocess_input`."""

    name: str
    module: str  # submodule of keras.applications holding the constructor and preprocess_input
    ctor: str
    native_size: int
    min_size: int
    feature_dim: int  # channels of the last feature map = length of the pooled feature vector
    preprocessing: str
    weights_url: str  # include_top=False ImageNet weights; "{rows}" = size-dependent (MobileNetV2)

    def weights_file(self, size: int | None = None) -> tuple[str, str]:
        """(file name, URL) of the ImageNet notop weights Keras downloads for this model at `size`."""
        rows = size if size in (96, 128, 160, 192, 224) else 224  # MobileNetV2's rule for imagenet weights
        url = self.weights_url.format(rows=rows)
        return url.rsplit("/", 1)[1], url


def _effnet(b: int, size: int, dim: int) -> KerasModel:
    return KerasModel(
        f"efficientnetb{b}",
        "efficientnet",
        f"EfficientNetB{b}",
        size,
        32,
        dim,
        IN_MODEL_TORCH,
        f"https://storage.googleapis.com/keras-applications/efficientnetb{b}_notop.h5",
    )


def _effnet2(v: str, size: int, dim: int, pre: str) -> KerasModel:
    return KerasModel(
        f"efficientnetv2{v}",
        "efficientnet_v2",
        f"EfficientNetV2{v.upper()}",
        size,
        32,
        dim,
        pre,
        f"{_G}efficientnet_v2/efficientnetv2-{v}_notop.h5",
    )


def _resnet(name: str, module: str, ctor: str, pre: str) -> KerasModel:
    return KerasModel(
        name, module, ctor, 224, 32, 2048, pre, f"{_G}resnet/{name}_weights_tf_dim_ordering_tf_kernels_notop.h5"
    )


def _densenet(depth: int, dim: int) -> KerasModel:
    return KerasModel(
        f"densenet{depth}",
        "densenet",
        f"DenseNet{depth}",
        224,
        32,
        dim,
        TORCH,
        f"{_G}densenet/densenet{depth}_weights_tf_dim_ordering_tf_kernels_notop.h5",
    )


def _convnext(size: str, dim: int) -> KerasModel:
    return KerasModel(
        f"convnext{size}",
        "convnext",
        f"ConvNeXt{size.capitalize()}",
        224,
        32,
        dim,
        IN_MODEL_TORCH,
        f"{_G}convnext/convnext_{size}_notop.h5",
    )


# Feature dims and minimum sizes were checked by building every model (weights=None) at its minimum size.
MODELS: dict[str, KerasModel] = {
    m.name: m
    for m in [
        KerasModel(
            "vgg16",
            "vgg16",
            "VGG16",
            224,
            32,
            512,
            CAFFE,
            f"{_G}vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        ),
        KerasModel(
            "vgg19",
            "vgg19",
            "VGG19",
            224,
            32,
            512,
            CAFFE,
            f"{_G}vgg19/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
        ),
        _resnet("resnet50", "resnet50", "ResNet50", CAFFE),
        _resnet("resnet101", "resnet", "ResNet101", CAFFE),
        _resnet("resnet152", "resnet", "ResNet152", CAFFE),
        _resnet("resnet50v2", "resnet_v2", "ResNet50V2", TF),
        _resnet("resnet101v2", "resnet_v2", "ResNet101V2", TF),
        _resnet("resnet152v2", "resnet_v2", "ResNet152V2", TF),
        KerasModel(
            "inceptionv3",
            "inception_v3",
            "InceptionV3",
            299,
            75,
            2048,
            TF,
            f"{_G}inception_v3/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
        ),
        KerasModel(
            "inceptionresnetv2",
            "inception_resnet_v2",
            "InceptionResNetV2",
            299,
            75,
            1536,
            TF,
            f"{_G}inception_resnet_v2/inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
        ),
        KerasModel(
            "xception",
            "xception",
            "Xception",
            299,
            71,
            2048,
            TF,
            f"{_G}xception/xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
        ),
        KerasModel(
            "mobilenetv2",
            "mobilenet_v2",
            "MobileNetV2",
            224,
            32,
            1280,
            TF,
            f"{_G}mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{{rows}}_no_top.h5",
        ),
        KerasModel(
            "mobilenetv3small",
            "mobilenet_v3",
            "MobileNetV3Small",
            224,
            32,
            576,
            IN_MODEL_M11,
            f"{_G}mobilenet_v3/weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
        ),
        KerasModel(
            "mobilenetv3large",
            "mobilenet_v3",
            "MobileNetV3Large",
            224,
            32,
            960,
            IN_MODEL_M11,
            f"{_G}mobilenet_v3/weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5",
        ),
        _effnet(0, 224, 1280),
        _effnet(1, 240, 1280),
        _effnet(2, 260, 1408),
        _effnet(3, 300, 1536),
        _effnet(4, 380, 1792),
        _effnet(5, 456, 2048),
        _effnet(6, 528, 2304),
        _effnet(7, 600, 2560),
        _effnet2("b0", 224, 1280, IN_MODEL_TORCH),
        _effnet2("b1", 240, 1280, IN_MODEL_TORCH),
        _effnet2("b2", 260, 1408, IN_MODEL_TORCH),
        _effnet2("b3", 300, 1536, IN_MODEL_TORCH),
        _effnet2("s", 384, 1280, IN_MODEL_V2SML),
        _effnet2("m", 480, 1280, IN_MODEL_V2SML),
        _densenet(121, 1024),
        _densenet(169, 1664),
        _densenet(201, 1920),
        _convnext("tiny", 768),
        _convnext("small", 768),
        _convnext("base", 1024),
    ]
}


def _norm(name: str) -> str:
    """'EfficientNet-B0' -> 'efficientnetb0'; a 'keras:' prefix (featkit.backbones.names.locate) is dropped."""
    name = name.lower()
    return re.sub(r"[^a-z0-9]", "", name.removeprefix("keras:"))


def is_keras_name(name: str) -> bool:
    """True if `name` names a model of the registry (case, '-', '_' and spaces ignored)."""
    return _norm(str(name)) in MODELS


def lookup(name: str) -> KerasModel:
    """The registry entry for `name` (case, '-', '_' and spaces ignored: 'EfficientNet-B0' = 'efficientnetb0')."""
    key = _norm(str(name))
    if key in MODELS:
        return MODELS[key]
    close = difflib.get_close_matches(key, list(MODELS), n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    raise FeatkitError(
        f"unknown backbone {name!r}: {hint}Run `featkit backbones` to list the known ones, "
        f"or give the path of a .onnx file."
    )


def weights_arg(weights: Any, name: str) -> str | None:
    """'imagenet' -> 'imagenet', 'none'/None -> None, else an existing .weights.h5 / .h5 path (resolved)."""
    if weights is None or (isinstance(weights, str) and weights.lower() == "none"):
        return None
    if isinstance(weights, str) and weights.lower() == "imagenet":
        return "imagenet"
    path = Path(os.path.expanduser(str(weights)))
    if not path.is_file():
        raise FeatkitError(
            f"weights file {path} does not exist: give the path of a .weights.h5 or .h5 file "
            f"for {name} (include_top=False), or --weights imagenet / none."
        )
    if not path.name.lower().endswith(".h5"):
        raise FeatkitError(f"weights file {path} should be a Keras .weights.h5 or .h5 file for {name}.")
    return str(path.resolve())


def _keras_cache_dir() -> str:
    """Where keras.utils.get_file looks for and stores application weights."""
    try:
        from keras.src.backend.config import keras_home

        base = os.path.expanduser(keras_home())
    except ImportError:  # pragma: no cover - other Keras layouts
        base = os.path.expanduser(os.environ.get("KERAS_HOME", os.path.join("~", ".keras")))
    if not os.access(base, os.W_OK):  # get_file's own fallback
        base = os.path.join("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir(), ".keras")
    return os.path.join(base, "models")


def _from_get_file(exc: BaseException) -> bool:
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "get_file":
            return True
        tb = tb.tb_next
    return False


def _offline_error(entry: KerasModel, size: int, exc: BaseException) -> FeatkitError:
    fname, url = entry.weights_file(size)
    msg = " ".join(str(exc).split())
    reason = msg
    m = re.search(r"URL fetch failure on (\S+?): (.*)", msg)
    if m:  # the exact file Keras asked for
        url, reason = m.group(1), m.group(2)
        fname = url.rsplit("/", 1)[1]
    return FeatkitError(
        f"Keras could not download the ImageNet weights for {entry.name} ({reason[:200]}): put {fname} "
        f"(from {url}) in {_keras_cache_dir()}/ (Keras looks in $KERAS_HOME/models/, by default "
        f"~/.keras/models/), or pass --weights PATH to a local weights file."
    )


def keras_base(
    name: str, size: int | None = None, weights: str | None = "imagenet", pooling: str | None = None
) -> tuple[Any, Callable]:
    """Build a headless keras.applications model from the registry; shared by backbones and train-cnn.

    keras_base(name: str, size: int | None = None, weights: str | None = "imagenet", pooling: str | None = None)
        -> (model: keras.Model, preprocess_input: Callable)

    - name: a registry name (see `featkit backbones`), e.g. "mobilenetv2", "efficientnetb0".
    - size: square input size; None = the model's native size. The model is built with a FIXED
      input_shape=(size, size, 3) (a dynamic shape pads wrongly in MobileNetV2 at sizes not multiple of 32).
    - weights: "imagenet" (downloaded by Keras to $KERAS_HOME/models/), "none"/None (random, seeded with
      keras.utils.set_random_seed(0) so it is reproducible; this also reseeds Python/NumPy/TF global RNGs),
      or the path of a local include_top=False .weights.h5 / .h5 file.
    - pooling: None -> the model outputs the last feature map (N, h, w, C); "avg" / "max" -> (N, C).
    - preprocess_input is the model's own function (keras.applications.<module>.preprocess_input); it takes
      float RGB 0..255 (NumPy or tensor) and must be applied exactly once before the model. For models whose
      preprocessing is inside the graph (EfficientNet, MobileNetV3, ConvNeXt) it is the identity.
    The model is built with include_top=False and inference-mode BatchNormalization is only guaranteed with
    `model(x, training=False)` or `model.trainable = False`.
    Raises FeatkitError (one line) for an unknown name, a size below the minimum, a missing weights file,
    a weights file that does not fit, or ImageNet weights that cannot be downloaded.
    """
    entry = lookup(name)
    size = check_size(entry.native_size if size is None else size, entry.min_size, entry.name)
    if pooling is not None:
        check_pooling(pooling, entry.name)
    w_arg = weights_arg(weights, entry.name)
    tf, keras = tf_keras()
    module = getattr(keras.applications, entry.module)
    ctor = getattr(keras.applications, entry.ctor)  # every constructor is exported at the top level
    if w_arg is None:
        keras.utils.set_random_seed(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "weights for input shape (224, 224) will be loaded"
            model = ctor(include_top=False, weights=w_arg, input_shape=(size, size, 3), pooling=pooling)
    except Exception as e:
        if w_arg == "imagenet" and _from_get_file(e):
            raise _offline_error(entry, size, e) from e
        if w_arg not in (None, "imagenet"):
            first = " ".join(str(e).split())[:300]
            raise FeatkitError(
                f"weights file {w_arg} does not fit {entry.name} with include_top=False ({type(e).__name__}: {first})."
            ) from e
        raise
    return model, module.preprocess_input


build_keras_base = keras_base


def _on_gpu(tf: Any) -> bool:
    return bool(tf.config.list_physical_devices("GPU"))


class KerasBackbone(Backbone):
    kind = "keras"

    def __init__(
        self,
        name: str,
        size: int | None = None,
        weights: str | None = "imagenet",
        pooling: str = "avg",
        batch_size: int | None = None,
    ):
        entry = lookup(name)
        size = check_size(entry.native_size if size is None else size, entry.min_size, entry.name)
        pooling = check_pooling(pooling, entry.name)
        w_arg = weights_arg(weights, entry.name)
        self.entry, self.name, self.size, self.pooling = entry, entry.name, size, pooling
        self.preprocessing = f"{entry.preprocessing} (keras.applications.{entry.module}.preprocess_input)"
        if w_arg is None:
            self.weights: Any = "none"
        elif w_arg == "imagenet":
            self.weights = "imagenet"
        else:
            self.weights = file_identity(w_arg)  # hash the file we are about to load
        self.model, self._preprocess = keras_base(entry.name, size, w_arg, pooling)
        tf, keras = tf_keras()
        self.feature_dim = int(self.model.output_shape[-1])
        self.batch_size = int(batch_size) if batch_size else ((128 if size <= 320 else 32) if _on_gpu(tf) else 32)
        if self.batch_size < 1:
            raise FeatkitError(f"batch size should be at least 1; got {batch_size}.")
        self._versions = {"keras": keras.__version__, "tensorflow": tf.__version__, "numpy": np.__version__}
        model, preprocess = self.model, self._preprocess

        def forward(x):  # uint8 in, features out; cast + preprocessing run inside the graph (on GPU if any)
            return model(preprocess(tf.cast(x, tf.float32)), training=False)

        self._forward = tf.function(
            forward,
            autograph=False,
            reduce_retracing=True,
            input_signature=[tf.TensorSpec((None, size, size, 3), tf.uint8)],
        )

    def _run(self, chunk: np.ndarray) -> np.ndarray:
        return np.asarray(self._forward(chunk), dtype=np.float32)

    @property
    def spec(self) -> BackboneSpec:
        from featkit.core.version import __version__

        extra = {"input": "uint8 RGB NHWC"}
        if self.weights == "imagenet":
            extra["weights_file"] = self.entry.weights_file(self.size)[0]
        return BackboneSpec(
            kind="keras",
            name=self.name,
            size=self.size,
            pooling=self.pooling,
            weights=self.weights,
            preprocessing=self.preprocessing,
            feature_dim=self.feature_dim,
            versions={"featkit": __version__, **self._versions},
            extra=extra,
        )


def keras_table() -> list[dict[str, Any]]:
    rows = []
    for m in MODELS.values():
        fname, url = m.weights_file(m.native_size)
        rows.append(
            {
                "name": m.name,
                "kind": "keras",
                "native_size": m.native_size,
                "min_size": m.min_size,
                "feature_dim": m.feature_dim,
                "preprocessing": m.preprocessing,
                "weights_file": fname,
                "weights_url": url,
                "keras": f"keras.applications.{m.module}.{m.ctor}",
            }
        )
    return rows
