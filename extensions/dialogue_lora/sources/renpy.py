"""Ren'Py visual-novel scripts (.rpy) -> turns.

The input is one .rpy file, a game's folder (`game/`, or the folder above it) or a zip of one. In a folder
every .rpy file below it is read, in order of path, except the engine's own (`renpy/`) and translations
(`tl/`: give `game/tl/LANGUAGE` to read one).

Read as the game says it:
- Who is who: `define e = Character("Eileen", ...)`, also through `default`, `$ e = ...` or an
  `init python:` block, `Character(_("Eileen"))`, `DynamicCharacter("e_name")` (or `dynamic=True`) with
  that variable set to a string somewhere, and `kind=` another character. Definitions in any file count.
  A character defined with no name (`Character(None)`), `narrator` and `centered` are narration.
- Say statements: `e "Hello."`, `e happy "Hello."` (image attributes), `"Eileen" "Hello."`, narration
  `"It was raining."` (context, never a target); `extend "..."` continues the line before; a triple-quoted
  say is one line per paragraph, as Ren'Py shows it.
- Text: tags go (`{i}`, `{w}`, `{color=...}`; `{rt}` readings and `{alt}` texts with their content),
  `{{` and `[[` are a brace and a bracket, `[player_name]` becomes the variable's string where the
  scripts set one (else it stays as written).
- A label, a `scene` statement and each menu choice start a new conversation: one choice's lines never
  become context for another's. A menu's choices (the player's options) are said by no one.
- Python blocks, screens, styles, transforms and images are skipped, as are `play`, `show`, `jump` and
  Ren'Py's other statements.

Pure functions (`statements`, `characters`, `turns_of`) do the reading; `iter_renpy_turns` opens the files.
"""
from __future__ import annotations

import ast
import os
import re
import zipfile
from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

from ..dialogue import BREAK, ReadStats, Turn, check_text_file, clean_text, open_text, speaker_name
from ..errors import UserError

SUFFIX = ".rpy"
_SKIPPED_DIRS = {"renpy", "tl", "saves", "cache", "__macosx"}  # the engine, translations, a player's files

# Statements that are not say statements although a word and a string may start them (`play music "a.ogg"`)
_KEYWORDS = frozenset(
    "play queue stop voice sound show hide scene image define default label jump call return menu if elif else "
    "while for pass python init translate old new style screen transform with window pause nvl camera "
    "layeredimage testcase at onlayer behind zorder expression rpy renpy".split())
_NARRATORS = frozenset({"narrator", "centered", "vcentered", "nvl_narrator", "adv"})
_CHARACTER_CALLS = frozenset({"Character", "DynamicCharacter", "ADVCharacter", "NVLCharacter", "Speaker",
                              "ADVSpeaker", "NVLSpeaker"})
# Block statements whose lines are read; any other line ending in `:` opens a block that is skipped
# (screens, styles, transforms, an image's or show's ATL, whose lone strings are file names)
_READ_BLOCKS = frozenset({"label", "menu", "if", "elif", "else", "while", "for", "init", "translate"})
_PYTHON_BLOCK = re.compile(r"(?:init(?:\s+[-+]?\d+)?\s+)?python\b[^:]*:$|translate\s+\w+\s+python\s*:$")
_ASSIGN = re.compile(r"(?:(?:define|default)(?:\s+[-+]?\d+)?\s+|\$\s*)?([A-Za-z_]\w*(?:\.\w+)*)\s*=(?!=)\s*(.+)$", re.DOTALL)
_WORD = re.compile(r"[A-Za-z_]\w*(?:\.\w+)*")
_ATTRIBUTES = re.compile(r"(?:\s+(?:@|-?[A-Za-z_]\w*))*\s*")  # `e happy`, `e @ -sad`
_QUOTES = ('"""', "'''", '"', "'", "`")
_QUOTE_CHARS = ('"', "'", "`")  # a tuple: an empty string is in every string

# Text tags whose content goes with them (a ruby reading, a screen reader's text), then any tag
_TAG_WITH_TEXT = re.compile(r"\{(rt|alt)\}.*?\{/\1\}", re.DOTALL)
_TAG = re.compile(r"\{[^{}]*\}")
_PARAGRAPH = re.compile(r"\{p(?:=[^}]*)?\}")  # `{p}`: a line break on screen, a space here
_INTERPOLATION = re.compile(r"\[([A-Za-z_]\w*(?:\.\w+)*)((?:![a-z]+)*)(?::[^\]]*)?\]")
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


