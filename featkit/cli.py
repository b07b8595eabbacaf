"""The featkit command line: a thin typer layer over the library."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path

import typer

from featkit.core.errors import FeatkitError
from featkit.core.extras import help_text, install_hint
from featkit.data.augment import STUDY_AUGMENTATION

app = typer.Typer(
    help="featkit: image-classification experiments on foldered photo collections. Extract backbone features "
    "once, then fit heads, evaluate, test robustness and report in minutes.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    epilog="Exit codes: 0 done; 1 a failed run or bad data (one 'error:' line naming the file or option); "
    "2 a usage error (unknown option, wrong type); 130 interrupted (run the same command again to resume).",
)
data_app = typer.Typer(
    help="Inspect a dataset: layout, classes, splits, duplicates, unreadable photos.", no_args_is_help=True
)
app.add_typer(data_app, name="data")
RAY_EXTRA_HELP = help_text(install_hint("ray"))


# Options with a fixed set of values: typer lists them in --help and refuses any other value as a usage error
# (exit 2). The values are the library's (test_cli_choices checks they agree); commands pass `.value` on.
class Pooling(StrEnum):
    avg = "avg"
    max = "max"


class Resize(StrEnum):
    stretch = "stretch"
    crop = "crop"
    pad = "pad"


class Decode(StrEnum):
    draft = "draft"
    full = "full"


class Precision(StrEnum):
    float32 = "float32"
    int8 = "int8"


class Engine(StrEnum):
    local = "local"
    ray = "ray"


class HeadName(StrEnum):
    logreg = "logreg"
    softmax = "softmax"
    lightgbm = "lightgbm"
    knn = "knn"


class TtaView(StrEnum):
    """--tta VIEW everywhere: the mirrored test-time view `flip` (`none`: the plain photos only)."""

    none = "none"
    flip = "flip"


class CurveBy(StrEnum):
    none = "none"
    class_ = "class"


class Combine(StrEnum):
    none = "none"
    backbones = "backbones"
    sizes = "sizes"
    all = "all"


class RunKind(StrEnum):
    head = "head"
    cnn = "cnn"
    ensemble = "ensemble"


class CnnModel(StrEnum):
    custom = "custom"
    transfer = "transfer"


class Optimizer(StrEnum):
    rmsprop = "rmsprop"
    adam = "adam"


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

AddressOpt = typer.Option(
    None,
    "--address",
    help="--engine ray: the cluster to join (auto: the one running on this machine; HOST:PORT). "
    "Default: start Ray here.",
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
    Decode.draft,
    "--decode",
    help="draft: decode JPEGs at least twice the target size at a reduced scale "
    "(1/2, 1/4, 1/8) that is still at least the target, which is much faster; full: always decode at full size.",
)
FoundDecodeOpt = typer.Option(Decode.draft, "--decode", help="With --data: the --decode extracted with.")
FoundPrecisionOpt = typer.Option(
    Precision.float32,
    "--precision",
    help="With --data: the --precision extracted with (int8: the cache of the backbone's int8 copy).",
)


TrackOpt = typer.Option(
    False,
    "--track",
    help="Also log the finished run(s) to MLflow: MLFLOW_TRACKING_URI, else sqlite:///<reports>/mlflow.db "
    '(needs pip install "featkit[mlflow]"; setting MLFLOW_TRACKING_URI alone turns it on too).',
)


def _track(track: bool) -> None:
    if track:
        from featkit.runs.tracking import enable

        enable()


def _print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def _print_run(run, json_out: bool) -> None:
    """The one-line result of a finished head or CNN run (or its metrics as JSON)."""
    from featkit.core.tables import pct

    m = run.metrics
    if json_out:
        return _print_json({"run": run.id, "path": str(run.path), **m.to_dict()})
    typer.echo(f"{run.id}: top-1 {pct(m.top1)}  top-5 {pct(m.top5)}  fit {m.fit_seconds or 0:.1f} s  -> {run.path}")


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
        None,
        "--models",
        help="Also list the .onnx models in this folder; each is a --backbone by its name. Default: $FEATKIT_MODELS, "
        "`models` in ./featkit.toml, else ./shared/models or ../shared/models when present.",
    ),
    json_out: bool = JsonOpt,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="The table only, without the usage note under it."),
):
    """List the backbones featkit can extract with: Keras models by name, and ONNX files by path."""
    from featkit.backbones import list_backbones, models_dir

    rows = list_backbones(models if models is not None else models_dir())
    if json_out:
        return _print_json(rows)
    typer.echo(f"{'name':<22}{'kind':<7}{'size':>5}{'dim':>6}  preprocessing / weights")
    for r in rows:
        extra = r.get("weights_file") or r.get("path", "")
        typer.echo(
            f"{r['name']:<22}{r['kind']:<7}{r.get('native_size', ''):>5}{r.get('feature_dim', ''):>6}  "
            f"{r.get('preprocessing', '')[:60]}  {extra}"
        )
    if not quiet:
        typer.echo(
            "\nKeras models: --backbone NAME --weights imagenet|none|PATH. ONNX: --backbone NAME for a model of the "
            "models folder, or --backbone path/to/model.onnx (a JSON contract beside it gives input name, size and "
            "output). A name that is both: keras:NAME or onnx:NAME."
        )


@app.command("extract")
def extract_cmd(
    data: Path = typer.Option(..., "--data", help="Dataset folder, .zip or .tar(.gz)."),
    backbone: str | None = typer.Option(
        None,
        "--backbone",
        "-b",
        help="A backbone: a Keras model name, an .onnx model of the models folder by its name (see `featkit "
        "backbones`; keras:NAME / onnx:NAME where both exist) or an .onnx path. Default: $FEATKIT_BACKBONE, "
        "`backbone` in ./featkit.toml, else vgg16.",
    ),
    size: int | None = typer.Option(
        None, "--size", help="Square input size in pixels (default: the backbone's native size)."
    ),
    weights: str = typer.Option(
        "imagenet",
        "--weights",
        help="Keras backbones: imagenet (downloaded by Keras), none (random, for tests) or PATH to a weights file.",
    ),
    pooling: Pooling = typer.Option(Pooling.avg, "--pooling", help="Global pooling of the last feature map."),
    resize: Resize = typer.Option(
        Resize.stretch, "--resize", help="How photos become square: stretch (as the study), crop (centre) or pad."
    ),
    crop_box: bool = typer.Option(
        False, "--crop-box", help="UECFOOD: crop each photo to its bounding box from bb_info.txt first."
    ),
    batch_size: int | None = typer.Option(
        None, "--batch-size", help="Photos per forward pass (default: chosen by the backbone)."
    ),
    float32: bool = typer.Option(False, "--float32", help="Store float32 features instead of float16."),
    augment_copies: int = typer.Option(
        0,
        "--augment-copies",
        help="Also cache N randomly augmented copies of each training photo (for `fit-head --augment`).",
    ),
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
    tta: list[TtaView] = typer.Option(
        [],
        "--tta",
        help="Also cache this test-time view of the valid and test photos (flip: mirrored left-right), "
        "for `fit-head --tta flip`.",
    ),
    shard: str | None = typer.Option(
        None, "--shard", help="Extract only part i of n (e.g. 0/4); join the parts with `featkit merge`."
    ),
    threads: int | None = typer.Option(None, "--threads", help="Decoding threads (default: all cores, up to 8)."),
    engine: Engine = typer.Option(
        Engine.local,
        "--engine",
        help="local: this process. ray: shards on a Ray cluster, one actor per GPU "
        f"(needs {RAY_EXTRA_HELP}; --cache must be a folder every node reaches).",
    ),
    address: str | None = AddressOpt,
    workers: int | None = typer.Option(
        None, "--workers", help="--engine ray: actors to run (default: one per GPU, else one per node)."
    ),
    decode: Decode = DecodeOpt,
    precision: Precision = typer.Option(
        Precision.float32,
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

    Running it again returns at once; an interrupted run resumes where it stopped.

    Environment: FEATKIT_ONNX_THREADS=N (a whole number >= 1) sets the threads an ONNX backbone computes with
    (default: every core this process may use).
    """
    import shlex

    from featkit.data import SplitConfig
    from featkit.features.extract import ExtractOptions, parse_shard
    from featkit.features.jobs import extract_features

    opts = ExtractOptions(
        backbone=_backbones([backbone] if backbone else [])[0],
        size=size,
        weights=weights,
        pooling=pooling.value,
        resize=resize.value,
        crop_box=crop_box,
        batch_size=batch_size,
        dtype="float32" if float32 else "float16",
        augment=augment_copies,
        rotation=rotation,
        shift=shift,
        flips=flips,
        sensitivity=sensitivity,
        tta=tuple(t.value for t in tta if t is not TtaView.none),
        shard=parse_shard(shard),
        seed=seed,
        threads=threads,
        decode=decode.value,
        precision=precision.value,
    )
    _limits(max_pixels)
    results = extract_features(
        data,
        opts,
        cache,
        SplitConfig.parse(split, seed),
        engine=engine.value,
        address=address,
        workers=workers,
        quiet=quiet,
        rescan=rescan,
        command=shlex.join(["featkit", *sys.argv[1:]]),
    )
    if json_out:
        return _print_json([r.to_dict() for r in results])
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
    resize: Resize = typer.Option(Resize.stretch, "--resize", help="As `featkit extract --resize`."),
    crop_box: bool = typer.Option(
        False, "--crop-box", help="As `featkit extract --crop-box` (UECFOOD bounding boxes)."
    ),
    decode: Decode = DecodeOpt,
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

    opts = ExtractOptions(
        backbone=str(model), size=size, resize=resize.value, crop_box=crop_box, decode=decode.value, seed=seed
    )
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
    json_out: bool = JsonOpt,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing (the exit code says whether it worked)."),
):
    """Join the parts made by `featkit extract --shard i/n` into one complete cache file and print its path."""
    from featkit.features.extract import merge

    path = merge(shards, out)
    if json_out:
        _print_json({"path": str(path), "shards": [str(p) for p in shards]})
    elif not quiet:
        typer.echo(str(path))


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

    names = _backbones(backbones)  # a bad featkit.toml is said before the dataset is scanned
    return find_plain_caches(
        _prepare(data, cache, split, seed, True),
        names,
        sizes,
        cache,
        weights=weights,
        pooling=pooling,
        resize=resize,
        decode=decode,
        precision=precision,
    )


