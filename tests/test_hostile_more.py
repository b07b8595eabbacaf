"""Hostile input, round two: the surfaces added after the first round (sweeps, ensembles, several caches, the
mirrored view, calibration, kNN, int8, Ray) end with a correct result, or one `error:` line naming the culprit
(exit 1 bad data, 2 bad usage), within seconds, with nothing lost and nothing half-made left behind.

Every input is built here, from real Food-101 photos and the shared ONNX models; the CLI runs through `main`.
"""

from __future__ import annotations

import errno
import json
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import test_hostile
from test_hostile import SIZE, copy_run, extract_args, fk, make_dataset, ok, refused, snapshot

from featkit.core.errors import FeatkitError
from featkit.heads import get_head
from featkit.heads.base import HeadInputError
from featkit.runs.metrics import NonFiniteError, topk_accuracy

# the first round's module fixtures: real photos, and a dataset with its cache and a logreg run
photos = test_hostile.photos
ws = test_hostile.ws


def _empty(folder: Path) -> bool:
    """No such folder, or an empty one."""
    return not folder.exists() or not any(folder.iterdir())


def _run_path(r) -> Path:
    return Path(json.loads(r.out)["path"])


def _fit(capsys, features, reports, *more) -> Path:
    return _run_path(ok(fk(capsys, "fit-head", "--features", features, "--reports", reports, "--json", "-q", *more)))


def _nan_predictions(run: Path, name: str = "test") -> None:
    f = run / f"{name}_predictions.npz"
    with np.load(f) as z:
        d = dict(z)
    d["probs"] = d["probs"].copy()
    d["probs"][::2] = np.nan
    with open(f, "wb") as fh:
        np.savez_compressed(fh, **d)


@pytest.fixture(scope="module")
def other(tmp_path_factory, photos):
    """A second dataset with the same class and file names but other photos (another fingerprint), its cache
    and a logreg run on it."""
    root = tmp_path_factory.mktemp("other")
    by_class: dict[str, list] = {}
    for name, blob in photos:
        by_class.setdefault(name.split("/")[0], []).append((name, blob))
    swapped = []
    for items in by_class.values():  # every file name keeps its class, but shows another photo of it
        names = [n for n, _ in items]
        blobs = [b for _, b in items]
        swapped += list(zip(names, blobs[1:] + blobs[:1], strict=True))
    ds = make_dataset(root / "ds", swapped)
    return {"root": root, "ds": ds}


def _extract(capsys, ws, ds, cache, *more) -> Path:
    r = ok(fk(capsys, *extract_args(ws, ds, cache), "--json", *more))
    return Path(json.loads(r.out)[0]["path"])


# ------------------------------------------------------------------------- 1. non-finite probabilities


def test_top_k_never_scores_nan_or_infinity():
    probs = np.array([[0.2, 0.8], [np.nan, 0.1], [np.inf, 0.0]], np.float32)
    with pytest.raises(NonFiniteError, match="2 of 3 rows"):
        topk_accuracy(probs, np.array([1, 0, 0]))
    assert topk_accuracy(probs[:1], np.array([1]))[1] == 1.0


def test_knn_with_a_tiny_tau_gives_finite_nearest_neighbour_votes():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 8)).astype(np.float32)
    y = np.arange(30) % 3
    Xq = rng.normal(size=(10, 8)).astype(np.float32)
    head = get_head("knn", k=5, tau=0.0001, smoothing=1.0).fit(X, y, n_classes=3)
    probs = head.predict_proba(Xq)  # exp((cos - 1) / 1e-4) underflows to 0 for every neighbour: was 0/0 = NaN
    assert np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    unit = X / np.linalg.norm(X, axis=1, keepdims=True)
    nearest = np.argmax((Xq / np.linalg.norm(Xq, axis=1, keepdims=True)) @ unit.T, axis=1)
    np.testing.assert_array_equal(probs.argmax(axis=1), y[nearest])  # tau -> 0: the nearest neighbour decides


@pytest.mark.parametrize(
    "head, param, name",
    [
        ("lightgbm", "learning_rate=inf", "learning_rate"),
        ("lightgbm", "learning_rate=nan", "learning_rate"),
        ("knn", "tau=inf", "tau"),
        ("logreg", "C=nan", "C"),
        ("knn", "smoothing=-inf", "smoothing"),
    ],
)
def test_nan_and_infinite_parameters_are_refused(ws, tmp_path, capsys, head, param, name):
    r = fk(capsys, "fit-head", "--features", ws["plain"], "--head", head, "-p", param, "--reports", tmp_path, "-q")
    refused(r, 1, f"{head} head", name)
    assert _empty(tmp_path / "runs")


