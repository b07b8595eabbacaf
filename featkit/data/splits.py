"""Seeded, stratified, duplicate-aware train/valid/test splits, written once to a manifest CSV.

Photos that must never straddle splits are grouped first: the same content (identical bytes or identical
decoded pixels) and, for UECFOOD, the same photo filed under several classes (same image id). A featkit split
assigns whole groups. An official split (Food-101 lists, train/ test/ folders) is kept as it is; validation is
then carved out of its train part, group-aware, and groups that straddle official train and test are reported.
"""

from __future__ import annotations

import math
import numbers
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import pandas as pd

from featkit.core.errors import DamagedFileError, FeatkitError
from featkit.data.layouts import Dataset

SPLITS = ("train", "valid", "test")
# Bump when the way manifests are made changes, so older cached manifests are not reused.
MANIFEST_FORMAT = 2
MANIFEST_COLUMNS = [
    "path",
    "label",
    "class_id",
    "split",
    "image_id",
    "group",
    "sha1",
    "pixel_hash",
    "x1",
    "y1",
    "x2",
    "y2",
]


@dataclass(frozen=True)
class SplitConfig:
    train: float = 0.7
    valid: float = 0.2
    test: float = 0.1
    seed: int = 0

    def __post_init__(self):
        fr = (self.train, self.valid, self.test)
        if (
            not all(isinstance(f, numbers.Real) and math.isfinite(f) for f in fr)
            or min(fr) < 0
            or self.train <= 0
            or abs(sum(fr) - 1.0) > 1e-6
        ):
            raise FeatkitError(
                f"split fractions {self.train}/{self.valid}/{self.test} should be >= 0, train > 0, "
                "and sum to 1 (e.g. 0.7/0.2/0.1)."
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral) or self.seed < 0:
            raise FeatkitError(f"seed {self.seed!r} should be a whole number >= 0, e.g. --seed 0.")

    @classmethod
    def parse(cls, text: str, seed: int = 0) -> SplitConfig:
        """'70/20/10' or '0.7/0.2/0.1'."""
        try:
            parts = [float(p) for p in text.split("/")]
            if len(parts) != 3 or not all(math.isfinite(p) and p >= 0 for p in parts) or parts[0] <= 0:
                raise ValueError
        except ValueError:
            raise FeatkitError(
                f"--split {text!r} should be three numbers train/valid/test, >= 0 with train > 0, e.g. 70/20/10."
            ) from None
        total = sum(parts)
        if abs(total - 100) > 1e-6 and abs(total - 1) > 1e-9:
            raise FeatkitError(
                f"--split {text!r} should be three numbers train/valid/test summing to 100 (e.g. "
                f"70/20/10) or to 1 (0.7/0.2/0.1); these sum to {total:g}."
            )
        # rounded so that 70/20/10 and 0.7/0.2/0.1 give the very same fractions (and so the same split)
        train, valid, test = (round(p / total, 12) for p in parts)
        return cls(train, valid, test, seed=seed)

    @property
    def key(self) -> str:
        """70-20-10-s0; fractional percentages keep their decimals so that 70.4/19.6/10 does not reuse 70/20/10."""
        pct = [f"{round(f * 100, 4):g}" for f in (self.train, self.valid, self.test)]
        return f"{'-'.join(pct)}-s{self.seed}"


class _UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def group_items(frame: pd.DataFrame, same_id_is_same_photo: bool) -> np.ndarray:
    """Group index per row: rows sharing sha1, pixel_hash (or, for UEC, image_id) share a group."""
    uf = _UnionFind(len(frame))
    keys = ["sha1", "pixel_hash"] + (["image_id"] if same_id_is_same_photo else [])
    for key in keys:
        first: dict[str, int] = {}
        for i, v in enumerate(frame[key].tolist()):
            if not v:
                continue
            if v in first:
                uf.union(first[v], i)
            else:
                first[v] = i
    return np.array([uf.find(i) for i in range(len(frame))])


