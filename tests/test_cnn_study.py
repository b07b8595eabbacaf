"""The CNN presets are the study's 18 rows as it ran them (checked against the study digest, written out here
independently of presets.py), every preset's model builds with the study's parameter count, a few presets train
on real photos, `featkit series` resumes, and the report puts the study's figures beside featkit's."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from featkit.cli import app
from featkit.cnn.presets import PRESETS, STUDY_ORDER
from featkit.cnn.series import series_names
from featkit.cnn.study import ROBUSTNESS_REMARK, study_comparison
from featkit.core.errors import FeatkitError
from featkit.report.build import build_report
from featkit.runs.store import new_run

# /work/shared/docs/study.md, section 2 (rows 1-16) and section 3 (rows 17-18): row -> preset, image size,
# filters per conv layer, dropout, augmentation (A), feature-wise standardisation (S), epochs (None: not stated),
# parameters at 256 classes (printed, or the digest's computed total; row 8: 76,464, A1), top-1 %, top-5 %,
# checkpoint file.
STUDY_ROWS = {
    1: ("basic", 64, (16,), 0.0, False, False, 5, 4_560, 2.36, 7.63, "basic.pixel.64.conv.1.pool.1.hdf5"),
    2: (
        "benchmark-64",
        64,
        (16, 32, 64),
        0.0,
        False,
        False,
        5,
        27_184,
        5.67,
        16.64,
        "basic.pixel.64.conv.3.pool.3.hdf5",
    ),
    3: (
        "benchmark-128",
        128,
        (16, 32, 64),
        0.0,
        False,
        False,
        5,
        27_184,
        5.83,
        18.15,
        "basic.pixel.128.conv.3.pool.3.hdf5",
    ),
    4: (
        "benchmark-256",
        256,
        (16, 32, 64),
        0.0,
        False,
        False,
        5,
        27_184,
        6.11,
        17.53,
        "basic.pixel.256.conv.3.pool.3.hdf5",
    ),
    5: (
        "aug-3",
        128,
        (16, 32, 64),
        0.0,
        True,
        False,
        5,
        27_184,
        3.89,
        13.48,
        "nozca.nostd.pixel.128.conv.3.pool.3.hdf5",
    ),
    6: (
        "aug-3-drop0.5",
        128,
        (16, 32, 64),
        0.5,
        True,
        False,
        5,
        27_184,
        3.46,
        11.77,
        "nozca.nostd.dropouts.pixel.128.conv.3.pool.3.hdf5",
    ),
    7: (
        "aug-3-drop0.3-10ep",
        128,
        (16, 32, 64),
        0.3,
        True,
        False,
        10,
        27_184,
        5.33,
        18.73,
        "nozca.nostd.dropouts.10.epochs.pixel.128.conv.3.pool.3.hdf5",
    ),
    8: (
        "aug-4-drop0.3-10ep",
        128,
        (16, 32, 64, 128),
        0.3,
        True,
        False,
        10,
        76_464,
        6.10,
        20.63,
        "nozca.nostd.dropouts.10.epochs.pixel.128.conv.4.pool.4.hdf5",
    ),
    9: (
        "aug-4-morenodes-drop0.3-10ep",
        128,
        (32, 64, 64, 128),
        0.3,
        True,
        False,
        10,
        91_040,
        9.19,
        25.62,
        "nozca.nostd.morenodes.dropouts.10.epochs.pixel.128.conv.4.pool.4.hdf5",
    ),
    10: ("std-aug-3", 128, (16, 32, 64), 0.0, True, True, 5, 27_184, 6.64, 14.85, "nozca.pixel.128.conv.3.pool.3.hdf5"),
    11: (
        "std-aug-3-drop0.5-10ep",
        128,
        (16, 32, 64),
        0.5,
        True,
        True,
        10,
        27_184,
        7.78,
        14.18,
        "nozca.multi.nodes.dropout.10.epochs.pixel.128.conv.3.pool.3.hdf5",
    ),
    12: (
        "std-aug-4-10ep",
        128,
        (16, 32, 64, 128),
        0.0,
        True,
        True,
        10,
        76_464,
        9.65,
        20.34,
        "nozca.10.epochs.pixel.128.conv.4.pool.4.hdf5",
    ),
    13: (
        "std-aug-4x64-10ep",
        128,
        (64, 64, 64, 64),
        0.0,
        True,
        True,
        10,
        66_816,
        11.46,
        15.66,
        "nozca.64.nodes.10.epochs.pixel.128.conv.4.pool.4.hdf5",
    ),
    14: (
        "std-aug-4x128-10ep",
        128,
        (128, 128, 128, 128),
        0.0,
        True,
        True,
        10,
        231_680,
        12.75,
        18.00,
        "nozca.128.nodes.10.epochs.pixel.128.conv.4.pool.4.hdf5",
    ),
    15: (
        "std-aug-4x128-drop0.3-10ep",
        128,
        (128, 128, 128, 128),
        0.3,
        True,
        True,
        10,
        231_680,
        10.98,
        25.98,
        "nozca.128.nodes.10.dropout.epochs.pixel.128.conv.4.pool.4.hdf5",
    ),
    16: (
        "std-aug-5x128-drop0.3-20ep",
        128,
        (128, 128, 128, 128, 128),
        0.3,
        True,
        True,
        20,
        297_344,
        18.19,
        38.63,
        "nozca.128.nodes.10.dropout.20.epochs.pixel.128.conv.5.pool.5.hdf5",
    ),
    17: (
        "vgg16-transfer-48",
        48,
        (),
        0.0,
        False,
        False,
        None,
        15_502_400,
        12.07,
        30.49,
        "vgg16.pixel.48.conv.1.pool.1.hdf5",
    ),
    18: (
        "vgg16-transfer-128",
        128,
        (),
        0.0,
        False,
        False,
        None,
        15_502_400,
        21.73,
        49.00,
        "vgg16.pixel.128.conv.1.pool.1.hdf5",
    ),
}
PRESET_ROW = {v[0]: k for k, v in STUDY_ROWS.items()}
runner = CliRunner()


def fk(*args) -> dict | list | str:
    res = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout) if "--json" in args else res.stdout


# ------------------------------------------------------------------------------------------- presets vs digest


def test_presets_are_the_study_rows_in_its_order():
    assert set(PRESETS) == set(PRESET_ROW)  # no preset that matches no row of the study
    assert list(STUDY_ORDER) == [STUDY_ROWS[i][0] for i in range(1, 19)] == series_names(["study"])
    with pytest.raises(FeatkitError, match="no CNN preset 'basik': give 'study', 'all' or preset names"):
        series_names(["basic", "basik"])
    for row, (name, size, filters, dropout, aug, std, epochs, params, top1, top5, checkpoint) in STUDY_ROWS.items():
        p = PRESETS[name]
        got = (
            p.study_row,
            p.size,
            p.filters,
            p.dropout,
            p.augment,
            p.standardize,
            p.study_params,
            p.study_top1,
            p.study_top5,
            p.study_checkpoint,
        )
        assert got == (row, size, filters, dropout, aug, std, params, top1, top5, checkpoint), name
        if epochs is not None:
            assert p.epochs == epochs, name
        assert p.optimizer == "rmsprop" and p.zca is False and p.study_name and p.note, name
        if p.model == "custom":
            assert p.kernel == 2 and p.blocks == len(filters), name
        else:
            assert (p.backbone, p.dense, p.weights) == ("vgg16", 1024, "imagenet"), name
        if aug:  # the study's ImageDataGenerator: rotation 90, shifts 0.2, flips
            assert (p.rotation, p.shift, p.hflip, p.vflip) == (90.0, 0.2, True, True), name


def test_presets_and_extract_share_the_augmentation_defaults():
    from featkit.data.augment import augment_view
    from featkit.features.extract import ExtractOptions

    view, opts, p = augment_view(), ExtractOptions(), PRESETS["aug-3"]
    assert (view.rotation, view.width_shift, view.height_shift) == (p.rotation, p.shift, p.shift) == (90.0, 0.2, 0.2)
    assert (opts.rotation, opts.shift, opts.flips) == (90.0, 0.2, True)


def test_list_shows_each_study_row():
    rows = fk("train-cnn", "--list", "--json")
    assert [r["name"] for r in rows] == list(STUDY_ORDER)
    for r in rows:
        _, size, filters, dropout, aug, std, epochs, params, top1, top5, checkpoint = STUDY_ROWS[r["study_row"]]
        assert (r["study_checkpoint"], r["study_top1"], r["study_top5"], r["study_params"], r["size"]) == (
            checkpoint,
            top1,
            top5,
            params,
            size,
        )
        assert r["study_dataset"] == "UECFOOD-256" and "batch size 32" in r["note"]
    by_name = {r["name"]: r for r in rows}
    assert by_name["aug-4-drop0.3-10ep"]["filters"] == "16-32-64-128"
    assert by_name["std-aug-3"]["augmentation"] == "rotation 90, shifts 0.2, flips h+v"
    assert by_name["benchmark-128"]["study_epoch_seconds"] == [117, 119]
    assert "A1" in by_name["aug-4-drop0.3-10ep"]["note"]
    text = fk("train-cnn", "--list")
    for r in rows:
        assert r["study_checkpoint"] in text and f'"{r["study_name"]}"' in text
    assert "12.75 / 18.00" in text and "861-905" in text


# --------------------------------------------------------------------------------------- every preset's model


@pytest.fixture(scope="module")
def two_photos():
    from conftest import read_food_photos

    _, blobs, _ = read_food_photos(classes=2, per_class=1)
    return blobs


@pytest.mark.slow
@pytest.mark.parametrize("name", list(STUDY_ORDER))
def test_every_preset_builds_with_the_study_parameter_count(name, two_photos):
    pytest.importorskip("keras")
    import keras

    from featkit.cnn.models import build_model
    from featkit.data.images import decode_image

    p = PRESETS[name].replace(weights="none") if PRESETS[name].model == "transfer" else PRESETS[name]
    stats = {"mean": np.array([120.0, 110.0, 90.0]), "std": np.array([60.0, 60.0, 65.0])} if p.standardize else {}
    model = build_model(p, 256, **stats)
    assert model.count_params() == STUDY_ROWS[PRESET_ROW[name]][7]
    x = np.stack([decode_image(b, p.size) for b in two_photos])
    probs = np.asarray(model(x, training=False))
    assert probs.shape == (2, 256)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    if p.model != "custom":
        return
    names = [layer.name for layer in model.layers]
    per_block = ["conv", "drop", "pool"] if p.dropout else ["conv", "pool"]  # dropout before pooling, as the study
    blocks = [n for n in names if n[:4] in ("conv", "drop", "pool")]
    assert blocks == [f"{kind}{i}" for i in range(1, p.blocks + 1) for kind in per_block]
    for i, f in enumerate(p.filters, 1):
        conv = model.get_layer(f"conv{i}")
        assert (conv.filters, conv.kernel_size, conv.padding, conv.activation.__name__) == (f, (2, 2), "same", "relu")
    assert ("standardize" in names) == p.standardize and ("to_float" in names)
    if p.augment:
        rot, shift, flip = (model.get_layer(n) for n in ("aug_rotation", "aug_shift", "aug_flip"))
        assert rot.get_config()["factor"] in (0.25, (-0.25, 0.25), [-0.25, 0.25])  # +-90 degrees
        assert (shift.get_config()["height_factor"], shift.get_config()["width_factor"]) == (0.2, 0.2)
        assert flip.get_config()["mode"] == "horizontal_and_vertical"
    else:
        assert not [n for n in names if n.startswith("aug_")]
    assert isinstance(model.layers[-2], keras.layers.GlobalAveragePooling2D)


# ------------------------------------------------------------------------------------ a few presets, trained


@pytest.mark.slow
@pytest.mark.parametrize("name", ["basic", "aug-4-drop0.3-10ep", "std-aug-3", "vgg16-transfer-48"])
def test_representative_presets_train_on_real_photos(name, tmp_path):
    pytest.importorskip("keras")
    from conftest import read_food_photos

    from featkit.cnn.train import read_history, train_cnn
    from featkit.data.images import decode_image
    from featkit.runs.metrics import topk_accuracy

    cfg = PRESETS[name].replace(
        epochs=1, batch_size=5, **({"weights": "none"} if PRESETS[name].model == "transfer" else {})
    )
    _, blobs, labels = read_food_photos(classes=5, per_class=4)
    x = np.stack([decode_image(b, cfg.size) for b in blobs])  # the preset's own image size
    i = np.arange(len(x)) % 4  # per class: 2 train, 1 valid, 1 test
    classes = [{"index": c, "id": f"c{c}", "name": f"class {c}"} for c in range(5)]
    run = train_cnn(
        cfg,
        x[i < 2],
        labels[i < 2],
        x[i == 2],
        labels[i == 2],
        x[i == 3],
        labels[i == 3],
        classes,
        tmp_path / "run",
        quiet=True,
        test_ids=[f"p{k}" for k in range(5)],
    )
    config, metrics = run.config, run.metrics
    assert {k: config.params[k] for k in cfg.training_settings()} == json.loads(json.dumps(cfg.training_settings()))
    assert (metrics.extra["study_top1"], metrics.extra["study_top5"]) == (cfg.study_top1, cfg.study_top5)
    pred = run.load_predictions()
    assert list(pred["image_ids"]) == [f"p{k}" for k in range(5)] and pred["probs"].shape == (5, 5)
    acc = topk_accuracy(pred["probs"], pred["labels"], (1, 5))
    assert (metrics.top1, metrics.top5) == (acc[1], acc[5]) and acc[5] == 1.0  # 5 classes: top-5 is all
    assert [r["epoch"] for r in read_history(run.path / "history.csv")] == [1]
    if cfg.standardize:
        mean = x[i < 2].reshape(-1, 3).astype(np.float64).mean(axis=0)
        np.testing.assert_allclose(config.extra["standardize_mean"], mean)


# ----------------------------------------------------------------------------------------- series, resumable


@pytest.mark.slow
def test_series_skips_finished_and_resumes_interrupted_presets(mini, tmp_path):
    pytest.importorskip("keras")
    from conftest import training_interrupted_after_first_epoch

    from featkit.cnn import train as T
    from featkit.cnn.series import run_series

    common = ["--data", mini, "--per-class", 3, "--cache", tmp_path / "cache", "--reports", tmp_path / "reports"]
    first = fk("series", "basic", "benchmark-64", "--epochs", 1, "--quiet", "--json", *common)
    assert [(r["preset"], r["skipped"]) for r in first["runs"]] == [("basic", False), ("benchmark-64", False)]
    again = fk("series", "basic", "benchmark-64", "--epochs", 1, "--json", *common)
    assert [(r["run"], r["skipped"]) for r in again["runs"]] == [(r["run"], True) for r in first["runs"]]
    assert len(list((tmp_path / "reports" / "runs").iterdir())) == 2

    # an interrupted 2-epoch run of basic: the series continues it at epoch 2 instead of starting again
    kw = dict(epochs=2, per_class=3, cache=tmp_path / "cache", reports=tmp_path / "reports", quiet=True)
    with training_interrupted_after_first_epoch():
        run_series(["basic"], mini, **kw)
    unfinished = [d for d in (tmp_path / "reports" / "runs").iterdir() if not (d / "metrics.json").exists()]
    assert len(unfinished) == 1
    done, failed = run_series(["basic"], mini, **kw)
    assert not failed and done[0]["run"] == unfinished[0].name and not done[0]["skipped"]
    assert [r["epoch"] for r in T.read_history(unfinished[0] / "history.csv")] == [1, 2]

    table = study_comparison(tmp_path / "reports")
    assert table["preset"].tolist() == ["basic", "basic", "benchmark-64"]  # study order, newest first
    two_epochs = table.iloc[0]
    m = json.loads((unfinished[0] / "metrics.json").read_text())
    assert (two_epochs["study_top1"], two_epochs["study_top5"], two_epochs["study_s_per_epoch"]) == (2.36, 7.63, "35")
    assert two_epochs["featkit_top1"] == round(100 * m["top1"], 2) and two_epochs["epochs"] == "2 / 5"
    assert two_epochs["dataset"] == f"{mini.name} (4 classes)" and two_epochs["n_train"] == 4 * 3
    assert two_epochs["differs"] == f"dataset {mini.name}; 3 photos per class and split; epochs 2 (preset 5)"
    md = build_report(tmp_path / "reports")["results_md"].read_text()
    assert "## Study vs featkit (CNN series)" in md and "Robustness" not in md  # no sensitivity.csv yet


# --------------------------------------------------------------------------------------------- report section


def _cnn_run(reports, preset: str, top1: float, sensitivity: list[tuple] | None = None):
    run = new_run(f"cnn-{preset}", reports)
    p = PRESETS[preset]
    run.write_json(
        "config.json",
        {
            **p.to_dict(),
            "kind": "cnn",
            "preset": preset,
            "backbone": None,
            "seed": 0,
            "per_class": None,
            "data": "/x/UECFOOD256.zip",
            "dataset_name": "UECFOOD-256",
            "n_train": 22155,
        },
    )
    run.write_json("classes.json", [{"index": 0, "id": "1", "name": "rice"}])
    run.write_json("metrics.json", {"top1": top1, "top5": 0.3, "epochs_run": p.epochs, "seconds_per_epoch": 130.04})
    if sensitivity:
        pd.DataFrame(
            sensitivity, columns=["view", "rotation", "width_shift", "height_shift", "flips", "n", "top1", "top5"]
        ).to_csv(run.path / "sensitivity.csv", index=False)
    return run


def test_report_puts_study_beside_featkit_with_the_robustness_remark(tmp_path):
    reports = tmp_path / "reports"
    plain = ("plain", 0, 0, 0, "none", 2094, 0.1, 0.3)
    applied = _cnn_run(
        reports, "std-aug-4-10ep", 0.1, [plain, ("sens-rot45-shift0.1", 45, 0.1, 0.1, "none", 2094, 0.08, 0.27)]
    )
    never = _cnn_run(
        reports,
        "benchmark-64",
        0.05,
        [plain, ("sens-rot180-h0.3-w0.4-flips", 180, 0.4, 0.3, "horizontal+vertical", 2094, 0.1, 0.3)],
    )
    table = study_comparison(reports)
    assert table["run_id"].tolist() == [never.id, applied.id]  # study rows 2, 12
    row = table.iloc[1]
    assert (row["study_top1"], row["featkit_top1"], row["study_s_per_epoch"], row["featkit_s_per_epoch"]) == (
        9.65,
        10.0,
        "132-136",
        130.0,
    )
    assert row["differs"] == ""  # the study's row, on its dataset
    paths = build_report(reports)
    md = paths["results_md"].read_text()
    index = paths["index_html"].read_text()
    assert "The study vs featkit" in index and applied.id in index.split("The study vs featkit")[1]
    section = md.split("## Study vs featkit")[1].split("## Incomplete")[0]
    assert ROBUSTNESS_REMARK in section and "21.7285" in section
    mine = section.split(f"Run `{applied.id}`")[1].split("Run `")[0]
    assert "1 of 1 perturbed rows differ from the plain score" in mine
    theirs = section.split(f"Run `{never.id}`")[1]
    assert "Every perturbed row equals the plain score" in theirs
