"""Workers that die on cue, for the Ray fault tests: injected by the test through `run_tasks`'s `setup`
argument, so that production code carries no test hook.

    monkeypatch.setattr(ray_shards, "run_tasks", dying_run_tasks(after=32, marker=tmp_path / "crashed"))

Each worker's `setup` first makes that worker process exit at once (`os._exit`, as if killed) when the work it
runs has reported `after` units of progress (`ray_tasks.report_progress`); with `marker`, only the first worker
to get there dies (it creates the file). The module is pickled by value, so Ray workers need not import it.
"""

from __future__ import annotations

import os
import sys
from functools import partial
from pathlib import Path
from typing import Any


def _die_after(after: int, marker: str | None, setup: Any) -> Any:
    """Runs on the worker, once, before the real setup: wraps the progress reporter the work calls."""
    import featkit.features.ray_shards as shards

    report = shards.report_progress
    done = 0

    def reporting(n: int) -> None:
        nonlocal done
        report(n)
        done += n
        if done < after:
            return
        if marker:
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                return
        os._exit(1)

    shards.report_progress = reporting
    return setup() if setup is not None else None


def dying_run_tasks(after: int, marker: Path | None = None):
    """A stand-in for `featkit.core.ray_tasks.run_tasks` whose workers die as described above."""
    from ray import cloudpickle

    from featkit.core.ray_tasks import run_tasks

    cloudpickle.register_pickle_by_value(sys.modules[__name__])

    def run(fn, items, *, setup=None, **kw):
        return run_tasks(fn, items, setup=partial(_die_after, after, str(marker) if marker else None, setup), **kw)

    return run
