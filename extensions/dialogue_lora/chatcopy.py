"""Messages copied out of a chat app or a transcript (selected and pasted as text) -> a chat log's lines.

A pre-pass for the text reader, as subtitles.py is: one output line per input line (an empty one in place
of what is left out), so that line numbers stay the file's. Pure: no I/O. These copies write a header
line for each message or group of messages, the words on the lines below it:

    Luna — 03/14/2023 10:42 PM          Discord (`Today at 10:42 PM`, `Yesterday at ...` too); a later
    anyone up for a raid tonight?       message of the group starts with its time in brackets
    [10:44 PM]we need a healer
    Bob, [03.11.26 19:03]               Telegram Desktop
    [11/30/2026 10:32 AM] Hans Müller   Microsoft Teams (`[10:32 AM] Hans Müller` for today's)
    10:02:15 From Sarah Chen to Everyone:   Zoom's saved meeting chat (the message indented below)
    Jamie Rivera  0:03                  Otter.ai and other transcripts: the time into the recording

A message with a date or a clock time becomes a line as a WhatsApp export writes it (`[03/14/2023 10:42 PM]
Luna: anyone up...`), which the chat reader takes from there: a silence ends a conversation, one person's
messages in a row are one turn, the `lol` and `gtg` filters apply; a message's further lines follow it as
they are, joined to it as a chat export's are. `Today` and `Yesterday` (and a clock time with no date) are
dated after every written date, in the file's way of writing dates; only the gaps between messages are
read from the dates. A transcript's times are not the time of day: its speeches become `Name: text`
lines (their lines joined), read as any text. Discord's extras go: a reply's preview of the message it
answers (`@Luna anyone up for a raid…`, the line before its header) and the `(edited)` mark; Telegram's
notes (`[In reply to Alice]`, `[Photo]`; a message `[Forwarded from Carol]` is not its sender's words);
Zoom's `Replying to "..."` line and its reactions. A header counts only with its message on the very next
line, and Discord's only with a date or Today/Yesterday (`Mara — 6:15 AM` heads a novel's section).
"""
from __future__ import annotations

import re
from typing import Iterable, Iterator

from .subtitles import voice_name

_TIME = r"\d{1,2}[:.]\d{2}(?:[:.]\d{2})?(?:[ \u202f]?[AaPp]\.?[Mm]\.?)?"
_DATE = r"\d{1,4}[./-]\d{1,2}[./-]\d{1,4}"
_NAME = r"(?P<name>[^\s\[\]<>:#][^:#\n]{0,39}?)"  # no colon: `[2023-12-31 21:15] Alex: hey` is Signal's
EMOJI_CHARS = "\U0001F000-\U0001FAFF\u2300-\u23FF\u2600-\u27BF\u2B00-\u2BFF"  # emoji bases (not the joiners)
# a run of emoji: it starts with one, then emoji, selectors and joiners (`❤️`, `👩‍💻`)
EMOJI_RUN = rf"[{EMOJI_CHARS}][\ufe0f\u200d{EMOJI_CHARS}]*"
# a person's name: capitalised words (a particle may be lower case: `van`, `de`), at most four
_WORD = r"(?:[^\W\d_a-zà-öø-ÿа-яё][\w.'\-]*|(?:van|von|de|der|den|da|di|du|del|la|le|bin|al|ten|ter)\b)"
_WORDS = rf"{_WORD}(?:[ ]{_WORD}){{0,3}}"
# as the app writes it: `Müller, Hans` (Teams), a note in brackets `(she/her)`, `(Extern)`, and emoji
_PLAIN_NAME = (rf"(?P<name>{_WORDS}(?:,[ ]{_WORDS})?(?:[ ]?\([^()\n:]{{1,30}}\))?"
               rf"(?:[ ]?{EMOJI_RUN})?)")
