"""Selection on validation, then refit (featkit.heads.search) and what fit-head records of it."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from cachefixtures import CLASSES

from featkit.core.errors import FeatkitError
from featkit.features.cache import read_cache
from featkit.heads import load_head
from featkit.heads.fit import fit_head
from featkit.heads.logreg import LogRegHead
from featkit.heads.search import candidate_grid, fit_selected, select, split_params


def test_params_with_commas_are_searched_others_fixed():
    fixed, grid = split_params("logreg", {"C": "0.01, 0.03,0.1", "max_iter": "50", "solver": "saga"})
    assert fixed == {"max_iter": 50, "solver": "saga"} and grid == {"C": [0.01, 0.03, 0.1]}
    assert candidate_grid("logreg", {}) == ({}, {"C": LogRegHead.search_grid["C"]})
    assert candidate_grid("logreg", {"C": "0.05"}) == ({"C": 0.05}, {})  # a fixed value replaces the default grid
    # listed values replace that setting's default values; the head's other searched settings stay
    assert candidate_grid("knn", {"k": [3, 3, 7], "tau": 0}) == (
        {"tau": 0.0},
        {"k": [3, 7], "smoothing": [1.0, 2.0, 4.0]},
    )
    with pytest.raises(FeatkitError, match="has no parameter 'c'.*Did you mean 'C'"):
        split_params("logreg", {"c": "0.1,1"})


def _blobs(rng, n, centres, noise_dims):
    y = np.arange(n) % len(centres)
    X = np.concatenate([centres[y] + rng.normal(0, 1.0, (n, centres.shape[1])), rng.normal(0, 1.0, (n, noise_dims))], 1)
    return X.astype(np.float32), y


def test_grid_search_picks_what_a_hand_computation_picks():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # few training rows, many noise features: too little regularisation overfits, too much underfits
    rng = np.random.default_rng(3)
    centres = rng.normal(0, 1.2, (3, 3))
    X, y = _blobs(rng, 45, centres, 40)
    Xv, yv = _blobs(rng, 600, centres, 40)
    grid = [0.0003, 0.003, 0.03, 0.3, 3.0]
    by_hand = []
    for c in grid:  # in float64: tol=1e-10 is out of float32's reach (scikit-learn >= 1.8 solves float32 in float32)
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, tol=1e-10, max_iter=10000))
        p = model.fit(X.astype(np.float64), y).predict_proba(Xv.astype(np.float64))
        by_hand.append(((p.argmax(1) == yv).mean(), -np.log(p[np.arange(len(yv)), yv]).mean()))
    hand_choice = max(range(len(grid)), key=lambda i: (by_hand[i][0], -by_hand[i][1]))
    assert 0 < hand_choice < len(grid) - 1 and len({a for a, _ in by_hand}) > 2  # an inside optimum

    sel = select("logreg", X, y, Xv, yv, params={"C": grid, "tol": 1e-10, "max_iter": 10000})
    assert [c.params for c in sel.candidates] == [{"C": c} for c in grid]
    assert [c.valid_top1 for c in sel.candidates] == [a for a, _ in by_hand]
    assert [c.valid_log_loss for c in sel.candidates] == pytest.approx([b for _, b in by_hand], abs=1e-4)
    assert sel.chosen == hand_choice and sel.params["C"] == grid[hand_choice]
    assert sel.to_dict()["chosen"] == {"C": grid[hand_choice]}


def test_knn_search_picks_k_by_hand():
    # train: class 0 at 0..40 degrees, one class-1 outlier at 21 degrees, class 1 at 60..100 degrees
    deg = np.array([0, 10, 20, 30, 40, 21, 60, 70, 80, 90, 100], float)
    y = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    # valid queries at 22 and 23 degrees (class 0): with k=1 both land on the outlier (1 and 2 degrees away);
    # with k=3 both are right (outlier, 20 and 30 degrees). At 75 degrees (class 1) every k is right.
    dv = np.array([22, 23, 75], float)
    yv = np.array([0, 0, 1])

    def at(d):
        return np.stack([np.cos(np.radians(d)), np.sin(np.radians(d))], 1)

    sel = select("knn", at(deg), y, at(dv), yv, n_classes=2, params={"k": "1,3", "tau": 0, "smoothing": 0.3})
    assert [c.valid_top1 for c in sel.candidates] == pytest.approx([1 / 3, 1.0])
    assert sel.params["k"] == 3


def test_settings_that_keep_the_ranking_are_chosen_by_calibrated_log_loss():
    from scipy.optimize import minimize_scalar

    # knn's smoothing adds the same floor to every class: top-1 ties, so the log loss after each candidate's own
    # temperature decides. By hand: counts of the k=15 nearest (cosine) training rows, p = (votes + s) / (k + s C).
    rng = np.random.default_rng(5)
    centres = rng.normal(0, 1.0, (4, 6))
    X, y = _blobs(rng, 60, centres, 6)
    Xv, yv = _blobs(rng, 200, centres, 6)
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    nearest = np.argsort(-(unit(Xv) @ unit(X).T), axis=1, kind="stable")[:, :15]
    votes = np.stack([np.bincount(y[row], minlength=4) for row in nearest]).astype(float)
    smoothings = [0.05, 0.5, 5.0, 50.0]
    calibrated = []
    for s in smoothings:
        z = np.log((votes + s) / (15 + 4 * s))

        def nll(log_t, z=z):
            t = z / np.exp(log_t)
            t = t - t.max(axis=1, keepdims=True)
            return (np.log(np.exp(t).sum(axis=1)) - t[np.arange(len(yv)), yv]).mean()

        calibrated.append(minimize_scalar(nll, bounds=(np.log(0.05), np.log(20)), method="bounded").fun)
    sel = select("knn", X, y, Xv, yv, n_classes=4, params={"k": 15, "tau": 0, "smoothing": smoothings})
    assert len({c.valid_top1 for c in sel.candidates}) == 1
    assert [c.valid_log_loss_calibrated for c in sel.candidates] == pytest.approx(calibrated, abs=1e-4)
    assert sel.params["smoothing"] == smoothings[int(np.argmin(calibrated))]
    assert sel.temperature == sel.candidates[sel.chosen].temperature


def test_refit_uses_train_and_valid_rows_never_a_test_row(caches, tmp_path, monkeypatch):
    fs = read_cache(caches.plain)
    train, valid, test = fs.subset("train"), fs.subset("valid"), fs.subset("test")
    seen: list[np.ndarray] = []
    original = LogRegHead._fit

    def spy(self, X, y, X_val, y_val):
        seen.append(np.asarray(X).copy())
        return original(self, X, y, X_val, y_val)

    monkeypatch.setattr(LogRegHead, "_fit", spy)
    run = fit_head(caches.plain, "logreg", {"C": "0.01,0.1"}, reports=tmp_path, quiet=True)
    assert [len(x) for x in seen] == [len(train), len(train), len(train) + len(valid)]

    def rows(a):
        return {r.tobytes() for r in np.asarray(a, np.float32)}

    assert rows(seen[-1]) == rows(train.features) | rows(valid.features)
    assert all(not (rows(x) & rows(test.features)) for x in seen)
    cfg, m = run.config.to_dict(), run.metrics.to_dict()
    assert cfg["refit"] is True and cfg["refit_rows"] == ["train", "valid"]
    assert m["n_train"] == len(train) + len(valid) and m["n_candidates"] == 2

    seen.clear()
    run = fit_head(caches.plain, "logreg", {"C": "0.01,0.1"}, reports=tmp_path, quiet=True, refit=False)
    assert [len(x) for x in seen] == [len(train), len(train)]
    assert run.config.extra["refit"] is False and run.metrics.extra["n_train"] == len(train)


def test_early_stopping_heads_refit_with_the_chosen_rounds(caches):
    fs = read_cache(caches.plain)
    train, valid = fs.subset("train"), fs.subset("valid")
    final, sel = fit_selected(
        "lightgbm",
        train.features,
        train.labels,
        valid.features,
        valid.labels,
        n_classes=CLASSES,
        params={"n_estimators": 200, "reduce": "pca", "pca": 16, "num_threads": 1, "learning_rate": 0.1},
    )
    assert 0 < sel.model.best_iteration_ < 200
    assert final.n_estimators == sel.model.best_iteration_ and final.early_stopping_rounds == 0
    assert final.best_iteration_ == sel.model.best_iteration_ and final.temperature_ == sel.temperature


def test_fit_head_records_search_and_calibration(caches, tmp_path):
    run = fit_head(caches.plain, "knn", {"k": "5,10,20", "tau": 0.05, "smoothing": 2}, reports=tmp_path, quiet=True)
    cfg, m = run.config.to_dict(), run.metrics.to_dict()
    search = cfg["search"]
    assert search["grid"] == {"k": [5, 10, 20]} and search["metric"] == "valid_top1"
    assert [c["params"] for c in search["candidates"]] == [{"k": k} for k in (5, 10, 20)]
    best = max(search["candidates"], key=lambda c: (c["valid_top1"], -c["valid_log_loss_calibrated"]))
    assert search["chosen"] == best["params"] == {"k": cfg["params"]["k"]}
    cal = m["calibration"]
    assert set(cal) == {"temperature", "before", "after"}
    assert set(cal["before"]) == set(cal["after"]) == {"log_loss", "brier", "ece"}
    assert (m["log_loss"], m["brier"], m["ece"]) == pytest.approx(
        (cal["after"]["log_loss"], cal["after"]["brier"], cal["after"]["ece"])
    )
    assert load_head(run.path).temperature_ == cal["temperature"] == search["temperature"]
    with open(run.path / "reliability.csv") as fh:
        table = list(csv.DictReader(fh))
    assert list(table[0]) == ["bin_lower", "bin_upper", "confidence", "accuracy", "count"] and len(table) == 15
    assert sum(int(r["count"]) for r in table) == m["n"]
    assert (run.path / "reliability.png").stat().st_size > 1000


def test_searching_needs_a_valid_split(caches):
    fs = read_cache(caches.plain)
    train = fs.subset("train")
    with pytest.raises(FeatkitError, match="-p C=0.1,1.0: searching needs a valid split"):
        select("logreg", train.features, train.labels, params={"C": "0.1,1"})
    sel = select("logreg", train.features, train.labels)  # default grid skipped: the head's defaults
    assert sel.grid == {} and sel.params["C"] == LogRegHead().C and sel.temperature == 1.0
