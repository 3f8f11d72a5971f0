"""Turns -> samples: the context window, the per-sample rules (empty, action-only, duplicate) and the
four output formats.

A sample is one non-empty turn of a chosen character: its `input` is up to `rounds` previous turns as
`Speaker: text` lines (narration as plain text) and then the cue `Name:`; its `output` is the turn's
text. That is exactly `prompt.build_prompt(context_turns, name)` (tests hold the two equal); the
window keeps each turn already formatted so a million-line file does not re-format every turn
`rounds` times.

Formats (`FORMATTERS`; `to_record` for one sample), all with the extra keys "name" (the character, cased as in the data) and
"source" ("file:line"):

    rounds    {"input", "output"}
    alpaca    {"instruction", "input", "output"}               instruction: `--instruction`, {name} filled in
    sharegpt  {"conversations": [{"from": "human", "value": context}, {"from": "gpt", "value": output}]}
    messages  {"messages": [{"role": "user", "content": context}, {"role": "assistant", "content": output}]}

In sharegpt/messages the whole context (the character's own earlier lines included) is ONE user
message, its `Speaker: text` lines joined with "\\n", and the target is the single assistant message,
so `prompt.record_segments` rebuilds exactly the rounds prompt and no line is trained twice. With no
context the user message is present but empty: a conversation that opens with the assistant breaks
chat templates that insist on user/assistant alternation (Llama 2, Mistral, Gemma raise), and both
text-generation-webui's Chat Dataset loader and Axolotl's `chat_template` type render an empty user
turn without complaint.
"""
from __future__ import annotations

import re
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, NamedTuple

from . import prompt
from .prompt import name_key
from .dialogue import Turn, strip_actions as _strip_actions

DEFAULT_INSTRUCTION = "Continue the dialogue as {name}."
ALL = "*"  # --name '*': every named speaker is a character
# Names exports give everyone whose account is gone (Telegram; Discord, with or without its number): many
# people under one name, no character. `*` leaves them out; asked for by name, they are trained.
_NOBODY = re.compile(r"deleted (account|user)( [0-9a-f]{4,})?")

# Rule names as they appear in the report, in report order, with what they mean.
RULES = {
    "empty": "turns with no text (a bare `Name:` or an empty speech)",
    "action_only": "character lines that were only an action (--strip_actions)",
    "duplicate": "samples identical to an earlier one (input and output)",
    "system_message": "chat-export messages that are not Default or Reply (joins, pins, ...)",
    "forwarded": "Telegram messages forwarded from someone else (not the sender's words)",
    "bot": "chat-export messages by bots",
    "attachment_only": "chat-export messages with attachments, embeds or stickers but no text, or only a link",
    "ping_only": "chat-export messages that were only a mention",
    "quote_only": "Discord and Slack messages that were only a quote (`> ...`: someone else's words)",
    "non_response": "non-responses (lol, lmao, gg, ..., a message without a word)",
    "ender": "conversation enders (gtg, cya, going to sleep, ...)",
    "low_quality": "messages of low-quality conversations (< 5 messages, all < 30 characters)",
    "no_text": "CSV rows with an empty reply",
}


class Sample(NamedTuple):
    input: str  # context lines + "\n" + cue, or just the cue
    output: str  # the character's line (one line, no name prefix)
    name: str  # the character, cased as in the data
    source: str  # "file:line" of the character's line
    context: str  # the context lines alone ("" when none): the chat formats' user message


@dataclass
class Tally:
    """Counts collected while samples stream by (the report is built from it)."""

    speakers: Counter = field(default_factory=Counter)  # exact speaker name -> non-empty turns
    seen: set = field(default_factory=set)  # every speaker name met, even with empty turns only
    dropped: Counter = field(default_factory=Counter)  # rule -> lines dropped
    per_name: Counter = field(default_factory=Counter)  # character (as written) -> samples
    turns: int = 0  # turns read (narration included)
    # (name_key(speaker), rule) -> lines dropped: why a character got no samples (the sources' filters
    # add theirs, e.g. a Discord user whose every message was `lol`)
    dropped_by: Counter = field(default_factory=Counter)
    # name_key of another name -> the speaker name used (a Discord username -> the nickname shown)
    aliases: dict = field(default_factory=dict)
    # name_key of a Discord name -> (the name, the ids of the accounts that use it): two people with one name
    people: dict = field(default_factory=dict)


class SeenKeys:
    """Exact set of 64-bit sample hashes for duplicate removal, in about 6 bytes a key.

    A Python set of ints costs about 70 bytes a key (the int object and a sparse table): 20 MB per
    million lines of dialogue, the one thing in prepare that grew with the file. Here a key's top 16
    bits pick one of 65,536 buckets, and the bucket is a bytes string of its keys' low 6 bytes, found
    with `bytes.find` (C speed; a match that does not start at a multiple of 6 straddles two keys and
    does not count). Buckets hold a few keys each (about 150 at ten million), so the search and the
    copy on insert stay short, and there is never a second copy of the whole set to grow into.
    """

    def __init__(self) -> None:
        self._buckets = [b""] * 65536
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, key: int) -> bool:
        """Add a 64-bit `key` (as `hash()` returns); True if it was new, False if it was there already."""
        low = (key & 0xFFFFFFFFFFFF).to_bytes(6, "little")
        at = (key >> 48) & 0xFFFF
        bucket = self._buckets[at]
        i = bucket.find(low)
        while i % 6:  # -1 % 6 == 5: not found ends the loop too
            if i < 0:
                self._buckets[at] = bucket + low
                self._count += 1
                return True
            i = bucket.find(low, i + 1)
        return False