def test_a_head_giving_nan_fails_naming_its_settings_and_leaves_no_run(ws, tmp_path, capsys, monkeypatch):
    from featkit.heads.knn import KNNHead

    monkeypatch.setattr(KNNHead, "vote_proba", lambda self, n, s: np.full((len(n), self.n_classes_), np.nan))
    r = fk(capsys, "fit-head", "--features", ws["plain"], "--head", "knn", "-p", "k=3", "--reports", tmp_path, "-q")
    refused(r, 1, "knn head with k=3", "NaN")
    assert _empty(tmp_path / "runs")


def test_a_search_marks_a_nan_candidate_failed_and_chooses_another(monkeypatch):
    from featkit.heads.knn import KNNHead
    from featkit.heads.search import select

    real = KNNHead.vote_proba

    def vote(self, n, s):
        p = real(self, n, s)
        return np.full_like(p, np.nan) if self.tau == 0.03 else p

    monkeypatch.setattr(KNNHead, "vote_proba", vote)
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(60, 6)).astype(np.float32), np.arange(60) % 3
    Xv, yv = rng.normal(size=(30, 6)).astype(np.float32), np.arange(30) % 3
    sel = select("knn", X, y, Xv, yv, n_classes=3, params={"k": 5, "smoothing": 1.0, "tau": "0.03,0.1"})
    failed, chosen = sel.candidates
    assert "NaN" in failed.error and np.isnan(failed.valid_top1)
    assert sel.chosen == 1 and sel.params["tau"] == 0.1 and chosen.error == ""
    assert sel.to_dict()["candidates"][0]["error"] == failed.error
    with pytest.raises(NonFiniteError, match="tau=0.03"):  # every candidate failed: the reason, not a choice
        select("knn", X, y, Xv, yv, n_classes=3, params={"k": 5, "tau": 0.03})


@pytest.mark.parametrize("command", ["evaluate", "ensemble"])
def test_a_run_file_holding_nan_is_refused_by_name(ws, tmp_path, capsys, command):
    run = copy_run(ws, tmp_path)
    _nan_predictions(run)
    args = [command, run] if command == "evaluate" else [command, run, ws["run"]]
    quiet = ["-q"] if command == "ensemble" else []
    refused(fk(capsys, *args, "--reports", tmp_path / "reports", *quiet), 1, str(run / "test_predictions.npz"), "NaN")
    if command == "ensemble":
        assert sorted(p.name for p in (tmp_path / "reports" / "runs").iterdir()) == [run.name]


def test_report_lists_a_run_holding_nan_as_incomplete(ws, tmp_path, capsys):
    run = copy_run(ws, tmp_path)
    _nan_predictions(run)
    r = ok(fk(capsys, "report", "--reports", tmp_path / "reports", "--json", "-q"))
    text = Path(json.loads(r.out)["results_md"]).read_text()
    assert f"`runs/{run.name}`: unreadable config, metrics or predictions" in text and "NaN" in text


def test_every_head_refuses_a_single_training_class():
    X = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    for name in ("logreg", "lightgbm", "knn"):
        with pytest.raises(HeadInputError, match="only one class"):
            get_head(name).fit(X, np.zeros(20, int), n_classes=3)


def test_lightgbm_min_child_samples_above_the_rows_is_clipped_with_a_word(capsys):
    rng = np.random.default_rng(0)
    y = np.arange(40) % 2
    X = (rng.normal(size=(40, 3)) + y[:, None] * 3).astype(np.float32)
    head = get_head("lightgbm", min_child_samples=500, n_estimators=20, reduce="none", num_threads=1).fit(X, y)
    err = capsys.readouterr().err
    assert "min_child_samples=500" in err and "40 training rows" in err and "using 10" in err
    assert head.fitted_state()["min_child_samples_used_"] == 10
    assert topk_accuracy(head.predict_proba(X), y, (1,))[1] == 1.0  # trees did split: not the class shares


# ------------------------------------------------------------------------------ 2. things that do not belong


