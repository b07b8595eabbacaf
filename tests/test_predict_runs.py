"""`featkit predict` with every run kind, on real photos through the real command line: a head on one cache, a head
on two caches (two sizes) with the mirrored view, the ensembles and the run a sweep selects (`sweep:latest`), a
CNN run; each reproduces the run's own test predictions from the photo files. And the one-line errors of a run
whose backbone file changed, whose caches moved, whose folder is damaged or whose model file is missing."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from featkit.cli import app

runner = CliRunner()
CLASSES, PER_CLASS = 5, 40


def fk(*args) -> dict | list | str:
    res = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout) if "--json" in args else res.stdout


def fails(capsys, *args) -> str:
    """`featkit ARGS` through the entry point fails with exit 1 and one `error:` line (no traceback); returns it."""
    from featkit.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args] + ["--quiet"])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert e.value.code == 1 and len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def food(tmp_path_factory, food_zip) -> Path:
    """A class-folder dataset of real Food-101 photos: the first 40 photos of the first 5 classes."""
    root = tmp_path_factory.mktemp("food")
    with zipfile.ZipFile(food_zip) as z:
        classes = z.read("food-101/meta/classes.txt").decode().split()[:CLASSES]
        names = sorted(n for n in z.namelist() if n.endswith(".jpg"))
        for c in classes:
            (root / c).mkdir()
            for n in [n for n in names if n.split("/")[2] == c][:PER_CLASS]:
                (root / c / n.rsplit("/", 1)[1]).write_bytes(z.read(n))
    return root


@pytest.fixture(scope="module")
def ws(tmp_path_factory, food, mobilenet_onnx):
    """Caches at 32 and 48 px (with the mirrored view), a sweep over one and both sizes with and without the
    mirrored view plus ensembles of its best runs, and a kNN head on the 48 px cache."""
    ws = tmp_path_factory.mktemp("predict-ws")
    common = ["--cache", ws / "cache", "--quiet"]
    for size in (32, 48):
        fk("extract", "--data", food, "--backbone", mobilenet_onnx, "--size", size, "--tta", "flip", *common)
    reports = ws / "reports"
    sweep = fk(
        "sweep",
        "--data",
        food,
        "--backbone",
        mobilenet_onnx,
        "--size",
        32,
        "--size",
        48,
        "--combine",
        "none",
        "--combine",
        "all",
        "-p",
        "C=0.3",
        "--tta",
        "none",
        "--tta",
        "flip",
        "--ensemble",
        3,
        "--reports",
        reports,
        "--json",
        *common,
    )
    knn = fk(
        "fit-head",
        "--data",
        food,
        "--backbone",
        mobilenet_onnx,
        "--size",
        48,
        "--head",
        "knn",
        "--reports",
        reports,
        "--json",
        *common,
    )
    return ws, reports, sweep, knn


def _runs(sweep: dict) -> dict[str, str]:
    """Run ids of the sweep by what they are: the caches' label (+mirror), or ensemble<N>."""
    out = {}
    for r in sweep["rows"]:
        if r["kind"] == "ensemble":
            out[f"ensemble{len(r['members'])}"] = r["run"]
        else:
            out[r["caches"] + ("+mirror" if r["tta"] else "")] = r["run"]
    return out


TWO, TWO_MIRROR = "mobilenet-v2-32+mobilenet-v2-48", "mobilenet-v2-32+mobilenet-v2-48+mirror"


