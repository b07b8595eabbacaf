"""What a run needs to turn photos into calibrated probabilities: one typed plan per run kind, read from the run folder.

    run = resolve_run("sweep:latest")              # or a run id / folder / "latest" (see resolve_run)
    plan = load_plan(run)                          # HeadPlan | CnnPlan | EnsemblePlan, nothing loaded yet
    model = RunModel(plan)                         # every backbone, head and Keras model loaded once
    probs, ok, failures = model.predict_files(paths)   # (len(ok), n_classes) float32, in plan.classes order

The plans are plain data (no model is loaded to build one), so other consumers (e.g. an ONNX export) can walk them:

    HeadPlan      a head fitted on one cache or several concatenated ones: `parts` (one `FeaturePart` per cache, in
                  the run's cache order: backbone spec, photo input (size, resize, decode, crop_box), feature size,
                  the cache's dtype), the head (kind, folder holding head.json + model file, temperature, n_features)
                  and `mirror`: the run was scored on the mean of the calibrated probabilities of the plain and the
                  left-right mirrored photo (`fit-head --tta flip`, featkit.features.combine.average_tta).
    CnnPlan       a `train-cnn` run: the model.keras file (its preprocessing inside), the photo input, temperature.
    EnsemblePlan  `featkit ensemble`: the members' plans; probabilities are the members' mean, then the ensemble's
                  temperature (featkit.apps.ensemble).

`PhotoInput` says how a photo file becomes pixels (featkit.data.images.load_images with that size, resize and
decode mode): a photo is decoded once per distinct PhotoInput, each backbone (same spec and size) is built once and
its features computed once per batch, however many members share it. Features are rounded to the cache's dtype
(float16 by default) before the head sees them, as the head saw them when fitted and scored (`round_features`).

Bad state is one line naming the culprit: a backbone file moved or changed (sha256), a cache that changed since
the run, a damaged config.json / head.json / classes.json, a missing model file, a missing ensemble member.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from featkit.core.errors import FeatkitError
from featkit.core.fileio import read_json
from featkit.core.schema import BackboneSpec, ClassEntry
from featkit.data.images import DECODE_MODES, RESIZE_MODES, ImageFailure, load_images
from featkit.runs.store import DEFAULT_REPORTS, Run, load_run

SWEEP_PREFIX = "sweep:"


# ---- which run ----------------------------------------------------------------------------------------------


def resolve_run(ref: str | Path | Run, reports: str | Path = DEFAULT_REPORTS) -> tuple[Run, str | None]:
    """(the run, a note saying which run was taken, or None). `ref`: a run id (or unique part), a run folder,
    "latest" (featkit.runs.store.load_run), or "sweep:latest" / "sweep:<id>": the run that sweep selected
    (featkit.apps.sweep.selected_run). The note is set for "latest" and "sweep:" references."""
    if isinstance(ref, Run):
        return ref, None
    text = str(ref)
    if text.startswith(SWEEP_PREFIX):
        from featkit.apps.sweep import selected_run

        run, sweep_id = selected_run(text[len(SWEEP_PREFIX) :], reports)
        return run, f"using run {run.id} ({run.config.kind}), selected by sweep {sweep_id}"
    run = load_run(text, reports)
    return run, (f"using run {run.id} ({run.config.kind}), the latest" if text == "latest" else None)


# ---- plans -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PhotoInput:
    """How a photo becomes pixels: featkit.data.images.load_images(size, resize, decode). crop_box: the run's
    dataset photos were cropped to their annotated boxes (new photos have none: used whole)."""

    size: int
    resize: str = "stretch"
    decode: str = "draft"
    crop_box: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, "resize": self.resize, "decode": self.decode, "crop_box": self.crop_box}


@dataclass(frozen=True)
class FeaturePart:
    """One cache's share of a head's input: its backbone on its photo input gives `feature_dim` columns, stored
    in the cache as `dtype`. `cache`: the cache path the run recorded (informative; predict does not read it)."""

    backbone: BackboneSpec
    input: PhotoInput
    feature_dim: int | None = None
    dtype: str = "float16"
    cache: str | None = None

    @property
    def backbone_key(self) -> str:
        """Identity of the backbone as built (spec identity incl. size, plus ONNX options): parts with the same
        key share one loaded backbone."""
        return json.dumps([self.backbone.comparable_key(), self.backbone.options], sort_keys=True, default=str)


@dataclass(frozen=True)
class RunPhotos:
    """Where a run's photos came from (config.json): the dataset (`data`), the manifest of its split, the run's
    seed. What an export needs to calibrate int8 backbones on the run's training photos or re-read its test photos."""

    data: str | None = None
    manifest: str | None = None
    seed: int = 0