def _backbones(given: list[str]) -> list[str]:
    """--backbone as given, else the folder's default (saying where it came from), else vgg16."""
    if given:
        return list(given)
    from featkit.backbones import default_backbone

    name, where = default_backbone()
    if name is None:
        return ["vgg16"]
    sys.stderr.write(f"backbone: {name} (from {where})\n")
    return [name]


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
        [],
        "--backbone",
        "-b",
        help="With --data: the backbone extracted with (a name from `featkit backbones` or an .onnx path); repeat it "
        "to concatenate several. Default: $FEATKIT_BACKBONE, `backbone` in ./featkit.toml, else vgg16.",
    ),
    size: list[int] = typer.Option(
        [], "--size", help="With --data: the size extracted at; repeat it to concatenate several sizes."
    ),
    weights: str = typer.Option("imagenet", "--weights", help="With --data: the weights extracted with."),
    pooling: Pooling = typer.Option(Pooling.avg, "--pooling", help="With --data: the pooling extracted with."),
    resize: Resize = typer.Option(Resize.stretch, "--resize", help="With --data: the resize mode extracted with."),
    decode: Decode = FoundDecodeOpt,
    precision: Precision = FoundPrecisionOpt,
    head: HeadName = typer.Option(
        HeadName.logreg,
        "--head",
        help="logreg (scikit-learn), softmax (Keras dense head), lightgbm or knn (cosine nearest neighbours).",
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
        False,
        "--augment/--no-augment",
        help="Also train on augmented photos: the augmented copies cached beside the plain view "
        "(`extract --augment-copies N`).",
    ),
    augment_cache: Path | None = typer.Option(None, "--augment-cache", help="Train also on this augmented-view cache."),
    list_params: bool = typer.Option(
        False, "--list-params", help="Print the head's parameters and defaults, then exit."
    ),
    tta: TtaView = typer.Option(
        TtaView.none,
        "--tta",
        help="Test-time view: flip averages each valid and test photo's probabilities with its mirrored copy "
        "(cached by `extract --tta flip`).",
    ),
    split: str = SplitOpt,
    seed: int = SeedOpt,
    cache: Path = CacheOpt,
    reports: Path = ReportsOpt,
    track: bool = TrackOpt,
    json_out: bool = JsonOpt,
    quiet: bool = QuietOpt,
):
    """Fit a head on cached features: search its settings on train scored on valid, calibrate its probabilities
    (a temperature fitted on valid), refit on train + valid, score once on test; writes a run folder."""
    from featkit.heads import head_params, search_grid

    if list_params:
        return (
            _print_json(head_params(head.value))
            if json_out
            else typer.echo(
                "\n".join(f"{k} = {v!r}" for k, v in head_params(head.value).items())
                + f"\nsearched by default: {search_grid(head.value)}"
            )
        )
    from featkit.heads.fit import fit_head

    _track(track)

    paths = _plain_caches(
        features,
        data,
        backbone,
        size,
        weights,
        pooling.value,
        resize.value,
        split,
        seed,
        cache,
        decode.value,
        precision.value,
    )
    path = paths[0]
    if augment and augment_cache is None:
        from featkit.features.extract import augment_caches

        found = augment_caches(path)
        if not found:
            raise FeatkitError(f"no augmented view beside {path}: run `featkit extract ... --augment-copies N` first.")
        augment_cache = found[-1]
    run = fit_head(
        paths,
        head=head.value,
        params=_parse_params(param),
        augment_cache=augment_cache,
        reports=reports,
        seed=seed,
        quiet=quiet or json_out,
        refit=refit,
        tta=None if tta is TtaView.none else tta.value,
    )
    _print_run(run, json_out)


