"""`featkit extract` in one process against `--engine ray` with 1 and 2 workers, side by side in one run.

Each command runs as a user would run it (a fresh process, `--quiet --json`), on the same photos, into its own
cache folder under --cache (the dataset's scan and manifest are made once beforehand and shared, so no command
pays for them). Printed: wall time and photos/s of the whole command, photos/s of the extraction itself, what
starting Ray (and its actors, and merging) costs, and the ratio to the single-process command. The caches are
then compared (same ids, features equal to float16 rounding).

    flock /tmp/featkit-bench.lock python benchmarks/extract_ray.py --cache /work/cache-17

The feature caches under --cache/{local,ray-1,ray-2} are deleted and made again on every run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FEATKIT_SHARED", REPO.parent / "shared"))


def run(cmd: list[str]) -> tuple[float, dict]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    (result,) = json.loads(proc.stdout[proc.stdout.index("[") :])
    return wall, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=SHARED / "data" / "food101-64.zip")
    ap.add_argument("--backbone", default=str(SHARED / "models" / "mobilenet-v2.onnx"))
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--cache", type=Path, required=True, help="a folder of your own for the three caches")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Ray worker counts to run")
    args = ap.parse_args()

    from featkit.data import prepare
    from featkit.features.cache import read_cache, read_meta

    root = args.cache.resolve()
    prepare(args.data, cache_dir=root, quiet=True)  # scan + manifest once, shared by every run below
    base = [
        sys.executable,
        "-m",
        "featkit.cli",
        "extract",
        "--data",
        str(args.data),
        "--backbone",
        args.backbone,
        "--size",
        str(args.size),
        "--quiet",
        "--json",
    ]
    runs = [("single process", "local", [])] + [
        (f"ray, {w} worker{'s' * (w > 1)}", f"ray-{w}", ["--engine", "ray", "--workers", str(w)]) for w in args.workers
    ]
    rows = []
    for label, folder, extra in runs:
        cache = root / folder
        shutil.rmtree(cache, ignore_errors=True)
        cache.mkdir(parents=True)
        (cache / "datasets").symlink_to(root / "datasets")
        wall, res = run(base + ["--cache", str(cache)] + extra)
        meta = read_meta(res["path"])
        rows.append(
            {
                "label": label,
                "wall": wall,
                "photos": res["photos"],
                "path": res["path"],
                "job_rate": meta.photos_per_second,
                "ray_start": meta.extra.get("ray_start_seconds"),
                "cmd": " ".join(["featkit extract ..."] + extra),
            }
        )
        print(f"  done: {label}: {wall:.1f} s", file=sys.stderr)

    ref = rows[0]
    print(f"\n{ref['photos']:,} photos, {Path(args.backbone).name} at {args.size} px, {os.cpu_count()} cores\n")
    print(
        "| command | wall | photos/s (whole command) | photos/s (extraction) | starting Ray | Ray overhead | "
        "ratio to single process |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        whole = r["photos"] / r["wall"]
        # everything the command did besides extracting: start-up, Ray and its actors, merging
        overhead = r["wall"] - r["photos"] / r["job_rate"] - (ref["wall"] - ref["photos"] / ref["job_rate"])
        ray_cols = f"{r['ray_start']:.1f} s | {overhead:.1f} s" if r["ray_start"] is not None else "- | -"
        print(
            f"| {r['label']} (`{r['cmd']}`) | {r['wall']:.1f} s | {whole:,.0f} | {r['job_rate']:,.0f} | {ray_cols} | "
            f"{whole / (ref['photos'] / ref['wall']):.2f} |"
        )
    a = read_cache(ref["path"])
    for r in rows[1:]:
        b = read_cache(r["path"])
        same_ids = np.array_equal(a.image_ids, b.image_ids) and np.array_equal(a.labels, b.labels)
        diff = float(np.abs(a.features.astype(np.float32) - b.features.astype(np.float32)).max())
        print(
            f"\n{r['label']}: same ids and labels as single process: {same_ids}; largest feature difference {diff:.2g}",
            end="",
        )
    print()


if __name__ == "__main__":
    main()
