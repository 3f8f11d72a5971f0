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
import itertools
import re
import sys
from datetime import datetime
from pathlib import Path
from typing import Iterator

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


class _Dates:
    """Reads the rows' dates as ISO 8601 (what the JSON export's reader takes), None when the format is not known.

    An export writes every date alike: the format that read one (None: ISO 8601 itself) moves to the front, for a
    failed strptime costs as much as a good one. A date's day and its time each recur (a day's messages, the
    minutes of every day), so each part is parsed once: strptime was half the reading of a large export."""

    def __init__(self):
        self.formats: list[str | None] = [None, *_DATE_FORMATS]
        self.parts: dict[tuple[str, str], object] = {}  # (text, format) -> its date or time, None if unreadable

    def _part(self, text: str, fmt: str, kind: str):
        key = (text, fmt)
        if key not in self.parts:
            try:
                found = datetime.strptime(text, fmt)
                self.parts[key] = found.date() if kind == "date" else found.time()
            except ValueError:
                self.parts[key] = None
        return self.parts[key]

    def _read(self, value: str, fmt: str | None) -> datetime | None:
        if fmt is None:
            try:
                return datetime.fromisoformat(value)
            except ValueError:
                return None
        pieces = value.split(None, 1)  # strptime reads the format's space as any run of white space
        if len(pieces) != 2:
            return None
        day_fmt, time_fmt = fmt.split(" ", 1)
        day = self._part(pieces[0], day_fmt, "date")
        when = day and self._part(pieces[1], time_fmt, "time")
        return datetime.combine(day, when) if when is not None else None

    def iso(self, value: str) -> str | None:
        value = value.strip()
        for i, fmt in enumerate(self.formats):
            found = self._read(value, fmt)
            if found is None:
                continue
            if i:
                self.formats.insert(0, self.formats.pop(i))
            return found.isoformat()
        return None


# Its lines as io.StringIO(text, newline="") gives them (a line ends at \r\n, \r or \n; the csv reader joins a
# quoted message's lines), without the copy of the text StringIO makes, 4 bytes a character.
_LINE = re.compile(r"[^\r\n]*(?:\r\n?|\n)|[^\r\n]+")


def _lines(text: str) -> Iterator[str]:
    return (m.group() for m in _LINE.finditer(text))


class Rows:
    """The export's messages, in the shape of its JSON export, read from the text each time they are iterated:
    a list of them took 14 times the file's size, a large server's channel gigabytes. The header is checked at
    once; a row that is not DiscordChatExporter's is an error when the reading reaches it."""

    def __init__(self, path: Path, text: str):
        self.path, self.text = path, text.lstrip("\ufeff")
        csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # a message may be longer than the csv module's 128 KB
        try:
            header = next(csv.reader(itertools.islice(_lines(self.text), 1)), [])
        except csv.Error as e:
            raise UserError(f"{path}:1: malformed CSV ({e})") from None
        self.header = [c.strip() for c in header]
        self.col = {name: self.header.index(name) for name in self.header if name in (*HEADER, "Attachments")}

    def __iter__(self) -> Iterator[dict]:
        # strict: a quote left open is an error at the file's end, not every row after it read as one message
        reader = csv.reader(_lines(self.text), strict=True)
        path, header, col, start = self.path, self.header, self.col, 1
        dates = _Dates()
        last = ("", None)  # (a row's date, as ISO 8601): the messages of a busy minute share it
        try:
            next(reader, None)
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
                    last = (cell["Date"], dates.iso(cell["Date"]))
                yield {
                    "line": start,
                    "type": "Service" if _SYSTEM_TEXT.fullmatch(cell["Content"].strip()) else "Default",
                    "timestamp": last[1],
                    "author": {"id": cell.get("AuthorID", "").strip(),
                               "name": _DISCRIMINATOR.sub("", cell["Author"].strip())},
                    "content": cell["Content"],
                    "attachments": [a for a in cell.get("Attachments", "").split(",") if a.strip()],
                }
                start = reader.line_num + 1
        except csv.Error as e:
            raise UserError(f"{path}:{start}: malformed CSV ({e})") from None


def load(path: Path, text: str) -> Rows:
    """The rows of the export in `text` (the file's contents), as messages of the JSON export's shape."""
    return Rows(path, text)
