"""Subtitle files (SubRip .srt, WebVTT .vtt, Advanced SubStation .ass/.ssa) -> plain dialogue lines.

A pre-pass for the text reader: each input line gives exactly one output line (an empty one in place of
what is left out), so that line numbers stay the file's. Pure: no I/O.

- SubRip and WebVTT: the header, NOTE/STYLE/REGION blocks, cue identifiers and timing lines are left out;
  markup goes (`<i>`, `<c.yellow>`, `{\\an8}`, inline times `<00:00:01.500>`, ruby readings); character
  references (`&amp;`) are decoded; a voice span `<v Bob>` names the speaker (`Bob: ...`). A cue's wrapped lines join
  the line they continue (so does the next cue's first line, naming no one or the same speaker, when a
  speaker's sentence ran on into it; Teams' voice names `Last, First` are read First Last); a line led by a dash (`- BOB: Go.`, two speakers in one cue) is a line of its own.
- ASS/SSA: each `Dialogue:` event is a line, in the order of their start times, its `Name` field the
  speaker; the rest is left out.
"""
from __future__ import annotations

import html
import html.entities
import re
from typing import Callable, Iterable, Iterator

_TIME = r"(?:\d{1,2}:)?\d{1,2}:\d{2}[.,]\d{1,3}"
CUE_TIME = re.compile(rf"\s*{_TIME}\s*-->\s*{_TIME}")
_VOICE = re.compile(r"<v(?:\.[\w.-]+)?\s+([^>]+)>")  # <v Bob>, <v.loud Bob>
_VOICE_EXTRAS = re.compile(r"\([^()]*\)")  # in a voice's name: `(Guest)`, `(he/him)`, `(IT-Services)`
_NAME_SUFFIXES = frozenset("phd ph.d. md m.d. jr jr. sr sr. ii iii iv mba esq esq.".split())
_RUBY_TEXT = re.compile(r"<(rt|rp)>.*?</\1>")
_INLINE_TIME = re.compile(rf"<{_TIME}>")
_TAG = re.compile(r"</?(?:[ibus]|c|v|ruby|rt|rp|lang|font|span)(?:[.\s][^>]*)?>", re.IGNORECASE)
_OVERRIDE = re.compile(r"\{\\[^}]*\}")  # ASS override tags, which some SRT files carry: {\an8}
_BRACES = re.compile(r"\{[^}]*\}")
_ASS_BREAKS = re.compile(r"\\[Nnh]")  # \N, \n: line breaks; \h: a hard space
_DRAWING = re.compile(r"\{[^}]*\\p[1-9][^}]*\}.*?(?:\{[^}]*\\p0[^}]*\}|$)")
_SENTENCE_ENDS = (".", "!", "?", "…", '"', "”", "»", ")", "]", "♪")
_DASH = re.compile(r"\s*[-‐–—]\s*(?=\S)")
_BLOCKS = ("NOTE", "STYLE", "REGION")
_SOUND = re.compile(r"\[[^\]]*\]|\([^)]*\)|♪.*♪")  # `[door slams]`, `(laughs)`, `♪ la la ♪`: a line of its own
# a character reference with its semicolon: WebVTT's, and SubRip files converted from it or from TTML
# carry them too (`Tom &amp; Jerry`); without one, `AT&T` or `&nothing` is text
_ENTITY = re.compile(r"&(?:#[0-9]+|#[xX][0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]*);")


def kind(head: list[str], file: str = "") -> str | None:
    """"srt" (SubRip or WebVTT: a `WEBVTT` first line, or timing lines early on: one is enough in a file
    named .srt or .vtt), "ass" (a `[Script Info]` header), else None."""
    first = next((line.strip().lstrip("\ufeff") for line in head[:5] if line.strip()), "")
    if first.lower() == "[script info]":
        return "ass"
    if first.startswith("WEBVTT"):
        return "srt"
    timings = sum(1 for line in head[:200] if CUE_TIME.match(line))
    return "srt" if timings >= 2 or (timings and file.lower().endswith((".srt", ".vtt"))) else None


