"""A saved web page (a wiki's transcript, an IMSDb film script, a fan site's script) -> its text lines.

A pre-pass for the text reader, as subtitles.py is: the page's words, laid out as a reader sees them, go to
the same line parser as a text file. Pure: no I/O. Rules, each for a page people save:

- tags go, character references are decoded (`&amp;`, `&nbsp;`), and what no reader sees is left out:
  scripts, styles, the head, menus (`<nav>`, `<header>`, `<footer>`, `<aside>`), forms and buttons;
- a block (a paragraph, a heading, a list item, a table cell) is a line, its wrapped source lines joined;
  a `<br>` ends a line too, except inside a speech: a line after it that names no speaker goes on with a
  line that did (`<p><b>Mara:</b> Wait.<br>Listen.</p>` is one turn);
- preformatted text (`<pre>`) keeps its lines and its indentation, which a film script's cues need; and when
  it holds three times the words of the rest of the page (IMSDb's scripts), only it is read: the site's
  menus around it would otherwise open the dialogue as narration;
- a transcript table (`<td><b>Alice</b></td><td>Hello.</td>`: rows of a short name cell and a line, with
  names that come back; a time cell first is left out) reads `Alice: Hello.` a row; any other table is its
  cells, a line each; a wiki's `<dt>Alice</dt><dd>Hello.</dd>` reads `Alice: Hello.` too, where the names
  come back (not a cast list);
- what the page hides (`hidden`, `style="display:none"`, `aria-hidden="true"`) is left out too.
"""
from __future__ import annotations

import re
from collections import Counter
from html.parser import HTMLParser

from .chatcopy import SAYS

SUFFIXES = (".html", ".htm", ".xhtml")
_HIDDEN = {"script", "style", "head", "noscript", "template", "svg", "nav", "header", "footer", "aside",
           "select", "button", "iframe", "object"}  # not `form`: some sites wrap the whole page in one
_NOT_SHOWN = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.IGNORECASE)
# elements whose end tag a page always writes: hiding one hides to its end (a hidden `<p>` or `<li>` may
# never be closed, and would hide the rest of the page)
_CLOSED = {"div", "span", "section", "article", "table", "ul", "ol", "dl", "details", "figure", "blockquote", "a",
           "font", "small", "em", "strong", "b", "i", "u", "s", "label", "main", "pre", "sup", "sub", "code"}
_TERM = "\x01"  # a `<dt>` name before its `<dd>`: `Name: ` when names come back, else a line of its own
_BLOCKS = {"p", "div", "li", "ul", "ol", "dl", "dt", "dd", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote",
           "section", "article", "main", "hr", "table", "center", "figure", "figcaption", "body", "html",
           "address", "details", "summary"}
_VOID = {"br", "hr", "img", "meta", "link", "input", "area", "base", "col", "embed", "source", "track", "wbr"}
_SPACE = re.compile(r"[ \t\r\n\f]+")  # not the no-break space: `&nbsp;` indentation is kept
_BREAK = ("\n", False)
_SOFT = ("\x00", False)  # a `<br>`: a line's end, or a space inside a speech
_NAME_CELL = re.compile(r"[^\W\d_][\w .'\-]{0,39}")  # a transcript table's name cell
_WHO = frozenset("speaker character name who person voice role".split())  # a transcript table's name column
_TIME_CELL = re.compile(r"(?:\d{1,2}:)?\d{1,2}:\d{2}(?:[.,]\d{1,3})?")
# an export whose messages are the chat apps' own pages, which their JSON exports say better
_TELEGRAM = re.compile(r"""class=["'](?:page_wrap|message (?:default|service))""")
_DISCORD = re.compile(r"chatlog__")  # its classes, which its page's style sheet names first
HEAD_BYTES = 1 << 16  # how much of a page is read to tell a chat app's export (its style sheet comes first)


def is_page(name: str, head: str) -> bool:
    """Whether a file is a web page: named like one, or opening with `<!DOCTYPE html>` or `<html`."""
    start = head.lstrip("\ufeff \t\r\n")[:15].lower()
    return name.lower().endswith(SUFFIXES) or start.startswith(("<!doctype html", "<html"))


def app_export(head: str) -> str | None:
    """"telegram" or "discord" when the page is a chat app's HTML export (read from its JSON instead)."""
    if _TELEGRAM.search(head):
        return "telegram"
    if _DISCORD.search(head):
        return "discord"
    return None


