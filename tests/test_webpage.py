"""Saved web pages (a wiki's transcript, an IMSDb film script) read as the text a reader sees."""
from __future__ import annotations

import json

import pytest

from extensions.dialogue_lora.errors import UserError
from extensions.dialogue_lora.prepare import PrepareConfig, prepare
from extensions.dialogue_lora.sources import detect_source
from extensions.dialogue_lora.webpage import lines

TRANSCRIPT = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Pilot/Transcript | Fandom</title>
<style>.x { color: red }</style><script>window.x = "Carol: not a line";</script></head>
<body><nav><ul><li>Home</li><li>Carol: Episodes</li></ul></nav><header>Sign in</header>
<main><h1>Pilot/Transcript</h1>
<p><i>[The diner. Morning.]</i></p>
<p><b>Alice:</b> Are you
   coming tonight?</p>
<p><b>Bob:</b> I wouldn&#39;t miss it &amp; you know it.</p>
<p><b>Alice:</b> Bring the cake.</p>
<p><b>Bob:</b> Which cake?</p>
</main><footer>Carol: content is available under CC BY-SA</footer></body></html>
"""


def _samples(tmp_path, page: str, name: str, suffix: str = ".html"):
    src = tmp_path / f"page{suffix}"
    src.write_text(page, encoding="utf-8")
    out = tmp_path / "out.json"
    report = prepare(PrepareConfig(names=[name], txtfilename=str(src), jsonfilename=str(out)))
    return json.loads(out.read_text(encoding="utf-8")), report


def test_a_transcript_page_reads_as_its_dialogue_without_menus_or_scripts(tmp_path):
    assert detect_source(_write(tmp_path, TRANSCRIPT)) == "text"
    samples, report = _samples(tmp_path, TRANSCRIPT, "Bob")
    assert [s["output"] for s in samples] == ["I wouldn't miss it & you know it.", "Which cake?"]
    assert samples[0]["input"] == ("Pilot/Transcript\n[The diner. Morning.]\nAlice: Are you coming tonight?\nBob:")
    assert set(report.speakers) == {"Alice", "Bob"}  # Carol is only in the script, the menu and the footer
    assert any("a web page" in n for n in report.notes)


def _write(tmp_path, page, name="page.html"):
    p = tmp_path / name
    p.write_text(page, encoding="utf-8")
    return p


def test_a_page_not_named_html_is_known_by_its_doctype(tmp_path):
    samples, _ = _samples(tmp_path, TRANSCRIPT, "Alice", suffix=".txt")
    assert [s["output"] for s in samples] == ["Are you coming tonight?", "Bring the cake."]


def test_a_transcript_table_reads_name_colon_line_and_other_tables_stay_cells():
    page = ("<table><tr><th>Character</th><th>Line</th></tr>"
            "<tr><td><b>Alice</b></td><td>Great.<br>See you.</td></tr><tr><td>Bob</td><td>Bye.</td></tr>"
            "<tr><td>Alice</td><td>Wait!</td></tr></table>")
    text = [line.rstrip("\n") for line in lines(page) if line.strip()]
    assert text == ["Character", "Line", "Alice: Great. See you.", "Bob: Bye.", "Alice: Wait!"]
    # an infobox: every label once, no transcript
    infobox = "<table><tr><td>Directed by</td><td>Jane Roe</td></tr><tr><td>Running time</td><td>22 minutes</td></tr></table>"
    assert [line.strip() for line in lines(infobox) if line.strip()] == ["Directed by", "Jane Roe", "Running time",
                                                                          "22 minutes"]
    # a layout table: a menu cell beside the page's content, whose paragraphs stay lines
    layout = ("<table><tr><td><a href='/'>Home</a></td><td><h2>Episode 5</h2><p><b>Mara:</b> Did you hear that?</p>"
              "<p><b>Tom:</b> Just the wind.</p></td></tr></table>")
    assert [line.strip() for line in lines(layout) if line.strip()] == ["Home", "Episode 5", "Mara: Did you hear that?",
                                                                         "Tom: Just the wind."]


def test_a_line_break_inside_a_speech_and_a_wikis_terms():
    page = ("<p><b>Mara:</b> Wait.<br>Listen.</p><p>Tom: hi<br>Mara: what?<br>nothing.</p><p>A poem<br>in lines</p>"
            "<dl><dt>Mara</dt>\n<dd>Did you hear that?</dd></dl><dl><dt>Mara</dt><dd>Tom?</dd></dl>"
            "<p>Bob: Out.<br>[Carol enters]<br>(Bob leaves)<br>2B: Affirmative.</p>")
    from extensions.dialogue_lora.dialogue import split_speaker

    turn = lambda line: split_speaker(line) is not None  # noqa: E731  (the text reader's rule, as it passes it)
    assert [line.strip() for line in lines(page, turn) if line.strip()] == [
        "Mara: Wait. Listen.", "Tom: hi", "Mara: what? nothing.", "A poem", "in lines", "Mara: Did you hear that?",
        "Mara: Tom?", "Bob: Out.", "[Carol enters]", "(Bob leaves)", "2B: Affirmative."]
    # a cast list (each name once) is no dialogue; what the page hides is left out
    cast = ("<dl><dt>Mara</dt><dd>Played by Jane Doe.</dd><dt>Tom</dt><dd>Played by John Roe.</dd></dl>"
            "<div style='display: none'><p>Carol: hidden</p><div>nested</div></div><span hidden>gone</span>")
    assert [line.strip() for line in lines(cast) if line.strip()] == [
        "Mara", "Played by Jane Doe.", "Tom", "Played by John Roe."]
    # a hidden element a page may leave unclosed (`<p>`, `<li>`) hides nothing: it would hide the rest
    unclosed = "<p style='display:none'>old<p>Alice: Hello there.<p>Bob: Hi."
    assert [line.strip() for line in lines(unclosed) if line.strip()][-2:] == ["Alice: Hello there.", "Bob: Hi."]
    # a direction inside a speech stands alone, and the speech goes on after it
    aside = "<p><b>Mara:</b> Wait.<br>(she turns)<br>Listen to me.</p>"
    assert [line.strip() for line in lines(aside, turn) if line.strip()] == ["Mara: Wait. (she turns) Listen to me."]
    timed = ("<table><tr><td>00:01</td><td>Mara</td><td>Did you hear that?</td></tr>"
             "<tr><td>00:03</td><td>Tom</td><td>Just the wind.</td></tr><tr><td>00:05</td><td>Mara</td><td>No.</td></tr></table>")
    assert [line.strip() for line in lines(timed) if line.strip()] == [
        "Mara: Did you hear that?", "Tom: Just the wind.", "Mara: No."]
    # a schedule (time, room, session) is no transcript: its header says so
    schedule = ("<table><tr><th>Time</th><th>Room</th><th>Session</th></tr>"
                "<tr><td>9:00</td><td>Main Hall</td><td>Welcome</td></tr><tr><td>9:30</td><td>Room 2</td><td>Intro</td></tr>"
                "<tr><td>10:00</td><td>Main Hall</td><td>Keynote</td></tr></table>")
    assert not any(":" in line and not line[:1].isdigit() for line in lines(schedule))


def test_a_film_script_page_keeps_its_indentation_and_leaves_the_site_out(tmp_path):
    scene = """
