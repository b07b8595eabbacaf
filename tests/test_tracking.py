"""MLflow tracking (featkit.runs.tracking): runs logged from their finished folders to a real local MLflow store
(sqlite in tmp_path) and read back with MlflowClient; a store that is down costs one warning line, nothing else."""

from __future__ import annotations

import json
import sys

import pytest

from featkit.core.errors import FeatkitError
from featkit.core.fileio import read_json
from featkit.runs import tracking

mlflow = pytest.importorskip("mlflow", reason='MLflow is not installed (pip install "featkit[mlflow]")')


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One sqlite store for the module: its migrations run once (a few seconds)."""
    root = tmp_path_factory.mktemp("mlflow")
    return f"sqlite:///{root / 'mlflow.db'}"


@pytest.fixture
def tracked(store, monkeypatch, request):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", request.node.name)
    monkeypatch.delenv("FEATKIT_TRACK", raising=False)
    monkeypatch.setattr(tracking, "_failed", set())
    return mlflow.MlflowClient(tracking_uri=store)


def _runs(client, experiment: str):
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment}"
    return client.search_runs([exp.experiment_id])


def test_head_run_round_trip(caches, tmp_path, tracked, request):
    from featkit.heads.fit import fit_head

    run = fit_head(caches.plain, "logreg", params={"C": "0.01,0.1"}, reports=tmp_path / "reports", quiet=True)
    (logged,) = _runs(tracked, request.node.name)
    config, metrics = read_json(run.path / "config.json"), read_json(run.path / "metrics.json")
    data = logged.data

    assert data.tags["mlflow.runName"] == run.id
    assert data.tags["featkit.run_id"] == run.id
    assert data.tags["dataset_fingerprint"] == config["fingerprint"]
    assert json.loads(data.tags["backbone_spec"]) == config["backbone"]
    assert data.tags["featkit_version"] == config["featkit_version"]
    assert "mlflow.parentRunId" not in data.tags

    assert data.params["kind"] == "head" and data.params["name"] == "logreg"
    assert data.params["params.C"] == json.dumps(config["params"]["C"])
    assert data.params["size"] == str(config["size"])
    assert data.params == tracking.run_params(config)

    assert data.metrics["test_top1"] == metrics["top1"]
    assert data.metrics["test_top5"] == metrics["top5"]
    assert data.metrics["test_log_loss"] == metrics["log_loss"]
    assert data.metrics["test_ece"] == metrics["ece"]
    assert data.metrics["valid_top1"] == metrics["valid_top1"]
    assert data.metrics["valid_top5"] == metrics["valid_top5"]
    assert data.metrics["fit_seconds"] == metrics["fit_seconds"]
    numbers = {k for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    assert len(data.metrics) == len(numbers - {"schema"})

    names = {a.path for a in tracked.list_artifacts(logged.info.run_id)}
    assert {"confusion.png", "reliability.png", "config.json", "metrics.json", "head.json", "model.joblib"} <= names
    assert names == {p.name for p in tracking.run_entry(run).artifacts}
    got = tracked.download_artifacts(logged.info.run_id, "model.joblib", str(tmp_path / "down"))
    assert open(got, "rb").read() == (run.path / "model.joblib").read_bytes()


def test_sweep_is_a_parent_with_its_runs_nested(caches, tmp_path, tracked, request):
    from featkit.apps.sweep import grid, sweep

    cands = grid({"logreg": {"C": ["0.01", "0.1"]}}, [[str(caches.plain)]])
    result = sweep(cands, ensemble=2, reports=tmp_path / "reports", quiet=True)
    runs = _runs(tracked, request.node.name)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [p.data.tags["mlflow.runName"] for p in parents] == [result.id]
    parent = parents[0]
    children = sorted(r.data.tags["featkit.run_id"] for r in runs if r is not parent)
    assert children == sorted(r.run for r in result.rows)  # each candidate and the ensemble once, no more
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in runs if r is not parent)
    assert parent.data.metrics["valid_top1"] == result.selected.valid_top1
    assert parent.data.params["selected_run"] == result.selected.run
    assert {a.path for a in tracked.list_artifacts(parent.info.run_id)} >= {"sweep.csv", "sweep.json"}


def test_unreachable_store_one_warning_and_complete_runs(caches, tmp_path, monkeypatch, capsys):
    from featkit.apps.sweep import grid, sweep

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # the discard port: connection refused
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    monkeypatch.setattr(tracking, "_failed", set())
    cands = grid({"logreg": {"C": ["0.01", "0.1"]}}, [[str(caches.plain)]])
    result = sweep(cands, reports=tmp_path / "reports", quiet=True)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    assert err[0].startswith("warning: MLflow tracking at http://127.0.0.1:9 failed")
    assert all(not r.error for r in result.rows)
    for r in result.rows:
        assert (tmp_path / "reports" / "runs" / r.run / "metrics.json").exists()


def test_when_tracking_is_on(monkeypatch):
    for k in ("FEATKIT_TRACK", "MLFLOW_TRACKING_URI", tracking.DEFER_ENV):
        monkeypatch.delenv(k, raising=False)
    assert not tracking.wanted()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///x.db")
    assert tracking.wanted()
    with tracking.deferred():
        assert not tracking.wanted()
    assert tracking.wanted()
    monkeypatch.setenv("FEATKIT_TRACK", "0")
    assert not tracking.wanted()
    monkeypatch.setenv("FEATKIT_TRACK", "1")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert tracking.wanted()


def test_track_without_mlflow_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow raises ImportError
    monkeypatch.delenv("FEATKIT_TRACK", raising=False)
    with pytest.raises(FeatkitError, match=r'pip install "featkit\[mlflow\]"'):
        tracking.enable()


def test_curve_is_one_run_with_its_points_as_series(tmp_path, tracked, request):
    from featkit.apps.curve import CurvePoint, CurveResult, track_curve

    folder = tmp_path / "reports" / "curves" / "20260101-000000-c"
    folder.mkdir(parents=True)
    (folder / "curve.csv").write_text("per_class,top1_mean\n1,0.2\n5,0.5\nall,0.6\n")
    points = [
        CurvePoint(1, 8, [0.2, 0.3], [0.5, 0.6]),
        CurvePoint(5, 40, [0.5], [0.8]),
        CurvePoint(None, 192, [0.6], [0.9]),
    ]
    info = {
        "n_classes": 8,
        "repeats": 2,
        "seed": 0,
        "refit": False,
        "backbone": "mobilenet-v2",
        "size": 96,
        "params": {},
    }
    result = CurveResult(folder.name, folder, "logreg", points, 0.6, 5, info)
    run_id = track_curve(result, tmp_path / "reports")
    assert run_id is not None
    history = tracked.get_metric_history(run_id, "top1_mean")
    assert [(m.step, m.value) for m in history] == [(1, 0.25), (5, 0.5), (24, 0.6)]  # all: 192 rows / 8 classes
    data = tracked.get_run(run_id).data
    assert data.metrics["reach90_per_class"] == 5 and data.params["per_class"] == "1,5,all"
    assert [a.path for a in tracked.list_artifacts(run_id)] == ["curve.csv"]
