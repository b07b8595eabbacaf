"""Input preprocessing that lives inside the saved model, so `predict` on new photos applies it too.

- Feature-wise standardisation (ImageDataGenerator featurewise_center + featurewise_std_normalization): one mean
  and std per channel from the TRAINING split only (float64 accumulation), stored in a `Standardize` layer.
- ZCA whitening: fitted on a bounded sample of training photos (thin SVD of the sample; memory checked up front),
  stored in a `ZCAWhitening` layer (a d x d float32 matrix, d = size * size * 3) applied to flattened batches.
- `BackbonePreprocess`: the `preprocess_input` of a keras.applications family, on uint8 -> float input.

All three layers compute in float32 even under a mixed-precision policy.
"""

from __future__ import annotations

import numpy as np

from featkit.core.errors import FeatkitError
from featkit.core.resources import available_memory_bytes
from featkit.core.tfkeras import tf_keras

tf_keras()  # TensorFlow's first import, with its start-up noise hidden
import keras  # noqa: E402
from keras import ops  # noqa: E402

STD_EPSILON = 1e-6  # as ImageDataGenerator: (x - mean) / (std + 1e-6)
ZCA_MATRICES = 3  # d x d float32 matrices alive at the peak of fit_zca + putting W in the model


# ---------------------------------------------------------------------------------------------------- statistics


