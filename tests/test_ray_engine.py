"""featkit on Ray: the generic task runner, and `extract --engine ray` against the single-process extraction on
a real local cluster (same cache, a worker killed mid-shard, retries used up, a re-run that does nothing)."""

from __future__ import annotations

import math
import operator
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from conftest import run_main
from raycrash import dying_run_tasks

from featkit.core import ray_tasks
from featkit.core.errors import FeatkitError
from featkit.data import prepare
from featkit.features import extract as ex
from featkit.features import pipeline
from featkit.features import ray_shards as re_
from featkit.features.cache import read_cache, read_meta

CHUNK = 16  # the mini dataset's 80 photos make 5 chunks, so 2 shards of 3 and 2 chunks


def _opts(model: Path) -> ex.ExtractOptions:
    return ex.ExtractOptions(backbone=str(model), size=64)


def _same_cache(a: str | Path, b: str | Path) -> None:
    fa, fb = read_cache(a), read_cache(b)
    assert np.array_equal(fa.image_ids, fb.image_ids) and np.array_equal(fa.labels, fb.labels)
    assert np.array_equal(fa.split, fb.split) and np.array_equal(fa.row, fb.row)
    # float16 features: a different thread count may round a value to the next float16
    np.testing.assert_allclose(fa.features.astype(np.float32), fb.features.astype(np.float32), rtol=2e-3, atol=2e-3)


@pytest.fixture(scope="module")
def local_cache(mini, mobilenet_onnx, tmp_path_factory) -> Path:
    """The single-process cache of the mini dataset, with the same chunk size."""
    cache = tmp_path_factory.mktemp("local")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pipeline, "CHUNK", CHUNK)
        prep = prepare(mini, cache_dir=cache, quiet=True)
        return Path(ex.extract(prep, _opts(mobilenet_onnx), cache_dir=cache, quiet=True)[0].path)


@pytest.fixture(scope="module")
def ray_job(ray_cluster, mini, mobilenet_onnx, tmp_path_factory):
    """One `extract --engine ray` job with 2 workers: (its cache folder, its results, what it printed)."""
    cache = tmp_path_factory.mktemp("ray")
    printed: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pipeline, "CHUNK", CHUNK)
        mp.setattr(sys, "stderr", _Lines(printed))
        res = re_.extract_on_ray(mini, _opts(mobilenet_onnx), cache, workers=2)
    return cache, res, "".join(printed)