def _assign(
    groups_by_class: dict[int, list[int]],
    fractions: tuple[float, float, float],
    rng: np.random.Generator,
    class_names: list[str],
    warnings: list[str],
) -> dict[int, str]:
    """Split each class's groups into train/valid/test by the given fractions (of that class's groups)."""
    out: dict[int, str] = {}
    _, f_valid, f_test = fractions
    held_out = [s for s, f in (("valid", f_valid), ("test", f_test)) if f > 0]
    for label in sorted(groups_by_class):
        groups = sorted(groups_by_class[label])
        rng.shuffle(groups)
        n = len(groups)
        if n == 1:
            if held_out:
                warnings.append(
                    f"class {class_names[label]!r} has one photo (or one set of identical photos): "
                    "it cannot be stratified, so it stays in train"
                )
            out[groups[0]] = "train"
            continue
        n_test = int(math.floor(n * f_test + 0.5 + 1e-9))  # round half up, the same for every n (and float noise)
        n_valid = int(math.floor(n * f_valid + 0.5 + 1e-9))
        if n_test + n_valid >= n:  # keep at least one training photo per class
            n_test = min(n_test, n - 1)
            n_valid = n - 1 - n_test
        if held_out and n_test + n_valid == 0:
            warnings.append(
                f"class {class_names[label]!r} has only {n} photos: all stay in train, none in {' or '.join(held_out)}"
            )
        for j, g in enumerate(groups):
            out[g] = "test" if j < n_test else "valid" if j < n_test + n_valid else "train"
    return out


def make_manifest(ds: Dataset, scan: pd.DataFrame, cfg: SplitConfig) -> tuple[pd.DataFrame, list[str]]:
    """The manifest (one row per readable photo) and warnings. Same inputs give the same rows in the same order."""
    warnings: list[str] = []
    info = scan.set_index("path")
    rows = []
    for it in ds.items:
        s = info.loc[it.path]
        if s["error"]:
            continue  # unreadable: reported by the summary, never in a split
        box = it.box or ("", "", "", "")
        rows.append(
            (
                it.path,
                it.label,
                ds.classes[it.label].id,
                it.official_split or "",
                it.image_id,
                0,
                s["sha1"],
                s["pixel_hash"],
                *box,
            )
        )
    frame = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    if frame.empty:
        raise FeatkitError(
            f"{ds.source.origin}: no readable photos found; run `featkit data check {ds.source.origin}` to see why."
        )
    frame = frame.sort_values(["label", "path"], kind="stable").reset_index(drop=True)
    group = group_items(frame, same_id_is_same_photo=ds.layout == "uec")
    frame["group"] = group
    names = [c.name for c in ds.classes]
    rng = np.random.default_rng(cfg.seed)
    labels = frame["label"].to_numpy()

    if ds.has_official_split:
        official = frame["split"].to_numpy()
        pool = np.flatnonzero(official == "train")
        # groups with a member outside official train straddle the official splits: their train members stay
        # in train (kept where the official lists put them, and reported) rather than moving to valid
        pinned = set(group[official != "train"].tolist())
        # validation carved from official train keeps the train:valid ratio of the config
        f_valid = cfg.valid / (cfg.train + cfg.valid) if (official == "valid").sum() == 0 else 0.0
        by_class: dict[int, list[int]] = defaultdict(list)
        for g in sorted(set(group[pool].tolist()) - pinned):
            by_class[int(labels[g])].append(g)  # a group's class: that of its first row
        assigned = _assign(by_class, (1 - f_valid, f_valid, 0.0), rng, names, warnings)
        new = official.copy()
        new[pool] = [assigned.get(g, "train") for g in group[pool]]
        frame["split"] = new
        _warn_straddling(frame, official, warnings)
    else:
        by_class = defaultdict(list)
        for g in sorted(set(group.tolist())):
            by_class[int(labels[g])].append(g)
        assigned = _assign(by_class, (cfg.train, cfg.valid, cfg.test), rng, names, warnings)
        frame["split"] = [assigned[g] for g in group]
    frame["group"] = _group_keys(frame, group)
    return frame, warnings


