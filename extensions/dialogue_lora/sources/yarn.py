"""Yarn Spinner scripts (`.yarn`, the dialogue format of many Unity games) -> turns, branch by branch.

A script is nodes, each a header (`title: Start`, `tags:`, `position:`) and a body between `---` and `===`:

    Sally: Oh! Hi. #line:0a1b2c
    -> Player: Sorry about that.
        Sally: It's fine.
    -> I do that.
        Sally: Please don't.
    <<jump Next>>

A body line `Name: text` is a turn, any other line narration. What the game runs rather than shows goes:
commands (`<<set $x to 1>>`, a condition after an option), comments (`//`), hashtags (`#line:...`). An
option (`->`, and a line group's `=>`) is a turn too (the player's words, named or not), and the lines
indented under it follow it alone: each branch gets the context before the options, never another
branch's lines. That context is said again at the start of each branch as context only (it was trained
where it was said); after the options, the node goes on from the same context. Each node is a
conversation of its own.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Iterator

from ..dialogue import BREAK, ReadStats, Turn, as_context, check_text_file, clean_text, open_text, split_speaker

SUFFIX = ".yarn"
_COMMAND = re.compile(r"<<.*?>>")
_TAGS = re.compile(r"(?:[ \t]+#[^\s#]+)+[ \t]*$")
_OPTION = re.compile(r"(?:->|=>)[ \t]*(.*)")
_REPEATED = 30  # the turns of context said again at a branch's start: more than any --rounds in use


def looks_like(head: list[str]) -> bool:
    """Whether a text's first lines are a Yarn node's header (`title: ...`) then `---`."""
    lines = [line.strip() for line in head[:40] if line.strip()]
    return bool(lines) and lines[0].startswith("title:") and "---" in lines[:12]


def iter_turns(lines: Iterable[str], file: str, stats: ReadStats | None = None) -> Iterator[Turn | None]:
    """Turns of a Yarn script's nodes, each branch with the context before it (see the module's note)."""
    stats = stats if stats is not None else ReadStats()
    in_body = False
    body: list[tuple[int, int, str]] = []  # (line number, indent, text) of the node's body
    for number, raw in enumerate(lines, 1):
        stats.lines += 1
        line = raw.rstrip("\r\n")
        s = line.strip()
        if not in_body:
            if s == "---":
                in_body, body = True, []
            continue
        if s == "===":
            yield from _node(_tree(body), file, stats)
            yield BREAK
            in_body = False
            continue
        if not s or s.startswith("//"):
            continue
        text = _TAGS.sub("", _COMMAND.sub("", line)).rstrip()
        if text.strip():
            body.append((number, len(text) - len(text.lstrip()), text.strip()))
    if in_body and body:  # a last node without its `===`
        yield from _node(_tree(body), file, stats)
        yield BREAK


def _tree(body: list[tuple[int, int, str]]) -> list:
    """The body as items: ("line", number, text) and ("options", [(number, text, [items])])."""
    items: list = []
    i = 0
    while i < len(body):
        number, indent, text = body[i]
        option = _OPTION.fullmatch(text)
        if option is None:
            items.append(("line", number, text))
            i += 1
            continue
        group = []
        while i < len(body) and body[i][1] == indent and _OPTION.fullmatch(body[i][2]):
            number, _, text = body[i]
            j = i + 1
            while j < len(body) and body[j][1] > indent:
                j += 1
            group.append((number, _OPTION.fullmatch(text).group(1).strip(), _tree(body[i + 1:j])))
            i = j
        items.append(("options", group))
    return items


def _turn(text: str, file: str, number: int, stats: ReadStats) -> Turn:
    hit = split_speaker(text)
    if hit is not None:
        return Turn(hit[0], clean_text(hit[1], stats), file, number)
    return Turn(None, clean_text(text, stats), file, number)


def _node(items: list, file: str, stats: ReadStats, context: list[Turn] | None = None) -> Iterator[Turn | None]:
    context = list(context or [])
    for item in items:
        if item[0] == "line":
            turn = _turn(item[2], file, item[1], stats)
            if turn.text:
                yield turn
                context.append(turn)
            continue
        before = context[-_REPEATED:]
        for number, text, children in item[1]:
            yield BREAK
            yield from as_context(before)
            said = [_turn(text, file, number, stats)] if text else []
            yield from said
            yield from _node(children, file, stats, before + said)
        yield BREAK  # after the options: the node goes on from the context before them
        yield from as_context(before)


def is_script(path) -> bool:
    """Whether a text file is a Yarn script: a `.yarn` file, or one that `looks_like` it; False for anything
    unreadable (said later)."""
    path = Path(path)
    if path.suffix.lower() == SUFFIX:
        return True
    try:
        with open_text(path) as f:
            return looks_like([f.readline() for _ in range(40)])
    except (OSError, UnicodeError, ValueError):
        return False


def read(path: Path, stats: ReadStats) -> Iterator[Turn | None]:
    path = check_text_file(path)
    stats.layouts[path.name] = "yarn"
    with open_text(path, stats) as f:
        yield from iter_turns(f, path.name, stats)
