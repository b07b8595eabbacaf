"""Fitted heads as ONNX graphs: float32 features [N, D] in (input "features"), the head's probabilities
[N, n_classes] out (output "probabilities"), with its standardisation inside and, when `calibrated`, its temperature.

    model = head_onnx(load_run_head(run))       # an onnx.ModelProto, runnable with onnxruntime alone

- logreg: the StandardScaler and the (multinomial or binary) logistic regression as plain ONNX ops; classes absent
  from training get probability 0, as `LogRegHead.predict_proba` gives them.
- knn: cosine similarities to the stored (float16) training rows, TopK, the similarity-weighted, smoothed votes.
- lightgbm: the LDA / PCA projection as one affine map, then the booster (its best iteration) by onnxmltools.
- softmax: the Keras head's Normalization and Dense layers as plain ONNX ops (no TensorFlow needed to export).
A head kind without a converter: one line naming it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from featkit.core.errors import FeatkitError
from featkit.core.onnx_graph import GraphBuilder, require_export
from featkit.heads.base import Head


def head_onnx(head: Head, calibrated: bool = True):
    """The fitted `head` as an ONNX model: "features" float32 [N, n_features] -> "probabilities" [N, n_classes]."""
    if not head.__sklearn_is_fitted__():
        raise FeatkitError(f"the {head.name} head is not fitted: nothing to export.")
    build = _CONVERTERS.get(head.name)
    if build is None:
        raise FeatkitError(
            f"no ONNX converter for the {head.name!r} head (converters: {', '.join(_CONVERTERS)}): "
            "export a run of one of those heads."
        )
    g = GraphBuilder(f"{head.name}_head")
    x = g.input("features", "float32", ["N", int(head.n_features_in_)])
    probs = build(g, head, x)
    if calibrated:
        probs = g.temperature(probs, float(getattr(head, "temperature_", 1.0)))
    g.output(probs, "probabilities", "float32", ["N", int(head.n_classes_)])
    return g.model(doc=f"featkit {head.name} head")


def _columns(g: GraphBuilder, probs: str, seen: list[int], n_classes: int) -> str:
    """Probabilities over the `seen` classes placed in their columns of n_classes (the others 0)."""
    if list(seen) == list(range(n_classes)):
        return probs
    place = np.zeros((len(seen), n_classes), np.float32)
    place[np.arange(len(seen)), seen] = 1.0
    return g.op("MatMul", [probs, g.const(place, "columns")], "placed")


def _logreg(g: GraphBuilder, head, x: str) -> str:
    scaler, clf = head.model_.named_steps["scale"], head.model_.named_steps["clf"]
    if getattr(scaler, "mean_", None) is not None:
        x = g.op("Sub", [x, g.const(scaler.mean_, "mean")], "centred")
    if getattr(scaler, "scale_", None) is not None:
        x = g.op("Div", [x, g.const(scaler.scale_, "scale")], "standardised")
    logits = g.op(
        "Add",
        [g.op("MatMul", [x, g.const(clf.coef_.T, "coef")]), g.const(clf.intercept_, "intercept")],
        "logits",
    )
    if clf.coef_.shape[0] == 1:  # binary: sigmoid of one logit, columns [1 - p, p]
        p = g.op("Sigmoid", [logits])
        probs = g.op("Concat", [g.op("Sub", [g.const([1.0]), p]), p], "probs", axis=1)
    else:
        probs = g.op("Softmax", [logits], "probs", axis=-1)
    return _columns(g, probs, [int(c) for c in clf.classes_], int(head.n_classes_))


def _knn(g: GraphBuilder, head, x: str) -> str:
    n_train, n_classes = len(head.labels_), int(head.n_classes_)
    k = min(int(head.k), n_train)
    unit = g.op("Div", [x, g.op("Max", [g.op("ReduceL2", [x], axes=[1], keepdims=1), g.const(1e-30)])], "unit")
    train = g.op("Cast", [g.const(np.asarray(head.train_).T, "train", np.float16)], "train32", to=1)
    sims = g.op("MatMul", [unit, train], "similarity")
    top, idx = g.op("TopK", [sims, g.const([k], "k", np.int64)], "top", outputs=2, axis=-1, largest=1, sorted=1)
    labels = g.op("Gather", [g.const(head.labels_, "labels", np.int64), idx], "neighbour_labels")
    if head.tau:
        w = g.op("Exp", [g.op("Div", [g.op("Sub", [top, g.const(1.0)]), g.const(float(head.tau))])], "weights")
    else:
        w = g.op("Add", [g.op("Mul", [top, g.const(0.0)]), g.const(1.0)], "weights")
    onehot = g.op("OneHot", [labels, g.const([n_classes], "depth", np.int64), g.const([0.0, 1.0])], axis=-1)
    votes = g.op(
        "ReduceSum",
        [g.op("Mul", [onehot, g.op("Unsqueeze", [w, g.const([2], "axis", np.int64)])]), g.const([1], "ax", np.int64)],
        "votes",
        keepdims=0,
    )
    floor = g.op("Mul", [g.op("ReduceMean", [w], axes=[1], keepdims=1), g.const(float(head.smoothing))], "floor")
    total = g.op("ReduceSum", [w, g.const([1], "ax", np.int64)], keepdims=1)
    denominator = g.op("Add", [total, g.op("Mul", [floor, g.const(float(n_classes))])])
    return g.op("Div", [g.op("Add", [votes, floor]), denominator], "probs")


def _lightgbm(g: GraphBuilder, head, x: str) -> str:
    convert_lightgbm, float_tensor = _onnxmltools()
    import lightgbm as lgb

    d = int(head.n_features_in_)
    if head.reducer_ is not None:  # LDA (eigen) and PCA are affine: X @ W + b
        b = np.asarray(head.reducer_.transform(np.zeros((1, d), np.float32)), np.float64)
        w = np.asarray(head.reducer_.transform(np.eye(d, dtype=np.float32)), np.float64) - b
        x = g.op("Add", [g.op("MatMul", [x, g.const(w, "projection")]), g.const(b[0], "offset")], "reduced")
        d = w.shape[1]
    booster = head.model_
    best = int(getattr(head, "best_iteration_", 0) or 0)
    if best and best < booster.current_iteration():
        booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
    try:
        model = convert_lightgbm(
            booster, initial_types=[("input", float_tensor([None, d]))], zipmap=False, target_opset=13
        )
    except Exception as e:  # onnxmltools raises many kinds
        raise FeatkitError(
            f"onnxmltools could not convert the LightGBM booster ({' '.join(str(e).split())[:200]})."
        ) from None
    outputs = g.embed(model, g.fresh("lgbm") + "/", {"input": x})
    probs = next(o for o, info in zip(outputs, model.graph.output, strict=True) if "prob" in info.name)
    return _columns(g, probs, list(range(int(head.n_classes_))), int(head.n_classes_))


def _softmax(g: GraphBuilder, head, x: str) -> str:
    for layer in head.model_.layers:
        kind = type(layer).__name__
        weights = [np.asarray(w) for w in layer.get_weights()]
        if kind == "Normalization":
            mean, variance = (np.asarray(v, np.float32).reshape(-1) for v in (layer.mean, layer.variance))
            std = np.maximum(np.sqrt(variance), 1e-7)  # keras.backend.epsilon(), as the layer divides
            x = g.op("Div", [g.op("Sub", [x, g.const(mean, "mean")]), g.const(std, "std")], "standardised")
        elif kind == "Dense":
            x = g.op("Add", [g.op("MatMul", [x, g.const(weights[0], "kernel")]), g.const(weights[1], "bias")], "dense")
            activation = layer.get_config().get("activation")
            if activation == "relu":
                x = g.op("Relu", [x])
            elif activation == "softmax":
                x = g.op("Softmax", [x], "probs", axis=-1)
            elif activation not in ("linear", None):
                raise FeatkitError(f"no ONNX converter for a softmax head with a {activation!r} activation.")
        elif kind in ("Dropout", "InputLayer"):
            continue  # inference: identity
        else:
            raise FeatkitError(f"no ONNX converter for a softmax head holding a {kind} layer.")
    return x


def _onnxmltools() -> tuple[Callable, Callable]:
    tools = require_export("onnxmltools", "exporting a LightGBM head")
    types = require_export("onnxmltools.convert.common.data_types", "exporting a LightGBM head")
    return tools.convert_lightgbm, types.FloatTensorType


_CONVERTERS: dict[str, Callable[[GraphBuilder, Head, str], str]] = {
    "logreg": _logreg,
    "knn": _knn,
    "lightgbm": _lightgbm,
    "softmax": _softmax,
}

__all__ = ["head_onnx"]
