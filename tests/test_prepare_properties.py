"""Properties (hypothesis): any input gives samples or the project's own clear error, never anything else;
samples are always one line and always the prompt.py prompt; the hot path agrees with the general parser."""
from __future__ import annotations

import json
import string
import unicodedata

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from extensions.dialogue_lora import prompt, subtitles
from extensions.dialogue_lora.dialogue import (LAYOUTS, _BARE_NICK, _LOG_SESSION, _SCENE_BREAK, ReadStats, _split_speaker,
                                               clean_text, parse_lines, split_speaker)
from extensions.dialogue_lora.errors import UserError
from extensions.dialogue_lora.prepare import PrepareConfig, prepare
from extensions.dialogue_lora.samples import iter_samples

NAMES = ["Bob", "bob", "Alice", "Mr. Smith", "O'Neil", "ROMEO", "José"]
line_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
speaker_line = st.builds(lambda n, sep, t: f"{n}{sep}{t}", st.sampled_from(NAMES), st.sampled_from([":", ": ", " : ", ":  "]), line_text)
# names of several words, some not names (`Written by:`, `At the door:`), before a colon and what follows it
name_word = st.sampled_from(["Bob", "Mr.", "Dr", "O'Neil", "the", "At", "Scene", "Written", "by", "Guard", "7",
                             "Sage-7", "ROMEO", "x_y", "From", "to", "Everyone", "said", "Note", "Editor's", "note", "",
                             " ", "  "])
prefixed_line = st.builds(lambda words, sep, t: " ".join(words) + sep + t, st.lists(name_word, min_size=1, max_size=7),
                          st.sampled_from([":", ": ", " :", ":/", "://", ":1", ": 1", ":²", ":٣", ":①"]),
                          st.text(alphabet=string.printable + "é：²٣", max_size=20))
# the shapes the layouts' rewrites look for: film-script cues and marks, Gutenberg's cues, bracketed names,
# headings, a header's fields
shaped_line = st.sampled_from(["BOB", "               BOB (V.O.)", "          ROMEO (CONT'D)", "(MORE)", "12.",
                               "INT. HOUSE - DAY", "3   EXT. ROAD - NIGHT   3", "@Bob", "CUT TO:", "BOB.  Hello there.",
                               "ROMEO.", "[Bob] Hi.", "[_Aside._]", "SCENE II. A street.", "Title: x", "> x <",
                               "[[note]]", "/* cut */", ".THE ROOF", "!BANG.", "*Bob:* hi", ">> BOB: hi", "Guard #1: halt"])
any_line = st.one_of(speaker_line, line_text, shaped_line, st.just(""), st.just("Bob:"), st.just("ROMEO:"))
document = st.lists(any_line, max_size=25).map("\n".join)
raw_bytes = st.binary(max_size=300)

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _run(tmp_path, data: bytes, **kw):
    src = tmp_path / "in.txt"
    src.write_bytes(data)
    out = tmp_path / "out.json"
    if out.exists():
        out.unlink()
    cfg = PrepareConfig(names=kw.pop("names", ["Bob"]), txtfilename=str(src), jsonfilename=str(out), **kw)
    try:
        report = prepare(cfg)
    except UserError as e:
        assert str(e) and "Traceback" not in str(e)
        assert not out.exists()
        return None
    return json.loads(out.read_text(encoding="utf-8")), report


@FAST
@given(doc=document, rounds=st.integers(0, 6), strip=st.booleans(), layout=st.sampled_from(LAYOUTS))
def test_any_text_gives_samples_or_user_error(tmp_path, doc, rounds, strip, layout):
    got = _run(tmp_path, doc.encode("utf-8"), rounds=rounds, strip_actions=strip, layout=layout)
    if got is None:
        return
    records, report = got
    assert report.samples_written == len(records) > 0
    for r in records:
        assert "\n" not in r["output"] and r["output"] == r["output"].strip() and r["output"]
        assert r["input"].endswith(r["name"] + ":") and r["name"].casefold() == "bob"
        assert r["input"].count("\n") <= rounds
        assert prompt.record_segments(r)[1] == (prompt.completion(r["output"]), True)


