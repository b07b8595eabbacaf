"""What `featkit extract` runs: the dataset, the int8 copy of the backbone when asked, then the views on the
local engine (this process) or on a Ray cluster. Sits above `extract`, `quantize` and `ray_engine`, which do not
import each other's orchestration."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from .data import SplitConfig, prepare
from .data.summary import unreadable_note
from .errors import FeatkitError
from .extract import ExtractOptions, ViewResult, extract

ENGINES = ("local", "ray")


def extract_features(data: str | Path, opts: ExtractOptions, cache_dir: str | Path = "cache",
                     split: SplitConfig | None = None, engine: str = "local", address: str | None = None,
                     workers: int | None = None, quiet: bool = False, command: str | None = None,
                     rescan: bool = False) -> list[ViewResult]:
    """Every view `opts` asks for, one ViewResult each. `engine`: "local" or "ray" (`address`, `workers`: the
    Ray cluster and its actors); `command`: the command line to quote when a Ray job must be re-run; `rescan`:
    decode every photo again instead of trusting the cached scan. How many photos were left out as unreadable,
    and where they are listed, is said on stderr."""
    if engine not in ENGINES:
        raise FeatkitError(f"--engine {engine!r}: expected {' or '.join(ENGINES)}.")
    if engine == "local" and (address or workers):
        raise FeatkitError("--address and --workers apply to --engine ray only.")
    split = split or SplitConfig()
    prep = None
    if opts.precision == "int8":  # quantise once into cache/models/, then extract with that model
        from .quantize import ensure_int8

        prep = prepare(data, cache_dir=cache_dir, split=split, quiet=quiet, rescan=rescan)
        opts = replace(opts, backbone=str(ensure_int8(prep, opts, cache_dir, quiet=quiet)))
    if engine == "ray":  # checks its options and Ray before it reads the dataset; its workers prepare their own
        from .ray_engine import extract_on_ray

        return extract_on_ray(data, opts, cache_dir, split, address=address, workers=workers, quiet=quiet,
                              command=command)
    prep = prep or prepare(data, cache_dir=cache_dir, split=split, quiet=quiet, rescan=rescan)
    results = extract(prep, opts, cache_dir=cache_dir, quiet=quiet)
    note = unreadable_note(prep, data)
    if note:
        print(f"warning: {note}", file=sys.stderr)
    return results


__all__ = ["extract_features", "ENGINES"]