def channel_stats(x: np.ndarray, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of uint8 photos (N, H, W, C), accumulated in float64 chunk by chunk (memmap-safe)."""
    if x.ndim != 4 or len(x) == 0:
        raise FeatkitError(f"standardisation needs training photos shaped (N, H, W, C); got shape {x.shape}")
    c = x.shape[-1]
    s = np.zeros(c, np.float64)
    n = 0
    for i in range(0, len(x), chunk):
        b = np.asarray(x[i : i + chunk], dtype=np.float64).reshape(-1, c)
        s += b.sum(axis=0)
        n += len(b)
    mean = s / n
    ss = np.zeros(c, np.float64)
    for i in range(0, len(x), chunk):  # second pass: sum of squared deviations (no catastrophic cancellation)
        b = np.asarray(x[i : i + chunk], dtype=np.float64).reshape(-1, c) - mean
        ss += (b * b).sum(axis=0)
    return mean, np.sqrt(ss / n)


def zca_bytes(size: int, n_samples: int, channels: int = 3) -> int:
    """Peak memory of fitting ZCA at `size` px on `n_samples` photos and putting it in a model.

    The whitening matrix W is d x d float32 (d = size * size * channels); about 3 such matrices exist at the peak
    (W, the model's weight, the transfer copy). The thin SVD of the n x d sample (NumPy computes it in float64)
    takes about 4 n x d float64 arrays.
    """
    d = size * size * channels
    return ZCA_MATRICES * d * d * 4 + 4 * n_samples * d * 8


def check_zca_memory(size: int, n_samples: int, channels: int = 3) -> None:
    need = zca_bytes(size, n_samples, channels)
    avail = available_memory_bytes()
    if need <= avail:
        return
    fits = 0
    for s in range(size - 1, 0, -1):
        if zca_bytes(s, n_samples, channels) <= avail:
            fits = s
            break
    d = size * size * channels
    raise FeatkitError(
        f"ZCA whitening at {size} px needs about {need / 1024**3:.1f} GiB ({d:,}x{d:,} float32 covariance "
        f"+ decomposition) but {avail / 1024**3:.1f} GiB is available: the largest size that fits is {fits} px; "
        f"use --size {fits} or smaller, or turn ZCA off."
    )


def fit_zca(
    x: np.ndarray,
    n_samples: int = 2000,
    epsilon: float = 1e-6,
    seed: int = 0,
    mean: np.ndarray | None = None,
    std: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """ZCA whitening from up to `n_samples` training photos (uint8 (N, H, W, C)), sampled with `seed`.

    If `mean`/`std` are given the sample is standardised with them first (the order ImageDataGenerator used).
    Returns (pixel mean mu (d,), W (d, d) float32, info); whitened = (flatten(x) - mu) @ W, with
    W = U diag(1 / sqrt(s + eps)) U^T over all d eigenvectors U / eigenvalues s of the sample covariance and
    eps = epsilon * largest eigenvalue (so directions the sample does not vary in get 1 / sqrt(eps)).

    The eigenvectors come from the thin SVD of the centred n x d sample (cost n^2 d) rather than from the d x d
    covariance (cost d^3: minutes at 64 px); the covariance itself is never formed.
    """
    n_total, h, w, c = x.shape
    if h != w:
        raise FeatkitError(f"ZCA expects square photos; got {h}x{w}")
    n = min(n_total, int(n_samples))
    if n < 2:
        raise FeatkitError("ZCA whitening needs at least 2 training photos")
    check_zca_memory(h, n, c)
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(n_total, n, replace=False)) if n < n_total else np.arange(n_total)
    d = h * w * c
    sample = np.asarray(x[idx], dtype=np.float32)
    if mean is not None:
        sample -= np.asarray(mean, np.float32)
        sample /= np.asarray(std, np.float32) + np.float32(STD_EPSILON)
    sample = sample.reshape(n, d)
    mu = sample.mean(axis=0, dtype=np.float64).astype(np.float32)
    sample -= mu
    _, sv, vt = np.linalg.svd(sample, full_matrices=False)  # vt (k, d), k = min(n, d); float64
    del sample
    s = sv.astype(np.float64) ** 2 / n  # covariance eigenvalues, descending
    top = float(s[0]) if s[0] > 0 else 1.0
    eps = float(epsilon) * top
    g = 1.0 / np.sqrt(s + eps)  # scale of the sampled directions
    cst = 1.0 / np.sqrt(eps)  # scale of the directions orthogonal to them
    vt32 = vt.astype(np.float32)
    del vt
    wmat = (vt32.T * (g - cst).astype(np.float32)) @ vt32  # U diag(g - c) U^T ...
    wmat[np.diag_indices(d)] += np.float32(cst)  # ... + c I
    info = {
        "samples": int(n),
        "dim": int(d),
        "epsilon_abs": eps,
        "rank": int((s > 1e-6 * top).sum()),
        "top_eigenvalue": top,
    }
    return mu, wmat, info


# --------------------------------------------------------------------------------------------------- layers


@keras.saving.register_keras_serializable(package="featkit")
class Standardize(keras.layers.Layer):
    """(x - mean) / (std + 1e-6) per channel, on any numeric input; mean/std fixed (from the training split)."""

    def __init__(self, mean, std, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.mean = [float(v) for v in np.ravel(mean)]
        self.std = [float(v) for v in np.ravel(std)]

    def call(self, x):
        x = ops.cast(x, "float32")
        m = ops.convert_to_tensor(np.asarray(self.mean, np.float32))
        s = ops.convert_to_tensor(np.asarray(self.std, np.float32) + np.float32(STD_EPSILON))
        return (x - m) / s

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "std": self.std}


@keras.saving.register_keras_serializable(package="featkit")
class ZCAWhitening(keras.layers.Layer):
    """(flatten(x) - mean) @ W, reshaped back. mean (d,) and W (d, d) are non-trainable weights saved with the model."""

    def __init__(self, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.trainable = False

    def build(self, input_shape):
        d = int(np.prod(input_shape[1:]))
        self.pixel_mean = self.add_weight(shape=(d,), initializer="zeros", trainable=False, name="pixel_mean")
        self.matrix = self.add_weight(shape=(d, d), initializer="identity", trainable=False, name="matrix")

    def set_whitening(self, mean: np.ndarray, matrix: np.ndarray) -> None:
        self.pixel_mean.assign(np.asarray(mean, np.float32))
        self.matrix.assign(np.asarray(matrix, np.float32))

    def call(self, x):
        x = ops.cast(x, "float32")
        shape = ops.shape(x)
        flat = ops.reshape(x, (shape[0], -1)) - self.pixel_mean
        return ops.reshape(ops.matmul(flat, self.matrix), shape)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="featkit")
class BackbonePreprocess(keras.layers.Layer):
    """keras.applications.<module>.preprocess_input on uint8 -> float32 input (applied once, inside the model)."""

    def __init__(self, module: str, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        if not hasattr(keras.applications, module):
            raise FeatkitError(f"no keras.applications.{module} preprocessing")
        self.module = module

    def call(self, x):
        fn = getattr(keras.applications, self.module).preprocess_input
        return fn(ops.cast(x, "float32"))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "module": self.module}
