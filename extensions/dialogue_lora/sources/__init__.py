"""Readers that turn an input (text file, chat export, game-dialogue CSV, Ren'Py script) into a stream of turns.

`detect_source(path)` picks the reader from the content when `--source auto`: a folder, a .json
file, or a file starting with `{` that holds "messages", is a chat export (Discord, Telegram, Messenger), and so are
JSON Lines whose first line is a SillyTavern chat's, a CSV with DiscordChatExporter's header and a Slack
export's zip (any other zip is refused, but a zip of Ren'Py scripts); an
.html export of Telegram or DiscordChatExporter is refused (their JSON is read), and so is
DiscordChatExporter's text format; a .csv or .tsv file, or one whose first line holds a comma (semicolon,
tab) and the speaker and text column names (given, or the usual ones: `Speaker,Line`), is a CSV; a .txt or
.log file that is a chat export with dates (WhatsApp, Signal, weechat) is read with the chat exports;
a .rpy file, or a folder or zip holding a Ren'Py game's scripts, is read as Ren'Py (compiled scripts and
archives are refused with what to do); anything else is dialogue text, a web page's (a transcript, a film
script) included.
"""
from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

from .. import webpage
from ..dialogue import check_text_file, open_text
from ..errors import UserError
from ..fileio import holds_samples
from . import chatlog, dce_csv, renpy, sillytavern, slack

SOURCES = ("auto", "text", "discord", "csv", "renpy")
# A folder's files read as text when it holds no chat export (a series' scripts, a book's chapters)
TEXT_SUFFIXES = (".txt", ".fountain", ".srt", ".vtt", ".ass", ".ssa", ".html", ".htm", ".log")
CHAT_EXPORTS = "Discord, Telegram, WhatsApp, SillyTavern, Slack"  # what --source discord reads, for messages


def prepared_dataset(path: Path) -> UserError:
    """The error for a prepared dataset given as the input (an easy slip: both are .json files)."""
    return UserError(f"{path}: is a prepared dataset (training samples), not raw dialogue: train on it with "
                     "lora_finetune.py -d, or give prepare_dataset.py the dialogue it was made from")


def check_input(path: Path) -> None:
    """An input that is there and can be read to its end: not a pipe or a device, which every reader (and
    the zip check) would wait on, or read until memory ran out (/dev/zero)."""
    if not path.exists():
        raise UserError(f"{path}: no such file or folder (--txtfilename)")
    if not path.is_dir() and not path.is_file():
        raise UserError(f"{path}: not a regular file (a pipe or a device): save the dialogue to a file first "
                        "(--txtfilename)")


