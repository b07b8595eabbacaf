"""`featkit curve` (featkit.apps.curve): stratified, seeded subsets drawn from the training rows only, the `all`
point equal to a plain fit-head run, the files a curve writes, and bad --per-class values as one line each."""

from __future__ import annotations

import numpy as np
import pytest
from cachefixtures import CLASSES, TEST_PER_CLASS, TRAIN_PER_CLASS, VALID_PER_CLASS

from featkit.apps import curve as curve_app
from featkit.core.errors import FeatkitError
from featkit.core.fileio import read_json
from featkit.features.cache import read_cache

TRAIN = TRAIN_PER_CLASS - VALID_PER_CLASS  # training photos per class in the fixture cache


def test_subsets_are_stratified_and_seeded():
    labels = np.repeat(np.arange(4), [9, 7, 12, 3])
    a = curve_app.stratified_subset(labels, 3, seed=5, repeat=0)
    assert np.bincount(labels[a]).tolist() == [3, 3, 3, 3]
    assert np.array_equal(a, curve_app.stratified_subset(labels, 3, seed=5, repeat=0))  # same seed, same draw
    assert not np.array_equal(a, curve_app.stratified_subset(labels, 3, seed=5, repeat=1))
    assert not np.array_equal(a, curve_app.stratified_subset(labels, 3, seed=6, repeat=0))
    capped = curve_app.stratified_subset(labels, 5, seed=5, repeat=0)
    assert np.bincount(labels[capped]).tolist() == [5, 5, 5, 3]  # the class of 3 gives all of its rows
    assert np.array_equal(curve_app.stratified_subset(labels, None, 5, 0), np.arange(len(labels)))


def test_per_class_parsing_and_capping():
    assert curve_app.parse_per_class("10,1,2,all,2") == [1, 2, 10, None]
    for bad in ("0", "1,-2", "1.5", "two", ""):
        with pytest.raises(FeatkitError, match="--per-class"):
            curve_app.parse_per_class(bad)
    said: list[str] = []
    counts = np.array([24, 3, 10])
    names = ["apple pie", "baklava", "churros"]
    assert curve_app.feasible_points([1, 5, 30, None], counts, names, said.append) == [1, 5, None]
    assert len(said) == 2
    assert "--per-class 5" in said[0] and "baklava (3)" in said[0] and "apple pie" not in said[0]
    assert "--per-class 30" in said[1] and "left out" in said[1]


def test_reach_point():
    pts = [curve_app.CurvePoint(k, 0, [v], [v]) for k, v in ((1, 0.3), (2, 0.5), (5, 0.73), (10, 0.8))]
    pts.append(curve_app.CurvePoint(None, 0, [0.8], [0.9]))
    assert curve_app.reach_point(pts, 0.8) == 5  # 0.73 >= 0.9 * 0.8 = 0.72
    assert curve_app.reach_point(pts[:2], 0.8) is None


def test_curve_draws_train_rows_only_and_all_equals_fit_head(caches, tmp_path, monkeypatch):
    from featkit.heads import search
    from featkit.heads.fit import fit_head

    fs = read_cache(caches.plain)
    train = fs.subset("train")
    row_of = {fs.features[i].tobytes(): fs.split[i] for i in range(len(fs))}
    seen: list[tuple[np.ndarray, np.ndarray]] = []
    real = search.fit_selected

    def spy(head, X, y, X_val=None, y_val=None, **kw):
        seen.append((np.asarray(X), np.asarray(y)))
        return real(head, X, y, X_val, y_val, **kw)

    monkeypatch.setattr(search, "fit_selected", spy)
    reports = tmp_path / "reports"
    result = curve_app.learning_curve(
        caches.plain, "logreg", per_class=[2, None], repeats=2, seed=3, by_class=True, reports=reports, quiet=True
    )
    # 2 draws of 2 per class, then one fit on every training row
    assert [len(y) for _, y in seen] == [2 * CLASSES, 2 * CLASSES, TRAIN * CLASSES]
    for X, _y in seen:
        assert {row_of[x.tobytes()] for x in X} == {"train"}
    for _X, y in seen[:2]:
        assert np.bincount(y, minlength=CLASSES).tolist() == [2] * CLASSES
    assert not np.array_equal(seen[0][0], seen[1][0])  # two repeats, two draws
    assert np.array_equal(seen[2][0], train.features)

    # the `all` point is the fit-head run (no refit: each point trains on its photos only)
    run = fit_head(caches.plain, "logreg", reports=reports, seed=3, quiet=True, refit=False)
    full = result.points[-1]
    assert full.per_class is None and full.top1 == [run.metrics.top1] and full.top5 == [run.metrics.top5]
    assert result.full_top1 == run.metrics.top1

    # the files: curve.csv (a row per point), curve.json (every repeat), the plots, the 10 hardest (here all 8)
    saved = read_json(result.path / "curve.json")
    assert result.path.parent == reports / "curves"
    assert [p["label"] for p in saved["points"]] == ["2", "all"]
    two = saved["points"][0]
    assert len(two["top1"]) == 2 and two["top1_mean"] == pytest.approx(np.mean(two["top1"]))
    assert two["top1_std"] == pytest.approx(np.std(two["top1"]))
    assert saved["n_test"] == CLASSES * TEST_PER_CLASS and saved["by_class"] and len(saved["by_class"]) == CLASSES
    assert (result.path / "curve.csv").read_text().splitlines()[0].startswith("per_class,n_train,repeats,top1_mean")
    assert len((result.path / "curve.csv").read_text().splitlines()) == 3
    for name in ("curve.png", "curve_by_class.png", "curve_by_class.csv"):
        assert (result.path / name).stat().st_size > 0
    listed = curve_app.list_curves(reports)
    assert [c["folder"] for c in listed] == [f"curves/{result.id}"]

    # the report's section (results.md and index.html)
    from featkit.report.curves import curves_section, render_curves

    md = "\n".join(curves_section(listed))
    assert f"### {result.id}" in md and f"(curves/{result.id}/curve.png)" in md
    assert f"| all | {TRAIN * CLASSES} | 1 | {100 * run.metrics.top1:.2f} ± 0.00 % |" in md
    html = render_curves(listed)
    assert f'src="curves/{result.id}/curve.png"' in html and "Label-efficiency curves" in html


def test_all_point_with_refit_equals_a_plain_fit_head_run(caches, tmp_path):
    from featkit.heads.fit import fit_head

    reports = tmp_path / "reports"
    result = curve_app.learning_curve(caches.plain, "logreg", per_class=[None], refit=True, reports=reports, quiet=True)
    run = fit_head(caches.plain, "logreg", reports=reports, quiet=True)
    assert result.points[0].top1 == [run.metrics.top1] and result.points[0].top5 == [run.metrics.top5]


def test_cli_bad_per_class_is_one_line_exit_2(caches, capsys):
    from featkit.cli import main

    with pytest.raises(SystemExit) as e:
        main(["curve", "--features", str(caches.plain), "--per-class", "0,5"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "error: --per-class 0: give whole numbers of photos per class, 1 or more, or all (e.g. 1,2,5,10,all)."
    ]
