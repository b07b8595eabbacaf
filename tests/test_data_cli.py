"""`featkit data summary` and `featkit data check`, and bad input as one-line errors."""

from __future__ import annotations

import json

import pytest
from conftest import run_main
from test_data_layouts import make_folders, make_uec, photo_bytes, write
from typer.testing import CliRunner

from featkit.cli import app
from featkit.core.errors import FeatkitError
from featkit.data import prepare
from featkit.data.summary import summarize

runner = CliRunner()


def cli(*args: str):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def truncated(tmp_path):
    """Class folders with one JPEG cut in half."""
    root = make_folders(tmp_path / "photos", per_class=5)
    bad = root / "class2" / "img3.jpg"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    return root


def test_summary_of_uec(tmp_path):
    root = make_uec(tmp_path / "uec", per_class=3)
    r = cli("data", "summary", root, "--cache", tmp_path / "cache", "--quiet")
    assert r.exit_code == 0, r.output
    assert "layout    uec" in r.output
    assert "classes   12: rice, eels on rice, pilaf" in r.output
    assert "multi-dish photos filed under several classes: 1 (each kept in one split)" in r.output
    assert "unreadable 0 photos" in r.output


def test_summary_json_and_split_options(tmp_path):
    root = make_folders(tmp_path / "photos", per_class=10)
    r = cli(
        "data", "summary", root, "--cache", tmp_path / "cache", "--split", "60/20/20", "--seed", "3", "--json", "-q"
    )
    assert r.exit_code == 0, r.output
    s = json.loads(r.output)
    assert s["splits"] == {"train": 24, "valid": 8, "test": 8}
    assert s["split_config"]["seed"] == 3 and s["manifest"].endswith("-60-20-20-s3.csv")
    assert [c["name"] for c in s["class_list"]] == ["class1", "class2", "class10", "Class11"]


def test_truncated_jpeg_is_unreadable_in_summary_and_check(truncated, tmp_path):
    cache = tmp_path / "cache"
    r = cli("data", "summary", truncated, "--cache", cache, "-q")
    assert r.exit_code == 0, r.output
    assert "photos    20 (19 readable)" in r.output
    assert "unreadable 1 photos (not in any split):" in r.output
    assert "class2/img3.jpg: " in r.output
    prep = prepare(truncated, cache, quiet=True)
    assert "class2/img3.jpg" not in set(prep.manifest["path"]) and len(prep.manifest) == 19
    assert [u["path"] for u in summarize(prep)["unreadable"]] == ["class2/img3.jpg"]

    r = cli("data", "check", truncated, "--cache", cache, "-q")
    assert r.exit_code == 1
    assert r.output.splitlines()[0] == "20 photos decoded, 1 unreadable:"
    assert f"{truncated / 'class2' / 'img3.jpg'}: " in r.output
    r = cli("data", "check", truncated, "--cache", cache, "--json", "-q")
    assert r.exit_code == 1 and [u["path"] for u in json.loads(r.output)["unreadable"]] == ["class2/img3.jpg"]


def test_check_passes_on_a_clean_dataset(tmp_path):
    root = make_folders(tmp_path / "photos", per_class=3)
    r = cli("data", "check", root, "--cache", tmp_path / "cache", "-q")
    assert r.exit_code == 0 and r.output.strip() == "12 photos decoded, 0 unreadable"


def test_non_image_files_are_counted_in_the_summary(tmp_path):
    root = make_folders(tmp_path / "photos", per_class=3)
    write(root / "class1" / "notes.txt", "a note")
    write(root / "class1" / "text.jpg", "not a jpeg")
    r = cli("data", "summary", root, "--cache", tmp_path / "cache", "-q")
    assert "ignored   1 files that are not photos of a class:" in r.output
    assert "class1/notes.txt: not an image file" in r.output
    assert "unreadable 1 photos (not in any split):" in r.output and "class1/text.jpg" in r.output
    r = cli("data", "check", root, "--cache", tmp_path / "cache", "-q")
    assert r.exit_code == 1 and "text.jpg" in r.output


def test_one_photo_class_and_empty_folder_warnings_in_the_summary(tmp_path):
    root = make_folders(tmp_path / "photos", per_class=4)
    write(root / "solo" / "a.jpg", photo_bytes(31337))
    (root / "void").mkdir()
    r = cli("data", "summary", root, "--cache", tmp_path / "cache", "-q")
    assert r.exit_code == 0
    assert (
        "class 'solo' has one photo (or one set of identical photos): it cannot be stratified, so it stays in train"
        in r.output
    )
    assert "void has no photos: ignored" in r.output


def test_app_raises_featkit_error_for_bad_split(tmp_path):
    root = make_folders(tmp_path / "photos", per_class=2)
    r = cli("data", "summary", root, "--cache", tmp_path / "cache", "--split", "70/30")
    assert isinstance(r.exception, FeatkitError)
    assert (
        str(r.exception)
        == "--split '70/30' should be three numbers train/valid/test, >= 0 with train > 0, e.g. 70/20/10."
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["data", "summary", "{tmp}/no-such-folder"],
            "error: {tmp}/no-such-folder does not exist: give a dataset folder",
        ),
        (
            ["data", "check", "{tmp}/no-such-folder"],
            "error: {tmp}/no-such-folder does not exist: give a dataset folder",
        ),
        (["data", "summary", "{tmp}/photos", "--split", "a/b/c"], "error: --split 'a/b/c' should be three numbers"),
        (["data", "summary", "{tmp}/photos", "--seed", "-1"], "error: seed -1 should be a whole number >= 0"),
    ],
)
def test_errors_through_main_are_one_line_without_traceback(tmp_path, capsys, args, message):
    make_folders(tmp_path / "photos", per_class=2)
    r = run_main(capsys, *[a.format(tmp=tmp_path) for a in args], "--cache", tmp_path / "cache", "-q")
    assert r.code == 1, r.err  # a FeatkitError: bad data or a failed run (2 is for usage errors)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1, r.err
    assert lines[0].startswith(message.format(tmp=tmp_path))
    assert "Traceback" not in r.err and r.out == ""
