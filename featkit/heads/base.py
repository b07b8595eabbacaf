"""The head contract shared by every head: real scikit-learn classifiers (``clone``, ``get_params`` /
``set_params``, scikit-learn's estimator checks), plus what featkit needs on top.

- ``__init__`` stores parameters only; ``params`` returns them as a dict (what config.json records).
- ``fit(X, y, X_val=None, y_val=None, n_classes=None)`` returns self; what is learned ends in ``_``:
  ``classes_`` (the column order of ``predict_proba``: with ``n_classes`` always 0..n_classes-1, also for
  classes that have no training rows), ``n_features_in_``, ``history_`` (list of dicts, one per epoch / boosting
  round; may be empty), ``temperature_`` (1.0 until a caller calibrates the head on held-out predictions).
- ``predict_proba(X)`` -> (N, n_classes) float32, rows sum to 1, temperature applied;
  ``predict(X)`` -> classes_[argmax] (lowest index on ties).
- ``save(dir)`` writes the model file plus ``head.json``; ``featkit.heads.load_head(dir)`` reads them back.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.exceptions import NotFittedError as SklearnNotFittedError
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import validate_data

from featkit.core.errors import FeatkitError
from featkit.core.fileio import write_json
from featkit.core.schema import HeadFile
from featkit.core.version import __version__
from featkit.runs.calibration import apply_temperature

HEAD_JSON = "head.json"


class NotFittedError(FeatkitError, SklearnNotFittedError):
    """predict / save called on a head that has not been fitted."""


class HeadInputError(FeatkitError, ValueError, TypeError):
    """Features or labels a head cannot take (shape, NaN, labels, column count); one line saying which. Both a
    ValueError and a TypeError, since scikit-learn's validation raises either."""


