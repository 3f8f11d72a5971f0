"""Chat exports in text with a date before each message (WhatsApp, Signal, weechat) -> messages in the shape
the Discord reader takes.

The text reader (dialogue.py) already reads these files line by line: the stamp goes, a message's unstamped
lines are joined to it, the export's placeholders and notices are told apart. What a line-by-line reading
cannot do is what a chat needs: a silence that ends a conversation, one person's messages in a row as one
turn, the `lol` and `gtg` filters, the low-quality rule. So the turns it reads, with the dates it saw, become
DiscordChatExporter-like messages and go through the Discord reader, as Telegram's and SillyTavern's do.

The day and the month are told apart over the whole file: a first number above 12 (`31/12/23`) means day
first, a second one above 12 (`12/31/23`) month first; a file that never shows either is read the way
under which its messages follow each other closest in time (`01/02/24, 23:59` then `02/02/24, 00:01`:
two minutes day first, a month month first), month first unless day first is closer by half (WhatsApp's
US format). A four-digit first number is a year (`2023-12-31`).
"""
from __future__ import annotations

import itertools
import re
from datetime import datetime
from pathlib import Path
from typing import Iterator

from ..dialogue import CHAT_HEAD_LINES, ReadStats, check_text_file, iter_text_turns, looks_like_chat_export, open_text

LAYOUT = "chat log"
SUFFIXES = (".txt", ".log", ".md")  # .md: signal-export's chat.md
_DATE = re.compile(r"(\d{1,4})[./-](\d{1,2})[./-](\d{1,4})")
_TIME = re.compile(r"(\d{1,2})[:.](\d{2})(?:[:.](\d{2}))?(?:[\s\u00a0\u202f]?([AaPp])\.?[\s\u00a0\u202f]?[Mm]\.?)?")


def is_chat_file(path: Path) -> bool:
    """Whether a text file's first lines are a chat export with dates (dialogue.looks_like_chat_export)."""
    try:
        with open_text(path) as f:
            return looks_like_chat_export(list(itertools.islice(f, CHAT_HEAD_LINES * 2)))
    except (OSError, UnicodeError, ValueError):
        return False


def _parts(stamp: str) -> tuple[tuple[int, int, int], tuple[int, int, int]] | None:
    """((first, second, third) of the date, (hour, minute, second) in 24 hours) of a stamp; None without a date."""
    d = _DATE.search(stamp)
    if d is None:
        return None
    t = _TIME.search(stamp, d.end()) or _TIME.search(stamp)  # WhatsApp Web writes the time first
    if t is None:
        return None
    hour, minute, second = int(t.group(1)), int(t.group(2)), int(t.group(3) or 0)
    if t.group(4):  # 12-hour: 12 AM is midnight, 12 PM noon
        hour = hour % 12 + (12 if t.group(4).lower() == "p" else 0)
    return (int(d.group(1)), int(d.group(2)), int(d.group(3))), (hour, minute, second)


def _day_first(stamps: list) -> bool:
    """Whether the file writes the day before the month (see the module's note); `stamps` are `_parts`, in
    the file's order."""
    dates = [d for d, _ in stamps if d[0] < 1000]
    if any(a > 12 for a, _, _ in dates):
        return True
    if any(b > 12 for _, b, _ in dates):
        return False
    # never told apart (every day 12 or less): the reading under which the chat moves on in small steps
    # (1/2 23:59 then 2/2 00:01 is two minutes day first, a month month first)
    return 2 * _travel(stamps, True) < _travel(stamps, False)  # clearly closer: else month first, as before


def _travel(stamps: list, day_first: bool) -> float:
    """Seconds between each stamp and the next, summed (backwards too), read day first or not."""
    total, last = 0.0, None
    for parts in stamps:
        when = _when(parts, day_first)
        if when is None:
            continue
        t = datetime.fromisoformat(when).timestamp()
        if last is not None:
            total += abs(t - last)
        last = t
    return total


def _when(parts, day_first: bool) -> str | None:
    (a, b, c), (hour, minute, second) = parts
    if a >= 1000:
        year, month, day = a, b, c
    else:
        year = c + 2000 if c < 100 else c
        day, month = (a, b) if day_first else (b, a)
    try:
        return datetime(year, month, day, hour, minute, second).isoformat()
    except ValueError:  # not a date after all (a month 13): no gap is measured from it
        return None


def load(path: Path, stats: ReadStats) -> Iterator[dict]:
    """The file's messages in DiscordChatExporter's shape; its notices (`Alex left`) are system messages. The
    file is read at once (its errors are raised here); each message is made as the reading reaches it (a list of
    them took as much memory as the rest of the reading together)."""
    path = check_text_file(path)
    stamps: dict[int, str] = {}
    read = ReadStats()  # the Discord reader counts the messages; the repairs and the code page are passed on
    turns = [t for t in iter_text_turns(path, "lines", read, stamps) if t is not None]
    stats.replaced_bytes += read.replaced_bytes
    stats.repaired_lines += read.repaired_lines
    stats.encodings.update(read.encodings)
    for note in read.notes:  # (a message that runs on for a thousand lines: dialogue.RUNAWAY_LINES)
        stats.add_note(note, hint=note in read.hints)
    parts = {n: p for n, p in ((n, _parts(s)) for n, s in stamps.items()) if p is not None}
    del stamps
    return _messages(turns, parts, _day_first(list(parts.values())))


def _messages(turns: list, parts: dict, day_first: bool) -> Iterator[dict]:
    for t in turns:
        yield {
            "line": t.line,
            "type": "Default" if t.speaker is not None else "Service",
            "timestamp": _when(parts[t.line], day_first) if t.line in parts else None,
            "author": {"name": t.speaker or "", "saved": True},
            "content": t.text,
        }
