"""The contract between featkit's stages: what every file featkit writes or reads records, as dataclasses.

    BackboneSpec   what identifies a backbone's features (kind, name, weights hash, size, pooling, ...)
    ClassEntry     one class of classes.json (and of a cache's class list): index, id, name
    CacheMeta      the attributes of a feature cache (.h5): dataset, split, classes, view, backbone, counts, time
    StageSeconds   where extraction spent its time (decode, forward, write), in CacheMeta.stage_seconds
    RunConfig      a run folder's config.json (head, CNN and ensemble runs alike)
    Scores         the scores of one set of predictions (`featkit.runs.metrics.score`)
    RunMetrics     a run folder's metrics.json: the scores plus the facts every producer writes (calibration,
                   validation scores, epochs)
    HeadFile       head.json beside a saved head's model file
    CnnState       a CNN run's checkpoints/state.json (resume)
    OnnxContract   the JSON beside an .onnx model (input/output names, layout, dtype, size, preprocessing)
    SweepRow       one row of a sweep table (sweep.json, sweep.csv)
    ReportRow      one row of reports/results.csv (one complete run)

This module owns the field names: readers use the attributes, never a guessed key. Each class converts with
`to_dict()` / `from_dict()`, and `from_dict` checks every field's type in one place (`_typed`): a wrong type fails
with one line naming the file, the field and what to do. Files carry `SCHEMA_VERSION` under "schema". A file
without it was written by featkit 0.1 (schema 1), schema 2 kept calibration and fit facts untyped; both are
converted on read. A file from a newer featkit, or one that is not a dict, fails with one line naming the file and
the command that rebuilds it. Keys this module does not know are kept in `extra` and written back unchanged, so a
field added by a newer stage survives a round trip.

Comparability: `comparable_key()` gives the fields that make two sets of features (or a run and a cache)
interchangeable; `check_comparable` is the one check every caller uses, and its error names each differing field
with both values.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from featkit.core.errors import FeatkitError

# 1: featkit 0.1 (no "schema" key); 2: typed config/metrics/cache; 3: calibration, validation and epoch facts
# typed in metrics.json, per_class in config.json, data/rebuild/stage_seconds in cache metadata, head.json,
# state.json and sweep.json versioned
SCHEMA_VERSION = 3

RUN_KINDS = ("head", "cnn", "ensemble")


def _split_known(cls, d: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
    known = {k: v for k, v in d.items() if k in names}
    extra = {k: v for k, v in d.items() if k not in names and k != "schema"}
    return known, extra


def _plain(v: Any) -> Any:
    """A field's value as JSON-able data: nested records by their to_dict()."""
    if isinstance(v, list):
        return [_plain(x) for x in v]
    to_dict = getattr(v, "to_dict", None)
    return to_dict() if dataclasses.is_dataclass(v) and to_dict is not None else v


def _record(obj: Any, versioned: bool = True) -> dict[str, Any]:
    """The dataclass as a flat dict: its extras, then its fields (nested records as dicts), then the schema."""
    d = {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.name != "extra"}
    return {**getattr(obj, "extra", {}), **d, **({"schema": SCHEMA_VERSION} if versioned else {})}


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


_NAMES = {int: "a whole number", float: "a number", str: "a string", bool: "true or false", dict: "an object"}


def _accepts(hint: Any, value: Any) -> tuple[bool, Any]:
    """(value fits the annotation, value converted: int -> float for a float field). Nested records and Any pass;
    they check themselves."""
    if hint is Any:
        return True, value
    if hint is type(None):
        return value is None, value
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for h in typing.get_args(hint):
            ok, v = _accepts(h, value)
            if ok:
                return True, v
        return False, value
    base = origin or hint
    if base is float:  # NumPy numbers too (a producer's np.float32): stored as Python floats
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if base is int:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        return ok, int(value) if ok else value
    if base in (str, bool, dict):
        return isinstance(value, base), value
    if base is list:
        return isinstance(value, (list, tuple)), list(value) if isinstance(value, tuple) else value
    return True, value  # a nested record: its own from_dict checks it


def _want(hint: Any) -> str:
    args = [a for a in typing.get_args(hint) if a is not type(None)] if typing.get_origin(hint) else [hint]
    names = [
        _NAMES.get(typing.get_origin(a) or a, "a list" if (typing.get_origin(a) or a) is list else str(a)) for a in args
    ]
    return " or ".join(names) + (" or null" if type(None) in typing.get_args(hint) else "")