@app.command("ensemble")
def ensemble_cmd(
    runs: list[str] = typer.Argument(
        ..., help="Run ids or folders scored on the same test photos (same dataset and split)."
    ),
    name: str | None = typer.Option(None, "--name", help="Name of the new run (default: ensemble-N-<backbone>)."),
    reports: Path = ReportsOpt,
    track: bool = TrackOpt,
    json_out: bool = JsonOpt,
    quiet: bool = QuietOpt,
):
    """Average the test probabilities of several runs into a new run (evaluated, reported and listed like any
    other). The runs must share the test photos (same image ids, same order) and the class list."""
    from featkit.apps.ensemble import ensemble_runs

    _track(track)

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
    decode: Decode = FoundDecodeOpt,
    precision: Precision = FoundPrecisionOpt,
    combine: list[Combine] = typer.Option(
        [Combine.none],
        "--combine",
        help="Which caches to concatenate: none (each alone), backbones (per size), sizes (per backbone), all; "
        "repeat for several.",
    ),
    cache_set: list[str] = typer.Option(
        [],
        "--set",
        help="An explicit set of caches to concatenate, joined by '+' (A.h5+B.h5); repeatable, added to "
        "--combine's sets.",
    ),
    head: list[HeadName] = typer.Option([HeadName.logreg], "--head", help="Head(s) to sweep (repeatable)."),
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
    tta: list[TtaView] = typer.Option(
        [TtaView.none],
        "--tta",
        help="Test-time view of each candidate, as `fit-head --tta` (flip: cached by `extract --tta flip`); "
        "repeat for several: --tta none --tta flip fits each candidate without and with it.",
    ),
    ensemble: int = typer.Option(
        0, "--ensemble", help="Also average the best 2..N runs by validation top-1 into ensembles."
    ),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Candidates fitted at the same time (joblib processes)."),
    engine: Engine = typer.Option(
        Engine.local,
        "--engine",
        help="Where candidates run: local (joblib processes on this machine) or ray (actors on a Ray cluster; "
        f"caches and --reports on a shared folder; needs {RAY_EXTRA_HELP}).",
    ),
    address: str | None = AddressOpt,
    name: str = typer.Option("sweep", "--name", help="Name in the sweep's id: reports/sweeps/<time>-<name>/."),
    split: str = SplitOpt,
    seed: int = SeedOpt,
    cache: Path = CacheOpt,
    reports: Path = ReportsOpt,
    track: bool = TrackOpt,
    json_out: bool = JsonOpt,
    quiet: bool = QuietOpt,
):
    """Fit a grid of heads x parameters x caches (each a run folder), add ensembles, and pick the best by
    validation top-1 only; writes reports/sweeps/<id>/sweep.csv and sweep.md and prints the table."""
    from featkit.apps.sweep import no_selection_reason, plan, sweep, table
    from featkit.core.tables import SCORE_COLUMNS, markdown_table, pct

    _track(track)

    pool = (
        _plain_caches(
            features, data, backbone, size, weights, "avg", "stretch", split, seed, cache, decode.value, precision.value
        )
        if (features or data)
        else []
    )
    candidates = plan(
        pool,
        [c.value for c in combine],
        [s.split("+") for s in cache_set],
        [h.value for h in head],
        param,
        [t.value for t in tta],
        candidates_file,
    )
    result = sweep(
        candidates,
        jobs=jobs,
        engine=engine.value,
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
    typer.echo(markdown_table(table(result.rows, compact=True), SCORE_COLUMNS))
    sel = result.selected
    if sel is None:
        raise FeatkitError(no_selection_reason(result))
    typer.echo(
        f"\nselected by validation top-1: {sel.candidate} -> run {sel.run}: "
        f"valid top-1 {pct(sel.valid_top1)}, test top-1 {pct(sel.top1)}, top-5 {pct(sel.top5)}"
        f"\ntable: {result.path}/sweep.csv, sweep.md"
    )


@app.command("curve")
def curve_cmd(
    features: list[Path] = typer.Option(
        [], "--features", help="A plain-view cache (.h5); repeat it to concatenate caches of the same photos."
    ),
    data: Path | None = typer.Option(
        None, "--data", help="Or: the dataset, to find the cache extracted with --backbone/--size (as fit-head does)."
    ),
    backbone: list[str] = typer.Option(
        ["vgg16"], "--backbone", "-b", help="With --data: the backbone extracted with (repeatable)."
    ),
    size: list[int] = typer.Option([], "--size", help="With --data: the size extracted at (repeatable)."),
    weights: str = typer.Option("imagenet", "--weights", help="With --data: the weights extracted with."),
    decode: Decode = FoundDecodeOpt,
    precision: Precision = FoundPrecisionOpt,
    head: HeadName = typer.Option(HeadName.logreg, "--head", help="The head refitted at every point."),
    param: list[str] = typer.Option(
        [], "--param", "-p", help="Head parameter KEY=VALUE (KEY=V1,V2 searched on valid), as in fit-head."
    ),
    per_class: str = typer.Option(
        "1,2,5,10,20,50,all",
        "--per-class",
        help="Training photos per class at each point, comma-separated; all = every training photo.",
    ),
    repeats: int = typer.Option(3, "--repeats", help="Seeded draws per point (mean and spread are reported)."),
    by: CurveBy = typer.Option(
        CurveBy.none, "--by", help="class: also per-class curves of the 10 hardest dishes (curve_by_class.csv/.png)."
    ),
    refit: bool = typer.Option(
        False,
        "--refit/--no-refit",
        help="Refit each point on its photos + the validation photos (as fit-head does by default); default: "
        "train on the point's photos only, so the x axis counts every photo the head saw.",
    ),
    split: str = SplitOpt,
    seed: int = SeedOpt,
    cache: Path = CacheOpt,
    reports: Path = ReportsOpt,
    track: bool = TrackOpt,
    json_out: bool = JsonOpt,
    quiet: bool = QuietOpt,
):
    """Label-efficiency curve: the head refitted on stratified, seeded subsets of the training photos (validation
    and test unchanged, settings searched on validation), top-1/top-5 per point; writes reports/curves/<id>/
    (curve.csv, curve.json, curve.png) and prints the photos per class at which it reaches 90 % of the full data."""
    from featkit.apps.curve import CURVE_SCORES, curve_table, learning_curve, parse_per_class
    from featkit.core.tables import markdown_table, pct

    try:
        points = parse_per_class(per_class)
    except FeatkitError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    _track(track)
    paths = _plain_caches(
        features, data, backbone, size, weights, "avg", "stretch", split, seed, cache, decode.value, precision.value
    )
    result = learning_curve(
        paths,
        head=head.value,
        params=_parse_params(param),
        per_class=points,
        repeats=repeats,
        seed=seed,
        by_class=by == CurveBy.class_,
        refit=refit,
        reports=reports,
        quiet=quiet or json_out,
    )
    if json_out:
        return _print_json(result.to_dict())
    typer.echo(markdown_table(curve_table(result.points), CURVE_SCORES))
    full = pct(result.full_top1) if result.full_top1 is not None else "n/a (no `all` point)"
    reach = f"{result.reach90} photos per class" if result.reach90 else "not reached by the counted points"
    typer.echo(f"\nfull-data top-1 {full}; 90 % of it: {reach}\ncurve: {result.path}/curve.csv, curve.png")


@app.command("evaluate")
def evaluate_cmd(
    run: str = typer.Argument(..., help="Run id, run folder, or 'latest'."),
    k: list[int] = typer.Option([1, 5], "--k", help="Top-k accuracies to report, repeatable."),
    reports: Path = ReportsOpt,
    json_out: bool = JsonOpt,
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="The scores only, without the most confused pairs and the list of files."
    ),
):
    """Top-k accuracy, per-class accuracy, macro F1, log loss, confusion matrix (CSV + PNG) and most confused pairs."""
    from featkit.apps.evaluate import evaluate_run
    from featkit.core.tables import pct

    r = _load_run(run, reports)
    m = evaluate_run(r, ks=k, reports=reports)
    if json_out:
        return _print_json({"run": r.id, **m})
    typer.echo(f"run {r.id} on {m['n']:,} test photos")
    for kk in sorted(set(k) | {1, 5}):
        typer.echo(f"  top-{kk:<3} {pct(m['topk'][str(kk)])}")
    typer.echo(f"  macro F1 {pct(m['macro_f1'])}   log loss {m['log_loss']:.4f}")
    if quiet:
        return
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
    from featkit.core.tables import SCORE_COLUMNS, markdown_table

    r = _load_run(run, reports, kinds=("head", "cnn"))
    df = sensitivity(r, reports=reports, quiet=quiet or json_out)
    if json_out:
        return _print_json(df.to_dict(orient="records"))
    typer.echo(markdown_table(df, SCORE_COLUMNS))
    typer.echo(f"saved: {r.path}/sensitivity.csv, sensitivity.md")


