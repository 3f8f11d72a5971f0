"""Game-dialogue CSV (e.g. a LazyVoiceFinder export, as in the Mantella Skyrim pipeline) -> turns.

Each row is one voiced line. Columns are mapped by option; the defaults fit LazyVoiceFinder:

    speaker  `Voice Type`            who says the reply (the name `--name` matches)
    text     `Dialogue 1 - English`  the reply
    prompt   `Topic Text`            the player's line that leads to it (a turn by `--csv_player`)
    emotion  `Emotion`               optional prefix on the output ("[Happy] ...")
    group    `Topic FormId`          rows of one response share it ...
    order    `Response Num`          ... and follow each other in this order

Consecutive rows with the same group and speaker whose order number keeps rising are one response: their
texts are joined with spaces in order. Every response is its own conversation: the player's line (when
there is one), then the reply. Optional columns (prompt, emotion, group, order) that are absent from the
file are ignored when left at their defaults; a column named explicitly must exist.
"""
from __future__ import annotations

import csv
import itertools
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..dialogue import BREAK, ReadStats, Turn, check_text_file, clean_text, open_text, speaker_name
from ..errors import UserError, closest
from ..prompt import name_key

DEFAULT_COLUMNS = {
    "speaker": "Voice Type",
    "text": "Dialogue 1 - English",
    "prompt": "Topic Text",
    "emotion": "Emotion",
    "group": "Topic FormId",
    "order": "Response Num",
}
REQUIRED = ("speaker", "text")
# Other exports' usual names for the two columns a file must have, tried (in this order, any casing) when
# the column is left at its default and the file has no such column: `Speaker,Line` works as it is.
USUAL_NAMES = {
    "speaker": ("speaker", "character", "name", "npc", "actor", "author", "who", "voice type", "voice", "npc name",
                "character name", "speaker name", "actor name", "sender", "user", "username"),
    # `line` last: a table's `Line` is as often the line's number
    "text": ("dialogue", "dialog", "text", "utterance", "subtitle", "response", "message", "content", "voice line",
             "dialogue line", "dialogue text", "line"),
}
# In a table read as a running dialogue, a change of value in such a column starts a new conversation.
CONVERSATION_NAMES = ("dialogue_id", "dialogue id", "conversation_id", "conversation id", "conversation",
                      "scene_id", "scene id", "scene", "episode_id", "episode id", "episode")
_TRAILING_NUMBER = re.compile(r"\s+\d+(?:\.\d+)?$")


@dataclass
class CsvOptions:
    speaker_column: str = DEFAULT_COLUMNS["speaker"]
    text_column: str = DEFAULT_COLUMNS["text"]
    prompt_column: str = DEFAULT_COLUMNS["prompt"]
    emotion_column: str = DEFAULT_COLUMNS["emotion"]
    group_column: str = DEFAULT_COLUMNS["group"]
    order_column: str = DEFAULT_COLUMNS["order"]
    player: str = "Player"  # speaker name of the prompt column's lines
    emotion_prefix: bool = False  # output "[Happy] text"

    def columns(self) -> dict[str, str]:
        return {
            "speaker": self.speaker_column,
            "text": self.text_column,
            "prompt": self.prompt_column,
            "emotion": self.emotion_column,
            "group": self.group_column,
            "order": self.order_column,
        }


