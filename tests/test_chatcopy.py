"""Messages copied from the Discord app as text: headers, bracketed times, replies' previews."""
from __future__ import annotations

import json

from extensions.dialogue_lora.chatcopy import kind, lines_of
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
    out = list(lines_of(lines, kind(lines)))
    assert len(out) == len(lines)
    assert out[6] == "[01/01/2100 10:42 PM] Luna: we need a healer"  # `Yesterday`, written as the file's dates
    assert out[8] == ""  # the reply's preview of Luna's message
    assert out[12] == "@Luna you there?"  # a message that quotes nothing said before
    # a name of two words, or with an icon: the preview goes too
    for name in ("Luna Moon", "Luna 🌙"):
        lines = COPY.replace("Luna", name).splitlines(True)
        out = list(lines_of(lines, kind(lines)))
        assert out[8] == "" and out[12] == f"@{name} you there?", name


def test_one_header_or_headers_in_prose_are_not_a_copy():
    assert not kind(["Luna — Today at 10:42 PM\n", "hi\n", "Max: hello\n"])
    assert not kind(["The night — as always — was long.\n", "Bob — 10:42 PM, he wrote.\n"])
    assert kind(["Luna — Today at 10:42 PM\n", "hi\n", "Max — Today at 10:43 PM\n", "hello\n"]) == "Discord"
    # a chat export whose lines carry a stamp and a sender is no copy
    assert not kind(["[2023-12-31 21:15] Alex: hey\n", "[2023-12-31 21:16] Sam: hi\n", "[2023-12-31 21:17] Alex: ok\n"])
    assert not kind(["[12:01] <alex> hey\n", "[12:02] <sam> hi\n", "[12:03] <alex> ok\n"])


def _turns(tmp_path, text, name="copy.txt", **options):
    src = tmp_path / name
    src.write_text(text, encoding="utf-8")
    out = tmp_path / "out.json"
    report = prepare(PrepareConfig(names=["*"], txtfilename=str(src), jsonfilename=str(out), **options))
    return [(s["input"].rsplit("\n", 1)[-1], s["output"]) for s in json.loads(out.read_text(encoding="utf-8"))], report


def test_telegram_and_teams_copies_read_as_chats(tmp_path):
    telegram = ("Bob, [03.11.26 19:03]\nwhere are you?\nthe film starts at eight\n\nAlice, [03.11.26 19:04]\n"
                "on my way, five minutes\n\nBob, [03.11.26 19:05]\nI'll buy the popcorn then\n\n"
                "Alice, [03.11.26 23:40]\nthat was a great film honestly\n")
    got, report = _turns(tmp_path, telegram)
    assert report.source == "discord"  # the chat rules: a silence of hours starts a new conversation
    assert got == [("Bob:", "where are you? the film starts at eight"), ("Alice:", "on my way, five minutes"),
                   ("Bob:", "I'll buy the popcorn then"), ("Alice:", "that was a great film honestly")]
    teams = ("[11/30/2026 10:32 AM] Hans Müller\nGood morning, is the build green?\n[11/30/2026 10:33 AM] Anna "
             "Schmidt\nNot yet, the tests are still running\n[10:35 AM] Hans Müller\nOk, ping me when they pass\n")
    got, _ = _turns(tmp_path, teams)
    assert got == [("Hans Müller:", "Good morning, is the build green?"),
                   ("Anna Schmidt:", "Not yet, the tests are still running"),
                   ("Hans Müller:", "Ok, ping me when they pass")]


def test_a_transcripts_speeches_are_turns_without_chat_rules(tmp_path):
    otter = ("Jamie Rivera  0:03\nWelcome back to the show. Today we talk\nabout bread.\n\n"
             "Sam Lee  0:09\nThanks for having me.\n\nJamie Rivera  12:41\nlol\n")
    got, report = _turns(tmp_path, otter)
    assert report.source == "text"  # times into the recording: no silences to read, no filters
    assert got == [("Jamie Rivera:", "Welcome back to the show. Today we talk about bread."),
                   ("Sam Lee:", "Thanks for having me."), ("Jamie Rivera:", "lol")]