def _load_run(ref: str, reports: Path, kinds: tuple[str, ...] | None = None):
    """load_run, saying on stderr which run "latest" took."""
    from featkit.runs.store import load_run

    r = load_run(ref, reports, kinds=kinds)
    if ref == "latest":
        kind = f"{' or '.join(kinds)} " if kinds else ""
        sys.stderr.write(f"latest {kind}run: {r.id}\n")
    return r


@app.command("runs")
def runs_cmd(
    kind: RunKind | None = typer.Option(None, "--kind", help="Only runs of this kind."),
    dataset: str | None = typer.Option(
        None, "--dataset", help="Only runs on this dataset (its name or key, or a part of one)."
    ),
    sweep: str | None = typer.Option(
        None, "--sweep", help="Only the runs a sweep fitted or built (its id, a unique part of it, or 'latest')."
    ),
    reports: Path = ReportsOpt,
    json_out: bool = JsonOpt,
    quiet: bool = QuietOpt,
):
    """List the finished runs, newest first: id, kind, dataset (classes), backbone, size, head or preset, views,
    validation and test top-1, date. Runs are compared by validation top-1; test is shown, never used to choose."""
    from featkit.apps.runs_list import list_runs_table
    from featkit.core.tables import markdown_table

    listing = list_runs_table(reports, kind=kind.value if kind else None, dataset=dataset, sweep=sweep)
    if listing.skipped:
        sys.stderr.write(
            f"warning: {len(listing.skipped)} run(s) skipped (deleted or damaged while listing): "
            f"{'; '.join(listing.skipped[:3])}\n"
        )
    if json_out:
        return _print_json(listing.records())
    if not listing.rows:
        typer.echo(f"no finished run matches in {reports / 'runs'}.")
        return
    import pandas as pd

    typer.echo(markdown_table(pd.DataFrame(listing.table())))
    if not quiet:
        typer.echo(f"{len(listing.rows)} run(s)")


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
    run: str = typer.Argument(
        ..., help="Run id, run folder, 'latest', or 'sweep:latest' / 'sweep:<id>' (the run a sweep selected)."
    ),
    photos: list[Path] = typer.Argument(..., help="Photo files and/or folders of photos."),
    top: int = typer.Option(5, "--top", help="How many classes to show per photo."),
    reports: Path = ReportsOpt,
    json_out: bool = JsonOpt,
    quiet: bool = typer.Option(
        False,
        "--quiet",
        "-q",
        help="No loading messages and no warning line per unreadable photo (they are still counted, and listed in "
        "--json). The run that 'latest' or 'sweep:...' named is always said.",
    ),
):
    """Top-k dish names with calibrated probabilities for new photos, with any run: a head on one cache or several
    (backbones and sizes side by side), with the mirrored view, an ensemble, or a CNN. Photos are decoded, resized
    and passed through each backbone exactly as the run's test photos were; each backbone is loaded once.

    Unreadable photos get a message and do not stop the batch.
    """
    from featkit.apps.predict import predict

    def say(text: str) -> None:  # which run "latest" / "sweep:..." named: always shown (stderr)
        sys.stderr.write(text + "\n")

    results, failures = predict(run, photos, top=top, reports=reports, quiet=quiet, say=say)
    for f in [] if quiet else failures:
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


