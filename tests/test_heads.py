"""The head contract, run on every head (like scikit-learn's parametrize_with_checks), on a small REAL cache."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from cachefixtures import CLASSES, one_blas_thread
from sklearn.base import clone
from sklearn.utils.estimator_checks import parametrize_with_checks

from featkit.core.errors import FeatkitError
from featkit.core.fileio import read_json, write_json
from featkit.features.cache import read_cache
from featkit.heads import HEADS, NotFittedError, get_head, load_head
from featkit.heads.gbm import LightGBMHead
from featkit.runs.calibration import apply_temperature

# small settings so the whole contract runs in seconds on 2 CPU cores (lightgbm: a 32-dimension PCA rather than
# the default LDA, whose eigen-decomposition of the 1280 x 1280 scatter costs seconds; LDA has its own test)
FAST = {
    "logreg": {"C": 1.0, "max_iter": 500},
    "lightgbm": {"n_estimators": 60, "early_stopping_rounds": 10, "reduce": "pca", "pca": 32, "num_threads": 1},
    "softmax": {"hidden": 64, "dropout": 0.3, "epochs": 15, "batch_size": 32, "patience": 3, "lr": 1e-3},
    "knn": {"k": 5},
}


@pytest.fixture(scope="session")
def splits(caches):
    fs = read_cache(caches.plain)
    return fs.subset("train"), fs.subset("valid"), fs.subset("test")


def test_registry_names_the_four_heads():
    assert set(HEADS) == {"softmax", "logreg", "lightgbm", "knn"} == set(FAST)


# the softmax head builds a Keras model: the slow tier
HEAD_NAMES = [pytest.param(n, marks=pytest.mark.slow) if n == "softmax" else n for n in sorted(FAST)]


@pytest.mark.parametrize("name", HEAD_NAMES)
def test_head_contract(name, splits, tmp_path):
    train, valid, test = splits
    head = get_head(name, **FAST[name])
    assert not hasattr(head, "classes_"), "__init__ must store parameters only"
    with pytest.raises(NotFittedError, match="is not fitted yet. Call fit first."):
        head.predict_proba(test.features)
    with pytest.raises(NotFittedError, match="is not fitted yet"):
        head.save(tmp_path / "unfitted")

    assert head.fit(train.features, train.labels, valid.features, valid.labels, n_classes=CLASSES) is head
    assert list(head.classes_) == list(range(CLASSES))
    assert head.params == {**type(head).param_defaults(), **FAST[name]}
    probs = head.predict_proba(test.features)
    assert probs.shape == (len(test), CLASSES) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert np.array_equal(head.predict(test.features), probs.argmax(axis=1))
    chance = 1.0 / CLASSES
    assert (head.predict(train.features) == train.labels).mean() > 0.6
    assert (head.predict(valid.features) == valid.labels).mean() >= 2 * chance
    if name in ("softmax", "lightgbm"):
        assert head.history_ and {"loss", "val_loss"} <= set(head.history_[0])

    path = head.save(tmp_path / "saved")
    assert path.exists() and path.name == head.model_file and not list((tmp_path / "saved").glob(".*tmp*"))
    again = load_head(tmp_path / "saved")
    assert type(again) is type(head) and again.params == head.params
    assert np.array_equal(again.predict_proba(test.features), probs)
    assert again.history_ == head.history_


@pytest.mark.parametrize("name", HEAD_NAMES)
def test_class_absent_from_training_still_gets_a_column(name, splits):
    train, valid, test = splits
    absent = CLASSES - 1
    keep, keep_val = train.labels != absent, valid.labels != absent
    head = get_head(name, **FAST[name]).fit(
        train.features[keep], train.labels[keep], valid.features[keep_val], valid.labels[keep_val], n_classes=CLASSES
    )
    probs = head.predict_proba(test.features)
    assert probs.shape == (len(test), CLASSES)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert probs[:, absent].max() < 0.1
    if name == "knn":  # smoothed votes: never exactly 0, and the same small share for every row
        assert np.all(probs[:, absent] > 0) and np.ptp(probs[:, absent]) == 0
    if name == "logreg":
        assert np.all(probs[:, absent] == 0)


@pytest.mark.slow
def test_softmax_is_seeded(splits):
    train, valid, test = splits
    params = {**FAST["softmax"], "hidden": 32, "epochs": 4, "seed": 3}
    a = get_head("softmax", **params).fit(train.features, train.labels, valid.features, valid.labels)
    b = get_head("softmax", **params).fit(train.features, train.labels, valid.features, valid.labels)
    assert np.array_equal(a.predict_proba(test.features), b.predict_proba(test.features))


def test_get_head_errors_name_the_problem():
    with pytest.raises(FeatkitError, match="unknown head 'logistic'.*Did you mean 'logreg'"):
        get_head("logistic")
    with pytest.raises(FeatkitError, match="has no parameter 'learning_rte'.*'learning_rate'"):
        get_head("lightgbm", learning_rte=0.1)
    with pytest.raises(FeatkitError, match="solver should be one of 'lbfgs', 'saga'. Received solver='sgd'"):
        get_head("logreg", solver="sgd")
    with pytest.raises(FeatkitError, match="optimizer should be one of"):
        get_head("softmax", optimizer="sgd")
    assert get_head("softmax", epochs="3", lr="0.01").params["epochs"] == 3  # command-line strings are converted


def test_fit_checks_its_input(splits):
    train, _, _ = splits
    with pytest.raises(FeatkitError, match="n_classes=3"):
        get_head("logreg").fit(train.features, train.labels, n_classes=3)
    head = get_head("logreg").fit(train.features, train.labels)
    with pytest.raises(FeatkitError, match="X has 10 features, but LogRegHead is expecting 1280 features"):
        head.predict_proba(train.features[:, :10])
    with pytest.raises(FeatkitError, match="Input X contains NaN"):
        head.predict_proba(np.full((2, 1280), np.nan))


def test_logreg_lightgbm_scoring_and_reports_never_import_tensorflow(caches, tmp_path):
    code = f"""
