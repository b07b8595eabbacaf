"""`featkit sweep`: many head fits on cached features, one table, one choice made on the validation split only.

    cands = grid({"logreg": {"C": [0.02, 0.05]}, "softmax": {"hidden": [0, 1024]}},
                 cache_sets=[[mobilenet_224], [mobilenet_224, efficientnet_224]], tta=[None, "flip"])
    result = sweep(cands, jobs=2, ensemble=3)    # reports/sweeps/<id>/sweep.csv + sweep.md
    result.selected                               # the row with the best validation top-1

Every candidate is a run folder made by `featkit.heads.fit.fit_head`. Candidates run through `run_candidates`, the one
place that decides where they run (engine "local": joblib processes on this machine). After the candidates, the
best runs by validation top-1 are averaged into ensembles of 2..`ensemble` members (`featkit.apps.ensemble`). Test
scores are recorded in the table but never used to choose.
"""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from featkit.core.errors import FeatkitError
from featkit.core.schema import SWEEP_SELECTION, SweepRow, read_sweep_rows, sweep_file
from featkit.core.tables import pct
from featkit.runs.store import DEFAULT_REPORTS

ENGINES = ("local", "ray")
COMBINE_MODES = ("none", "backbones", "sizes", "all")  # sweep --combine: see cache_sets
TABLE_COLUMNS = (
    "candidate",
    "kind",
    "head",
    "params",
    "caches",
    "tta",
    "valid_top1",
    "valid_top5",
    "top1",
    "top5",
    "log_loss",
    "ece",
    "fit_seconds",
    "seconds",
    "run",
    "selected",
    "error",
)


@dataclass(frozen=True)
class Candidate:
    """One head fit: a head with its parameters on one set of caches (concatenated), with or without a test-time
    view."""

    head: str
    params: Mapping[str, Any] = field(default_factory=dict)
    caches: tuple[str, ...] = ()
    tta: str | None = None

    @property
    def label(self) -> str:
        params = ",".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.head}({params}) on {caches_label(self.caches)}{' +tta-' + self.tta if self.tta else ''}"


@dataclass
class SweepResult:
    id: str
    path: Path
    rows: list[SweepRow]
    selected: SweepRow | None


def caches_label(paths: Sequence[str | Path]) -> str:
    """Short names of cache files: <backbone>-<size>/<view> from featkit's cache folder names."""
    from featkit.features.cache import read_meta

    names = []
    for p in paths:
        m = read_meta(p)
        names.append(f"{m.backbone.name}-{m.size}" + ("" if m.view == "plain" else f"/{m.view}"))
    return "+".join(names)


def grid(
    head_grid: Mapping[str, Mapping[str, Sequence[Any]]],
    cache_sets: Sequence[Sequence[str | Path]],
    tta: Sequence[str | None] = (None,),
) -> list[Candidate]:
    """Every combination of cache set x test-time view x head x head parameter values (cartesian product)."""
    if not cache_sets:
        raise FeatkitError("a sweep needs at least one cache: give --features, or --data with --backbone/--size.")
    out = []
    for caches, view in itertools.product(cache_sets, tta):
        for head, params in head_grid.items():
            keys = list(params)
            for values in itertools.product(*(params[k] for k in keys)):
                out.append(Candidate(head, dict(zip(keys, values, strict=True)), tuple(str(c) for c in caches), view))
    return out


def plan(
    caches: Sequence[str | Path] = (),
    combine: Sequence[str] = ("none",),
    sets: Sequence[Sequence[str | Path]] = (),
    heads: Sequence[str] = ("logreg",),
    params: Sequence[str] = (),
    tta: Sequence[str] = ("none",),
    candidates_file: str | Path | None = None,
) -> list[Candidate]:
    """The candidates of a `featkit sweep` command line: the grid over the cache sets (`cache_sets` of the pool
    `caches` by `combine`, plus explicit `sets`), the test-time views (`tta`: "none" for the plain photos only,
    "flip" for the mirrored view too, as `fit-head --tta`; both: each candidate without and with), the heads and
    the `params` values (`parse_param_grid`), followed by the explicit list in `candidates_file`."""
    from featkit.data.augment import TTA_VIEWS

    bad = [v for v in tta if v != "none" and v not in TTA_VIEWS]
    if bad or not tta:
        raise FeatkitError(f"--tta {bad[0] if bad else ''!r}: use none or {' or '.join(TTA_VIEWS)} (repeatable).")
    views = [None if v == "none" else v for v in dict.fromkeys(tta)]
    all_sets = (cache_sets(caches, combine) if caches else []) + [[str(p) for p in s] for s in sets]
    out = grid(parse_param_grid(params, heads), all_sets, views) if all_sets else []
    return out + (read_candidates(candidates_file) if candidates_file else [])


