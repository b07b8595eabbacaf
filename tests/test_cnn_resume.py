"""A resumed train-cnn run equals an uninterrupted one (CPU): the batches of each epoch and the random draws of
augmentation and dropout derive from (seed, epoch), not from how many epochs this process has run."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import training_interrupted_after_first_epoch

from featkit.core.fileio import read_json

keras = pytest.importorskip("keras")

from featkit.cnn.presets import get_preset  # noqa: E402
from featkit.cnn.train import read_history, train_cnn  # noqa: E402

CLASSES = [{"index": i, "id": f"c{i}", "name": f"class {i}"} for i in range(5)]


@pytest.mark.slow
def test_resumed_run_equals_uninterrupted_run(food_photos_64, tmp_path):
    x, y = food_photos_64
    data = (x[::2], y[::2], x[1::4], y[1::4], x[3::4], y[3::4])
    cfg = get_preset("aug-3-drop0.5", epochs=3, batch_size=8, size=64)  # shuffling, augmentation, dropout: random
    whole = train_cnn(cfg, *data, CLASSES, tmp_path / "whole", seed=3, quiet=True)

    with training_interrupted_after_first_epoch():
        train_cnn(cfg, *data, CLASSES, tmp_path / "resumed", seed=3, quiet=True)
    assert read_json(tmp_path / "resumed" / "checkpoints" / "state.json")["epoch"] == 1
    resumed = train_cnn(cfg, *data, CLASSES, tmp_path / "resumed", seed=3, quiet=True)

    keys = ("loss", "accuracy", "val_loss", "val_accuracy")
    a = [[r[k] for k in keys] for r in read_history(whole.path / "history.csv")]
    b = [[r[k] for k in keys] for r in read_history(resumed.path / "history.csv")]
    assert len(a) == len(b) == 3
    assert a == b  # exactly: same batches, same augmentation and dropout draws, same optimizer state
    np.testing.assert_array_equal(whole.load_predictions()["probs"], resumed.load_predictions()["probs"])
    # and a different seed does give another run (the check above can fail)
    other = train_cnn(cfg.replace(epochs=1), *data, CLASSES, tmp_path / "other", seed=4, quiet=True)
    assert read_history(other.path / "history.csv")[0]["loss"] != a[0][0]
