"""Dataset layouts, detected from the file listing of a folder or archive.

  food101   images/<class>/<id>.jpg with meta/classes.txt (official class order), meta/labels.txt,
            meta/train.txt and meta/test.txt (official split)
  uec       UECFOOD-100/256: numbered class folders, category.txt (id<TAB>name, header line), bb_info.txt per
            folder (img x1 y1 x2 y2); the same photo may be filed under several classes (multi-dish photos)
  presplit  train/ valid|val|validation/ test/ folders, each holding class folders
  folders   plain class folders <class>/*.jpg

Labels are indices into one ordered class list; the order is the official one where the dataset has it,
else the natural sort of the class folder names (class2 before class10).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from featkit.core.errors import FeatkitError
from featkit.core.schema import ClassEntry
from featkit.data.source import Source

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
SPLIT_DIRS = {"train": "train", "valid": "valid", "val": "valid", "validation": "valid", "test": "test"}
LAYOUTS = ("food101", "uec", "presplit", "folders")


ClassInfo = ClassEntry  # one record for a class, owned by featkit.core.schema


@dataclass
class Item:
    path: str  # in the source (folder or archive), POSIX
    label: int
    image_id: str
    official_split: str | None = None
    box: tuple[int, int, int, int] | None = None


@dataclass
class Dataset:
    source: Source
    root: str
    layout: str
    classes: list[ClassInfo]
    items: list[Item]
    ignored: list[tuple[str, str]] = field(default_factory=list)  # (path, why), reported in the summary
    warnings: list[str] = field(default_factory=list)

    @property
    def has_official_split(self) -> bool:
        return any(it.official_split for it in self.items)

    def class_dicts(self) -> list[dict]:
        return [c.to_dict() for c in self.classes]


def natural_key(text: str) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


def is_image(path: str) -> bool:
    name = path.rpartition("/")[2]
    dot = name.rfind(".")
    return dot > 0 and name[dot:].lower() in IMAGE_EXTS  # as PurePosixPath(path).suffix, without its cost


JUNK_NAMES = {"__MACOSX", "Thumbs.db", "desktop.ini"}


def is_junk(path: str) -> bool:
    """Operating-system clutter: macOS resource forks (__MACOSX/, ._name), hidden files and folders, Thumbs.db."""
    if "/." not in "/" + path and not any(j in path for j in JUNK_NAMES):
        return False
    return any(p in JUNK_NAMES or p.startswith(".") for p in path.split("/"))


class _Tree:
    """Directory view of a flat file listing."""

    def __init__(self, files: list[str], dirs: Iterable[str] = ()):
        self.files = files
        self.dirs: dict[str, set[str]] = defaultdict(set)  # dir -> child dir names
        self.dir_files: dict[str, list[str]] = defaultdict(list)  # dir -> file names directly inside
        for f in files:
            parts = f.split("/")
            for i in range(len(parts) - 1):
                self.dirs["/".join(parts[:i])].add(parts[i])
            self.dir_files["/".join(parts[:-1])].append(parts[-1])
        for d in dirs:  # folders without files (empty class folders)
            parts = d.split("/")
            for i in range(len(parts)):
                self.dirs["/".join(parts[:i])].add(parts[i])

    def join(self, *parts: str) -> str:
        return "/".join(p for p in parts if p)

    def has_file(self, d: str, rel: str) -> bool:
        path = self.join(d, rel)
        head, _, name = path.rpartition("/")
        return name in self.dir_files.get(head, ())

    def subdirs(self, d: str) -> list[str]:
        return sorted(self.dirs.get(d, ()), key=natural_key)

    def files_under(self, d: str) -> list[str]:
        prefix = d + "/" if d else ""
        return [f for f in self.files if f.startswith(prefix)]


def detect(source: Source) -> Dataset:
    files: list[str] = []
    junk: list[str] = []
    for f in source.list_files():
        (junk if is_junk(f) else files).append(f)
    tree = _Tree(files, [d for d in source.list_dirs() if not is_junk(d)])
    root = ""
    for _ in range(4):
        layout = _match(tree, root)
        if layout:
            ds = _PARSERS[layout](source, tree, root)
            ds.ignored.extend((f, "hidden or operating-system file, not a photo") for f in junk)
            skipped = list(getattr(source, "skipped", []))
            ds.ignored.extend(skipped)
            if skipped:
                ds.warnings.append(
                    f"{len(skipped)} entries not read (first: {skipped[0][0]}: {skipped[0][1]}); "
                    "`featkit data summary --json` lists them under ignored_files"
                )
            return ds
        subs = tree.subdirs(root)
        if len(subs) == 1 and not any(is_image(f) for f in tree.dir_files.get(root, ())):
            root = tree.join(root, subs[0])
            continue
        break
    raise FeatkitError(
        f"{source.origin}: no dataset layout recognised. Expected Food-101 (images/ + meta/classes.txt), "
        "UECFOOD (numbered folders + category.txt), train/ valid/ test/ folders, or one folder of photos per class."
    )


def _match(tree: _Tree, d: str) -> str | None:
    subs = set(tree.subdirs(d))
    if tree.has_file(d, "meta/classes.txt") and "images" in subs:
        return "food101"
    numeric = [s for s in subs if s.isdigit()]
    if tree.has_file(d, "category.txt") or (
        numeric and any(tree.has_file(tree.join(d, s), "bb_info.txt") for s in numeric)
    ):
        return "uec"
    if "train" in subs and subs & {"test", "valid", "val", "validation"}:
        return "presplit"
    if any(is_image(f) for s in subs for f in tree.dir_files.get(tree.join(d, s), ())):
        return "folders"
    return None


def _numbered_lines(source: Source, rel: str) -> list[tuple[int, str]]:
    """(line number in the file, stripped text) of each non-blank line."""
    try:
        text = source.read(rel).decode("utf-8-sig")
    except KeyError:
        raise FeatkitError(
            f"{source.display(rel)} is missing: restore it from the dataset's official archive."
        ) from None
    except UnicodeDecodeError:
        raise FeatkitError(
            f"{source.display(rel)} is not UTF-8 text: restore it from the dataset's official archive."
        ) from None
    return [(n, ln.strip()) for n, ln in enumerate(text.splitlines(), start=1) if ln.strip()]


def _read_lines(source: Source, rel: str) -> list[str]:
    return [ln for _, ln in _numbered_lines(source, rel)]


def _parse_food101(source: Source, tree: _Tree, root: str) -> Dataset:
    meta = tree.join(root, "meta")
    class_ids = _read_lines(source, f"{meta}/classes.txt")
    if len(set(class_ids)) != len(class_ids):
        raise FeatkitError(f"{source.display(meta + '/classes.txt')} lists a class twice: restore the official file.")
    names = class_ids
    if tree.has_file(meta, "labels.txt"):
        labels = _read_lines(source, f"{meta}/labels.txt")
        if len(labels) != len(class_ids):
            raise FeatkitError(
                f"{source.display(meta + '/labels.txt')} has {len(labels)} names for {len(class_ids)} classes in "
                "classes.txt: restore the official files."
            )
        names = labels
    classes = [ClassInfo(i, c, n) for i, (c, n) in enumerate(zip(class_ids, names, strict=True))]
    index = {c: i for i, c in enumerate(class_ids)}
    images = tree.join(root, "images")
    on_disk: dict[str, str] = {}
    ds = Dataset(source, root, "food101", classes, [])
    for f in tree.files_under(images):
        rel = f[len(images) + 1 :]
        if not is_image(f):
            ds.ignored.append((f, "not an image file"))
            continue
        key = rel.rsplit(".", 1)[0]
        if key.split("/")[0] not in index:
            ds.ignored.append((f, "class folder not in meta/classes.txt"))
            continue
        if key in on_disk:
            ds.ignored.append((f, f"same image id {key} as {on_disk[key]}"))
            continue
        on_disk[key] = f
    listed: dict[str, str] = {}
    for split in ("train", "test"):
        if not tree.has_file(meta, f"{split}.txt"):
            raise FeatkitError(
                f"{source.display(meta + '/' + split + '.txt')} is missing: restore it from the official archive."
            )
        missing = 0
        for key in _read_lines(source, f"{meta}/{split}.txt"):
            if key in listed:
                ds.warnings.append(
                    f"{key} is listed in both meta/{listed[key]}.txt and meta/{split}.txt: kept in {listed[key]}"
                )
                continue
            if key not in on_disk:
                missing += 1
                continue
            listed[key] = split
        if missing:
            ds.warnings.append(f"{missing} photos listed in meta/{split}.txt are not in images/: skipped")
    unlisted = 0
    for key, f in sorted(on_disk.items()):
        split = listed.get(key, "")
        if not split:
            unlisted += 1
            split = "train"
        ds.items.append(Item(f, index[key.split("/")[0]], key, split))
    if unlisted:
        ds.warnings.append(
            f"{unlisted} photos in images/ are in neither meta/train.txt nor meta/test.txt: put in train"
        )
    have = {it.label for it in ds.items}
    ds.warnings.extend(
        f"class {c.id} ({c.name}) in meta/classes.txt has no photos in {source.display(images + '/' + c.id)}"
        for c in classes
        if c.index not in have
    )
    return ds


def _parse_uec(source: Source, tree: _Tree, root: str) -> Dataset:
    cat = tree.join(root, "category.txt")
    if not tree.has_file(root, "category.txt"):
        raise FeatkitError(
            f"{source.display(cat)} is missing: UECFOOD needs it (a header line, then id<TAB>name per class); "
            "restore it from the official zip."
        )
    lines = _numbered_lines(source, cat)
    if not lines or lines[0][1].split()[0].lower() != "id":
        raise FeatkitError(
            f"{source.display(cat)} is malformed: the first line should be the header 'id<TAB>name'; restore the "
            "official file."
        )
    by_id: dict[int, str] = {}
    for n, ln in lines[1:]:
        parts = ln.split("\t", 1) if "\t" in ln else ln.split(None, 1)
        if len(parts) != 2 or not parts[0].strip().isdigit() or not parts[1].strip():
            raise FeatkitError(
                f"{source.display(cat)} line {n} is malformed ({ln!r}): expected 'id<TAB>name'; fix or restore the "
                "official file."
            )
        cid = int(parts[0])
        if cid in by_id:
            raise FeatkitError(
                f"{source.display(cat)} line {n} repeats class id {cid}: each id should appear once; fix or restore "
                "the official file."
            )
        by_id[cid] = parts[1].strip()
    if not by_id:
        raise FeatkitError(f"{source.display(cat)} lists no classes after its header: restore the official file.")
    classes = [ClassInfo(i, str(cid), by_id[cid]) for i, cid in enumerate(sorted(by_id))]
    index = {c.id: c.index for c in classes}
    ds = Dataset(source, root, "uec", classes, [])
    for sub in tree.subdirs(root):
        d = tree.join(root, sub)
        if sub not in index:
            for f in tree.files_under(d):
                ds.ignored.append((f, f"folder {sub} is not in category.txt"))
            continue
        names = sorted(tree.dir_files.get(d, ()), key=natural_key)
        photos = [n for n in names if is_image(n)]
        if not photos:
            ds.warnings.append(f"class folder {source.display(d)} has no photos")
        boxes = _read_bb_info(source, tree, d, ds) if photos else {}
        seen: dict[str, str] = {}
        for name in names:
            f = tree.join(d, name)
            if name == "bb_info.txt":
                continue
            if not is_image(name):
                ds.ignored.append((f, "not an image file"))
                continue
            stem = name.rsplit(".", 1)[0]
            if stem in seen:
                ds.ignored.append((f, f"same image id {stem} as {seen[stem]}"))
                continue
            seen[stem] = f
            ds.items.append(Item(f, index[sub], stem, None, boxes.get(stem)))
        ds.ignored.extend(
            (f, "in a subfolder of a class folder") for f in tree.files_under(d) if f.count("/") > d.count("/") + 1
        )
    for c in classes:
        if c.id not in tree.dirs.get(root, ()):
            ds.warnings.append(
                f"class {c.id} ({c.name}) in category.txt has no folder {source.display(tree.join(root, c.id))}"
            )
    return ds


def _read_bb_info(source: Source, tree: _Tree, d: str, ds: Dataset) -> dict[str, tuple[int, int, int, int]]:
    if not tree.has_file(d, "bb_info.txt"):
        ds.warnings.append(
            f"{source.display(d + '/bb_info.txt')} is missing: photos of that class cannot be cropped to their box"
        )
        return {}
    rel = d + "/bb_info.txt"
    lines = _read_lines(source, rel)
    boxes: dict[str, tuple[int, int, int, int]] = {}
    bad = 0
    for ln in lines[1:] if lines and lines[0].split()[0].lower() == "img" else lines:
        parts = ln.split()
        try:
            if len(parts) < 5:
                raise ValueError
            x1, y1, x2, y2 = (int(float(v)) for v in parts[1:5])
            if x2 <= x1 or y2 <= y1:
                raise ValueError
        except (ValueError, OverflowError):
            bad += 1
            continue
        boxes[parts[0]] = (x1, y1, x2, y2)
    if bad:
        ds.warnings.append(
            f"{source.display(rel)}: {bad} malformed lines (expected 'img x1 y1 x2 y2' with x1 < x2, y1 < y2) ignored: "
            "those photos are not cropped"
        )
    return boxes


def _class_folder_items(
    tree: _Tree,
    ds: Dataset,
    d: str,
    class_dirs: list[str],
    split: str | None,
    index: dict[str, int],
    id_prefix: str = "",
) -> None:
    """Items of the class folders `class_dirs` under `d`; image ids are <id_prefix><class>/<name without extension>."""
    for c in class_dirs:
        cd = tree.join(d, c)
        _refuse_nested(tree, ds, cd)
        photos = []
        for f in tree.files_under(cd):
            if is_image(f):
                photos.append(f)
            else:
                ds.ignored.append((f, "not an image file"))
        stems = [f[len(cd) + 1 :].rsplit(".", 1)[0] for f in photos]
        clash = {k for k, n in Counter(stems).items() if n > 1}  # a.jpg and a.png: keep the extension in both ids
        for f, key in zip(photos, stems, strict=True):
            ds.items.append(Item(f, index[c], f"{id_prefix}{c}/{f[len(cd) + 1 :] if key in clash else key}", split))
        if not photos:
            ds.warnings.append(f"class folder {ds.source.display(cd)} has no photos: ignored")


def _refuse_nested(tree: _Tree, ds: Dataset, class_dir: str) -> None:
    """A class folder whose sub-folders hold photos is either a dataset one level down (`top/ds/a`, `top/ds/b`
    beside `top/extras/`) or nested classes: merging them into one class in silence would be wrong either way."""
    nested = [s for s in tree.subdirs(class_dir) if any(is_image(f) for f in tree.files_under(tree.join(class_dir, s)))]
    if nested:
        shown = ", ".join(nested[:4]) + (", ..." if len(nested) > 4 else "")
        raise FeatkitError(
            f"{ds.source.display(class_dir)} holds sub-folders of photos ({shown}): featkit reads one folder of photos "
            f"per class and will not merge them into one class; if those are the classes, give "
            f"{ds.source.display(class_dir)} as the dataset, else move the photos up or the other folders out."
        )


def _loose_files(tree: _Tree, ds: Dataset, d: str) -> None:
    for name in tree.dir_files.get(d, ()):
        ds.ignored.append((tree.join(d, name), "not inside a class folder"))


def _classes_with_photos(tree: _Tree, dirs: list[str]) -> list[str]:
    names = {c for d in dirs for c in tree.subdirs(d) if any(is_image(f) for f in tree.files_under(tree.join(d, c)))}
    return sorted(names, key=natural_key)


def _parse_presplit(source: Source, tree: _Tree, root: str) -> Dataset:
    split_dirs = {s: SPLIT_DIRS[s] for s in tree.subdirs(root) if s in SPLIT_DIRS}
    names = _classes_with_photos(tree, [tree.join(root, s) for s in split_dirs])
    ds = Dataset(source, root, "presplit", [ClassInfo(i, c, c) for i, c in enumerate(names)], [])
    index = {c: i for i, c in enumerate(names)}
    _loose_files(tree, ds, root)
    for s in tree.subdirs(root):
        d = tree.join(root, s)
        if s not in split_dirs:
            ds.ignored.extend((f, "not in a train/valid/test folder") for f in tree.files_under(d))
            continue
        _loose_files(tree, ds, d)
        # the split folder is part of the id: train/a/1.jpg and test/a/1.jpg are different photos
        _class_folder_items(
            tree, ds, d, [c for c in tree.subdirs(d) if c in index], split_dirs[s], index, id_prefix=f"{s}/"
        )
        for c in tree.subdirs(d):
            if c not in index:
                ds.warnings.append(f"class folder {source.display(tree.join(d, c))} has no photos: ignored")
                ds.ignored.extend((f, "not an image file") for f in tree.files_under(tree.join(d, c)))
    splits = set(split_dirs.values())
    if len([s for s in tree.subdirs(root) if s in SPLIT_DIRS and SPLIT_DIRS[s] == "valid"]) > 1:
        ds.warnings.append(
            f"{source.display(root)} has several validation folders "
            f"({', '.join(s for s in split_dirs if split_dirs[s] == 'valid')}): all are used as valid"
        )
    if "test" not in splits:
        ds.warnings.append(f"{source.display(tree.join(root, 'test'))} does not exist: there is no test split")
    in_train = {it.label for it in ds.items if it.official_split == "train"}
    ds.warnings.extend(
        f"class {c.name} has no photos in train/: a model cannot learn it"
        for c in ds.classes
        if c.index not in in_train
    )
    return ds


def _parse_folders(source: Source, tree: _Tree, root: str) -> Dataset:
    names = _classes_with_photos(tree, [root])
    ds = Dataset(source, root, "folders", [ClassInfo(i, c, c) for i, c in enumerate(names)], [])
    _loose_files(tree, ds, root)
    _class_folder_items(tree, ds, root, names, None, {c: i for i, c in enumerate(names)})
    for c in tree.subdirs(root):
        if c not in names:
            ds.warnings.append(f"class folder {source.display(tree.join(root, c))} has no photos: ignored")
            ds.ignored.extend((f, "not an image file") for f in tree.files_under(tree.join(root, c)))
    return ds


_PARSERS = {"food101": _parse_food101, "uec": _parse_uec, "presplit": _parse_presplit, "folders": _parse_folders}