def detect_source(path: str | os.PathLike, csv_columns: tuple[str, ...] = ()) -> str:
    path = Path(path)
    check_input(path)
    refusal = renpy.refused(path)
    if refusal is not None:
        raise refusal
    if path.is_dir():
        if renpy.is_translations_folder(path):
            raise renpy.pick_language(path)
        if renpy.is_game_folder(path):
            return "renpy"
        if not text_files(path):  # (a listing: the chat reader reads the exports once, not here too)
            return "discord"
        from .discord import export_files, nested_exports

        try:
            export_files(path)
            return "discord"
        except UserError:  # no chat export in it: a folder of scripts (a series' episodes) is text, unless
            # it is Telegram's HTML export or holds exports a level down (the chat reader says what to do)
            telegram = any(p.name.lower().startswith("messages") and p.suffix.lower() in (".html", ".htm")
                           for p in path.iterdir())
            return "discord" if telegram or nested_exports(path) else "text"
    if path.suffix.lower() == renpy.SUFFIX:
        return "renpy"
    if path.suffix.lower() == ".zip" and not zipfile.is_zipfile(path):
        raise UserError(f"{path}: not a readable zip archive (damaged, or not a zip): download or export it again")
    if path.suffix.lower() == ".zip" or zipfile.is_zipfile(path):
        if slack.is_export(path):
            return "discord"  # a Slack export as Slack gives it
        if renpy.is_zip_of_scripts(path):
            return "renpy"
        document = _office_document(path)
        if document:  # a .docx, .odt or .epub is a zip too: unzipped it is XML, not the text
            raise UserError(f"{path}: {document}, which is not read: save it as plain text (.txt, UTF-8) from "
                            "the program that made it, and give that")
        raise UserError(f"{path}: a zip archive, which is not read (only a Slack export's, or a Ren'Py game's "
                        "scripts): unzip it and give the file (or a folder of chat exports) inside")
    check_text_file(path)
    with open_text(path) as f:
        head = f.read(4096)
        page = webpage.is_page(path.name, head)
        more = f.read(webpage.HEAD_BYTES) if page else ""
    if page:  # a transcript or script page is read as text, a chat app's is not
        app = webpage.app_export(head + more)
        if app == "telegram":  # Telegram Desktop's default export format
            raise UserError(f"{path}: a Telegram chat's HTML export, which is not read: export the chat again "
                            "with the format 'Machine-readable JSON'")
        if app == "discord":
            raise UserError(f"{path}: a DiscordChatExporter HTML export, which is not read: export the channel "
                            "again in the JSON format")
        return "text"
    stripped = head.lstrip()
    if stripped.startswith(("{", "[")) and holds_samples(path):
        raise prepared_dataset(path)
    is_json = path.suffix.lower() == ".json"
    if (stripped.startswith("{") and (is_json or '"messages"' in head)) or (stripped.startswith("[") and is_json):
        return "discord"
    if sillytavern.looks_like(head):  # a SillyTavern chat: JSON Lines, read with the chat exports
        return "discord"
    first = next(iter(stripped.splitlines()), "")  # (an old Mac's export ends its lines in \r alone)
    if dce_csv.looks_like(first):  # DiscordChatExporter's CSV: read as the chat export it is
        return "discord"
    if first.startswith("ID,Timestamp,Contents"):  # Discord's own data package: the user's messages only
        from .discord import discord_package

        raise discord_package(path)
    if _dce_text(stripped):
        raise UserError(f"{path}: a DiscordChatExporter text export, which is not read (it does not mark where a "
                        "message ends): export the channel again in the JSON format")
    if path.suffix.lower() in (".csv", ".tsv"):
        return "csv"
    if any(d in first for d in ",;\t") and csv_columns and all(c and c in first for c in csv_columns):
        return "csv"
    if any(d in first for d in ",;\t") and _usual_header(first):
        return "csv"  # a table with a header, even one whose rows start with dates
    if path.suffix.lower() in chatlog.SUFFIXES and chatlog.is_chat_file(path):
        return "discord"  # a WhatsApp (or Signal, weechat) export: a chat, read with the chat exports
    return "text"


def _dce_text(head: str) -> bool:
    """Whether a file starts as DiscordChatExporter's plain-text export: a rule of `=`, then `Guild: ...`."""
    lines = head.split("\n", 3)
    return len(lines) > 2 and set(lines[0].strip()) == {"="} and lines[1].startswith("Guild: ")


def _usual_header(first: str) -> bool:
    """Whether a first line is a table's header of the usual column names (`Speaker,Line`), whatever the
    file is called."""
    import csv

    from .csv_dialogue import USUAL_NAMES, _delimiter

    cells = {c.strip().casefold() for c in next(csv.reader([first], delimiter=_delimiter(first)), [])}
    return bool(cells & set(USUAL_NAMES["speaker"])) and bool(cells & set(USUAL_NAMES["text"]))


_DOCUMENTS = {"word/document.xml": "a Word document", "content.xml": "an OpenDocument file",
              "META-INF/container.xml": "an e-book (EPUB)", "xl/workbook.xml": "an Excel workbook",
              "ppt/presentation.xml": "a PowerPoint file"}


def _office_document(path: Path) -> str | None:
    """What kind of document a zip is (a .docx, .odt, .epub, .xlsx), by the file that makes it one."""
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
    except (OSError, zipfile.BadZipFile):
        return None
    return next((kind for name, kind in _DOCUMENTS.items() if name in names), None)


def text_files(folder: Path) -> list[Path]:
    """A folder's text files, in the order of their names as a person reads them (`ep2` before `ep10`)."""
    def order(p: Path) -> list:
        return [(0, int(part), "") if part.isdecimal() else (1, 0, part.casefold())
                for part in re.split(r"(\d+)", p.name)]

    named = [p for p in folder.iterdir() if p.suffix.lower() in TEXT_SUFFIXES and not p.name.startswith(".")]
    broken = [p.name for p in named if p.is_symlink() and not p.exists()]
    if broken:  # an episode would go missing unnoticed
        raise UserError(f"{folder}: {broken[0]} is a link to nothing (or a link loop)"
                        + (f", and {len(broken) - 1} more" if len(broken) > 1 else "") + "; fix or remove it")
    return sorted((p for p in named if p.is_file()), key=order)
