"""What `featkit extract` runs: the dataset, the int8 copy of the backbone when asked, then the views on the
local engine (this process) or on a Ray cluster. Sits above `extract`, `quantize` and `ray_engine`, which do not
import each other's orchestration."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from featkit.core.errors import FeatkitError
from featkit.core.tfkeras import require_keras
from featkit.data import Prepared, SplitConfig, prepare
from featkit.data.summary import unreadable_note
from featkit.features.extract import ExtractOptions, ViewResult, extract, find_plain_cache, resolve_backbone

ENGINES = ("local", "ray")


def extract_features(
    data: str | Path,
    opts: ExtractOptions,
    cache_dir: str | Path = "cache",
    split: SplitConfig | None = None,
    engine: str = "local",
    address: str | None = None,
    workers: int | None = None,
    quiet: bool = False,
    command: str | None = None,
    rescan: bool = False,
) -> list[ViewResult]:
    """Every view `opts` asks for, one ViewResult each. `engine`: "local" or "ray" (`address`, `workers`: the
    Ray cluster and its actors); `command`: the command line to quote when a Ray job must be re-run; `rescan`:
    decode every photo again instead of trusting the cached scan. How many photos were left out as unreadable,
    and where they are listed, is said on stderr."""
    if engine not in ENGINES:
        raise FeatkitError(f"--engine {engine!r}: expected {' or '.join(ENGINES)}.")
    if engine == "local" and (address or workers is not None):
        raise FeatkitError("--address and --workers apply to --engine ray only.")
    from featkit.backbones.onnx_model import onnx_threads
    from featkit.core.ray_tasks import check_workers

    check_workers(workers)
    onnx_threads()  # FEATKIT_ONNX_THREADS checked even when every view is up to date and no model is loaded
    split = split or SplitConfig()
    if resolve_backbone(opts).kind == "keras":  # before the dataset is read: a Keras backbone needs the extra
        require_keras()
    prep = None
    if opts.precision == "int8":  # quantise once into cache/models/, then extract with that model
        from featkit.features.quantize import ensure_int8

        prep = prepare(data, cache_dir=cache_dir, split=split, quiet=quiet, rescan=rescan)
        # the int8 model holds the weights and pooling: it is an ONNX backbone like any other
        opts = replace(
            opts, backbone=str(ensure_int8(prep, opts, cache_dir, quiet=quiet)), weights="imagenet", pooling="avg"
        )
    if engine == "ray":  # checks its options and Ray before it reads the dataset; its workers prepare their own
        from featkit.features.ray_shards import extract_on_ray

        results = extract_on_ray(
            data, opts, cache_dir, split, address=address, workers=workers, quiet=quiet, command=command
        )
        prep = prep or prepare(data, cache_dir=cache_dir, split=split, quiet=True)  # the scan is cached by now
    else:
        prep = prep or prepare(data, cache_dir=cache_dir, split=split, quiet=quiet, rescan=rescan)
        results = extract(prep, opts, cache_dir=cache_dir, quiet=quiet)
    note = unreadable_note(prep, data)
    if note:
        print(f"warning: {note}", file=sys.stderr)
    return results


def find_plain_caches(
    prep: Prepared, backbones: list[str], sizes: Sequence[int | None], cache_dir: str | Path = "cache", **options: Any
) -> list[Path]:
    """The plain-view cache of each backbone x size (None: the backbone's native size) that `featkit extract`
    made from `prep` with `options` (other ExtractOptions fields: weights, pooling, resize, decode, precision...),
    in that order. With precision int8, the cache of the backbone's int8 copy in cache/models/."""
    out = []
    for b in backbones:
        for s in sizes or [None]:
            opts = ExtractOptions(backbone=b, size=s, **options)
            if opts.precision == "int8":
                from featkit.features.quantize import int8_model

                opts = replace(opts, backbone=str(int8_model(prep, opts, cache_dir)), weights="imagenet", pooling="avg")
            out.append(find_plain_cache(prep, opts, cache_dir))
    return out


__all__ = ["extract_features", "find_plain_caches", "ENGINES"]
