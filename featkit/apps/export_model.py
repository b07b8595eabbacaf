"""`featkit export model RUN --out model.onnx`: one ONNX file from photo pixels to the run's calibrated
probabilities, runnable with onnxruntime alone, and its sidecar model.json.

Input "images": uint8 RGB [N, S, S, 3], photos decoded and resized as the run's were (the sidecar names size and
resize mode; a run over several sizes takes one input per size: "images" at the largest, "images_<S>" at the
others). Output "probabilities": float32 [N, n_classes] in the run's class order. Inside:

- each backbone once (its preprocessing, layout and pooling inside), shared by every member that uses it; the
  mirrored photo of a `--tta flip` run goes through it in the same batch;
- each head run: its caches' features side by side, the head (standardisation, weights, temperature), and the mean
  over the plain and the mirrored photo when the run averaged them;
- each CNN run: its network (tf2onnx) and temperature;
- an ensemble: the mean of its members, then its temperature.

`precision="int8"`: every backbone is replaced by its int8 copy, calibrated on training photos of the run's dataset
(featkit.features.quantize); heads and CNN runs stay float32.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from featkit.apps.run_model import (
    CnnPlan,
    EnsemblePlan,
    FeaturePart,
    HeadPlan,
    PhotoInput,
    Plan,
    RunPhotos,
    load_plan,
    load_plan_head,
    plan_inputs,
    plan_leaves,
    resolve_run,
)
from featkit.core.errors import FeatkitError
from featkit.core.fileio import atomic_path, read_json, write_json
from featkit.core.onnx_graph import GraphBuilder
from featkit.core.version import __version__
from featkit.runs.store import DEFAULT_REPORTS, Run

PRECISIONS = ("float32", "int8")
INPUT, OUTPUT = "images", "probabilities"
VIEWS = ("plain", "flip")
REDO = "re-run the command that made the run"


@dataclass
class ExportResult:
    path: str
    sidecar: str
    run: str
    kind: str
    precision: str
    inputs: list[dict]
    n_classes: int
    sha256: str
    bytes: int
    seconds: float
    notes: list[str] = field(default_factory=list)


def _decoding(inputs: list[PhotoInput]) -> tuple[str, str, bool]:
    """The resize mode, decode mode and crop-box flag every part decodes photos with (one input per size)."""
    modes = {(i.resize, i.decode, i.crop_box) for i in inputs}
    if len(modes) > 1:
        raise FeatkitError(
            "the runs of this ensemble decode photos differently (resize, decode, crop box: "
            f"{sorted(modes)}): one set of inputs cannot feed them all; export the members separately."
        )
    return next(iter(modes))


def export_model(
    run_ref: str | Path | Run,
    out: str | Path,
    precision: str = "float32",
    reports: str | Path = DEFAULT_REPORTS,
    cache_dir: str | Path = "cache",
    quiet: bool = False,
) -> ExportResult:
    """Write the run (head, several caches, mirrored view, ensemble, CNN; "sweep:latest") as one ONNX file at `out`
    and its sidecar (`out` with suffix .json); returns what was written."""
    started = time.perf_counter()
    if precision not in PRECISIONS:
        raise FeatkitError(f"--precision {precision!r}: expected {' or '.join(PRECISIONS)}.")
    out = Path(out).expanduser()
    sidecar = out.with_suffix(".json") if out.suffix != ".json" else out.with_name(out.name + ".json")
    _check_out(out, sidecar)
    run = resolve_run(run_ref, reports)[0]
    if not run.complete:
        raise FeatkitError(f"run {run.id} did not finish (no metrics.json): {REDO}.")
    plan = load_plan(run, reports)
    leaves = plan_leaves(plan)
    # every head loaded now: a damaged run stops before any work
    heads = {str(leaf.head_dir): load_plan_head(leaf) for leaf in leaves if isinstance(leaf, HeadPlan)}
    resize, decode, crop_box = _decoding(plan_inputs(plan))
    say = (lambda m: None) if quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    notes: list[str] = []
    if crop_box:
        notes.append("the run's photos were cropped to their bounding boxes; new photos are used whole")

    # what each backbone must see: {key: (part, views)}
    needs: dict[tuple[str, int], tuple[FeaturePart, set[str]]] = {}
    sizes = {i.size for i in plan_inputs(plan)}
    for leaf in leaves:
        if isinstance(leaf, HeadPlan):
            for part in leaf.parts:
                entry = needs.setdefault(_key(part), (part, set()))
                entry[1].update(["plain", "flip"] if leaf.mirror else ["plain"])

    g = GraphBuilder(f"featkit_{run.id}")
    ordered = sorted(sizes, reverse=True)
    names = {s: INPUT if i == 0 else f"{INPUT}_{s}" for i, s in enumerate(ordered)}
    images = {s: g.input(names[s], "uint8", ["N", s, s, 3]) for s in ordered}
    n = g.batch_size(images[ordered[0]])
    flipped: dict[int, str] = {}

    def view(size: int, v: str) -> str:
        if v == "plain":
            return images[size]
        if size not in flipped:  # mirrored left-right: the width axis of NHWC, as data.augment.Mirror
            flipped[size] = g.op(
                "Slice",
                [images[size], *(g.const([x], "i", np.int64) for x in (-1, np.iinfo(np.int64).min, 2, -1))],
                "mirrored",
            )
        return flipped[size]

    prep = None
    features: dict[tuple[tuple[str, int], str], str] = {}
    for i, (key, (part, views)) in enumerate(needs.items()):
        spec, size = part.backbone, part.input.size
        if precision == "int8" and prep is None:
            prep = _prepared(leaves[0].photos, cache_dir, quiet)
        model, note = _backbone_model(part, precision, leaves[0].photos, prep, cache_dir, quiet)
        if note:
            notes.append(note)
        order = [v for v in VIEWS if v in views]
        batch = view(size, order[0]) if len(order) == 1 else g.op("Concat", [view(size, v) for v in order], axis=0)
        say(f"backbone {spec.name} at {size} px ({precision}{', with its mirrored view' if len(order) > 1 else ''})")
        (feats,) = g.embed(model, f"backbone{i}/", {"images": batch})
        for j, v in enumerate(order):
            features[key, v] = g.batch_slice(feats, n, j, len(order))

    if precision == "int8" and any(isinstance(leaf, CnnPlan) for leaf in leaves):
        notes.append("CNN runs stay float32 in an int8 export (only backbones of head runs are quantised)")
    probs = _build(g, plan, heads, features, images, n, say)
    n_classes = len(run.classes)
    g.output(probs, OUTPUT, "float32", ["N", n_classes])
    model = g.model(doc=f"featkit {__version__}: run {run.id}, photos to calibrated probabilities")

    import onnx

    from featkit.backbones.onnx_model import X64_QUANT_PRECISION

    # onnxruntime session settings the file needs: int8 kernels that do not saturate on x86 CPUs without VNNI
    session_config = {X64_QUANT_PRECISION: "1"} if precision == "int8" else {}
    with atomic_path(out) as tmp:
        onnx.save(model, str(tmp))
        _self_check(tmp, {names[s]: s for s in ordered}, n_classes, session_config)
    from featkit.backbones.base import file_sha256

    sha, nbytes = file_sha256(out), out.stat().st_size
    cfg = run.config
    metrics = run.metrics.to_dict()
    inputs = [{"name": names[s], "size": s, "dtype": "uint8", "shape": ["N", s, s, 3], "color": "RGB"} for s in ordered]
    write_json(
        sidecar,
        {
            "format": "featkit-onnx-export",
            "file": out.name,
            "sha256": sha,
            "bytes": nbytes,
            "run": run.id,
            "kind": cfg.kind,
            "name": cfg.name,
            "precision": precision,
            "classes": [{"index": i, "id": c.id, "name": c.name} for i, c in enumerate(run.classes)],
            "size": ordered[0],
            "sizes": ordered,
            "resize": resize,
            "decode": decode,
            "crop_box": crop_box,
            "inputs": inputs,
            "input": names[ordered[0]],
            "output": OUTPUT,
            "output_shape": ["N", n_classes],
            "session_config": session_config,
            "dataset": cfg.dataset,
            "fingerprint": cfg.fingerprint,
            "test_metrics": {
                k: metrics.get(k)
                for k in ("top1", "top5", "log_loss", "ece", "brier", "n", "temperature")
                if k in metrics
            },
            "featkit_version": __version__,
            "opset": g.opsets,
            "notes": notes,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )
    seconds = round(time.perf_counter() - started, 3)
    say(f"exported run {run.id} ({precision}) -> {out} ({nbytes / 2**20:.1f} MiB, {seconds:.1f} s); sidecar {sidecar}")
    return ExportResult(
        str(out), str(sidecar), run.id, cfg.kind, precision, inputs, n_classes, sha, nbytes, seconds, notes
    )


def _key(part: FeaturePart) -> tuple[str, int]:
    """Parts with the same key share one backbone in the graph: the backbone as built, at the part's photo size."""
    return part.backbone_key, part.input.size


