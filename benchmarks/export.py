"""`featkit export model` measured: runs of each kind exported to float32 and int8, side by side in one run, and
Keras VGG16 float32 against its converted int8 copy.

Part 1 (runs): a class-folder subset of the shared zip (--classes x --per-class photos, 70/20/10 split), both shared
ONNX backbones extracted at --size with the mirrored view, then one run of each kind: logreg, knn, lightgbm (one
cache), logreg on both caches with the mirrored view, and the ensemble of all four (what `featkit sweep` selects
is one of these kinds). Each is exported to float32 and int8; on the run's test photos the table gives top-1
agreement with the run's saved test predictions, mean |dp|, test top-1 of the export, and photos/s of the export
under onnxruntime (decoded photos, batch 64) next to `featkit predict` (photo files, decoding included, so the
photos/s of decoding alone is printed too) where this featkit's predict accepts the run kind.

Part 2 (Keras): VGG16 at --vgg-size (weights none: speed only) in Keras float32 and as its tf2onnx copy quantised
to int8 (calibrated on the subset's training photos), photos/s on the same photos; and the shared Keras MobileNetV2
weights converted and quantised the same way: cosine of the int8 features to Keras float32 ones per photo.

    python benchmarks/export.py --work /tmp/export-bench                 # 20 classes x 100 photos
    python benchmarks/export.py --work /tmp/export-bench --classes 8 --per-class 40 --vgg-photos 64   # quick check

The machine may be shared: timing figures are noisy, and printed with the load average.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("FEATKIT_SHARED", REPO.parent / "shared"))
BACKBONES = [SHARED / "models" / "mobilenet-v2.onnx", SHARED / "models" / "efficientnet-lite0.onnx"]
KERAS_MNV2 = SHARED / "models" / "keras" / "mobilenet_v2_1.00_224_notop.weights.h5"


def subset(zip_path: Path, classes: int, per_class: int, dest: Path) -> Path:
    """The first `per_class` photos of the first `classes` classes (official order) as class folders."""
    if dest.is_dir() and any(dest.iterdir()):
        return dest
    with zipfile.ZipFile(zip_path) as z:
        names = z.read("food-101/meta/classes.txt").decode().split()[:classes]
        members = sorted(x for x in z.namelist() if x.endswith(".jpg"))
        for c in names:
            for x in [x for x in members if x.split("/")[-2] == c][:per_class]:
                target = dest / c / x.rsplit("/", 1)[1]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(z.read(x))
    return dest


def rate(fn, n: int, repeat: int = 3) -> float:
    """Photos/s of fn() processing n photos: the best of `repeat` timed calls after one warm-up."""
    fn()
    best = min(_timed(fn) for _ in range(repeat))
    return n / best


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def make_runs(data: Path, args) -> dict:
    from featkit.apps.ensemble import ensemble_runs
    from featkit.core.fileio import read_json, write_json
    from featkit.data import prepare
    from featkit.features.extract import ExtractOptions
    from featkit.features.jobs import extract_features, find_plain_caches
    from featkit.heads.fit import fit_head
    from featkit.runs.store import load_run

    cache, reports = args.work / "cache", args.work / "reports"
    made = args.work / "runs.json"
    if made.is_file():  # the runs of an earlier call with this work folder
        return {kind: load_run(rid, reports) for kind, rid in read_json(made).items()}
    for b in BACKBONES:
        extract_features(data, ExtractOptions(backbone=str(b), size=args.size, tta=("flip",)), cache, quiet=True)
    prep = prepare(data, cache_dir=cache, quiet=True)
    plain = find_plain_caches(prep, [str(b) for b in BACKBONES], [args.size], cache)
    runs = {
        "logreg": fit_head(plain[0], "logreg", reports=reports, quiet=True),
        "knn": fit_head(plain[0], "knn", reports=reports, quiet=True),
        "lightgbm": fit_head(plain[0], "lightgbm", params={"n_estimators": 300}, reports=reports, quiet=True),
        "2 caches + mirrored": fit_head(plain, "logreg", reports=reports, quiet=True, tta="flip"),
    }
    runs["ensemble of the 4"] = ensemble_runs([r.id for r in runs.values()], reports=reports, quiet=True)
    write_json(made, {kind: run.id for kind, run in runs.items()})
    return runs


def part_runs(args) -> None:
    import onnxruntime as ort

    from featkit.apps.export_model import export_model, run_test_photos
    from featkit.core.fileio import read_json
    from featkit.runs.metrics import topk_accuracy

    data = subset(SHARED / "data" / "food101-64.zip", args.classes, args.per_class, args.work / "data")
    t = time.perf_counter()
    runs = make_runs(data, args)
    print(f"# runs made in {time.perf_counter() - t:.0f} s ({args.classes} classes x {args.per_class} photos)")
    header = "| run | precision | agreement | mean abs dp | test top-1 (run) | test top-1 (export) | export photos/s |"
    print(header + " featkit predict photos/s |\n" + "| --- " * 8 + "|")
    reports = args.work / "reports"
    for kind, run in runs.items():
        pred = run.load_predictions("test")
        photos, ids = run_test_photos(run, args.size)
        assert list(ids) == list(pred["image_ids"])
        predict_rate = featkit_predict_rate(run, data, reports)
        for precision in ("float32", "int8"):
            out = args.work / "exports" / f"{run.id}-{precision}.onnx"
            export_model(run.id, out, precision=precision, reports=reports, cache_dir=args.work / "cache", quiet=True)
            opts = ort.SessionOptions()
            for key, value in read_json(out.with_suffix(".json"))["session_config"].items():
                opts.add_session_config_entry(key, value)
            sess = ort.InferenceSession(str(out), opts, providers=["CPUExecutionProvider"])

            def infer(sess=sess, photos=photos):
                return np.concatenate(
                    [sess.run(["probabilities"], {"images": photos[i : i + 64]})[0] for i in range(0, len(photos), 64)]
                )

            probs = infer()
            agree = float((probs.argmax(1) == pred["probs"].argmax(1)).mean())
            dp = float(np.abs(probs - pred["probs"]).mean())
            top1 = topk_accuracy(probs, pred["labels"], (1,))[1]
            run_top1 = run.metrics.top1
            speed = rate(infer, len(photos))
            print(
                f"| {kind} | {precision} | {agree:.2%} | {dp:.1e} | {run_top1:.2%} | {top1:.2%} | {speed:,.0f} | "
                f"{predict_rate if precision == 'float32' else ''} |",
                flush=True,
            )
    print(f"\n(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the end)\n")


def featkit_predict_rate(run, data: Path, reports: Path) -> str:
    """Photos/s of featkit predict on the run's test photo files (decoding included), or why it cannot run."""
    import pandas as pd

    from featkit.apps.predict import predict
    from featkit.core.errors import FeatkitError

    ids = run.load_predictions("test")["image_ids"]
    m = pd.read_csv(run.config.manifest)
    row = dict(zip(m["image_id"].astype(str), m["path"], strict=True))
    files = [data / row[str(i)] for i in ids]
    try:
        return f"{rate(lambda: predict(str(run.path), files, reports=reports), len(files), repeat=1):,.0f}"
    except FeatkitError as e:
        return f"n/a ({str(e)[:60]}...)"


