"""Text -> turns: speaker detection, cleaning, actions, both layouts, robust reading (golden outputs)."""
from __future__ import annotations

import os

import pytest

from extensions.dialogue_lora.dialogue import (
    BREAK,
    ReadStats,
    Turn,
    check_text_file,
    clean_text,
    detect_layout,
    iter_text_turns,
    parse_lines,
    split_speaker,
    strip_actions,
)
from extensions.dialogue_lora.errors import UserError
from extensions.dialogue_lora.prepare import PrepareConfig, preview


def turns(text: str, layout: str = "auto") -> list[tuple]:
    return [None if t is None else (t.speaker, t.text) for t in parse_lines(text.splitlines(True), "f.txt", layout)]


def located(text: str, file: str, **kw) -> list[tuple]:
    """(speaker, text, line) of each turn read from `text` as the file `file` (breaks left out)."""
    return [(t.speaker, t.text, t.line) for t in parse_lines(text.splitlines(True), file, **kw) if t is not None]


@pytest.mark.parametrize(
    "line, expected",
    [
        ("Alice: Hi Bob!", ("Alice", " Hi Bob!")),
        ("Bob:Boo!", ("Bob", "Boo!")),
        ("Bob :  spaced", ("Bob", "  spaced")),
        ("Mr. Smith: Good day.", ("Mr. Smith", " Good day.")),
        ("O'Brien: Aye.", ("O'Brien", " Aye.")),
        ("Mary-Jane: Hey.", ("Mary-Jane", " Hey.")),
        ("First Citizen: Speak.", ("First Citizen", " Speak.")),
        ("Ghost of King Henry VI: Despair!", ("Ghost of King Henry VI", " Despair!")),
        ("R2D2: Beep.", ("R2D2", " Beep.")),
        ("José: Hola.", ("José", " Hola.")),
        ("Bob: At 10:30 we left.", ("Bob", " At 10:30 we left.")),
        ("Bob:", ("Bob", "")),
        ("At 10:30 we left.", None),  # a time, not a speaker
        ("http://example.com is down", None),  # a URL
        ("see https://example.com", None),
        ("1Bob: hi", None),  # a name starts with a letter
        ("_Bob: hi", None),
        ("but they think we are too dear: the leanness", None),  # 7 words: not a name
        ("A" * 41 + ": too long", None),
        ("Senators, &C:", None),
        ("Luna 🌙: brb", ("Luna", " brb")),  # a chat name's emoji are decoration, not the name
        ("Mx. Chaos ✨: it was me", ("Mx. Chaos", " it was me")),
        ("🔥Blaze🔥: hey", ("Blaze", " hey")),
        ("🔥: lol", None),  # no name at all
        ("[SPEAKER_00]: So what did you think?", ("SPEAKER_00", " So what did you think?")),  # whisperX
        ("[Scene]: a bar", None),
        ("[docs]: https://example.org/docs", None),  # a markdown link's definition
        ("[Edit]: fixed a typo", None),
        ("[Edit 2]: and another", None),
        ("[guide]: docs/GUIDE.md", None),  # a markdown reference link
        ("[SPEAKER_01]: /r/books loved it", ("SPEAKER_01", " /r/books loved it")),
        ("[SPEAKER_01]: Yeah.", ("SPEAKER_01", " Yeah.")),  # one word, no link
        ("\ufe0fBob: yes", ("Bob", " yes")),  # a selector alone before a name
        ("Bug 🐛: found it", ("Bug", " found it")),  # a nickname that is a label word, decorated after
        ("🚀 Features: fast", None),  # a label's icon, not a decorated name
        ("🚨 BREAKING 🚨: the bridge is closed", None),
        ("🌸Sakura: hi", ("Sakura", " hi")),  # a nickname's glued emoji
        ("Bob (w/ Alice): hi", ("Bob", "(w/ Alice) hi")),  # no pronouns: a direction
        ("Date: Mon, Nov 3, 2026 at 7:03 PM", None),
        ("Betreff: Reise", None),
        ("From: Jane Doe <jane@example.com>", None),  # an e-mail's header lines
        ("Subject: RE: Friday deadline", None),
        ("To: Bob Smith", None),
        ("Dev (he/him): focus", ("Dev", " focus")),  # pronouns say who, not how
        ("Sam (They / Them) (softly): hi", ("Sam", "(softly) hi")),
        ("", None),
        ("no colon here", None),
    ],
)
def test_split_speaker(line, expected):
    assert split_speaker(line) == expected


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("I donâ€™t know.", "I don't know."),
        ("  lots   of\tspace \n", "lots of space"),
        ("plain ascii", "plain ascii"),
        ("café au lait", "café au lait"),
        ("ＦＵＬＬ width １２", "FULL width 12"),
        ("ｶﾀｶﾅ ﾊﾞｶ", "カタカナ バカ"),  # half-width katakana widened, the sound mark joined
        ("你好，李雷！（笑）", "你好，李雷！（笑）"),  # CJK full-width punctuation is how the language writes it
        ("他说：\u201c你好。\u201d", "他说：\u201c你好。\u201d"),  # and so are its curly quotes
        ("O\u2019Brien：\u201c你好‘啊’。\u201d", "O'Brien：\u201c你好‘啊’。\u201d"),  # but not a Latin name's apostrophe
        ("She said \u201chi\u201d, it\u2019s fine.", "She said \"hi\", it's fine."),  # straightened elsewhere
        ("a\u00a0b\u2028c", "a b c"),
    ],
)
def test_clean_text(raw, expected):
    assert clean_text(raw) == expected


def test_clean_text_counts_replaced_bytes_and_repairs():
    stats = ReadStats()
    # b"caf\xe9 \xff" read with surrogateescape: two undecodable bytes
    text = b"caf\xe9 \xff ok".decode("utf-8", "surrogateescape")
    assert clean_text(text, stats) == "caf\ufffd \ufffd ok"
    assert stats.replaced_bytes == 2
    clean_text("donâ€™t", stats)
    assert stats.repaired_lines == 1
    clean_text("李雷：你好，韩梅梅。", stats)  # clean Chinese is not a repair
    assert stats.repaired_lines == 1


@pytest.mark.parametrize(
    "text, expected",
    [
        ("*waves* Hi there.", "Hi there."),
        ("Hello (laughs) there.", "Hello there."),
        ("Hello (laughs).", "Hello."),
        ("(sighs)", ""),
        ("*sighs* Fine, I'll be there at 8:30.", "Fine, I'll be there at 8:30."),
        ("2 * 3 = 6", "2 * 3 = 6"),  # a lone asterisk is not an action
        ("5 * 3 = 15 and 2 * 2 = 4", "5 * 3 = 15 and 2 * 2 = 4"),  # nor are stars with spaces inside
        ("this is **very** important", "this is **very** important"),  # markdown bold
        ("*looks away* fine *sighs*", "fine"),
        ("(laughs (a lot)) ok", "ok"),  # nested: the outer part goes too
        ("[whispering] psst", "psst"),
        ("no action", "no action"),
        # starred words that are not a verb of action are emphasis: dropping them would turn the meaning round
        ("*looks away* I *never* said that", "I *never* said that"),
        ("We *must* go *now*!", "We *must* go *now*!"),
        ("*Never* say that again.", "*Never* say that again."),
        ("That is *so not* okay, Bob.", "That is *so not* okay, Bob."),
        ("that is *so* cool *grins*", "that is *so* cool"),
        ("Hello. *smiles* How are you?", "Hello. How are you?"),
        ("Hi *waves* how are you", "Hi how are you"),
        ("*waves* *smiles* Hi", "Hi"),
        ("*sigh* fine, *laughing* ok", "fine, ok"),
        ("*this* is it", "*this* is it"),
        # emphasis the sentence runs through, or a word that only looks like a verb (-s, -ing)
        ("*Nothing* happened, I swear", "*Nothing* happened, I swear"),
        ("Good *morning* everyone", "Good *morning* everyone"),
        ("*Wedding* is on Saturday", "*Wedding* is on Saturday"),
        ("Happy *Thanksgiving*", "Happy *Thanksgiving*"),
        ("This is *amazing*", "This is *amazing*"),
        ("*Bring* snacks please", "*Bring* snacks please"),
        ("*Thanks* a lot", "*Thanks* a lot"),
        ("*Tickets* are sold out", "*Tickets* are sold out"),
        ("*Rules*: no spoilers", "*Rules*: no spoilers"),
        ("*smiles* Is that so?", "Is that so?"),
        ("*laughs* are you serious", "are you serious"),
        ("ok *laughs*", "ok"),
        # roleplay narrates actions with a subject, or in whole sentences
        ("*She laughs softly.* Guardians do not sleep.", "Guardians do not sleep."),
        ("*he nodded* fine", "fine"),
        ("*evil laugh* fine", "fine"),
        ("*long pause*", ""),
        # a capital subject is the speaker's name (below) or emphasis
        ("*Seraphina smiles warmly* Welcome.", "*Seraphina smiles warmly* Welcome."),
        ("*Nobody cares* about that.", "*Nobody cares* about that."),
        ("*Dad says* dinner is at 7", "*Dad says* dinner is at 7"),
        ("*This changes everything.*", "*This changes everything.*"),
        ("It *works* now!", "It *works* now!"),
        ("*Sounds* good to me.", "*Sounds* good to me."),
        ("*Smiles* Hello", "Hello"),
        ("I failed again (T_T)", "I failed again (T_T)"),
        ("yay (ノ°▽°)ノ", "yay (ノ°▽°)ノ"),
        ("*This is* the one", "*This is* the one"),
        ("*she* did it, not me", "*she* did it, not me"),
        ("*It* worked", "*It* worked"),
        # brackets with numbers, links or a face in them are text
        ("See you at 5 (or 6).", "See you at 5 (or 6)."),
        ("[link](http://x.com) and [citation needed]", "[link](http://x.com) and"),
        ("(╯°□°)╯︵ ┻━┻", "(╯°□°)╯︵ ┻━┻"),
    ],
)
def test_strip_actions(text, expected):
    assert strip_actions(text) == expected


def test_strip_actions_takes_gutenbergs_italic_directions_and_full_width_brackets():
    assert strip_actions("[_Aside._] Most sure too.") == "Most sure too."
    assert strip_actions("Hello [_Exit._]") == "Hello"
    assert strip_actions("（冷笑）你来了。") == "你来了。"
    assert strip_actions("(T_T) hi") == "(T_T) hi" and strip_actions("[_] x") == "[_] x"  # faces stay


def test_header_fields_and_film_extensions_are_no_speakers_or_directions():
    for label in ["Author's Note: hi", "Transcriber's Note: fixed", "OOC: brb", "Re: hello"]:  # wherever they stand
        assert split_speaker(label) is None, label
    # two spaces in the label, an empty bracketed label: narration (the second raised IndexError)
    assert turns("Anna: hi\nEditor's  note: this was cut.\n[ ]: hello\nBob: ok\n") == [
        ("Anna", "hi"), (None, "Editor's note: this was cut."), (None, "[ ]: hello"), ("Bob", "ok")]
    # a header's fields before anyone speaks are narration; after that, and in capitals, speakers like any
    header = ("Title: Romeo and Juliet\nAuthor: William Shakespeare\nRelease Date: May 1\nLanguage: English\n"
              "Rating: T\nPairing: A/B\nDisclaimer: not mine\nCredit: Written by\nDraft date: 1/1\n")
    assert all(t[0] is None for t in turns(header + "Bob: hi\n")[:-1]) and turns(header + "Bob: hi\n")[-1] == ("Bob", "hi")
    assert turns("INTERVIEWER: When?\nTRANSLATOR: In winter.\nEditor: Cut.\n") == [
        ("INTERVIEWER", "When?"), ("TRANSLATOR", "In winter."), ("Editor", "Cut.")]
    assert turns("CONTACT: You're late.\nMIKE: Traffic.\n")[0] == ("CONTACT", "You're late.")
    assert split_speaker("LEO (V.O.): I should have.") == ("LEO", " I should have.")
    assert split_speaker("MAYA (CONT'D): Did you?") == ("MAYA", " Did you?")
    assert split_speaker("BOB (angrily) (O.S.): Out!") == ("BOB", "(angrily) Out!")


def test_iso_8601_stamps_before_a_sender():
    log = "2024-01-05T21:00:03Z alex: hey\n2024-01-05T21:00:09.5+01:00 sam: yo\n2024-01-05T21:01:00Z alex: 10:30 then\n"
    assert turns(log) == [("alex", "hey"), ("sam", "yo"), ("alex", "10:30 then")]


def test_a_game_servers_log_and_a_plays_list_of_persons():
    log = ("[21:15:03] [Server thread/INFO]: <Steve> hi\n"
           "[21:15:05] [Server thread/INFO] [minecraft/MinecraftServer]: <Alex> hey steve\n")
    assert turns(log) == [("Steve", "hi"), ("Alex", "hey steve")]
    play = "DRAMATIS PERSONAE.\nROMEO, son to Montague.\n\nROMEO.\nAdieu.\n\nJULIET.\nAnon!\n\nROMEO.\nBye.\n"
    assert turns(play)[0] == (None, "DRAMATIS PERSONAE. ROMEO, son to Montague.")


