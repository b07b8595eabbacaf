"""Layout detection (UECFOOD, Food-101, pre-split, class folders), sources (folder, zip, tar) and bad input.

The builders here make tiny synthetic datasets of real JPEG/PNG files; test_data_splits.py and test_data_cli.py
import them.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featkit.core.errors import FeatkitError
from featkit.data import prepare
from featkit.data.layouts import detect
from featkit.data.source import FolderSource, ZipSource, open_source
from featkit.data.summary import summarize

REPO_ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------- builders


def photo_bytes(seed: int, size: tuple[int, int] = (24, 20), fmt: str = "JPEG", **save) -> bytes:
    """A small photo of random content, different for every seed."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt, **save)
    return buf.getvalue()


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


UEC_NAMES = {
    1: "rice",
    2: "eels on rice",
    3: "pilaf",
    4: "chicken-'n'-egg on rice",
    5: "pork cutlet on rice",
    6: "beef curry",
    7: "sushi",
    8: "chicken rice",
    9: "fried rice",
    10: "tempura bowl",
    11: "bibimbap",
    12: "rice with egg",
}
UEC_MULTI = "9999"  # the photo filed under classes 3 and 7
UEC_BOXED = "5001"  # class 1: grey photo with a red box at x 8..20, y 4..12
UEC_BOX = (8, 4, 20, 12)


def make_uec(root: Path, per_class: int = 3) -> Path:
    """UECFOOD-like: category.txt, numbered class folders 1..12 with bb_info.txt, one multi-dish photo."""
    write(root / "category.txt", "id\tname\n" + "".join(f"{i}\t{n}\n" for i, n in UEC_NAMES.items()))
    multi = photo_bytes(999)
    for c in UEC_NAMES:
        d = root / str(c)
        lines = ["img x1 y1 x2 y2"]
        for k in range(per_class):
            pid = f"{c * 100 + k}"
            write(d / f"{pid}.jpg", photo_bytes(c * 100 + k))
            lines.append(f"{pid} 1 2 20 18")
        if c in (3, 7):
            write(d / f"{UEC_MULTI}.jpg", multi)
            lines.append(f"{UEC_MULTI} 0 0 10 10" if c == 3 else f"{UEC_MULTI} 10 5 24 20")
        if c == 1:
            arr = np.full((20, 24, 3), 128, np.uint8)
            arr[4:12, 8:20] = (255, 0, 0)
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, "PNG")
            write(d / f"{UEC_BOXED}.png", buf.getvalue())
            lines.append(f"{UEC_BOXED} " + " ".join(map(str, UEC_BOX)))
        write(d / "bb_info.txt", "\n".join(lines) + "\n")
    return root


# Official Food-101 order is not sorted: cheesecake before cheese_plate.
FOOD_CLASSES = ["apple_pie", "cheesecake", "cheese_plate", "waffles"]
FOOD_LABELS = ["Apple pie", "Cheesecake", "Cheese plate", "Waffles"]
FOOD_DUP = ("waffles/1002", "waffles/2001")  # same bytes, one in train and one in test


def make_food101(root: Path, train: int = 12, test: int = 4) -> Path:
    """Food-101-like: images/<class>/<id>.jpg and meta/ lists; one duplicate straddles train and test."""
    meta = root / "meta"
    write(meta / "classes.txt", "\n".join(FOOD_CLASSES) + "\n")
    write(meta / "labels.txt", "\n".join(FOOD_LABELS) + "\n")
    lists = {"train": [], "test": []}
    for ci, c in enumerate(FOOD_CLASSES):
        for k in range(train + test):
            split, pid = ("train", 1000 + k) if k < train else ("test", 2000 + k - train)
            key = f"{c}/{pid}"
            lists[split].append(key)
            seed = 10_000 + ci * 100 + k
            if key == FOOD_DUP[1]:
                seed = 10_000 + ci * 100 + 2  # the bytes of waffles/1002
            write(root / "images" / f"{key}.jpg", photo_bytes(seed))
    for split, keys in lists.items():
        write(meta / f"{split}.txt", "\n".join(keys) + "\n")
    return root


FOLDER_CLASSES = ["class1", "class2", "class10", "Class11"]