@pytest.fixture(scope="module")
def tta_caches(tmp_path_factory, ws):
    """Plain + mirrored views of the same photos from two backbones (MobileNetV2, EfficientNet-Lite0)."""
    from featkit.cli import main

    root = tmp_path_factory.mktemp("tta")
    out = {}
    for name in ("mobilenet-v2", "efficientnet-lite0"):
        model = Path(ws["onnx"]).with_name(f"{name}.onnx")
        try:
            main(["extract", "--data", str(ws["ds"]), "--backbone", str(model), "--size", SIZE, "--tta", "flip",
                  "--cache", str(root / "cache"), "-q"])  # fmt: skip
        except SystemExit as e:
            assert e.code == 0
        out[name] = next((root / "cache").rglob(f"{name}*/plain.h5"))
    return out


def test_a_mirrored_view_of_another_backbone_is_refused(tta_caches, tmp_path, capsys):
    mine = tmp_path / "mix"
    mine.mkdir()
    shutil.copy(tta_caches["mobilenet-v2"], mine / "plain.h5")
    shutil.copy(tta_caches["efficientnet-lite0"].with_name("tta-flip.h5"), mine / "tta-flip.h5")
    r = fk(
        capsys, "fit-head", "--features", mine / "plain.h5", "--tta", "flip", "--reports", tmp_path / "reports", "-q"
    )
    refused(r, 1, str(mine / "tta-flip.h5"), "backbone")
    good = fk(
        capsys, "fit-head", "--features", tta_caches["mobilenet-v2"], "--tta", "flip", "--reports", tmp_path, "-q"
    )
    ok(good)


def test_two_caches_sharing_one_mirrored_view_are_refused(tta_caches, tmp_path, capsys):
    both = tmp_path / "both"
    both.mkdir()
    shutil.copy(tta_caches["mobilenet-v2"], both / "a.h5")
    shutil.copy(tta_caches["efficientnet-lite0"], both / "b.h5")
    shutil.copy(tta_caches["mobilenet-v2"].with_name("tta-flip.h5"), both / "tta-flip.h5")
    r = fk(
        capsys,
        "fit-head",
        "--features",
        both / "a.h5",
        "--features",
        both / "b.h5",
        "--tta",
        "flip",
        "--reports",
        tmp_path,
    )
    refused(r, 1, "share the test-time view", str(both / "tta-flip.h5"))


def test_runs_and_caches_of_two_datasets_are_never_combined(ws, other, tmp_path, capsys):
    cache2 = _extract(capsys, ws, other["ds"], tmp_path / "cache")
    run2 = _fit(capsys, cache2, tmp_path / "reports")
    before = snapshot(tmp_path / "reports")
    refused(fk(capsys, "ensemble", ws["run"], run2, "--reports", tmp_path / "reports", "-q"), 1, "fingerprint")
    r = fk(capsys, "sweep", "--features", ws["plain"], "--features", cache2, "--reports", tmp_path / "reports", "-q")
    refused(r, 1, str(cache2), "fingerprint", "one dataset")
    assert snapshot(tmp_path / "reports") == before  # no run, no sweep folder


@pytest.mark.parametrize(
    "field, value, names",
    [
        ("feature_size", 1000, ["feature_size is 1000", "1280"]),
        ("input_layout", "NCHW", ["input_layout NCHW", "3 channels"]),
    ],
)
def test_an_onnx_contract_that_disagrees_with_its_graph_is_refused(ws, tmp_path, capsys, field, value, names):
    model = tmp_path / "m.onnx"
    model.symlink_to(ws["onnx"])
    contract = json.loads(Path(ws["onnx"]).with_suffix(".json").read_text())
    (tmp_path / "m.json").write_text(json.dumps({**contract, field: value}))
    r = fk(capsys, *extract_args(ws, ws["ds"], tmp_path / "cache")[:4], model, "--size", SIZE, "--cache", tmp_path)
    refused(r, 1, *names)


# ------------------------------------------------------------------------------------------ 3. bad values


@pytest.mark.parametrize("value", ["abc", "-1", "0", "2.5"])
def test_featkit_onnx_threads_is_checked(ws, tmp_path, capsys, monkeypatch, value):
    monkeypatch.setenv("FEATKIT_ONNX_THREADS", value)
    refused(fk(capsys, *extract_args(ws, ws["ds"], tmp_path / "cache")), 1, f"FEATKIT_ONNX_THREADS={value!r}")


def test_extract_help_names_featkit_onnx_threads(capsys):
    assert "FEATKIT_ONNX_THREADS" in ok(fk(capsys, "extract", "--help")).out