def read_candidates(path: str | Path) -> list[Candidate]:
    """An explicit list of candidates from a JSON file: [{"head": "logreg", "params": {"C": 0.05},
    "caches": ["A.h5", "B.h5"], "tta": "flip" or null}, ...] (what sweeps write as candidates.json)."""
    from featkit.core.fileio import read_json

    try:
        items = read_json(path)
        out = [
            Candidate(str(c["head"]), dict(c.get("params") or {}), tuple(str(p) for p in c["caches"]), c.get("tta"))
            for c in items
        ]
    except FileNotFoundError:
        raise FeatkitError(f"{path} does not exist: give a JSON list of candidates.") from None
    except (ValueError, KeyError, TypeError) as e:
        raise FeatkitError(
            f"{path} is not a JSON list of candidates with head, params, caches and tta ({e})."
        ) from None
    if not all(c.caches for c in out):
        raise FeatkitError(f"{path}: every candidate needs a non-empty list of caches.")
    return out


def cache_sets(paths: Sequence[str | Path], combine: Sequence[str] = ("none",)) -> list[list[str]]:
    """Sets of caches to fit on, from a pool of plain caches: `none` each cache alone; `backbones` the caches of
    each size concatenated; `sizes` the caches of each backbone concatenated; `all` every cache concatenated.
    Several modes give the union, in order, without repeats."""
    from featkit.features.cache import read_meta

    unknown = [c for c in combine if c not in COMBINE_MODES]
    if unknown:
        raise FeatkitError(f"--combine {unknown[0]!r}: use none, backbones, sizes or all (repeatable).")
    keys = []
    for p in paths:
        m = read_meta(p)
        keys.append((m.backbone.name, m.size))
    files = [str(p) for p in paths]
    sets: list[list[str]] = []
    for mode in combine:
        if mode == "none":
            sets += [[p] for p in files]
        elif mode == "all":
            sets.append(files)
        else:
            by = 1 if mode == "backbones" else 0  # group the caches that share a size / a backbone
            for value in dict.fromkeys(k[by] for k in keys):
                sets.append([p for p, k in zip(files, keys, strict=True) if k[by] == value])
    return [list(s) for s in dict.fromkeys(tuple(s) for s in sets)]


def parse_param_grid(items: Sequence[str], heads: Sequence[str]) -> dict[str, dict[str, list[str]]]:
    """`KEY=V1,V2` (for every head that has KEY) or `HEAD.KEY=V1,V2` into {head: {key: [values]}}."""
    from featkit.heads import head_params

    out: dict[str, dict[str, list[str]]] = {h: {} for h in heads}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key or not values:
            raise FeatkitError(f"--param {item!r} should be KEY=V1,V2 or HEAD.KEY=V1,V2, e.g. -p C=0.02,0.05,0.1.")
        head, dot, name = key.strip().rpartition(".")
        targets = [head] if dot else [h for h in heads if name in head_params(h)]
        if dot and head not in out:
            raise FeatkitError(
                f"--param {item!r} names head {head!r}, which is not swept (--head {' --head '.join(heads)})."
            )
        if not targets:
            raise FeatkitError(
                f"--param {item!r}: none of the swept heads ({', '.join(heads)}) has a parameter {name!r}; "
                "see `featkit fit-head --head NAME --list-params`."
            )
        for h in targets:
            out[h][name] = [v.strip() for v in values.split(",") if v.strip()]
    return out


# ---- running -------------------------------------------------------------------------------------------


