"""SillyTavern chats (`.jsonl`) -> messages in the shape the Discord reader takes.

SillyTavern keeps each chat as a JSON Lines file (`data/<user>/chats/<Character>/<Character> - <date>.jsonl`,
or *Export chat* as `.jsonl`): a first line of settings (`{"user_name", "character_name", "chat_metadata"}`),
then one message a line: `{"name", "is_user", "is_system", "send_date", "mes", "swipes", "extra"}`. `mes`
is the reply that was kept (of its swipes). Each message becomes a DiscordChatExporter-like dict, so that
every later step (filters, merging, the low-quality rule) is the Discord reader's:

- the author is `name`: the character's, or the user's persona; a character's message written as a script
  (opening with its own cue, `Seraphina: ...`, then a blank line and `Alex: ...`, as models often write) is
  those turns, each a message of its speaker, its own leading cue gone;
- a hidden (`is_system`) or narrator message (`extra.type` "narrator", `/sys`) is a system message;
- no timestamps are passed on: a roleplay goes on across breaks, so a chat file is one conversation
  (`send_date` changed format across SillyTavern's versions, too).
"""
from __future__ import annotations

import json
import re
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


_READ = ("name", "is_user", "is_system", "mes")
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")  # a line as universal newlines read it


def load(path: Path, text: str) -> dict:
    """The chat in `text` (the file's contents) as {"name": character, "messages": [...]}, checked line by line
    (a chat of only its settings line has none: in a folder of chats it adds nothing)."""
    header, messages = None, []
    for n, found in enumerate(_LINE.finditer(text), 1):  # (not splitlines: a second copy of a long chat)
        line = found.group()
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
        # what as_discord reads, no more: a message's swipes hold whole other replies, often several
        slim = {k: obj[k] for k in _READ if k in obj}
        if isinstance(obj.get("extra"), dict) and "type" in obj["extra"]:
            slim["extra"] = {"type": obj["extra"]["type"]}
        messages.append((n, slim))
    name = header.get("character_name") if isinstance(header, dict) else None
    names = [header.get(k) for k in ("user_name", "character_name")] if isinstance(header, dict) else []
    names += [m.get("name") for _, m in messages]
    return {"name": name if isinstance(name, str) and name.strip() else path.stem, "messages": messages,
            "names": sorted({n.strip() for n in names if isinstance(n, str) and n.strip()}, key=len, reverse=True)}


def as_discord(numbered, names: list[str] = ()) -> list[dict]:
    """One (line number, message) in DiscordChatExporter's shape (`line` is for the reader's errors): one
    message a turn its text holds, by the speakers in `names`."""
    n, msg = numbered
    extra = msg.get("extra")
    hidden = bool(msg.get("is_system")) or (isinstance(extra, dict) and extra.get("type") == "narrator")
    name = msg.get("name")
    name = name if isinstance(name, str) else ""
    content = msg.get("mes", "")
    # (a user's message is theirs whole: it may show the character how to say something)
    split = isinstance(content, str) and not hidden and not msg.get("is_user")
    turns = _turns(name, content, names) if split else [(name, content)]
    return [{
        "line": n,
        "type": "Service" if hidden else "Default",
        "timestamp": None,
        "author": {"name": speaker},
        "content": text,
        "content_field": "mes",  # named so in the reader's errors
        "part": i > 0,  # the message's next turn: counted once, as the one message it is
    } for i, (speaker, text) in enumerate(turns)]


def _turns(name: str, text: str, names: list[str]) -> list[tuple[str, str]]:
    """(speaker, text) of each turn in one message that opens with its own speaker's cue, as a model writing a
    script does (`Seraphina: Welcome.` by Seraphina): that cue goes, and a paragraph opening `Name:` (a speaker
    of the chat, after a blank line) starts the next turn. Any other message is its speaker's whole (a letter
    read aloud, `Alex: meet me at dawn.` on its own, is the text's)."""
    if not name or not names or not re.match(r"\s*" + re.escape(name) + r":", text):
        return [(name, text)]
    cue = re.compile(r"(?:\A|(?<=\n)[ \t]*\n)[ \t]*(" + "|".join(map(re.escape, names)) + r"):[ \t]*")
    turns, speaker, start = [], name, 0
    for m in cue.finditer(text):
        turns.append((speaker, text[start:m.start()]))
        speaker, start = m.group(1), m.end()
    turns.append((speaker, text[start:]))
    kept = [(who, said) for who, said in turns if said.strip()]
    return kept or [(name, text)]
