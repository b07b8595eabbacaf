"""`featkit curve` on the shared zip: logreg on the MobileNetV2 128 px cache, 7 points x 3 repeats (target: <= 10
minutes on the 2-core machine), printed beside a plain full-data `featkit fit-head` run of the same head.

    python benchmarks/curve.py --cache /work/cache-bench      # extracts the cache first when it is missing
    python benchmarks/curve.py --per-class 1,5,all --repeats 2

Both commands run as a user runs them (`python -m featkit.cli ... --json`), one after the other, timed by wall
clock; the load average before and after is printed, since a shared machine slows everything. Runs go to a
temporary reports folder (or --reports).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FEATKIT_SHARED", REPO.parent / "shared"))


def featkit(*args: str) -> tuple[dict, float]:
    """Run one featkit command with --json; (its JSON, wall seconds)."""
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "featkit.cli", *args, "--json"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=SHARED / "data" / "food101-64.zip")
    ap.add_argument("--backbone", default=str(SHARED / "models" / "mobilenet-v2.onnx"))
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--cache", type=Path, default=Path("/work/cache-bench"))
    ap.add_argument("--reports", type=Path, default=None)
    ap.add_argument("--head", default="logreg")
    ap.add_argument("--per-class", default="1,2,5,10,20,50,all")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from featkit.data import prepare
    from featkit.features.extract import ExtractOptions, extract

    t0 = time.perf_counter()
    prep = prepare(args.data, cache_dir=args.cache, quiet=True)
    plain = next(r.path for r in extract(prep, ExtractOptions(backbone=args.backbone, size=args.size), args.cache))
    print(f"cache: {plain} (ready in {time.perf_counter() - t0:.0f} s)", flush=True)
    reports = args.reports or Path(tempfile.mkdtemp(prefix="featkit-curve-"))
    common = ["--features", str(plain), "--head", args.head, "--reports", str(reports)]

    load0 = os.getloadavg()[0]
    curve, curve_s = featkit("curve", *common, "--per-class", args.per_class, "--repeats", str(args.repeats))
    full, full_s = featkit("fit-head", *common)
    load1 = os.getloadavg()[0]

    fits = sum(len(p["top1"]) for p in curve["points"])
    print(f"\nfeatkit curve --head {args.head} --per-class {args.per_class} --repeats {args.repeats}: {fits} fits")
    print(f"{'photos/class':>12} {'train rows':>10} {'top-1 mean ± std':>18} {'top-5 mean ± std':>18} {'s':>7}")
    for p in curve["points"]:
        print(
            f"{p['label']:>12} {p['n_train']:>10,} {100 * p['top1_mean']:>9.2f} ± {100 * p['top1_std']:4.2f} % "
            f"{100 * p['top5_mean']:>9.2f} ± {100 * p['top5_std']:4.2f} % {p['seconds']:>7.1f}"
        )
    print(
        f"{'fit-head':>12} {full.get('n_train', 0):>10,} {100 * full['top1']:>9.2f}          % "
        f"{100 * full['top5']:>9.2f}          % {full.get('fit_seconds') or 0:>7.1f}"
        "   (a plain full-data run: refit on train + valid)"
    )
    reach = curve.get("reach90")
    print(
        f"\n90 % of the full-data top-1 ({100 * curve['full_top1']:.2f} %): "
        + (f"{reach} photos per class" if reach else "not reached below all")
    )
    print(
        f"wall: curve {curve_s:.0f} s (target <= 600 s), fit-head {full_s:.0f} s; "
        f"load average {load0:.1f} before, {load1:.1f} after ({os.cpu_count()} cores)"
    )
    print(f"curve folder: {curve['path']}")


if __name__ == "__main__":
    main()