@pytest.mark.parametrize("workers", ["0", "-3"])
def test_ray_workers_below_one_are_refused_before_ray_starts(ws, tmp_path, capsys, workers):
    t0 = time.monotonic()
    r = fk(capsys, *extract_args(ws, ws["ds"], tmp_path / "cache"), "--engine", "ray", "--workers", workers)
    refused(r, 1, f"--workers {workers}")
    assert not (tmp_path / "cache" / "features").exists()
    assert time.monotonic() - t0 < 60  # it never waited on Ray


@pytest.mark.parametrize("command", ["fit-head", "sweep"])
def test_a_repeated_param_is_refused_with_the_list_form(ws, tmp_path, capsys, command):
    r = fk(capsys, command, "--features", ws["plain"], "-p", "C=0.1", "-p", "C=0.2", "--reports", tmp_path, "-q")
    refused(r, 1, "C=0.1,0.2")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "sweeps").exists()


@pytest.mark.parametrize(
    "candidate, names",
    [
        ({"head": "logreg", "caches": "{plain}"}, ['"caches"', "list"]),
        ({"head": "logreg", "caches": ["{plain}"], "tta": "mirror"}, ["'mirror'", "test-time view"]),
        ({"head": "forest", "caches": ["{plain}"]}, ["'forest'"]),
        ({"head": "logreg", "caches": ["{plain}"], "params": [1]}, ['"params"']),
    ],
)
def test_sweep_candidates_file_is_checked_field_by_field(ws, tmp_path, capsys, candidate, names):
    text = json.dumps([candidate]).replace("{plain}", str(ws["plain"]))
    (tmp_path / "c.json").write_text(text)
    r = fk(capsys, "sweep", "--candidates", tmp_path / "c.json", "--reports", tmp_path, "-q")
    refused(r, 1, str(tmp_path / "c.json"), "candidate 0", *names)


# ------------------------------------------------------------------------------------------- 4. OS errors


def test_a_full_disk_during_fit_head_is_one_line_naming_the_file(ws, tmp_path, capsys, monkeypatch):
    import featkit.runs.store as store

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store.np, "savez_compressed", full)
    r = fk(capsys, "fit-head", "--features", ws["plain"], "--reports", tmp_path, "-q")
    line = refused(r, 1, "_predictions.npz", "No space left on device", "disk is full")
    assert ".tmp-" not in line  # the file's own name, not its temporary one
    assert _empty(tmp_path / "runs")  # the half-written run folder is gone
    assert not list(tmp_path.rglob(".*tmp-*"))


def test_a_file_too_large_during_report_is_one_line(ws, tmp_path, capsys, monkeypatch):
    import featkit.core.fileio as fileio

    copy_run(ws, tmp_path)
    real = fileio.os.replace

    def too_large(src, dst):
        if str(dst).endswith("index.html"):
            raise OSError(errno.EFBIG, "File too large")
        return real(src, dst)

    monkeypatch.setattr(fileio.os, "replace", too_large)
    refused(fk(capsys, "report", "--reports", tmp_path / "reports", "-q"), 1, "index.html", "File too large")


def test_paths_under_a_regular_file_are_one_line(ws, tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("mine\n")
    r = fk(capsys, *extract_args(ws, ws["ds"], blocker / "cache"))
    refused(r, 1, str(blocker))
    r = fk(capsys, "quantize", ws["onnx"], "--data", ws["ds"], "--out", blocker / "m.int8.onnx", "--cache",
           tmp_path / "cache", "-q")  # fmt: skip
    refused(r, 1, str(blocker / "m.int8.onnx"))
    assert blocker.read_text() == "mine\n"


# ----------------------------------------------------------------------------------------------------- 5. Ray


def test_ray_address_where_something_else_answers_fails_within_seconds(ws, tmp_path, capsys):
    pytest.importorskip("ray")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]

    def answer():  # a plain TCP service: greets, then says nothing
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.sendall(b"220 hello\r\n")

    threading.Thread(target=answer, daemon=True).start()
    t0 = time.monotonic()
    try:
        r = fk(capsys, *extract_args(ws, ws["ds"], tmp_path / "cache"), "--engine", "ray", "--address",
               f"127.0.0.1:{port}")  # fmt: skip
    finally:
        server.close()
    refused(r, 1, f"--address 127.0.0.1:{port}", "not Ray")
    assert time.monotonic() - t0 < 60


def test_an_empty_shard_says_so(ws, tmp_path, capsys):
    r = ok(fk(capsys, *extract_args(ws, ws["ds"], tmp_path / "cache"), "--shard", "1/2"))
    assert "--shard 1/2 holds 0 of the 18 photos" in r.err


# --------------------------------------------------------------------------------------- 6. clear messages


