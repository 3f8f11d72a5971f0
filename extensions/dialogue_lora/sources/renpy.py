"""Ren'Py visual-novel scripts (.rpy) -> turns.

The input is one .rpy file, a game's folder (`game/`, or the folder above it) or a zip of one. In a folder
every .rpy file below it is read, in order of path, except the engine's own (`renpy/`) and translations
(`tl/`: give `game/tl/LANGUAGE` to read one, below).

Read as the game says it:
- Who is who: `define e = Character("Eileen", ...)`, also through `default`, `$ e = ...` or an
  `init python:` block, `Character(_("Eileen"))`, `DynamicCharacter("e_name")` (or `dynamic=True`) with
  that variable set to a string somewhere, and `kind=` another character. Definitions in any file of the
  game count (given one file, the others are read for theirs). A character defined with no name
  (`Character(None)`), `narrator` and `centered` are narration.
- Say statements: `e "Hello."`, `e happy "Hello."` (image attributes), `"Eileen" "Hello."`,
  `$ renpy.say(e, "...")`, narration `"It was raining."` (context, never a target); `extend "..."`
  continues the line before; a triple-quoted say is one line per paragraph, as Ren'Py shows it.
- Text: tags go (`{i}`, `{w}`, `{color=...}`; `{rt}` readings and `{alt}` texts with their content),
  `{{`, `[[` and `%%` are a brace, a bracket and a per cent sign, `[player_name]` becomes the variable's
  string where the scripts set one (else it stays as written).
- Conversations: a label and a `scene` statement start a new one; so do each menu choice and each
  branch of an `if`, which start with what led to the menu or the `if` (said again as narration, context
  only) and, for a choice, its words. A label that a `jump` or `call` goes to starts with what led there,
  and after a `call` the called label's lines are the context.
- Python blocks, screens, styles, transforms and images are skipped, as are `play`, `show`, `jump` and
  Ren'Py's other statements.
- A translation (`game/tl/LANGUAGE`) has no structure of its own: the game's scripts are read, each say
  in its translation, found by the original statement Ren'Py writes as a comment above it.

Pure functions (`statements`, `characters`, `turns_of`, `translations_of`) do the reading;
`iter_renpy_turns` opens the files.
"""
from __future__ import annotations

import ast
import bisect
import io
import os
import re
import zipfile
from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

from ..dialogue import (
    BREAK,
    ENCODING_SNIFF,
    ReadStats,
    Turn,
    as_context,
    check_text_file,
    clean_text,
    legacy_encoding,
    open_text,
    speaker_name,
)
from ..errors import UserError
from ..fileio import read_zip_member

SUFFIX = ".rpy"
_COMPILED = (".rpyc", ".rpa")  # compiled scripts and archives: a game's, not readable here
_SKIPPED_DIRS = {"renpy", "tl", "saves", "cache", "__macosx"}  # the engine, translations, a player's files

# Statements that are not say statements although a word and a string may start them (`play music "a.ogg"`)
_KEYWORDS = frozenset(
    "play queue stop voice sound show hide scene image define default label jump call return menu if elif else "
    "while for pass python init translate old new style screen transform with window pause nvl camera "
    "layeredimage testcase at onlayer behind zorder expression rpy renpy".split())
_NARRATORS = frozenset({"narrator", "centered", "vcentered", "nvl_narrator", "adv"})
_CHARACTER_CALLS = frozenset({"Character", "DynamicCharacter", "ADVCharacter", "NVLCharacter", "Speaker",
                              "ADVSpeaker", "NVLSpeaker"})
# Blocks whose lines are no one's words: screens, styles, transforms, an image's or show's ATL (whose
# lone strings are file names), test cases, Python. Any other block (a label, a menu, `if`, a
# creator-defined statement's) is read.
_SKIPPED_BLOCKS = frozenset({"screen", "style", "transform", "image", "layeredimage", "testcase", "testsuite",
                             "show", "scene", "camera", "python", "atl"})
_INIT = re.compile(r"init(?:\s+[-+]?\d+)?\s+(?=\w)")  # `init -1 style ...:`, `init 5 python:`
_TRANSLATE = re.compile(r"translate\s+(\w+)\s+(\w+)(?:\s+\w+)*\s*:$")  # `translate french start_1f2e:`
_ORIGIN = re.compile(r"\s*#\s*(\S+?\.rpy):(\d+)\s*$")  # a translation's `# game/script.rpy:57`
_IDENT = r"[^\W\d]\w*"  # a name, in any script (`艾`, `é`), as Python 3 and Ren'Py take it
_RENPY_SAY = re.compile(rf"\$\s*renpy\.say\(\s*({_IDENT})\s*,\s*")  # `$ renpy.say(e, "...")`
_ASSIGN = re.compile(rf"(?:(?:define|default)(?:\s+[-+]?\d+)?\s+|\$\s*)?({_IDENT}(?:\.\w+)*)\s*=(?!=)\s*(.+)$",
                     re.DOTALL)
_WORD = re.compile(rf"{_IDENT}(?:\.\w+)*")
_ATTRIBUTES = re.compile(rf"(?:\s+(?:@|-?{_IDENT}))*\s*")  # `e happy`, `e @ -sad`
_QUOTES = ('"""', "'''", '"', "'", "`")
_QUOTE_CHARS = ('"', "'", "`")  # a tuple: an empty string is in every string