@dataclass(frozen=True)
class HeadPlan:
    run_id: str
    run_path: Path
    classes: list[ClassEntry]
    parts: tuple[FeaturePart, ...]
    head: str  # head kind: logreg, softmax, lightgbm, knn
    head_dir: Path  # the folder with head.json and the model file (featkit.heads.load_head)
    temperature: float
    n_features: int
    mirror: bool = False
    photos: RunPhotos = RunPhotos()
    kind: str = "head"

    @property
    def n_classes(self) -> int:
        return len(self.classes)


@dataclass(frozen=True)
class CnnPlan:
    run_id: str
    run_path: Path
    classes: list[ClassEntry]
    model_file: Path  # model.keras: the whole network with its preprocessing (featkit.cnn.train.load_cnn_model)
    input: PhotoInput
    temperature: float
    photos: RunPhotos = RunPhotos()
    kind: str = "cnn"

    @property
    def n_classes(self) -> int:
        return len(self.classes)


@dataclass(frozen=True)
class EnsemblePlan:
    run_id: str
    run_path: Path
    classes: list[ClassEntry]
    members: tuple[Plan, ...]
    temperature: float
    kind: str = "ensemble"

    @property
    def n_classes(self) -> int:
        return len(self.classes)


Plan = HeadPlan | CnnPlan | EnsemblePlan
Leaf = HeadPlan | CnnPlan


def load_plan(run: Run | str | Path, reports: str | Path = DEFAULT_REPORTS) -> Plan:
    """The plan of a run (by Run, folder or id), checked for what can be checked without loading models:
    config, classes, head.json / model.keras present, photo inputs valid, feature sizes adding up, members found."""
    run = run if isinstance(run, Run) else load_run(run, reports)
    return _load_plan(run, reports, seen=())


def _load_plan(run: Run, reports: str | Path, seen: tuple[str, ...]) -> Plan:
    cfg = run.config
    classes = run.classes
    if cfg.kind == "head":
        return _head_plan(run, classes)
    if cfg.kind == "cnn":
        model = run.path / "model.keras"
        if not model.is_file():
            raise FeatkitError(
                f"{model} is missing: the CNN run did not finish or the file was moved; re-run train-cnn."
            )
        return CnnPlan(
            run.id,
            run.path,
            classes,
            model,
            _input(run, cfg.size, cfg.resize, cfg.decode, cfg.crop_box),
            _run_temperature(run),
            _photos(run),
        )
    if cfg.kind == "ensemble":
        key = str(run.path.resolve())
        if key in seen:
            raise FeatkitError(f"run {run.id} is its own member (config.json members loop): re-run `featkit ensemble`.")
        members = _member_runs(run, reports)
        plans = tuple(_load_plan(m, reports, seen + (key,)) for m in members)
        ids = [c.id for c in classes]
        for m in plans:
            if [c.id for c in m.classes] != ids:
                raise FeatkitError(
                    f"member run {m.run_id} of ensemble {run.id} has another class list now: "
                    f"its classes.json changed; re-run `featkit ensemble`."
                )
        return EnsemblePlan(run.id, run.path, classes, plans, _run_temperature(run))
    raise FeatkitError(f"run {run.id} has kind {cfg.kind!r}: predict and export know head, cnn and ensemble runs.")


