"""The study's figures beside featkit's: one row per CNN preset run (`study_comparison`), and the section of
reports/results.md built from it, with the robustness figures of CNN runs (`study_section`).

The study trained and scored on UECFOOD-256 (its own 70/20/10 split); a featkit run on another dataset (the shared
zip is Food-101) or with other settings (fewer epochs, a few photos per class) is listed with what differs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from featkit.cnn.presets import PRESETS, STUDY_DATASET, Preset, format_seconds_range
from featkit.core.errors import FeatkitError
from featkit.core.schema import RunConfig, RunMetrics
from featkit.runs.store import DEFAULT_REPORTS, Run, list_runs
from featkit.runs.summary import dataset_name

COMPARISON_COLUMNS = (
    "run_id",
    "preset",
    "study_row",
    "study_top1",
    "study_top5",
    "featkit_top1",
    "featkit_top5",
    "dataset",
    "n_train",
    "epochs",
    "study_s_per_epoch",
    "featkit_s_per_epoch",
    "differs",
)

# The study's robustness test (digest section 5): its best model, VGG16 at 128 px, on "perturbed" test tensors.
STUDY_SENSITIVITY = (
    {"rotation": 45, "height_shift": 0.1, "width_shift": 0.1, "flips": "none", "top1": 21.7285, "top5": 49.0040},
    {
        "rotation": 45,
        "height_shift": 0.1,
        "width_shift": 0.1,
        "flips": "horizontal+vertical",
        "top1": 21.7285,
        "top5": 49.0040,
    },
    {
        "rotation": 180,
        "height_shift": 0.3,
        "width_shift": 0.4,
        "flips": "horizontal+vertical",
        "top1": 21.7285,
        "top5": 49.0040,
    },
)
ROBUSTNESS_REMARK = (
    "The study's robustness rows (VGG16, 128 px, table below) are all 21.7285 % / 49.0040 %: exactly its "
    "unperturbed score (709 and 1,599 of 3,263 test photos), where one changed prediction would move top-1 by "
    "0.03 points. No change at all under 180-degree rotations and vertical flips is implausible: the perturbations "
    "were most likely never applied to the test tensors, so the study's robustness is untested "
    "(study digest, section 5 and A4). featkit scores transformed test photos."
)


def _dataset_name(config: RunConfig) -> str:
    return dataset_name(config)


def _dataset_label(config: RunConfig) -> str:
    """The dataset as the study table shows it: its name and class count (the study's has 256 classes)."""
    name = dataset_name(config)
    return f"{name} ({config.n_classes} classes)" if config.n_classes else name


def _differences(cfg: Preset, config: RunConfig, metrics: RunMetrics) -> list[str]:
    """What makes a run not the study's row: other data, fewer photos, changed settings."""
    out = []
    name = _dataset_name(config)
    if name != STUDY_DATASET:
        out.append(f"dataset {name}")
    if config.per_class:
        out.append(f"{config.per_class} photos per class and split")
    for key, want in cfg.training_settings().items():
        if key in ("name",) or key not in config.params:
            continue
        have = config.params[key]
        if isinstance(want, tuple):
            want = list(want)
        if have != want and not (cfg.model == "custom" and key in ("weights", "backbone")):
            out.append(f"{key} {have} (preset {want})")
    if metrics.stopped_early:
        out.append(f"stopped early after {metrics.epochs_run} epochs")
    return out


def _pct(v: Any) -> float | None:
    return None if v is None else round(100.0 * float(v), 2)


def study_comparison(reports: str | Path = DEFAULT_REPORTS):
    """One row per finished CNN run of a study preset (ordered by study row, newest run first), with
    COMPARISON_COLUMNS: the study's top-1 / top-5 (%) and s/epoch on UECFOOD-256 beside featkit's on the data the
    run used (`dataset`, `n_train` photos), and `differs`: what is not as the study ran it. A DataFrame."""
    import pandas as pd

    rows: list[dict[str, Any]] = []
    for run in list_runs(reports):
        try:
            config, metrics = run.config, run.metrics
        except (OSError, FeatkitError):
            continue
        preset = PRESETS.get(config.name)
        if config.kind != "cnn" or preset is None:
            continue
        spe = metrics.seconds_per_epoch
        rows.append(
            {
                "run_id": run.id,
                "preset": preset.name,
                "study_row": preset.study_row,
                "study_top1": preset.study_top1,
                "study_top5": preset.study_top5,
                "featkit_top1": _pct(metrics.top1),
                "featkit_top5": _pct(metrics.top5),
                "dataset": _dataset_label(config),
                "n_train": config.extra.get("n_train"),
                "epochs": f"{'?' if metrics.epochs_run is None else metrics.epochs_run} / "
                f"{preset.epochs if preset.model == 'custom' else 'n/s'}",
                "study_s_per_epoch": format_seconds_range(preset.study_epoch_seconds) or None,
                "featkit_s_per_epoch": None if spe is None else round(float(spe), 1),
                "differs": "; ".join(_differences(preset, config, metrics)),
            }
        )
    rows.sort(key=lambda r: r["study_row"])  # stable: newest run first within a row, as list_runs gives them
    return pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))


def _robustness(run: Run) -> list[str]:
    """Markdown lines for one CNN run's sensitivity.csv, with a check that its perturbed rows differ from plain."""
    import pandas as pd

    from featkit.core.tables import markdown_table

    df = pd.read_csv(run.path / "sensitivity.csv")
    lines = [f"Run `{run.id}` ({run.config.name}):", "", markdown_table(df), ""]
    if {"view", "top1", "top5"} <= set(df.columns) and (df["view"] == "plain").any():
        plain = df[df["view"] == "plain"].iloc[0]
        others = df[df["view"] != "plain"]
        same = others[(others["top1"] == plain["top1"]) & (others["top5"] == plain["top5"])]
        if len(others) and len(same) == len(others):
            lines += [
                "**Every perturbed row equals the plain score, as in the study: check that the perturbations "
                "were applied.**",
                "",
            ]
        elif len(others):
            lines += [
                f"{len(others) - len(same)} of {len(others)} perturbed rows differ from the plain score "
                "(the perturbations changed predictions).",
                "",
            ]
    return lines


def study_section(reports: str | Path = DEFAULT_REPORTS) -> str:
    """The "Study vs featkit" section of reports/results.md ('' when there is no CNN run of a study preset)."""
    from featkit.core.tables import markdown_table

    df = study_comparison(reports)
    if df.empty:
        return ""
    lines = [
        "## Study vs featkit (CNN series)",
        "",
        f"Top-1 / top-5 in %. Study: its {STUDY_DATASET} test split (`featkit train-cnn --list`); featkit: the "
        "test split of the dataset named. `epochs`: run / the study's (n/s: not stated); `differs`: what is "
        "not as the study ran it.",
        "",
        markdown_table(df),
        "",
    ]
    sens = [r for r in list_runs(reports) if (r.path / "sensitivity.csv").exists() and r.config.kind == "cnn"]
    if sens:
        import pandas as pd

        lines += [
            "### Robustness of CNN runs",
            "",
            ROBUSTNESS_REMARK,
            "",
            "The study's rows:",
            "",
            markdown_table(pd.DataFrame(list(STUDY_SENSITIVITY))),
            "",
        ]
        for run in sens:
            lines += _robustness(run)
    return "\n".join(lines)
