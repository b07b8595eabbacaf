"""Several caches as one, the mirrored test-time view, ensembles of runs and sweeps, on small real caches."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from cachefixtures import backbone_spec

from featkit.core.errors import FeatkitError
from featkit.core.schema import BackboneSpec
from featkit.features.cache import read_cache, write_cache
from featkit.runs.calibration import apply_temperature, fit_temperature
from featkit.runs.metrics import log_loss

FAST = {"C": 1.0, "max_iter": 200}


def _derived(src, path, transform, ids=None, order=None, **meta_changes):
    """A cache of the same photos as `src` (optionally reordered / renamed) with transformed features."""
    fs = read_cache(src)
    order = np.arange(len(fs)) if order is None else order
    image_ids = fs.image_ids if ids is None else ids
    write_cache(
        path,
        transform(fs.features)[order],
        fs.labels[order],
        fs.split[order],
        np.asarray(image_ids)[order],
        fs.meta.replace(**{k: BackboneSpec.from_dict(v) if k == "backbone" else v for k, v in meta_changes.items()}),
    )
    return path


def test_matching_caches_concatenate_side_by_side_in_the_first_cache_order(caches, tmp_path):
    from featkit.features.combine import concat_caches

    a = read_cache(caches.plain)
    order = np.random.default_rng(0).permutation(len(a))  # the second cache lists the photos in another order
    b_path = _derived(
        caches.plain,
        tmp_path / "b.h5",
        lambda f: f[:, :256] * 2,
        order=order,
        backbone=backbone_spec("other-net", 64),
        size=64,
    )
    both = concat_caches([caches.plain, b_path])
    assert both.features.shape == (len(a), 1280 + 256)
    np.testing.assert_array_equal(both.features[:, :1280], a.features)
    np.testing.assert_array_equal(both.features[:, 1280:], a.features[:, :256] * 2)  # realigned by image id
    np.testing.assert_array_equal(both.image_ids, a.image_ids)
    np.testing.assert_array_equal(both.labels, a.labels)
    assert both.meta.size == [96, 64]
    assert both.meta.backbone.name == "mobilenet-v2-96+other-net-64"
    assert [c["feature_dim"] for c in both.meta.extra["caches"]] == [1280, 256]


def test_caches_of_other_photos_fail_with_one_line(caches, tmp_path):
    from featkit.features.combine import concat_caches

    a = read_cache(caches.plain)
    ids = a.image_ids.copy()
    ids[:3] = ["x/1", "x/2", "x/3"]
    b_path = _derived(caches.plain, tmp_path / "b.h5", lambda f: f, ids=ids)
    with pytest.raises(FeatkitError) as e:
        concat_caches([caches.plain, b_path])
    msg = str(e.value)
    assert "\n" not in msg and str(b_path) in msg and "3 image ids" in msg and a.image_ids[0] in msg
    other = _derived(caches.plain, tmp_path / "c.h5", lambda f: f, fingerprint="0123456789abcdef")
    with pytest.raises(
        FeatkitError, match="fingerprint: .ec8c[0-9a-f]+. vs .0123456789abcdef. — combine caches of the same photos"
    ):
        concat_caches([caches.plain, other])


def test_fit_head_on_two_caches_records_both_sources(caches, tmp_path):
    from featkit.heads.fit import fit_head

    b_path = _derived(caches.plain, tmp_path / "b.h5", lambda f: f[:, ::-1].copy(), backbone=backbone_spec("other-net"))
    run = fit_head([caches.plain, b_path], "logreg", FAST, reports=tmp_path, quiet=True)
    cfg = run.config
    assert [c["path"] for c in cfg.extra["caches"]] == [str(caches.plain.resolve()), str(b_path.resolve())]
    assert [c["backbone"]["name"] for c in cfg.extra["caches"]] == ["mobilenet-v2", "other-net"]
    assert json.loads((run.path / "head.json").read_text())["n_features"] == 2560


def test_tta_probabilities_are_the_mean_of_plain_and_mirrored_photo(caches, tmp_path):
    from featkit.heads import load_run_head
    from featkit.heads.fit import fit_head

    # no refit: the saved head is the one that scored valid (held out), so both splits can be checked by hand
    run = fit_head(caches.plain, "logreg", FAST, reports=tmp_path, quiet=True, tta="flip", refit=False)
    head = load_run_head(run)
    plain, mirrored = read_cache(caches.plain), read_cache(caches.tta)
    for split in ("test", "valid"):
        p, m = plain.subset(split), mirrored.subset(split)
        assert np.array_equal(p.image_ids, m.image_ids)  # the fixture lists them in the same order
        by_hand = (head.predict_proba(p.features).astype(np.float64) + head.predict_proba(m.features)) / 2
        saved = run.load_predictions(split)
        np.testing.assert_array_equal(saved["image_ids"], p.image_ids)
        np.testing.assert_allclose(saved["probs"], by_hand, rtol=0, atol=1e-6)
        assert not np.allclose(saved["probs"], head.predict_proba(p.features), atol=1e-3)  # the view changed something
    assert run.config.extra["tta"] == "flip"


def test_tta_without_the_view_fails_with_one_line(caches, tmp_path):
    from featkit.heads.fit import fit_head

    shutil.copy(caches.plain, tmp_path / "plain.h5")
    with pytest.raises(FeatkitError, match=r"no tta-flip view beside .*--tta flip"):
        fit_head(tmp_path / "plain.h5", "logreg", FAST, reports=tmp_path, quiet=True, tta="flip")


def test_ensemble_of_a_run_with_itself_equals_the_run(caches, tmp_path):
    from featkit.apps.ensemble import ensemble_runs
    from featkit.heads.fit import fit_head

    run = fit_head(caches.plain, "logreg", FAST, reports=tmp_path, quiet=True)
    ens = ensemble_runs([run.id, run.id], reports=tmp_path, quiet=True)
    a, b = run.load_predictions("test"), ens.load_predictions("test")
    np.testing.assert_array_equal(a["probs"], b["probs"])
    np.testing.assert_array_equal(a["image_ids"], b["image_ids"])
    for key in ("top1", "top5", "log_loss", "macro_f1", "valid_top1"):
        assert getattr(ens.metrics, key) == getattr(run.metrics, key), key
    assert ens.config.kind == "ensemble" and ens.config.extra["members"] == [run.id, run.id]
    assert (ens.path / "per_class.csv").read_text() == (run.path / "per_class.csv").read_text()
    # predict takes the ensemble like any run (it used to refuse it): the same answer as its only member
    from conftest import read_food_photos

    from featkit.apps.predict import predict

    photo = tmp_path / "photo.jpg"
    photo.write_bytes(read_food_photos(1, 1, "test")[1][0])
    assert predict(ens.id, [photo], reports=tmp_path) == predict(run.id, [photo], reports=tmp_path)


def test_ensemble_of_two_runs_is_the_mean_and_other_photos_are_refused(caches, tmp_path):
    from featkit.apps.ensemble import ensemble_runs
    from featkit.heads.fit import fit_head

    r1 = fit_head(caches.plain, "logreg", FAST, reports=tmp_path, quiet=True)
    r2 = fit_head(caches.plain, "logreg", {**FAST, "C": 0.01}, reports=tmp_path, quiet=True)
    ens = ensemble_runs([r1, r2], reports=tmp_path, quiet=True)
    mean = (r1.load_predictions()["probs"].astype(np.float64) + r2.load_predictions()["probs"]) / 2
    # the mean, calibrated by a temperature fitted on the mean of the members' held-out validation probabilities
    valid = [r.load_predictions("valid") for r in (r1, r2)]
    valid_mean = (valid[0]["probs"].astype(np.float64) + valid[1]["probs"]) / 2
    T = ens.metrics.temperature
    assert T == fit_temperature(valid_mean, valid[0]["labels"]) and T != 1.0
    np.testing.assert_allclose(ens.load_predictions()["probs"], apply_temperature(mean, T), rtol=0, atol=1e-6)
    cal = ens.metrics.calibration
    assert cal["before"]["log_loss"] == pytest.approx(log_loss(mean, r1.load_predictions()["labels"]), abs=1e-5)

    fewer = read_cache(caches.plain)
    keep = ~((fewer.split == "test") & (np.arange(len(fewer)) % 2 == 0))
    write_cache(
        tmp_path / "fewer.h5",
        fewer.features[keep],
        fewer.labels[keep],
        fewer.split[keep],
        fewer.image_ids[keep],
        fewer.meta,
    )
    r3 = fit_head(tmp_path / "fewer.h5", "logreg", FAST, reports=tmp_path, quiet=True)
    with pytest.raises(FeatkitError) as e:
        ensemble_runs([r1, r3], reports=tmp_path, quiet=True)
    assert "\n" not in str(e.value) and r3.id in str(e.value) and "image ids differ" in str(e.value)


def test_sweep_selects_by_validation_never_by_test(caches, tmp_path):
    """Two candidates: one has useless test features (good valid, bad test), the other useless valid features
    (bad valid, good test). Choosing by test would pick the second; the sweep must pick the first."""
    from featkit.apps.sweep import Candidate, sweep

    fs = read_cache(caches.plain)
    noise = np.random.default_rng(1).normal(size=fs.features.shape).astype(np.float32)

    def spoil(split):
        return lambda f: np.where((fs.split == split)[:, None], noise, f)

    good_valid = _derived(caches.plain, tmp_path / "good-valid.h5", spoil("test"))
    good_test = _derived(caches.plain, tmp_path / "good-test.h5", spoil("valid"))
    cands = [Candidate("logreg", FAST, (str(good_test),)), Candidate("logreg", FAST, (str(good_valid),))]
    result = sweep(cands, jobs=2, reports=tmp_path, quiet=True)
    by_cache = {r.run: r for r in result.rows}
    rows = {
        json.loads((tmp_path / "runs" / run / "config.json").read_text())["cache"]: r for run, r in by_cache.items()
    }
    gv, gt = rows[str(good_valid.resolve())], rows[str(good_test.resolve())]
    assert gv.valid_top1 > gt.valid_top1 and gt.top1 > gv.top1  # the two splits disagree
    assert result.selected == gv and gv.selected and not gt.selected
    assert [r.candidate for r in result.rows] == [c.label for c in cands]  # rows in candidate order
    table = (result.path / "sweep.csv").read_text().splitlines()
    assert len(table) == 3 and table[0].startswith("candidate,kind,head,params,caches,tta,valid_top1")
    assert result.path.parent == tmp_path / "sweeps" and (result.path / "sweep.md").exists()


def test_sweep_grid_ensembles_and_engines(caches, tmp_path):
    from featkit.apps.sweep import cache_sets, grid, parse_param_grid, read_candidates, run_candidates, sweep

    b = _derived(caches.plain, tmp_path / "b.h5", lambda f: f[:, ::-1].copy(), backbone=backbone_spec("other-net"))
    sets = cache_sets([caches.plain, b], ["none", "backbones"])
    assert sets == [[str(caches.plain)], [str(b)], [str(caches.plain), str(b)]]
    params = parse_param_grid(["C=0.1,1", "logreg.max_iter=200"], ["logreg"])
    assert params == {"logreg": {"C": ["0.1", "1"], "max_iter": ["200"]}}
    cands = grid(params, sets[:1], [None, "flip"])
    assert [(c.params["C"], c.tta) for c in cands] == [("0.1", None), ("1", None), ("0.1", "flip"), ("1", "flip")]
    with pytest.raises(FeatkitError, match="--engine 'spark': use local or ray"):
        run_candidates(cands, engine="spark", reports=tmp_path)
    with pytest.raises(FeatkitError, match="has a parameter 'hidden'"):
        parse_param_grid(["hidden=0"], ["logreg"])
    result = sweep(cands[:2], ensemble=2, reports=tmp_path, quiet=True)
    ens = [r for r in result.rows if r.kind == "ensemble"]
    assert len(ens) == 1 and sorted(ens[0].members) == sorted(r.run for r in result.rows[:2])
    assert read_candidates(result.path / "candidates.json") == cands[:2]
    assert result.selected.valid_top1 == max(r.valid_top1 for r in result.rows)


def test_command_line_fit_head_ensemble_and_sweep(caches, tmp_path):
    """fit-head with two caches and --tta, ensemble, and sweep --json, through the real command line."""
    from typer.testing import CliRunner

    from featkit.cli import app

    def fk(*args):
        res = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
        assert res.exit_code == 0, res.output
        return json.loads(res.stdout)

    b = _derived(caches.plain, tmp_path / "b.h5", lambda f: f[:, ::-1].copy(), backbone=backbone_spec("other-net"))
    # b.h5's mirrored view beside it: the same photos, features reversed like b's
    _derived(caches.tta, tmp_path / "tta-flip.h5", lambda f: f[:, ::-1].copy(), backbone=backbone_spec("other-net"))
    reports = ["--reports", tmp_path / "reports", "--json", "--quiet"]
    run = fk("fit-head", "--features", caches.plain, "--features", b, "--tta", "flip", "-p", "max_iter=200", *reports)
    cfg = json.loads((tmp_path / "reports" / "runs" / run["run"] / "config.json").read_text())
    assert cfg["tta"] == "flip" and len(cfg["caches"]) == 2
    ens = fk("ensemble", run["run"], run["run"], "--name", "twice", *reports)
    assert (ens["top1"], ens["top5"]) == (run["top1"], run["top5"])
    out = fk(
        "sweep",
        "--set",
        f"{caches.plain}+{b}",
        "--features",
        caches.plain,
        "-p",
        "C=0.1,1",
        "-p",
        "max_iter=200",
        "--tta",
        "flip",
        *reports,
    )
    assert len(out["rows"]) == 4 and out["selected"]["valid_top1"] == max(r["valid_top1"] for r in out["rows"])
    assert {r["caches"] for r in out["rows"]} == {"mobilenet-v2-96", "mobilenet-v2-96+other-net-96"}
