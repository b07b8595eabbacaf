"""A small REAL report for the HTML report tests: the `mini` photos (4 Food-101 classes x 20) extracted with the
real MobileNetV2 ONNX graph at 64 px, a logreg head and a LightGBM head fitted through the command line (two runs
with different scores, the LightGBM one with a history), the robustness table of the logreg run, and a CNN run
folder without photo-level results. fit-head calibrates both heads (metrics.json `ece`, `brier`, `calibration`;
reliability.csv and .png); the LightGBM run is then stripped of them, as a run made before featkit calibrated.
Then `featkit report`.

Also: finding Chromium and its driver for the browser tests.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner

from featkit.cli import app
from featkit.runs.store import Run, new_run

SPLIT = "50/10/40"  # 32 test photos: enough mistakes and confused pairs to show


@dataclass
class ReportWorkspace:
    root: Path
    reports: Path
    cache: Path
    data: Path
    logreg: str  # run ids
    lightgbm: str
    cnn: str

    def run(self, run_id: str) -> Path:
        return self.reports / "runs" / run_id


def fk(*args) -> dict | str:
    res = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout) if "--json" in args else res.stdout


def build_report_workspace(root: Path, mini: Path, onnx: Path) -> ReportWorkspace:
    reports, cache = root / "reports", root / "cache"
    common = ["--cache", cache, "--split", SPLIT]
    fk("extract", "--data", mini, "--backbone", onnx, "--size", 64, "--sensitivity", "--quiet", *common)
    fit = ["fit-head", "--data", mini, "--backbone", onnx, "--size", 64, "--reports", reports, "--json", *common]
    logreg = fk(*fit, "--head", "logreg")["run"]
    fast = ["-p", "n_estimators=15", "-p", "num_threads=1", "-p", "reduce=pca", "-p", "pca=16"]  # PCA: cheaper than LDA
    lightgbm = fk(*fit, "--head", "lightgbm", *fast)["run"]
    fk("sensitivity", logreg, "--reports", reports, "--json")
    strip_calibration(Run(reports / "runs" / lightgbm))
    cnn = new_run("cnn-basic", reports)
    cnn.write_json(
        "config.json",
        {
            "kind": "cnn",
            "name": "basic",
            "preset": "basic",
            "model": "custom",
            "backbone": None,
            "size": 64,
            "augment": False,
            "epochs": 2,
            "seed": 0,
        },
    )
    cnn.write_json("classes.json", [{"index": i, "id": str(i), "name": str(i)} for i in range(4)])
    (cnn.path / "history.csv").write_text(
        "epoch,loss,accuracy,val_loss,val_accuracy,seconds\n1,1.39,0.25,1.38,0.25,1.5\n2,1.35,0.31,1.37,0.28,1.4\n"
    )
    cnn.write_json("metrics.json", {"top1": 0.25, "top5": 1.0, "fit_seconds": 2.9, "study_top1": None})
    fk("report", "--reports", reports, "--quiet")
    return ReportWorkspace(root, reports, cache, mini, logreg, lightgbm, cnn.id)


def strip_calibration(run: Run) -> None:
    """Remove what calibration adds to a run folder (metrics keys and the reliability files)."""
    metrics = run.read_json("metrics.json")
    for key in ("ece", "brier", "calibration", "temperature"):
        metrics.pop(key, None)
    run.write_json("metrics.json", metrics)
    for name in ("reliability.csv", "reliability.png"):
        (run.path / name).unlink(missing_ok=True)


def copy_workspace(ws: ReportWorkspace, dest: Path) -> ReportWorkspace:
    """A private copy of the reports and the photos (for tests that damage them); runs point at the copied photos."""
    shutil.copytree(ws.reports, dest / "reports")
    shutil.copytree(ws.data, dest / "photos")
    for run_id in (ws.logreg, ws.lightgbm):
        f = dest / "reports" / "runs" / run_id / "config.json"
        cfg = json.loads(f.read_text())
        cfg["data"] = str(dest / "photos")
        f.write_text(json.dumps(cfg))
    return ReportWorkspace(dest, dest / "reports", ws.cache, dest / "photos", ws.logreg, ws.lightgbm, ws.cnn)


def find_chromium() -> tuple[str | None, str | None, str]:
    """(browser, driver, why not) for Selenium: Debian's chromium and chromium-driver."""
    if importlib.util.find_spec("selenium") is None:
        return None, None, "selenium is not installed: pip install -e '.[dev]'"
    browser = next(
        (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None
    )
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        return (
            browser,
            driver,
            (
                "no Chromium browser and driver found: `apt-get install -y chromium chromium-driver` "
                "as root (.ci/run does)"
            ),
        )
    return browser, driver, ""


CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
)


def start_chromium(browser: str, driver: str, profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for flag in CHROMIUM_FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={profile}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver), options=opts)


def scored_run(
    reports: Path,
    name: str,
    valid_correct: float,
    test_correct: float,
    dataset: str = "food-8-0123456789ab-70-20-10-s0",
    data: str = "/photos/food-8.zip",
    n_classes: int = 8,
    kind: str = "head",
    per_class: int = 10,
    run_id: str | None = None,
    **config,
) -> Run:
    """A finished run folder whose predictions get exactly `valid_correct` / `test_correct` of the validation /
    test photos right (per_class photos of each class; the wrong ones put their mass on the next class), written
    through runs.store.finish like fit-head does. No validation predictions when valid_correct is None. `run_id`
    (YYYYmmdd-HHMMSS-name) fixes the id, and so the order of runs made within one second."""
    import numpy as np

    from featkit.core.schema import RunConfig
    from featkit.runs.metrics import topk_accuracy
    from featkit.runs.store import finish

    def predictions(correct: float) -> tuple[np.ndarray, np.ndarray, list[str]]:
        labels = np.repeat(np.arange(n_classes), per_class)
        n_right = round(correct * len(labels))
        rng = np.random.default_rng(len(name))
        right = np.zeros(len(labels), bool)
        right[rng.permutation(len(labels))[:n_right]] = True
        guess = np.where(right, labels, (labels + 1) % n_classes)
        probs = np.full((len(labels), n_classes), 0.1 / (n_classes - 1), np.float32)
        probs[np.arange(len(labels)), guess] = 0.9
        return probs, labels, [f"{c}/{i}" for c, i in zip(labels, range(len(labels)), strict=True)]

    run = new_run(name, reports)
    if run_id:
        run = Run(run.path.rename(run.path.parent / run_id))
    run.write_config(
        RunConfig(
            kind=kind, name=config.pop("head", "logreg"), n_classes=n_classes, dataset=dataset, data=data, **config
        )
    )
    run.write_json("classes.json", [{"index": i, "id": f"c{i}", "name": f"dish {i}"} for i in range(n_classes)])
    extra = {"fit_seconds": 1.0}
    if valid_correct is not None:
        vp, vl, vi = predictions(valid_correct)
        run.save_predictions(vp, vl, vi, name="valid")
        extra["valid_top1"], extra["valid_top5"] = topk_accuracy(vp, vl, (1, 5)).values()
    finish(run, *predictions(test_correct), extra=extra)
    return run
