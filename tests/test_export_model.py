"""`featkit export model`: one ONNX file from photo pixels to a run's calibrated probabilities.

Each run kind is fitted on small REAL caches (Food-101 photos through the shared MobileNetV2 ONNX graph, see
cachefixtures.py); the exported file, run by onnxruntime alone on the same photos decoded as the caches were,
must reproduce the run's saved test predictions: top-1 agreement >= 99.5 % and mean |dp| <= 1e-3 (the caches
store float16 features, the export computes float32 ones: that rounding is the whole difference).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cachefixtures import CLASSES, SIZE, TEST_PER_CLASS, one_blas_thread
from conftest import REPO, read_food_photos

from featkit.core.errors import FeatkitError

SMALL = 64  # the second cache of the two-cache run: the same photos at 64 px


def _decode(blobs: list[bytes], size: int) -> np.ndarray:
    from featkit.data.images import decode_image

    return np.stack([decode_image(b, size) for b in blobs])


@pytest.fixture(scope="module")
def test_photos():
    names, blobs, _ = read_food_photos(CLASSES, TEST_PER_CLASS, "test")
    return names, {SIZE: _decode(blobs, SIZE), SMALL: _decode(blobs, SMALL)}


@pytest.fixture(scope="module")
def small_cache(caches, tmp_path_factory):
    """The plain cache's photos at 64 px through the same MobileNetV2 graph: a second cache of the same photos."""
    import dataclasses

    from cachefixtures import TRAIN_PER_CLASS, _features

    from featkit.features.cache import read_cache, write_cache

    plain = read_cache(caches.plain)
    tr_names, tr_blobs, _ = read_food_photos(CLASSES, TRAIN_PER_CLASS, "train")
    te_names, te_blobs, _ = read_food_photos(CLASSES, TEST_PER_CLASS, "test")
    assert list(plain.image_ids) == tr_names + te_names
    feats = _features(_decode(tr_blobs + te_blobs, SMALL))
    meta = plain.meta.replace(size=SMALL, backbone=dataclasses.replace(plain.meta.backbone, size=SMALL))
    path = tmp_path_factory.mktemp("small") / "plain.h5"
    write_cache(path, feats, plain.labels, plain.split, list(plain.image_ids), meta)
    return path


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    return tmp_path_factory.mktemp("export-reports")


def _fit(cache, head, reports, **kw):
    from featkit.heads.fit import fit_head

    with one_blas_thread():
        return fit_head(cache, head=head, reports=reports, quiet=True, **kw)


@pytest.fixture(scope="module")
def runs(caches, small_cache, reports):
    return {
        "logreg": _fit(caches.plain, "logreg", reports, params={"C": 0.01}),
        "knn": _fit(caches.plain, "knn", reports, params={"k": 40, "tau": 0.05, "smoothing": 2.0}),
        "lightgbm": _fit(caches.plain, "lightgbm", reports, params={"n_estimators": 40, "reduce": "pca", "pca": 16}),
        "two-cache": _fit([caches.plain, small_cache], "logreg", reports, params={"C": 0.01}),
        "mirrored": _fit(caches.plain, "logreg", reports, params={"C": 0.01}, tta="flip"),
    }