def test_every_head_run_kind_reproduces_its_test_predictions(ws):
    from featkit.apps.predict import reproduce
    from featkit.apps.run_model import EnsemblePlan, HeadPlan, load_plan
    from featkit.runs.store import load_run

    _, reports, sweep, knn = ws
    runs = _runs(sweep)
    single = ["mobilenet-v2-32", "mobilenet-v2-48"]
    assert set(runs) == {*single, *(s + "+mirror" for s in single), TWO, TWO_MIRROR, "ensemble2", "ensemble3"}
    runs["knn-mobilenet-v2-48"] = knn["run"]
    for what, run_id in runs.items():
        plan = load_plan(run_id, reports)
        if what.startswith("ensemble"):
            assert isinstance(plan, EnsemblePlan) and len(plan.members) == int(what[-1])
            assert plan.temperature == load_run(run_id, reports).metrics.temperature
        else:
            assert isinstance(plan, HeadPlan) and plan.mirror == what.endswith("+mirror")
            sizes = [int(part.rsplit("-", 1)[1]) for part in what.removesuffix("+mirror").split("+")]
            assert [p.input.size for p in plan.parts] == sizes
        rep = reproduce(run_id, reports)
        assert rep.n == 20 and rep.agreement == 1.0, (what, rep)
        assert rep.mean_abs_dp < 1e-4 and rep.max_abs_dp < 2e-3, (what, rep)
    # the float16 caches: the backbone's float32 features give slightly different probabilities
    exact = reproduce(runs[TWO_MIRROR], reports, round_features=False)
    assert exact.agreement == 1.0 and exact.mean_abs_dp > reproduce(runs[TWO_MIRROR], reports).mean_abs_dp


def test_predict_cli_matches_saved_probabilities_for_a_mirrored_two_cache_run(ws, food):
    from featkit.data.splits import read_manifest
    from featkit.runs.store import load_run

    _, reports, sweep, _ = ws
    run = load_run(_runs(sweep)[TWO_MIRROR], reports)
    saved = run.load_predictions()
    m = read_manifest(run.config.manifest)
    where = dict(zip(m["image_id"], m["path"], strict=True))
    files = [food / where[i] for i in saved["image_ids"][:6]]
    out = fk("predict", run.id, *files, "--top", CLASSES, "--reports", reports, "--json")
    classes = [c.id for c in run.classes]
    for pred, probs in zip(out["predictions"], saved["probs"][:6], strict=True):
        got = np.zeros(CLASSES)
        for t in pred["top"]:
            got[classes.index(t["class"])] = t["probability"]
        np.testing.assert_allclose(got, probs, atol=2e-3)
        assert pred["top"][0]["class"] == classes[int(probs.argmax())]


def test_sweep_latest_predicts_with_the_selected_run_and_says_so(ws, food, capsys):
    from featkit.apps.sweep import selected_run

    _, reports, sweep, _ = ws
    chosen = sweep["selected"]["run"]
    run, sweep_id = selected_run("latest", reports)
    assert run.id == chosen and sweep_id == sweep["sweep"]
    assert selected_run(sweep["sweep"], reports)[0].id == chosen
    photo = next((food / sorted(p.name for p in food.iterdir())[2]).iterdir())
    res = runner.invoke(app, ["predict", "sweep:latest", str(photo), "--reports", str(reports), "--json"])
    assert res.exit_code == 0, res.output
    assert f"using run {chosen}" in res.stderr and sweep["sweep"] in res.stderr
    direct = fk("predict", chosen, photo, "--reports", reports, "--json")
    assert json.loads(res.stdout)["predictions"] == direct["predictions"]
    assert "no sweep 'nope'" in fails(capsys, "predict", "sweep:nope", photo, "--reports", reports)


def test_members_sharing_a_backbone_load_it_once(ws):
    from featkit.apps.run_model import RunModel, load_plan, plan_parts

    _, reports, sweep, _ = ws
    plan = load_plan(_runs(sweep)["ensemble3"], reports)
    model = RunModel(plan)
    sizes = sorted({p.input.size for p in plan_parts(plan)})
    assert len(plan_parts(plan)) > len(sizes)  # several members share a backbone ...
    assert sorted(x for x in model.loads if x.startswith("backbone")) == [
        f"backbone mobilenet-v2 {s}px" for s in sizes
    ]  # ... loaded once per size


