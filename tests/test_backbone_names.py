"""Names that say what they are (issue 25.6): an .onnx model of the models folder is a backbone by its name, never
Keras' model of a similar name; an ambiguous name is refused; a folder's default backbone; the missing-cache hint
is a command that works; CNN run ids name what was trained."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import pytest
from test_hostile import fk

from featkit.backbones import locate, resolve
from featkit.backbones.names import default_backbone, models_dir
from featkit.cnn.presets import PRESETS, preset_with_options
from featkit.cnn.series import run_name
from featkit.core.errors import FeatkitError

SPLIT = "50/10/40"  # as reportfixtures extracts the `mini` photos


@pytest.fixture()
def models(tmp_path, mobilenet_onnx) -> Path:
    """A models folder holding the shared MobileNetV2 graph and its contract."""
    folder = tmp_path / "models"
    folder.mkdir()
    for f in (mobilenet_onnx, mobilenet_onnx.with_suffix(".json")):
        (folder / f.name).symlink_to(f)
    return folder


def test_an_onnx_model_of_the_models_folder_is_a_backbone_by_its_name(models, monkeypatch, tmp_path):
    assert locate("mobilenet-v2", models) == str(models / "mobilenet-v2.onnx")
    assert locate("mobilenetv2", models) == "mobilenetv2"  # Keras' registry name stays Keras
    assert locate("keras:mobilenet-v2", models) == "keras:mobilenet-v2"  # Keras' registry reads the prefix
    assert locate("onnx:mobilenet-v2", models) == str(models / "mobilenet-v2.onnx")
    with pytest.raises(FeatkitError, match=r"--backbone onnx:resnet50: no resnet50.onnx in .*\(mobilenet-v2\)"):
        locate("onnx:resnet50", models)
    monkeypatch.setenv("FEATKIT_MODELS", str(models))
    spec = resolve("mobilenet-v2", size=128)
    assert (spec.kind, spec.name, spec.size, spec.feature_dim) == ("onnx", "mobilenet-v2", 128, 1280)
    assert resolve("mobilenetv2", size=128).kind == "keras"
    # a file named like a Keras model: refused, listing both
    (models / "mobilenetv2.onnx").symlink_to(models / "mobilenet-v2.onnx")
    with pytest.raises(FeatkitError) as e:
        resolve("mobilenetv2")
    assert str(e.value) == (
        f"--backbone mobilenetv2 is ambiguous: the ONNX model {models / 'mobilenetv2.onnx'} or the Keras model "
        "mobilenetv2; give --backbone onnx:mobilenetv2 or --backbone keras:mobilenetv2."
    )
    assert resolve("keras:mobilenetv2").kind == "keras" and resolve("onnx:mobilenetv2", size=96).kind == "onnx"
    monkeypatch.setenv("FEATKIT_MODELS", str(tmp_path / "nowhere"))
    with pytest.raises(FeatkitError, match=r"\$FEATKIT_MODELS = '.*nowhere' is not a folder"):
        resolve("mobilenet-v2")


def test_backbones_lists_the_models_folder_by_default(models, monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    assert models_dir() is None  # no shared/ beside tmp_path
    (tmp_path / "featkit.toml").write_text(f'models = "{models}"\n')
    assert models_dir() == models
    r = fk(capsys, "backbones", "--json")
    assert r.code == 0, r.err
    rows = {row["name"]: row for row in json.loads(r.out)}
    assert rows["mobilenet-v2"]["kind"] == "onnx" and rows["mobilenetv2"]["kind"] == "keras"


def test_a_bad_featkit_toml_is_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FEATKIT_BACKBONE", raising=False)
    (tmp_path / "featkit.toml").write_text('backbone = "mobilenet-v2"\nsize = 128\n')
    with pytest.raises(FeatkitError, match="featkit.toml: unknown setting 'size'; featkit.toml takes backbone, models"):
        default_backbone()
    (tmp_path / "featkit.toml").write_text("backbone = \n")
    r = fk(capsys, "fit-head", "--data", tmp_path, "--cache", tmp_path / "cache")
    assert r.code == 1 and r.err.startswith("error: featkit.toml is not readable TOML") and r.err.count("\n") == 1


def test_a_folder_default_backbone_and_a_missing_cache_hint_that_works(
    report_workspace, mobilenet_onnx, monkeypatch, tmp_path, capsys
):
    ws = report_workspace  # `mini` extracted with the shared MobileNetV2 graph at 64 px into ws.cache
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FEATKIT_BACKBONE", raising=False)
    (tmp_path / "featkit.toml").write_text(f'backbone = "mobilenet-v2"\nmodels = "{mobilenet_onnx.parent}"\n')
    common = ["--data", ws.data, "--split", SPLIT, "--cache", ws.cache, "--reports", tmp_path / "reports"]
    r = fk(capsys, "fit-head", *common, "--size", 64, "-p", "C=0.01", "--quiet")
    assert r.code == 0, r.err
    assert "backbone: mobilenet-v2 (from featkit.toml)" in r.err
    run = next((tmp_path / "reports" / "runs").iterdir())
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["backbone"]["kind"] == "onnx" and cfg["backbone"]["name"] == "mobilenet-v2"

    # a size never extracted: the hint is the extract command that makes this very cache
    cache = tmp_path / "cache"
    shutil.copytree(ws.cache / "datasets", cache / "datasets")  # the split manifest, not the features
    common[common.index(ws.cache)] = cache
    r = fk(capsys, "fit-head", *common, "--size", 32, "--quiet")
    assert r.code == 1 and r.err.splitlines()[0] == "backbone: mobilenet-v2 (from featkit.toml)"
    assert len(r.err.splitlines()) == 2 and r.err.splitlines()[1].startswith("error: ")
    hint = r.err.split("run `")[1].split("` first")[0]
    onnx = mobilenet_onnx.parent / "mobilenet-v2.onnx"
    assert (
        hint == f"featkit extract --data {ws.data} --backbone {onnx} --size 32 --split {SPLIT} --seed 0 --cache {cache}"
    )
    r = fk(capsys, *shlex.split(hint)[1:], "--quiet")
    assert r.code == 0, r.err
    r = fk(capsys, "fit-head", *common, "--size", 32, "-p", "C=0.01", "--quiet")
    assert r.code == 0, r.err
    # Keras' model of that name is not the ONNX one: the hint says which is which
    r = fk(capsys, "fit-head", *common, "--backbone", "mobilenetv2", "--size", 32, "--quiet")
    assert r.code == 1 and "--backbone mobilenetv2 is Keras' model (Keras downloads its weights)" in r.err
    assert "the ONNX model of that name in the models folder is --backbone mobilenet-v2." in r.err


def test_cnn_run_ids_name_what_was_trained():
    transfer = preset_with_options("benchmark-64", {"model": "transfer", "backbone": "mobilenetv2", "size": 128})
    assert (transfer.name, run_name(transfer)) == ("benchmark-64", "cnn-transfer-mobilenetv2-128")
    assert run_name(PRESETS["benchmark-64"]) == "cnn-benchmark-64"
    assert run_name(preset_with_options("benchmark-64", {"epochs": 2})) == "cnn-benchmark-64"  # same network
    assert run_name(preset_with_options("benchmark-64", {"size": 96})) == "cnn-custom-3x16-32-64-96"


def test_a_transfer_cnn_takes_a_keras_name_never_an_onnx_one(models, monkeypatch):
    monkeypatch.setenv("FEATKIT_MODELS", str(models))
    cfg = preset_with_options("benchmark-64", {"model": "transfer", "backbone": "MobileNetV2", "size": 128})
    assert cfg.backbone == "mobilenetv2" and run_name(cfg) == "cnn-transfer-mobilenetv2-128"
    for onnx in ("mobilenet-v2", "onnx:mobilenet-v2", str(models / "mobilenet-v2.onnx")):
        with pytest.raises(FeatkitError, match=f"--backbone {onnx} is an ONNX model: a transfer CNN trains a Keras"):
            preset_with_options("benchmark-64", {"model": "transfer", "backbone": onnx})
    assert preset_with_options("benchmark-64", {"model": "transfer", "backbone": "keras:mobilenet-v2"}).backbone == (
        "mobilenetv2"
    )