@FAST
@given(data=raw_bytes, fmt=st.sampled_from(["rounds", "alpaca", "sharegpt", "messages"]))
def test_any_bytes_give_samples_or_user_error(tmp_path, data, fmt):
    got = _run(tmp_path, data, names=["*"], format=fmt)
    if got is not None:
        prompt.validate_records(got[0])


@FAST
@given(data=st.one_of(raw_bytes, document.map(lambda d: d.encode())), source=st.sampled_from(["discord", "csv"]))
def test_other_sources_never_crash(tmp_path, data, source):
    _run(tmp_path, data, names=["*"], source=source)


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(st.one_of(speaker_line, line_text), max_size=20), rounds=st.integers(0, 5))
def test_input_equals_build_prompt(lines, rounds):
    turns = [t for t in parse_lines([x + "\n" for x in lines], "p.txt", "lines") if t is None or t.text]
    by_line = {t.line: i for i, t in enumerate(turns) if t is not None}
    for s in iter_samples(turns, ["*"], rounds=rounds, dedupe=False):
        i = by_line[int(s.source.rsplit(":", 1)[1])]
        before = turns[max(0, i - rounds) : i] if rounds else []
        while None in before:  # a break (`***`, a scene's end) starts a new conversation
            before = before[before.index(None) + 1 :]
        assert s.input == prompt.build_prompt([(t.speaker, t.text) for t in before], s.name)


@settings(max_examples=500, deadline=None)
@given(line=st.one_of(speaker_line, prefixed_line, st.text(alphabet=string.printable, max_size=60)))
def test_hot_path_agrees_with_split_speaker(line):
    """The ASCII shortcut in the one-line parser gives what the general rule gives."""
    line = line.replace("\r", " ").replace("\n", " ").replace("\x0b", " ").replace("\x0c", " ")
    got = list(parse_lines([line + "\n"], "x", "lines", ReadStats()))
    text = clean_text(line)
    hit = split_speaker(text) if text else None
    nick = _BARE_NICK.fullmatch(text) if text else None
    if nick is not None:  # a chat log's `<nick> text` (no time before it)
        hit = (nick.group(1), nick.group(2))
    if not text or subtitles.kind([line]) in ("ass", "srt"):  # `[Script Info]`, `WEBVTT`: a subtitle file's header
        assert got == []
    elif hit is None and (_SCENE_BREAK.fullmatch(text) or text.startswith(_LOG_SESSION)):  # `***`, irssi's `--- Log
        assert got == [None]  # opened`: a scene break, no turn
    elif hit is None:
        assert [(t.speaker, t.text) for t in got] == [(None, text)]
    else:
        assert [(t.speaker, t.text) for t in got] == [(hit[0], hit[1].strip())]


@settings(max_examples=1000, deadline=None)
@given(line=st.one_of(prefixed_line, speaker_line, st.text(alphabet=string.printable + "é：(²٣", max_size=60),
                     prefixed_line.map(lambda s: ">> " + s), prefixed_line.map(lambda s: "[" + s.replace(":", "]:", 1))))
def test_the_cached_plain_names_agree_with_the_whole_rule(line):
    """split_speaker's cache of plain `Name:` prefixes gives what the rule itself gives, line by line (the
    rule calls split_speaker for `>> Name:` and `[Name]:`: the cache is off for the reference)."""
    from extensions.dialogue_lora import dialogue

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dialogue, "_plain_split", lambda _line: False)
        expected = _split_speaker(line)
    assert split_speaker(line) == expected


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=80))
@example("0\r\x00")  # a NUL after the last space was taken out after the spaces were: '0 ' was left
@example("Mi\x1b[31mra \x1b]0;pwned\x07")  # a terminal's escape codes in a name (they cleared the screen)
def test_clean_text_is_one_clean_line(text):
    out = clean_text(text)
    assert out == " ".join(out.split()) and prompt.one_line(out) == out
    assert not any(unicodedata.category(c) == "Cc" for c in out)  # no terminal escape, no NUL


