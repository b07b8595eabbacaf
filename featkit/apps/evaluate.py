"""Scoring runs: `featkit evaluate` (the scoring files of a run) and `featkit sensitivity` (the robustness table).

Metrics themselves are in `featkit.runs.metrics` (the one top-k rule lives there); this module applies them to runs.
Sensitivity works on every run kind: a head run is scored on the cached sensitivity views of its test photos
(`featkit extract --sensitivity`), without re-running the backbone; a CNN run sees its own test photos under each
perturbation of the study, through the network.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from featkit.core.errors import FeatkitError
from featkit.core.fileio import write_text
from featkit.core.schema import CacheMeta, Scores, check_comparable
from featkit.core.tables import SCORE_COLUMNS, markdown_table, pct, write_csv
from featkit.features.cache import read_meta
from featkit.heads import load_run_head
from featkit.runs.metrics import score
from featkit.runs.store import DEFAULT_REPORTS, Run, load_run, write_scores


def evaluate_run(
    run: Run | str | Path,
    ks: Iterable[int] = (1, 5),
    reports: str | Path = DEFAULT_REPORTS,
    extra: Mapping[str, Any] | None = None,
    plot: bool = True,
) -> dict[str, Any]:
    """Score a run's test predictions and (re)write its scoring files; returns metrics.json as a dict."""
    for k in ks:
        if int(k) < 1:
            raise FeatkitError(f"--k {k}: top-k needs k >= 1 (e.g. --k 1 --k 5).")
    return write_scores(load_run(run, reports), ks=ks, extra=extra, plot=plot).to_dict()


def check_compatible(
    run: Run | str | Path,
    cache_meta: CacheMeta | str | Path,
    cache_name: str | None = None,
    reports: str | Path = DEFAULT_REPORTS,
) -> None:
    """Refuse (one line naming each differing field and both values) a cache whose features are not what the
    run's head was fitted on: backbone (weights by sha256, not path), size, classes, dataset, resize mode."""
    run = load_run(run, reports)
    if not isinstance(cache_meta, CacheMeta):
        cache_name = cache_name or str(cache_meta)
        cache_meta = read_meta(cache_meta)
    check_comparable(
        run.config.comparable_key(run.classes),
        cache_meta.comparable_key(),
        f"run {run.id}",
        cache_name or "the cache",
        "score it with a run fitted on a cache of the same backbone, size, classes and dataset",
    )


SENSITIVITY_COLUMNS = ("view", "rotation", "width_shift", "height_shift", "flips", "n", "top1", "top5")


def sensitivity(
    run: Run | str | Path,
    view_caches: Mapping[str, str | Path] | None = None,
    reports: str | Path = DEFAULT_REPORTS,
    quiet: bool = True,
):
    """The robustness table of a run: the plain test set (its own predictions) and the test photos under each
    perturbation of the study. Head runs: `view_caches` {view: cache}, by default the sensitivity views cached
    beside the run's cache; each must pass `check_compatible`. CNN runs: the perturbed photos go through the
    network. Writes sensitivity.csv and .md into the run folder; returns the DataFrame."""
    import pandas as pd

    run = load_run(run, reports)
    cfg, classes = run.config, run.classes
    pred = run.load_predictions("test")
    rows = [_sens_row("plain", {}, score(pred["probs"], pred["labels"], classes))]
    if cfg.kind == "head":
        rows += _head_views(run, view_caches)
    elif cfg.kind == "cnn":
        rows += _cnn_views(run, pred["image_ids"], pred["labels"], quiet)
    else:
        raise FeatkitError(
            f"run {run.id} is an {cfg.kind} run: sensitivity needs a head or CNN run that can see "
            "perturbed photos; run it on each member run instead."
        )
    df = pd.DataFrame(rows, columns=[*SENSITIVITY_COLUMNS, "macro_f1"])
    write_csv(run.path / "sensitivity.csv", df)
    write_text(
        run.path / "sensitivity.md", f"# Sensitivity of run {run.id}\n\n" + markdown_table(df, SCORE_COLUMNS) + "\n"
    )
    return df


