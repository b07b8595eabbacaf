"""Runs a team can trust and find (issue 25.1, 25.2): "best so far" by validation top-1, one line per dataset; the
index's dataset and validation columns, mirrored views, sweep candidates folded; `featkit runs`; `latest` as the
newest run a command can use."""

from __future__ import annotations

import json
import re
import shutil

import pandas as pd
import pytest
from reportfixtures import scored_run
from typer.testing import CliRunner

from featkit.apps.runs_list import list_runs_table
from featkit.cli import app
from featkit.core.errors import FeatkitError
from featkit.core.fileio import write_json
from featkit.report.build import build_report
from featkit.runs.store import load_run

FOOD8 = "food-8-0123456789ab-70-20-10-s0"
FOOD5 = "food-5-ba9876543210-70-20-10-s0"


@pytest.fixture()
def reports(five_runs, tmp_path):
    """A copy of five_runs' reports folder for each test (tests delete and add runs)."""
    return shutil.copytree(five_runs, tmp_path / "reports", symlinks=True)


@pytest.fixture(scope="module")
def five_runs(tmp_path_factory):
    """Five runs on two datasets: on food-8 the validation winner (a) is not the test winner (b); a 5-class run
    (e) scores higher than both on its own photos; a CNN run (c) without validation scores; b and d are
    candidates of one sweep that selected d."""
    r = tmp_path_factory.mktemp("five-runs") / "reports"
    scored_run(r, "a", 0.6, 0.5, run_id="20261201-100000-a-logreg", views=["plain"], extra={"tta": "flip"})
    scored_run(r, "b", 0.5, 0.7, run_id="20261201-110000-b-knn", head="knn", views=["plain"])
    scored_run(r, "c", None, 0.8, run_id="20261201-120000-c-cnn", kind="cnn", head="benchmark-64")
    scored_run(r, "d", 0.55, 0.55, run_id="20261201-130000-d-ensemble", kind="ensemble", head="ensemble")
    scored_run(
        r,
        "e",
        0.9,
        0.9,
        run_id="20261201-140000-e-five",
        n_classes=5,
        dataset=FOOD5,
        data="/photos/five",
        views=["plain"],
    )
    sweep = r / "sweeps" / "20261201-150000-sweep"
    sweep.mkdir(parents=True)
    write_json(
        sweep / "sweep.json",
        {
            "rows": [
                {"candidate": "knn", "run": "20261201-110000-b-knn", "valid_top1": 0.5, "top1": 0.7},
                {"candidate": "ensemble-top2", "run": "20261201-130000-d-ensemble", "selected": True},
            ]
        },
    )
    return r


def test_best_so_far_picks_the_validation_winner_when_test_disagrees(reports):
    html = build_report(reports)["index_html"].read_text()
    best = re.search(r'<div class="best" id="best">(.*?)</div>', html, flags=re.S)[1]
    lines = re.findall(r"<li[^>]*>(.*?)</li>", best, flags=re.S)
    assert len(lines) == 2  # one line per dataset
    food8 = next(x for x in lines if x.startswith("food-8 (8 classes)"))
    # a: valid 60 %, test 50 %; b: valid 50 %, test 70 %; the CNN run c (test 80 %) has no validation score
    assert "<b>60.00 %</b> validation top-1; test top-1 50.00 %" in food8 and "20261201-100000-a-logreg" in food8
    assert "-b-knn" not in best and "-c-cnn" not in best
    five = next(x for x in lines if x.startswith("five (5 classes)"))
    assert "<b>90.00 %</b>" in five and "20261201-140000-e-five" in five


def test_index_columns_views_and_folded_sweep_candidates(reports):
    out = build_report(reports)
    html = out["index_html"].read_text()
    runs = html[html.index('<table id="runs"') :]
    runs = runs[: runs.index("</table>")]
    heads = re.findall(r"<th(?: [^>]*)?>(.*?)</th>", runs)
    assert heads[:9] == [
        "run",
        "kind",
        "dataset",
        "backbone",
        "size",
        "head / preset",
        "views",
        "valid top-1",
        "valid top-5",
    ]
    assert "test top-1" in heads and "sweep" in heads
    row_a = re.search(r"<tr[^>]*>(?:(?!</tr>).)*-a-logreg(?:(?!</tr>).)*</tr>", runs, flags=re.S)[0]
    assert ">food-8 (8 classes)</td>" in row_a and ">plain + tta-flip</td>" in row_a and ">60.00 %</td>" in row_a
    # the sweep's candidate b is folded (hidden until the sweep filter shows it); its selected run d is shown
    trs = {rid: attrs for attrs, rid in re.findall(r"<tr([^>]*)><td[^>]*><a href=\"runs/([^/]+)/", runs)}
    assert len(trs) == 5
    assert (
        "data-folded hidden" in trs["20261201-110000-b-knn"]
        and 'data-sweep="20261201-150000-sweep"' in trs["20261201-110000-b-knn"]
    )
    assert "hidden" not in trs["20261201-130000-d-ensemble"] and "hidden" not in trs["20261201-100000-a-logreg"]
    assert '<option value="20261201-150000-sweep">candidates of 20261201-150000-sweep</option>' in html
    csv = pd.read_csv(out["results_csv"], keep_default_na=False).set_index("run_id")
    assert float(csv.loc["20261201-100000-a-logreg", "valid_top1"]) == pytest.approx(0.6)
    assert csv.loc["20261201-140000-e-five", "classes"] == 5 and csv.loc["20261201-140000-e-five", "dataset"] == "five"
    assert csv.loc["20261201-110000-b-knn", "sweep"] == "20261201-150000-sweep"