def test_sweep_without_validation_photos_names_the_missing_split(ws, tmp_path, capsys):
    cache = _extract(capsys, ws, ws["ds"], tmp_path / "cache", "--split", "70/0/30")
    r = fk(capsys, "sweep", "--features", cache, "--reports", tmp_path / "reports", "-q")
    refused(r, 1, "'valid' split", "finished")


def test_an_interrupted_sweep_resumes_with_its_finished_candidates(ws, tmp_path, capsys, monkeypatch):
    import featkit.heads.fit as fit

    real, calls = fit.fit_head, []

    def interrupted_second(*a, **k):
        calls.append(k["params"])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(fit, "fit_head", interrupted_second)
    args = ["sweep", "--features", ws["plain"], "-p", "C=0.1,1.0", "--reports", tmp_path, "--json"]
    r = fk(capsys, *args, "-q")
    assert r.code == 130 and "Traceback" not in r.err
    (sweep_dir,) = (tmp_path / "sweeps").iterdir()
    first_run = json.loads((sweep_dir / "rows" / "00000.json").read_text())["run"]

    calls.clear()
    r = ok(fk(capsys, *args))
    assert "resuming sweep" in r.err and "1 of 2 candidates already done" in r.err
    assert [c["C"] for c in calls] == ["1.0"]  # only the unfinished candidate is fitted
    out = json.loads(r.out)
    assert out["sweep"] == sweep_dir.name and [p.name for p in (tmp_path / "sweeps").iterdir()] == [sweep_dir.name]
    assert out["rows"][0]["run"] == first_run and len(list((tmp_path / "runs").iterdir())) == 2


# -------------------------------------------------------------------------------------------- 7. left behind


def test_refused_train_cnn_and_sweep_leave_no_folder(ws, tmp_path, capsys, monkeypatch):
    import featkit.cnn.train as train

    def refuse(*a, **k):  # as train_cnn's own checks of the arrays refuse, after the run folder was made
        raise FeatkitError("the training photos are not what the preset takes")

    monkeypatch.setattr(train, "train_cnn", refuse)
    r = fk(capsys, "train-cnn", "--data", ws["ds"], "--preset", "basic", "--cache", ws["cache"], "--reports",
           tmp_path, "-q")  # fmt: skip
    refused(r, 1, "not what the preset takes")
    refused(fk(capsys, "sweep", "--features", ws["plain"], "--jobs", "0", "--reports", tmp_path, "-q"), 1, "--jobs")
    assert _empty(tmp_path / "runs") and _empty(tmp_path / "sweeps")


def test_data_check_counts_and_lists_dangling_symlinks(photos, tmp_path, capsys):
    ds = make_dataset(tmp_path / "photos", photos)
    cls = min(p for p in ds.iterdir())
    (cls / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    r = fk(capsys, "data", "check", ds, "--cache", tmp_path / "cache", "--json", "-q")
    assert r.code == 1 and "Traceback" not in r.err
    out = json.loads(r.out)
    assert out["photos"] == len(photos) + 1
    assert [u["path"] for u in out["unreadable"]] == [f"{cls.name}/gone.jpg"]
    assert "dangling symlink" in out["unreadable"][0]["error"]


def test_a_failed_extract_leaves_no_folder_of_lock_files(ws, tmp_path, capsys, monkeypatch):
    import featkit.features.extract as ex

    def broken(*a, **k):
        raise FeatkitError("the backbone cannot be built (as a Keras model whose weights do not load)")

    monkeypatch.setattr(ex, "_build_backbone", broken)
    refused(fk(capsys, *extract_args(ws, ws["ds"], tmp_path / "cache")), 1, "cannot be built")
    assert not list((tmp_path / "cache" / "features").rglob("*"))


def test_the_int8_error_from_extract_names_no_option_extract_lacks(ws, tmp_path, capsys, monkeypatch):
    import featkit.features.quantize as q

    cache = tmp_path / "cache"
    monkeypatch.setattr(q, "is_complete", lambda path, settings: False)
    real = q.default_int8_path

    def existing(*a, **k):
        path = real(*a, **k)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"someone's file")
        return path

    monkeypatch.setattr(q, "default_int8_path", existing)
    line = refused(fk(capsys, *extract_args(ws, ws["ds"], cache), "--precision", "int8"), 1, "already exists")
    assert "--out" not in line and "delete it" in line
    assert all(p.read_bytes() == b"someone's file" for p in (cache / "models").glob("*.onnx"))
