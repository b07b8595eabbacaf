"""What a run is, in the few words a table shows: its dataset (name and class count), backbone(s), size, head or
preset, views, validation and test scores, date. One place for the report's index and `featkit runs`.

    s = summarize(load_run("latest"))
    s.dataset_label   # 'food101-64 (101 classes)'
    s.valid_top1      # the score runs are compared by (never test)
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from featkit.core.schema import BackboneSpec, RunConfig, RunMetrics
from featkit.runs.store import Run


@dataclass(frozen=True)
class RunSummary:
    id: str
    kind: str
    dataset: str  # a readable name: the folder or file the photos came from (Food-101, UECFOOD-256 when known)
    dataset_key: str  # what makes scores comparable: the dataset's content and split (RunConfig.dataset)
    n_classes: int | None
    backbones: list[str]
    size: int | None
    name: str  # the head (head runs), the preset (CNN runs) or "ensemble"
    views: str
    valid_top1: float | None
    valid_top5: float | None
    top1: float | None
    top5: float | None
    date: str
    path: Path

    @property
    def dataset_label(self) -> str:
        return f"{self.dataset} ({self.n_classes} classes)" if self.n_classes else self.dataset

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


def summarize(run: Run, config: RunConfig | None = None, metrics: RunMetrics | None = None) -> RunSummary:
    """The summary of a finished run (config and metrics read unless given); OSError / FeatkitError when a file is
    missing or damaged (e.g. the run was deleted meanwhile)."""
    cfg = config if config is not None else run.config
    m = metrics if metrics is not None else run.metrics
    return RunSummary(
        id=run.id,
        kind=cfg.kind,
        dataset=dataset_name(cfg),
        dataset_key=cfg.dataset or cfg.fingerprint or dataset_name(cfg),
        n_classes=cfg.n_classes,
        backbones=backbone_names(cfg),
        size=cfg.size,
        name=cfg.name,
        views=views(cfg),
        valid_top1=number(m.valid_top1),
        valid_top5=number(m.valid_top5),
        top1=number(m.top1),
        top5=number(m.top5),
        date=run_date(run.id),
        path=run.path,
    )


def dataset_name(cfg: RunConfig) -> str:
    """The name the run's photos go by: a CNN run's recorded dataset_name, else the folder / file name of the
    data (without .zip / .tar.gz), else the name part of the dataset key (cache folder <name>-<hash>-<split>)."""
    if cfg.extra.get("dataset_name"):
        return str(cfg.extra["dataset_name"])
    if cfg.data:
        name = Path(str(cfg.data).rstrip("/")).name
        return re.sub(r"\.(zip|tar|tar\.gz|tgz)$", "", name, flags=re.IGNORECASE) or str(cfg.data)
    if cfg.dataset:
        m = re.match(r"(.+?)-[0-9a-f]{12}-", cfg.dataset)
        return m[1] if m else cfg.dataset
    return "?"


def backbone_names(cfg: RunConfig) -> list[str]:
    """The backbone of the run, each part of a concatenation, or none (a custom CNN)."""
    bb = cfg.backbone
    if bb is None:
        return []
    if bb.kind == "combined":
        return [BackboneSpec.from_dict(p).name for p in bb.extra.get("parts", [])] or [bb.name]
    return [bb.name]


def views(cfg: RunConfig) -> str:
    """What the model was trained and scored on: the cached views of a head run (+ the mirrored test-time view
    when its predictions average it in), the photos (+ augmentation) of a CNN run."""
    tta = cfg.extra.get("tta")
    if cfg.views:
        shown = [str(v) for v in cfg.views]
        if tta and f"tta-{tta}" not in shown:
            shown.append(f"tta-{tta}")
        return " + ".join(shown)
    if cfg.kind == "cnn":
        return "photos" + (" + augmentation" if cfg.augment else "")
    return f"tta-{tta}" if tta else ""


def run_date(run_id: str) -> str:
    """'2026-11-30 10:15' from a run id made by runs.new_run (YYYYmmdd-HHMMSS-name); '' for other names."""
    m = re.match(r"(\d{4})(\d{2})(\d{2})-(\d{2})(\d{2})(\d{2})", run_id)
    return f"{m[1]}-{m[2]}-{m[3]} {m[4]}:{m[5]}" if m else ""


def number(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


__all__ = ["RunSummary", "summarize", "dataset_name", "backbone_names", "views", "run_date", "number"]