class Head(ClassifierMixin, BaseEstimator):
    name: ClassVar[str] = ""
    model_file: ClassVar[str] = ""
    # the small default search over the head's main settings, scored on the validation split
    search_grid: ClassVar[dict[str, list]] = {}
    # settings named in the one line a fit prints about its choice (besides the searched and given ones)
    summary_keys: ClassVar[tuple[str, ...]] = ()

    # ---- parameters ---------------------------------------------------------------------------------
    @classmethod
    def param_defaults(cls) -> dict[str, Any]:
        sig = inspect.signature(cls.__init__)
        return {k: p.default for k, p in sig.parameters.items() if k != "self"}

    @property
    def params(self) -> dict[str, Any]:
        return self.get_params(deep=False)

    def validate_params(self) -> None:
        """Raise FeatkitError naming the parameter, the allowed values and what was received."""

    # ---- fitting ------------------------------------------------------------------------------------
    def fit(self, X, y, X_val=None, y_val=None, n_classes: int | None = None) -> Head:
        """Fit on (X, y); (X_val, y_val) only steer early stopping where the head has it.

        With `n_classes`, labels are class indices and `classes_` is 0..n_classes-1 (a class without training
        rows still gets its column); without it, `classes_` is the sorted labels seen in y and y_val (any
        labels, as in scikit-learn)."""
        self.validate_params()
        X, y = _validated(self, X, y, "training", reset=True)
        if (X_val is None) != (y_val is None):
            raise HeadInputError("give both X_val and y_val, or neither.")
        if X_val is not None and np.shape(X_val)[:1] == (0,):
            X_val = y_val = None  # an empty validation split: fit without early stopping
        if X_val is not None:
            X_val, y_val = _validated(self, X_val, y_val, "validation", reset=False)
        self.classes_ = _classes(y, y_val, n_classes)
        self.n_classes_ = len(self.classes_)
        y = _encode(self.classes_, y, "training")
        if y_val is not None:
            y_val = _encode(self.classes_, y_val, "validation")
        self.history_: list[dict] = []
        self.temperature_ = 1.0
        self._fit(X, y, X_val, y_val)
        self.fitted_ = True
        return self

    def _fit(self, X, y, X_val, y_val) -> None:
        raise NotImplementedError

    def refit_params(self) -> dict[str, Any]:
        """Parameter changes for refitting these settings without a validation split (e.g. the number of
        epochs or boosting rounds early stopping chose)."""
        return {}

    def refit(self, X, y, n_classes: int | None = None) -> Head:
        """A new head with this one's settings (and refit_params) fitted on (X, y), e.g. train + valid rows;
        it keeps this head's temperature."""
        head = clone(self).set_params(**self.refit_params())
        head.fit(X, y, n_classes=n_classes)
        head.temperature_ = float(getattr(self, "temperature_", 1.0))
        return head

    @classmethod
    def adapt_to_rows(
        cls, fixed: dict[str, Any], grid: dict[str, list], n_rows: int, default_keys: frozenset[str] = frozenset()
    ) -> tuple[dict[str, Any], dict[str, list], list[str]]:
        """(fixed, grid, warnings): settings a search over `n_rows` training rows cannot use, changed or dropped.
        `default_keys`: the grid keys that come from the head's default grid (not listed by the user). Heads whose
        settings depend on the row count (knn's k) override this; each warning is one line."""
        return fixed, grid, []

    @classmethod
    def fit_candidates(
        cls, candidates: list[dict[str, Any]], X, y, X_val, y_val, n_classes: int | None = None
    ) -> Iterator[tuple[int, Head, np.ndarray | None]]:
        """(index, head fitted on (X, y), its uncalibrated probabilities on X_val or None) for each parameter set
        of a search, in any order. Heads override this where candidates can share work (warm starts, one
        neighbour search)."""
        for i, params in enumerate(candidates):
            yield i, cls(**params).fit(X, y, X_val, y_val, n_classes=n_classes), None

    # ---- prediction ---------------------------------------------------------------------------------
    def __sklearn_is_fitted__(self) -> bool:
        return bool(getattr(self, "fitted_", False))

    def _check_fitted(self) -> None:
        if not self.__sklearn_is_fitted__():
            raise NotFittedError(f"This {type(self).__name__} ({self.name!r} head) is not fitted yet. Call fit first.")

    def predict_proba(self, X, calibrated: bool = True) -> np.ndarray:
        """(N, n_classes) float32, column j = classes_[j]; with `calibrated`, the fitted temperature applied."""
        self._check_fitted()
        if isinstance(X, np.ndarray) and X.ndim == 2 and len(X) == 0 and X.shape[1] == self.n_features_in_:
            return np.zeros((0, self.n_classes_), np.float32)
        X = _validated(self, X, None, "prediction", reset=False)
        probs = np.ascontiguousarray(self._predict_proba(X), dtype=np.float32)
        temperature = float(getattr(self, "temperature_", 1.0))
        return apply_temperature(probs, temperature) if calibrated else probs

    def _predict_proba(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict(self, X) -> np.ndarray:
        probs = self.predict_proba(X)
        return self.classes_[np.argmax(probs, axis=1)]

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
        info = HeadFile(
            head=self.name,
            params=self.params,
            model_file=self.model_file,
            n_classes=int(self.n_classes_),
            n_features=int(self.n_features_in_),
            history=list(self.history_),
            classes=self.classes_.tolist(),
            temperature=float(self.temperature_),
            fitted=self.fitted_state(),
            featkit_version=__version__,
        )
        write_json(directory / HEAD_JSON, info.to_dict())
        return path

    def _save_model(self, path: Path) -> Path:
        raise NotImplementedError

    def _load_model(self, path: Path) -> None:
        raise NotImplementedError


def _validated(head: Head, X, y, what: str, reset: bool):
    """scikit-learn's input validation (2-D, finite, dense, numeric, column count) with one-line errors;
    features become float32. Returns X, or (X, y) with y 1-D."""
    if y is None and what != "prediction":
        raise HeadInputError(f"{type(head).__name__} requires y to be passed, but the target y is None.")
    try:
        if y is None:
            return validate_data(head, X, reset=reset, dtype=np.float32)
        X, y = validate_data(head, X, y, reset=reset, dtype=np.float32)
        check_classification_targets(y)
    except (ValueError, TypeError) as e:
        raise HeadInputError(f"{what} data: {e}") from None
    return X, y


def _classes(y: np.ndarray, y_val: np.ndarray | None, n_classes: int | None) -> np.ndarray:
    seen = y if y_val is None else np.concatenate([y, y_val])
    if n_classes is None:
        return np.unique(seen)
    if not np.issubdtype(seen.dtype, np.number) or np.any(np.mod(seen, 1) != 0) or seen.min() < 0:
        raise HeadInputError("labels must be class indices >= 0 when n_classes is given.")
    if seen.max() >= n_classes:
        raise HeadInputError(
            f"labels go up to {int(seen.max())}, but n_classes={n_classes}: give the full class count."
        )
    return np.arange(int(n_classes))


def _encode(classes: np.ndarray, y: np.ndarray, what: str) -> np.ndarray:
    """Labels -> column indices of classes_ (int64)."""
    idx = np.searchsorted(classes, y)
    idx = np.clip(idx, 0, len(classes) - 1)
    if np.any(classes[idx] != y):
        raise HeadInputError(f"{what} labels hold values that are not among the classes.")
    return idx.astype(np.int64)


def varying_keys(candidates: list[dict[str, Any]]) -> set[str]:
    """The parameters whose value differs between the candidates of a search."""
    return {k for c in candidates for k, v in c.items() if v != candidates[0][k]}


def two_classes(head: str, y: np.ndarray) -> None:
    if len(np.unique(y)) < 2:
        raise HeadInputError(f"{head} head: the training rows hold only one class; it needs at least two.")


def one_of(head: str, param: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise FeatkitError(
            f"{head} head: {param} should be one of {', '.join(map(repr, allowed))}. Received {param}={value!r}"
        )


def positive(head: str, param: str, value: Any, integer: bool = False, zero_ok: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (value > 0 or (zero_ok and value == 0))
    if integer:
        ok = ok and float(value) == int(value)
    if not ok:
        kind = "an integer" if integer else "a number"
        raise FeatkitError(
            f"{head} head: {param} should be {kind} {'>= 0' if zero_ok else '> 0'}. Received {param}={value!r}"
        )
