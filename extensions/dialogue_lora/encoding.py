"""Samples -> token ids and labels: tokenisation, loss masking and cutting to `cutoff_len`. Pure functions.

A sample's segments (prompt.record_segments: consecutive (text, trainable) pieces) are tokenised one
piece at a time, the first with the tokenizer's special prefix (e.g. BOS) and the rest without, so the
boundary between prompt and completion is exact and the prompt is tokenised just as at inference (where
the prompt is encoded on its own and the reply generated after it). Labels are the token ids on
trainable pieces (completions, trailing newline included) and -100 (ignored by the loss) elsewhere.

A sample longer than `cutoff_len` loses its oldest context lines, whole (the special prefix is kept, and an
alpaca sample's instruction line); the last completion and its cue line (`Bob:`) are never cut: when they
alone do not fit, the sample is dropped (None).

Training and evaluation (perplexity of reference completions) both encode through here.
"""
from __future__ import annotations

from array import array
from typing import Iterable, Sequence

from . import prompt as prompt_mod

IGNORE_INDEX = -100


def _encode(tokenizer, text: str, special: bool) -> list[int]:
    """The text's ids (after the tokenizer's special prefix when `special`). A special token's spelling in the
    text (`</s>`, `<|eot_id|>` in a chat about models) is text: read as the control token, it would teach the
    model to end its reply there."""
    try:
        return list(tokenizer.encode(text, add_special_tokens=special, split_special_tokens=True))
    except TypeError:  # a tokenizer that does not take the option
        return list(tokenizer.encode(text, add_special_tokens=special))


def _per_tokenizer(tokenizer, attr: str, compute):
    """`compute(tokenizer)`, worked out once and kept on the tokenizer (a fact of it, asked per sample)."""
    cached = getattr(tokenizer, attr, None)
    if cached is not None:
        return cached
    result = compute(tokenizer)
    try:
        setattr(tokenizer, attr, result)
    except AttributeError:
        pass
    return result


def _adds_dummy_prefix(tokenizer) -> bool:
    """True for SentencePiece-style tokenizers that put a word boundary ("▁") before every encoded text.

    Such a tokenizer encodes " hi" on its own as "▁" + "▁hi", not as the "▁hi" it has in running text;
    we then drop one leading space of non-first pieces so " reply" becomes "▁reply" as in running text.
    Detected by encoding "a" alone and "a a": with a dummy prefix both words come out as the same tokens.
    """
    return _per_tokenizer(tokenizer, "_dialogue_lora_dummy_prefix", _dummy_prefix_probe)


def _dummy_prefix_probe(tokenizer) -> bool:
    try:
        one = _encode(tokenizer, "a", False)
        two = _encode(tokenizer, "a a", False)
    except Exception:  # noqa: BLE001 - an exotic tokenizer: assume the common (byte-level) behaviour
        return False
    n = len(one)
    return n > 0 and len(two) == 2 * n and two[:n] == one and two[n:] == one


def _special_prefix(tokenizer, text: str) -> tuple[list[int], list[int]]:
    """(special prefix ids such as [BOS], the text's own ids) for the first piece.

    Special tokens a tokenizer would append (e.g. EOS) are left out: the sample goes on after this piece.
    The prefix is the tokenizer's, whatever the text: found once (`_prefix_probe`) rather than by
    encoding each sample's first piece, most of its text, a second time (a third of the tokenising).
    """
    plain = _encode(tokenizer, text, False)
    if not plain:
        return [], plain
    return list(_per_tokenizer(tokenizer, "_dialogue_lora_special_prefix", _prefix_probe)), plain


def _prefix_probe(tokenizer) -> list[int]:
    """The ids a tokenizer puts before a text with its special tokens on (BOS), found in its full encoding."""
    plain = _encode(tokenizer, "a", False)
    full = _encode(tokenizer, "a", True)
    n = len(plain)
    for k in range(0, len(full) - n + 1):
        if full[k : k + n] == plain:
            return full[:k]
    return []  # tokenisation differed with specials (unusual): the plain ids alone


def piece_ids(tokenizer, pieces: Sequence[str]) -> tuple[list[int], list[list[int]]]:
    """(special prefix ids, ids of each piece) for consecutive text pieces."""
    if not pieces:
        return [], []
    prefix, first = _special_prefix(tokenizer, pieces[0])
    out = [first]
    dummy = _adds_dummy_prefix(tokenizer) if len(pieces) > 1 else False
    for before, text in zip(pieces, pieces[1:]):
        if dummy and text.startswith(" "):
            text = text[1:]
        elif dummy and text and before:
            # a piece that starts a line (`Alice: ...` after a reply's newline) has no word boundary in
            # running text, where the dummy prefix would put one ("▁Alice"): encoded after the character
            # it follows, whose own tokens are then dropped
            head = _encode(tokenizer, before[-1], False)
            ids = _encode(tokenizer, before[-1] + text, False)
            if ids[: len(head)] == head:
                out.append(ids[len(head):])
                continue
        out.append(_encode(tokenizer, text, False))
    return prefix, out