# Text tags whose content goes with them (a ruby reading, a screen reader's text), then any tag
_TAG_WITH_TEXT = re.compile(r"\{(rt|alt)\}.*?\{/\1\}", re.DOTALL)
_TAG = re.compile(r"\{[^{}]*\}")
_PARAGRAPH = re.compile(r"\{(?:p|vspace)(?:=[^}]*)?\}")  # `{p}`, `{vspace=30}`: a break on screen, a space here
_INTERPOLATION = re.compile(r"\[([A-Za-z_]\w*(?:\.\w+)*)((?:![a-z]+)*)(?::[^\]]*)?\]")
_CASES = {"u": str.upper, "l": str.lower, "c": lambda v: v[:1].upper() + v[1:]}  # `[name!u]`
_REPLAYED = 20  # turns before a menu that each of its choices starts with (the tab's most context rounds)
_MONOLOGUE_SPLIT = re.compile(r"\n[ \t]*\n")


class Statement(NamedTuple):
    line: int  # where it starts in the file (1-based)
    indent: int
    code: str  # the logical line: comments gone, continued lines joined


class _Say(NamedTuple):
    line: int
    who: str | None  # a variable (`e`), or None for narration
    literal: str | None  # a quoted speaker name (`"Eileen" "Hello."`)
    texts: list  # one, or a triple-quoted say's paragraphs


class _Choice(NamedTuple):
    text: str  # a menu choice's caption (the player's option)


# ---------------------------------------------------------------------------------------------- lexing


_CODE_STOP = re.compile(r"[\"'`#()\[\]{}]")  # outside a string: what changes the state
_STRING_STOP = {q: re.compile(r"[\\%s]" % q) for q in _QUOTE_CHARS}  # inside one: an escape or its quote


def _scan_line(line: str, quote: str | None, depth: int) -> tuple[str, str | None, int]:
    """(the line without its comment, the quote of a string left open at its end, bracket depth at its
    end), from the state the line before left (a string still open, brackets)."""
    i, n = 0, len(line)
    while i < n:
        if quote is not None:
            end = _after_string(line, i, quote)
            if end is None:
                return line, quote, depth
            i, quote = end, None
            continue
        m = _CODE_STOP.search(line, i)
        if m is None:
            break
        i, c = m.start(), m.group()
        if c == "#":
            return line[:i].rstrip(), None, depth
        if c in _QUOTE_CHARS:
            quote = next(q for q in _QUOTES if line.startswith(q, i))
            i += len(quote)
            continue
        depth = depth + 1 if c in "([{" else max(depth - 1, 0)
        i += 1
    return line, quote, depth


def statements(lines: Iterable[str], unclosed: list | None = None) -> Iterator[Statement]:
    """The logical lines of a script, comments gone: a line whose string or brackets stay open runs on
    over the next ones (joined with newlines). `unclosed` gets the line of a statement whose string or
    bracket the file never closes (a script Ren'Py would not compile: the rest of it is lost)."""
    pieces: list[str] = []
    start = indent = depth = 0
    quote = None
    for n, raw in enumerate(lines, 1):
        raw = raw.rstrip("\r\n")
        if not pieces:
            stripped = raw.strip()
            if not stripped or stripped[0] == "#":
                continue
            expanded = raw.expandtabs(8)
            start, indent = n, len(expanded) - len(expanded.lstrip())
            raw = stripped
        code, quote, depth = _scan_line(raw, quote, depth)
        pieces.append(code)
        if quote is None and depth == 0:
            code = "\n".join(pieces).strip() if len(pieces) > 1 else code.strip()
            pieces = []
            if code:
                yield Statement(start, indent, code)
    if pieces and unclosed is not None:
        unclosed.append(start)


def _after_string(text: str, i: int, quote: str) -> int | None:
    """The index after the `quote` that closes a string whose text goes on at `i`; None when `text` ends
    first (the string runs on)."""
    stop = _STRING_STOP[quote[0]]
    while True:
        m = stop.search(text, i)
        if m is None:
            return None
        i = m.start()
        if text[i] == "\\":
            i += 2
        elif text.startswith(quote, i):
            return i + len(quote)
        else:  # one quote character inside a triple-quoted string
            i += 1


def _string_end(code: str, i: int) -> tuple[int, str] | None:
    """(index after the string that starts at `i`, its quote), or None when it does not close in `code`."""
    quote = next(q for q in _QUOTES if code.startswith(q, i))
    end = _after_string(code, i + len(quote), quote)
    return None if end is None else (end, quote)


def _unescape(body: str) -> str:
    """A Ren'Py string's text: `\\n` a line break, `\\"` a quote, `\\%` a per cent sign."""
    if "\\" not in body:
        return body
    return re.sub(r"\\(u[0-9a-fA-F]{4}|.)", _escaped, body, flags=re.DOTALL)


def _escaped(m: re.Match) -> str:
    c = m.group(1)
    return "\n" if c == "n" else chr(int(c[1:], 16)) if len(c) == 5 else c


def _read_string(code: str, i: int) -> tuple[str, int, bool] | None:
    """(text, index after it, triple-quoted) of the string literal at `i`, or None."""
    end = _string_end(code, i) if code[i:i + 1] in _QUOTE_CHARS else None
    if end is None:
        return None
    j, quote = end
    return _unescape(code[i + len(quote):j - len(quote)]), j, len(quote) == 3


def _block(code: str) -> str:
    """The statement's keyword, past an `init N` (`init -501 screen say(...)` is a screen); for a
    `translate LANGUAGE python/style` block, python/style."""
    m = _INIT.match(code)
    if m:
        code = code[m.end():]
    t = _TRANSLATE.match(code)
    if t and t.group(2) in ("python", "style"):
        return t.group(2)
    word = _WORD.match(code)
    return word.group() if word else ""