def run_candidate(task: tuple[Candidate, str, int]) -> SweepRow:
    """Fit one candidate (a picklable task: candidate, reports folder, seed) and return its table row. A
    FeatkitError becomes the row's `error` instead of stopping the sweep."""
    from featkit.heads.fit import fit_head

    cand, reports, seed = task
    row = SweepRow(
        candidate=cand.label,
        kind="head",
        head=cand.head,
        params=dict(cand.params),
        caches=caches_label(cand.caches),
        tta=cand.tta or "",
    )
    t0 = time.perf_counter()
    try:
        run = fit_head(
            list(cand.caches),
            head=cand.head,
            params=dict(cand.params),
            reports=reports,
            seed=seed,
            quiet=True,
            tta=cand.tta,
        )
    except FeatkitError as e:
        return row.replace(seconds=round(time.perf_counter() - t0, 1), error=str(e))
    return row.replace(**_scores(run), seconds=round(time.perf_counter() - t0, 1))


def run_candidates(
    candidates: Sequence[Candidate],
    jobs: int = 1,
    engine: str = "local",
    reports: str | Path = DEFAULT_REPORTS,
    seed: int = 0,
    quiet: bool = False,
    address: str | None = None,
) -> list[SweepRow]:
    """Fit every candidate and return their table rows in the candidates' order.

    engine "local": joblib worker processes on this machine, `jobs` at a time (1: in this process). engine "ray":
    Ray actors (`address`: the cluster, see featkit.core.ray_tasks.ray_session; `jobs` > 1: that many actors), each
    reading the caches and writing its run folder at the same paths, so those must be on a shared folder.
    """
    if engine not in ENGINES:
        raise FeatkitError(f"--engine {engine!r}: use {' or '.join(ENGINES)}.")
    if jobs < 1:
        raise FeatkitError(f"--jobs should be 1 or more; got {jobs}.")
    tasks = [(c, str(reports), seed) for c in candidates]
    if engine == "ray":
        from featkit.core.ray_tasks import run_tasks

        return run_tasks(
            run_candidate,
            tasks,
            address=address,
            workers=jobs if jobs > 1 else None,
            desc="sweep",
            unit="candidates",
            quiet=quiet,
            name=lambda t: f"{t[0].head} {t[0].params}",
        )
    if address:
        raise FeatkitError("--address applies to --engine ray only.")
    from joblib import Parallel, delayed

    from featkit.core.progress import Progress

    rows: list[SweepRow] = []
    with Progress(len(tasks), "sweep", unit="candidates", quiet=quiet, every=0.0) as bar:
        for row in Parallel(n_jobs=jobs, return_as="generator")(delayed(run_candidate)(t) for t in tasks):
            rows.append(row)
            bar.update(1)
    return rows


def sweep(
    candidates: Sequence[Candidate],
    jobs: int = 1,
    engine: str = "local",
    ensemble: int = 0,
    name: str = "sweep",
    reports: str | Path = DEFAULT_REPORTS,
    seed: int = 0,
    quiet: bool = False,
    address: str | None = None,
) -> SweepResult:
    """Run the candidates, add ensembles of the best 2..`ensemble` runs by validation top-1, choose the row with
    the best validation top-1 (then top-5), and write reports/sweeps/<id>/sweep.csv, sweep.md and sweep.json."""
    from featkit.core.fileio import write_json
    from featkit.runs.store import new_run

    if not candidates:
        raise FeatkitError("the sweep has no candidates: give at least one --head and one cache.")
    sweep_dir = new_run(name, reports, under="sweeps").path  # reports/sweeps/<timestamp>-<name>/
    write_json(sweep_dir / "candidates.json", [asdict(c) for c in candidates])

    from featkit.runs import tracking

    with tracking.deferred():  # with tracking on, the candidates are logged below, nested under the sweep
        rows = run_candidates(candidates, jobs, engine, reports, seed, quiet, address)
        rows += ensemble_rows(rows, ensemble, reports, quiet)
    best = select(rows)
    rows = [r.replace(selected=r is best) for r in rows]
    selected = next((r for r in rows if r.selected), None)
    write_table(rows, sweep_dir)
    write_json(sweep_dir / "sweep.json", sweep_file(sweep_dir.name, rows, selected))
    if tracking.wanted():
        track_sweep(sweep_dir, rows, selected, reports)
    return SweepResult(sweep_dir.name, sweep_dir, rows, selected)