def make_folders(root: Path, per_class: int = 10, classes=FOLDER_CLASSES, seed0: int = 0) -> Path:
    for ci, c in enumerate(classes):
        for k in range(per_class):
            write(root / c / f"img{k}.jpg", photo_bytes(seed0 + 50_000 + ci * 1000 + k))
    return root


def make_presplit(root: Path) -> Path:
    counts = {"train": 6, "valid": 2, "test": 2}
    for si, (s, n) in enumerate(counts.items()):
        for ci, c in enumerate(["dog10", "dog2", "cat"]):
            for k in range(n):
                write(root / s / c / f"{k}.jpg", photo_bytes(70_000 + si * 1000 + ci * 100 + k))
    return root


def zip_dir(src: Path, dest: Path, arc_root: str | None = None, sep: str = "/") -> Path:
    """Zip `src`'s files under `arc_root/` (or at the top), with directory entries, using `sep` in names."""
    with zipfile.ZipFile(dest, "w") as z:
        for dirpath, dirnames, filenames in sorted(os.walk(src)):
            dirnames.sort()
            rel_dir = Path(dirpath).relative_to(src)
            for name in sorted(filenames):
                parts = ([arc_root] if arc_root else []) + list(rel_dir.parts) + [name]
                z.writestr(sep.join(parts), (Path(dirpath) / name).read_bytes())
            for name in dirnames:
                parts = ([arc_root] if arc_root else []) + list(rel_dir.parts) + [name]
                z.writestr(zipfile.ZipInfo(sep.join(parts) + "/"), b"")
    return dest


def tar_dir(src: Path, dest: Path, arc_root: str) -> Path:
    with tarfile.open(dest, "w:gz") as t:
        t.add(src, arcname=arc_root)
    return dest


def without_paths(m):
    return m.drop(columns=["path"]).reset_index(drop=True)


# ---------------------------------------------------------------- UECFOOD


@pytest.fixture(scope="module")
def uec_dir(tmp_path_factory) -> Path:
    return make_uec(tmp_path_factory.mktemp("uec") / "UECFOOD12")


def test_uec_detected_with_numeric_class_order_and_names(uec_dir):
    ds = detect(open_source(uec_dir))
    assert ds.layout == "uec"
    assert [c.id for c in ds.classes] == [str(i) for i in range(1, 13)]  # 1,2,...,10,11,12 not 1,10,11,12,2
    assert [c.name for c in ds.classes] == list(UEC_NAMES.values())
    assert ds.classes[11].name == "rice with egg"
    multi = [it for it in ds.items if it.image_id == UEC_MULTI]
    assert sorted(ds.classes[it.label].id for it in multi) == ["3", "7"]
    assert {it.box for it in multi} == {(0, 0, 10, 10), (10, 5, 24, 20)}  # each class folder's own box
    boxed = next(it for it in ds.items if it.image_id == UEC_BOXED)
    assert boxed.box == UEC_BOX
    assert not ds.warnings and not ds.ignored


def test_uec_box_crop_gives_the_box_content(uec_dir):
    from featkit.data.images import decode_image

    prep = prepare(uec_dir, uec_dir.parent / "cache-box", quiet=True)
    row = prep.manifest[prep.manifest["image_id"] == UEC_BOXED].iloc[0]
    box = tuple(int(row[k]) for k in ("x1", "y1", "x2", "y2"))
    assert box == UEC_BOX
    data = prep.read(row["path"])
    crop = decode_image(data, 16, box=box)
    assert crop.shape == (16, 16, 3)
    assert (crop[..., 0] > 240).all() and (crop[..., 1:] < 15).all()  # all red: the box only
    whole = decode_image(data, 16)
    assert (whole[..., 1] > 100).mean() > 0.3  # the grey around the box is there without it


def test_uec_category_missing_is_an_error_naming_it(tmp_path):
    root = make_uec(tmp_path / "uec", per_class=1)
    (root / "category.txt").unlink()
    with pytest.raises(FeatkitError, match=r"category\.txt is missing") as e:
        detect(open_source(root))
    assert str(root / "category.txt") in str(e.value) and "\n" not in str(e.value)


