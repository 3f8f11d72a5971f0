"""A saved web page (a wiki's transcript, an IMSDb film script, a fan site's script) -> its text lines.

A pre-pass for the text reader, as subtitles.py is: the page's words, laid out as a reader sees them, go to
the same line parser as a text file. Pure: no I/O. Rules, each for a page people save:

- tags go, character references are decoded (`&amp;`, `&nbsp;`), and what no reader sees is left out:
  scripts, styles, the head, menus (`<nav>`, `<header>`, `<footer>`, `<aside>`), forms and buttons;
- a block (a paragraph, a heading, a list item, a `<br>`) is a line, its wrapped source lines joined;
- preformatted text (`<pre>`) keeps its lines and its indentation, which a film script's cues need; and when
  most of a page's words are preformatted (IMSDb's scripts), only those are read: the site's menus around
  them would otherwise open the dialogue as narration;
- a table row of two cells whose first is short (`<td><b>Alice</b></td><td>Hello.</td>`, a wiki's
  transcript table) reads `Alice: Hello.`; any other cell is a block of its own.
"""
from __future__ import annotations

import re
from html.parser import HTMLParser

SUFFIXES = (".html", ".htm", ".xhtml")
_HIDDEN = {"script", "style", "head", "noscript", "template", "svg", "nav", "header", "footer", "aside", "form",
           "select", "button", "iframe", "object"}
_BLOCKS = {"p", "div", "br", "li", "ul", "ol", "dl", "dt", "dd", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote",
           "section", "article", "main", "hr", "table", "tr", "center", "figure", "figcaption", "body", "html",
           "address", "details", "summary"}
_VOID = {"br", "hr", "img", "meta", "link", "input", "area", "base", "col", "embed", "source", "track", "wbr"}
_SPACE = re.compile(r"[ \t\r\n\f]+")  # not the no-break space: `&nbsp;` indentation is kept
_SPEAKER_CELL = 40  # a cell this short can be a name; a longer one is a line of its own
# an export whose messages are the chat apps' own pages, which their JSON exports say better
_TELEGRAM = re.compile(r"""class=["'](?:page_wrap|message (?:default|service))""")
_DISCORD = re.compile(r"chatlog__")  # its classes, which its page's style sheet names first


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
    """Collects (text, preformatted) pieces, a "\n" piece at each block's edge."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.pieces: list[tuple[str, bool]] = []
        self.hidden = 0  # depth inside hidden elements
        self.pre = 0
        self.rows: list[list[int]] = []  # for each open table row: where it and each of its cells start

    def handle_starttag(self, tag, attrs):
        if tag in _HIDDEN and tag not in _VOID:
            self.hidden += 1
        elif tag == "pre":
            self.pre += 1
            self._break()
        elif tag == "tr":
            self._break()
            self.rows.append([len(self.pieces)])
        elif tag in ("td", "th"):
            self._break()
            if self.rows:
                self.rows[-1].append(len(self.pieces))
        elif tag in _BLOCKS:
            self._break()

    def handle_startendtag(self, tag, attrs):
        if tag in _BLOCKS:
            self._break()

    def handle_endtag(self, tag):
        if tag in _HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        elif tag == "pre":
            self.pre = max(0, self.pre - 1)
            self._break()
        elif tag == "tr" and self.rows:
            self._row(self.rows.pop())
            self._break()
        elif tag in _BLOCKS or tag in ("td", "th"):
            self._break()

    def handle_data(self, data):
        if not self.hidden:
            self.pieces.append((data, bool(self.pre)))

    def _break(self):
        self.pieces.append(("\n", False))

    def _row(self, starts: list[int]) -> None:
        """A row of a short cell and another (a transcript table's name and line) becomes `name: line`;
        any other row stays its cells' blocks."""
        if len(starts) < 3:
            return
        bounds = list(zip(starts[1:], starts[2:] + [len(self.pieces)]))
        pieces = self.pieces
        if any(pre for _, pre in pieces[starts[1]:]):
            return
        cells = [" ".join(_SPACE.sub(" ", "".join(t for t, _ in pieces[a:b])).split()) for a, b in bounds]
        cells = [c for c in cells if c]
        if len(cells) == 2 and len(cells[0]) <= _SPEAKER_CELL and not cells[0].endswith(":"):
            del pieces[starts[0]:]
            pieces += [("\n", False), (f"{cells[0]}: {cells[1]}", False)]


def lines(page: str) -> list[str]:
    """The page's text, one reader's line per item (blank lines between blocks dropped to one)."""
    reader = _Reader()
    reader.feed(page)
    reader.close()
    pieces = reader.pieces
    pre_words = sum(len(t.split()) for t, pre in pieces if pre)
    if pre_words and 2 * pre_words > sum(len(t.split()) for t, _ in pieces):
        pieces = [p for p in pieces if p[1] or p[0] == "\n"]  # the script, not the site around it
    out: list[str] = []
    line: list[str] = []
    kept = False  # the line holds preformatted text, whose indentation is kept

    def end_line():
        nonlocal kept
        text = "".join(line).replace("\xa0", " ")
        text = text.rstrip() if kept else text.strip()
        if text or (out and out[-1]):  # at most one blank line in a row
            out.append(text)
        line.clear()
        kept = False

    for text, pre in pieces:
        if text == "\n" and not pre:
            end_line()
        elif pre:
            for i, part in enumerate(text.replace("\r\n", "\n").replace("\r", "\n").split("\n")):
                if i:
                    end_line()
                line.append(part)
                kept = True
        else:
            line.append(_SPACE.sub(" ", text))
    end_line()
    return [text + "\n" for text in out]
