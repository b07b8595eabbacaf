"""Shared fixtures: the real shared data and models beside the repo (../shared, or FEATKIT_SHARED=PATH); a test
that needs them is skipped, with the reason, where they are missing. BLAS runs on one thread for the whole suite
(`one_blas_thread`), and the last check of the session is that the suite left the checkout as it found it."""

from __future__ import annotations

import os
import subprocess
import traceback
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FEATKIT_SHARED", REPO.parent / "shared"))
FOOD_ZIP = SHARED / "data" / "food101-64.zip"
MODELS = SHARED / "models"
MOBILENET_ONNX = MODELS / "mobilenet-v2.onnx"
KERAS_NOTOP = MODELS / "keras" / "mobilenet_v2_1.00_224_notop.weights.h5"


def _require(path: Path) -> Path:
    """`path` under ../shared, or skip the test that needs it (saying why)."""
    if not path.exists():
        pytest.skip(f"{path} is missing: this test needs ../shared beside the repo (or FEATKIT_SHARED=PATH).")
    return path


@pytest.fixture(autouse=True, scope="session")
def _one_blas_thread():
    """BLAS on one thread for every test (see cachefixtures.one_blas_thread)."""
    from cachefixtures import one_blas_thread

    with one_blas_thread():
        yield


# ---- the suite must not write into the checkout: test_zz_checkout.py compares its state before and after

NOT_CHECKOUT_STATE = {".git", ".venv", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
CHECKOUT_BEFORE = pytest.StashKey[frozenset[str] | None]()


def checkout_state() -> frozenset[str] | None:
    """What the suite must leave as it found it: `git status --porcelain` of the checkout (modified, added and
    untracked files) and every file and folder in it, ignored ones (reports/, cache/) and empty folders included,
    except .git, virtual environments and Python's and tools' caches; None when REPO is not a git checkout."""
    try:
        status = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=all"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if status.returncode != 0:
        return None
    paths = set()
    for folder, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in NOT_CHECKOUT_STATE and not (Path(folder, d) / "pyvenv.cfg").exists()]
        rel = Path(folder).relative_to(REPO)
        paths.update(f"{rel / name}" + "/" * (name in dirs) for name in [*dirs, *files])
    return frozenset({f"git status: {line}" for line in status.stdout.splitlines()} | paths)


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[CHECKOUT_BEFORE] = checkout_state()


@pytest.fixture(scope="session")
def food_zip() -> Path:
    return _require(FOOD_ZIP)


@pytest.fixture(scope="session")
def mobilenet_onnx() -> Path:
    return _require(MOBILENET_ONNX)


@pytest.fixture(scope="session")
def keras_notop_weights() -> Path:
    return _require(KERAS_NOTOP)


def read_food_photos(
    classes: int = 5, per_class: int = 12, split: str = "train"
) -> tuple[list[str], list[bytes], np.ndarray]:
    """Real JPEG bytes of the first `per_class` photos of the first `classes` classes (official order)."""
    with zipfile.ZipFile(_require(FOOD_ZIP)) as z:
        class_names = z.read("food-101/meta/classes.txt").decode().split()
        lines = z.read(f"food-101/meta/{split}.txt").decode().split()
        names, blobs, labels = [], [], []
        for c in class_names[:classes]:
            mine = [ln for ln in lines if ln.split("/")[0] == c][:per_class]
            for ln in mine:
                names.append(ln)
                blobs.append(z.read(f"food-101/images/{ln}.jpg"))
                labels.append(class_names.index(c))
    return names, blobs, np.asarray(labels)


@pytest.fixture(scope="session")
def food_photos_64() -> tuple[np.ndarray, np.ndarray]:
    """(uint8 photos (60, 64, 64, 3), labels (60,)): 12 real training photos of each of 5 classes."""
    from featkit.data.images import decode_image

    _, blobs, labels = read_food_photos()
    return np.stack([decode_image(b, 64) for b in blobs]), labels


MINI_CLASSES, MINI_PER_CLASS = 4, 20