def test_uec_category_malformed_names_file_and_line(tmp_path):
    root = make_uec(tmp_path / "uec", per_class=1)
    text = (root / "category.txt").read_text().splitlines()
    text.insert(1, "")  # a blank line: the reported number is the line in the file
    text[4] = "three\tpilaf"
    (root / "category.txt").write_text("\n".join(text) + "\n")
    with pytest.raises(FeatkitError, match=r"category\.txt line 5 is malformed \('three\\tpilaf'\)") as e:
        detect(open_source(root))
    assert str(root / "category.txt") in str(e.value)


def test_uec_category_without_header_or_with_a_repeated_id(tmp_path):
    root = make_uec(tmp_path / "uec", per_class=1)
    cat = root / "category.txt"
    lines = cat.read_text().splitlines()
    cat.write_text("\n".join(lines[1:]) + "\n")
    with pytest.raises(FeatkitError, match=r"category\.txt is malformed: the first line should be the header"):
        detect(open_source(root))
    cat.write_text("\n".join(lines + ["3\tpilaf again"]) + "\n")
    with pytest.raises(FeatkitError, match=r"category\.txt line 14 repeats class id 3"):
        detect(open_source(root))


def test_uec_bad_bb_info_lines_are_counted_not_kept(tmp_path):
    root = make_uec(tmp_path / "uec", per_class=2)
    bb = root / "2" / "bb_info.txt"
    bb.write_text("img x1 y1 x2 y2\n200 1 2\n201 5 5 3 3\n")  # too short; x2 < x1
    ds = detect(open_source(root))
    items = {it.image_id: it for it in ds.items if ds.classes[it.label].id == "2"}
    assert items["200"].box is None and items["201"].box is None
    assert any("bb_info.txt: 2 malformed lines" in w for w in ds.warnings)
    prepare(root, tmp_path / "cache", quiet=True)  # a short box line once broke the manifest


def test_uec_empty_class_folder_and_stray_files(tmp_path):
    root = make_uec(tmp_path / "uec", per_class=2)
    shutil.rmtree(root / "12")
    (root / "12").mkdir()
    write(root / "5" / "notes.txt", "hello")
    write(root / "5" / "extra" / "555.jpg", photo_bytes(555))
    ds = detect(open_source(root))
    assert any(w.startswith("class folder") and w.endswith("12 has no photos") for w in ds.warnings)
    why = dict(ds.ignored)
    assert why["5/notes.txt"] == "not an image file"
    assert why["5/extra/555.jpg"] == "in a subfolder of a class folder"


# ---------------------------------------------------------------- Food-101


def test_food101_official_class_order_names_and_split(tmp_path):
    root = make_food101(tmp_path / "food-101")
    ds = detect(open_source(root))
    assert ds.layout == "food101"
    assert [c.id for c in ds.classes] == FOOD_CLASSES  # not sorted: cheesecake (1) before cheese_plate (2)
    assert [c.name for c in ds.classes] == FOOD_LABELS
    split = {it.image_id: it.official_split for it in ds.items}
    assert split["cheesecake/1000"] == "train" and split["cheesecake/2000"] == "test"
    assert sum(s == "test" for s in split.values()) == 4 * 4
    assert not ds.warnings


def test_food101_missing_and_unlisted_photos_are_reported(tmp_path):
    root = make_food101(tmp_path / "food-101")
    (root / "images" / "apple_pie" / "1000.jpg").unlink()
    write(root / "images" / "apple_pie" / "3000.jpg", photo_bytes(3000))
    write(root / "images" / "apple_pie" / "readme.txt", "x")
    write(root / "images" / "sushi" / "1.jpg", photo_bytes(3001))
    ds = detect(open_source(root))
    assert "1 photos listed in meta/train.txt are not in images/: skipped" in ds.warnings
    assert "1 photos in images/ are in neither meta/train.txt nor meta/test.txt: put in train" in ds.warnings
    why = dict(ds.ignored)
    assert why["images/apple_pie/readme.txt"] == "not an image file"
    assert why["images/sushi/1.jpg"] == "class folder not in meta/classes.txt"


def test_food101_missing_test_list_is_an_error(tmp_path):
    root = make_food101(tmp_path / "food-101", train=2, test=1)
    (root / "meta" / "test.txt").unlink()
    with pytest.raises(FeatkitError, match=r"meta/test\.txt is missing"):
        detect(open_source(root))


