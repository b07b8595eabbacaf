"""logreg: StandardScaler + multinomial LogisticRegression (scikit-learn). No TensorFlow."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..fileio import atomic_path
from .base import Head, one_of, positive


class LogRegHead(Head):
    name = "logreg"
    model_file = "model.joblib"

    def __init__(self, C: float = 1.0, max_iter: int = 1000, solver: str = "lbfgs", tol: float = 1e-4, seed: int = 0):
        self.C = C
        self.max_iter = max_iter
        self.solver = solver
        self.tol = tol
        self.seed = seed

    def validate_params(self) -> None:
        positive(self.name, "C", self.C)
        positive(self.name, "max_iter", self.max_iter, integer=True)
        positive(self.name, "tol", self.tol)
        one_of(self.name, "solver", self.solver, ("lbfgs", "saga"))

    def _fit(self, X, y, X_val, y_val) -> None:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        from ..errors import FeatkitError

        if len(np.unique(y)) < 2:
            raise FeatkitError("logreg head: the training rows hold only one class; it needs at least two.")
        # multinomial loss is what LogisticRegression optimises for >= 3 classes (scikit-learn >= 1.5; the
        # `multi_class` argument is deprecated / removed). L2 penalty is the default (l1_ratio=0).
        self.model_ = Pipeline([
            ("scale", StandardScaler()),
            ("clf", LogisticRegression(C=float(self.C), max_iter=int(self.max_iter), solver=self.solver,
                                       tol=float(self.tol), random_state=self.seed)),
        ]).fit(X, y)
        clf = self.model_.named_steps["clf"]
        self.n_iter_ = int(np.max(clf.n_iter_))
        self.converged_ = self.n_iter_ < int(self.max_iter)
        self.seen_classes_ = [int(c) for c in clf.classes_]

    def _predict_proba(self, X: np.ndarray) -> np.ndarray:
        p = self.model_.predict_proba(X)
        out = np.zeros((len(X), self.n_classes_), np.float32)
        out[:, self.model_.named_steps["clf"].classes_] = p  # classes absent from training keep probability 0
        return out

    def fitted_state(self) -> dict:
        return {"n_iter_": self.n_iter_, "converged_": self.converged_, "seen_classes_": self.seen_classes_}

    def _save_model(self, path: Path) -> Path:
        import joblib

        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            joblib.dump(self.model_, fh)
        return path

    def _load_model(self, path: Path) -> None:
        import joblib

        self.model_ = joblib.load(path)
