"""prepare_dataset.py end to end (subprocess) and the API the tab uses: the quick start, the plays,
bad input (one `error:` line, non-zero exit, no traceback, an existing output left alone)."""
from __future__ import annotations

import itertools
import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from extensions.dialogue_lora.errors import UserError
from extensions.dialogue_lora.prepare import PrepareConfig, PrepareReport, prepare, preview, scan_speakers

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "dataset.txt"
SHAKESPEARE = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"


def cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, str(ROOT / "prepare_dataset.py"), *map(str, args)],
        capture_output=True, text=True, cwd=cwd or ROOT, timeout=120,
    )


def assert_one_line_error(r, *fragments):
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])


@pytest.mark.slow
def test_quick_start(tmp_path):
    out = tmp_path / "processed_dataset.json"
    r = cli("--name", "Bob", "-t", EXAMPLE, "-j", out)
    assert r.returncode == 0, r.stderr
    assert "samples: 4 (Bob 4)" in r.stdout
    assert "speakers (2): Alice 5, Bob 4" in r.stdout
    assert "dropped: empty 1 (all speakers; Bob's own: empty 1)\n" in r.stdout
    records = json.loads(out.read_text(encoding="utf-8"))
    assert [x["output"] for x in records] == [
        "I don't know, Alice. I have a lot of work.",
        "Boo! (laughs) Got you.",
        "*sighs* Fine, I'll be there at 8:30.",
        "See you, Alice.",
    ]
    assert all(x["input"].endswith("\nBob:") or x["input"] == "Bob:" for x in records)


