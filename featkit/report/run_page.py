"""One run's HTML page, reports/runs/<run-id>/report.html: its metrics, calibration, training curves, confusion
matrix, the most confused pairs and the most confident mistakes with photos, per-class accuracy, robustness.

Everything is computed from the run folder (test_predictions.npz, classes.json, config/metrics.json and the CSVs
the other commands wrote) with featkit.apps.evaluate's functions; a section without data is left out.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from featkit.core.errors import FeatkitError
from featkit.core.fileio import write_text
from featkit.core.schema import ClassEntry, RunConfig, RunMetrics
from featkit.report.html import Column, cards, esc, missing, num, page, pct, table, thumb_html
from featkit.report.thumbnails import RunPhotos
from featkit.runs.store import Run

PAGE_NAME = "report.html"
PAIRS, PHOTOS_PER_PAIR = 20, 3
MISTAKES = 24
PER_CLASS_SHOWN = 15  # best and worst; a run with at most 2x this many classes lists them all
CURVES_PNG, ROBUSTNESS_PNG, RELIABILITY_PNG = "report-curves.png", "report-robustness.png", "report-reliability.png"


def build_run_page(run: Run, row: dict[str, Any]) -> Path:
    """Write the run's report.html (and its plots and thumbnails, each made once) and return its path.
    `row` is the run's row of the runs table (featkit.report.build.collect_runs)."""
    cfg, metrics = run.config, run.metrics
    sections = [_header(run, row, cfg), _metrics(metrics, row)]
    try:
        pred = run.load_predictions("test")
        classes = run.classes
    except (FeatkitError, OSError, ValueError) as e:
        sections.append(f'<p class="warn">No photo-level results: {esc(e)}</p>')
        pred = None
    promised = 0
    if pred is not None:  # the photos first: which dishes get confused, and how
        body, promised = _prediction_sections(run, pred, classes)
        sections.append(body)
    sections += [_robustness(run), _calibration(run, metrics), _curves(run)]
    if pred is not None:
        sections.append(_confusion(run, pred, classes))
    sections.append(_files(run, cfg, metrics))
    # the count every thumbnail on the page adds up to (placeholders included): checked by the browser tests
    sections.insert(
        1,
        f'<p class="note" id="thumb-promise" data-thumbs="{promised}">This page shows {promised} '
        f"photo thumbnail{'s' if promised != 1 else ''} from the test split.</p>",
    )
    path = run.path / PAGE_NAME
    write_text(path, page(f"featkit run {run.id}", "\n".join(s for s in sections if s), sortable=True))
    return path


def _header(run: Run, row: dict, cfg: RunConfig) -> str:
    what = " · ".join(
        str(x)
        for x in (
            row.get("kind"),
            row.get("backbone"),
            f"{row.get('size')} px" if row.get("size") else "",
            row.get("head"),
            row.get("views"),
            row.get("date"),
        )
        if x not in (None, "", "-")
    )
    params = ", ".join(f"{k}={v}" for k, v in cfg.params.items()) if isinstance(cfg.params, dict) else ""
    data = cfg.data or cfg.dataset or ""
    return (
        f'<p><a href="../../index.html">&larr; all runs</a></p><h1>{esc(run.id)}</h1>'
        f'<p class="muted">{esc(what)}</p>'
        + (f'<p class="note">parameters: {esc(params)}</p>' if params else "")
        + (f'<p class="note">dataset: {esc(data)}</p>' if data else "")
    )


def _metrics(m: RunMetrics, row: dict) -> str:
    items = [
        ("test top-1", pct(m.top1)),
        ("test top-5", pct(m.top5)),
        ("macro F1", num(m.macro_f1, 4)),
        ("log loss", num(m.log_loss, 4)),
        ("ECE", num(m.ece, 4)),
        ("Brier score", num(m.brier, 4)),
        ("valid top-1", pct(m.valid_top1)),
        ("test photos", num(m.n, 0)),
        ("fit seconds", num(row.get("fit_seconds"), 1)),
        ("extract seconds", num(row.get("extract_seconds"), 1)),
        ("best epoch", num(m.best_epoch, 0) if m.best_epoch else ""),
    ]
    return "<h2>Metrics</h2>" + cards(items)


