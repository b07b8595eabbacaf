"""The featkit command line: a thin typer layer over the library."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from featkit.core.errors import FeatkitError
from featkit.core.extras import help_text, install_hint
from featkit.data.augment import STUDY_AUGMENTATION

app = typer.Typer(
    help="featkit: image-classification experiments on foldered photo collections. Extract backbone features "
    "once, then fit heads, evaluate, test robustness and report in minutes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    epilog="Exit codes: 0 done; 1 a failed run or bad data (one 'error:' line naming the file or option); "
    "2 a usage error (unknown option, wrong type); 130 interrupted (run the same command again to resume).",
)
data_app = typer.Typer(
    help="Inspect a dataset: layout, classes, splits, duplicates, unreadable photos.", no_args_is_help=True
)
app.add_typer(data_app, name="data")
RAY_EXTRA_HELP = help_text(install_hint("ray"))

CacheOpt = typer.Option("cache", "--cache", envvar="FEATKIT_CACHE", help="Folder for manifests and feature caches.")
ReportsOpt = typer.Option("reports", "--reports", envvar="FEATKIT_REPORTS", help="Folder for run folders and reports.")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress display.")
JsonOpt = typer.Option(False, "--json", help="Print machine-readable JSON on stdout instead of a table.")
SplitOpt = typer.Option(
    "70/20/10", "--split", help="train/valid/test percentages (summing to 100) for datasets without an official split."
)
SeedOpt = typer.Option(0, "--seed", help="Seed of the split (and of everything random downstream).")
RescanOpt = typer.Option(
    False,
    "--rescan",
    help="Decode every photo again instead of trusting the cached scan "
    "(e.g. after replacing photos in place); manifests are rebuilt if anything changed.",
)
MaxPixelsOpt = typer.Option(
    None,
    "--max-pixels",
    envvar="FEATKIT_MAX_PIXELS",
    help="Largest photo decoded, in "
    "pixels (default 64,000,000); larger ones are reported unreadable, larger files not read.",
)


def _version(value: bool) -> None:
    if value:
        from featkit.core.version import __version__

        typer.echo(f"featkit {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print featkit's version and exit."
    ),
) -> None:
    """featkit: image-classification experiments on foldered photo collections. Extract backbone features once,
    then fit heads, evaluate, test robustness and report in minutes."""


DecodeOpt = typer.Option(
    "draft",
    "--decode",
    help="draft: decode JPEGs at least twice the target size at a reduced scale "
    "(1/2, 1/4, 1/8) that is still at least the target, which is much faster; full: always decode at full size.",
)
FoundDecodeOpt = typer.Option("draft", "--decode", help="With --data: the --decode extracted with (draft or full).")
FoundPrecisionOpt = typer.Option(
    "float32",
    "--precision",
    help="With --data: the --precision extracted with (float32, or int8 for the cache of the backbone's int8 copy).",
)


def _print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def _print_run(run, json_out: bool) -> None:
    """The one-line result of a finished head or CNN run (or its metrics as JSON)."""
    m = run.metrics
    if json_out:
        return _print_json({"run": run.id, "path": str(run.path), **m.to_dict()})
    typer.echo(f"{run.id}: top-1 {m.top1:.4f}  top-5 {m.top5:.4f}  fit {m.fit_seconds or 0:.1f} s  -> {run.path}")


def _prepare(
    data: Path, cache: Path, split: str, seed: int, quiet: bool, rescan: bool = False, reports: Path | None = None
):
    from featkit.data import SplitConfig, prepare

    return prepare(
        data,
        cache_dir=cache,
        split=SplitConfig.parse(split, seed),
        quiet=quiet,
        rescan=rescan,
        exclude=(reports or Path("reports"),),
    )


def _limits(max_pixels: int | None) -> None:
    from featkit.data.images import set_max_pixels

    set_max_pixels(max_pixels)


@data_app.command("summary")
def data_summary(
    path: Path = typer.Argument(..., help="Dataset folder, .zip or .tar(.gz)."),
    split: str = SplitOpt,
    seed: int = SeedOpt,
    cache: Path = CacheOpt,
    json_out: bool = JsonOpt,
    quiet: bool = QuietOpt,
    rescan: bool = RescanOpt,
    max_pixels: int | None = MaxPixelsOpt,
):
    """Layout, classes with names, photos per class, split sizes, duplicates, unreadable files, image sizes.

    Scans every photo once (cached) and writes the split manifest that every later command reuses.
    """
    from featkit.data.summary import format_summary, summarize

    _limits(max_pixels)
    s = summarize(_prepare(path, cache, split, seed, quiet, rescan))
    _print_json(s) if json_out else typer.echo(format_summary(s))


@data_app.command("check")
def data_check(
    path: Path = typer.Argument(..., help="Dataset folder, .zip or .tar(.gz)."),
    cache: Path = CacheOpt,
    json_out: bool = JsonOpt,
    quiet: bool = QuietOpt,
    max_pixels: int | None = MaxPixelsOpt,
):
    """Decode every photo afresh (never trusting the cached scan) and list those that fail. Exits 1 when any photo
    is unreadable."""
    from featkit.data import check_dataset

    _limits(max_pixels)
    result = check_dataset(path, cache, quiet=quiet)
    bad = result["unreadable"]
    if json_out:
        _print_json(result)
    else:
        typer.echo(f"{result['photos']:,} photos decoded, {len(bad)} unreadable" + (":" if bad else ""))
        for r in bad:
            typer.echo(f"  {r['file']}: {r['error']}")
    raise typer.Exit(1 if bad else 0)


@app.command("backbones")
def backbones_cmd(
    models: Path | None = typer.Option(
        None, "--models", help="Also list the .onnx models in this folder (e.g. ../shared/models)."
    ),
    json_out: bool = JsonOpt,
):
    """List the backbones featkit can extract with: Keras models by name, and ONNX files by path."""
    from featkit.backbones import list_backbones

    rows = list_backbones(models)
    if json_out:
        return _print_json(rows)
    typer.echo(f"{'name':<22}{'kind':<7}{'size':>5}{'dim':>6}  preprocessing / weights")
    for r in rows:
        extra = r.get("weights_file") or r.get("path", "")
        typer.echo(
            f"{r['name']:<22}{r['kind']:<7}{r.get('native_size', ''):>5}{r.get('feature_dim', ''):>6}  "
            f"{r.get('preprocessing', '')[:60]}  {extra}"
        )
    typer.echo(
        "\nKeras models: --backbone NAME --weights imagenet|none|PATH. ONNX: --backbone path/to/model.onnx "
        "(a JSON contract beside it gives input name, size and output)."
    )


@app.command("extract")
def extract_cmd(
    data: Path = typer.Option(..., "--data", help="Dataset folder, .zip or .tar(.gz)."),
    backbone: str = typer.Option(
        "vgg16", "--backbone", "-b", help="Keras model name (see `featkit backbones`) or path to an .onnx model."
    ),
    size: int | None = typer.Option(
        None, "--size", help="Square input size in pixels (default: the backbone's native size)."
    ),
    weights: str = typer.Option(
        "imagenet",
        "--weights",
        help="Keras backbones: imagenet (downloaded by Keras), none (random, for tests) or PATH to a weights file.",
    ),
    pooling: str = typer.Option("avg", "--pooling", help="Global pooling of the last feature map: avg or max."),
    resize: str = typer.Option(
        "stretch", "--resize", help="How photos become square: stretch (as the study), crop (centre) or pad."
    ),
    crop_box: bool = typer.Option(
        False, "--crop-box", help="UECFOOD: crop each photo to its bounding box from bb_info.txt first."
    ),
    batch_size: int | None = typer.Option(
        None, "--batch-size", help="Photos per forward pass (default: chosen by the backbone)."
    ),
    float32: bool = typer.Option(False, "--float32", help="Store float32 features instead of float16."),
    augment: int = typer.Option(0, "--augment", help="Also cache N randomly augmented copies of each training photo."),
    rotation: float = typer.Option(
        STUDY_AUGMENTATION.rotation, "--rotation", help="Augmentation: rotation range in degrees."
    ),
    shift: float = typer.Option(
        STUDY_AUGMENTATION.width_shift, "--shift", help="Augmentation: width and height shift range (fraction)."
    ),
    flips: bool = typer.Option(
        STUDY_AUGMENTATION.horizontal_flip,
        "--flips/--no-flips",
        help="Augmentation: random horizontal and vertical flips.",
    ),
    sensitivity: bool = typer.Option(
        False, "--sensitivity", help="Also cache the test photos under each perturbation of the robustness study."
    ),
    tta: list[str] = typer.Option(
        [],
        "--tta",
        help="Also cache a test-time view of the valid and test photos: flip (mirrored left-right), "
        "for `fit-head --tta`.",
    ),
    shard: str | None = typer.Option(
        None, "--shard", help="Extract only part i of n (e.g. 0/4); join the parts with `featkit merge`."
    ),
    threads: int | None = typer.Option(None, "--threads", help="Decoding threads (default: all cores, up to 8)."),
    engine: str = typer.Option(
        "local",
        "--engine",
        help="local: this process. ray: shards on a Ray cluster, one actor per GPU "
        f"(needs {RAY_EXTRA_HELP}; --cache must be a folder every node reaches).",
    ),
    address: str | None = typer.Option(
        None,
        "--address",
        help="--engine ray: the cluster to join (auto: the one running on this machine; HOST:PORT). "
        "Default: start Ray here.",
    ),
    workers: int | None = typer.Option(
        None, "--workers", help="--engine ray: actors to run (default: one per GPU, else one per node)."
    ),
    decode: str = DecodeOpt,
    precision: str = typer.Option(
        "float32",
        "--precision",
        help="ONNX backbones: float32 as given, or int8: quantise it once "
        "into cache/models/ (calibrated on training photos, see `featkit quantize`) and extract with that.",
    ),
    split: str = SplitOpt,
    seed: int = SeedOpt,
    cache: Path = CacheOpt,
    json_out: bool = JsonOpt,
    quiet: bool = QuietOpt,
    rescan: bool = RescanOpt,
    max_pixels: int | None = MaxPixelsOpt,
):
    """Run a pretrained backbone over every photo once and cache pooled features to HDF5 under cache/.

    Running it again returns at once; an interrupted run resumes where it stopped. ONNX backbones run on one
    thread per core this process may use; the environment variable FEATKIT_ONNX_THREADS=N (a whole number >= 1)
    sets another count.
    """
    import shlex

    from featkit.data import SplitConfig
    from featkit.features.extract import ExtractOptions, parse_shard
    from featkit.features.jobs import extract_features

    opts = ExtractOptions(
        backbone=backbone,
        size=size,
        weights=weights,
        pooling=pooling,
        resize=resize,
        crop_box=crop_box,
        batch_size=batch_size,
        dtype="float32" if float32 else "float16",
        augment=augment,
        rotation=rotation,
        shift=shift,
        flips=flips,
        sensitivity=sensitivity,
        tta=tuple(tta),
        shard=parse_shard(shard),
        seed=seed,
        threads=threads,
        decode=decode,
        precision=precision,
    )
    _limits(max_pixels)
    results = extract_features(
        data,
        opts,
        cache,
        SplitConfig.parse(split, seed),
        engine=engine,
        address=address,
        workers=workers,
        quiet=quiet,
        rescan=rescan,
        command=shlex.join(["featkit", *sys.argv[1:]]),
    )
    if json_out:
        return _print_json([r.__dict__ for r in results])
    for r in results:
        fails = f", {len(r.failures)} unreadable photos skipped" if r.failures else ""
        rate = "-" if r.photos_per_second is None else f"{r.photos_per_second:,.0f}"
        typer.echo(f"{r.view:<32} {r.status:<11} {r.photos:>7,} photos  {rate:>7} photos/s{fails}  {r.path}")


@app.command("quantize")
def quantize_cmd(
    model: Path = typer.Argument(
        ..., help="The float32 ONNX model to quantise, e.g. ../shared/models/mobilenet-v2.onnx."
    ),
    data: Path = typer.Option(
        ..., "--data", help="Dataset whose TRAINING photos calibrate the int8 ranges (never valid or test)."
    ),
    photos: int = typer.Option(512, "--photos", help="Calibration photos, a seeded sample of the training split."),
    size: int | None = typer.Option(
        None,
        "--size",
        help="Size the photos are calibrated at: the size you will extract at (default: the model's native size).",
    ),
    resize: str = typer.Option("stretch", "--resize", help="As `featkit extract --resize`: stretch, crop or pad."),
    crop_box: bool = typer.Option(
        False, "--crop-box", help="As `featkit extract --crop-box` (UECFOOD bounding boxes)."
    ),
    decode: str = DecodeOpt,
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Where to write the int8 model (its JSON contract goes beside it); "
        "default: cache/models/<model>.int8-<settings hash>.onnx, which `extract --precision int8` reuses.",
    ),
    split: str = SplitOpt,
    seed: int = SeedOpt,
    cache: Path = CacheOpt,
    json_out: bool = JsonOpt,
    quiet: bool = QuietOpt,
):
    """Quantise an ONNX backbone to int8 (onnxruntime static quantisation: QDQ, per-channel weights).

    The int8 model runs about twice as fast on a CPU with int8 dot-product instructions and is a backbone like
    any other: `featkit extract --backbone MODEL.int8.onnx`.
    """
    from featkit.features.extract import ExtractOptions
    from featkit.features.quantize import quantize_onnx

    opts = ExtractOptions(backbone=str(model), size=size, resize=resize, crop_box=crop_box, decode=decode, seed=seed)
    prep = _prepare(data, cache, split, seed, quiet)
    result = quantize_onnx(model, prep, opts, photos=photos, out=out, cache_dir=cache, quiet=quiet)
    if json_out:
        return _print_json(result.__dict__)
    typer.echo(
        f"{result.status}: {result.path} ({result.photos} training photos at {result.size} px"
        f"{f', {result.skipped} unreadable skipped' if result.skipped else ''}); contract {result.contract}"
    )


@app.command("merge")
def merge_cmd(
    shards: list[Path] = typer.Argument(
        ..., help="The shard files of one view, e.g. cache/features/.../plain.shard-*-of-4.h5."
    ),
    out: Path | None = typer.Option(None, "--out", help="Output file (default: the view's file beside the shards)."),
):
    """Join the parts made by `featkit extract --shard i/n` into one complete cache file."""
    from featkit.features.extract import merge

    typer.echo(str(merge(shards, out)))


def _parse_params(items: list[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise FeatkitError(f"--param {item!r} should be KEY=VALUE, e.g. --param C=0.5 or --param hidden=1024.")
        key = key.strip()
        if key in params:
            raise FeatkitError(
                f"-p {key} is given twice ({key}={params[key]}, {key}={value.strip()}): give it once; to search "
                f"several values, -p {key}={params[key]},{value.strip()}."
            )
        params[key] = value.strip()
    return params


def _plain_caches(
    features: list[Path],
    data: Path | None,
    backbones: list[str],
    sizes: list[int],
    weights: str,
    pooling: str,
    resize: str,
    split: str,
    seed: int,
    cache: Path,
    decode: str = "draft",
    precision: str = "float32",
) -> list[Path]:
    """--features as given, or the plain-view caches extracted from --data with each --backbone x --size."""
    if features:
        return list(features)
    if data is None:
        raise FeatkitError("give --features CACHE.h5, or --data PATH with the --backbone/--size you extracted with.")
    from featkit.features.jobs import find_plain_caches

    return find_plain_caches(
        _prepare(data, cache, split, seed, True),
        backbones or ["vgg16"],
        sizes,
        cache,
        weights=weights,
        pooling=pooling,
        resize=resize,
        decode=decode,
        precision=precision,
    )


@app.command("fit-head")
def fit_head_cmd(
    features: list[Path] = typer.Option(
        [],
        "--features",
        help="A plain-view cache (.h5) from `featkit extract`; repeat it to concatenate the features of several "
        "caches of the same photos.",
    ),
    data: Path | None = typer.Option(
        None, "--data", help="Or: the dataset, to find the cache extracted with the options below."
    ),
    backbone: list[str] = typer.Option(
        ["vgg16"],
        "--backbone",
        "-b",
        help="With --data: the backbone extracted with; repeat it to concatenate several backbones.",
    ),
    size: list[int] = typer.Option(
        [], "--size", help="With --data: the size extracted at; repeat it to concatenate several sizes."
    ),
    weights: str = typer.Option("imagenet", "--weights", help="With --data: the weights extracted with."),
    pooling: str = typer.Option("avg", "--pooling", help="With --data: the pooling extracted with."),
    resize: str = typer.Option("stretch", "--resize", help="With --data: the resize mode extracted with."),
    decode: str = FoundDecodeOpt,
    precision: str = FoundPrecisionOpt,
    head: str = typer.Option(
        "logreg", "--head", help="logreg (scikit-learn), softmax (Keras dense head), lightgbm or knn."
    ),
    param: list[str] = typer.Option(
        [],
        "--param",
        "-p",
        help="Head parameter KEY=VALUE, repeatable (see --list-params); "
        "KEY=V1,V2,V3 searches those values on valid. Settings not given: the head's default search.",
    ),
    refit: bool = typer.Option(
        True,
        "--refit/--no-refit",
        help="Refit the chosen settings on train + valid before "
        "scoring test (default), or keep the model fitted on train only.",
    ),
    augment: bool = typer.Option(
        False, "--augment", help="Also train on the augmented view cached beside the plain one."
    ),
    augment_cache: Path | None = typer.Option(None, "--augment-cache", help="Train also on this augmented-view cache."),
    list_params: bool = typer.Option(
        False, "--list-params", help="Print the head's parameters and defaults, then exit."
    ),
    tta: bool = typer.Option(
        False,
        "--tta",
        help="Average each valid and test photo's probabilities with its mirrored copy "
        "(cached by `extract --tta flip`).",
    ),
    split: str = SplitOpt,
    seed: int = SeedOpt,
    cache: Path = CacheOpt,
    reports: Path = ReportsOpt,
    json_out: bool = JsonOpt,
    quiet: bool = QuietOpt,
):
    """Fit a head on cached features: search its settings on train scored on valid, calibrate its probabilities
    (a temperature fitted on valid), refit on train + valid, score once on test; writes a run folder."""
    from featkit.heads import head_params, search_grid

    if list_params:
        return (
            _print_json(head_params(head))
            if json_out
            else typer.echo(
                "\n".join(f"{k} = {v!r}" for k, v in head_params(head).items())
                + f"\nsearched by default: {search_grid(head)}"
            )
        )
    from featkit.heads.fit import fit_head

    paths = _plain_caches(
        features, data, backbone, size, weights, pooling, resize, split, seed, cache, decode, precision
    )
    path = paths[0]
    if augment and augment_cache is None:
        from featkit.features.extract import augment_caches

        found = augment_caches(path)
        if not found:
            raise FeatkitError(f"no augmented view beside {path}: run `featkit extract ... --augment N` first.")
        augment_cache = found[-1]
    run = fit_head(
        paths,
        head=head,
        params=_parse_params(param),
        augment_cache=augment_cache,
        reports=reports,
        seed=seed,
        quiet=quiet or json_out,
        refit=refit,
        tta="flip" if tta else None,
    )
    _print_run(run, json_out)


@app.command("ensemble")
def ensemble_cmd(
    runs: list[str] = typer.Argument(
        ..., help="Run ids or folders scored on the same test photos (same dataset and split)."
    ),
    name: str | None = typer.Option(None, "--name", help="Name of the new run (default: ensemble-N-<backbone>)."),
    reports: Path = ReportsOpt,
    json_out: bool = JsonOpt,
    quiet: bool = QuietOpt,
):
    """Average the test probabilities of several runs into a new run (evaluated, reported and listed like any
    other). The runs must share the test photos (same image ids, same order) and the class list."""
    from featkit.apps.ensemble import ensemble_runs

    _print_run(ensemble_runs(runs, name=name, reports=reports, quiet=quiet or json_out), json_out)


@app.command("sweep")
def sweep_cmd(
    features: list[Path] = typer.Option(
        [], "--features", help="A plain-view cache (.h5); repeat for several (see --combine)."
    ),
    data: Path | None = typer.Option(
        None, "--data", help="Or: the dataset, to find the caches of every --backbone x --size."
    ),
    backbone: list[str] = typer.Option(
        [], "--backbone", "-b", help="With --data: a backbone extracted with (repeatable)."
    ),
    size: list[int] = typer.Option([], "--size", help="With --data: a size extracted at (repeatable)."),
    weights: str = typer.Option("imagenet", "--weights", help="With --data: the weights extracted with."),
    decode: str = FoundDecodeOpt,
    precision: str = FoundPrecisionOpt,
    combine: list[str] = typer.Option(
        ["none"],
        "--combine",
        help="Which caches to concatenate: none (each alone), backbones (per size), sizes (per backbone), all; "
        "repeat for several.",
    ),
    cache_set: list[str] = typer.Option(
        [],
        "--set",
        help="An explicit set of caches to concatenate, joined by '+' (A.h5+B.h5); repeatable, "
        "added to --combine's sets.",
    ),
    head: list[str] = typer.Option(
        ["logreg"], "--head", help="Head(s) to sweep: logreg, softmax, lightgbm (repeatable)."
    ),
    param: list[str] = typer.Option(
        [],
        "--param",
        "-p",
        help="Values to sweep: KEY=V1,V2 (every head with KEY) or HEAD.KEY=V1,V2; repeatable, crossed.",
    ),
    candidates_file: Path | None = typer.Option(
        None,
        "--candidates",
        help="A JSON list of candidates ({head, params, caches, tta}), e.g. a sweep's candidates.json; "
        "added to the grid.",
    ),
    tta: str = typer.Option(
        "off",
        "--tta",
        help="Mirrored test-time view (`extract --tta flip`): off, on, or both (each candidate with and without).",
    ),
    ensemble: int = typer.Option(
        0, "--ensemble", help="Also average the best 2..N runs by validation top-1 into ensembles."
    ),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Candidates fitted at the same time (joblib processes)."),
    engine: str = typer.Option(
        "local",
        "--engine",
        help="Where candidates run: local (joblib processes on this machine) or ray (actors on a Ray cluster; "
        f"caches and --reports on a shared folder; needs {RAY_EXTRA_HELP}).",
    ),
    address: str | None = typer.Option(
        None,
        "--address",
        help="--engine ray: the cluster to join (auto: the one running on this machine; HOST:PORT). "
        "Default: start Ray here.",
    ),
    name: str = typer.Option("sweep", "--name", help="Name in the sweep's id: reports/sweeps/<time>-<name>/."),
    split: str = SplitOpt,
    seed: int = SeedOpt,
    cache: Path = CacheOpt,
    reports: Path = ReportsOpt,
    json_out: bool = JsonOpt,
    quiet: bool = QuietOpt,
):
    """Fit a grid of heads x parameters x caches (each a run folder), add ensembles, and pick the best by
    validation top-1 only; writes reports/sweeps/<id>/sweep.csv and sweep.md and prints the table."""
    from featkit.apps.sweep import no_selection_reason, plan, sweep, table
    from featkit.core.tables import markdown_table

    pool = (
        _plain_caches(features, data, backbone, size, weights, "avg", "stretch", split, seed, cache, decode, precision)
        if (features or data)
        else []
    )
    candidates = plan(pool, combine, [s.split("+") for s in cache_set], head, param, tta, candidates_file)
    result = sweep(
        candidates,
        jobs=jobs,
        engine=engine,
        ensemble=ensemble,
        name=name,
        reports=reports,
        seed=seed,
        quiet=quiet or json_out,
        address=address,
    )
    if json_out:
        return _print_json(
            {
                "sweep": result.id,
                "path": str(result.path),
                "selected": result.selected.to_dict() if result.selected else None,
                "rows": [r.to_dict() for r in result.rows],
            }
        )
    typer.echo(markdown_table(table(result.rows, compact=True)))
    sel = result.selected
    if sel is None:
        raise FeatkitError(no_selection_reason(result))
    typer.echo(
        f"\nselected by validation top-1: {sel.candidate} -> run {sel.run}: valid top-1 {sel.valid_top1:.4f}, "
        f"test top-1 {sel.top1:.4f}, top-5 {sel.top5:.4f}\ntable: {result.path}/sweep.csv, sweep.md"
    )


@app.command("evaluate")
def evaluate_cmd(
    run: str = typer.Argument(..., help="Run id, run folder, or 'latest'."),
    k: list[int] = typer.Option([1, 5], "--k", help="Top-k accuracies to report, repeatable."),
    reports: Path = ReportsOpt,
    json_out: bool = JsonOpt,
):
    """Top-k accuracy, per-class accuracy, macro F1, log loss, confusion matrix (CSV + PNG) and most confused pairs."""
    from featkit.apps.evaluate import evaluate_run
    from featkit.runs.store import load_run

    r = load_run(run, reports)
    m = evaluate_run(r, ks=k, reports=reports)
    if json_out:
        return _print_json({"run": r.id, **m})
    typer.echo(f"run {r.id} on {m['n']:,} test photos")
    for kk in sorted(set(k) | {1, 5}):
        typer.echo(f"  top-{kk:<3} {m['topk'][str(kk)]:.4f}")
    typer.echo(f"  macro F1 {m['macro_f1']:.4f}   log loss {m['log_loss']:.4f}")
    import pandas as pd

    pairs = pd.read_csv(r.path / "confused_pairs.csv").head(5)
    if len(pairs):
        typer.echo("  most confused pairs:")
        typer.echo("    " + pairs.to_string(index=False).replace("\n", "\n    "))
    typer.echo(f"  files: {r.path}/per_class.csv, confusion.csv, confusion.png, confused_pairs.csv")


@app.command("sensitivity")
def sensitivity_cmd(
    run: str = typer.Argument(..., help="Run id, run folder, or 'latest' (a head or CNN run)."),
    reports: Path = ReportsOpt,
    json_out: bool = JsonOpt,
    quiet: bool = QuietOpt,
):
    """Robustness table: the run scored on its test photos rotated, shifted and flipped as in the study.

    A head run is scored on the views cached by `featkit extract --sensitivity` (no backbone re-run); a CNN run
    sees the perturbed photos through its network."""
    from featkit.apps.evaluate import sensitivity
    from featkit.core.tables import markdown_table
    from featkit.runs.store import load_run

    r = load_run(run, reports)
    df = sensitivity(r, reports=reports, quiet=quiet or json_out)
    if json_out:
        return _print_json(df.to_dict(orient="records"))
    typer.echo(markdown_table(df))
    typer.echo(f"saved: {r.path}/sensitivity.csv, sensitivity.md")


@app.command("report")
def report_cmd(reports: Path = ReportsOpt, json_out: bool = JsonOpt, quiet: bool = QuietOpt):
    """Rebuild reports/index.html (every run in one sortable table, a page per run with the photos of its
    mistakes), results.md and .csv (one row per run, newest first) and the plots, from the run folders."""
    from featkit.report.build import build_report

    paths = build_report(reports, quiet=quiet or json_out)
    if json_out:
        return _print_json({k: str(v) for k, v in paths.items()})
    for name, path in paths.items():
        if name != "index_html":
            typer.echo(f"{name:<18} {path}")
    typer.echo(f"open in a browser: {paths['index_html'].resolve()}")


@app.command("predict")
def predict_cmd(
    run: str = typer.Argument(..., help="Run id, run folder, or 'latest'."),
    photos: list[Path] = typer.Argument(..., help="Photo files and/or folders of photos."),
    top: int = typer.Option(5, "--top", help="How many classes to show per photo."),
    reports: Path = ReportsOpt,
    json_out: bool = JsonOpt,
):
    """Top-k dish names with probabilities for new photos, using the run's own backbone and preprocessing.

    Unreadable photos get a message and do not stop the batch.
    """
    from featkit.apps.predict import predict

    results, failures = predict(run, photos, top=top, reports=reports)
    for f in failures:
        sys.stderr.write(f"warning: {f['path']}: {f['error']}\n")
    if json_out:
        _print_json({"predictions": results, "failures": failures})
    else:
        for r in results:
            typer.echo(r["path"])
            for t in r["top"]:
                typer.echo(f"    {t['probability']:7.2%}  {t['name']}")
        typer.echo(f"{len(results)} photos predicted, {len(failures)} unreadable")
    if failures and not results:
        raise typer.Exit(1)


@app.command("train-cnn")
def train_cnn_cmd(
    data: Path | None = typer.Option(None, "--data", help="Dataset folder, .zip or .tar(.gz)."),
    preset: str = typer.Option(
        "benchmark-64", "--preset", help="A row of the study (see --list); options below override it."
    ),
    list_: bool = typer.Option(False, "--list", help="List the presets with the study's own figures, then exit."),
    model: str | None = typer.Option(
        None, "--model", help="custom (conv+pool blocks) or transfer (frozen backbone + dense 1024)."
    ),
    backbone: str | None = typer.Option(
        None, "--backbone", help="Transfer: a Keras backbone name (vgg16, mobilenetv2, ...)."
    ),
    weights: str | None = typer.Option(
        None, "--weights", help="Transfer: imagenet, none or PATH to an include_top=False weights file."
    ),
    fine_tune_from: str | None = typer.Option(
        None, "--fine-tune-from", help="Transfer: unfreeze from this layer (name or index), lower learning rate."
    ),
    size: int | None = typer.Option(None, "--size", help="Image size in pixels."),
    blocks: int | None = typer.Option(None, "--blocks", help="Custom: number of conv+max-pool blocks."),
    filters: str | None = typer.Option(
        None, "--filters", help="Custom: filters per block, one number or a list like 16,32,64."
    ),
    kernel: int | None = typer.Option(None, "--kernel", help="Custom: convolution kernel size (the study used 2)."),
    dropout: float | None = typer.Option(
        None, "--dropout", help="Dropout after each block (custom) or before the softmax (transfer)."
    ),
    augment: bool | None = typer.Option(
        None, "--augment/--no-augment", help="Random rotation, shifts and flips while training."
    ),
    standardize: bool | None = typer.Option(
        None, "--standardize/--no-standardize", help="Feature-wise standardisation (statistics from train only)."
    ),
    zca: bool | None = typer.Option(
        None, "--zca/--no-zca", help="ZCA whitening fitted on a sample of training photos."
    ),
    epochs: int | None = typer.Option(None, "--epochs", help="Training epochs."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Photos per training step."),
    optimizer: str | None = typer.Option(None, "--optimizer", help="rmsprop or adam."),
    lr: float | None = typer.Option(None, "--lr", help="Learning rate."),
    patience: int | None = typer.Option(
        None, "--patience", help="Early stopping after this many epochs without a better val loss."
    ),
    per_class: int | None = typer.Option(
        None, "--per-class", help="Use only the first N photos of each class in each split (quick runs)."
    ),
    resume: str | None = typer.Option(
        None, "--resume", help="Continue this run (id or folder) from its last checkpoint."
    ),
    split: str = SplitOpt,
    seed: int = SeedOpt,
    cache: Path = CacheOpt,
    reports: Path = ReportsOpt,
    json_out: bool = JsonOpt,
    quiet: bool = QuietOpt,
):
    """Train a custom CNN of the study or a frozen-backbone transfer model end to end; writes a run folder that
    `evaluate`, `report` and `predict` use exactly like a head run."""
    if list_:
        from featkit.cnn.presets import format_preset_list, list_presets

        return _print_json(list_presets()) if json_out else typer.echo(format_preset_list())
    if data is None:
        raise FeatkitError("train-cnn needs --data PATH (a dataset folder or archive), or --list.")
    from featkit.cnn.series import train_preset

    options = {
        "model": model,
        "backbone": backbone,
        "weights": weights,
        "size": size,
        "blocks": blocks,
        "filters": filters,
        "kernel": kernel,
        "dropout": dropout,
        "augment": augment,
        "standardize": standardize,
        "zca": zca,
        "epochs": epochs,
        "batch_size": batch_size,
        "optimizer": optimizer,
        "lr": lr,
        "patience": patience,
        "fine_tune_from": fine_tune_from,
    }
    run, _ = train_preset(
        preset,
        data,
        options,
        per_class=per_class,
        resume=resume,
        split=split,
        seed=seed,
        cache=cache,
        reports=reports,
        quiet=quiet or json_out,
    )
    _print_run(run, json_out)


@app.command("series")
def series_cmd(
    presets: list[str] = typer.Argument(
        ...,
        help="Presets to run in order (see `featkit train-cnn --list`), 'study' "
        "(the study's 18 rows in its order) or 'all'.",
    ),
    data: Path = typer.Option(..., "--data", help="Dataset folder, .zip or .tar(.gz)."),
    epochs: int | None = typer.Option(
        None, "--epochs", help="Override every preset's epochs (e.g. 1 for a quick pass)."
    ),
    weights: str | None = typer.Option(
        None, "--weights", help="Transfer presets: imagenet, none or PATH (custom CNNs ignore it)."
    ),
    per_class: int | None = typer.Option(
        None, "--per-class", help="Use only the first N photos of each class in each split."
    ),
    split: str = SplitOpt,
    seed: int = SeedOpt,
    cache: Path = CacheOpt,
    reports: Path = ReportsOpt,
    json_out: bool = JsonOpt,
    quiet: bool = QuietOpt,
):
    """Run several CNN presets one after another, then regenerate reports/results.md.

    Resumable: a preset whose finished run with the same data and options exists is skipped, an interrupted one
    continues from its last epoch. A preset that fails is reported and the series goes on; the exit code is 1 if
    any failed. `featkit series study --data PATH --epochs 1 --per-class 10` is a quick pass over the whole study.
    """
    from featkit.cnn.series import run_series, series_names
    from featkit.report.build import build_report

    def show(r: dict) -> None:
        if not json_out:
            typer.echo(
                f"{r['preset']:<30} top-1 {r['top1']:.4f}  top-5 {r['top5']:.4f}  "
                f"{r.get('seconds_per_epoch') or 0:.1f} s/epoch  {r['run']}"
                + ("  (done before)" if r["skipped"] else "")
            )

    done, failed = run_series(
        series_names(presets),
        data,
        epochs=epochs,
        weights=weights,
        per_class=per_class,
        split=split,
        seed=seed,
        cache=cache,
        reports=reports,
        quiet=quiet or json_out,
        on_result=show,
    )
    paths = build_report(reports)
    if json_out:
        _print_json({"runs": done, "failed": failed, "report": str(paths["results_md"])})
    else:
        typer.echo(
            f"report: {paths['results_md']}" + (f"  ({len(failed)} presets failed, see above)" if failed else "")
        )
    if failed:
        raise typer.Exit(1)


INTERRUPTED = "interrupted: run the same command again to resume where it stopped."


def main(argv: list[str] | None = None) -> None:
    """The `featkit` entry point: exit 0 on success, 1 for a failed run or bad data (one `error:` line),
    2 for a usage error (as click does), 130 when interrupted (Ctrl-C)."""
    import signal

    interrupted = []

    def on_sigint(signum, frame):  # typer turns KeyboardInterrupt into a silent exit 130: note it to say so
        interrupted.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    code: int | str | None = 0
    try:
        app(args=argv, prog_name="featkit")
    except SystemExit as e:  # click's own exits: 0, 2 for usage errors, typer.Exit codes; 130 for Ctrl-C
        code = e.code
        if code == 130:
            interrupted.append(signal.SIGINT)
    except FeatkitError as e:
        sys.stderr.write(f"error: {e}\n")
        code = 1
    except KeyboardInterrupt:
        interrupted.append(signal.SIGINT)
    except MemoryError:
        sys.stderr.write("error: out of memory: use a smaller --size, --batch-size or --per-class, or free memory.\n")
        code = 1
    except OSError as e:  # a full disk, a read-only folder, a path under a file: one line naming the path
        from featkit.core.errors import os_error_message

        sys.stderr.write(f"error: {os_error_message(e)}\n")
        code = 1
    finally:
        signal.signal(signal.SIGINT, previous)
    if interrupted:
        sys.stderr.write(f"\n{INTERRUPTED}\n")
        code = 130
    sys.stdout.flush()
    sys.exit(code)


if __name__ == "__main__":
    main()
