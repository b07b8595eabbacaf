"""Backbones: Keras (registry) and ONNX behind one interface, checked on real food photos."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import read_food_photos

from featkit.backbones import get_backbone, get_backbone_from_spec, list_backbones
from featkit.core.errors import FeatkitError
from featkit.data.images import decode_image

REPO = Path(__file__).resolve().parents[1]


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2", **env}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=REPO,
        timeout=240,
    )


@pytest.fixture(scope="module")
def food_blobs() -> list[bytes]:
    """16 real JPEGs: 4 training photos of each of 4 classes."""
    return read_food_photos(classes=4, per_class=4)[1]


@pytest.fixture(scope="module")
def photos_128(food_blobs) -> np.ndarray:
    return np.stack([decode_image(b, 128) for b in food_blobs])


@pytest.fixture(scope="module")
def onnx_128(mobilenet_onnx):
    return get_backbone(str(mobilenet_onnx), size=128)


@pytest.fixture(scope="module")
def photos_64(food_photos_64) -> np.ndarray:
    """12 real photos, 64 px: vgg16's last feature map is 2x2 there, so max and avg pooling differ."""
    return np.ascontiguousarray(food_photos_64[0][::5])


# 1. The Keras path, preprocessing included, reproduces the ONNX graph on real photos -------------------------


@pytest.mark.slow
def test_keras_mobilenetv2_matches_onnx_at_128(photos_128, onnx_128, keras_notop_weights):
    kb = get_backbone("mobilenetv2", size=128, weights=str(keras_notop_weights))
    assert (kb.size, kb.feature_dim, kb.kind) == (128, 1280, "keras")
    k, o = kb(photos_128), onnx_128(photos_128)
    assert k.shape == o.shape == (16, 1280) and k.dtype == np.float32
    assert _cos(k, o).min() > 0.999  # README: min 0.99994 with preprocess_input at 128
    assert k.std(axis=0).mean() > 0.1  # features really differ between photos
    # control: without the model's preprocess_input the same model is far off, so the check above is sensitive
    raw = np.asarray(kb.model(photos_128.astype(np.float32), training=False))
    assert _cos(raw, o).min() < 0.99


@pytest.mark.slow
def test_keras_mobilenetv2_matches_onnx_at_200_fixed_shape(food_blobs, mobilenet_onnx, keras_notop_weights):
    # 200 is not a multiple of 32: a dynamic-shape MobileNetV2 pads wrongly here (README: cosine 0.83-0.90),
    # the fixed input shape matches TF "SAME" padding exactly.
    photos = np.stack([decode_image(b, 200) for b in food_blobs[::2]])
    kb = get_backbone("mobilenetv2", size=200, weights=str(keras_notop_weights))
    o = get_backbone(str(mobilenet_onnx), size=200)(photos)
    assert _cos(kb(photos), o).min() > 0.999
    # with the graph's own (x - 128) / 128 the Keras model reproduces ONNX to float32 rounding
    exact = np.asarray(kb.model((photos.astype(np.float32) - 128) / 128, training=False))
    np.testing.assert_allclose(exact, o, atol=2e-4)


# 2. ONNX backbone -------------------------------------------------------------------------------------------


def test_onnx_backbone_features(onnx_128, photos_128, mobilenet_onnx):
    f = onnx_128(photos_128)
    assert f.shape == (16, 1280) and f.dtype == np.float32
    assert np.isfinite(f).all() and f.min() >= 0  # ReLU6 then average pool
    assert f.std(axis=0).mean() > 0.1
    np.testing.assert_allclose(onnx_128(photos_128[3:4])[0], f[3], rtol=1e-5, atol=1e-6)  # batch of 1
    chunked = get_backbone(str(mobilenet_onnx), size=128, batch_size=5)  # 16 photos -> chunks 5, 5, 5, 1
    assert chunked.batch_size == 5
    np.testing.assert_allclose(chunked(photos_128), f, rtol=1e-5, atol=1e-6)
    assert onnx_128(photos_128[:0]).shape == (0, 1280)
    with pytest.raises(ValueError, match="128, 128, 3"):
        onnx_128(photos_128[:, :64])

    meta = json.loads(mobilenet_onnx.with_suffix(".json").read_text())
    spec = json.loads(json.dumps(onnx_128.spec.to_dict()))  # JSON-able
    assert spec["kind"] == "onnx" and spec["size"] == 128 and spec["feature_dim"] == 1280
    assert spec["pooling"] == "avg" and "(uint8 - 128) / 128" in spec["preprocessing"]
    assert spec["weights"] == {"path": str(mobilenet_onnx.resolve()), "sha256": meta["sha256"]}
    assert onnx_128.batch_size >= 1 and onnx_128.feature_dim == 1280
    assert get_backbone(str(mobilenet_onnx)).size == 224  # native size from the JSON


