"""DiscordChatExporter JSON exports (a file, or a folder of them) -> turns; Telegram Desktop's JSON exports
too, their messages put in Discord's shape first (telegram.py).

Per channel file (per chat of a Telegram export), in order:
  1. keep messages of type Default and Reply (others: `system_message`; Telegram's forwarded messages:
     `forwarded`); skip bots (`bot`);
  2. clean the content: Discord's raw markup rendered (`<@11>` -> `@Alex`, `<:pepe:123>` -> `:pepe:`,
     timestamps) and its quoted lines left out (Slack's too), mentions lose their `@` (`@Alex hi` ->
     `Alex hi`), mojibake repaired, whitespace (newlines included) collapsed; a message that was only mentions is dropped
     (`ping_only`), one with attachments/embeds/stickers but no text, or only links (`attachment_only`),
     one that was only a quote (`quote_only`), one with nothing at all (`empty`);
  3. filters, each switchable: non-responses (`lol`, `lmao`, `gg`, ..., and messages without a word:
     `😂😂`, `...`: `non_response`) and conversation enders (`gtg`, `cya`, `going to sleep`, ...: `ender`);
  4. split into conversations where the gap between two kept messages exceeds `gap_minutes`;
  5. merge consecutive messages by one author into one turn (joined with spaces: one line), up to
     MERGE_CHARS characters: a longer run goes on as the author's next turn;
  6. drop low-quality conversations: fewer than `min_messages` turns AND all of them shorter than
     `short_chars` characters, a CJK one counting two (`low_quality`, counted in messages).
The speaker is the author's nickname, else their name. Conversations are separated by `BREAK`.
"""
from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator

from ..dialogue import BREAK, ReadStats, Turn, clean_text, speaker_name, text_width
from ..errors import UserError
from ..fileio import is_utf16
from ..prompt import is_sample, name_key
from . import chatlog, dce_csv, messenger, prepared_dataset, sillytavern, slack, telegram

KEPT_TYPES = {"Default", "Reply"}

# Whole-message non-responses and conversation enders (compared after lowercasing and dropping
# punctuation and repeated letters at the end: "lollll!!" -> "lol").
NON_RESPONSES = frozenset(
    "lol lool lul lmao lmfao rofl kek xd xdd haha hahaha hah heh hehe gg ggs ggwp wp ok okay k kk "
    "oof bruh ikr omg wow hm hmm mhm".split()
)
ENDERS = frozenset(
    {
        "gtg", "g2g", "brb", "bye", "bye bye", "byebye", "cya", "cya later", "cu", "gn", "gnight",
        "goodnight", "good night", "nite", "night night", "ttyl", "later", "laters", "see ya", "see you",
        "see you later", "see you tomorrow", "gonna sleep", "going to sleep", "goin to sleep", "off to bed",
        "off to sleep", "going to bed", "heading to bed", "im off", "i'm off", "gotta go", "got to go",
        "have to go", "i have to go", "i gotta go",
    }
)
# Short messages ("ok gtg", "gn all", "bye guys") led or closed by one of these are enders too.
_ENDER_WORDS = frozenset("gtg g2g brb bye cya gn gnight goodnight nite ttyl".split())
_NORMALISE = re.compile(r"[^\w' ]+")
_GENERIC_MENTION = re.compile(r"(?<![\w@])@(?=[^\W_]|[._])")
_RAW_MENTION = re.compile(r"<@[!&]?\d+>|<#\d+>")
_EVERYONE = re.compile(r"(?<![\w@])@(?:everyone|here)\b")
_FRACTION = re.compile(r"(\.\d{6})\d+")
# Discord's own markup, which an export made with its markdown rendering off keeps as it was sent
_USER_MENTION = re.compile(r"<@!?(\d+)>")
_CUSTOM_EMOJI = re.compile(r"<a?(:[\w~-]+:)\d+>")  # `<:pepe:1234>` -> `:pepe:`, as the exporter writes it
_EMOJI_CODE = re.compile(r":(?=[\w~-]*[^\W\d])[\w~-]+:")  # `:pepe_cry:`, `:5Head:` (not `10:30:45`)
_TIMESTAMP = re.compile(r"<t:(-?\d{1,12})(?::([tTdDfFR]))?>")
_TIME_STYLES = {"t": "%H:%M", "T": "%H:%M:%S", "d": "%Y-%m-%d", "D": "%Y-%m-%d"}
# a quote (`> ` lines, or `>>> ` to the end) is someone else's words, as a forwarded message is
_QUOTE = re.compile(r"^> .*(?:\n|$)", re.MULTILINE)
_REST_QUOTED = re.compile(r"^>>> ", re.MULTILINE)
_MARKUP_LAYOUTS = ("discord", "discord csv", slack.LAYOUT)  # (see `rendered`)
_LINKS_ONLY = re.compile(r"(?:<?https?://\S+>?\s*)+")


