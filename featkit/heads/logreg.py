"""logreg: StandardScaler + multinomial LogisticRegression (scikit-learn). No TensorFlow.

The default search runs C over a log grid from the strongest regularisation up, each fit warm-started from the
previous solution on the same rows; the refit on train + valid starts from the chosen solution too.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np

from featkit.core.fileio import atomic_path
from featkit.heads.base import Head, one_of, positive, varying_keys


class LogRegHead(Head):
    name = "logreg"
    model_file = "model.joblib"
    search_grid = {"C": [0.001, 0.003, 0.01]}

    def __init__(self, C: float = 0.003, max_iter: int = 1000, solver: str = "lbfgs", tol: float = 1e-4, seed: int = 0):
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

        start = getattr(self, "_warm_start", None)  # set by fit_candidates / refit, never by a user
        self._warm_start = None
        # multinomial loss is what LogisticRegression optimises for >= 3 classes (scikit-learn >= 1.5; the
        # `multi_class` argument is deprecated / removed). L2 penalty is the default (l1_ratio=0).
        clf = LogisticRegression(
            C=float(self.C),
            max_iter=int(self.max_iter),
            solver=self.solver,
            tol=float(self.tol),
            random_state=self.seed,
            warm_start=start is not None,
        )
        if start is not None and np.array_equal(start.classes_, np.unique(y)):
            clf.coef_, clf.intercept_ = start.coef_.copy(), start.intercept_.copy()
        # float64, as scikit-learn < 1.8 always solved lbfgs: from 1.8 it keeps float32 features in float32, where
        # lbfgs stops about 1e-4 (in validation log loss) short of the optimum, so warm and cold starts disagree
        self.model_ = Pipeline([("scale", StandardScaler()), ("clf", clf)]).fit(np.asarray(X, np.float64), y)
        self.n_iter_ = int(np.max(clf.n_iter_))
        self.converged_ = self.n_iter_ < int(self.max_iter)
        self.seen_classes_ = [int(c) for c in clf.classes_]

    @classmethod
    def fit_candidates(cls, candidates, X, y, X_val, y_val, n_classes=None):
        """Candidates that differ only in C are fitted from the smallest C up, each warm-started."""
        if not varying_keys(candidates) <= {"C"}:
            yield from super().fit_candidates(candidates, X, y, X_val, y_val, n_classes)
            return
        previous = None
        for i in sorted(range(len(candidates)), key=lambda i: candidates[i]["C"]):
            head = cls(**candidates[i])
            head._warm_start = previous
            head.fit(X, y, X_val, y_val, n_classes=n_classes)
            previous = head.model_.named_steps["clf"]
            yield i, head, None

    def refit(self, X, y, n_classes=None):
        head = type(self)(**self.params)
        head._warm_start = copy.deepcopy(self.model_.named_steps["clf"])
        head.fit(X, y, n_classes=n_classes)
        head.temperature_ = float(getattr(self, "temperature_", 1.0))
        return head

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
