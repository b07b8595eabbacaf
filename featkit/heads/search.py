"""Selection on validation, then refit: the search every head run (and `featkit sweep`) goes through.

    final, sel = fit_selected("logreg", X, y, X_val, y_val, n_classes=101, params={"C": "0.01,0.03,0.1"})
    sel.to_dict()       # grid, every candidate's validation scores, the choice, the temperature

1. Candidates: the head's default grid (`Head.search_grid`), minus the settings fixed in `params`, plus the
   values listed in `params` ("0.01,0.03,0.1" or a list). Each is fitted on the training rows (early stopping on
   the validation rows where the head has it) and scored on the validation rows: top-1, ties broken by lower
   log loss after temperature scaling (settings that leave the ranking alone, such as knn's smoothing, are
   chosen by how well they calibrate).
2. The temperature fitted on the chosen candidate's validation probabilities (held-out predictions) is kept.
3. The chosen settings are refitted on train + valid rows (with the epochs / rounds early stopping chose) and
   keep that temperature. Test rows are never seen here.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from featkit.core.errors import FeatkitError
from featkit.core.tables import pct
from featkit.heads import HEADS, Head, coerce_param, get_head, head_params, search_grid
from featkit.runs.calibration import apply_temperature, fit_temperature
from featkit.runs.metrics import log_loss, topk_accuracy

METRIC = "valid_top1"


@dataclass
class Candidate:
    params: dict[str, Any]  # the searched settings of this candidate
    valid_top1: float
    valid_log_loss: float  # before temperature scaling
    valid_log_loss_calibrated: float  # after its own temperature, fitted on these validation rows
    temperature: float
    fit_seconds: float
    fitted: dict[str, Any] = field(default_factory=dict)  # e.g. best_epoch_, best_iteration_


@dataclass
class Selection:
    head: str
    grid: dict[str, list]  # searched values per setting ({} when one candidate)
    fixed: dict[str, Any]  # settings given as one value
    candidates: list[Candidate]
    chosen: int
    model: Head  # the chosen candidate, fitted on the training rows only, temperature set
    valid_probs: np.ndarray | None  # its uncalibrated validation probabilities
    temperature: float
    seconds: float
    warnings: list[str] = field(default_factory=list)  # one line each (see select)

    @property
    def params(self) -> dict[str, Any]:
        return self.model.params

    def summary(self) -> str:
        """One line naming what was chosen: the searched and main settings, the rounds / epochs early stopping
        chose, the validation score and temperature, e.g.
        "knn chose k=40, tau=0.05, smoothing=2 (valid top-1 0.5125, best of 45 candidates, T=0.412)"."""
        cls = HEADS[self.head]
        keys = dict.fromkeys([*self.grid, *cls.search_grid, *cls.summary_keys, *self.fixed])
        params = self.model.params
        shown = [f"{k}={_show(params[k])}" for k in keys if k in params and k not in ("seed", "num_threads")]
        facts = self.model.fitted_state()
        if "best_iteration_" in facts:
            shown.append(f"rounds={facts['best_iteration_']} (early stopping)")
        if "best_epoch_" in facts:
            shown.append(f"epochs={facts['best_epoch_']} (early stopping)")
        what = ", ".join(shown) or "its defaults"
        if self.valid_probs is None:
            return f"{self.head} used {what} (no valid split: nothing searched, not calibrated)"
        c = self.candidates[self.chosen]
        n = len(self.candidates)
        of = f"best of {n} candidates" if n > 1 else "one candidate"
        return f"{self.head} chose {what} (valid top-1 {c.valid_top1:.4f}, {of}, T={self.temperature:.3g})"

    def to_dict(self) -> dict[str, Any]:
        """What config.json records under "search"."""
        scored = self.valid_probs is not None
        return {
            "metric": METRIC if scored else None,
            "grid": self.grid,
            "fixed": self.fixed,
            "candidates": [
                {
                    "params": c.params,
                    "valid_top1": c.valid_top1,
                    "valid_log_loss": c.valid_log_loss,
                    "valid_log_loss_calibrated": c.valid_log_loss_calibrated,
                    "temperature": c.temperature,
                    "fit_seconds": round(c.fit_seconds, 3),
                    **{k.rstrip("_"): v for k, v in c.fitted.items()},
                }
                for c in self.candidates
            ],
            "chosen": self.candidates[self.chosen].params,
            "chosen_index": self.chosen,
            "temperature": self.temperature,
            "seconds": round(self.seconds, 3),
            "summary": self.summary(),
            "warnings": list(self.warnings),
        }


def split_params(head: str, params: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, list]]:
    """(fixed, searched): a value with commas ("0.01,0.03") or a list/tuple is a list of values to search."""
    known = head_params(head)
    fixed, grid = {}, {}
    for key, value in (params or {}).items():
        if key not in known:
            get_head(head, **{key: value})  # raises the one-line error naming the parameter
        if isinstance(value, str) and "," in value:
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, (list, tuple)):
            values = [coerce_param(head, key, v) for v in value]
            grid[key] = list(dict.fromkeys(values))
        else:
            fixed[key] = coerce_param(head, key, value)
    return fixed, grid


def candidate_grid(head: str, params: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, list]]:
    """(fixed, grid) of a search: the head's default grid without the fixed settings, then the listed values."""
    fixed, listed = split_params(head, params)
    grid = {k: list(v) for k, v in search_grid(head).items() if k not in fixed}
    grid.update(listed)
    return fixed, grid