json_scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=12))
json_value = st.recursive(json_scalar, lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(st.text(max_size=8), c, max_size=3)), max_leaves=8)
message = st.fixed_dictionaries(
    {},
    optional={
        "type": st.one_of(st.sampled_from(["Default", "Reply", "GuildMemberJoin"]), json_value),
        "timestamp": st.one_of(st.just("2024-05-01T10:00:00.000+00:00"), json_value),
        "content": st.one_of(st.text(max_size=30), json_value),
        "author": st.one_of(
            st.fixed_dictionaries({}, optional={"name": st.one_of(st.sampled_from(["Bob", "amy"]), json_value),
                                                "nickname": json_value, "isBot": json_value, "id": json_value}),
            json_value,
        ),
        "mentions": json_value,
        "attachments": json_value,
    },
)


@FAST
@given(messages=st.lists(st.one_of(message, json_value), max_size=6), gap=st.floats(0.1, 100))
def test_odd_discord_exports_give_samples_or_user_error(tmp_path, messages, gap):
    data = json.dumps({"messages": messages}).encode()
    src = tmp_path / "export.json"
    src.write_bytes(data)
    out = tmp_path / "o.json"
    if out.exists():
        out.unlink()
    try:
        prepare(PrepareConfig(names=["*"], txtfilename=str(src), jsonfilename=str(out), gap_minutes=gap))
    except UserError as e:  # one line naming the file, nothing written
        assert str(e) and "\n" not in str(e) and "export.json" in str(e) and not out.exists(), str(e)
        return
    prompt.validate_records(json.loads(out.read_text(encoding="utf-8")))


# the shapes of the apps' text exports (chatexports.py), mixed with anything
export_line = st.sampled_from([
    "[LINE] Chat history with Mira", "Saved on: 2024/01/16 10:30", "2024/01/15(Mon)", "Mon, 01/15/2024",
    "21:00\tAlex\tHey", "09:01PM\tMira\t\"Two", "lines\"", "21:08\tAlex unsent a message.", "21:02\tMira\t[Sticker]",
    "--------------- 2024년 1월 15일 월요일 ---------------", "[준호] [오후 9:00] 안 자?", "2024. 1. 15. 오후 9:00, 준호 : 응",
    "January 15, 2024, 9:00 PM, Alex : Hey", "January 15, 2024, 9:00 PM", "민지님이 나갔습니다.", "Date Saved : x",
    "Jan 15, 2024  9:00:00 PM", "Jan 15, 2024  9:00:00 PM Me named the conversation X", "Me", "Tapbacks:",
    "    Loved by Me", "/Users/a/IMG_1.HEIC", "2024-01-15 21:00:00 小明", "引用:小红:嗨", "[图片]",
    "2024-01-15 21:08:00 \"小明\" 撤回了一条消息", "[2024-01-15 21:00:00] Me: hi", "(( 😂 ))", "(- Me: ❤️ -)",
    "![a.jpg](./media/a.jpg)", "> quoted"])


@FAST
@given(lines=st.lists(st.one_of(export_line, any_line), max_size=30))
def test_app_text_exports_keep_their_lines_and_never_crash(tmp_path, lines):
    from extensions.dialogue_lora import chatexports

    app = chatexports.kind([f"{x}\n" for x in lines])
    if app is not None:  # one line out per line in, so that sources stay the file's lines
        assert len(list(chatexports.lines_of([f"{x}\n" for x in lines], app))) == len(lines)
    _run(tmp_path, "\n".join(lines).encode(), names=["*"])