def test_a_game_dump_with_its_speakers_in_brackets():
    dump = "[Geralt] Wind's howling.\n[Vesemir] Right.\n[Geralt] Go.\n[laughs] ok\n[Vesemir] Fine.\n[Geralt] Hm.\n[Vesemir] On.\n"
    assert turns(dump)[:5] == [("Geralt", "Wind's howling."), ("Vesemir", "Right."), ("Geralt", "Go."),
                               (None, "[laughs] ok"), ("Vesemir", "Fine.")]
    # in such a dump a speaker with two lines is one too (a label used once is none); a short excerpt of two
    # speakers, two lines each, is one
    assert ("Ciri", "I know.") in turns(dump + "[Ciri] I know.\n[Ciri] Go.\n")
    assert (None, "[Persuade] You owe me.") in turns(dump + "[Persuade] You owe me.\n")
    assert turns("[Geralt] Wind's howling.\n[Ciri] I know.\n[Geralt] Go.\n[Ciri] Fine.\n")[1] == ("Ciri", "I know.")
    assert turns("[Geralt] Wind.\n[Ciri] I know.\n[Flashback] Years ago.\n[Geralt] Go.\n[Ciri] Fine.\n")[2] == (
        None, "[Flashback] Years ago.")
    # a transcript whose speakers have colons keeps its bracketed directions as they are
    script = "Bob: hi\n[Aside] He lies.\nAnn: no\n[Aside] She lies.\nBob: yes\n[Aside] Both lie.\nAnn: ok\n[Ann] x\n"
    assert (None, "[Aside] He lies.") in turns(script) and (None, "[Ann] x") in turns(script)


def test_a_wiki_transcript_table_copied_from_a_browser():
    text = "Transcript\nCharacter\tDialogue\nSpongeBob\tI'm ready!\nPatrick\tMe too.\nSpongeBob\tLet's go!\n"
    assert turns(text) == [(None, "Transcript"), ("SpongeBob", "I'm ready!"), ("Patrick", "Me too."),
                           ("SpongeBob", "Let's go!")]
    # a row of many tabs, or three cells: read at once (a regex once took seconds on such lines)
    import time
    start = time.perf_counter()
    assert turns("Bob" + "\t" * 5000 + "\n" + ("Bob\t" + "x" * 4000 + "\tneutral\n") * 100)[0] == (None, "Bob")
    assert time.perf_counter() - start < 5
    # a few tabbed lines in a script are its own business
    script = "Bob: hi\nAmy: yo\nBob: x\nAmy: y\nTOTAL\t42\n"
    assert turns(script)[-1] == (None, "TOTAL 42")


def test_a_roleplayers_out_of_character_line_is_not_the_characters():
    assert split_speaker("Thorin (OOC): lol she's bossy") is None and split_speaker("Thorin [ooc]: brb") is None
    assert split_speaker("Thorin (angrily): No!") == ("Thorin", "(angrily) No!")


def test_a_transcripts_transitions_are_no_ones_names():
    assert [split_speaker(s) for s in ("CUT TO:", "SMASH CUT TO:", "Fade in:", "DISSOLVE TO: later")] == [None] * 4
    text = "FADE IN:\nBob: hi\nAmy: hello\nCUT TO:\nEXT. COFFEE SHOP - DAY\nBob: coffee?\nCut to the chase.\n"
    assert turns(text) == [("Bob", "hi"), ("Amy", "hello"), None, (None, "EXT. COFFEE SHOP - DAY"),
                           ("Bob", "coffee?"), (None, "Cut to the chase.")]  # the slugline starts a new conversation
    assert turns("Amy: hi\nBob:\nCUT TO:\nBob: yes\n") == [("Amy", "hi"), ("Bob", ""), ("Bob", "yes")]  # no one's words


def test_a_transcripts_time_after_the_name_is_no_ones_words():
    text = "Speaker 1: [00:00:01] Hello there.\nBob: (00:10) Sure.\nSpeaker 2: [00:00:09]\nI mean it.\nBob: at 10:30\n"
    assert turns(text) == [("Speaker 1", "Hello there."), ("Bob", "Sure."), ("Speaker 2", "I mean it."),
                           ("Bob", "at 10:30")]


def test_a_chat_pasted_into_a_markdown_list_keeps_its_speakers():
    assert [split_speaker(s) for s in ("- **Bob:** hi", "* *Bob:* hi", "***Bob:*** hi", "\u2022 **Amy**: yo")] == [
        ("Bob", " hi"), ("Bob", " hi"), ("Bob", " hi"), ("Amy", " yo")]
    # a list item that names no one, a list's field, an IRC action, a note: as before; a long run of marks
    assert [split_speaker(s) for s in ("- hello there", "- Milk: 2 liters", "1. Morning: keys", "* Bob waves",
                                       "- Note: x", "* " * 600, "- " * 600)] == [None] * 7


def test_numbered_extras_italic_names_and_caption_marks_are_speakers():
    assert split_speaker("Guard #1: Halt!") == ("Guard #1", " Halt!")
    assert split_speaker("*Bob:* Fine.") == ("Bob", " Fine.") and split_speaker("_Bob_: Fine.") == ("Bob", " Fine.")
    assert split_speaker(">> ALICE: Fine.") == ("ALICE", " Fine.")  # a TV caption's new speaker
    assert split_speaker("*waves* hi: there") is None and split_speaker("Item #3 is: good") is None


def test_an_irc_logs_sessions_are_conversations_and_chat_senders_lose_their_marks():
    log = ("--- Log opened Mon Jan 01 10:00:00 2024\n10:00 <alex> hi\n10:01 <sam> yo\n"
           "--- Log closed Mon Jan 01 11:00:00 2024\n--- Log opened Tue Mar 05 10:00:00 2024\n10:00 <alex> back\n")
    assert turns(log) == [None, ("alex", "hi"), ("sam", "yo"), None, None, ("alex", "back")]
    wa = "[31.12.23, 21:22:00] Alex: hi\n[31.12.23, 21:23:00] ~\u202fJordan: can I come?\n"
    assert turns(wa) == [("Alex", "hi"), ("Jordan", "can I come?")]  # an iPhone's unsaved contact
    piped = "2024-01-05 21:00 | alex: hey\n2024-01-05 21:01 | sam: yo\n"
    assert turns(piped) == [("alex", "hey"), ("sam", "yo")]


def test_strip_actions_knows_the_speakers_name():
    assert strip_actions("*Seraphina smiles warmly* Welcome.", "Seraphina") == "Welcome."
    assert strip_actions("*garrick chuckles* ok.", "Garrick the Bold") == "ok."
    assert strip_actions("*Dad says* dinner is at 7", "Seraphina") == "*Dad says* dinner is at 7"
    assert strip_actions("*Seraphina nodded* Yes.", "Seraphina") == "Yes."


def test_lines_layout_golden():
    text = (
        "Alice: Hi Bob!\n"
        "Bob:Boo!\n"
        "The rain starts to fall.\n"
        "\n"
        "Bob:\n"
        "Alice:   Lots   of   space  \n"
        "At 10:30 they left.\n"
    )
    assert turns(text) == [
        ("Alice", "Hi Bob!"),
        ("Bob", "Boo!"),
        (None, "The rain starts to fall."),
        ("Bob", ""),  # an empty turn: counted, never a sample
        ("Alice", "Lots of space"),
        (None, "At 10:30 they left."),
    ]


def test_a_name_alone_takes_the_lines_below_it_as_its_speech():
    """A transcript that writes some speeches under their name: `Bob:` alone took no text, and its speech was
    narration in the next turn's context."""
    text = ("Alice: Did you bring me anything?\nBob:\nOf course!\nHere, a little souvenir.\nAlice: Oh wow.\n"
            "Carol:\n\nThe rain starts.\nBob:\n")
    assert turns(text, "lines") == [("Alice", "Did you bring me anything?"),
                                    ("Bob", "Of course! Here, a little souvenir."),  # to the next turn
                                    ("Alice", "Oh wow."), ("Carol", ""),  # a blank line ends it: empty
                                    (None, "The rain starts."), ("Bob", "")]
    got = list(parse_lines(text.splitlines(True), "t.txt", layout="lines"))
    assert [t.line for t in got] == [1, 2, 5, 6, 8, 9]  # the speech's source is its name's line


def test_a_transcript_mixing_names_alone_and_inline_keeps_each_turn():
    """No blank lines, names mostly inline and a few alone above their speech: read as a play, `Carol: ...`
    and `Dave: ...` (never seen before) were glued to the speech above them."""
    text = ("Alice: Hi Bob, how was your trip?\nBob: It was great.\nAlice:\nDid you bring me anything?\nBob:\n"
            "Of course!\nCarol: Hey you two.\nAlice: Bob brought me a gift.\nCarol:\nReally? Thank you!\n"
            "Dave: What about me?\nBob: Sorry Dave.\n")
    assert turns(text) == [("Alice", "Hi Bob, how was your trip?"), ("Bob", "It was great."),
                           ("Alice", "Did you bring me anything?"), ("Bob", "Of course!"), ("Carol", "Hey you two."),
                           ("Alice", "Bob brought me a gift."), ("Carol", "Really? Thank you!"),
                           ("Dave", "What about me?"), ("Bob", "Sorry Dave.")]


def test_lines_layout_keeps_positions():
    got = list(parse_lines(["Alice: a\n", "\n", "Bob: b\n"], "x.txt"))
    assert got == [Turn("Alice", "a", "x.txt", 1), Turn("Bob", "b", "x.txt", 3)]
    assert got[1].source == "x.txt:3"


def test_play_layout_golden():
    text = (
        "ROMEO:\n"
        "But soft, what light\n"
        "through yonder window breaks?\n"
        "\n"
        "JULIET:\n"
        "Come: it is the east,\n"
        "and Juliet: the sun.\n"
        "\n"
        "Enter NURSE\n"
        "\n"
        "NURSE:\n"
        "\n"
        "ROMEO:\n"
        "Adieu.\n"
    )
    assert turns(text) == [
        ("ROMEO", "But soft, what light through yonder window breaks?"),
        ("JULIET", "Come: it is the east, and Juliet: the sun."),  # colons inside a speech are text
        (None, "Enter NURSE"),
        ("NURSE", ""),
        ("ROMEO", "Adieu."),
    ]


def test_play_speech_with_text_on_the_speaker_line():
    assert turns("ROMEO:\nHi.\n\nJULIET: Hello\nthere.\n", "play") == [
        ("ROMEO", "Hi."),
        ("JULIET", "Hello there."),
    ]


def test_detect_layout():
    assert detect_layout(["ROMEO:", "But soft", "what light: yes", "", "JULIET:", "Ay me!", ""]) == "play"
    assert detect_layout(["Alice: hi", "Bob: hello", "Bob:", "Alice: so?"]) == "lines"
    assert detect_layout(["just prose", "no speakers"]) == "lines"


def test_layout_can_be_forced():
    text = "ROMEO:\nHi.\nCome: in.\n\n"
    assert turns(text, "lines") == [("ROMEO", "Hi."), ("Come", "in.")]
    assert turns(text, "play") == [("ROMEO", "Hi. Come: in.")]
    with pytest.raises(UserError, match="--layout"):
        list(parse_lines(["x"], layout="prose"))


def test_reading_bom_crlf_and_bad_bytes(tmp_path):
    p = tmp_path / "d.txt"
    p.write_bytes(b"\xef\xbb\xbfAlice: Hi\r\nBob: caf\xe9 ok\r\nBob: don\xc3\xa2\xe2\x82\xac\xe2\x84\xa2t\r\n")
    stats = ReadStats()
    got = [(t.speaker, t.text) for t in iter_text_turns(p, stats=stats)]
    assert got == [("Alice", "Hi"), ("Bob", "caf\ufffd ok"), ("Bob", "don't")]
    assert stats.replaced_bytes == 1
    assert stats.repaired_lines == 1
    assert stats.lines == 3


def test_a_windows_ansi_file_is_read_in_its_code_page_and_said_so(tmp_path):
    """Notepad's and Excel's "ANSI" files were all U+FFFD where the accents were, with exit 0."""
    western = tmp_path / "fr.txt"
    western.write_bytes("Bob: Café crème, séance d’accord\nAlice: Où est la bibliothèque?\n".encode("cp1252"))
    stats = ReadStats()
    assert [(t.speaker, t.text) for t in iter_text_turns(western, stats=stats)] == [
        ("Bob", "Café crème, séance d'accord"), ("Alice", "Où est la bibliothèque?")]
    assert stats.encodings == {"fr.txt": "cp1252"} and stats.replaced_bytes == 0
    russian = tmp_path / "ru.txt"
    russian.write_bytes("Боб: Привет, как дела? Всё хорошо.\nАлиса: Где библиотека? Спасибо большое.\n".encode("cp1251"))
    stats = ReadStats()
    assert [t.speaker for t in iter_text_turns(russian, stats=stats)] == ["Боб", "Алиса"]
    assert stats.encodings == {"ru.txt": "cp1251"}
    _, report = preview(PrepareConfig(names=["Bob"], txtfilename=str(western)))
    assert "note: fr.txt is not UTF-8: read as Windows-1252 (Western European), a guess" in report.format()


