"""Messages copied from the Discord app (selected and pasted as text) -> a dated chat log's lines.

A pre-pass for the text reader, as subtitles.py is: one output line per input line (an empty one in place
of what is left out), so that line numbers stay the file's. Pure: no I/O. The app writes each group of one
person's messages under a header, and a later message of the group with its time in brackets:

    Luna — 03/14/2023 10:42 PM
    anyone up for a raid tonight?
    [10:44 PM]we need a healer
    Max — Today at 10:45 PM
    yeah i'm in

Each message becomes a line as a WhatsApp export writes it (`[03/14/2023 10:42 PM] Luna: anyone up...`),
which the chat reader takes from there: a silence ends a conversation, one person's messages in a row are
one turn, the `lol` and `gtg` filters apply. A message's own further lines follow it as they are, joined to
it as a chat export's are. `Today at` and `Yesterday at` are dated after every written date (the app shows them for
the newest messages), in the file's way of writing dates; only the gaps between messages are read from them. A reply's
preview of the message it answers (`@Luna anyone up for a raid…`, the line before its header) is left out,
and so is the app's `(edited)` mark.
"""
from __future__ import annotations

import re
from typing import Iterable, Iterator

_TIME = r"\d{1,2}[:.]\d{2}(?:[ \u202f]?[AaPp]\.?[Mm]\.?)?"
_DATE = r"\d{1,4}[./-]\d{1,2}[./-]\d{1,4}"
# `Luna — Today at 10:42 PM`, `Luna — 03/14/2023 10:42 PM`, `Luna — 14.03.2023, 22:42`, `Luna — 10:42 PM`
_HEADER = re.compile(rf"(\S.{{0,39}}?)[ \t]+[—–][ \t]+(?:(Today|Yesterday)[ \t]+at[ \t]+({_TIME})|({_DATE}),?[ \t]+"
                     rf"({_TIME})|({_TIME}))[ \t]*")
_LATER = re.compile(rf"\[({_TIME})\][ \t]?(.*)")  # a later message of the group: `[10:44 PM]we need a healer`
_EDITED = re.compile(r"[ \t]*\(edited\)[ \t]*$")
_LOOKBACK = 200  # the messages a reply's preview is looked for among


def is_copy(head: list[str]) -> bool:
    """Whether a text's first lines are a Discord copy: at least two headers, of two people or more, or
    three of one; and no `Name: text` line before the first."""
    names = []
    for line in head:
        m = _HEADER.fullmatch(line.strip())
        if m is not None:
            names.append(m.group(1))
    return len(names) >= 3 or len(set(names)) >= 2


def lines_of(lines: Iterable[str]) -> Iterator[str]:
    """The copy as a dated chat log's lines, one output line per input line."""
    author = day = written = pending = None  # pending: the stamp of a message whose first line is next
    said: list[str] = []  # the messages so far, newest last: what a reply's preview quotes
    held: str | None = None  # a line `@Name ...` ending a group: a reply's preview if a header follows

    def release(preview: bool) -> str:
        if preview:
            return ""
        if said:
            said[-1] += " " + held.strip()
        return held

    for raw in lines:
        line = raw.rstrip("\r\n")
        m = _HEADER.fullmatch(line.strip())
        if m is not None:
            if held is not None:
                yield release(_preview(held, said))
                held = None
            author = m.group(1)
            if m.group(4):
                day = written = m.group(4)
            elif m.group(2) or day is None:
                day = _relative(m.group(2) or "Today", written)
            pending = m.group(3) or m.group(5) or m.group(6)
            yield ""
            continue
        if held is not None:
            yield release(False)
            held = None
        if author is None:
            yield line
            continue
        text = _EDITED.sub("", line)
        later = _LATER.fullmatch(text.strip())
        if later is not None:
            pending, text = later.group(1), later.group(2)
        if pending is not None and text.strip():
            said.append(text.strip())
            del said[:-_LOOKBACK]
            yield f"[{day} {pending}] {author}: {text.strip()}"
            pending = None
        elif pending is None and text.lstrip().startswith("@"):
            held = text
        else:
            if text.strip() and said and pending is None:
                said[-1] += " " + text.strip()
            yield text
    if held is not None:
        yield release(False)


def _relative(word: str, written: str | None) -> str:
    """A date for `Yesterday` or `Today` after every date the app writes, in the way the file writes its
    dates (the chat reader reads one way per file): year first a day apart, else a day and month alike in
    either order (`01/01/2100`, `02/02/2100`), so that it reads the same day first or month first."""
    today = word == "Today"
    if written is None or len(re.split(r"[./-]", written)[0]) == 4:
        sep = "-" if written is None else written[4]
        return f"2100{sep}01{sep}0{2 if today else 1}"
    sep = re.search(r"[./-]", written).group()
    n = "02" if today else "01"
    return f"{n}{sep}{n}{sep}2100"


def _preview(line: str, said: list[str]) -> bool:
    """Whether a line is a reply's preview: `@Name` and the start of an earlier message."""
    parts = line.strip().split(" ", 1)
    quoted = parts[1].strip().rstrip("…").strip() if len(parts) > 1 else ""
    return bool(quoted) and any(m.startswith(quoted) for m in said)
