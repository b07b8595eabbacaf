"""Command-line conventions, checked on every command: options with a fixed set of values list them in --help and
refuse others as usage errors (exit 2); a flag name means one thing everywhere; every command takes --json and
--quiet; scores print as percentages; install hints survive rich markup. No shared data needed."""

from __future__ import annotations

import functools
import inspect
import types
import typing
from enum import Enum

import pytest
import typer
from typer.models import OptionInfo
from typer.testing import CliRunner

from featkit import cli
from featkit.cli import app


def _base(hint):
    """The type of an option's values: without `| None` and `list[...]`."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        return _base(args[0])
    return _base(args[0]) if typing.get_origin(hint) is list else hint


def _options(typer_app: typer.Typer, prefix: tuple[str, ...] = ()):
    """(command path, flags, value type) of every option of every command, from the declared signatures."""
    for command in typer_app.registered_commands:
        path = (*prefix, command.name or command.callback.__name__)
        hints = typing.get_type_hints(command.callback)
        for name, param in inspect.signature(command.callback).parameters.items():
            if isinstance(param.default, OptionInfo):
                flags = [d for decl in param.default.param_decls for d in decl.split("/")]
                yield path, flags, _base(hints[name])
    for group in typer_app.registered_groups:
        yield from _options(group.typer_instance, (*prefix, group.name))


OPTIONS = list(_options(app))
COMMANDS = sorted({path for path, _, _ in OPTIONS})
CHOICES = [
    (path, flags[0], [e.value for e in kind])
    for path, flags, kind in OPTIONS
    if isinstance(kind, type) and issubclass(kind, Enum)
]


@functools.cache
def _help(*path: str) -> str:
    res = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    return res.stdout


def test_choice_values_are_the_librarys():
    from featkit.apps.sweep import COMBINE_MODES
    from featkit.apps.sweep import ENGINES as SWEEP_ENGINES
    from featkit.backbones.base import POOLINGS
    from featkit.cnn.presets import MODELS, OPTIMIZERS
    from featkit.core.schema import RUN_KINDS
    from featkit.data.augment import TTA_VIEWS
    from featkit.data.images import DECODE_MODES, RESIZE_MODES
    from featkit.features.extract import PRECISIONS
    from featkit.features.jobs import ENGINES
    from featkit.heads import HEADS

    values = {
        cli.Pooling: POOLINGS,
        cli.Resize: RESIZE_MODES,
        cli.Decode: DECODE_MODES,
        cli.Precision: PRECISIONS,
        cli.Engine: ENGINES,
        cli.HeadName: tuple(HEADS),
        cli.TtaView: ("none", *TTA_VIEWS),
        cli.Combine: COMBINE_MODES,
        cli.CnnModel: MODELS,
        cli.Optimizer: OPTIMIZERS,
        cli.RunKind: RUN_KINDS,
    }
    for enum, library in values.items():
        assert sorted(e.value for e in enum) == sorted(library), enum
    assert SWEEP_ENGINES == ENGINES


def test_every_choice_option_lists_its_values_and_refuses_others():
    assert len(CHOICES) >= 20  # extract, quantize, fit-head, sweep and train-cnn have some
    for path, flag, choices in CHOICES:
        listed = "|".join(choices)
        assert listed in _help(*path), (path, flag)
        required = ["--data", "x"] if path == ("extract",) else []  # parsing stops at the bad value either way
        res = CliRunner().invoke(app, [*path, *required, flag, "nonsense"])
        assert res.exit_code == 2, (path, flag, res.output)
        assert f"Invalid value for '{flag}'" in res.output and "'nonsense' is not one of" in res.output


def test_usage_errors_exit_2_through_main(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["fit-head", "--head", "svm"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Invalid value for '--head'" in err and "Traceback" not in err


def test_a_flag_means_one_thing_everywhere():
    seen: dict[str, set] = {}
    for _, flags, kind in OPTIONS:
        if isinstance(kind, type) and issubclass(kind, Enum):
            kind = ("choice", tuple(e.value for e in kind))
        for flag in flags:
            seen.setdefault(flag, set()).add(kind)
    # --tta VIEW: the test-time view (extract caches it; fit-head and sweep score with it)
    assert seen["--tta"] == {("choice", ("none", "flip"))}
    # --augment: train on augmented photos (fit-head: the cached copies; train-cnn: on the fly), always a switch;
    # how many copies extract caches is --augment-copies
    assert seen["--augment"] == {bool} and seen["--augment-copies"] == {int}
    assert seen["--engine"] == {("choice", ("local", "ray"))}
    assert seen["--head"] == {("choice", ("logreg", "softmax", "lightgbm", "knn"))}
    assert seen["--quiet"] == {bool} and seen["--json"] == {bool}


def test_every_command_takes_json_and_quiet():
    assert len(COMMANDS) >= 15
    for command in COMMANDS:
        flags = {flag for path, fl, _ in OPTIONS if path == command for flag in fl}
        assert {"--json", "--quiet", "-q"} <= flags, command


def test_help_names_the_ray_extra_and_onnx_threads():
    for path in (("extract",), ("sweep",)):
        text = " ".join(_help(*path).split())
        assert 'pip install "featkit[ray]"' in text, path
    assert "FEATKIT_ONNX_THREADS" in _help("extract")


def test_shell_completion_is_offered():
    text = _help()
    assert "--install-completion" in text and "--show-completion" in text


def test_scores_print_as_percentages():
    import pandas as pd

    from featkit.core.tables import SCORE_COLUMNS, markdown_table, pct

    assert (pct(0.53333), pct(1), pct(0.0005), pct(None), pct(float("nan"))) == (
        "53.33 %",
        "100.00 %",
        "0.05 %",
        "",
        "",
    )
    df = pd.DataFrame({"view": ["plain", "flip"], "n": [80, 80], "top1": [0.5375, 0.5], "log_loss": [1.23456, None]})
    assert markdown_table(df, SCORE_COLUMNS).splitlines()[2:] == [
        "| plain | 80 | 53.75 % | 1.235 |",
        "| flip | 80 | 50.00 % |  |",
    ]
    assert markdown_table(df).splitlines()[2] == "| plain | 80 | 0.5375 | 1.235 |"  # other tables keep numbers


def test_sweep_tta_views(tmp_path):
    from featkit.apps.sweep import plan
    from featkit.core.errors import FeatkitError

    sets = [["a.h5"]]
    assert [c.tta for c in plan(sets=sets)] == [None]
    assert [c.tta for c in plan(sets=sets, tta=["flip"])] == ["flip"]
    assert [c.tta for c in plan(sets=sets, tta=["none", "flip", "flip"])] == [None, "flip"]
    with pytest.raises(FeatkitError, match="--tta 'on': use none or flip"):
        plan(sets=sets, tta=["on"])