def _calibration(run: Run, m: RunMetrics) -> str:
    cal = m.calibration
    rel = run.path / "reliability.csv"
    if not isinstance(cal, dict) and not rel.exists():
        return ""
    out = ["<h2>Calibration</h2>"]
    title = run.id
    if isinstance(cal, dict):
        t = cal.get("temperature")
        out.append(
            f"<p>Temperature scaling fitted on the valid split: T = {esc(num(t, 3))}. "
            "Lower is better for all three.</p>"
            if not missing(t)
            else ""
        )
        cols = [
            Column(""),
            Column("log loss", num, numeric=True),
            Column("Brier", num, numeric=True),
            Column("ECE", num, numeric=True),
        ]
        rows = [
            [name, *(part.get(k) for k in ("log_loss", "brier", "ece"))]
            for name, part in (("before", cal.get("before")), ("after", cal.get("after")))
            if isinstance(part, dict)
        ]
        out.append(table(cols, rows))
        if t is not None and not missing(t):
            title = f"{run.id}  T = {float(t):.3g}"
    # the diagram calibration drew beside its table; drawn here (same function) when only the table is there
    png = "reliability.png" if (run.path / "reliability.png").exists() else RELIABILITY_PNG
    if rel.exists() and (
        png == "reliability.png"
        or _fresh_plot(run.path / png, (rel, run.path / "metrics.json"), lambda dst: _reliability_png(rel, dst, title))
    ):
        out.append(
            f'<img class="plot" src="{png}" alt="reliability diagram" width="420">'
            '<p class="note">Each bar: the accuracy of the test photos whose top-1 probability falls in '
            "the bin; on the dashed diagonal the probabilities mean what they say.</p>"
        )
    return "\n".join(out)


def _reliability_png(src: Path, dst: Path, title: str):
    import pandas as pd

    from featkit.core.plots import plot_reliability
    from featkit.runs.calibration import RELIABILITY_COLUMNS

    table = pd.read_csv(src)
    if not set(RELIABILITY_COLUMNS) <= set(table.columns) or not (table["count"] > 0).any():
        return None
    return plot_reliability({c: table[c].to_numpy(float) for c in RELIABILITY_COLUMNS}, dst, title=title)


def _curves(run: Run) -> str:
    src = run.path / "history.csv"
    if not src.exists():
        return ""

    def draw(dst: Path):
        import pandas as pd

        from featkit.core.plots import plot_history

        try:
            return plot_history(pd.read_csv(src), dst)
        except (ValueError, pd.errors.EmptyDataError):
            return None

    if not _fresh_plot(run.path / CURVES_PNG, (src,), draw):
        return ""
    return f'<h2>Training curves</h2><img class="plot" src="{CURVES_PNG}" alt="training curves">'


def _fresh_plot(dst: Path, sources: tuple[Path, ...], draw) -> bool:
    """Draw dst unless it is newer than every source file; False when there is nothing to draw (dst removed)."""
    if dst.exists() and all(dst.stat().st_mtime >= s.stat().st_mtime for s in sources if s.exists()):
        return True
    if draw(dst) is None:
        dst.unlink(missing_ok=True)
        return False
    return True


