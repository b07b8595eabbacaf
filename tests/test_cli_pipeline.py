"""The whole path through the command line on real photos: extract -> fit-head -> evaluate -> sensitivity ->
report -> predict, a CNN run beside the head run, and the one-line errors users see."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_main
from typer.testing import CliRunner

from featkit.cli import app

runner = CliRunner()


def fk(*args: str) -> dict | list | str:
    res = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout) if "--json" in args else res.stdout


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, mini, mobilenet_onnx):
    ws = tmp_path_factory.mktemp("ws")
    common = ["--cache", ws / "cache"]
    fk("extract", "--data", mini, "--backbone", mobilenet_onnx, "--size", 64, "--sensitivity", "--quiet", *common)
    head = fk(
        "fit-head",
        "--data",
        mini,
        "--backbone",
        mobilenet_onnx,
        "--size",
        64,
        "--head",
        "logreg",
        "--reports",
        ws / "reports",
        "--json",
        *common,
    )
    return ws, head


def test_fit_evaluate_sensitivity_report(workspace):
    ws, head = workspace
    reports = ws / "reports"
    assert 0.25 < head["top1"] <= head["top5"] <= 1.0  # 4 classes: clearly better than chance
    ev = fk("evaluate", "latest", "--k", 1, "--k", 3, "--reports", reports, "--json")
    assert ev["run"] == head["run"] and ev["top1"] == head["top1"] and "3" in ev["topk"]
    run_dir = Path(head["path"])
    for name in ("per_class.csv", "confusion.csv", "confusion.png", "confused_pairs.csv"):
        assert (run_dir / name).exists(), name
    table = fk("sensitivity", head["run"], "--reports", reports, "--json")
    assert [r["view"] for r in table] == [
        "plain",
        "sens-rot45-shift0.1",
        "sens-rot45-shift0.1-flips",
        "sens-rot180-h0.3-w0.4-flips",
    ]
    assert table[0]["top1"] == pytest.approx(head["top1"], abs=1e-4)
    assert (run_dir / "sensitivity.md").exists()
    fk("report", "--reports", reports)
    text = (reports / "results.md").read_text()
    assert head["run"] in text


def test_predict_skips_a_corrupt_photo_and_goes_on(workspace, mini, tmp_path):
    ws, head = workspace
    photos = sorted((mini / sorted(os.listdir(mini))[0]).iterdir())[:3]
    folder = tmp_path / "new"
    folder.mkdir()
    for p in photos:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "broken.jpg").write_bytes(photos[0].read_bytes()[:200])  # truncated JPEG
    res = runner.invoke(app, ["predict", head["run"], str(folder), "--reports", str(ws / "reports"), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert len(out["predictions"]) == 3 and len(out["failures"]) == 1
    assert out["failures"][0]["path"].endswith("broken.jpg")
    first = out["predictions"][0]["top"]
    assert len(first) == 4 and abs(sum(t["probability"] for t in first) - 1) < 1e-4  # 4 classes, all shown
    assert first[0]["class"] == sorted(os.listdir(mini))[0]  # a training photo of that class


@pytest.mark.slow
def test_cnn_run_is_scored_reported_and_predicted_like_a_head_run(workspace, mini):
    from featkit.runs.metrics import topk_accuracy
    from featkit.runs.store import load_run

    ws, head = workspace
    reports = ws / "reports"
    cnn = fk(
        "train-cnn",
        "--data",
        mini,
        "--preset",
        "basic",
        "--epochs",
        1,
        "--quiet",
        "--json",
        "--cache",
        ws / "cache",
        "--reports",
        reports,
    )
    pred = load_run(cnn["run"], reports).load_predictions()
    assert (cnn["top1"], cnn["top5"]) == tuple(topk_accuracy(pred["probs"], pred["labels"], (1, 5)).values())
    assert cnn["n"] == len(pred["labels"]) and cnn["log_loss"] > 0
    fk("evaluate", cnn["run"], "--reports", reports)
    fk("report", "--reports", reports)
    rows = (reports / "results.csv").read_text()
    assert cnn["run"] in rows and head["run"] in rows
    photo = next((mini / sorted(os.listdir(mini))[1]).iterdir())
    out = fk("predict", cnn["run"], photo, "--top", 2, "--reports", reports, "--json")
    assert len(out["predictions"][0]["top"]) == 2


def test_errors_are_one_line_without_traceback(tmp_path, capsys):
    # the installed entry point, in a new interpreter, once
    missing = ["extract", "--data", str(tmp_path / "missing"), "--backbone", "vgg16", "--weights", "none"]
    p = subprocess.run([sys.executable, "-m", "featkit.cli", *missing], capture_output=True, text=True)
    assert p.returncode == 1, p.stderr  # FeatkitError; 2 is for usage errors
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in p.stderr, p.stderr
    # the other commands through the same main(), in this process
    cases = [
        ["data", "summary", str(tmp_path / "missing")],
        ["evaluate", "no-such-run", "--reports", str(tmp_path)],
        ["fit-head", "--features", str(tmp_path / "none.h5")],
    ]
    for args in cases:
        r = run_main(capsys, *args)
        lines = r.err.strip().splitlines()
        assert r.code == 1 and len(lines) == 1 and lines[0].startswith("error: "), (args, r.err)


def _commands(group, path=()):
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, (*path, name))
        else:
            yield (*path, name), cmd


def test_every_command_has_help_with_its_summary_and_options():
    import typer.main

    group = typer.main.get_command(app)
    commands = dict(_commands(group))
    assert {("extract",), ("fit-head",), ("data", "summary"), ("sensitivity",), ("train-cnn",), ("quantize",)} <= set(
        commands
    )
    for path, cmd in commands.items():
        res = runner.invoke(app, [*path, "--help"], terminal_width=200)
        assert res.exit_code == 0, path
        text = " ".join(res.stdout.split())
        summary = " ".join((cmd.help or "").split("\n\n")[0].split())
        assert summary and summary[:60] in text, (path, summary)
        for param in cmd.params:
            for opt in param.opts:
                if opt.startswith("--"):
                    assert opt in text, (path, opt)


def test_backbones_lists_keras_and_onnx(mobilenet_onnx):
    rows = fk("backbones", "--models", mobilenet_onnx.parent, "--json")
    names = {r["name"] for r in rows}
    assert {"vgg16", "mobilenetv2", "efficientnetb0", "convnexttiny", "mobilenet-v2", "efficientnet-lite0"} <= names
