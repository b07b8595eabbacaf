"""`featkit export features`: a real cache (real photos through the shared MobileNetV2 ONNX) to Parquet and NumPy,
read back with pyarrow, pandas and numpy and compared with the HDF5 arrays exactly; --out never left partial."""

from __future__ import annotations

import json
import sys

import h5py
import numpy as np
import pandas as pd
import pytest

from featkit.cli import main


def fk(capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    cap = capsys.readouterr()
    return e.value.code, cap.out, cap.err


@pytest.fixture(scope="module")
def cache(tmp_path_factory, mini, mobilenet_onnx):
    """(dataset, cache folder, the plain cache at 32 px) extracted by `featkit extract`."""
    root = tmp_path_factory.mktemp("export")
    with pytest.raises(SystemExit) as e:
        main(["extract", "--data", str(mini), "--backbone", str(mobilenet_onnx), "--size", "32", "--cache",
              str(root / "cache"), "--quiet"])  # fmt: skip
    assert e.value.code == 0
    plain = sorted((root / "cache").rglob("plain.h5"))
    assert len(plain) == 1
    return mini, root / "cache", plain[0]


def _h5(path):
    with h5py.File(path, "r") as f:
        return {
            "features": f["features"][()],
            "labels": f["labels"][()],
            "split": f["split"][()].astype(str),
            "image_ids": f["image_ids"].asstr()[()].astype(str),
            "meta": json.loads(f.attrs["meta"]),
        }


def test_parquet_holds_the_cache_exactly_with_its_metadata(cache, tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from featkit.data.splits import read_manifest

    data, _, plain = cache
    h5 = _h5(plain)
    out = tmp_path / "features.parquet"
    code, stdout, err = fk(capsys, "export", "features", plain, "--out", out, "--json")
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["rows"] == len(h5["labels"]) == 80 and summary["feature_dim"] == 1280
    assert summary["dtype"] == "float16" == str(h5["features"].dtype)

    table = pq.read_table(out)
    assert table.column_names == ["image_id", "path", "label", "class_id", "class_name", "split", "feature"]
    ftype = table.schema.field("feature").type
    assert pa.types.is_fixed_size_list(ftype) and ftype.list_size == 1280 and ftype.value_type == pa.float16()
    feats = table.column("feature").combine_chunks().flatten().to_numpy().reshape(-1, 1280)
    assert feats.dtype == np.float16 and np.array_equal(feats, h5["features"])  # bit for bit
    assert table.column("image_id").to_pylist() == h5["image_ids"].tolist()
    assert np.array_equal(table.column("label").to_numpy(), h5["labels"])
    assert table.column("split").to_pylist() == h5["split"].tolist()
    classes = h5["meta"]["classes"]
    assert table.column("class_id").to_pylist() == [classes[i]["id"] for i in h5["labels"]]
    assert table.column("class_name").to_pylist() == [classes[i]["name"] for i in h5["labels"]]
    m = read_manifest(h5["meta"]["manifest"])
    where = dict(zip(m["image_id"], m["path"], strict=True))
    paths = table.column("path").to_pylist()
    assert paths == [where[i] for i in h5["image_ids"]] and all((data / p).is_file() for p in paths)

    kv = {k.decode(): json.loads(v) for k, v in table.schema.metadata.items()}
    assert kv["featkit.backbone"] == h5["meta"]["backbone"] and kv["featkit.size"] == 32
    assert kv["featkit.classes"] == classes and kv["featkit.fingerprint"] == h5["meta"]["fingerprint"]

    df = pd.read_parquet(out)  # pandas too
    assert df["image_id"].tolist() == h5["image_ids"].tolist()
    assert np.array_equal(np.stack(df["feature"].to_numpy()), h5["features"])


def test_npy_found_with_data_backbone_size_matches_the_cache(cache, tmp_path, capsys, mobilenet_onnx):
    import pyarrow.parquet as pq

    data, cache_dir, plain = cache
    h5 = _h5(plain)
    out = tmp_path / "npy"
    args = ["--data", data, "--backbone", mobilenet_onnx, "--size", 32, "--cache", cache_dir]
    code, _, err = fk(capsys, "export", "features", *args, "--format", "npy", "--out", out)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["features.npy", "index.csv", "meta.json"]
    feats = np.load(out / "features.npy")
    assert feats.dtype == np.float16 and np.array_equal(feats, h5["features"])
    index = pd.read_csv(out / "index.csv", dtype=str, keep_default_na=False)
    parquet = tmp_path / "f.parquet"
    assert fk(capsys, "export", "features", plain, "--out", parquet)[0] == 0
    same = pq.read_table(parquet).drop(["feature"]).to_pandas().astype(str)
    pd.testing.assert_frame_equal(index, same)  # the same columns and values in both formats
    meta = json.loads((out / "meta.json").read_text())
    assert meta["featkit.fingerprint"] == h5["meta"]["fingerprint"] and meta["featkit.dtype"] == "float16"


def test_an_existing_out_is_refused_replaced_only_with_force_and_never_left_partial(cache, tmp_path, capsys):
    _, _, plain = cache
    out = tmp_path / "f.parquet"
    out.write_bytes(b"precious")
    code, _, err = fk(capsys, "export", "features", plain, "--out", out)
    assert code == 1 and err.count("\n") == 1 and "exists" in err and "--force" in err
    assert out.read_bytes() == b"precious"
    assert fk(capsys, "export", "features", plain, "--out", out, "--force")[0] == 0
    assert out.read_bytes()[:4] == b"PAR1"

    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    code, _, err = fk(capsys, "export", "features", plain, "--format", "npy", "--out", folder, "--force")
    assert code == 1 and "not a folder holding only" in err and (folder / "notes.txt").read_text() == "keep me"
    npy = tmp_path / "npy"
    assert fk(capsys, "export", "features", plain, "--format", "npy", "--out", npy)[0] == 0
    assert fk(capsys, "export", "features", plain, "--format", "npy", "--out", npy, "--force")[0] == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary left

    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = fk(capsys, "export", "features", plain, "--out", blocker / "f.parquet")
    assert code == 1 and err.startswith("error: --out") and str(blocker) in err


def test_without_pyarrow_parquet_export_names_the_extra(cache, tmp_path, capsys, monkeypatch):
    _, _, plain = cache
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now raises ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    code, _, err = fk(capsys, "export", "features", plain, "--out", tmp_path / "f.parquet")
    assert code == 1 and 'pip install "featkit[export]"' in err and err.count("\n") == 1
    assert not (tmp_path / "f.parquet").exists()
