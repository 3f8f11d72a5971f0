"""THE prompt format: the one place that says what the model sees and what it learns to write.

A prompt is the last few turns of the dialogue, one `Speaker: text` line each (narration as plain text),
then the character's cue `Name:`. The completion is " " + the character's line + "\n": the leading space
follows the cue's colon, and the trained newline is what teaches the model to stop.

    Alice: Hi Bob!
    Bob: Hello Alice.
    Alice: Coming tonight?
    Bob:| Wouldn't miss it.\n        <- "|" marks the prompt/completion boundary; loss only right of it

Training, evaluation, the chat script and the webui's chat hook all build their text here, so an adapter
always sees at inference exactly the shape it was trained on. Datasets in any of the four formats that
prepare_dataset writes (rounds, alpaca, sharegpt, messages) are turned into (text, trainable) segments.
"""
from __future__ import annotations

import re
import unicodedata
from typing import Iterable, Sequence

from .errors import UserError, quoted

STOP = "\n"
FORMAT_VERSION = "dialogue_lora/v1"
# Saved beside every adapter (training_parameters.json) so a reader can rebuild prompts without this code.
PROMPT_FORMAT = {
    "version": FORMAT_VERSION,
    "prompt": "up to `rounds` previous turns as 'Speaker: text' lines (narration as plain text), "
    "joined with '\\n', then '\\n' and the cue 'Name:'",
    "completion": "' ' + reply + '\\n'",
    "stop": STOP,
    "loss": "completion tokens only",
}
FORMATS = ("rounds", "alpaca", "sharegpt", "messages")
DEFAULT_ASSISTANT_NAME = "Assistant"

_SPACES = re.compile(r"\s+")
_SURROGATE = re.compile("[\ud800-\udfff]")
_USER_ROLES = {"human", "user"}
_ASSISTANT_ROLES = {"gpt", "assistant", "model", "bot"}
_SYSTEM_ROLES = {"system"}

Turn = tuple  # (speaker: str | None, text: str)


def one_line(text: str) -> str:
    """Collapse all whitespace (newlines included) to single spaces: a turn is always one line."""
    return _SPACES.sub(" ", text).strip()


# A Greek letter's accents (tonos, dialytika, the polytonic marks), which capitals go without; and the dot
# that casefolding leaves on Turkish's `İ` (`i̇`)
_GREEK_ACCENTS = re.compile("(?<=[\u0370-\u03ff\u1f00-\u1fff])[\u0300-\u036f]+")
_TURKISH_DOT = re.compile("(?<=i)\u0307")
_ACCENTS = re.compile("[\u0300-\u036f]")


def name_key(name: str) -> str:
    """What two spellings of one name share: `--name` is matched by it, speakers are counted together by it,
    and chat compares a name with those an adapter learnt by it. Case and spaces aside, Greek capitals'
    missing accents (`ΣΩΚΡΑΤΗΣ` is `Σωκράτης`), Turkish's dotted and dotless i as i (`İSMAİL` is `İsmail`,
    `IŞIK` is `Işık`) and the Unicode form; other accents count (`Hà`, `Hạ` and `Ha` are three people,
    `José` and `Jose` may be two)."""
    if name.isascii():
        return " ".join(name.casefold().split())
    folded = unicodedata.normalize("NFD", name.casefold().replace("\u0131", "i"))
    folded = _TURKISH_DOT.sub("", _GREEK_ACCENTS.sub("", folded))
    return " ".join(unicodedata.normalize("NFC", folded).split())


def loose_key(name: str) -> str:
    """name_key without any accent: what a name typed on a keyboard without them (`zoe`, `Jose`) shares with
    the one meant. Only for choosing among known names (those an adapter learnt), never to merge speakers."""
    return " ".join(_ACCENTS.sub("", unicodedata.normalize("NFD", name_key(name))).split())


