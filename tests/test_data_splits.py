"""Splits: seeded, stratified, duplicate-aware, deterministic; official splits kept; the real shared Food-101 zip."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image, PngImagePlugin
from test_data_layouts import (
    FOOD_CLASSES,
    FOOD_DUP,
    UEC_MULTI,
    make_folders,
    make_food101,
    make_uec,
    photo_bytes,
    write,
)

from featkit.core.errors import FeatkitError
from featkit.data import SplitConfig, prepare
from featkit.data.splits import _assign
from featkit.data.summary import format_summary, summarize

SEEDS = range(6)


def split_of(m, **eq) -> list[str]:
    rows = m
    for k, v in eq.items():
        rows = rows[rows[k] == v]
    return rows["split"].tolist()


# ---------------------------------------------------------------- UECFOOD multi-dish photos


def test_uec_multi_dish_photo_never_straddles_splits(tmp_path):
    root = make_uec(tmp_path / "uec", per_class=9)
    splits_seen = set()
    for seed in range(10):
        prep = prepare(root, tmp_path / "cache", SplitConfig(seed=seed), quiet=True)
        s = split_of(prep.manifest, image_id=UEC_MULTI)
        assert len(s) == 2 and len(set(s)) == 1, (seed, s)
        splits_seen.add(s[0])
        assert prep.manifest["group"].nunique() == len(prep.manifest) - 1
    assert len(splits_seen) > 1  # the seeds do move it: the test would see a straddle


def test_uec_same_id_with_different_bytes_is_still_one_photo(tmp_path):
    root = make_uec(tmp_path / "uec", per_class=3)
    write(root / "7" / f"{UEC_MULTI}.jpg", photo_bytes(4321))  # re-encoded copy: nothing in common but the id
    for seed in SEEDS:
        prep = prepare(root, tmp_path / "cache", SplitConfig(seed=seed), quiet=True)
        rows = prep.manifest[prep.manifest["image_id"] == UEC_MULTI]
        assert rows["sha1"].nunique() == 2
        assert rows["split"].nunique() == 1, seed
    s = summarize(prep)
    assert s["multi_class_photos"] == 1 and s["duplicates"]["groups"] == 0


def test_uec_summary_counts_the_multi_dish_photo(tmp_path):
    root = make_uec(tmp_path / "uec", per_class=3)
    prep = prepare(root, tmp_path / "cache", quiet=True)
    s = summarize(prep)
    assert s["layout"] == "uec" and s["classes"] == 12
    assert s["photos"] == 12 * 3 + 2 + 1
    assert s["multi_class_photos"] == 1
    assert s["duplicates"]["groups"] == 0  # filed twice, not a duplicate
    text = format_summary(s)
    assert "multi-dish photos filed under several classes: 1 (each kept in one split)" in text
    assert "rice with egg" in " ".join(c["name"] for c in s["class_list"])


# ---------------------------------------------------------------- Food-101 official split


@pytest.fixture(scope="module")
def food(tmp_path_factory):
    d = tmp_path_factory.mktemp("food")
    root = make_food101(d / "food-101", train=18, test=6)
    return root, prepare(root, d / "cache", quiet=True)


def test_food101_official_test_kept_and_valid_carved_from_train(food):
    _, prep = food
    m = prep.manifest
    official = {it.image_id: it.official_split for it in prep.dataset.items}
    for image_id, split in zip(m["image_id"], m["split"], strict=True):
        if official[image_id] == "test":
            assert split == "test"
        else:
            assert split in ("train", "valid")
    assert (m["split"] == "test").sum() == 4 * 6
    # stratified: every class gives valid its share of official train (0.2 / 0.9 of 18 = 4), the pinned
    # duplicate of waffles staying in train
    valid = m[m["split"] == "valid"].groupby("class_id").size().to_dict()
    assert valid == {"apple_pie": 4, "cheesecake": 4, "cheese_plate": 4, "waffles": 4}
    assert [c.id for c in prep.classes] == FOOD_CLASSES


def test_food101_duplicate_straddling_train_and_test_is_warned_and_kept(food):
    _, prep = food
    m = prep.manifest
    straddle = [w for w in prep.warnings if "straddle" in w]
    assert straddle == [
        "identical photos straddle the official splits, kept where the official split puts them: "
        f"{FOOD_DUP[0]} (train) = {FOOD_DUP[1]} (test)"
    ]
    assert split_of(m, image_id=FOOD_DUP[0]) == ["train"]
    assert split_of(m, image_id=FOOD_DUP[1]) == ["test"]
    d = summarize(prep)["duplicates"]
    assert (d["pairs"], d["across_splits"], d["across_classes"]) == (1, 1, 0)


def test_food101_straddling_duplicate_stays_in_train_for_every_seed(food, tmp_path):
    root, _ = food
    for seed in SEEDS:
        prep = prepare(root, tmp_path / "cache", SplitConfig(seed=seed), quiet=True)
        assert split_of(prep.manifest, image_id=FOOD_DUP[0]) == ["train"], seed


# ---------------------------------------------------------------- no leaks in a featkit-made split


def _png(arr: np.ndarray, **save) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG", **save)
    return buf.getvalue()


@pytest.fixture(scope="module")
def leaky(tmp_path_factory):
    """Class folders with identical bytes (also across classes) and identical pixels in different bytes."""
    root = make_folders(tmp_path_factory.mktemp("leaky") / "photos", per_class=12)
    same = (root / "class1" / "img0.jpg").read_bytes()
    write(root / "class1" / "copy_of_img0.jpg", same)
    write(root / "class10" / "also_img0.jpg", same)  # same photo under another class
    arr = np.random.default_rng(5).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "re-saved")
    write(root / "class2" / "px_a.png", _png(arr, compress_level=1))
    write(root / "class2" / "px_b.png", _png(arr, compress_level=9, pnginfo=info))
    return root


def test_identical_photos_share_a_split(leaky, tmp_path):
    sets = [{"class1/img0", "class1/copy_of_img0", "class10/also_img0"}, {"class2/px_a", "class2/px_b"}]
    moved = set()
    for seed in range(10):
        m = prepare(leaky, tmp_path / "cache", SplitConfig(seed=seed), quiet=True).manifest
        for ids in sets:
            rows = m[m["image_id"].isin(ids)]
            assert len(rows) == len(ids)
            assert rows["split"].nunique() == 1, (seed, rows[["image_id", "split"]].values.tolist())
            assert rows["group"].nunique() == 1
            moved.add(rows["split"].iat[0])
    px = m[m["image_id"].isin(sets[1])]
    assert px["sha1"].nunique() == 2 and px["pixel_hash"].nunique() == 1  # different bytes, same pixels
    assert moved >= {"train", "valid"}  # the groups do move between splits with the seed


def test_summary_reports_the_duplicates(leaky, tmp_path):
    s = summarize(prepare(leaky, tmp_path / "cache", quiet=True))
    d = s["duplicates"]
    assert (d["groups"], d["pairs"], d["across_splits"], d["across_classes"]) == (2, 4, 0, 1)
    assert "duplicates 4 pairs in 2 groups of identical photos (0 across splits, 1 across classes)" in format_summary(s)


# ---------------------------------------------------------------- determinism and fractions


@pytest.fixture(scope="module")
def forty(tmp_path_factory):
    return make_folders(tmp_path_factory.mktemp("forty") / "photos", per_class=40)


def test_same_inputs_give_a_byte_identical_manifest(forty, tmp_path):
    a = prepare(forty, tmp_path / "cache-a", SplitConfig.parse("70/20/10", seed=3), quiet=True)
    b = prepare(forty, tmp_path / "cache-b", SplitConfig.parse("70/20/10", seed=3), quiet=True)
    assert a.manifest_path != b.manifest_path
    assert a.manifest_path.read_bytes() == b.manifest_path.read_bytes()
    assert a.manifest_sha1 == b.manifest_sha1
    again = prepare(forty, tmp_path / "cache-a", SplitConfig.parse("70/20/10", seed=3), quiet=True)  # from the cache
    assert again.manifest.astype(str).equals(a.manifest.astype(str))


def test_different_seed_gives_a_different_split(forty, tmp_path):
    a = prepare(forty, tmp_path / "cache", SplitConfig(seed=0), quiet=True).manifest
    b = prepare(forty, tmp_path / "cache", SplitConfig(seed=1), quiet=True).manifest
    assert (a["path"] == b["path"]).all()
    assert (a["split"] != b["split"]).sum() > 20
    assert a.groupby("label")["split"].value_counts().equals(b.groupby("label")["split"].value_counts())


def test_fractions_are_respected_per_class(forty, tmp_path):
    for text, want in (("70/20/10", (28, 8, 4)), ("50/25/25", (20, 10, 10)), ("80/0/20", (32, 0, 8))):
        m = prepare(forty, tmp_path / "cache", SplitConfig.parse(text), quiet=True).manifest
        for label, rows in m.groupby("label"):
            got = tuple(int((rows["split"] == s).sum()) for s in ("train", "valid", "test"))
            assert got == want, (text, label, got)


def test_one_photo_class_stays_in_train_with_a_warning(tmp_path):
    root = tmp_path / "photos"
    make_folders(root, per_class=10)
    write(root / "lonely" / "only.jpg", photo_bytes(9898))
    write(root / "pair" / "a.jpg", photo_bytes(9899))
    write(root / "pair" / "b.jpg", photo_bytes(9900))
    for seed in SEEDS:
        prep = prepare(root, tmp_path / "cache", SplitConfig(seed=seed), quiet=True)
        assert split_of(prep.manifest, class_id="lonely") == ["train"]
        assert split_of(prep.manifest, class_id="pair") == ["train", "train"]
    assert (
        "class 'lonely' has one photo (or one set of identical photos): it cannot be stratified, so it stays in train"
    ) in prep.warnings
    assert "class 'pair' has only 2 photos: all stay in train, none in valid or test" in prep.warnings


@pytest.mark.parametrize("fractions", [(0.7, 0.2, 0.1), (0.34, 0.33, 0.33), (0.1, 0.45, 0.45), (0.5, 0.5, 0.0)])
def test_assign_keeps_a_training_photo_in_every_tiny_class(fractions):
    sizes = list(range(1, 15))
    groups, start = {}, 0
    for label, n in enumerate(sizes):
        groups[label] = list(range(start, start + n))
        start += n
    warnings: list[str] = []
    out = _assign(groups, fractions, np.random.default_rng(0), [f"c{i}" for i in sizes], warnings)
    assert sorted(out) == list(range(start))
    for label, n in enumerate(sizes):
        got = [out[g] for g in groups[label]]
        assert got.count("train") >= 1
        if n >= 5:  # large enough that rounding cannot swallow a part
            for s, f in zip(("valid", "test"), fractions[1:], strict=True):
                assert abs(got.count(s) - n * f) <= 1, (n, fractions, got)


def test_split_config_parse():
    c = SplitConfig.parse("70/20/10", seed=4)
    assert (c.train, c.valid, c.test, c.seed) == pytest.approx((0.7, 0.2, 0.1, 4))
    assert SplitConfig.parse("0.7/0.2/0.1") == SplitConfig.parse(" 70 / 20 / 10 ")
    assert SplitConfig.parse("0.7/0.2/0.1").key == SplitConfig().key == "70-20-10-s0"
    assert SplitConfig.parse("80/0/20").key == "80-0-20-s0"
    assert SplitConfig.parse("70.4/19.6/10").key != SplitConfig().key  # no reuse of another split's manifest


@pytest.mark.parametrize(
    "text",
    [
        "70/20",
        "70/20/10/0",
        "a/b/c",
        "",
        "70-20-10",
        "-10/60/50",
        "0/50/50",
        "nan/20/10",
        "inf/20/10",
        "0/0/0",
        "50/50/50",
        "7/2/1",
    ],
)  # parts that do not sum to 100 (or 1) are never rescaled
def test_bad_split_values_are_one_line_errors(text):
    with pytest.raises(FeatkitError) as e:
        SplitConfig.parse(text)
    msg = str(e.value)
    assert msg.startswith(f"--split {text!r} should be three numbers") and "\n" not in msg


@pytest.mark.parametrize(
    "kw",
    [
        {"train": 0.5, "valid": 0.2, "test": 0.2},
        {"train": math.nan, "valid": 0.0, "test": 0.0},
        {"seed": -1},
        {"seed": 1.5},
    ],
)
def test_bad_split_config_is_an_error(kw):
    with pytest.raises(FeatkitError):
        SplitConfig(**kw)


# ---------------------------------------------------------------- the real shared Food-101 zip

STRADDLING = {
    ("beet_salad/2595905", "beet_salad/2671983"),
    ("caprese_salad/763184", "caprese_salad/763201"),
    ("french_onion_soup/1741871", "french_onion_soup/1741875"),
    ("panna_cotta/2995960", "panna_cotta/3011399"),
    ("spaghetti_carbonara/1348593", "spaghetti_carbonara/1349091"),
    ("spaghetti_carbonara/501277", "spaghetti_carbonara/501296"),
    ("waffles/899285", "waffles/961486"),
}


@pytest.fixture(scope="module")
def real(food_zip, tmp_path_factory):
    prep = prepare(food_zip, tmp_path_factory.mktemp("real-cache"), quiet=True)
    return prep, summarize(prep)


@pytest.mark.slow
def test_real_food101_zip(real):
    prep, s = real
    assert (s["layout"], s["root"], s["classes"], s["photos"], s["photos_readable"]) == (
        "food101",
        "food-101",
        101,
        57_368,
        57_368,
    )
    assert s["official_split"] == {"train": 43_026, "test": 14_342}
    assert s["photos_per_class"] == {"min": 568, "median": 568.0, "max": 568}
    assert s["splits"]["test"] == 14_342 and s["splits"]["train"] + s["splits"]["valid"] == 43_026
    assert not s["unreadable"] and not s["ignored_files"]
    assert s["image_size"] == {"width": [64, 64], "height": [64, 64]}
    ids = [c["id"] for c in s["class_list"]]
    assert (ids[0], ids[16], ids[17], ids[100]) == ("apple_pie", "cheesecake", "cheese_plate", "waffles")
    assert s["class_list"][0]["name"] == "Apple pie"

    d = s["duplicates"]
    assert (d["groups"], d["pairs"], d["across_splits"], d["across_classes"]) == (17, 17, 7, 1)
    across_classes = [g for g in d["list"] if g["across_classes"]]
    assert {p["image_id"] for p in across_classes[0]["photos"]} == {"prime_rib/76271", "steak/97656"}
    straddle = [w for w in s["warnings"] if "straddle" in w]
    assert len(straddle) == 7 == len(s["warnings"])
    for a, b in STRADDLING:
        assert sum(a in w and b in w for w in straddle) == 1, (a, b)
    official = {it.image_id: it.official_split for it in prep.dataset.items}
    m = prep.manifest.set_index("image_id")
    for pair in STRADDLING:  # kept where the official lists put them
        assert [m.at[i, "split"] for i in pair] == [official[i] for i in pair]
    # every other duplicate group shares one split
    assert sum(g["across_splits"] for g in d["list"]) == 7
