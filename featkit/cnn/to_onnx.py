"""A CNN run's model.keras as ONNX (tf2onnx): uint8 RGB photos "images" [N, S, S, 3] -> "probabilities" [N, C],
the model's own preprocessing inside, before the run's temperature (the caller applies it)."""

from __future__ import annotations

from pathlib import Path

from featkit.core.errors import FeatkitError
from featkit.core.onnx_graph import OPSET, require_export
from featkit.runs.store import Run


def cnn_onnx(run: Run | str | Path):
    """The run's (a Run or its folder) network as an onnx.ModelProto (input "images" uint8 NHWC, output
    "probabilities" float32)."""
    from featkit.cnn.train import load_cnn_model
    from featkit.core.tfkeras import tf_keras

    run = run if isinstance(run, Run) else Run(Path(run))
    tf2onnx = require_export("tf2onnx", f"exporting the CNN run {run.id}")
    model = load_cnn_model(run)
    tf, _ = tf_keras()
    size = int(model.input_shape[1])
    dtype = tf.as_dtype(model.inputs[0].dtype)
    signature = [tf.TensorSpec((None, size, size, 3), tf.uint8, name="images")]

    @tf.function(input_signature=signature, autograph=False)
    def probabilities(x):
        return {"probabilities": tf.cast(model(tf.cast(x, dtype), training=False), tf.float32)}

    try:
        proto, _ = tf2onnx.convert.from_function(probabilities, input_signature=signature, opset=OPSET)
    except Exception as e:  # tf2onnx raises many kinds
        raise FeatkitError(
            f"tf2onnx could not convert {run.path / 'model.keras'} ({' '.join(str(e).split())[:200]})."
        ) from None
    return proto


__all__ = ["cnn_onnx"]