def track_sweep(folder: Path, rows: Sequence[SweepRow], selected: SweepRow | None, reports: str | Path) -> str | None:
    """The sweep as a parent MLflow run (its table as artifacts, the selected row's scores as metrics) with every
    candidate and ensemble run nested under it; the parent's MLflow run id, or None when the store failed."""
    from featkit.runs import tracking
    from featkit.runs.store import load_run

    scores = {"valid_top1": "valid_top1", "valid_top5": "valid_top5", "top1": "test_top1", "top5": "test_top5"}
    entry = tracking.Entry(
        name=folder.name,
        params={
            "kind": "sweep",
            "n_candidates": sum(1 for r in rows if r.kind == "head"),
            "n_ensembles": sum(1 for r in rows if r.kind == "ensemble"),
            "selection": SWEEP_SELECTION,
            "selected": selected.candidate if selected else "",
            "selected_run": (selected.run or "") if selected else "",
        },
        metrics={
            name: float(getattr(selected, k))
            for k, name in scores.items()
            if selected is not None and getattr(selected, k) is not None
        },
        tags={"featkit.sweep_id": folder.name, "featkit.kind": "sweep", "featkit.folder": str(folder.resolve())},
        artifacts=[
            folder / f for f in ("sweep.csv", "sweep.md", "sweep.json", "candidates.json") if (folder / f).is_file()
        ],
    )
    parent = tracking.log_entry(entry, reports)
    if parent is None:
        return None
    for r in rows:
        if r.run and tracking.log_run(load_run(r.run, reports), parent=parent) is None:
            break
    return parent


def ensemble_rows(rows: list[SweepRow], up_to: int, reports: str | Path, quiet: bool = False) -> list[SweepRow]:
    """Ensembles of the best 2, 3, ..., `up_to` runs by validation top-1 (runs without a validation score are
    left out)."""
    from featkit.apps.ensemble import ensemble_runs

    ranked = sorted((r for r in rows if r.run and r.valid_top1 is not None), key=_valid_key, reverse=True)
    out = []
    for k in range(2, min(up_to, len(ranked)) + 1):
        members = [str(m.run) for m in ranked[:k]]
        t0 = time.perf_counter()
        run = ensemble_runs(members, name=f"ensemble-top{k}", reports=reports, quiet=True)
        row = SweepRow(
            candidate=f"ensemble of the best {k} by validation",
            kind="ensemble",
            head="ensemble",
            params={"best": k},
            members=members,
            **_scores(run),
            seconds=round(time.perf_counter() - t0, 1),
        )
        out.append(row)
        if not quiet:
            print(f"ensemble of {k}: valid top-1 {pct(row.valid_top1)}", file=sys.stderr, flush=True)
    return out


def select(rows: Sequence[SweepRow]) -> SweepRow | None:
    """The row with the best validation top-1 (ties: validation top-5, then the earlier row). Test never counts."""
    scored = [r for r in rows if r.valid_top1 is not None and not r.error]
    if not scored:
        return None
    best = max(_valid_key(r) for r in scored)
    return next(r for r in scored if _valid_key(r) == best)


def _valid_key(row: SweepRow) -> tuple[float, float]:
    return (row.valid_top1 or 0.0, row.valid_top5 or 0.0)


def _scores(run) -> dict[str, Any]:
    """The SweepRow fields a finished run gives."""
    m = run.metrics
    return {
        "run": run.id,
        "valid_top1": m.valid_top1,
        "valid_top5": m.valid_top5,
        "top1": m.top1,
        "top5": m.top5,
        "log_loss": m.log_loss,
        "ece": m.ece,
        "fit_seconds": m.fit_seconds,
    }


def table(rows: Sequence[SweepRow], compact: bool = False):
    """The sweep table as a DataFrame (TABLE_COLUMNS), best validation top-1 first; the selected row says "yes".
    compact: without the long candidate label and without columns that are empty in every row (what the command
    prints)."""
    import pandas as pd

    records = [{**r.to_dict(), "selected": "yes" if r.selected else ""} for r in rows]
    df = pd.DataFrame([{k: r.get(k) for k in TABLE_COLUMNS} for r in records], columns=list(TABLE_COLUMNS))
    df["params"] = df["params"].map(lambda p: ",".join(f"{k}={v}" for k, v in p.items()) if isinstance(p, dict) else p)
    df = df.sort_values("valid_top1", ascending=False, na_position="last", kind="stable").reset_index(drop=True)
    if compact:
        empty = [c for c in df.columns if df[c].isna().all() or (df[c].astype(str) == "").all()]
        df = df.drop(columns=["candidate", *empty])
    return df


