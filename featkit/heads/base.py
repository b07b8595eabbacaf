"""The head contract shared by every head (scikit-learn estimator style).

- ``__init__`` stores parameters only; ``params`` returns them as a dict (what config.json records).
- ``fit(X, y, X_val=None, y_val=None, n_classes=None)`` returns self; what is learned ends in ``_``:
  ``classes_`` (the column order of ``predict_proba``: always 0..n_classes-1, also for classes that have no
  training rows), ``n_features_in_``, ``history_`` (list of dicts, one per epoch / boosting round; may be empty).
- ``predict_proba(X)`` -> (N, n_classes) float32, rows sum to 1; ``predict(X)`` -> argmax (lowest index on ties).
- ``save(dir)`` writes the model file plus ``head.json``; ``featkit.heads.load_head(dir)`` reads them back.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .. import __version__
from ..errors import FeatkitError
from ..fileio import write_json

HEAD_JSON = "head.json"


class NotFittedError(FeatkitError, ValueError):
    """predict / save called on a head that has not been fitted."""


class Head:
    name: ClassVar[str] = ""
    model_file: ClassVar[str] = ""

    # ---- parameters ---------------------------------------------------------------------------------
    @classmethod
    def param_defaults(cls) -> dict[str, Any]:
        sig = inspect.signature(cls.__init__)
        return {k: p.default for k, p in sig.parameters.items() if k != "self"}

    @property
    def params(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.param_defaults()}

    def get_params(self, deep: bool = True) -> dict[str, Any]:  # scikit-learn spelling
        return self.params

    def validate_params(self) -> None:
        """Raise FeatkitError naming the parameter, the allowed values and what was received."""

    def __repr__(self) -> str:
        changed = {k: v for k, v in self.params.items() if v != self.param_defaults()[k]}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in changed.items())})"

    # ---- fitting ------------------------------------------------------------------------------------
    def fit(self, X, y, X_val=None, y_val=None, n_classes: int | None = None) -> "Head":
        self.validate_params()
        X, y = _check_Xy(X, y, "training")
        if len(y) == 0:
            raise FeatkitError("no training rows: the cache's train split is empty.")
        if (X_val is None) != (y_val is None):
            raise ValueError("give both X_val and y_val, or neither.")
        if X_val is not None:
            X_val, y_val = _check_Xy(X_val, y_val, "validation")
            if X_val.shape[1] != X.shape[1]:
                raise FeatkitError(f"validation features have {X_val.shape[1]} columns, training features {X.shape[1]}.")
            if len(y_val) == 0:
                X_val = y_val = None
        top = int(max(y.max(), -1 if y_val is None else y_val.max())) + 1
        if n_classes is None:
            n_classes = top
        elif top > n_classes:
            raise FeatkitError(f"labels go up to {top - 1}, but n_classes={n_classes}: give the full class count.")
        if y.min() < 0 or (y_val is not None and y_val.min() < 0):
            raise FeatkitError("labels must be class indices >= 0.")
        self.n_classes_ = int(n_classes)
        self.classes_ = np.arange(self.n_classes_)
        self.n_features_in_ = int(X.shape[1])
        self.history_: list[dict] = []
        self._fit(X, y, X_val, y_val)
        self.fitted_ = True
        return self

    def _fit(self, X, y, X_val, y_val) -> None:
        raise NotImplementedError

    # ---- prediction ---------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not getattr(self, "fitted_", False):
            raise NotFittedError(f"This {type(self).__name__} ({self.name!r} head) is not fitted yet. Call fit first.")

    def predict_proba(self, X) -> np.ndarray:
        self._check_fitted()
        X = _check_X(X)
        if X.shape[1] != self.n_features_in_:
            raise FeatkitError(f"features have {X.shape[1]} columns, but this head was fitted on {self.n_features_in_}: "
                               "use a cache from the same backbone.")
        if len(X) == 0:
            return np.zeros((0, self.n_classes_), np.float32)
        return np.ascontiguousarray(self._predict_proba(X), dtype=np.float32)

    def _predict_proba(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict(self, X) -> np.ndarray:
        return np.argmax(self.predict_proba(X), axis=1)

    # ---- persistence --------------------------------------------------------------------------------
    def fitted_state(self) -> dict[str, Any]:
        """Small JSON-able facts about the fit (best epoch, iterations...): saved in head.json."""
        return {}

    def save(self, directory: str | Path) -> Path:
        """Write the model file and head.json into `directory`; returns the model file's path."""
        self._check_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = self._save_model(directory / self.model_file)
        write_json(directory / HEAD_JSON, {
            "head": self.name, "params": self.params, "model_file": self.model_file,
            "n_classes": self.n_classes_, "n_features": self.n_features_in_, "history": self.history_,
            "fitted": self.fitted_state(), "featkit_version": __version__,
        })
        return path

    def _save_model(self, path: Path) -> Path:
        raise NotImplementedError

    def _load_model(self, path: Path) -> None:
        raise NotImplementedError


def _check_X(X) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise FeatkitError(f"features should be a 2-D array (rows, feature_dim). Received shape {X.shape}.")
    return X


def _check_Xy(X, y, what: str) -> tuple[np.ndarray, np.ndarray]:
    X = _check_X(X)
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != len(X):
        raise FeatkitError(f"{what} labels should be 1-D with one label per row: {len(X)} rows, labels shape {y.shape}.")
    if len(y) and not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.mod(y, 1) == 0):
            raise FeatkitError(f"{what} labels should be integer class indices. Received dtype {y.dtype}.")
    return X, y.astype(np.int64)


def one_of(head: str, param: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise FeatkitError(f"{head} head: {param} should be one of {', '.join(map(repr, allowed))}. Received {param}={value!r}")


def positive(head: str, param: str, value: Any, integer: bool = False, zero_ok: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (value > 0 or (zero_ok and value == 0))
    if integer:
        ok = ok and float(value) == int(value)
    if not ok:
        kind = "an integer" if integer else "a number"
        raise FeatkitError(f"{head} head: {param} should be {kind} {'>= 0' if zero_ok else '> 0'}. Received {param}={value!r}")