def _head_views(run: Run, view_caches: Mapping[str, str | Path] | None) -> list[dict]:
    from featkit.features.cache import read_cache
    from featkit.features.extract import sensitivity_caches

    if view_caches is None:
        if not run.config.cache:
            raise FeatkitError(
                f"run {run.id} records no feature cache: sensitivity scores cached views of its test photos."
            )
        view_caches = sensitivity_caches(Path(run.config.cache))
        if not view_caches:
            raise FeatkitError(
                f"no sensitivity views beside {run.config.cache}: run the same `featkit extract` with "
                "--sensitivity first."
            )
    for path in view_caches.values():  # check every cache before the (slow) scoring
        check_compatible(run, path, cache_name=str(path))
    head, classes, rows = load_run_head(run), run.classes, []
    for view, path in view_caches.items():
        fs = read_cache(path)
        if (fs.split == "test").any():
            fs = fs.subset("test")
        m = score(head.predict_proba(fs.features), fs.labels, classes)
        rows.append(_sens_row(view or fs.meta.view, fs.meta.view_params or {}, m))
    return rows


def _cnn_views(run: Run, image_ids: np.ndarray, labels: np.ndarray, quiet: bool) -> list[dict]:
    """The run's test photos, decoded as in training, under each perturbation of the study, through the network
    (seeded per photo exactly as `featkit extract --sensitivity` seeds them)."""
    from featkit.cnn.train import predict_images
    from featkit.data import open_run_photos
    from featkit.data.augment import SENSITIVITY_VIEWS, photo_rng
    from featkit.data.images import load_images

    cfg = run.config
    manifest = Path(cfg.manifest or "")
    if not cfg.data or not manifest.is_file():
        raise FeatkitError(
            f"{run.path}/config.json names no dataset or no manifest that still exists "
            f"({cfg.data}, {cfg.manifest}): retrain the run with `featkit train-cnn`."
        )
    if not cfg.size:
        raise FeatkitError(f"{run.path}/config.json records no photo size: retrain the run with `featkit train-cnn`.")
    source, m = open_run_photos(cfg.data, manifest)
    read = source.read
    row_of = {str(i): r for r, i in enumerate(m["image_id"].astype(str))}
    missing = [i for i in image_ids if str(i) not in row_of]
    if missing:
        raise FeatkitError(
            f"{len(missing)} test photos of run {run.id} (e.g. {missing[0]}) are not in {manifest} "
            "any more: the dataset changed since the run; retrain it."
        )
    rows = [row_of[str(i)] for i in image_ids]
    paths = m["path"].to_numpy()[rows]
    out = []
    for view in SENSITIVITY_VIEWS:

        def perturb(i: int, img: np.ndarray, view=view) -> np.ndarray:
            return view.apply(img, photo_rng(cfg.seed, view.name, 0, rows[i]))

        images, failures = load_images(read, list(paths), int(cfg.size), cfg.resize, transform=perturb)
        if failures:
            raise FeatkitError(
                f"{len(failures)} test photos cannot be read any more (first: {failures[0]}): "
                "run `featkit data check` on the dataset."
            )
        probs = predict_images(run, images)
        out.append(_sens_row(view.name, view.to_dict(), score(probs, labels, run.classes)))
        if not quiet:
            print(f"sensitivity {view.name}: top-1 {pct(out[-1]['top1'])}", flush=True)
    return out


_PARAM_ALIASES = {
    "rotation": ("rotation", "rotation_range", "degrees"),
    "width_shift": ("width_shift", "width_shift_range"),
    "height_shift": ("height_shift", "height_shift_range"),
    "flips": ("flips", "flip"),
}


def _sens_row(view: str, params: Mapping[str, Any], m: Scores) -> dict:
    row: dict[str, Any] = {"view": view}
    for col, aliases in _PARAM_ALIASES.items():
        row[col] = next((params[a] for a in aliases if a in params), 0 if view == "plain" and col != "flips" else None)
        if isinstance(row[col], (list, tuple, dict)):
            row[col] = str(row[col])
    if row["flips"] is None and ("horizontal_flip" in params or "vertical_flip" in params):
        both = [d for d in ("horizontal", "vertical") if params.get(f"{d}_flip")]
        row["flips"] = "+".join(both) or "none"
    if view == "plain" and row["flips"] is None:
        row["flips"] = "none"
    f1 = float("nan") if m.macro_f1 is None else round(m.macro_f1, 4)
    row.update(n=m.n, top1=round(m.top1, 4), top5=round(m.top5, 4), macro_f1=f1)
    return row


__all__ = ["evaluate_run", "check_compatible", "sensitivity", "SENSITIVITY_COLUMNS"]