def _onnx_probs(path: Path, photos: dict[int, np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    meta = json.loads(Path(path).with_suffix(".json").read_text())
    opts = ort.SessionOptions()
    for key, value in meta["session_config"].items():  # as the README script does
        opts.add_session_config_entry(key, value)
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return sess.run([meta["output"]], {i["name"]: photos[i["size"]] for i in meta["inputs"]})[0]


def _check_reproduces(run, path: Path, test_photos) -> tuple[float, float]:
    names, photos = test_photos
    pred = run.load_predictions("test")
    order = {n: i for i, n in enumerate(names)}
    rows = [order[str(i)] for i in pred["image_ids"]]
    probs = _onnx_probs(path, {s: p[rows] for s, p in photos.items()})
    assert probs.shape == pred["probs"].shape and probs.dtype == np.float32
    agree = float((probs.argmax(1) == pred["probs"].argmax(1)).mean())
    dp = float(np.abs(probs - pred["probs"]).mean())
    assert agree >= 0.995, f"top-1 agreement {agree:.4f}"
    assert dp <= 1e-3, f"mean |dp| {dp:.2e}"
    return agree, dp


@pytest.mark.parametrize("kind", ["logreg", "knn", "lightgbm", "two-cache", "mirrored"])
def test_export_reproduces_the_runs_test_predictions(kind, runs, reports, test_photos, tmp_path):
    from featkit.apps.export_model import export_model

    out = tmp_path / "model.onnx"
    result = export_model(runs[kind].id, out, reports=reports, quiet=True)
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["sha256"] == result.sha256 and meta["run"] == runs[kind].id
    assert [c["id"] for c in meta["classes"]] == [c.id for c in runs[kind].classes]
    assert meta["resize"] == "stretch" and meta["size"] == SIZE and meta["output"] == "probabilities"
    assert meta["test_metrics"]["top1"] == pytest.approx(runs[kind].metrics.top1)
    if kind == "two-cache":
        assert [i["size"] for i in meta["inputs"]] == [SIZE, SMALL]
    _check_reproduces(runs[kind], out, test_photos)


def test_export_of_an_ensemble_averages_its_members_then_its_temperature(runs, reports, test_photos, tmp_path):
    from featkit.apps.ensemble import ensemble_runs
    from featkit.apps.export_model import export_model

    ens = ensemble_runs([runs["knn"].id, runs["mirrored"].id, runs["two-cache"].id], reports=reports, quiet=True)
    assert ens.metrics.temperature != 1.0  # the ensemble's own temperature is part of what is checked
    out = tmp_path / "ens.onnx"
    export_model(ens.id, out, reports=reports, quiet=True)
    _check_reproduces(ens, out, test_photos)
    import onnx

    convs = [n for n in onnx.load(str(out)).graph.node if n.op_type == "Conv"]
    # MobileNetV2 (52 convolutions without its ImageNet logits) once per size, though three members use it at 96 px
    assert len(convs) == 52 * 2


def _readme_script() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    m = re.search(r"<!-- export-script -->\n```python\n(.*?)```", text, re.S)
    assert m, "README.md lost its export script"
    return m.group(1)


def test_the_readme_script_classifies_a_photo_without_featkit(runs, reports, test_photos, tmp_path):
    """The README's script, run where `import featkit` fails, prints the export's top-5 for a real photo file."""
    from featkit.apps.export_model import export_model

    export_model(runs["mirrored"].id, tmp_path / "model.onnx", reports=reports, quiet=True)
    names, blobs, _ = read_food_photos(CLASSES, TEST_PER_CLASS, "test")
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(blobs[3])
    (tmp_path / "classify.py").write_text(_readme_script())
    blocker = tmp_path / "no-featkit" / "featkit"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('featkit is not installed here')\n")
    env = {"PYTHONPATH": str(blocker.parent), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    no_featkit = subprocess.run([sys.executable, "-c", "import featkit"], cwd=tmp_path, env=env, capture_output=True)
    assert no_featkit.returncode != 0 and b"not installed here" in no_featkit.stderr
    done = subprocess.run(
        [sys.executable, "classify.py", str(photo)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 5
    want = _onnx_probs(tmp_path / "model.onnx", {s: p[3:4] for s, p in test_photos[1].items()})[0]
    classes = json.loads((tmp_path / "model.json").read_text())["classes"]
    for line, j in zip(lines, np.argsort(-want)[:5], strict=True):
        p, name = line.split("  ", 1)
        assert name == classes[j]["name"] and float(p) == pytest.approx(want[j], abs=1e-4)


def test_export_refuses_bad_out_paths_in_one_line(runs, reports, tmp_path):
    from featkit.cli import main

    rid = runs["logreg"].id
    (tmp_path / "folder.onnx").mkdir()
    mine = tmp_path / "mine.onnx"
    mine.write_bytes(b"someone else's file")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    cases = [
        (tmp_path / "folder.onnx", "is a directory"),
        (mine, "exists and is not a featkit export"),
        (mine / "model.onnx", "is not a writable folder"),  # its folder is a file
        (tmp_path / "notes.onnx", "notes.json .* exists and is not featkit's"),  # would overwrite notes.json
    ]
    (tmp_path / "notes.json").write_text('{"mine": true}')
    if os.geteuid() != 0:  # root writes into any folder
        cases.append((locked / "model.onnx", "is not a writable folder"))
    try:
        for out, words in cases:
            with pytest.raises(FeatkitError, match=words):
                from featkit.apps.export_model import export_model

                export_model(rid, out, reports=reports, quiet=True)
        with pytest.raises(SystemExit) as e:
            main(["export", "model", rid, "--out", str(tmp_path / "folder.onnx"), "--reports", str(reports)])
        assert e.value.code == 1
    finally:
        locked.chmod(0o700)
    assert mine.read_bytes() == b"someone else's file" and list(locked.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.onnx", "locked", "mine.onnx", "notes.json"]
    assert (tmp_path / "notes.json").read_text() == '{"mine": true}'


def test_export_refuses_a_changed_backbone_a_damaged_run_and_an_unknown_head(runs, reports, tmp_path, capsys):
    import shutil

    from featkit.apps.export_model import export_model
    from featkit.cli import main
    from featkit.heads import HEADS, load_head

    def copy_run(name):
        dst = reports / "runs" / f"{runs['logreg'].id}-{name}"
        shutil.copytree(runs["logreg"].path, dst)
        return dst

    # the backbone file the run names is gone
    moved = copy_run("moved")
    cfg = json.loads((moved / "config.json").read_text())
    cfg["backbone"]["weights"]["path"] = str(tmp_path / "gone.onnx")
    (moved / "config.json").write_text(json.dumps(cfg))
    # or has other bytes than when the features were made
    changed = copy_run("changed")
    other = tmp_path / "other.onnx"
    other.write_bytes(b"not the model")
    cfg["backbone"]["weights"]["path"] = str(other)
    (changed / "config.json").write_text(json.dumps(cfg))
    damaged = copy_run("damaged")
    (damaged / "head.json").write_text("{ truncated")
    unknown = copy_run("unknown")
    HEADS["mystery"] = type("MysteryHead", (HEADS["logreg"],), {"name": "mystery"})
    try:
        info = json.loads((unknown / "head.json").read_text())
        (unknown / "head.json").write_text(json.dumps({**info, "head": "mystery"}))
        assert load_head(unknown).name == "mystery"
        for run, words in [
            (moved, "gone.onnx .* is missing"),
            (changed, "has changed since the features were made"),
            (damaged, "head.json is damaged"),
            (unknown, "no ONNX converter for the 'mystery' head"),
        ]:
            out = tmp_path / f"{run.name}.onnx"
            with pytest.raises(FeatkitError, match=words):
                export_model(str(run), out, reports=reports, quiet=True)
            assert not out.exists() and not out.with_suffix(".json").exists()
            assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
        with pytest.raises(SystemExit) as e:
            main(["export", "model", str(damaged), "--out", str(tmp_path / "x.onnx")])
        assert e.value.code == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and "head.json" in err[0]
    finally:
        del HEADS["mystery"]
        for run in (moved, changed, damaged, unknown):
            shutil.rmtree(run)


def test_export_via_the_command_line_replaces_its_own_earlier_export(runs, reports, tmp_path, capsys):
    from featkit.cli import main

    out = tmp_path / "model.onnx"
    shas = []
    for _ in range(2):  # the second export replaces the first (a featkit export); nothing else is left
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            main(["export", "model", runs["knn"].id, "--out", str(out), "--reports", str(reports), "--quiet", "--json"])
        assert e.value.code == 0
        shas.append(json.loads(capsys.readouterr().out)["sha256"])
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["run"] == runs["knn"].id and meta["kind"] == "head" and meta["precision"] == "float32"
    assert shas[0] == shas[1] == meta["sha256"]  # the same run exports to the same bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.onnx"]


def test_export_takes_the_run_a_sweep_selected(runs, reports, tmp_path):
    from featkit.apps.export_model import export_model

    with pytest.raises(FeatkitError, match="no finished sweep"):
        export_model("sweep:latest", tmp_path / "none.onnx", reports=reports, quiet=True)
    from featkit.core.schema import SweepRow, sweep_file

    sweep = reports / "sweeps" / "20260101-000000-sweep"
    sweep.mkdir(parents=True)
    rows = [SweepRow("logreg", run=runs["logreg"].id), SweepRow("knn", run=runs["knn"].id, selected=True)]
    (sweep / "sweep.json").write_text(json.dumps(sweep_file(sweep.name, rows, rows[1])))
    try:
        result = export_model("sweep:latest", tmp_path / "model.onnx", reports=reports, quiet=True)
        assert result.run == runs["knn"].id
        assert json.loads((tmp_path / "model.json").read_text())["run"] == runs["knn"].id
    finally:
        import shutil

        shutil.rmtree(reports / "sweeps")


def test_export_without_the_extra_says_how_to_install_it(runs, reports, tmp_path, monkeypatch):
    from featkit.apps.export_model import export_model

    monkeypatch.setitem(sys.modules, "onnxmltools", None)  # as if not installed: importing it raises ImportError
    with pytest.raises(FeatkitError, match=re.escape('pip install "featkit[export]"')):
        export_model(runs["lightgbm"].id, tmp_path / "model.onnx", reports=reports, quiet=True)
    assert list(tmp_path.iterdir()) == []


def test_nothing_imports_the_export_libraries_until_an_export_runs():
    # (pyarrow is left out: pandas itself imports it when it is installed)
    code = (
        "import sys, featkit.cli, featkit.apps.export_model, featkit.heads.to_onnx, featkit.backbones.to_onnx, "
        "featkit.cnn.to_onnx, featkit.features.quantize\n"
        "heavy = [m for m in ('tf2onnx', 'onnxmltools', 'skl2onnx', 'tensorflow') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_parts_declaring_unused_onnx_domains_do_not_break_a_lightgbm_head(runs):
    """onnxruntime's int8 models declare ai.onnx.ml 5 (which no longer has TreeEnsembleClassifier) without using
    it: embedding one beside a LightGBM head must still give a valid graph."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from featkit.core.onnx_graph import GraphBuilder
    from featkit.heads import load_run_head
    from featkit.heads.to_onnx import head_onnx

    head = load_run_head(runs["lightgbm"])
    d = head.n_features_in_
    vi = helper.make_tensor_value_info
    scale = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y"])],
        "int8-like",
        [vi("x", TensorProto.FLOAT, ["N", d])],
        [vi("y", TensorProto.FLOAT, ["N", d])],
        [onnx.numpy_helper.from_array(np.float32(2.0), "two")],
    )
    part = helper.make_model(scale, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("ai.onnx.ml", 5)])
    g = GraphBuilder()
    x = g.input("features", "float32", ["N", d])
    (y,) = g.embed(part, "part/", {"x": x})
    (p,) = g.embed(head_onnx(head), "head/", {"features": y})
    g.output(p, "probabilities", "float32", ["N", head.n_classes_])
    sess = ort.InferenceSession(g.model().SerializeToString(), providers=["CPUExecutionProvider"])
    X = np.random.default_rng(0).random((3, d), dtype=np.float32)
    got = sess.run(["probabilities"], {"features": X})[0]
    np.testing.assert_allclose(got, head.predict_proba(2 * X), atol=1e-5)
