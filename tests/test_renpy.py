"""Ren'Py scripts (.rpy): who is who, say statements, text tags, conversation breaks, files and bad input."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from extensions.dialogue_lora.dialogue import ReadStats
from extensions.dialogue_lora.errors import UserError
from extensions.dialogue_lora.prepare import PrepareConfig, prepare, preview, scan_speakers
from extensions.dialogue_lora.sources import detect_source
from extensions.dialogue_lora.sources.renpy import characters, iter_renpy_turns, statements

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "renpy_script.rpy"

DEFS = textwrap.dedent('''\
    define e = Character("Eileen", color="#c8ffc8")  # the guide
    define l = Character(_("Lucy"), image="lucy")
    define s = DynamicCharacter("s_name", what_prefix='"')
    default s_name = "???"
    define n = Character(None, kind=nvl)
    define mc = Character("[player_name]")
    define e2 = Character(kind=e)
    define tagged = Character("{color=#f00}Red{/color}")
    default player_name = "Sam"
    init python:
        b = Character("Bob",
                      color="#fff")
    ''')


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def turns(path, stats=None):
    """(speaker, text) pairs and "|" for each conversation break."""
    return ["|" if t is None else (t.speaker, t.text) for t in iter_renpy_turns(path, stats)]


def test_statements_join_open_strings_and_brackets_and_drop_comments():
    sts = list(statements([
        "# a comment\n",
        'e "Hash # inside" # a comment\n',
        "define b = Character('Bob',\n",
        "    color='#fff')\n",
        "\n",
        'e "A string\n',
        '   on two lines."\n',
    ]))
    assert [(s.line, s.code) for s in sts] == [
        (2, 'e "Hash # inside"'),
        (3, "define b = Character('Bob',\n    color='#fff')"),
        (6, 'e "A string\n   on two lines."'),
    ]


def test_characters_from_every_kind_of_definition():
    cast = characters([list(statements(DEFS.splitlines()))])
    assert cast.names == {"e": "Eileen", "l": "Lucy", "s": "???", "n": None, "mc": "Sam",
                          "e2": "Eileen", "tagged": "Red", "b": "Bob"}
    # a name set later in the story wins over the placeholder it started as
    later = characters([list(statements(DEFS.splitlines())), list(statements(['$ s_name = "Sayori"']))])
    assert later.names["s"] == "Sayori"


def test_say_statements_text_tags_extend_and_narration(tmp_path):
    script = write(tmp_path / "script.rpy", DEFS + textwrap.dedent('''\
        label start:
            "It was a quiet morning."
            e "Good morning, [player_name]!"
            mc "Morning. {i}Coffee?{/i}"
            e happy "Always.{w} Black,{p}please."
            extend " With sugar."
            e @ -happy "Attributes{nw}" with dissolve
            "Mystery" "Who am I?"
            b 'Single quotes, \\"escapes\\" and 100\\%.'
            n "The end. {{braces}} [[brackets] {rb}漢字{/rb}{rt}かんじ{/rt}"
            narrator "Narration too."
            centered "~ fin ~"
            l """
            First paragraph
            of Lucy.

            Second paragraph.
            """
        '''))
    assert turns(script) == [
        "|", "|",
        (None, "It was a quiet morning."),
        ("Eileen", "Good morning, Sam!"),
        ("Sam", "Morning. Coffee?"),
        ("Eileen", "Always. Black, please. With sugar."),
        ("Eileen", "Attributes"),
        ("Mystery", "Who am I?"),
        ("Bob", 'Single quotes, "escapes" and 100%.'),
        (None, "The end. {braces}} [brackets] 漢字"),
        (None, "Narration too."),
        (None, "~ fin ~"),
        ("Lucy", "First paragraph of Lucy."),
        ("Lucy", "Second paragraph."),
    ]


def test_labels_scenes_and_menu_choices_break_and_other_statements_are_skipped(tmp_path):
    script = write(tmp_path / "script.rpy", '''\
        define e = Character("Eileen")
        label start:
            play music "theme.ogg"
            voice "v1.ogg"
            show eileen happy at left
            e "One."
            scene bg park with fade
            e "Two."
            menu:
                e "Where to?"
                "The park":
                    e "The park it is."
                "Home" if tired:
                    jump home
            $ renpy.pause(1.0)
            e "After the menu."

        screen hello():
            text "Not dialogue"
            textbutton "Start" action Start()

        transform bounce:
            "img.png"
            linear 1.0 yoffset 10

        image eileen wave:
            "eileen_wave1.png"
            pause 0.5

        init python:
            x = "also not dialogue"

        label home:
            e "Home."
        ''')
    # each choice starts afresh, with what led to the menu as context only (the lines said as narration)
    # and the choice the player made
    led = [(None, "Eileen: Two."), (None, "Eileen: Where to?")]
    assert turns(script) == [
        "|", "|", ("Eileen", "One."), "|", ("Eileen", "Two."), ("Eileen", "Where to?"),
        "|", *led, (None, "The park"), ("Eileen", "The park it is."),
        "|", *led, (None, "Home"),
        # past the menu: on from the choice that went on (Home jumped away)
        "|", *led, (None, "The park"), (None, "Eileen: The park it is."), ("Eileen", "After the menu."),
        # the label that choice jumps to goes on from it
        "|", *led, (None, "Home"), ("Eileen", "Home."),
    ]


def test_undefined_speakers_are_named_by_their_variable_and_noted(tmp_path):
    script = write(tmp_path / "a.rpy", '''\
        label start:
            x "Who defined me?"
            x "Still no one."
        ''')
    stats = ReadStats()
    assert turns(script, stats) == ["|", "|", ("x", "Who defined me?"), ("x", "Still no one.")]
    assert any("no Character definition" in n and "x (2)" in n for n in stats.hints)


def test_a_game_folder_its_parent_a_zip_and_one_file_read_alike(tmp_path):
    game = tmp_path / "MyGame" / "game"
    write(game / "characters.rpy", 'define e = Character("Eileen")\n')
    write(game / "chapters" / "one.rpy", 'label start:\n    e "Hello."\n')
    write(game / "tl" / "french" / "one.rpy", '# game/chapters/one.rpy:2\ntranslate french start_1:\n    e "Bonjour."\n')
    write(tmp_path / "MyGame" / "renpy" / "common" / "00engine.rpy", 'label engine:\n    e "Engine."\n')
    expected = [("Eileen", "Hello.")]
    for given in (game, tmp_path / "MyGame", game / "chapters" / "one.rpy"):
        stats = ReadStats()
        assert [t for t in turns(given, stats) if t != "|"] == expected, given
        assert detect_source(given) == "renpy"
    # translations: given themselves, with the game's definitions
    assert [t for t in turns(game / "tl" / "french") if t != "|"] == [("Eileen", "Bonjour.")]
    stats = ReadStats()
    turns(game, stats)
    assert any("translations not read" in n for n in stats.notes)
    # the folder zipped, as the tab's upload takes it
    archive = tmp_path / "mygame.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p in (tmp_path / "MyGame").rglob("*.rpy"):
            z.write(p, p.relative_to(tmp_path).as_posix())
    assert detect_source(archive) == "renpy"
    assert [t for t in turns(archive) if t != "|"] == expected


def test_compiled_scripts_archives_and_empty_scripts_are_refused(tmp_path):
    for name, what in (("script.rpyc", "a compiled Ren'Py script"), ("archive.rpa", "a Ren'Py archive")):
        p = tmp_path / name
        p.write_bytes(b"RPA-3.0 \x00\x01")
        with pytest.raises(UserError, match=f"{name}: {what}, which is not read.*unrpyc"):
            detect_source(p)
    compiled = tmp_path / "compiled" / "game"
    compiled.mkdir(parents=True)
    (compiled / "script.rpyc").write_bytes(b"\x00")
    with pytest.raises(UserError, match="compiled scripts only"):
        turns(compiled)
    silent = write(tmp_path / "silent.rpy", 'label start:\n    jump elsewhere\n')
    with pytest.raises(UserError, match=r"silent.rpy: no dialogue in the Ren'Py script"):
        turns(silent)
    narration = write(tmp_path / "narration.rpy", 'label start:\n    "Only narration."\n')
    with pytest.raises(UserError, match=r"no character dialogue in .*narration.rpy"):
        prepare(PrepareConfig(names=["Bob"], txtfilename=str(narration), jsonfilename=str(tmp_path / "o.json")))


def test_example_end_to_end_and_the_tab_scan(tmp_path):
    out = tmp_path / "mira.json"
    r = subprocess.run([sys.executable, str(ROOT / "prepare_dataset.py"), "-t", str(EXAMPLE), "-n", "Mira", "-j",
                        str(out)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "(renpy): 48 lines" in r.stdout and "speakers (3): Mira 10, Theo 4, Old Anwen 2" in r.stdout
    records = json.loads(out.read_text(encoding="utf-8"))
    assert records[2] == {
        "input": "The wind pushed at the lighthouse door all evening.\nMira: You came! I was sure the storm would "
                 "keep you away.\nTheo: A little rain never stopped me. A lot of rain, maybe.\nMira: Then sit down "
                 "before you drip on the maps. Tea?\nTheo: Please. What are the maps for?\nMira:",
        "output": "The old keeper drew them. Every rock between here and the harbour. Every single one.",
        "name": "Mira", "source": "renpy_script.rpy:20"}
    # a menu choice: what led to the menu, the choice made, and the reply
    assert {"input": "Old Anwen: He drew them badly, mind you.\nOld Anwen: I'm Anwen. I kept this light for forty "
                     "years.\nMira: She keeps telling me the maps are wrong, Sam.\nMira: Do you want to see them?\n"
                     "Maybe tomorrow.\nMira:",
            "output": "Tomorrow, then. The sea isn't going anywhere.", "name": "Mira",
            "source": "renpy_script.rpy:37"} in records
    assert scan_speakers(EXAMPLE) == {"Mira": 10, "Theo": 4, "Old Anwen": 2}
    r = subprocess.run([sys.executable, str(ROOT / "prepare_dataset.py"), "-t", str(EXAMPLE), "-n", "Anwen",
                        "--dry_run"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "speakers found: Mira (10), Theo (4), Old Anwen (2)" in r.stderr


def test_names_known_only_at_play_empty_scripts_and_an_unclosed_string(tmp_path):
    game = tmp_path / "game"
    write(game / "a.rpy", '''\
        define p = Character(persistent.player)
        define q = Character(renpy.random.choice(["A", "B"]))
        label start:
            p "I named myself."
            q "Random."
            p "Broken quote.
            p "Never seen."
        ''')
    write(game / "empty.rpy", "\n")
    stats = ReadStats()
    assert turns(game, stats) == ["|", "|", ("p", "I named myself."), ("q", "Random.")]
    assert any(n.startswith("a.rpy:6: a string or bracket never closed") for n in stats.notes)


def test_a_translation_is_read_through_the_games_scripts(tmp_path):
    """Translations hold no labels, scenes or menus: the game's own scripts give the order and the breaks,
    each line said in its translation (found by the original's code, which Ren'Py writes as a comment: a
    line number goes stale when the script changes, as the second's has); its strings translate names
    and choices."""
    game = tmp_path / "game"
    write(game / "script.rpy", '''\
        define s = Character(_("Me"))
        define e = Character("Eileen")
        label start:
            e "Will you marry me?"
            menu:
                "Yes.":
                    e "I'm so happy!"
                "No.":
                    e "Oh."
            e "Not translated."
        ''')
    write(game / "tl" / "french" / "script.rpy", '''\
        # TODO: Translation updated at 2024-01-01 10:00

        # game/script.rpy:4
        translate french start_0a1b2c3d:

            # e "Will you marry me?"
            e "Veux-tu m'épouser ?"

        # game/script.rpy:8
        translate french start_1b2c3d4e:

            # e "I'm so happy!"
            e "Je suis si heureuse !"

        # game/script.rpy:9
        translate french start_2c3d4e5f:

            # e "Oh."
            e "Oh..."

        translate french strings:

            # game/script.rpy:6
            old "Yes."
            new "Oui."

            old "Eileen"
            new "Eileen-fr"
        ''')
    stats = ReadStats()
    assert turns(game / "tl" / "french", stats) == [
        "|", "|", ("Eileen-fr", "Veux-tu m'épouser ?"),
        "|", (None, "Eileen-fr: Veux-tu m'épouser ?"), (None, "Oui."), ("Eileen-fr", "Je suis si heureuse !"),
        "|", (None, "Eileen-fr: Veux-tu m'épouser ?"), (None, "No."), ("Eileen-fr", "Oh..."),
    ]
    assert any("a translation, read in the order of the game's scripts" in n and "1 line(s) with no translation"
               in n for n in stats.notes)
    samples = iter_renpy_turns(game / "tl" / "french")
    assert {t.source for t in samples if t is not None and t.speaker} == {
        "tl/french/script.rpy:7", "tl/french/script.rpy:13", "tl/french/script.rpy:19"}  # named from the game
    with pytest.raises(UserError, match=r"tl: holds a Ren'Py game's translations into 1 language\(s\) \(french\): "
                                        r"give one"):
        detect_source(game / "tl")


def test_what_real_games_write(tmp_path):
    """Found in real games' scripts: comments inside brackets, `init N screen` blocks, a creator-defined
    statement's block, `renpy.say`, `%%`, tagged and cased interpolations, names known only at play."""
    script = write(tmp_path / "script.rpy", '''\
        define e = Character("Eileen")
        define t = Character("Taro" if persistent.x else "T")
        default fancy = _("{i}variable value{/i}")
        default pname = "Sam"
        label start:
            e "Before."
            $ pal = ("red",  # primary
                     "blue")
            e "After the tuple, 75%% done."
            example:
                e "Inside a creator-defined statement's block."
            $ renpy.say(e, "Said from Python.")
            e "A [fancy!t] for [pname!u]."
            t "Who am I?"

        init -501 screen say(who, what):
            text "Screen words"
        init -1 style say_label:
            font "fonts/x.ttf"
        init 1 image blink:
            "eileen_1.png"
        translate french style say_label:
            font "fonts/y.ttf"
        ''')
    stats = ReadStats()
    assert turns(script, stats) == [
        "|", "|", ("Eileen", "Before."), ("Eileen", "After the tuple, 75% done."),
        ("Eileen", "Inside a creator-defined statement's block."), ("Eileen", "Said from Python."),
        ("Eileen", "A variable value for SAM."), ("t", "Who am I?"),
    ]
    assert any("named by their variable: t (1)" in n for n in stats.hints)


def test_a_folder_and_its_zip_read_in_the_same_order_with_the_same_sources(tmp_path):
    game = tmp_path / "Game" / "game"
    write(game / "z.rpy", 'define e = Character("Eileen")\nlabel z:\n    e "From z."\n')
    write(game / "Act 1" / "b.rpy", 'label b:\n    e "From Act 1."\n')
    write(game / "tl" / "french" / "b.rpy", '# game/Act 1/b.rpy:2\ntranslate french b_1:\n    e "De l\'acte 1."\n')
    archive = tmp_path / "game.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p in sorted((tmp_path / "Game").rglob("*.rpy"), reverse=True):
            z.write(p, p.relative_to(tmp_path).as_posix())
    stats = ReadStats()
    from_zip = [(t.text, t.source) for t in iter_renpy_turns(archive, stats) if t]
    assert from_zip == [(t.text, t.source) for t in iter_renpy_turns(game) if t] == [
        ("From Act 1.", "Act 1/b.rpy:2"), ("From z.", "z.rpy:3")]
    assert any("translations (tl/) not read" in n for n in stats.notes)


def test_logical_lines_are_found_in_linear_time(monkeypatch):
    # a long bracket or string ran over is not scanned again for each of its lines (it was quadratic)
    from extensions.dialogue_lora.sources import renpy

    scanned = []
    scan = renpy._scan_line
    monkeypatch.setattr(renpy, "_scan_line", lambda line, *state: scanned.append(len(line)) or scan(line, *state))
    lines = ["define pool = [\n", *(f'    "item {i}",  # note {i}\n' for i in range(20000)), "]\n", 'e "After."\n']
    sts = list(statements(lines))
    assert len(scanned) == len(lines) and sum(scanned) < sum(map(len, lines))  # each line once
    assert len(sts) == 2 and (sts[1].line, sts[1].code) == (20003, 'e "After."')
    assert sts[0].code.count("\n") == 20001 and "# note" not in sts[0].code


def test_the_branches_of_an_if_are_kept_apart_and_a_name_the_story_changes_is_noted(tmp_path):
    script = write(tmp_path / "game" / "script.rpy", '''\
        define a = Character("Ann")
        define t = DynamicCharacter("player")
        default player = "Sakura"
        label start:
            a "Hello."
            if flag:
                t "Branch one."
            elif other:
                t "Branch two{vspace=30}and more."
            else:
                t "Branch three."
            a "After if."
            if x:
                $ y = 1
            else:
                $ y = 2
            a "No break for branches that say nothing."
        label side_story:
            $ player = "Friend"
            t "Side story line."
        ''')
    stats = ReadStats()
    assert turns(script, stats) == [
        "|", "|", ("Ann", "Hello."), ("Sakura", "Branch one."),
        "|", (None, "Ann: Hello."), ("Sakura", "Branch two and more."),
        "|", (None, "Ann: Hello."), ("Sakura", "Branch three."), ("Ann", "After if."),
        ("Ann", "No break for branches that say nothing."), "|", ("Sakura", "Side story line."),
    ]
    assert any("the story renames 1 character(s) (Sakura also Friend): each keeps the name declared (or given "
               "first) throughout" in n for n in stats.notes)


def test_a_translations_menu_caption_and_question_are_found(tmp_path):
    """Inside a menu, Ren'Py's comment names the menu's line and adds `nointeract` to the say; a narration
    caption is translated among the strings."""
    game = tmp_path / "game"
    write(game / "script.rpy", '''\
        define s = Character("Sylvie")
        label start:
            menu:
                s "Which one?"
                "As soon as she asks, I decide..."
                "This one.":
                    s "Good."
        ''')
    write(game / "tl" / "french" / "script.rpy", '''\
        # game/script.rpy:3
        translate french start_1:

            # s "Which one?" nointeract
            s "Lequel ?" nointeract

        # game/script.rpy:7
        translate french start_2:

            # s "Good."
            s "Bien."

        translate french strings:

            # game/script.rpy:5
            old "As soon as she asks, I decide..."
            new "Dès qu'elle demande, je décide..."

            old "This one."
            new "Celui-ci."
        ''')
    stats = ReadStats()
    context = [(None, "Sylvie: Lequel ?"), (None, "Dès qu'elle demande, je décide...")]
    assert turns(game / "tl" / "french", stats) == [
        "|", "|", ("Sylvie", "Lequel ?"), (None, "Dès qu'elle demande, je décide..."),
        "|", *context, (None, "Celui-ci."), ("Sylvie", "Bien."),
    ]
    assert not any("no translation" in n for n in stats.notes)


def test_after_a_call_the_called_labels_lines_are_the_context(tmp_path):
    script = write(tmp_path / "game" / "script.rpy", '''\
        define a = Character("Ann")
        define b = Character("Bob")
        label start:
            a "Before the call."
            call sub
            a "After the call."
            return
        label sub:
            b "In sub."
            return
        ''')
    assert turns(script) == [
        "|", "|", ("Ann", "Before the call."), (None, "Bob: In sub."), ("Ann", "After the call."),
        "|", (None, "Ann: Before the call."), ("Bob", "In sub."),
    ]


def test_what_a_code_review_found(tmp_path):
    """Local labels are their chapter's; an extend opening an if's branch extends; names in any script;
    a call with arguments; a game whose scripts are all in subfolders; a zip of a folder not called game."""
    script = write(tmp_path / "a" / "game" / "s.rpy", '''\
        define e = Character("E")
        define b = Character("B")
        define 艾 = Character("艾琳")
        label ch1:
            e "Chapter one."
            jump .end
        label .end:
            e "End of one."
        label ch2:
            b "Chapter two."
            jump .end
        label .end:
            b "End of two."
            e "Hello"
            if x:
                extend " there"
            艾 "你好"
            call chapter(1)
            e "After the call."
            return
        label chapter(n=1):
            b "In the chapter."
            return
        ''')
    assert turns(script) == [
        "|", "|", ("E", "Chapter one."), "|", (None, "E: Chapter one."), ("E", "End of one."),
        "|", ("B", "Chapter two."), "|", (None, "B: Chapter two."), ("B", "End of two."), ("E", "Hello there"),
        ("艾琳", "你好"), (None, "B: In the chapter."), ("E", "After the call."),
        "|", (None, "B: Chapter two."), (None, "B: End of two."), (None, "E: Hello there"), (None, "艾琳: 你好"),
        ("B", "In the chapter."),
    ]
    nested = write(tmp_path / "b" / "G" / "game" / "scripts" / "a.rpy", 'label start:\n    "In a subfolder."\n')
    assert detect_source(tmp_path / "b" / "G") == "renpy" and turns(nested.parents[2])[-1] == (None, "In a subfolder.")
    archive = tmp_path / "top.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("MyGame/s.rpy", 'label start:\r\n    "One\u2028line."\r\n    "Two."\r\n')
    assert [(t.text, t.source) for t in iter_renpy_turns(archive) if t] == [("One line.", "s.rpy:2"),
                                                                             ("Two.", "s.rpy:3")]


def test_a_line_added_after_the_translation_is_not_given_anothers(tmp_path):
    game = tmp_path / "game"
    write(game / "script.rpy", 'define e = Character("Eileen")\ndefine b = Character("Bob")\nlabel start:\n'
                               '    e "Hello"\n    b "Added later."\n    e "Bye"\n')
    write(game / "tl" / "fr" / "script.rpy", '# game/script.rpy:4\ntranslate fr start_1:\n\n    # e "Hello"\n'
                                             '    e "Bonjour"\n\n# game/script.rpy:5\ntranslate fr start_2:\n\n'
                                             '    # e "Bye"\n    e "Au revoir"\n')
    stats = ReadStats()
    assert [t for t in turns(game / "tl" / "fr", stats) if t != "|"] == [("Eileen", "Bonjour"), ("Eileen", "Au revoir")]
    assert any("1 line(s) with no translation left out" in n for n in stats.notes)


def test_what_follows_a_block_goes_on_from_a_branch_that_reaches_it(tmp_path):
    """A branch that jumps or returns is not the context of what follows the menu or the if."""
    script = write(tmp_path / "game" / "script.rpy", '''\
        define m = Character("Mira")
        define t = Character("Theo")
        label start:
            t "Coming?"
            menu:
                "Yes.":
                    t "Great, I'm coming."
                "No.":
                    t "Bye then."
                    return
            m "So you came along."
            if rain:
                m "Take my coat."
            else:
                m "Nice day."
                jump ending
            t "Thanks."
        ''')
    yes = [(None, "Theo: Coming?"), (None, "Yes."), (None, "Theo: Great, I'm coming.")]
    assert turns(script) == [
        "|", "|", ("Theo", "Coming?"),
        "|", (None, "Theo: Coming?"), (None, "Yes."), ("Theo", "Great, I'm coming."),
        "|", (None, "Theo: Coming?"), (None, "No."), ("Theo", "Bye then."),
        # "No." returned: past the menu goes on from "Yes."
        "|", *yes, ("Mira", "So you came along."), ("Mira", "Take my coat."),
        "|", *yes, (None, "Mira: So you came along."), ("Mira", "Nice day."),
        # the else jumped away: past the if goes on from its first branch
        "|", *yes, (None, "Mira: So you came along."), (None, "Mira: Take my coat."), ("Theo", "Thanks."),
    ]


def test_a_label_in_an_earlier_file_starts_with_what_jumps_to_it(tmp_path):
    game = tmp_path / "game"
    write(game / "a_later.rpy", 'label later:\n    m "Later."\n')
    write(game / "script.rpy", 'define m = Character("Mira")\nlabel start:\n    m "First."\n    jump later\n')
    assert turns(game) == ["|", "|", (None, "Mira: First."), ("Mira", "Later."), "|", "|", ("Mira", "First.")]


def test_a_script_forced_to_be_read_as_text_says_so():
    with pytest.raises(UserError) as e:  # its statements are no `Name: text` lines: Mira is not found
        preview(PrepareConfig(names=["Mira"], txtfilename=str(EXAMPLE), source="text"))
    assert "(note: " in str(e.value) and "a Ren'Py script read as text (--source text)" in str(e.value)
    _, report = preview(PrepareConfig(names=["*"], txtfilename=str(EXAMPLE), source="text"))
    assert any("a Ren'Py script read as text (--source text): --source auto or renpy reads its say statements" in n
               for n in report.notes)