def _say(st: Statement) -> _Say | _Choice | None:
    """A say statement, a menu choice, or None for anything else."""
    code = st.code
    who = literal = None
    if code[0] in _QUOTE_CHARS:
        first = _read_string(code, 0)
        if first is None:
            return None
        text, j, triple = first
        rest = code[j:].lstrip()
        second = _read_string(rest, 0) if rest[:1] in _QUOTE_CHARS else None
        if second is not None:  # `"Eileen" "Hello."`
            literal, (text, _, triple) = text, second
        elif rest.endswith(":") or code.endswith(":"):  # `"Go left" if brave:`, a menu's choice
            return _Choice(text)
    else:
        m = _RENPY_SAY.match(code)
        if m is not None:  # `$ renpy.say(e, "...")`
            found = _read_string(code, m.end())
            if found is None:
                return None
            return _Say(st.line, None if m.group(1) == "None" else m.group(1), None, [found[0]])
        m = _WORD.match(code)
        if m is None or m.group() in _KEYWORDS:
            return None
        who = m.group()
        attrs = _ATTRIBUTES.match(code, m.end())
        j = attrs.end()
        if j == m.end() and code[j:j + 1] not in _QUOTE_CHARS:
            return None
        found = _read_string(code, j)
        if found is None or any(w in _KEYWORDS for w in code[m.end():j].split()):
            return None
        text, k, triple = found
        if code[k:].rstrip().endswith(":"):
            return None
    texts = [p for p in _MONOLOGUE_SPLIT.split(text) if p.strip()] if triple else [text]
    return _Say(st.line, who, literal, texts or [""])


# ------------------------------------------------------------------------------------------ characters


class _Character(NamedTuple):
    name: ast.expr | None  # the name expression; None: no name given
    dynamic: bool
    kind: str | None  # the character it copies (`kind=e`)


def _assignment(code: str) -> tuple[str, ast.expr] | None:
    m = _ASSIGN.match(code)
    if m is None:
        return None
    try:
        return m.group(1), ast.parse(m.group(2).strip(), mode="eval").body
    except (SyntaxError, ValueError, RecursionError):
        return None


def _text_of(node: ast.expr | None) -> str | None:
    """A string constant, also inside `_("...")` (a translatable string)."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("_", "__", "_p") \
            and len(node.args) == 1:
        node = node.args[0]
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _character(node: ast.expr) -> _Character | None:
    if not isinstance(node, ast.Call):
        return None
    func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
    if func not in _CHARACTER_CALLS:
        return None
    keywords = {k.arg: k.value for k in node.keywords if k.arg}
    name = node.args[0] if node.args else keywords.get("name")
    dynamic = func == "DynamicCharacter" or (isinstance(keywords.get("dynamic"), ast.Constant)
                                             and bool(keywords["dynamic"].value))
    kind = keywords.get("kind")
    return _Character(name, dynamic, kind.id if isinstance(kind, ast.Name) else None)


class Cast(NamedTuple):
    """What the scripts define: characters (variable -> name, None for narration), string variables, and
    the characters whose name is only known at play (named by their variable)."""

    names: dict
    strings: dict
    guessed: frozenset = frozenset()
    translated: dict = {}  # a translation's strings, `old` -> `new` (its menu choices)
    varying: dict = {}  # a name the story changes: the name taken -> the other names it is set to


def characters(statement_lists: Iterable[Iterable[Statement]], translated: dict | None = None) -> Cast:
    """Every character and string variable the scripts define, wherever they do it. `translated`: a
    translation's strings (`old` -> `new`), which names and string variables take."""
    translated = translated or {}
    specs: dict[str, _Character] = {}
    values: dict[str, list[tuple[bool, str]]] = {}  # variable -> (declared by define/default, value), in order
    for sts in statement_lists:
        python_indent = None
        for st in sts:
            if python_indent is not None and st.indent <= python_indent:
                python_indent = None
            if python_indent is None and st.code.endswith(":") and _block(st.code) == "python":
                python_indent = st.indent
                continue
            if python_indent is None and not st.code.startswith(("define", "default", "$")):
                continue
            found = _assignment(st.code)
            if found is None:
                continue
            var, node = found
            spec = _character(node)
            if spec is not None:
                specs[var] = spec
            elif _text_of(node) is not None:
                values.setdefault(var, []).append((st.code.startswith(("define", "default")), _text_of(node)))
    strings = {var: translated.get(_value(vs), _value(vs)) for var, vs in values.items()}
    guessed = set()

    def name_of(var: str, seen: frozenset = frozenset()) -> str | None:
        """The name as written (None: narration); the variable's own name when it cannot be known here."""
        spec = specs[var]
        if spec.dynamic:
            raw = _text_of(spec.name)
            if raw is None or raw not in strings:  # a name the player types: known only at play
                guessed.add(var)
                return var
            return strings[raw]
        if spec.name is None:
            if spec.kind in specs and spec.kind not in seen:
                return name_of(spec.kind, seen | {var})
            return None
        if isinstance(spec.name, ast.Constant) and spec.name.value is None:  # Character(None)
            return None
        if isinstance(spec.name, (ast.Name, ast.Attribute)):  # Character(player_name), a name set at play
            key = ast.unparse(spec.name)
            if key not in strings:
                guessed.add(var)
                return var
            return strings[key]
        text = _text_of(spec.name)
        if text is None:
            guessed.add(var)
            return var
        return translated.get(text, text)

    names: dict[str, str | None] = {}
    varying = {}
    for var in specs:
        raw = name_of(var)
        name = speaker_name(_plain(raw, strings)) if raw is not None else ""
        names[var] = name or None
        key = _text_of(specs[var].name) if specs[var].dynamic else None
        others = {speaker_name(_plain(v, strings)) for _, v in values.get(key, []) if _lettered(v)} - {name}
        if name and others:
            varying[name] = sorted(others)
    return Cast(names, strings, frozenset(guessed), translated, varying)


