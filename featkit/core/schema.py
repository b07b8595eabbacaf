"""The contract between featkit's stages: what a feature cache and a run folder record, as dataclasses.

    BackboneSpec   what identifies a backbone's features (kind, name, weights hash, size, pooling, ...)
    CacheMeta      the attributes of a feature cache (.h5): dataset, split, classes, view, backbone, counts, time
    RunConfig      a run folder's config.json (head, CNN and ensemble runs alike)
    RunMetrics     a run folder's metrics.json

This module owns the field names: readers use the attributes, never a guessed key. Each class converts with
`to_dict()` / `from_dict()`; files carry `SCHEMA_VERSION` under "schema". A file without it was written by featkit
0.1 (schema 1) and is converted on read; a file from a newer featkit, or one that is not a dict, fails with one
line naming the file and the command that rebuilds it. Keys this module does not know are kept in `extra` and
written back unchanged, so a field added by a newer stage survives a round trip.

Comparability: `comparable_key()` gives the fields that make two sets of features (or a run and a cache)
interchangeable; `check_comparable` is the one check every caller uses, and its error names each differing field
with both values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from featkit.core.errors import FeatkitError

SCHEMA_VERSION = 2

RUN_KINDS = ("head", "cnn", "ensemble")


def _split_known(cls, d: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
    known = {k: v for k, v in d.items() if k in names}
    extra = {k: v for k, v in d.items() if k not in names and k != "schema"}
    return known, extra


def _record(obj: Any, versioned: bool = True) -> dict[str, Any]:
    """The dataclass as a flat dict: its extras, then its fields (a nested BackboneSpec as a dict), then the schema."""
    d = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.name != "extra"}
    d = {k: v.to_dict() if isinstance(v, BackboneSpec) else v for k, v in d.items()}
    return {**obj.extra, **d, **({"schema": SCHEMA_VERSION} if versioned else {})}


def _check_version(d: Any, what: str, rebuild: str) -> int:
    if not isinstance(d, Mapping):
        raise FeatkitError(f"{what} does not hold a JSON object as featkit writes it: {rebuild}.")
    version = d.get("schema", 1)
    if not isinstance(version, int) or version < 1:
        raise FeatkitError(f"{what} has an unreadable schema version {version!r}: {rebuild}.")
    if version > SCHEMA_VERSION:
        raise FeatkitError(
            f"{what} was written by a newer featkit (schema {version}, this one reads up to "
            f"{SCHEMA_VERSION}): upgrade featkit, or {rebuild}."
        )
    return version


@dataclass(frozen=True)
class BackboneSpec:
    """What identifies a backbone's features. `weights`: "imagenet" | "none" | {"path", "sha256"} (a file)."""

    kind: str  # "keras" | "onnx"
    name: str
    size: int
    pooling: str = "avg"
    weights: Any = None
    preprocessing: str = ""
    feature_dim: int | None = None
    options: dict = field(default_factory=dict)  # ONNX: input/output names, dtype, layout (rebuild exactly)
    versions: dict = field(default_factory=dict)  # library versions that computed the features
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Any) -> BackboneSpec:
        if isinstance(d, str):  # schema 1 CNN runs stored only the Keras name
            return cls(kind="keras", name=d, size=0)
        if not isinstance(d, Mapping) or "kind" not in d or "name" not in d:
            raise FeatkitError(f"not a featkit backbone spec: {d!r:.200}")
        known, extra = _split_known(cls, d)
        return cls(**{"size": 0, **known}, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        return _record(self, versioned=False)

    @property
    def weights_sha256(self) -> str | None:
        return self.weights.get("sha256") if isinstance(self.weights, Mapping) else None

    def comparable_key(self) -> dict[str, Any]:
        """Identity of the features: a weights or model file by its sha256 (not where it lives), no versions.
        An ONNX model is its file: a renamed copy gives the same features."""
        if self.kind == "combined":  # several caches side by side: the identity of each part, in order
            return {
                "kind": "combined",
                "parts": [BackboneSpec.from_dict(p).comparable_key() for p in self.extra.get("parts", [])],
                "sizes": self.extra.get("sizes"),
            }
        weights = self.weights_sha256 or self.weights
        key = {"kind": self.kind, "size": self.size, "pooling": self.pooling, "weights": weights}
        if self.kind != "onnx":
            key["name"] = self.name
        return key

    def slug(self) -> str:
        """The folder name part that names these features (stable across featkit versions)."""
        sha = self.weights_sha256
        if self.kind == "onnx":  # the model file by its digest; a spec that never read a file (no sha256) by its name
            return f"{self.name}-{sha[:10]}" if sha else self.name
        w = self.weights
        if isinstance(w, Mapping):
            w = w["path"].rsplit("/", 1)[-1].split(".")[0] + "-" + w["sha256"][:10]
        return f"{self.name}-{w}"


def _class_key(classes: Any) -> list[tuple]:
    return [(c.get("index", i), c.get("id", c.get("name"))) for i, c in enumerate(classes or [])]


@dataclass(frozen=True)
class CacheMeta:
    """The "meta" attribute of a feature cache."""

    backbone: BackboneSpec
    size: int
    view: str = "plain"
    view_params: dict | None = None
    classes: list = field(default_factory=list)
    dataset: str | None = None  # cache key of the dataset content and split
    fingerprint: str | None = None
    manifest: str | None = None  # path of the split manifest the rows come from
    resize: str = "stretch"
    crop_box: bool = False
    decode: str = "draft"  # "draft": big JPEGs decoded at a reduced DCT scale; "full"
    dtype: str = "float16"
    photos: int = 0
    rows_total: int = 0
    seconds: float | None = None
    photos_per_second: float | None = None
    created: str | None = None
    failures: list = field(default_factory=list)
    shard: list | None = None
    final_name: str | None = None
    identity: dict | None = None  # what `extract` compares to decide a cache is up to date
    featkit_version: str | None = None
    extra: dict = field(default_factory=dict)

    REBUILD: ClassVar[str] = "delete it and re-run `featkit extract` with the same options"

    @classmethod
    def from_dict(cls, d: Any, where: str = "the cache") -> CacheMeta:
        _check_version(d, where, cls.REBUILD)
        known, extra = _split_known(cls, d)
        try:
            known["backbone"] = BackboneSpec.from_dict(known.get("backbone"))
            known.setdefault("size", known["backbone"].size)
            return cls(**known, extra=extra)
        except (TypeError, FeatkitError) as e:
            raise FeatkitError(f"{where} has metadata featkit cannot read ({e}): {cls.REBUILD}.") from None

    def to_dict(self) -> dict[str, Any]:
        return _record(self)

    def replace(self, **changes: Any) -> CacheMeta:
        return dataclasses.replace(self, **changes)

    @property
    def is_augmented(self) -> bool:
        return self.view.startswith("augment")

    def comparable_key(self) -> dict[str, Any]:
        return {
            "backbone": self.backbone.comparable_key(),
            "size": self.size,
            "classes": _class_key(self.classes),
            "dataset": self.dataset,
            "fingerprint": self.fingerprint,
            "resize": self.resize,
            "crop_box": bool(self.crop_box),
            "decode": self.decode,
        }


@dataclass(frozen=True)
class RunConfig:
    """A run folder's config.json. `name`: the head (head runs), the preset (CNN runs) or "ensemble".
    `params`: the head's parameters, or the preset's settings."""

    kind: str
    name: str
    backbone: BackboneSpec | None = None
    size: int | None = None
    params: dict = field(default_factory=dict)
    n_classes: int | None = None
    dataset: str | None = None
    fingerprint: str | None = None
    data: str | None = None  # the dataset path as the user gave it (for thumbnails, sensitivity)
    manifest: str | None = None
    resize: str = "stretch"
    crop_box: bool = False
    decode: str = "draft"
    seed: int = 0
    view: str = "plain"
    views: list = field(default_factory=list)
    augment: bool = False
    cache: str | None = None  # head runs: the plain-view cache the head was fitted on
    augment_cache: str | None = None
    featkit_version: str | None = None
    extra: dict = field(default_factory=dict)

    REBUILD: ClassVar[str] = "re-run the command that made the run (fit-head or train-cnn)"

    @classmethod
    def from_dict(cls, d: Any, where: str = "config.json") -> RunConfig:
        version = _check_version(d, where, cls.REBUILD)
        d = dict(d)
        if version == 1:
            d = _config_from_v1(d)
        known, extra = _split_known(cls, d)
        if known.get("kind") not in RUN_KINDS or not known.get("name"):
            raise FeatkitError(
                f"{where} has kind {known.get('kind')!r}, name {known.get('name')!r}; expected a kind "
                f"among {', '.join(RUN_KINDS)} and a name: {cls.REBUILD}."
            )
        try:
            if known.get("backbone") is not None:
                bb = BackboneSpec.from_dict(known["backbone"])
                if not bb.size and known.get("size"):
                    bb = dataclasses.replace(bb, size=int(known["size"]))
                known["backbone"] = bb
            return cls(**known, extra=extra)
        except (TypeError, FeatkitError) as e:
            raise FeatkitError(f"{where} is not a featkit run config ({e}): {cls.REBUILD}.") from None

    def to_dict(self) -> dict[str, Any]:
        return _record(self)

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)

    @property
    def backbone_name(self) -> str:
        return self.backbone.name if self.backbone else ""

    def comparable_key(self, classes: Any) -> dict[str, Any]:
        """The same fields as CacheMeta.comparable_key, so a run can be checked against a cache."""
        return {
            "backbone": self.backbone.comparable_key() if self.backbone else None,
            "size": self.size,
            "classes": _class_key(classes),
            "dataset": self.dataset,
            "fingerprint": self.fingerprint,
            "resize": self.resize,
            "crop_box": bool(self.crop_box),
            "decode": self.decode,
        }


