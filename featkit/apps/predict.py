"""`featkit predict`: top-k dish names for new photos with any run (head, multi-cache, mirrored view, ensemble, CNN),
through the same backbones, decoding and calibration as the run (the plan: featkit.apps.run_model)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from featkit.apps.run_model import RunModel, load_plan, resolve_run
from featkit.core.errors import FeatkitError
from featkit.data.layouts import is_image, natural_key
from featkit.runs.store import DEFAULT_REPORTS


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


def predict(
    run_ref: str | Path,
    photos: list[Path],
    top: int = 5,
    reports: str | Path = DEFAULT_REPORTS,
    batch_size: int = 64,
    quiet: bool = True,
    say: Callable[[str], None] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """(predictions [{"path", "top": [{"class", "name", "probability"}]}], failures [{"path", "error"}]).

    `run_ref`: a run id, folder, "latest", "sweep:latest" or "sweep:<id>" (featkit.apps.run_model.resolve_run);
    any run kind (head on one or several caches, with or without the mirrored view, ensemble, CNN). `say` gets one
    line naming the run taken when the reference was "latest" or a sweep. Probabilities are the run's calibrated
    ones, computed from the photos as the run's test photos were (featkit.apps.run_model)."""
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise FeatkitError(f"--top {top} should be 1 or more classes to show per photo.")
    run, note = resolve_run(run_ref, reports)
    if note and say is not None:
        say(note)
    plan = load_plan(run, reports)
    classes = plan.classes
    files = expand_photos(photos)
    model = RunModel(plan, batch_size=batch_size, quiet=quiet)
    probs, ok, failed = model.predict_files([str(f) for f in files])
    failures = [{"path": f.path, "error": f"cannot read this photo ({f.error}); skipped"} for f in failed]
    k = min(top, plan.n_classes)
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    results = [
        {
            "path": str(files[i]),
            "top": [
                {"class": classes[j]["id"], "name": classes[j]["name"], "probability": round(float(p[j]), 6)}
                for j in idx
            ],
        }
        for i, p, idx in zip(ok, probs, order, strict=True)
    ]
    return results, failures