def list_sweeps(reports: str | Path = DEFAULT_REPORTS) -> tuple[list[SweepResult], list[dict]]:
    """(finished sweeps under reports/sweeps/, newest first; [{"folder", "reason"}] of sweep folders without a
    readable sweep.json: unfinished, interrupted or damaged), for the report."""
    from featkit.core.fileio import read_json

    base = Path(reports) / "sweeps"
    done, other = [], []
    for folder in sorted((d for d in base.iterdir() if d.is_dir()), reverse=True) if base.is_dir() else []:
        if not (folder / "sweep.json").exists():
            other.append({"folder": f"sweeps/{folder.name}", "reason": "no sweep.json (unfinished or interrupted)"})
            continue
        try:
            rows = read_sweep_rows(read_json(folder / "sweep.json", dict), str(folder / "sweep.json"))
        except FeatkitError as e:
            other.append({"folder": f"sweeps/{folder.name}", "reason": f"unreadable sweep.json ({e})"})
            continue
        done.append(SweepResult(folder.name, folder, rows, next((r for r in rows if r.selected), None)))
    return done, other


def write_table(rows: Sequence[SweepRow], folder: Path) -> None:
    from featkit.core.fileio import atomic_path, write_text
    from featkit.core.tables import SCORE_COLUMNS, markdown_table

    with atomic_path(folder / "sweep.csv") as tmp:
        table(rows).to_csv(tmp, index=False)
    write_text(
        folder / "sweep.md",
        f"# Sweep {folder.name}\n\nSelected by validation top-1 only.\n\n"
        + markdown_table(table(rows, compact=True), SCORE_COLUMNS)
        + "\n",
    )


def selected_run(ref: str, reports: str | Path = DEFAULT_REPORTS):
    """(the run a sweep selected, the sweep's id). `ref`: "latest" (the newest sweep with a sweep.json), a sweep id
    under reports/sweeps/ (or a unique part of one), or a sweep folder. What `sweep:latest` / `sweep:<id>` name on
    the command line (featkit.apps.run_model.resolve_run)."""
    from featkit.core.fileio import read_json
    from featkit.runs.store import load_run

    base = Path(reports) / "sweeps"
    ref = str(ref).strip()
    if not ref:
        raise FeatkitError("sweep: needs a sweep id or 'latest' after it, e.g. sweep:latest.")
    if ref == "latest":
        done, _ = list_sweeps(reports)
        if not done:
            raise FeatkitError(f"no finished sweep in {base}: run `featkit sweep` first (or give a run id).")
        folder = done[0].path
    elif Path(ref).is_dir() and (Path(ref) / "sweep.json").exists():
        folder = Path(ref)
    else:
        found = sorted(d for d in base.glob("*") if d.is_dir() and ref in d.name) if base.is_dir() else []
        exact = [d for d in found if d.name == ref]
        if exact or len(found) == 1:
            folder = (exact or found)[0]
        elif not found:
            raise FeatkitError(f"no sweep {ref!r} in {base}: give an id listed by `featkit report`, or sweep:latest.")
        else:
            names = ", ".join(d.name for d in found[:5])
            raise FeatkitError(f"sweep {ref!r} is ambiguous ({names}, ...): give the full id.")
    f = folder / "sweep.json"
    if not f.exists():
        raise FeatkitError(f"{f} is missing: the sweep did not finish; re-run `featkit sweep`.")
    rows = read_sweep_rows(read_json(f, dict, fix="re-run `featkit sweep`"), str(f))
    selected = next((r for r in rows if r.selected), None)
    if selected is None or not selected.run:
        raise FeatkitError(
            f"sweep {folder.name} selected no run (no candidate had a validation score; see {folder / 'sweep.md'}): "
            "give a run id instead."
        )
    try:
        return load_run(selected.run, reports), folder.name
    except FeatkitError:
        raise FeatkitError(
            f"run {selected.run}, selected by sweep {folder.name}, is not in {Path(reports) / 'runs'} any more: "
            "restore it or re-run the sweep."
        ) from None