class _Reader(HTMLParser):
    """Collects (text, preformatted) pieces, _BREAK at each block's edge, _SOFT at each `<br>`."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.pieces: list[tuple[str, bool]] = []
        self.hidden = 0  # depth inside hidden elements
        self.pre = 0
        self.tables: list[list[tuple[int, int, list[tuple[int, int]], bool]]] = []  # open tables' rows
        self.rows: list[list] = []  # open rows: [start, [cell starts], any header cell]
        self.term: tuple[int, int] | None = None  # the pieces of the `<dt>` just closed
        self.depth: dict[str, int] = {}  # open elements of each tag
        self.unshown: list[tuple[str, int]] = []  # (tag, depth) of the open elements the page hides

    def handle_starttag(self, tag, attrs):
        if tag not in _VOID:
            self.depth[tag] = self.depth.get(tag, 0) + 1
            if tag in _CLOSED and any(k == "hidden" or (k == "style" and v and _NOT_SHOWN.search(v))
                                      or (k == "aria-hidden" and v == "true") for k, v in attrs):  # not shown
                self.unshown.append((tag, self.depth[tag]))
                self.hidden += 1
                return
        if tag in _HIDDEN and tag not in _VOID:
            self.hidden += 1
        elif tag == "pre":
            self.pre += 1
            self.pieces.append(_BREAK)
        elif tag == "br":
            self.pieces.append(_SOFT)
        elif tag == "table":
            self.pieces.append(_BREAK)
            self.tables.append([])
        elif tag == "tr":
            self.pieces.append(_BREAK)
            self.rows.append([len(self.pieces), [], False])
        elif tag in ("td", "th"):
            self.pieces.append(_BREAK)
            if self.rows:
                self.rows[-1][1].append(len(self.pieces))
                self.rows[-1][2] |= tag == "th"
        elif tag == "dd" and self._term_as_speaker():
            pass
        elif tag in _BLOCKS:
            self.pieces.append(_BREAK)
        if tag == "dt":
            self.term = (len(self.pieces), -1)

    def _term_as_speaker(self) -> bool:
        """A wiki's `<dt>Mara</dt><dd>line</dd>`: the term, a name, opens the line as `Mara: `."""
        if self.term is None or self.term[1] < 0:
            return False
        start, end = self.term
        self.term = None
        if any(p != _BREAK and p[0].strip() for p in self.pieces[end:]):
            return False
        name = " ".join("".join(p[0] for p in self.pieces[start:end] if p not in (_BREAK, _SOFT)).split())
        name = name.rstrip(":").strip()
        if not _NAME_CELL.fullmatch(name) or len(name.split()) > 4:
            return False
        self.pieces[start:] = [(_TERM + name, False)]
        return True

    def handle_startendtag(self, tag, attrs):
        if tag == "br":
            self.pieces.append(_SOFT)
        elif tag in _BLOCKS:
            self.pieces.append(_BREAK)

    def handle_endtag(self, tag):
        depth = self.depth.get(tag, 0)
        if depth:
            self.depth[tag] = depth - 1
        if self.unshown and self.unshown[-1] == (tag, depth):
            self.unshown.pop()
            self.hidden = max(0, self.hidden - 1)
            return
        if tag in _HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        elif tag == "pre":
            self.pre = max(0, self.pre - 1)
            self.pieces.append(_BREAK)
        elif tag == "tr" and self.rows:
            start, cells, header = self.rows.pop()
            if self.tables:
                self.tables[-1].append((start, len(self.pieces), cells, header))
            self.pieces.append(_BREAK)
        elif tag == "dt" and self.term is not None:
            self.term = (self.term[0], len(self.pieces))
            self.pieces.append(_BREAK)
        elif tag == "table" and self.tables:
            self._table(self.tables.pop())
            self.pieces.append(_BREAK)
        elif tag in _BLOCKS or tag in ("td", "th"):
            self.pieces.append(_BREAK)

    def handle_data(self, data):
        if not self.hidden:
            self.pieces.append((data, bool(self.pre)))

    def close(self):
        super().close()
        while self.tables:  # a table the page never closed
            self._table(self.tables.pop())

    def _cells(self, row) -> list[str] | None:
        """A row's cells as text (a `<br>` a space); None for a layout row, with blocks or a script in a cell."""
        _, end, cells, _ = row
        texts = []
        for a, b in zip(cells, cells[1:] + [end]):
            inner = self.pieces[a:b]
            while inner and inner[-1] == _BREAK:
                inner = inner[:-1]
            if any(p == _BREAK or p[1] for p in inner):
                return None
            texts.append(" ".join("".join(" " if p == _SOFT else p[0] for p in inner).split()))
        return texts

    def _table(self, rows) -> None:
        """A transcript table's rows as `name: line` (see the module's note); any other table left as it is."""
        said = []  # (row start, row end, name, line) of the rows of a name cell and a line
        # a time column is left out only in a timed transcript: its header (if any) says who speaks there
        heads = [(self._cells(r) or [])[1:2] for r in rows if r[3]]
        timed = not heads or any(h and h[0].casefold() in _WHO for h in heads)
        for row in rows:
            start, end, _, header = row
            texts = self._cells(row)  # None: blocks or a script inside, a layout table
            texts = None if texts is None else [t for t in texts if t]
            if texts is not None and len(texts) == 3 and timed and _TIME_CELL.fullmatch(texts[0]):
                texts = texts[1:]  # a time, a name and a line (a timed transcript's table)
            if texts is None or header or len(texts) != 2:
                continue
            name = texts[0].rstrip(":").strip()
            if _NAME_CELL.fullmatch(name) and len(name.split()) <= 4:
                said.append((start, end, name, texts[1]))
        names = Counter(name for _, _, name, _ in said)
        if len(said) < 2 or not names or names.most_common(1)[0][1] < 2:  # names come back in a transcript
            return
        for start, end, name, text in reversed(said):
            self.pieces[start:end] = [_BREAK, (f"{name}: {text}", False), _BREAK]