def test_onnx_and_validation_do_not_import_tensorflow(mobilenet_onnx):
    r = _run_python(f"""
        import sys, numpy as np
        from featkit.backbones import get_backbone, list_backbones
        from featkit.core.errors import FeatkitError
        bb = get_backbone({str(mobilenet_onnx)!r}, size=64)
        f = bb(np.full((2, 64, 64, 3), 127, np.uint8))
        assert f.shape == (2, 1280), f.shape
        rows = list_backbones({str(mobilenet_onnx.parent)!r})
        for args in [("vgg61",), ("inceptionv3", 64), ("vgg16", None, "/no/such/file.weights.h5")]:
            try:
                get_backbone(*args)
                raise SystemExit("no error for %r" % (args,))
            except FeatkitError:
                pass
        print("tensorflow" in sys.modules, "keras" in sys.modules)
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "False"]


# 3. Keras with random weights --------------------------------------------------------------------------------


@pytest.mark.slow
def test_vgg16_random_weights_deterministic_and_pooling(photos_64):
    a = get_backbone("vgg16", size=64, weights="none")
    fa = a(photos_64)
    assert fa.shape == (12, 512) and fa.dtype == np.float32 and a.size == 64
    assert a.spec.weights == "none" and a.spec.pooling == "avg"
    assert fa.std(axis=0).max() > 0  # not constant
    b = get_backbone("vgg16", size=64, weights="none", batch_size=5)
    # same seed -> same weights -> same features; another batch size may pick another oneDNN kernel, whose sums
    # differ in the last bits (1.6e-7 seen with TensorFlow 2.21), so equal up to float32 rounding
    np.testing.assert_allclose(b(photos_64), fa, rtol=1e-5, atol=1e-6)
    m = get_backbone("vgg16", size=64, weights="none", pooling="max")
    fm = m(photos_64)
    assert fm.shape == (12, 512) and not np.allclose(fm, fa)
    assert (fm >= fa - 1e-4).all()  # a max over the same feature map is never below its mean


@pytest.mark.slow
def test_keras_weights_file_that_does_not_fit(keras_notop_weights):
    with pytest.raises(FeatkitError, match="does not fit vgg16") as e:
        get_backbone("vgg16", size=32, weights=str(keras_notop_weights))
    assert "\n" not in str(e.value)


# 4. ImageNet weights offline ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_offline_imagenet_error_names_the_file(tmp_path):
    home = tmp_path / "keras_home"
    home.mkdir()
    # No network here; urlretrieve is also made to fail the way an offline download does, so this never waits.
    r = _run_python(
        """
        import json, urllib.error
        import keras.src.utils.file_utils as fu
        def offline(url, *a, **k):
            raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
        fu.urlretrieve = offline
        from featkit.backbones import get_backbone
        from featkit.core.errors import FeatkitError
        out = {}
        for name, size in [("vgg16", 32), ("mobilenetv2", 100), ("mobilenetv2", 128)]:
            try:
                get_backbone(name, size=size)
            except FeatkitError as e:
                out[f"{name}@{size}"] = str(e)
        print("RESULT" + json.dumps(out))
    """,
        KERAS_HOME=str(home),
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.split("RESULT", 1)[1])
    assert set(out) == {"vgg16@32", "mobilenetv2@100", "mobilenetv2@128"}
    for msg in out.values():
        assert "\n" not in msg
        assert f"{home / 'models'}/" in msg and "~/.keras/models/" in msg and "--weights PATH" in msg
    assert (
        "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5 (from https://storage.googleapis.com/tensorflow/"
        "keras-applications/vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5)"
    ) in out["vgg16@32"]
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5" in out["mobilenetv2@100"]
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_128_no_top.h5" in out["mobilenetv2@128"]
    assert not any((home / "models").iterdir())  # no half-downloaded file left behind


def test_weights_table_matches_keras_sources():
    """The registry's ImageNet notop file names/URLs agree with the constants in keras' own modules."""
    from keras.src.applications import (
        convnext,
        densenet,
        efficientnet,
        efficientnet_v2,
        inception_resnet_v2,
        inception_v3,
        mobilenet_v2,
        mobilenet_v3,
        resnet,
        vgg16,
        vgg19,
        xception,
    )

    from featkit.backbones.keras_zoo import MODELS

    url = {n: m.weights_file(224)[1] for n, m in MODELS.items()}
    assert url["vgg16"] == vgg16.WEIGHTS_PATH_NO_TOP and url["vgg19"] == vgg19.WEIGHTS_PATH_NO_TOP
    assert url["inceptionv3"] == inception_v3.WEIGHTS_PATH_NO_TOP and url["xception"] == xception.WEIGHTS_PATH_NO_TOP
    assert url["densenet121"] == densenet.DENSENET121_WEIGHT_PATH_NO_TOP
    assert url["densenet201"] == densenet.DENSENET201_WEIGHT_PATH_NO_TOP
    assert url["inceptionresnetv2"].startswith(inception_resnet_v2.BASE_WEIGHT_URL)
    for n in ("resnet50", "resnet101", "resnet50v2", "resnet152v2"):
        assert n in resnet.WEIGHTS_HASHES and url[n].startswith(resnet.BASE_WEIGHTS_PATH)
    for b in range(8):
        assert f"b{b}" in efficientnet.WEIGHTS_HASHES
        assert url[f"efficientnetb{b}"] == f"{efficientnet.BASE_WEIGHTS_PATH}efficientnetb{b}_notop.h5"
    for v in ("b0", "b3", "-s"):
        assert v in efficientnet_v2.WEIGHTS_HASHES
        assert (
            url[f"efficientnetv2{v.strip('-')}"]
            == f"{efficientnet_v2.BASE_WEIGHTS_PATH}efficientnetv2-{v.strip('-')}_notop.h5"
        )
    assert url["convnexttiny"] == f"{convnext.BASE_WEIGHTS_PATH}convnext_tiny_notop.h5"
    assert url["mobilenetv2"].startswith(mobilenet_v2.BASE_WEIGHT_PATH)
    assert "small_224_1.0_float" in mobilenet_v3.WEIGHTS_HASHES
    assert url["mobilenetv3small"].startswith(mobilenet_v3.BASE_WEIGHT_PATH)


# 5. One-line errors -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda p: get_backbone("vgg61"), ["vgg16", "featkit backbones"]),
        (lambda p: get_backbone("EfficientNet-B9"), ["efficientnetb"]),
        (lambda p: get_backbone("inceptionv3", size=64), ["at least 75", "inceptionv3"]),
        (lambda p: get_backbone("vgg16", size=32, weights=str(p / "missing.weights.h5")), ["missing.weights.h5"]),
        (lambda p: get_backbone("vgg16", pooling="sum"), ["avg", "max"]),
        (lambda p: get_backbone(str(p / "nothing.onnx")), ["nothing.onnx", "does not exist"]),
    ],
)
def test_errors_are_one_line(call, words, tmp_path):
    with pytest.raises(FeatkitError) as e:
        call(tmp_path)
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg


def test_onnx_rejects_max_pooling_and_weights(mobilenet_onnx):
    with pytest.raises(FeatkitError, match="already pooled") as e:
        get_backbone(str(mobilenet_onnx), size=128, pooling="max")
    assert "\n" not in str(e.value)
    with pytest.raises(FeatkitError, match="inside the .onnx file"):
        get_backbone(str(mobilenet_onnx), weights="none")


def test_onnx_without_json_is_inferred_from_the_graph(tmp_path, mobilenet_onnx, onnx_128, photos_128):
    bare = tmp_path / "bare.onnx"
    shutil.copy(mobilenet_onnx, bare)  # no JSON beside it
    with pytest.raises(FeatkitError, match="--size"):
        get_backbone(str(bare))  # dynamic size and no native size known
    bb = get_backbone(str(bare), size=128)
    assert bb.feature_dim == 1280 and bb.spec.options["onnx_output"] == "features"
    np.testing.assert_array_equal(bb(photos_128[:4]), onnx_128(photos_128[:4]))
    with pytest.raises(FeatkitError, match="no output 'nope'"):
        get_backbone(str(bare), size=128, onnx_output="nope")


# 6. Rebuilding from a saved spec ---------------------------------------------------------------------------


def test_spec_round_trip_onnx(onnx_128, photos_128, tmp_path, mobilenet_onnx):
    spec = json.loads(json.dumps(onnx_128.spec.to_dict()))
    again = get_backbone_from_spec(spec)
    np.testing.assert_array_equal(again(photos_128), onnx_128(photos_128))
    assert again.spec == onnx_128.spec

    # a weights file that changed or vanished since the features were made is refused
    copy = tmp_path / "m.onnx"
    shutil.copy(mobilenet_onnx, copy)
    spec = get_backbone(str(copy), size=64).spec
    with open(copy, "ab") as f:
        f.write(b"\0")
    with pytest.raises(FeatkitError, match="has changed"):
        get_backbone_from_spec(spec)
    copy.unlink()
    with pytest.raises(FeatkitError, match="missing"):
        get_backbone_from_spec(spec)


@pytest.mark.slow
def test_spec_round_trip_keras_random(photos_64):
    bb = get_backbone("vgg16", size=64, weights="none", pooling="max")
    spec = json.loads(json.dumps(bb.spec.to_dict()))
    assert spec["kind"] == "keras" and spec["name"] == "vgg16" and spec["feature_dim"] == 512
    assert "caffe" in spec["preprocessing"] and "keras" in spec["versions"]
    again = get_backbone_from_spec(spec)
    assert again.pooling == "max"
    np.testing.assert_array_equal(again(photos_64), bb(photos_64))


# 7. The registry --------------------------------------------------------------------------------------------

REQUIRED = [
    "vgg16",
    "vgg19",
    "resnet50",
    "resnet50v2",
    "inceptionv3",
    "xception",
    "mobilenetv2",
    "mobilenetv3small",
    "mobilenetv3large",
    *[f"efficientnetb{i}" for i in range(8)],
    *[f"efficientnetv2b{i}" for i in range(4)],
    "densenet121",
    "convnexttiny",
]


def test_list_backbones_registry(mobilenet_onnx):
    rows = list_backbones()
    by_name = {r["name"]: r for r in rows}
    assert set(REQUIRED) <= set(by_name) and all(r["kind"] == "keras" for r in rows)
    for name, dim, native in [
        ("vgg16", 512, 224),
        ("resnet50", 2048, 224),
        ("mobilenetv2", 1280, 224),
        ("efficientnetb0", 1280, 224),
        ("densenet121", 1024, 224),
        ("inceptionv3", 2048, 299),
        ("efficientnetb3", 1536, 300),
        ("mobilenetv3small", 576, 224),
        ("convnexttiny", 768, 224),
    ]:
        assert (by_name[name]["feature_dim"], by_name[name]["native_size"]) == (dim, native), name
    assert by_name["inceptionv3"]["min_size"] == 75
    assert by_name["vgg16"]["weights_file"] == "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    assert all(r["preprocessing"] and r["weights_file"].endswith(".h5") for r in rows)

    with_onnx = {r["name"]: r for r in list_backbones(mobilenet_onnx.parent)}
    assert with_onnx["mobilenet-v2"]["kind"] == "onnx" and with_onnx["mobilenet-v2"]["feature_dim"] == 1280
    assert with_onnx["mobilenet-v2"]["native_size"] == 224
    assert with_onnx["efficientnet-lite0"]["weights_file"] == "efficientnet-lite0.onnx"