def _config_from_v1(d: dict) -> dict:
    """featkit 0.1 config.json -> schema 2 names."""
    if d.get("kind") == "head":
        d["name"] = d.pop("head", None) or d.get("name")
    elif d.get("kind") == "cnn":
        d.pop("name", None)
        d["name"] = d.pop("preset", None) or d.get("model") or "cnn"
        n_params = d.pop("params", None)
        if isinstance(n_params, int):
            d["n_params"] = n_params
        settings = {k: d.pop(k) for k in list(d) if k in _PRESET_KEYS}
        d["params"] = settings
        d["size"] = settings.get("size", d.get("size"))
        bb = d.get("backbone")
        if isinstance(bb, str):
            d["backbone"] = {
                "kind": "keras",
                "name": bb,
                "size": d.get("size") or 0,
                "weights": settings.get("weights"),
            }
    return d


# settings of a CNN preset as featkit 0.1 wrote them at the top level of config.json
_PRESET_KEYS = (
    "blocks",
    "filters",
    "kernel",
    "dropout",
    "rotation",
    "shift",
    "hflip",
    "vflip",
    "standardize",
    "zca",
    "zca_epsilon",
    "zca_samples",
    "epochs",
    "batch_size",
    "optimizer",
    "lr",
    "patience",
    "model",
    "weights",
    "dense",
    "fine_tune_from",
    "study_top1",
    "study_top5",
    "note",
)