@pytest.mark.parametrize("text, encoding", [
    ("Amélie: Café crème, séance d’accord — naïve façade.\nLouis: Où est la bibliothèque? Très bien.\n", "cp1252"),
    ("Bob: Schöne Grüße aus München, Straße.\n", "cp1252"),
    ("Ana: ¿Qué tal? ¡Muy bien! Mañana vamos.\n", "cp1252"),
    ("Bob: I went to the café\nAlice: ok\n", "cp1252"),
    ("Zofia: Cześć, jak się masz? Źle śpię.\nJan: Żółć gęślą jaźń. Łódź jest miła.\n", "cp1250"),
    ("Petr: Příliš žluťoučký kůň úpěl ďábelské ódy.\nJana: Dobře, děkuji.\n", "cp1250"),
    ("Ayşe: İyiyim, teşekkür ederim. Çok güzel bir gün.\nMehmet: Öyle mi? Şaşırdım.\n", "cp1254"),
    # without a ç: each of ş ı İ ğ reads as a Central European letter too (ţ ý Ý đ)
    ("Ayşe: Merhaba, nasılsın?\nMehmet: İyiyim, teşekkürler. Işık yanık, değil mi?\n", "cp1254"),
    # and the other way round: Romanian's ţ and Croatian's đ without the letters only they have
    ("Ion: Îţi mulţumesc!\nMaria: Cu drag.\nIon: Pe mâine.\n", "cp1250"),
    ("Đorđe: Dobar dan, kako si?\nAna: Dobro.\n", "cp1250"),
    ("أحمد: مرحبا، كيف حالك؟\nفاطمة: بخير، شكرا. وأنت؟\nأحمد: الحمد لله.\n", "cp1256"),  # once read as Greek
    ("ИВАН: ПРИВЕТ, КАК ДЕЛА?\nМАРИЯ: ХОРОШО, СПАСИБО.\n", "cp1251"),  # capitals: Arabic letters in 1256
    ("ИВАН: СМОТРИ НА YouTube!\nМАРИЯ: У МЕНЯ НЕТ iPhone.\n", "cp1251"),  # its own mixed-case words
    ("ΣΩΚΡΑΤΗΣ: ΚΑΛΗΜΕΡΑ, ΤΙ ΚΑΝΕΙΣ;\nΠΛΑΤΩΝ: ΚΑΛΑ.\n", "cp1253"),
    ("علي: سلام، حال شما چطور است؟\nسارا: خوبم، ممنون. گربه کجاست؟\n", "cp1256"),  # Persian
    ("דני: שלום, מה שלומך?\nרותי: טוב, תודה. ואתה?\nדני: בסדר גמור.\n", "cp1255"),
    ("Иван: Привет!\nМаша: Да.\n", "cp1251"),  # short: once read as Chinese
    ("Іван: Привіт, як справи? Дякую, все добре.\n", "cp1251"),
    # KOI8 (old Unix, e-mail): read as Arabic or Greek before; KOI8-U reads KOI8-R's Russian the same
    ("Андрей: Привет, как ты сегодня? Я думал о тебе.\nМаша: Хорошо, спасибо.\n", "koi8_u"),
    ("АНДРЕЙ: Привет, как дела?\nМАША: Хорошо, спасибо. А ты?\nАНДРЕЙ: Неплохо, только устал немного.\n", "koi8_u"),
    ("Тарас: Добрий день! Як справи? Я їду до Києва завтра.\nОксана: Гарно. Є час?\n", "koi8_u"),
    # short, its frequent letters under 0.6: once read as Arabic (KOI8's small letters are Arabic's in 1256)
    ("Иван: Ну, привет. Как поживаешь, друг мой? Сегодня хорошая погода.\n" * 3, "koi8_u"),
    ("Тарас: Добрий вечір, пані. Чи не бачили ви мого брата сьогодні вранці?\nОлена: Ні, не бачила.\n", "koi8_u"),
    ("Νίκος: Γεια σου, τι κάνεις;\nΜαρία: Καλά, ευχαριστώ.\n", "cp1253"),
    ("ボブ: こんにちは\nアリス: はい。\n", "cp932"),
    ("田中: 今日は天気が良いですね。明日も晴れるでしょう。\n", "cp932"),
    ("민수: 안녕하세요, 오늘 날씨가 좋네요.\n", "cp949"),
    ("小明: 你好，今天天气很好。\n小红: 是的。\n", "gb18030"),
    ("小明: 你好，今天天氣很好。\n", "big5"),
    # short lines, full-width punctuation a fifth of the text: it belongs to the script
    ("小明：在吗？\n小红：在，怎么了？\n小明：晚上一起吃饭吧！\n小红：好啊，去哪儿？\n小明：老地方。\n", "gb18030"),
])
def test_the_code_page_of_an_ansi_file(text, encoding):
    from extensions.dialogue_lora.dialogue import legacy_encoding

    raw = text.encode(encoding)
    assert legacy_encoding(raw) == encoding and raw.decode(encoding) == text


def test_utf8_with_a_few_broken_bytes_stays_utf8():
    from extensions.dialogue_lora.dialogue import legacy_encoding

    assert legacy_encoding("Bob: Grüße, naïve café\n".encode("utf-8") * 3 + b"Bob: caf\xe9\n") is None
    assert legacy_encoding("plain ASCII and ünïcödé".encode("utf-8")) is None
    assert legacy_encoding("Bob: Schöne Grüße aus München\n".encode("cp1252")) == "cp1252"


def test_reading_utf16(tmp_path):
    p = tmp_path / "d.txt"
    p.write_bytes("Alice: Grüße\nBob: Hi\n".encode("utf-16"))
    assert [(t.speaker, t.text) for t in iter_text_turns(p)] == [("Alice", "Grüße"), ("Bob", "Hi")]


def test_damaged_utf16_is_replaced_and_counted(tmp_path):
    # an unpaired surrogate in the middle and an odd byte at the end: U+FFFD each, counted, no crash
    p = tmp_path / "d.txt"
    p.write_bytes("Alice: hi\nBob: caf".encode("utf-16") + b"\x00\xd8" + "e\n".encode("utf-16-le") + b"x")
    stats = ReadStats()
    got = [(t.speaker, t.text) for t in iter_text_turns(p, stats=stats)]
    assert got == [("Alice", "hi"), ("Bob", "caf\ufffde"), (None, "\ufffd")]
    assert stats.replaced_bytes == 2


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no such file"),
        (b"", "empty"),
        (b"  \n\r\n\t", "empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
        (b"Bob: hi\n\x00\x00\x00more\n", "binary"),  # NULs with text after them
        (b"\x00" * 20, "binary"),
        ("Bob: hi there\nAlice: hello\n".encode("utf-16-le"), "UTF-16 text without a byte-order mark: save it as UTF-8"),
        ("Bob: hi there\nAlice: hello\n".encode("utf-16-be"), "UTF-16 text without a byte-order mark"),
    ],
)
def test_bad_files(tmp_path, content, message):
    p = tmp_path / "in.txt"
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(UserError, match=message):
        check_text_file(p)


def test_a_log_padded_with_nuls_is_text(tmp_path):
    # a log cut off by a crash, its file padded with NULs to the block: the text before them is read
    p = tmp_path / "crash.log"
    p.write_bytes(b"Bob: hi\nAmy: hello\nBob: fine tha" + b"\x00" * 3000)
    assert check_text_file(p) == p
    assert [(t.speaker, t.text) for t in iter_text_turns(p) if t] == [("Bob", "hi"), ("Amy", "hello"), ("Bob", "fine tha")]


def test_folder_is_not_a_text_file(tmp_path):
    with pytest.raises(UserError, match="folder"):
        check_text_file(tmp_path)


def test_break_is_none():
    assert BREAK is None


def test_a_direction_before_the_colon_stays_with_the_text():
    assert turns("Bob (angrily): Get out!\nBob [whispers]: psst\nAt 10:30 (sharp) we left.\n") == [
        ("Bob", "(angrily) Get out!"),
        ("Bob", "[whispers] psst"),
        (None, "At 10:30 (sharp) we left."),
    ]
    assert strip_actions(turns("Bob (angrily): Get out!\n")[0][1]) == "Get out!"


def test_invisible_characters_before_a_name():
    assert turns("\u200bBob: three\n\ufeffAlice: four\n") == [("Bob", "three"), ("Alice", "four")]
    # right-to-left text copied from the web: direction marks; and a soft hyphen
    assert turns("\u200f\u0645\u062d\u0645\u062f: \u0645\u0631\u062d\u0628\u0627\n\u200eDavid: hello\n\u00adCarl: hi\n") == [
        ("\u0645\u062d\u0645\u062f", "\u0645\u0631\u062d\u0628\u0627"), ("David", "hello"), ("Carl", "hi")]


def test_names_whose_letters_carry_combining_marks():
    # Indic vowel signs are marks, not letters, to Python's \w; so is an accent typed as its own character
    for name in ("\u0930\u093e\u092e", "\u0ba4\u0bae\u0bbf\u0bb4\u0bcd", "\u09b8\u09c1\u09ae\u09a8", "Zoe\u0308 Ba\u0301n"):
        assert turns(f"{name}: hello\nAnna: hi\n") == [(name.replace("e\u0308", "\u00eb").replace("a\u0301", "\u00e1"), "hello"),
                                                        ("Anna", "hi")]


def test_play_without_blank_lines_between_speeches():
    text = "ROMEO:\nBut soft, what light\nthrough yonder window.\nJULIET:\nCome, it is the east.\nROMEO:\nArise, fair sun.\n"
    assert turns(text) == [
        ("ROMEO", "But soft, what light through yonder window."),
        ("JULIET", "Come, it is the east."),
        ("ROMEO", "Arise, fair sun."),
    ]


def test_play_without_blank_lines_a_name_met_before_in_another_casing_is_a_cue():
    text = ("Second Murderer:\nWhat, shall we stab him?\nClarence:\nWhere art thou, keeper?\n"
            "Second murderer:\nYou shall have wine enough.\n")
    assert turns(text) == [
        ("Second Murderer", "What, shall we stab him?"),
        ("Clarence", "Where art thou, keeper?"),
        ("Second murderer", "You shall have wine enough."),
    ]


def test_name_like_line_inside_a_speech_of_a_blank_separated_play_is_text():
    # tinyshakespeare has 85 speech lines like `Come:` or `Hear me speak:` standing alone
    text = "MENENIUS:\nHear me speak:\nI am no traitor.\n\nBRUTUS:\nSpeak, then.\n\nMENENIUS:\nI will.\n"
    assert turns(text) == [
        ("MENENIUS", "Hear me speak: I am no traitor."),
        ("BRUTUS", "Speak, then."),
        ("MENENIUS", "I will."),
    ]


def test_a_file_of_only_a_byte_order_mark_is_empty(tmp_path):
    p = tmp_path / "bom.txt"
    p.write_bytes(b"\xef\xbb\xbf\n")
    with pytest.raises(UserError, match="bom.txt: the file is empty"):
        list(iter_text_turns(p))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are a POSIX feature")
def test_a_pipe_is_refused_with_a_hint(tmp_path):
    p = tmp_path / "pipe"
    os.mkfifo(p)
    with pytest.raises(UserError, match="not a regular file .*save the dialogue to a file"):
        list(iter_text_turns(p))


def test_one_line_speeches_inside_a_play_block_are_their_own_turns():
    # a play that writes short exchanges as `NAME: text` lines without blank lines between them
    text = (
        "NURSE:\nMadam!\n\nJULIET:\nNurse?\n\n"
        "NURSE: Juliet! Come in!\nJULIET: Anon, good nurse!\nROMEO: Farewell.\n"
        "Then I will go\nand say: not yet.\n\nNURSE:\nHear me: come.\n"
    )
    assert turns(text) == [
        ("NURSE", "Madam!"),
        ("JULIET", "Nurse?"),
        ("NURSE", "Juliet! Come in!"),
        ("JULIET", "Anon, good nurse!"),
        ("ROMEO", "Farewell. Then I will go and say: not yet."),  # `and say:` is text: not a cue
        ("NURSE", "Hear me: come."),
    ]


def test_a_known_speaker_mid_speech_starts_a_turn_even_in_mixed_case():
    text = "Romeo:\nHi.\n\nJuliet:\nHello.\nRomeo: Bye.\n\nJuliet:\nI said: Romeo, stay.\n"
    assert turns(text, "play") == [
        ("Romeo", "Hi."),
        ("Juliet", "Hello."),
        ("Romeo", "Bye."),
        ("Juliet", "I said: Romeo, stay."),
    ]


SHAKESPEARE = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "tinyshakespeare.txt")


@pytest.mark.skipif(not os.path.isfile(SHAKESPEARE), reason=f"no {SHAKESPEARE} (the shared data beside the project)")
def test_tinyshakespeare_speeches_are_not_split_at_colons():
    # 970 speech lines hold a name-like `words:`; none of them may start a turn
    path = SHAKESPEARE
    with open(path, encoding="utf-8") as f:
        text = f.read()
    blocks = [b for b in text.split("\n\n") if b.strip()]
    got = list(parse_lines(text.splitlines(True), "t.txt"))
    assert len(got) == len(blocks)
    # every block that opens with `Name:` is that speaker's (`Players:`, `Time:` too), and no other block is
    # (`Senators, &C:` excepted: a comma is no name's)
    opened = {" ".join(b.strip().split("\n", 1)[0][:-1].split()) for b in blocks if b.strip().split("\n", 1)[0].endswith(":")}
    assert {t.speaker for t in got if t is not None and t.speaker} == opened - {"Senators, &C"} and "Players" in opened