def _prediction_sections(run: Run, pred: dict, classes: list[ClassEntry]) -> tuple[str, int]:
    """Confusion matrix, confused pairs, confident mistakes and per-class accuracy; (html, thumbnails shown)."""
    from featkit.runs.metrics import class_names, confusion_matrix, most_confused_pairs, per_class_accuracy

    probs, labels = np.asarray(pred["probs"], np.float64), pred["labels"].astype(np.int64)
    ids = pred["image_ids"].astype(str)
    names = class_names(classes, len(classes))
    if probs.ndim != 2 or probs.shape[1] != len(names) or len(probs) == 0:
        return (
            f'<p class="warn">test_predictions.npz does not match classes.json ({probs.shape}, '
            f"{len(names)} classes): photo-level results left out.</p>",
            0,
        )
    preds = probs.argmax(axis=1)
    conf = probs.max(axis=1)
    pairs = most_confused_pairs(confusion_matrix(labels, preds, len(names)), classes, top=PAIRS)

    # which photos each section shows, decided first so that the dataset is read once for all thumbnails
    pair_rows = []
    for t, p in zip(pairs["true_index"], pairs["predicted_index"], strict=True):
        hits = np.flatnonzero((labels == t) & (preds == p))
        pair_rows.append(hits[np.argsort(-probs[hits, p], kind="stable")][:PHOTOS_PER_PAIR])
    wrong = np.flatnonzero(preds != labels)
    mistakes = wrong[np.argsort(-conf[wrong], kind="stable")][:MISTAKES]
    n, acc1 = per_class_accuracy(probs, labels, 1)
    acc5 = per_class_accuracy(probs, labels, 5)[1]
    present = np.flatnonzero(n > 0)
    order = present[np.lexsort((present, -acc1[present]))]  # best first; ties by class index
    if len(order) > 2 * PER_CLASS_SHOWN:
        shown_classes = [
            ("Best " + str(PER_CLASS_SHOWN), order[:PER_CLASS_SHOWN]),
            ("Worst " + str(PER_CLASS_SHOWN), order[::-1][:PER_CLASS_SHOWN]),
        ]
    else:
        shown_classes = [("Every class", order)]
    typical = {c: _most_typical(probs, labels, c) for _, cs in shown_classes for c in cs}

    wanted = [r for rows in pair_rows for r in rows] + list(mistakes) + list(typical.values())
    photos = RunPhotos(run)
    got = photos.thumbs((ids[r], labels[r]) for r in wanted)
    thumbs = dict(zip(wanted, got, strict=True))
    show = not (photos.unavailable and all(t.problem for t in got))
    shown = 0

    def th(r: int, caption: str = "") -> str:
        nonlocal shown
        if not show:
            return ""
        shown += 1
        return thumb_html(thumbs[r], caption)

    out = []
    if photos.unavailable:
        out.append(f'<p class="warn">Photos: {esc(photos.unavailable)}.</p>')
    out.append(
        f'<h2>Most confused pairs</h2><p class="note">The {len(pairs)} largest off-diagonal cells; photos: '
        f"up to {PHOTOS_PER_PAIR} test photos of the true class predicted as the other, most confident "
        "first.</p>"
    )
    if len(pairs):
        cols = [
            Column("true class"),
            Column("predicted as"),
            Column("photos", numeric=True),
            Column("share of true class", pct, numeric=True),
            Column("examples", raw_html=True),
        ]
        rows = [
            [names[t], names[p], int(c), s, '<div class="thumbs">' + "".join(th(r) for r in rr) + "</div>"]
            for t, p, c, s, rr in zip(
                pairs["true_index"],
                pairs["predicted_index"],
                pairs["count"],
                pairs["share_of_true"],
                pair_rows,
                strict=True,
            )
        ]
        out.append(table(cols, rows, table_id="pairs"))
    else:
        out.append("<p>No mistakes on the test split.</p>")

    if len(mistakes):
        out.append(
            f'<h2>Most confident mistakes</h2><p class="note">The {len(mistakes)} wrong predictions with the '
            f"highest top-1 probability (of {len(wrong):,} mistakes on {len(labels):,} test photos).</p>"
        )
        out.append(
            '<div class="gallery" id="mistakes">'
            + "".join(
                th(
                    r,
                    f'true: {esc(names[labels[r]])}<br><span class="bad">predicted: {esc(names[preds[r]])} '
                    f"({100 * conf[r]:.1f} %)</span>",
                )
                if show
                else f"<p>true {esc(names[labels[r]])}, predicted {esc(names[preds[r]])} ({100 * conf[r]:.1f} %)</p>"
                for r in mistakes
            )
            + "</div>"
        )

    out.append(
        '<h2>Per-class accuracy</h2><p class="note">Sorted by top-1 on the test split; the photo is the '
        "test photo the model gives its class the highest probability. Full table: "
        '<a href="per_class.csv">per_class.csv</a>.</p>'
    )
    cols = [
        Column("class"),
        Column("test photos", numeric=True),
        Column("top-1", pct, numeric=True),
        Column("top-5", pct, numeric=True),
        Column("photo", raw_html=True),
    ]
    out.append(
        '<div class="plots">'
        + "".join(
            f"<div><h3>{esc(title)}</h3>"
            + table(
                cols,
                [[names[c], int(n[c]), acc1[c], acc5[c], th(typical[c])] for c in cs],
                table_id="per-class-" + title.split()[0].lower(),
                sortable=True,
            )
            + "</div>"
            for title, cs in shown_classes
        )
        + "</div>"
    )
    return "\n".join(out), shown