def test_what_only_looks_like_a_copys_headers_is_left_alone():
    pov = ["Chapter One\n", "\n", "Mara — 6:15 AM\n", "\n", "The alarm went off.\n", "Mom: Mara, you'll be late!\n",
           "\n", "Tom — 6:40 AM\n", "\n", "Dad: Did you feed the dog?\n"]  # a novel's sections: no date
    slug = ["INT. BANK LOBBY — 9:15 AM\n", "\n", "MARA\n", "Everyone stay calm.\n", "\n", "EXT. BANK — 9:20 AM\n", "\n"]
    irc = ["[10:30] * Alice (~alice@example.org) has joined #books\n", "[10:30] * Bob (~bob@host.net) has joined #books\n",
           "[10:31] <Alice> anyone read it?\n", "[10:31] <Bob> yes\n"]
    podcast = ["Chapters:\n", "Intro  0:00\n", "Meet our guest  2:15\n", "Listener questions  41:05\n", "\n",
               "HOST: Welcome back.\n", "GUEST: Thanks.\n", "HOST: So.\n", "GUEST: Well.\n"]
    album = ["1. Overture  3:45\n", "2. The Chase  2:10\n", "3. Finale  5:02\n", "\n", "MARA: Did you hear that?\n"]
    for text in (pov, slug, irc, podcast, album):
        assert kind(text) is None, text


def test_telegram_notes_zoom_replies_and_otters_footer_are_no_ones_words(tmp_path):
    telegram = ("Bob, [03.11.26 19:03]\nAre we still on for dinner?\n\nAlice, [03.11.26 19:04]\nYes! 8 pm at Luigi's.\n\n"
                "Bob, [03.11.26 19:05]\n[In reply to Alice]\nPerfect, I'll book a table.\n\nAlice, [03.11.26 19:06]\n"
                "[Forwarded from Carol]\nDon't forget my birthday gift!\n\nAlice, [03.11.26 19:07]\n[Photo]\nLook!\n")
    got, _ = _turns(tmp_path, telegram, filter_low_quality=False)
    assert got == [("Bob:", "Are we still on for dinner?"), ("Alice:", "Yes! 8 pm at Luigi's."),
                   ("Bob:", "Perfect, I'll book a table."), ("Alice:", "Look!")]
    zoom = ("10:02:15 From Sarah Chen to Everyone:\n\tCan everyone see my screen?\n"
            "10:03:40 From Tom Baker to Sarah Chen (direct message):\n\tcan you share the deck after?\n"
            "10:04:10 From Priya Patel to Everyone:\n\tReplying to \"Can everyone see my screen?\"\n\t\n\tI can see it\n"
            "10:04:30 From Sarah Chen to Everyone:\n\tReacted to \"I can see it\" with 👍\n")
    got, _ = _turns(tmp_path, zoom, filter_low_quality=False)
    assert got == [("Sarah Chen:", "Can everyone see my screen?"), ("Tom Baker:", "can you share the deck after?"),
                   ("Priya Patel:", "I can see it")]
    otter = ("Jamie Rivera  0:03\nLet's start.\n\nPriya Patel  0:09\nYes, the numbers look better.\n\n"
             "Jamie Rivera  0:15\nGood.\n\nTranscribed by https://otter.ai\n")
    got, _ = _turns(tmp_path, otter)
    assert got == [("Jamie Rivera:", "Let's start."), ("Priya Patel:", "Yes, the numbers look better."),
                   ("Jamie Rivera:", "Good.")]


def test_copies_with_decorated_names(tmp_path):
    zoom = ("10:02:15 From Sarah Chen (she/her) to Everyone:\n\tGood morning all, the slides are in the drive\n"
            "10:02:40 From Tom Baker to Everyone:\n\tMorning Sarah, thanks for sharing them\n"
            "10:03:00 From Sarah Chen (she/her) to Everyone:\n\tYou're welcome\n")
    got, _ = _turns(tmp_path, zoom, filter_low_quality=False)
    assert [g[0] for g in got] == ["Sarah Chen:", "Tom Baker:", "Sarah Chen:"]
    telegram = ("Luna 🌙, [12.03.2024 10:03]\nwho is coming to the lake on saturday?\n\n"
                "Kai, [12.03.2024 10:04]\nme, if the weather holds up\n\nLuna 🌙, [12.03.2024 10:05]\ngreat\n")
    got, _ = _turns(tmp_path, telegram, filter_low_quality=False)
    assert [g[0] for g in got] == ["Luna:", "Kai:", "Luna:"]
    teams = ("[12/03/2024 10:05] Becker, Jonas (Extern)\nthe build is green again\n"
             "[12/03/2024 10:06] Müller, Hans\ngreat, thanks for fixing it\n"
             "[12/03/2024 10:07] Becker, Jonas (Extern)\nno problem\n")
    got, _ = _turns(tmp_path, teams, filter_low_quality=False)
    assert [g[0] for g in got] == ["Jonas Becker:", "Hans Müller:", "Jonas Becker:"]
    # an agenda's timed items are no chat: none comes back
    agenda = ["[10:00] Welcome Words\n", "coffee first\n", "[10:15] Budget Review (Q3)\n", "numbers\n",
              "[10:45] Hiring Plan\n", "next steps\n"]
    assert kind(agenda) is None
