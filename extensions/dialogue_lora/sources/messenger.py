"""Facebook Messenger and Instagram JSON exports -> messages in the shape the Discord reader takes.

*Download your information* (Facebook, Instagram; format JSON) writes each conversation as
`messages/inbox/<thread>/message_1.json` (and `message_2.json`, ... for a long one). Two layouts:

- the classic one (Facebook until 2024, Instagram): `{"participants": [{"name"}], "messages": [{"sender_name",
  "timestamp_ms", "content", "photos", ..., "type"}]}`, newest message first, and every non-ASCII
  character written as its UTF-8 bytes read as Latin-1 (`"caf\\u00c3\\u00a9"` for `café`), which is undone
  here;
- Messenger's end-to-end encrypted chats (2024 on): `{"participants": ["name"], "threadName", "messages":
  [{"senderName", "timestamp", "text", "media", "isUnsent", "type"}]}`.

A long conversation's files (`message_1.json`, `message_2.json`, ... in one folder) are read as one
conversation (`thread`): each file's messages, then all of them in time order, so no conversation breaks
where the export cut the file.

Each message becomes a DiscordChatExporter-like dict, oldest first, so that every later step (filters,
conversations, merging, the low-quality rule) is the Discord reader's:

- a message with text is kept (Discord's `Default`); calls, joins and leaves, payments and unsent messages
  are system messages, and so are the classic export's reaction notices (`Reacted 😂 to your message`)
  and its notices of what the sender did (`Alex Kim named the group Movie Night.`, nicknames, themes,
  calls, live locations), which the export writes as the sender's message, often without a `type`;
- photos, videos, audio, files, GIFs, stickers and shared links count as attachments (the text the export
  puts in for them, `Alex sent an attachment.`, is no one's words).
"""
from __future__ import annotations

import os
import re
from datetime import datetime, timezone

from ..errors import UserError

KIND = "messenger"
KEPT = "Default"
SERVICE = "Service"
_ATTACHMENT_KEYS = ("photos", "videos", "audio_files", "files", "gifs", "sticker", "share", "media")
_SERVICE_TYPES = {"call", "subscribe", "unsubscribe", "payment"}  # casefolded: the two layouts differ in case
# what the export writes in place of a message's own words
_PLACEHOLDER = re.compile(r"(?:.{1,80} )?(?:sent an attachment|sent a (?:photo|video|voice message|GIF|sticker|link)"
                          r"(?: from \w+)?|sent \d+ (?:photos|videos))\.", re.IGNORECASE)
# the classic export's notices, written as a message of whoever did it (after their name, or `You`)
# (a name or theme is short and holds no `, `, and the notice ends with its full stop: `You changed the theme
# to neon green, admit it` is typed)
_NAMED = r"(?:(?!, )[^\n]){1,80}"
# of a fixed shape: also after `You` (the exporting user's own), which typed words rarely take
_FIXED_NOTICE = (r"(?:cleared (?:his|her|their|your) (?:own )?nickname|changed the (?:group photo|chat theme|theme)"
                 r"|removed the group (?:name|photo)|left the group|created the group|(?:un)?pinned a message"
                 r"|(?:started|joined) (?:a|the) (?:video |audio )?(?:chat|call)|missed (?:a|your) (?:video |audio )?call"
                 r"|sent a live location|shared (?:a|their|your) (?:live )?location|stopped sharing (?:their|your) location"
                 r"|(?:sent|requested) money|turned (?:on|off) (?:disappearing messages|vanish mode))\.")
_YOU_NOTICE = re.compile(_FIXED_NOTICE, re.IGNORECASE)
_NOTICE = re.compile(  # after the sender's own name: those that name something too
    r"(?:named the group|changed the group name to|set the nickname for|set (?:his|her|their|your) (?:own )?nickname to"
    rf"|changed the (?:chat )?theme to|set the (?:quick reaction|emoji) to|changed the emoji to) {_NAMED}\."
    rf"|(?:added {_NAMED} to the group|removed {_NAMED} (?:from the group|as an admin)|made {_NAMED} an admin"
    rf"|cleared the nickname for {_NAMED}|waved at {_NAMED})\.|{_FIXED_NOTICE}", re.IGNORECASE)
_REACTION = re.compile(r"Reacted .{1,16} to your message\s*|Liked a message", re.DOTALL)  # Instagram's like


PART = re.compile(r"message_(\d{1,6})\.json", re.IGNORECASE)  # one file of a conversation's export