def _confusion(run: Run, pred: dict, classes: list[ClassEntry]) -> str:
    """The confusion matrix evaluate drew (drawn here when the run was never evaluated)."""
    from featkit.runs.metrics import class_names

    names = class_names(classes, len(classes))
    if not (run.path / "confusion.png").exists():
        from featkit.core.plots import plot_confusion
        from featkit.runs.metrics import confusion_matrix

        probs = np.asarray(pred["probs"])
        if probs.ndim != 2 or probs.shape[1] != len(names) or len(probs) == 0:
            return ""
        cm = confusion_matrix(pred["labels"].astype(np.int64), probs.argmax(axis=1), len(names))
        plot_confusion(cm, names, run.path / "confusion.png", title=run.id)
    return (
        '<h2>Confusion matrix</h2><p class="note">Rows: true class; columns: predicted class; colour: share '
        "of the true class's test photos (click for full size).</p>"
        f'<a href="confusion.png"><img class="plot" src="confusion.png" alt="confusion matrix" '
        f'style="max-width:{min(900, 360 + 6 * len(names))}px"></a>'
    )


def _most_typical(probs: np.ndarray, labels: np.ndarray, c: int) -> int:
    rows = np.flatnonzero(labels == c)
    return int(rows[np.argmax(probs[rows, c])])


def _robustness(run: Run) -> str:
    src = run.path / "sensitivity.csv"
    if not src.exists():
        return ""
    import pandas as pd

    try:
        df = pd.read_csv(src, keep_default_na=False)
    except (OSError, ValueError, pd.errors.EmptyDataError) as e:
        return f'<h2>Robustness</h2><p class="warn">{esc(src)} cannot be read ({esc(e)}).</p>'
    if len(df) == 0:
        return ""
    from featkit.core.plots import plot_sensitivity

    chart = _fresh_plot(run.path / ROBUSTNESS_PNG, (src,), lambda dst: plot_sensitivity(df, dst))
    cols = [
        Column("view"),
        Column("rotation", numeric=True),
        Column("width shift", numeric=True),
        Column("height shift", numeric=True),
        Column("flips"),
        Column("photos", numeric=True),
        Column("top-1", pct, numeric=True),
        Column("top-5", pct, numeric=True),
    ]
    keys = ("view", "rotation", "width_shift", "height_shift", "flips", "n", "top1", "top5")
    rows = [[r.get(k, "") for k in keys] for r in df.to_dict("records")]
    return (
        '<h2>Robustness</h2><p class="note">The same test photos rotated, shifted and flipped (cached views), '
        'scored without re-running the backbone.</p><div class="plots">'
        + table(cols, rows, table_id="robustness")
        + (f'<img class="plot" src="{ROBUSTNESS_PNG}" alt="robustness chart" width="520">' if chart else "")
        + "</div>"
    )


def _files(run: Run, cfg: RunConfig, metrics: RunMetrics) -> str:
    names = (
        "config.json",
        "metrics.json",
        "classes.json",
        "per_class.csv",
        "confusion.csv",
        "confused_pairs.csv",
        "history.csv",
        "sensitivity.csv",
        "reliability.csv",
        "test_predictions.npz",
    )
    links = " · ".join(f'<a href="{n}">{n}</a>' for n in names if (run.path / n).exists())
    return (
        f"<h2>Files</h2><p>{links}</p><details><summary>config.json</summary><pre>"
        f"{esc(json.dumps(cfg.to_dict(), indent=2, default=str))}</pre></details><details><summary>metrics.json"
        f"</summary><pre>{esc(json.dumps(metrics.to_dict(), indent=2, default=str))}</pre></details>"
    )


__all__ = ["build_run_page", "PAGE_NAME"]
