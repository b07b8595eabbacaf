"""A CNN run is finished like a head run (same scoring files), and the study's robustness test runs on it:
the run's own test photos, perturbed as `featkit extract --sensitivity` perturbs them, through the network."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from featkit.data.augment import SENSITIVITY_VIEWS

pytestmark = pytest.mark.slow  # builds and trains a Keras model


@pytest.fixture(scope="module")
def cnn_run(mini, tmp_path_factory):
    from featkit.cnn.series import train_preset

    root = tmp_path_factory.mktemp("cnn-run")
    run, _ = train_preset(
        "basic", mini, {"epochs": 1, "size": 32}, cache=root / "cache", reports=root / "reports", quiet=True
    )
    return run


def test_a_cnn_run_has_the_files_of_a_head_run(cnn_run):
    names = {p.name for p in cnn_run.path.iterdir()}
    assert {
        "config.json",
        "classes.json",
        "test_predictions.npz",
        "metrics.json",
        "history.csv",
        "per_class.csv",
        "confusion.csv",
        "confusion.png",
        "confused_pairs.csv",
        "model.keras",
        "reliability.csv",
        "reliability.png",
    } <= names
    m, pred = cnn_run.metrics, cnn_run.load_predictions()
    probs, labels = pred["probs"], pred["labels"]
    p_true = np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1)
    assert m.log_loss == pytest.approx(float(-np.log(p_true).mean()), rel=1e-6)
    assert m.macro_f1 is not None and m.n == len(labels) == m.extra["n_test"]
    assert pd.read_csv(cnn_run.path / "per_class.csv")["n"].sum() == len(labels)
    cal = m.calibration
    assert cal["temperature"] == m.temperature > 0 and cal["after"]["log_loss"] == pytest.approx(m.log_loss)
    cfg = json.loads((cnn_run.path / "config.json").read_text())
    assert (cfg["kind"], cfg["name"], cfg["size"], cfg["params"]["blocks"]) == ("cnn", "basic", 32, 1)


def test_sensitivity_on_a_cnn_run(cnn_run):
    from featkit.apps.evaluate import sensitivity

    df = sensitivity(cnn_run)
    assert df["view"].tolist() == ["plain"] + [v.name for v in SENSITIVITY_VIEWS]
    n = len(cnn_run.load_predictions()["labels"])
    assert df["n"].tolist() == [n] * 4 and df.loc[0, "top1"] == round(cnn_run.metrics.top1, 4)
    assert df.loc[3, "rotation"] == 180 and df.loc[3, "width_shift"] == 0.4
    again = sensitivity(cnn_run)  # the perturbations are seeded per photo: the same table again
    pd.testing.assert_frame_equal(df, again)
    assert pd.read_csv(cnn_run.path / "sensitivity.csv")["view"].tolist() == df["view"].tolist()


def test_the_perturbed_photos_are_those_extract_caches(cnn_run):
    """Recomputed by hand for one view: each test photo decoded, perturbed with the rng `featkit extract
    --sensitivity` uses for (seed, view, photo), through the network; the table's top-1 is that accuracy."""
    from featkit.apps.evaluate import sensitivity
    from featkit.cnn.train import predict_images
    from featkit.data.augment import photo_rng
    from featkit.data.images import decode_image
    from featkit.data.source import open_source
    from featkit.data.splits import read_manifest
    from featkit.runs.metrics import topk_accuracy

    cfg = cnn_run.config
    m = read_manifest(cfg.manifest)
    pred = cnn_run.load_predictions()
    ids = m["image_id"].astype(str).to_numpy()
    rows = [int(np.flatnonzero(ids == str(i))[0]) for i in pred["image_ids"]]
    view = SENSITIVITY_VIEWS[2]
    source = open_source(cfg.data)
    photos = np.stack(
        [view.apply(decode_image(source.read(m["path"][r]), 32), photo_rng(cfg.seed, view.name, 0, r)) for r in rows]
    )
    plain = np.stack([decode_image(source.read(m["path"][r]), 32) for r in rows])
    assert not np.array_equal(photos, plain)
    expected = topk_accuracy(predict_images(cnn_run, photos), pred["labels"], (1,))[1]
    df = sensitivity(cnn_run)
    assert df.loc[df["view"] == view.name, "top1"].item() == round(expected, 4)


def test_predict_images_gives_the_saved_calibrated_probabilities(cnn_run):
    """The run's temperature is applied to new photos exactly as to the test photos it saved."""
    from featkit.cnn.train import predict_images
    from featkit.data.images import decode_image
    from featkit.data.source import open_source
    from featkit.data.splits import read_manifest

    cfg, pred = cnn_run.config, cnn_run.load_predictions()
    m = read_manifest(cfg.manifest)
    ids = m["image_id"].astype(str).to_numpy()
    source = open_source(cfg.data)
    photos = np.stack(
        [decode_image(source.read(m["path"][int(np.flatnonzero(ids == str(i))[0])]), 32) for i in pred["image_ids"]]
    )
    np.testing.assert_allclose(predict_images(cnn_run, photos), pred["probs"], rtol=1e-4, atol=1e-5)
    assert cnn_run.metrics.temperature != 1.0  # a real fit, not the identity