def test_long_and_several_stage_directions_before_the_colon():
    text = (
        "Alice: Are you coming?\n"
        "Bob (after a very long pause, staring at the floor): Fine.\n"
        "Bob [to the audience, in a stage whisper, grinning]: She has no idea.\n"
        "Bob (sighs) (shrugs): Nothing.\n"
        "The rain (which never stopped) fell all day.\n"
    )
    assert turns(text) == [
        ("Alice", "Are you coming?"),
        ("Bob", "(after a very long pause, staring at the floor) Fine."),
        ("Bob", "[to the audience, in a stage whisper, grinning] She has no idea."),
        ("Bob", "(sighs) (shrugs) Nothing."),
        (None, "The rain (which never stopped) fell all day."),
    ]


def test_ordinal_names_and_verse_lines_in_a_play_without_blank_lines():
    text = ("ROMEO:\nBut soft, what light\nHear me speak:\nthrough yonder window.\nFIRST CITIZEN:\nHello there.\n"
            "2ND CITIZEN:\nHi.\nNurse:\nMadam!\nROMEO:\nArise.\n")
    assert turns(text) == [
        ("ROMEO", "But soft, what light Hear me speak: through yonder window."),  # a line of verse, not a cue
        ("FIRST CITIZEN", "Hello there."),
        ("2ND CITIZEN", "Hi."),
        ("Nurse", "Madam!"),  # title case: a name
        ("ROMEO", "Arise."),
    ]
    assert split_speaker("2 eggs: boil them") is None  # a count is not an ordinal name


def test_stage_directions_inside_a_speech_are_narration():
    text = "ROMEO:\nBut soft.\nExit ROMEO\nJULIET:\nAy me.\nEnter the house, I pray.\nExeunt.\nNURSE:\nMadam.\n"
    assert turns(text) == [
        ("ROMEO", "But soft."),
        (None, "Exit ROMEO"),  # not Romeo's words
        ("JULIET", "Ay me. Enter the house, I pray."),  # a speech line: a lower-case word follows 'Enter'
        (None, "Exeunt."),
        ("NURSE", "Madam."),
    ]
    # a direction in brackets is one too, and the speech goes on after it as a turn of its own; `Enter,` is
    # speech, `Exit,` a direction
    text = ("MASTER:\nBoatswain!\n[Enter BOATSWAIN]\nGood, speak to the mariners.\n\nPORTER:\nWho knocks?\n"
            "Enter, sir; the gate is open now.\nExit, pursued by a bear\n\nMACBETH:\nGo.\n")
    assert turns(text) == [("MASTER", "Boatswain!"), (None, "[Enter BOATSWAIN]"), ("MASTER", "Good, speak to the mariners."),
                           ("PORTER", "Who knocks? Enter, sir; the gate is open now."),
                           (None, "Exit, pursued by a bear"), ("MACBETH", "Go.")]


def test_a_log_of_bare_times_and_speakers_loses_its_times():
    text = "12:01 Bob: hi\n12:02 Alice: hey\n12:03 Bob: what is up\nBob: more\n12:05 Alice: not much\n"
    assert turns(text) == [("Bob", "hi"), ("Alice", "hey"), ("Bob", "what is up"), ("Bob", "more"),
                           ("Alice", "not much")]
    # a story with a time or two at a line's start keeps them as text
    story = "Bob: hi\n10:30 we left.\nAlice: ok\n10:45 Bob: walked in.\nBob: bye\n"
    assert turns(story)[1] == (None, "10:30 we left.") and turns(story)[3] == (None, "10:45 Bob: walked in.")


def test_review_cases_of_the_layouts():
    """From a review of the layout changes: a direction right after a cue made an empty turn; a compact play's
    `Come: let us go.` became a speaker; a timed log with one name alone was read as a play (one narration
    turn); an IRC log's client line went into a `Bob:` alone."""
    assert turns("ROMEO:\n[Enter NURSE]\nSecond part.\n\nJULIET:\nOk.\n") == [
        (None, "[Enter NURSE]"), ("ROMEO", "Second part."), ("JULIET", "Ok.")]
    assert turns("ROMEO:\nBut soft.\nCome: let us go.\nJULIET:\nAy me.\nROMEO:\nHence: away.\n") == [
        ("ROMEO", "But soft. Come: let us go."), ("JULIET", "Ay me."), ("ROMEO", "Hence: away.")]
    assert turns("12:01 Bob: hi\n12:02 Alice: yo\n12:03 Bob: sure\n12:04 Bob: ok\nCarol:\nwell\n")[:4] == [
        ("Bob", "hi"), ("Alice", "yo"), ("Bob", "sure"), ("Bob", "ok")]
    irc = turns("[12:01] <bob> hi\n[12:02] <alice> yo\nBob:\n-!- alice quit\n[12:04] <bob> x\n")
    assert ("Bob", "-!- alice quit") not in irc and irc[-1] == ("bob", "x")


def test_a_time_in_brackets_after_a_name_is_no_direction():
    """`Bob (10:00): hi` kept `(10:00)` in Bob's line, even with --strip_actions (a number is text)."""
    assert turns("Bob (10:00): hi there\nAlice [9:15 PM] (angrily): go\n") == [("Bob", "hi there"),
                                                                                ("Alice", "(angrily) go")]


def test_labels_and_time_words_alone_are_narration():
    text = ("Scene: Monica's apartment.\nNote: Rachel is wearing a dress.\nMonica: Hi.\nMeanwhile: the king slept.\n"
            "Later: he woke.\nNarrator: And so it ends.\n")
    assert turns(text, "lines") == [(None, "Scene: Monica's apartment."), (None, "Note: Rachel is wearing a dress."),
                                    ("Monica", "Hi."), (None, "Meanwhile: the king slept."), (None, "Later: he woke."),
                                    ("Narrator", "And so it ends.")]
    # Time is a speaker in The Winter's Tale (tinyshakespeare's chorus)
    assert turns("LEONTES:\nGo.\n\nTime:\nI, that please some, try all.\n") == [
        ("LEONTES", "Go."), ("Time", "I, that please some, try all.")]


def test_headings_with_a_colon_are_narration():
    text = "ACT I: The Kitchen\nAnna: Hi.\nChapter 12: Home\nScene two:\nBob: Part one: done.\nAct Three: hi\n"
    # each heading after some speech starts a new conversation (None)
    assert turns(text) == [(None, "ACT I: The Kitchen"), ("Anna", "Hi."), None, (None, "Chapter 12: Home"), (None, "Scene two:"),
                           ("Bob", "Part one: done."), None, (None, "Act Three: hi")]
    assert turns("Part Timer: hello\n") == [("Part Timer", "hello")]  # a name that starts like one is a name


def test_a_sentence_with_an_early_colon_is_narration_and_a_name_with_particles_is_not():
    text = ("Anna: Where is he?\nThe answer came at once: nobody knew.\nHe said: go home.\n"
            "Captain of the Guard: Halt.\nOld man: Get out.\nMaster at arms: Ready.\n")
    assert turns(text) == [("Anna", "Where is he?"), (None, "The answer came at once: nobody knew."),
                           (None, "He said: go home."), ("Captain of the Guard", "Halt."), ("Old man", "Get out."),
                           ("Master at arms", "Ready.")]
    narration = ["Bob said: go away.", "Anna whispered: come here.", "Later that night: the phone rang.",
                 "Three hours later: nothing.", "My answer: no."]
    narration += ["Written by: Marta Kauffman & David Crane", "TRANSCRIBED BY: guineapig"]  # a transcript's credits
    names = ["Old man with a cane: Hm.", "A voice from the crowd: Hey!", "the real slim shady: yo",
             "Doris Day: Hi.", "Leonardo da Vinci: Look."]
    got = turns("\n".join(narration + names) + "\n", layout="lines")
    assert [t[0] for t in got] == [None] * 7 + ["Old man with a cane", "A voice from the crowd", "the real slim shady",
                                               "Doris Day", "Leonardo da Vinci"]


def test_a_chinese_novels_said_before_a_quote_is_narration():
    text = ("小明说：\u201c你来了。\u201d\n她回答：「嗯，我来了。」\n老师问道：\u201c去哪儿？\u201d\n"
            "小明：今天去哪儿？\n王道：好。\n王道：\u201c好。\u201d\n小红：\u201c走吧。\u201d\n他问：「真的？」\n"
            "阿道：\u201c你好。\u201d\n小问：\u201c好啊。\u201d\n"  # names of one character and a verb's: names
            "王明道：\u201c你来了。\u201d\n佐藤正道：「おはよう」\n他道：\u201c走。\u201d\n")  # 道 ends given names
    got = turns(text, layout="lines")
    assert [t[0] for t in got] == [None, None, None, "小明", "王道", "王道", "小红", None, "阿道", "小问", "王明道",
                                   "佐藤正道", None]
    assert got[0][1].startswith("小明说：") and got[3][1] == "今天去哪儿？"  # the sentence whole, in the context


def test_a_japanese_scripts_name_before_its_brackets_is_a_speaker():
    # fan fiction (SS) and visual novel scripts: no colon, the speech in 「」 or 『』 right after the name
    script = ("男「なあ、今日ひま？」\n女（小声で）「うん」\n男『もしもし？』\n如月 千早「ええ」\n"
              "女「あ」ニコッ\n男「おい」「聞いてるのか」\n"
              "彼は「はい」と言った。\n"  # narration: it goes on after the quote
              "すると彼は「はい」\n"  # a particle before the quote: a sentence
              "「はい」\n太郎「a」と花子「b」\n女（またか……）\n"  # no name; two quotes; a thought
              "小明说「你来了」\n"  # a Chinese novel's "said", as with a colon
              "　女「字下げ」\n"  # a paragraph's indent: narration's
              "女「「x」って何？」\n")  # quotes inside the speech
    got = turns(script, layout="lines")
    assert [t[0] for t in got] == ["男", "女", "男", "如月 千早", "女", "男", None, None, None, None, None, None, None,
                                   "女"]
    assert got[11][1] == "小明说「你来了」"  # narration as written (it once gained the colon of the rewrite)
    assert [t[1] for t in got[:6]] == ["「なあ、今日ひま？」", "(小声で) 「うん」", "『もしもし？』", "「ええ」",
                                       "「あ」ニコッ", "「おい」「聞いてるのか」"]
    # names in hiragana that end as a particle does (なのは, まこと, あやの); `フェイトは` is a clause
    got = turns("なのは「にゃ」\nフェイト「うん」\nなのは「行こう」\nフェイト「はい」\nフェイトは「待って」\n")
    assert [t[0] for t in got] == ["なのは", "フェイト", "なのは", "フェイト", None]


def test_a_novels_words_before_a_quote_are_no_speakers():
    """A novel has such lines too, once each (`第一章「始まり」`, `そして「さよなら」`, `彼女は言った「…」`): the
    form is read only in a text whose speakers recur in it, a fifth of its lines or more."""
    crowd = ("　公園はにぎやかだった。\n子供たちが「わーい！」\n　ボールが転がる。\n女の子たちが「きゃー！」\n"
             "　日が傾いた。\n子供たちが「もう一回！」\n　母親が呼んだ。\n女の子たちが「かわいい！」\n"
             "そう答えた「うん」\n　夜になった。\nそう答えた「うん」\n")  # a crowd, a verb's past: no one's name
    assert [t for t in turns(crowd, layout="lines") if t and t[0]] == []
    novel = ("第一章「始まり」\n\n　雨が降っていた。僕は傘を持っていなかった。\n\n「どうしたの？」\n\n"
             "　振り返ると、彼女が立っていた。\n\nそして「さよなら」\n\n　彼女は笑った。\n\n"
             "ある日の放課後「屋上で待ってる」\n\n　僕は走った。\n\n第二章「再会」\n")
    assert [t for t in turns(novel, layout="lines") if t and t[0]] == []
    # a novel with a colon dialogue in it keeps its lines as they are
    assert turns("太郎：「こんにちは」\n花子：「やあ」\n第一章「始まり」\n")[2] == (None, "第一章「始まり」")


def test_chat_exports_with_time_stamps_whatsapp_and_irc():
    whatsapp = ("12/31/23, 9:15 PM - Messages and calls are end-to-end encrypted. No one outside of this chat can "
                "read them.\n"
                "12/31/23, 9:15 PM - Alex: hey, are you coming tonight?\n"
                "12/31/23, 9:16\u202fPM - Sam Smith: yes!\nbringing snacks too\n\n"  # a message of two lines
                "12/31/23, 9:17 PM - +1 555 123 4567: who is this\n"  # a sender saved as a number
                "12/31/23, 9:18 PM - Alex: <Media omitted>\n"
                "12/31/23, 9:19 PM - Alex left\n")
    assert turns(whatsapp) == [("Alex", "hey, are you coming tonight?"), ("Sam Smith", "yes! bringing snacks too"),
                               ("+1 555 123 4567", "who is this"), ("Alex", ""), (None, "Alex left")]
    assert turns("\u200e[31.12.23, 21:15:03] Alex: the iPhone's export\n") == [("Alex", "the iPhone's export")]
    irc = "[12:01] <alex> hi all\n[12:02] <@sam> hey\n12:03 * alex waves\n"
    assert turns(irc) == [("alex", "hi all"), ("sam", "hey"), (None, "* alex waves")]
    # a time at the start of a line of prose is not a stamp, until the file has shown it is a chat export
    assert turns("10:30 we left.\nBob: Late again.\n", layout="lines") == [(None, "10:30 we left."),
                                                                           ("Bob", "Late again.")]