def _typed(cls: type, known: dict[str, Any], where: str, rebuild: str) -> dict[str, Any]:
    """`known` with each value checked against the field's annotation (the one place types are validated)."""
    hints = _hints(cls)
    out = {}
    for name, value in known.items():
        ok, value = _accepts(hints[name], value)
        if not ok:
            raise FeatkitError(f"{where}: {name} is {value!r:.60}, expected {_want(hints[name])}: {rebuild}.")
        out[name] = value
    return out


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


@dataclass(frozen=True)
class ClassEntry:
    """One class: its label index (the column of the predictions), its id (the folder or label name in the dataset)
    and its display name."""

    index: int
    id: str
    name: str

    @classmethod
    def from_dict(cls, d: Any, position: int = 0, where: str = "classes.json") -> ClassEntry:
        """An entry as classes.json holds it; a bare string (a class list of names) is its own id and name."""
        if isinstance(d, ClassEntry):
            return d
        if isinstance(d, str):
            return cls(position, d, d)
        if not isinstance(d, Mapping) or ("id" not in d and "name" not in d):
            raise FeatkitError(
                f'{where}: class {position} is {d!r:.60}, expected {{"index", "id", "name"}}: '
                "re-run the command that wrote it."
            )
        ident = d.get("id", d.get("name"))
        known = {"index": d.get("index", position), "id": ident, "name": d.get("name", ident)}
        return cls(**_typed(cls, known, f"{where}: class {position}", "re-run the command that wrote it"))

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "id": self.id, "name": self.name}


def read_classes(obj: Any, where: str = "classes.json") -> list[ClassEntry]:
    """A class list (classes.json, a cache's meta "classes") as ClassEntry records, in label order."""
    if obj is None:
        return []
    if not isinstance(obj, (list, tuple)):
        raise FeatkitError(f"{where} should hold a list of classes; found {type(obj).__name__}.")
    return [ClassEntry.from_dict(c, i, where) for i, c in enumerate(obj)]