def as_learnt(name: str, learnt: Iterable[str]) -> str | None:
    """The name an adapter learnt that `name` means: the same name_key (`bob` is `Bob`), else the one learnt
    name with its loose_key (`zoe` is `Zoë`, where the adapter learnt no `Zoe` and one Zoë); else None."""
    learnt = list(learnt)
    key = name_key(name)
    same = next((n for n in learnt if name_key(n) == key), None)
    if same is not None:
        return same
    loose = [n for n in learnt if loose_key(n) == loose_key(name)]
    return loose[0] if len(loose) == 1 else None


def check_chat_names(names: Sequence[str], user: str, names_word: str = "--name", user_word: str = "--user") -> None:
    """The names a chat cues (its characters', the user's) as its prompts need them: no `:` (it would end the
    cue early), and the user none of the characters (their lines and the user's would look alike).
    `names_word`, `user_word`: what the caller's user calls them (a flag, a field's label)."""
    for n in [*names, user]:
        if ":" in n:
            raise UserError(f"name {quoted(n)} must not contain ':' (it ends the speaker cue)")
    if name_key(user) in {name_key(n) for n in names}:
        raise UserError(f"{user_word} {quoted(user)} is also a character the model speaks as ({names_word}): your lines and "
                        f"theirs would look alike; pick another {user_word}")


def format_turn(speaker: str | None, text: str) -> str:
    """`Speaker: text`, or the bare text for narration (speaker None or empty)."""
    text = one_line(text)
    return f"{speaker}: {text}" if speaker else text


def cue(name: str) -> str:
    return f"{name}:"


def build_prompt(turns: Iterable[Turn], name: str) -> str:
    """The context turns as lines, then the cue. With no context the prompt is just `Name:`."""
    lines = [format_turn(s, t) for s, t in turns]
    lines.append(cue(name))
    return "\n".join(lines)


class ChatPrompt(str):
    """A chat prompt that knows its instruction (`pinned`, the line(s) before the dialogue): cut to fit a
    model's context (generation.prompt_ids), it loses its oldest dialogue and keeps the instruction, as
    training keeps it in a cut sample (encoding.encode_segments). A plain str anywhere else."""

    pinned: str = ""


def chat_prompt(history: Sequence[Turn], name: str, rounds: int, instruction: str | None = None,
                bare: str | None = None) -> str:
    """The prompt for the next reply in a live chat: the last `rounds` turns, then the cue; after the
    `instruction` line (`{name}` filled in) when the adapter learnt one (alpaca samples: instruction_template).
    `bare`: a speaker whose turns are given without their name (the user's, for an adapter whose samples'
    user turns named no one: `user_turns_named`)."""
    # an empty turn (`Bob: `, a reply that was only a newline) is in no training sample: prepare drops them
    said = [(None if bare is not None and s == bare else s, t) for s, t in history if one_line(t)]
    recent = said[-rounds:] if rounds > 0 else []
    prompt = build_prompt(recent, name)
    if not instruction:
        return prompt
    head = f"{instruction.replace('{name}', name)}\n"  # as record_segments joins them
    out = ChatPrompt(head + prompt)
    out.pinned = head
    return out


def instruction_of(record: dict) -> str | None:
    """What a sample puts before its dialogue, as its training text has it: an alpaca sample's instruction;
    a sharegpt or messages sample's system message(s) before its first turn (another tool's `You are Bob.`),
    a line each of their lines. None when it has none (or is no sample)."""
    try:
        fmt = detect_format(record)
        if fmt == "alpaca":  # (LLaMA-Factory's system message first, as the prompt has it)
            parts = [_unix(v) for v in (record.get("system"), record.get("instruction")) if isinstance(v, str) and v]
            instruction = "\n".join(parts)
            return instruction if instruction.strip() else None
        if fmt == "rounds":
            return None
        lines = []
        for role, text, _, _ in _turns_of(record, fmt):
            if role != "system":
                break
            lines += _lines(text)
        return "\n".join(lines) or None
    except ValueError:
        return None


