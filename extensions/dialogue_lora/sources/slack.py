"""Slack workspace exports -> conversations of messages in the shape the Discord reader takes.

Slack exports a workspace (*Settings > Import/Export data > Export*) as a zip; unzipped it is a folder of
`users.json`, `channels.json` (a full export adds `groups.json`, `dms.json`, `mpims.json`) and one folder per
conversation holding a file per day (`2024-01-31.json`: a list of messages). Read: the zip as Slack gives
it, the export's folder, one conversation's folder in it, or one day's file. Each message becomes a
DiscordChatExporter-like dict, so that every later step (filters, gaps, merging, the low-quality rule) is the
Discord reader's:

- a conversation's days, in order, are one stream; a thread (the replies sharing a `thread_ts`) is a
  conversation of its own, led by the message that started it, with no times (no gap splits it); a reply
  also sent to the channel is in both (the channel's a copy, not counted again);
- the author is the display name (else the real name) `users.json` gives the message's `user`, else the
  first name a message's own copy of the profile gave that user, else the id: one person, one speaker;
- a message with a subtype other than a file share, a `/me` (an action: `*waves*`) or a reply also sent to
  the channel is a system message (joins, topic changes, pins); bots (`bot_id`, `bot_message`, Slackbot,
  `is_bot` users) are bots;
- Slack's markup: `<@U123>` is a mention of the person's name, `<#C1>` the channel's name (channels.json),
  `<https://x|label>` its label, `<!here>` and the like nothing; `&amp;`, `&lt;`, `&gt;` are unescaped.
"""
from __future__ import annotations

import contextlib
import json
import re
import zipfile
import zlib
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Callable, NamedTuple

from ..errors import UserError, brief
from ..fileio import read_zip_member

LAYOUT = "slack"
KEPT = "Default"
SYSTEM = "System"
_KEPT_SUBTYPES = {None, "thread_broadcast", "file_share", "me_message", "bot_message"}  # a bot's: dropped as one
_META = ("users.json", "channels.json", "groups.json", "dms.json", "mpims.json")
_LOOKUPS = ("users.json", "channels.json", "groups.json")  # what names people and channels
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}\.json$")
_MESSAGE = re.compile(r'"type"\s*:\s*"message"')
_MARKUP = re.compile(r"<([@#!])([^>|]*)(?:\|([^>]*))?>|<([^>|]*)(?:\|([^>]*))?>")


class _Entry(NamedTuple):
    where: str  # the file (or the zip's member) as errors name it
    read: Callable[[], bytes]


def _days(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if _DAY.match(p.name) and p.is_file())
    except OSError:
        return []


def _is_day_file(path: Path) -> bool:
    """A day of a conversation: named by its date, a JSON list whose start holds a message (`"type":
    "message"`; 64 KB: a first message may be a long paste)."""
    if not _DAY.match(path.name):
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16).decode("utf-8", "replace").lstrip("\ufeff \t\r\n")
    except OSError:
        return False
    return head.startswith("[") and (head[1:].lstrip().startswith("]") or _MESSAGE.search(head) is not None)


def is_export(path: Path) -> bool:
    """Whether a path is a Slack export: its zip, its folder (the metadata and a conversation's folder), one
    conversation's folder (day files), or one day's file."""
    if path.is_file():
        return _zip_layout(path) is not None if path.suffix.lower() == ".zip" else _is_day_file(path)
    if not path.is_dir():
        return False
    days = _days(path)
    if days:
        return _is_day_file(days[0])
    # the export's own files and its conversations' folders, even empty ones (said as "no messages" later)
    return (path / "users.json").is_file() and (path / "channels.json").is_file()


def _conversation_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _zip_layout(path: Path) -> tuple[str, list[str]] | None:
    """(the folder inside the zip that holds the export, its day files) when a zip is a Slack export."""
    try:
        with zipfile.ZipFile(path) as z:
            return _layout_of(z.namelist())
    except (OSError, zipfile.BadZipFile):
        return None


def _layout_of(names: list[str]) -> tuple[str, list[str]] | None:
    metas = sorted((n for n in names if n.rsplit("/", 1)[-1] in _META), key=len)
    if not metas:
        return None
    prefix = metas[0][: len(metas[0]) - len(metas[0].rsplit("/", 1)[-1])]
    days = [n for n in names if n.startswith(prefix) and n[len(prefix):].count("/") == 1 and _DAY.search(n)]
    return (prefix, days) if days else None


