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


def test_a_transcript_table_row_reads_name_colon_line():
    page = ("<table><tr><th>Character</th><th>Line</th><th>Notes</th></tr>"
            "<tr><td><b>Alice</b></td><td>Great.<br>See you.</td></tr>"
            "<tr><td>Bob</td><td>Bye.</td></tr><tr><td>a long first cell that is no one's name at all, "
            "surely</td><td>b</td></tr></table>")
    text = [line.rstrip("\n") for line in lines(page) if line.strip()]
    assert text == ["Character", "Line", "Notes", "Alice: Great. See you.", "Bob: Bye.",
                    "a long first cell that is no one's name at all, surely", "b"]


def test_a_film_script_page_keeps_its_indentation_and_leaves_the_site_out(tmp_path):
    scene = """
<b>                              PASSENGER</b>
                    You don't like flying, do you?

<b>                              McCLANE</b>
                    What gave you that idea? {}

     He grips the armrest.
"""
    script = "".join(scene.format(i) for i in range(8))
    menu = "<tr><td><a href='/'>Home</a></td><td>" + " ".join(["Genres"] * 30) + "</td></tr>"
    page = (f"<html><head><title>Die Hard Script at IMSDb.</title></head><body><table>{menu}"
            f"<tr><td class=\"scrtext\"><pre><b>     INT. AIRPLANE - NIGHT</b>\n{script}</pre></td></tr>"
            f"{menu}</table></body></html>")
    samples, report = _samples(tmp_path, page, "McClane")
    assert set(report.layouts.values()) == {"screenplay"}
    assert [s["output"] for s in samples] == [f"What gave you that idea? {i}" for i in range(8)]
    assert samples[0]["input"] == "INT. AIRPLANE - NIGHT\nPASSENGER: You don't like flying, do you?\nMcCLANE:"
    assert set(report.speakers) == {"PASSENGER", "McCLANE"}  # no `Home:` from the site's menu rows


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