def looks_like(data) -> bool:
    """Whether a parsed JSON file is one of these exports: participants, and messages with a sender's name."""
    if not isinstance(data, dict) or not isinstance(data.get("participants"), list):
        return False
    messages = data.get("messages")
    if not isinstance(messages, list):
        return False
    first = next((m for m in messages[:50] if isinstance(m, dict)), None)
    return first is not None and ("sender_name" in first or "senderName" in first)


def _latin1_utf8(s):
    """The classic export's text as it was typed: its Latin-1 characters are UTF-8 bytes."""
    if not isinstance(s, str) or s.isascii():
        return s
    try:
        return s.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):  # already text (an export fixed by some tool)
        return s


def _stamp(ms: int | float | None) -> str | None:
    if ms is None:
        return None
    try:
        return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat()
    except (OverflowError, OSError, ValueError):
        return None


def messages(data: dict) -> list:
    """The export's messages in DiscordChatExporter's shape, oldest first (anything not an object is passed
    on as it is, for the reader's own error)."""
    raw = data["messages"]
    out = [as_discord(m, i) for i, m in enumerate(raw, 1)]
    if any(isinstance(m, dict) and "sender_name" in m for m in raw[:50]):
        out.reverse()  # the classic export lists the newest first
    if all(isinstance(m, dict) and m["_ms"] is not None for m in out):
        out.sort(key=lambda m: m["_ms"])  # stable: messages of one millisecond keep their order
    return out


def thread(parts: list[tuple[str, list]], folder: str = "") -> list:
    """One conversation from its files' `messages` lists (as `messages` gives them), (file name matching
    `PART`, messages) each: every message tagged with its file (its source is `message_2.json:15`), all
    in time order; where a message has no time, in the files' order, the highest number first
    (`message_1.json` holds the newest messages). A message that is not an object is an error naming its
    file (in `folder`)."""
    out = []
    for name, msgs in sorted(parts, key=lambda p: -int(PART.fullmatch(p[0]).group(1))):
        for i, m in enumerate(msgs, 1):
            if not isinstance(m, dict):
                raise UserError(f"{os.path.join(folder, name)}: message {i} is not a JSON object")
            out.append({**m, "file": name})
    if all(m["_ms"] is not None for m in out):
        out.sort(key=lambda m: m["_ms"])  # stable: messages of one millisecond keep their order
    return out


def _notice(text: str, name) -> bool:
    """Whether a message's text is the export's notice of something its sender did (`Alex Kim named the
    group Movie Night.`), not words they typed."""
    if isinstance(name, str) and name and text.startswith(name + " "):
        return bool(_NOTICE.fullmatch(text[len(name) + 1:]))
    return text.startswith("You ") and bool(_YOU_NOTICE.fullmatch(text[4:]))


def as_discord(msg, number: int = 0):
    """One message in DiscordChatExporter's shape."""
    if not isinstance(msg, dict):
        return msg
    classic = "sender_name" in msg
    name = _latin1_utf8(msg.get("sender_name") if classic else msg.get("senderName"))
    text = _latin1_utf8(msg.get("content")) if classic else msg.get("text")
    ms = msg.get("timestamp_ms") if classic else msg.get("timestamp")
    if isinstance(ms, bool) or not isinstance(ms, (int, float)):
        ms = None  # no time: the order as the file has it
    attachments = [k for k in _ATTACHMENT_KEYS if msg.get(k)]
    kind = KEPT
    if msg.get("is_unsent") or msg.get("isUnsent") or str(msg.get("type") or "").casefold() in _SERVICE_TYPES:
        kind = SERVICE
    elif isinstance(text, str) and _REACTION.fullmatch(text):
        kind = SERVICE
    elif isinstance(text, str) and _notice(text.strip(), name):
        kind = SERVICE
    elif isinstance(text, str) and _PLACEHOLDER.fullmatch(text.strip()) and (
            attachments or text.strip().startswith((f"{name} ", "You "))):  # not `I sent a photo.` typed
        text, attachments = "", attachments or ["attachment"]
    return {
        "number": number,  # the message's place in the file (newest first in the classic export): its source
        "type": kind,
        "timestamp": _stamp(ms),
        "_ms": ms,
        "author": {"name": name if isinstance(name, str) and name.strip() else "Facebook user",
                   "id": name if isinstance(name, str) else ""},
        "content": text if text is not None else "",
        "attachments": attachments,
    }