def test_a_chat_exports_message_keeps_its_lines_whatever_they_look_like():
    text = ("12/31/23, 9:04 PM - Alex: Shopping list:\nMilk: 2 cartons\n10:30 breakfast\n\nTODO:\nbuy milk\n"
            "12/31/23, 9:05 PM - Sam: ok\n")
    assert turns(text) == [("Alex", "Shopping list: Milk: 2 cartons 10:30 breakfast TODO: buy milk"), ("Sam", "ok")]
    for line, name, text in [("31/12/23, 9:15 p. m. - Alex: hola\n", "Alex", "hola"),
                             ("31/12/2023 à 21:17 - Sam: salut\n", "Sam", "salut"),
                             ("31.12.2023 21.18 - Alex: hej\n", "Alex", "hej")]:
        assert turns(line) == [(name, text)]
    # one export writes one layout: a pasted line with another date layout stays in the message
    pasted = ("12/30/23, 9:16 PM - Sam: the plan, copied here:\n31.12.2023 18:00 Abendessen bei Oma\n"
              "12/30/23, 9:17 PM - Alex: great\n")
    assert turns(pasted) == [("Sam", "the plan, copied here: 31.12.2023 18:00 Abendessen bei Oma"), ("Alex", "great")]
    # a script that quotes one chat message: its own speaker lines go on being turns
    script = ("Mia: Did you see what he sent me?\n[31.12.23, 21:15:03] Jake: come outside\n"
              "Mia: That's all he wrote.\nLena: Creepy.\n")
    assert turns(script) == [("Mia", "Did you see what he sent me?"), ("Jake", "come outside"),
                             ("Mia", "That's all he wrote."), ("Lena", "Creepy.")]
    iphone = ("[31.12.23, 21:00:00] Trip: \u200eMessages and calls are end-to-end encrypted.\n"
              "[31.12.23, 21:01:00] Trip: \u200eAlex created this group\n"
              "[31.12.23, 21:03:03] Sam: \u200eimage omitted\n"
              "[31.12.23, 21:04:03] Alex: \u200eThis message was deleted.\n"
              "[31.12.23, 21:06:03] \u202a+49 170 1234567\u202c: hallo\n"
              "[31.12.23, 21:07:03] Kim: nice \u200e<This message was edited>\n")
    assert turns(iphone) == [(None, "Alex created this group"), ("Sam", ""), ("Alex", ""), ("+49 170 1234567", "hallo"),
                             ("Kim", "nice")]
    # a client's lines before the first message are narration without their time too (every irssi log
    # opens so); `10:30 * call Bob` in a script is a note, its time kept
    opened = "--- Log opened Mon Jan 01 10:00:00 2024\n19:00 -!- alice [~a@host] has joined #linux\n19:01 <alice> hi\n"
    assert turns(opened) == [None, (None, "-!- alice [~a@host] has joined #linux"), ("alice", "hi")]
    assert turns("10:30 * call Bob\nBob: hi\n") == [(None, "10:30 * call Bob"), ("Bob", "hi")]
    irssi = "21:01 < bob> hi alex\n21:02 <@alex> hey bob\n--- Day changed Mon Jan 01 2024\n21:03 -!- Topic: be nice\n"
    assert turns(irssi) == [("bob", "hi alex"), ("alex", "hey bob"), (None, "--- Day changed Mon Jan 01 2024"),
                            (None, "-!- Topic: be nice")]
    # a script with times in it is no chat export
    script = "Alice: Morning.\n10:30 AM: the meeting starts\n12:30 Lunch: sandwiches.\nBob: ok\n"
    assert turns(script) == [("Alice", "Morning."), (None, "10:30 AM: the meeting starts"),
                             (None, "12:30 Lunch: sandwiches."), ("Bob", "ok")]


def test_a_chat_exports_sender_is_the_contact_as_saved_and_its_placeholders_are_no_words():
    text = ("12/31/23, 9:15 PM - Dave (Uni): are you at the library?\n"
            "12/31/23, 9:16 PM - Dave (Work): meeting moved to 3\n"
            "12/31/23, 9:17 PM - Smith, John: cool\n"  # a comma would split --name: a space, as Discord's
            "12/31/23, 9:18 PM - Sam: Plan for Saturday\n---\nBOB:\nbring snacks <This message was edited>\n"
            "12/31/23, 9:19 PM - Zoe: Waiting for this message. This may take a while.\n"
            "12/31/23, 9:20 PM - Zoe: POLL:\nWhere?\nOPTION: Pub (2 votes)\nOPTION: Park (0 votes)\n"
            "12/31/23, 9:21 PM - Zoe: Missed voice call\n")
    assert turns(text) == [("Dave (Uni)", "are you at the library?"), ("Dave (Work)", "meeting moved to 3"),
                           ("Smith John", "cool"), ("Sam", "Plan for Saturday --- BOB: bring snacks"),
                           ("Zoe", ""), ("Zoe", ""), ("Zoe", "")]
    german = ("31.12.23, 21:16 - Ben: <Medien ausgeschlossen>\n31.12.23, 21:17 - Ben: Diese Nachricht wurde gelöscht.\n"
              "31.12.23, 21:19 - Ana: <3 you\n31.12.23, 21:20 - Ana: <hug>\n31.12.23, 21:21 - Ana: <insert joke here>\n"
              "31.12.23, 21:22 - Max: Verpasster Sprachanruf\n"
              "31.12.23, 21:23 - Max: IMG-20231231-WA0001.jpg (Datei angehängt)\n")
    assert turns(german) == [("Ben", ""), ("Ben", ""), ("Ana", "<3 you"), ("Ana", "<hug>"), ("Ana", "<insert joke here>"),
                             ("Max", ""), ("Max", "")]
    iphone = ("[31.12.23, 21:22:00] Kim: Report.pdf \u200e\u2022 \u200e3 pages \u200edocument omitted\n"
              "[31.12.23, 21:23:00] Kim: line one\nline two \u200e<This message was edited>\n")
    assert turns(iphone) == [("Kim", ""), ("Kim", "line one line two")]


def test_handles_and_code_names_are_speakers():
    text = "cool_guy_99: anyone up?\nxX_Gamer_Xx: yeah\n2B: Glory to mankind.\n9S: Hey 2B, wait up!\n47: no\nBob_: no\n"
    assert turns(text, layout="lines") == [("cool_guy_99", "anyone up?"), ("xX_Gamer_Xx", "yeah"),
                                           ("2B", "Glory to mankind."), ("9S", "Hey 2B, wait up!"),
                                           (None, "47: no"), (None, "Bob_: no")]


def test_markdown_names_bare_irc_nicks_and_whatsapp_web_copies():
    text = ("**Bob:** hi there\n**Alice**: hello\n__Carl:__ yo\n**Note** this is bold\n"
            "<Steve> hi\n<@Alex> hey steve\n<b>bold</b>\n<a:b> no\n<3 you\n")
    assert turns(text, layout="lines") == [("Bob", "hi there"), ("Alice", "hello"), ("Carl", "yo"),
                                           (None, "**Note** this is bold"), ("Steve", "hi"), ("Alex", "hey steve"),
                                           (None, "<b>bold</b>"), (None, "<a:b> no"), (None, "<3 you")]
    web = "[21:15, 31/12/2023] Alex: hey\n[21:16, 31/12/2023] Sam: yo\nsecond line\n"
    assert turns(web) == [("Alex", "hey"), ("Sam", "yo second line")]


def test_a_wrapped_speech_far_into_a_file_is_joined():
    text = "Alice: a line\nBob: a reply\n" * 3000 + "Romeo: But soft,\n       It is the east\nJuliet: Ay me!\n"
    assert turns(text, layout="lines")[-2:] == [("Romeo", "But soft, It is the east"), ("Juliet", "Ay me!")]


def test_gutenberg_plays_cues_with_a_full_stop():
    text = ("ACT II\n\nSCENE II. Capulet's Garden.\n\nEnter Romeo.\n\nROMEO.\nHe jests at scars that never felt a "
            "wound.\n\nJULIET.\nAy me.\n\nROMEO.\nShe speaks.\nO speak again bright angel.\n\n"
            "FIRST CITIZEN.\nPeace, ho!\n\nACT III.\n\n")
    assert turns(text) == [(None, "ACT II"), (None, "SCENE II. Capulet's Garden."), (None, "Enter Romeo."),
                           ("ROMEO", "He jests at scars that never felt a wound."), ("JULIET", "Ay me."),
                           ("ROMEO", "She speaks. O speak again bright angel."), ("FIRST CITIZEN", "Peace, ho!"),
                           None, (None, "ACT III.")]


def test_a_speech_wrapped_under_its_text_stays_one_turn():
    text = ("Romeo: But soft, what light through yonder window breaks?\n"
            "       It is the east, and Juliet is the sun.\n"
            "Juliet: Ay me!\n"
            "BOB:\n    Hello there.\n"  # the speech under an empty cue
            "  Anna: indented like the rest\n   Bob: a cue of its own, deeper\n"
            "  The rain.\n  narration as deep as the line above\n"
            "Alice: Are you coming?\n\tThe rain kept falling.\nBob: In a minute.\n    He grabbed his coat.\n")
    got = list(parse_lines(text.splitlines(True), layout="lines"))
    assert [(t.speaker, t.text, t.line) for t in got] == [
        ("Romeo", "But soft, what light through yonder window breaks? It is the east, and Juliet is the sun.", 1),
        ("Juliet", "Ay me!", 3), ("BOB", "Hello there.", 4), ("Anna", "indented like the rest", 6),
        ("Bob", "a cue of its own, deeper", 7), (None, "The rain.", 8), (None, "narration as deep as the line above", 9),
        # narration indented, but not under the speech's text, stays narration
        ("Alice", "Are you coming?", 10), (None, "The rain kept falling.", 11), ("Bob", "In a minute.", 12),
        (None, "He grabbed his coat.", 13)]


def test_a_full_width_colon_ends_a_name_and_the_text_keeps_its_punctuation():
    assert turns("李雷：你好，韩梅梅。\n韩梅梅：你好，李雷！\n") == [("李雷", "你好，韩梅梅。"), ("韩梅梅", "你好，李雷！")]


def test_a_scene_break_resets_the_context(tmp_path):
    assert turns("Anna: Bye then.\nBob: Bye.\n***\nCarl: New day.\n* * *\n---\nBob: Morning.\n") == [
        ("Anna", "Bye then."), ("Bob", "Bye."), None, ("Carl", "New day."), None, None, ("Bob", "Morning.")]
    assert turns("ROMEO:\nAdieu.\n\n###\n\nJULIET:\nAnon!\n", layout="play") == [
        ("ROMEO", "Adieu."), None, ("JULIET", "Anon!")]
    assert turns("Bob: 3 * 4 - 2\n** bold **\n") == [("Bob", "3 * 4 - 2"), (None, "** bold **")]  # text, not a break
    src = tmp_path / "story.txt"
    src.write_text("Anna: Bye then.\nBob: Bye.\n***\nCarl: New day. Morning!\nBob: Hi Carl.\n", encoding="utf-8")
    records, _ = preview(PrepareConfig(names=["Bob"], txtfilename=str(src)), 5)
    assert [r["input"] for r in records] == ["Anna: Bye then.\nBob:", "Carl: New day. Morning!\nBob:"]


def test_a_scene_or_chapter_heading_starts_a_new_conversation(tmp_path):
    # a play's scene, a screenplay's slugline, a transcript's [Scene: ...], a chapter: context starts afresh,
    # the heading its first line; headings with no speech between them stay together (`ACT II`, `SCENE I.`)
    src = tmp_path / "play.txt"
    src.write_text("ACT I\n\nSCENE I. Verona.\n\nSAMPSON:\nGregory, o' my word.\n\nGREGORY:\nNo.\n\n"
                   "ACT II\n\nSCENE I. A street.\n\nCAPULET:\nBut Montague.\n\nSAMPSON:\nA dog.\n", encoding="utf-8")
    records, _ = preview(PrepareConfig(names=["SAMPSON"], txtfilename=str(src)), 5)
    assert [r["input"] for r in records] == ["ACT I\nSCENE I. Verona.\nSAMPSON:",
                                             "ACT II\nSCENE I. A street.\nCAPULET: But Montague.\nSAMPSON:"]
    for heading in ["INT. KITCHEN - DAY", "EXT./INT. CAR - MOVING", "[Scene: Central Perk, Joey is there.]",
                    "Scene: Monica's apartment", "## Chapter 3: Home", "CHAPTER XII. The Return", "Act 2, Scene 1",
                    "Episode 4 - The Return", "Episode 4: The Return", "EPISODE FOUR: x", "EPILOGUE"]:
        assert turns(f"Anna: Bye.\n{heading}\nBob: Hi.\n") == [("Anna", "Bye."), None, (None, heading), ("Bob", "Hi.")]
    for prose in ["Part of your cares you give me with your crown.", "Act 3 of the show was long.", "Act civil.",
                  "INTERIOR design is hard.", "Scene two is where we met.", "Prologue to the tale is long."]:
        assert turns(f"Anna: Bye.\n{prose}\nBob: Hi.\n") == [("Anna", "Bye."), (None, prose), ("Bob", "Hi.")]