def _build(g: GraphBuilder, node: Plan, heads: dict[str, Any], features: dict, images: dict, n: str, say) -> str:
    if isinstance(node, EnsemblePlan):
        members = [_build(g, m, heads, features, images, n, say) for m in node.members]
        mean = members[0] if len(members) == 1 else g.op("Mean", members, "ensemble_mean")
        return g.temperature(mean, node.temperature)
    if isinstance(node, CnnPlan):
        from featkit.cnn.to_onnx import cnn_onnx

        say(f"CNN run {node.run_id}: converting model.keras with tf2onnx")
        (probs,) = g.embed(cnn_onnx(node.run_path), g.fresh("cnn") + "/", {"images": images[node.input.size]})
        return g.temperature(probs, node.temperature)
    from featkit.heads.to_onnx import head_onnx

    head = heads[str(node.head_dir)]
    if head.n_features_in_ != node.n_features:
        raise FeatkitError(
            f"run {node.run_id}: its head takes {head.n_features_in_} features but head.json says {node.n_features}: "
            f"{node.head_dir} is damaged; {REDO}."
        )
    say(f"{head.name} head of run {node.run_id}{' (mirrored view averaged)' if node.mirror else ''}")
    order = ["plain", "flip"] if node.mirror else ["plain"]
    per_view = []
    for v in order:
        cols = [features[_key(p), v] for p in node.parts]
        per_view.append(cols[0] if len(cols) == 1 else g.op("Concat", cols, "concatenated", axis=1))
    x = per_view[0] if len(per_view) == 1 else g.op("Concat", per_view, axis=0)
    (probs,) = g.embed(head_onnx(head), g.fresh("head") + "/", {"features": x})
    if len(order) == 1:
        return probs
    return g.op("Mean", [g.batch_slice(probs, n, j, len(order)) for j in range(len(order))], "tta_mean")