class _Lines:
    def __init__(self, out: list[str]):
        self.out = out

    def write(self, text: str) -> None:
        self.out.append(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


@pytest.mark.slow
def test_run_tasks_returns_results_in_order(ray_cluster):
    assert ray_tasks.run_tasks(math.factorial, [5, 3, 0, 4], workers=2, quiet=True) == [120, 6, 1, 24]
    # setup runs once per worker; fn gets (item, what setup returned)
    assert ray_tasks.run_tasks(operator.add, [1, 2, 3], setup=partial(int, "10"), quiet=True) == [11, 12, 13]


@pytest.mark.slow
def test_run_tasks_does_not_retry_an_error_of_the_work(ray_cluster):
    with pytest.raises(
        ray_tasks.TasksFailed, match=r"1 of 3 tasks failed: -1 \(1 attempts\): factorial\(\) not defined"
    ) as e:
        ray_tasks.run_tasks(math.factorial, [3, -1, 4], workers=2, quiet=True)
    (f,) = e.value.failures
    assert (f.index, f.item, f.attempts) == (1, -1, 1)


@pytest.mark.slow
def test_ray_cache_equals_single_process_cache(ray_job, local_cache):
    cache, res, printed = ray_job
    assert [(r.view, r.status, r.photos) for r in res] == [("plain", "extracted", 80)]
    _same_cache(res[0].path, local_cache)
    meta = read_meta(res[0].path)
    assert (meta.extra["engine"], meta.extra["ray_workers"], meta.extra["ray_shards"], meta.shard) == (
        "ray",
        2,
        2,
        None,
    )
    assert len(meta.extra["merged_from"]) == 2 and not any(Path(p).exists() for p in meta.extra["merged_from"])
    assert not list(cache.glob("features/*/*/*.partial"))
    # one progress line for the whole job, fed by both workers
    lines = [ln for ln in printed.splitlines() if ln.startswith("extract on Ray")]
    assert lines[-1].startswith("extract on Ray (2 workers): 80/80 photos (100.0%)")


@pytest.mark.slow
def test_rerun_of_a_complete_job_does_no_work(ray_job, mini, mobilenet_onnx, monkeypatch):
    cache, res, _ = ray_job
    monkeypatch.setattr(pipeline, "CHUNK", CHUNK)
    monkeypatch.setattr(re_, "ray_session", lambda *a: pytest.fail("a complete cache must not start Ray"))
    again = re_.extract_on_ray(mini, _opts(mobilenet_onnx), cache, workers=2)
    assert [(r.status, r.path) for r in again] == [("up to date", res[0].path)]


@pytest.mark.slow
def test_worker_killed_mid_shard_is_retried(ray_cluster, mini, mobilenet_onnx, local_cache, tmp_path, monkeypatch):
    marker = tmp_path / "crashed"
    # the first worker to finish 2 chunks exits at once, as if killed, before saving its second chunk
    monkeypatch.setattr(re_, "run_tasks", dying_run_tasks(2 * CHUNK, marker))
    monkeypatch.setattr(pipeline, "CHUNK", CHUNK)
    said: list[str] = []
    res = re_.extract_on_ray(mini, _opts(mobilenet_onnx), tmp_path / "cache", workers=2, quiet=True, log=said.append)
    assert marker.exists()
    (retry,) = [s for s in said if "died" in s]
    assert "trying again (2 of 4)" in retry
    _same_cache(res[0].path, local_cache)


@pytest.mark.slow
def test_retries_are_bounded_and_nothing_half_done_is_merged(ray_cluster, mini, mobilenet_onnx, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setattr(pipeline, "CHUNK", CHUNK)
    monkeypatch.setattr(re_, "run_tasks", dying_run_tasks(1))  # every worker dies on its first batch
    with pytest.raises(FeatkitError) as e:
        re_.extract_on_ray(
            mini, _opts(mobilenet_onnx), cache, workers=2, retries=1, quiet=True, command="featkit extract --engine ray"
        )
    msg = str(e.value)
    assert "\n" not in msg and "shard(s) 0/2, 1/2 of plain after 2 attempts (The actor died" in msg
    assert "run `featkit extract --engine ray` again to re-run only the failed ones" in msg
    assert not list(cache.glob("features/*/*/plain*.h5"))


@pytest.mark.slow
def test_a_rerun_after_failed_shards_runs_only_those(
    ray_cluster, mini, mobilenet_onnx, local_cache, tmp_path, monkeypatch
):
    cache = tmp_path / "cache"
    monkeypatch.setattr(pipeline, "CHUNK", CHUNK)
    # shard 1/2 (chunks 1 and 3: 32 photos) finishes; shard 0/2 (chunks 0, 2, 4: 48 photos) dies in its last chunk
    monkeypatch.setattr(re_, "run_tasks", dying_run_tasks(40))
    with pytest.raises(FeatkitError, match=r"shard\(s\) 0/2 of plain after 1 attempt "):
        re_.extract_on_ray(mini, _opts(mobilenet_onnx), cache, workers=2, retries=0, quiet=True)
    assert [p.name for p in cache.glob("features/*/*/plain*.h5")] == ["plain.shard-1-of-2.h5"]
    monkeypatch.setattr(re_, "run_tasks", ray_tasks.run_tasks)
    printed: list[str] = []
    monkeypatch.setattr(sys, "stderr", _Lines(printed))
    res = re_.extract_on_ray(mini, _opts(mobilenet_onnx), cache, workers=2)
    # the two chunks shard 0/2 saved before dying are kept: only its last 16 photos are extracted again
    assert "extract on Ray (1 worker): 16/16 photos (100.0%)" in "".join(printed)
    _same_cache(res[0].path, local_cache)


def test_nothing_imports_ray_unless_asked(mini, tmp_path):
    code = (
        "import sys; import featkit.cli, featkit.features.extract, featkit.features.ray_shards; "
        "assert 'ray' not in sys.modules, 'ray was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_without_ray_engine_ray_says_which_extra(mini, tmp_path, mobilenet_onnx):
    code = (
        "import sys; sys.modules['ray'] = None; from featkit.cli import main; "
        f"sys.argv = ['featkit', 'extract', '--data', {str(mini)!r}, '--backbone', {str(mobilenet_onnx)!r}, "
        f"'--size', '64', '--cache', {str(tmp_path)!r}, '--engine', 'ray']; main()"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr  # a FeatkitError; 2 is for usage errors
    assert proc.stderr.strip().splitlines() == [
        'error: --engine ray needs Ray, an optional extra of featkit: pip install "featkit[ray]" '
        '(or pip install "ray>=2.9").'
    ]
    assert not (tmp_path / "features").exists()


def test_engine_options_are_checked(mini, tmp_path, mobilenet_onnx, capsys):
    base = ["extract", "--data", mini, "--backbone", mobilenet_onnx, "--cache", tmp_path]
    for extra, says in [
        (["--workers", "2"], "error: --address and --workers apply to --engine ray only."),
        (["--engine", "ray", "--shard", "0/2"], "error: --shard picks one part to run by hand"),
    ]:
        r = run_main(capsys, *base, *extra)
        assert r.code == 1 and len(r.err.strip().splitlines()) == 1, r.err  # 2: usage errors
        assert r.err.startswith(says)


@pytest.mark.slow
def test_a_sweep_on_ray_picks_what_the_local_sweep_picks(ray_cluster, caches, tmp_path):
    """The same candidates fitted by Ray actors and by this process: the same scores, the same choice."""
    from featkit.apps.sweep import Candidate, sweep

    cands = [Candidate("logreg", {"C": c, "max_iter": 300}, (str(caches.plain),)) for c in (0.001, 0.1, 10.0)]
    local = sweep(cands, reports=tmp_path / "local", quiet=True)
    on_ray = sweep(cands, engine="ray", jobs=2, reports=tmp_path / "ray", quiet=True)
    assert on_ray.selected.candidate == local.selected.candidate
    for a, b in zip(local.rows, on_ray.rows, strict=True):
        assert (a.candidate, a.valid_top1, a.top1) == (b.candidate, b.valid_top1, b.top1)
    assert len(list((tmp_path / "ray" / "runs").iterdir())) == 3  # each actor wrote its run folder