SCREENPLAY = """\
                              THE DINER

FADE IN:

INT. DINER - NIGHT

A greasy spoon. JOE (40s) sits alone at the counter.

                         JOE
               (quietly)
          I never wanted this.

                         MARY (O.S.)
          Then why are you here? Listen: it's
          late.
                         (MORE)

                                                        12.
                         MARY (CONT'D)
          Go home.

                         R2-D2
          Beep.

                                                   CUT TO:

EXT. STREET - CONTINUOUS

                         JOE (V.O.)
          She was right.
"""


def test_a_film_script_reads_its_cues_and_speeches():
    # a cue is a name in capitals alone after a blank line, the speech right below; extensions, transitions
    # and page marks go; a parenthetical stays as an action; a slugline starts a new conversation
    assert detect_screenplay(SCREENPLAY)
    assert turns(SCREENPLAY) == [
        (None, "THE DINER"), (None, "INT. DINER - NIGHT"), (None, "A greasy spoon. JOE (40s) sits alone at the counter."),
        ("JOE", "(quietly) I never wanted this."), ("MARY", "Then why are you here? Listen: it's late. Go home."),
        ("R2-D2", "Beep."), None, (None, "EXT. STREET - CONTINUOUS"), ("JOE", "She was right.")]  # one speech over the page
    fountain = "INT. HOUSE - DAY\n\nMARY\nHi.\n\nTOM\n(beat)\nHello.\n\nMARY\nBye.\n\nBANG.\nThe door shuts.\n"
    assert turns(fountain) == [(None, "INT. HOUSE - DAY"), ("MARY", "Hi."), ("TOM", "(beat) Hello."), ("MARY", "Bye."),
                               (None, "BANG. The door shuts.")]
    # not a film script: a play's cues have a colon or a full stop, a chat its names in lines
    assert not detect_screenplay("ROMEO.\nAdieu.\n\nJULIET.\nAnon!\n\nROMEO.\nGood night.\n")
    assert not detect_screenplay("HELLO WORLD\nThis is prose.\n\nAnd more prose.\n")


def test_name_text_paragraphs_wrapped_over_lines_are_whole_speeches():
    # Project Gutenberg's dialogues, a text editor's hard wrap: a speech's next line is its own, to the blank line
    text = ("Socrates: I went down yesterday to the Piraeus with Glaucon the son of\nAriston.\n\n"
            "Thrasymachus: Listen, then. I say that justice is nothing else\nthan the interest of the stronger.\n\n"
            "Socrates: Let me first understand you.\n\nThrasymachus: Well, have you never heard\nit?\n")
    stats = ReadStats()
    got = [(t.speaker, t.text) for t in parse_lines(text.splitlines(True), "w.txt", stats=stats) if t]
    assert got[1] == ("Thrasymachus", "Listen, then. I say that justice is nothing else than the interest of the stronger.")
    assert len(got) == 4 and "paragraphs wrapped over several lines" in stats.notes[0]
    # a short line with narration under it is no wrap, nor a line that ends its sentence
    assert turns("Bob: hi\nHe waves.\n\nAmy: hello\nShe nods.\n\nBob: bye\nHe goes.\n")[:2] == [
        ("Bob", "hi"), (None, "He waves.")]
    # one line each, no wrap: as before; lines without blank lines between them: narration stays apart
    assert turns("Bob: hi\n\nAmy: hello\n\nBob: bye\n") == [("Bob", "hi"), ("Amy", "hello"), ("Bob", "bye")]
    assert turns("Bob: hi\nHe waves.\nAmy: hello\nShe nods.\nBob: bye\n") == [
        ("Bob", "hi"), (None, "He waves."), ("Amy", "hello"), (None, "She nods."), ("Bob", "bye")]


def test_a_film_scripts_page_breaks_from_pdftotext():
    # a form feed starts each page: its header is a page mark, and a cue at the top of the page a cue
    text = ("INT. DINER - NIGHT\n\n          JOE\n     Hi Mary.\n\f   2.\n\n          MARY\n     Fine.\n"
            "\f          JOE\n     Good.\n\n          MARY\n     Bye.\n")
    assert [t for t in turns(text) if t and t[0]] == [("JOE", "Hi Mary."), ("MARY", "Fine."), ("JOE", "Good."),
                                                      ("MARY", "Bye.")]


def test_a_short_film_script_excerpt_is_one_by_its_slugline_or_transition():
    # two cues (three make a film script alone) in a scene with a slugline or a transition: the README's example
    excerpt = ("INT. DINER - NIGHT\n\nA greasy spoon.\n\n                         JOE\n          I never wanted this.\n\n"
               "                         MARY (O.S.)\n          Then why are you here?\n                        CUT TO:\n")
    assert detect_screenplay(excerpt)
    assert turns(excerpt)[2:] == [("JOE", "I never wanted this."), ("MARY", "Then why are you here?")]
    assert detect_screenplay("FADE IN:\n\nJOE\nHi there.\n\nMARY\nHello.\n")
    assert not detect_screenplay("THE STORY\nIt was a dark night.\n\nFADE OUT.\n")  # a title over a paragraph
    # without such a mark two cues are not enough; a chat's `Name: text` lines outnumber them
    assert not detect_screenplay("\nJOE\nHi there.\n\nMARY\nHello.\n")
    assert not detect_screenplay("INT. DINER - NIGHT\n\nJOE\nHi there.\n\nBob: hi\nAmy: hello\n")


def test_film_scripts_as_printed_and_in_fountain():
    printed = ("3    INT. DINER - NIGHT    3\n\nTHE DOOR SLAMS OPEN\nThe wind howls in.\n\n"
               "                         McCLANE\n          Come out to the coast.\n\n"
               "                         COP #1\n          Clear left.\n\n"
               "                         DOT                       JOE\n          Hi.       Hey.\n\n"
               "                         SHOOTING DRAFT\n          March 3, 2019\n\n"
               "4    EXT. STREET - NIGHT    4\n\n                         McCLANE\n          Yippee.\n")
    got = turns(printed)
    assert got[:2] == [(None, "INT. DINER - NIGHT"), (None, "THE DOOR SLAMS OPEN The wind howls in.")]
    assert ("McCLANE", "Come out to the coast.") in got and ("COP #1", "Clear left.") in got
    assert not any(t and t[0] in ("DOT JOE", "SHOOTING DRAFT") for t in got)
    assert got[-3:] == [None, (None, "EXT. STREET - NIGHT"), ("McCLANE", "Yippee.")]  # numbers gone, a new scene
    # a speech's second paragraph, at the speech's indent, is the speech going on; action at the margin is not
    para = ("INT. DINER - NIGHT\n\n     Joe sits.\n\n                              JOE\n               I didn't do it.\n\n"
            "               I came back alone.\n\n     Dot stares.\n\n                              DOT\n"
            "               I believe you.\n\n                              JOE\n               Thanks.\n")
    assert turns(para)[2:] == [("JOE", "I didn't do it. I came back alone."), (None, "Dot stares."),
                               ("DOT", "I believe you."), ("JOE", "Thanks.")]
    fountain = ("Title: **BIG BRASS ALIBI**\nCredit: Written by\nAuthor: John August\nDraft date: 1/20/2012\n\n"
                "EXT. BRICK'S PATIO - DAY #1#\n\n!SHE SCREAMS.\n\n@McCLANE\nCome out. [[a note]]\n\n"
                "BRICK\n/* cut this */\nNo.\n\nSTEEL\nWhy?\n\n.THE ROOF\n\nBRICK\nBecause.\n")
    got = turns(fountain)
    assert detect_screenplay(fountain) and ("McCLANE", "Come out.") in got and ("BRICK", "No.") in got
    assert (None, "EXT. BRICK'S PATIO - DAY") in got and (None, "SHE SCREAMS.") in got
    assert got[-3:] == [None, (None, "THE ROOF"), ("BRICK", "Because.")]


def detect_screenplay(text: str) -> bool:
    stats = ReadStats()
    list(parse_lines(text.splitlines(True), "f.txt", stats=stats))
    return stats.layouts["f.txt"] == "screenplay"


def test_a_forced_layout_against_a_film_script_says_so():
    stats = ReadStats()
    list(parse_lines(SCREENPLAY.splitlines(True), "s.txt", "lines", stats))
    assert "--layout lines, but s.txt looks like a film script (5 names in capitals" in stats.notes[0]
    stats = ReadStats()
    got = [t for t in parse_lines(["ROMEO:\n", "Adieu.\n"], "p.txt", "screenplay", stats) if t]
    assert got[0][:2] == ("ROMEO", "Adieu.") and "--layout auto reads it as play" in stats.notes[0]


def test_gutenberg_plays_with_the_speech_on_the_cues_line():
    # Wilde's, Shaw's, Ibsen's editions: `NAME.  speech` opening a block, wrapped to the blank line
    text = ("FIRST ACT\n\n[Lane is arranging tea.]\n\nALGERNON.  Did you hear what I was playing,\nLane?\n\n"
            "LANE.  I didn't think it polite to listen, sir.\n\nALGERNON.  I'm sorry for that.\n\n"
            "LANE [_going_].  Yes, sir.\n\nNO. This is prose that starts with a word in capitals.\n\n"
            "LIZA [_crying_].\nAh-ah-ah-ow!\n\n2ND MURDERER.\nAy.\n\nTHE END.\n")
    assert turns(text) == [
        (None, "FIRST ACT"), (None, "[Lane is arranging tea.]"), ("ALGERNON", "Did you hear what I was playing, Lane?"),
        ("LANE", "I didn't think it polite to listen, sir."), ("ALGERNON", "I'm sorry for that."),
        ("LANE", "[_going_] Yes, sir."), (None, "NO. This is prose that starts with a word in capitals."),
        ("LIZA", "[_crying_] Ah-ah-ah-ow!"), ("2ND MURDERER", "Ay."), (None, "THE END.")]


def test_a_gutenberg_speech_with_full_stops_of_its_own_stays_its_speakers():
    # the cue's name ends at its full stop, not at a later one (`Mr.`, a second sentence), and a name may
    # hold one (`MRS. ALVING.`); the same in another script (Chekhov, single-spaced)
    text = ("ALGERNON.  Did you hear what I was playing, Lane?\n\nLANE.  I didn't think it polite to listen, sir."
            "\n\nALGERNON.  Lane's views seem lax.  Really, they do.\n\nLANE.  Mr. Ernest Worthing.\n\n"
            "MRS. ALVING.  Are you there?  Come here.\n\nALGERNON.  I SAY.  Show him in.\n")
    assert turns(text) == [
        ("ALGERNON", "Did you hear what I was playing, Lane?"), ("LANE", "I didn't think it polite to listen, sir."),
        ("ALGERNON", "Lane's views seem lax. Really, they do."), ("LANE", "Mr. Ernest Worthing."),
        ("MRS. ALVING", "Are you there? Come here."), ("ALGERNON", "I SAY. Show him in.")]
    # after a direction too: the speech is all its sentences, and a direction closing it stays
    directed = text + ("\nLANE [going].  Yes, sir. I will.\n\n"
                "LANE (ruffled).  Yes, sir.  [Hands them on a salver.]\n\n"
                "THE NOTE TAKER [whipping out his book]. Heavens! what a sound! [He writes.] Ah-ah-ow!\n")
    assert turns(directed)[len(turns(text)):] == [
        ("LANE", "[going] Yes, sir. I will."),
        ("LANE", "(ruffled) Yes, sir. [Hands them on a salver.]"),
        ("THE NOTE TAKER", "[whipping out his book] Heavens! what a sound! [He writes.] Ah-ah-ow!")]
    chekhov = "МАША. Это траур по моей жизни. Я несчастна.\n\nМЕДВЕДЕНКО. Отчего? Не понимаю.\n\nМАША. Не знаю.\n\nМЕДВЕДЕНКО. Да.\n"
    assert turns(chekhov) == [("МАША", "Это траур по моей жизни. Я несчастна."),
                              ("МЕДВЕДЕНКО", "Отчего? Не понимаю."), ("МАША", "Не знаю."), ("МЕДВЕДЕНКО", "Да.")]


def test_hexchats_log_reads_like_any_irc_log():
    log = ("Nov 03 19:03:02 <bob>\tanyone around?\nNov 03 19:03:40 <alice>\tyep, what is up\n"
           "Nov 03 19:04:11 <bob>\tthe build broke again\n")
    assert turns(log) == [("bob", "anyone around?"), ("alice", "yep, what is up"), ("bob", "the build broke again")]
    prose = "Nov 03 was cold.\nNov 04 19:00:00 <b>bold</b> is HTML.\n"  # not a log: left as it is
    assert turns(prose) == [(None, "Nov 03 was cold."), (None, "Nov 04 19:00:00 <b>bold</b> is HTML.")]


def test_single_spaced_gutenberg_cues_end_at_the_name_and_whisper_times_go():
    play = ("MARIE. M. Dupont is waiting downstairs.\n\nHENRI. Let him wait. I am busy.\n\nMARIE. He says it is urgent.\n\n"
            "HENRI. Everything is urgent to him.\n\nSOLDIER. HALT. Who goes there?\n\nMRS. ALVING. Come in.\n")
    assert turns(play) == [("MARIE", "M. Dupont is waiting downstairs."), ("HENRI", "Let him wait. I am busy."),
                           ("MARIE", "He says it is urgent."), ("HENRI", "Everything is urgent to him."),
                           ("SOLDIER", "HALT. Who goes there?"), ("MRS. ALVING", "Come in.")]
    whisper = "".join(f"[00:00:0{i}.000 --> 00:00:0{i + 1}.500] [SPEAKER_0{i % 2}]: line {i}\n" for i in range(4))
    assert turns(whisper) == [(f"SPEAKER_0{i % 2}", f"line {i}") for i in range(4)]
    # wrapped prose: `last chapter.` starting a line is no heading
    prose = "Alice: I read the book up to the\nlast chapter. Then I slept.\nBob: And?\n"
    assert None not in turns(prose)