def _lettered(value: str) -> bool:
    return any(c.isalpha() for c in value)


def _value(values: list[tuple[bool, str]]) -> str:
    """A string variable's value for the whole game, when the scripts set it more than once: the value
    declared (`default p_name = "Sayori"`), else, when that is a placeholder (`"???"` until the character
    says who they are), the first the story sets with a letter in it; else the last."""
    declared = [v for d, v in values if d and _lettered(v)]
    if declared:
        return declared[-1]
    return next((v for d, v in values if not d and _lettered(v)), values[-1][1])


# ------------------------------------------------------------------------------------------------ text


def _plain(text: str, strings: dict, depth: int = 0) -> str:
    """A string as the player reads it: text tags gone, `[variable]` filled in where known (its own tags
    gone too, `!u`, `!l`, `!c` applied), `%%` a per cent sign."""
    if "[" in text:
        text = text.replace("[[", "\x01")

        def fill(m: re.Match) -> str:
            value = strings.get(m.group(1))
            if value is None or depth > 2:
                return m.group(0)
            value = _plain(value, strings, depth + 1)
            for flag in m.group(2).split("!"):
                value = _CASES.get(flag, lambda v: v)(value)
            return value

        text = _INTERPOLATION.sub(fill, text).replace("\x01", "[")
    if "{" in text:
        text = text.replace("{{", "\x00")
        text = _TAG.sub("", _PARAGRAPH.sub(" ", _TAG_WITH_TEXT.sub("", text))).replace("\x00", "{")
    return text.replace("%%", "%") if "%%" in text else text


class Game:
    """What the reading of a game's scripts shares from one script to the next."""

    def __init__(self, translations: Translation | None = None, called: dict | None = None):
        self.translations = translations  # a translation's lines, read in place of the game's
        self.called = called or {}  # label -> its turns, which a `call` of it adds to the context
        self.jumps: dict[str, list[Turn]] = {}  # label -> what led to the first jump or call to it
        self.unknown: Counter = Counter()  # speakers with no definition, by variable
        self.untranslated: Counter = Counter()  # say statements with no translation, by script
        self.replayed = 0  # turns said again as context


def _label_of(code: str, parent: str) -> str:
    """The label a `label`, `jump` or `call` statement names, a local one (`.end`) under its parent's name."""
    words = code.split()
    name = words[1].split("(")[0].rstrip(":") if len(words) > 1 else ""
    return parent + name if name.startswith(".") else name