def nobody(speaker: str) -> bool:
    """Whether a speaker is an export's name for accounts that are gone (`*` leaves them out)."""
    return bool(_NOBODY.fullmatch(name_key(speaker)))


def wanted_names(names: Iterable[str]) -> frozenset[str] | None:
    """Casefolded character names, or None for every speaker (`*`)."""
    names = [n.strip() for n in names if n and n.strip()]
    if ALL in names:
        return None
    return frozenset(name_key(n) for n in names)


def iter_samples(
    turns: Iterable[Turn | None],
    names: Iterable[str],
    rounds: int = 5,
    strip_actions: bool = False,
    dedupe: bool = True,
    tally: Tally | None = None,
    not_all: Iterable[str] = (),
) -> Iterator[Sample]:
    """One sample per non-empty turn of a character in `names` (case-insensitive; `*` for all).

    `turns` may contain `None` (a conversation break): the context window is emptied there.
    `not_all`: speakers that `*` leaves out (the CSV's player).
    """
    excluded = frozenset(name_key(n) for n in not_all)
    tally = tally if tally is not None else Tally()
    wanted = wanted_names(names)
    window: deque[str] = deque(maxlen=max(rounds, 0))
    seen_keys = SeenKeys()
    speakers = tally.speakers
    met = tally.seen
    dropped = tally.dropped
    dropped_by = tally.dropped_by
    per_name = tally.per_name
    is_target: dict[str, bool] = {}
    append = window.append
    new = tuple.__new__  # Sample(...) without the Python-level __new__
    n_turns = 0
    for t in turns:
        if t is None:
            window.clear()
            continue
        n_turns += 1
        speaker, text = t[0], t[1]
        if not text:
            dropped["empty"] += 1
            if speaker is not None:
                met.add(speaker)
                dropped_by[name_key(speaker), "empty"] += 1
            continue
        if speaker is None:
            append(text)
            continue
        speakers[speaker] += 1
        target = is_target.get(speaker)
        if target is None:
            folded = name_key(speaker)
            target = is_target[speaker] = (folded in wanted if wanted is not None
                                           else folded not in excluded and not nobody(speaker))
            met.add(speaker)
        if target:
            out = _strip_actions(text, speaker) if strip_actions else text
            if not out or (strip_actions and not any(c.isalnum() for c in out)):  # `*nods* ...` leaves `...`
                dropped["action_only"] += 1
                dropped_by[name_key(speaker), "action_only"] += 1
            else:
                # == prompt.build_prompt(context_turns, speaker): the window holds format_turn() lines
                context = "\n".join(window)
                inp = f"{context}\n{speaker}:" if context else f"{speaker}:"
                if dedupe:
                    if not seen_keys.add(hash((inp, out))):
                        dropped["duplicate"] += 1
                        dropped_by[name_key(speaker), "duplicate"] += 1
                        append(f"{speaker}: {text}")
                        continue
                per_name[speaker] += 1
                yield new(Sample, (inp, out, speaker, f"{t[2]}:{t[3]}", context))
        append(f"{speaker}: {text}")
    tally.turns += n_turns


# ---------------------------------------------------------------------------------------------- formats


def _rounds(s: Sample, instruction: str) -> dict:
    return {"input": s.input, "output": s.output, "name": s.name, "source": s.source}


def _alpaca(s: Sample, instruction: str) -> dict:
    return {
        "instruction": instruction.replace("{name}", s.name),
        "input": s.input,
        "output": s.output,
        "name": s.name,
        "source": s.source,
    }


def _sharegpt(s: Sample, instruction: str) -> dict:
    return {
        "conversations": [{"from": "human", "value": s.context}, {"from": "gpt", "value": s.output}],
        "name": s.name,
        "source": s.source,
    }


def _messages(s: Sample, instruction: str) -> dict:
    return {
        "messages": [{"role": "user", "content": s.context}, {"role": "assistant", "content": s.output}],
        "name": s.name,
        "source": s.source,
    }


FORMATTERS: dict[str, Callable[[Sample, str], dict]] = {
    "rounds": _rounds,
    "alpaca": _alpaca,
    "sharegpt": _sharegpt,
    "messages": _messages,
}
assert tuple(FORMATTERS) == prompt.FORMATS


def to_record(sample: Sample, fmt: str = "rounds", instruction: str = DEFAULT_INSTRUCTION) -> dict:
    """A sample as a JSON-ready dict in one of the four formats."""
    return FORMATTERS[fmt](sample, instruction)