def _tree(path: Path, stack: contextlib.ExitStack) -> tuple[dict, list[tuple[str, list[_Entry]]]]:
    """({metadata file name: entry} of the export's users.json, channels.json, groups.json, [(conversation,
    its days in order)]) of a zip, folder or day; a zip stays open in `stack`."""
    def entry(p: Path) -> _Entry:
        return _Entry(str(p), p.read_bytes)

    if path.suffix.lower() == ".zip" and path.is_file():
        zf = stack.enter_context(zipfile.ZipFile(path))  # read member by member
        names = zf.namelist()
        prefix, days = _layout_of(names)
        convs: dict = {}
        for n in sorted(days):
            convs.setdefault(n[len(prefix):].split("/", 1)[0], []).append(
                _Entry(f"{path}:{n}", partial(read_zip_member, zf, n, f"{path}:{n}")))
        names = set(names)
        meta = {m: _Entry(f"{path}:{prefix}{m}", partial(read_zip_member, zf, prefix + m, f"{path}:{prefix}{m}"))
                for m in _LOOKUPS if prefix + m in names}
        return meta, sorted(convs.items())
    if path.is_file():
        root, folders = path.parent.parent, [(path.parent.name or path.name, [entry(path)])]
    elif _days(path):
        root, folders = path.parent, [(path.name, [entry(p) for p in _days(path)])]
    else:
        root, folders = path, [(p.name, [entry(d) for d in _days(p)]) for p in _conversation_folders(path)]
    return {m: entry(root / m) for m in _LOOKUPS if (root / m).is_file()}, folders