def turns_of(sts: Iterable[Statement], cast: Cast, file: str, game: Game | None = None) -> Iterator[Turn | None]:
    """The turns of one script's statements (BREAK where a conversation ends), their text as written.

    A label that a `jump` or `call` goes to starts with what led there (the first such, in the game's
    order): a menu's choice that jumps to its own label goes on from the menu. After a `call`, the
    called label's turns are context. A menu's choices, and an `if`'s branches, are kept apart: each
    starts with what led to the menu or the `if`. With a translation, each say is read in it, and one
    without is left out and counted."""
    game = game if game is not None else Game()
    translations = game.translations
    pending: Turn | None = None  # the last say, which an `extend` may still add to
    history: list[Turn] = []  # the last turns since the last break: what a branch starts with
    # a menu's [indent, the turns before its first choice, the end of the last choice that went on past it];
    # an if's [indent, the turns before it, says read when its branch began, the same end]
    menus: list[list] = []
    branches: list[list] = []
    n_said = 0  # say statements read so far
    gone = False  # a jump or return just left: what follows is not reached from here
    parent = ""  # the global label being read: a local label's (`.end`) full name starts with it
    skip_indent = None  # the indent of a block being skipped (a python block, a screen, ...)
    out: list[Turn | None] = []  # what this statement gives, in order

    def flush() -> None:
        nonlocal pending, history
        if pending is not None:
            out.append(pending)
            history.append(pending)
            if len(history) > 2 * _REPLAYED:  # only the last ones are ever said again
                history = history[-_REPLAYED:]
            pending = None

    def restart(before: list[Turn]) -> None:
        """A break, then `before` said again as context: where a branch or a label starts."""
        nonlocal history, gone
        out.append(BREAK)
        game.replayed += len(before)
        out.extend(as_context(before))
        history = list(before)
        gone = False

    def so_far() -> list[Turn]:
        """The last turns, the say that an extend may still add to included: what a branch or label starts with."""
        return (history + ([pending] if pending is not None else []))[-_REPLAYED:]

    def way_to(code: str) -> str:
        """The label a jump or call goes to, what led to it kept when it is the first way there."""
        target = _label_of(code, parent)
        if target not in game.jumps and code.split()[1] != "expression":
            game.jumps[target] = so_far()
        return target

    def branch_ends(entry: list) -> None:
        """A choice or a branch ends: unless it jumped or returned, what follows the block may go on from it."""
        flush()
        if not gone:
            entry[-1] = history[-_REPLAYED:]

    def leave(entry: list) -> None:
        """Past a menu or an if: it goes on from its last branch, or, when that one left, from an earlier one
        that did not (none: what follows is reached from elsewhere)."""
        if gone and entry[-1] is not None:
            restart(entry[-1])

    for st in sts:
        yield from out
        out.clear()
        if skip_indent is not None:
            if st.indent > skip_indent:
                continue
            skip_indent = None
        code = st.code
        block = _block(code)
        while branches and (st.indent < branches[-1][0]
                            or st.indent == branches[-1][0] and block not in ("elif", "else")):
            leave(branches.pop())
        while menus and st.indent <= menus[-1][0]:
            leave(menus.pop())
        if code.endswith(":") and block == "if":  # its first branch goes on from what came before (an extend too)
            branches.append([st.indent, so_far(), n_said, None])
            continue
        if code.endswith(":") and block in ("elif", "else"):
            if branches and branches[-1][0] == st.indent:
                entry = branches[-1]
                branch_ends(entry)
                if n_said > entry[2] or gone:  # the branch before said something, or left: this one does not follow it
                    entry[2] = n_said
                    restart(entry[1])
            continue
        if code.endswith(":") and block in _SKIPPED_BLOCKS:
            skip_indent = st.indent
        if block in ("label", "scene") or (block == "menu" and code.endswith(":")):
            flush()
            if block == "menu":
                menus.append([st.indent, None, None])
            elif block == "scene":
                out.append(BREAK)
                history, gone = [], False
            else:
                name = _label_of(code, parent)
                if not name.startswith(".") and "." not in name:
                    parent = name
                restart(game.jumps.get(name, []))
            continue
        if skip_indent is not None:
            continue
        if block == "return" or block == "jump":  # control leaves: what follows is reached from elsewhere
            if block == "jump" and len(code.split()) > 1:
                way_to(code)
            flush()
            gone = True
            continue
        if block == "call" and len(code.split()) > 1:
            body = game.called.get(way_to(code))
            if body:  # back from the call: what the called label said comes before what follows
                flush()
                body = body[-_REPLAYED:]
                game.replayed += len(body)
                out.extend(as_context(body))
                history.extend(body)
            continue
        said = _say(st)
        if said is None:
            continue
        if isinstance(said, _Choice):
            # each choice starts afresh (one's lines are never another's context) with what led to the
            # menu, as context only, and the choice the player made
            menu = menus[-1] if menus else None
            if menu is not None and menu[1] is not None:
                branch_ends(menu)  # the choice before
            else:
                flush()
                if menu is not None:
                    menu[1] = history[-_REPLAYED:]
            restart(menu[1] if menu is not None else [])
            choice = Turn(None, cast.translated.get(said.text, said.text), file, st.line)
            out.append(choice)
            history.append(choice)
            continue
        says = [(file, said)]
        if translations is not None:
            says = [(tfile, _say(t)) for tfile, t in translations.of(file, st)]
            says = [(tfile, t) for tfile, t in says if isinstance(t, _Say)]
            if not says and said.who is None and said.literal is None and said.texts[0] in translations.strings:
                says = [(file, said._replace(texts=[translations.strings[said.texts[0]]]))]  # a menu's caption
            if not says:
                game.untranslated[file] += 1
                continue
        if gone:  # reached from elsewhere (a label with no jump found to it, say): no context from here
            out.append(BREAK)
            history, gone = [], False
        for where, said in says:
            if said.who == "extend" and pending is not None:
                pending = pending._replace(text=pending.text + said.texts[0])
                texts = said.texts[1:]
                speaker = pending.speaker
            else:
                texts = said.texts
                if said.literal is not None:
                    speaker = speaker_name(_plain(said.literal, cast.strings)) or None
                elif said.who is None or said.who in _NARRATORS or said.who == "extend":
                    speaker = None
                elif said.who in cast.names:
                    speaker = cast.names[said.who]
                    if said.who in cast.guessed:
                        game.unknown[said.who] += 1
                else:
                    speaker = said.who
                    game.unknown[said.who] += 1
            for text in texts:
                flush()
                pending = Turn(speaker, text, where, said.line)
            n_said += 1
    yield from out
    if pending is not None:
        yield pending


def _label_bodies(parsed: list, cast: Cast, translations: Translation | None) -> dict[str, list[Turn]]:
    """Each label's turns up to its `return` (or the next label), for the context after a `call` of it."""
    bodies: dict[str, list[Turn]] = {}
    for label, sts, _ in parsed:
        name, body, parent = None, [], ""
        for st in [*sts, Statement(0, 0, "label _end_:")]:
            block = _block(st.code)
            if block == "label" or (block == "return" and name is not None):
                if name is not None and name not in bodies:
                    game = Game(translations)  # its own counts: this is a look ahead, not the reading
                    bodies[name] = [t for t in turns_of(body, cast, label, game) if t is not None]
                name, body = (_label_of(st.code, parent), []) if block == "label" else (None, [])
                if name is not None and "." not in name:
                    parent = name
            elif name is not None:
                body.append(st)
    return bodies


def _finish(turn: Turn | None, cast: Cast, stats: ReadStats) -> Turn | None:
    if turn is None:
        return None
    return turn._replace(text=clean_text(_plain(turn.text, cast.strings).replace("\n", " "), stats))


# ------------------------------------------------------------------------------------------- translations


