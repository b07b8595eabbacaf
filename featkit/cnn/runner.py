"""Train a CNN preset on a dataset: what `featkit train-cnn` and `featkit series` run.

Prepares the dataset (scan, split manifest), decodes the photos once into a cached uint8 array, slices the splits
and trains, so the command line only parses options.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..data import SplitConfig, prepare
from ..data.arrays import decoded_arrays, subset_rows
from ..errors import FeatkitError
from ..runs import DEFAULT_REPORTS, Run, load_run, new_run
from .presets import Preset, get_preset
from .resume import check_resume


def preset_with_options(name: str, options: Mapping[str, Any]) -> Preset:
    """The preset `name` with command-line options applied (None: keep the preset's value).

    `blocks` alone keeps the preset's widths, cut or extended with its last width; `filters` (a list, or one width
    repeated `blocks` times) sets the widths and, alone, the number of blocks."""
    changes = {k: v for k, v in options.items() if v is not None}
    blocks, filters = changes.get("blocks"), changes.get("filters")
    if isinstance(filters, str):
        try:
            filters = tuple(int(f) for f in filters.split(","))
        except ValueError:
            raise FeatkitError(f"--filters {filters!r} should be numbers separated by commas, e.g. 16,32,64.") from None
    if filters is not None:
        filters = tuple(filters)
        if blocks and len(filters) == 1:
            filters = filters * blocks
        changes["filters"] = filters
        changes.setdefault("blocks", len(filters))
    elif blocks is not None:
        base = get_preset(name).filters or (16,)
        changes["filters"] = tuple(base[:blocks]) + (base[-1],) * max(0, blocks - len(base))
    ftf = changes.get("fine_tune_from")
    if isinstance(ftf, str) and ftf.isdigit():
        changes["fine_tune_from"] = int(ftf)
    return get_preset(name, **changes)


def train_on_dataset(preset: str, data: str | Path, options: Mapping[str, Any] | None = None,
                     per_class: int | None = None, resume: str | None = None, split: str = "70/20/10", seed: int = 0,
                     cache: str | Path = "cache", reports: str | Path = DEFAULT_REPORTS, quiet: bool = False) -> Run:
    """Train `preset` (with `options` applied) on `data` with featkit's split; returns the finished Run.

    `per_class`: only the first N photos of each class in each split (quick runs). `resume`: a run id or folder
    to continue from its last checkpoint."""
    cfg = preset_with_options(preset, options or {})
    prep = prepare(data, cache_dir=cache, split=SplitConfig.parse(split, seed), quiet=quiet, exclude=(reports,))
    rows = subset_rows(prep, per_class)
    resize = (options or {}).get("resize") or "stretch"
    extra = {"dataset": prep.key, "fingerprint": prep.fingerprint, "data": str(data), "resize": resize,
             "per_class": per_class, "manifest": str(prep.manifest_path)}
    if resume:
        check_resume(load_run(resume, reports), cfg, extra, seed)
    x = decoded_arrays(prep, rows, cfg.size, resize=resize, quiet=quiet)
    m = prep.manifest.iloc[rows]
    split_of = m["split"].to_numpy()
    parts = {s: np.flatnonzero(split_of == s) for s in ("train", "valid", "test")}
    for s, idx in parts.items():
        if len(idx) == 0:
            raise FeatkitError(f"{data}: the {s} split is empty{f' with --per-class {per_class}' if per_class else ''}: "
                               "use more photos per class or another --split.")
    y = m["label"].to_numpy()
    from .train import train_cnn  # TensorFlow starts only once the options and the data are known to be good

    run = load_run(resume, reports) if resume else new_run(f"cnn-{cfg.name}", reports)
    return train_cnn(cfg, x[parts["train"]], y[parts["train"]], x[parts["valid"]], y[parts["valid"]],
                     x[parts["test"]], y[parts["test"]], prep.classes, run, seed=seed, quiet=quiet, resume=True,
                     extra_config=extra, test_ids=m["image_id"].to_numpy()[parts["test"]])


__all__ = ["preset_with_options", "train_on_dataset"]
