"""What `featkit data summary` and `featkit data check` report."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from featkit.data import Prepared
from featkit.data.splits import group_items


def duplicate_groups(prep: Prepared) -> tuple[list[list[int]], list[list[int]]]:
    """(duplicate groups, multi-class photo groups) as lists of manifest row indices.

    A duplicate group is two or more photos with identical bytes or decoded pixels. On UECFOOD, the same photo
    filed under several classes (same image id) is a multi-dish photo, counted on its own.
    """
    m = prep.manifest
    content = group_items(m, same_id_is_same_photo=False)
    dups, multi = [], []
    for idx in _groups(content):
        ids = set(m["image_id"].iloc[idx])
        if prep.dataset.layout == "uec" and len(ids) == 1:
            multi.append(idx)
        else:
            dups.append(idx)
    if prep.dataset.layout == "uec":  # same id, different bytes (e.g. re-encoded): still one photo
        seen = {i for g in multi for i in g}
        for idx in _groups(m["image_id"].factorize()[0]):
            if not seen.intersection(idx) and len(set(m["label"].iloc[idx])) > 1:
                multi.append(idx)
    return dups, multi


def _groups(keys: np.ndarray) -> list[list[int]]:
    order: dict[int, list[int]] = {}
    for i, k in enumerate(keys.tolist()):
        order.setdefault(k, []).append(i)
    return [v for v in order.values() if len(v) > 1]


def summarize(prep: Prepared) -> dict[str, Any]:
    ds, m, scan = prep.dataset, prep.manifest, prep.scan
    per_class = np.bincount(m["label"].to_numpy(), minlength=len(ds.classes))
    readable = scan[scan["error"] == ""]
    unreadable = scan[scan["error"] != ""]
    dups, multi = duplicate_groups(prep)

    def describe(idx: list[int]) -> dict:
        rows = m.iloc[idx]
        return {
            "photos": [
                {"path": r.path, "class": r.class_id, "image_id": r.image_id, "split": r.split}
                for r in rows.itertuples()
            ],
            "across_splits": rows["split"].nunique() > 1,
            "across_classes": rows["label"].nunique() > 1,
        }

    dup_list = [describe(g) for g in dups]
    official = Counter(it.official_split for it in ds.items if it.official_split)
    return {
        "path": str(ds.source.origin),
        "layout": ds.layout,
        "root": ds.root,
        "fingerprint": prep.fingerprint,
        "classes": len(ds.classes),
        "class_list": prep.dataset.class_dicts(),
        "photos": len(ds.items),
        "photos_readable": len(m),
        "photos_per_class": {
            "min": int(per_class.min()),
            "median": float(np.median(per_class)),
            "max": int(per_class.max()),
        },
        "official_split": dict(official),
        "splits": {s: int((m["split"] == s).sum()) for s in ("train", "valid", "test")},
        "split_config": {
            "train": prep.split.train,
            "valid": prep.split.valid,
            "test": prep.split.test,
            "seed": prep.split.seed,
        },
        "manifest": str(prep.manifest_path),
        "duplicates": {
            "groups": len(dups),
            "pairs": sum(len(g) * (len(g) - 1) // 2 for g in dups),
            "across_splits": sum(d["across_splits"] for d in dup_list),
            "across_classes": sum(d["across_classes"] for d in dup_list),
            "list": dup_list,
        },
        "multi_class_photos": len(multi),
        "unreadable": [{"path": r.path, "error": r.error} for r in unreadable.itertuples()],
        "ignored_files": [{"path": p, "why": why} for p, why in ds.ignored],
        "image_size": {
            "width": [int(readable["width"].min()), int(readable["width"].max())] if len(readable) else None,
            "height": [int(readable["height"].min()), int(readable["height"].max())] if len(readable) else None,
        },
        "warnings": prep.warnings,
    }


def format_summary(s: dict[str, Any], limit: int = 10) -> str:
    out = [
        f"dataset   {s['path']}",
        f"layout    {s['layout']}" + (f" (root {s['root']}/)" if s["root"] else ""),
        f"classes   {s['classes']}: "
        + ", ".join(c["name"] for c in s["class_list"][:8])
        + (", ..." if s["classes"] > 8 else ""),
        f"photos    {s['photos']:,} ({s['photos_readable']:,} readable); per class min/median/max "
        f"{s['photos_per_class']['min']}/{s['photos_per_class']['median']:g}/{s['photos_per_class']['max']}",
    ]
    if s["official_split"]:
        out.append("official  " + ", ".join(f"{k} {v:,}" for k, v in sorted(s["official_split"].items())))
    sp = s["splits"]
    out.append(f"splits    train {sp['train']:,} / valid {sp['valid']:,} / test {sp['test']:,}   -> {s['manifest']}")
    w, h = s["image_size"]["width"], s["image_size"]["height"]
    if w:
        out.append(f"size      width {w[0]}-{w[1]} px, height {h[0]}-{h[1]} px")
    d = s["duplicates"]
    out.append(
        f"duplicates {d['pairs']} pairs in {d['groups']} groups of identical photos "
        f"({d['across_splits']} across splits, {d['across_classes']} across classes)"
    )
    for g in d["list"][:limit]:
        out.append("    " + " = ".join(f"{p['image_id']} ({p['split']})" for p in g["photos"]))
    if len(d["list"]) > limit:
        out.append(f"    ... {len(d['list']) - limit} more (--json lists all)")
    if s["layout"] == "uec":
        out.append(f"multi-dish photos filed under several classes: {s['multi_class_photos']} (each kept in one split)")
    out.append(f"unreadable {len(s['unreadable'])} photos" + (" (not in any split):" if s["unreadable"] else ""))
    out.extend(f"    {u['path']}: {u['error']}" for u in s["unreadable"][:limit])
    if s["ignored_files"]:
        out.append(f"ignored   {len(s['ignored_files'])} files that are not photos of a class:")
        out.extend(f"    {f['path']}: {f['why']}" for f in s["ignored_files"][:limit])
    if s["warnings"]:
        out.append(f"warnings  {len(s['warnings'])}:")
        out.extend(f"    {w}" for w in s["warnings"][:limit])
        if len(s["warnings"]) > limit:
            out.append(f"    ... {len(s['warnings']) - limit} more (--json lists all)")
    return "\n".join(out)


def unreadable_note(prep: Prepared, data) -> str:
    """How many photos the scan found unreadable (left out of every split) and where they are listed; "" if none."""
    n = int((prep.scan["error"] != "").sum())
    return (
        (
            f"{n} unreadable photo{'s' if n != 1 else ''} left out of every split: listed in {prep.dir / 'scan.csv'} "
            f"(column error) and by `featkit data check {data}`"
        )
        if n
        else ""
    )
