"""Messages copied from the Discord app as text: headers, bracketed times, replies' previews."""
from __future__ import annotations

import json

from extensions.dialogue_lora.chatcopy import is_copy, lines_of
from extensions.dialogue_lora.prepare import PrepareConfig, prepare
from extensions.dialogue_lora.sources import detect_source

COPY = """Luna — 03/13/2023 9:02 PM
raid tomorrow?
Max — 03/13/2023 9:03 PM
sure
Luna — Yesterday at 10:42 PM
anyone up for a raid tonight?
[10:42 PM]we need a healer
and a tank (edited)
@Luna anyone up for a raid tonight?
Max — Yesterday at 10:43 PM
yeah i'm in
give me ten minutes though
@Luna you there?
Luna — Yesterday at 10:44 PM
cool, I'll set up the party
Max — Today at 8:00 AM
that boss was brutal, we should try again
Luna — Today at 8:01 AM
definitely, same time?
"""


def _samples(tmp_path, name="*"):
    src = tmp_path / "copied.txt"
    src.write_text(COPY, encoding="utf-8")
    out = tmp_path / "out.json"
    prepare(PrepareConfig(names=[name], txtfilename=str(src), jsonfilename=str(out)))
    return src, json.loads(out.read_text(encoding="utf-8"))


def test_a_discord_copy_reads_as_a_chat_with_its_gaps_groups_and_replies(tmp_path):
    src, samples = _samples(tmp_path)
    assert detect_source(src) == "discord"  # the chat reader: gaps, groups, filters (the first talk: too short)
    got = [(s["input"], s["output"], s["source"]) for s in samples]
    assert got == [
        ("Luna:", "anyone up for a raid tonight? we need a healer and a tank", "copied.txt:6"),
        ("Luna: anyone up for a raid tonight? we need a healer and a tank\nMax:",
         "yeah i'm in give me ten minutes though Luna you there?", "copied.txt:11"),
        ("Luna: anyone up for a raid tonight? we need a healer and a tank\nMax: yeah i'm in give me ten minutes "
         "though Luna you there?\nLuna:", "cool, I'll set up the party", "copied.txt:15"),
        ("Max:", "that boss was brutal, we should try again", "copied.txt:17"),
        ("Max: that boss was brutal, we should try again\nLuna:", "definitely, same time?", "copied.txt:19"),
    ]


def test_the_pre_pass_keeps_the_files_line_numbers():
    lines = COPY.splitlines(True)
    out = list(lines_of(lines))
    assert len(out) == len(lines)
    assert out[6] == "[01/01/2100 10:42 PM] Luna: we need a healer"  # `Yesterday`, written as the file's dates
    assert out[8] == ""  # the reply's preview of Luna's message
    assert out[12] == "@Luna you there?"  # a message that quotes nothing said before


def test_one_header_or_headers_in_prose_are_not_a_copy():
    assert not is_copy(["Luna — Today at 10:42 PM\n", "hi\n", "Max: hello\n"])
    assert not is_copy(["The night — as always — was long.\n", "Bob — 10:42 PM, he wrote.\n"])
    assert is_copy(["Luna — Today at 10:42 PM\n", "hi\n", "Max — Today at 10:43 PM\n", "hello\n"])