def classes_to_list(classes: Iterable[ClassEntry | Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The class list as classes.json stores it."""
    return [ClassEntry.from_dict(c, i).to_dict() for i, c in enumerate(classes)]


def _class_key(classes: Any) -> list[tuple]:
    return [(c.index, c.id) for c in read_classes(classes)]


@dataclass(frozen=True)
class StageSeconds:
    """Where extraction spent its time, in seconds of work per stage (the stages overlap: decoding runs in a
    thread pool while the backbone computes, so these may add up to more than the wall-clock seconds)."""

    decode: float = 0.0
    forward: float = 0.0
    write: float = 0.0

    @classmethod
    def from_dict(cls, d: Any, where: str = "the cache") -> StageSeconds:
        if not isinstance(d, Mapping):
            raise FeatkitError(f"{where}: stage_seconds is {d!r:.60}, expected an object.")
        known = {k: d[k] for k in ("decode", "forward", "write") if k in d}
        return cls(**_typed(cls, known, where, CacheMeta.REBUILD))

    def to_dict(self) -> dict[str, float]:
        return {"decode": self.decode, "forward": self.forward, "write": self.write}

    def __add__(self, other: StageSeconds) -> StageSeconds:
        return StageSeconds(self.decode + other.decode, self.forward + other.forward, self.write + other.write)


@dataclass(frozen=True)
class CacheMeta:
    """The "meta" attribute of a feature cache."""

    backbone: BackboneSpec
    size: int
    view: str = "plain"
    view_params: dict | None = None
    classes: list[ClassEntry] = field(default_factory=list)
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
    data: str | None = None  # the dataset path as the user gave it
    rebuild: str | None = None  # the command that makes this cache again
    stage_seconds: StageSeconds | None = None  # decode / forward / write (schema 3; None for older caches)
    extra: dict = field(default_factory=dict)

    REBUILD: ClassVar[str] = "delete it and re-run `featkit extract` with the same options"

    def __post_init__(self) -> None:
        if any(not isinstance(c, ClassEntry) for c in self.classes):
            object.__setattr__(self, "classes", read_classes(self.classes, "the cache's class list"))

    @classmethod
    def from_dict(cls, d: Any, where: str = "the cache") -> CacheMeta:
        _check_version(d, where, cls.REBUILD)
        known, extra = _split_known(cls, d)
        try:
            known["backbone"] = BackboneSpec.from_dict(known.get("backbone"))
            known.setdefault("size", known["backbone"].size)
            known["classes"] = read_classes(known.get("classes"), f"{where}: classes")
            if known.get("stage_seconds") is not None:
                known["stage_seconds"] = StageSeconds.from_dict(known["stage_seconds"], where)
            return cls(**_typed(cls, known, where, cls.REBUILD), extra=extra)
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
    per_class: int | None = None  # CNN runs: --per-class (photos per class and split), None for all
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
        if isinstance(known.get("size"), list):  # a head on caches of several sizes, written before schema 3
            extra.setdefault("sizes", known.pop("size"))
        try:
            if known.get("backbone") is not None:
                bb = BackboneSpec.from_dict(known["backbone"])
                if not bb.size and known.get("size"):
                    bb = dataclasses.replace(bb, size=int(known["size"]))
                known["backbone"] = bb
            return cls(**_typed(cls, known, where, cls.REBUILD), extra=extra)
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
class Scores:
    """The scores of one set of predictions against their labels (`featkit.runs.metrics.score`): n, top-1/5,
    top-k for each k asked ({"k": accuracy}), macro F1, log loss. NaN where there are no rows."""

    n: int
    top1: float
    top5: float
    topk: dict[str, float] = field(default_factory=dict)
    macro_f1: float | None = None
    log_loss: float | None = None

    def top(self, k: int) -> float:
        """Top-k accuracy for a k that was scored."""
        return self.topk[str(int(k))]

    def to_dict(self) -> dict[str, Any]:
        """As metrics.json stores scores: the fields plus a "top<k>" key per k."""
        return {
            "n": self.n,
            **{f"top{k}": v for k, v in self.topk.items()},
            "top1": self.top1,
            "top5": self.top5,
            "topk": dict(self.topk),
            "macro_f1": self.macro_f1,
            "log_loss": self.log_loss,
        }


@dataclass(frozen=True)
class RunMetrics:
    """A run folder's metrics.json: the test scores, timing, and the facts the producers write beside them
    (`featkit.runs.store.finish` for every run kind, fit_head, train_cnn, ensemble_runs, evaluate)."""

    top1: float
    top5: float
    n: int = 0
    topk: dict = field(default_factory=dict)
    macro_f1: float | None = None
    log_loss: float | None = None
    fit_seconds: float | None = None
    extract_seconds: float | None = None
    # calibration (runs.store.finish with a temperature): on the test split after temperature scaling
    temperature: float | None = None
    ece: float | None = None
    brier: float | None = None
    calibration: dict | None = None  # runs.calibration.calibration_report: {"temperature", "before", "after", ...}
    # held-out validation scores (heads: the selected model before its refit; ensembles: the averaged members)
    valid_top1: float | None = None
    valid_top5: float | None = None
    # epoch-trained runs (CNNs, the softmax head)
    best_epoch: int | None = None
    epochs_run: int | None = None
    seconds_per_epoch: float | None = None
    stopped_early: bool | None = None
    extra: dict = field(default_factory=dict)

    REBUILD: ClassVar[str] = "re-score the run with `featkit evaluate RUN`"

    @classmethod
    def from_dict(cls, d: Any, where: str = "metrics.json") -> RunMetrics:
        version = _check_version(d, where, cls.REBUILD)
        d = dict(d)
        if version == 1 and "fit_seconds" not in d and "train_seconds" in d:
            d["fit_seconds"] = d.pop("train_seconds")
        if version < 3 and isinstance(d.get("best_epoch"), float) and float(d["best_epoch"]).is_integer():
            d["best_epoch"] = int(d["best_epoch"])  # schema 2 heads could store a NumPy float
        known, extra = _split_known(cls, d)
        if not all(isinstance(known.get(k), numbers.Real) for k in ("top1", "top5")):
            raise FeatkitError(f"{where} has no top1/top5 scores: {cls.REBUILD}.")
        try:
            return cls(**_typed(cls, known, where, cls.REBUILD), extra=extra)
        except TypeError as e:
            raise FeatkitError(f"{where} is not featkit metrics ({e}): {cls.REBUILD}.") from None

    def to_dict(self) -> dict[str, Any]:
        return _record(self)

    @property
    def scores(self) -> Scores:
        return Scores(self.n, self.top1, self.top5, dict(self.topk), self.macro_f1, self.log_loss)


@dataclass(frozen=True)
class HeadFile:
    """head.json beside a saved head's model file (`featkit.heads.base.Head.save`, `featkit.heads.load_head`)."""

    head: str
    params: dict
    model_file: str
    n_classes: int
    n_features: int
    history: list = field(default_factory=list)
    classes: list | None = None  # the label of each output column (None in heads saved before labels were kept)
    temperature: float = 1.0
    fitted: dict = field(default_factory=dict)  # small facts about the fit (best_epoch_, n_iter_, ...)
    featkit_version: str | None = None
    extra: dict = field(default_factory=dict)

    REBUILD: ClassVar[str] = "re-run `featkit fit-head` to make the run again"

    @classmethod
    def from_dict(cls, d: Any, where: str = "head.json") -> HeadFile:
        _check_version(d, where, cls.REBUILD)
        known, extra = _split_known(cls, d)
        missing = [k for k in ("head", "params", "model_file", "n_classes", "n_features") if known.get(k) is None]
        if missing:
            raise FeatkitError(f"{where} is damaged ({', '.join(missing)} missing): {cls.REBUILD}.")
        return cls(**_typed(cls, known, where, cls.REBUILD), extra=extra)

    def to_dict(self) -> dict[str, Any]:
        return _record(self)


@dataclass(frozen=True)
class CnnState:
    """A CNN run's checkpoints/state.json, written at the end of each epoch (the commit point of the epoch):
    the epochs done, the best validation loss and its epoch, whether early stopping ended training, and the
    fingerprint of the configuration (a resume must match it)."""

    epoch: int = 0
    best_val_loss: float | None = None
    best_epoch: int = 0
    stopped_early: bool = False
    fingerprint: dict | None = None
    extra: dict = field(default_factory=dict)

    REBUILD: ClassVar[str] = "delete the run's checkpoints folder to train it again from its start"

    @classmethod
    def from_dict(cls, d: Any, where: str = "state.json") -> CnnState:
        _check_version(d, where, cls.REBUILD)
        known, extra = _split_known(cls, d)
        return cls(**_typed(cls, known, where, cls.REBUILD), extra=extra)

    def to_dict(self) -> dict[str, Any]:
        return _record(self)

    def replace(self, **changes: Any) -> CnnState:
        return dataclasses.replace(self, **changes)


def _pos_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


_CONTRACT_CHECKS = (
    ("input_layout", lambda v: v in ("NHWC", "NCHW"), "NHWC or NCHW"),
    ("input_dtype", lambda v: v in ("uint8", "float32", "float"), "uint8 or float32"),
    (
        "input_size",
        lambda v: _pos_int(v) or (isinstance(v, list) and len(v) == 2 and all(map(_pos_int, v)) and v[0] == v[1]),
        "a size N or [N, N] (N > 0)",
    ),
    ("feature_size", _pos_int, "a whole number > 0"),
)


@dataclass(frozen=True)
class OnnxContract:
    """The JSON beside an .onnx model (same stem): what featkit needs to run it. Every field is optional; what is
    missing is read from the graph. Other keys (source, licence, labels...) are kept in `extra`."""

    name: str | None = None
    input_name: str | None = None
    input_layout: str | None = None  # "NHWC" | "NCHW"
    input_dtype: str | None = None  # "uint8" | "float32"
    input_size: int | list | None = None  # N or [N, N]: the native input size
    dynamic_size: bool | None = None
    output_name: str | None = None
    feature_size: int | None = None
    preprocessing_in_graph: str | None = None
    precision: str = "float32"  # "int8" for a quantized copy (featkit.features.quantize)
    quantization: dict | None = None
    file: str | None = None  # the model file's name and sha256, as written beside it
    sha256: str | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Any, where: str = "the model's JSON") -> OnnxContract:
        rebuild = "fix it or remove the file"
        if not isinstance(d, Mapping):
            raise FeatkitError(f"{where} should hold a JSON object describing the model.")
        known, extra = _split_known(cls, d)
        known = {k: v for k, v in known.items() if v is not None}
        if isinstance(known.get("input_size"), tuple):
            known["input_size"] = list(known["input_size"])
        for key, ok, want in _CONTRACT_CHECKS:
            if key in known and not ok(known[key]):
                raise FeatkitError(f"{where}: {key} is {known[key]!r}, expected {want}: {rebuild}.")
        return cls(**_typed(cls, known, where, rebuild), extra=extra)

    def to_dict(self) -> dict[str, Any]:
        d = _record(self, versioned=False)
        return {k: v for k, v in d.items() if v is not None}

    @property
    def size(self) -> int | None:
        """The native input size (input_size N or [N, N]), or None."""
        v = self.input_size
        return int(v[0]) if isinstance(v, list) else v

    def replace(self, **changes: Any) -> OnnxContract:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class SweepRow:
    """One row of a sweep: a head candidate's fit (kind "head") or an ensemble of the best runs (kind "ensemble").
    Scores are None where the fit failed (`error` says why) or there was no validation split."""

    candidate: str
    kind: str = "head"
    head: str = ""
    params: dict = field(default_factory=dict)
    caches: str = ""
    tta: str = ""
    members: list | None = None  # ensembles: the member run ids
    run: str | None = None
    valid_top1: float | None = None
    valid_top5: float | None = None
    top1: float | None = None
    top5: float | None = None
    log_loss: float | None = None
    ece: float | None = None
    fit_seconds: float | None = None
    seconds: float | None = None
    selected: bool = False
    error: str = ""
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Any, where: str = "sweep.json") -> SweepRow:
        if not isinstance(d, Mapping) or not isinstance(d.get("candidate"), str):
            raise FeatkitError(f"{where} holds a row that is not a sweep row: {d!r:.80}.")
        d = dict(d)
        if not isinstance(d.get("selected", False), bool):  # sweep.json before schema 3: "yes" / ""
            d["selected"] = d["selected"] == "yes"
        known, extra = _split_known(cls, d)
        return cls(**_typed(cls, known, where, "run the sweep again"), extra=extra)

    def to_dict(self) -> dict[str, Any]:
        return _record(self, versioned=False)

    def replace(self, **changes: Any) -> SweepRow:
        return dataclasses.replace(self, **changes)