import sys
from featkit.heads import get_head, load_head
from featkit.heads.fit import fit_head
from featkit.heads import load_run_head
from featkit.apps.evaluate import evaluate_run, sensitivity
from featkit.report.build import build_report
lightgbm = {{"n_estimators": 5, "reduce": "pca", "pca": 8, "num_threads": 1}}
for head, params in (("logreg", {{}}), ("lightgbm", lightgbm)):
    run = fit_head({str(caches.plain)!r}, head, params, reports={str(tmp_path)!r}, quiet=True)
    load_run_head(run).predict_proba([[0.0] * 1280])
sensitivity(run, {{"flip": {str(caches.flip)!r}}})
build_report({str(tmp_path)!r})
bad = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras"))
print("LOADED", bad)
assert not bad, bad
"""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "LOADED []" in out.stdout


# ---- scikit-learn estimators -------------------------------------------------------------------------

# Every scikit-learn estimator check passes on logreg, lightgbm and knn: none is listed as expected to fail.
# One check does not run: check_array_api_input is skipped by scikit-learn itself unless SCIPY_ARRAY_API=1 is set;
# the heads turn any input into a float32 NumPy array (LightGBM and the saved models need NumPy), so array-API
# inputs (CuPy, torch) are converted, not kept on their device.
EXPECTED_FAILED_CHECKS: dict[str, str] = {}


@parametrize_with_checks(
    [get_head("logreg"), get_head("lightgbm", n_estimators=20, num_threads=1), get_head("knn", k=3)],
    expected_failed_checks=lambda estimator: EXPECTED_FAILED_CHECKS,
)
def test_scikit_learn_estimator_checks(estimator, check):
    with one_blas_thread():
        check(estimator)


def test_heads_clone_and_set_params_like_scikit_learn():
    head = get_head("lightgbm", learning_rate=0.02, pca=16)
    twin = clone(head)
    assert type(twin) is LightGBMHead and twin is not head and twin.get_params() == head.get_params()
    assert twin.set_params(num_leaves=15) is twin and twin.num_leaves == 15 and head.num_leaves == 7
    assert repr(get_head("logreg", C=0.5)) == "LogRegHead(C=0.5)"


def test_any_labels_without_n_classes_like_scikit_learn(splits):
    train, _, test = splits
    names = np.array(
        [
            "apple pie",
            "baby back ribs",
            "baklava",
            "beef carpaccio",
            "beef tartare",
            "beet salad",
            "beignets",
            "bibimbap",
        ]
    )
    head = get_head("logreg").fit(train.features, names[train.labels])
    assert list(head.classes_) == sorted(names)
    assert (head.predict(test.features) == names[test.labels]).mean() > 2 / CLASSES


# ---- temperature ---------------------------------------------------------------------------------------


def test_save_load_keeps_the_temperature(splits, tmp_path):
    train, _, test = splits
    head = get_head("logreg").fit(train.features, train.labels, n_classes=CLASSES)
    raw = head.predict_proba(test.features)
    head.temperature_ = 2.5
    calibrated = head.predict_proba(test.features)
    np.testing.assert_allclose(calibrated, apply_temperature(raw, 2.5), rtol=1e-6)
    assert not np.allclose(calibrated, raw)
    head.save(tmp_path)
    assert read_json(tmp_path / "head.json")["temperature"] == 2.5
    again = load_head(tmp_path)
    assert again.temperature_ == 2.5
    assert np.array_equal(again.predict_proba(test.features), calibrated)
    assert np.array_equal(again.predict_proba(test.features, calibrated=False), raw)


def test_head_saved_before_temperatures_loads_with_t_1(splits, tmp_path):
    train, _, test = splits
    head = get_head("logreg").fit(train.features, train.labels, n_classes=CLASSES)
    head.save(tmp_path)
    info = read_json(tmp_path / "head.json")
    del info["temperature"], info["classes"]  # what an earlier featkit wrote
    write_json(tmp_path / "head.json", info)
    again = load_head(tmp_path)
    assert again.temperature_ == 1.0 and list(again.classes_) == list(range(CLASSES))
    assert np.array_equal(again.predict_proba(test.features), head.predict_proba(test.features))


# ---- knn ------------------------------------------------------------------------------------------------


def _at(degrees, scale=1.0):
    a = np.radians(np.asarray(degrees, float))
    return np.stack([np.cos(a), np.sin(a)], axis=1) * scale


def test_knn_neighbours_and_probabilities_by_hand():
    # class 0 at 0, 10 and 20 degrees; class 1 at 40 (far out: length 10; cosine ignores it), 90 and 100 degrees
    X = np.concatenate([_at([0, 10, 20]), _at([40], scale=10.0), _at([90, 100])])
    y = np.array([0, 0, 0, 1, 1, 1])
    head = get_head("knn", k=3, tau=0, smoothing=0.5).fit(X, y, n_classes=3)
    # a query at 35 degrees: nearest 40 (5 deg), 20 (15), 10 (25), 0 (35), 90 (55), 100 (65)
    idx, sims = head.neighbours(_at([35]), 6)
    assert idx.tolist() == [[3, 2, 1, 0, 4, 5]]
    np.testing.assert_allclose(sims, np.cos(np.radians([[5, 15, 25, 35, 55, 65]])), rtol=1e-3)  # float16 rows
    # k=3, plain votes: class 0: 2, class 1: 1, class 2: 0 -> (votes + 0.5) / (3 + 0.5 * 3)
    np.testing.assert_allclose(head.predict_proba(_at([35])), [[2.5 / 4.5, 1.5 / 4.5, 0.5 / 4.5]], rtol=1e-6)
    k1 = get_head("knn", k=1, tau=0, smoothing=0.5).fit(X, y, n_classes=3)
    np.testing.assert_allclose(k1.predict_proba(_at([35], scale=7.0)), [[0.5 / 2.5, 1.5 / 2.5, 0.5 / 2.5]], rtol=1e-6)
    assert k1.predict(_at([35])).tolist() == [1] and head.predict(_at([35])).tolist() == [0]
    # similarity-weighted: weight exp((cos - 1) / tau) per neighbour, floor = smoothing * mean weight
    w = np.exp((np.cos(np.radians([5, 15, 25])) - 1) / 0.1)
    floor = 0.5 * w.mean()
    expected = np.array([w[1] + w[2] + floor, w[0] + floor, floor]) / (w.sum() + 3 * floor)
    weighted = get_head("knn", k=3, tau=0.1, smoothing=0.5).fit(X, y, n_classes=3)
    np.testing.assert_allclose(weighted.predict_proba(_at([35]))[0], expected, rtol=1e-3)


def test_lightgbm_trees_see_the_discriminant_directions_of_the_training_rows(splits, tmp_path):
    from sklearn.decomposition import PCA
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    train, valid, test = splits
    params = {"n_estimators": 30, "early_stopping_rounds": 0, "num_threads": 1}
    head = get_head("lightgbm", **params).fit(train.features, train.labels, n_classes=CLASSES)
    lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage="auto").fit(
        train.features.astype(np.float64), train.labels
    )
    np.testing.assert_allclose(head._transform(test.features), lda.transform(test.features), rtol=1e-4, atol=1e-4)
    assert head._transform(test.features).shape == (len(test), min(CLASSES - 1, train.features.shape[1]))

    pca_head = get_head("lightgbm", reduce="pca", pca=8, **params).fit(train.features, train.labels, n_classes=CLASSES)
    pca = PCA(n_components=8, random_state=0).fit(train.features)
    np.testing.assert_allclose(pca_head._transform(test.features), pca.transform(test.features), rtol=1e-3, atol=1e-3)
    with pytest.raises(FeatkitError, match="reduce should be one of 'lda', 'pca', 'none'. Received reduce='svd'"):
        get_head("lightgbm", reduce="svd").fit(train.features, train.labels)

    # a model saved before the LDA default (state key "pca") still loads, as the PCA head it was
    import joblib

    pca_head.save(tmp_path / "old")
    state = joblib.load(tmp_path / "old" / "model.joblib")
    joblib.dump({"booster": state["booster"], "pca": state["reducer"]}, tmp_path / "old" / "model.joblib")
    head_json = read_json(tmp_path / "old" / "head.json")
    head_json["params"] = {k: v for k, v in head_json["params"].items() if k not in ("reduce", "lambda_l2")}
    write_json(tmp_path / "old" / "head.json", head_json)
    old = load_head(tmp_path / "old")
    assert old.reduce == "pca"
    np.testing.assert_array_equal(old.predict_proba(test.features), pca_head.predict_proba(test.features))