def part_keras(args) -> None:
    from featkit.backbones import get_backbone
    from featkit.backbones.onnx_model import OnnxBackbone
    from featkit.data import prepare
    from featkit.data.arrays import load_rows
    from featkit.features.extract import ExtractOptions
    from featkit.features.quantize import ensure_int8

    data = subset(SHARED / "data" / "food101-64.zip", args.classes, args.per_class, args.work / "data")
    cache = args.work / "cache"
    prep = prepare(data, cache_dir=cache, quiet=True)
    test = np.flatnonzero(prep.manifest["split"].to_numpy() == "test")[: args.vgg_photos]
    s = args.vgg_size
    photos, _ = load_rows(prep, test, s, "stretch", False, "draft")
    print(f"# Keras vs converted int8, {len(photos)} test photos at {s} px")
    print(
        "| backbone | Keras float32 photos/s | ONNX float32 (converted) photos/s | ONNX int8 photos/s | int8 / Keras |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, weights in (("vgg16", "none"),):
        opts = ExtractOptions(backbone=name, size=s, weights=weights)
        t = time.perf_counter()
        int8 = ensure_int8(prep, opts, cache, quiet=True)
        prep_s = time.perf_counter() - t
        keras_bb = get_backbone(name, size=s, weights=weights, batch_size=32)
        from featkit.backbones.to_onnx import keras_onnx

        f32 = OnnxBackbone(keras_onnx(name, s, weights, cache_dir=cache, convert=False), batch_size=32)
        i8 = OnnxBackbone(int8, batch_size=32)
        rk, rf, ri = (rate(lambda bb=bb: bb(photos), len(photos), repeat=2) for bb in (keras_bb, f32, i8))
        print(f"| {name} ({weights} weights) | {rk:,.1f} | {rf:,.1f} | {ri:,.1f} | {ri / rk:.2f}x |")
        print(f"(conversion + quantisation, once: {prep_s:.0f} s)")
    # feature agreement on real weights: the shared Keras MobileNetV2 weights, converted and quantised the same way
    opts = ExtractOptions(backbone="mobilenetv2", size=s, weights=str(KERAS_MNV2))
    int8 = ensure_int8(prep, opts, cache, quiet=True)
    a = get_backbone("mobilenetv2", size=s, weights=str(KERAS_MNV2))(photos).astype(np.float64)
    b = OnnxBackbone(int8)(photos).astype(np.float64)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    print(
        f"\nMobileNetV2 (shared Keras weights) int8 vs Keras float32 features at {s} px, {len(cos)} photos: cosine "
        f"median {np.median(cos):.4f}, 5th percentile {np.percentile(cos, 5):.4f}, min {cos.min():.4f}"
    )
    # the same int8 file with onnxruntime's QDQ -> integer-kernel fusions off (QDQ run as float ops): a low cosine
    # above but a high one here puts the loss in the integer kernels (u8s8 on CPUs without VNNI saturate int16)
    from featkit.backbones.onnx_model import open_session, session_settings

    sess = open_session(Path(int8), {**session_settings(), "graph_optimization_level": "ORT_ENABLE_BASIC"})
    c = np.concatenate([sess.run(["features"], {"images": photos[i : i + 32]})[0] for i in range(0, len(photos), 32)])
    c = c.astype(np.float64)
    cos = (a * c).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(c, axis=1)
    print(f"the same int8 file without integer-kernel fusions (ORT_ENABLE_BASIC): cosine median {np.median(cos):.4f}")
    flags = [f for f in ("avx512_vnni", "avx_vnni", "avx512f", "avx2") if f in Path("/proc/cpuinfo").read_text()]
    print(f"(CPU flags: {', '.join(flags) or 'none of avx2 / avx512 / vnni'})")
    print(f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the end)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=None, help="Work folder (kept: data subset, caches, runs, exports).")
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--size", type=int, default=128, help="Size of the runs' caches.")
    ap.add_argument("--vgg-size", type=int, default=128)
    ap.add_argument("--vgg-photos", type=int, default=256)
    ap.add_argument("--skip-runs", action="store_true")
    ap.add_argument("--skip-keras", action="store_true")
    args = ap.parse_args()
    args.work = args.work or Path(tempfile.mkdtemp(prefix="featkit-export-bench-"))
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"# benchmarks/export.py, work folder {args.work}, {time.strftime('%Y-%m-%d %H:%M')}\n")
    if not args.skip_runs:
        part_runs(args)
    if not args.skip_keras:
        part_keras(args)


if __name__ == "__main__":
    main()
