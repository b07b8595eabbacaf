"""MLflow tracking of finished runs: the run folder is the source of truth, MLflow gets a copy of it.

Tracking is on when `--track` was given (`enable()`, which sets FEATKIT_TRACK=1 so worker processes see it) or
MLFLOW_TRACKING_URI is set (FEATKIT_TRACK=0 turns it off). The store is MLFLOW_TRACKING_URI, else
sqlite:///<reports>/mlflow.db with its artifacts in <reports>/mlartifacts/; the experiment is
MLFLOW_EXPERIMENT_NAME, else "featkit".

    log_run(run)                    # params, metrics, tags and artifacts read back from the finished folder
    log_run(run, parent=sweep_id)   # nested under a parent MLflow run (a sweep's candidates)
    log_entry(Entry(...), reports)  # anything else (a sweep, a curve): returns the MLflow run id or None

`runs.store.finish` calls `track_finished(run)` as the last step of every head, CNN and ensemble run. A store that
is down, refuses or is misconfigured gives ONE warning line per process (later runs of the same process are not
tried again); the run folder is already complete by then. MLflow is imported only here, and only when tracking.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from featkit.core.errors import FeatkitError

TRACK_ENV = "FEATKIT_TRACK"
DEFER_ENV = "FEATKIT_TRACK_DEFER"  # set while a sweep fits its candidates: the sweep logs them, nested, at its end
URI_ENV = "MLFLOW_TRACKING_URI"
EXPERIMENT_ENV = "MLFLOW_EXPERIMENT_NAME"
DEFAULT_EXPERIMENT = "featkit"
INSTALL = 'pip install "featkit[mlflow]"'
# what an unreachable http store is given unless the user set them: fail within seconds, not minutes
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
}
# files of a run folder copied as artifacts, when present (plus the model file: model.*)
RUN_ARTIFACTS = (
    "report.html",
    "confusion.png",
    "reliability.png",
    "config.json",
    "metrics.json",
    "classes.json",
    "per_class.csv",
    "history.csv",
    "head.json",
)
# metrics.json entries scored on the test split, logged with a "test_" prefix beside "valid_top1" etc.
TEST_METRICS = ("top1", "top5", "macro_f1", "log_loss", "ece", "brier", "n")
PARAM_MAX = 6000  # MLflow's limit on a parameter value
_failed: set[str] = set()  # stores that failed in this process: warned about once, not tried again


@dataclass
class Entry:
    """One MLflow run: params, metrics (step 0), metric series [(step, value)], tags and files to attach."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    artifacts: list[Path] = field(default_factory=list)
    series: dict[str, list[tuple[int, float]]] = field(default_factory=dict)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def enable() -> None:
    """`--track`: turn tracking on for this process and the processes it starts. Refuses (one line) when MLflow
    is not installed, before any work is done."""
    _mlflow()
    os.environ[TRACK_ENV] = "1"


def wanted() -> bool:
    """Whether finished runs are logged: --track (FEATKIT_TRACK=1) or MLFLOW_TRACKING_URI set, and not inside a
    sweep's candidates (the sweep logs them itself) nor turned off with FEATKIT_TRACK=0."""
    if _truthy(os.environ.get(DEFER_ENV)):
        return False
    flag = os.environ.get(TRACK_ENV)
    if flag is not None and flag.strip() and not _truthy(flag):
        return False
    return _truthy(flag) or bool(os.environ.get(URI_ENV))


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Runs finished inside (in this process or in the worker processes it starts) are not logged one by one."""
    before = os.environ.get(DEFER_ENV)
    os.environ[DEFER_ENV] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(DEFER_ENV, None)
        else:
            os.environ[DEFER_ENV] = before


def tracking_uri(reports: str | Path) -> str:
    """MLFLOW_TRACKING_URI, else a sqlite store in the reports folder."""
    return os.environ.get(URI_ENV) or f"sqlite:///{(Path(reports) / 'mlflow.db').resolve()}"


def track_finished(run: Any) -> str | None:
    """What `runs.store.finish` calls last: log the run when tracking is wanted; the MLflow run id or None."""
    return log_run(run) if wanted() else None


def log_run(run: Any, parent: str | None = None) -> str | None:
    """Log a finished run folder (a `runs.store.Run`) to MLflow, nested under the MLflow run `parent` when given;
    returns the MLflow run id, or None when the store failed (one warning line) or tracking is unavailable."""
    return log_entry(run_entry(run), run.path.parents[1], parent)


def run_entry(run: Any) -> Entry:
    """What MLflow gets of a run folder: config.json as params, metrics.json's numbers as metrics (test scores
    prefixed test_), identity as tags, the folder's report, plots and model as artifacts."""
    config = run.read_json("config.json")
    metrics = run.read_json("metrics.json")
    return Entry(
        name=run.id,
        params=run_params(config),
        metrics=run_metrics(metrics),
        tags=run_tags(run, config),
        artifacts=[run.path / f for f in RUN_ARTIFACTS if (run.path / f).is_file()]
        + sorted(p for p in run.path.glob("model.*") if p.is_file()),
    )