def _backbone_model(part: FeaturePart, precision: str, photos: RunPhotos, prep, cache_dir, quiet: bool):
    from featkit.backbones.to_onnx import backbone_source, onnx_features_model

    spec, size = part.backbone, part.input.size
    source = backbone_source(spec, cache_dir, quiet=quiet)
    options = spec.options if spec.kind == "onnx" else None
    note = None
    if precision == "int8":
        from featkit.backbones.onnx_model import read_contract

        if read_contract(source).precision != "int8":
            from featkit.features.extract import ExtractOptions
            from featkit.features.quantize import quantize_onnx

            opts = ExtractOptions(
                backbone=str(source),
                size=size,
                resize=part.input.resize,
                crop_box=part.input.crop_box,
                decode=part.input.decode,
                seed=photos.seed,
            )
            q = quantize_onnx(source, prep, opts, cache_dir=cache_dir, quiet=quiet)
            source, options = Path(q.path), None
            note = f"{spec.name} at {size} px: int8, calibrated on {q.photos} training photos ({Path(q.path).name})"
    return onnx_features_model(source, size, options), note


def _prepared(photos: RunPhotos, cache_dir, quiet: bool):
    from featkit.data import prepare

    if not photos.data or not Path(photos.data).exists():
        raise FeatkitError(
            f"--precision int8 calibrates on the run's training photos, but its dataset {photos.data!r} is not there: "
            "restore it, or export with --precision float32."
        )
    return prepare(photos.data, cache_dir=cache_dir, quiet=quiet)