# ---------------------------------------------------------------------------------------------- lexing


def _string_end(code: str, i: int) -> tuple[int, str] | None:
    """(index after the string that starts at `i`, its quote), or None when it does not close in `code`."""
    quote = next(q for q in _QUOTES if code.startswith(q, i))
    j = i + len(quote)
    while j < len(code):
        if code[j] == "\\":
            j += 2
            continue
        if code.startswith(quote, j):
            return j + len(quote), quote
        j += 1
    return None


def _scan(code: str) -> tuple[str, bool, int]:
    """(code without its comment, whether a string is left open, bracket depth at the end)."""
    depth, i = 0, 0
    while i < len(code):
        c = code[i]
        if c in _QUOTE_CHARS:
            end = _string_end(code, i)
            if end is None:
                return code, True, depth
            i = end[0]
            continue
        if c == "#":
            return code[:i].rstrip(), False, depth
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth = max(depth - 1, 0)
        i += 1
    return code, False, depth


def statements(lines: Iterable[str], unclosed: list | None = None) -> Iterator[Statement]:
    """The logical lines of a script: a line whose string or brackets stay open runs on over the next.
    `unclosed` gets the line of a statement whose string or bracket the file never closes."""
    pending: list[str] = []
    start = indent = 0
    for n, raw in enumerate(lines, 1):
        raw = raw.rstrip("\r\n")
        if not pending:
            if not raw.strip() or raw.lstrip().startswith("#"):
                continue
            expanded = raw.expandtabs(8)
            start, indent = n, len(expanded) - len(expanded.lstrip())
            raw = raw.strip()
        pending.append(raw)
        code, open_string, depth = _scan("\n".join(pending))
        if open_string or depth:
            continue
        pending = []
        if code.strip():
            yield Statement(start, indent, code.strip())
    if pending and unclosed is not None:  # a script Ren'Py would not compile: the rest of it is lost
        unclosed.append(start)


def _unescape(body: str) -> str:
    """A Ren'Py string's text: `\\n` a line break, `\\"` a quote, `\\%` a per cent sign."""
    if "\\" not in body:
        return body
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), body, flags=re.DOTALL)


def _read_string(code: str, i: int) -> tuple[str, int, bool] | None:
    """(text, index after it, triple-quoted) of the string literal at `i`, or None."""
    end = _string_end(code, i) if code[i:i + 1] in _QUOTE_CHARS else None
    if end is None:
        return None
    j, quote = end
    return _unescape(code[i + len(quote):j - len(quote)]), j, len(quote) == 3


def _say(st: Statement) -> _Say | str | None:
    """A say statement; "choice" for a menu choice; None for anything else."""
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
            literal, (text, k, triple) = text, second
            rest = rest[k:]
        elif rest.endswith(":"):  # `"Go left" if brave:`, a menu's choice
            return "choice"
    else:
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
    """What the scripts define: characters (variable -> name, None for narration) and string variables."""

    names: dict
    strings: dict


def characters(statement_lists: Iterable[Iterable[Statement]]) -> Cast:
    """Every character and string variable the scripts define, wherever they do it."""
    specs: dict[str, _Character] = {}
    values: dict[str, list[str]] = {}
    for sts in statement_lists:
        python_indent = None
        for st in sts:
            if python_indent is not None and st.indent <= python_indent:
                python_indent = None
            if python_indent is None and _PYTHON_BLOCK.match(st.code):
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
                values.setdefault(var, []).append(_text_of(node))
    # a variable set more than once (`"???"` until the character introduces themselves): its last value
    # with a letter in it
    strings = {var: next((v for v in reversed(vs) if any(c.isalpha() for c in v)), vs[-1])
               for var, vs in values.items()}
    names: dict[str, str | None] = {}

    def name_of(var: str, seen: frozenset = frozenset()) -> str | None:
        """The name as written (None: narration); the variable's own name when it cannot be known here."""
        spec = specs[var]
        if spec.dynamic:
            raw = _text_of(spec.name)
            return strings.get(raw, raw) if raw is not None else var
        if spec.name is None:
            if spec.kind in specs and spec.kind not in seen:
                return name_of(spec.kind, seen | {var})
            return None
        if isinstance(spec.name, ast.Constant) and spec.name.value is None:  # Character(None)
            return None
        if isinstance(spec.name, (ast.Name, ast.Attribute)):  # Character(player_name), a name set at play
            key = ast.unparse(spec.name)
            return strings.get(key, key)
        text = _text_of(spec.name)
        return var if text is None else text

    for var in specs:
        raw = name_of(var)
        name = speaker_name(_plain(raw, strings)) if raw is not None else ""
        names[var] = name or None
    return Cast(names, strings)