def _input(run: Run, size: Any, resize: Any, decode: Any, crop_box: Any) -> PhotoInput:
    if (
        isinstance(size, bool)
        or not isinstance(size, int)
        or size < 1
        or resize not in RESIZE_MODES
        or (decode not in DECODE_MODES)
    ):
        raise FeatkitError(
            f"{run.path / 'config.json'} is damaged (size {size!r}, resize {resize!r}, decode {decode!r}): "
            "re-run the command that made the run."
        )
    return PhotoInput(int(size), str(resize), str(decode), bool(crop_box))


def _photos(run: Run) -> RunPhotos:
    cfg = run.config
    seed = cfg.seed if isinstance(cfg.seed, int) and not isinstance(cfg.seed, bool) else 0
    return RunPhotos(str(cfg.data) if cfg.data else None, str(cfg.manifest) if cfg.manifest else None, seed)


def _run_temperature(run: Run) -> float:
    """The temperature in metrics.json (ensembles, CNN runs); 1 for runs from before calibration."""
    if not run.complete:
        raise FeatkitError(f"run {run.id} did not finish (no metrics.json): re-run the command that made it.")
    t = run.metrics.temperature
    if t is None:
        return 1.0
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not t > 0:
        raise FeatkitError(f"{run.path / 'metrics.json'} has temperature {t!r}: re-score the run (`featkit evaluate`).")
    return float(t)


def _head_plan(run: Run, classes: list[ClassEntry]) -> HeadPlan:
    cfg = run.config
    bb = cfg.backbone
    if bb is None:
        raise FeatkitError(
            f"run {run.id} has no backbone spec in config.json: it cannot see photos; re-fit it from a featkit cache."
        )
    recorded = cfg.extra.get("caches") or []
    if not isinstance(recorded, list) or not all(isinstance(c, dict) for c in recorded):
        raise FeatkitError(f"{run.path / 'config.json'} is damaged (caches is not a list of objects): re-run fit-head.")
    if bb.kind == "combined":
        specs = bb.extra.get("parts") or []
        sizes = bb.extra.get("sizes") or []
        if not specs or len(specs) != len(sizes) or (recorded and len(recorded) != len(specs)):
            raise FeatkitError(
                f"{run.path / 'config.json'} is damaged (a combined backbone with {len(specs)} parts, "
                f"{len(sizes)} sizes and {len(recorded)} caches): re-run fit-head."
            )
        try:
            parts_specs = [BackboneSpec.from_dict(s) for s in specs]
        except FeatkitError as e:
            raise FeatkitError(f"{run.path / 'config.json'} is damaged ({e}): re-run fit-head.") from None
    else:
        parts_specs, sizes = [bb], [cfg.size]
    parts = []
    for i, (spec, size) in enumerate(zip(parts_specs, sizes, strict=True)):
        rec = recorded[i] if i < len(recorded) else {}
        parts.append(_part(run, spec, size, rec, several=len(parts_specs) > 1))

    info_file = run.path / "head.json"
    if not info_file.is_file():
        raise FeatkitError(f"{info_file} is missing: the run did not finish; re-run `featkit fit-head`.")
    info = read_json(info_file, dict, fix="re-run `featkit fit-head` to make the run again")
    t, n_features = info.get("temperature", 1.0), info.get("n_features")
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not t > 0 or not isinstance(n_features, int):
        raise FeatkitError(f"{info_file} is damaged (temperature {t!r}, n_features {n_features!r}): re-run fit-head.")
    dims = [p.feature_dim for p in parts]
    if all(isinstance(d, int) for d in dims) and sum(dims) != n_features:  # type: ignore[arg-type]
        raise FeatkitError(
            f"{info_file} expects {n_features} features but the run's backbones give {'+'.join(map(str, dims))}: "
            f"a head of another run was put in {run.path}; re-run fit-head."
        )
    tta = cfg.extra.get("tta")
    if tta not in (None, "flip"):
        raise FeatkitError(f"run {run.id} used the test-time view {tta!r}, which predict does not know (only flip).")
    return HeadPlan(
        run.id,
        run.path,
        classes,
        tuple(parts),
        str(cfg.name),
        run.path,
        float(t),
        n_features,
        mirror=tta == "flip",
        photos=_photos(run),
    )