# ---------------------------------------------------------------- class folders and pre-split


def test_folders_natural_class_order_and_ids(tmp_path):
    root = make_folders(tmp_path / "photos", per_class=2)
    ds = detect(open_source(root))
    assert ds.layout == "folders"
    assert [c.name for c in ds.classes] == ["class1", "class2", "class10", "Class11"]
    assert {it.image_id for it in ds.items} >= {"class2/img0", "class10/img1"}
    assert not ds.has_official_split


def test_folders_same_stem_in_two_formats_keeps_ids_apart(tmp_path):
    root = make_folders(tmp_path / "photos", per_class=2)
    write(root / "class1" / "img0.png", photo_bytes(123, fmt="PNG"))
    prep = prepare(root, tmp_path / "cache", quiet=True)
    ids = prep.manifest["image_id"].tolist()
    assert len(ids) == len(set(ids)) == 9
    assert {"class1/img0.jpg", "class1/img0.png"} <= set(ids)
    assert prep.manifest["group"].nunique() == 9


def test_presplit_keeps_its_splits_and_natural_order(tmp_path):
    root = make_presplit(tmp_path / "ps")
    prep = prepare(root, tmp_path / "cache", quiet=True)
    assert prep.dataset.layout == "presplit"
    assert [c.name for c in prep.classes] == ["cat", "dog2", "dog10"]
    m = prep.manifest
    assert (m["split"] == m["path"].str.split("/").str[0]).all()
    assert m["split"].value_counts().to_dict() == {"train": 18, "valid": 6, "test": 6}
    assert m["image_id"].is_unique  # train/cat/0 and test/cat/0 are different photos
    assert not [w for w in prep.warnings if "one photo" in w or "only" in w]


def test_presplit_without_valid_carves_it_from_train(tmp_path):
    root = make_presplit(tmp_path / "ps")
    shutil.rmtree(root / "valid")
    prep = prepare(root, tmp_path / "cache", quiet=True)
    m = prep.manifest
    assert set(m.loc[m["path"].str.startswith("test/"), "split"]) == {"test"}
    train_part = m[m["path"].str.startswith("train/")]
    assert set(train_part["split"]) == {"train", "valid"}
    assert (train_part.groupby("label")["split"].apply(lambda s: (s == "valid").sum()) >= 1).all()


def test_presplit_class_missing_from_train_is_warned(tmp_path):
    root = make_presplit(tmp_path / "ps")
    write(root / "test" / "fox" / "0.jpg", photo_bytes(4242))
    (root / "valid" / "empty").mkdir()
    ds = detect(open_source(root))
    assert "class fox has no photos in train/: a model cannot learn it" in ds.warnings
    assert any("empty has no photos: ignored" in w for w in ds.warnings)


# ---------------------------------------------------------------- sources: zip, tar, odd paths


def test_zip_is_read_in_place_with_the_same_manifest(tmp_path):
    root = make_folders(tmp_path / "photos", per_class=4)
    z = zip_dir(root, tmp_path / "photos.zip", arc_root="photos")
    cache = tmp_path / "cache"
    prep_zip = prepare(z, cache, quiet=True)
    assert isinstance(prep_zip.dataset.source, ZipSource)
    assert prep_zip.dataset.root == "photos"
    assert not (cache / "unpacked").exists()
    prep_dir = prepare(root, tmp_path / "cache2", quiet=True)
    assert (prep_zip.manifest["path"] == "photos/" + prep_dir.manifest["path"]).all()
    assert without_paths(prep_zip.manifest).equals(without_paths(prep_dir.manifest))
    first = prep_zip.manifest["path"].iat[0]
    assert prep_zip.read(first) == (root / first.split("/", 1)[1]).read_bytes()


