"""Yarn Spinner scripts (`.yarn`, the dialogue format of many Unity games) -> turns, branch by branch.

A script is nodes, each a header (`title: Start`, `tags:`, `position:`) and a body between `---` and `===`:

    Sally: Oh! Hi. #line:0a1b2c
    -> Player: Sorry about that.
        Sally: It's fine.
    -> I do that.
        Sally: Please don't.
    <<jump Next>>

A body line `Name: text` is a turn, any other line narration. What the game runs rather than shows goes:
commands (`<<set $x to 1>>`, a condition after an option or a line), comments (`//`), hashtags
(`#line:...`). An option (`->`, and a line group's `=>`) is a turn too (the player's words, named or not),
and the lines indented under it follow it alone: each branch gets the context before the options, never
another branch's lines. That context is said again at the start of each branch as context only (it was
trained where it was said); after the options, the node goes on from the same context. An `<<if>>`'s
branches (`<<elseif>>`, `<<else>>`, to `<<endif>>`) are alternatives the same way, as are lines in a row by
one speaker with different conditions (`Tom: Hi. <<if $met is false>>`, `Tom: You again. <<if $met>>`).
Each node is a conversation of its own.

A line's text is what the player sees: markup goes (`[b]`, `[pause=500 /]`; `[nomarkup]`'s content is
text), `[plural]`/`[select]`/`[ordinal]` show their form, escapes (`\\[`, `\\#`) their character, and `{$name}`
the value a `<<set>>` before it gave (a literal but `""`; a `<<declare>>`'s is a default the game fills in
later; values go on from node to node in the file's order, and after branches only those all agree on). An
expression with no value known is left out, and its line is context only: a character should learn
neither `{$gold}` nor `Take  apples.`.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Generator, Iterable, Iterator

from ..dialogue import BREAK, ReadStats, Turn, as_context, check_text_file, clean_text, open_text, split_speaker

SUFFIX = ".yarn"
_COMMAND = re.compile(r"<<.*?>>")
_COMMANDS_ONLY = re.compile(r"(?:[ \t]*<<.*?>>)+[ \t]*")
_CONTROL = re.compile(r"<<[ \t]*(if|elseif|else|endif|once|endonce)\b")
_CONDITION = re.compile(r"<<[ \t]*if\b(.*?)>>[ \t]*$")  # a line's condition, after its text
_SET = re.compile(r"<<[ \t]*(set|declare)[ \t]+\$(\w+)[ \t]*(.*?)[ \t]*>>")
_ASSIGNED = re.compile(r"(?:to|=)[ \t]*(.*?)(?:[ \t]+as[ \t]+\w+)?")
_TAGS = re.compile(r"(?:[ \t]+#[^\s#]+)+[ \t]*$")
_OPTION = re.compile(r"(?:->|=>)[ \t]*(.*)")
_REPEATED = 30  # the turns of context said again at a branch's start: more than any --rounds in use

# Escaped characters stand in for themselves as private-use characters until the line is shown, so that
# no rule below (commands, hashtags, markup, expressions) takes them for its own.
_ESCAPABLE = "\\{}[]#/<>"
_HIDDEN = {c: chr(0xE001 + i) for i, c in enumerate(_ESCAPABLE)}
_SHOWN = str.maketrans({v: k for k, v in _HIDDEN.items()})
_BRACKETS = str.maketrans({c: _HIDDEN[c] for c in "[]"})  # [nomarkup]'s: its brackets are text
_ESCAPE = re.compile(r"\\([%s])" % re.escape(_ESCAPABLE))
_GONE = "\ue000"  # where an expression with no known value was, until the text around it is tidied
_NOMARKUP = re.compile(r"\[nomarkup\](.*?)\[/nomarkup\]")
_MARKER = re.compile(r"\[(plural|select|ordinal)\b([^\[\]]*?)/?\]")
_ATTRIBUTE = re.compile(r"(\w+)[ \t]*=[ \t]*(\"(?:[^\"\\]|\\.)*\"|\{[^{}]*\}|[^\s\]/]+)")
_MARKUP = re.compile(r"\[(?:/|/?[A-Za-z_][\w-]*(?:[ \t]*=[^\[\]]*|[ \t][^\[\]]*)?)\]")
_EXPRESSION = re.compile(r"\{([^{}]*)\}")
_STRING = re.compile(r"\"((?:[^\"\\]|\\.)*)\"")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
# a dropped expression's space goes with it, and its comma before an end (`Hi, {$name}!` -> `Hi!`)
_GONE_SPACE = re.compile(r"[ \t]*,?[ \t]*%s(?=[.!?\u2026])|[ \t]*%s(?=[,;:])" % (_GONE, _GONE))


def looks_like(head: list[str]) -> bool:
    """Whether a text's first lines are a Yarn node's header (`title: ...`) then `---`."""
    lines = [line.strip() for line in head[:40] if line.strip()]
    return bool(lines) and lines[0].startswith("title:") and "---" in lines[:12]


def iter_turns(lines: Iterable[str], file: str, stats: ReadStats | None = None) -> Iterator[Turn | None]:
    """Turns of a Yarn script's nodes, each branch with the context before it (see the module's note)."""
    stats = stats if stats is not None else ReadStats()
    in_body = False
    body: list[tuple[int, int, str]] = []  # (line number, indent, text) of the node's body
    values: dict = {}  # variable -> its value as shown, where the script set it to a literal (else None)
    unknown: set = set()  # the lines that had an expression with no known value
    for number, raw in enumerate(lines, 1):
        stats.lines += 1
        line = raw.rstrip("\r\n")
        s = line.strip()
        if not in_body:
            if s == "---":
                in_body, body = True, []
            continue
        if s == "===":
            values = yield from _node(_tree(body), file, stats, values=values, unknown=unknown)
            yield BREAK
            in_body = False
            continue
        if not s or s.startswith("//"):
            continue
        text = _TAGS.sub("", _ESCAPE.sub(lambda m: _HIDDEN[m.group(1)], line)).rstrip()
        if text.strip():
            body.append((number, len(text) - len(text.lstrip()), text.strip()))
    if in_body and body:  # a last node without its `===`
        yield from _node(_tree(body), file, stats, values=values, unknown=unknown)
        yield BREAK
    if unknown:
        stats.add_note(f"{file}: {len(unknown)} line(s) with an inline expression the script gives no literal "
                       "value (a `{$name}` the game fills in): context only, never a reply to learn (the value left out)")


def _tree(body: list[tuple[int, int, str]]) -> list:
    """The body as items: ("line", number, text, condition), ("set", variable, expression) and
    ("branches", [(number, text, [items])], whether none may run): an option group's options (their text the
    player's words) or an `<<if>>`'s branches (no text)."""
    items: list = []
    i = 0
    while i < len(body):
        number, indent, text = body[i]
        if _COMMANDS_ONLY.fullmatch(text):
            control = _CONTROL.match(text)
            if control is not None and control.group(1) == "if":
                end, parts, has_else = _if_block(body, i)
                items.append(("branches", [(None, "", _tree(part)) for part in parts], not has_else))
                i = end + 1
                continue
            # a declare's value is a default the game fills in later (`""`, `0`): not what a player sees
            items.extend(("set", m.group(2), m.group(3) if m.group(1) == "set" else "") for m in _SET.finditer(text))
            i += 1
            continue
        option = _OPTION.fullmatch(text)
        if option is None:
            condition = _CONDITION.search(text)
            items.append(("line", number, _COMMAND.sub("", text).strip(), condition and condition.group(1).strip()))
            i += 1
            continue
        group = []
        while i < len(body) and body[i][1] == indent and _OPTION.fullmatch(body[i][2]):
            number, _, text = body[i]
            j = i + 1
            while j < len(body) and body[j][1] > indent:
                j += 1
            said = _COMMAND.sub("", _OPTION.fullmatch(text).group(1)).strip()  # an option's condition goes
            group.append((number, said, _tree(body[i + 1:j])))
            i = j
        items.append(("branches", group, False))
    return _alternatives(items)


def _if_block(body: list[tuple[int, int, str]], start: int) -> tuple[int, list, bool]:
    """Where the `<<if>>` at `start` ends (its `<<endif>>`, or the body's end), its branches' lines, and
    whether it has an `<<else>>`. Indentation does not matter here: the keywords nest."""
    depth, parts, has_else, begin = 0, [], False, start + 1
    for j in range(start + 1, len(body)):
        control = _CONTROL.match(body[j][2]) if _COMMANDS_ONLY.fullmatch(body[j][2]) else None
        keyword = control and control.group(1)
        if keyword in ("if", "once"):  # (a `<<once>>` has its own `<<else>>`)
            depth += 1
        elif keyword in ("endif", "endonce") and depth:
            depth -= 1
        elif keyword in ("elseif", "else", "endif") and not depth:
            parts.append(body[begin:j])
            begin, has_else = j + 1, has_else or keyword == "else"
            if keyword == "endif":
                return j, parts, has_else
    parts.append(body[begin:])
    return len(body) - 1, parts, has_else


def _alternatives(items: list) -> list:
    """Lines with conditions in a row, by one speaker and each condition different, as an `<<if>>`'s
    branches (`Tom: Hi. <<if $met is false>>` then `Tom: You again. <<if $met>>`): one or the other is said."""
    out: list = []
    run: list = []
    for item in items + [("end",)]:
        conditional = item[0] == "line" and bool(item[3])
        if (conditional and run and _speaker(item[2]) == _speaker(run[0][2])
                and item[3] not in {line[3] for line in run}):
            run.append(item)
            continue
        out.extend(run if len(run) < 2 else [("branches", [(None, "", [line]) for line in run], True)])
        run = [item] if conditional else []
        if not conditional and item[0] != "end":
            out.append(item)
    return out


def _speaker(text: str) -> str | None:
    hit = split_speaker(text)
    return hit and hit[0]


def _shows(items: list) -> bool:
    """Whether items have a line or an option to show (an `<<if>>` of commands alone has not)."""
    return any(item[0] == "line" or (item[0] == "branches" and any(text or _shows(children)
                                                                   for _, text, children in item[1]))
               for item in items)


def _value(expression: str, values: dict) -> str | None:
    """An expression's value as shown, where it is a literal or a variable set to one; else None."""
    expression = expression.strip()
    if expression.startswith("$"):
        return values.get(expression[1:])
    string = _STRING.fullmatch(expression)
    if string is not None:
        return re.sub(r"\\(.)", r"\1", string.group(1)) or None  # `""`: a name the game asks for later
    if _NUMBER.fullmatch(expression):
        number = float(expression)
        return str(int(number)) if number.is_integer() else str(number)
    return None


def _assigned(rest: str, values: dict) -> str | None:
    """The value a `<<set $x to ...>>` (`= ...`, `<<declare $x = ... as string>>`) gives, where known."""
    assigned = _ASSIGNED.fullmatch(rest)
    return None if assigned is None else _value(assigned.group(1), values)


def _form(kind: str, attributes: str, values: dict, line: int, unknown: set) -> str:
    """A `[plural]`, `[select]` or `[ordinal]` marker as shown: the form for its value, `%` the value. With
    the value unknown, a plural's `other` form without it (`% coins` -> `coins`); the others go."""
    forms = {m.group(1): m.group(2) for m in _ATTRIBUTE.finditer(attributes)}
    given = forms.pop("value", "")
    value = _value(given[1:-1] if given.startswith("{") else given, values)
    if value is None:
        unknown.add(line)
        if kind != "plural":  # `%th`, or a choice between words, means nothing without the value
            return _GONE
    choice = "other"
    if value is not None and kind == "select":
        choice = value
    elif value is not None and _NUMBER.fullmatch(value):
        choice = _english_form(kind, float(value))
    form = forms.get(choice, forms.get("other", ""))
    form = form[1:-1] if form.startswith('"') else form
    return form.replace("%", _GONE if value is None else value)


def _english_form(kind: str, n: float) -> str:
    """English's plural (`one`, `other`) or ordinal (`one` 1st, `two` 2nd, `few` 3rd, `other`) form of n."""
    if kind == "plural":
        return "one" if n == 1 else "other"
    if not n.is_integer() or int(n) % 100 in (11, 12, 13):
        return "other"
    return {1: "one", 2: "two", 3: "few"}.get(int(n) % 10, "other")


def _render(text: str, values: dict, line: int, unknown: set) -> str:
    """A line's text as the player sees it: markup gone (`[b]`, `[wave]`, `[pause=500 /]`), `[nomarkup]`'s
    content as written, `[plural]`/`[select]`/`[ordinal]` their form, `{$name}` its value where known (else
    left out, counted in `unknown`), escapes (`\\[`, `\\#`) the characters."""
    text = _NOMARKUP.sub(lambda m: m.group(1).translate(_BRACKETS), text)
    text = _MARKER.sub(lambda m: _form(m.group(1), m.group(2), values, line, unknown), text)
    text = _MARKUP.sub("", text)  # (before the expressions: `[shake amount={$fear}]`'s is never shown)
    text = _EXPRESSION.sub(lambda m: _shown(m.group(1), values, line, unknown), text)
    if _GONE in text:
        text = _GONE_SPACE.sub("", text).replace(_GONE, "")
    return text.translate(_SHOWN)


def _shown(expression: str, values: dict, line: int, unknown: set) -> str:
    value = _value(expression, values)
    if value is None:
        unknown.add(line)
        return _GONE
    return value


def _turn(text: str, file: str, number: int, stats: ReadStats, values: dict, unknown: set) -> Turn:
    text = _render(text, values, number, unknown)
    hit = split_speaker(text)
    if hit is not None and number not in unknown:  # a line missing a value (`Take  apples.`): context only
        return Turn(hit[0], clean_text(hit[1], stats), file, number)
    return Turn(None, clean_text(text, stats), file, number)


def _node(items: list, file: str, stats: ReadStats, context: list[Turn] | None = None, values: dict | None = None,
          unknown: set | None = None) -> Generator[Turn | None, None, dict]:
    """Yields the items' turns; returns the variables' values after them (those every branch agrees on)."""
    context = list(context or [])
    values = dict(values or {})
    unknown = unknown if unknown is not None else set()
    for item in items:
        if item[0] == "set":
            values[item[1]] = _assigned(item[2], values)  # None: not known (`to $gold + 5`)
            continue
        if item[0] == "line":
            turn = _turn(item[2], file, item[1], stats, values, unknown)
            if turn.text:
                yield turn
                context.append(turn)
            continue
        # options, or an `<<if>>`'s branches: each from the context before them, never another's lines
        before, shows = context[-_REPEATED:], _shows([item])
        ends = [values] if item[2] else []  # with no branch run, the values stay
        for number, text, children in item[1]:
            said = [_turn(text, file, number, stats, values, unknown)] if text else []
            if shows:
                yield BREAK
                yield from as_context(before)
                yield from said
            ends.append((yield from _node(children, file, stats, before + said, values, unknown)))
        values = {k: v for k, v in ends[0].items() if all(end.get(k) == v for end in ends[1:])}
        if shows:  # after them: the node goes on from the context before them
            yield BREAK
            yield from as_context(before)
    return values


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