def _part(run: Run, spec: BackboneSpec, size: Any, rec: Mapping[str, Any], several: bool) -> FeaturePart:
    """One cache of a head run: how its photos were decoded comes from what the run recorded about the cache
    (resize, decode, crop_box, dtype: recorded since featkit 0.3), else from the cache file itself when it is still
    there, else (a single cache) from config.json, which copies the cache's settings."""
    cfg = run.config
    cache = rec.get("path")
    settings: dict[str, Any] = {k: rec[k] for k in ("resize", "decode", "crop_box", "dtype") if k in rec}
    if cache and Path(cache).is_file():
        from featkit.features.cache import read_meta

        meta = read_meta(cache)
        if spec.comparable_key() != meta.backbone.comparable_key() or meta.size != size:
            raise FeatkitError(
                f"{cache} has changed since run {run.id} was fitted on it (now {meta.backbone.name} at {meta.size} px, "
                f"the run says {spec.name} at {size} px): re-run fit-head, or move the new cache away."
            )
        for k in ("resize", "decode", "crop_box", "dtype"):
            settings.setdefault(k, getattr(meta, k))
    elif several and not {"resize", "decode"} <= set(settings):
        raise FeatkitError(
            f"{cache or 'a cache'} of run {run.id} has moved or is gone, and the run does not record how its photos "
            "were decoded: restore the cache, or re-run fit-head on the caches you have now."
        )
    photo = _input(
        run,
        size,
        settings.get("resize", cfg.resize),
        settings.get("decode", cfg.decode),
        settings.get("crop_box", cfg.crop_box),
    )
    dim = rec.get("feature_dim", spec.feature_dim)
    return FeaturePart(spec, photo, dim if isinstance(dim, int) else None, str(settings.get("dtype", "float16")), cache)


def _member_runs(run: Run, reports: str | Path) -> list[Run]:
    extra = run.config.extra
    ids, paths = extra.get("members") or [], extra.get("member_paths") or []
    if not ids or not isinstance(ids, list):
        raise FeatkitError(f"{run.path / 'config.json'} is damaged (no members listed): re-run `featkit ensemble`.")
    out = []
    for i, mid in enumerate(ids):
        p = Path(paths[i]) if i < len(paths) and paths[i] else None
        if p is not None and (p / "config.json").is_file():
            out.append(Run(p))
            continue
        try:
            out.append(load_run(str(mid), reports))
        except FeatkitError:
            raise FeatkitError(
                f"member run {mid} of ensemble {run.id} is gone (not at {p} nor under {Path(reports) / 'runs'}): "
                "restore it or re-run `featkit ensemble` with the runs you have."
            ) from None
    return out


def plan_leaves(plan: Plan) -> list[Leaf]:
    """The head and CNN runs of the plan (ensemble members walked), in order, repeats kept."""
    if isinstance(plan, EnsemblePlan):
        return [leaf for m in plan.members for leaf in plan_leaves(m)]
    return [plan]


def plan_parts(plan: Plan) -> list[FeaturePart]:
    """Every feature part of the plan's head runs (members included), in order, repeats kept."""
    return [p for leaf in plan_leaves(plan) if isinstance(leaf, HeadPlan) for p in leaf.parts]


def load_plan_head(plan: HeadPlan) -> Any:
    """The fitted head of a head plan (featkit.heads.load_head), checked to give the plan's number of classes."""
    from featkit.heads import load_head

    head = load_head(plan.head_dir)
    if head.n_classes_ != plan.n_classes:
        raise FeatkitError(
            f"the head in {plan.head_dir} gives {head.n_classes_} classes but classes.json lists "
            f"{plan.n_classes}: re-run fit-head."
        )
    return head


