"""Text files a user names (recipes, data, split files, templates), read as common tools write them: UTF-8 with or
without a byte-order mark (Excel, Notepad), Windows or Unix line ends. Text that is not UTF-8, and JSON that does not
parse or is not what was asked for, is one line naming the file, never a traceback."""

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



def parse_json(text: str, where: str, kind: type | None = None):
    """JSON text a user gave (`where`: what and where it is, for the line), one line when it does not parse or is not
    a JSON `kind` (dict: an object, list: a list)."""
    import json

    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{where} is not valid JSON (line {e.lineno}): {e.msg}") from None
    if kind is not None and not isinstance(value, kind):
        raise UserError(f"{where} must be a JSON {'object' if kind is dict else 'list'}")
    return value


def read_json(path: Path, what: str = "file", kind: type | None = None):
    """A JSON file a user names, read as read_text reads it and parsed by parse_json."""
    return parse_json(read_text(path, what), f"{what} {path}", kind)
