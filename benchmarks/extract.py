"""Extraction speed against the machine's limit, measured side by side in one run on the same photos.

On a CPU-only machine decoding and the backbone share the same cores, so the best a pipeline can do is
1 / (decode-and-resize time per photo + backbone time per photo), each measured alone on all cores. This script
measures both, then the whole `featkit extract` command (start-up, manifest, cache writing included) and prints
the ratio of the whole command to that limit.

    python benchmarks/extract.py                                   # MobileNetV2 ONNX, 128 px, whole shared zip
    python benchmarks/extract.py --backbone vgg16 --weights none --subset 4000
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


def subset_folder(zip_path: Path, n: int, dest: Path) -> Path:
    """The first n photos of the zip, taken round-robin over classes, as class folders."""
    with zipfile.ZipFile(zip_path) as z:
        names = sorted(x for x in z.namelist() if x.endswith(".jpg"))
        by_class: dict[str, list[str]] = {}
        for x in names:
            by_class.setdefault(x.split("/")[-2], []).append(x)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=SHARED / "data" / "food101-64.zip")
    ap.add_argument("--backbone", default=str(SHARED / "models" / "mobilenet-v2.onnx"))
    ap.add_argument("--weights", default="imagenet")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--subset", type=int, default=0, help="use only the first N photos (class folders in a temp dir)")
    ap.add_argument("--backbone-sample", type=int, default=2048, help="photos timed for the bare backbone")
    args = ap.parse_args()

    from featkit.backbones import get_backbone
    from featkit.data import prepare
    from featkit.data.images import decode_image, default_threads

    work = Path(tempfile.mkdtemp(prefix="featkit-bench-"))
    try:
        data = subset_folder(args.data, args.subset, work / "data") if args.subset else args.data
        cache = work / "cache"
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
                list(pool.map(one, paths[start:start + 4096]))
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
        cmd = [sys.executable, "-m", "featkit.cli", "extract", "--data", str(data), "--backbone", args.backbone,
               "--size", str(args.size), "--weights", args.weights, "--cache", str(cache), "--quiet", "--json"]
        t0 = time.perf_counter()
        out = subprocess.run(cmd, check=True, capture_output=True, text=True)
        whole_s = time.perf_counter() - t0
        whole_rate = n / whole_s
        res = json.loads(out.stdout)[0]

        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        again_s = time.perf_counter() - t0

        from featkit.cache import read_cache

        t0 = time.perf_counter()
        fs = read_cache(res["path"])
        read_s = time.perf_counter() - t0

        print(f"backbone {args.backbone} ({args.weights}) at {args.size} px, {n:,} photos, {os.cpu_count()} cores")
        print(f"  scan + manifest (once per dataset)     {scan_s:8.1f} s")
        print(f"  decode + resize alone                  {decode_rate:8.0f} photos/s")
        print(f"  backbone alone (pre-decoded arrays)    {backbone_rate:8.0f} photos/s")
        print(f"  limit 1/(1/decode + 1/backbone)        {limit:8.0f} photos/s")
        print(f"  whole `featkit extract` command        {whole_rate:8.0f} photos/s  ({whole_s:.1f} s)")
        print(f"  ratio whole / limit                    {whole_rate / limit:8.2f}")
        print(f"  second identical run                   {again_s:8.1f} s")
        print(f"  read back {fs.features.shape} cache      {read_s:8.2f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