def plan_inputs(plan: Plan) -> list[PhotoInput]:
    """The distinct photo inputs the plan needs (each photo is decoded once per input), in first-use order."""
    out: list[PhotoInput] = []
    for leaf in plan_leaves(plan):
        items = [part.input for part in leaf.parts] if isinstance(leaf, HeadPlan) else [leaf.input]
        out.extend(i for i in items if i not in out)
    return out


def describe_plan(plan: Plan) -> dict[str, Any]:
    """The plan as JSON-ready data (what `predict --json` reports as "model")."""
    base = {"kind": plan.kind, "run": plan.run_id, "n_classes": plan.n_classes, "temperature": plan.temperature}
    if isinstance(plan, HeadPlan):
        return {
            **base,
            "head": plan.head,
            "mirror": plan.mirror,
            "parts": [
                {"backbone": p.backbone.name, **p.input.to_dict(), "feature_dim": p.feature_dim, "dtype": p.dtype}
                for p in plan.parts
            ],
        }
    if isinstance(plan, CnnPlan):
        return {**base, "model_file": str(plan.model_file), **plan.input.to_dict()}
    return {**base, "members": [describe_plan(m) for m in plan.members]}


# ---- running a plan ---------------------------------------------------------------------------------------------


@dataclass
class RunModel:
    """A plan with everything loaded once: backbones (shared by key), heads, Keras models.

    `round_features`: round each part's features to its cache dtype before the head (as at fit and score time);
    False feeds the backbone's float32 features (what that costs or gains is measured in benchmarks/predict.py).
    """

    plan: Plan
    batch_size: int = 64
    round_features: bool = True
    quiet: bool = True
    backbones: dict[str, Any] = field(default_factory=dict)
    heads: dict[str, Any] = field(default_factory=dict)
    loads: list[str] = field(default_factory=list)  # what was loaded, in order (one entry per backbone / model)

    def __post_init__(self) -> None:
        self._load(self.plan)

    def _load(self, plan: Plan) -> None:
        if isinstance(plan, HeadPlan):
            for part in plan.parts:
                if part.backbone_key not in self.backbones:
                    from featkit.backbones import get_backbone_from_spec

                    self._say(f"loading backbone {part.backbone.name} at {part.input.size} px")
                    self.backbones[part.backbone_key] = get_backbone_from_spec(part.backbone)
                    self.loads.append(f"backbone {part.backbone.name} {part.input.size}px")
            key = str(plan.head_dir)
            if key not in self.heads:
                self.heads[key] = load_plan_head(plan)
                self.loads.append(f"head {plan.run_id}")
        elif isinstance(plan, CnnPlan):
            key = str(plan.model_file)
            if key not in self.heads:
                from featkit.cnn.train import load_keras_model

                self._say(f"loading {plan.model_file}")
                model = load_keras_model(plan.model_file, "re-run train-cnn to make the run again")
                size = model.input_shape[1]
                if size != plan.input.size or model.output_shape[-1] != plan.n_classes:
                    raise FeatkitError(
                        f"{plan.model_file} takes {size} px photos and gives {model.output_shape[-1]} classes; "
                        f"the run says {plan.input.size} px and {plan.n_classes} classes: re-run train-cnn."
                    )
                self.heads[key] = model
                self.loads.append(f"cnn {plan.run_id}")
        else:
            for m in plan.members:
                self._load(m)

    def _say(self, text: str) -> None:
        if not self.quiet:
            print(text, file=sys.stderr, flush=True)

    @property
    def inputs(self) -> list[PhotoInput]:
        return plan_inputs(self.plan)

    def probabilities(self, pixels: Mapping[PhotoInput, np.ndarray]) -> np.ndarray:
        """Calibrated probabilities (N, n_classes) float32 for the same N photos decoded at each of `self.inputs`
        (uint8 (N, size, size, 3) per input)."""
        features: dict[tuple[str, PhotoInput, bool], np.ndarray] = {}
        return self._probs(self.plan, pixels, features)

    def _features(self, part: FeaturePart, pixels, mirrored: bool, memo: dict) -> np.ndarray:
        key = (part.backbone_key, part.input, mirrored)
        if key not in memo:
            images = pixels[part.input]
            if mirrored:
                from featkit.data.augment import TTA_VIEWS

                view = TTA_VIEWS["flip"]
                rng = np.random.default_rng(0)  # the mirror draws nothing
                images = np.stack([view.apply(im, rng) for im in images]) if len(images) else images
            memo[key] = np.asarray(self.backbones[part.backbone_key](images), np.float32)
        f = memo[key]
        return f.astype(part.dtype).astype(np.float32) if self.round_features else f

    def _probs(self, plan: Plan, pixels, memo: dict) -> np.ndarray:
        if isinstance(plan, HeadPlan):
            head = self.heads[str(plan.head_dir)]

            def on(mirrored: bool) -> np.ndarray:
                parts = [self._features(p, pixels, mirrored, memo) for p in plan.parts]
                x = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
                return head.predict_proba(x, calibrated=True)

            if not plan.mirror:
                return np.asarray(on(False), np.float32)
            from featkit.features.combine import mean_probs

            return mean_probs([on(False), on(True)])
        if isinstance(plan, CnnPlan):
            from featkit.runs.calibration import apply_temperature

            model = self.heads[str(plan.model_file)]
            images = pixels[plan.input]
            if not len(images):
                return np.zeros((0, plan.n_classes), np.float32)
            raw = model.predict(images, batch_size=self.batch_size, verbose=0).astype(np.float32)
            return apply_temperature(raw, plan.temperature)
        from featkit.features.combine import mean_probs
        from featkit.runs.calibration import apply_temperature

        return apply_temperature(mean_probs([self._probs(m, pixels, memo) for m in plan.members]), plan.temperature)

    def predict_files(
        self,
        paths: Sequence[str],
        read: Callable[[str], bytes] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> tuple[np.ndarray, list[int], list[ImageFailure]]:
        """(probabilities of the readable photos (len(ok), n_classes), ok: their indices into `paths`, failures).
        `read`: how a path becomes bytes (default: the file's bytes; e.g. a dataset source's `read`). Photos go in
        batches of `batch_size`; a photo that fails to decode at any input is skipped and reported once."""
        read = read or (lambda p: Path(p).read_bytes())
        out: list[np.ndarray] = []
        ok_all: list[int] = []
        failures: list[ImageFailure] = []
        inputs = self.inputs
        for start in range(0, len(paths), self.batch_size):
            names = list(paths[start : start + self.batch_size])
            pixels: dict[PhotoInput, np.ndarray] = {}
            failed: dict[int, ImageFailure] = {}
            for inp in inputs:
                pixels[inp], fails = load_images(read, names, inp.size, inp.resize, decode=inp.decode)
                for f in fails:
                    failed.setdefault(f.index, f)
            ok = [i for i in range(len(names)) if i not in failed]
            failures += [ImageFailure(start + f.index, f.path, f.error) for f in sorted(failed.values(), key=_idx)]
            if ok:
                out.append(self.probabilities({k: v[ok] for k, v in pixels.items()}))
                ok_all += [start + i for i in ok]
            if progress is not None:
                progress(len(names))
        probs = np.concatenate(out) if out else np.zeros((0, self.plan.n_classes), np.float32)
        return probs, ok_all, failures


def _idx(f: ImageFailure) -> int:
    return f.index


__all__ = [
    "PhotoInput",
    "FeaturePart",
    "HeadPlan",
    "CnnPlan",
    "EnsemblePlan",
    "Plan",
    "Leaf",
    "RunPhotos",
    "load_plan",
    "plan_leaves",
    "load_plan_head",
    "resolve_run",
    "plan_parts",
    "plan_inputs",
    "describe_plan",
    "RunModel",
    "SWEEP_PREFIX",
]