@dataclass(frozen=True)
class RunMetrics:
    """A run folder's metrics.json: scores on the test split, plus timing and fit facts in `extra`."""

    top1: float
    top5: float
    n: int = 0
    topk: dict = field(default_factory=dict)
    macro_f1: float | None = None
    log_loss: float | None = None
    fit_seconds: float | None = None
    extract_seconds: float | None = None
    extra: dict = field(default_factory=dict)

    REBUILD: ClassVar[str] = "re-score the run with `featkit evaluate RUN`"

    @classmethod
    def from_dict(cls, d: Any, where: str = "metrics.json") -> RunMetrics:
        _check_version(d, where, cls.REBUILD)
        d = dict(d)
        if "fit_seconds" not in d and "train_seconds" in d:
            d["fit_seconds"] = d.pop("train_seconds")
        known, extra = _split_known(cls, d)
        if not all(isinstance(known.get(k), (int, float)) for k in ("top1", "top5")):
            raise FeatkitError(f"{where} has no top1/top5 scores: {cls.REBUILD}.")
        try:
            return cls(**known, extra=extra)
        except TypeError as e:
            raise FeatkitError(f"{where} is not featkit metrics ({e}): {cls.REBUILD}.") from None

    def to_dict(self) -> dict[str, Any]:
        return _record(self)

    def get(self, name: str, default: Any = None) -> Any:
        """A field or an extra fact (e.g. "seconds_per_epoch", "best_epoch")."""
        if name in self.extra:
            return self.extra[name]
        return getattr(self, name, default) if name in {f.name for f in dataclasses.fields(self)} else default


def check_comparable(a: Mapping[str, Any], b: Mapping[str, Any], a_name: str, b_name: str, todo: str) -> None:
    """Raise one FeatkitError naming every field where the comparable keys `a` and `b` differ, with both values."""
    diffs = []
    for k in a:
        x, y = a[k], b.get(k)
        if x == y:
            continue
        if k == "classes" and isinstance(x, list) and isinstance(y, list):
            i = next((i for i, (p, q) in enumerate(zip(x, y, strict=False)) if p != q), min(len(x), len(y)))
            diffs.append(
                f"classes: {len(x)} vs {len(y)}, first difference at index {i} "
                f"({_show(x[i][1] if i < len(x) else None)} vs {_show(y[i][1] if i < len(y) else None)})"
            )
        else:
            diffs.append(f"{k}: {_show(x)} vs {_show(y)}")
    if diffs:
        raise FeatkitError(f"{b_name} does not match {a_name}: {'; '.join(diffs)} — {todo}.")


def _show(v: Any) -> str:
    if isinstance(v, list) and len(v) > 3:
        return f"{len(v)} classes"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}={_show(x)}" for k, x in v.items() if x is not None) + "}"
    if isinstance(v, str) and len(v) > 24:
        return v[:20] + "..."
    return repr(v)


__all__ = ["SCHEMA_VERSION", "BackboneSpec", "CacheMeta", "RunConfig", "RunMetrics", "check_comparable", "RUN_KINDS"]