def instruction_template(records: Iterable[dict], name: str | None = None) -> str | None:
    """The instruction that a dataset's samples put before the dialogue (`instruction_of`), with the
    character's name as `{name}` (`Continue the dialogue as {name}.`; whole words only: `Annie` is not
    `Ann`): the one every sample shares, so that chat can put it where training did. `name`: the cue of
    samples that name none (as in `record_segments`). None when a sample has none, when they differ, or
    when one already holds a `{name}` of its own (chat would fill it in)."""
    templates = set()
    for rec in records:
        instruction = instruction_of(rec) if isinstance(rec, dict) else None
        if instruction is None or "{name}" in instruction:
            return None
        who = (rec.get("name") or str(rec.get("input") or "").rstrip().rsplit("\n", 1)[-1].strip().rstrip(":").strip()
               or name)
        if who:
            instruction = re.sub(rf"(?<!\w){re.escape(who)}(?!\w)", "{name}", instruction)
        templates.add(instruction)
        if len(templates) > 1:
            return None
    return templates.pop() if templates else None


MAX_CONTEXT_TURNS = 50


def context_turns(records: Iterable[dict], name: str | None = None) -> int | None:
    """The most turns any reply of a dataset follows (its `--rounds` when prepare_dataset.py wrote it),
    counted as lines before the reply's cue (a sample's instruction lines left out; a multi-turn
    sample's earlier turns in), at most MAX_CONTEXT_TURNS: chat shows the adapter as much as it learnt
    from. None for no sample."""
    most = None
    for rec in records:
        try:
            segments = record_segments(rec, name)
        except ValueError:
            continue
        before = instruction_of(rec) if detect_format(rec) != "alpaca" or rec.get("input") else None
        instruction = len(_lines(before)) if before else 0
        text = ""
        for piece, trainable in segments:
            if trainable:
                lines = [line for line in text.split("\n") if line.strip()]
                most = max(most or 0, len(lines) - 1 - instruction)  # less the reply's own cue
            text += piece
    return None if most is None else min(most, MAX_CONTEXT_TURNS)


def completion(output: str) -> str:
    """What the model learns to write after the prompt."""
    return " " + one_line(output) + STOP


def extract_reply(generated: str) -> str:
    """The reply in a generation that follows a prompt: up to the first newline, trimmed. Any other line
    break a model may produce (`\r`, `\x0b`, `\x1c`-`\x1e`, U+2028, ...) ends it too, and control
    characters go: a reply is one line of text."""
    line = generated.split(STOP, 1)[0]
    line = line.splitlines()[0] if line else line
    return "".join(c for c in line if c == "\t" or unicodedata.category(c) != "Cc").strip()


def detect_format(record: dict) -> str:
    """Which of the four dataset formats a sample is in (by its keys)."""
    if isinstance(record.get("conversations"), list):
        return "sharegpt"
    if isinstance(record.get("messages"), list):
        return "messages"
    if "output" in record and "instruction" in record:
        return "alpaca"
    if "output" in record and "input" in record:
        return "rounds"
    keys = ", ".join(sorted(map(str, record))) or "none"
    raise ValueError(
        f"unknown sample format (keys: {keys}); expected input/output (rounds), instruction/input/output "
        "(alpaca), conversations (sharegpt) or messages"
    )


def _text(value, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} is {type(value).__name__}, expected text")
    bad = _SURROGATE.search(value)
    if bad:  # JSON can spell one (`"\ud83d"`), and no tokenizer can encode it
        raise ValueError(f"{what} holds a broken character, a lone surrogate \\u{ord(bad.group()):04x} (half an emoji?), "
                         f"at {value[max(0, bad.start() - 20):bad.start()]!r}: remove it")
    return value


def _sample_name(record: dict, what: str = "'name'") -> str:
    """A multi-turn sample's own "name" (another tool's; or one turn's), as its cue takes it: one line, no `:`
    (it would end the cue early: `A: B:` cues `A`) and no control characters (`Bob\x1b[2J` was printed by
    chat.py as is)."""
    value = record.get("name")
    if value is None or value == "":
        return ""
    value = _text(value, what)
    if "\n" in value.strip() or "\r" in value.strip() or any(unicodedata.category(c) == "Cc" for c in value.strip()):
        raise ValueError(f"{what} {quoted(value)} holds a line break or control character: a name is one line")
    if ":" in value:
        raise ValueError(f"{what} {quoted(value)} must not contain ':' (it ends the speaker cue)")
    return one_line(value)


