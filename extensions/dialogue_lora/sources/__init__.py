"""Readers that turn an input (text file, Discord export, game-dialogue CSV) into a stream of turns.

`detect_source(path)` picks the reader from the content when `--source auto`:
a folder, or a file whose content starts with `{`, is a Discord export; a file whose first line
holds a comma and the speaker and text columns (or whose name ends in .csv) is a CSV; anything else
is dialogue text.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..dialogue import check_text_file, open_text
from ..errors import UserError

SOURCES = ("auto", "text", "discord", "csv")


def detect_source(path: str | os.PathLike, csv_columns: tuple[str, ...] = ()) -> str:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file or folder (--txtfilename)")
    if path.is_dir():
        return "discord"
    check_text_file(path)
    with open_text(path) as f:
        head = f.read(4096)
    stripped = head.lstrip()
    if stripped.startswith("{") or (stripped.startswith("[") and path.suffix.lower() == ".json"):
        return "discord"
    if path.suffix.lower() == ".csv":
        return "csv"
    first = stripped.split("\n", 1)[0]
    if "," in first and csv_columns and all(c and c in first for c in csv_columns):
        return "csv"
    return "text"