def _resolve_columns(header: list[str], opts: CsvOptions, path: Path) -> dict[str, int | None]:
    index = {h.strip(): i for i, h in reversed(list(enumerate(header)))}  # a repeated name: its first column
    twice = {h for h, n in Counter(h.strip().casefold() for h in header).items() if n > 1}
    lowered = {h.casefold(): i for h, i in index.items()}
    out: dict[str, int | None] = {}
    problems = []
    for role, col in opts.columns().items():
        if not col:
            out[role] = None
            continue
        i = index.get(col.strip())
        if i is None:
            i = lowered.get(col.strip().casefold())
        if i is None and col == DEFAULT_COLUMNS[role] and role in USUAL_NAMES:
            i, col = next(((lowered[n], header[lowered[n]].strip()) for n in USUAL_NAMES[role] if n in lowered),
                          (None, col))
        if i is None and (role in REQUIRED or col != DEFAULT_COLUMNS[role]):
            hint = closest(col, index)
            hint = f" (did you mean {hint!r}?)" if hint else ""
            flag = f"--csv_{role}_column"
            if col == DEFAULT_COLUMNS[role] and role in USUAL_NAMES:  # the usual names were tried too
                tried = ", ".join(n.title() for n in USUAL_NAMES[role][:4])
                problems.append(f"no {role} column for {flag}: not {col!r} nor a usual name ({tried}, ...){hint}")
            else:
                problems.append(f"no column {col!r} for {flag}{hint}")
        if i is not None and col.strip().casefold() in twice:
            problems.append(f"column {col!r} (--csv_{role}_column) appears more than once in the header")
        out[role] = i
    if opts.emotion_prefix and out["emotion"] is None and not problems:
        col = opts.emotion_column
        problems.append(f"--csv_emotion_prefix needs an emotion column, and there is no {col!r} (--csv_emotion_column)"
                        if col else "--csv_emotion_prefix needs an emotion column (--csv_emotion_column is '')")
    if problems:
        shown = ", ".join(repr(h) for h in list(dict.fromkeys(h.strip() for h in header))[:20]) or "none"
        raise UserError(f"{path}: {'; '.join(problems)}; columns in the file: {shown}")
    return out


def _order_value(v: str, path: Path, line: int, column: str):
    """The row's place in its response; None when the cell is empty (file order)."""
    if not v.strip():
        return None
    try:
        return float(v)
    except ValueError:
        raise UserError(f"{path}:{line}: {v.strip()[:40]!r} in column {column!r} (--csv_order_column) is not a number") from None


def _delimiter(first: str) -> str:
    """The header line's delimiter: a comma, or a semicolon or tab (Excel in many locales, TSV) when the
    line splits into more columns at that."""
    best, most = ",", 1
    for d in (",", ";", "\t"):
        n = len(next(csv.reader([first], delimiter=d), []))
        if n > most:
            best, most = d, n
    return best


_TRIAL_LINES = 5000


def _parses_quoted(lines: list[str], cut: bool) -> bool:
    """Whether tab-separated lines parse with quotes enclosing fields (Excel's "Unicode Text" quotes a
    text holding a tab, a newline or a quote); `cut`: the lines stop short of the file's end."""
    try:
        for _ in csv.reader(lines, delimiter="\t", strict=True):
            pass
    except csv.Error as e:
        return cut and "unexpected end of data" in str(e)  # a quoted field that goes on past the lines
    return True


def _emotion(v: str) -> str:
    return _TRAILING_NUMBER.sub("", v).strip()


