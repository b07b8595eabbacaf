"""`featkit runs`: the finished runs of a reports folder, newest first, filtered by kind, dataset or sweep.

    listing = list_runs_table("reports", kind="head", dataset="food101")
    listing.rows        # [RunSummary, ...] (featkit.runs.summary), each with the sweep it belongs to
    listing.skipped     # ["<run id>: <why>", ...]: runs deleted or damaged while they were read

A run deleted while the list is read (another process cleaning up) is skipped and counted, never a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from featkit.core.errors import FeatkitError
from featkit.core.schema import RUN_KINDS
from featkit.runs.store import DEFAULT_REPORTS, list_runs
from featkit.runs.summary import RunSummary, summarize

COLUMNS = ("id", "kind", "dataset", "backbone", "size", "head / preset", "views", "valid top-1", "test top-1", "date")


@dataclass
class RunsListing:
    rows: list[RunSummary]
    sweeps: dict[str, str] = field(default_factory=dict)  # run id -> the sweep it was fitted in
    skipped: list[str] = field(default_factory=list)

    def records(self) -> list[dict[str, Any]]:
        """One JSON-able dict per run (what --json prints): every RunSummary field plus `sweep`."""
        return [{**r.to_dict(), "sweep": self.sweeps.get(r.id)} for r in self.rows]

    def table(self) -> list[dict[str, Any]]:
        """The rows as `featkit runs` prints them (COLUMNS)."""
        return [
            dict(
                zip(
                    COLUMNS,
                    (
                        r.id,
                        r.kind,
                        r.dataset_label,
                        " + ".join(r.backbones) or "-",
                        r.size or "",
                        r.name,
                        r.views,
                        _pct(r.valid_top1),
                        _pct(r.top1),
                        r.date,
                    ),
                    strict=True,
                )
            )
            for r in self.rows
        ]


def sweep_members(reports: str | Path = DEFAULT_REPORTS) -> dict[str, str]:
    """{run id: sweep id} for every run a finished sweep fitted or built (candidates and ensembles)."""
    from featkit.apps.sweep import list_sweeps

    members: dict[str, str] = {}
    for sw in reversed(list_sweeps(reports)[0]):  # oldest first: a run reused by a newer sweep names the newer
        for row in sw.rows:
            if row.run:
                members[str(row.run)] = sw.id
    return members


def list_runs_table(
    reports: str | Path = DEFAULT_REPORTS,
    kind: str | None = None,
    dataset: str | None = None,
    sweep: str | None = None,
) -> RunsListing:
    """The finished runs, newest first. `kind`: head, cnn or ensemble. `dataset`: a dataset name or key (or a part
    of one, case ignored). `sweep`: a sweep id (or a unique part of one): only the runs it fitted or built."""
    if kind is not None and kind not in RUN_KINDS:
        raise FeatkitError(f"--kind {kind!r}: a run is one of {', '.join(RUN_KINDS)}.")
    members = sweep_members(reports)
    wanted_sweep = _find_sweep(sweep, reports) if sweep else None
    rows, skipped = [], []
    for run in list_runs(reports):
        try:
            s = summarize(run)
        except (OSError, FeatkitError) as e:  # deleted or damaged while we read it
            gone = not run.path.exists()
            skipped.append(f"{run.id}: {'deleted while listing' if gone else e}")
            continue
        if kind and s.kind != kind:
            continue
        if dataset and not _dataset_matches(s, dataset):
            continue
        if wanted_sweep and members.get(s.id) != wanted_sweep:
            continue
        rows.append(s)
    return RunsListing(rows, members, skipped)


def _dataset_matches(s: RunSummary, wanted: str) -> bool:
    w = wanted.lower()
    return any(w in str(v).lower() for v in (s.dataset, s.dataset_key) if v)


def _find_sweep(ref: str, reports: str | Path) -> str:
    from featkit.apps.sweep import list_sweeps

    ids = [sw.id for sw in list_sweeps(reports)[0]]
    if ref == "latest" and ids:
        return ids[0]
    if ref in ids:
        return ref
    hits = [i for i in ids if ref in i]
    if len(hits) == 1:
        return hits[0]
    where = Path(reports) / "sweeps"
    if not hits:
        raise FeatkitError(
            f"--sweep {ref!r}: no finished sweep of that id in {where}"
            + (f" (sweeps: {', '.join(ids[:5])})." if ids else ": run `featkit sweep` first.")
        )
    raise FeatkitError(f"--sweep {ref!r} is ambiguous ({', '.join(hits[:5])}): give the full id.")


def _pct(v: float | None) -> str:
    return "" if v is None else f"{100 * v:.2f} %"


__all__ = ["RunsListing", "list_runs_table", "sweep_members", "COLUMNS"]
