"""The featkit command line: a thin typer layer over the library."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from .errors import FeatkitError

app = typer.Typer(
    help="featkit: image-classification experiments on foldered photo collections. Extract backbone features "
    "once, then fit heads, evaluate, test robustness and report in minutes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Inspect a dataset: layout, classes, splits, duplicates, unreadable photos.", no_args_is_help=True)
app.add_typer(data_app, name="data")

CacheOpt = typer.Option("cache", "--cache", envvar="FEATKIT_CACHE", help="Folder for manifests and feature caches.")
ReportsOpt = typer.Option("reports", "--reports", envvar="FEATKIT_REPORTS", help="Folder for run folders and reports.")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress display.")
JsonOpt = typer.Option(False, "--json", help="Print machine-readable JSON on stdout instead of a table.")
SplitOpt = typer.Option("70/20/10", "--split", help="train/valid/test percentages for datasets without an official split.")
SeedOpt = typer.Option(0, "--seed", help="Seed of the split (and of everything random downstream).")


def _print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def _prepare(data: Path, cache: Path, split: str, seed: int, quiet: bool):
    from .data import SplitConfig, prepare

    return prepare(data, cache_dir=cache, split=SplitConfig.parse(split, seed), quiet=quiet)


@data_app.command("summary")
def data_summary(
    path: Path = typer.Argument(..., help="Dataset folder, .zip or .tar(.gz)."),
    split: str = SplitOpt, seed: int = SeedOpt, cache: Path = CacheOpt, json_out: bool = JsonOpt, quiet: bool = QuietOpt,
):
    """Layout, classes with names, photos per class, split sizes, duplicates, unreadable files, image sizes.

    Scans every photo once (cached) and writes the split manifest that every later command reuses.
    """
    from .data.summary import format_summary, summarize

    s = summarize(_prepare(path, cache, split, seed, quiet))
    _print_json(s) if json_out else typer.echo(format_summary(s))


@data_app.command("check")
def data_check(
    path: Path = typer.Argument(..., help="Dataset folder, .zip or .tar(.gz)."),
    cache: Path = CacheOpt, json_out: bool = JsonOpt, quiet: bool = QuietOpt,
):
    """Decode every photo and list those that fail. Exits 1 when any photo is unreadable."""
    from .data import dataset_dir
    from .data.layouts import detect
    from .data.scan import scan_dataset
    from .data.source import open_source

    source = open_source(path, cache)
    ds = detect(source)
    scan = scan_dataset(ds, dataset_dir(ds, source.fingerprint(), cache), quiet=quiet)
    bad = scan[scan["error"] != ""]
    result = {"path": str(path), "photos": len(scan), "unreadable": [{"path": r.path, "error": r.error} for r in bad.itertuples()]}
    if json_out:
        _print_json(result)
    else:
        typer.echo(f"{len(scan):,} photos decoded, {len(bad)} unreadable" + (":" if len(bad) else ""))
        for r in bad.itertuples():
            typer.echo(f"  {source.display(r.path)}: {r.error}")
    raise typer.Exit(1 if len(bad) else 0)


@app.command("backbones")
def backbones_cmd(
    models: Optional[Path] = typer.Option(None, "--models", help="Also list the .onnx models in this folder (e.g. ../shared/models)."),
    json_out: bool = JsonOpt,
):
    """List the backbones featkit can extract with: Keras models by name, and ONNX files by path."""
    from .backbones import list_backbones

    rows = list_backbones(models)
    if json_out:
        return _print_json(rows)
    typer.echo(f"{'name':<22}{'kind':<7}{'size':>5}{'dim':>6}  preprocessing / weights")
    for r in rows:
        extra = r.get("weights_file") or r.get("path", "")
        typer.echo(f"{r['name']:<22}{r['kind']:<7}{r.get('native_size', ''):>5}{r.get('feature_dim', ''):>6}  {r.get('preprocessing', '')[:60]}  {extra}")
    typer.echo("\nKeras models: --backbone NAME --weights imagenet|none|PATH. ONNX: --backbone path/to/model.onnx "
               "(a JSON contract beside it gives input name, size and output).")


@app.command("extract")
def extract_cmd(
    data: Path = typer.Option(..., "--data", help="Dataset folder, .zip or .tar(.gz)."),
    backbone: str = typer.Option("vgg16", "--backbone", "-b", help="Keras model name (see `featkit backbones`) or path to an .onnx model."),
    size: Optional[int] = typer.Option(None, "--size", help="Square input size in pixels (default: the backbone's native size)."),
    weights: str = typer.Option("imagenet", "--weights", help="Keras backbones: imagenet (downloaded by Keras), none (random, for tests) or PATH to a weights file."),
    pooling: str = typer.Option("avg", "--pooling", help="Global pooling of the last feature map: avg or max."),
    resize: str = typer.Option("stretch", "--resize", help="How photos become square: stretch (as the study), crop (centre) or pad."),
    crop_box: bool = typer.Option(False, "--crop-box", help="UECFOOD: crop each photo to its bounding box from bb_info.txt first."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Photos per forward pass (default: chosen by the backbone)."),
    float32: bool = typer.Option(False, "--float32", help="Store float32 features instead of float16."),
    augment: int = typer.Option(0, "--augment", help="Also cache N randomly augmented copies of each training photo."),
    rotation: float = typer.Option(90.0, "--rotation", help="Augmentation: rotation range in degrees."),
    shift: float = typer.Option(0.2, "--shift", help="Augmentation: width and height shift range (fraction)."),
    flips: bool = typer.Option(True, "--flips/--no-flips", help="Augmentation: random horizontal and vertical flips."),
    sensitivity: bool = typer.Option(False, "--sensitivity", help="Also cache the test photos under each perturbation of the robustness study."),
    shard: Optional[str] = typer.Option(None, "--shard", help="Extract only part i of n (e.g. 0/4); join the parts with `featkit merge`."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Decoding threads (default: all cores, up to 8)."),
    split: str = SplitOpt, seed: int = SeedOpt, cache: Path = CacheOpt, json_out: bool = JsonOpt, quiet: bool = QuietOpt,
):
    """Run a pretrained backbone over every photo once and cache pooled features to HDF5 under cache/.

    Running it again returns at once; an interrupted run resumes where it stopped.
    """
    from .extract import ExtractOptions, extract, parse_shard

    opts = ExtractOptions(backbone=backbone, size=size, weights=weights, pooling=pooling, resize=resize,
                          crop_box=crop_box, batch_size=batch_size, dtype="float32" if float32 else "float16",
                          augment=augment, rotation=rotation, shift=shift, flips=flips, sensitivity=sensitivity,
                          shard=parse_shard(shard), seed=seed, threads=threads)
    prep = _prepare(data, cache, split, seed, quiet)
    results = extract(prep, opts, cache_dir=cache, quiet=quiet)
    if json_out:
        return _print_json([r.__dict__ for r in results])
    for r in results:
        fails = f", {len(r.failures)} unreadable photos skipped" if r.failures else ""
        typer.echo(f"{r.view:<32} {r.status:<11} {r.photos:>7,} photos  {r.photos_per_second:>7,.0f} photos/s{fails}  {r.path}")


@app.command("merge")
def merge_cmd(
    shards: list[Path] = typer.Argument(..., help="The shard files of one view, e.g. cache/features/.../plain.shard-*-of-4.h5."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output file (default: the view's file beside the shards)."),
):
    """Join the parts made by `featkit extract --shard i/n` into one complete cache file."""
    from .extract import merge

    typer.echo(str(merge(shards, out)))


def main() -> None:
    try:
        app()
    except FeatkitError as e:
        sys.stderr.write(f"error: {e}\n")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted: run the same command again to resume where it stopped.\n")
        sys.exit(130)


if __name__ == "__main__":
    main()
