"""The core command line: strict JSON output and the shared flag validators."""

import argparse
import json

import pytest

from flowkit.cli import (
    add_training_flags,
    finite_float,
    json_line,
    non_negative_float,
    positive_float,
    positive_int,
    seed,
)


def test_command_output_json_never_holds_nan():
    line = json_line({"bits_per_dim": float("nan"), "rows": [1.5, float("inf")], "ok": 2})
    assert json.loads(line) == {"bits_per_dim": None, "rows": [1.5, None], "ok": 2} and "NaN" not in line


@pytest.mark.parametrize("parse, text, message", [
    (positive_int, "0", "at least 1"), (positive_int, "1.5", "whole number"),
    (finite_float, "nan", "finite"), (finite_float, "-inf", "finite"), (finite_float, "x", "a number"),
    (positive_float, "0", "greater than 0"), (non_negative_float, "-0.1", "at least 0"),
    (seed, "-1", "0 or more"), (seed, str(2**63), "at most 2\\*\\*63 - 1, got a number of 19 digits"),
    (seed, "9" * 300, "of 300 digits"),
])
def test_flag_validators_refuse_bad_values(parse, text, message):
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        parse(text)


def test_flag_validators_accept_good_values():
    assert positive_int("3") == 3 and finite_float("-2.5") == -2.5 and positive_float("1e-4") == 1e-4
    assert non_negative_float("0") == 0.0 and seed(str(2**63 - 1)) == 2**63 - 1


def test_negative_numbers_in_scientific_notation_are_values_not_flags():
    from flowkit.cli import build_parser

    command = ["audio", "edit-pitch", "--checkpoint", "c", "--input", "i", "--out", "o", "--alpha"]
    assert build_parser().parse_args([*command, "-1e6"]).alpha == -1e6  # was "expected one argument"
    assert build_parser().parse_args([*command, "-.5"]).alpha == -0.5


def test_shared_training_flags_leave_absent_values_to_the_preset():
    parser = argparse.ArgumentParser()
    add_training_flags(parser)
    args = parser.parse_args(["--out", "run", "--steps", "5"])
    assert (args.out, args.steps, args.minutes, args.seed, args.resume, args.checkpoint_every) == ("run", 5, None,
                                                                                                  None, False, None)
    with pytest.raises(SystemExit):
        parser.parse_args([])  # --out is required without a default
    defaulted = argparse.ArgumentParser()
    add_training_flags(defaulted, out_default="out/glow")
    assert defaulted.parse_args([]).out == "out/glow"


def _warning_command(subparsers):
    """A plug-in whose command warns twice (once with a two-line message), then fails
    with a user error when asked to."""
    import warnings

    from flowkit.errors import DataError

    def run(args):
        warnings.warn("cpu here has no native bfloat16;\n  running float32", UserWarning)
        warnings.warn("cpu here has no native bfloat16;\n  running float32", UserWarning)
        if args.fail:
            raise DataError("the input is bad")

    parser = subparsers.add_parser("warner")
    parser.add_argument("--fail", action="store_true")
    parser.set_defaults(run=run)


@pytest.mark.parametrize("fail", [False, True])
def test_warnings_are_one_note_line_after_success_and_absent_from_an_error(monkeypatch, capsys, fail):
    import flowkit.cli as cli

    monkeypatch.setattr(cli, "_register_plugins", lambda subparsers: (_warning_command(subparsers), [])[1])
    code = cli.main(["warner", *(["--fail"] if fail else [])])
    lines = capsys.readouterr().err.strip().splitlines()
    if fail:  # the one-line error contract holds whatever a library warned about
        assert code == 2 and lines == ["flowkit: error: the input is bad"]
    else:  # each distinct warning once, on one line
        assert code == 0 and lines == ["flowkit: note: cpu here has no native bfloat16; running float32"]


def test_every_flag_of_every_command_says_what_it_is():
    """Issue 30, item 16: `text fit --data`, `--steps` and 39 other flags had no help text."""
    from flowkit.cli import build_parser

    def silent(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from silent(sub, [*path, name])
            elif action.option_strings and not action.help:
                yield f"{' '.join(path)} {action.option_strings[0]}"

    assert list(silent(build_parser(), [])) == []
