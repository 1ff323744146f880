"""Output files written whole or not at all.

A command's outputs (WAVs, pictures, arrays, JSON reports) go to a hidden temporary
file beside their final name, which is renamed into place once complete. A write that
fails (a full disk, a quota, a file size limit) removes the temporary file and raises
one :class:`~flowkit.errors.FlowkitError` naming the output, so a user never finds a
half-written file under the name they asked for.

Example:
    >>> import json, tempfile
    >>> from pathlib import Path
    >>> path = Path(tempfile.mkdtemp()) / "report.json"
    >>> write_atomically(path, lambda tmp: tmp.write_text(json.dumps({"ok": True}))).read_text()
    '{"ok": true}'
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import FlowkitError

__all__ = ["write_atomically", "write_json"]


def write_atomically(path: str | os.PathLike, write: Callable[[Path], Any],
                     errors: tuple[type[BaseException], ...] = (), size: int | None = None) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path`` (same suffix, so writers that
    pick a format by extension still work), then rename it to ``path``; on an
    ``OSError`` (or one of ``errors``: a library's own write error) nothing is left
    behind and the error names ``path`` (and ``size``, the bytes it needed, if given)."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except (OSError, *errors) as error:
        tmp.unlink(missing_ok=True)
        if isinstance(error, OSError):  # a short write without an errno says only how many bytes went out
            reason = error.strerror or "the disk is full or a file size limit was reached"
        else:
            reason = " ".join(str(error).split())
        needed = f"{size} bytes: " if size is not None else ""
        raise FlowkitError(f"could not write {path} ({needed}{reason}); nothing was left half-written") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | os.PathLike, value: Any) -> Path:
    """Write ``value`` as indented, strict JSON (no NaN), atomically."""
    import json

    text = json.dumps(value, indent=2, allow_nan=False)
    return write_atomically(path, lambda tmp: tmp.write_text(text))
