"""Messages copied out of a chat app or a transcript (selected and pasted as text) -> a chat log's lines.

A pre-pass for the text reader, as subtitles.py is: one output line per input line (an empty one in place
of what is left out), so that line numbers stay the file's. Pure: no I/O. These copies write a header
line for each message or group of messages, the words on the lines below it:

    Luna — 03/14/2023 10:42 PM          Discord (`Today at 10:42 PM`, `Yesterday at ...` too); a later
    anyone up for a raid tonight?       message of the group starts with its time in brackets
    [10:44 PM]we need a healer
    Bob, [03.11.26 19:03]               Telegram Desktop
    [11/30/2026 10:32 AM] Hans Müller   Microsoft Teams (`[10:32 AM] Hans Müller` for today's)
    Jamie Rivera  0:03                  Otter.ai and other transcripts: the time into the recording

A message with a date or a clock time becomes a line as a WhatsApp export writes it (`[03/14/2023 10:42 PM]
Luna: anyone up...`), which the chat reader takes from there: a silence ends a conversation, one person's
messages in a row are one turn, the `lol` and `gtg` filters apply; a message's further lines follow it as
they are, joined to it as a chat export's are. `Today` and `Yesterday` (and a clock time with no date) are
dated after every written date, in the file's way of writing dates; only the gaps between messages are
read from the dates. A transcript's times are not the time of day: its speeches become `Name: text`
lines (their lines joined), read as any text. Discord's extras go: a reply's preview of the message it
answers (`@Luna anyone up for a raid…`, the line before its header) and the `(edited)` mark.
"""
from __future__ import annotations

import re
from typing import Iterable, Iterator

_TIME = r"\d{1,2}[:.]\d{2}(?:[:.]\d{2})?(?:[ \u202f]?[AaPp]\.?[Mm]\.?)?"
_DATE = r"\d{1,4}[./-]\d{1,2}[./-]\d{1,4}"
_NAME = r"(?P<name>[^\s\[\]<>:][^:\n]{0,39}?)"  # no colon: `[2023-12-31 21:15] Alex: hey` is Signal's
# each app's header: the sender's name, and a date (`day`, or a `rel` word) and a time of day (`time`), or
# the time into a recording (`at`)
_HEADERS = {
    "Discord": re.compile(rf"{_NAME}[ \t]+[—–][ \t]+(?:(?P<rel>Today|Yesterday)[ \t]+at[ \t]+(?P<t1>{_TIME})|"
                          rf"(?:(?P<day>{_DATE}),?[ \t]+)?(?P<time>{_TIME}))[ \t]*"),
    "Telegram": re.compile(rf"{_NAME},[ \t]+\[(?P<day>{_DATE}),?[ \t]+(?P<time>{_TIME})\][ \t]*"),
    "Teams": re.compile(rf"\[(?:(?P<day>{_DATE}),?[ \t]+)?(?P<time>{_TIME})\][ \t]+{_NAME}[ \t]*"),
    "transcript": re.compile(rf"{_NAME}(?:[ \t]{{2,}}|\t)(?P<at>\d{{1,2}}:\d{{2}}(?::\d{{2}})?)[ \t]*"),
}
_LATER = re.compile(rf"\[({_TIME})\][ \t]?(.*)")  # Discord: a later message of the group, `[10:44 PM]we need...`
_EDITED = re.compile(r"[ \t]*\(edited\)[ \t]*$")
_LOOKBACK = 200  # the messages a reply's preview is looked for among


def kind(head: list[str]) -> str | None:
    """Which app's copy a text's first lines are (the kind with the most headers): at least two headers of
    two people or more, or three of one; None for any other text."""
    best, most = None, 0
    for app, header in _HEADERS.items():
        names = [m.group("name") for line in head if (m := header.fullmatch(line.strip())) is not None]
        if (len(names) >= 3 or len(set(names)) >= 2) and len(names) > most:
            best, most = app, len(names)
    return best


def lines_of(lines: Iterable[str], app: str) -> Iterator[str]:
    """The copy as a chat log's lines, one output line per input line; `app` as `kind` gives it."""
    if app == "transcript":
        return _speeches(lines)
    return _messages(lines, _HEADERS[app], app == "Discord")


def _messages(lines: Iterable[str], header: re.Pattern, discord: bool) -> Iterator[str]:
    author = day = written = pending = None  # pending: the time of a message whose first line is next
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
        m = header.fullmatch(line.strip())
        if m is not None:
            if held is not None:
                yield release(_preview(held, said))
                held = None
            groups = m.groupdict()
            author = m.group("name").strip()
            if groups.get("day"):
                day = written = groups["day"]
            elif groups.get("rel") or day is None:
                day = _relative(groups.get("rel") or "Today", written)
            pending = groups.get("t1") or groups.get("time")
            yield ""
            continue
        if held is not None:
            yield release(False)
            held = None
        if author is None:
            yield line
            continue
        text = _EDITED.sub("", line) if discord else line
        later = _LATER.fullmatch(text.strip()) if discord else None
        if later is not None:
            pending, text = later.group(1), later.group(2)
        if pending is not None and text.strip():
            said.append(text.strip())
            del said[:-_LOOKBACK]
            yield f"[{day} {pending}] {author}: {text.strip()}"
            pending = None
        elif discord and pending is None and text.lstrip().startswith("@"):
            held = text
        else:
            if text.strip() and said and pending is None:
                said[-1] += " " + text.strip()
            yield text
    if held is not None:
        yield release(False)


def _speeches(lines: Iterable[str]) -> Iterator[str]:
    """A transcript's speeches as `Name: text` lines, each at its header's line (the lines below it empty)."""
    header = _HEADERS["transcript"]
    name = None
    block: list[str] = []  # the output lines held back: the header's slot first, then its text lines

    def flush() -> Iterator[str]:
        if name is not None and block:
            words = " ".join(" ".join(block[1:]).split())
            block[0] = f"{name}: {words}" if words else ""
            block[1:] = [""] * (len(block) - 1)
        yield from block
        block.clear()

    for raw in lines:
        line = raw.rstrip("\r\n")
        m = header.fullmatch(line.strip())
        if m is not None:
            yield from flush()
            name = m.group("name").strip()
            block.append("")
        elif name is None:
            yield line
        else:
            block.append(line)
    yield from flush()


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