def test_titles_initials_and_a_scripts_joiner_in_names():
    play = ("LIEUT. HASTINGS.  I say, is the Colonel at home?\n\nMRS. PAGE.  He is in the garden.\n\n"
            "SERGT. KITE.  Shall I fetch him?\n\nMRS. PAGE.  Do.\n\nLIEUT. HASTINGS.  Thanks.\n")
    assert [t[0] for t in turns(play)] == ["LIEUT. HASTINGS", "MRS. PAGE", "SERGT. KITE", "MRS. PAGE", "LIEUT. HASTINGS"]
    sheridan = "CHAS. SURFACE.  Well, brother.\n\nJOS. SURFACE.  Well.\n\nCHAS. SURFACE.  Go on.\n\nJOS. SURFACE.  No.\n"
    assert [t[0] for t in turns(sheridan)] == ["CHAS. SURFACE", "JOS. SURFACE", "CHAS. SURFACE", "JOS. SURFACE"]
    from extensions.dialogue_lora.dialogue import undecorated

    assert undecorated("ශ්\u200dරී ලංකා") == "ශ්\u200dරී ලංකා"  # Sinhala's joiner is no emoji's
    assert undecorated("Alex 🎮") == "Alex" and undecorated("Alex 🎮", emoji=False) == "Alex 🎮"


def test_numbered_and_late_headings_and_hexchats_actions():
    play = ("1. Akt\n\nMINNA:\nJa.\n\n2. Szene\n\nMINNA:\nNein.\n\nZWÖLFTER AUFTRITT.\n\nMINNA:\nGut.\n")
    assert [t and t[0] for t in turns(play)] == [None, "MINNA", None, None, "MINNA", None, None, "MINNA"]
    log = "Nov 03 19:03:02 <bob>\thi\nNov 03 19:03:15 *\talice waves\nNov 03 19:03:20 <alice>\they\nNov 03 19:04:00 <bob>\tok\n"
    assert turns(log) == [("bob", "hi"), (None, "* alice waves"), ("alice", "hey"), ("bob", "ok")]  # no date left


def test_zooms_saved_chat_names_its_sender():
    log = ("10:02:15\t From  Sarah Chen : Can everyone see my screen?\n10:02:31\t From  Tom Baker : yes, all good\n"
           "10:03:02\t From Sarah Chen to Everyone : great, let's start\n"
           "10:03:40\t From Tom Baker to Sarah Chen(Direct Message) : can you share the deck after?\n")
    assert turns(log) == [("Sarah Chen", "Can everyone see my screen?"), ("Tom Baker", "yes, all good"),
                          ("Sarah Chen", "great, let's start"), ("Tom Baker", "can you share the deck after?")]


def test_french_german_and_russian_headings_end_a_scene_and_a_list_of_whos_on_is_no_cue():
    moliere = ("ACTE PREMIER\n\nSCÈNE PREMIÈRE.\n\nPHILINTE, ALCESTE.\n\nPHILINTE.\nQu'avez-vous?\n\nALCESTE.\n"
               "Laissez-moi.\n\nSCÈNE II.\n\nORONTE, ALCESTE, PHILINTE.\n\nORONTE.\nMonsieur.\n")
    assert turns(moliere) == [
        (None, "ACTE PREMIER"), (None, "SCÈNE PREMIÈRE."), (None, "PHILINTE, ALCESTE."), ("PHILINTE", "Qu'avez-vous?"),
        ("ALCESTE", "Laissez-moi."), None, (None, "SCÈNE II."), (None, "ORONTE, ALCESTE, PHILINTE."),
        ("ORONTE", "Monsieur.")]
    goethe = "ZWEITE SZENE.\n\nFAUST.\nHabe nun, ach!\n\nWAGNER.\nVerzeiht!\n\nDRITTE SZENE.\n\nFAUST.\nGut.\n"
    assert [t and t[0] for t in turns(goethe)] == [None, "FAUST", "WAGNER", None, None, "FAUST"]
    chekhov = "ДЕЙСТВИЕ ПЕРВОЕ\n\nМАША:\nЯ в трауре.\n\nДЕЙСТВИЕ ШЕСТОЕ\n\nМАША:\nДа.\n"
    assert [t and t[0] for t in turns(chekhov)] == [None, "МАША", None, None, "МАША"]
    goldoni = "SCENA PRIMA\n\nMIRANDOLINA:\nEcco.\n\nSCENA SECONDA\n\nMIRANDOLINA:\nSì.\n\nSCENE PREMIERE\n\nX:\nOui.\n"
    assert [t and t[0] for t in turns(goldoni)] == [None, "MIRANDOLINA", None, None, "MIRANDOLINA", None, None, "X"]


def test_a_direction_between_blank_lines_inside_a_speech_does_not_end_it():
    text = ("PROSPERO.\nNo harm.\n\n [_Lays down his mantle._]\n\nLie there my art.\n\nMIRANDA.\nYes.\n\n"
            "[Exit.]\n\nA room in the castle.\n\nMIRANDA.\nO!\n\n(Aside.)\n\nSCENE II. A street.\n")
    assert turns(text) == [
        ("PROSPERO", "No harm."), (None, "[_Lays down his mantle._]"), ("PROSPERO", "Lie there my art."),
        ("MIRANDA", "Yes."), (None, "[Exit.]"), (None, "A room in the castle."),  # gone: narration
        ("MIRANDA", "O!"), (None, "(Aside.)"), None, (None, "SCENE II. A street.")]


def test_a_long_introduction_before_the_first_speech_does_not_hide_the_layout():
    from extensions.dialogue_lora.dialogue import DETECT_LINES

    prose = ["An introduction of many pages, and no one speaks in it.\n", "\n"] * DETECT_LINES
    play = ["SAMPSON.\n", "Gregory, o' my word,\n", "we'll not carry coals.\n", "\n", "GREGORY.\n", "No.\n", "\n"] * 3
    stats = ReadStats()
    got = [t for t in parse_lines(prose + play, "f.txt", stats=stats) if t is not None and t.speaker]
    assert stats.layouts["f.txt"] == "play" and len(got) == 6
    assert got[0][:2] == ("SAMPSON", "Gregory, o' my word, we'll not carry coals.")


def test_the_new_rules_leave_alone_what_only_looks_like_them():
    # three `OK. ...` paragraphs in a story keep it in the lines layout
    story = "Alice: Ready?\nBob: Almost.\nOK. The car is packed.\nAlice: Go.\nOK. They find the keys.\nBob: Now.\nOK. Later.\n"
    assert [t[0] for t in turns(story) if t] == ["Alice", "Bob", None, "Alice", None, "Bob", None]
    # a direction after which the speaker is gone, or another direction, is not the speech going on
    play = ("ROMEO:\nThus with a kiss I die.\n\n[Dies]\n\nThe watch comes in.\n\nALGERNON:\nHi.\n\n"
            "[_Goes out._]\n\n[_Enter JACK._]\n\nJULIET:\nO!\n")
    assert [t[0] for t in turns(play) if t] == ["ROMEO", None, None, "ALGERNON", None, None, "JULIET"]
    # a sentence that starts like a heading goes on as speech: no new conversation
    assert None not in turns("Danny: It comes in three acts.\nAct one, we get inside.\nRusty: And then?\n")
    # channel tags, a roleplay's labels, captions' labels: no bracketed speakers
    mud = "".join(f"[Guild] {n}: hi {i}\n" for i, n in enumerate(["Alice", "Bob"] * 3))
    assert [t[0] for t in turns(mud)] == [None] * 6
    rp = "".join(f"[OOC] brb {i}\n[Narration] The fire crackles {i}.\nAria: hm {i}\n" for i in range(3))
    assert {t[0] for t in turns(rp)} == {None, "Aria"}
    # a quote in a message is no caption's new speaker; lyrics are no film script
    assert turns("Carol: He wrote:\n>> Bob: I can't.\nAlice: OK.\n")[1] == (None, ">> Bob: I can't.")
    lyrics = "".join(f"VERSE {i}\nI walked along\nthe river\n\nCHORUS\nOh my darling\n\n" for i in range(3))
    stats = ReadStats()
    assert all(t is None or t[0] is None for t in parse_lines(lyrics.splitlines(True), "s.txt", stats=stats))
    # in a film script, a reply that is a number is a reply, not a page number
    script = "INT. CLASS - DAY\n\nTEACHER\nSix times seven?\n\nMARY\n42\n\nTEACHER\nGood.\n\nJOE\n8.\n"
    assert ("MARY", "42") in turns(script) and ("JOE", "8.") in turns(script)


def test_a_gutenberg_cast_member_met_late_is_a_speaker():
    play = "".join(f"ALGERNON.  Line {i}.\n\nLANE.  Yes, sir, {i}.\n\n" for i in range(3))
    assert ("GWENDOLEN", "Ernest!") in turns(play + "GWENDOLEN.  Ernest!\n")  # once, and after the others


def test_subtitles_lose_their_cue_numbers_and_times():
    srt = ("1\n00:00:01,000 --> 00:00:03,000\nBOB: Are you coming tonight?\n\n"
           "2\n00:00:03,500 --> 00:00:05,000\nALICE: <i>Maybe.</i> I have\na lot of work.\n\n"
           "3\n00:00:05,500-->00:00:07,000\n- BOB: Come on.\n-ALICE: {\\an8}Fine.\n"
           "4\n00:00:07,500 --> 00:00:09,000\nThe door slams. The answer is\n42\n")
    stats = ReadStats()
    assert located(srt, "s.srt", stats=stats) == [
        ("BOB", "Are you coming tonight?", 3), ("ALICE", "Maybe. I have a lot of work.", 7),  # wrapped: joined
        ("BOB", "Come on.", 12), ("ALICE", "Fine.", 13),  # a dash starts a speaker's line, markup goes
        (None, "The door slams. The answer is 42", 16)]  # a cue without a blank line before it; 42 is text
    assert stats.notes[0].startswith("s.srt: subtitles: cue numbers, times and markup left out")
    vtt = ("WEBVTT\nKind: captions\nLanguage: en\n\nNOTE a comment\nName: not a speaker\n\n"
           "STYLE\n::cue(.yellow) { color: yellow; }\n\nintro-1\n00:00.000 --> 00:02.310 align:start position:0%\n"
           "<v Bob>Are you coming<00:00:01.500><c> to the</c>\nparty &amp; the <ruby>祭<rt>matsuri</rt></ruby>?</v>\n\n"
           "00:03.500 --> 00:05.000\n<v.loud Alice>No!\n")
    assert turns(vtt) == [("Bob", "Are you coming to the party & the 祭?"), ("Alice", "No!")]
    ass = ("[Script Info]\nTitle: Test\n\n[V4+ Styles]\nFormat: Name, Fontname, Fontsize\nStyle: Default,Arial,20\n\n"
           "[Events]\nFormat: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n"
           "Dialogue: 0,0:00:01.00,0:00:03.00,Default,Bob,0,0,0,,Are you {\\i1}coming{\\i0}?\\NReally, now?\n"
           "Comment: 0,0:00:03.00,0:00:04.00,Default,Bob,0,0,0,,a note\n"
           "Dialogue: 0,0:00:03.00,0:00:04.00,Default,,0,0,0,,A door slams.\n")
    assert located(ass, "s.ass") == [("Bob", "Are you coming? Really, now?", 10),
                                     (None, "A door slams.", 12)]
    # one cue is enough in a file named .srt; text after a blank line inside a cue is read the same way
    one = "1\n00:00:01,000 --> 00:00:03,000\nBOB: only one\n\n<i>ALICE: after a blank</i>\n{\\an8}BOB: tagged\nmore\n"
    assert located(one, "one.srt") == [("BOB", "only one", 3), ("ALICE", "after a blank", 5),
                                       ("BOB", "tagged more", 6)]
    # a speaker's sentence that runs on into the next cue, which names no one, is one turn; not after a full stop
    across = ("1\n00:00:01,000 --> 00:00:03,000\nBOB: I was going to say,\n\n2\n00:00:03,000 --> 00:00:05,000\n"
              "that we should leave.\n\n3\n00:00:05,000 --> 00:00:06,000\nA door slams.\n")
    assert located(across, "x.srt") == [("BOB", "I was going to say, that we should leave.", 3),
                                        (None, "A door slams.", 11)]
    # a meeting's transcript: the same speaker's next cue goes on with an unfinished sentence, and Teams'
    # voice names are names (`Last, First`, `(Guest)`, pronouns and `| Company` go)
    teams = ("WEBVTT\n\n00:01.000 --> 00:02.000\n<v Mustermann, Max (IT-Services)>Let me share.</v>\n\n"
             "00:02.500 --> 00:03.000\n<v Lee, PhD>Fine.</v>\n")
    assert turns(teams) == [("Max Mustermann", "Let me share."), ("Lee", "Fine.")]
    meeting = ("WEBVTT\n\n00:01.000 --> 00:04.000\n<v Müller, Hans>Morning. Can you hear me?</v>\n\n"
               "00:04.500 --> 00:06.000\n<v Anna Schmidt (Guest)>Yes, the budget for next quarter and</v>\n\n"
               "00:06.000 --> 00:07.000\n<v Anna Schmidt (she/her)>then hiring.</v>\n\n"
               "00:07.500 --> 00:08.000\n<v Jonas Weber | Contoso>Good.</v>\n\n"
               "00:08.500 --> 00:09.000\n<v Jonas Weber | Contoso>Next.</v>\n")
    assert turns(meeting) == [("Hans Müller", "Morning. Can you hear me?"),
                              ("Anna Schmidt", "Yes, the budget for next quarter and then hiring."),
                              ("Jonas Weber", "Good."), ("Jonas Weber", "Next.")]  # a finished sentence: a turn
    # ASS events sorted by style, not time, are said in the order of their start times
    by_style = ("[Script Info]\n[Events]\nFormat: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n"
                "Dialogue: 0,0:00:05.00,0:00:06.00,Haruka,Haruka,0,0,0,,Shut up, Sota!\n"
                "Dialogue: 0,0:00:01.00,0:00:02.00,Haruka,Haruka,0,0,0,,Morning.\n"
                "Dialogue: 0,0:00:03.00,0:00:04.00,Sota,Sota,0,0,0,,You look tired.\n")
    assert [(t.speaker, t.text) for t in parse_lines(by_style.splitlines(True), "s.ass") if t is not None] == [
        ("Haruka", "Morning."), ("Sota", "You look tired."), ("Haruka", "Shut up, Sota!")]
    # ASS: a drawing is no words, every {...} goes, a colon in a Name is a space
    ass2 = ("[Script Info]\n[Events]\nFormat: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n"
            "Dialogue: 0,0:00:01.00,0:00:03.00,Sign,Sign,0,0,0,,{\\p1}m 0 0 l 100 0 100 100{\\p0}\n"
            "Dialogue: 0,0:00:01.00,0:00:03.00,D,Bob: The Great,0,0,0,,{TL note}Hi, all\n")
    assert [(t.speaker, t.text) for t in parse_lines(ass2.splitlines(True), "a.ass") if t is not None] == [
        ("Bob The Great", "Hi, all")]
    # a sound or music line is never the rest of a sentence, in its cue or the next
    sound = ("1\n00:00:01,000 --> 00:00:03,000\nBOB: Hey, listen\n\n2\n00:00:03,000 --> 00:00:04,000\n[door slams]\n\n"
             "3\n00:00:04,000 --> 00:00:06,000\nALICE: What was\n(laughing)\n♪ la la ♪\n")
    assert turns(sound) == [("BOB", "Hey, listen"), (None, "[door slams]"), ("ALICE", "What was"),
                            (None, "(laughing)"), (None, "♪ la la ♪")]
    # a sound between a speaker's wrapped lines: the words stay the speaker's
    mid = ("1\n00:00:01,000 --> 00:00:03,000\nBOB: I was going to\n(laughs)\nsay something\n\n"
           "2\n00:00:03,000 --> 00:00:04,000\nALICE: Go on.\n")
    assert turns(mid) == [("BOB", "I was going to say something"), (None, "(laughs)"), ("ALICE", "Go on.")]
    # SubRip converted from WebVTT or TTML keeps character references; only a complete one is decoded
    srt2 = ("1\n00:00:01,000 --> 00:00:03,000\nBOB: Tom &amp; Jerry &#39;n&#x27; me, &lt;3\n\n"
            "2\n00:00:03,500 --> 00:00:05,000\nALICE: AT&T &nothing&notreal; here\n")
    assert turns(srt2) == [("BOB", "Tom & Jerry 'n' me, <3"), ("ALICE", "AT&T &nothing&notreal; here")]
    # a text that only mentions a time range is no subtitle file
    assert turns("Bob: the show runs 00:01.000 --> 00:03.000\nAlice: ok\n") == [
        ("Bob", "the show runs 00:01.000 --> 00:03.000"), ("Alice", "ok")]