MIN_VALID_PER_CLASS = 5  # fewer validation photos of a class than this: a choice made on them is noisy
MAX_LOGGED_CANDIDATES = 12  # a larger search prints one summary line instead of a line per candidate


def select(
    head: str,
    X,
    y,
    X_val=None,
    y_val=None,
    n_classes: int | None = None,
    params: Mapping[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> Selection:
    """Fit every candidate on (X, y), score it on (X_val, y_val) (top-1, then log loss after its own
    temperature), keep the best with its temperature.

    Without validation rows nothing can be scored: the default grid is skipped (the head's defaults are used,
    temperature 1) and listed values are an error. Settings the training rows cannot take (knn's k above them)
    are clipped by the head (`Head.adapt_to_rows`). `log` gets the candidates' lines and the one line naming the
    choice (`Selection.summary`); `warn` gets one line per warning (`Selection.warnings`: a choice at the edge of
    its grid, a validation split under MIN_VALID_PER_CLASS photos per class, a setting clipped)."""
    fixed, grid = candidate_grid(head, params)
    listed = split_params(head, params)[1]
    has_valid = X_val is not None and len(X_val) > 0
    if not has_valid:
        if listed:
            key = next(iter(listed))
            raise FeatkitError(
                f"-p {key}={','.join(map(str, listed[key]))}: searching needs a valid split to score "
                "the candidates, and this data has none; give one value."
            )
        grid = {}
    asked = grid
    fixed, grid, warnings = HEADS[head].adapt_to_rows(
        fixed, grid, len(X), frozenset(k for k in grid if k not in listed)
    )
    keys = list(grid)
    combos = [dict(zip(keys, values, strict=True)) for values in itertools.product(*grid.values())] or [{}]
    candidates = [get_head(head, **fixed, **combo).params for combo in combos]  # coerced and validated
    if has_valid:
        warnings += _valid_warnings(np.asarray(y), np.asarray(y_val))
    t0 = time.perf_counter()
    scored: list[Candidate | None] = [None] * len(candidates)
    # (top1, -calibrated log_loss, -index), index, head, probs, temperature
    best: tuple[tuple[float, float, int] | None, int, Head, np.ndarray | None, float] | None = None
    last = time.perf_counter()
    if has_valid:
        X_val = np.asarray(X_val)
        y_val = np.asarray(y_val)
    per_line = log is not None and 1 < len(candidates) <= MAX_LOGGED_CANDIDATES
    if log and len(candidates) > MAX_LOGGED_CANDIDATES:
        log(f"  {head}: searching {len(candidates)} candidates ({' x '.join(keys)}) on {len(X_val):,} valid rows...")
    for i, model, probs in HEADS[head].fit_candidates(
        candidates, X, y, X_val if has_valid else None, y_val if has_valid else None, n_classes
    ):
        now = time.perf_counter()
        seconds, last = now - last, now
        top1 = loss = calibrated = float("nan")
        temperature = 1.0
        if has_valid:
            if probs is None:
                probs = model.predict_proba(X_val, calibrated=False)
            idx = np.searchsorted(model.classes_, y_val)
            top1, loss = topk_accuracy(probs, idx, (1,))[1], log_loss(probs, idx)
            temperature = fit_temperature(probs, idx)
            calibrated = log_loss(apply_temperature(probs, temperature), idx)
            rank = (top1, -calibrated, -i)
            if best is None or best[0] is None or rank > best[0]:
                best = (rank, i, model, probs, temperature)
        elif best is None:
            best = (None, i, model, None, 1.0)
        facts = {k: v for k, v in model.fitted_state().items() if isinstance(v, (int, float))}  # not class lists
        scored[i] = Candidate({k: candidates[i][k] for k in keys}, top1, loss, calibrated, temperature, seconds, facts)
        if per_line and log:
            shown = ", ".join(f"{k}={candidates[i][k]}" for k in keys)
            log(
                f"  {head} {shown}: valid top-1 {pct(top1)}, log loss {loss:.3f} "
                f"({calibrated:.3f} at T={temperature:.3g}) ({seconds:.1f} s)"
            )
        last = time.perf_counter()
    assert best is not None  # fit_candidates yields every candidate, and there is at least one
    _, chosen, model, probs, temperature = best
    model.temperature_ = temperature
    done = [c for c in scored if c is not None]  # every slot, filled in the order fit_candidates yields them
    sel = Selection(head, grid, fixed, done, chosen, model, probs, temperature, time.perf_counter() - t0)
    if has_valid:
        warnings += _edge_warnings(head, grid, candidates[chosen], asked)
    sel.warnings = warnings
    if log:
        log(sel.summary())
    for w in warnings:
        (warn or log or (lambda _: None))(f"warning: {w}")
    return sel


def _valid_warnings(y: np.ndarray, y_val: np.ndarray) -> list[str]:
    """One line when some class seen in training has fewer than MIN_VALID_PER_CLASS validation rows."""
    labels, counts = np.unique(y_val, return_counts=True)
    per_class = dict(zip(labels.tolist(), counts.tolist(), strict=True))
    classes = np.unique(y).tolist()
    few = [per_class.get(c, 0) for c in classes if per_class.get(c, 0) < MIN_VALID_PER_CLASS]
    if not few:
        return []
    return [
        f"the validation split holds fewer than {MIN_VALID_PER_CLASS} photos for {len(few)} of {len(classes)} "
        f"classes (as few as {min(few)}, {len(y_val):,} in all): settings chosen on it are noisy; give the "
        "dataset more validation photos (e.g. a larger valid share in --split)."
    ]


def _edge_warnings(
    head: str, grid: Mapping[str, list], chosen: Mapping[str, Any], capped: Mapping[str, list] | None = None
) -> list[str]:
    """One line per searched numeric setting (3 or more values) whose choice is its smallest or largest value; not
    the largest of a setting whose larger values the training rows ruled out (`capped`: the grid before
    Head.adapt_to_rows, e.g. knn's k)."""
    out = []
    for key, values in grid.items():
        nums = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if len(nums) < 3 or len(nums) != len(values) or key not in chosen:
            continue
        v, lo, hi = chosen[key], min(nums), max(nums)
        if v not in (lo, hi):
            continue
        if v == hi and capped and key in capped and max(capped[key]) > hi:
            continue  # larger values were tried for, and the rows cannot take them
        side = "largest" if v == hi else "smallest"
        beyond = [v * 3, v * 10] if v == hi else [v / 10, v / 3]
        if isinstance(v, int):
            beyond = sorted({max(1, int(round(b))) for b in beyond} - {v})
            suggestion = ",".join(str(b) for b in sorted([v, *beyond]))
        else:
            suggestion = ",".join(f"{b:.2g}" for b in sorted([v, *beyond]))
        out.append(
            f"{head}: {key}={v:g} is the {side} value searched ({', '.join(f'{x:g}' for x in sorted(nums))}): the best "
            f"may lie beyond it; search further with -p {key}={suggestion}."
        )
    return out


def fit_selected(
    head: str,
    X,
    y,
    X_val=None,
    y_val=None,
    n_classes: int | None = None,
    params: Mapping[str, Any] | None = None,
    refit: bool = True,
    log: Callable[[str], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> tuple[Head, Selection]:
    """select(), then (with `refit` and validation rows) the chosen settings fitted again on train + valid rows.
    Returns the final head (temperature set) and the selection."""
    sel = select(head, X, y, X_val, y_val, n_classes, params, log, warn)
    if not refit or sel.valid_probs is None:
        return sel.model, sel
    final = sel.model.refit(
        np.concatenate([np.asarray(X), np.asarray(X_val)]),
        np.concatenate([np.asarray(y), np.asarray(y_val)]),
        n_classes=n_classes,
    )
    return final, sel


def _show(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


__all__ = ["Candidate", "Selection", "METRIC", "split_params", "candidate_grid", "select", "fit_selected"]