def _unix(text: str) -> str:
    """Windows' line ends as chat prompts have them ("\r\n" would train a stray "\r" token each line)."""
    return text.replace("\r\n", "\n") if "\r" in text else text


_LABELLED = re.compile(r"[^\s:][^:\n]{0,59}:(\s|$)")  # a line that names its speaker (`Alice: hi`)


def unlabelled_user_turns(records: Iterable[dict]) -> bool:
    """Whether a dataset's multi-turn samples have user turns and none of them names its speaker (`Hi Bob!`,
    as a chat app's export has them, not `Alice: Hi Bob!`): chat prompts name the user, which such
    samples never did. False where any does, or where there are no such turns."""
    seen = False
    for rec in records:
        try:
            fmt = detect_format(rec)
            if fmt not in ("sharegpt", "messages"):
                continue
            for role, text, speaker, _ in _turns_of(rec, fmt):
                if role != "user" or not text.strip():
                    continue
                if speaker or _LABELLED.match(one_line(text)):
                    return False
                seen = True
        except (ValueError, AttributeError, KeyError, TypeError):
            continue
    return seen


def user_turns_named(params: dict) -> bool:
    """Whether an adapter's samples named the user's speaker (`Alice: hi`), as chat prompts do; False where
    training recorded that they named no one (a chat app's sharegpt: `hi`). An adapter that records nothing:
    named, as this project's samples always are."""
    return params.get("user_turns_named") is not False


def recorded_name(params: dict) -> str | None:
    """An adapter's recorded --name as the character to speak as by default: not where it recorded what it
    learnt and that name is not among them (its every sample held out or too long: `not learnt`)."""
    name = params.get("name") or None
    learnt = params.get("characters")
    return str(name) if name and (not learnt or name in learnt) else None


def needs_name(record) -> bool:
    """A sample that names no character of its own (a sharegpt or messages sample without a usable "name"):
    the one `--name` cues. Rounds and alpaca samples carry their cue in their text."""
    try:
        fmt = detect_format(record)
        return fmt in ("sharegpt", "messages") and not _sample_name(record) and any(
            role == "assistant" and trained and not speaker for role, _, speaker, trained in _turns_of(record, fmt))
    except (ValueError, AttributeError, KeyError, TypeError):
        return False


def replace_broken(text: str) -> str:
    """Lone surrogates (undecodable input bytes, half an emoji) as U+FFFD: text a tokenizer can take."""
    return _SURROGATE.sub("\ufffd", text)


_TOOL_ROLES = {"tool", "function", "function_call", "observation", "ipython", "tool_call", "tool_response"}


def turn_keys(record: dict, fmt: str) -> tuple[str, str, str]:
    """(list key, role key, text key) of a multi-turn sample: sharegpt's `from`/`value` and messages'
    `role`/`content`, either pair in either list (Hugging Face sets mix them), judged by its first turn."""
    key = "conversations" if fmt == "sharegpt" else "messages"
    first = next((m for m in record[key] if isinstance(m, dict)), {})
    if fmt == "sharegpt":
        return (key, "role", "content") if "from" not in first and "role" in first else (key, "from", "value")
    return (key, "from", "value") if "role" not in first and "from" in first else (key, "role", "content")


def _turn_text(value, i: int, text_key: str) -> str:
    """A turn's text: a string, or OpenAI's list of parts (its text parts joined; an image or sound refused)."""
    if isinstance(value, list):
        texts = []
        for part in value:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind != "text" or not isinstance(part.get("text"), str):
                raise ValueError(f"turn {i} '{text_key}' holds a part of type {kind or type(part).__name__!r}: "
                                 "only text is trained")
            texts.append(part["text"])
        value = " ".join(t.strip() for t in texts if t.strip())
    return _text(value, f"turn {i} '{text_key}'")