class Translation(NamedTuple):
    """A translation's say statements, found by the original they translate, and its strings."""

    by_code: dict  # (original script, its statement's code) -> ([their lines, ascending], [[(label, say)]])
    by_line: dict  # (original script, line) -> [(label, translated say)], for blocks without the code
    strings: dict  # `old` -> `new`: names, menu choices

    def of(self, file: str, st: Statement) -> list:
        """The translated say statements of the game's statement `st` in `file`: by its code (the comment
        Ren'Py writes above each translation), the nearest line among equals; else by its line, for a
        block that does not give the code."""
        found = self.by_code.get((file, _code_key(st.code)))
        if found:
            lines, says = found
            i = bisect.bisect_left(lines, st.line)
            near = min((j for j in (i - 1, i) if 0 <= j < len(lines)), key=lambda j: abs(lines[j] - st.line))
            return says[near]
        return self.by_line.get((file, st.line), [])


def _code_key(code: str) -> str:
    """A say statement's code as Ren'Py's translation comments write it: spaces collapsed, and without
    the `nointeract` that a say inside a menu gets there."""
    code = " ".join(code.split())
    return code[: -len(" nointeract")] if code.endswith(" nointeract") else code


def translations_of(scripts: Iterable[tuple[str, list[str]]]) -> Translation:
    """A translation's scripts (label, lines). Ren'Py writes each `translate LANGUAGE ID:` block after a
    comment naming the line it translates (`# game/script.rpy:57`) and, inside it, the original
    statement as a comment (`# e "Hello."`) before its translation. A line number goes stale when the
    game's script changes after the translation was made; the original's code does not."""
    by_code: dict[tuple[str, str], list] = {}  # -> [(line, says)], sorted at the end
    by_line: dict[tuple[str, int], list] = {}
    strings: dict[str, str] = {}
    for label, lines in scripts:
        origins = {n: (m.group(1), int(m.group(2))) for n, line in enumerate(lines, 1)
                   for m in [_ORIGIN.match(line)] if m}
        origin = block_indent = old = said = None
        last_comment = None
        marks = sorted(origins)
        k = 0
        for st in statements(lines):
            while k < len(marks) and marks[k] < st.line:
                last_comment = origins[marks[k]]
                k += 1
            if block_indent is not None and st.indent <= block_indent:
                block_indent = origin = None
            t = _TRANSLATE.match(st.code) if st.indent == 0 else None
            if t is not None:
                block_indent, origin, old, said = st.indent, None, None, []
                if t.group(2) not in ("strings", "python", "style") and last_comment is not None:
                    path, line = last_comment
                    origin = (path[5:] if path.startswith("game/") else path, line)
                    start = st.line
                last_comment = None  # each block has its own
                continue
            if origin is not None:
                if not said:
                    # the original, commented out just above the first translated statement; a block
                    # without it is found by its line alone (which goes stale when the game changes)
                    comments = [c.strip()[1:].strip() for c in lines[start:st.line - 1] if c.strip().startswith("#")]
                    if comments and not _ORIGIN.match("# " + comments[-1]):
                        by_code.setdefault((origin[0], _code_key(comments[-1])), []).append((origin[1], said))
                    else:
                        by_line[origin] = said
                said.append((label, st))
            elif block_indent is not None:  # `old "Yes"` / `new "Oui"` in a strings block
                word = _WORD.match(st.code)
                found = _read_string(st.code, word.end() + 1) if word and word.group() in ("old", "new") else None
                if found is not None and word.group() == "old":
                    old = found[0]
                elif found is not None and old is not None:
                    strings[old] = found[0]
                    old = None
    ordered = {}
    for key, entries in by_code.items():
        entries.sort(key=lambda e: e[0])
        ordered[key] = ([line for line, _ in entries], [says for _, says in entries])
    return Translation(ordered, by_line, strings)


# ----------------------------------------------------------------------------------------------- files


def _is_script(name: str) -> bool:
    return name.lower().endswith(SUFFIX)


def _compiled_only(path: Path, what: str) -> UserError:
    return UserError(f"{path}: {what}, which is not read: the game ships its scripts compiled. Extract the .rpa "
                     "archives (unrpa) and decompile the .rpyc files (unrpyc), then give the .rpy files (or "
                     "their folder)")


def refused(path: Path) -> UserError | None:
    """The error for a compiled script or a Ren'Py archive given as the input; None for any other file."""
    suffix = path.suffix.lower()
    if suffix == ".rpyc":
        return _compiled_only(path, "a compiled Ren'Py script")
    if suffix == ".rpa":
        return _compiled_only(path, "a Ren'Py archive")
    return None


def _root(folder: Path) -> Path:
    """The folder whose scripts are the game's: `game/` when given the folder above it."""
    game = folder / "game"
    return game if game.is_dir() and not any(_is_script(p.name) for p in folder.iterdir()) else folder


def _walk(root: Path) -> list[Path]:
    """Every file below `root` outside the engine's, translations and hidden folders, in order of path
    (as a zip of the folder lists them); no hidden file (macOS's `._script.rpy` on a FAT or network drive)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d.lower() not in _SKIPPED_DIRS and not d.startswith(".")]
        # nor a pipe or a device named like a script (reading it would wait, or never end)
        found.extend(p for p in (Path(dirpath) / name for name in filenames if not name.startswith(".")) if p.is_file())
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _has_scripts(folder: Path) -> bool:
    """Scripts (.rpy, or compiled ones) right in `folder`."""
    return any(p.suffix.lower() in (SUFFIX, *_COMPILED) and p.is_file() for p in folder.iterdir())


def is_game_folder(folder: Path) -> bool:
    """Whether a folder is a Ren'Py game's: scripts (.rpy, or compiled ones) in it, or anywhere in its
    `game/` (a game may keep them all in subfolders, `game/scripts/`)."""
    try:
        root = _root(folder)
        if _has_scripts(root):
            return True
        return root.name.lower() == "game" and any(p.suffix.lower() in (SUFFIX, *_COMPILED) for p in _walk(root))
    except OSError:  # a folder that cannot be read is not taken for a game
        return False


def _languages(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and any(_is_script(q.name) for q in p.rglob("*")))


def is_translations_folder(folder: Path) -> bool:
    """A game's `tl/` folder: one subfolder of scripts per language."""
    return folder.name.lower() == "tl" and bool(_languages(folder))