# ------------------------------------------------------------------------------------------------ text


def _plain(text: str, strings: dict) -> str:
    """A string as the player reads it: text tags gone, `[variable]` filled in where known."""
    if "{" in text:
        text = text.replace("{{", "\x00")
        text = _TAG.sub("", _PARAGRAPH.sub(" ", _TAG_WITH_TEXT.sub("", text))).replace("\x00", "{")
    if "[" in text:
        text = text.replace("[[", "\x00")
        text = _INTERPOLATION.sub(lambda m: strings.get(m.group(1), m.group(0)), text).replace("\x00", "[")
    return text


def turns_of(sts: Iterable[Statement], cast: Cast, file: str, unknown: Counter) -> Iterator[Turn | None]:
    """The turns of one script's statements (BREAK where a conversation ends), their text as written.
    `unknown` counts the speakers used without a definition, by variable."""
    pending: Turn | None = None
    skip_indent = None  # the indent of a block being skipped (a python block, a screen, ...)
    for st in sts:
        if skip_indent is not None:
            if st.indent > skip_indent:
                continue
            skip_indent = None
        code = st.code
        word = _WORD.match(code)
        word = word.group() if word else ""
        if _PYTHON_BLOCK.match(code):
            skip_indent = st.indent
            continue
        if word in ("label", "scene"):
            if pending is not None:
                yield pending
                pending = None
            yield BREAK
            if word == "scene" and code.endswith(":"):
                skip_indent = st.indent
            continue
        said = _say(st)
        if said == "choice":
            if pending is not None:
                yield pending
                pending = None
            yield BREAK
            continue
        if said is None:
            if code.endswith(":") and word not in _READ_BLOCKS:
                skip_indent = st.indent
            continue
        if said.who == "extend" and pending is not None:
            pending = pending._replace(text=pending.text + said.texts[0])
            for text in said.texts[1:]:
                yield pending
                pending = pending._replace(text=text, line=said.line)
            continue
        if said.literal is not None:
            speaker = speaker_name(_plain(said.literal, cast.strings)) or None
        elif said.who is None or said.who in _NARRATORS or said.who == "extend":
            speaker = None
        elif said.who in cast.names:
            speaker = cast.names[said.who]
        else:
            speaker = said.who
            unknown[said.who] += 1
        for text in said.texts:
            if pending is not None:
                yield pending
            pending = Turn(speaker, text, file, said.line)
    if pending is not None:
        yield pending


def _finish(turn: Turn | None, cast: Cast, stats: ReadStats) -> Turn | None:
    if turn is None:
        return None
    return turn._replace(text=clean_text(_plain(turn.text, cast.strings).replace("\n", " "), stats))


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