def _turns_of(record: dict, fmt: str) -> list[tuple[str, str, str, bool]]:
    """(role, text, speaker, trained) of a multi-turn sample's turns: role normalised to user/assistant/
    system; speaker: the turn's own `name` (OpenAI's), else ""; trained: False for a reply marked
    `weight: 0` (OpenAI's and Axolotl's way of keeping a turn as context only). A top-level `system`
    (LLaMA-Factory's) is the first turn."""
    key, role_key, text_key = turn_keys(record, fmt)
    out = []
    system = record.get("system")
    if system not in (None, ""):
        out.append(("system", _text(system, "'system'"), "", False))
    for i, m in enumerate(record[key]):
        if not isinstance(m, dict) or role_key not in m or text_key not in m:
            raise ValueError(f"turn {i} needs '{role_key}' and '{text_key}'")
        role = str(m[role_key]).lower()
        if role in _TOOL_ROLES or (m[text_key] is None and m.get("tool_calls")):
            what = f"role {m[role_key]!r}" if role in _TOOL_ROLES else "'tool_calls' and no text"
            raise ValueError(f"turn {i} is a tool call or its result ({what}): tool turns are not dialogue; leave "
                             "them out of the samples")
        text = _turn_text(m[text_key], i, text_key)
        speaker = _sample_name(m, f"turn {i} 'name'")
        weight = 1 if m.get("weight") is None else m["weight"]  # (null: as if absent)
        if weight not in (0, 1):  # (True and False are 1 and 0)
            raise ValueError(f"turn {i} 'weight' is {weight!r}: 0 (context only) or 1 (trained)")
        if role in _USER_ROLES:
            out.append(("user", text, speaker, False))
        elif role in _ASSISTANT_ROLES:
            out.append(("assistant", text, speaker, bool(weight)))
        elif role in _SYSTEM_ROLES:
            out.append(("system", text, speaker, False))
        else:
            raise ValueError(f"turn {i} has unknown role {m[role_key]!r}")
    return out


def is_sample(record) -> bool:
    """A record shaped as a sample of one of the four formats (a Discord or Telegram export's "messages" are
    not a sample's turns): what makes a file a dataset rather than raw dialogue. By its shape, not by what
    training would make of it: a sample training refuses (an alpaca `history`, a `weight` of 0.5) is still
    a dataset's, and said so where it is trained, not read as dialogue."""
    if not isinstance(record, dict):
        return False
    try:
        fmt = detect_format(record)
    except ValueError:
        return False
    if fmt in ("rounds", "alpaca"):
        return True
    key, role_key, text_key = turn_keys(record, fmt)
    turns = record[key]
    return bool(turns) and all(isinstance(t, dict) and role_key in t and text_key in t for t in turns)


