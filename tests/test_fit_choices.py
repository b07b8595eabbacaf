"""Fits say what they chose (one line) and warn, one line each, on a choice at the edge of its grid, a validation
split of few photos per class, and a knn k at or above the training rows (issue 25.3, issue 23.8)."""

from __future__ import annotations

import numpy as np
import pytest
from cachefixtures import CLASSES, TRAIN_PER_CLASS, VALID_PER_CLASS, one_blas_thread

from featkit.features.cache import read_cache
from featkit.heads.fit import fit_head
from featkit.heads.knn import KNNHead
from featkit.heads.search import select

N_TRAIN = CLASSES * (TRAIN_PER_CLASS - VALID_PER_CLASS)  # 192 training rows in the fixture cache


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    with one_blas_thread():
        yield


def _splits(caches):
    fs = read_cache(caches.plain)
    tr, va = fs.subset("train"), fs.subset("valid")
    return tr, va


def test_knn_default_grid_keeps_k_below_the_training_rows_and_names_its_choice(caches, tmp_path, capsys):
    assert max(KNNHead.search_grid["k"]) >= N_TRAIN  # the default grid has values the fixture cannot take
    run = fit_head(caches.plain, "knn", reports=tmp_path)
    search = run.config.extra["search"]
    assert search["grid"]["k"] == [k for k in KNNHead.search_grid["k"] if k < N_TRAIN] == [10, 40, 160]
    assert len(search["candidates"]) == 3 * 3 * 3
    # k=160 may win, but 320 and 640 were ruled out by the rows: no "largest value searched" line for k
    assert not any(w.startswith("knn: k=") for w in search["warnings"])
    chosen = search["chosen"]
    line = f"knn chose k={chosen['k']}, tau={chosen['tau']:g}, smoothing={chosen['smoothing']:g} ("
    assert search["summary"].startswith(line)
    err = capsys.readouterr().err
    assert line in err and "searching 27 candidates (k x tau x smoothing)" in err
    assert "knn k=10, tau=0.03" not in err  # a large search prints one line, not one per candidate
    assert "valid top-1" in search["summary"] and "best of 27 candidates" in search["summary"]


def test_a_k_at_or_above_the_training_rows_is_clipped_and_said(caches):
    tr, va = _splits(caches)
    said: list[str] = []
    sel = select(
        "knn", tr.features, tr.labels, va.features, va.labels, CLASSES, {"k": 500, "tau": 0.05}, warn=said.append
    )
    assert sel.params["k"] == N_TRAIN
    assert (
        said[0]
        == f"warning: knn: k=500 >= the {N_TRAIN} training rows: clipped to k={N_TRAIN} (every training row votes)."
    )
    # listed values at or above the rows collapse onto the row count, with one line
    said.clear()
    sel = select("knn", tr.features, tr.labels, va.features, va.labels, CLASSES, {"k": "10,300,640"}, warn=said.append)
    assert sel.grid["k"] == [10, N_TRAIN]
    assert [s for s in said if "clipped" in s] == [
        f"warning: knn: k=300,640 >= the {N_TRAIN} training rows: clipped to k={N_TRAIN}."
    ]


def test_a_choice_at_the_edge_of_its_grid_is_warned(caches):
    tr, va = _splits(caches)
    said: list[str] = []
    # 48 validation photos of features that separate poorly: the strongest regularisation searched wins
    sel = select(
        "logreg", tr.features, tr.labels, va.features, va.labels, CLASSES, {"C": "0.001,0.01,0.1"}, warn=said.append
    )
    assert sel.params["C"] == 0.001
    assert said == [
        "warning: logreg: C=0.001 is the smallest value searched (0.001, 0.01, 0.1): the best may lie beyond it; "
        "search further with -p C=0.0001,0.00033,0.001."
    ]
    assert sel.to_dict()["warnings"] == [s.removeprefix("warning: ") for s in said]
    # a choice inside the grid: no warning
    said.clear()
    sel = select(
        "logreg", tr.features, tr.labels, va.features, va.labels, CLASSES, {"C": "1e-7,1e-5,1e-3"}, warn=said.append
    )
    assert sel.params["C"] == 1e-5 and said == []


def test_a_validation_split_of_few_photos_per_class_is_warned(caches):
    tr, va = _splits(caches)
    assert VALID_PER_CLASS >= 5
    said: list[str] = []
    select("logreg", tr.features, tr.labels, va.features, va.labels, CLASSES, {"C": 0.01}, warn=said.append)
    assert said == []  # 6 validation photos of each class
    keep = np.concatenate([np.flatnonzero(va.labels == c)[: 2 if c < 3 else 6] for c in range(CLASSES)])
    select("logreg", tr.features, tr.labels, va.features[keep], va.labels[keep], CLASSES, {"C": 0.01}, warn=said.append)
    assert said == [
        f"warning: the validation split holds fewer than 5 photos for 3 of {CLASSES} classes (as few as 2, "
        f"{len(keep)} in all): settings chosen on it are noisy; give the dataset more validation photos "
        "(e.g. a larger valid share in --split)."
    ]


def test_lightgbm_says_its_rounds(caches):
    tr, va = _splits(caches)
    lines: list[str] = []
    sel = select(
        "lightgbm", tr.features, tr.labels, va.features, va.labels, CLASSES, {"n_estimators": 30}, log=lines.append
    )
    rounds = sel.model.best_iteration_
    assert 1 <= rounds <= 30
    assert lines[-1] == (
        "lightgbm chose num_leaves=7, learning_rate=0.1, reduce=lda, n_estimators=30, "
        f"rounds={rounds} (early stopping) "
        f"(valid top-1 {sel.candidates[0].valid_top1:.4f}, one candidate, T={sel.temperature:.3g})"
    )