def run_params(config: Mapping[str, Any]) -> dict[str, str]:
    """config.json's settings as MLflow params: the top-level scalars and lists, `params.<key>` for the head's or
    preset's parameters, and the chosen settings, refit and test-time view of head runs."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if key in ("schema", "backbone", "params", "extra", "fingerprint", "featkit_version") or value is None:
            continue
        if isinstance(value, (str, int, float, bool, list)):
            out[key] = value
    if isinstance(config.get("backbone"), Mapping):
        out["backbone"] = config["backbone"].get("name")
    for key, value in (config.get("params") or {}).items():
        out[f"params.{key}"] = value
    extra = config.get("extra") or {}
    for key in ("tta", "refit", "selection", "members", "sizes", "preset", "model"):
        if extra.get(key) is not None:
            out[key] = extra[key]
    return {k: _param_value(v) for k, v in out.items()}


def run_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """metrics.json's numbers (booleans and nested records left out); the test scores named test_top1 etc."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or key == "schema":
            continue
        out[f"test_{key}" if key in TEST_METRICS else key] = float(value)
    return out


def run_tags(run: Any, config: Mapping[str, Any]) -> dict[str, str]:
    from featkit.core.version import __version__

    backbone = config.get("backbone")
    tags = {
        "featkit.run_id": run.id,
        "featkit.kind": str(config.get("kind")),
        "featkit.folder": str(run.path.resolve()),
        "featkit_version": str(config.get("featkit_version") or __version__),
        "dataset": str(config.get("dataset") or ""),
        "dataset_fingerprint": str(config.get("fingerprint") or ""),
    }
    if isinstance(backbone, Mapping):
        tags["backbone"] = str(backbone.get("name"))
        tags["backbone_spec"] = json.dumps(backbone, sort_keys=True, default=str)[:PARAM_MAX]
    return tags


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:PARAM_MAX]


# ---- writing to MLflow ---------------------------------------------------------------------------------


def _mlflow():
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise FeatkitError(f"--track needs MLflow, which is not installed: {INSTALL}") from None
    return mlflow


def log_entry(entry: Entry, reports: str | Path, parent: str | None = None) -> str | None:
    """Write one MLflow run (nested under `parent`); the MLflow run id, or None after one warning line."""
    uri = tracking_uri(reports)
    if uri in _failed:
        return None
    try:
        _mlflow()
    except FeatkitError as e:
        _warn(uri, f"{e}", entry.name)
        return None
    try:
        with _quiet_mlflow(uri):
            return _write(entry, uri, Path(reports), parent)
    except Exception as e:  # any failure of the store (refused, down, bad URI, permissions): the folder is complete
        first = (str(e).strip().splitlines() or [""])[0][:200]
        _warn(uri, f"{type(e).__name__}: {first}", entry.name)
        return None


def _warn(uri: str, why: str, name: str) -> None:
    _failed.add(uri)
    sys.stderr.write(
        f"warning: MLflow tracking at {uri} failed ({why}); {name} and later runs of this command are not "
        "tracked, their run folders are complete.\n"
    )
    sys.stderr.flush()


@contextlib.contextmanager
def _quiet_mlflow(uri: str) -> Iterator[None]:
    """Short http timeouts (unless set by the user), no retry chatter, no migration or deprecation notes."""
    saved_env = {k: os.environ.get(k) for k in HTTP_DEFAULTS}
    if uri.startswith(("http://", "https://")):
        for k, v in HTTP_DEFAULTS.items():
            os.environ.setdefault(k, v)
    loggers = [logging.getLogger(n) for n in ("mlflow", "alembic", "urllib3", "sqlalchemy")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
        for k, before in saved_env.items():
            if before is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = before


def _write(entry: Entry, uri: str, reports: Path, parent: str | None) -> str:
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment_id = _experiment(client, uri, reports)
    tags = {**entry.tags, "mlflow.runName": entry.name}
    if parent:
        tags["mlflow.parentRunId"] = parent
    run_id = client.create_run(experiment_id, tags=tags, run_name=entry.name).info.run_id
    now = int(time.time() * 1000)
    params = [Param(k, v) for k, v in entry.params.items()]
    metrics = [Metric(k, float(v), now, 0) for k, v in entry.metrics.items()]
    metrics += [Metric(k, float(v), now, int(step)) for k, points in entry.series.items() for step, v in points]
    for chunk in _chunks(params, 100):
        client.log_batch(run_id, params=chunk)
    for chunk in _chunks(metrics, 1000):
        client.log_batch(run_id, metrics=chunk)
    for path in entry.artifacts:
        client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, "FINISHED")
    return run_id


def _experiment(client: Any, uri: str, reports: Path) -> str:
    name = os.environ.get(EXPERIMENT_ENV) or DEFAULT_EXPERIMENT
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if uri.startswith("sqlite:///"):  # artifacts beside the database, not in ./mlruns of wherever featkit runs
        location = (Path(uri[len("sqlite:///") :]).parent / "mlartifacts" / name).resolve().as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # created meanwhile by another process
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def _chunks(items: Sequence[Any], n: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


__all__ = [
    "Entry",
    "enable",
    "wanted",
    "deferred",
    "tracking_uri",
    "track_finished",
    "log_run",
    "log_entry",
    "run_entry",
    "run_params",
    "run_metrics",
    "run_tags",
    "INSTALL",
]
