"""Other sources: DiscordChatExporter and Telegram JSON, and game-dialogue CSV (golden outputs, each rule, bad input)."""
from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest

from extensions.dialogue_lora.dialogue import ReadStats
from extensions.dialogue_lora.errors import UserError
from extensions.dialogue_lora.prepare import PrepareConfig, prepare, scan_speakers
from extensions.dialogue_lora.sources import detect_source
from extensions.dialogue_lora.sources.csv_dialogue import CsvOptions, iter_csv_turns
from extensions.dialogue_lora.sources.discord import (
    DiscordOptions,
    clean_content,
    is_ender,
    is_non_response,
    iter_discord_turns,
)

ROOT = Path(__file__).resolve().parent.parent
DISCORD = ROOT / "examples" / "discord_export.json"
CSV = ROOT / "examples" / "skyrim_dialogue.csv"
TELEGRAM = ROOT / "examples" / "telegram_export.json"
SILLYTAVERN = ROOT / "examples" / "sillytavern_chat.jsonl"


def msg(i, author, content, minute=0, **extra):
    author_obj = {"id": str(hash(author) % 1000), "name": author.lower(), "nickname": author, "isBot": False}
    author_obj.update(extra.pop("who", {}))
    return {
        "id": str(i),
        "type": extra.pop("type", "Default"),
        "timestamp": f"2024-05-01T10:{minute:02d}:00.000+00:00",
        "content": content,
        "author": author_obj,
        "attachments": extra.pop("attachments", []),
        "embeds": [],
        "stickers": [],
        "mentions": extra.pop("mentions", []),
    }


def export(tmp_path, messages, name="chan.json"):
    p = tmp_path / name
    p.write_text(json.dumps({"guild": {}, "channel": {}, "messages": messages}), encoding="utf-8")
    return p


def discord_turns(path, **opts):
    dropped = Counter()
    got = [None if t is None else (t.speaker, t.text) for t in iter_discord_turns(path, DiscordOptions(**opts), dropped=dropped)]
    return got, dropped


# ------------------------------------------------------------------------------------------ Discord


def test_discord_example_golden(tmp_path):
    out = tmp_path / "d.json"
    report = prepare(PrepareConfig(names=["Alex", "sam"], txtfilename=str(DISCORD), jsonfilename=str(out)))
    records = json.loads(out.read_text(encoding="utf-8"))
    assert [(r["input"], r["output"]) for r in records] == [
        ("Alex:", "Morning everyone, who is up for a quest today? Bring snacks."),
        (
            "Alex: Morning everyone, who is up for a quest today? Bring snacks.\nSam:",
            "Alex I am, as long as there is no dragon this time.",
        ),
        (
            "Alex: Morning everyone, who is up for a quest today? Bring snacks.\n"
            "Sam: Alex I am, as long as there is no dragon this time.\n"
            "robin: No promises about the dragon. But I found a map to the old mine!\nAlex:",
            "The old mine it is. Meet at the gate at noon.",
        ),
        (
            "Alex: Morning everyone, who is up for a quest today? Bring snacks.\n"
            "Sam: Alex I am, as long as there is no dragon this time.\n"
            "robin: No promises about the dragon. But I found a map to the old mine!\n"
            "Alex: The old mine it is. Meet at the gate at noon.\nSam:",
            "Fine, but I am not going in first.",
        ),
        ("Alex:", "We made it out of the mine, barely. Sam, you owe me a new shield."),
        (
            "Alex: We made it out of the mine, barely. Sam, you owe me a new shield.\nSam:",
            "I told you there would be a dragon. I always say there will be a dragon.",
        ),
    ]
    assert report.source == "discord"
    assert report.dropped == {
        "system_message": 1,
        "bot": 1,
        "attachment_only": 1,
        "ping_only": 1,
        "non_response": 1,
        "ender": 1,
        "low_quality": 2,
    }
    assert report.speakers == {"Alex": 3, "Sam": 3, "robin": 2}


def test_discord_gap_splits_and_same_author_merges(tmp_path):
    p = export(tmp_path, [
        msg(1, "Alex", "first part of a long thought here", 0),
        msg(2, "Alex", "and the second part of it", 1),
        msg(3, "Sam", "I see what you mean, Alex, quite so", 2),
        msg(4, "Sam", "much later, a new conversation starts", 30),
        msg(5, "Alex", "indeed it does, and it goes on and on", 31),
    ])
    got, _ = discord_turns(p, filter_low_quality=False)
    assert got == [
        ("Alex", "first part of a long thought here and the second part of it"),
        ("Sam", "I see what you mean, Alex, quite so"),
        None,
        ("Sam", "much later, a new conversation starts"),
        ("Alex", "indeed it does, and it goes on and on"),
        None,
    ]
    got, _ = discord_turns(p, gap_minutes=60, filter_low_quality=False)
    assert got.count(None) == 1


def test_a_wall_of_one_authors_messages_is_merged_in_parts_that_fit_a_sample(tmp_path):
    from extensions.dialogue_lora.sources.discord import MERGE_CHARS

    wall = [msg(i, "Alex", f"message number {i:02d} of a very long rant about trains", 0) for i in range(1, 31)]
    p = export(tmp_path, [msg(0, "Sam", "so what do you think?", 0), *wall, msg(31, "Sam", "that was a lot of trains", 1)])
    got, _ = discord_turns(p, filter_low_quality=False)
    alex = [t[1] for t in got if t and t[0] == "Alex"]
    assert len(alex) == 3 and all(len(t) <= MERGE_CHARS for t in alex)
    # every message once, in order, split only between messages
    assert " ".join(alex) == " ".join(m["content"] for m in wall)
    assert got[0] == ("Sam", "so what do you think?") and got[-2:] == [("Sam", "that was a lot of trains"), None]


def test_discord_filters_are_switchable(tmp_path):
    p = export(tmp_path, [msg(1, "Alex", "lol"), msg(2, "Sam", "gtg"), msg(3, "Alex", "hey")])
    got, dropped = discord_turns(p)
    assert got == [] and dropped == Counter(non_response=1, ender=1, low_quality=1)
    got, dropped = discord_turns(p, filter_non_responses=False, filter_enders=False, filter_low_quality=False)
    assert got == [("Alex", "lol"), ("Sam", "gtg"), ("Alex", "hey"), None] and not dropped


def test_discord_low_quality_needs_both_few_and_short(tmp_path):
    long = "this message is comfortably longer than thirty characters"
    few_but_long = export(tmp_path, [msg(1, "Alex", long), msg(2, "Sam", "ok then")], "a.json")
    assert discord_turns(few_but_long)[0] == [("Alex", long), ("Sam", "ok then"), None]
    many_short = export(tmp_path, [msg(i, "Alex" if i % 2 else "Sam", f"hi {i}") for i in range(6)], "b.json")
    assert len(discord_turns(many_short)[0]) == 7


def test_discord_bots_types_attachments_pings(tmp_path):
    p = export(tmp_path, [
        msg(1, "Bot", "beep boop I am a bot with a long message", who={"isBot": True}),
        msg(2, "Alex", "", type="GuildMemberJoin"),
        msg(3, "Alex", "", attachments=[{"fileName": "cat.png"}]),
        msg(4, "Alex", ""),
        msg(5, "Alex", "@Sam @everyone", mentions=[{"id": "1", "name": "sam", "nickname": "Sam"}]),
        msg(6, "Alex", "hello @Sam, mail me at a@b.c", mentions=[{"id": "1", "name": "sam", "nickname": "Sam"}]),
    ])
    got, dropped = discord_turns(p, filter_low_quality=False)
    assert got == [("Alex", "hello Sam, mail me at a@b.c"), None]
    assert dropped == Counter(bot=1, system_message=1, attachment_only=1, empty=1, ping_only=1)


def test_discord_naive_and_offset_timestamps_mix(tmp_path):
    a = msg(1, "Alex", "a long enough message to keep around", 0)
    b = msg(2, "Sam", "another long enough message to keep", 0)
    a["timestamp"] = "2024-05-01T10:00:00"
    b["timestamp"] = "2024-05-01T12:00:00.1234567+02:00"  # the same instant as 10:00 UTC, 7 digits
    got, _ = discord_turns(export(tmp_path, [a, b]), filter_low_quality=False)
    assert got == [("Alex", "a long enough message to keep around"), ("Sam", "another long enough message to keep"), None]


def test_discord_nickname_else_name(tmp_path):
    p = export(tmp_path, [msg(1, "Alex", "a message long enough to count here", who={"nickname": None})])
    assert discord_turns(p, filter_low_quality=False)[0] == [("alex", "a message long enough to count here"), None]


def test_discord_nicknames_lose_colons_and_commas(tmp_path):
    # a colon would end the cue early (`Sam: the Brave:`), and --name splits at commas
    p = export(tmp_path, [msg(1, "Sam: the Brave", "a message long enough to count here"),
                          msg(2, "Robin, Esq.", "another message long enough to count")])
    got = discord_turns(p, filter_low_quality=False)[0]
    assert [t[0] for t in got if t] == ["Sam the Brave", "Robin Esq."]
    out = tmp_path / "o.json"
    prepare(PrepareConfig(names=["Sam the Brave"], txtfilename=str(p), jsonfilename=str(out), filter_low_quality=False))
    assert json.loads(out.read_text(encoding="utf-8"))[0]["input"] == "Sam the Brave:"


@pytest.mark.parametrize("text", ["lol", "LOL!!", "lmaooo", "gg", "hahaha", "xD"])
def test_non_responses(text):
    assert is_non_response(text)


@pytest.mark.parametrize("text", ["lol that was great", "good game everyone", "no"])
def test_not_non_responses(text):
    assert not is_non_response(text)


@pytest.mark.parametrize("text", ["gtg", "ok gtg", "Going to sleep.", "cya later!", "gn all", "bye guys"])
def test_enders(text):
    assert is_ender(text)


@pytest.mark.parametrize("text", ["I never sleep", "goodbye to the old days, hello future"])
def test_not_enders(text):
    assert not is_ender(text)


def test_clean_content_mentions():
    assert clean_content("@Big Al hi", ["Big Al"]) == ("Big Al hi", False)
    assert clean_content("<@123> hi", []) == (" hi", False)
    assert clean_content("@Sam", ["Sam"]) == ("Sam", True)
    assert clean_content("@here", []) == ("here", True)


def test_messages_without_a_word_are_non_responses():
    assert all(is_non_response(t) for t in ["😂😂😂", "...", "??", ":pepe_cry: :kekw:"])
    assert not any(is_non_response(t) for t in ["<3", "at 10:30 then", "no"])


def test_discord_raw_markup_quotes_and_links(tmp_path):
    """An export made with markdown rendering off keeps Discord's markup; a quote is someone else's words;
    a link alone is no line to learn."""
    alex = {"id": "11", "name": "alex", "nickname": "Alex"}
    p = export(tmp_path, [
        msg(1, "Sam", "what's up with <@11> lately <:pepe:123456789012345678>, since <t:1714557600:d>?",
            mentions=[alex]),
        msg(2, "Alex", "> what's up with you lately\nnothing much, honestly, just tired", 1),
        msg(3, "Alex", "https://www.youtube.com/watch?v=dQw4w9WgXcQ", 2),
        msg(4, "Sam", "<a:dance:1234567890> <:kek:42>", 3),
        msg(5, "Sam", "ask <@99> about it then, they know more", 4),
    ])
    got, dropped = discord_turns(p, filter_low_quality=False)
    assert got == [("Sam", "what's up with Alex lately :pepe:, since 2024-05-01?"),
                   ("Alex", "nothing much, honestly, just tired"), ("Sam", "ask about it then, they know more"), None]
    assert dropped == {"attachment_only": 1, "non_response": 1}
    from extensions.dialogue_lora.sources.discord import rendered

    # code is code (a Python prompt, a build log), but a `>>> ` quotes the rest, code blocks too; a fence
    # never closed is text
    code = "like this:\n```py\n>>> round(2.675, 2)\n```\nfloats are odd\n> said someone\nmine"
    assert rendered(code, {}) == "like this:\n```py\n>>> round(2.675, 2)\n```\nfloats are odd\nmine"
    assert rendered(">>> Try this:\n```\nx = 1\n```\nthen print it", {}) == ""
    assert rendered("text ```\n> build ok\nmine", {}) == "text ```\nmine"
    assert is_non_response(":5Head: :pepe_cry:") and not is_non_response("at 10:30:45")


def test_discord_folder_of_exports(tmp_path):
    folder = tmp_path / "exports"
    folder.mkdir()
    export(folder, [msg(1, "Alex", "a long enough message in channel one")], "1.json")
    export(folder, [msg(1, "Sam", "a long enough message in channel two")], "2.json")
    (folder / "notes.txt").write_text("ignored", encoding="utf-8")
    got, _ = discord_turns(folder, filter_low_quality=False)
    assert got == [("Alex", "a long enough message in channel one"), None, ("Sam", "a long enough message in channel two"), None]
    assert detect_source(folder) == "discord"
    assert scan_speakers(folder) == {"Alex": 1, "Sam": 1}


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"messages": [', "malformed JSON"),
        ('{"guild": {}}', "not a DiscordChatExporter"),
        ("[1, 2]", "not a DiscordChatExporter"),
        ('{"messages": [{"type": "Default", "content": "hi"}]}', "no author"),
        ('{"messages": [{"id": "9123", "type": "Default", "content": "hi"}]}', r"message 1 \(id 9123\) has no author"),
        ('{"messages": [{"author": {"name": "a"}, "content": "hi", "timestamp": "yesterday"}]}', "bad timestamp"),
    ],
)
def test_discord_bad_exports(tmp_path, content, message):
    p = tmp_path / "bad.json"
    p.write_text(content, encoding="utf-8")
    with pytest.raises(UserError, match=message):
        list(iter_discord_turns(p))


