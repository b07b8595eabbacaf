"""featkit.cnn: presets, custom / transfer models, standardisation, ZCA, training, resume, seeding (real photos)."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytestmark = pytest.mark.slow  # every test here builds Keras models

from conftest import read_food_photos, training_interrupted_after_first_epoch  # noqa: E402

from featkit.cnn import preprocess as P  # noqa: E402
from featkit.cnn import train as T  # noqa: E402
from featkit.cnn.models import backbone_layer, build_transfer_model, learning_rate  # noqa: E402
from featkit.cnn.presets import get_preset  # noqa: E402
from featkit.cnn.train import predict_images, train_cnn  # noqa: E402
from featkit.core.errors import FeatkitError  # noqa: E402
from featkit.core.fileio import read_json  # noqa: E402
from featkit.data.images import decode_image  # noqa: E402

CLASSES = [{"index": i, "id": f"c{i}", "name": f"class {i}"} for i in range(5)]


@pytest.fixture(scope="module")
def photo_blobs():
    _, blobs, labels = read_food_photos(classes=5, per_class=4)  # 20 real photos, 4 per class
    return blobs, labels


_DECODED: dict[int, np.ndarray] = {}


def photos_at(photo_blobs, size: int):
    blobs, labels = photo_blobs
    if size not in _DECODED:
        _DECODED[size] = np.stack([decode_image(b, size) for b in blobs])
    return _DECODED[size], labels


# ---------------------------------------------------------------------------------------------------- presets
# (every preset against the study digest, each model's build, a few trained: tests/test_cnn_study.py)


def test_preset_overrides():
    assert get_preset("std-aug-3", zca=True, epochs=None).zca is True
    assert get_preset("basic", filters=(8, 8)).blocks == 2
    with pytest.raises(FeatkitError, match="no CNN preset"):
        get_preset("nope")
    with pytest.raises(FeatkitError, match="unknown preset field"):
        get_preset("basic", colour="red")


# ---------------------------------------------------------------------------------------------- standardisation


def test_channel_stats_float64_chunked(food_photos_64):
    x, _ = food_photos_64
    mean, std = P.channel_stats(x, chunk=7)
    ref = x.astype(np.float64).reshape(-1, 3)
    np.testing.assert_allclose(mean, ref.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(std, ref.std(axis=0), rtol=1e-10)


def test_standardisation_uses_training_stats_for_every_split(food_photos_64, tmp_path):
    x, y = food_photos_64
    tr = np.arange(len(x)) % 3 == 0
    x_tr, y_tr = x[tr], y[tr]
    x_te = np.clip(x[~tr].astype(np.int16) + 60, 0, 255).astype(np.uint8)  # val/test shifted: different statistics
    y_te = y[~tr]
    cfg = get_preset("std-aug-3", size=64, epochs=1, batch_size=8)
    run = train_cnn(cfg, x_tr, y_tr, x_te[:10], y_te[:10], x_te, y_te, CLASSES, tmp_path / "run", quiet=True)
    mean, std = P.channel_stats(x_tr)
    np.testing.assert_allclose(run.config.extra["standardize_mean"], mean)
    np.testing.assert_allclose(run.config.extra["standardize_std"], std)
    all_mean, _ = P.channel_stats(np.concatenate([x_tr, x_te]))
    assert np.abs(all_mean - mean).min() > 10  # the shifted val/test photos did not leak into the statistics

    model = keras.models.load_model(run.path / "model.keras")
    upto = keras.Model(model.input, model.get_layer("standardize").output)
    got = np.asarray(upto(x_te[:4], training=False))  # augmentation off: the test photos, standardised
    want = (x_te[:4].astype(np.float64) - mean) / (std + P.STD_EPSILON)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # predict_images on new photos applies the same statistics: it reproduces the saved test predictions
    np.testing.assert_allclose(predict_images(run, x_te), run.load_predictions()["probs"], rtol=1e-5, atol=1e-6)
    with pytest.raises(FeatkitError, match="decode them at 64 px"):
        predict_images(run, np.zeros((1, 32, 32, 3), np.uint8))


# ----------------------------------------------------------------------------------------------------------- ZCA


def _whitened_eigenvalues(flat: np.ndarray, mu: np.ndarray, wmat: np.ndarray):
    """Nonzero covariance eigenvalues of the sample before and after whitening (via the n x n Gram matrices)."""
    n = len(flat)
    xc = flat.astype(np.float64) - flat.mean(axis=0, dtype=np.float64)
    xw = (flat - mu).astype(np.float64) @ wmat.astype(np.float64)
    before = np.linalg.eigvalsh(xc @ xc.T / n)[::-1]
    after = np.linalg.eigvalsh((xw - xw.mean(axis=0)) @ (xw - xw.mean(axis=0)).T / n)[::-1]
    return before, after


@pytest.mark.parametrize("size", [32, 64])
def test_zca_whitens(size, photo_blobs, food_photos_64):
    if size == 64:
        x = food_photos_64[0]
    else:
        _, blobs, _ = read_food_photos(classes=5, per_class=30)
        x = np.stack([decode_image(b, 32) for b in blobs])  # 150 photos, d = 3072
    mean, std = P.channel_stats(x)
    mu, wmat, info = P.fit_zca(x, n_samples=2000, epsilon=1e-6, mean=mean, std=std)
    assert wmat.shape == (size * size * 3,) * 2 and wmat.dtype == np.float32 and info["samples"] == len(x)
    flat = (x.astype(np.float32) - mean.astype(np.float32)) / (std.astype(np.float32) + np.float32(P.STD_EPSILON))
    flat = flat.reshape(len(x), -1)
    before, after = _whitened_eigenvalues(flat, mu, wmat)
    real = before > 1e-4 * before[0]  # components with non-negligible variance in the fitted sample
    assert real.sum() >= len(x) - 2
    np.testing.assert_allclose(after[real], 1.0, atol=5e-3)  # covariance ~ identity on them
    assert before[0] > 10  # (it really was far from white)

    # the Keras layer applies the same whitening
    layer = P.ZCAWhitening()
    layer.build((None, size, size, 3))
    layer.set_whitening(mu, wmat)
    got = np.asarray(layer(flat[:3].reshape(3, size, size, 3))).reshape(3, -1)
    np.testing.assert_allclose(got, (flat[:3] - mu) @ wmat, rtol=1e-3, atol=1e-3)


def test_zca_memory_check_names_largest_size(monkeypatch, photo_blobs):
    avail = 2 * 1024**3
    monkeypatch.setattr(P, "available_memory_bytes", lambda: avail)
    fits = max(s for s in range(1, 200) if P.zca_bytes(s, 2000) <= avail)
    with pytest.raises(FeatkitError, match=rf"largest size that fits is {fits} px") as e:
        P.check_zca_memory(128, 2000)
    assert "\n" not in str(e.value)
    x, _ = photos_at(photo_blobs, 128)
    with pytest.raises(FeatkitError, match=r"largest size that fits is \d+ px"):
        P.fit_zca(x)
    P.check_zca_memory(32, 2000)  # 32 px fits in 2 GiB


# -------------------------------------------------------------------------------------------------------- resume


def test_resume_continues_at_the_right_epoch(food_photos_64, tmp_path, capsys):
    x, y = food_photos_64
    data = (x[::2], y[::2], x[1::4], y[1::4], x[3::4], y[3::4])
    cfg = get_preset("basic", epochs=2, batch_size=10)
    with training_interrupted_after_first_epoch():
        train_cnn(cfg, *data, CLASSES, tmp_path / "run", quiet=True)
    state = read_json(tmp_path / "run" / "checkpoints" / "state.json")
    assert state["epoch"] == 1 and not (tmp_path / "run" / "metrics.json").exists()
    first = (tmp_path / "run" / "history.csv").read_text().splitlines()

    capsys.readouterr()
    run = train_cnn(cfg, *data, CLASSES, tmp_path / "run", quiet=False)
    err = capsys.readouterr().err
    assert "resuming" in err and "epoch 2/2" in err and "epoch 1/2" not in err
    hist = T.read_history(run.path / "history.csv")
    assert [r["epoch"] for r in hist] == [1, 2]
    assert (run.path / "history.csv").read_text().splitlines()[:2] == first  # epoch 1's row is kept as it was
    assert run.metrics.epochs_run == 2 and read_json(run.path / "checkpoints" / "state.json")["epoch"] == 2

    with pytest.raises(FeatkitError, match="different configuration"):
        train_cnn(cfg.replace(dropout=0.2), *data, CLASSES, tmp_path / "run", quiet=True)


# ------------------------------------------------------------------------------------------------------ transfer


def test_transfer_frozen_and_fine_tune():
    model = build_transfer_model("mobilenetv2", 64, 5, weights="none")
    assert len(model.trainable_weights) == 4  # Dense 1024 + softmax: kernel and bias each
    names = {w.path.split("/")[0] for w in model.trainable_weights}
    assert names == {"dense", "predictions"}

    ft = build_transfer_model("mobilenetv2", 64, 5, weights="none", fine_tune_from="block_16_expand")
    base = backbone_layer(ft)
    start = [layer.name for layer in base.layers].index("block_16_expand")
    for i, layer in enumerate(base.layers):
        if isinstance(layer, keras.layers.BatchNormalization) or i < start:
            assert not layer.trainable_weights, layer.name
    assert base.get_layer("block_16_expand").trainable_weights
    assert base.get_layer("Conv_1").trainable_weights
    assert not base.get_layer("Conv_1_bn").trainable_weights
    assert len(ft.trainable_weights) > 4
    cfg = get_preset("vgg16-transfer-48", fine_tune_from="block5_conv1")
    assert learning_rate(cfg) == pytest.approx(cfg.lr / 10)
    with pytest.raises(FeatkitError, match="no such layer"):
        build_transfer_model("mobilenetv2", 64, 5, weights="none", fine_tune_from="block_99")


def test_transfer_real_weights_base_stays_in_inference_mode(keras_notop_weights, photo_blobs):
    x, y = photos_at(photo_blobs, 96)
    x = x[:10]
    base_alone = keras.applications.MobileNetV2(
        include_top=False, weights=str(keras_notop_weights), input_shape=(96, 96, 3)
    )
    ref = np.asarray(base_alone(keras.applications.mobilenet_v2.preprocess_input(x.astype(np.float32)), training=False))
    assert ref.max() > 1.0  # real, non-trivial features
    for fine_tune_from in (None, "block_15_expand"):
        model = build_transfer_model("mobilenetv2", 96, 5, weights=keras_notop_weights, fine_tune_from=fine_tune_from)
        feats = keras.Model(model.input, model.get_layer("gap").input)  # the backbone's output inside the model
        # preprocessing applied once, inside; BN in inference mode even when the whole model runs in training mode
        np.testing.assert_allclose(np.asarray(feats(x, training=True)), ref, atol=1e-4)
        if fine_tune_from is None:  # a training step does not move the frozen base (nor its BN statistics)
            model.compile(optimizer="rmsprop", loss="categorical_crossentropy")
            model.fit(x, keras.utils.to_categorical(y[:10], 5), epochs=1, batch_size=10, verbose=0)
            np.testing.assert_allclose(np.asarray(feats(x, training=False)), ref, atol=1e-4)


# ---------------------------------------------------------------------------------------------------------- seeds


def test_same_seed_same_first_epoch_loss(food_photos_64, tmp_path):
    x, y = food_photos_64
    data = (x[::2], y[::2], x[1::4], y[1::4], x[3::4], y[3::4])
    cfg = get_preset("aug-3-drop0.5", size=64, epochs=1, batch_size=10)  # augmentation and dropout draw random numbers
    losses = []
    for i, seed in enumerate((0, 0, 1)):
        run = train_cnn(cfg, *data, CLASSES, tmp_path / f"r{i}", seed=seed, quiet=True)
        losses.append(T.read_history(run.path / "history.csv")[0]["loss"])
    assert losses[0] == losses[1]
    assert losses[2] != losses[0]


def test_bad_input_is_one_line_error(food_photos_64, tmp_path):
    x, y = food_photos_64
    with pytest.raises(FeatkitError, match=r"uint8 array \(N, 128, 128, 3\)"):
        train_cnn(get_preset("benchmark-128"), x, y, x, y, x, y, CLASSES, tmp_path / "r", quiet=True)
    with pytest.raises(FeatkitError, match="labels should be class indices"):
        train_cnn(get_preset("basic"), x, y + 5, x, y, x, y, CLASSES, tmp_path / "r", quiet=True)


def test_mixed_precision_keeps_preprocessing_and_softmax_in_float32():
    """The GPU path's dtype handling, checked on CPU: mixed_float16 convs, float32 standardise / ZCA / softmax."""
    from featkit.cnn.models import build_model, compile_model

    x = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3)).astype(np.uint8)
    y = keras.utils.to_categorical(np.arange(8) % 5, 5)
    cfg = get_preset("std-aug-3", zca=True, size=16)
    old = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    try:
        model = compile_model(
            build_model(cfg, 5, mean=np.full(3, 100.0), std=np.full(3, 50.0), zca=P.fit_zca(x)[:2]), cfg
        )
        dtypes = {layer.name: layer.compute_dtype for layer in model.layers}
        assert dtypes["standardize"] == dtypes["zca"] == dtypes["predictions"] == "float32"
        assert dtypes["conv1"] == "float16" and model.output.dtype == "float32"
        hist = model.fit(x, y, epochs=1, verbose=0)
        assert np.isfinite(hist.history["loss"][0])
    finally:
        keras.mixed_precision.set_dtype_policy(old)
