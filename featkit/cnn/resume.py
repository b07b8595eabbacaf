"""Whether `featkit train-cnn --resume RUN` may continue RUN: the one check, done before anything is decoded or
written, so a resume never overwrites a run of another kind or trains on other data or options."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from featkit.cnn.presets import Preset
from featkit.core.errors import FeatkitError
from featkit.runs.store import Run

# may differ on resume: train a finished run for longer, change early stopping; the note and the study_* fields
# (what the study reported for that row) are labels, not settings
MAY_CHANGE = ("epochs", "patience", "note")
# what train-cnn records beside the preset that shapes training
DATA_KEYS = ("fingerprint", "dataset", "per_class", "resize", "seed")


def _plain(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def check_resume(run: Run, cfg: Preset, extra: Mapping[str, Any], seed: int) -> None:
    """Refuse (one line naming what differs) to resume `run` with `cfg` on the data described by `extra` (the
    dataset fingerprint and key, --per-class, resize) and `seed`; return quietly when they are the same."""
    config = run.config
    if config.kind != "cnn":
        raise FeatkitError(
            f"run {run.id} is a {config.kind} run, not a train-cnn run: --resume only continues "
            f"an interrupted train-cnn run; nothing was changed in {run.path}."
        )
    diffs = []
    if config.name != cfg.name:
        diffs.append(f"preset {config.name!r} (now {cfg.name!r})")
    for key, value in _plain(cfg.to_dict()).items():
        if key in MAY_CHANGE or key == "name" or key.startswith("study_"):
            continue
        if key in config.params and config.params[key] != value:
            diffs.append(f"{key} {config.params[key]!r} (now {value!r})")
    had = {
        "fingerprint": config.fingerprint,
        "dataset": config.dataset,
        "resize": config.resize,
        "seed": config.seed,
        "per_class": config.per_class,
    }
    now = _plain({**{k: extra.get(k) for k in DATA_KEYS if k != "seed"}, "seed": seed})
    for key in DATA_KEYS:
        if had[key] != now[key]:
            label = {"fingerprint": "dataset fingerprint", "dataset": "dataset and split"}.get(key, key)
            diffs.append(f"{label} {had[key]!r} (now {now[key]!r})")
    if diffs:
        raise FeatkitError(
            f"run {run.id} cannot be resumed with these options: it was trained with "
            f"{'; '.join(diffs)}. Give the run's own options, or start a new run without --resume."
        )
