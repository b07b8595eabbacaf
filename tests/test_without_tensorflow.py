"""featkit without its keras extra (`pip install featkit`, no TensorFlow): ONNX extraction, the other heads, sweep,
report and predict work; a Keras backbone, the softmax head, train-cnn and series stop with one line naming
the extra. Each test runs the command line in a fresh interpreter where `import tensorflow` / `import keras`
fail as they do when the packages are not installed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HINT = 'pip install "featkit[keras]"'

DRIVER = r"""
import contextlib, io, json, sys


class NotInstalled:  # what an environment without the keras extra looks like to an import
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, NotInstalled())
from featkit.cli import main

results = []
for argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(argv)
            code = 0
        except SystemExit as e:
            code = e.code
    results.append({"argv": argv, "code": code, "stdout": out.getvalue(), "stderr": err.getvalue()})
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
print(json.dumps({"results": results, "loaded": loaded}))
"""


def without_tensorflow(*commands: list) -> list[dict]:
    """Run featkit commands (in order, one interpreter) with TensorFlow and Keras not importable."""
    argvs = [[str(a) for a in c] for c in commands]
    proc = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(argvs)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.splitlines()[-1])
    assert got["loaded"] == []
    return got["results"]


def refused(result: dict) -> str:
    assert result["code"] == 1, result
    [line] = result["stderr"].splitlines()
    assert line.startswith("error: ") and line.endswith(HINT), line
    return line


def test_keras_backbones_softmax_and_cnn_training_name_the_extra(caches, mini, tmp_path):
    cache, reports = tmp_path / "cache", tmp_path / "reports"
    softmax, keras_backbone, train_cnn, series, logreg = without_tensorflow(
        ["fit-head", "--features", caches.plain, "--head", "softmax", "--quiet", "--reports", reports],
        ["extract", "--data", mini, "--backbone", "mobilenetv2", "--size", 64, "--quiet", "--cache", cache],
        ["train-cnn", "--data", mini, "--preset", "benchmark-64", "--quiet", "--cache", cache, "--reports", reports],
        ["series", "benchmark-64", "--data", mini, "--quiet", "--cache", cache, "--reports", reports],
        ["fit-head", "--features", caches.plain, "--head", "logreg", "-p", "C=1", "--quiet", "--reports", reports],
    )
    for r in (softmax, keras_backbone, train_cnn, series):
        assert "TensorFlow and Keras are not installed" in refused(r)
    assert not (cache / "features").exists()  # refused before any work
    # the one run folder is the logreg head's: the refused commands made none
    [run] = (reports / "runs").iterdir()
    assert run.name.endswith("-logreg") and (run / "metrics.json").is_file()
    assert logreg["code"] == 0 and "top-1" in logreg["stdout"]


@pytest.mark.slow
def test_the_onnx_path_runs_without_tensorflow(mini, mobilenet_onnx, tmp_path):
    cache, reports = tmp_path / "cache", tmp_path / "reports"
    data = ["--data", mini, "--backbone", mobilenet_onnx, "--size", 64, "--cache", cache, "--quiet"]
    photo = sorted(Path(mini).glob("*/*.jpg"))[0]
    results = without_tensorflow(
        ["extract", *data],
        ["fit-head", *data, "--head", "logreg", "--reports", reports],
        ["fit-head", *data, "--head", "knn", "--reports", reports],
        ["fit-head", *data, "--head", "lightgbm", "-p", "n_estimators=20", "--reports", reports],
        ["sweep", *data, "--head", "logreg", "--head", "knn", "--reports", reports],
        ["evaluate", "latest", "--reports", reports],
        ["report", "--reports", reports, "--quiet"],
        ["predict", "latest", photo, "--top", 1, "--json", "--reports", reports],
    )
    for r in results:
        assert r["code"] == 0, r
    runs = sorted(p.name.rsplit("-", 1)[-1] for p in (reports / "runs").iterdir())
    assert runs == ["knn", "knn", "lightgbm", "logreg", "logreg"]
    assert (reports / "index.html").is_file()
    predicted = json.loads(results[-1]["stdout"])
    [pred] = predicted["predictions"]
    assert predicted["failures"] == [] and len(pred["top"]) == 1
    assert pred["top"][0]["name"] in {p.name for p in Path(mini).iterdir()}


def test_python_dash_m_featkit_prints_the_version():
    from featkit.core.version import __version__

    proc = subprocess.run([sys.executable, "-m", "featkit", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"featkit {__version__}\n" and __version__ != "0+unknown"