<b>                              PASSENGER</b>
                    You don't like flying, do you?

<b>                              McCLANE</b>
                    What gave you that idea? {}

     He grips the armrest.
"""
    script = "".join(scene.format(i) for i in range(8))
    menu = "<tr><td><a href='/'>Home</a></td><td>" + " ".join(["Genres"] * 10) + "</td></tr>"
    page = (f"<html><head><title>Die Hard Script at IMSDb.</title></head><body><table>{menu}"
            f"<tr><td class=\"scrtext\"><pre><b>     INT. AIRPLANE - NIGHT</b>\n{script}</pre></td></tr>"
            f"{menu}</table></body></html>")
    samples, report = _samples(tmp_path, page, "McClane")
    assert set(report.layouts.values()) == {"screenplay"}
    assert [s["output"] for s in samples] == [f"What gave you that idea? {i}" for i in range(8)]
    assert samples[0]["input"] == "INT. AIRPLANE - NIGHT\nPASSENGER: You don't like flying, do you?\nMcCLANE:"
    assert set(report.speakers) == {"PASSENGER", "McCLANE"}  # nothing from the site's menu rows
    # a page whose <pre> is a licence beside a play in paragraphs (old Project Gutenberg HTML): the play
    licence = "<pre>" + "The licence says many things. " * 60 + "</pre>"
    play = "".join(f"<p>MARA: Line {i} of the play is here now.</p><p>TOM: And my answer {i}.</p>" for i in range(12))
    samples, _ = _samples(tmp_path, f"<html><body>{licence}{play}</body></html>", "Mara")
    assert len(samples) == 12


def test_a_discord_exporters_page_is_known_past_a_long_title(tmp_path):
    page = ("<!DOCTYPE html><html><head><title>" + "A very long guild name " * 20 + "</title><style>"
            + "body { margin: 0 } " * 300 + ".chatlog__message { margin: 0 }</style></head><body></body></html>")
    with pytest.raises(UserError, match="DiscordChatExporter HTML export"):
        detect_source(_write(tmp_path, page, "channel.html"))


@pytest.mark.parametrize("head, app", [
    ('<!DOCTYPE html><html><head><meta charset="utf-8"/><title>Exported Data</title></head><body>'
     '<div class="page_wrap"><div class="page_header">Alice</div><div class="message default clearfix" '
     'id="message1"><div class="from_name">Alice</div><div class="text">hi</div></div></div></body></html>',
     "Machine-readable JSON"),
    ("<!DOCTYPE html><html><head><title>Guild - general</title><style>.chatlog__message { margin: 0 }</style>"
     "</head><body><div class='chatlog__message'>hi</div></body></html>", "DiscordChatExporter HTML export"),
])
def test_a_chat_apps_html_export_is_refused_with_the_format_to_choose(tmp_path, head, app):
    with pytest.raises(UserError, match=app):
        detect_source(_write(tmp_path, head, "messages.html"))
