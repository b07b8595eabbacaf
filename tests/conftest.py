"""Shared fixtures: the real shared data and models beside the repo (../shared)."""

from __future__ import annotations

import os
import zipfile
from contextlib import contextmanager
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
    if not path.exists():
        pytest.fail(f"{path} is missing: the tests need ../shared beside the repo (or FEATKIT_SHARED=PATH).")
    return path


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
