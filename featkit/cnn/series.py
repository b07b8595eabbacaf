"""Train one CNN preset on a dataset, or a series of them (`featkit series`), resumably.

A series skips a preset whose finished run with the same data, split, subset and training settings exists in the
reports folder, and continues an unfinished one from its last checkpoint; so re-running an interrupted
`featkit series study` picks up where it stopped.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from featkit.cnn.presets import PRESETS, STUDY_ORDER, Preset, preset_with_options
from featkit.cnn.resume import check_resume
from featkit.core.errors import FeatkitError
from featkit.core.schema import RunConfig
from featkit.runs.store import Run, new_run, runs_dir

DATASET_NAMES = {"food101": ("Food-101", 101)}


def dataset_name(prep) -> str:
    """A readable name for the dataset a run used: Food-101 (all 101 classes in its own layout), UECFOOD-<classes>,
    or the file / folder name (a few classes copied out of Food-101 are not "Food-101")."""
    layout, n = prep.dataset.layout, len(prep.classes)
    if layout == "uec":
        return f"UECFOOD-{n}"
    known = DATASET_NAMES.get(layout)
    if known and known[1] == n:
        return known[0]
    return Path(prep.dataset.source.origin).name


def run_name(cfg: Preset) -> str:
    """The name part of a CNN run's id, saying what was trained: `cnn-<preset>` when the model, backbone and size
    are the preset's, else the model trained, e.g. `cnn-transfer-mobilenetv2-128` for `train-cnn --model transfer
    --backbone mobilenetv2 --size 128` over the default preset benchmark-64 (a custom network over a transfer
    preset: `cnn-custom-3x16-32-64-128`)."""
    base = PRESETS[cfg.name]
    if (cfg.model, cfg.backbone, cfg.size) == (base.model, base.backbone, base.size):
        return f"cnn-{cfg.name}"
    if cfg.model == "transfer":
        return f"cnn-transfer-{cfg.backbone}-{cfg.size}"
    return f"cnn-custom-{cfg.blocks}x{'-'.join(map(str, cfg.filters))}-{cfg.size}"


def series_names(presets: Sequence[str]) -> list[str]:
    """`study` -> the study's 18 rows in its order; `all` -> every preset; else the names given (checked)."""
    if list(presets) == ["study"]:
        return list(STUDY_ORDER)
    if list(presets) == ["all"]:
        return list(PRESETS)
    unknown = [name for name in presets if name not in PRESETS]
    if unknown:  # stops here, before hours of training
        raise FeatkitError(
            f"no CNN preset {', '.join(map(repr, unknown))}: give 'study', 'all' or preset names "
            f"from `featkit train-cnn --list`."
        )
    return list(presets)


def _training_view(rc: RunConfig) -> dict[str, Any]:
    """What a CNN run was trained with, under the names `find_runs` compares."""
    return {
        **rc.extra,
        **rc.params,
        "preset": rc.name,
        "dataset": rc.dataset,
        "fingerprint": rc.fingerprint,
        "resize": rc.resize,
        "manifest": rc.manifest,
        "seed": rc.seed,
        "per_class": rc.per_class,
    }


def find_runs(cfg: Preset, identity: dict[str, Any], reports: str | Path) -> tuple[Run | None, Run | None]:
    """(newest finished run, newest unfinished run with checkpoints) of `cfg` whose config.json matches the
    training settings of `cfg` and every key of `identity` (dataset fingerprint, manifest, subset, seed ...)."""
    from featkit.cnn.train import read_json_roundtrip

    want = read_json_roundtrip({**cfg.training_settings(), **identity})
    base = runs_dir(reports)
    finished = unfinished = None
    if not base.exists():
        return None, None
    for d in sorted(base.iterdir(), reverse=True):
        if not (d / "config.json").exists():
            continue
        try:
            config = Run(d).config
        except (OSError, FeatkitError):
            continue
        have = _training_view(config)
        if config.kind != "cnn" or any(have.get(k) != v for k, v in want.items()):
            continue
        if (d / "metrics.json").exists():
            finished = finished or Run(d)
        elif (d / "checkpoints" / "state.json").exists():
            unfinished = unfinished or Run(d)
    return finished, unfinished


def train_preset(
    preset: str,
    data: str | Path,
    overrides: dict[str, Any] | None = None,
    *,
    per_class: int | None = None,
    resume: str | Path | Run | None = None,
    split: str = "70/20/10",
    seed: int = 0,
    cache: str | Path = "cache",
    reports: str | Path = "reports",
    quiet: bool = False,
    skip_finished: bool = False,
) -> tuple[Run, bool]:
    """Train `preset` (with `overrides`: command-line options, see `preset_with_options`) on `data`; returns
    (run, trained). With `skip_finished`, a finished run of the same settings on the same data is returned
    untrained and an unfinished one is resumed."""
    from featkit.core.tfkeras import tf_keras
    from featkit.data import SplitConfig, prepare
    from featkit.data.arrays import decoded_arrays, subset_rows
    from featkit.runs.store import load_run

    tf_keras()  # without the keras extra: its one-line error before any run folder is made
    overrides = dict(overrides or {})
    resize = overrides.pop("resize", None) or "stretch"
    cfg = preset_with_options(preset, overrides)
    prep = prepare(data, cache_dir=cache, split=SplitConfig.parse(split, seed), quiet=quiet, exclude=(reports,))
    identity = {
        "preset": cfg.name,
        "dataset": prep.key,
        "fingerprint": prep.fingerprint,
        "resize": resize,
        "per_class": per_class,
        "manifest": str(prep.manifest_path),
        "seed": seed,
    }
    rows = subset_rows(prep, per_class)
    if resume is not None:
        run = resume if isinstance(resume, Run) else load_run(resume, reports)
        check_resume(run, cfg, identity, seed)
    else:
        finished, unfinished = find_runs(cfg, identity, reports) if skip_finished else (None, None)
        if finished is not None:
            return finished, False
        run = unfinished or new_run(run_name(cfg), reports)
    x = decoded_arrays(prep, rows, cfg.size, resize=resize, quiet=quiet)
    m = prep.manifest.iloc[rows]
    split_of = m["split"].to_numpy()
    parts = {s: np.flatnonzero(split_of == s) for s in ("train", "valid", "test")}
    for s, idx in parts.items():
        if len(idx) == 0:
            raise FeatkitError(
                f"{data}: the {s} split is empty{f' with --per-class {per_class}' if per_class else ''}: "
                "use more photos per class or another --split."
            )
    y = m["label"].to_numpy()
    extra = {
        **{k: v for k, v in identity.items() if k not in ("preset", "seed")},
        "data": str(data),
        "dataset_name": dataset_name(prep),
    }
    from featkit.cnn.train import train_cnn

    run = train_cnn(
        cfg,
        x[parts["train"]],
        y[parts["train"]],
        x[parts["valid"]],
        y[parts["valid"]],
        x[parts["test"]],
        y[parts["test"]],
        prep.classes,
        run,
        seed=seed,
        quiet=quiet,
        resume=True,
        extra_config=extra,
        test_ids=m["image_id"].to_numpy()[parts["test"]],
    )
    return run, True


def run_series(
    names: Sequence[str],
    data: str | Path,
    *,
    epochs: int | None = None,
    weights: str | None = None,
    per_class: int | None = None,
    split: str = "70/20/10",
    seed: int = 0,
    cache: str | Path = "cache",
    reports: str | Path = "reports",
    quiet: bool = False,
    on_result: Callable[[dict], None] | None = None,
) -> tuple[list[dict], list[dict]]:
    """Train the presets `names` one after another (see `series_names`), skipping finished ones and resuming
    unfinished ones. Returns (results, failures): one dict per preset {"preset", "run", "skipped", "top1", "top5",
    "fit_seconds", "seconds_per_epoch"}, and {"preset", "error"} for each that failed (the series goes on)."""
    from featkit.core.tfkeras import tf_keras

    tf_keras()  # every preset needs it: without the keras extra, one error before any preset starts
    done, failed = [], []
    for name in names:
        overrides = {"epochs": epochs, "weights": weights if PRESETS[name].model == "transfer" else None}
        try:
            run, trained = train_preset(
                name,
                data,
                overrides,
                per_class=per_class,
                split=split,
                seed=seed,
                cache=cache,
                reports=reports,
                quiet=quiet,
                skip_finished=True,
            )
        except FeatkitError as e:
            failed.append({"preset": name, "error": str(e)})
            sys.stderr.write(f"error: preset {name} failed: {e}\n")
            continue
        m = run.metrics
        result = {
            "preset": name,
            "run": run.id,
            "skipped": not trained,
            "top1": m.top1,
            "top5": m.top5,
            "fit_seconds": m.fit_seconds,
            "seconds_per_epoch": m.seconds_per_epoch,
        }
        done.append(result)
        if on_result is not None:
            on_result(result)
    return done, failed