def lines_of(lines: Iterable[str], kind_: str, speaker_of: Callable[[str], tuple[str, str] | None]) -> Iterator[str]:
    """The subtitle file's dialogue as text lines, one output line per input line. `speaker_of` gives a
    line's (speaker, text) when it starts with its speaker's `Name:`, else None."""
    return _ass(lines) if kind_ == "ass" else _cues(lines, speaker_of)


def _entity(m: re.Match) -> str:
    """A known character reference's character; an unknown name stays as written (html.unescape would read
    `&notreal;` as `¬real;`)."""
    ref = m.group()
    return html.unescape(ref) if ref[1] == "#" or ref[1:] in html.entities.html5 else ref


def _clean(line: str) -> tuple[str, bool]:
    """(the cue line's text without markup, whether a dash led it)."""
    s = line.strip()
    if "<" in s:
        s = _INLINE_TIME.sub("", _RUBY_TEXT.sub("", s))
        s = _VOICE.sub(lambda m: voice_name(m.group(1)) + ": ", s, count=1)
        s = _TAG.sub("", _VOICE.sub(" ", s))
    if "{" in s:
        s = _OVERRIDE.sub("", s)
    if "&" in s:  # &lrm; and &rlm; decode to invisible direction marks: dropped
        s = _ENTITY.sub(_entity, s).replace("\u200e", "").replace("\u200f", "")
    dash = _DASH.match(s)
    if dash:
        s = s[dash.end():]
    return " ".join(s.split()), bool(dash)


def voice_name(name: str) -> str:
    """A voice span's speaker as a name: Teams' `Müller, Hans` is Hans Müller, and what it writes after a
    name goes: `(Guest)`, pronouns, a department `(IT-Services)`, `| Company`, a degree (`, PhD`)."""
    name = _VOICE_EXTRAS.sub(" ", name.split("|", 1)[0])
    last, comma, first = name.partition(",")
    if comma and first.strip().casefold() in _NAME_SUFFIXES:  # `Dr. Lee, PhD`: a degree, not a first name
        name = last
    elif comma and "," not in first and 0 < len(first.split()) <= 3 and 0 < len(last.split()) <= 3:
        name = f"{first} {last}"
    return " ".join(name.split())