def encode_segments(segments: Sequence[tuple[str, bool]], tokenizer, cutoff_len: int,
                    pinned_text: str = "") -> dict | None:
    """{"input_ids": [...], "labels": [...]} for (text, trainable) segments, or None if it cannot fit.

    labels[i] == input_ids[i] on trainable pieces and IGNORE_INDEX (-100) elsewhere (the model shifts
    labels itself). Longer than `cutoff_len`: the oldest lines after the special prefix are cut, whole
    (a line ends at a token whose text ends with a newline); the last trainable piece, the line it
    completes and anything after it are never cut, so None when they do not fit.
    `pinned_text`, the start of the first piece (an alpaca sample's instruction line), is kept too: the
    oldest dialogue goes first, as a chat prompt, which always has the instruction, would have it.
    """
    if cutoff_len < 1:
        raise ValueError("cutoff_len must be at least 1")
    if not segments:
        return None
    prefix, ids = piece_ids(tokenizer, [t for t, _ in segments])
    input_ids: list[int] = list(prefix)
    labels: list[int] = [IGNORE_INDEX] * len(prefix)
    last_trainable = max((i for i, (_, tr) in enumerate(segments) if tr), default=None)
    if last_trainable is None:
        return None
    keep_from = 0  # index into input_ids of the tail that must survive (the last completion onwards)
    for i, ((_, trainable), piece) in enumerate(zip(segments, ids)):
        if i == last_trainable:
            keep_from = len(input_ids)
        input_ids.extend(piece)
        labels.extend(piece if trainable else [IGNORE_INDEX] * len(piece))
    tail = len(input_ids) - keep_from
    if len(prefix) + tail > cutoff_len or not any(l != IGNORE_INDEX for l in labels[keep_from:]):
        return None
    excess = len(input_ids) - cutoff_len
    if excess > 0:
        # the last reply keeps its cue line (`Bob:`): a reply trained straight after BOS teaches nothing
        # about whose turn it is
        keep_from = _line_start(tokenizer, input_ids, len(prefix), keep_from)
        tail = len(input_ids) - keep_from
        if len(prefix) + tail > cutoff_len:
            return None
        start = len(prefix) + _pinned(tokenizer, pinned_text, ids[0], cutoff_len - len(prefix) - tail)
        # and the cut ends at a line's start: no fragment of an older line (a reply's end, still a target,
        # or a speaker's words without their name) is left at the top
        end = _next_line_start(tokenizer, input_ids, start + excess, keep_from)
        del input_ids[start:end]
        del labels[start:end]
    return {"input_ids": input_ids, "labels": labels}


def _ends_line(tokenizer, token_id: int) -> bool:
    decode = getattr(tokenizer, "decode", None)
    return decode is not None and decode([token_id]).endswith("\n")


def _line_start(tokenizer, ids: list[int], lowest: int, pos: int) -> int:
    """The start of the line that position `pos` is on (not before `lowest`)."""
    while pos > lowest and not _ends_line(tokenizer, ids[pos - 1]):
        pos -= 1
    return pos


def _next_line_start(tokenizer, ids: list[int], pos: int, highest: int) -> int:
    """The first line start at or after `pos` (at most `highest`, itself a line start)."""
    while pos < highest and not _ends_line(tokenizer, ids[pos - 1]):
        pos += 1
    return pos


def _pinned(tokenizer, text: str, first: list[int], room: int) -> int:
    """How many of the first piece's tokens are `text`'s, kept when the sample is cut: 0 when there is no
    such text, when it does not tokenise as the piece's start, or when it and the last reply do not fit."""
    if not text:
        return 0
    head = _special_prefix(tokenizer, text)[1]
    return len(head) if first[: len(head)] == head and len(head) <= room else 0


def _pinned_text(record) -> str:
    """What a sample keeps when it is cut: its instruction (prompt.instruction_of: an alpaca sample's, with
    an input after it; a multi-turn sample's system message), as chat puts it before every prompt."""
    if not isinstance(record, dict) or (prompt_mod.detect_format(record) == "alpaca" and not record.get("input")):
        return ""
    instruction = prompt_mod.instruction_of(record)
    return f"{instruction}\n" if instruction else ""


def encode_record(record: dict, tokenizer, cutoff_len: int, name: str | None = None) -> dict | None:
    """`encode_segments` of a dataset sample in any of the four formats (ValueError on a bad sample); an
    alpaca sample cut to fit keeps its instruction line."""
    return encode_segments(prompt_mod.record_segments(record, name), tokenizer, cutoff_len, _pinned_text(record))


def completion_prompts(record: dict, tokenizer, cutoff_len: int, name: str | None = None) -> list[list[int] | None]:
    """For each completion of a sample, the token ids before it as training saw them: the sample encoded
    once and cut to `cutoff_len` as training cuts it, each completion's prompt all that precedes it there
    (None for a completion the cut left out, or all of them when the last does not fit). Evaluation
    prompts with these, so a long sample's prompt is the one the adapter was trained on."""
    segments = prompt_mod.record_segments(record, name)
    n = sum(1 for _, trainable in segments if trainable)
    enc = encode_segments(segments, tokenizer, cutoff_len, _pinned_text(record))
    if enc is None:
        return [None] * n
    labels = enc["labels"]
    starts = [i for i, label in enumerate(labels)  # where each trained run of tokens begins
              if label != IGNORE_INDEX and (i == 0 or labels[i - 1] == IGNORE_INDEX)]
    kept = [enc["input_ids"][:i] for i in starts][-n:]  # the newest completions survive a cut
    return [None] * (n - len(kept)) + kept


def encode_records(
    records: Iterable[dict], tokenizer, cutoff_len: int, name: str | None = None
) -> tuple[list[dict], list[int]]:
    """(encoded samples, indices of the samples dropped because their last completion did not fit).

    Kept for a whole run, so their ids and labels are 32-bit arrays: lists of ints take about 37 bytes a
    token, which at hundreds of thousands of samples is gigabytes of RAM beside the model; arrays take 8.
    """
    out, dropped = [], []
    for i, rec in enumerate(records):
        enc = encode_record(rec, tokenizer, cutoff_len, name)
        if enc is None:
            dropped.append(i)
        else:
            out.append({key: array("i", ids) for key, ids in enc.items()})
    return out, dropped
