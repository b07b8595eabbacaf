"""Heads fitted on cached features: a registry of scikit-learn-style estimators.

    head = get_head("logreg", C=0.5).fit(X, y, X_val, y_val, n_classes=101)
    probs = head.predict_proba(X_test)        # (N, 101) float32, column j = class index j
    head.save(run_dir); head = load_head(run_dir)

Only the softmax head imports TensorFlow, and only when it is fitted or loaded.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import numpy as np

from featkit.core.errors import DamagedFileError, FeatkitError
from featkit.core.fileio import read_json
from featkit.core.schema import HeadFile
from featkit.heads.base import HEAD_JSON, Head, HeadInputError, NotFittedError
from featkit.heads.gbm import LightGBMHead
from featkit.heads.knn import KNNHead
from featkit.heads.logreg import LogRegHead
from featkit.heads.softmax import SoftmaxHead
from featkit.runs.store import DEFAULT_REPORTS, Run, load_run

HEADS: dict[str, type[Head]] = {"softmax": SoftmaxHead, "logreg": LogRegHead, "lightgbm": LightGBMHead, "knn": KNNHead}

__all__ = [
    "load_run_head",
    "HEADS",
    "Head",
    "HeadInputError",
    "NotFittedError",
    "get_head",
    "load_head",
    "head_params",
    "coerce_param",
    "search_grid",
]


def head_params(name: str) -> dict[str, Any]:
    """The parameters a head takes, with their defaults."""
    return _head_class(name).param_defaults()


def search_grid(name: str) -> dict[str, list]:
    """The values a head's default search tries on the validation split."""
    return dict(_head_class(name).search_grid)


def get_head(name: str, **params: Any) -> Head:
    """A new, unfitted head. String values (from a command line) are converted to the default's type."""
    cls = _head_class(name)
    defaults = cls.param_defaults()
    unknown = [k for k in params if k not in defaults]
    if unknown:
        k = unknown[0]
        hint = _suggest(k, defaults)
        raise FeatkitError(f"{name} head has no parameter {k!r}.{hint} Its parameters: {', '.join(defaults)}.")
    head = cls(**{k: coerce_param(name, k, v) for k, v in params.items()})
    head.validate_params()
    return head


def _head_class(name: str) -> type[Head]:
    if name not in HEADS:
        hint = _suggest(str(name), HEADS)
        raise FeatkitError(f"unknown head {name!r}.{hint} Heads: {', '.join(HEADS)}.")
    return HEADS[name]


def _suggest(name: str, choices) -> str:
    close = difflib.get_close_matches(name, choices, n=1) or [c for c in choices if c[:3].lower() == name[:3].lower()]
    return f" Did you mean {close[0]!r}?" if close else ""


def coerce_param(head: str, key: str, value: Any) -> Any:
    """A command-line string converted to the type of the parameter's default (other values as given)."""
    default = _head_class(head).param_defaults()[key]
    if not isinstance(value, str) or isinstance(default, str):
        return value
    try:
        if isinstance(default, bool):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float) or default is None:
            return float(value)
    except ValueError:
        raise FeatkitError(f"{head} head: {key} should be {type(default).__name__}. Received {key}={value!r}") from None
    return value


def load_head(directory: str | Path) -> Head:
    """A fitted head saved by ``Head.save(directory)``; it predicts identically to the saved one. Heads saved
    before temperatures and label classes were recorded load with T = 1 and classes 0..n_classes-1."""
    directory = Path(directory)
    f = directory / HEAD_JSON
    redo = "re-run `featkit fit-head` to make the run again"
    if not f.exists():
        raise FeatkitError(f"{f} is missing: {directory} holds no saved head ({redo}).")
    try:
        info = HeadFile.from_dict(read_json(f, dict, fix=redo), where=str(f))
    except DamagedFileError:
        raise
    except FeatkitError as e:
        raise DamagedFileError(f, str(e)) from None
    if info.head not in HEADS:
        raise FeatkitError(
            f"{f} names head {info.head!r}, which this featkit does not know (known: {', '.join(HEADS)})."
        )
    try:
        head = HEADS[info.head](**info.params)
    except TypeError as e:
        raise DamagedFileError(f, f"{f} is damaged ({e}): {redo}.") from None
    model = directory / info.model_file
    if not model.exists():
        raise FeatkitError(f"{model} is missing: the run did not finish; {redo}.")
    head.n_classes_ = info.n_classes
    head.classes_ = np.asarray(info.classes) if info.classes is not None else np.arange(head.n_classes_)
    head.n_features_in_ = info.n_features
    head.history_ = list(info.history)
    head.temperature_ = info.temperature
    for k, v in info.fitted.items():
        setattr(head, k, v)
    try:
        head._load_model(model)
    except Exception as e:  # joblib, pickle, Keras and h5py each raise their own kinds on a truncated file
        raise DamagedFileError(model, f"{model} is damaged ({type(e).__name__}): {redo}.") from None
    head.fitted_ = True
    return head


def load_run_head(run: Run | str | Path, reports: str | Path = DEFAULT_REPORTS):
    """The fitted head of a head run (by Run, folder or id)."""
    run = run if isinstance(run, Run) else load_run(run, reports)
    kind = run.config.kind
    if kind != "head":
        raise FeatkitError(f"run {run.id} is a {kind!r} run, not a head run: it has no fitted head to load.")
    head = load_head(run.path)
    run.check_n_classes(head.n_classes_, "the fitted head")
    return head