def test_tar_gz_is_unpacked_once(tmp_path, monkeypatch):
    root = make_uec(tmp_path / "uec", per_class=2)
    t = tar_dir(root, tmp_path / "uec.tar.gz", "UECFOOD12")
    cache = tmp_path / "cache"
    prep = prepare(t, cache, quiet=True)
    unpacked = list((cache / "unpacked").iterdir())
    assert len(unpacked) == 1 and isinstance(prep.dataset.source, FolderSource)
    assert prep.dataset.layout == "uec" and prep.dataset.root == "UECFOOD12"

    def no_unpacking(*a, **k):
        raise AssertionError("the tar was unpacked a second time")

    monkeypatch.setattr(tarfile, "open", no_unpacking)
    again = prepare(t, cache, quiet=True)
    assert again.manifest.equals(prep.manifest)
    monkeypatch.undo()
    prep_dir = prepare(root, tmp_path / "cache2", quiet=True)
    assert (prep.manifest["path"] == "UECFOOD12/" + prep_dir.manifest["path"]).all()
    assert without_paths(prep.manifest).equals(without_paths(prep_dir.manifest))
    assert summarize(prep)["path"] == str(t)  # the archive, not the cache folder it was unpacked to


def test_zip_with_windows_backslash_names(tmp_path):
    root = make_presplit(tmp_path / "ps")
    z = zip_dir(root, tmp_path / "ps.zip", arc_root="ps", sep="\\")
    with zipfile.ZipFile(z) as zf:
        assert any("\\" in n for n in zf.namelist())
    prep = prepare(z, tmp_path / "cache", quiet=True)
    assert prep.dataset.layout == "presplit" and prep.dataset.root == "ps"
    assert len(prep.manifest) == 30
    assert prep.read(prep.manifest["path"].iat[0])[:2] == b"\xff\xd8"


def test_macos_clutter_does_not_hide_the_layout(tmp_path):
    root = make_folders(tmp_path / "photos", per_class=2)
    z = zip_dir(root, tmp_path / "photos.zip", arc_root="photos")
    with zipfile.ZipFile(z, "a") as zf:
        zf.writestr("__MACOSX/photos/class1/._img0.jpg", b"\x00\x05\x16\x07")
        zf.writestr("photos/class1/.DS_Store", b"\x00\x00")
        zf.writestr("photos/.ipynb_checkpoints/x.jpg", photo_bytes(77))
    prep = prepare(z, tmp_path / "cache", quiet=True)
    assert prep.dataset.layout == "folders" and prep.dataset.root == "photos"
    assert [c.name for c in prep.classes] == ["class1", "class2", "class10", "Class11"]
    assert len(prep.manifest) == 8
    assert {p for p, _ in prep.dataset.ignored} == {
        "__MACOSX/photos/class1/._img0.jpg",
        "photos/class1/.DS_Store",
        "photos/.ipynb_checkpoints/x.jpg",
    }


# ---------------------------------------------------------------- bad input


def test_path_that_does_not_exist(tmp_path):
    with pytest.raises(FeatkitError, match=r"nowhere does not exist: give a dataset folder"):
        prepare(tmp_path / "nowhere", tmp_path / "cache", quiet=True)


def test_zip_without_a_layout_names_the_zip(tmp_path):
    z = tmp_path / "junk.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("readme.txt", "nothing here")
        zf.writestr("docs/a.txt", "nor here")
    with pytest.raises(FeatkitError, match=r"junk\.zip: no dataset layout recognised") as e:
        prepare(z, tmp_path / "cache", quiet=True)
    assert str(z) in str(e.value) and "\n" not in str(e.value)


def test_tar_without_a_layout_names_the_tar(tmp_path):
    d = tmp_path / "docs"
    write(d / "a.txt", "text")
    t = tar_dir(d, tmp_path / "docs.tar.gz", "docs")
    with pytest.raises(FeatkitError, match=r"docs\.tar\.gz: no dataset layout recognised"):
        prepare(t, tmp_path / "cache", quiet=True)


def test_not_a_zip_and_unknown_file_kind(tmp_path):
    fake = write(tmp_path / "data.zip", "not a zip")
    with pytest.raises(FeatkitError, match=r"data\.zip is not a readable zip"):
        prepare(fake, tmp_path / "cache", quiet=True)
    other = write(tmp_path / "data.rar", "x")
    with pytest.raises(FeatkitError, match=r"data\.rar is neither a folder nor"):
        prepare(other, tmp_path / "cache", quiet=True)


