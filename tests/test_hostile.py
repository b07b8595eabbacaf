"""Hostile input, damaged state and races: every case ends with the right exit code, no traceback, a message that
names the file or option, and (for the data-safety cases) the files that existed before left byte-identical.

Everything is built at test time from real Food-101 photos (no binary fixtures). The CLI runs through its real
entry point `featkit.cli.main` (in process, for speed; as a subprocess where signals or concurrency matter).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import REPO, Result, invoke_json, read_food_photos, run_main
from PIL import Image

from featkit.core.locks import exclusive

SIZE = "32"  # the smallest size the ONNX MobileNetV2 runs at: extraction of 18 photos takes a second


def fk(capsys, *args) -> Result:
    return run_main(capsys, *args)


def fk_process(*args, cwd=None, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "featkit.cli", *map(str, args)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def refused(r: Result, code: int, *names: str) -> str:
    """Assert a one-line refusal: exit `code`, no traceback, an `error:` line naming each of `names`."""
    assert "Traceback" not in r.err, r.err
    assert r.code == code, (r.code, r.err)
    errors = [ln for ln in r.err.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, r.err
    for name in names:
        assert name in errors[0], (name, errors[0])
    return errors[0]


def ok(r: Result) -> Result:
    assert "Traceback" not in r.err, r.err
    assert r.code == 0, (r.code, r.err)
    return r


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under `root` (symlinks as their target text), to show nothing was touched."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "-> " + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


# ------------------------------------------------------------------------------------------------ datasets


@pytest.fixture(scope="module")
def photos():
    """Real JPEG bytes: 6 training photos of each of the first 3 Food-101 classes."""
    names, blobs, _ = read_food_photos(classes=3, per_class=6)
    return list(zip(names, blobs, strict=True))


def make_dataset(root: Path, photos) -> Path:
    for name, blob in photos:
        cls, stem = name.split("/")
        (root / cls).mkdir(parents=True, exist_ok=True)
        (root / cls / f"{stem}.jpg").write_bytes(blob)
    return root


@pytest.fixture(scope="module")
def ws(tmp_path_factory, photos, mobilenet_onnx):
    """A dataset, its plain-view cache and a logreg head run, made once for the module."""
    root = tmp_path_factory.mktemp("hostile")
    ds = make_dataset(root / "ds", photos)
    cache, reports = root / "cache", root / "reports"
    out = invoke_json("extract", "--data", ds, "--backbone", mobilenet_onnx, "--size", SIZE, "--cache", cache, "-q")
    plain = Path(out[0]["path"])
    run = Path(invoke_json("fit-head", "--features", plain, "--head", "logreg", "--reports", reports, "-q")["path"])
    return {
        "root": root,
        "ds": ds,
        "cache": cache,
        "reports": reports,
        "plain": plain,
        "run": run,
        "onnx": mobilenet_onnx,
    }


def copy_run(ws, tmp_path) -> Path:
    dst = tmp_path / "reports" / "runs" / ws["run"].name
    shutil.copytree(ws["run"], dst)
    return dst


def extract_args(ws, data, cache, *more):
    return ["extract", "--data", data, "--backbone", ws["onnx"], "--size", SIZE, "--cache", cache, "-q", *more]


# ------------------------------------------------------------------------------- data safety, wrong results


def test_running_inside_the_dataset_never_reads_featkit_outputs(ws, photos, tmp_path, monkeypatch, capsys):
    ds = make_dataset(tmp_path / "photos", photos)
    before = snapshot(ds)
    monkeypatch.chdir(ds)  # cd photos && featkit ... --data . : cache/ and reports/ land inside the dataset
    first = ok(fk(capsys, *extract_args(ws, ".", "cache"), "--json"))
    assert "--cache cache is inside the dataset" in first.err
    ok(fk(capsys, "fit-head", "--features", json.loads(first.out)[0]["path"], "--reports", "reports", "-q"))
    ok(fk(capsys, "report", "--reports", "reports"))
    again = ok(fk(capsys, *extract_args(ws, ".", "cache"), "--json"))
    assert [r["status"] for r in json.loads(again.out)] == ["up to date"]  # the dataset did not change
    summary = json.loads(ok(fk(capsys, "data", "summary", ".", "--cache", "cache", "--json", "-q")).out)
    assert [c["name"] for c in summary["class_list"]] == sorted({n.split("/")[0] for n, _ in photos})
    assert summary["photos"] == len(photos)
    skipped = {f["path"] for f in summary["ignored_files"]}
    assert {"cache/", "reports/"} <= skipped
    assert {k: v for k, v in snapshot(ds).items() if k.split("/")[0] not in ("cache", "reports")} == before


def test_damaged_cache_is_named_then_rebuilt_by_extract(ws, tmp_path, capsys):
    cache = tmp_path / "cache"
    shutil.copytree(ws["cache"], cache)
    plain = cache / ws["plain"].relative_to(ws["cache"])
    good = h5py.File(plain, "r")["features"][()].copy()
    data = bytearray(plain.read_bytes())
    third = len(data) // 3
    data[third : 2 * third] = bytes(third)  # zero the middle third, as a failing disk would
    plain.write_bytes(bytes(data))
    err = refused(fk(capsys, "fit-head", "--features", plain, "--reports", tmp_path / "reports", "-q"), 1, str(plain))
    assert "featkit extract" in err and "damaged" in err
    r = ok(fk(capsys, *extract_args(ws, ws["ds"], cache)[:-1], "--json"))
    assert json.loads(r.out)[0]["status"] == "extracted" and "damaged" in r.err  # never "up to date"
    np.testing.assert_array_equal(h5py.File(plain, "r")["features"][()], good)


@pytest.mark.parametrize("damage", ["foreign", "truncated", "identity"])
def test_partial_chunks_from_another_run_or_damaged_are_refused(ws, tmp_path, capsys, damage):
    cache = tmp_path / "cache"
    # --shard 0/2 on 18 photos leaves the one chunk in .partial/ (shard 1 never comes)
    ok(fk(capsys, *extract_args(ws, ws["ds"], cache, "--shard", "0/2")))
    ok(fk(capsys, *extract_args(ws, ws["ds"], cache, "--shard", "0/2", "--resize", "crop")))
    chunks = sorted(cache.rglob("plain.partial/chunk-000000.npz"))
    mine = next(c for c in chunks if "-stretch" in str(c.parent.parent))
    other = next(c for c in chunks if "-crop" in str(c.parent.parent))
    if damage == "foreign":
        shutil.copyfile(other, mine)
    elif damage == "truncated":
        mine.write_bytes(mine.read_bytes()[:300])
    else:
        (mine.parent / "identity.json").write_text('{"dataset": ')
    r = ok(fk(capsys, *extract_args(ws, ws["ds"], cache)[:-1], "--json"))
    assert (str(mine) if damage != "identity" else "identity.json") in r.err
    result = json.loads(r.out)[0]
    np.testing.assert_array_equal(
        h5py.File(result["path"], "r")["features"][()], h5py.File(ws["plain"], "r")["features"][()]
    )


def test_photo_replaced_in_place_is_noticed_and_rescan_rebuilds(ws, photos, tmp_path, capsys):
    ds = make_dataset(tmp_path / "photos", photos)
    cache = tmp_path / "cache"
    first = json.loads(ok(fk(capsys, "data", "summary", ds, "--cache", cache, "--json", "-q")).out)
    victim, donor = sorted(ds.rglob("*.jpg"))[:2]
    st = victim.stat()
    body = donor.read_bytes()
    with open(victim, "r+b") as fh:  # same inode, same size, mtime put back: only the content differs
        fh.write((body + bytes(st.st_size))[: st.st_size])
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    second = json.loads(ok(fk(capsys, "data", "summary", ds, "--cache", cache, "--json", "-q")).out)
    assert second["fingerprint"] != first["fingerprint"]
    # --rescan: a scan that no longer tells the truth (edited here) is replaced, and the manifest with it
    scan = Path(second["manifest"]).parent / "scan.csv"
    lines = scan.read_text().splitlines()
    lines[1] = lines[1].replace(lines[1].split(",")[1], "0" * 40)
    scan.write_text("\n".join(lines) + "\n")
    ok(fk(capsys, "data", "summary", ds, "--cache", cache, "--rescan", "-q"))
    assert "0" * 40 not in scan.read_text()


def test_data_check_decodes_every_photo_itself(photos, tmp_path, capsys):
    ds = make_dataset(tmp_path / "photos", photos)
    cache = tmp_path / "cache"
    bad = min(ds.rglob("*.jpg"))
    bad.write_bytes(bad.read_bytes()[:400])
    summary = json.loads(fk(capsys, "data", "summary", ds, "--cache", cache, "--json", "-q").out)
    scan = Path(summary["manifest"]).parent / "scan.csv"
    text = scan.read_text()
    lie = "\n".join(
        ln.rsplit(",", 1)[0] + "," if ln.startswith(str(bad.relative_to(ds))) else ln for ln in text.splitlines()
    )
    scan.write_text(lie + "\n")  # the cached scan now says every photo decodes
    r = fk(capsys, "data", "check", ds, "--cache", cache)
    assert r.code == 1 and "Traceback" not in r.err and bad.name in r.out


def test_stray_top_level_folder_is_refused_not_merged(photos, tmp_path, capsys):
    top = tmp_path / "top"
    make_dataset(top / "ds", photos)  # top/ds/<class>/..., beside top/extras/cover.jpg
    (top / "extras").mkdir()
    (top / "extras" / "cover.jpg").write_bytes(photos[0][1])
    before = snapshot(top)
    err = refused(fk(capsys, "data", "summary", top, "--cache", tmp_path / "cache", "-q"), 1, "ds", "sub-folders")
    assert "give" in err
    assert snapshot(top) == before


def test_zip_member_with_an_absolute_path_is_skipped_and_named(photos, tmp_path, capsys):
    path = tmp_path / "photos.zip"
    with zipfile.ZipFile(path, "w") as z:
        for name, blob in photos:
            z.writestr(f"ds/{name}.jpg", blob)
        z.writestr("Xabs/cover.jpg", photos[0][1])
    raw = path.read_bytes()
    path.write_bytes(raw.replace(b"Xabs/cover.jpg", b"/abs/cover.jpg"))  # zipfile itself will not write one
    before = snapshot(tmp_path)
    s = json.loads(ok(fk(capsys, "data", "summary", path, "--cache", tmp_path / "cache", "--json", "-q")).out)
    assert s["classes"] == 3 and s["photos"] == len(photos)  # not one class "ds" beside "abs"
    assert any(f["path"] == "/abs/cover.jpg" and "absolute" in f["why"] for f in s["ignored_files"])
    assert {k: v for k, v in snapshot(tmp_path).items() if not k.startswith("cache")} == before


def test_tar_that_writes_outside_is_refused(photos, tmp_path, capsys):
    path = tmp_path / "photos.tar"
    with tarfile.open(path, "w") as t:
        for name, blob in photos[:4]:
            info = tarfile.TarInfo(f"ds/{name}.jpg")
            info.size = len(blob)
            t.addfile(info, __import__("io").BytesIO(blob))
        evil = tarfile.TarInfo("../../evil.jpg")
        evil.size = len(photos[0][1])
        t.addfile(evil, __import__("io").BytesIO(photos[0][1]))
    refused(fk(capsys, "data", "summary", path, "--cache", tmp_path / "a" / "cache", "-q"), 1, str(path), "outside")
    assert not list(tmp_path.rglob("evil.jpg"))


def test_resume_refuses_a_head_run_and_leaves_it_untouched(ws, tmp_path, capsys):
    run = copy_run(ws, tmp_path)
    before = snapshot(run)
    r = fk(
        capsys,
        "train-cnn",
        "--data",
        ws["ds"],
        "--preset",
        "basic",
        "--resume",
        run,
        "--epochs",
        "1",
        "--cache",
        ws["cache"],
        "--reports",
        tmp_path / "reports",
        "-q",
    )
    refused(r, 1, run.name, "head run", "--resume")
    assert snapshot(run) == before


def test_resume_names_the_option_that_differs(ws, tmp_path, capsys):
    run = tmp_path / "reports" / "runs" / "20260101-000000-cnn-basic"
    run.mkdir(parents=True)
    cfg = {
        "kind": "cnn",
        "preset": "basic",
        "size": 64,
        "blocks": 1,
        "filters": [16],
        "kernel": 2,
        "lr": 0.001,
        "per_class": 5,
        "resize": "stretch",
        "seed": 0,
        "dataset": "other",
        "fingerprint": "abc",
    }
    (run / "config.json").write_text(json.dumps(cfg))
    before = snapshot(run)
    r = fk(
        capsys,
        "train-cnn",
        "--data",
        ws["ds"],
        "--preset",
        "basic",
        "--resume",
        run,
        "--lr",
        "0.01",
        "--cache",
        ws["cache"],
        "--reports",
        tmp_path / "reports",
        "-q",
    )
    err = refused(r, 1, "lr 0.001", "per_class 5", "dataset fingerprint")
    assert "kernel" not in err
    assert snapshot(run) == before


def test_augment_cache_must_be_an_augmented_view(ws, tmp_path, capsys):
    r = fk(capsys, "fit-head", "--features", ws["plain"], "--augment-cache", ws["plain"], "--reports", tmp_path, "-q")
    refused(r, 1, str(ws["plain"]), "'plain' view, not augmented copies")
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


def test_model_of_another_class_count_is_refused(ws, photos, tmp_path, capsys, mobilenet_onnx):
    two = make_dataset(tmp_path / "two", [p for p in photos if not p[0].startswith(photos[-1][0].split("/")[0])])
    out = json.loads(ok(fk(capsys, *extract_args(ws, two, tmp_path / "cache"), "--json")).out)
    other = json.loads(
        ok(fk(capsys, "fit-head", "--features", out[0]["path"], "--reports", tmp_path / "r2", "--json", "-q")).out
    )
    run = copy_run(ws, tmp_path)
    for name in ("model.joblib", "head.json"):  # a 2-class head dropped into the 3-class run
        shutil.copyfile(Path(other["path"]) / name, run / name)
    photo = min(ws["ds"].rglob("*.jpg"))
    refused(fk(capsys, "predict", run, photo), 1, "2 classes", "classes.json lists 3")


# -------------------------------------------------------------------------------------------- bad options


@pytest.mark.parametrize(
    "args, names",
    [
        (["data", "summary", "{ds}", "--split", "50/50/50"], ["--split", "sum to 150"]),
        (["extract", "--data", "{ds}", "--backbone", "{onnx}", "--size", "100000"], ["--size 100000"]),
        (
            ["extract", "--data", "{ds}", "--backbone", "{onnx}", "--size", "4096", "--batch-size", "512"],
            ["--size 4096", "GiB", "is available"],
        ),  # memory checked before anything is allocated
        (["train-cnn", "--data", "{ds}", "--preset", "basic", "--size", "100000"], ["--size", "GiB"]),
        (["extract", "--data", "{ds}", "--backbone", "{onnx}", "--threads", "-2"], ["--threads -2"]),
        (["extract", "--data", "{ds}", "--backbone", "{onnx}", "--rotation", "nan"], ["--rotation nan"]),
        (["extract", "--data", "{ds}", "--backbone", "{onnx}", "--shift", "2"], ["--shift 2"]),
        (["train-cnn", "--data", "{ds}", "--preset", "basic", "--lr", "-1"], ["--lr -1"]),
        (["train-cnn", "--data", "{ds}", "--preset", "basic", "--blocks", "0"], ["--blocks 0"]),
        (
            ["train-cnn", "--data", "{ds}", "--preset", "basic", "--blocks", "12"],
            ["--blocks 12", "--size 64", "6 blocks"],
        ),
        (["train-cnn", "--data", "{ds}", "--preset", "basic", "--kernel", "0"], ["--kernel 0"]),
        (["train-cnn", "--data", "{ds}", "--preset", "basic", "--per-class", "0"], ["--per-class 0"]),
        (["predict", "{run}", "{photo}", "--top", "-1"], ["--top -1"]),
        (["evaluate", "{run}", "--k", "0"], ["--k 0"]),
        (["data", "summary", "{ds}", "--max-pixels", "0"], ["--max-pixels 0"]),
    ],
)
def test_bad_options_are_one_line(ws, tmp_path, capsys, args, names):
    fill = {"ds": ws["ds"], "onnx": ws["onnx"], "run": ws["run"], "photo": min(ws["ds"].rglob("*.jpg"))}
    args = [a.format(**fill) for a in args]
    outputs = ["--reports", ws["reports"]] if args[0] in ("predict", "evaluate") else ["--cache", ws["cache"]]
    outputs += ["--reports", tmp_path / "reports"] if args[0] == "train-cnn" else []  # never ./reports
    before = snapshot(ws["ds"])
    refused(fk(capsys, *args, *outputs), 1, *names)
    assert snapshot(ws["ds"]) == before


def test_cache_option_pointing_at_a_file(ws, tmp_path, capsys):
    f = tmp_path / "not-a-folder"
    f.write_text("mine\n")
    refused(fk(capsys, "data", "summary", ws["ds"], "--cache", f, "-q"), 1, "--cache", str(f), "is a file")
    assert f.read_text() == "mine\n"


def test_usage_errors_exit_2_and_version(capsys):
    r = fk(capsys, "extract", "--size", "abc")
    assert r.code == 2 and "Traceback" not in r.err
    r = ok(fk(capsys, "--version"))
    assert r.out.startswith("featkit ")


@pytest.mark.parametrize("contract", ['{"input_size": ', '{"input_size": "big"}', "[1, 2]", '{"input_layout": 3}'])
def test_broken_onnx_contract(ws, tmp_path, capsys, contract):
    model = tmp_path / "m.onnx"
    model.symlink_to(ws["onnx"])
    (tmp_path / "m.json").write_text(contract)
    r = fk(capsys, "extract", "--data", ws["ds"], "--backbone", model, "--cache", ws["cache"], "-q")
    refused(r, 1, str(tmp_path / "m.json"))


# ------------------------------------------------------------------------------------------ damaged state


def _garbage(path: Path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "empty": b"", "garbage": b"\x00\xffnot this"}[how])


@pytest.mark.parametrize(
    "name, how, command",
    [
        ("config.json", "truncated", "predict"),
        ("config.json", "empty", "predict"),
        ("config.json", "garbage", "predict"),
        ("classes.json", "truncated", "evaluate"),
        ("metrics.json", "truncated", "evaluate"),
        ("test_predictions.npz", "truncated", "evaluate"),
        ("test_predictions.npz", "empty", "evaluate"),
        ("head.json", "garbage", "predict"),
        ("model.joblib", "truncated", "predict"),
        ("config.json", "truncated", "sensitivity"),
        ("metrics.json", "garbage", "report"),
    ],
)
def test_damaged_run_folder_files(ws, tmp_path, capsys, name, how, command):
    run = copy_run(ws, tmp_path)
    _garbage(run / name, how)
    args = {
        "evaluate": ["evaluate", run],
        "predict": ["predict", run, min(ws["ds"].rglob("*.jpg"))],
        "sensitivity": ["sensitivity", run],
        "report": ["report"],
    }[command]
    r = fk(capsys, *args, "--reports", tmp_path / "reports")
    if command == "report":  # a report lists a damaged run as incomplete and goes on
        ok(r)
        assert run.name in (tmp_path / "reports" / "results.md").read_text().split("## Incomplete runs")[1]
        return
    refused(r, 1, str(run / name))


def test_edited_runs_that_are_not_what_they_should_be(ws, tmp_path, capsys):
    run = copy_run(ws, tmp_path)
    (run / "classes.json").write_text('[{"index": 0}]')
    refused(fk(capsys, "evaluate", run, "--reports", tmp_path), 1, str(run / "classes.json"))
    shutil.copyfile(ws["run"] / "classes.json", run / "classes.json")
    (run / "config.json").write_text('["a", "list"]')
    refused(
        fk(capsys, "predict", run, min(ws["ds"].rglob("*.jpg")), "--reports", tmp_path), 1, str(run / "config.json")
    )


@pytest.mark.parametrize("how", ["truncated", "empty", "garbage"])
def test_damaged_h5_given_to_fit_head(ws, tmp_path, capsys, how):
    f = tmp_path / "plain.h5"
    shutil.copyfile(ws["plain"], f)
    _garbage(f, how)
    refused(fk(capsys, "fit-head", "--features", f, "--reports", tmp_path / "reports", "-q"), 1, str(f))


@pytest.mark.parametrize("how", ["truncated", "empty", "garbage", "edited-label", "edited-split", "edited-path"])
def test_damaged_or_edited_manifest(ws, tmp_path, capsys, how):
    cache = tmp_path / "cache"
    shutil.copytree(ws["cache"], cache)
    manifest = min(cache.rglob("manifest-*.csv"))
    if how.startswith("edited"):
        lines = manifest.read_text().splitlines()
        cols = lines[1].split(",")
        if how == "edited-label":
            cols[1] = "7"
        elif how == "edited-split":
            cols[3] = "holdout"
        else:
            cols[0] = "elsewhere/x.jpg"
        lines[1] = ",".join(cols)
        manifest.write_text("\n".join(lines) + "\n")
    else:
        _garbage(manifest, how)
    before = snapshot(ws["ds"])
    refused(fk(capsys, "data", "summary", ws["ds"], "--cache", cache, "-q"), 1, str(manifest))
    assert snapshot(ws["ds"]) == before


def test_symlink_loops_and_dangling_links_are_skipped_and_named(photos, tmp_path, capsys):
    ds = make_dataset(tmp_path / "photos", photos)
    cls = min(p for p in ds.iterdir())
    (cls / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (cls / "loop.jpg").symlink_to(cls / "loop.jpg")
    (cls / "again").symlink_to(cls)  # a folder loop
    before = snapshot(ds)
    s = json.loads(ok(fk(capsys, "data", "summary", ds, "--cache", tmp_path / "cache", "--json", "-q")).out)
    why = {f["path"]: f["why"] for f in s["ignored_files"]}
    assert "dangling symlink" in why[f"{cls.name}/gone.jpg"]
    assert "symlink loop" in why[f"{cls.name}/loop.jpg"]
    assert "symlink loop" in why[f"{cls.name}/again/"]
    assert s["photos"] == len(photos)
    assert snapshot(ds) == before


# ------------------------------------------------------------------------------------------ resources, races


def test_oversized_photos_and_zip_members_are_refused_by_name(photos, tmp_path, capsys):
    ds = make_dataset(tmp_path / "photos", photos)
    cls = min(ds.iterdir())
    Image.new("RGB", (600, 500), (200, 30, 30)).save(cls / "huge.png")
    s = json.loads(
        ok(fk(capsys, "data", "summary", ds, "--cache", tmp_path / "c1", "--max-pixels", "250000", "--json", "-q")).out
    )
    bad = {u["path"]: u["error"] for u in s["unreadable"]}
    assert "600 x 500 pixels" in bad[f"{cls.name}/huge.png"] and "--max-pixels" in bad[f"{cls.name}/huge.png"]
    assert len(bad) == 1
    zpath = tmp_path / "big.zip"
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as z:
        for name, blob in photos:
            z.writestr(f"{name}.jpg", blob)
        z.writestr(f"{photos[0][0].split('/')[0]}/bomb.jpg", bytes(80 * 2**20))  # 80 MiB, 80 KiB compressed
    s = json.loads(
        ok(fk(capsys, "data", "summary", zpath, "--cache", tmp_path / "c2", "--max-pixels", "5000", "--json", "-q")).out
    )
    bomb = [u for u in s["unreadable"] if u["path"].endswith("bomb.jpg")]
    assert bomb and "read limit" in bomb[0]["error"] and "not read" in bomb[0]["error"]


def test_extract_says_how_many_photos_it_left_out_and_where(ws, photos, tmp_path, capsys):
    ds = make_dataset(tmp_path / "photos", photos)
    bad = sorted(ds.rglob("*.jpg"))[3]
    bad.write_bytes(bad.read_bytes()[:300])
    r = ok(fk(capsys, *extract_args(ws, ds, tmp_path / "cache")))
    assert "1 unreadable photo left out" in r.err and "scan.csv" in r.err and "featkit data check" in r.err


def test_second_identical_extract_waits_for_the_first(ws, tmp_path, capsys):
    cache = tmp_path / "cache"
    r = ok(fk(capsys, *extract_args(ws, ws["ds"], cache), "--json"))
    plain = Path(json.loads(r.out)[0]["path"])
    plain.unlink()
    with exclusive(plain.parent / ".plain.lock", "test", print):  # as a first `featkit extract` would hold it
        p = fk_process(*extract_args(ws, ws["ds"], cache)[:-1])
        deadline = time.time() + 60
        err = ""
        while "waiting" not in err and time.time() < deadline:
            time.sleep(0.2)
            err += os.read(p.stderr.fileno(), 4096).decode() if p.poll() is None else p.stderr.read()
        assert "waiting" in err and str(plain) in err
        assert not plain.exists()  # it did not write while the lock was held
    _, rest = p.communicate(timeout=120)
    assert p.returncode == 0 and "Traceback" not in err + rest
    np.testing.assert_array_equal(h5py.File(plain, "r")["features"][()], h5py.File(ws["plain"], "r")["features"][()])


def test_ctrl_c_says_run_the_same_command_again(food_zip, tmp_path):
    p = fk_process("data", "check", food_zip, "--cache", tmp_path / "cache", cwd=tmp_path)
    deadline = time.time() + 120  # imports take seconds, far more on a busy machine: wait until it works
    while not (tmp_path / "cache").exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1)  # listing the zip; the scan of 57,368 photos then takes far longer
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "interrupted: run the same command again" in err and "Traceback" not in err


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, how, command",
    [
        ("checkpoints/last.keras", "truncated", "resume"),
        ("checkpoints/state.json", "truncated", "resume"),
        ("checkpoints/state.json", "garbage", "resume"),
        ("model.keras", "truncated", "predict"),
    ],
)
def test_damaged_cnn_checkpoint_or_state(ws, tmp_path, capsys, name, how, command):
    reports = tmp_path / "reports"
    common = [
        "--data",
        ws["ds"],
        "--preset",
        "basic",
        "--per-class",
        "2",
        "--epochs",
        "1",
        "--cache",
        ws["cache"],
        "--reports",
        reports,
        "-q",
    ]
    run = Path(json.loads(ok(fk(capsys, "train-cnn", *common, "--json")).out)["path"])
    _garbage(run / name, how)
    if command == "resume":
        r = fk(capsys, "train-cnn", *common[:-5], "--epochs", "2", *common[-5:], "--resume", run)
    else:
        r = fk(capsys, "predict", run, min(ws["ds"].rglob("*.jpg")), "--reports", reports)
    refused(r, 1, str(run / name))