def _load(e: _Entry):
    try:
        # undecodable bytes stay lone surrogates, which clean_text replaces and counts (as for Discord's)
        text = e.read().decode("utf-8-sig", errors="surrogateescape")
    except (zipfile.BadZipFile, zlib.error, EOFError) as err:  # a damaged member of the zip
        raise UserError(f"{e.where}: damaged in the zip ({brief(err, 80)}): download or export it again") from None
    except OSError as err:
        raise UserError(f"{e.where}: cannot read ({err.strerror or err})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"{e.where}:{err.lineno}: malformed JSON ({err.msg}, column {err.colno})") from None
    except (ValueError, RecursionError) as err:
        raise UserError(f"{e.where}: unreadable JSON ({str(err)[:80] or type(err).__name__})") from None


def _channels(meta: dict) -> dict:
    """Channel id -> name, from channels.json and groups.json (private channels), for `<#C123>`."""
    names = {}
    for m in ("channels.json", "groups.json"):
        data = _load(meta[m]) if m in meta else None
        for c in data if isinstance(data, list) else ():
            if isinstance(c, dict) and isinstance(c.get("id"), str) and isinstance(c.get("name"), str):
                names[c["id"]] = c["name"]
    return names


def _users(e: _Entry | None) -> dict:
    """User id -> {"name", "bot"} from the export's users.json (absent in a copied-out conversation)."""
    if e is None:
        return {}
    data = _load(e)
    if not isinstance(data, list):
        raise UserError(f"{e.where}: expected a list of users")
    users = {}
    for u in data:
        if isinstance(u, dict) and isinstance(u.get("id"), str):
            profile = u.get("profile") if isinstance(u.get("profile"), dict) else {}
            users[u["id"]] = {"name": _first_name(profile, u), "bot": bool(u.get("is_bot"))}
    return users


def _first_name(*holders: dict) -> str | None:
    for key in ("display_name", "real_name", "name"):
        for h in holders:
            v = h.get(key)
            if isinstance(v, str) and v.strip():
                return v.strip()
    return None


def conversations(path: Path):
    """(label, messages in Discord's shape) for each conversation and thread of the export, one
    conversation read at a time."""
    with contextlib.ExitStack() as stack:
        yield from _read(*_tree(path, stack))


def _read(meta: dict, folders: list):
    # users.json's names; a user it lacks (or an export without it) keeps the first name a message gives
    users = _users(meta.get("users.json"))
    channels = _channels(meta)
    for name, days in folders:
        messages = []
        for day in days:
            data = _load(day)
            if not isinstance(data, list):
                raise UserError(f"{day.where}: expected a list of messages (a day of a Slack export)")
            file = f"{name}/{Path(day.where).name}"  # a sample's source: the day's file and the message's number
            for i, m in enumerate(data, 1):
                if not isinstance(m, dict):
                    raise UserError(f"{day.where}: message {i} is not a JSON object")
                messages.append(as_discord(m, users, channels, file, i))
        for i, stream in enumerate(_threads(messages)):
            yield name + (f" [thread {i}]" if i else ""), stream


def _threads(messages: list) -> list[list]:
    """The channel's own stream, then each thread: the message that started it and its replies."""
    channel, threads = [], {}
    for m in messages:
        thread = m.get("thread") if isinstance(m, dict) else None
        if thread is not None and thread != m.get("ts"):
            threads.setdefault(thread, []).append(m)
            if m.get("broadcast"):  # also sent to the channel: said there too (counted once)
                channel.append(dict(m, copy=True))
        else:
            channel.append(m)
    starts = {m.get("ts"): m for m in channel if isinstance(m, dict) and m.get("thread") is not None}
    # the first message leads its thread too: a copy, not counted again as a message read. A thread is one
    # conversation however long its replies take: no times, so that no gap splits it
    return [channel] + [[dict(m, timestamp=None) for m in ([dict(starts[t], copy=True)] if t in starts else [])
                         + replies] for t, replies in threads.items()]


def _stamp(ts) -> str | None:
    try:
        return datetime.fromtimestamp(float(ts), tz=timezone.utc).isoformat()
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def as_discord(msg: dict, users: dict, channels: dict, file: str, number: int) -> dict:
    """One Slack message in DiscordChatExporter's shape; `users` gets the name of a user it lacks."""
    subtype = msg.get("subtype")
    profile = msg.get("user_profile") if isinstance(msg.get("user_profile"), dict) else {}
    user = msg.get("user") if isinstance(msg.get("user"), str) else ""
    known = users.get(user, {})
    # users.json's name first: one person, one speaker, though the profile copied into each message may
    # hold an older name; without it, the first name a message gave that user
    given = _first_name(profile)
    name = known.get("name") or given or user or msg.get("username")
    if user and not known.get("name") and given:
        users[user] = {"name": name, "bot": bool(known.get("bot"))}
    bot = bool(msg.get("bot_id") or subtype == "bot_message" or user == "USLACKBOT" or known.get("bot"))
    text = msg.get("text", "")
    mentions = []
    if isinstance(text, str):
        text = _markup(text, users, channels, mentions)
        if subtype == "me_message" and text.strip():
            # `/me waves`: an action, as the app shows it in italics (`_waves_` too); --strip_actions takes it
            text = f"*{text.strip().strip('_')}*"
    thread = msg.get("thread_ts") if isinstance(msg.get("thread_ts"), str) else None
    return {
        "file": file,  # for the reader's errors and a sample's source: the day's file, the message's number
        "number": number,
        "type": KEPT if subtype in _KEPT_SUBTYPES and msg.get("type", "message") == "message" else SYSTEM,
        "timestamp": _stamp(msg.get("ts")),
        "author": {"name": name if isinstance(name, str) else None, "id": user, "isBot": bot},
        "content": text,
        "mentions": [{"name": n} for n in mentions],
        "attachments": [k for k in ("files", "attachments") if msg.get(k)],
        "ts": msg.get("ts"),
        "thread": thread,
        "broadcast": subtype == "thread_broadcast",
    }


def _markup(text: str, users: dict, channels: dict, mentions: list) -> str:
    """Slack's markup as the text a person reads; mentions as `@Name` (Discord's way, for the same rules)."""
    if "<" not in text and "&" not in text:
        return text

    def sub(m):
        sigil, target, label = m.group(1), m.group(2), m.group(3)
        if sigil == "@":  # the name the person speaks under here, before the label (a username)
            name = users.get(target, {}).get("name") or label or target
            mentions.append(name)
            return "@" + name
        if sigil == "#":
            return "#" + (channels.get(target) or label or target)
        if sigil == "!":  # @here, @channel, a date: its label if it has one
            return label or ""
        return m.group(5) or m.group(4)  # a link: its label, else the address

    text = _MARKUP.sub(sub, text)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
