"""softmax: a small Keras dense head (optional hidden layer) on standardised features.

TensorFlow / Keras are imported here only, inside the methods, so the other heads, scoring and reports never
load them. The standardisation (mean / variance of the training features) lives in the model as a
Normalization layer, so the saved `.keras` file is self-contained.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from featkit.core.fileio import atomic_path
from featkit.heads.base import Head, one_of, positive

OPTIMIZERS = ("rmsprop", "adam")
PREDICT_BATCH = 4096


def _keras() -> Any:
    from featkit.core.tfkeras import tf_keras

    return tf_keras()[1]  # TensorFlow imported once, its start-up noise hidden


class SoftmaxHead(Head):
    name = "softmax"
    model_file = "model.keras"

    search_grid = {"hidden": [0, 1024], "lr": [1e-4, 3e-4]}

    def __init__(
        self,
        hidden: int = 1024,
        dropout: float = 0.5,
        optimizer: str = "rmsprop",
        lr: float = 1e-4,
        epochs: int = 30,
        batch_size: int = 128,
        patience: int = 5,
        seed: int = 0,
    ):
        self.hidden = hidden
        self.dropout = dropout
        self.optimizer = optimizer
        self.lr = lr
        self.epochs = epochs
        self.batch_size = batch_size
        self.patience = patience
        self.seed = seed

    def validate_params(self) -> None:
        positive(self.name, "hidden", self.hidden, integer=True, zero_ok=True)
        if not (isinstance(self.dropout, (int, float)) and 0 <= self.dropout < 1):
            from featkit.core.errors import FeatkitError

            raise FeatkitError(f"softmax head: dropout should be in [0, 1). Received dropout={self.dropout!r}")
        one_of(self.name, "optimizer", str(self.optimizer).lower(), OPTIMIZERS)
        positive(self.name, "lr", self.lr)
        positive(self.name, "epochs", self.epochs, integer=True)
        positive(self.name, "batch_size", self.batch_size, integer=True)
        positive(self.name, "patience", self.patience, integer=True, zero_ok=True)

    def _build(self, keras, mean: np.ndarray, variance: np.ndarray):
        layers = [
            keras.Input((self.n_features_in_,), name="features"),
            keras.layers.Normalization(mean=mean, variance=variance, name="standardise"),
        ]
        if self.hidden:
            layers.append(keras.layers.Dense(int(self.hidden), activation="relu", name="hidden"))
            if self.dropout:
                layers.append(keras.layers.Dropout(float(self.dropout), name="dropout"))
        elif self.dropout:
            layers.append(keras.layers.Dropout(float(self.dropout), name="dropout"))
        layers.append(keras.layers.Dense(self.n_classes_, activation="softmax", name="probs"))
        return keras.Sequential(layers, name="softmax_head")

    def _fit(self, X, y, X_val, y_val) -> None:
        keras = _keras()

        keras.utils.set_random_seed(int(self.seed))
        mean = X.mean(axis=0, dtype=np.float64)
        variance = X.var(axis=0, dtype=np.float64)
        variance[variance < 1e-12] = 1.0  # a feature constant on the training rows passes through unscaled
        model = self._build(keras, mean.astype(np.float32), variance.astype(np.float32))
        opt = {"rmsprop": keras.optimizers.RMSprop, "adam": keras.optimizers.Adam}[str(self.optimizer).lower()]
        model.compile(
            optimizer=opt(learning_rate=float(self.lr)), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
        )

        Callback: Any = keras.callbacks.Callback  # a base class mypy can use: keras is a value here

        class EpochSeconds(Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.t0 = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                if logs is not None:
                    logs["seconds"] = time.perf_counter() - self.t0

        callbacks = [EpochSeconds()]
        stopper = None
        if X_val is not None:
            stopper = keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=int(self.patience), restore_best_weights=True
            )
            callbacks.append(stopper)
        hist = model.fit(
            X,
            y,
            validation_data=None if X_val is None else (X_val, y_val),
            epochs=int(self.epochs),
            batch_size=int(self.batch_size),
            shuffle=True,
            verbose=0,
            callbacks=callbacks,
        )
        keys = ("loss", "accuracy", "val_loss", "val_accuracy", "seconds")
        n = len(hist.history.get("loss", []))
        self.history_ = [
            {"epoch": i + 1, **{k: float(hist.history[k][i]) for k in keys if k in hist.history}} for i in range(n)
        ]
        self.best_epoch_ = (stopper.best_epoch + 1) if stopper is not None else n
        self.model_ = model

    def _predict_proba(self, X: np.ndarray) -> np.ndarray:
        out = [
            np.asarray(self.model_(X[i : i + PREDICT_BATCH], training=False)) for i in range(0, len(X), PREDICT_BATCH)
        ]
        return np.concatenate(out)

    def fitted_state(self) -> dict:
        return {"best_epoch_": self.best_epoch_}

    def refit_params(self) -> dict:
        return {"epochs": int(self.best_epoch_)}

    def _save_model(self, path: Path) -> Path:
        with atomic_path(path) as tmp:
            self.model_.save(tmp)
        return path

    def _load_model(self, path: Path) -> None:
        self.model_ = _keras().models.load_model(path, compile=False)