def iter_csv_turns(
    path: str | os.PathLike,
    opts: CsvOptions | None = None,
    stats: ReadStats | None = None,
    dropped: Counter | None = None,
    dropped_by: Counter | None = None,
) -> Iterator[Turn | None]:
    """Player line (if any) then the reply, `BREAK` after each response. Streams row by row. `dropped_by`
    counts each (name_key(speaker), rule), as the Discord reader's does.

    A file with neither a prompt nor a group column (`Speaker,Line`: a script kept as a table) is one
    running dialogue, its rows each other's context, as the same lines in a text file would be; unless
    its speaker column is the game export's `Voice Type`, whose rows are separate voice lines."""
    opts = opts or CsvOptions()
    stats = stats if stats is not None else ReadStats()
    dropped = dropped if dropped is not None else Counter()
    dropped_by = dropped_by if dropped_by is not None else Counter()
    path = check_text_file(path)
    stats.layouts[path.name] = "csv"
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with open_text(path, stats) as f:
        # newline=None already turned CRLF into \n; quoted newlines inside fields survive as \n
        first, skipped = f.readline(), 0
        sep = re.fullmatch(r"sep=(.)\n?", first, flags=re.IGNORECASE)  # Excel's delimiter line
        if sep:
            first, skipped = f.readline(), 1
        delimiter = sep.group(1) if sep else _delimiter(first)
        rest, quoting = f, csv.QUOTE_MINIMAL
        if delimiter == "\t":  # a game's TSV seldom quotes its fields, and its lines often start with a quote
            head = list(itertools.islice(f, _TRIAL_LINES))
            rest = itertools.chain(head, f)
            if not _parses_quoted([first, *head], cut=len(head) == _TRIAL_LINES):
                quoting = csv.QUOTE_NONE
                stats.notes.append(f"{path.name}: tab-separated, with quotes that do not enclose fields "
                                   "(`\"Fine,\" he said`): its quotes are read as text")
        reader = csv.reader(itertools.chain([first], rest), delimiter=delimiter, strict=True, quoting=quoting)
        end = skipped
        try:
            header = next(reader, None)
            if header is None or not any(h.strip() for h in header):
                raise UserError(f"{path}: no header row")
            cols = _resolve_columns(header, opts, path)
            # a game's voice lines (LazyVoiceFinder's `Voice Type`) stand alone even without a topic column
            script = (cols["prompt"] is None and cols["group"] is None
                      and header[cols["speaker"]].strip().casefold() != DEFAULT_COLUMNS["speaker"].casefold())
            folded = [h.strip().casefold() for h in header]
            scene = next((folded.index(n) for n in CONVERSATION_NAMES if n in folded), None) if script else None
            scene_value = None
            group: dict | None = None
            end = reader.line_num + skipped
            for row in reader:
                line, end = end + 1, reader.line_num + skipped  # where the row starts (a quoted field may span lines)
                stats.lines += 1
                if not any(c.strip() for c in row):
                    continue
                if any(c.strip() for c in row[len(header):]):
                    what = {",": "a comma", ";": "a semicolon", "\t": "a tab", "|": "a bar"}.get(
                        delimiter, f"a {delimiter!r}")
                    raise UserError(f"{path}:{line}: {len(row)} fields where the header has {len(header)} "
                                    f"({what} inside a text that is not in double quotes?)")
                rec = {role: (row[i] if i is not None and i < len(row) else "") for role, i in cols.items()}
                text = clean_text(rec["text"], stats)
                speaker = speaker_name(rec["speaker"], stats)
                if scene is not None:
                    value = row[scene].strip() if scene < len(row) else ""
                    if scene_value is not None and value != scene_value:
                        if group is not None:
                            yield from _emit(group, opts, stats, script)
                            group = None
                        yield BREAK
                    scene_value = value
                if script and text and not speaker:  # a script's row without a speaker: narration, as in text
                    if group is not None:
                        yield from _emit(group, opts, stats, script)
                        group = None
                    yield Turn(None, text, path.name, line)
                    continue
                if not text or not speaker:
                    dropped["no_text"] += 1
                    if speaker:  # so that asking for them says why they have no samples
                        dropped_by[name_key(speaker), "no_text"] += 1
                    continue
                order = (_order_value(rec["order"], path, line, header[cols["order"]].strip())
                         if cols["order"] is not None else None)
                key = (rec["group"], speaker)
                same = (
                    group is not None
                    and cols["group"] is not None
                    and group["key"] == key
                    and (order is None or group["order"] is None or order > group["order"])
                )
                if same:
                    group["texts"].append(text)
                    group["order"] = order
                    continue
                if group is not None:
                    yield from _emit(group, opts, stats, script)
                group = {
                    "key": key,
                    "order": order,
                    "texts": [text],
                    "speaker": speaker,
                    "prompt": rec["prompt"],
                    "emotion": rec["emotion"],
                    "file": path.name,
                    "line": line,
                }
            if group is not None:
                yield from _emit(group, opts, stats, script)
        except csv.Error as e:
            # the row's first line: an unclosed quote is only noticed where the file ends
            unclosed = " (a quote opened here is never closed)" if "unexpected end of data" in str(e) else ""
            raise UserError(f"{path}:{end + 1}: malformed CSV ({e}){unclosed}") from None


def _emit(group: dict, opts: CsvOptions, stats: ReadStats, script: bool = False) -> Iterator[Turn | None]:
    prompt_text = clean_text(group["prompt"], stats)
    if prompt_text:
        yield Turn(opts.player, prompt_text, group["file"], group["line"])
    text = " ".join(group["texts"])
    prefix = ""
    if opts.emotion_prefix:
        emo = _emotion(clean_text(group["emotion"], stats))
        if emo:
            prefix = f"[{emo}] "
    yield Turn(group["speaker"], prefix + text, group["file"], group["line"])
    if not script:  # a game's responses stand alone; a script's rows follow on
        yield BREAK


def scan_csv_speakers(path: str | os.PathLike, opts: CsvOptions | None = None) -> Counter:
    counts: Counter = Counter()
    for t in iter_csv_turns(path, opts):
        if t is not None and t.speaker and t.speaker != (opts or CsvOptions()).player:
            counts[t.speaker] += 1
    return counts
