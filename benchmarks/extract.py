"""Extraction speed against the machine's limit, measured side by side in one run on the same photos.

On a CPU-only machine decoding and the backbone share the same cores, so the best a pipeline can do is
1 / (decode-and-resize time per photo + backbone time per photo), each measured alone on all cores. This script
measures both, then the whole `featkit extract` command (start-up, manifest, cache writing included) and prints
the ratio of the whole command to that limit.

It also compares, side by side in the same run (ONNX backbones; --no-int8 / --large-per-class 0 skip them):
  * float32 vs int8 (`featkit quantize`, timed separately): the backbone alone on the same decoded photos, the
    whole `featkit extract` command (`--precision int8`, model already quantised), and the logreg head's test
    top-1 / top-5 on each cache;
  * full-size vs draft JPEG decoding on large photos: shared photos upscaled to 512-800 px per side and saved as
    JPEG quality 90 in a temp folder (class folders), decode alone, whole command (`--decode full|draft`) and
    the logreg head on each cache.

    python benchmarks/extract.py --cache /work/cache-16            # MobileNetV2 ONNX, 128 px, whole shared zip
    python benchmarks/extract.py --backbone vgg16 --weights none --subset 4000 --no-int8 --large-per-class 0

With --cache, the manifest and the int8 model are kept there between runs; the feature folders this script times
are deleted before each timed run, so every timed command extracts from scratch.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FEATKIT_SHARED", REPO.parent / "shared"))


def _photos_by_class(z: zipfile.ZipFile) -> dict[str, list[str]]:
    """{class folder: its .jpg members, sorted}."""
    by_class: dict[str, list[str]] = {}
    for x in sorted(x for x in z.namelist() if x.endswith(".jpg")):
        by_class.setdefault(x.split("/")[-2], []).append(x)
    return by_class


def subset_folder(zip_path: Path, n: int, dest: Path) -> Path:
    """The first n photos of the zip, taken round-robin over classes, as class folders."""
    with zipfile.ZipFile(zip_path) as z:
        by_class = _photos_by_class(z)
        chosen, i = [], 0
        while len(chosen) < n:
            for c in sorted(by_class):
                if i < len(by_class[c]) and len(chosen) < n:
                    chosen.append(by_class[c][i])
            i += 1
        for x in chosen:
            target = dest / x.split("/")[-2] / x.rsplit("/", 1)[1]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(z.read(x))
    return dest


def extract_cmd(data: Path, cache: Path, args, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "featkit.cli",
        "extract",
        "--data",
        str(data),
        "--backbone",
        args.backbone,
        "--size",
        str(args.size),
        "--weights",
        args.weights,
        "--cache",
        str(cache),
        "--quiet",
        "--json",
        *extra,
    ]


def timed_extract(cmd: list[str], prep, cache: Path, **options) -> tuple[float, dict]:
    """Seconds of one `featkit extract ... --json` from scratch (its feature folder removed first), its result.
    `options`: the ExtractOptions the command amounts to (to find its feature folder)."""
    from dataclasses import replace

    from featkit.features.extract import ExtractOptions, features_dir
    from featkit.features.quantize import ensure_int8

    opts = ExtractOptions(**options)
    if opts.precision == "int8":
        opts = replace(opts, backbone=str(ensure_int8(prep, opts, cache, quiet=True)))
    shutil.rmtree(features_dir(prep, opts, cache), ignore_errors=True)
    t0 = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return time.perf_counter() - t0, json.loads(out.stdout)[0]


def logreg(cache_path: str, reports: Path) -> tuple[float, float]:
    """Test top-1/top-5 of one logreg (C = 0.001, the value `fit-head`'s search picks on these features; fitted on
    train only): the same head on every pair of caches compared."""
    from featkit.heads.fit import fit_head

    m = fit_head(cache_path, head="logreg", params={"C": 0.001}, refit=False, reports=reports, quiet=True).metrics
    return m.top1, m.top5


def compare_int8(
    args, data: Path, cache: Path, prep, arr: np.ndarray, f32_whole_s: float, f32_cache: str, work: Path
) -> None:
    from featkit.backbones import get_backbone
    from featkit.features.extract import ExtractOptions
    from featkit.features.quantize import quantize_onnx

    n = len(prep.manifest)
    t0 = time.perf_counter()
    q = quantize_onnx(
        args.backbone, prep, ExtractOptions(backbone=args.backbone, size=args.size), cache_dir=cache, quiet=True
    )
    quant_s = time.perf_counter() - t0
    f32, i8 = get_backbone(args.backbone, size=args.size), get_backbone(q.path, size=args.size)
    rates = {}
    for name, bb in (("float32", f32), ("int8", i8), ("float32 again", f32), ("int8 again", i8)):
        bb(arr[: bb.batch_size])
        t0 = time.perf_counter()
        feats = bb(arr)
        rates[name] = len(arr) / (time.perf_counter() - t0)
        if name == "float32":
            a = feats
        elif name == "int8":
            b = feats
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
    f32_alone, i8_alone = max(rates["float32"], rates["float32 again"]), max(rates["int8"], rates["int8 again"])

    i8_whole_s, res = timed_extract(
        extract_cmd(data, cache, args, "--precision", "int8"),
        prep,
        cache,
        backbone=args.backbone,
        size=args.size,
        precision="int8",
    )
    reports = work / "reports"
    f_top = logreg(f32_cache, reports)
    i_top = logreg(res["path"], reports)
    print(f"\nfloat32 vs int8 ({q.status} int8 model: {q.photos} training photos, {quant_s:.1f} s; {q.path})")
    print(f"  {'':38}{'float32':>10}{'int8':>10}{'ratio':>8}")
    print(f"  {'backbone alone (photos/s, best of 2)':38}{f32_alone:10.0f}{i8_alone:10.0f}{i8_alone / f32_alone:8.2f}")
    print(
        f"  {'whole `featkit extract` (photos/s)':38}{n / f32_whole_s:10.0f}{n / i8_whole_s:10.0f}"
        f"{f32_whole_s / i8_whole_s:8.2f}"
    )
    print(f"  {'whole `featkit extract` (s)':38}{f32_whole_s:10.1f}{i8_whole_s:10.1f}")
    print(
        f"  {'logreg test top-1 (%)':38}{100 * f_top[0]:10.2f}{100 * i_top[0]:10.2f}{100 * (i_top[0] - f_top[0]):+8.2f}"
    )
    print(
        f"  {'logreg test top-5 (%)':38}{100 * f_top[1]:10.2f}{100 * i_top[1]:10.2f}{100 * (i_top[1] - f_top[1]):+8.2f}"
    )
    print(
        f"  cosine int8 vs float32 features on {len(arr):,} photos: median {np.median(cos):.4f}, "
        f"5th percentile {np.percentile(cos, 5):.4f}"
    )
    sys.stdout.flush()


def large_jpegs(zip_path: Path, per_class: int, dest: Path, seed: int = 0) -> Path:
    """The first `per_class` photos of each class, upscaled to 512-800 px per side (seeded), JPEG quality 90."""
    import io

    from PIL import Image

    rng = np.random.default_rng(seed)
    with zipfile.ZipFile(zip_path) as z:
        by_class = _photos_by_class(z)
        for c in sorted(by_class):
            (dest / c).mkdir(parents=True, exist_ok=True)
            for x in by_class[c][:per_class]:
                w, h = (int(v) for v in rng.integers(512, 801, 2))
                img = Image.open(io.BytesIO(z.read(x))).convert("RGB").resize((w, h), Image.BICUBIC)
                img.save(dest / c / x.rsplit("/", 1)[1], "JPEG", quality=90)
    return dest


def compare_decode(args, work: Path, cache: Path) -> None:
    from featkit.data import prepare
    from featkit.data.images import decode_image, default_threads

    t0 = time.perf_counter()
    data = large_jpegs(args.data, args.large_per_class, work / "large")
    make_s = time.perf_counter() - t0
    prep = prepare(data, cache_dir=cache, quiet=True)
    paths = prep.manifest["path"].tolist()
    blobs = [prep.read(p) for p in paths]  # in memory: time the decoding, not the disk
    rates = {}
    with ThreadPoolExecutor(default_threads()) as pool:
        for mode in ("full", "draft", "full", "draft"):
            t0 = time.perf_counter()
            list(pool.map(lambda b, m=mode: decode_image(b, args.size, decode=m), blobs))
            rates[mode] = max(rates.get(mode, 0.0), len(blobs) / (time.perf_counter() - t0))
    whole, tops = {}, {}
    for mode in ("full", "draft"):
        whole[mode], res = timed_extract(
            extract_cmd(data, cache, args, "--decode", mode),
            prep,
            cache,
            backbone=args.backbone,
            size=args.size,
            weights=args.weights,
            decode=mode,
        )
        tops[mode] = logreg(res["path"], work / "reports")
    n = len(paths)
    mb = sum(len(b) for b in blobs) / n / 1024
    print(
        f"\nfull vs draft decoding: {n:,} photos upscaled to 512-800 px, JPEG q90 ({mb:.0f} KiB each; made in "
        f"{make_s:.1f} s), to {args.size} px, {args.backbone.rsplit('/', 1)[-1]}"
    )
    print(f"  {'':38}{'full':>10}{'draft':>10}{'ratio':>8}")
    print(
        f"  {'decode + resize alone (photos/s)':38}{rates['full']:10.0f}{rates['draft']:10.0f}"
        f"{rates['draft'] / rates['full']:8.2f}"
    )
    print(
        f"  {'whole `featkit extract` (photos/s)':38}{n / whole['full']:10.0f}{n / whole['draft']:10.0f}"
        f"{whole['full'] / whole['draft']:8.2f}"
    )
    print(
        f"  {'logreg test top-1 (%)':38}{100 * tops['full'][0]:10.2f}{100 * tops['draft'][0]:10.2f}"
        f"{100 * (tops['draft'][0] - tops['full'][0]):+8.2f}"
    )
    print(
        f"  {'logreg test top-5 (%)':38}{100 * tops['full'][1]:10.2f}{100 * tops['draft'][1]:10.2f}"
        f"{100 * (tops['draft'][1] - tops['full'][1]):+8.2f}"
    )
    sys.stdout.flush()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=SHARED / "data" / "food101-64.zip")
    ap.add_argument("--backbone", default=str(SHARED / "models" / "mobilenet-v2.onnx"))
    ap.add_argument("--weights", default="imagenet")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--subset", type=int, default=0, help="use only the first N photos (class folders in a temp dir)")
    ap.add_argument("--backbone-sample", type=int, default=2048, help="photos timed for the bare backbone")
    ap.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="cache folder to keep manifests and the int8 model in (default: a temp folder)",
    )
    ap.add_argument("--no-int8", action="store_true", help="skip the float32 vs int8 comparison")
    ap.add_argument(
        "--large-per-class",
        type=int,
        default=50,
        help="photos per class in the large-JPEG set (0: skip the full vs draft decode comparison)",
    )
    args = ap.parse_args()

    from featkit.backbones import get_backbone
    from featkit.data import prepare
    from featkit.data.images import decode_image, default_threads

    work = Path(tempfile.mkdtemp(prefix="featkit-bench-"))
    try:
        data = subset_folder(args.data, args.subset, work / "data") if args.subset else args.data
        cache = args.cache or work / "cache"
        t0 = time.perf_counter()
        prep = prepare(data, cache_dir=cache, quiet=True)
        scan_s = time.perf_counter() - t0
        paths = prep.manifest["path"].tolist()
        n = len(paths)

        # 1. decode and resize alone, all cores, same function and thread count as extract
        t0 = time.perf_counter()
        with ThreadPoolExecutor(default_threads()) as pool:

            def one(p):
                return decode_image(prep.read(p), args.size)

            sample = list(pool.map(one, paths[: max(args.backbone_sample, 1)]))
            for start in range(len(sample), n, 4096):
                list(pool.map(one, paths[start : start + 4096]))
        decode_s = time.perf_counter() - t0
        decode_rate = n / decode_s

        # 2. the bare backbone on pre-decoded arrays (after one warm-up batch)
        bb = get_backbone(args.backbone, size=args.size, weights=args.weights)
        arr = np.stack(sample)
        bb(arr[: bb.batch_size])
        t0 = time.perf_counter()
        bb(arr)
        backbone_rate = len(arr) / (time.perf_counter() - t0)
        del bb

        limit = 1.0 / (1.0 / decode_rate + 1.0 / backbone_rate)

        # 3. the whole command, as a user runs it (manifest already made, as after `featkit data summary`)
        cmd = extract_cmd(data, cache, args)
        whole_s, res = timed_extract(cmd, prep, cache, backbone=args.backbone, size=args.size, weights=args.weights)
        whole_rate = n / whole_s

        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        again_s = time.perf_counter() - t0

        from featkit.features.cache import read_cache

        t0 = time.perf_counter()
        fs = read_cache(res["path"])
        read_s = time.perf_counter() - t0

        print(f"backbone {args.backbone} ({args.weights}) at {args.size} px, {n:,} photos, {os.cpu_count()} cores")
        print(f"  scan + manifest (once per dataset)     {scan_s:8.1f} s")
        print(f"  decode + resize alone                  {decode_rate:8.0f} photos/s")
        print(f"  backbone alone (pre-decoded arrays)    {backbone_rate:8.0f} photos/s")
        print(f"  limit 1/(1/decode + 1/backbone)        {limit:8.0f} photos/s")
        print(f"  whole `featkit extract` command        {whole_rate:8.0f} photos/s  ({whole_s:.1f} s)")
        stages = fs.meta.stage_seconds
        if stages is not None:  # each stage's own seconds (they overlap: decoding runs ahead of the backbone)
            print(
                f"    its stages: decode {stages.decode:.1f} s, forward {stages.forward:.1f} s, "
                f"write {stages.write:.1f} s  ({n / stages.decode:.0f} photos/s decoded, "
                f"{n / stages.forward:.0f} photos/s through the backbone)"
            )
        print(f"  ratio whole / limit                    {whole_rate / limit:8.2f}")
        print(f"  second identical run                   {again_s:8.1f} s")
        print(f"  read back {fs.features.shape} cache      {read_s:8.2f} s")
        sys.stdout.flush()

        if not args.no_int8 and args.backbone.lower().endswith(".onnx"):
            compare_int8(args, data, cache, prep, arr, whole_s, res["path"], work)
        if args.large_per_class:
            compare_decode(args, work, cache)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