def test_empty_class_folder_is_warned(tmp_path):
    root = make_folders(tmp_path / "photos", per_class=3)
    (root / "class7").mkdir()
    prep = prepare(root, tmp_path / "cache", quiet=True)
    assert [c.name for c in prep.classes] == ["class1", "class2", "class10", "Class11"]
    assert f"class folder {root / 'class7'} has no photos: ignored" in prep.warnings
    # the same from a zip, where the empty folder is only a directory entry
    prep_zip = prepare(zip_dir(root, tmp_path / "p.zip"), tmp_path / "cache", quiet=True)
    assert any(w.endswith(":class7 has no photos: ignored") for w in prep_zip.warnings)


def test_non_image_files_are_counted_not_dropped(tmp_path):
    root = make_folders(tmp_path / "photos", per_class=3)
    write(root / "class2" / "notes.txt", "a note")
    write(root / "class2" / "fake.jpg", "this is text, not a JPEG")
    write(root / "readme.md", "# photos")
    prep = prepare(root, tmp_path / "cache", quiet=True)
    s = summarize(prep)
    assert {(f["path"], f["why"]) for f in s["ignored_files"]} == {
        ("class2/notes.txt", "not an image file"),
        ("readme.md", "not inside a class folder"),
    }
    assert [u["path"] for u in s["unreadable"]] == ["class2/fake.jpg"]
    assert "class2/fake.jpg" not in set(prep.manifest["path"])
    assert s["photos"] == 13 and s["photos_readable"] == 12


def test_odd_file_names_survive_the_manifest_round_trip(tmp_path):
    root = tmp_path / "ds"
    names = [
        "class 1/photo, with comma.jpg",
        "クラス/写真.jpg",
        'q"uote/a "b".jpg',
        "semi;colon/x#1.JPG",
        "nl/line\nbreak.jpg",
        "class 1/0001.jpg",
        "007/0007.jpeg",
    ]
    for i, n in enumerate(names):
        write(root / n, photo_bytes(900 + i))
    a = prepare(root, tmp_path / "cache", quiet=True)
    b = prepare(root, tmp_path / "cache", quiet=True)  # read back from the CSV
    assert sorted(a.manifest["path"]) == sorted(names)
    assert b.manifest.astype(str).equals(a.manifest.astype(str))
    assert "007" in set(b.manifest["class_id"]) and "007/0007" in set(b.manifest["image_id"])
    z = prepare(zip_dir(root, tmp_path / "ds.zip"), tmp_path / "cache", quiet=True)
    assert z.manifest.astype(str).equals(a.manifest.astype(str))  # no archive root: the same paths


def test_uec_files_edited_on_windows(tmp_path):
    root = make_uec(tmp_path / "uec", per_class=1)
    for f in [root / "category.txt", *root.glob("*/bb_info.txt")]:
        f.write_bytes(b"\xef\xbb\xbf" + f.read_bytes().replace(b"\n", b"\r\n"))  # BOM and CRLF
    ds = detect(open_source(root))
    assert [c.name for c in ds.classes] == list(UEC_NAMES.values())
    assert next(it for it in ds.items if it.image_id == UEC_BOXED).box == UEC_BOX
    assert not ds.warnings


def test_cached_scan_missing_a_photo_is_completed(tmp_path):
    import pandas as pd

    root = make_folders(tmp_path / "photos", per_class=3)
    prep = prepare(root, tmp_path / "cache", quiet=True)
    scan_csv = prep.dir / "scan.csv"
    full = pd.read_csv(scan_csv, keep_default_na=False)
    full[full["path"] != "class2/img1.jpg"].to_csv(scan_csv, index=False)  # as an older featkit might have left it
    prep.manifest_path.unlink()
    again = prepare(root, tmp_path / "cache", quiet=True)
    assert len(again.scan) == 12 and "class2/img1.jpg" in set(again.manifest["path"])
    assert pd.read_csv(scan_csv, keep_default_na=False).equals(full)


def test_opening_a_dataset_folder_writes_nothing(uec_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert detect(open_source(uec_dir)).layout == "uec"
    assert list(tmp_path.iterdir()) == []  # no cache/ made in the working directory just to read photos
    with pytest.raises(FeatkitError, match="does not exist"):
        prepare(tmp_path / "missing")
    assert list(tmp_path.iterdir()) == []  # nor for a dataset that is not there
