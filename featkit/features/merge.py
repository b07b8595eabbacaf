"""`featkit merge`: the shard files of one view (`featkit extract --shard i/n`, or the Ray engine's shards) joined
into the view's complete cache file, rows back in manifest order."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from featkit.core.errors import FeatkitError
from featkit.core.schema import StageSeconds, check_comparable
from featkit.features.cache import read_cache, write_cache


def merge(
    shard_files: list[Path], out: Path | None = None, seconds: float | None = None, extra: dict[str, Any] | None = None
) -> Path:
    """Join the shard files of one view (from `extract --shard i/n`) into the complete cache file.
    seconds: the time the whole job took (default: the shards' times added up); extra: keys for meta.extra.
    The seconds per stage are the shards' added up (None when a shard recorded none)."""
    if not shard_files:
        raise FeatkitError(
            "featkit merge needs the shard files of one view (…/plain.shard-0-of-4.h5 and its siblings)."
        )
    sets = [read_cache(p) for p in shard_files]
    metas = [s.meta for s in sets]
    shards = []
    for p, m, s in zip(shard_files, metas, sets, strict=True):
        if m.shard is None or s.row is None:
            raise FeatkitError(f"{p} is not a shard file (made without --shard): nothing to merge.")
        shards.append((int(m.shard[0]), int(m.shard[1])))
        check_comparable(
            {**metas[0].comparable_key(), **(metas[0].identity or {})},
            {**m.comparable_key(), **(m.identity or {})},
            str(shard_files[0]),
            str(p),
            "merge only the shards of one `featkit extract --shard i/n` command",
        )
    n_shards = shards[0][1]
    got = sorted(i for i, _ in shards)
    if got != list(range(n_shards)) or any(n != n_shards for _, n in shards):
        missing = sorted(set(range(n_shards)) - set(got))
        raise FeatkitError(
            f"shards {missing} of {n_shards} are missing (or some are given twice): run "
            f"`featkit extract --shard i/{n_shards}` for each, then merge again."
        )
    row = np.concatenate([s.row for s in sets if s.row is not None])
    order = np.argsort(row, kind="stable")
    seconds = round(sum(m.seconds or 0.0 for m in metas) if seconds is None else seconds, 3)
    stages = [m.stage_seconds for m in metas if m.stage_seconds is not None]
    total = StageSeconds()
    for st in stages:
        total += st
    meta = metas[0].replace(
        shard=None,
        photos=int(len(row)),
        seconds=seconds,
        failures=[f for m in metas for f in m.failures],
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        photos_per_second=round(len(row) / seconds, 2) if seconds else None,
        stage_seconds=total if len(stages) == len(metas) else None,
        extra={**metas[0].extra, "merged_from": [str(p) for p in shard_files], **(extra or {})},
    )

    def cat(xs: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(xs)[order]

    if out is None:
        if not meta.final_name:
            raise FeatkitError(f"{shard_files[0]} does not record the name of its complete file: give --out FILE.h5.")
        out = Path(shard_files[0]).with_name(meta.final_name)
    copies = [s.copy for s in sets]
    write_cache(
        out,
        cat([s.features for s in sets]),
        cat([s.labels for s in sets]),
        cat([s.split for s in sets]),
        cat([s.image_ids for s in sets]),
        meta,
        copy=cat([c for c in copies if c is not None]) if all(c is not None for c in copies) else None,
        dtype=meta.dtype,
        row=row[order],
    )
    return out


__all__ = ["merge"]
