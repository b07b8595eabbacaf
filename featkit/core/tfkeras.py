"""TensorFlow and Keras, imported once, quietly, on first use: the one place featkit imports them from.

Commands that do not need TensorFlow (ONNX extraction, logreg / lightgbm heads, scoring, reports) never call
`tf_keras()`, so they never pay its start-up.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_TF: tuple[Any, Any] | None = None


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


def tf_keras() -> tuple[Any, Any]:
    """(tensorflow, keras), imported once, quietly; GPUs get memory growth so ONNX Runtime can share them."""
    global _TF
    if _TF is None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        with _quiet_stderr():
            import keras
            import tensorflow as tf

            for gpu in tf.config.list_physical_devices("GPU"):
                try:
                    tf.config.experimental.set_memory_growth(gpu, True)
                except (RuntimeError, ValueError):  # already initialised: keep TF's choice
                    pass
        tf.get_logger().setLevel("ERROR")
        _TF = (tf, keras)
    return _TF


__all__ = ["tf_keras"]
