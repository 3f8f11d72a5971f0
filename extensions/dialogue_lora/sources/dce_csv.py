"""DiscordChatExporter's CSV format -> messages in the shape of its JSON export.

DiscordChatExporter writes a channel as CSV with the header `AuthorID,Author,Date,Content,Attachments,Reactions`.
Read as a plain table it would keep mentions' `@`, never split conversations at a silence and count a file
without text as an empty line; so each row becomes a message of the JSON export's shape and goes through the
Discord reader (filters, gaps, merging, the low-quality rule). What the CSV lacks, the reader does without:
there is no bot flag (a bot is a speaker like anyone), and a date in a format not known here splits nothing.
A system message (a join, a pin, a call) is known by the text the exporter writes in its place.
"""
from __future__ import annotations

import csv
import io
import re
import sys
from datetime import datetime
from pathlib import Path

from ..errors import UserError

KIND = "dce_csv"
HEADER = ("AuthorID", "Author", "Date", "Content")
# The date formats DiscordChatExporter has written (its default, and the usual locales' short dates).
_DATE_FORMATS = ("%d-%b-%y %I:%M %p", "%d-%b-%Y %I:%M %p", "%m/%d/%Y %I:%M %p", "%m/%d/%Y %I:%M:%S %p",
                 "%d/%m/%Y %H:%M", "%d/%m/%Y %H:%M:%S", "%d.%m.%Y %H:%M", "%d.%m.%Y %H:%M:%S", "%Y-%m-%d %H:%M",
                 "%Y-%m-%d %H:%M:%S")
_DISCRIMINATOR = re.compile(r"#\d{4}$")  # `alex#1234`, a name before Discord's usernames became unique
# The text the CSV writes in place of a system message (the JSON export has its type): not the author's words
_SYSTEM_TEXT = re.compile(r"Added (?:a recipient|.{1,100} to the group)\.|Removed (?:a recipient|.{1,100} from the group)\."
                          r"|Left the group\.|Started a call that lasted [\d,]+ minutes\.|Changed the channel "
                          r"(?:name(?:: .*|\.)|icon\.)|Pinned a message\.|Started a thread\.|Joined the server\.",
                          re.DOTALL)


def looks_like(first_line: str) -> bool:
    """Whether a CSV's header line is DiscordChatExporter's."""
    line = first_line.lstrip("\ufeff").strip()
    if not line.lstrip('"').startswith(HEADER[1]):  # `Author` begins `AuthorID` too
        return False
    try:
        cells = tuple(c.strip() for c in next(csv.reader([line]), []))
    except csv.Error:
        return False
    return cells[:len(HEADER)] == HEADER or cells[:len(HEADER) - 1] == HEADER[1:]  # (no AuthorID in early versions)


def is_export_file(path: Path) -> bool:
    """Whether a .csv file (in a folder of exports) is a DiscordChatExporter export."""
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as f:
            return looks_like(f.readline())
    except OSError:
        return False


def _iso(value: str, formats: list[str | None]) -> str | None:
    """The row's date as ISO 8601 (what the JSON export's reader takes), None when its format is not known.
    `formats` (None: ISO 8601 itself) are tried in order, and the one that read it moves to the front: an
    export writes every date alike, and a failed strptime costs as much as a good one."""
    value = value.strip()
    for i, fmt in enumerate(formats):
        try:
            found = datetime.fromisoformat(value) if fmt is None else datetime.strptime(value, fmt)
        except ValueError:
            continue
        if i:
            formats.insert(0, formats.pop(i))
        return found.isoformat()
    return None


def load(path: Path, text: str) -> list[dict]:
    """The rows of the export in `text` (the file's contents), as messages of the JSON export's shape."""
    # strict: a quote left open is an error at the file's end, not every row after it read as one message
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff"), newline=""), strict=True)
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # a message may be longer than the csv module's 128 KB
    messages, start = [], 1
    formats: list[str | None] = [None, *_DATE_FORMATS]
    last = ("", None)  # (a row's date, as ISO 8601): the messages of a busy minute share it
    try:
        header = [c.strip() for c in next(reader, [])]
        col = {name: header.index(name) for name in header if name in (*HEADER, "Attachments")}
        need = max(col[k] for k in HEADER[1:]) + 1  # up to the author, the date and the content
        start = reader.line_num + 1
        for row in reader:
            if not any(cell.strip() for cell in row):
                start = reader.line_num + 1
                continue
            if len(row) < need or len(row) > len(header):  # more: a message's commas outside its quotes
                raise UserError(f"{path}:{start}: {len(row)} field(s), DiscordChatExporter's CSV has "
                                f"{len(header)} ({', '.join(header)})")
            cell = {name: row[i] if i < len(row) else "" for name, i in col.items()}
            if cell["Date"] != last[0]:
                last = (cell["Date"], _iso(cell["Date"], formats))
            messages.append({
                "line": start,
                "type": "Service" if _SYSTEM_TEXT.fullmatch(cell["Content"].strip()) else "Default",
                "timestamp": last[1],
                "author": {"id": cell.get("AuthorID", "").strip(), "name": _DISCRIMINATOR.sub("", cell["Author"].strip())},
                "content": cell["Content"],
                "attachments": [a for a in cell.get("Attachments", "").split(",") if a.strip()],
            })
            start = reader.line_num + 1
    except csv.Error as e:
        raise UserError(f"{path}:{start}: malformed CSV ({e})") from None
    return messages
