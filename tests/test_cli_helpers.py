"""The core command line: strict JSON output and the shared flag validators."""

import argparse
import json

import pytest

from flowkit.cli import finite_float, json_line, non_negative_float, positive_float, positive_int


def test_command_output_json_never_holds_nan():
    line = json_line({"bits_per_dim": float("nan"), "rows": [1.5, float("inf")], "ok": 2})
    assert json.loads(line) == {"bits_per_dim": None, "rows": [1.5, None], "ok": 2} and "NaN" not in line


@pytest.mark.parametrize("parse, text, message", [
    (positive_int, "0", "at least 1"), (positive_int, "1.5", "whole number"),
    (finite_float, "nan", "finite"), (finite_float, "-inf", "finite"), (finite_float, "x", "a number"),
    (positive_float, "0", "greater than 0"), (non_negative_float, "-0.1", "at least 0"),
])
def test_flag_validators_refuse_bad_values(parse, text, message):
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        parse(text)


def test_flag_validators_accept_good_values():
    assert positive_int("3") == 3 and finite_float("-2.5") == -2.5 and positive_float("1e-4") == 1e-4
    assert non_negative_float("0") == 0.0