@pytest.fixture(scope="session")
def mini(tmp_path_factory) -> Path:
    """A plain class-folder dataset of real Food-101 photos: the first 20 photos of the first 4 classes."""
    root = tmp_path_factory.mktemp("mini")
    with zipfile.ZipFile(_require(FOOD_ZIP)) as z:
        classes = z.read("food-101/meta/classes.txt").decode().split()[:MINI_CLASSES]
        names = sorted(n for n in z.namelist() if n.endswith(".jpg"))
        for c in classes:
            (root / c).mkdir()
            for n in [n for n in names if n.split("/")[2] == c][:MINI_PER_CLASS]:
                (root / c / n.rsplit("/", 1)[1]).write_bytes(z.read(n))
    return root


@pytest.fixture(scope="session")
def caches(tmp_path_factory):
    """Small real feature caches in the format `featkit extract` writes (see cachefixtures.py)."""
    from cachefixtures import food_caches

    return food_caches(tmp_path_factory)


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray cluster of 2 CPUs for the whole session (Ray takes seconds to start), stopped at the end.
    featkit.features.ray_shards uses the driver's connection when there is one."""
    ray = pytest.importorskip("ray", reason='the Ray tests need the ray extra: pip install "featkit[ray]"')
    ray.init(
        num_cpus=2, include_dashboard=False, object_store_memory=256 * 2**20, log_to_driver=False, logging_level="ERROR"
    )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def report_workspace(tmp_path_factory, mini, mobilenet_onnx):
    """Two real head runs on the `mini` photos (one with calibration files), a CNN run folder, and the report
    built from them (see reportfixtures.py)."""
    from reportfixtures import build_report_workspace

    return build_report_workspace(tmp_path_factory.mktemp("report-ws"), mini, mobilenet_onnx)


@dataclass
class Result:
    code: int | None
    out: str
    err: str


def run_main(capsys, *args) -> Result:
    """`featkit ARGS` through the entry point `featkit.cli.main`, in this process (a new interpreter costs seconds;
    use a subprocess where signals, concurrency or imports matter); an exception escaping main is recorded as a
    traceback in `err`, as the user would see it."""
    from featkit.cli import main
    from featkit.data.images import DEFAULT_MAX_PIXELS, set_max_pixels

    capsys.readouterr()
    code, tb = None, ""
    try:
        main([str(a) for a in args])
    except SystemExit as e:
        code = e.code
    except BaseException:  # noqa: BLE001 - what the user would see as a traceback
        tb = traceback.format_exc()
    finally:
        set_max_pixels(DEFAULT_MAX_PIXELS)
    cap = capsys.readouterr()
    return Result(code, cap.out, cap.err + tb)


def invoke_json(*args) -> dict | list:
    """`featkit ARGS --json` in this process (typer's CliRunner; usable in fixtures of any scope): its JSON."""
    import json

    from typer.testing import CliRunner

    from featkit.cli import app

    res = CliRunner().invoke(app, [*map(str, args), "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


@contextmanager
def training_interrupted_after_first_epoch():
    """In the block, train-cnn stops with KeyboardInterrupt right after epoch 1 is checkpointed (as if the machine
    went away), and the block expects that interruption; training is normal again after it."""
    from featkit.cnn import train as T

    original = T._CheckpointLog.on_epoch_end

    def interrupted(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch == 0:
            raise KeyboardInterrupt

    T._CheckpointLog.on_epoch_end = interrupted
    try:
        with pytest.raises(KeyboardInterrupt):
            yield
    finally:
        T._CheckpointLog.on_epoch_end = original


# Every test in these files is slow, and importing them starts TensorFlow (8 s here): the fast tier skips the import.
ONLY_SLOW_TESTS = {"test_cnn.py", "test_cnn_resume.py"}


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if collection_path.name in ONLY_SLOW_TESTS and " ".join(config.getoption("markexpr").split()) == "not slow":
        return True
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The checkout check last, whatever order the files were given in."""
    items.sort(key=lambda item: item.path.name == "test_zz_checkout.py")