@pytest.mark.slow
def test_default_file_names(tmp_path):
    (tmp_path / "dataset.txt").write_bytes(EXAMPLE.read_bytes())
    r = cli("-n", "bob", "-r", "2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    records = json.loads((tmp_path / "processed_dataset.json").read_text(encoding="utf-8"))
    assert len(records) == 4 and records[3]["input"].count("\n") == 2


def romeo_speeches(path: Path) -> list[str]:
    """Found independently: `ROMEO:` alone after a blank line (or the start); the speech is the lines up
    to the next blank line, joined with spaces. Empty speeches are skipped."""
    lines = path.read_text(encoding="utf-8").split("\n")
    speeches = []
    for i, line in enumerate(lines):
        if line.strip() == "ROMEO:" and (i == 0 or not lines[i - 1].strip()):
            body = []
            for nxt in lines[i + 1 :]:
                if not nxt.strip():
                    break
                body.append(" ".join(nxt.split()))
            if body:
                speeches.append(" ".join(body))
    return speeches


@pytest.mark.slow
@pytest.mark.skipif(not SHAKESPEARE.is_file(), reason=f"no {SHAKESPEARE} (the shared data beside the project)")
def test_romeo_one_sample_per_speech(tmp_path):
    out = tmp_path / "r.json"
    r = cli("--name", "ROMEO", "-t", SHAKESPEARE, "-j", out)
    assert r.returncode == 0, r.stderr
    assert "play layout" in r.stdout
    records = json.loads(out.read_text(encoding="utf-8"))
    expected = romeo_speeches(SHAKESPEARE)
    assert len(expected) > 100
    assert [x["output"] for x in records] == expected
    assert all(x["input"].endswith("ROMEO:") and x["name"] == "ROMEO" for x in records)
    assert f"samples: {len(expected)} (ROMEO {len(expected)})" in r.stdout


OLD = "OLD"  # not a dataset: kept by a failed run, and the input's error comes first


def test_bad_inputs_one_line_errors(tmp_path):
    out = tmp_path / "out.json"
    out.write_text(OLD, encoding="utf-8")
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    binary = tmp_path / "blob.txt"
    binary.write_bytes(bytes(range(256)) * 4)
    bad_json = tmp_path / "export.json"
    bad_json.write_text('{"messages": [{"id": 1,', encoding="utf-8")
    bad_csv = tmp_path / "lines.csv"
    bad_csv.write_text("who,line\nGuard,Halt!\n", encoding="utf-8")
    docx = tmp_path / "story.docx"
    with zipfile.ZipFile(docx, "w") as z:
        z.writestr("word/document.xml", "<w:document/>")
    cases = [
        (["-n", "Bob", "-t", docx], ["a Word document, which is not read: save it as plain text"]),
        (["-n", "Bob", "-t", tmp_path / "missing.txt"], ["no such file"]),
        (["-n", "Bob", "-t", empty], ["empty"]),
        (["-n", "Bob", "-t", binary], ["binary"]),
        (["-n", "Bobb", "-t", EXAMPLE], ["'Bobb' not found", "did you mean 'Bob'", "Alice (5), Bob (4)"]),
        (["-n", "Alex", "-t", bad_json], ["malformed JSON"]),
        (["-n", "Bob", "-t", EXAMPLE, "--source", "discord"], ["not a chat export (it is not JSON) but read as one",
                                                               "--source auto or text"]),
        (["-n", "Guard", "-t", bad_csv, "--csv_speaker_column", "who", "--csv_text_column", "text"],
         ["no column 'text'", "--csv_text_column"]),
        (["-t", EXAMPLE], ["--name"]),
        (["-n", "Bob", "-t", EXAMPLE, "--rounds", "many"], ["--rounds"]),
        (["-n", "Bob", "-t", EXAMPLE, "--format", "csv"], ["--format"]),
        (["-n", "Bob", "-t", EXAMPLE, "-j", tmp_path / "out.txt"], ["--jsonfilename"]),
        (["-n", "Bob", "-t", EXAMPLE, "--dry_run", "-1"], ["--dry_run must be", "not -1"]),
    ]
    for args, fragments in cases:
        r = cli(*args, "-j", out) if "-j" not in args else cli(*args)
        assert_one_line_error(r, *fragments)
        assert out.read_text(encoding="utf-8") == OLD  # a failed run leaves the old output alone
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.json")] == []  # no temp left


def test_failure_mid_stream_keeps_old_output(tmp_path):
    """The name check happens after every sample was streamed to the temporary file."""
    out = tmp_path / "out.json"
    out.write_text(OLD, encoding="utf-8")
    with pytest.raises(UserError, match="not found"):
        prepare(PrepareConfig(names=["Bob", "Zed"], txtfilename=str(EXAMPLE), jsonfilename=str(out)))
    assert out.read_text(encoding="utf-8") == OLD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_all_lines_dropped_is_an_error(tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("Alice: hi\nBob: (waves)\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"no samples for .Bob.*\(action_only 1; without --strip_actions those actions stay\)"):
        prepare(PrepareConfig(names=["Bob"], txtfilename=str(src), jsonfilename=str(tmp_path / "o.json"), strip_actions=True))


@pytest.mark.slow
def test_dry_run_writes_nothing(tmp_path):
    out = tmp_path / "o.json"
    r = cli("-n", "Bob", "-t", EXAMPLE, "-j", out, "--dry_run", "1")
    assert r.returncode == 0, r.stderr
    assert "preview: nothing written" in r.stdout and '"output": "I don\'t know' in r.stdout
    assert not out.exists()


def test_the_input_may_be_given_alone(tmp_path):
    """`prepare_dataset.py chat.txt -n Bob` is what most people type first: the same as -t chat.txt."""
    out = tmp_path / "o.json"
    r = cli(EXAMPLE, "-n", "Bob", "-j", out)
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text(encoding="utf-8"))[0]["source"] == "dataset.txt:2"
    assert_one_line_error(cli(EXAMPLE, "-t", EXAMPLE, "-n", "Bob", "-j", out), "the input is given twice")
    assert_one_line_error(cli(EXAMPLE, "more.txt", "-n", "Bob"), "unrecognized arguments: more.txt")
    # -t twice: argparse kept the last, and the first file was quietly not read
    assert_one_line_error(cli("-t", EXAMPLE, "-t", "more.txt", "-n", "Bob"), "--txtfilename given twice",
                          "a folder of text files is read whole")
    # a number of samples to show beyond any file's: all of them (it was a traceback from islice)
    assert cli(EXAMPLE, "-n", "Bob", "--dry_run", "99999999999999999999").returncode == 0
    # an optional number must not swallow the input silently, nor fail as an unexplained int
    assert_one_line_error(cli("-n", "Bob", "--dry_run", EXAMPLE), "--dry_run", "give the input before --dry_run")
    assert_one_line_error(cli(EXAMPLE, "-n", "Bob", "--dry_run", "1e3"), "--dry_run: takes a whole number of samples, not '1e3'")


def test_config_validation_names_the_flags():
    with pytest.raises(UserError) as e:
        PrepareConfig(names=[], rounds=-1, format="csv", source="web", gap_minutes=0, jsonfilename="x.txt")
    msg = str(e.value)
    for flag in ("--name", "--rounds", "--format", "--source", "--gap_minutes", "--jsonfilename"):
        assert flag in msg
    assert PrepareConfig(names="Alice, bob,ALICE").names == ["Alice", "bob"]
    assert PrepareConfig(names=["Alice", "Bob,Carol"]).names == ["Alice", "Bob", "Carol"]
    assert PrepareConfig(names=["Bob:"]).names == ["Bob"]
    with pytest.raises(UserError, match="overwritten"):
        PrepareConfig(names=["Bob"], txtfilename="a.json", jsonfilename="a.json").check_output()


def test_a_folder_of_scripts_is_read_file_by_file(tmp_path):
    # a series' episodes: each file its own conversations, in the order a person reads the names
    folder = tmp_path / "episodes"
    folder.mkdir()
    (folder / "ep10.txt").write_text("Amy: last one\nBob: the end\n")
    (folder / "ep2.txt").write_text("Amy: second\nBob: yes\n")
    (folder / "notes.pdf").write_bytes(b"%PDF")
    out = tmp_path / "out.jsonl"
    r = cli("-n", "Bob", "-t", folder, "-j", out)
    assert r.returncode == 0, r.stderr
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(s["input"], s["output"], s["source"]) for s in got] == [
        ("Amy: second\nBob:", "yes", "ep2.txt:2"), ("Amy: last one\nBob:", "the end", "ep10.txt:2")]
    # a name with a digit that is no number (`²`), and Telegram's HTML export folder: the chat reader's advice
    (folder / "\u00b23.txt").write_text("Amy: x\nBob: y\n")
    assert cli("-n", "Bob", "-t", folder, "-j", out).returncode == 0
    telegram = tmp_path / "ChatExport"
    telegram.mkdir()
    (telegram / "messages.html").write_text("<html></html>")
    (telegram / "notes.txt").write_text("Amy: x\nBob: y\n")
    assert_one_line_error(cli("-n", "Bob", "-t", telegram, "-j", out), "Telegram's HTML export")
    empty = tmp_path / "nothing"
    empty.mkdir()
    (empty / "a.pdf").write_bytes(b"%PDF")
    assert_one_line_error(cli("-n", "Bob", "-t", empty, "-j", out), "folder holds no chat exports")


def test_a_dry_run_may_name_an_output_inside_the_input_folder(tmp_path):
    folder = tmp_path / "exports"
    folder.mkdir()
    (folder / "Kim.txt").write_text("1/3/23, 10:00 PM - Kim: are you still up?\n1/3/23, 10:01 PM - Lee: barely, "
                                    "long day at work\n", encoding="utf-8")
    cfg = PrepareConfig(names=["Lee"], txtfilename=str(folder), jsonfilename=str(folder / "o.json"),
                        filter_low_quality=False)
    records, _ = preview(cfg, 3)  # writes nothing, so nothing can be overwritten
    assert [r["output"] for r in records] == ["barely, long day at work"]
    with pytest.raises(UserError, match="inside the input folder"):
        prepare(cfg)


def test_preview_and_report(tmp_path):
    cfg = PrepareConfig(names=["Bob"], txtfilename=str(EXAMPLE), jsonfilename=str(tmp_path / "o.json"), format="messages")
    records, report = preview(cfg, n=2)
    assert len(records) == 2 and records[0]["messages"][1]["content"] == "I don't know, Alice. I have a lot of work."
    assert isinstance(report, PrepareReport) and report.samples_written == 4 and report.output is None
    assert not (tmp_path / "o.json").exists()
    text = report.format()
    assert "speakers (2): Alice 5, Bob 4" in text and "preview" in text and "dropped: empty 1" in text
    assert report.to_dict()["per_name"] == {"Bob": 4}


def test_scan_speakers(tmp_path):
    assert scan_speakers(EXAMPLE) == {"Alice": 5, "Bob": 4}
    src = tmp_path / "c.txt"
    src.write_text("BOB: a\nBob: b\nbob: c\nBob: d\nAlice: e\n", encoding="utf-8")
    assert scan_speakers(src) == {"Bob": 4, "Alice": 1}  # merged case-insensitively, most common casing
    assert scan_speakers(ROOT / "examples" / "skyrim_dialogue.csv") == {"MaleNord": 2, "FemaleEvenToned": 2}
    assert scan_speakers(ROOT / "examples" / "discord_export.json") == {"Alex": 6, "Sam": 4, "robin": 5}


def test_multiple_names_cli(tmp_path):
    out = tmp_path / "o.jsonl"
    report = prepare(PrepareConfig(names=["alice,BOB"], txtfilename=str(EXAMPLE), jsonfilename=str(out), format="sharegpt"))
    assert report.per_name == {"Alice": 5, "Bob": 4}
    rows = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 9 and {r["name"] for r in rows} == {"Alice", "Bob"}


def test_output_inside_a_discord_export_folder_is_refused(tmp_path):
    folder = tmp_path / "exports"
    folder.mkdir()
    chan = folder / "chan.json"
    chan.write_text(json.dumps({"messages": [{"type": "Default", "author": {"name": "Alex"}, "content": "Hello there"}]}),
                    encoding="utf-8")
    before = chan.read_bytes()
    for out in (chan, folder / "new.json"):
        r = cli("-n", "Alex", "-t", folder, "-j", out)
        assert_one_line_error(r, "is inside the input folder")
    assert chan.read_bytes() == before and sorted(p.name for p in folder.iterdir()) == ["chan.json"]


def test_unwritable_output_paths(tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("Bob: hi\n", encoding="utf-8")
    (tmp_path / "afile").write_text("x", encoding="utf-8")
    r = cli("-n", "Bob", "-t", src, "-j", tmp_path / "afile" / "x.json")
    assert_one_line_error(r, "afile is a file, not a folder")
    # a failed run leaves no folder behind that it made for its output
    r = cli("-n", "Nobody", "-t", src, "-j", tmp_path / "new" / "sub" / "x.json")
    assert_one_line_error(r, "not found")
    assert not (tmp_path / "new").exists()


def test_only_an_earlier_dataset_is_replaced(tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("Alice: hi\nBob: hello\n", encoding="utf-8")
    export = {"guild": {"name": "g"}, "messages": [{"type": "Default", "author": {"name": "Alex"}, "content": "Hi"}]}
    for name, text in (("notes.json", "my notes, not samples\n"), ("settings.json", '{"theme": "dark"}'),
                       ("export.json", json.dumps(export)), ("list.json", "[1, 2]")):
        (tmp_path / name).write_text(text, encoding="utf-8")
        assert_one_line_error(cli("-n", "Bob", "-t", src, "-j", tmp_path / name), "is not a dataset of samples")
        assert (tmp_path / name).read_text(encoding="utf-8") == text
    out = tmp_path / "bob.json"
    for name, fmt in (("Bob", "messages"), ("Alice", "sharegpt"), ("Bob", "alpaca"), ("Alice", "rounds")):
        assert cli("-n", name, "-t", src, "-j", out, "--format", fmt).returncode == 0  # replaces the last output
    assert json.loads(out.read_text(encoding="utf-8"))[0]["output"] == "hi"


def test_output_keeps_its_mode_or_follows_the_umask(tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("Bob: hi\n", encoding="utf-8")
    out = tmp_path / "o.json"
    prepare(PrepareConfig(names=["Bob"], txtfilename=str(src), jsonfilename=str(out)))
    old = os.umask(0o022)
    os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o666 & ~old  # not the temporary file's 0600
    out.chmod(0o640)
    prepare(PrepareConfig(names=["Bob"], txtfilename=str(src), jsonfilename=str(out)))
    assert out.stat().st_mode & 0o777 == 0o640


def test_a_requested_name_without_samples_is_an_error_even_when_others_have_some(tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("Alice: hi\nBob: hello\nCarol:\nBob: bye\n", encoding="utf-8")
    out = tmp_path / "o.json"
    with pytest.raises(UserError, match="no samples for 'Carol'.*their one line was dropped \\(empty 1\\)"):
        prepare(PrepareConfig(names=["Bob", "Carol"], txtfilename=str(src), jsonfilename=str(out)))
    assert not out.exists()


def test_narration_only_file_says_so(tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("It was a dark night.\nThe wind howled.\n", encoding="utf-8")
    with pytest.raises(UserError, match="no speaker lines in .*2 line\\(s\\) read, all narration"):
        prepare(PrepareConfig(names=["*"], txtfilename=str(src), jsonfilename=str(tmp_path / "o.json")))


def test_samples_per_name_merge_casings_in_the_report(tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("Bob: one\nBOB: two\nbob: three\nBob: four\n", encoding="utf-8")
    report = prepare(PrepareConfig(names=["Bob"], txtfilename=str(src), jsonfilename=str(tmp_path / "o.json")))
    assert report.per_name == {"Bob": 4}
    assert "samples: 4 (Bob 4)" in report.format()


def test_flags_for_another_input_or_format_are_errors(tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("Bob: hi\n", encoding="utf-8")
    out = tmp_path / "o.json"
    assert_one_line_error(cli("-n", "Bob", "-t", src, "-j", out, "--instruction", "Talk"), "--instruction: for --format alpaca only")
    assert_one_line_error(cli("-n", "Bob", "-t", src, "-j", out, "--gap_minutes", "3"), "--gap_minutes: for chat exports only")
    assert_one_line_error(cli("-n", "Bob", "-t", src, "-j", out, "--csv_player", "Hero"), "--csv_player: for CSV input only")
    assert_one_line_error(cli("-n", "*,Nobody", "-t", src, "-j", out), "--name '*' means every speaker: give it alone")
    chat = ROOT / "examples" / "discord_export.json"
    assert_one_line_error(cli("-n", "Alex", "-t", chat, "-j", out, "--keep_low_quality", "--min_messages", "3"),
                          "--min_messages: it says which conversations are low quality, and --keep_low_quality keeps")
    assert not out.exists()
    r = cli("-n", "Bob", "-t", src, "-j", out, "--format", "alpaca", "--instruction", "Talk as {name}.")
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text(encoding="utf-8"))[0]["instruction"] == "Talk as Bob."


@pytest.mark.parametrize("name, content, message", [
    ("narration.txt", "It was a dark night.\nThe wind howled.\n", "no speaker lines in .*2 line\\(s\\) read, all narration"),
    ("empty_list.json", "[]\n", "holds an empty JSON list, no dialogue"),
    ("no_messages.json", '{"messages": []}', "no messages by people in .*no_messages.json: it has none"),
    ("system_only.json", json.dumps({"messages": [{"id": "1", "type": "GuildMemberJoin", "author": {"name": "a"}}]}),
     "no messages by people in .*system_only.json \\(dropped: system_message 1\\)"),
    ("header_only.csv", "Voice Type,Dialogue 1 - English\n", "no rows with a reply in .*header_only.csv: it has none"),
    ("samples.json", json.dumps([{"instruction": "i", "input": "Bob:", "output": "hi"}]),
     "samples.json: is a prepared dataset .*lora_finetune.py -d"),
    ("samples.jsonl", '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n',
     "samples.jsonl: is a prepared dataset"),
])
def test_inputs_without_dialogue_say_what_they_hold(tmp_path, name, content, message):
    src = tmp_path / name
    src.write_text(content, encoding="utf-8")
    with pytest.raises(UserError, match=message):
        prepare(PrepareConfig(names=["Bob"], txtfilename=str(src), jsonfilename=str(tmp_path / "o.json")))
    assert src.read_text(encoding="utf-8") == content and not (tmp_path / "o.json").exists()


def test_names_are_read_as_the_data_is(tmp_path):
    from extensions.dialogue_lora.prepare import split_names

    # a curly apostrophe typed (or pasted) in --name matches the data, whose quotes are straightened
    assert split_names(["O’Brien, Bob:", "bob", "  Ann  Marie "]) == ["O'Brien", "Bob", "Ann Marie"]
    src = tmp_path / "d.txt"
    src.write_text("O’Brien: hello\nAnna: hi\n", encoding="utf-8")
    records, _ = preview(PrepareConfig(names=["O’Brien"], txtfilename=str(src)), 5)
    assert [(r["name"], r["output"]) for r in records] == [("O'Brien", "hello")]


def test_one_name_in_capitals_is_one_speaker_and_other_accents_are_other_people(tmp_path):
    """Turkish's dotted and dotless i in capitals, Greek capitals without their accents, a name typed
    decomposed: one speaker, matched by --name (the cue as each line has it). Other accents tell people
    apart (Vietnamese Hà, Hạ and Ha; Russian Андрей and Андреи)."""
    src = tmp_path / "d.txt"
    src.write_text("İSMAİL: Merhaba.\nIŞIK: Selam.\nİsmail: Nasılsın?\nIşık: İyiyim.\n"
                   "ΣΩΚΡΑΤΗΣ: Χαίρε.\nΣωκράτης: Καλημέρα.\nZoë: Hi.\nHà: Chào bạn.\nHạ: Mình khỏe.\nHa: Chào.\n"
                   "Андрей: Привет.\nАндреи: Пока.\n", encoding="utf-8")
    out = tmp_path / "o.json"
    report = prepare(PrepareConfig(names=["ismail", "ışık", "Σωκράτης", "Zoe\u0308", "Hà", "андрей"],
                                   txtfilename=str(src), jsonfilename=str(out)))
    assert report.speakers == {"İSMAİL": 2, "IŞIK": 2, "ΣΩΚΡΑΤΗΣ": 2, "Zoë": 1, "Hà": 1, "Hạ": 1, "Ha": 1,
                               "Андрей": 1, "Андреи": 1}
    records = json.loads(out.read_text(encoding="utf-8"))
    assert [r["name"] for r in records] == ["İSMAİL", "IŞIK", "İsmail", "Işık", "ΣΩΚΡΑΤΗΣ", "Σωκράτης", "Zoë", "Hà",
                                            "Андрей"]
    with pytest.raises(UserError, match="name 'zoe' not found in .*did you mean 'Zoë'"):
        preview(PrepareConfig(names=["zoe"], txtfilename=str(src)), 5)
    with pytest.raises(UserError, match="name 'Isık' not found in .*did you mean 'IŞIK'"):
        preview(PrepareConfig(names=["Isık"], txtfilename=str(src)), 5)
    # several names not found: one line, the speakers found said once
    with pytest.raises(UserError) as e:
        preview(PrepareConfig(names=["zoe", "Zoë", "Nobody", "Isık"], txtfilename=str(src)), 5)
    assert str(e.value).startswith(f"3 names not found in {src}: 'zoe' (did you mean 'Zoë'?), 'Nobody', 'Isık' (did "
                                   "you mean 'IŞIK'?); speakers found: ")
    assert str(e.value).count("speakers found") == 1 and "\n" not in str(e.value)
    # a paragraph pasted for --name is quoted cut, with its length
    with pytest.raises(UserError) as e:
        preview(PrepareConfig(names=["a" * 5000], txtfilename=str(src)), 5)
    assert str(e.value).startswith(f"name '{'a' * 80}'... (5,000 characters) not found in {src}") and len(str(e.value)) < 400
    # a cast of twelve: the ten who speak most, most lines first, and how many more
    src.write_text("".join(f"P{i}: line.\n" * (i + 1) for i in range(12)), encoding="utf-8")
    with pytest.raises(UserError) as e:
        preview(PrepareConfig(names=["Nobody"], txtfilename=str(src)), 5)
    assert str(e.value).endswith("speakers found: " + ", ".join(f"P{i} ({i + 1})" for i in range(11, 1, -1))
                                 + ", ... +2 more"), str(e.value)


def test_a_console_that_cannot_show_a_name_gets_it_escaped_not_a_traceback(tmp_path):
    """Windows writes redirected output in cp1252: a name beyond it failed after the file was written."""
    import os

    src = tmp_path / "in.txt"
    src.write_text("Ōkami: the wolf speaks at last\nBob: and Bob answers him\n", encoding="utf-8")
    env = dict(os.environ, PYTHONIOENCODING="cp1252")
    for args, rc in ((["-n", "Ōkami", "-t", src, "-j", tmp_path / "o.json"], 0),
                     (["-n", "Ōkamii", "-t", src, "-j", tmp_path / "p.json"], 2)):
        r = subprocess.run([sys.executable, str(ROOT / "prepare_dataset.py"), *map(str, args)], capture_output=True,
                           cwd=ROOT, timeout=120, env=env)
        assert r.returncode == rc and b"Traceback" not in r.stderr, r.stderr
        assert b"\\u014ckami" in r.stdout + r.stderr
    assert json.loads((tmp_path / "o.json").read_text(encoding="utf-8"))[0]["name"] == "Ōkami"


def test_replacing_an_earlier_dataset_is_said(tmp_path):
    out = tmp_path / "ds.json"
    first = cli("-n", "Bob", "-t", EXAMPLE, "-j", out)
    assert first.returncode == 0 and "earlier dataset" not in first.stdout
    before = out.read_bytes()
    again = cli("-n", "Alice", "-t", EXAMPLE, "-j", out)
    assert again.returncode == 0 and ("note: ds.json replaced the earlier dataset of that name, kept as ds.json.bak"
                                      in again.stdout)
    # kept: it may be the user's own samples, or cleaned by hand
    assert (tmp_path / "ds.json.bak").read_bytes() == before and out.read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds.json", "ds.json.bak"]
    cli("-n", "Bob", "-t", EXAMPLE, "-j", out)  # once more: the .bak is the one before
    assert json.loads((tmp_path / "ds.json.bak").read_text())[0]["name"] == "Alice"
    # a folder made for the output is said too (a typo in the path would go unseen)
    made = cli("-n", "Bob", "-t", EXAMPLE, "-j", tmp_path / "new" / "sub" / "ds.json")
    assert made.returncode == 0 and f"note: made the folder {tmp_path / 'new' / 'sub'} for ds.json" in made.stdout


def test_a_forced_layout_the_file_does_not_fit_is_said(tmp_path):
    """--layout play on `Name: text` lines folds one speaker's lines into another's speech; --layout lines on
    a play makes a speech line with a colon a turn: both are noted, and said with the error they lead to."""
    out = tmp_path / "o.json"
    report = prepare(PrepareConfig(names=["Alice"], txtfilename=str(EXAMPLE), jsonfilename=str(out), layout="play"))
    assert any(n.startswith("--layout play, but dataset.txt looks like `Name: text` lines") for n in report.notes)
    with pytest.raises(UserError, match=r"name 'Bob' not found .* \(note: --layout play, but dataset.txt looks like"):
        prepare(PrepareConfig(names=["Bob"], txtfilename=str(EXAMPLE), jsonfilename=str(out), layout="play"))
    play = tmp_path / "play.txt"
    play.write_text("ROMEO:\nBut soft, what light.\nCome: let us go.\n\nJULIET:\nAy me!\n\nROMEO:\nShe speaks.\n",
                    encoding="utf-8")
    r = cli("-n", "ROMEO", "-t", play, "-j", out, "--layout", "lines")
    assert r.returncode == 0 and "note: --layout lines, but play.txt looks like a play" in r.stdout
    assert [x["output"] for x in json.loads(out.read_text(encoding="utf-8"))] == ["But soft, what light.", "She speaks."]
    # no note when the forced layout is the one the file has
    assert prepare(PrepareConfig(names=["ROMEO"], txtfilename=str(play), jsonfilename=str(out), layout="play"),
                   write=False).notes == []


def test_a_name_missing_from_a_folder_names_the_files_left_unread(tmp_path):
    folder = tmp_path / "exports"
    folder.mkdir()
    (folder / "general.json").write_bytes((ROOT / "examples" / "discord_export.json").read_bytes())
    (folder / "dialogue.txt").write_bytes(EXAMPLE.read_bytes())
    r = cli("-n", "Bob", "-t", folder, "-j", tmp_path / "o.json")
    assert_one_line_error(r, "name 'Bob' not found", "note: ", "1 file(s) not read, not chat exports: dialogue.txt")


def test_a_name_with_a_terminals_escape_codes_reaches_no_terminal(tmp_path):
    """A nickname or a line holding ESC or BEL (`\x1b[2J` clears the screen, `\x1b]0;...\x07` retitles the
    window) was printed as it was in the report, the speakers-found error and every chat.py reply, and kept
    in the samples: the codes go, the letters stay."""
    messages = [{"id": str(i), "type": "Default", "timestamp": f"2024-05-01T10:0{i}:00+00:00",
                 "author": {"id": str(i % 2), "name": "Z\x1b]0;pwned\x07ed" if i % 2 else "Al\x1b[2J\x1b[Hice"},
                 "content": f"message number {i} has \x1b[31mcolour in it"} for i in range(6)]
    export = tmp_path / "general.json"
    export.write_text(json.dumps({"messages": messages}), encoding="utf-8")
    text = tmp_path / "in.txt"
    text.write_text("Alice: hi \x1b[2J there\nZ\x1b]0;x\x07ed: hello\nBob: bye\x07 now\n", encoding="utf-8")
    for src in (export, text):
        out = tmp_path / "o.json"
        run = subprocess.run([sys.executable, str(ROOT / "prepare_dataset.py"), "-n", "*", str(src), "-j", str(out)],
                             capture_output=True, text=True, cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        saved = out.read_text(encoding="utf-8")
        for said in (run.stdout + run.stderr, saved, json.dumps(json.loads(saved), ensure_ascii=False)):
            assert "\x1b" not in said and "\x07" not in said and "\\u001b" not in said and "\\u0007" not in said
        wrong = subprocess.run([sys.executable, str(ROOT / "prepare_dataset.py"), "-n", "Nobody", str(src), "-j",
                                str(tmp_path / "p.json")], capture_output=True, text=True, cwd=tmp_path)
        assert wrong.returncode == 2 and "speakers found" in wrong.stderr and "\x1b" not in wrong.stderr
    assert {r["name"] for r in json.loads((tmp_path / "o.json").read_text(encoding="utf-8"))} >= {"Bob"}


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes (POSIX)")
def test_a_pipe_is_neither_read_nor_replaced(tmp_path):
    """A named pipe as the input waited forever (the zip check opened it), /dev/zero read until memory ran
    out; one as the output, or as a game's script, was replaced by a file or waited on."""
    pipe = tmp_path / "in.txt"
    os.mkfifo(pipe)
    for given, source in itertools.product((pipe, Path("/dev/zero")), ("auto", "text", "discord", "renpy", "csv")):
        with pytest.raises(UserError, match=r"not a regular file \(a pipe or a device\): save the dialogue to a file"):
            prepare(PrepareConfig(names=["Bob"], txtfilename=str(given), jsonfilename=str(tmp_path / "o.json"),
                                  source=source))
    out = tmp_path / "out.json"
    os.mkfifo(out)
    with pytest.raises(UserError, match=r"out.json: is not a regular file \(a pipe or a device\): not replaced"):
        prepare(PrepareConfig(names=["Bob"], txtfilename=str(EXAMPLE), jsonfilename=str(out)))
    assert stat.S_ISFIFO(out.stat().st_mode)
    game = tmp_path / "game"
    game.mkdir()
    shutil.copy(ROOT / "examples" / "renpy_script.rpy", game / "script.rpy")
    os.mkfifo(game / "zz.rpy")
    assert prepare(PrepareConfig(names=["*"], txtfilename=str(game), jsonfilename=str(tmp_path / "g.json"))).samples_written