def test_a_spaced_gutenberg_play_its_cues_alone_between_blank_lines():
    said = [("HAMLET", "To be, or not to be.\nThat is the question."), ("OPHELIA", "Good my lord."),
            ("HAMLET", "I humbly thank you."), ("OPHELIA", "My lord."), ("HAMLET", "No, not I."),
            ("OPHELIA", "My honour'd lord."), ("HAMLET", "Ha, ha! Are you honest?"), ("OPHELIA", "My lord?"),
            ("HAMLET", "No, not I.")]
    play = "ACT I\n\nSCENE I. A room.\n\n" + "".join(f"{who}.\n\n{text}\n\n" for who, text in said)
    spoken = [t for t in turns(play) if t is not None and t[0] is not None]
    assert spoken == [(who, text.replace("\n", " ")) for who, text in said]
    # a short excerpt (fewer than eight such cues) is read so when asked: `--layout play`
    short = "".join(f"{who}.\n\n{text}\n\n" for who, text in said[:4])
    assert not any(t and t[0] for t in turns(short))
    assert [t for t in turns(short, "play") if t and t[0]] == [(w, t.replace("\n", " ")) for w, t in said[:4]]
    # a cue that says nothing before the next cue, a heading or the end is an empty turn (counted, never a sample)
    tail = turns(play[: play.rindex("No, not I.")] + "\nOPHELIA.\n\nSCENE II.\n\nHAMLET.\n\nGo.\n")
    assert ("OPHELIA", "") in tail and tail[-1] == ("HAMLET", "Go.") and ("HAMLET", "") in tail


def test_a_french_plays_cues_with_a_direction_after_a_comma():
    compact = ("SCÈNE PREMIÈRE\n\nMADAME PERNELLE, ELMIRE, DORINE, DAMIS.\n\nMADAME PERNELLE.\nAllons, Flipote.\n\n"
               "DORINE, à Damis.\nParlez plus bas.\n\nDAMIS, à Dorine.\nNon.\n\nELMIRE.\nVous marchez.\n")
    spoken = [t for t in turns(compact) if t is not None and t[0] is not None]
    assert spoken == [("MADAME PERNELLE", "Allons, Flipote."), ("DORINE", "(à Damis) Parlez plus bas."),
                      ("DAMIS", "(à Dorine) Non."), ("ELMIRE", "Vous marchez.")]
    assert (None, "MADAME PERNELLE, ELMIRE, DORINE, DAMIS.") in turns(compact)  # who is on: no cue
    spaced = ("PHILINTE.\n\nQu'avez-vous?\n\nALCESTE, assis.\n\nLaissez-moi.\n\nPHILINTE.\n\nMais encor.\n\n"
              "ALCESTE.\n\nLaissez-moi là.\n")
    assert turns((spaced + "\n") * 2)[:4] == [("PHILINTE", "Qu'avez-vous?"), ("ALCESTE", "(assis) Laissez-moi."),
                                     ("PHILINTE", "Mais encor."), ("ALCESTE", "Laissez-moi là.")]
    # a list of persons, one a line, and a sentence in capitals are no cues
    persons = ("DRAMATIS PERSONAE.\n\nROMEO, son to Montague.\nMERCUTIO, friend to Romeo.\n\nROMEO.\nAdieu.\n\nJULIET.\n"
               "Anon!\n\nROMEO.\nBye.\n\nJULIET.\nSTOP, she said.\n")
    assert turns(persons)[1] == (None, "ROMEO, son to Montague. MERCUTIO, friend to Romeo.")
    assert turns(persons)[-1] == ("JULIET", "STOP, she said.")


@pytest.mark.parametrize("text", [
    "PREFACE.\n\nThis little book was written in 1890 for my children.\n",
    "CHAPTER I.\n\nTHE RIVER BANK.\n\nThe Mole had been working very hard all the morning.\n",
    "CHORUS:\n\nOh, carry me home tonight\n\nVERSE 2:\n\nThe road\n\nCHORUS:\n\nOh, carry me home\n",
    "INGREDIENTS:\n\n- 6 apples\n- 1 cup sugar\n",
    "WHEREAS, the Company wishes to employ the Executive.\n\nThe Executive agrees.\n\nWHEREAS, the parties agree.\n\nNow.\n",
    "UPDATE:\n\nFixed it.\n\nEDIT:\n\nNever mind.\n",
])
def test_a_heading_in_capitals_before_a_paragraph_is_no_spaced_play(text):
    assert all(t is None or t[0] is None or t[1] == "" for t in turns(text)), turns(text)


def test_spaced_cues_leave_other_layouts_and_lists_of_persons_alone():
    # a meeting's header does not turn its chat lines into one speech
    minutes = "AGENDA:\n\nBudget\n\nBob: I think we should cut costs.\nAlice: Agreed.\nCarol: We need two engineers.\n"
    assert [t for t in turns(minutes) if t and t[0]][-3:] == [
        ("Bob", "I think we should cut costs."), ("Alice", "Agreed."), ("Carol", "We need two engineers.")]
    # a film script's action after a parenthetical stays action
    screen = ("INT. KITCHEN - NIGHT\n\nMARY\nYou're late.\n\nJOHN\n(shrugs)\n\nJohn drops his keys on the table.\n\n"
              "MARY\nDinner's cold.\n")
    assert (None, "John drops his keys on the table.") in turns(screen)
    # a compact play: who is on (`HARPAGON, seul.`), a list of persons, a song's heading: no replies
    play = ("FRIAR JOHN, of the same Order.\nAPOTHECARY.\nCHORUS.\n\nSCENE. Verona.\n\nROMEO, son to Montague.\n\n"
            "JULIET, daughter to Capulet.\n\nSCÈNE VII\n\nHARPAGON, seul.\n\nHARPAGON.\nAu voleur!\n\nSONG.\n\n"
            "Tell me where is fancy bred,\n\nBASSANIO.\nSo may the outward shows.\n")
    spoken = [t for t in turns(play) if t is not None and t[0] is not None and t[1]]
    assert spoken == [("HARPAGON", "Au voleur!"), ("BASSANIO", "So may the outward shows.")]
    # a spaced play's list of persons: cue after cue with directions, to the first plain cue
    scene = ("BARNARDO.\n\nWho's there?\n\nFRANCISCO.\n\nNay, answer me.\n\nBARNARDO.\n\nLong live the King!\n\n"
             "FRANCISCO, aside.\n\nBarnardo?\n\n")
    spaced = ("HAMLET, Prince of Denmark.\n\nHORATIO, friend to Hamlet.\n\nMARCELLUS, an officer.\n\n"
              "FRANCISCO, a soldier.\n\nSCENE. Elsinore.\n\n" + scene * 2)
    spoken = [t for t in turns(spaced) if t is not None and t[0] is not None and t[1]]
    assert spoken == [("BARNARDO", "Who's there?"), ("FRANCISCO", "Nay, answer me."),
                      ("BARNARDO", "Long live the King!"), ("FRANCISCO", "(aside) Barnardo?")] * 2
    assert (None, "SCENE. Elsinore.") in turns(spaced)


def test_a_comma_cue_before_a_speech_that_opens_with_a_capital_and_a_comma():
    play = ("ROMEO.\nShe speaks.\n\nJULIET, aside.\nO, Romeo, Romeo! wherefore art thou Romeo?\n\nROMEO.\nShall I?\n\n"
            "NURSE, within.\nI, madam? Anon!\n\nALCESTE, à part. Ah! voilà mon homme.\n")
    spoken = [t for t in turns(play) if t is not None and t[0] is not None]
    assert spoken[1] == ("JULIET", "(aside) O, Romeo, Romeo! wherefore art thou Romeo?")
    assert spoken[3] == ("NURSE", "(within) I, madam? Anon!")
    assert all(t[0] != "ALCESTE" for t in spoken)  # the speech on the cue's line is not taken for its direction


def test_two_directed_cues_in_a_row_are_an_entrance_and_a_speech_not_a_list():
    scene = ("VALÈRE, entrant.\n\nHARPAGON, à Valère.\n\nRien du tout.\n\nVALÈRE.\n\nMonsieur?\n\n"
             "HARPAGON.\n\nVa-t'en.\n\n")
    got = [t for t in turns(scene * 3) if t is not None]
    assert ("HARPAGON", "(à Valère) Rien du tout.") in got and ("VALÈRE", "Monsieur?") in got
    # a cue that said nothing is counted at its own line
    empty = [t for t in parse_lines((scene * 3).splitlines(True), "f.txt") if t and t.speaker == "VALÈRE" and not t.text]
    assert empty and empty[0].line == 1


def test_a_spaced_plays_narration_and_headings_are_nobodys_speech():
    said = [("JACK", "One."), ("ALGERNON", "Two."), ("JACK", "Three."), ("ALGERNON", "Four.")] * 2
    play = "".join(f"{who}.\n\n{text}\n\n" for who, text in said)
    got = turns(play + "JACK.\n\nWhere is the cake?\n\n_Lane goes out with the tray._\n\nDUKE.\n\n[_Aside._]\n\n"
                "SONG.\n\nO mistress mine.\n\nEnd of the Project Gutenberg EBook\n")
    assert (None, "_Lane goes out with the tray._") in got and (None, "O mistress mine.") in got
    assert (None, "End of the Project Gutenberg EBook") in got and ("DUKE", "") in got
    diary = "MONDAY.\n\nWent to the office.\n\nTUESDAY.\n\nStayed in.\n\n" * 4
    assert not any(t and t[0] for t in turns(diary))