def normalise(text: str) -> str:
    """Lowercase, punctuation removed, whitespace collapsed: for the filter lists."""
    return " ".join(_NORMALISE.sub(" ", text.lower()).split())


def _squeeze(t: str) -> str:
    """A repeated last letter squeezed: "lolll" -> "lol", "lmaooo" -> "lmao". (Not a regex: one for a
    repeated letter at the end backtracked at each letter of a long run, `aaaa...` of 50,000 took a minute.)"""
    if len(t) > 1 and t[-1] == t[-2] and (t[-1].isalnum() or t[-1] == "_"):
        return t.rstrip(t[-1]) + t[-1]
    return t


def is_non_response(text: str) -> bool:
    """`lol`, `gg`, ...; and a message of no words at all (`😂😂`, `...`, `??`, `:kekw:`): a reaction too."""
    t = normalise(_EMOJI_CODE.sub(" ", text))
    return not t or t in NON_RESPONSES or _squeeze(t) in NON_RESPONSES or _only_laughs(t)


def _only_laughs(t: str) -> bool:
    return bool(t) and all(w in NON_RESPONSES or (len(w) >= 2 and set(w) <= {"h", "a"}) for w in t.split())


def is_ender(text: str) -> bool:
    t = normalise(text)
    if t in ENDERS or _squeeze(t) in ENDERS:
        return True
    words = t.split()
    return 0 < len(words) <= 3 and (words[0] in _ENDER_WORDS or words[-1] in _ENDER_WORDS)


@dataclass
class DiscordOptions:
    gap_minutes: float = 10.0
    filter_non_responses: bool = True
    filter_enders: bool = True
    filter_low_quality: bool = True
    min_messages: int = 5
    short_chars: int = 30


def _kept_type(msg: dict) -> bool:
    kind = msg.get("type", "Default")
    return isinstance(kind, str) and kind in KEPT_TYPES


def _dropped_type(msg: dict) -> str:
    """The rule that drops a message of a type not kept."""
    return "forwarded" if msg.get("type") == telegram.FORWARDED else "system_message"


def _parse_time(value, where: str) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    v = _FRACTION.sub(r"\1", value.strip())
    if v.endswith("Z"):
        v = v[:-1] + "+00:00"
    try:
        stamp = datetime.fromisoformat(v)
    except ValueError:
        raise UserError(f"{where}: bad timestamp {value!r}") from None
    # naive times (no offset) are taken as UTC, so they compare with the exporter's offset times
    return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=timezone.utc)


def _mention_names(msg: dict) -> list[str]:
    names = []
    mentions = msg.get("mentions")
    for m in mentions if isinstance(mentions, list) else ():  # a hand-edited export may hold anything
        if isinstance(m, dict):
            for key in ("nickname", "name"):
                v = m.get(key)
                if isinstance(v, str) and v and v not in names:
                    names.append(v)
    return sorted(names, key=len, reverse=True)  # longest first: "@Al" must not eat "@Alex"


def _mention_ids(msg: dict) -> dict[str, str]:
    """The id of each mentioned user -> the name shown for them (their nickname, else their name)."""
    ids = {}
    mentions = msg.get("mentions")
    for m in mentions if isinstance(mentions, list) else ():
        if isinstance(m, dict) and isinstance(m.get("id"), (str, int)):
            name = next((v for v in (m.get("nickname"), m.get("name")) if isinstance(v, str) and v), None)
            if name:
                ids[str(m["id"])] = name
    return ids