def pick_language(folder: Path) -> UserError:
    langs = _languages(folder)
    return UserError(f"{folder}: holds a Ren'Py game's translations into {len(langs)} language(s) "
                     f"({', '.join(langs[:6])}{', ...' if len(langs) > 6 else ''}): give one, e.g. {folder / langs[0]}")


def _in_game(name: str) -> str:
    """A zip member's path from its game folder (`MyGame/game/a/b.rpy` -> `a/b.rpy`), as a folder's."""
    parts = name.split("/")
    lowered = [p.lower() for p in parts[:-1]]
    if "game" not in lowered:
        return name
    return "/".join(parts[len(lowered) - lowered[::-1].index("game"):])  # the last: `Game/game/...`


def _zip_scripts(names: list[str]) -> tuple[list[tuple[str, str]], bool]:
    """(a zip's script members with their paths as in the game's folder, the `game/` folder's alone when it
    has one, in order of those paths; whether it holds translations, which are left out as the engine's
    scripts are). A zip of a folder that is not called game (`MyGame/script.rpy`) loses that folder."""
    scripts = [n for n in names if _is_script(n) and not n.endswith("/")]
    games = [n for n in scripts if "game" in [p.lower() for p in n.split("/")[:-1]]]
    if games:
        paths = {n: _in_game(n) for n in games}
    else:
        tops = {n.split("/")[0] for n in scripts}
        one = len(tops) == 1 and all("/" in n for n in scripts)
        paths = {n: n.split("/", 1)[1] if one else n for n in scripts}
    skipped = {n: any(part.lower() in _SKIPPED_DIRS or part.startswith(".") for part in p.split("/")[:-1])
               for n, p in paths.items()}
    kept = sorted(((n, p) for n, p in paths.items() if not skipped[n]), key=lambda e: e[1])
    return kept, any(skipped[n] and "/tl/" in f"/{p}" for n, p in paths.items())


