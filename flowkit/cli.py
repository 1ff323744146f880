"""The ``flowkit`` command. Subcommands come from plug-ins registered under the entry
point group ``flowkit.plugins``: each entry point is a function ``register(subparsers)``
that adds one subcommand (``flowkit image ...`` comes from flowkit_image).

Errors a user can fix (bad data, shapes, checkpoints) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import entry_points

from . import __version__
from .errors import FlowkitError

PLUGIN_GROUP = "flowkit.plugins"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flowkit", description="Normalizing flows for images, audio and text.")
    parser.add_argument("--version", action="version", version=f"flowkit {__version__}")
    subparsers = parser.add_subparsers(dest="plugin", metavar="PLUGIN")
    for entry in sorted(entry_points(group=PLUGIN_GROUP), key=lambda e: e.name):
        entry.load()(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 0 if args.plugin is None else 2
    try:
        args.run(args)
    except (FlowkitError, FileNotFoundError, IsADirectoryError, PermissionError) as error:
        print(f"flowkit: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("flowkit: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