# each app's header: the sender's name, and a date (`day`, or a `rel` word) and a time of day (`time`), or
# the time into a recording (`at`). Discord's has a date or Today/Yesterday: a time alone after a dash
# is a novel's section heading (`Mara — 6:15 AM`) or a slugline's as often.
_HEADERS = {
    "Discord": re.compile(rf"{_NAME}[ \t]+[—–][ \t]+(?:(?P<rel>Today|Yesterday)[ \t]+at[ \t]+(?P<t1>{_TIME})|"
                          rf"(?P<day>{_DATE}),?[ \t]+(?P<time>{_TIME}))[ \t]*"),
    "Telegram": re.compile(rf"{_PLAIN_NAME},[ \t]+\[(?P<day>{_DATE}),?[ \t]+(?P<time>{_TIME})\][ \t]*"),
    "Teams": re.compile(rf"\[(?:(?P<day>{_DATE}),?[ \t]+)?(?P<time>{_TIME})\][ \t]+{_PLAIN_NAME}[ \t]*"),
    # Zoom's saved meeting chat: `10:02:15 From Sarah Chen to Everyone:`, the message on the lines below
    "Zoom": re.compile(rf"(?P<time>\d{{1,2}}:\d{{2}}:\d{{2}})[ \t]+From[ \t]+{_PLAIN_NAME}[ \t]+to[ \t]+[^:]{{1,60}}?"
                       r"(?:\((?:Direct Message|[Pp]rivately)\))?[ \t]*:[ \t]*"),
    "transcript": re.compile(rf"{_PLAIN_NAME}(?:[ \t]{{2,}}|\t)(?P<at>\d{{1,2}}:\d{{2}}(?::\d{{2}})?)[ \t]*"),
}
_ICONS = re.compile(EMOJI_RUN)
_LATER = re.compile(rf"\[({_TIME})\][ \t]?(.*)")  # Discord: a later message of the group, `[10:44 PM]we need...`
_EDITED = re.compile(r"[ \t]*\(edited\)[ \t]*$")
# Telegram's notes on a message: what it answers, a forward (the words are not the sender's), media
_TELEGRAM_NOTE = re.compile(r"\[(?:In reply to .{1,60}|Forwarded from .{1,60}|Photo|Video|Sticker(?: .{1,8})?|"
                            r"Voice message|Video message|File|GIF|Audio|Poll|Location|Contact)\]")
SAYS = re.compile(r"[^\W\d_][\w .'\-]{0,39}:\s")  # a `Name: text` line, which a transcript's speeches are not
_LOOKBACK = 200  # the messages a reply's preview is looked for among


def kind(head: list[str]) -> str | None:
    """Which app's copy a text's first lines are (the kind with the most headers): at least two headers of
    two people or more, or three of one, each with its words on the very next line, and (but Discord's,
    dated) three or more with a sender who comes back; None for any other text. A transcript's headers
    must also outnumber the text's `Name: text` lines (a podcast script's chapter marks, `Intro  0:00`,
    are not speakers)."""
    best, most = None, 0
    for app, header in _HEADERS.items():
        names = []
        for line, after in zip(head, head[1:]):
            m = header.fullmatch(line.strip())
            if m is not None and after.strip() and header.fullmatch(after.strip()) is None:
                names.append(m.group("name"))
        if app == "transcript" and sum(1 for line in head if SAYS.match(line)) >= len(names):
            continue
        # a chat's senders come back (an agenda's items do not), and Discord's header is a date's anyway
        back = app == "Discord" or (len(names) >= 3 and len(set(names)) < len(names))
        if back and (len(names) >= 3 or len(set(names)) >= 2) and len(names) > most:
            best, most = app, len(names)
    return best


def lines_of(lines: Iterable[str], app: str) -> Iterator[str]:
    """The copy as a chat log's lines, one output line per input line; `app` as `kind` gives it."""
    if app == "transcript":
        return _speeches(lines)
    return _messages(lines, _HEADERS[app], app)


def _messages(lines: Iterable[str], header: re.Pattern, app: str) -> Iterator[str]:
    discord = app == "Discord"
    author = day = written = pending = None  # pending: the time of a message whose first line is next
    forwarded = False  # a Telegram message forwarded from someone else: not its sender's words
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
            if app == "Teams":  # as its transcripts' voices: `Müller, Hans (Extern)` is Hans Müller
                author = voice_name(author) or author
            author = " ".join(_ICONS.sub(" ", author).split()) or author  # an app's display name: `Luna 🌙`
            if groups.get("day"):
                day = written = groups["day"]
            elif groups.get("rel") or day is None:
                day = _relative(groups.get("rel") or "Today", written)
            pending = groups.get("t1") or groups.get("time")
            forwarded = False
            yield ""
            continue
        if held is not None:
            yield release(False)
            held = None
        if author is None:
            yield line
            continue
        if app == "Telegram" and (forwarded or _TELEGRAM_NOTE.fullmatch(line.strip())):
            forwarded = forwarded or line.strip().startswith("[Forwarded from ")
            yield ""
            continue
        if app == "Zoom" and line.strip().startswith(("Replying to \"", "Reacted to \"", "Removed a \"")):
            if not line.strip().startswith("Replying"):  # a reaction is no one's words
                pending = None
            yield ""
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
        if line.startswith("Transcribed by "):  # Otter's footer: no one's words
            line = ""
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
    """Whether a line is a reply's preview: `@Name` and the start of an earlier message. The name may have
    words and icons of its own (`@Luna Moon`, `@Luna 🌙`): the message may start after any of its first spaces."""
    words = line.strip().split(" ")
    for n in range(1, min(len(words), 6)):
        quoted = " ".join(words[n:]).strip().rstrip("…").strip()
        if quoted and any(m.startswith(quoted) for m in said):
            return True
    return False