export_app = typer.Typer(
    help="Take results out of featkit: a run as one ONNX file (photos to probabilities), features as Parquet or "
    "NumPy files.",
    no_args_is_help=True,
)
app.add_typer(export_app, name="export")


@export_app.command("model")
def export_model_cmd(
    run: str = typer.Argument(
        ..., help="Run id, run folder, 'latest', or 'sweep:latest' / 'sweep:<id>' (the run a sweep selected)."
    ),
    out: Path = typer.Option(..., "--out", help="The .onnx file to write; its sidecar (same name, .json) beside it."),
    precision: Precision = typer.Option(
        Precision.float32,
        "--precision",
        help="float32, or int8: backbones quantised, calibrated on the run's training photos (needs its dataset).",
    ),
    reports: Path = ReportsOpt,
    cache: Path = CacheOpt,
    quiet: bool = QuietOpt,
    json_out: bool = JsonOpt,
):
    """One ONNX file from photo pixels to the run's calibrated probabilities, runnable with onnxruntime alone.

    Input 'images': uint8 RGB [N, S, S, 3], photos resized as the run's were (model.json names size and resize);
    output 'probabilities': float32 [N, classes] in the order of model.json's classes. Works for head runs (one
    cache or several), mirrored-view runs, ensembles and CNN runs. Needs the export extra: pip install
    "featkit\\[export]".
    """
    from dataclasses import asdict

    from featkit.apps.export_model import export_model

    result = export_model(run, out, precision=precision.value, reports=reports, cache_dir=cache, quiet=quiet)
    if json_out:
        return _print_json(asdict(result))
    typer.echo(f"{result.path}  ({result.precision}, {result.bytes / 2**20:.1f} MiB, run {result.run})")
    typer.echo(f"{result.sidecar}  (classes, size, resize, inputs, sha256)")