def _walk(root: Path) -> Iterator[Path]:
    """Every file below `root`, in order of path, outside the engine's, translations and hidden folders."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d.lower() not in _SKIPPED_DIRS and not d.startswith("."))
        for name in sorted(filenames):
            yield Path(dirpath) / name


def is_game_folder(folder: Path) -> bool:
    """Whether a folder is a Ren'Py game's: scripts (.rpy, or compiled ones) in it or in its `game/`."""
    return any(p.is_file() and p.suffix.lower() in (SUFFIX, ".rpyc", ".rpa") for p in _root(folder).iterdir())


def _zip_scripts(names: list[str]) -> list[str]:
    """A zip's script members, the `game/` folder's alone when it has one (the engine's are left out)."""
    scripts = [n for n in names if _is_script(n) and not n.endswith("/")]
    games = [n for n in scripts if "/game/" in f"/{n}"]
    if games:
        scripts = games
    return sorted(n for n in scripts
                  if not any(part.lower() in _SKIPPED_DIRS or part.startswith(".") for part in n.split("/")[:-1]))


def is_zip_of_scripts(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.lower().endswith((SUFFIX, ".rpyc", ".rpa")) for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _sources(path: Path, stats: ReadStats) -> Iterator[tuple[str, list[str], Path | None]]:
    """(label, lines, file; None in a zip) of each script of the input, the label its path from the input."""
    refusal = refused(path)
    if refusal is not None:
        raise refusal
    if path.is_dir():
        root = _root(path)
        if root != path:
            stats.add_note(f"{path}: the scripts of its game/ folder read")
        files = [p for p in _walk(root) if _is_script(p.name)]
        if not files:
            if any(p.suffix.lower() in (".rpyc", ".rpa") for p in _walk(root)):
                raise _compiled_only(path, "a game folder with compiled scripts only")
            raise UserError(f"{path}: folder holds no Ren'Py scripts (.rpy)")
        if (root / "tl").is_dir():
            stats.add_note(f"{root / 'tl'}: translations not read (give a language's folder, game/tl/LANGUAGE, "
                           "to read it)")
        for p in files:
            if not p.read_bytes().strip():  # an empty script, which games keep
                continue
            check_text_file(p)
            with open_text(p, stats) as f:
                yield p.relative_to(root).as_posix(), f.readlines(), p
        return
    if path.suffix.lower() == ".zip" or zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                names = _zip_scripts(z.namelist())
                if not names:
                    raise _compiled_only(path, "a zip of compiled Ren'Py scripts only")
                for name in names:
                    try:
                        data = z.read(name)
                    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
                        raise UserError(f"{path}: {name} is damaged in the zip ({e})") from None
                    yield name, data.decode("utf-8-sig", "surrogateescape").splitlines(), None
        except zipfile.BadZipFile:
            raise UserError(f"{path}: not a readable zip archive (damaged, or not a zip)") from None
        return
    check_text_file(path)
    with open_text(path, stats) as f:
        yield path.name, f.readlines(), path


def _game_root(path: Path) -> Path | None:
    """Where the rest of the game's scripts are, for a file or folder inside it: the `game/` folder above
    (a translation's `game/tl/LANGUAGE` too), else a file's own folder; None for a folder of its own."""
    start = path if path.is_dir() else path.parent
    for p in (start, *start.parents):
        if p.name.lower() == "game":
            return p
        if p.name.lower() == "tl" and p != start:
            return p.parent
    return None if path.is_dir() else start


def _definitions(path: Path, read: set, stats: ReadStats) -> list[list[Statement]]:
    """The statements of the game's other scripts, whose Character definitions count for the input."""
    root = _game_root(path) if not zipfile.is_zipfile(path) or path.is_dir() else None
    if root is None:
        return []
    files = _walk(root) if root != path.parent or root.name.lower() == "game" else sorted(root.iterdir())
    others = [p for p in files if _is_script(p.name) and p.is_file() and p.resolve() not in read]
    found = []
    for p in others:
        with open_text(p) as f:
            found.append(list(statements(f)))
    if others:
        stats.add_note(f"{path}: Character definitions also read from {len(others)} other script(s) in {root}")
    return found


def iter_renpy_turns(path: str | os.PathLike, stats: ReadStats | None = None) -> Iterator[Turn | None]:
    """Turns of a Ren'Py game's scripts (a file, a folder or a zip of them), BREAK between conversations."""
    stats = stats if stats is not None else ReadStats()
    path = Path(path)
    scripts, read = [], set()
    for label, lines, file in _sources(path, stats):
        unclosed: list[int] = []
        scripts.append((label, list(statements(lines, unclosed)), len(lines)))
        if file is not None:
            read.add(file.resolve())
        if unclosed:
            stats.add_note(f"{label}:{unclosed[0]}: a string or bracket never closed; the rest of the script was "
                           "not read")
    cast = characters([*_definitions(path, read, stats), *(sts for _, sts, _ in scripts)])
    unknown: Counter = Counter()
    said = 0
    for label, sts, n_lines in scripts:
        stats.layouts[label] = "renpy"
        stats.lines += n_lines
        yield BREAK
        for turn in turns_of(sts, cast, label, unknown):
            said += turn is not None
            yield _finish(turn, cast, stats)
    if unknown:
        shown = ", ".join(f"{v} ({c})" for v, c in unknown.most_common(8))
        stats.add_note(f"{path}: Ren'Py speakers with no Character definition in the scripts, named by their "
                       f"variable: {shown}", hint=True)
    if not said:
        raise UserError(f"{path}: no dialogue in the Ren'Py script(s): no say statements (`e \"Hello.\"`) found")
