"""The head contract, run on every head (like scikit-learn's parametrize_with_checks), on a small REAL cache."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from cachefixtures import CLASSES, one_blas_thread
from featkit.cache import read_cache
from featkit.errors import FeatkitError
from featkit.heads import HEADS, NotFittedError, get_head, load_head

# small settings so the whole contract runs in seconds on 2 CPU cores
FAST = {
    "logreg": {"C": 1.0, "max_iter": 500},
    "lightgbm": {"n_estimators": 60, "early_stopping_rounds": 10, "pca": 32, "num_threads": 1},
    "softmax": {"hidden": 64, "dropout": 0.3, "epochs": 15, "batch_size": 32, "patience": 3},
}


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    with one_blas_thread():
        yield


@pytest.fixture(scope="session")
def splits(caches):
    fs = read_cache(caches.plain)
    return fs.subset("train"), fs.subset("valid"), fs.subset("test")


def test_registry_names_the_three_heads():
    assert set(HEADS) == {"softmax", "logreg", "lightgbm"} == set(FAST)


@pytest.mark.parametrize("name", sorted(FAST))
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
    if name != "logreg":
        assert head.history_ and {"loss", "val_loss"} <= set(head.history_[0])

    path = head.save(tmp_path / "saved")
    assert path.exists() and path.name == head.model_file and not list((tmp_path / "saved").glob(".*tmp*"))
    again = load_head(tmp_path / "saved")
    assert type(again) is type(head) and again.params == head.params
    assert np.array_equal(again.predict_proba(test.features), probs)
    assert again.history_ == head.history_


@pytest.mark.parametrize("name", sorted(FAST))
def test_class_absent_from_training_still_gets_a_column(name, splits):
    train, valid, test = splits
    absent = CLASSES - 1
    keep, keep_val = train.labels != absent, valid.labels != absent
    head = get_head(name, **FAST[name]).fit(train.features[keep], train.labels[keep], valid.features[keep_val],
                                             valid.labels[keep_val], n_classes=CLASSES)
    probs = head.predict_proba(test.features)
    assert probs.shape == (len(test), CLASSES)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert probs[:, absent].max() < 0.1
    if name == "logreg":
        assert np.all(probs[:, absent] == 0)


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
    with pytest.raises(FeatkitError, match="fitted on 1280"):
        head.predict_proba(train.features[:, :10])


def test_logreg_lightgbm_scoring_and_reports_never_import_tensorflow(caches, tmp_path):
    code = f"""
import sys
from featkit.heads import get_head, load_head
from featkit.fit import fit_head
from featkit.runs import load_run_head
from featkit.evaluate import evaluate_run, sensitivity
from featkit.report import build_report
for head, params in (("logreg", {{}}), ("lightgbm", {{"n_estimators": 5, "pca": 8, "num_threads": 1}})):
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
