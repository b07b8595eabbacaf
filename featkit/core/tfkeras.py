"""TensorFlow and Keras, imported once, quietly, on first use: the one place featkit imports them from.

Commands that do not need TensorFlow (ONNX extraction, logreg / lightgbm heads, scoring, reports) never call
`tf_keras()`, so they never pay its start-up, and run without it: TensorFlow and Keras are an optional extra
(`featkit[keras]`), and `tf_keras()` is where a missing one becomes a one-line error naming it.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from featkit.core.errors import FeatkitError
from featkit.core.extras import install_hint

_TF: tuple[Any, Any] | None = None
NOT_INSTALLED = (
    "TensorFlow and Keras are not installed (an optional extra of featkit): Keras backbones, the softmax head, "
    f"train-cnn and series need them: {install_hint('keras')}"
)


@contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Hide TF's C++ start-up chatter (printed before absl logging is set up, so TF_CPP_MIN_LOG_LEVEL
    cannot silence it); replay it if something fails. FEATKIT_TF_VERBOSE=1 shows it."""
    if os.environ.get("FEATKIT_TF_VERBOSE"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            tmp.seek(0)
            sys.stderr.write(tmp.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def require_keras() -> None:
    """The keras extra's one-line error up front, before work that would end in `tf_keras()` (reading a dataset,
    making folders); nothing is imported, so TensorFlow's start-up is not paid here."""
    from importlib.util import find_spec

    try:
        installed = find_spec("tensorflow") is not None and find_spec("keras") is not None
    except (ImportError, ValueError):
        installed = False
    if not installed:
        raise FeatkitError(NOT_INSTALLED)


def tf_keras() -> tuple[Any, Any]:
    """(tensorflow, keras), imported once, quietly; GPUs get memory growth so ONNX Runtime can share them.
    Without the keras extra: a FeatkitError naming it."""
    global _TF
    if _TF is None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        try:
            with _quiet_stderr():
                import keras
                import tensorflow as tf

                for gpu in tf.config.list_physical_devices("GPU"):
                    try:
                        tf.config.experimental.set_memory_growth(gpu, True)
                    except (RuntimeError, ValueError):  # already initialised: keep TF's choice
                        pass
        except ModuleNotFoundError as e:  # another module missing means a broken install: not ours to explain
            if (e.name or "").split(".")[0] not in ("keras", "tensorflow"):
                raise
            raise FeatkitError(NOT_INSTALLED) from None
        tf.get_logger().setLevel("ERROR")
        _TF = (tf, keras)
    return _TF


__all__ = ["NOT_INSTALLED", "require_keras", "tf_keras"]
