"""reports/index.html and the run pages, read as HTML: what each section shows, on two real runs of the `mini`
photos (see reportfixtures.py); thumbnails made once and reused; placeholders for photos that cannot be read."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from reportfixtures import copy_workspace, fk

from featkit.core.plots import keep_span
from featkit.data.images import decode_image
from featkit.report.build import build_report
from featkit.report.index import render_study_vs_featkit
from featkit.report.run_page import MISTAKES, PAGE_NAME, PHOTOS_PER_PAIR


def page(ws, run_id: str) -> str:
    return (ws.run(run_id) / PAGE_NAME).read_text()


def promised(html: str) -> int:
    return int(re.search(r'id="thumb-promise" data-thumbs="(\d+)"', html)[1])


def figures(html: str) -> list[str]:
    return re.findall(r'<figure class="thumb[^"]*".*?</figure>', html, flags=re.S)


def section(html: str, title: str) -> str:
    return html.split(f"<h2>{title}</h2>")[1].split("<h2>")[0]


def test_index_lists_every_run_with_the_best_so_far(report_workspace):
    ws = report_workspace
    html = (ws.reports / "index.html").read_text()
    results = pd.read_csv(ws.reports / "results.csv", keep_default_na=False)
    assert sorted(results["run_id"]) == sorted([ws.logreg, ws.lightgbm, ws.cnn])
    for run_id in results["run_id"]:
        assert f'href="runs/{run_id}/{PAGE_NAME}"' in html
    scored = results[results["valid_top1"] != ""]  # best so far is chosen by validation top-1 only
    assert len(scored) == 2  # the two head runs; the CNN run folder records no validation score
    best = scored.loc[scored["valid_top1"].astype(float).idxmax()]
    line = re.search(r'<div class="best" id="best">(.*?)</div>', html, flags=re.S)[1]
    assert best["run_id"] in line and f"<b>{100 * float(best['valid_top1']):.2f} %</b> validation top-1" in line
    rows = re.findall(r'<tr data-kind="(\w+)">', html)
    assert sorted(rows) == ["cnn", "head", "head"]
    assert '<option value="cnn">cnn</option><option value="head">head</option>' in html
    ece = json.loads((ws.run(ws.logreg) / "metrics.json").read_text())["ece"]
    assert ">ECE</th>" in html and f">{ece:.4f}</td>" in html  # only the logreg run has calibration
    assert "training_curves.png" in html and "accuracy_vs_size.png" in html


def test_run_page_sections_follow_the_run_files(report_workspace):
    ws = report_workspace
    logreg, lgbm = page(ws, ws.logreg), page(ws, ws.lightgbm)
    metrics = json.loads((ws.run(ws.logreg) / "metrics.json").read_text())
    cal = section(logreg, "Calibration")
    assert f"T = {metrics['calibration']['temperature']:.3f}" in cal
    for part in ("before", "after"):
        assert f">{metrics['calibration'][part]['ece']:.4f}</td>" in cal
    assert 'src="reliability.png"' in cal  # the diagram fit-head drew
    assert not (ws.run(ws.logreg) / "report-reliability.png").exists()
    robust = section(logreg, "Robustness")
    assert len(re.findall(r"<tr>", robust)) == 1 + 4  # header + plain and the three cached views
    assert (ws.run(ws.logreg) / "report-robustness.png").exists()
    # the logreg run has no history: no curves; the LightGBM run has one, no calibration and no robustness table
    assert "<h2>Training curves</h2>" not in logreg and not (ws.run(ws.logreg) / "report-curves.png").exists()
    assert "<h2>Training curves</h2>" in lgbm and (ws.run(ws.lightgbm) / "report-curves.png").exists()
    assert "<h2>Calibration</h2>" not in lgbm and "<h2>Robustness</h2>" not in lgbm
    cnn = page(ws, ws.cnn)
    assert "No photo-level results" in cnn and promised(cnn) == 0 and "<h2>Training curves</h2>" in cnn


def test_a_reliability_table_without_its_diagram_gets_one_drawn(report_workspace, tmp_path):
    ws = copy_workspace(report_workspace, tmp_path)
    (ws.run(ws.logreg) / "reliability.png").unlink()
    build_report(ws.reports)
    assert 'src="report-reliability.png"' in section(page(ws, ws.logreg), "Calibration")
    assert (ws.run(ws.logreg) / "report-reliability.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("which", ["logreg", "lightgbm"])
def test_thumbnail_counts_match_the_predictions(report_workspace, which):
    ws = report_workspace
    run_id = getattr(ws, which)
    html = page(ws, run_id)
    pred = np.load(ws.run(run_id) / "test_predictions.npz")
    labels, preds = pred["labels"], pred["probs"].argmax(axis=1)
    pairs = pd.read_csv(ws.run(run_id) / "confused_pairs.csv")
    pair_rows = re.findall(r"<tr>.*?</tr>", section(html, "Most confused pairs").split("<tbody>")[1], flags=re.S)
    assert len(pair_rows) == len(pairs) > 0
    for row, count in zip(pair_rows, pairs["count"], strict=True):
        assert len(figures(row)) == min(PHOTOS_PER_PAIR, count)
    n_wrong = int((labels != preds).sum())
    assert len(figures(section(html, "Most confident mistakes"))) == min(MISTAKES, n_wrong)
    assert len(figures(section(html, "Per-class accuracy"))) == 4  # 4 classes: every class, one photo each
    expected = sum(min(PHOTOS_PER_PAIR, c) for c in pairs["count"]) + min(MISTAKES, n_wrong) + 4
    assert promised(html) == len(figures(html)) == expected
    assert "photo unavailable" not in html


def test_thumbnails_are_the_photos_and_are_made_once(report_workspace, monkeypatch):
    ws = report_workspace
    thumbs = ws.run(ws.logreg) / "thumbs"
    index = json.loads((thumbs / "index.json").read_text())
    a, b = sorted(index.values(), key=lambda r: r["name"])[:2]
    assert a["file"].startswith(str(ws.data)) and not a["problem"]
    jpeg = np.asarray(Image.open(thumbs / a["name"]), dtype=float)
    same = decode_image(Path(a["file"]).read_bytes(), 96).astype(float)
    other = decode_image(Path(b["file"]).read_bytes(), 96).astype(float)
    assert jpeg.shape == (96, 96, 3)
    assert np.abs(jpeg - same).mean() < 6 < np.abs(jpeg - other).mean()
    before = {p.name: p.stat().st_mtime_ns for p in thumbs.glob("*.jpg")}
    html = page(ws, ws.logreg)

    def no_dataset(*args, **kwargs):
        raise AssertionError("the report opened the dataset although every thumbnail was there")

    monkeypatch.setattr("featkit.data.source.open_source", no_dataset)
    build_report(ws.reports)
    assert {p.name: p.stat().st_mtime_ns for p in thumbs.glob("*.jpg")} == before
    assert page(ws, ws.logreg) == html


def test_unreadable_photos_get_a_placeholder_that_names_the_file(report_workspace, tmp_path):
    ws = copy_workspace(report_workspace, tmp_path)
    thumbs = ws.run(ws.logreg) / "thumbs"
    shown = sorted(json.loads((thumbs / "index.json").read_text()).values(), key=lambda r: r["name"])
    shutil.rmtree(thumbs)
    rel = [Path(r["file"]).relative_to(report_workspace.data) for r in shown[:2]]
    (ws.data / rel[0]).unlink()
    damaged = ws.data / rel[1]
    damaged.write_bytes(damaged.read_bytes()[:300])  # truncated: other bytes than the manifest's sha1
    build_report(ws.reports)
    html = page(ws, ws.logreg)
    holders = [f for f in figures(html) if "photo unavailable" in f]
    assert holders and promised(html) == len(figures(html))
    assert {bool(re.search(rf"cannot read {re.escape(str(ws.data / rel[0]))}", f)) for f in holders} == {True, False}
    assert any(f"{ws.data / rel[1]} has changed since the run" in f for f in holders)
    assert all(str(ws.data / rel[0]) in f or str(ws.data / rel[1]) in f for f in holders)
    assert len(list(thumbs.glob("*.jpg"))) == len({f["name"] for f in shown}) - 2


def test_a_run_that_does_not_record_its_dataset_says_so(report_workspace, tmp_path):
    ws = copy_workspace(report_workspace, tmp_path)
    run = ws.run(ws.lightgbm)
    cfg = json.loads((run / "config.json").read_text())
    del cfg["data"]
    (run / "config.json").write_text(json.dumps(cfg))
    shutil.rmtree(run / "thumbs")
    build_report(ws.reports)
    html = page(ws, ws.lightgbm)
    assert "does not record the dataset path" in html and "--data" in html
    assert promised(html) == 0 and figures(html) == []
    assert "<h2>Most confused pairs</h2>" in html  # the tables stay


def test_plots_without_data_are_left_out(report_workspace, tmp_path):
    reports = tmp_path / "reports"
    shutil.copytree(report_workspace.run(report_workspace.logreg), reports / "runs" / report_workspace.logreg)
    (reports / "training_curves.png").write_bytes(b"an old plot")
    paths = build_report(reports)
    assert "training_curves" not in paths and not (reports / "training_curves.png").exists()
    assert paths["accuracy_vs_size"].exists()
    for name in ("results.md", "index.html"):
        text = (reports / name).read_text()
        assert "training_curves.png" not in text and "accuracy_vs_size.png" in text
    assert build_report(tmp_path / "empty")["index_html"].read_text().count("No complete run yet") == 1
    assert not (tmp_path / "empty" / "accuracy_vs_size.png").exists()


def test_axes_never_collapse_around_one_point():
    assert keep_span([128], 64.0, floor=0.0) == (96.0, 160.0)
    assert keep_span([128, 128, 128], 64.0) == (96.0, 160.0)
    assert keep_span([64, 224], 64.0) == pytest.approx((56.0, 232.0))
    assert keep_span([1.0], 0.1, floor=0.0, ceiling=1.02) == pytest.approx((0.92, 1.02))
    assert keep_span([0.01], 0.1, floor=0.0) == (0.0, 0.1)
    assert keep_span([], 2.0) == (0.0, 1.0)


def test_study_vs_featkit_table_renders_given_rows():
    assert render_study_vs_featkit([]) == ""
    html = render_study_vs_featkit(
        [
            {"preset": "basic", "study_top1": None, "featkit_top1": 0.0272},
            {"preset": "vgg16-transfer-128", "study_top1": 21.73, "featkit_top1": 0.2557, "note": "UECFOOD-256"},
        ]
    )
    heads = re.findall(r"<th(?: [^>]*)?>(.*?)</th>", html)
    assert heads == ["preset", "study top1", "featkit top1", "note"]
    cells = re.findall(r"<td[^>]*>(.*?)</td>", html)
    assert cells == ["basic", "\u2014", "0.0272", "\u2014", "vgg16-transfer-128", "21.73", "0.2557", "UECFOOD-256"]


def test_report_command_ends_with_the_index_path(report_workspace):
    out = fk("report", "--reports", report_workspace.reports, "--quiet").strip().splitlines()
    assert out[-1] == f"open in a browser: {(report_workspace.reports / 'index.html').resolve()}"
    assert any(line.startswith("results_md ") for line in out)


def test_a_damaged_thumbnail_index_only_costs_remaking_them(report_workspace, tmp_path):
    ws = copy_workspace(report_workspace, tmp_path)
    thumbs = ws.run(ws.logreg) / "thumbs"
    expected = promised(page(ws, ws.logreg))
    (thumbs / "index.json").write_text('{"0ff8": {"problem": "", "na')  # damaged (e.g. edited by hand)
    build_report(ws.reports)
    html = page(ws, ws.logreg)
    assert promised(html) == len(figures(html)) == expected and "photo unavailable" not in html
    assert len(json.loads((thumbs / "index.json").read_text())) == len(list(thumbs.glob("*.jpg")))
