"""`featkit predict`: top-k dish names for new photos, through the same backbone and preprocessing as the run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from featkit.core.errors import FeatkitError
from featkit.data.images import RESIZE_MODES, load_images
from featkit.data.layouts import is_image, natural_key
from featkit.heads import load_run_head
from featkit.runs.store import DEFAULT_REPORTS, Run, load_run


def expand_photos(paths: list[Path]) -> list[Path]:
    """Files as given; folders become the photos inside them (recursively, natural order)."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(
                sorted((f for f in p.rglob("*") if f.is_file() and is_image(f.name)), key=lambda f: natural_key(str(f)))
            )
        elif p.exists():
            out.append(p)
        else:
            raise FeatkitError(f"{p} does not exist: give photo files or folders of photos.")
    return out


def _probabilities(run: Run, images: np.ndarray) -> np.ndarray:
    cfg = run.config
    if cfg.kind == "head":
        from featkit.backbones import get_backbone_from_spec

        if cfg.backbone is None:
            raise FeatkitError(
                f"run {run.id} has no backbone spec in config.json: it cannot see photos; "
                "re-fit it from a featkit cache."
            )
        features = get_backbone_from_spec(cfg.backbone)(images)
        return load_run_head(run).predict_proba(features)
    if cfg.kind == "cnn":
        from featkit.cnn.train import predict_images

        return predict_images(run, images)
    raise FeatkitError(f"run {run.id} is an {cfg.kind} run: predict needs a head or CNN run that can see photos.")


def predict(
    run_ref: str | Path, photos: list[Path], top: int = 5, reports: str | Path = DEFAULT_REPORTS, batch_size: int = 64
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """(predictions [{"path", "top": [{"class", "name", "probability"}]}], failures [{"path", "error"}])."""
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise FeatkitError(f"--top {top} should be 1 or more classes to show per photo.")
    run = load_run(run_ref, reports)
    cfg, classes = run.config, run.classes
    if top < 1:
        raise FeatkitError(f"--top {top}: show at least 1 class per photo.")
    if cfg.kind == "ensemble" or (cfg.backbone is not None and cfg.backbone.kind == "combined"):
        raise FeatkitError(
            f"run {run.id} combines several caches or runs; predict works with a run fitted on one "
            "cache (or a CNN run): pick one of its member runs."
        )
    if isinstance(cfg.size, bool) or not isinstance(cfg.size, int) or cfg.size < 1 or cfg.resize not in RESIZE_MODES:
        raise FeatkitError(
            f"{run.path / 'config.json'} is damaged (size {cfg.size!r}, resize {cfg.resize!r}): "
            "re-run the command that made the run."
        )
    files = expand_photos(photos)
    results, failures = [], []
    for start in range(0, len(files), batch_size):
        names = [str(f) for f in files[start : start + batch_size]]
        images, failed = load_images(
            lambda p: Path(p).read_bytes(), names, int(cfg.size), cfg.resize, decode=cfg.decode
        )
        failures += [{"path": f.path, "error": f"cannot read this photo ({f.error}); skipped"} for f in failed]
        bad = {f.index for f in failed}
        ok = [i for i in range(len(names)) if i not in bad]
        if not ok:
            continue
        probs = _probabilities(run, images[ok])
        run.check_n_classes(probs.shape[1], "the model")
        k = min(top, probs.shape[1])
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        for i, p, idx in zip(ok, probs, order, strict=True):
            results.append(
                {
                    "path": names[i],
                    "top": [
                        {"class": classes[j].id, "name": classes[j].name, "probability": round(float(p[j]), 6)}
                        for j in idx
                    ],
                }
            )
    return results, failures