SWEEP_SELECTION = "validation top-1, then validation top-5"


def sweep_file(sweep_id: str, rows: Sequence[SweepRow], selected: SweepRow | None) -> dict[str, Any]:
    """sweep.json's content: the id, the rows, the selected row and how it was selected, and the schema."""
    return {
        "id": sweep_id,
        "selected": selected.to_dict() if selected else None,
        "rows": [r.to_dict() for r in rows],
        "selection": SWEEP_SELECTION,
        "schema": SCHEMA_VERSION,
    }


def read_sweep_rows(d: Any, where: str = "sweep.json") -> list[SweepRow]:
    """The rows of a sweep.json (any schema; the rows of sweeps before schema 3 are converted)."""
    _check_version(d, where, "run the sweep again")
    rows = d.get("rows")
    if not isinstance(rows, list):
        raise FeatkitError(f"{where} has no list of rows: run the sweep again.")
    return [SweepRow.from_dict(r, where) for r in rows if isinstance(r, Mapping)]


@dataclass(frozen=True)
class ReportRow:
    """One complete run in reports/results.csv and the report's table (`featkit.report.build.collect_runs`)."""

    run_id: str
    kind: str
    # the dataset's name and class count (featkit.runs.summary); keyword-only, so older callers still build rows
    dataset: str = field(default="", kw_only=True)
    classes: int | None = field(default=None, kw_only=True)
    backbone: str
    size: int | None
    head: str
    augment: bool
    views: str
    # validation scores: what runs are compared and chosen by (test is shown, never used to choose)
    valid_top1: float | None = field(default=None, kw_only=True)
    valid_top5: float | None = field(default=None, kw_only=True)
    top1: float | None
    top5: float | None
    log_loss: float | None
    ece: float | None
    extract_seconds: float | None
    fit_seconds: float | None
    sweep: str = field(default="", kw_only=True)  # the sweep that fitted or built the run
    date: str
    folder: str
    dataset_key: str = field(default="", kw_only=True)  # what makes scores comparable: content and split

    @classmethod
    def from_dict(cls, d: Any, where: str = "results.csv") -> ReportRow:
        if not isinstance(d, Mapping):
            raise FeatkitError(f"{where} holds a row that is not a report row: {d!r:.80}.")
        d = dict(d)
        if isinstance(d.get("augment"), str):
            d["augment"] = d["augment"] == "yes"
        for key in ("size", "classes"):
            if d.get(key) in ("", None) or (isinstance(d.get(key), float) and d[key] != d[key]):
                d[key] = None
        for key in ("dataset", "sweep", "dataset_key"):
            d[key] = d.get(key) or ""
        known = {f.name: d.get(f.name) for f in dataclasses.fields(cls)}
        return cls(**_typed(cls, known, where, "rebuild the report with `featkit report`"))

    def to_dict(self) -> dict[str, Any]:
        """As results.csv shows it (augment as yes/no, no size as "")."""
        d = _record(self, versioned=False)
        d["augment"] = "yes" if self.augment else "no"
        d["size"] = "" if self.size is None else self.size
        d["classes"] = "" if self.classes is None else self.classes
        return d


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


__all__ = [
    "SCHEMA_VERSION",
    "RUN_KINDS",
    "BackboneSpec",
    "ClassEntry",
    "CacheMeta",
    "StageSeconds",
    "RunConfig",
    "Scores",
    "RunMetrics",
    "HeadFile",
    "CnnState",
    "OnnxContract",
    "SweepRow",
    "ReportRow",
    "SWEEP_SELECTION",
    "check_comparable",
    "classes_to_list",
    "read_classes",
    "read_sweep_rows",
    "sweep_file",
]