def _group_keys(frame: pd.DataFrame, group: np.ndarray) -> list[str]:
    """A readable key per group: its first photo's id, or its path where two groups would share an id."""
    ids, paths = frame["image_id"].tolist(), frame["path"].tolist()
    roots = sorted(set(group.tolist()))
    owners: dict[str, int] = defaultdict(int)
    for g in roots:
        owners[ids[g]] += 1
    key = {g: ids[g] if owners[ids[g]] == 1 else paths[g] for g in roots}
    return [key[g] for g in group.tolist()]


def _warn_straddling(frame: pd.DataFrame, official: np.ndarray, warnings: list[str]) -> None:
    """One warning per group of identical photos that the official split puts in more than one split."""
    for _, idx in sorted(frame.groupby("group").indices.items()):
        if len(idx) < 2 or len(set(official[idx])) < 2:
            continue
        members = " = ".join(f"{frame['image_id'].iat[i]} ({official[i]})" for i in idx)
        warnings.append(
            f"identical photos straddle the official splits, kept where the official split puts them: {members}"
        )


def write_manifest(frame: pd.DataFrame, path) -> None:
    from featkit.core.fileio import atomic_path

    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, lineterminator="\n")


def read_manifest(path, ds: Dataset | None = None, scan: pd.DataFrame | None = None) -> pd.DataFrame:
    """A manifest featkit wrote, checked: a garbage, empty, truncated or edited file (a missing column, a label
    out of range or not matching its class, an unknown split, a photo not in the dataset, or not exactly the
    readable photos of the scan) is refused in one line."""
    fix = "delete it and run the command again: featkit writes it anew from the scan"
    try:
        frame = pd.read_csv(
            path,
            dtype={"class_id": str, "image_id": str, "group": str, "sha1": str, "pixel_hash": str, "split": str},
            keep_default_na=False,
        )
    except (ValueError, OSError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DamagedFileError(
            path, f"{path} is damaged ({str(e).splitlines()[0] if str(e) else type(e).__name__}): {fix}."
        ) from None
    missing = [c for c in MANIFEST_COLUMNS if c not in frame.columns]
    if missing or frame.empty:
        what = f"no column {', '.join(missing)}" if missing else "no rows"
        raise DamagedFileError(path, f"{path} is damaged ({what}): {fix}.")
    problem = None
    labels = pd.to_numeric(frame["label"], errors="coerce")
    if labels.isna().any() or (labels % 1 != 0).any():
        problem = "a label that is not a whole number"
    elif not frame["split"].isin(SPLITS).all():
        problem = f"a split other than {'/'.join(SPLITS)}: {sorted(set(frame['split']) - set(SPLITS))[0]!r}"
    elif ds is not None:
        ids = [c.id for c in ds.classes]
        bad = (labels < 0) | (labels >= len(ids))
        if bad.any():
            problem = f"label {int(labels[bad].iloc[0])} for {len(ids)} classes"
        elif (frame["class_id"].to_numpy() != np.asarray(ids, dtype=object)[labels.astype(int).to_numpy()]).any():
            problem = "a label that does not match its class_id"
        else:
            known = {it.path for it in ds.items}
            stray = [p for p in frame["path"] if p not in known]
            if stray:
                problem = f"photo {stray[0]} that is not in the dataset"
            elif scan is not None:
                readable = known & set(scan.loc[scan["error"] == "", "path"])
                if len(frame) != len(readable) or set(frame["path"]) != readable:
                    problem = f"{len(frame)} rows for the {len(readable)} readable photos of the scan"
    if problem:
        raise DamagedFileError(path, f"{path} is damaged or was edited ({problem}): {fix}.")
    frame["label"] = labels.astype(np.int64)
    return frame
