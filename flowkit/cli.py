"""The ``flowkit`` command. Subcommands come from plug-ins registered under the entry
point group ``flowkit.plugins``: each entry point is a function ``register(subparsers)``
that adds one subcommand (``flowkit image ...`` comes from flowkit_image).

Plug-ins load one by one: a broken or half-installed one is reported in one line and
never breaks the others or ``flowkit --help``. Errors a user can fix (bad data,
shapes, checkpoints, files) print one line and exit 2; training stopped by SIGINT or
SIGTERM saves a checkpoint and exits ``128 + signal``; an unexpected internal error
prints one line and exits 1 (``FLOWKIT_TRACEBACK=1`` shows the traceback).

Warnings raised by a command (flowkit's own, such as "no native bfloat16 here, running
float32", or a library's) are held back: a command that succeeds prints each one after it
ends as one line, ``flowkit: note: ...``; a command that fails prints only its error line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import warnings
from importlib.metadata import entry_points

from . import __version__
from .errors import FlowkitError
from .train.interrupt import TrainingInterrupted

PLUGIN_GROUP = "flowkit.plugins"
TRACEBACK_VARIABLE = "FLOWKIT_TRACEBACK"

__all__ = ["add_training_flags", "build_parser", "finite_float", "json_line", "main", "non_negative_float",
           "non_negative_int", "note_resumed", "positive_float", "positive_int", "print_note", "seed"]

MAX_SEED = 2**63 - 1  # torch.manual_seed takes up to a signed 64-bit integer; no count of ours is larger


def json_line(value: object) -> str:
    """One line of strict JSON for a command's output: NaN and infinities become ``null``
    (JSON has no NaN, and a reader should not have to guess)."""
    def clean(v: object) -> object:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(value), allow_nan=False)


def _integer_at_least(text: str, low: int, requirement: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {_short(text)!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"{requirement}, got {_short(str(value))}")
    if value > MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be at most 2**63 - 1, got a number of {len(str(value))} digits")
    return value


def _short(text: str, limit: int = 40) -> str:
    """A value for an error line: long ones cut, with their length said."""
    return text if len(text) <= limit else f"{text[:20]}... ({len(text)} characters)"


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (counts, steps, sizes)."""
    return _integer_at_least(text, 1, "must be at least 1")


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0 (warmup steps, optional counts)."""
    return _integer_at_least(text, 0, "must be 0 or more")


def finite_float(text: str) -> float:
    """argparse type: a finite number (no NaN or infinity)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {_short(text)!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (minutes, learning rates)."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {value}")
    return value


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0 (temperatures, sigmas, strengths)."""
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def seed(text: str) -> int:
    """argparse type: a random seed, a whole number from 0 to 2**63 - 1."""
    return _integer_at_least(text, 0, "must be 0 or more")


def add_training_flags(parser: argparse.ArgumentParser, out_default: str | None = None) -> None:
    """The flags every plug-in's training command shares: ``--out`` (required unless a
    default is given), ``--steps``, ``--minutes``, ``--seed``, ``--resume`` and
    ``--checkpoint-every``; the values go to :func:`flowkit.train.train_config` (or
    :func:`flowkit.train.resume_run`), where an absent flag (``None``) keeps the preset's
    or the resumed run's value."""
    parser.add_argument("--out", required=out_default is None, default=out_default,
                        help="the run folder (checkpoint/, metrics, reports)"
                             + (f"; default {out_default}" if out_default else ""))
    parser.add_argument("--steps", type=positive_int, default=None, help="training steps (default: the preset's)")
    parser.add_argument("--minutes", type=positive_float, default=None,
                        help="stop training after this much wall time (a budget of this command: --resume does not "
                             "carry it over)")
    parser.add_argument("--seed", type=seed, default=None, help="random seed (default 0; a resumed run reuses its own)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    parser.add_argument("--checkpoint-every", type=positive_int, default=None, metavar="N",
                        help="save a checkpoint every N steps (default: the preset's; SIGTERM/SIGINT always save)")


def _register_plugins(subparsers: argparse._SubParsersAction) -> list[str]:
    """Load each plug-in on its own; return one line per plug-in that failed to load."""
    broken = []
    for entry in sorted(entry_points(group=PLUGIN_GROUP), key=lambda e: e.name):
        try:
            entry.load()(subparsers)
        except Exception as error:  # a broken plug-in must not take the others down
            broken.append(f"plug-in {entry.name!r} could not be loaded ({type(error).__name__}: {error})")
    return broken


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line (``flowkit: error: ...``) and exit 2, no usage dump;
    subcommand parsers inherit the class. A negative number in scientific notation
    (``--alpha -1e6``) is a value, not a flag (argparse knows only ``-5`` and ``-0.5``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")

    def error(self, message: str):
        command = self.prog.removeprefix("flowkit").strip()
        where = f"{command}: " if command else ""
        self.exit(2, f"flowkit: error: {where}{' '.join(message.split())}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="flowkit", description="Normalizing flows for images, audio and text.")
    parser.add_argument("--version", action="version", version=f"flowkit {__version__}")
    subparsers = parser.add_subparsers(dest="plugin", metavar="PLUGIN")
    parser.broken_plugins = _register_plugins(subparsers)
    return parser


def _fail(message: str, code: int) -> int:
    print(f"flowkit: {message}", file=sys.stderr)
    return code


def print_note(line: str) -> None:
    """Tell the user something that is not an error, as one ``flowkit: note: ...`` line on stderr."""
    print(f"flowkit: note: {line}", file=sys.stderr)


def note_resumed(report: dict) -> None:
    """The note of a resumed training command: what its report's ``resumed`` record says
    (:class:`flowkit.train.Resumed`), if it has one."""
    resumed = report.get("resumed")
    if resumed:
        from .train.resume import Resumed

        print_note(Resumed(**resumed).note())


def warning_notes(caught: list[warnings.WarningMessage]) -> list[str]:
    """One line per distinct warning message, in the order first seen: its text with the
    whitespace collapsed (a multi-line library warning stays one line)."""
    lines = [" ".join(str(w.message).split()) for w in caught]
    return [line for i, line in enumerate(lines) if line and line not in lines[:i]]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    for line in parser.broken_plugins:
        print(f"flowkit: warning: {line}", file=sys.stderr)
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # a bad flag (one line already printed) or --help / --version
        return stop.code if isinstance(stop.code, int) else 2
    if not hasattr(args, "run"):
        parser.print_help()
        return 0 if args.plugin is None else 2
    with warnings.catch_warnings(record=True) as caught:
        code = _run(args)
    if code == 0:
        for line in warning_notes(caught):
            print_note(line)
    return code


def _run(args: argparse.Namespace) -> int:
    """Run the chosen command; map what it raises to one line and an exit code."""
    try:
        args.run(args)
    except TrainingInterrupted as stop:
        return _fail(str(stop), 128 + stop.signum)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except (FlowkitError, OSError) as error:
        return _fail(f"error: {_describe(error)}", 2)
    except Exception as error:
        if os.environ.get(TRACEBACK_VARIABLE):
            raise
        return _fail(f"internal error: {type(error).__name__}: {error} "
                     f"(set {TRACEBACK_VARIABLE}=1 to see the traceback)", 1)
    return 0


def _describe(error: BaseException) -> str:
    text = " ".join(str(error).split())  # one line whatever the message holds
    if isinstance(error, OSError) and error.filename and str(error.filename) not in text:
        text = f"{text}: {error.filename}"
    return text


if __name__ == "__main__":
    sys.exit(main())