@app.command("train-cnn")
def train_cnn_cmd(
    data: Path | None = typer.Option(None, "--data", help="Dataset folder, .zip or .tar(.gz)."),
    preset: str = typer.Option(
        "benchmark-64", "--preset", help="A row of the study (see --list); options below override it."
    ),
    list_: bool = typer.Option(False, "--list", help="List the presets with the study's own figures, then exit."),
    model: CnnModel | None = typer.Option(
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
    optimizer: Optimizer | None = typer.Option(None, "--optimizer", help="The optimiser (default: the preset's)."),
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
    track: bool = TrackOpt,
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

    _track(track)

    options = {
        "model": model and model.value,
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
        "optimizer": optimizer and optimizer.value,
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
    from featkit.core.tables import pct
    from featkit.report.build import build_report

    def show(r: dict) -> None:
        if not json_out:
            typer.echo(
                f"{r['preset']:<30} top-1 {pct(r['top1'])}  top-5 {pct(r['top5'])}  "
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


# ---- featkit export features (the `export` group is declared above, with `export model`) -------------------------
class ExportFormat(StrEnum):
    parquet = "parquet"
    npy = "npy"


@export_app.command("features")
def export_features_cmd(
    cache_file: Path | None = typer.Argument(None, help="The feature cache (.h5) to export; or use --data below."),
    data: Path | None = typer.Option(
        None, "--data", help="Or: the dataset, to find the cache extracted with the options below."
    ),
    backbone: str = typer.Option("vgg16", "--backbone", "-b", help="With --data: the backbone extracted with."),
    size: int | None = typer.Option(None, "--size", help="With --data: the size extracted at."),
    weights: str = typer.Option("imagenet", "--weights", help="With --data: the weights extracted with."),
    pooling: Pooling = typer.Option(Pooling.avg, "--pooling", help="With --data: the pooling extracted with."),
    resize: Resize = typer.Option(Resize.stretch, "--resize", help="With --data: the resize mode extracted with."),
    decode: Decode = FoundDecodeOpt,
    precision: Precision = FoundPrecisionOpt,
    fmt: ExportFormat = typer.Option(
        ExportFormat.parquet,
        "--format",
        help="parquet: one file, one row per photo, the feature vector as a fixed-size list (needs the export extra); "
        "npy: a folder with features.npy, index.csv and meta.json.",
    ),
    out: Path = typer.Option(
        ..., "--out", help="Where to write (a .parquet file, or a folder for npy); must not exist."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an earlier export of the same format at --out."),
    split: str = SplitOpt,
    seed: int = SeedOpt,
    cache: Path = CacheOpt,
    json_out: bool = JsonOpt,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing (the exit code says whether it worked)."),
):
    """Write a feature cache as Parquet or NumPy files: image id, path in the dataset, label, class id and name,
    split and the feature vector of every cached photo, exactly as stored (float16 or float32), with the cache's
    backbone, size, classes and dataset fingerprint as metadata. Nothing partial is ever left at --out."""
    from featkit.features.export import export_features

    if cache_file is None:
        caches = _plain_caches(
            [],
            data,
            [backbone],
            [size] if size else [],
            weights,
            pooling.value,
            resize.value,
            split,
            seed,
            cache,
            decode=decode.value,
            precision=precision.value,
        )
        cache_file = caches[0]
    elif data is not None:
        raise typer.BadParameter("give a cache file or --data, not both.")
    summary = export_features(cache_file, out, fmt=fmt.value, force=force)
    if json_out:
        return _print_json(summary)
    if not quiet:
        typer.echo(
            f"{summary['rows']:,} rows x {summary['feature_dim']} {summary['dtype']} features -> {summary['out']}"
        )


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