def _time_text(match: re.Match) -> str:
    """A `<t:1714557600:R>` timestamp as a date and time (UTC: the reader's zone is not known)."""
    try:
        stamp = datetime.fromtimestamp(int(match.group(1)), tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return ""
    return stamp.strftime(_TIME_STYLES.get(match.group(2) or "f", "%Y-%m-%d %H:%M"))


def rendered(content: str, mentioned: dict[str, str]) -> str:
    """Discord's raw markup as a reader sees it: a mention of a known user is `@Name` (the mention rule
    goes on from there), a custom emoji is `:name:`, a timestamp its date; quoted lines are left out."""
    if "<" in content:
        content = _USER_MENTION.sub(lambda m: "@" + mentioned[m[1]] if m[1] in mentioned else m[0], content)
        content = _TIMESTAMP.sub(_time_text, _CUSTOM_EMOJI.sub(r"\1", content))
    if ">" not in content:
        return content
    # a code block's `>>> round(2.675, 2)` or `> tsc -p .` is code, no quote: only the text between blocks
    # (a fence never closed is text), where a `>>> ` quotes all that follows, code blocks too
    pieces = content.split("```")
    if len(pieces) % 2 == 0:
        pieces[-2:] = ["```".join(pieces[-2:])]
    kept = []
    for i, piece in enumerate(pieces):
        if i % 2 == 0:
            rest = _REST_QUOTED.search(piece)
            if rest is not None:
                kept.append(_QUOTE.sub("", piece[:rest.start()]))
                break
            piece = _QUOTE.sub("", piece)
        kept.append(piece)
    return "```".join(kept)


def clean_content(content: str, mention_names: list[str]) -> tuple[str, bool]:
    """(text without the `@` of mentions, whether the message was only mentions)."""
    pinged = False
    if "@" in content or "<" in content:
        bare = _EVERYONE.sub(" ", _RAW_MENTION.sub(" ", content))
        for n in mention_names:
            bare = bare.replace("@" + n, " ")
        bare = re.sub(r"(?<![\w@])@\S+", " ", bare) if not mention_names else bare
        pinged = bare != content and not any(c.isalnum() for c in _EMOJI_CODE.sub(" ", bare))
        text = _RAW_MENTION.sub("", content)
        for n in mention_names:
            text = text.replace("@" + n, n)
        text = _GENERIC_MENTION.sub("", text)
        return text, pinged
    return content, False


def discord_package(path: Path) -> UserError:
    """The error for a piece of Discord's own data package, which has the user's messages only."""
    return UserError(f"{path}: Discord's data package (Request all of my data): it holds only your own messages, "
                     "not the others' in the conversation, so there is no dialogue in it; export the channel "
                     "with DiscordChatExporter (JSON) instead")


def _is_package_folder(path: Path) -> bool:
    """A folder of Discord's data package: a channel's (channel.json and messages.json or .csv), its
    messages folder (index.json and c<id> folders), or the package itself (account and messages folders)."""
    if (path / "channel.json").is_file() and any((path / f"messages.{x}").is_file() for x in ("json", "csv")):
        return True
    if (path / "index.json").is_file() and any(p.is_dir() and p.name[:1] == "c" and p.name[1:].isdigit()
                                              for p in path.iterdir()):
        return True
    if (path / "account").is_dir() and (path / "messages").is_dir():
        return True
    # its messages folder alone (`Messages` in newer packages): the root is refused for what it is
    return any(p.name.casefold() == "messages" and p.is_dir() and (p / "index.json").is_file() and _is_package_folder(p)
               for p in path.iterdir())


def load_export(path: Path) -> dict:
    """One DiscordChatExporter (or Telegram Desktop) JSON file, checked to be one."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None
    if not raw.strip():
        raise UserError(f"{path}: the file is empty")
    # undecodable bytes stay lone surrogates, which clean_text replaces and counts (as for text files); an
    # export saved again as UTF-16 with its byte-order mark (Windows' "Unicode") is read as text files are
    if is_utf16(raw[:2]):
        try:
            text = raw.decode("utf-16")
        except UnicodeDecodeError as e:
            raise UserError(f"{path}: not UTF-16 text after its byte-order mark (byte {e.start}): save it again as "
                            "UTF-8") from None
    else:
        text = raw.decode("utf-8-sig", errors="surrogateescape")
    del raw  # an export can be hundreds of MB: hold one copy of it while it is parsed
    if dce_csv.looks_like(next(iter(text[:4096].splitlines()), "")):
        return {dce_csv.KIND: dce_csv.load(path, text)}
    if path.suffix.lower() == sillytavern.SUFFIX:
        if not sillytavern.looks_like(text[:4096]):
            raise UserError(f"{path}: not a SillyTavern chat (expected JSON Lines with a \"mes\" in each message)")
        return {sillytavern.KIND: sillytavern.load(path, text)}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        if not text.lstrip("\ufeff \t\r\n").startswith(("{", "[")):  # --source discord on a text file
            right = "renpy reads it as a Ren'Py script" if path.suffix.lower() == ".rpy" else "text reads it as text"
            raise UserError(f"{path}: not a chat export (it is not JSON) but read as one: --source auto or {right}") from None
        raise UserError(f"{path}:{e.lineno}: malformed JSON ({e.msg}, column {e.colno})") from None
    except (ValueError, RecursionError) as e:  # e.g. a 5,000-digit number, nesting thousands deep
        raise UserError(f"{path}: unreadable JSON ({str(e)[:80] or type(e).__name__})") from None
    if data == [] or data == {}:
        raise UserError(f"{path}: holds an empty JSON {'list' if data == [] else 'object'}, no dialogue "
                        "(expected a DiscordChatExporter or Telegram export, an object with a \"messages\" list)")
    if isinstance(data, list) and data and is_sample(data[0]):
        raise prepared_dataset(path)
    if isinstance(data, list) and data and isinstance(data[0], dict) and {"Contents", "Timestamp"} <= set(data[0]):
        raise discord_package(path)
    if telegram.is_telegram(data):
        if not telegram.chats(data):
            raise UserError(f"{path}: a Telegram export with no chat in it (export the chats' messages too)")
        return data
    if messenger.looks_like(data):
        return {messenger.KIND: messenger.messages(data)}
    if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
        raise UserError(f"{path}: not a DiscordChatExporter, Telegram, Messenger or Instagram JSON export, nor a "
                        "day of a Slack export (expected an object with a \"messages\" list)")
    return data


def channels(path: Path, stats: ReadStats | None = None) -> list[tuple[str, str, Iterable]]:
    """(name for messages, layout, messages) of each conversation source in one export file: the file for
    Discord's, each chat for Telegram's (an account export holds many; conversations never cross them).
    `stats` gets a text chat log's repairs and code page. The messages are iterated once (a chat log's and a
    CSV's are made as they are read)."""
    if path.suffix.lower() in chatlog.SUFFIXES and chatlog.is_chat_file(path):
        return [(path.name, chatlog.LAYOUT, chatlog.load(path, stats if stats is not None else ReadStats()))]
    data = load_export(path)
    if dce_csv.KIND in data:
        return [(path.name, "discord csv", data[dce_csv.KIND])]
    if sillytavern.KIND in data:
        chat = data[sillytavern.KIND]
        messages = [d for m in chat["messages"] for d in sillytavern.as_discord(m, chat["names"])]
        return [(path.name, "sillytavern", messages)]
    if messenger.KIND in data:
        return [(path.name, messenger.KIND, data[messenger.KIND])]
    if not telegram.is_telegram(data):
        return [(path.name, "discord", data["messages"])]
    found = telegram.chats(data)
    saved = telegram.saved_messages_left_out(data)
    if saved and stats is not None:
        stats.add_note(f"{path.name}: your Saved Messages ({saved} notes to yourself) left out: no dialogue")
    many = len(found) > 1
    return [(f"{path.name} [{name}]" if many else path.name, "telegram", [telegram.as_discord(m) for m in messages])
            for name, messages in found]


def _sources(path: str | os.PathLike, stats: ReadStats | None = None, skipped: list | None = None):
    """(label, layout, messages) of every conversation source in the input, one file read at a time."""
    path = Path(path)
    if path.exists() and slack.is_export(path):
        for label, messages in slack.conversations(path):
            yield label, slack.LAYOUT, messages
        return
    files = export_files(path, skipped)
    parts = [f for f in files if messenger.PART.fullmatch(f.name)] if path.is_dir() else []
    if len(parts) > 1:  # a long Messenger conversation, cut into files: one conversation again
        loaded = [(f.name, load_export(f)) for f in parts]
        if all(messenger.KIND in data for _, data in loaded):
            yield (f"{path.name} ({len(parts)} files)", messenger.KIND,
                   messenger.thread([(name, data[messenger.KIND]) for name, data in loaded], str(path)))
            files = [f for f in files if f not in parts]
        del loaded
    for f in files:
        yield from channels(f, stats)


def _is_export(p: Path) -> bool:
    suffix = p.suffix.lower()
    if suffix == ".json":
        return True
    if suffix == sillytavern.SUFFIX:
        return sillytavern.is_chat_file(p)
    if suffix == ".csv":
        return dce_csv.is_export_file(p)
    return chatlog.is_chat_file(p)


_FOLDER_SUFFIXES = (".json", sillytavern.SUFFIX, ".csv", *chatlog.SUFFIXES)


def export_files(path: str | os.PathLike, skipped: list | None = None) -> list[Path]:
    """The export files: the file itself, or the folder's chat exports, sorted (every *.json, SillyTavern's
    *.jsonl chats, DiscordChatExporter's *.csv, text chat exports with dates); `skipped` gets the names of
    the folder's other .jsonl, .csv, .txt and .log files."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file or folder (--txtfilename)")
    if path.is_dir() and _is_package_folder(path):
        raise discord_package(path)
    if path.is_dir():
        # hidden files left out: macOS writes `._NAME.json` beside each file on a FAT, exFAT or network drive
        named = [p for p in path.iterdir() if p.suffix.lower() in _FOLDER_SUFFIXES and not p.name.startswith(".")]
        broken = [p.name for p in named if p.is_symlink() and not p.exists()]
        if broken:  # a channel would go missing unnoticed
            raise UserError(f"{path}: {broken[0]} is a link to nothing (or a link loop)"
                            + (f", and {len(broken) - 1} more" if len(broken) > 1 else "") + "; fix or remove it")
        taken = {p: p.is_file() and _is_export(p) for p in named}
        files = sorted(p for p, ok in taken.items() if ok)
        if skipped is not None:
            skipped.extend(sorted(p.name for p, ok in taken.items() if not ok and p.is_file()))
        if not files:
            html = any(p.suffix.lower() in (".html", ".htm") for p in path.iterdir())
            nested = nested_exports(path)
            raise UserError(f"{path}: folder holds no chat exports (Discord, Telegram or Messenger .json, DiscordChatExporter "
                            ".csv, SillyTavern .jsonl, WhatsApp .txt, an unzipped Slack export)" + (
                " (its web pages look like Telegram's HTML export: export the chat again with the format "
                "'Machine-readable JSON')" if html else "") + (
                f"; its subfolder {nested[0]!r} holds some: give that folder" if len(nested) == 1 else
                f"; its subfolders hold some ({', '.join(nested[:3])}{', ...' if len(nested) > 3 else ''}): give one"
                if nested else ""))
        return files
    return [path]


def nested_exports(path: Path) -> list[str]:
    """The subfolders of `path` that hold chat exports (or are a Slack export), sorted."""
    return sorted(p.name for p in path.iterdir() if not p.name.startswith(".") and p.is_dir() and (
        slack.is_export(p) or any(_is_export(q) for q in p.iterdir() if q.suffix.lower() in _FOLDER_SUFFIXES)))


def _author_names(author: dict, stats: ReadStats) -> tuple[str | None, str | None]:
    """(speaker, other name): the nickname, else the name; the other is the username behind a nickname."""
    names = []
    for key in ("nickname", "name"):
        value = author.get(key)
        # a chat log's sender is the contact as saved, whose emoji may tell two people apart
        names.append(speaker_name(value, stats, emoji=not author.get("saved")) if isinstance(value, str) else "")
    nickname, username = names
    if nickname:
        return nickname, (username if username and username != nickname else None)
    return username or None, None


def _messages_of(messages: list, label: str, opts: DiscordOptions, stats: ReadStats, dropped: Counter,
                 dropped_by: Counter, aliases: dict, people: dict, markup: bool = False):
    """(turn, timestamp, author_id) for the messages that survive steps 1-3; `markup`: Discord's (or Slack's)
    text, where `> ` quotes someone (elsewhere it is the author's own: a roleplay's sign, a chat log's line)."""
    for i, msg in enumerate(messages, 1):
        where = f"{label}: message {i}"
        if isinstance(msg, dict) and isinstance(msg.get("line"), int):  # a JSON Lines chat: its line
            where = f"{label}:{msg['line']}"
        elif isinstance(msg, dict) and isinstance(msg.get("file"), str):  # Slack: the day's file, its number
            where = f"{msg['file']}: message {msg['number']}"
        elif isinstance(msg, dict) and isinstance(msg.get("id"), (str, int)) and not isinstance(msg["id"], bool):
            where += f" (id {msg['id']})"  # the export's own number, for finding it in an editor
        if not isinstance(msg, dict):
            raise UserError(f"{where} is not a JSON object")
        copy = _is_copy(msg)
        once = 0 if copy else 1  # a Slack message said again elsewhere is counted where it was said
        if once and not msg.get("part"):  # (a SillyTavern message's second turn is the same message)
            stats.lines += 1
        if not _kept_type(msg):
            dropped[_dropped_type(msg)] += once
            continue
        author = msg.get("author")
        if not isinstance(author, dict):
            raise UserError(f"{where} has no author")
        speaker, username = _author_names(author, stats)
        if author.get("isBot"):
            dropped["bot"] += once
            if speaker:  # so that asking for the bot by name says why it has no samples
                dropped_by[name_key(speaker), "bot"] += once
            continue
        if not speaker:
            raise UserError(f"{where}: the author has no name")
        if username:
            aliases.setdefault(name_key(username), speaker)
        if author.get("id"):
            people.setdefault(name_key(speaker), (speaker, set()))[1].add(str(author["id"]))
        content = msg.get("content") or ""
        if not isinstance(content, str):
            raise UserError(f"{where}: {msg.get('content_field', 'content')} is not text")
        shown = rendered(content, _mention_ids(msg)) if markup else content
        text, pinged = clean_content(shown, _mention_names(msg))
        text = clean_text(text, stats)
        rule = None
        if pinged:
            rule = "ping_only"
        elif not text and any(msg.get(k) for k in ("attachments", "embeds", "stickers")):
            rule = "attachment_only"
        elif not text:
            rule = "quote_only" if content.strip() and not shown.strip() else "empty"
        elif _LINKS_ONLY.fullmatch(_EMOJI_CODE.sub("", text).strip()):  # a link shared without a word
            rule = "attachment_only"
        elif opts.filter_non_responses and is_non_response(text):
            rule = "non_response"
        elif opts.filter_enders and is_ender(text):
            rule = "ender"
        if rule is not None:
            dropped[rule] += once
            dropped_by[name_key(speaker), rule] += once
            yield None, None, str(author.get("id") or speaker)  # said between: see _conversations
            continue
        stamp = _parse_time(msg.get("timestamp"), where)
        at = msg["line"] if isinstance(msg.get("line"), int) else msg.get("number", i)  # else the position
        author_key = str(author.get("id") or speaker)
        if copy:  # said again in a second conversation: context there, trained where it was said
            yield Turn(None, f"{speaker}: {text}", msg.get("file", label), at), stamp, "copy " + author_key
        else:
            yield Turn(speaker, text, msg.get("file", label), at), stamp, author_key


# A run of one author's messages is merged up to this many characters, then goes on as a turn of its own: a
# wall of messages as one reply would not fit a sample (cutoff_len 256 tokens is about 1,000 characters)
# and would be dropped at training.
MERGE_CHARS = 600


def _conversations(messages, gap_minutes: float):
    """Split where the gap between two messages exceeds `gap_minutes`; merge runs of one author (up to
    MERGE_CHARS, at message bounds) that no one else's filtered message (a `lol`, a photo: its turn is None)
    interrupts."""
    gap = gap_minutes * 60
    conv: list[list] = []  # [turn, author, its messages' texts, their length joined]
    last = None
    interrupted = False
    for turn, stamp, author in messages:
        if turn is None:
            interrupted = interrupted or bool(conv) and conv[-1][1] != author
            continue
        if conv and stamp is not None and last is not None and (stamp - last).total_seconds() > gap:
            yield _joined(conv)
            conv = []
        if stamp is not None:
            last = stamp
        run = conv[-1] if conv and conv[-1][1] == author and not interrupted else None
        interrupted = False
        if run is not None and run[3] + 1 + len(turn.text) <= MERGE_CHARS:
            run[2].append(turn.text)
            run[3] += 1 + len(turn.text)
        else:
            conv.append([turn, author, [turn.text], len(turn.text)])
    if conv:
        yield _joined(conv)


def _joined(conv: list[list]) -> list[list]:
    """[turn, n_messages, author] with each run's texts joined (once: a long run is not copied over and over).
    A copy (no speaker: context only) is no message: it was counted where it was said."""
    return [[turn._replace(text=" ".join(texts)) if len(texts) > 1 else turn,
             len(texts) if turn.speaker is not None else 0, author] for turn, author, texts, _ in conv]


def iter_discord_turns(
    path: str | os.PathLike,
    opts: DiscordOptions | None = None,
    stats: ReadStats | None = None,
    dropped: Counter | None = None,
    dropped_by: Counter | None = None,
    aliases: dict | None = None,
    people: dict | None = None,
) -> Iterator[Turn | None]:
    """Turns of every conversation in the export(s), with `BREAK` between conversations.

    `dropped` counts the messages each rule dropped; `dropped_by` the same per (name_key(speaker), rule);
    `aliases` maps each username's name_key that a nickname hides to that nickname; `people` each name's
    name_key to (the name, the author ids that use it).
    """
    opts = opts or DiscordOptions()
    stats = stats if stats is not None else ReadStats()
    dropped = dropped if dropped is not None else Counter()
    dropped_by = dropped_by if dropped_by is not None else Counter()
    aliases = aliases if aliases is not None else {}
    people = people if people is not None else {}
    skipped: list[str] = []
    for n, (label, layout, messages) in enumerate(_sources(path, stats, skipped)):
        if n == 0 and skipped:  # export_files has listed the folder
            shown = ", ".join(skipped[:5]) + (f", ... +{len(skipped) - 5} more" if len(skipped) > 5 else "")
            note = f"{path}: {len(skipped)} file(s) not read, not chat exports: {shown} (give one as the input to read it)"
            stats.add_note(note, hint=True)
        stats.layouts[label] = layout
        markup = layout in _MARKUP_LAYOUTS
        for conv in _conversations(_messages_of(messages, label, opts, stats, dropped, dropped_by, aliases, people,
                                                markup), opts.gap_minutes):
            if opts.filter_low_quality and len(conv) < opts.min_messages and all(
                text_width(t.text) < opts.short_chars for t, _, _ in conv
            ):
                dropped["low_quality"] += sum(n for _, n, _ in conv)
                for t, n, _ in conv:
                    if t.speaker is not None:
                        dropped_by[name_key(t.speaker), "low_quality"] += n
                continue
            yield from (t for t, _, _ in conv)
            yield BREAK


def _is_copy(msg) -> bool:
    """A Slack message said again in a second conversation (a thread's lead, a reply also sent to the
    channel): read there too, counted once."""
    return isinstance(msg, dict) and bool(msg.get("copy"))


def scan_discord_speakers(path: str | os.PathLike) -> Counter:
    """Speaker -> message count over the export(s), before any filter (for the tab's dropdown)."""
    counts: Counter = Counter()
    stats = ReadStats()
    for _, _, messages in _sources(path):
        for msg in messages:
            if not isinstance(msg, dict) or not _kept_type(msg) or _is_copy(msg):
                continue
            author = msg.get("author") or {}
            if not isinstance(author, dict) or author.get("isBot"):
                continue
            name = _author_names(author, stats)[0]  # the speaker prepare will use
            if name:
                counts[name] += 1
    return counts