def test_discord_empty_folder(tmp_path):
    with pytest.raises(UserError, match="folder holds no chat exports"):
        list(iter_discord_turns(tmp_path))


def test_discord_folder_with_a_broken_link_says_so(tmp_path):
    export(tmp_path, [msg(1, "Alex", "hello there")])
    (tmp_path / "general.json").symlink_to(tmp_path / "moved-away.json")
    with pytest.raises(UserError, match=r"general\.json is a link to nothing \(or a link loop\); fix or remove it"):
        list(iter_discord_turns(tmp_path))


# ------------------------------------------------------------------------------------------ CSV


def csv_turns(path, **opts):
    dropped = Counter()
    return [None if t is None else (t.speaker, t.text) for t in iter_csv_turns(path, CsvOptions(**opts), dropped=dropped)], dropped


def test_csv_example_golden():
    got, dropped = csv_turns(CSV)
    assert got == [
        ("MaleNord", "Welcome to the Bannered Mare."),
        None,
        ("Player", "Heard any rumors lately?"),
        ("MaleNord", "They say the Jarl is worried about dragons. Can't say I blame him."),  # rows 1+2 of one response
        None,
        ("Player", "Heard any rumors lately?"),
        ("FemaleEvenToned", "Rumors? I just pour the mead."),
        None,
        ("Player", "I'd like a room."),
        ("FemaleEvenToned", "Ten gold for the night. (smiles)"),
        None,
    ]
    assert dropped == Counter(no_text=1)


def test_csv_rows_without_text_are_counted_for_their_speaker(tmp_path):
    """The report said `Monica's own: none` for an empty row of hers, and a speaker whose every row was empty
    was 'not found'."""
    path = tmp_path / "nt.csv"
    path.write_text("Speaker,Line\nMonica,Hi there.\nJoey,\nMonica,\nJoey,Yo.\nRachel,\n", encoding="utf-8")
    out = tmp_path / "o.json"
    report = prepare(PrepareConfig(names=["Monica"], txtfilename=str(path), jsonfilename=str(out)), write=False)
    assert report.dropped == {"no_text": 3} and report.dropped_of == {"Monica": {"no_text": 1}}
    with pytest.raises(UserError, match=r"no samples for 'Rachel' .*their one line was dropped \(no_text 1\)"):
        prepare(PrepareConfig(names=["Rachel"], txtfilename=str(path), jsonfilename=str(out)), write=False)


def test_csv_prefixes(tmp_path):
    got, _ = csv_turns(CSV, emotion_prefix=True)
    assert got[0] == ("MaleNord", "[Happy] Welcome to the Bannered Mare.")
    out = tmp_path / "p.json"
    prepare(PrepareConfig(names=["MaleNord"], txtfilename=str(CSV), jsonfilename=str(out), format="messages",
                          csv_name_prefix=True, csv_emotion_prefix=True))
    assert json.loads(out.read_text(encoding="utf-8"))[0]["messages"][1]["content"] == (
        "MaleNord: [Happy] Welcome to the Bannered Mare.")
    # a script's earlier rows in the context keep their one name (it was doubled: `Player: Player: ...`)
    script = tmp_path / "g2.csv"
    script.write_text("Speaker,Line\nPlayer,Hello there.\nMaleNord,Welcome.\nPlayer,Got rooms?\nMaleNord,Ten septims.\n",
                      encoding="utf-8")
    prepare(PrepareConfig(names=["MaleNord"], txtfilename=str(script), jsonfilename=str(out), format="messages",
                          csv_name_prefix=True))
    last = json.loads(out.read_text(encoding="utf-8"))[-1]["messages"]
    assert [m["content"] for m in last] == ["Player: Hello there.\nMaleNord: Welcome.\nPlayer: Got rooms?",
                                            "MaleNord: Ten septims."]


def test_csv_prepare_alpaca(tmp_path):
    out = tmp_path / "c.json"
    report = prepare(PrepareConfig(
        names=["malenord"], txtfilename=str(CSV), jsonfilename=str(out), format="alpaca",
        instruction="You are a Skyrim NPC ({name}). Reply to the player.",
    ))
    assert json.loads(out.read_text(encoding="utf-8")) == [
        {
            "instruction": "You are a Skyrim NPC (MaleNord). Reply to the player.",
            "input": "MaleNord:",
            "output": "Welcome to the Bannered Mare.",
            "name": "MaleNord",
            "source": "skyrim_dialogue.csv:2",
        },
        {
            "instruction": "You are a Skyrim NPC (MaleNord). Reply to the player.",
            "input": "Player: Heard any rumors lately?\nMaleNord:",
            "output": "They say the Jarl is worried about dragons. Can't say I blame him.",
            "name": "MaleNord",
            "source": "skyrim_dialogue.csv:3",
        },
    ]
    assert report.source == "csv"


def test_csv_all_names_leaves_out_the_player(tmp_path):
    out = tmp_path / "c.json"
    prepare(PrepareConfig(names=["*"], txtfilename=str(CSV), jsonfilename=str(out)))
    assert {r["name"] for r in json.loads(out.read_text(encoding="utf-8"))} == {"MaleNord", "FemaleEvenToned"}


def test_csv_simple_columns(tmp_path):
    p = tmp_path / "lines.csv"
    p.write_text("who,line\nGuard,Halt!\nGuard,\"Move along, citizen.\"\n", encoding="utf-8")
    got, _ = csv_turns(p, speaker_column="who", text_column="line")
    # neither a prompt nor a group column: a script as a table, its rows one running dialogue
    assert got == [("Guard", "Halt!"), ("Guard", "Move along, citizen.")]


def test_csv_usual_column_names_are_found_and_a_script_keeps_its_context(tmp_path):
    p = tmp_path / "script.csv"
    p.write_text("Speaker,Line\nAlice,Hi Bob.\nBob,Hello Alice.\nAlice,How are you?\nBob,Fine.\n", encoding="utf-8")
    got, _ = csv_turns(p)
    assert got == [("Alice", "Hi Bob."), ("Bob", "Hello Alice."), ("Alice", "How are you?"), ("Bob", "Fine.")]
    out = tmp_path / "o.json"
    prepare(PrepareConfig(names=["Bob"], txtfilename=str(p), jsonfilename=str(out)))
    assert json.loads(out.read_text(encoding="utf-8"))[1]["input"] == (
        "Alice: Hi Bob.\nBob: Hello Alice.\nAlice: How are you?\nBob:")
    p.write_text("character,dialogue,Topic FormId\nGuard,Halt!,1\nGuard,Move along.,2\n", encoding="utf-8")
    got, _ = csv_turns(p)  # a group column: a game's responses, each on its own
    assert got == [("Guard", "Halt!"), None, ("Guard", "Move along."), None]
    # `Line` is as often the row's number: `Dialogue` wins; a row without a speaker is narration; a new
    # dialogue id starts a new conversation
    p.write_text("Line,Character,Dialogue,Dialogue_ID\n1,,INT. CAFE - DAY,0\n2,Alice,Hi Bob!,0\n3,Bob,Hello.,0\n"
                 "4,Bob,Later.,1\n", encoding="utf-8")
    got, _ = csv_turns(p)
    assert got == [(None, "INT. CAFE - DAY"), ("Alice", "Hi Bob!"), ("Bob", "Hello."), None, ("Bob", "Later.")]
    p.write_text("voice type,dialogue 1 - english\nMaleNord,Welcome.\nFemaleNord,Watch yourself.\n", encoding="utf-8")
    got, _ = csv_turns(p)  # the game export's voice lines in any casing: each on its own
    assert got == [("MaleNord", "Welcome."), None, ("FemaleNord", "Watch yourself."), None]
    p.write_text('Date,User,Message\n2024-01-15 21:00:00,"Alex","Hey"\n2024-01-15 21:01:00,"Mira","Hi"\n',
                 encoding="utf-8")  # KakaoTalk's export on a Mac: a chat app's sender column
    assert csv_turns(p)[0] == [("Alex", "Hey"), ("Mira", "Hi")]


