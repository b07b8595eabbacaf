"""Crashes the type checker found (mypy on featkit/): each test fails without its fix."""

from __future__ import annotations

import json

import h5py
from typer.testing import CliRunner

from featkit.cli import app
from featkit.core.schema import BackboneSpec


def test_an_onnx_spec_without_a_sha256_still_names_its_folder():
    # slug() sliced weights_sha256[:10], None for a spec that never read its model file
    assert BackboneSpec(kind="onnx", name="mobilenet-v2", size=64).slug() == "mobilenet-v2"
    file = {"path": "/models/mobilenet-v2.onnx", "sha256": "0123456789abcdef"}
    assert BackboneSpec(kind="onnx", name="mobilenet-v2", size=64, weights=file).slug() == "mobilenet-v2-0123456789"


def test_extract_prints_an_up_to_date_cache_that_records_no_rate(mini, mobilenet_onnx, tmp_path):
    # a cache whose metadata has no photos/s (None: merged with seconds=0, or written before featkit recorded it)
    # made `featkit extract` format None with ",.0f" when it found the cache up to date
    runner = CliRunner()
    args = ["extract", "--data", str(mini), "--backbone", str(mobilenet_onnx), "--size", "64", "--quiet"]
    args += ["--cache", str(tmp_path / "cache")]
    first = runner.invoke(app, [*args, "--json"], catch_exceptions=False)
    assert first.exit_code == 0, first.output
    [made] = json.loads(first.stdout)
    assert made["status"] == "extracted" and made["photos_per_second"] > 0
    with h5py.File(made["path"], "r+") as f:
        meta = json.loads(f.attrs["meta"])
        assert meta["photos_per_second"] > 0
        f.attrs["meta"] = json.dumps({**meta, "photos_per_second": None}, sort_keys=True)

    again = runner.invoke(app, args, catch_exceptions=False)
    assert again.exit_code == 0, again.output
    [line] = again.stdout.splitlines()
    assert line.split()[:6] == ["plain", "up", "to", "date", f"{made['photos']}", "photos"]
    assert line.split()[6:8] == ["-", "photos/s"]
    as_json = runner.invoke(app, [*args, "--json"], catch_exceptions=False)
    assert json.loads(as_json.stdout)[0]["photos_per_second"] is None
