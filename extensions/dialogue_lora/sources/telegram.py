"""Telegram Desktop JSON exports -> chats of messages in the shape the Discord reader takes.

Telegram Desktop exports one chat (the chat's menu, *Export chat history*) or a whole account (*Settings >
Advanced > Export Telegram data*); with the format *Machine-readable JSON* either is a `result.json`. A chat
is an object `{"name", "type", "id", "messages": [...]}`; an account export holds its chats under
`"chats": {"list": [...]}` (and `"left_chats"`). Each message becomes a DiscordChatExporter-like dict, so
that every later step (filters, conversations, merging, the low-quality rule) is the Discord reader's:

- `"type": "message"` is kept (Discord's `Default`); `"service"` (joins, pins, calls, title changes) is a
  system message;
- the author is `"from"` (`Deleted Account`, as Telegram shows it, when that is null), their id `"from_id"`;
- `"text"` is a string, or a list of strings and entities (`{"type": "bold", "text": "..."}`): joined;
- photos, files, stickers, voice notes, polls, locations, contacts and dice count as attachments;
- a forwarded message (`"forwarded_from"`) is someone else's words: dropped as `forwarded`; one sent through
  an inline bot (`"via_bot"`) is the bot's: dropped as `bot`.
"""
from __future__ import annotations

KEPT = "Default"
SERVICE = "Service"
FORWARDED = "Forwarded"
DELETED_ACCOUNT = "Deleted Account"
# The keys that carry something other than text (the text may be empty then)
_ATTACHMENT_KEYS = ("photo", "file", "media_type", "sticker_emoji", "poll", "location_information",
                    "contact_information", "contact_vcard", "game_title", "invoice_information", "dice")


def is_telegram(data) -> bool:
    """Whether a parsed JSON file is a Telegram Desktop export (a chat, or a whole account)."""
    if not isinstance(data, dict):
        return False
    if isinstance(data.get("chats"), dict) or isinstance(data.get("left_chats"), dict):
        return True
    messages = data.get("messages")
    if not isinstance(messages, list):
        return False
    first = next((m for m in messages[:50] if isinstance(m, dict)), None)
    return first is not None and (first.get("type") in ("message", "service") or "from_id" in first
                                  or "date_unixtime" in first)


def chats(data: dict) -> list[tuple[str, list]]:
    """(chat name, messages) for a chat export, or for every chat of an account export but its Saved
    Messages (notes to yourself: no dialogue; exported alone, it is read as any chat)."""
    if isinstance(data.get("messages"), list):
        return [(_chat_name(data), data["messages"])]
    return [(_chat_name(chat), chat["messages"]) for chat in _account_chats(data) if not _saved(chat)]


def saved_messages_left_out(data: dict) -> int:
    """How many messages of an account export's Saved Messages chats() leaves out."""
    if isinstance(data.get("messages"), list):
        return 0
    return sum(len(chat["messages"]) for chat in _account_chats(data) if _saved(chat))


def _account_chats(data: dict) -> list[dict]:
    found = []
    for key in ("chats", "left_chats"):
        listed = data.get(key)
        for chat in (listed.get("list") if isinstance(listed, dict) else None) or ():
            if isinstance(chat, dict) and isinstance(chat.get("messages"), list):
                found.append(chat)
    return found


def _saved(chat: dict) -> bool:
    return chat.get("type") == "saved_messages"


def _chat_name(chat: dict) -> str:
    name = chat.get("name")
    if isinstance(name, str) and name.strip():
        return name.strip()
    return "Saved Messages" if chat.get("type") == "saved_messages" else f"chat {chat.get('id', '?')}"


def text_of(value) -> str | None:
    """A message's text: a string, or a list of strings and `{"text": ...}` entities; None if neither."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        return None
    parts = []
    for part in value:
        if isinstance(part, str):
            parts.append(part)
        elif isinstance(part, dict) and isinstance(part.get("text"), str):
            parts.append(part["text"])
    return "".join(parts)


def as_discord(msg):
    """One Telegram message in DiscordChatExporter's shape (anything not an object is passed on as it is,
    for the reader's own error)."""
    if not isinstance(msg, dict):
        return msg
    kind = msg.get("type")
    if kind == "message":
        kind = FORWARDED if "forwarded_from" in msg else KEPT  # null when the original sender's account is gone
    else:
        kind = SERVICE
    name = msg.get("from")
    author = {"name": name if isinstance(name, str) and name.strip() else DELETED_ACCOUNT,
              "id": str(msg.get("from_id") or ""), "isBot": bool(msg.get("via_bot"))}
    text = text_of(msg.get("text", ""))
    return {
        "id": msg.get("id"),  # for the reader's errors: Telegram's message number
        "type": kind,
        "timestamp": msg.get("date"),
        "author": author,
        "content": text if text is not None else msg.get("text"),  # not text: the reader says so
        "attachments": [k for k in _ATTACHMENT_KEYS if msg.get(k)],
    }
