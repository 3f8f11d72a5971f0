"""SillyTavern chats (`.jsonl`) -> messages in the shape the Discord reader takes.

SillyTavern keeps each chat as a JSON Lines file (`data/<user>/chats/<Character>/<Character> - <date>.jsonl`,
or *Export chat* as `.jsonl`): a first line of settings (`{"user_name", "character_name", "chat_metadata"}`),
then one message a line: `{"name", "is_user", "is_system", "send_date", "mes", "swipes", "extra"}`. `mes`
is the reply that was kept (of its swipes). Each message becomes a DiscordChatExporter-like dict, so that
every later step (filters, merging, the low-quality rule) is the Discord reader's:

- the author is `name`: the character's, or the user's persona;
- a hidden (`is_system`) or narrator message (`extra.type` "narrator", `/sys`) is a system message;
- no timestamps are passed on: a roleplay goes on across breaks, so a chat file is one conversation
  (`send_date` changed format across SillyTavern's versions, too).
"""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import UserError

SUFFIX = ".jsonl"
KIND = "sillytavern"


def is_chat_file(path: Path) -> bool:
    """Whether a file in a folder of exports is a SillyTavern chat (a folder may hold other .jsonl files)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return looks_like(head.decode("utf-8", "replace"))


def looks_like(head: str) -> bool:
    """Whether the start of a `.jsonl` file is a SillyTavern chat (its settings line, or a message)."""
    first = head.lstrip("\ufeff \t\r\n").split("\n", 1)[0]
    return first.startswith("{") and ('"character_name"' in first or ('"mes"' in first and '"is_user"' in first))


def load(path: Path, text: str) -> dict:
    """The chat in `text` (the file's contents) as {"name": character, "messages": [...]}, checked line by line
    (a chat of only its settings line has none: in a folder of chats it adds nothing)."""
    header, messages = None, []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{n}: malformed JSON ({e.msg}, column {e.colno})") from None
        except (ValueError, RecursionError) as e:
            raise UserError(f"{path}:{n}: unreadable JSON ({str(e)[:80] or type(e).__name__})") from None
        if not isinstance(obj, dict):
            raise UserError(f"{path}:{n}: not a JSON object (a SillyTavern chat has one a line)")
        if header is None and not messages and "mes" not in obj:
            header = obj
            continue
        messages.append((n, obj))
    name = header.get("character_name") if isinstance(header, dict) else None
    return {"name": name if isinstance(name, str) and name.strip() else path.stem, "messages": messages}


def as_discord(numbered) -> dict:
    """One (line number, message) in DiscordChatExporter's shape; `line` is for the reader's errors."""
    n, msg = numbered
    extra = msg.get("extra")
    hidden = bool(msg.get("is_system")) or (isinstance(extra, dict) and extra.get("type") == "narrator")
    name = msg.get("name")
    return {
        "line": n,
        "type": "Service" if hidden else "Default",
        "timestamp": None,
        "author": {"name": name if isinstance(name, str) else ""},
        "content": msg.get("mes", ""),
        "content_field": "mes",  # named so in the reader's errors
    }