def record_segments(record: dict, name: str | None = None) -> list[tuple[str, bool]]:
    """A sample as consecutive (text, trainable) pieces; concatenated they are the full training text.

    Trainable pieces are completions (" " + reply + "\\n"); everything else is context. Multi-turn
    samples (sharegpt, messages) train on every assistant turn, each preceded by the character's cue.
    `name` is the cue for multi-turn samples that carry no "name" key. Raises ValueError on a bad sample.
    """
    fmt = detect_format(record)
    if fmt == "rounds":
        context = _unix(_text(record["input"], "'input'"))
        if not context.rstrip().endswith(":"):  # the reply would be learnt after no one's name
            raise ValueError(f"'input' must end with the cue of the character who replies, e.g. 'Bob:' "
                             f"(it ends {context.strip()[-30:]!r})")
        # (another tool's `Bob: ` or `Bob:\n`: the reply is learnt right after the cue, as chat prompts it)
        return [(context.rstrip(), False), _reply(_text(record["output"], "'output'"))]
    if fmt == "alpaca":
        if record.get("history"):  # LLaMA-Factory's earlier turns: its instruction is a user's turn, not ours
            raise ValueError("'history' (earlier turns, as LLaMA-Factory's alpaca has them) is not read: give such "
                             "samples as sharegpt or messages, each turn a message")
        # (LLaMA-Factory's `system` first: what the sample puts before the dialogue, as a system message)
        parts = [_unix(_text(record.get(k) or "", f"'{k}'")) for k in ("system", "instruction", "input")]
        prompt = "\n".join(p for p in parts if p).rstrip()
        return [(prompt, False), _reply(_text(record["output"], "'output'"))]
    name = _sample_name(record) or name or DEFAULT_ASSISTANT_NAME
    segments: list[tuple[str, bool]] = []
    context: list[str] = []
    replies = False  # (all of them `weight: 0`, when none is trained)
    for role, text, speaker, trained in _turns_of(record, fmt):
        replies = replies or role == "assistant"
        if role == "assistant" and trained:
            prefix = "\n".join(context + [cue(speaker or name)])
            segments.append((prefix, False))
            segments.append(_reply(text))
            context = []
        elif role == "assistant":  # `weight: 0`: a reply the user chose not to train, context as it was said
            if one_line(text):
                context.append(format_turn(speaker or name, text))
        elif speaker and role == "user" and not one_line(text).startswith(f"{speaker}:"):
            if one_line(text):  # (an empty turn is no line, as elsewhere)
                context.append(format_turn(speaker, text))  # a message's own `name` (OpenAI's): its speaker
        else:
            # user turns already carry their speaker ("Alex: text"); several lines stay several lines
            context.extend(_lines(text))
    if not segments:
        raise ValueError("each assistant turn has 'weight': 0: nothing to learn" if replies
                         else "no assistant turn to learn from")
    return segments


def _lines(text: str) -> list[str]:
    """A turn's lines as context lines: each one line of single spaces, blank lines gone."""
    return [one_line(line) for line in text.split("\n") if line.strip()]


def _reply(text: str) -> tuple[str, bool]:
    """A reply as a segment: learnt, unless it is empty (another tool's `"output": ""`), which would teach the
    model to end its turn at once; training leaves out a sample with nothing else to learn."""
    return completion(text), bool(one_line(text))


def record_examples(record: dict, name: str | None = None) -> list[tuple[str, str]]:
    """(prompt, reference reply) for each trainable piece of a sample: what evaluation generates from."""
    out = []
    text_so_far = ""
    for text, trainable in record_segments(record, name):
        if trainable:
            out.append((text_so_far, text.strip()))
        text_so_far += text
    return out


def record_cues(pieces: Sequence[tuple[str, bool]]) -> list[str]:
    """The characters one sample trains, from its segments: the cue that ends the context before each learnt
    reply (an alpaca sample from elsewhere may end with no one's name: none)."""
    cues = []
    for (before, _), (_, trainable) in zip(pieces, pieces[1:]):
        last = before.rsplit("\n", 1)[-1].strip() if trainable else ""
        if last.endswith(":"):
            cues.append(last[:-1].strip())
    return cues


def characters_of(cues: Iterable[Sequence[str]]) -> list[str]:
    """The characters samples train, most learnt replies first, from each sample's `record_cues`."""
    from collections import Counter

    counts: Counter = Counter()
    for names in cues:
        counts.update(names)
    return [c for c, _ in counts.most_common()]


def record_characters(segments: Sequence[list[tuple[str, bool]]]) -> list[str]:
    """The characters a dataset trains, most first, from its samples' segments (`validate_records`)."""
    return characters_of(record_cues(pieces) for pieces in segments)


def validate_records(records: Sequence[dict], source: str = "dataset",
                     name: str | None = None) -> list[list[tuple[str, bool]]]:
    """Segments for every sample (`name`: as in `record_segments`); a bad one raises UserError naming where
    it is: its line in a JSONL file (`fileio.Records`), else its number counted from 1."""
    where = getattr(records, "where", None) or (lambda i: f"{source}: sample {i + 1}")
    out = []
    for i, rec in enumerate(records):
        try:
            out.append(record_segments(rec, name))
        except ValueError as e:
            raise UserError(f"{where(i)}: {e}") from None
    return out