def test_csv_unknown_column(tmp_path):
    p = tmp_path / "lines.csv"
    p.write_text("who,line\nGuard,Halt!\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"no column 'Lines' .*--csv_text_column.*columns in the file: 'who', 'line'"):
        csv_turns(p, speaker_column="who", text_column="Lines")
    p.write_text("person,words\nGuard,Halt!\n", encoding="utf-8")
    with pytest.raises(UserError, match="--csv_speaker_column.*--csv_text_column.*columns in the file: 'person', 'words'"):
        csv_turns(p)  # neither the defaults nor a usual name (Speaker, Line, ...)
    p.write_text("who,line\nGuard,Halt!\n", encoding="utf-8")
    with pytest.raises(UserError, match="--csv_emotion_column"):
        csv_turns(p, speaker_column="who", text_column="line", emotion_column="Mood")


def test_csv_malformed(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text('Voice Type,Dialogue 1 - English\nGuard,"unterminated "quote" here\n', encoding="utf-8")
    with pytest.raises(UserError, match="malformed CSV"):
        csv_turns(p)
    # a quote never closed is found where the file ends; the error names the line it opened on
    rows = ["Speaker,Line", 'Bob,"He said hi, then left'] + [f"Alice,line {i}" for i in range(500)] + ["Alice,x"]
    p.write_text("\n".join(rows) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"bad\.csv:2: malformed CSV .*a quote opened here is never closed"):
        csv_turns(p)


def test_tsv_whose_lines_start_with_quotes_reads_them_as_text(tmp_path):
    p = tmp_path / "lines.tsv"
    p.write_text('Speaker\tLine\nBob\t"Fine," he said. "Really."\nAlice\tok\n', encoding="utf-8")
    report = prepare(PrepareConfig(names=["Bob"], txtfilename=str(p), jsonfilename=str(tmp_path / "o.json")))
    assert json.loads((tmp_path / "o.json").read_text(encoding="utf-8"))[0]["output"] == '"Fine," he said. "Really."'
    assert any("quotes are read as text" in n for n in report.notes)
    # Excel's "Unicode Text" quotes a text holding a tab or a newline: read as quoted, no note
    p.write_text('Speaker\tLine\nBob\t"a tab\there, and\na new line"\nAlice\tok\n', encoding="utf-8")
    report = prepare(PrepareConfig(names=["Bob"], txtfilename=str(p), jsonfilename=str(tmp_path / "o2.json")))
    assert json.loads((tmp_path / "o2.json").read_text(encoding="utf-8"))[0]["output"] == "a tab here, and a new line"
    assert not report.notes


# ------------------------------------------------------------------------------------------ Telegram


def test_telegram_example_every_rule(tmp_path):
    out = tmp_path / "t.json"
    report = prepare(PrepareConfig(names=["mira"], txtfilename=str(TELEGRAM), jsonfilename=str(out)))
    assert report.layouts == {"telegram_export.json": "telegram"} and "(telegram)" in report.format()
    # a join, a forwarded message, a gif sent through a bot, a photo without a caption, a `lol`
    assert report.dropped == {"system_message": 1, "forwarded": 1, "bot": 1, "attachment_only": 1, "non_response": 1}
    assert report.speakers == {"Mira": 4, "Tom": 2, "Deleted Account": 1}  # `Tom 🐉`: the emoji decorates
    records = json.loads(out.read_text(encoding="utf-8"))
    assert [r["output"] for r in records] == [
        "Who is up for the raid tonight?", "Then bring spare boots. Dragons love boots.",
        "Of course you did. Meet at the gate at eight, everyone.", "Two shields and no sword? Bold plan."]
    # entities joined into the text, the mention's @ gone, one author's run of messages one turn
    assert ("Tom: I am, mira_k, as long as there is no dragon this time. Last time I lost my boots.\n"
            "Mira:") in records[1]["input"]
    assert "Dragon sighted" not in records[2]["input"] and "Deleted Account: I once fought" in records[2]["input"]
    assert records[0]["source"] == "telegram_export.json:2"
    assert scan_speakers(TELEGRAM) == {"Mira": 5, "Tom": 4, "Deleted Account": 1}  # before the filters


def test_telegram_account_export_keeps_its_chats_apart(tmp_path):
    def chat(name, *lines):
        return {"name": name, "type": "personal_chat", "id": len(name), "messages": [
            {"id": i, "type": "message", "date": f"2024-03-02T10:0{i}:00", "from": who, "from_id": who.lower(),
             "text": text} for i, (who, text) in enumerate(lines, 1)]}
    data = {"about": "Here is the data you requested. Remember: Telegram is ad free.", "contacts": {"list": []},
            "chats": {"list": [chat("Tom", ("Tom", "Did you see the dragon last night?"),
                                    ("Mira", "I saw its tail, and that was plenty for me.")),
                               chat("Ann", ("Ann", "Are you coming to the market tomorrow?"),
                                    ("Mira", "Only if the dragon stays away from it."))]},
            "left_chats": {"list": [chat("Old guild", ("Mira", "Goodbye everyone, it was a fine run."))]}}
    saved = chat("", ("Mira", "buy milk"), ("Mira", "call the smith about the boots"))
    data["chats"]["list"].append(dict(saved, type="saved_messages"))  # notes to herself: no dialogue
    path = tmp_path / "result.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    out = tmp_path / "o.json"
    report = prepare(PrepareConfig(names=["Mira"], txtfilename=str(path), jsonfilename=str(out),
                                   filter_low_quality=False))
    assert "result.json: your Saved Messages (2 notes to yourself) left out: no dialogue" in report.format()
    records = json.loads(out.read_text(encoding="utf-8"))
    assert [(r["input"], r["source"]) for r in records] == [
        ("Tom: Did you see the dragon last night?\nMira:", "result.json [Tom]:2"),
        ("Ann: Are you coming to the market tomorrow?\nMira:", "result.json [Ann]:2"),  # not Tom's chat as context
        ("Mira:", "result.json [Old guild]:1")]
    from extensions.dialogue_lora.ui import _is_dialogue

    assert _is_dialogue(path)  # in the tab's list of inputs, though its messages come after the contacts


def test_a_telegram_message_forwarded_from_a_deleted_account_is_still_forwarded(tmp_path):
    path = tmp_path / "result.json"
    path.write_text(json.dumps({"name": "x", "type": "personal_chat", "id": 1, "messages": [
        {"id": 1, "type": "message", "date": "2024-01-01T10:00:00", "from": "Ann", "from_id": "user1",
         "text": "Did you hear about the meeting on Friday?"},
        {"id": 2, "type": "message", "date": "2024-01-01T10:01:00", "from": "Bob", "from_id": "user2",
         "forwarded_from": None, "text": "The meeting is moved to Friday at noon."},
        {"id": 3, "type": "message", "date": "2024-01-01T10:02:00", "from": "Bob", "from_id": "user2",
         "text": "That is what he wrote before he left."}]}), encoding="utf-8")
    out = tmp_path / "o.json"
    report = prepare(PrepareConfig(names=["Bob"], txtfilename=str(path), jsonfilename=str(out), filter_low_quality=False))
    assert report.dropped == {"forwarded": 1}
    assert [r["output"] for r in json.loads(out.read_text(encoding="utf-8"))] == ["That is what he wrote before he left."]


@pytest.mark.parametrize("content, message", [
    ({"about": "Telegram export", "chats": {"list": []}}, "a Telegram export with no chat in it"),
    ({"name": "x", "type": "personal_chat", "id": 1, "messages": [
        {"id": 1, "type": "message", "date": "2024-01-01T10:00:00", "from": "Bob", "text": "hi"},
        {"id": 7, "type": "message", "date": "2024-01-01T10:00:00", "from": "Bob", "text": 5}]},
     r"message 2 \(id 7\): content is not text"),
    ({"name": "x", "type": "personal_chat", "id": 1, "messages": [
        {"id": 1, "type": "message", "date": "yesterday", "from": "Bob", "text": "hi there"}]}, "bad timestamp"),
])
def test_telegram_bad_exports(tmp_path, content, message):
    path = tmp_path / "result.json"
    path.write_text(json.dumps(content), encoding="utf-8")
    with pytest.raises(UserError, match=message):
        prepare(PrepareConfig(names=["Bob"], txtfilename=str(path), jsonfilename=str(tmp_path / "o.json")))


def test_detect_source(tmp_path):
    assert detect_source(DISCORD) == "discord"
    assert detect_source(TELEGRAM) == "discord"  # the chat-export reader, which tells the two apart
    assert detect_source(CSV) == "csv"
    assert detect_source(ROOT / "examples" / "dataset.txt") == "text"
    p = tmp_path / "export.txt"
    p.write_text("Voice Type,Dialogue 1 - English\nGuard,Halt!\n", encoding="utf-8")
    assert detect_source(p, ("Voice Type", "Dialogue 1 - English")) == "csv"
    p.write_text("Speaker;Line\nGuard;Halt!\n", encoding="utf-8")  # the usual names, whatever the file's name
    assert detect_source(p) == "csv"
    p.write_text("Speaker: Line, and more\nGuard: Halt!\n", encoding="utf-8")  # dialogue, not a header
    assert detect_source(p) == "text"


def test_discord_user_whose_messages_were_all_filtered(tmp_path):
    p = export(tmp_path, [msg(1, "Alex", "What a day at work, honestly"), msg(2, "Quiet", "lol"),
                          msg(3, "Alex", "Did you see the match yesterday?"), msg(4, "Quiet", "gg"),
                          msg(5, "Alex", "It went to overtime twice"), msg(6, "Quiet", "ok"),
                          msg(7, "Alex", "I could not believe the ending")])
    with pytest.raises(UserError, match="no samples for 'Quiet'.*all 3 of their lines were dropped "
                                        "\\(non_response 3; --keep_non_responses keeps them\\)"):
        prepare(PrepareConfig(names=["Quiet"], txtfilename=str(p), jsonfilename=str(tmp_path / "o.json")))
    out = tmp_path / "o.json"
    prepare(PrepareConfig(names=["Quiet"], txtfilename=str(p), jsonfilename=str(out), filter_non_responses=False))
    assert [r["output"] for r in json.loads(out.read_text(encoding="utf-8"))] == ["lol", "gg", "ok"]


def test_discord_undecodable_bytes_are_counted(tmp_path):
    p = tmp_path / "chan.json"
    body = json.dumps({"messages": [msg(1, "Alex", "caf@@ is open today, come along")]}).encode()
    p.write_bytes(body.replace(b"@@", b"\xff\xe9"))
    report = prepare(PrepareConfig(names=["Alex"], txtfilename=str(p), jsonfilename=str(tmp_path / "o.json"),
                                   filter_low_quality=False))
    assert report.replaced_bytes == 2
    assert json.loads((tmp_path / "o.json").read_text(encoding="utf-8"))[0]["output"] == "caf\ufffd\ufffd is open today, come along"


def test_csv_source_is_the_line_a_row_starts_on(tmp_path):
    p = tmp_path / "c.csv"
    p.write_text('Voice Type,Dialogue 1 - English\nMaleNord,"Two\nlines"\nMaleNord,One line\n', encoding="utf-8")
    got = list(iter_csv_turns(p, CsvOptions(prompt_column="", emotion_column="", group_column="", order_column="")))
    assert [(t.text, t.line) for t in got if t] == [("Two lines", 2), ("One line", 4)]


def test_discord_asking_for_a_bot_says_bots_are_dropped(tmp_path):
    with pytest.raises(UserError, match="no samples for 'questbot'.*their one line was dropped "
                                        "\\(bot 1: a bot's messages are never samples\\)"):
        prepare(PrepareConfig(names=["questbot"], txtfilename=str(DISCORD), jsonfilename=str(tmp_path / "o.json")))


def test_discord_asking_for_a_username_names_the_nickname(tmp_path):
    with pytest.raises(UserError, match="name 'sam_the_brave' not found.*server nickname: -n 'Sam'"):
        prepare(PrepareConfig(names=["sam_the_brave"], txtfilename=str(DISCORD),
                              jsonfilename=str(tmp_path / "o.json")))


def test_csv_emotion_prefix_without_an_emotion_column_is_refused(tmp_path):
    p = tmp_path / "s.csv"
    p.write_text("Voice Type,Dialogue 1 - English\nGuard,Halt there!\n", encoding="utf-8")
    with pytest.raises(UserError, match="--csv_emotion_prefix needs an emotion column, and there is no 'Emotion'"):
        csv_turns(p, emotion_prefix=True)
    with pytest.raises(UserError, match="--csv_emotion_prefix needs an emotion column \\(--csv_emotion_column is ''\\)"):
        csv_turns(CSV, emotion_prefix=True, emotion_column="")
    assert csv_turns(p)[0] == [("Guard", "Halt there!"), None]  # without the prefix the column is optional


def test_csv_semicolon_tab_and_excel_sep_line(tmp_path):
    semi = tmp_path / "semi.csv"  # Excel in a comma-decimal locale, with its BOM and CRLF
    semi.write_bytes('\ufeffwho;line\r\nGuard;"Halt; who goes there, friend?"\r\n'.encode("utf-8"))
    assert csv_turns(semi, speaker_column="who", text_column="line")[0] == [("Guard", "Halt; who goes there, friend?")]
    sep = tmp_path / "sep.csv"
    sep.write_text("sep=;\nwho;line\nGuard;Halt, you.\nGuard;\"bad \"quote\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"sep\.csv:4: malformed CSV"):  # lines counted from the sep= line
        csv_turns(sep, speaker_column="who", text_column="line")
    tsv = tmp_path / "lines.tsv"
    tsv.write_text("Voice Type\tDialogue 1 - English\nGuard\tHalt, you.\n", encoding="utf-8")
    assert detect_source(tsv) == "csv"
    assert csv_turns(tsv)[0] == [("Guard", "Halt, you."), None]
    named = tmp_path / "export.txt"
    named.write_text("Voice Type;Dialogue 1 - English\nGuard;Halt!\n", encoding="utf-8")
    assert detect_source(named, ("Voice Type", "Dialogue 1 - English")) == "csv"


def test_csv_rows_that_do_not_fit_the_header_are_errors(tmp_path):
    p = tmp_path / "lines.csv"
    p.write_text("who,line\nLydia,As you wish.\nLydia,Well, I never expected that.\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"lines\.csv:3: 3 fields where the header has 2 \(a comma inside a text"):
        csv_turns(p, speaker_column="who", text_column="line")
    p.write_text("who;line\nLydia;As you wish.\nLydia;Well; I never.\n", encoding="utf-8")  # Excel's own separator
    with pytest.raises(UserError, match=r"lines\.csv:3: 3 fields where the header has 2 \(a semicolon inside a text"):
        csv_turns(p, speaker_column="who", text_column="line")
    p.write_text("who,line\nLydia,As you wish.,\n", encoding="utf-8")  # a trailing empty field is harmless
    assert csv_turns(p, speaker_column="who", text_column="line")[0] == [("Lydia", "As you wish.")]
    p.write_text("who,line,line\nLydia,a,b\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"column 'line' \(--csv_text_column\) appears more than once.*'who', 'line'$"):
        csv_turns(p, speaker_column="who", text_column="line")
    p.write_text("Voice Type,Dialogue 1 - English,Topic FormId,Response Num\nGuard,One.,7,1\nGuard,Two.,7,2nd\n",
                 encoding="utf-8")
    with pytest.raises(UserError, match=r"lines\.csv:3: '2nd' in column 'Response Num' \(--csv_order_column\) is not a number"):
        csv_turns(p)
    p.write_text("Voice Type,Dialogue 1 - English,Topic FormId,Response Num\nGuard,One.,7,\nGuard,Two.,7,\n",
                 encoding="utf-8")
    assert csv_turns(p)[0] == [("Guard", "One. Two."), None]  # no order numbers: file order


def test_csv_name_prefix_only_where_no_cue_names_the_speaker(tmp_path):
    with pytest.raises(UserError, match=r"--csv_name_prefix: a rounds input ends with the speaker's cue"):
        PrepareConfig(names=["MaleNord"], txtfilename=str(CSV), csv_name_prefix=True)
    PrepareConfig(names=["MaleNord"], txtfilename=str(CSV), csv_name_prefix=True, format="sharegpt")
    with pytest.raises(UserError, match=r"--instruction: \{nam\} is not filled in"):
        PrepareConfig(names=["Bob"], txtfilename="x.txt", format="alpaca", instruction="Speak as {nam}.")


def test_discord_two_accounts_with_one_name_are_noted(tmp_path):
    p = export(tmp_path, [
        msg(1, "Sam", "I think we should go to the lake this weekend", who={"id": "11"}),
        msg(2, "Alex", "Sounds good to me, what time works for you?"),
        msg(3, "Sam", "Count me in as well, I will bring the snacks", who={"id": "22", "nickname": None, "name": "sam"}),
    ])
    report = prepare(PrepareConfig(names=["Sam"], txtfilename=str(p), jsonfilename=str(tmp_path / "o.json"),
                                   filter_low_quality=False))
    assert report.notes == ["2 accounts (ids 11, 22) go by 'Sam': their messages are one speaker here"]
    assert "note: 2 accounts (ids 11, 22) go by 'Sam'" in report.format()
    # one account under two names (a nickname on each server) is two speakers, and said so
    two = tmp_path / "servers"
    two.mkdir()
    export(two, [msg(1, "Sam", "I think we should go to the lake this weekend", who={"id": "12"})], "a.json")
    export(two, [msg(1, "Sammy", "Count me in as well, I will bring the snacks", who={"id": "12"})], "b.json")
    assert prepare(PrepareConfig(names=["Sam"], txtfilename=str(two), jsonfilename=str(tmp_path / "t.json"),
                                 filter_low_quality=False)).notes == [
        "one account (id 12) goes by 'Sam' and 'Sammy': they are two speakers here (give -n Sam,Sammy for both, "
        "as one adapter's characters)"]
    one = export(tmp_path, [msg(1, "Sam", "hello there everyone"), msg(2, "Sam", "and again")], name="one.json")
    assert prepare(PrepareConfig(names=["Sam"], txtfilename=str(one), jsonfilename=str(tmp_path / "p.json"),
                                 filter_low_quality=False)).notes == []


# --- SillyTavern chats ---------------------------------------------------------------------------------


def test_sillytavern_chat_golden(tmp_path):
    out = tmp_path / "o.json"
    report = prepare(PrepareConfig(names=["Seraphina"], txtfilename=str(SILLYTAVERN), jsonfilename=str(out)))
    assert detect_source(SILLYTAVERN) == "discord"
    assert report.layouts == {"sillytavern_chat.jsonl": "sillytavern"} and "11 messages" in report.format()
    # hidden and narrator messages are system messages; `lol` a non-response; the user's two lines merge
    assert report.dropped == {"system_message": 2, "non_response": 1}
    records = json.loads(out.read_text(encoding="utf-8"))
    assert [r["source"] for r in records] == [f"sillytavern_chat.jsonl:{n}" for n in (2, 4, 8, 12)]
    assert records[0] == {"input": "Seraphina:", "name": "Seraphina", "source": "sillytavern_chat.jsonl:2",
                          "output": "*Seraphina smiles warmly* Welcome to my glade, traveller. You look tired. "
                                    "Sit, rest a while."}  # paragraphs joined into one line
    assert records[1]["output"].startswith("You are in the Eldoria forest.")  # the swipe kept, not the first
    assert records[2]["input"].endswith("Alex: What is this place, really? It feels old.\nSeraphina:")
    # a break of a night is no new conversation: the context runs on
    assert records[3]["input"].startswith("Alex: Thank you. Where am I?\nSeraphina: You are in the Eldoria forest.")
    stripped = prepare(PrepareConfig(names=["Seraphina"], txtfilename=str(SILLYTAVERN), jsonfilename=str(out),
                                     strip_actions=True))
    assert stripped.samples_written == 4
    assert json.loads(out.read_text(encoding="utf-8"))[3]["output"] == (
        "Guardians do not sleep, little one. But I rested, as the trees do.")


def test_sillytavern_lines_as_universal_newlines_read_them(tmp_path):
    """Windows' and old Macs' line ends are line ends; a U+2028 inside a message (JSON allows it raw) is not."""
    chat = tmp_path / "c.jsonl"
    lines = ['{"user_name": "Alex", "character_name": "Sera"}',
             '{"name": "Alex", "is_user": true, "mes": "Hello there, who are you?"}',
             '{"name": "Sera", "is_user": false, "mes": "A guardian\u2028of this forest, traveller.", "swipes": ["x"]}']
    chat.write_text("\r\n".join(lines[:2]) + "\r" + lines[2] + "\n", encoding="utf-8")
    out = tmp_path / "o.json"
    prepare(PrepareConfig(names=["Sera"], txtfilename=str(chat), jsonfilename=str(out)))
    [record] = json.loads(out.read_text(encoding="utf-8"))
    assert record["source"] == "c.jsonl:3" and record["output"] == "A guardian of this forest, traveller."


def test_sillytavern_message_that_writes_the_users_turns_too(tmp_path):
    """Models often write `Seraphina: ...` and then the user's turn in one message: it is those turns."""
    chat = tmp_path / "c.jsonl"
    chat.write_text("\n".join(json.dumps(m) for m in [
        {"user_name": "Alex", "character_name": "Seraphina", "chat_metadata": {}},
        {"name": "Seraphina", "is_user": False, "mes": "Seraphina: You are in my glade, safe from the shadows.\n\n"
                                                        "Alex: But how did I get here?\n\nSeraphina: I carried you."},
        {"name": "Alex", "is_user": True, "mes": "Thank you. Note: I am still dizzy."},
        {"name": "Seraphina", "is_user": False, "mes": "Rest now, traveller, the night is long."},
        # a `Name:` line inside a paragraph is the text's own (a quote), and `> ` is no Discord quote here
        {"name": "Alex", "is_user": True, "mes": "What did the hermit say?"},
        {"name": "Seraphina", "is_user": False, "mes": "> Beware.\nHe said it plainly:\nAlex: you will find it."},
        # its own cue after blank lines opens it all the same
        {"name": "Alex", "is_user": True, "mes": "Again?"},
        {"name": "Seraphina", "is_user": False, "mes": "\n\nSeraphina: Again.\n\nAlex: Why?\n\nSeraphina: Because."},
        # a message that does not open with its own cue is its speaker's whole: a letter read aloud
        {"name": "Alex", "is_user": True, "mes": "What does the letter say?"},
        {"name": "Seraphina", "is_user": False, "mes": "*reads aloud*\n\nAlex: meet me at dawn.\n\n*She lowers it.*"}]),
        encoding="utf-8")
    out = tmp_path / "o.json"
    report = prepare(PrepareConfig(names=["Seraphina"], txtfilename=str(chat), jsonfilename=str(out),
                                   filter_low_quality=False))
    assert [(r["input"].split("\n")[-2:], r["output"]) for r in json.loads(out.read_text(encoding="utf-8"))] == [
        (["Seraphina:"], "You are in my glade, safe from the shadows."),
        (["Alex: But how did I get here?", "Seraphina:"], "I carried you."),
        (["Alex: Thank you. Note: I am still dizzy.", "Seraphina:"], "Rest now, traveller, the night is long."),
        (["Alex: What did the hermit say?", "Seraphina:"], "> Beware. He said it plainly: Alex: you will find it."),
        (["Alex: Again?", "Seraphina:"], "Again."),
        (["Alex: Why?", "Seraphina:"], "Because."),
        (["Alex: What does the letter say?", "Seraphina:"], "*reads aloud* Alex: meet me at dawn. *She lowers it.*")]
    assert "9 messages, 13 turns" in report.format()  # a message's turns count as one message


def test_sillytavern_folder_reads_each_chat_and_nothing_else(tmp_path):
    chats = tmp_path / "Seraphina"
    chats.mkdir()
    (chats / "Seraphina - 2024-05-01.jsonl").write_bytes(SILLYTAVERN.read_bytes())
    lines = SILLYTAVERN.read_text(encoding="utf-8").splitlines()
    (chats / "Seraphina - 2024-05-02.jsonl").write_text("\n".join(lines[:1] + lines[10:]) + "\n", encoding="utf-8")
    (chats / "notes.jsonl").write_text('{"step": 1}\n', encoding="utf-8")  # not a chat: left alone
    (chats / "Seraphina - new.jsonl").write_text(lines[0] + "\n", encoding="utf-8")  # a chat not begun: nothing
    turns = [t for t in iter_discord_turns(chats) if t is not None]
    assert [t.source for t in turns if t.speaker == "Seraphina"][-1] == "Seraphina - 2024-05-02.jsonl:3"
    assert len([t for t in turns if t.speaker == "Seraphina"]) == 5


@pytest.mark.parametrize("content, message", [
    ('{"user_name": "Alex", "character_name": "S"}\n{"name": "S", "is_user": false, "mes": "hi"\n',
     r"bad.jsonl:2: malformed JSON"),
    ('{"user_name": "Alex", "character_name": "S"}\n', "no messages by people in .*bad.jsonl"),
    ('{"user_name": "Alex", "character_name": "S"}\n[1, 2]\n', r"bad.jsonl:2: not a JSON object"),
    ('{"user_name": "Alex", "character_name": "S"}\n{"is_user": false, "mes": "hi"}\n', r"bad.jsonl:2: the author has no name"),
    ('{"user_name": "Alex", "character_name": "S"}\n{"name": "S", "is_user": false, "mes": 5}\n', r"bad.jsonl:2: mes is not text"),
])
def test_sillytavern_bad_chats(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError, match=message):
        prepare(PrepareConfig(names=["S"], txtfilename=str(path), jsonfilename=str(tmp_path / "o.json")))


# --- Slack exports -----------------------------------------------------------------------------------------


def slack_export(root: Path, days: dict, users: list | None = None) -> Path:
    """An unzipped Slack export: users.json, channels.json and `channel/day.json` files."""
    root.mkdir(parents=True, exist_ok=True)
    people = users if users is not None else [
        {"id": "U1", "name": "bob", "profile": {"display_name": "Bob", "real_name": "Bob Smith"}},
        {"id": "U2", "name": "alice", "profile": {"display_name": "", "real_name": "Alice"}},
        {"id": "U3", "name": "helper", "is_bot": True, "profile": {"real_name": "Helper"}}]
    (root / "users.json").write_text(json.dumps(people), encoding="utf-8")
    (root / "channels.json").write_text(json.dumps([{"id": "C1", "name": c.split("/")[0]} for c in days]),
                                        encoding="utf-8")
    for name, messages in days.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(json.dumps(messages), encoding="utf-8")
    return root


def sm(user, text, second, **extra):
    return {"type": "message", "user": user, "text": text, "ts": f"{1714557600 + second}.000100", **extra}


SLACK_DAY = [
    sm("U2", "hey <@U1>, are you coming to the <#C1|general> meetup tonight?", 0),
    sm("U1", "Sure, I'll bring snacks &amp; drinks, see <https://example.com/map|the map>", 60),
    sm("U2", "<@U1>", 90),  # a ping only
    sm("U1", "joined", 100, subtype="channel_join"),
    sm("U3", "Reminder: standup at 10", 110),  # a bot user (users.json)
    sm("", "deployed v2", 115, subtype="bot_message", bot_id="B1", username="deploybot"),
    sm("U2", "thread: who wants pizza after the meetup?", 120, thread_ts="1714557720.000100", reply_count=1),
    sm("U2", "Great, the address is &lt;5th street&gt;", 130),
    sm("U1", "Me, always me. Pepperoni please.", 150, thread_ts="1714557720.000100"),
    sm("U1", "Got it, leaving at eight then.", 160, user_profile={"display_name": "", "real_name": "Bob Smith"}),
]


def test_slack_export_folder_zip_channel_and_day_read_alike(tmp_path):
    root = slack_export(tmp_path / "export", {"general/2024-05-01.json": SLACK_DAY})
    import zipfile
    zipped = tmp_path / "Slack export May 2024.zip"
    with zipfile.ZipFile(zipped, "w") as z:
        for f in sorted(root.rglob("*.json")):
            z.write(f, f.relative_to(root).as_posix())
    outputs = []
    for given in (root, root / "general", root / "general" / "2024-05-01.json", zipped):
        assert detect_source(given) == "discord"
        out = tmp_path / "o.json"
        report = prepare(PrepareConfig(names=["Bob"], txtfilename=str(given), jsonfilename=str(out),
                                       filter_low_quality=False))
        assert set(report.layouts.values()) == {"slack"} and "10 messages" in report.format()
        assert report.dropped == {"ping_only": 1, "system_message": 1, "bot": 2}
        assert report.dropped_of == {"Bob": {}} and "(all speakers; Bob's own: none)" in report.format()
        outputs.append(json.loads(out.read_text(encoding="utf-8")))
    assert outputs[1:] == outputs[:1] * 3
    records = outputs[0]
    # markup read as a person sees it
    assert records[0] == {"input": "Alice: hey Bob, are you coming to the #general meetup tonight?\nBob:",
                          "output": "Sure, I'll bring snacks & drinks, see the map", "name": "Bob",
                          "source": "general/2024-05-01.json:2"}
    # a thread is a conversation of its own, led by the message that started it; the channel goes on without it
    assert {"input": "Alice: thread: who wants pizza after the meetup?\nBob:",
            "output": "Me, always me. Pepperoni please.", "name": "Bob", "source": "general/2024-05-01.json:9"} in records
    # one person is one speaker (users.json's name, not an older one in a message's profile); a thread's lead
    # is counted once
    assert scan_speakers(str(root)) == {"Alice": 4, "Bob": 3}  # before the filters: the ping too
    assert "Got it, leaving at eight then." in [r["output"] for r in records]


def test_slack_errors_name_the_file(tmp_path):
    root = slack_export(tmp_path / "export", {"general/2024-05-01.json": SLACK_DAY[:2]})
    bad = root / "general" / "2024-05-02.json"
    bad.write_text('[{"type": "message", "ts": "1.0", "text": "hi"', encoding="utf-8")
    with pytest.raises(UserError, match=r"2024-05-02.json:1: malformed JSON"):
        prepare(PrepareConfig(names=["Bob"], txtfilename=str(root), jsonfilename=str(tmp_path / "o.json")))
    bad.write_text('[{"type": "message", "ts": "1.0", "text": 5, "user": "U1"}]', encoding="utf-8")
    with pytest.raises(UserError, match=r"general/2024-05-02.json: message 1: content is not text"):
        prepare(PrepareConfig(names=["Bob"], txtfilename=str(root), jsonfilename=str(tmp_path / "o.json")))
    bad.write_text('[1, 2]', encoding="utf-8")
    with pytest.raises(UserError, match=r"2024-05-02.json: message 1 is not a JSON object"):
        prepare(PrepareConfig(names=["Bob"], txtfilename=str(root), jsonfilename=str(tmp_path / "o.json")))
    log = tmp_path / "logs" / "2024-05-01.json"  # named like a day, but no Slack message in it
    log.parent.mkdir()
    log.write_text('[{"ts": 1714557600, "level": "info", "event": "server started"}]', encoding="utf-8")
    with pytest.raises(UserError, match=r"not a DiscordChatExporter, Telegram, Messenger or Instagram JSON export, nor a day of a Slack"):
        prepare(PrepareConfig(names=["Bob"], txtfilename=str(log), jsonfilename=str(tmp_path / "o.json")))
    other = tmp_path / "photos.zip"
    import zipfile
    with zipfile.ZipFile(other, "w") as z:
        z.writestr("a.txt", "Bob: hi")
    with pytest.raises(UserError, match=r"photos.zip: a zip archive, which is not read \(only a Slack export's, or a Ren'Py game's scripts\)"):
        detect_source(other)
    import zipfile
    damaged = tmp_path / "damaged.zip"  # a member whose data is corrupt: one line, not a zlib traceback
    with zipfile.ZipFile(damaged, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("users.json", "[]")
        z.writestr("channels.json", "[]")
        z.writestr("general/2024-05-01.json", json.dumps(SLACK_DAY) * 20)
    data = bytearray(damaged.read_bytes())
    at = data.index(b"general/2024-05-01.json") + 200
    data[at:at + 50] = bytes(50)
    damaged.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"damaged.zip:general/2024-05-01.json: damaged in the zip"):
        prepare(PrepareConfig(names=["Bob"], txtfilename=str(damaged), jsonfilename=str(tmp_path / "o.json")))
    broken = tmp_path / "export.zip"
    broken.write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(UserError, match=r"export.zip: not a readable zip archive \(damaged, or not a zip\)"):
        detect_source(broken)


def test_discords_own_data_package_is_refused_with_the_reason(tmp_path):
    """Discord's "Request all of my data" package holds the user's own messages only: no dialogue."""
    channel = tmp_path / "package" / "messages" / "c123"
    channel.mkdir(parents=True)
    (tmp_path / "package" / "account").mkdir()
    (channel / "channel.json").write_text('{"id": "123", "type": 1}', encoding="utf-8")
    (channel / "messages.json").write_text('[{"ID": 1, "Timestamp": "2024-01-01 10:00:00", "Contents": "hi", '
                                           '"Attachments": ""}]', encoding="utf-8")
    (channel / "messages.csv").write_text("ID,Timestamp,Contents,Attachments\n1,2024-01-01 10:00:00,hi,\n",
                                          encoding="utf-8")
    (channel.parent / "index.json").write_text('{"123": "Direct Message with bob"}', encoding="utf-8")
    for given in (tmp_path / "package", channel.parent, channel, channel / "messages.json", channel / "messages.csv"):
        with pytest.raises(UserError, match=rf"^{re.escape(str(given))}: Discord's data package .* only your own "
                                            "messages.* DiscordChatExporter"):
            prepare(PrepareConfig(names=["Me"], txtfilename=str(given), jsonfilename=str(tmp_path / "o.json")))
    # without its account folder, and as newer packages name it (`Messages`): the root is refused so too,
    # rather than pointed at its messages folder, which is refused in turn
    shutil.rmtree(tmp_path / "package" / "account")
    (tmp_path / "package" / "messages").rename(tmp_path / "package" / "Messages")
    with pytest.raises(UserError, match=r"package: Discord's data package"):
        prepare(PrepareConfig(names=["Me"], txtfilename=str(tmp_path / "package"), jsonfilename=str(tmp_path / "o.json")))


def test_slack_threads_names_actions_and_bytes(tmp_path):
    """A thread stays one conversation across a gap; /me is an action; one user is one speaker without
    users.json; mentions and channels by their names here; undecodable bytes counted; a long first message."""
    day1 = [sm("U2", "x " * 2000, 0, user_profile={"display_name": "Ally"}),  # a paste longer than 2 KB
            sm("U2", "who is up for a film night this week?", 60, thread_ts="1714557660.000100",
               user_profile={"display_name": "Ally"}),
            sm("U1", "hides under the desk", 70, subtype="me_message", user_profile={"display_name": "Bo"})]
    day2 = [sm("U1", "Sorry, only saw this now. Count me in, <@U2|ally.s>! See <#C7>.", 86400 + 3600,
               thread_ts="1714557660.000100", user_profile={"display_name": "Bo (away)"})]
    root = tmp_path / "export"
    for name, messages in (("2024-05-01.json", day1), ("2024-05-02.json", day2)):
        (root / "general").mkdir(parents=True, exist_ok=True)
        (root / "general" / name).write_text(json.dumps(messages), encoding="utf-8")
    day3 = root / "general" / "2024-05-03.json"
    day3.write_bytes(b'[{"type": "message", "user": "U2", "ts": "1714730400.0001", "text": "Caf\xe9 later?"}]')
    out = tmp_path / "o.json"
    report = prepare(PrepareConfig(names=["Bo"], txtfilename=str(root / "general"), jsonfilename=str(out),
                                   filter_low_quality=False))
    records = json.loads(out.read_text(encoding="utf-8"))
    # no users.json: the first name a message gave U1 (Bo), not its later 'Bo (away)'
    assert report.speakers == {"Ally": 3, "Bo": 2}  # the 4 KB paste a turn of its own; the thread's lead once
    assert records[0]["output"] == "*hides under the desk*"
    # a day later, yet in its thread: the film question is its context
    assert records[1] == {"input": "Ally: who is up for a film night this week?\nBo:", "name": "Bo",
                          "output": "Sorry, only saw this now. Count me in, Ally! See #C7.",
                          "source": "general/2024-05-02.json:1"}
    assert report.replaced_bytes == 1
    # the thread's lead is its context there, and trained once: in the channel, where it was said
    prepare(PrepareConfig(names=["Ally"], txtfilename=str(root / "general"), jsonfilename=str(out),
                          filter_low_quality=False))
    assert [r["output"] for r in json.loads(out.read_text(encoding="utf-8"))] == [
        "x " * 1999 + "x", "who is up for a film night this week?", "Caf\ufffd later?"]
    assert prepare(PrepareConfig(names=["Bo"], txtfilename=str(root / "general"), jsonfilename=str(out),
                                 filter_low_quality=False, strip_actions=True)).dropped_of == {"Bo": {"action_only": 1}}
    # with the export's users.json and channels.json: their names
    slack_export(root, {}, users=[{"id": "U1", "name": "bo", "profile": {"display_name": "Bo"}},
                                  {"id": "U2", "name": "ally.s", "profile": {"display_name": "Ally"}}])
    (root / "channels.json").write_text('[{"id": "C7", "name": "movies"}]', encoding="utf-8")
    prepare(PrepareConfig(names=["Bo"], txtfilename=str(root), jsonfilename=str(out), filter_low_quality=False))
    assert json.loads(out.read_text(encoding="utf-8"))[1]["output"].endswith("Count me in, Ally! See #movies.")


def test_a_filtered_message_between_two_of_one_author_keeps_them_apart(tmp_path):
    """`finish the slides` / (Bob: lol, filtered) / `No` was merged into Alice's `finish the slides No`."""
    path = export(tmp_path, [msg(1, "Alice", "can you finish the slides today?", 0), msg(2, "Bob", "lol", 1),
                             msg(3, "Alice", "No", 2), msg(4, "Alice", "I mean, not before noon", 2),
                             msg(5, "Bob", "", 3, attachments=[{"url": "x.png"}]), msg(6, "Alice", "nice", 4),
                             msg(7, "Alice", "lol", 4), msg(8, "Alice", "very nice", 4)])
    got, dropped = discord_turns(path, filter_low_quality=False)
    assert got == [("Alice", "can you finish the slides today?"), ("Alice", "No I mean, not before noon"),
                   ("Alice", "nice very nice"), None]  # her own `lol` between: one run still
    assert dropped == Counter(non_response=2, attachment_only=1)


# --- DiscordChatExporter's CSV and text formats ----------------------------------------------------------


def test_discordchatexporter_csv_goes_through_the_discord_rules(tmp_path):
    rows = ['AuthorID,Author,Date,Content,Attachments,Reactions',
            '"1","alex#1234","2024-05-01T10:00:00+00:00","hey all, anyone up?","",""',
            '"2","sam","2024-05-01T10:01:00+00:00","@alex yeah, what is up","",""',
            '"1","alex","01-May-24 10:02 AM","not much, just bored","",""',
            '"1","alex","2024-05-01T10:02:10+00:00","want to play\nsomething?","",""',
            '"2","sam","2024-05-01T13:02:00+00:00","","https://cdn.example/x.png",""',
            '"2","sam","2024-05-01T13:03:00+00:00","sorry was away. sure, in an hour?","",""']
    path = tmp_path / "general.txt"  # known by its header, whatever the name
    path.write_text("\ufeff" + "\n".join(rows) + "\n", encoding="utf-8")
    assert detect_source(path) == "discord"
    out = tmp_path / "o.json"
    report = prepare(PrepareConfig(names=["sam"], txtfilename=str(path), jsonfilename=str(out),
                                   filter_low_quality=False))
    assert report.dropped == {"attachment_only": 1} and "6 messages" in report.format()
    pinned = path.read_text(encoding="utf-8") + '"2","sam","2024-05-01T13:04:00+00:00","Pinned a message.","",""\n'
    path.write_text(pinned, encoding="utf-8")  # the exporter's text for a system message
    assert prepare(PrepareConfig(names=["sam"], txtfilename=str(path), jsonfilename=str(out),
                                 filter_low_quality=False)).dropped == {"attachment_only": 1,
                                                                                        "system_message": 1}
    path.write_text("\ufeff" + "\n".join(rows) + "\n", encoding="utf-8")
    records = json.loads(out.read_text(encoding="utf-8"))
    # the mention loses its @; three hours of silence start a new conversation; the row's line is the source
    assert [(r["input"], r["output"], r["source"]) for r in records] == [
        ("alex: hey all, anyone up?\nsam:", "alex yeah, what is up", "general.txt:3"),
        ("sam:", "sorry was away. sure, in an hour?", "general.txt:8")]
    scanned = scan_speakers(path)
    assert dict(scanned) == {"alex": 3, "sam": 3}


def test_discordchatexporter_csv_without_author_ids_and_a_short_row(tmp_path):
    path = tmp_path / "old.csv"
    path.write_text('Author,Date,Content,Attachments,Reactions\n"alex#1234","2024-05-01T10:00:00","hi there",,\n'
                    '"sam","2024-05-01T10:01:00"\n', encoding="utf-8")
    assert detect_source(path) == "discord"
    with pytest.raises(UserError, match=r"old\.csv:3: 2 field\(s\)"):
        list(iter_discord_turns(path))
    # a long row (a message's commas outside quotes) and a quote left open are errors, not lost text
    header = "AuthorID,Author,Date,Content,Attachments,Reactions\n11,alex,2024-05-01T10:00:00+00:00,hey there,,\n"
    path.write_text(header + "12,sam,2024-05-01T10:01:00+00:00,hi, there, how are you,,\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"old\.csv:3: 8 field\(s\), DiscordChatExporter's CSV has 6"):
        list(iter_discord_turns(path))
    path.write_text(header.replace("hey there,,", '"hey there,"",""') + "12,sam,2024-05-01T10:01:00+00:00,hi,,\n",
                    encoding="utf-8")
    with pytest.raises(UserError, match=r"old\.csv:2: malformed CSV \(unexpected end of data\)"):
        list(iter_discord_turns(path))
    # a message longer than the csv module's 128 KB field limit is a message (it was a malformed CSV)
    long = "word " * 40000
    import csv

    csv.field_size_limit(131072)  # the module's default, as in a fresh process (the game CSV reader raises it)
    path.write_text(header + f'12,sam,2024-05-01T10:01:00+00:00,"{long}",,\n', encoding="utf-8")
    turns = [t for t in iter_discord_turns(path, DiscordOptions(filter_low_quality=False)) if t is not None]
    assert [(t.speaker, len(t.text)) for t in turns] == [("alex", 9), ("sam", len(long.strip()))]
    # and a header line with such a field (a column the reader keeps) was a _csv.Error traceback
    csv.field_size_limit(131072)
    path.write_text(header.replace("Reactions\n", f'Reactions,"{long}"\n'), encoding="utf-8")
    turns = [t for t in iter_discord_turns(path, DiscordOptions(filter_low_quality=False)) if t is not None]
    assert [(t.speaker, t.text) for t in turns] == [("alex", "hey there")]


def test_discordchatexporter_csv_with_lines_ended_in_cr_alone(tmp_path):
    """An old Mac's line ends (\r): it was taken for a JSON export and refused."""
    path = tmp_path / "chat.csv"
    path.write_bytes(b"AuthorID,Author,Date,Content,Attachments,Reactions\r11,alex,2024-05-01T10:00:00+00:00,hey there,,\r"
                     b"12,sam,2024-05-01T10:01:00+00:00,fine thanks,,\r")
    assert detect_source(path) == "discord"
    turns = [t for t in iter_discord_turns(path, DiscordOptions(filter_low_quality=False)) if t is not None]
    assert [(t.speaker, t.text) for t in turns] == [("alex", "hey there"), ("sam", "fine thanks")]


def test_discordchatexporter_csv_dates_and_lines_read_as_the_whole_string_reads_them(tmp_path):
    """The CSV's dates are parsed by their day and their time (each once) and its lines are cut without
    io.StringIO's copy of the file: both read exactly as strptime on the whole date and StringIO did."""
    import csv
    import io
    from datetime import datetime

    from extensions.dialogue_lora.sources import dce_csv

    def whole(value):
        for fmt in (None, *dce_csv._DATE_FORMATS):
            try:
                found = datetime.fromisoformat(value.strip()) if fmt is None else datetime.strptime(value.strip(), fmt)
            except ValueError:
                continue
            return found.isoformat()
        return None

    values = ["02-Jan-20 01:00 PM", "02-Jan-2020 12:59 AM", "02-Jan-20   01:00 PM", " 5/1/2024 10:00 AM ",
              "05/01/2024 10:00:59 PM", "31/12/2023 23:59", "31.12.2023 23:59:01", "2023-12-31 23:59",
              "2024-05-01T10:00:00+00:00", "29-Feb-21 01:00 PM", "31-Feb-20 10:00 AM", "13/13/2024 10:00",
              "02-Jan-20 13:00 PM", "02-Jan-20", "10:00 AM", "", "yesterday at noon", "02-Jan-20 01:00 PM extra"]
    dates = dce_csv._Dates()
    for value in values + values[::-1]:  # again, from what each part's cache holds, and formats reordered
        assert dates.iso(value) == whole(value), value
    text = ('A,B\r\n"x","line one\r\nline two"\r\n"y","mac\rline"\r"z","unix\nline"\n\n'
            '"w","cr at end\r"\r\n"v","no end"')
    assert [*dce_csv._lines(text)] == io.StringIO(text, newline="").readlines()
    assert [*csv.reader(dce_csv._lines(text))] == [*csv.reader(io.StringIO(text, newline=""))]
    # the rows are read as they are iterated, each time alike
    path = tmp_path / "c.csv"
    path.write_text("AuthorID,Author,Date,Content,Attachments,Reactions\n1,alex,02-Jan-20 01:00 PM,hi,,\n"
                    "2,sam,02-Jan-20 01:01 PM,yo,,\n", encoding="utf-8")
    rows = dce_csv.load(path, path.read_text(encoding="utf-8"))
    assert [*rows] == [*rows] and [(m["line"], m["timestamp"]) for m in rows] == [
        (2, "2020-01-02T13:00:00"), (3, "2020-01-02T13:01:00")]


def test_discordchatexporter_text_export_is_refused_with_advice(tmp_path):
    path = tmp_path / "general.txt"
    path.write_text("=" * 62 + "\nGuild: My Server\nChannel: Text Channels / general\n" + "=" * 62
                    + "\n\n[5/1/2024 10:00 AM] alex\nhey all\n", encoding="utf-8")
    with pytest.raises(UserError, match="DiscordChatExporter text export.*JSON format"):
        detect_source(path)


# --- WhatsApp and other text chat exports with dates ------------------------------------------------------


WHATSAPP = ("1/3/23, 10:00 PM - Messages and calls are end-to-end encrypted. No one outside of this chat can read them.\n"
            "1/3/23, 10:00 PM - Kim: are you still up?\n"
            "1/3/23, 10:01 PM - Lee: barely\n"
            "6/20/23, 8:00 AM - Kim: hey long time no see\n"  # five months later: a new conversation
            "6/20/23, 8:00 AM - Kim: how have you been?\nall good here\n"
            "6/20/23, 8:01 AM - Kim: we should catch up @Lee\n"
            "6/20/23, 8:05 AM - Lee: lol\n"
            "6/20/23, 8:06 AM - Lee: yes! coffee on Friday?\n"
            "6/20/23, 8:07 AM - Kim: <Media omitted>\n"
            "6/20/23, 8:07 AM - Kim left\n")


def test_whatsapp_export_goes_through_the_chat_rules(tmp_path):
    path = tmp_path / "WhatsApp Chat with Kim.txt"
    path.write_text(WHATSAPP, encoding="utf-8")
    assert detect_source(path) == "discord"
    out = tmp_path / "o.json"
    report = prepare(PrepareConfig(names=["Lee"], txtfilename=str(path), jsonfilename=str(out), filter_low_quality=False))
    assert report.layouts == {path.name: "chat log"}
    assert report.dropped == {"non_response": 1, "empty": 1, "system_message": 1}
    records = json.loads(out.read_text(encoding="utf-8"))
    # a silence splits; Kim's three messages are one turn, the mention without its @; lol is filtered out
    assert [(r["input"], r["output"], r["source"]) for r in records] == [
        ("Kim: are you still up?\nLee:", "barely", f"{path.name}:3"),
        ("Kim: hey long time no see how have you been? all good here we should catch up Lee\nLee:",
         "yes! coffee on Friday?", f"{path.name}:9")]
    # --gap_minutes applies: a day's gap is no split at 1,000,000 minutes
    prepare(PrepareConfig(names=["Lee"], txtfilename=str(path), jsonfilename=str(out), filter_low_quality=False,
                          gap_minutes=1e6))
    assert json.loads(out.read_text(encoding="utf-8"))[1]["input"].startswith("Kim: are you still up?")
    # read as plain text when asked: line by line, no chat rules
    report = prepare(PrepareConfig(names=["Lee"], txtfilename=str(path), jsonfilename=str(out), source="text"))
    assert report.samples_written == 3


def test_whatsapp_day_first_dates_and_iphone_and_web_layouts(tmp_path):
    from extensions.dialogue_lora.sources.chatlog import load

    day_first = ("[31.12.23, 23:58:00] Ann: late\n[01.01.24, 00:03:00] Bo: happy new year\n"
                 "[01.01.24, 09:00:00] Ann: morning\n")
    path = tmp_path / "chat.txt"
    path.write_text(day_first, encoding="utf-8")
    stamps = [m["timestamp"] for m in load(path, ReadStats())]
    assert stamps == ["2023-12-31T23:58:00", "2024-01-01T00:03:00", "2024-01-01T09:00:00"]
    # every day 12 or less: the reading under which the messages follow each other closely
    ambiguous = "01/02/2024, 23:59 - Ann: late\n02/02/2024, 00:01 - Bo: yes\n03/02/2024, 08:00 - Ann: up\n"
    path.write_text(ambiguous, encoding="utf-8")
    assert [m["timestamp"] for m in load(path, ReadStats())] == [
        "2024-02-01T23:59:00", "2024-02-02T00:01:00", "2024-02-03T08:00:00"]
    us = "01/02/2024, 23:59 - Ann: late\n01/03/2024, 00:01 - Bo: yes\n"  # Jan 2 then Jan 3: month first
    path.write_text("3/1/24, 10:00 - Ann: a\n4/2/24, 10:00 - Bo: b\n5/3/24, 10:00 - Ann: c\n", encoding="utf-8")
    assert next(load(path, ReadStats()))["timestamp"] == "2024-03-01T10:00:00"  # no reading clearly closer: month first
    path.write_text(us, encoding="utf-8")
    assert [m["timestamp"] for m in load(path, ReadStats())] == ["2024-01-02T23:59:00", "2024-01-03T00:01:00"]
    web = "[21:15, 31/12/2023] Alex: hey\n[21:16, 31/12/2023] Sam: yo\n"
    path.write_text(web, encoding="utf-8")
    assert [m["timestamp"] for m in load(path, ReadStats())] == ["2023-12-31T21:15:00", "2023-12-31T21:16:00"]
    turns = [t for t in iter_discord_turns(path, DiscordOptions(filter_low_quality=False)) if t is not None]
    assert [(t.speaker, t.text) for t in turns] == [("Alex", "hey"), ("Sam", "yo")]


def test_a_message_of_many_lines_is_whole_and_a_runaway_one_is_said(tmp_path):
    """A message's next lines are joined to it (once, at its end: each line used to copy the message so far,
    80,000 lines took a minute); a message that runs on for a thousand lines is most likely a second
    export in another format joined to the file (Android's then iPhone's), and the report says so."""
    from extensions.dialogue_lora.dialogue import RUNAWAY_LINES

    path = tmp_path / "chat.txt"
    rest = [f"line {i} of it" for i in range(50)]
    path.write_text("1/1/23, 9:00 AM - Ann: first\n" + "\n".join(rest) + "\n1/1/23, 9:01 AM - Bo: sure thing\n",
                    encoding="utf-8")
    stats = ReadStats()
    turns = [t for t in iter_discord_turns(path, DiscordOptions(filter_low_quality=False), stats) if t is not None]
    assert [(t.speaker, t.text) for t in turns] == [("Ann", " ".join(["first", *rest])), ("Bo", "sure thing")]
    assert not stats.notes
    iphone = [f"[01.01.23, 12:{i % 60:02}:00] Bo: message {i}" for i in range(RUNAWAY_LINES + 5)]
    path.write_text("1/1/23, 9:00 AM - Ann: first\n1/1/23, 9:01 AM - Bo: sure thing\n" + "\n".join(iphone) + "\n",
                    encoding="utf-8")
    stats = ReadStats()
    turns = [t for t in iter_discord_turns(path, DiscordOptions(filter_low_quality=False), stats) if t is not None]
    assert len(turns) == 2 and turns[1].text.endswith(f"message {RUNAWAY_LINES + 4}")
    assert [n for n in stats.notes if "runs on for 1,000 lines" in n] == [
        f"{path.name}:2: one message runs on for 1,000 lines or more (a line without the file's kind of date and "
        "time continues the message before it): are two exports in other formats joined in this file? Give each "
        "as a file of its own"]


def test_a_speech_wrapped_under_its_name_is_one_line():
    from extensions.dialogue_lora.dialogue import _join_indented

    lines = ["BOB:  It begins here", *["      and goes on"] * 3, "ANN:  Fine."]
    assert list(_join_indented(lines)) == ["BOB:  It begins here and goes on and goes on and goes on", "", "", "",
                                           "ANN:  Fine."]


def test_squeezing_a_repeated_last_letter_is_the_regex_it_replaced():
    import random

    from extensions.dialogue_lora.sources.discord import _squeeze

    old = re.compile(r"(\w)\1+$")
    rng = random.Random(0)
    for _ in range(20000):
        t = "".join(rng.choice("ab_1é!² ") for _ in range(rng.randint(0, 6)))
        assert _squeeze(t) == old.sub(r"\1", t), t
    assert _squeeze("lolll") == "lol" and _squeeze("x" * 50000 + " end") == "x" * 50000 + " end"
    assert is_non_response("z" * 50000) is False and is_ender("z" * 50000) is False  # (and takes no time)


def test_a_folder_of_whatsapp_exports(tmp_path):
    (tmp_path / "Kim.txt").write_text(WHATSAPP, encoding="utf-8")
    (tmp_path / "notes.txt").write_text("Bob: not a chat export\n", encoding="utf-8")
    turns = [t for t in iter_discord_turns(tmp_path, DiscordOptions(filter_low_quality=False)) if t is not None]
    assert {t.source.split(":")[0] for t in turns} == {"Kim.txt"}


def test_weechat_log_is_a_chat_log(tmp_path):
    path = tmp_path / "irc.libera.#chan.weechatlog.log"
    path.write_text("2024-01-01 12:00:00\t-->\tcarol (~c@host) has joined #chan\n"
                    "2024-01-01 12:03:00\tcarol\tbob: you there?\n"
                    "2024-01-01 12:03:30\t@bob\tyep, what is up\n"
                    "2024-01-01 12:04:00\t *\tcarol waves\n"
                    "2024-01-01 14:04:00\tcarol\tback from lunch, still up for a game?\n"
                    "2024-01-01 14:05:00\tbob\tsure\n", encoding="utf-8")
    assert detect_source(path) == "discord"
    turns = list(iter_discord_turns(path, DiscordOptions(filter_low_quality=False)))
    # the nick is the speaker (its mode sign gone); joins and /me lines are the client's; two hours split
    assert [(t.speaker, t.text) if t else None for t in turns] == [
        ("carol", "bob: you there?"), ("bob", "yep, what is up"), None,
        ("carol", "back from lunch, still up for a game?"), ("bob", "sure"), None]


def test_whatsapp_group_export_starts_with_notices_and_a_long_message_is_no_obstacle(tmp_path):
    group = ("12/31/23, 9:10 PM - Messages and calls are end-to-end encrypted. Tap to learn more.\n"
             '12/31/23, 9:10 PM - Alex created group "Book club"\n12/31/23, 9:10 PM - Alex added you\n'
             "12/31/23, 9:15 PM - Alex: here is the reading list:\n" + "a line of the list\n" * 150 +
             "12/31/23, 9:16 PM - Sam: thanks, what are we reading first?\n"
             "[9:17 PM, 12/31/2023] Ann: a WhatsApp Web copy in 12 hours\n")
    path = tmp_path / "group.txt"
    path.write_text(group, encoding="utf-8")
    assert detect_source(path) == "discord"
    turns = [t for t in iter_discord_turns(path, DiscordOptions(filter_low_quality=False)) if t is not None]
    assert [t.speaker for t in turns] == ["Alex", "Sam"]  # the web line's other layout stays in Sam's message
    assert turns[0].text.startswith("here is the reading list: a line of the list")
    web = tmp_path / "web.txt"
    web.write_text("[9:15 PM, 12/31/2023] Alex: hey are you coming?\n[9:16 PM, 12/31/2023] Sam: yeah\n", encoding="utf-8")
    assert [(t.speaker, t.text) for t in iter_discord_turns(web, DiscordOptions(filter_low_quality=False)) if t] == [
        ("Alex", "hey are you coming?"), ("Sam", "yeah")]


def test_a_folder_of_exports_reads_each_kind_and_says_what_it_left(tmp_path):
    (tmp_path / "general.csv").write_text(
        'AuthorID,Author,Date,Content,Attachments,Reactions\n"1","alex","2024-05-01T10:00:00","hey all, anyone up for a game?","",""\n'
        '"2","sam","2024-05-01T10:01:00","sure, give me five minutes to finish","",""\n', encoding="utf-8")
    (tmp_path / "Kim.txt").write_text(WHATSAPP, encoding="utf-8")
    (tmp_path / "notes.txt").write_text("Bob: not a chat export\n", encoding="utf-8")
    (tmp_path / "table.csv").write_text("Speaker,Line\nBob,hi\n", encoding="utf-8")
    out = tmp_path.parent / "o.json"
    report = prepare(PrepareConfig(names=["*"], txtfilename=str(tmp_path), jsonfilename=str(out), filter_low_quality=False))
    assert set(report.layouts) == {"general.csv", "Kim.txt"}
    assert any("2 file(s) not read, not chat exports: notes.txt, table.csv" in n for n in report.notes)
    # a SillyTavern chats folder holds a folder per character: say so
    root = tmp_path.parent / "chats"
    (root / "Seraphina").mkdir(parents=True)
    (root / "Seraphina" / "chat.jsonl").write_bytes(SILLYTAVERN.read_bytes())
    with pytest.raises(UserError, match="its subfolder 'Seraphina' holds some: give that folder"):
        list(iter_discord_turns(root))
    (root / "Aqua").mkdir()  # and an unzipped Slack export beside it
    slack_export(root / "Slack export", {"general/2024-05-01.json": SLACK_DAY[:2]})
    with pytest.raises(UserError, match=r"its subfolders hold some \(Seraphina, Slack export\): give one"):
        list(iter_discord_turns(root))


def test_chat_or_script_judged_by_recurring_speakers(tmp_path):
    """A chat whose message holds `Key: value` lines is a chat; a script quoting chat lines is a script."""
    chat = ("12/31/23, 9:00 PM - Alex: hey, are we still on for tonight?\n"
            "12/31/23, 9:01 PM - Sam: yes of course, what should I bring?\n"
            "12/31/23, 9:02 PM - Alex: here is what we still need:\nChips: 2 bags\nSoda: 3 bottles\nIce: 1 bag\n"
            "Cups: 50\n12/31/23, 9:03 PM - Sam: ok, I will get all of it on the way\n")
    path = tmp_path / "late.txt"
    path.write_text(chat, encoding="utf-8")
    assert detect_source(path) == "discord"
    script = ("[31.12.23, 21:15:03] Jake: come outside\n[31.12.23, 21:15:09] Jake: I am at the door\n"
              "Mia: That was the message I got.\nLeo: Wow.\nMia: I know.\nLeo: And then?\n")
    path.write_text(script, encoding="utf-8")
    assert detect_source(path) == "text"
    report = prepare(PrepareConfig(names=["Mia", "Leo"], txtfilename=str(path), jsonfilename=str(tmp_path / "o.json")))
    assert report.per_name == {"Mia": 2, "Leo": 2}


def test_tables_and_application_logs_are_no_chat(tmp_path):
    table = tmp_path / "t1.txt"
    table.write_text("Timestamp\tSpeaker\tLine\n2024-01-01 12:00:00\tAlice\tHello there\n"
                     "2024-01-01 12:01:00\tBob\tFine thanks\n", encoding="utf-8")
    assert detect_source(table) == "csv"
    log = tmp_path / "app.log"
    log.write_text("2024-01-01 12:00:00\tINFO\tServer started on port 8080\n"
                   "2024-01-01 12:00:01\tERROR\tDisk full\n", encoding="utf-8")
    assert detect_source(log) == "text"


def test_a_slack_reply_also_sent_to_the_channel_is_said_in_both(tmp_path):
    parent = sm("U2", "who wants pizza tonight at my place?", 0, thread_ts="1714557600.000100", reply_count=1)
    reply = sm("U1", "Me! I will bring the drinks and some snacks.", 60, thread_ts="1714557600.000100",
               subtype="thread_broadcast")
    later = sm("U2", "great, see you both at eight then", 120)
    root = slack_export(tmp_path / "export", {"general/2024-05-01.json": [parent, reply, later]})
    out = tmp_path / "o.json"
    report = prepare(PrepareConfig(names=["Alice"], txtfilename=str(root), jsonfilename=str(out),
                                   filter_low_quality=False))
    assert "3 messages" in report.format()  # the channel's copy is not counted again
    # in the channel, Bob's broadcast reply stands between Alice's two messages: they are not one turn
    assert json.loads(out.read_text(encoding="utf-8"))[-1]["input"] == (
        "Alice: who wants pizza tonight at my place?\nBob: Me! I will bring the drinks and some snacks.\nAlice:")
    # Bob's reply is trained once, in its thread; the channel's copy is its context only
    prepare(PrepareConfig(names=["Bob"], txtfilename=str(root), jsonfilename=str(out), filter_low_quality=False))
    assert [(r["input"], r["source"]) for r in json.loads(out.read_text(encoding="utf-8"))] == [
        ("Alice: who wants pizza tonight at my place?\nBob:", "general/2024-05-01.json:2")]

    # a filter that drops the copied message counts it once, where it was said
    ender = sm("U1", "gtg", 60, thread_ts="1714557600.000100", subtype="thread_broadcast")
    slack_export(tmp_path / "export", {"general/2024-05-01.json": [parent, ender, later]})
    report = prepare(PrepareConfig(names=["Alice"], txtfilename=str(root), jsonfilename=str(out),
                                   filter_low_quality=False))
    assert report.dropped == {"ender": 1}


# --- Facebook Messenger and Instagram ---------------------------------------------------------------------


def _mojibake(s: str) -> str:
    """As the classic export writes text: its UTF-8 bytes as Latin-1 characters."""
    return s.encode("utf-8").decode("latin-1")


def test_messenger_classic_export_oldest_first_with_its_text_repaired(tmp_path):
    thread = tmp_path / "inbox" / "alex_123"
    thread.mkdir(parents=True)
    messages = [  # newest first, as the export lists them
        {"sender_name": "Sam Lee", "timestamp_ms": 1714557900000, "content": _mojibake("see you at the café then 😊")},
        {"sender_name": "Alex Kim", "timestamp_ms": 1714557840000, "content": _mojibake("Reacted 😂 to your message ")},
        {"sender_name": "Alex Kim", "timestamp_ms": 1714557780000, "content": "Alex Kim sent an attachment.",
         "photos": [{"uri": "x.jpg"}]},
        {"sender_name": "Alex Kim", "timestamp_ms": 1714557720000, "content": "sure, what time works for you?"},
        {"sender_name": "Sam Lee", "timestamp_ms": 1714557660000, "content": "want to grab coffee tomorrow morning?"},
        {"sender_name": _mojibake("Zoë"), "timestamp_ms": 1714557610000, "content": "hi both", "type": "Generic"},
        {"sender_name": "Sam Lee", "timestamp_ms": 1714557600000, "content": "hey alex, long time no see!"},
        {"sender_name": "Alex Kim", "timestamp_ms": 1714557500000, "is_unsent": True},
        {"sender_name": "Alex Kim", "timestamp_ms": 1714557400000, "content": "Alex started a call.", "type": "Call"},
        {"sender_name": "Alex Kim", "timestamp_ms": 1714557300000, "content": "Liked a message"},  # Instagram's like
    ]
    (thread / "message_1.json").write_text(json.dumps({
        "participants": [{"name": "Sam Lee"}, {"name": "Alex Kim"}], "messages": messages, "title": "Alex Kim",
        "is_still_participant": True, "thread_path": "inbox/alex_123", "magic_words": []}), encoding="utf-8")
    assert detect_source(thread / "message_1.json") == "discord"
    out = tmp_path / "o.json"
    report = prepare(PrepareConfig(names=["Sam Lee"], txtfilename=str(thread), jsonfilename=str(out),
                                   filter_low_quality=False))
    assert report.speakers == {"Sam Lee": 3, "Zoë": 1, "Alex Kim": 1}
    assert report.dropped == {"system_message": 4, "attachment_only": 1}  # unsent, call, reaction, like; the photo
    records = json.loads(out.read_text(encoding="utf-8"))
    assert [(r["input"], r["output"], r["source"]) for r in records] == [
        ("Sam Lee:", "hey alex, long time no see!", "message_1.json:7"),
        ("Sam Lee: hey alex, long time no see!\nZoë: hi both\nSam Lee:", "want to grab coffee tomorrow morning?",
         "message_1.json:5"),
        ("Sam Lee: hey alex, long time no see!\nZoë: hi both\nSam Lee: want to grab coffee tomorrow morning?\n"
         "Alex Kim: sure, what time works for you?\nSam Lee:", "see you at the café then 😊", "message_1.json:1")]


def test_messenger_notices_are_no_ones_words():
    """The classic export writes its notices as the sender's messages, often without a `type`."""
    from extensions.dialogue_lora.sources.messenger import as_discord

    for who, text in [("Alex Kim", "Alex Kim named the group Movie Night."),
                      ("Sam Lee", "Sam Lee set the nickname for Alex Kim to Popcorn."),
                      ("Sam Lee", "Sam Lee changed the theme to Love."), ("Alex Kim", "Alex Kim sent a live location."),
                      ("Alex Kim", "Alex Kim started a video chat."), ("Sam Lee", "You sent money."),
                      ("Sam Lee", "You started a video chat."),
                      ("Sam Lee", "Sam Lee added Alex Kim to the group.")]:
        assert as_discord({"sender_name": who, "content": text, "timestamp_ms": 1, "type": "Generic"})["type"] == "Service"
    for who, text in [("Sam Lee", "I named the group Movie Night."),
                      ("Sam Park", "You changed the theme to neon green, admit it"),
                      ("Sam Park", "You named the group after your cat too, I noticed that"),
                      ("Alex Kim", "Alex Kim made a playlist and added it to the group."),
                      ("Alex Kim", "You changed the theme to pink and I hate it."),
                      ("Sam Lee", "You named the group after my cat."), ("Sam Lee", "You waved at the wrong person.")]:
        assert as_discord({"sender_name": who, "content": text, "timestamp_ms": 1})["type"] == "Default", text
    gif = as_discord({"sender_name": "Sam Lee", "content": "Sam Lee sent a GIF from GIPHY.", "gifs": [{"uri": "g"}],
                      "timestamp_ms": 1})
    assert (gif["content"], gif["attachments"]) == ("", ["gifs"])


def test_messenger_typed_words_that_read_like_a_placeholder_are_kept():
    from extensions.dialogue_lora.sources.messenger import as_discord

    assert as_discord({"sender_name": "Bob", "content": "I sent a photo.", "timestamp_ms": 1})["content"] == "I sent a photo."
    gone = as_discord({"sender_name": "Bob", "content": "Bob sent a photo.", "timestamp_ms": 1})
    assert gone["content"] == "" and gone["attachments"] == ["attachment"]


def test_messenger_encrypted_chat_export(tmp_path):
    path = tmp_path / "alex_kim_1.json"
    path.write_text(json.dumps({"participants": ["Sam Lee", "Alex Kim"], "threadName": "Alex Kim", "messages": [
        {"isUnsent": False, "media": [], "reactions": [], "senderName": "Alex Kim", "text": "café at 9?",
         "timestamp": 1714557720000, "type": "text"},
        {"isUnsent": False, "media": [{"uri": "p.jpg"}], "reactions": [], "senderName": "Sam Lee", "text": "",
         "timestamp": 1714557780000, "type": "media"},
        {"isUnsent": False, "media": [], "reactions": [], "senderName": "Sam Lee", "text": "yes! see you there",
         "timestamp": 1714557840000, "type": "text"}]}, ensure_ascii=False), encoding="utf-8")
    out = tmp_path / "o.json"
    report = prepare(PrepareConfig(names=["Sam Lee"], txtfilename=str(path), jsonfilename=str(out),
                                   filter_low_quality=False))
    assert report.dropped == {"attachment_only": 1}
    assert [(r["input"], r["output"]) for r in json.loads(out.read_text(encoding="utf-8"))] == [
        ("Alex Kim: café at 9?\nSam Lee:", "yes! see you there")]


# ------------------------------------------------------------------------------------------ Yarn Spinner

YARN = ROOT / "examples" / "yarn_dialogue.yarn"


def test_a_yarn_script_is_read_branch_by_branch(tmp_path):
    out = tmp_path / "y.json"
    report = prepare(PrepareConfig(names=["Sally"], txtfilename=str(YARN), jsonfilename=str(out)))
    assert report.layouts == {"yarn_dialogue.yarn": "yarn"} and report.speakers == {"Sally": 8, "Player": 3}
    got = {r["output"]: r["input"] for r in json.loads(out.read_text(encoding="utf-8"))}
    opening = "Sally: Hey! Can you fix the radio?\nSally: It's been dead since the storm.\n"
    # tags, comments and commands gone; each branch with the context before the options, not another's
    assert got["Thank you so much!"] == opening + "Player: Sure, hand it over.\nSally:"
    assert got["Oh. Well, maybe later then."] == opening + "Player: Not right now.\nSally:"
    assert got["Rude!"] == opening + "Walk away.\nSally:"
    assert got["Anyway, the storm is coming back tonight."] == opening + "Sally:"
    assert got["Do you hear that?"] == "Sally:"  # a node is a conversation of its own
    # the opening's lines are samples once, where they were said
    assert sum(1 for o in got if o == "It's been dead since the storm.") == 1 and report.dropped.get("duplicate", 0) == 0
    # known by its header too, whatever the file's name
    txt = tmp_path / "radio.txt"
    txt.write_text(YARN.read_text(encoding="utf-8"), encoding="utf-8")
    assert scan_speakers(txt) == {"Sally": 8, "Player": 3}


def yarn_turns(text, stats=None):
    from extensions.dialogue_lora.sources.yarn import iter_turns

    return [None if t is None else (t.speaker, t.text) for t in iter_turns(text.splitlines(), "t.yarn", stats)]


def test_a_yarn_ifs_branches_are_alternatives_as_options_are():
    script = """title: Gate
---
Guard: Halt!
<<if $has_pass>>
    Guard: Go on through.
<<elseif $gold > 10>>
    Guard: That'll cost you.
    -> Player: Fine, take it.
        <<if $haggled>>
            Guard: Pleasure.
        <<else>>
            Guard: Wise.
        <<endif>>
    -> Player: No way.
<<else>>
    Guard: Turn back.
<<endif>>
<<if $night>>
    <<set $lamp to true>>
<<endif>>
Guard: Next!
Old Tom: Uphill both ways! <<if $heard is false>> #line:1
Old Tom: You heard it. <<if $heard>>
Old Tom: Anyway.
===
"""
    ctx = [(None, "Guard: Halt!")]
    assert yarn_turns(script) == [
        ("Guard", "Halt!"),
        None, *ctx, ("Guard", "Go on through."),  # each branch from the context before the if, not another's
        None, *ctx, ("Guard", "That'll cost you."),
        # options inside an if, an if inside an option: each branch from what was said before it
        None, *ctx, (None, "Guard: That'll cost you."), ("Player", "Fine, take it."),
        None, *ctx, (None, "Guard: That'll cost you."), (None, "Player: Fine, take it."), ("Guard", "Pleasure."),
        None, *ctx, (None, "Guard: That'll cost you."), (None, "Player: Fine, take it."), ("Guard", "Wise."),
        None, *ctx, (None, "Guard: That'll cost you."), (None, "Player: Fine, take it."),
        None, *ctx, (None, "Guard: That'll cost you."), ("Player", "No way."),
        None, *ctx, (None, "Guard: That'll cost you."),
        None, *ctx, ("Guard", "Turn back."),
        # after `<<endif>>`, as after options: the context before the if (an if of commands alone: no break)
        None, *ctx, ("Guard", "Next!"),
        # lines by one speaker with different conditions: one or the other is said, tags and conditions gone
        None, *ctx, (None, "Guard: Next!"), ("Old Tom", "Uphill both ways!"),
        None, *ctx, (None, "Guard: Next!"), ("Old Tom", "You heard it."),
        None, *ctx, (None, "Guard: Next!"), ("Old Tom", "Anyway."),
        None]


def test_a_yarn_lines_markup_and_expressions_are_what_the_player_sees():
    script = r"""title: Shop
---
<<set $name to "Traveler">>
<<declare $title = "Lady" as string>>
<<set $gold to 3>>
Mara: Hello, {$name}! You have [plural value={$gold} one="% coin" other="% coins" /]. #line:1
Mara: [b]Sale[/b] on [wave]everything[/wave]![pause=500 /] Really. [/]
Mara: Price tags say \[50\] \{gold\}, \#honest \\ no \/\/ tricks, [nomarkup][b]as is[/b][/nomarkup].
Mara: Hi {$who}, this is your [ordinal value={$visits} one="%st" two="%nd" few="%rd" other="%th" /] visit.
Mara: Only [plural value={$stock} one="% left" other="% left" /], {visited("Shop")}!
Mara: [select value={$name} Traveler="Welcome" other="Hi" /], your [ordinal value=22 one="%st" two="%nd" few="%rd" other="%th" /] day.
<<if $rich>>
    <<set $name to "Patron">>
<<endif>>
Mara: Bye, {$name}.
Mara: Dear {$title}.
===
title: Later
---
Mara: Still {$gold}?
===
"""
    stats = ReadStats()
    assert yarn_turns(script, stats) == [
        ("Mara", "Hello, Traveler! You have 3 coins."),
        ("Mara", "Sale on everything! Really."),
        ("Mara", r"Price tags say [50] {gold}, #honest \ no // tricks, [b]as is[/b]."),
        # a value the script does not give: left out, the text around it tidied, and the line context only
        (None, "Mara: Hi, this is your visit."),
        (None, "Mara: Only left!"),
        ("Mara", "Welcome, your 22nd day."),
        (None, "Mara: Bye."),  # set in one branch only: no longer known after it
        (None, "Mara: Dear."),  # a declare's value is a default the game fills in
        None,
        ("Mara", "Still 3?"),  # values go on in the file's order
        None]
    assert stats.notes == ["t.yarn: 4 line(s) with an inline expression the script gives no literal value (a "
                           "`{$name}` the game fills in): context only, never a reply to learn (the value left out)"]


def test_a_whatsapp_contacts_emoji_stay_its_pronouns_go(tmp_path):
    chat = tmp_path / "wa.txt"
    chat.write_text("".join(f"12/31/23, 9:{i:02d} PM - {who}: {text} {i}\n" for i, (who, text) in enumerate(
        [("Alex 🎮", "are we raiding tonight"), ("Alex 🎨", "sorry, finishing a commission"),
         ("Dev (he/him)", "I can heal if nobody else wants to")] * 3)), encoding="utf-8")
    assert scan_speakers(chat) == {"Alex 🎮": 3, "Alex 🎨": 3, "Dev": 3}  # two people, told apart by emoji


def test_a_long_messenger_conversation_cut_into_files_is_read_as_one(tmp_path):
    thread = tmp_path / "alex_123"
    thread.mkdir()
    said = [("Sam Lee", "hey alex, long time no see!"), ("Alex Kim", "sam! how have you been?"),
            ("Sam Lee", "good, busy with the new job"), ("Alex Kim", "want to grab coffee tomorrow?"),
            ("Sam Lee", "sure, nine at the usual place?")]
    stamped = [{"sender_name": who, "timestamp_ms": 1714557600000 + 60000 * i, "content": text}
               for i, (who, text) in enumerate(said)]
    # the export cuts a long conversation into files of the newest messages first, each newest first too
    for name, part in (("message_1.json", stamped[3:]), ("message_2.json", stamped[:3])):
        (thread / name).write_text(json.dumps({"participants": [{"name": "Sam Lee"}, {"name": "Alex Kim"}],
                                               "messages": part[::-1]}), encoding="utf-8")
    out = tmp_path / "o.json"
    prepare(PrepareConfig(names=["Sam Lee"], txtfilename=str(thread), jsonfilename=str(out), filter_low_quality=False))
    records = json.loads(out.read_text(encoding="utf-8"))
    assert [(r["output"], r["source"]) for r in records] == [
        ("hey alex, long time no see!", "message_2.json:3"), ("good, busy with the new job", "message_2.json:1"),
        ("sure, nine at the usual place?", "message_1.json:1")]
    assert records[-1]["input"].startswith("Sam Lee: hey alex")  # the context runs across the files' cut
    assert scan_speakers(str(thread)) == {"Sam Lee": 3, "Alex Kim": 2}


def test_a_messenger_conversations_files_without_times_and_with_a_broken_message(tmp_path):
    thread = tmp_path / "alex_123"
    thread.mkdir()
    for name, words in (("message_1.json", ["newest one", "newest two"]), ("message_2.json", ["oldest one", "oldest two"])):
        (thread / name).write_text(json.dumps({"participants": [{"name": "Sam"}], "messages": [
            {"sender_name": "Sam" if i % 2 else "Alex", "content": w} for i, w in enumerate(words[::-1])]}),
            encoding="utf-8")
    out = tmp_path / "o.json"
    prepare(PrepareConfig(names=["*"], txtfilename=str(thread), jsonfilename=str(out), filter_low_quality=False))
    assert [r["output"] for r in json.loads(out.read_text(encoding="utf-8"))] == [  # no times: the oldest file first
        "oldest one", "oldest two", "newest one", "newest two"]
    (thread / "message_2.json").write_text(json.dumps({"participants": [], "messages": [
        {"sender_name": "Sam", "content": "hi"}, "oops"]}), encoding="utf-8")
    with pytest.raises(UserError, match=r"alex_123/message_2\.json: message 1 is not a JSON object"):
        prepare(PrepareConfig(names=["*"], txtfilename=str(thread), jsonfilename=str(out)))


def test_low_quality_counts_a_cjk_character_as_two(tmp_path):
    from extensions.dialogue_lora.dialogue import text_width

    assert text_width("thanks") == 6 and text_width("谢谢你帮我") == 10 and text_width("ｈｉ!") == 5
    assert text_width("😂😂😂") == 3 and text_width("好。") == 3  # emoji and CJK punctuation: wide, no letters
    # 16 characters, 32 columns: a message, not a short one; the same count of Latin letters is short
    cjk = "今天的会议改到下午三点了你知道吗"
    kept = export(tmp_path, [msg(1, "Alex", cjk), msg(2, "Sam", "好的")], "cjk.json")
    assert discord_turns(kept)[0] == [("Alex", cjk), ("Sam", "好的"), None]
    short = export(tmp_path, [msg(1, "Alex", "meeting moved to 3"), msg(2, "Sam", "ok")], "latin.json")
    assert discord_turns(short)[0] == []


def test_a_chat_logs_line_opening_with_a_quote_mark_is_the_authors_own(tmp_path):
    """`> ` quotes someone in Discord's and Slack's text only: a WhatsApp line keeps it (it was dropped whole)."""
    log = tmp_path / "wa.txt"
    log.write_text("01/05/2024, 10:00 - Alex: Are we still on for lunch today? I was thinking noon\n"
                   "01/05/2024, 10:01 - Bea: Yes! They have a new pasta now, I heard it is great\n"
                   "01/05/2024, 10:02 - Alex: > a new pasta\nOoh I will try that then, thanks for telling me\n",
                   encoding="utf-8")
    out = tmp_path / "o.json"
    prepare(PrepareConfig(names=["Alex"], txtfilename=str(log), jsonfilename=str(out), filter_low_quality=False))
    assert json.loads(out.read_text(encoding="utf-8"))[-1]["output"] == (
        "> a new pasta Ooh I will try that then, thanks for telling me")


def test_a_yarn_once_inside_an_if_keeps_its_else_to_itself():
    """`<<once>>` has an `<<else>>` of its own: it is not the if's."""
    script = """title: Start
---
<<if $met>>
    <<once>>
        Sally: Good to see you again.
    <<else>>
        Sally: You again.
    <<endonce>>
    Sally: So, what now?
<<else>>
    Sally: Hello, stranger.
<<endif>>
===
"""
    got = [t for t in yarn_turns(script, ReadStats()) if t is not None]
    assert got[:3] == [("Sally", "Good to see you again."), ("Sally", "You again."), ("Sally", "So, what now?")]
    assert got[3:] == [("Sally", "Hello, stranger.")]  # its own branch, from the context before the if


def test_macos_dot_underscore_files_on_a_fat_drive_are_not_read(tmp_path):
    """macOS writes `._NAME` (the file's Finder metadata, binary) beside every file it copies to a FAT,
    exFAT or network drive: a folder of exports failed on `._general.json` ('not JSON'), a game folder on
    `._script.rpy` ('a binary file'), and the tab listed them."""
    from extensions.dialogue_lora.paths import list_datasets

    apple = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + b"\x00" * 40
    exports = tmp_path / "exports"
    exports.mkdir()
    shutil.copy(ROOT / "examples" / "discord_export.json", exports / "general.json")
    (exports / "._general.json").write_bytes(apple)
    out = tmp_path / "o.json"
    assert prepare(PrepareConfig(names=["*"], txtfilename=str(exports), jsonfilename=str(out))).samples_written > 0
    game = tmp_path / "game"
    game.mkdir()
    shutil.copy(ROOT / "examples" / "renpy_script.rpy", game / "script.rpy")
    (game / "._script.rpy").write_bytes(apple)
    assert prepare(PrepareConfig(names=["*"], txtfilename=str(game), jsonfilename=str(out))).samples_written > 0
    (tmp_path / "bob.json").write_text("[]", encoding="utf-8")
    (tmp_path / "._bob.json").write_bytes(apple)
    assert list_datasets(tmp_path) == ["bob.json", "o.json"]


def _patched_zip(path: Path, member: str, *, flag_bits: int = 0, method: int | None = None) -> None:
    """Set a member's flag bits (1: encrypted) or compression method in both of the zip's headers, as a zip made
    with a password, or with AES (method 99), would have them."""
    import struct

    data = bytearray(path.read_bytes())
    name = member.encode()
    for sig, flag_at, method_at in ((b"PK\x03\x04", 6, 8), (b"PK\x01\x02", 8, 10)):
        at = data.index(sig)
        while data[at + (30 if sig == b"PK\x03\x04" else 46): ].find(name) != 0:
            at = data.index(sig, at + 4)
        if flag_bits:
            struct.pack_into("<H", data, at + flag_at, struct.unpack_from("<H", data, at + flag_at)[0] | flag_bits)
        if method is not None:
            struct.pack_into("<H", data, at + method_at, method)
    path.write_bytes(bytes(data))


def test_zips_that_cannot_be_read_whole_are_one_line(tmp_path, monkeypatch):
    """A member that unpacks past what a script or an export holds (a zip bomb: memory ran out), one with a
    password, one packed with AES: each one line naming it, for a Slack export and a Ren'Py game alike (the
    Slack ones were tracebacks, AES was 'zip it again without a password')."""
    import zipfile

    from extensions.dialogue_lora import fileio

    slack = tmp_path / "slack.zip"
    game = tmp_path / "game.zip"

    def build():
        with zipfile.ZipFile(slack, "w") as z:
            z.writestr("users.json", "[]")
            z.writestr("channels.json", "[]")
            z.writestr("general/2024-05-01.json", json.dumps(SLACK_DAY))
        shutil.copy(ROOT / "examples" / "renpy_script.rpy", tmp_path / "script.rpy")
        with zipfile.ZipFile(game, "w") as z:
            z.write(tmp_path / "script.rpy", "game/script.rpy")

    def refused(path, pattern):
        with pytest.raises(UserError, match=pattern):
            prepare(PrepareConfig(names=["*"], txtfilename=str(path), jsonfilename=str(tmp_path / "o.json")))

    build()
    monkeypatch.setattr(fileio, "ZIP_MEMBER_LIMIT", 1000)  # (a real bomb: 2 GB of zeros in 2 MB)
    refused(slack, r"slack.zip:general/2024-05-01.json: unpacks to more than 0 MB, which no script or chat export")
    refused(game, r"game.zip: game/script.rpy: unpacks to more than 0 MB")
    monkeypatch.undo()
    _patched_zip(slack, "general/2024-05-01.json", flag_bits=1)
    _patched_zip(game, "game/script.rpy", flag_bits=1)
    refused(slack, r"general/2024-05-01.json: cannot be read \(.*encrypted.*\): zip it again without a password")
    refused(game, r"game/script.rpy: cannot be read \(.*encrypted.*\): zip it again without a password")
    build()
    _patched_zip(slack, "general/2024-05-01.json", method=99)
    _patched_zip(game, "game/script.rpy", method=99)
    refused(slack, r"general/2024-05-01.json: packed in a way this Python cannot unpack .*: zip it again as a plain")
    refused(game, r"game/script.rpy: packed in a way this Python cannot unpack")


def test_a_chat_export_saved_as_utf16_is_read(tmp_path):
    """Saved again by a Windows tool as "Unicode" (UTF-16 with its byte-order mark), as text files are read:
    it was 'not JSON' and the advice was the --source auto already in use; cut short, it is one line."""
    export = tmp_path / "general.json"
    export.write_text((ROOT / "examples" / "discord_export.json").read_text(encoding="utf-8"), encoding="utf-16")
    out = tmp_path / "o.json"
    plain = tmp_path / "p.json"
    prepare(PrepareConfig(names=["*"], txtfilename=str(export), jsonfilename=str(out)))
    prepare(PrepareConfig(names=["*"], txtfilename=str(ROOT / "examples" / "discord_export.json"), jsonfilename=str(plain)))
    assert out.read_text(encoding="utf-8") == plain.read_text(encoding="utf-8").replace("discord_export.json",
                                                                                         "general.json")
    export.write_bytes(export.read_bytes() + b"A")
    with pytest.raises(UserError, match=r"general.json: not UTF-16 text after its byte-order mark \(byte \d+\)"):
        prepare(PrepareConfig(names=["*"], txtfilename=str(export), jsonfilename=str(out)))