def _check_out(out: Path, sidecar: Path) -> None:
    """Refuse, before any work, an --out that is a folder, unwritable, or a file featkit did not export."""
    if out.is_dir():
        raise FeatkitError(f"--out {out} is a directory: give a file path such as {out / 'model.onnx'}.")
    if out.exists():
        try:
            previous = read_json(sidecar, dict) if sidecar.is_file() else {}
        except FeatkitError:
            previous = {}
        if previous.get("format") != "featkit-onnx-export":
            raise FeatkitError(f"--out {out} exists and is not a featkit export: give another path, or delete it.")
    parent = out.parent if str(out.parent) else Path(".")
    existing = next((p for p in [parent, *parent.parents] if p.exists()), Path("."))
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise FeatkitError(f"--out {out}: {existing} is not a writable folder; give another path.")
    if sidecar.is_dir():
        raise FeatkitError(f"the sidecar path {sidecar} is a directory: give another --out.")
    if sidecar.exists():
        try:
            ours = read_json(sidecar, dict).get("format") == "featkit-onnx-export"
        except FeatkitError:
            ours = False
        if not ours:
            raise FeatkitError(
                f"{sidecar} (the sidecar of --out {out.name}) exists and is not featkit's: give another --out."
            )


def _self_check(path: Path, inputs: dict[str, int], n_classes: int, config: dict[str, str]) -> None:
    """The written file loads in onnxruntime and gives n_classes probabilities summing to 1 for two blank photos."""
    import onnxruntime as ort

    try:
        opts = ort.SessionOptions()
        for key, value in config.items():
            opts.add_session_config_entry(key, value)
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        feed = {name: np.full((2, s, s, 3), 128, np.uint8) for name, s in inputs.items()}
        probs = sess.run([OUTPUT], feed)[0]
    except Exception as e:  # onnxruntime raises its own kinds
        raise FeatkitError(
            f"the exported graph does not run in onnxruntime ({' '.join(str(e).split())[:300]})."
        ) from None
    if probs.shape != (2, n_classes) or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
        raise FeatkitError(f"the exported graph gives {probs.shape} outputs not summing to 1: not written.")


def run_test_photos(run: Run, size: int, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 photos (N, size, size, 3), image ids): the test photos of `run`'s predictions, in their order,
    decoded from its dataset as the run decoded them (for checking an export against the run)."""
    from featkit.data import open_run_photos
    from featkit.data.images import load_images

    plan = load_plan(run, DEFAULT_REPORTS)
    photos, inp = plan_leaves(plan)[0].photos, plan_inputs(plan)[0]
    ids = run.load_predictions("test")["image_ids"][:limit]
    if not photos.data or not photos.manifest or not Path(photos.manifest).is_file():
        raise FeatkitError(
            f"run {run.id} names no dataset / manifest that still exists ({photos.data}, {photos.manifest})."
        )
    source, manifest = open_run_photos(photos.data, photos.manifest)
    row = {str(i): r for r, i in enumerate(manifest["image_id"].astype(str))}
    paths = manifest["path"].to_numpy()[[row[str(i)] for i in ids]]
    images, failures = load_images(source.read, list(paths), size, inp.resize, decode=inp.decode)
    if failures:
        raise FeatkitError(f"{len(failures)} test photos cannot be read (first: {failures[0]}).")
    return images, np.asarray(ids)


__all__ = ["export_model", "run_test_photos", "ExportResult", "PRECISIONS"]
