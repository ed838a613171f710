"""Text files a user names (recipes, data, split files, templates), read as common tools write them: UTF-8 with or
without a byte-order mark (Excel, Notepad), Windows or Unix line ends. Text that is not UTF-8 is one line naming
the file, never a traceback."""

from __future__ import annotations

from pathlib import Path

from medsft.errors import UserError


def read_text(path: Path, what: str = "file") -> str:
    """The file's text, a leading BOM removed; line ends are left to the parser (JSON, YAML and splitlines read
    CRLF as LF)."""
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"{what} {path} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    except IsADirectoryError:
        raise UserError(f"{what} {path} is a folder; give a file") from None