def _cues(lines: Iterable[str], speaker_of: Callable[[str], tuple[str, str] | None]) -> Iterator[str]:
    vtt = skipping = False  # skipping: the WebVTT header or a NOTE/STYLE/REGION block, to a blank line
    cue: list[str] | None = None  # the current cue's output lines (a joined one left empty), given at its end
    held = None  # a cue's identifier if a timing line follows, else text: known at the next line
    boundary = True  # the file's start or after a blank line: where an identifier or a block may begin
    # Lines not given out yet: a speaker's line that ends a cue without ending its sentence (`open_at`, an
    # index here) takes the next cue's first line when that names no one (a sentence across two cues).
    pending: list[str] = []
    open_at: int | None = None

    def is_speaker(line: str) -> bool:
        return speaker_of(line) is not None

    def end_cue() -> None:
        nonlocal cue, open_at
        if cue is None:
            return
        last = next((i for i in range(len(cue) - 1, -1, -1) if cue[i]), None)
        if last is not None:
            line = cue[last]
            open_at = len(pending) + last if is_speaker(line) and not line.endswith(_SENTENCE_ENDS) else None
        pending.extend(cue)
        cue = None

    def take(raw: str) -> None:
        """A text line into the current cue (text after a blank line inside a cue, or before any timing,
        starts a block of its own, read the same way)."""
        nonlocal cue, open_at
        if cue is None:
            cue = []
        text, dashed = _clean(raw)
        # the line a wrapped one continues: the last with words, not a sound between (`(laughs)`)
        last = next((i for i in range(len(cue) - 1, -1, -1) if cue[i] and not _SOUND.fullmatch(cue[i])), None)
        said = speaker_of(text) if text and open_at is not None and last is None else None
        if said is not None and said[0] == (speaker_of(pending[open_at]) or ("",))[0]:
            # the same speaker's next cue goes on with the sentence (a meeting's transcript splits them)
            pending[open_at] = f"{pending[open_at]} {said[1].strip()}"
            cue.append("")
        elif (text and not dashed and not is_speaker(text) and not _SOUND.fullmatch(text)
                and (last is not None or open_at is not None)):
            if last is not None:  # a wrapped line: joined to the line it continues
                cue[last] = f"{cue[last]} {text}"
            else:  # the sentence a speaker began in the cue before
                pending[open_at] = f"{pending[open_at]} {text}"
            cue.append("")
        else:
            cue.append(text)
        if text:
            open_at = None

    for n, raw in enumerate(lines):
        stripped = raw.strip()
        if n == 0 and stripped.lstrip("\ufeff").startswith("WEBVTT"):
            vtt = skipping = True
            pending.append("")
            continue
        if CUE_TIME.match(raw):
            end_cue()
            if held is not None:
                pending.append("")  # the cue's identifier
            cue, held, skipping, boundary = [], None, False, False
            pending.append("")
            continue
        if held is not None:  # no timing line after it: text after all
            take(held)
            held = None
        if not stripped:
            end_cue()
            skipping, boundary = False, True
            pending.append("")
        elif skipping:
            pending.append("")
        elif boundary and cue is None and vtt and stripped.split(None, 1)[0] in _BLOCKS:
            skipping = True
            pending.append("")
        elif boundary or (cue is not None and stripped.isdigit()):  # a cue without a blank line before it
            held, boundary = raw, False
        else:
            take(raw)
        if open_at is None and pending:  # nothing may change any more: out
            yield from pending
            pending.clear()
    if held is not None:
        take(held)
    end_cue()
    yield from pending


def _ass(lines: Iterable[str]) -> Iterator[str]:
    """One line per input line: each Dialogue event as `Name: text` (or its text), "" for anything else.
    Events are said in the order of their start times: a file sorted by style (all of one character's
    signs, then the dialogue) would give each line the wrong context; then a line's number is that of the
    event slot it takes, not its own."""
    fields: list[str] = []
    section = ""
    out: list[str] = []
    events: list[tuple[float, int, str]] = []  # (start, slot in out, line)
    for raw in lines:
        s = raw.strip()
        if s.startswith("[") and s.endswith("]"):
            section = s.lower()
        if section == "[events]" and s.lower().startswith("format:"):  # the styles have a Format line too
            fields = [f.strip().lower() for f in s.split(":", 1)[1].split(",")]
            out.append("")
            continue
        if not s.lower().startswith("dialogue:") or "text" not in fields:
            out.append("")
            continue
        values = s.split(":", 1)[1].split(",", len(fields) - 1)
        if len(values) != len(fields):
            out.append("")
            continue
        event = dict(zip(fields, values))
        text = _DRAWING.sub("", event["text"])  # a vector drawing's commands are no words
        text = _BRACES.sub("", text)  # override tags and comments: every {...} in ASS
        text = " ".join(_ASS_BREAKS.sub(" ", text).split())
        name = " ".join(event.get("name", "").replace(":", " ").split())  # a colon would end the cue early
        start = _ass_seconds(event.get("start", ""))
        start = start if start is not None else (events[-1][0] if events else 0.0)  # unreadable: where it stands
        events.append((start, len(out), f"{name}: {text}" if name and text else text))
        out.append("")
    in_time = sorted(events, key=lambda e: e[0])  # stable: events of one start keep the file's order
    for (_, slot, _), (_, _, line) in zip(events, in_time):
        out[slot] = line
    yield from out


def _ass_seconds(stamp: str) -> float | None:
    """An ASS time (`0:01:02.50`) in seconds; None when it is not one."""
    try:
        h, m, sec = stamp.strip().split(":")
        return int(h) * 3600 + int(m) * 60 + float(sec)
    except ValueError:
        return None
