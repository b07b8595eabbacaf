"""`featkit predict` reproduces a run's own test predictions from the photo files, for every head run kind.

    python benchmarks/predict.py                                   # 101 classes x 30 photos, 64 and 96 px
    python benchmarks/predict.py --classes 20 --per-class 20 --sizes 64

A class-folder subset of the shared Food-101 zip (the first --per-class photos of the first --classes classes, split
70/20/10) is extracted with both shared ONNX backbones at each --size with the mirrored view, then one `featkit
sweep` fits logreg heads (C=0.01) on each cache alone and on all caches concatenated, with and without the
mirrored view,
plus ensembles of the best 3. For every run of the sweep (and the run it selected, what `predict sweep:latest`
uses), the run's test photos are predicted from their files through predict's path (featkit.apps.predict.reproduce)
and compared with its test_predictions.npz: top-1 agreement, mean and max |p - p_saved|, photos/s. Twice: with the
features rounded to the caches' float16 as the heads saw them (predict's default), and with the backbones' float32
features (what float16 caches cost).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FEATKIT_SHARED", REPO.parent / "shared"))
BACKBONES = ("mobilenet-v2", "efficientnet-lite0")


def fk(*args) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run(
        [sys.executable, "-m", "featkit.cli", *map(str, args)], env=env, capture_output=True, text=True, check=False
    )
    if res.returncode != 0:
        sys.exit(f"featkit {' '.join(map(str, args))} failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout) if "--json" in args else {}


def subset(zip_path: Path, root: Path, classes: int, per_class: int) -> Path:
    data = root / f"food101-{classes}x{per_class}"
    if data.exists():
        return data
    tmp = root / f".{data.name}.tmp"
    with zipfile.ZipFile(zip_path) as z:
        names = z.read("food-101/meta/classes.txt").decode().split()[:classes]
        photos = sorted(n for n in z.namelist() if n.endswith(".jpg"))
        for c in names:
            (tmp / c).mkdir(parents=True, exist_ok=True)
            for n in [n for n in photos if n.split("/")[2] == c][:per_class]:
                (tmp / c / n.rsplit("/", 1)[1]).write_bytes(z.read(n))
    tmp.rename(data)
    return data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--classes", type=int, default=101)
    ap.add_argument("--per-class", type=int, default=30)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 96])
    ap.add_argument("--work", type=Path, default=None, help="Folder for the subset, caches and runs (default: temp).")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="featkit-predict-"))
    work.mkdir(parents=True, exist_ok=True)
    data = subset(SHARED / "data" / "food101-64.zip", work, args.classes, args.per_class)
    cache, reports = work / "cache", work / "reports"
    t0 = time.perf_counter()
    for b in BACKBONES:
        for s in args.sizes:
            fk("extract", "--data", data, "--backbone", SHARED / "models" / f"{b}.onnx", "--size", s, "--tta", "flip",
               "--cache", cache, "--quiet")  # fmt: skip
    print(f"extracted {len(BACKBONES)} backbones x {args.sizes} px in {time.perf_counter() - t0:.0f} s", flush=True)
    sweep_args = ["sweep", "--data", data, "--cache", cache, "--reports", reports, "--json", "--quiet"]
    for b in BACKBONES:
        sweep_args += ["--backbone", SHARED / "models" / f"{b}.onnx"]
    for s in args.sizes:
        sweep_args += ["--size", s]
    sweep = fk(
        *sweep_args,
        "--combine",
        "none",
        "--combine",
        "all",
        "-p",
        "C=0.01",
        "--tta",
        "none",
        "--tta",
        "flip",
        "--ensemble",
        3,
    )

    sys.path.insert(0, str(REPO))
    from featkit.apps.predict import reproduce
    from featkit.apps.run_model import RunModel, describe_plan, load_plan

    selected = sweep["selected"]["run"]
    print(f"\nsweep {sweep['sweep']}: {len(sweep['rows'])} runs, selected {selected}")
    header = f"{'run':<58} {'kind':<8} {'n':>5} {'top-1 agree':>11} {'mean|dp|':>9} {'max|dp|':>9} {'photos/s':>8}"
    rows = []
    for r in sweep["rows"]:
        if not r.get("run"):
            continue
        plan = load_plan(r["run"], reports)
        model = RunModel(plan)
        short = r["caches"].replace("mobilenet-v2", "mnv2").replace("efficientnet-lite0", "effl0")
        what = r["candidate"] if r["kind"] == "ensemble" else f"{short}{' +mirror' if r['tta'] else ''}"
        for rounded in (True, False):
            rep = reproduce(r["run"], reports, round_features=rounded, model=model)
            rows.append((what, rep))
        loads = ", ".join(x for x in model.loads if x.startswith("backbone"))
        rows[-1] = (rows[-1][0], rows[-1][1], loads, describe_plan(plan)["kind"], r["run"] == selected)
    print(header)
    for i in range(0, len(rows), 2):
        what, f16 = rows[i]
        _, f32, loads, kind, sel = rows[i + 1]
        mark = " <- sweep:latest" if sel else ""
        print(
            f"{what[:58]:<58} {kind:<8} {f16.n:>5} {f16.agreement:>11.2%} {f16.mean_abs_dp:>9.2e} "
            f"{f16.max_abs_dp:>9.2e} {f16.photos_per_second:>8.1f}{mark}"
        )
        print(
            f"{'  (float32 features)':<58} {'':<8} {f32.n:>5} {f32.agreement:>11.2%} {f32.mean_abs_dp:>9.2e} "
            f"{f32.max_abs_dp:>9.2e} {f32.photos_per_second:>8.1f}"
        )
        print(f"{'  loaded: ' + loads:<58}")
    print(f"\nwork folder: {work}")


if __name__ == "__main__":
    main()