def test_a_changed_backbone_file_moved_caches_and_damaged_runs_are_one_line(ws, tmp_path, food, mobilenet_onnx, capsys):
    from featkit.runs.store import load_run

    _, reports, sweep, _ = ws
    photo = next((food / sorted(p.name for p in food.iterdir())[0]).iterdir())
    runs = _runs(sweep)
    # a copy of the reports whose runs we may damage
    mine = tmp_path / "reports"
    shutil.copytree(reports, mine)

    # the backbone file changed since the features were made (here: the run's model file, one byte longer)
    run = load_run(runs["mobilenet-v2-32"], mine)
    changed = tmp_path / "changed.onnx"
    changed.write_bytes(mobilenet_onnx.read_bytes() + b"\0")
    cfg = json.loads((run.path / "config.json").read_text())
    cfg["backbone"]["weights"]["path"] = str(changed)
    (run.path / "config.json").write_text(json.dumps(cfg))
    line = fails(capsys, "predict", run.id, photo, "--reports", mine)
    assert "has changed since the features were made" in line and str(changed) in line
    # ... or is gone
    cfg["backbone"]["weights"]["path"] = str(tmp_path / "gone.onnx")
    (run.path / "config.json").write_text(json.dumps(cfg))
    assert "gone.onnx" in fails(capsys, "predict", run.id, photo, "--reports", mine)

    # a two-cache run from before the decode settings were recorded, whose caches moved
    two = load_run(runs[TWO], mine)
    cfg = json.loads((two.path / "config.json").read_text())
    for c in cfg["caches"]:
        c["path"] = str(tmp_path / "moved" / Path(c["path"]).name)
        for k in ("resize", "decode", "crop_box", "dtype"):
            c.pop(k)
    (two.path / "config.json").write_text(json.dumps(cfg))
    line = fails(capsys, "predict", two.id, photo, "--reports", mine)
    assert "has moved or is gone" in line and str(tmp_path / "moved") in line

    # a damaged run folder: head.json cut short, config.json not JSON, a missing ensemble member
    mirror = load_run(runs["mobilenet-v2-48+mirror"], mine)
    (mirror.path / "head.json").write_text('{"head": "logreg", "par')
    assert "head.json" in fails(capsys, "predict", mirror.id, photo, "--reports", mine)
    ens = load_run(runs["ensemble2"], mine)
    cfg = json.loads((ens.path / "config.json").read_text())
    member = cfg["members"][0]
    cfg["member_paths"] = [str(mine / "runs" / m) for m in cfg["members"]]  # the copy's members
    (ens.path / "config.json").write_text(json.dumps(cfg))
    shutil.rmtree(mine / "runs" / member)
    line = fails(capsys, "predict", ens.id, photo, "--reports", mine)
    assert f"member run {member}" in line and "is gone" in line
    (ens.path / "config.json").write_text("{not json")
    assert "config.json" in fails(capsys, "predict", ens.id, photo, "--reports", mine)


@pytest.mark.slow
def test_cnn_run_predicts_its_test_photos_and_a_missing_model_is_one_line(ws, food, tmp_path, capsys):
    from featkit.apps.predict import reproduce
    from featkit.apps.run_model import CnnPlan, load_plan
    from featkit.runs.store import load_run

    w, reports, _, _ = ws
    cnn = fk(
        "train-cnn",
        "--data",
        food,
        "--preset",
        "basic",
        "--size",
        32,
        "--epochs",
        2,
        "--quiet",
        "--json",
        "--cache",
        w / "cache",
        "--reports",
        reports,
    )
    plan = load_plan(cnn["run"], reports)
    assert isinstance(plan, CnnPlan) and plan.input.size == 32
    assert plan.temperature == load_run(cnn["run"], reports).metrics.temperature != 1.0
    rep = reproduce(cnn["run"], reports)
    assert rep.n == 20 and rep.agreement == 1.0 and rep.max_abs_dp < 1e-4, rep
    mine = tmp_path / "reports"
    shutil.copytree(reports, mine)
    (mine / "runs" / cnn["run"] / "model.keras").unlink()
    photo = next((food / sorted(p.name for p in food.iterdir())[0]).iterdir())
    line = fails(capsys, "predict", cnn["run"], photo, "--reports", mine)
    assert "model.keras is missing" in line
