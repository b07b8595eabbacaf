"""The report is rebuilt from run folders alone: head runs, a CNN run, and an incomplete run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from cachefixtures import CLASSES

from featkit.heads.fit import fit_head
from featkit.report.build import COLUMNS, build_report
from featkit.runs.store import new_run


@pytest.fixture(scope="module")
def reports(caches, tmp_path_factory):
    reports = tmp_path_factory.mktemp("reports")
    lightgbm = {"n_estimators": 30, "reduce": "pca", "pca": 16, "num_threads": 1}  # PCA: cheaper than LDA
    fit_head(caches.plain, "lightgbm", lightgbm, reports=reports, quiet=True)
    fit_head(caches.plain, "logreg", {"max_iter": 300}, augment_cache=caches.augment, reports=reports, quiet=True)
    # a run of the end-to-end CNN trainer: same folder format, no backbone, its own history columns
    cnn = new_run("cnn-std-aug-3", reports)
    cnn.write_json(
        "config.json",
        {
            "kind": "cnn",
            "name": "std-aug-3",
            "preset": "std-aug-3",
            "model": "custom",
            "backbone": None,
            "size": 128,
            "augment": True,
            "epochs": 2,
            "dataset": "food101-64",
            "seed": 0,
        },
    )
    cnn.write_json("classes.json", [{"index": i, "id": str(i), "name": str(i)} for i in range(CLASSES)])
    (cnn.path / "history.csv").write_text(
        "epoch,loss,accuracy,val_loss,val_accuracy,seconds\n1,2.1,0.20,2.0,0.25,31.5\n2,1.7,0.41,1.8,0.35,30.9\n"
    )
    cnn.write_json(
        "metrics.json",
        {"top1": 0.375, "top5": 0.85, "fit_seconds": 62.4, "epochs_run": 2, "best_epoch": 2, "study_top1": None},
    )
    broken = new_run("crashed", reports)  # crashed after writing its config: no metrics
    broken.write_json("config.json", {"kind": "head", "head": "softmax"})
    (reports / "runs" / "half-copied").mkdir()  # not even a config.json
    return reports


def test_report_lists_every_run(reports):
    paths = build_report(reports)
    df = pd.read_csv(paths["results_csv"], keep_default_na=False)
    assert list(df.columns) == list(COLUMNS)
    assert len(df) == 3 and df["run_id"].tolist() == sorted(df["run_id"], reverse=True)  # newest first
    by_kind = {(r.kind, r.head): r for r in df.itertuples()}
    cnn = by_kind[("cnn", "std-aug-3")]
    assert (cnn.backbone, cnn.size, cnn.augment, cnn.top1, cnn.extract_seconds) == ("-", 128, "yes", 0.375, "")
    logreg = by_kind[("head", "logreg")]
    assert (logreg.backbone, logreg.augment) == ("mobilenet-v2", "yes") and float(
        logreg.extract_seconds
    ) == pytest.approx(2.2)
    assert by_kind[("head", "lightgbm")].augment == "no"
    md = paths["results_md"].read_text()
    incomplete = md.split("## Incomplete runs")[1].split("##")[0]
    assert "crashed" in incomplete and "no metrics.json" in incomplete
    assert "runs/half-copied" in incomplete and "no config.json" in incomplete
    for key in ("training_curves", "accuracy_vs_size", "time_vs_size"):
        assert paths[key].read_bytes()[:4] == b"\x89PNG"


def test_report_rebuilds_identically(reports):
    first = build_report(reports)
    md, csv = first["results_md"].read_text(), first["results_csv"].read_text()
    first["results_md"].unlink()
    first["results_csv"].unlink()
    again = build_report(reports)
    assert again["results_md"].read_text() == md and again["results_csv"].read_text() == csv
    table = [ln for ln in md.splitlines() if ln.startswith("| [")]
    assert len(table) == 3 and np.all(["| head |" in ln or "| cnn |" in ln for ln in table])
    assert not list(reports.glob(".*tmp*"))


def test_empty_reports_folder(tmp_path):
    paths = build_report(tmp_path)
    assert "_No complete runs yet._" in paths["results_md"].read_text()
    assert pd.read_csv(paths["results_csv"]).empty


def test_report_shows_each_sweep_table_and_lists_unfinished_sweeps(caches, tmp_path):
    import re

    from featkit.apps.sweep import Candidate, sweep
    from featkit.report.run_page import PAGE_NAME

    fast = {"max_iter": 300}
    cands = [Candidate("logreg", {**fast, "C": c}, (str(caches.plain),)) for c in (0.001, 1.0)]
    result = sweep(cands, jobs=1, ensemble=2, reports=tmp_path, quiet=True)
    (tmp_path / "sweeps" / "20990101-000000-interrupted").mkdir()  # killed before it wrote sweep.json
    damaged = tmp_path / "sweeps" / "20990101-000001-damaged"
    damaged.mkdir()
    (damaged / "sweep.json").write_text('{"rows": [')
    out = build_report(tmp_path)

    md = out["results_md"].read_text()
    section = md[md.index("## Sweeps") : md.index("## Incomplete runs")]
    assert f"### {result.id}" in section and f"Selected: {result.selected.candidate}." in section
    table_lines = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(table_lines) == 1 + 3  # header + two candidates + one ensemble
    assert "sweeps/20990101-000000-interrupted`: no sweep.json (unfinished or interrupted)" in md
    assert "sweeps/20990101-000001-damaged`: unreadable sweep.json" in md and "is damaged" in md

    html = out["index_html"].read_text()
    sweep_table = html[html.index('<table id="sweep-0"') :]
    sweep_table = sweep_table[: sweep_table.index("</table>")]
    body_rows = re.findall(r"<tr>(.*?)</tr>", sweep_table.split("<tbody>")[1], flags=re.S)
    assert len(body_rows) == 3
    # best validation top-1 first; the selected row is marked and links to its run's page
    valid = [float(re.findall(r"<td[^>]*>([\d.]+) %</td>", r)[0]) for r in body_rows]
    assert valid == sorted(valid, reverse=True)
    marked = [r for r in body_rows if "\u2605" in r]
    assert len(marked) == 1 and f'href="runs/{result.selected.run}/{PAGE_NAME}"' in marked[0]