def lines(page: str, starts_turn=None) -> list[str]:
    """The page's text, one reader's line per item (blank lines between blocks dropped to one).
    `starts_turn(line)`: whether a line opens a turn of its own (the text reader's speaker rule); by
    default a plain `Name: ` start."""
    starts_turn = starts_turn or (lambda text: bool(SAYS.match(text)))
    reader = _Reader()
    reader.feed(page)
    reader.close()
    pieces = reader.pieces
    pre_words = sum(len(t.split()) for t, pre in pieces if pre)
    if pre_words and pre_words > 3 * sum(len(t.split()) for t, pre in pieces if not pre):
        pieces = [p for p in pieces if p[1] or p in (_BREAK, _SOFT)]  # the script, not the site around it
    terms = Counter(t[1:] for t, _ in pieces if t[:1] == _TERM)
    speakers = bool(terms) and terms.most_common(1)[0][1] >= 2  # a transcript's names come back; a cast list's not
    out: list[str] = []
    soft: list[bool] = []  # whether the line came after a `<br>` in the same block
    line: list[str] = []
    kept = False  # the line holds preformatted text, whose indentation is kept
    after_br = False

    def end_line():
        nonlocal kept
        text = "".join(line).replace("\xa0", " ")
        text = text.rstrip() if kept else text.strip()
        if text or (out and out[-1]):  # at most one blank line in a row
            out.append(text)
            soft.append(after_br and bool(text))
        line.clear()
        kept = False

    for piece in pieces:
        text, pre = piece
        if piece == _BREAK or piece == _SOFT:
            end_line()
            after_br = piece == _SOFT
        elif text[:1] == _TERM:
            line.append(text[1:])
            if speakers:
                line.append(": ")
            else:
                end_line()
                after_br = False
        elif pre:
            for i, part in enumerate(text.replace("\r\n", "\n").replace("\r", "\n").split("\n")):
                if i:
                    end_line()
                    after_br = False
                line.append(part)
                kept = True
        else:
            line.append(_SPACE.sub(" ", text))
    end_line()
    # a `<br>` inside a speech: the line after it, naming no one, goes on with the speech; a direction
    # there (`(she turns)`) goes on with it when the speech does after it, and stands alone otherwise
    # (`[Carol enters]` before Carol speaks)
    joined: list[str] = []
    opened = False  # the current block's last line kept is a speaker's
    names = [starts_turn(text) for text in out]
    directions = [text[:1] in "([*<{" for text in out]  # `[Carol enters]`, `(she turns)`, `*waves*`
    for i, (text, after) in enumerate(zip(out, soft)):
        if directions[i] and after and opened:
            later = i + 1 < len(out) and soft[i + 1] and out[i + 1] and not names[i + 1] and not directions[i + 1]
            if later and joined and joined[-1]:
                joined[-1] = f"{joined[-1]} {text}"
                continue
        elif after and opened and joined and joined[-1] and not names[i]:
            joined[-1] = f"{joined[-1]} {text}"
            continue
        opened = names[i]
        joined.append(text)
    return [text + "\n" for text in joined]