def is_zip_of_scripts(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.lower().endswith((SUFFIX, *_COMPILED)) for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _read_files(files: list[Path], root: Path, stats: ReadStats, skip_bad: bool = False
                ) -> Iterator[tuple[str, list[str], Path]]:
    """(label, lines, file) of each script; `skip_bad`: one that cannot be read (binary, unreadable) is left
    out rather than stopping the reading (for the definitions of other scripts)."""
    for p in files:
        try:
            if not p.read_bytes().strip():  # an empty script, which games keep
                continue
            check_text_file(p)
            with open_text(p, stats) as f:
                lines = f.readlines()
        except OSError as e:
            if skip_bad:
                continue
            raise UserError(f"{p}: cannot read ({e.strerror or e})") from None
        except UserError:
            if skip_bad:
                continue
            raise
        yield p.relative_to(root).as_posix(), lines, p


def _zip_lines(data: bytes) -> list[str]:
    """A zip member's lines, decoded as a file's are (UTF-8, else the code page it was written in), split
    at line ends only (not at the other characters str.splitlines splits at)."""
    encoding = legacy_encoding(data[:ENCODING_SNIFF]) or "utf-8-sig"
    return io.StringIO(data.decode(encoding, "surrogateescape"), newline=None).readlines()


def _sources(path: Path, stats: ReadStats) -> Iterator[tuple[str, list[str], Path | None]]:
    """(label, lines, file; None in a zip) of each script of the input, the label its path from the game's
    folder."""
    refusal = refused(path)
    if refusal is not None:
        raise refusal
    if path.is_dir():
        if is_translations_folder(path):
            raise pick_language(path)
        root = _root(path)
        if root != path:
            stats.add_note(f"{path}: the scripts of its game/ folder read")
        files = [p for p in _walk(root) if _is_script(p.name)]
        if not files:
            if any(p.suffix.lower() in _COMPILED for p in _walk(root)):
                raise _compiled_only(path, "a game folder with compiled scripts only")
            raise UserError(f"{path}: folder holds no Ren'Py scripts (.rpy)")
        if (root / "tl").is_dir() and _languages(root / "tl"):
            stats.add_note(f"{root / 'tl'}: translations not read (give a language's folder, game/tl/LANGUAGE, "
                           "to read it)")
        # a translation's files are named from the game's folder (`tl/french/script.rpy`), as when one is given
        yield from _read_files(files, _translation_of(path) or root, stats)
        return
    if path.suffix.lower() == ".zip" or zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                members, translations = _zip_scripts(z.namelist())
                if not members:
                    raise _compiled_only(path, "a zip of compiled Ren'Py scripts only")
                if translations:
                    stats.add_note(f"{path}: translations (tl/) not read (unzip it and give a language's folder, "
                                   "game/tl/LANGUAGE, to read one)")
                for name, label in members:
                    yield label, _zip_lines(read_zip_member(z, name, f"{path}: {name}")), None
        except zipfile.BadZipFile:
            raise UserError(f"{path}: not a readable zip archive (damaged, or not a zip)") from None
        return
    check_text_file(path)
    with open_text(path, stats) as f:
        game = _game_root(path)
        yield (path.relative_to(game).as_posix() if game is not None and game.name.lower() == "game"
               else path.name), f.readlines(), path


def _game_root(path: Path) -> Path | None:
    """Where the rest of the game's scripts are, for a file or folder inside it: the `game/` folder above
    (a translation's `game/tl/LANGUAGE` too), else a file's own folder; None for a folder of its own."""
    game = _translation_of(path)
    if game is not None:
        return game
    start = path if path.is_dir() else path.parent
    for p in (start, *start.parents):
        if p.name.lower() == "game" and (p == start or (p / "tl").is_dir() or _has_scripts(p)):
            return p
    return None if path.is_dir() else start


def _translation_of(path: Path) -> Path | None:
    """The game's folder when `path` is (or is in) a translation's folder, `game/tl/LANGUAGE`."""
    start = path if path.is_dir() else path.parent
    for p in (start, *start.parents):
        if p.name.lower() == "tl" and p != start:
            return p.parent
    return None


def _definitions(path: Path, read: set) -> list[tuple[str, list[str]]]:
    """The game's other scripts (label, lines), whose Character definitions count for the input (read with
    stats of their own: the report counts the input's lines only)."""
    root = _game_root(path) if path.is_dir() or not zipfile.is_zipfile(path) else None
    if root is None:
        return []
    files = _walk(root) if root != path.parent or root.name.lower() == "game" else sorted(root.iterdir())
    others = [p for p in files if _is_script(p.name) and p.is_file() and p.resolve() not in read]
    return [(label, lines) for label, lines, _ in _read_files(others, root, ReadStats(), skip_bad=True)]


def iter_renpy_turns(path: str | os.PathLike, stats: ReadStats | None = None) -> Iterator[Turn | None]:
    """Turns of a Ren'Py game's scripts (a file, a folder or a zip of them), BREAK between conversations.
    A translation's folder (`game/tl/LANGUAGE`, or a file in it) is read through the game's scripts: their
    order, menus and breaks, each line said in its translation."""
    stats = stats if stats is not None else ReadStats()
    path = Path(path)
    given, read = [], set()
    for label, lines, file in _sources(path, stats):
        given.append((label, lines))
        if file is not None:
            read.add(file.resolve())
    others = _definitions(path, read)
    game = _translation_of(path)
    translations = None
    if game is not None:
        translations = translations_of(given)
        if not translations.by_line and not translations.by_code:
            raise UserError(f"{path}: no translated dialogue (`translate LANGUAGE ID:` blocks after their "
                            "`# game/script.rpy:N` comments, as Ren'Py writes them)")
        if not others:
            raise UserError(f"{path}: a translation is read through the game's own scripts, and {game} has no .rpy "
                            "(compiled scripts only?): decompile them (unrpyc) first")
        scripts, others = others, []  # the game's own scripts, each line read in its translation
    else:
        scripts = given
        if others:
            stats.add_note(f"{path}: Character definitions also read from {len(others)} other script(s) of the "
                           "game")
    parsed = []
    for label, lines in scripts:
        unclosed: list[int] = []
        parsed.append((label, list(statements(lines, unclosed)), len(lines)))
        if unclosed:
            stats.add_note(f"{label}:{unclosed[0]}: a string or bracket never closed; the rest of the script was "
                           "not read")
    cast = characters([*(list(statements(lines)) for _, lines in others), *(sts for _, sts, _ in parsed)],
                      translations.strings if translations is not None else None)
    called = _label_bodies(parsed, cast, translations)
    # a first reading for where each label is jumped to from, whichever file comes first
    ahead = Game(translations, called)
    for label, sts, _ in parsed:
        for _ in turns_of(sts, cast, label, ahead):
            pass
    shared = Game(translations, called)
    shared.jumps = ahead.jumps
    said = 0
    for label, sts, n_lines in parsed:
        if translations is None:
            stats.layouts[label] = "renpy"
            stats.lines += n_lines
        yield BREAK
        for turn in turns_of(sts, cast, label, shared):
            said += turn is not None
            yield _finish(turn, cast, stats)
    if translations is not None:
        for label, lines in given:
            stats.layouts[label] = "renpy"
            stats.lines += len(lines)
        stats.add_note(f"{path}: a translation, read in the order of the game's scripts ({game})"
                       + (f"; {sum(shared.untranslated.values())} line(s) with no translation left out"
                          if shared.untranslated else ""))
    if cast.varying:  # one note: a game may rename a dozen characters
        shown = "; ".join(f"{name} also {' or '.join(others[:3])}{' or ...' if len(others) > 3 else ''}"
                          for name, others in list(cast.varying.items())[:4])
        more = f"; ... +{len(cast.varying) - 4} more" if len(cast.varying) > 4 else ""
        stats.add_note(f"{path}: the story renames {len(cast.varying)} character(s) ({shown}{more}): each keeps "
                       "the name declared (or given first) throughout", hint=True)
    if shared.replayed:
        stats.add_note(f"{path}: {shared.replayed} turn(s) said again, as context only, where a menu choice, "
                       "an if's branch or a jump's label starts (counted in the turns read)")
    if shared.unknown:
        shown = ", ".join(f"{v} ({c})" for v, c in shared.unknown.most_common(8))
        stats.add_note(f"{path}: Ren'Py speakers whose name the scripts do not give (no Character definition, or "
                       f"one known only at play), named by their variable: {shown}", hint=True)
    if not said:
        raise UserError(f"{path}: no dialogue in the Ren'Py script(s): no say statements (`e \"Hello.\"`) found")