def test_runs_lists_and_filters(reports):
    every = list_runs_table(reports)
    assert [r.id[16:] for r in every.rows] == ["e-five", "d-ensemble", "c-cnn", "b-knn", "a-logreg"]
    assert [r.id[16:] for r in list_runs_table(reports, kind="head").rows] == ["e-five", "b-knn", "a-logreg"]
    assert [r.id[16:] for r in list_runs_table(reports, dataset="food-8").rows] == [
        "d-ensemble",
        "c-cnn",
        "b-knn",
        "a-logreg",
    ]
    assert [r.id[16:] for r in list_runs_table(reports, sweep="150000").rows] == ["d-ensemble", "b-knn"]
    with pytest.raises(FeatkitError, match="--sweep 'nope': no finished sweep"):
        list_runs_table(reports, sweep="nope")

    res = CliRunner().invoke(app, ["runs", "--reports", str(reports), "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    a = next(r for r in rows if r["id"] == "20261201-100000-a-logreg")
    assert (a["kind"], a["dataset"], a["n_classes"], a["name"], a["views"]) == (
        "head",
        "food-8",
        8,
        "logreg",
        "plain + tta-flip",
    )
    assert (a["valid_top1"], a["top1"], a["date"], a["sweep"]) == (
        pytest.approx(0.6),
        pytest.approx(0.5),
        "2026-12-01 10:00",
        None,
    )
    res = CliRunner().invoke(app, ["runs", "--reports", str(reports), "--kind", "cnn"])
    assert res.exit_code == 0 and "20261201-120000-c-cnn" in res.stdout and "-a-logreg" not in res.stdout
    assert "| food-8 (8 classes) |" in res.stdout and "1 run(s)" in res.stdout
    res = CliRunner().invoke(app, ["runs", "--reports", str(reports), "--kind", "heads"])
    assert res.exit_code == 2 and "Invalid value for '--kind'" in res.output


def test_a_run_deleted_while_listing_is_skipped_and_counted(reports, monkeypatch):
    import featkit.apps.runs_list as R

    real = R.summarize

    def deleted_meanwhile(run, *a, **k):
        if run.id.endswith("-c-cnn"):
            shutil.rmtree(run.path)  # another process cleans up between the folder scan and the read
        return real(run, *a, **k)

    monkeypatch.setattr(R, "summarize", deleted_meanwhile)
    listing = list_runs_table(reports)
    assert len(listing.rows) == 4 and listing.skipped == ["20261201-120000-c-cnn: deleted while listing"]
    res = CliRunner().invoke(app, ["runs", "--reports", str(reports)])
    assert res.exit_code == 0 and "4 run(s)" in res.stdout


def test_latest_is_the_newest_run_the_command_can_use(reports):
    scored_run(reports, "f", 0.5, 0.5, run_id="20261201-160000-f-ensemble", kind="ensemble", head="ensemble")
    assert load_run("latest", reports).id == "20261201-160000-f-ensemble"
    assert load_run("latest", reports, kinds=("head", "cnn")).id == "20261201-140000-e-five"
    with pytest.raises(FeatkitError, match="no cnn run in"):
        load_run("latest", reports.parent / "elsewhere", kinds=("cnn",))
    res = CliRunner().invoke(app, ["evaluate", "latest", "--reports", str(reports)])
    assert res.exit_code == 0, res.output
    assert "latest run: 20261201-160000-f-ensemble" in res.stderr


def test_the_sweep_filter_shows_folded_candidates_in_a_browser(reports, tmp_path):
    from reportfixtures import find_chromium, start_chromium

    browser, driver_path, why_not = find_chromium()
    if not (browser and driver_path):
        pytest.skip(why_not)
    index = build_report(reports)["index_html"]
    driver = start_chromium(browser, driver_path, tmp_path / "profile")
    try:
        driver.get(index.resolve().as_uri())
        assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []

        def shown():
            rows = driver.find_elements("css selector", "#runs tbody tr")
            return [r.find_element("css selector", "td").text[16:] for r in rows if r.is_displayed()]

        assert shown() == ["e-five", "d-ensemble", "c-cnn", "a-logreg"]  # b, a candidate of the sweep, folded
        driver.find_element("css selector", "#sweep-filter option[value='*']").click()
        assert shown() == ["e-five", "d-ensemble", "c-cnn", "b-knn", "a-logreg"]
        driver.find_element("css selector", "#sweep-filter option[value='20261201-150000-sweep']").click()
        assert shown() == ["d-ensemble", "b-knn"]
        driver.find_element("css selector", "#kind-filter option[value='head']").click()
        assert shown() == ["b-knn"]
        driver.find_element("css selector", "#sweep-filter option[value='']").click()
        assert shown() == ["e-five", "a-logreg"]
    finally:
        driver.quit()
