"""The tab's behaviour without a browser (ui.TabLogic), and training jobs in a separate process (jobs.py)."""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from extensions.dialogue_lora import jobs, ui
from extensions.dialogue_lora.errors import UserError
from extensions.dialogue_lora.host import StandaloneHost
from extensions.dialogue_lora.paths import resolve_dirs
from extensions.dialogue_lora.ui import NO_ADAPTER, TabLogic, format_eta, progress_markdown, show_sample

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "dataset.txt"


@pytest.fixture
def logic(webui_root) -> TabLogic:
    return TabLogic(StandaloneHost({}, resolve_dirs(webui_root)))


def form(out_name="bob.json", names=("Bob",), upload=str(EXAMPLE), picked=None, rounds=5, fmt="rounds"):
    return (upload, picked, "auto", list(names), rounds, fmt, False, [], out_name, 10)


# ------------------------------------------------------------------------------------------ Prepare


def test_scan_lists_speakers_with_counts(logic, tmp_path):
    assert logic.scan(str(EXAMPLE), None, "auto") == [("Alice (5 lines)", "Alice"), ("Bob (4 lines)", "Bob")]
    # each source says what it counted: Discord's raw messages are not the report's merged, filtered turns
    assert logic.scan(str(ROOT / "examples" / "discord_export.json"), None, "auto")[0] == ("Alex (6 messages)", "Alex")
    assert ("MaleNord (2 rows)", "MaleNord") in logic.scan(str(ROOT / "examples" / "skyrim_dialogue.csv"), None, "auto")
    one = tmp_path / "one.txt"
    one.write_text("Bob: hi\nAlice: hello\nBob: bye\n", encoding="utf-8")
    assert logic.scan(str(one), None, "auto") == [("Bob (2 lines)", "Bob"), ("Alice (1 line)", "Alice")]
    play = tmp_path / "play.txt"  # a play counts speeches, of one or more lines
    play.write_text("BOB:\nHello there,\nmy friend.\n\nALICE:\nHi.\n\nBOB:\nBye.\n", encoding="utf-8")
    assert logic.scan(str(play), None, "auto") == [("BOB (2 speeches)", "BOB"), ("ALICE (1 speech)", "ALICE")]


def test_pick_a_file_from_the_datasets_folder(logic, webui_root):
    shutil.copy(EXAMPLE, webui_root / "user_data/training/datasets/dialogue.txt")
    logic.save(*form())  # a prepared dataset is not offered as raw dialogue, nor the webui's placeholder
    (webui_root / "user_data/training/datasets/put-trainer-datasets-here.txt").write_text("")
    assert logic.raw_files() == ["dialogue.txt"]
    folder = webui_root / "user_data/training/datasets"
    shutil.copy(ROOT / "examples" / "discord_export.json", folder)
    shutil.copy(ROOT / "examples" / "sillytavern_chat.jsonl", folder)
    (folder / "notes.json").write_text('{"lr": 0.001}')
    (folder / "empty.json").write_text("")
    (folder / "log.jsonl").write_text('{"step": 1, "loss": 2.5}\n')
    # each list offers what its section can use: dialogue to prepare, datasets to train on
    assert logic.raw_files() == ["dialogue.txt", "discord_export.json", "sillytavern_chat.jsonl"]
    assert logic.datasets() == ["bob.json"] and logic.heldout_choices()[1:] == ["bob.json"]
    for extra in ("discord_export.json", "sillytavern_chat.jsonl", "notes.json", "empty.json", "log.jsonl"):
        (folder / extra).unlink()
    assert logic.scan(None, "dialogue.txt", "auto")[1] == ("Bob (4 lines)", "Bob")
    for bad in ("../dialogue.txt", "/etc/passwd", "..\\x.txt"):
        with pytest.raises(UserError, match="is not a name in"):
            logic.scan(None, bad, "auto")
    with pytest.raises(UserError, match="upload a dialogue file"):
        logic.scan(None, None, "auto")


def test_a_slack_zip_is_offered_and_read(logic, webui_root, tmp_path):
    import zipfile
    folder = webui_root / "user_data/training/datasets"
    day = [{"type": "message", "user": "U1", "text": "are you coming tonight?", "ts": "1714557600.0001"},
           {"type": "message", "user": "U2", "text": "Sure, <@U1>, I'll bring the snacks.", "ts": "1714557660.0001"}]
    users = [{"id": "U1", "name": "alice", "profile": {"display_name": "Alice"}},
             {"id": "U2", "name": "bob", "profile": {"display_name": "Bob"}}]
    with zipfile.ZipFile(folder / "Team Slack export.zip", "w") as z:
        z.writestr("users.json", json.dumps(users))
        z.writestr("channels.json", json.dumps([{"id": "C1", "name": "general"}]))
        z.writestr("general/2024-05-01.json", json.dumps(day))
    with zipfile.ZipFile(folder / "photos.zip", "w") as z:
        z.writestr("a.txt", "Bob: hi")
    assert logic.raw_files() == ["Team Slack export.zip"]  # another zip is not dialogue
    # the export unzipped, as many do: offered as its folder
    with zipfile.ZipFile(folder / "Team Slack export.zip") as z:
        z.extractall(folder / "Team Slack")
    assert logic.raw_files() == ["Team Slack", "Team Slack export.zip"]
    assert logic.scan(None, "Team Slack", "auto") == [("Alice (1 message)", "Alice"), ("Bob (1 message)", "Bob")]
    assert logic.scan(None, "Team Slack export.zip", "auto") == [("Alice (1 message)", "Alice"),
                                                                 ("Bob (1 message)", "Bob")]
    upload = tmp_path / "upload" / "photos.zip"
    upload.parent.mkdir()
    shutil.copy(folder / "photos.zip", upload)
    with pytest.raises(UserError, match=r"^photos.zip: a zip archive, which is not read"):
        logic.scan(str(upload), None, "auto")


def test_renpy_scripts_and_a_zip_of_a_game_are_offered_and_read(logic, webui_root, tmp_path):
    import zipfile
    folder = webui_root / "user_data/training/datasets"
    shutil.copy(ROOT / "examples" / "renpy_script.rpy", folder / "lighthouse.rpy")
    with zipfile.ZipFile(folder / "My VN.zip", "w") as z:
        z.writestr("MyVN/game/characters.rpy", 'define e = Character("Eileen")\n')
        z.writestr("MyVN/game/script.rpy", 'label start:\n    e "Hello."\n    e "Bye."\n')
        z.writestr("MyVN/renpy/common/00engine.rpy", 'label x:\n    e "Engine."\n')
    assert {"lighthouse.rpy", "My VN.zip"} <= set(logic.raw_files())
    assert logic.scan(None, "lighthouse.rpy", "auto") == [("Mira (10 lines)", "Mira"), ("Theo (4 lines)", "Theo"),
                                                         ("Old Anwen (2 lines)", "Old Anwen")]
    assert logic.scan(None, "My VN.zip", "auto") == [("Eileen (2 lines)", "Eileen")]
    # a game's folder in the datasets folder is offered too, and read
    game = folder / "Lighthouse" / "game"
    game.mkdir(parents=True)
    shutil.copy(ROOT / "examples" / "renpy_script.rpy", game / "script.rpy")
    assert "Lighthouse" in logic.raw_files()
    assert logic.scan(None, "Lighthouse", "auto")[0] == ("Mira (10 lines)", "Mira")
    # a compiled script is uploaded (not refused by the browser) to be told what to do
    compiled = tmp_path / "up" / "script.rpyc"
    compiled.parent.mkdir()
    compiled.write_bytes(b"RENPY RPC2")
    with pytest.raises(UserError, match=r"^script.rpyc: a compiled Ren'Py script.*unrpyc"):
        logic.scan(str(compiled), None, "auto")


def test_preview_shows_what_training_sees_and_writes_nothing(logic, webui_root):
    text, report = logic.preview(*form())
    assert text.startswith(
        "— sample 1 —\nAlice: Hi Bob! Are you coming to the party tonight?\nBob: «I don't know, Alice. I have a lot of work.»"
    )
    assert text.count("— sample") == 4
    assert "Bob 4" in report
    assert not (webui_root / "user_data/training/datasets/bob.json").exists()


def test_messages_name_an_upload_by_its_file(logic, tmp_path):
    upload = tmp_path / "gradio" / "0123abcd" / "chat.txt"  # where Gradio keeps an upload
    upload.parent.mkdir(parents=True)
    upload.write_text("Alice: hi\nBob: hello\n", encoding="utf-8")
    _, report = logic.preview(*form(upload=str(upload)))
    assert "read chat.txt (" in report and "0123abcd" not in report
    with pytest.raises(UserError) as e:
        logic.preview(*form(upload=str(upload), names=("Bobb",)))
    assert "not found in chat.txt" in str(e.value) and "0123abcd" not in str(e.value)


def test_show_sample_marks_every_learnt_reply():
    record = {"name": "Bob", "conversations": [{"from": "human", "value": "Alice: Hi"}, {"from": "gpt", "value": "Yo"},
                                               {"from": "human", "value": "Alice: Bye"}, {"from": "gpt", "value": "Cya"}]}
    assert show_sample(record, 2) == "— sample 2 —\nAlice: Hi\nBob: «Yo»\nAlice: Bye\nBob: «Cya»"
    french = {"input": "Louis: « Ça va ? »\nAmélie:", "output": "« Très bien. » Et toi ?"}  # its own guillemets
    assert show_sample(french, 3) == "— sample 3 —\nLouis: « Ça va ? »\nAmélie: ⟦« Très bien. » Et toi ?⟧"


def test_save_never_overwrites_without_confirmation(logic, webui_root):
    out = webui_root / "user_data/training/datasets/bob.json"
    name, report = logic.save(*form())
    assert name == "bob.json" and "Saved bob.json" in report
    first = out.read_text()
    assert len(json.loads(first)) == 4
    with pytest.raises(UserError, match="already exists.*Overwrite"):
        logic.save(*form(rounds=1))
    assert out.read_text() == first
    _, report = logic.save(*form(rounds=1), overwrite=True)
    assert out.read_text() != first
    # the one it replaced is kept, and not offered as a dataset
    assert "kept as bob.json.bak" in report and (out.parent / "bob.json.bak").read_text() == first
    assert logic.datasets() == ["bob.json"]
    # the slider's number as typed: 2.0 is 2, 2.5 refused in the form's words rather than cut to 2
    logic.save(*form(rounds=2.0), overwrite=True)
    with pytest.raises(UserError, match=r"must be a whole number from 0 to 1000, not 2.5") as e:
        logic.save(*form(rounds=2.5), overwrite=True)
    assert "'Context turns' must be" in ui._error_text(e.value)


def test_names_cannot_escape_their_folders(logic, webui_root):
    for bad in ("../evil.json", "sub/evil.json", "..", ".hidden.json", "a\\b.json"):
        with pytest.raises(UserError, match="not allowed"):
            logic.save(*form(out_name=bad))
    assert not (webui_root / "user_data/training/evil.json").exists()
    name, _ = logic.save(*form(out_name="bob"))  # the extension is added
    assert name == "bob.json"
    with pytest.raises(UserError, match="pick at least one character"):
        logic.preview(*form(names=()))
    # with no character picked, the file's own problem is said first: it is why the list is empty
    empty = webui_root / "empty.txt"
    empty.write_text("")
    with pytest.raises(UserError, match=r"^empty.txt: the file is empty"):
        logic.preview(*form(names=(), upload=str(empty)))
    with pytest.raises(UserError, match="upload a dialogue file or pick one"):
        logic.preview(*form(names=(), upload=None))
    prose = webui_root / "prose.txt"  # read, but no one speaks: said with the file's name, on Preview too
    prose.write_text("garbage line without speaker\nanother one\n")
    for call in (lambda: logic.scan(str(prose), None, "auto"), lambda: logic.preview(*form(names=(), upload=str(prose)))):
        with pytest.raises(UserError, match=r"^prose.txt: no speakers found: is this dialogue"):
            call()
    blank_gap = form()[:-1] + (None,)
    with pytest.raises(UserError) as e:
        logic.preview(*blank_gap)
    assert ui._error_text(e.value) == "⚠️ 'New conversation after a gap' must be a number above 0 (the field is empty)"


def test_the_dataset_is_named_after_the_characters_picked():
    assert [ui.dataset_name_for(n) for n in (["Bob"], ["ROMEO", "JULIET"], ["Dr. Okafor"], ["Tom 🐉"], ["🐉"], [])] == [
        "bob.json", "romeo-juliet.json", "dr-okafor.json", "tom.json", ui.DEFAULT_DATASET_NAME, ui.DEFAULT_DATASET_NAME]


def test_save_as_a_text_files_name_writes_json(logic, webui_root):
    # `bob.txt` typed in Save as: bob.json (the output is JSON), not bob.txt.json; other names get .json
    folder = webui_root / "user_data" / "training" / "datasets"
    assert [Path(logic.prepare_config(*form(out_name=n)).jsonfilename) for n in ("bob.txt", "Bob Jr. v2", "bob.jsonl")] == [
        folder / "bob.json", folder / "Bob Jr. v2.json", folder / "bob.jsonl"]


def test_files_and_adapters_are_picked_by_any_name_their_folder_holds(logic, webui_root):
    """A WhatsApp export saved twice is `WhatsApp Chat (1).txt`: listed, so it must be readable too."""
    import shutil

    datasets = webui_root / "user_data/training/datasets"
    shutil.copy(EXAMPLE, datasets / "WhatsApp Chat (1).txt")
    assert "WhatsApp Chat (1).txt" in logic.raw_files()
    assert logic.input_path(None, "WhatsApp Chat (1).txt") == datasets / "WhatsApp Chat (1).txt"
    logic.save(*form(out_name="bob"))
    shutil.copy(datasets / "bob.json", datasets / "bob's lines.json")
    assert "bob's lines.json" in logic.datasets()
    cfg = logic.train_config("tiny-llama", "bob's lines.json", "bob", {}, resume=False, overwrite=False)
    assert cfg["dataset_name"] == str(datasets / "bob's lines.json")
    for bad in ("../bob.json", "sub/x.txt", "..", "a\\b.txt"):
        with pytest.raises(UserError, match="is not a name in"):
            logic.input_path(None, bad)
        with pytest.raises(UserError, match="is not a name in"):
            logic.train_config("tiny-llama", bad, "bob", {}, resume=False, overwrite=False)


# ------------------------------------------------------------------------------------------ Train form


def test_train_config_from_the_form(logic, webui_root):
    logic.save(*form())
    cfg = logic.train_config("tiny-llama", "bob.json", "bob",
                             {"epochs": 2.0, "lora_alpha": 0, "learning_rate": None, "target_modules": "q_proj, v_proj",
                              "load_in_4bit": False}, resume=False, overwrite=False)
    assert cfg["epochs"] == 2 and isinstance(cfg["epochs"], int)
    assert cfg["lora_alpha"] is None and cfg["learning_rate"] is None  # blank/0: the CLI's default
    assert cfg["target_modules"] == ["q_proj", "v_proj"]
    assert cfg["dataset_name"] == str(webui_root / "user_data/training/datasets/bob.json")
    assert cfg["lora_dir"] == str(webui_root / "user_data/loras")


def test_the_checks_wait_for_the_background_import_instead_of_racing_it(logic, webui_root, monkeypatch):
    """The standalone app imports the training libraries in a thread at launch; a Start meanwhile waits for it."""
    import sys
    import threading

    monkeypatch.setattr(ui, "_libraries_loaded", False)
    logic.save(*form())
    ui._libraries.acquire()  # the background import, still running
    done = threading.Event()
    threading.Thread(target=lambda: (logic.train_config("tiny-llama", "bob.json", "bob", {}, False, False), done.set()),
                     daemon=True).start()
    assert not done.wait(1.0)
    ui._libraries.release()
    assert done.wait(60)
    assert ui._libraries_loaded and "transformers.models.llama.modeling_llama" in sys.modules


def test_train_form_errors(logic, webui_root):
    logic.save(*form())
    with pytest.raises(UserError, match="pick a base model"):
        logic.train_config("", "bob.json", "bob", {}, False, False)
    with pytest.raises(UserError, match="not allowed"):
        logic.train_config("tiny-llama", "bob.json", "../bob", {}, False, False)
    with pytest.raises(UserError, match="no such file"):
        logic.train_config("tiny-llama", "nope.json", "bob", {}, False, False)
    # in the tab's words: its labels, not the CLI's flags
    with pytest.raises(UserError, match="^'Epochs' must be a whole number >= 1 \\(got 0\\)$"):
        logic.train_config("tiny-llama", "bob.json", "bob", {"epochs": 0}, False, False)
    with pytest.raises(UserError, match="^'Batch size' must be .*\\(the field is empty\\)"):
        logic.train_config("tiny-llama", "bob.json", "bob", {"batch_size": None}, False, False)
    for key, words in (("seed", "'Seed' must be a whole number from 0 to 4294967295 (the field is empty)"),
                       ("lora_dropout", "'LoRA dropout' must be in [0, 1) (the field is empty)"),
                       ("val_ratio", "'Held-out share' must be in [0, 0.5) (the field is empty)")):
        with pytest.raises(UserError, match=re.escape(words)):  # a blank field: said before a process starts
            logic.train_config("tiny-llama", "bob.json", "bob", {key: None}, False, False)
    # nothing to resume is said before a process starts
    with pytest.raises(UserError, match="'Resume': there is no run of 'fresh'"):
        logic.train_config("tiny-llama", "bob.json", "fresh", {}, True, False)
    existing = webui_root / "user_data/loras/bob"
    existing.mkdir()
    (existing / "adapter_config.json").write_text("{}")
    with pytest.raises(UserError, match="already exists.*a finished adapter: 'Overwrite' to replace it"):
        logic.train_config("tiny-llama", "bob.json", "bob", {}, False, False)
    assert logic.train_config("tiny-llama", "bob.json", "bob", {}, False, True)["overwrite"] is True
    # what a killed first save left is no run: the name is free (the tab used to say "tick Resume", which
    # the checks then refused)
    cut = webui_root / "user_data/loras/cut"
    cut.mkdir()
    (cut / ".checkpoint-5.tmp").mkdir()
    assert logic.train_config("tiny-llama", "bob.json", "cut", {}, False, False)["lora_name"] == "cut"
    # numbers as the form sends them (floats): whole ones made ints, others refused rather than cut
    cfg = logic.train_config("tiny-llama", "bob.json", "new", {"epochs": 3.0, "lora_alpha": 16.5}, False, False)
    assert cfg["epochs"] == 3 and isinstance(cfg["epochs"], int) and cfg["lora_alpha"] == 16.5
    with pytest.raises(UserError, match="'Epochs' must be a whole number >= 1 \\(got 2.9\\)"):
        logic.train_config("tiny-llama", "bob.json", "new", {"epochs": 2.9}, False, False)
    with pytest.raises(UserError, match="'Seed' must be a whole number from 0 to 4294967295 \\(got -1\\)"):
        logic.train_config("tiny-llama", "bob.json", "new", {"seed": -1}, False, False)  # not "random": refused


def test_a_missing_package_is_a_message_in_the_tab():
    from extensions.dialogue_lora.ui import _error_text

    text = _error_text(ModuleNotFoundError("No module named 'ftfy'", name="ftfy"))
    assert text == "⚠️ this needs the Python package 'ftfy', which is not installed: pip install ftfy"
    assert _error_text(UserError("bad name")) == "⚠️ bad name"


def test_progress_text():
    assert format_eta(None) == "?"
    assert format_eta(75) == "1:15"
    assert format_eta(3725) == "1:02:05"
    assert "No training" in progress_markdown(None)


def test_chat_needs_a_loaded_model_and_a_message(logic):
    with pytest.raises(UserError, match="type a message"):
        logic.chat([], "  ", "Bob", "Alice", 5)
    with pytest.raises(UserError, match="load a model"):
        logic.chat([], "Hi", "Bob", "Alice", 5)
    with pytest.raises(UserError, match=r"pick a base model \(and an adapter\)"):
        logic.use(None, None)
    # the names checked as chat.py checks them, before any model is asked
    with pytest.raises(UserError, match="'Bob:' must not contain ':'"):
        logic.chat([], "Hi", "Bob:", "Alice", 5)
    with pytest.raises(UserError, match="'Your name' 'bob' is also a character .*'Character name'"):
        logic.chat([], "Hi", "Bob", "bob", 5)


def test_a_name_typed_in_the_chat_is_cued_as_the_adapter_learnt_it(webui_root):
    """`bob` or `zoe` typed: `Bob:` and `Zoë:` cued, as chat.py cues them; a name it did not learn as typed."""
    class Using(StandaloneHost):
        def in_use(self):
            return "tiny-llama", ["pair"]

    lora = webui_root / "user_data" / "loras" / "pair"
    lora.mkdir(parents=True)
    (lora / "adapter_config.json").write_text("{}", encoding="utf-8")
    (lora / "training_parameters.json").write_text(json.dumps({"characters": ["Bob", "Zoë"]}), encoding="utf-8")
    logic = TabLogic(Using({}, resolve_dirs(webui_root)))
    prompts = []
    logic.host.reply = lambda text, **kw: prompts.append(text) or "Hello."
    for typed in ("bob", "zoe", "Carol"):
        logic.chat([], "Hi", typed, "Alice", 5)
    assert [p.rsplit("\n", 1)[1] for p in prompts] == ["Bob:", "Zoë:", "Carol:"]
    assert logic.name_note("ZOE", "pair") == logic.name_note("Bob", "pair")  # no warning for either
    assert logic.name_note("Carol", "pair").startswith("⚠️ **pair** learnt Bob, Zoë, not Carol")


def test_using_an_adapter_names_its_character_for_the_chat_prompt(webui_root):
    """After "Apply adapter" the webui's Chat tab cues the adapter's character (params["character"]),
    whatever the bot's name in the webui's Character tab."""
    class Applied(StandaloneHost):
        def use_adapter(self, model, adapter, **quantization):
            return f"Applied {adapter}."

    lora = webui_root / "user_data" / "loras" / "bob"
    lora.mkdir(parents=True)
    (lora / "adapter_config.json").write_text("{}", encoding="utf-8")
    (lora / "training_parameters.json").write_text(json.dumps({"name": "Bob"}), encoding="utf-8")
    params = {"character_chat": False}
    logic = TabLogic(Applied(params, resolve_dirs(webui_root)))
    assert logic.use(None, "bob") == "Applied bob."
    assert params == {"character_chat": True, "stop_at_newline": True, "character": "Bob", "adapter": "bob",
                      "instruction": None, "rounds": 5, "user_turns_named": True}  # no context turns recorded
    # an adapter that does not say whose it is: the previous character is not kept
    other = webui_root / "user_data" / "loras" / "other"
    other.mkdir()
    (other / "adapter_config.json").write_text("{}", encoding="utf-8")
    assert logic.use(None, "other") == "Applied other."
    assert params["character"] == ""
    # one trained on alpaca samples: its instruction line leads the prompts, the quick test's too
    (other / "training_parameters.json").write_text(
        json.dumps({"name": "Carol", "instruction": "Continue the dialogue as {name}.", "context_turns": 8}),
        encoding="utf-8")
    logic.use(None, "other")
    assert params["instruction"] == "Continue the dialogue as {name}."
    assert params["rounds"] == 8  # as many context turns as its samples had
    for recorded, shown in ((30, 30), (400, ui.MAX_USE_TURNS)):  # (prepare_dataset.py --rounds takes up to 1000)
        (other / "training_parameters.json").write_text(json.dumps({"name": "Carol", "context_turns": recorded}))
        logic.use(None, "other")
        assert params["rounds"] == shown
    (other / "training_parameters.json").write_text(
        json.dumps({"name": "Carol", "instruction": "Continue the dialogue as {name}.", "context_turns": 8}),
        encoding="utf-8")
    logic.use(None, "other")
    prompts = []
    logic.host.reply = lambda text, **kw: prompts.append(text) or "Hello."
    assert logic.chat([], "Hi", "Carol", "Alice", 5) == "Hello."
    assert prompts == ["Continue the dialogue as Carol.\nAlice: Hi\nCarol:"]
    assert params["user_turns_named"] is True  # (recorded by nothing: named, as this project's samples are)
    params["user_turns_named"] = False  # an adapter whose samples' user lines named no one: yours go bare
    logic.chat([], "Hi", "Carol", "Alice", 5)
    assert prompts[-1] == "Continue the dialogue as Carol.\nHi\nCarol:"
    logic.use(None, "bob")  # one that records no context turns: the default again, not the previous adapter's
    assert params["rounds"] == 5
    # on a model it was not trained on (a merge of another Bob adapter, of the same shape): said
    (lora / "training_parameters.json").write_text(json.dumps({"name": "Bob", "base_model": "tiny-llama"}))
    assert logic.use("tiny-llama", "bob") == "Applied bob."
    assert logic.use("tiny-llama-bob", "bob") == ("Applied bob. Note: bob was trained on tiny-llama, not on "
                                                  "tiny-llama-bob: its replies may not be what it learnt")
    # trained again (a final save swaps a new folder in) after it was loaded: the model in memory is the old one
    assert logic.saved_again(["bob"]) == ""
    new = lora.parent / ".bob.tmp-1"
    shutil.copytree(lora, new)
    shutil.rmtree(lora)
    new.rename(lora)
    assert logic.saved_again(["bob", "other"]) == (
        " ⚠️ bob was saved again since it was loaded (a new training run): the chat still uses the weights it had "
        "then; press *Load adapter* to use the new ones.")
    logic.use(None, "bob")  # loaded again: nothing to say
    assert logic.saved_again(["bob"]) == ""
    # Merge with the base model field empty (a reloaded page): the adapter's recorded base, else asked for
    with pytest.raises(UserError, match="pick the base model to merge it into"):
        logic.start_merge(None, "other", "", "auto", False)


def test_an_adapter_names_its_base_model_and_its_characters(webui_root):
    lora = webui_root / "user_data" / "loras" / "duo"
    lora.mkdir(parents=True)
    (lora / "adapter_config.json").write_text("{}", encoding="utf-8")
    (lora / "training_parameters.json").write_text(json.dumps(
        {"characters": ["MENENIUS", "BRUTUS"], "base_model": "tiny-llama",
         "base_model_path": str(webui_root / "user_data/models/tiny-llama")}), encoding="utf-8")
    logic = TabLogic(StandaloneHost({}, resolve_dirs(webui_root)))
    assert logic.base_of("duo") == "tiny-llama"  # the Evaluate and Use sections fill it in
    assert logic.adapter_facts("duo") == ("MENENIUS", "tiny-llama", "**duo** speaks as MENENIUS and BRUTUS: put the "
                                          "one you want in *Character name*.")
    (lora / "training_parameters.json").write_text(json.dumps({"name": "Bob", "base_model": "gone"}), encoding="utf-8")
    assert logic.base_of("duo") is None  # not in the models folder: no guess
    assert logic.adapter_facts("duo") == ("Bob", None, "")
    assert logic.base_of("no-such") is None


class _Events:
    """A job as the tab reads it: its events (kept as Job.poll keeps them), its state."""
    def __init__(self, events, state="running"):
        self.events, self.step_losses = [], []
        for e in events:
            jobs.Job._keep(self, e)
        self.state, self.config, self.stopping, self.started = state, {"lora_name": "bob"}, False, 0

    def last(self, *kinds):
        return next((e for e in reversed(self.events) if e.get("event") in kinds), None)

    loss_series = jobs.Job.loss_series
    losses = jobs.Job.losses


def test_progress_lists_the_runs_notes_and_a_resumed_curve_keeps_its_parts_apart():
    job = _Events([
        {"event": "log", "message": "8 sample(s) dropped: their reply alone exceeds --cutoff_len 128"},
        {"event": "log", "message": "resumed from loras/bob/checkpoint-60 at step 60 of 100"},
        {"event": "history", "steps": [{"step": 10, "loss": 3.0}, {"step": 20, "loss": 2.5}]},
        {"event": "step", "step": 61, "total_steps": 100, "loss": 2.0, "tokens_per_s": 900.0, "eta_s": 30},
        {"event": "step", "step": 62, "total_steps": 100, "loss": 1.9, "tokens_per_s": 950.0, "eta_s": 29},
    ])
    text = progress_markdown(job)
    assert "*8 sample(s) dropped: their reply alone exceeds 'Cutoff length' 128*" in text  # the form's words
    assert "resumed from" in text and "step 62/100" in text
    assert text.startswith("### Training: bob\n")
    job.config["load_in_4bit"] = True  # a QLoRA run says so: its adapter is used on a 4-bit base
    assert progress_markdown(job).startswith("### Training: bob (the base in 4 bits)\n")
    before, since = job.loss_series()
    assert before == [(10, 3.0), (20, 2.5)] and since == [(61, 2.0), (62, 1.9)]
    assert job.losses() == before + since
    fig = ui.loss_figure(since, before)
    lines = fig.axes[0].get_lines()
    assert [list(line.get_xdata()) for line in lines] == [[10, 20], [61, 62]]  # two series, not one joined line
    assert ui.loss_figure([], []) is None
    # a phase said as it starts (a big dataset's tokenizing) is no note of the run once it is past it
    job = _Events([{"event": "log", "message": "tokenizing 300,000 samples ...", "phase": True},
                   {"event": "log", "message": "8 sample(s) dropped"},
                   {"event": "end", "status": "done"}], state="done")
    text = progress_markdown(job)
    assert "8 sample(s) dropped" in text and "tokenizing" not in text


def test_the_tab_says_its_own_controls_for_a_filtered_character_and_evaluations_memory(tmp_path, monkeypatch):
    """The flags a message names become the tab's controls, and advice about settings the section lacks is
    said in what the tab has."""
    from extensions.dialogue_lora import evaluation
    from extensions.dialogue_lora.evaluation import EvalConfig
    from extensions.dialogue_lora.prepare import PrepareConfig, prepare

    export = tmp_path / "general.json"
    messages = [{"id": str(i), "type": "Default", "timestamp": f"2024-05-01T10:0{i}:00+00:00",
                 "author": {"id": str(i % 2), "name": "Alex" if i % 2 else "Sam"},
                 "content": "lol" if i % 2 else f"so what do you think about the plan number {i}?"} for i in range(6)]
    export.write_text(json.dumps({"messages": messages}), encoding="utf-8")
    with pytest.raises(UserError) as e:
        prepare(PrepareConfig(names=["Alex"], txtfilename=str(export), jsonfilename=str(tmp_path / "o.json")))
    said = ui.tab_words(str(e.value))
    assert "'Filters' without 'non-responses' keeps them" in said and "--" not in said, said
    assert ui.tab_words("(duplicate 4; --keep_duplicates keeps them)") == (
        "(duplicate 4; 'prepare_dataset.py --keep_duplicates' keeps them)")  # the one switch the tab has not

    def full(cfg, on_progress, should_stop, loaded, held):  # the model loaded (as asked), a batch too big
        held["four_bit"] = cfg.load_in_4bit
        raise MemoryError()

    monkeypatch.setattr(evaluation, "_evaluate", full)
    with pytest.raises(UserError) as e:
        evaluation.evaluate(EvalConfig(model_name="m", lora_name="a"))
    said = ui.tab_words(ui._evaluation_memory(str(e.value)))
    assert said == ("out of memory while evaluating: tick 'Load in 4-bit', or run evaluate_lora.py with a smaller "
                    "batch size than the tab's 8 (or a shorter cutoff or reply length)")
    with pytest.raises(UserError) as e:  # 4-bit ticked already: not told to tick it
        evaluation.evaluate(EvalConfig(model_name="m", lora_name="a", load_in_4bit=True))
    assert ui.tab_words(ui._evaluation_memory(str(e.value))) == (
        "out of memory while evaluating: run evaluate_lora.py with a smaller batch size than the tab's 8 (or a "
        "shorter cutoff or reply length)")


def test_tab_words_translates_the_short_flags_a_message_names():
    assert ui.tab_words("their messages go under their server nickname: -n 'Alex'") == (
        "their messages go under their server nickname: 'Character(s) to learn' 'Alex'")
    assert ui.tab_words("run lora_finetune.py with -l bob again") == "run *2. Train* with 'Adapter name' bob again"
    assert ui.tab_words("or -o x-merged") == "or 'Merged model name' x-merged"
    # a command to run is left as it is, and so are words with a hyphen
    assert ui.tab_words("(python -m nltk.downloader wordnet)") == "(python -m nltk.downloader wordnet)"
    assert ui.tab_words("a 4-bit base, a re-n test") == "a 4-bit base, a re-n test"


# ------------------------------------------------------------------------------------------ jobs


def _wait(job: jobs.Job, timeout: float = 240) -> None:
    assert job.wait(timeout) is not None, f"job still running after {timeout} s:\n{job.log_tail()}"
    job.poll()


_APP_THAT_EXITS = """
import json, sys, time
from pathlib import Path
from extensions.dialogue_lora import jobs
job = jobs.start("train", json.loads(sys.argv[1]))
print(job.progress_path, flush=True)
while not any(e.get("event") == "step" for e in job.poll() + job.events):
    assert job.running, job.log_tail()
    time.sleep(0.2)
if sys.argv[2] == "ctrl_c":
    print("training", flush=True)
    time.sleep(600)
"""  # and the app ends, as the webui does when it is closed, without stopping the run


@pytest.mark.slow
@pytest.mark.parametrize("how", ["exits", pytest.param("ctrl_c", marks=pytest.mark.skipif(
    os.name == "nt", reason="a terminal's Ctrl+C reaches a process group: POSIX's"))])
def test_a_run_whose_app_exits_saves_a_checkpoint_and_ends(logic, webui_root, how):
    """No orphan training on after the webui closes, out of reach of any Stop button: it checkpoints. Also
    when the webui is stopped by Ctrl+C in its terminal, which signals the terminal's whole process group:
    the run, in a session of its own, is not killed mid-step but sees its app gone and checkpoints."""
    import signal
    import subprocess
    import sys

    logic.save(*form())
    config = {"model_name": "tiny-llama", "dataset_name": str(webui_root / "user_data/training/datasets/bob.json"),
              "lora_name": "orphan", "model_dir": str(webui_root / "user_data/models"),
              "lora_dir": str(webui_root / "user_data/loras"), "max_steps": 100_000, "learning_rate": 0.01,
              "val_ratio": 0.0}
    cmd = [sys.executable, "-c", _APP_THAT_EXITS, json.dumps(config), how]
    if how == "exits":
        app = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=240)
        assert app.returncode == 0, app.stderr[-2000:]
        out = app.stdout
    else:  # the app leads its own process group, as a shell makes a command it starts
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                                start_new_session=True)
        out = proc.stdout.readline()
        assert proc.stdout.readline() == "training\n", proc.stderr.read()[-2000:]
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(60) != 0  # the app itself dies of it
    progress = Path(out.strip())
    deadline = time.time() + 120
    while True:
        events = [json.loads(line) for line in progress.read_text(encoding="utf-8").splitlines() if line.strip()]
        if events and events[-1].get("event") == "end":
            break
        assert time.time() < deadline, "the run went on after its app exited"
        time.sleep(0.5)
    assert events[-1]["status"] == "stopped" and events[-1]["checkpoint"], events[-1]
    assert Path(events[-1]["checkpoint"]).is_dir()


@pytest.mark.slow
def test_a_run_stops_when_its_apps_pipe_closes(logic, webui_root):
    """How a worker learns that its app has gone on every OS (Windows' getppid keeps the dead parent's id):
    the stdin pipe the app holds is closed. Closed here by hand, the app alive."""
    logic.save(*form())
    job = logic.start_training("tiny-llama", "bob.json", "piped", {"max_steps": 100_000, "val_ratio": 0.0})
    deadline = time.time() + 180
    while not job.last("step"):
        assert job.running, job.error()
        assert time.time() < deadline
        job.poll()
        time.sleep(0.2)
    job.proc.stdin.close()
    assert job.wait(120) == 0
    assert job.state == "stopped" and Path(job.last("end")["checkpoint"]).is_dir()


@pytest.mark.slow
def test_failed_job_reports_its_error_and_the_tab_lives_on(logic, webui_root):
    job = jobs.start("train", {"model_name": "no-such-model", "dataset_name": str(EXAMPLE), "lora_name": "x",
                               "model_dir": str(webui_root / "user_data/models")})
    _wait(job, 120)
    assert job.state == "failed"
    assert "no-such-model" in job.error() and "tiny-llama" in job.error()  # the one-line error lists the models
    assert "Failed" in progress_markdown(job)


@pytest.mark.slow
def test_killed_job_is_reported_with_its_log(webui_root):
    job = jobs.Job("train", {"model_name": "x"})  # the worker starts and imports; we kill it meanwhile
    job.kill()
    assert job.state == "failed"
    assert "exited with code" in job.error() or "killed" in job.error()


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads the worker's environment in /proc")
def test_a_workers_log_is_written_in_utf8_whatever_the_system_would_write(monkeypatch):
    """The tab reads the log as UTF-8; a stream sent to a file is written in the system's code page otherwise
    (Windows: cp1252, and 'Jörg' came out as 'J\ufffdrg'). ascii here plays that code page."""
    monkeypatch.setenv("PYTHONIOENCODING", "ascii")
    # a worker that crashes saying a name and a file name's undecodable byte (a traceback's words)
    monkeypatch.setattr(jobs, "_BOOT", "import sys\nprint('J\\u00f6rg', 'bad\\udcff', file=sys.stderr)\nsys.exit(3)\n")
    job = jobs.Job("train", {"model_name": "x"})
    job.proc.wait(timeout=60)
    assert job.error() == "the train process exited with code 3:\nJ\u00f6rg bad\\udcff"


def test_the_log_box_shows_a_redrawn_progress_bar_once_and_hub_bars_are_off(monkeypatch):
    """A tqdm bar redraws its line with "\r": the Log box showed each drawing as a line of its own, the
    last 15 lines all one bar. The hub's loading bars are off in a worker."""
    monkeypatch.setattr(jobs, "_BOOT", "import os, sys\n"
                        "sys.stderr.write('loading\\r 10%|#\\r 50%|#####\\r100%|##########\\n')\n"
                        "sys.stderr.write('hub bars off: ' + os.environ.get('HF_HUB_DISABLE_PROGRESS_BARS', '') + '\\r\\n')\n"
                        "sys.exit(3)\n")
    job = jobs.Job("train", {"model_name": "x"})
    job.proc.wait(timeout=60)
    assert job.log_tail() == "100%|##########\nhub bars off: 1"
    assert jobs.as_drawn("a\r\nb\rc\r\n\r") == "a\nc\n"  # Windows line ends; a bar cleared at the end


def test_pages_polling_one_job_at_once_read_each_event_once(webui_root):
    import threading

    job = jobs.Job("train", {"model_name": "x"})
    job.kill()
    with open(job.progress_path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"event": "step", "step": i, "loss": 1.0}) + "\n" for i in range(3000))
    for _ in range(5):
        job.events.clear()
        job.step_losses.clear()
        job._offset = job.n_read = 0
        pollers = [threading.Thread(target=job.poll) for _ in range(4)]
        for t in pollers:
            t.start()
        for t in pollers:
            t.join()
        assert [s for s, _ in job.step_losses] == list(range(3000)) and job.n_read == 3000
        assert job.events == [{"event": "step", "step": 2999, "loss": 1.0}]  # a run of steps: its newest
    with open(job.progress_path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"event": "end", "status": "done"}) + "\n")
    assert job.state == "done"  # the end is read, not skipped by an offset past the file's end


@pytest.mark.slow
def test_train_stop_resume_in_a_separate_process(logic, webui_root):
    logic.save(*form())
    # far more steps than the run lasts before Stop, so the stop always lands mid-run however fast the machine
    settings = {"max_steps": 2000, "learning_rate": 0.01, "val_ratio": 0.0, "logging_steps": 1}
    job = logic.start_training("tiny-llama", "bob.json", "bob", settings)
    with pytest.raises(UserError, match="already running"):
        logic.start_training("tiny-llama", "bob.json", "bob2", settings)
    with pytest.raises(UserError, match="already running"):  # said first: fixing the form would not help
        logic.start_training("tiny-llama", None, "bob2", settings)
    deadline = time.time() + 180
    while not job.losses():
        assert job.running, job.error()
        assert time.time() < deadline
        job.poll()
        time.sleep(0.2)
    assert "Stopping" in logic.stop_training()
    _wait(job)
    assert job.state == "stopped", job.log_tail()
    text = progress_markdown(job)
    assert "Stopped" in text and "checkpoint" in text and "Resume" in text
    assert text in logic.stop_training()  # Stop pressed again: how to resume stays on the page
    saved = [int(p.name.split("-")[1]) for p in (webui_root / "user_data/loras/bob").iterdir()
             if p.name.startswith("checkpoint-")]
    assert saved and max(saved) < 2000
    assert logic.adapters() == []  # a stopped run is not an adapter yet
    # the Log box reads as lora_finetune.py's output, not only the libraries' loading bars
    log = job.log_tail(100)
    assert "training " in log and " samples from " in log and "saved checkpoint " in log

    with pytest.raises(UserError, match="Resume"):
        logic.start_training("tiny-llama", "bob.json", "bob", settings)
    settings["max_steps"] = max(saved) + 3  # a few more steps from the checkpoint
    job = logic.start_training("tiny-llama", "bob.json", "bob", settings, resume=True)
    _wait(job)
    assert job.state == "done", job.error()
    assert job.last("step")["step"] == max(saved) + 3
    assert job.losses()[0][0] == 1  # the curve starts before the stop (logged every step here)
    before, since = job.loss_series()
    assert before[-1][0] <= max(saved) < since[0][0]  # the logged steps before the stop, then this run's
    assert "resumed from" in progress_markdown(job)
    assert logic.base_of("bob") == "tiny-llama"
    assert "Finished: bob" in progress_markdown(job)
    # a clean exit: the thread that watches the app's pipe once made the interpreter's shutdown die with a
    # "Fatal Python error" at the end of the log
    assert job.proc.returncode == 0 and "Fatal Python error" not in job.log_tail(100)
    assert logic.adapters() == ["bob"]
    assert logic.adapter_facts("bob")[0] == "Bob"
    # a character name the adapter did not learn is said as it is typed in 4. Use (chat.py warns the same)
    assert logic.name_note("Carol", "bob").startswith("⚠️ **bob** learnt Bob, not Carol")
    assert logic.name_note(" bob ", "bob") == "" and logic.name_note("Carol", NO_ADAPTER) == ""
    assert "Nothing is training" in logic.stop_training() and "Finished: bob" in logic.stop_training()

    # Evaluate: base vs adapter on the samples, in its own process, read back as the tab's tables
    job = logic.start_evaluation("tiny-llama", "bob", "bob.json", 2)
    _wait(job)
    metrics, samples, status = logic.evaluation_tables(job)
    assert job.state == "done", status
    assert [row[0] for row in metrics][:2] == ["perplexity (lower is better)", "BLEU"]
    assert len(samples) == 2 and samples[0][1] == "I don't know, Alice. I have a lot of work."
    assert (webui_root / "user_data/loras/bob/eval.json").is_file()

    # Stop: the evaluation ends as stopped and writes nothing new
    (webui_root / "user_data/loras/bob/eval.json").unlink()
    # (a finished evaluation whose report went since, its adapter retrained: nothing to show, no error)
    assert logic.evaluation_tables(job) == ([], [], "")
    job = logic.start_evaluation("tiny-llama", "bob", "bob.json", 0)
    assert "Stopping" in logic.stop_evaluation()
    _wait(job)
    assert job.state == "stopped", job.log_tail()
    assert logic.evaluation_tables(job)[2] == "Evaluation stopped; nothing was written"
    assert not (webui_root / "user_data/loras/bob/eval.json").exists()
    assert "Nothing is being evaluated" in logic.stop_evaluation()

    # Use's merge: the adapter written into a model folder, in its own process; refusals before it starts
    # an empty name field's placeholder is the name it gives
    assert logic.merge_name_hint("tiny-llama", "bob") == "tiny-llama-bob"
    assert logic.merge_name_hint(None, "bob") == logic.merge_name_hint("tiny-llama", "no-such") == "MODEL-ADAPTER"
    job = logic.start_merge(None, "bob", "", "auto", False)  # an empty base field: the one bob was trained on
    _wait(job)
    assert job.state == "done", job.log_tail()
    assert logic.merge_status(job).startswith("Wrote ") and "it speaks as Bob" in logic.merge_status(job)
    assert logic.models() == ["tiny-llama", "tiny-llama-bob"]
    # the standalone app chats with the merged model alone, as its adapter's character
    assert logic.use("tiny-llama-bob", None) == "Loaded tiny-llama-bob for chat."
    # the Adapter list's first choice un-picks an adapter picked before (there was no way back)
    assert logic.use("tiny-llama-bob", NO_ADAPTER) == "Loaded tiny-llama-bob for chat."
    assert logic.adapter_facts(NO_ADAPTER)[:2] == ("", None) and logic.base_of(NO_ADAPTER) is None
    with pytest.raises(UserError, match="pick the adapter to merge"):
        logic.start_merge("tiny-llama", NO_ADAPTER, "", "auto", False)
    assert logic.host.params["character"] == "Bob" and logic.host.params["adapter"] is None
    assert logic.host.in_use() == ("tiny-llama-bob", [])
    assert isinstance(logic.host.reply("Alice: Are you coming tonight?\nBob:"), str)  # it answers (maybe at once with "\n")
    assert isinstance(logic.host.reply("Alice: Are you coming tonight?\nBob:", temperature=1.0), str)  # sampled
    with pytest.raises(UserError, match="holds an earlier merge: 'Overwrite' to replace it, or another 'Merged model name'"):
        logic.start_merge("tiny-llama", "bob", "", "auto", False)


def test_chat_trash_icon_forgets_the_turns(tmp_path, monkeypatch):
    """The chatbot's own trash icon empties the view; it must also empty the turns the next prompt is built
    from (else the old conversation came back with the next message)."""
    monkeypatch.chdir(tmp_path)
    from extensions.dialogue_lora.host import StandaloneHost
    from extensions.dialogue_lora.standalone import build_app

    app = build_app(StandaloneHost({}))
    chatbot = next(b for b in app.blocks.values() if type(b).__name__ == "Chatbot")
    on_clear = [d for d in app.config["dependencies"] if [chatbot._id, "clear"] in [list(t) for t in d["targets"]]]
    assert len(on_clear) == 1
    states = {b._id for b in app.blocks.values() if type(b).__name__ == "State"}
    assert set(on_clear[0]["outputs"]) & states
    fn = app.fns[on_clear[0]["id"]].fn
    assert fn()[0] == []


def test_opening_use_shows_what_is_in_use_after_a_reload(tmp_path, monkeypatch):
    """A page reload rebuilds the page with the values it was built with: opening *4. Use* shows the
    switches as they are now and the model and adapter in use."""
    monkeypatch.chdir(tmp_path)
    from extensions.dialogue_lora.standalone import build_app

    class Loaded(StandaloneHost):
        def in_use(self):
            return "tiny-llama", ["bob"]

        def in_use_bits(self):
            return True, False

    params = {"character_chat": False, "stop_at_newline": True, "user_name": "Romeo"}
    app = build_app(Loaded(params))
    # *Your name* starts as last typed, and what is typed is kept (a reload builds the page from params)
    yours = next(b for b in app.blocks.values() if getattr(b, "label", None) == "Your name")
    assert yours.value == "Romeo"
    typed = [app.fns[d["id"]].fn for d in app.config["dependencies"]
             if [yours._id, "change"] in [list(t) for t in d["targets"]]]
    assert len(typed) == 1
    typed[0](" Juliet ")
    assert params["user_name"] == "Juliet"
    folders = [b.info for b in app.blocks.values() if "dialogue-lora-folder" in (getattr(b, "elem_classes", None) or [])]
    assert len(folders) == 2 and all(f.startswith("in ") for f in folders)  # Train's model and dataset (ui.CSS)
    params.update(character_chat=True, stop_at_newline=False, character="Bob", rounds=3, temperature=0.2,
                  user_name="Juliet")  # after
    tab = next(b for b in app.blocks.values() if type(b).__name__ == "Tab" and b.label == "4. Use")
    on_select = [d for d in app.config["dependencies"] if [tab._id, "select"] in [list(t) for t in d["targets"]]
                 and app.fns[d["id"]].fn.__name__ == "use_view"]
    assert len(on_select) == 1
    use_view = app.fns[on_select[0]["id"]].fn
    model, adapter, four, eight, status, chat, newline, name, rounds, temperature, user = use_view(None, None)
    assert (chat, newline, name, rounds, temperature, user) == (True, False, "Bob", 3, 0.2, "Juliet")
    assert status == "In use: tiny-llama + bob (the base in 4 bits)"
    assert "value" not in model and "value" not in adapter  # not in the (empty) folders: lists only
    assert (four, eight) == (True, False)  # as it was loaded, not as the adapter was trained
    # picks made on the page (not loaded yet) stay when the section is opened again; the status is news
    model, adapter, four, eight, status, *_ = use_view("tiny-llama", "other")
    assert "value" not in model and "value" not in adapter and four == eight == {"__type__": "update"}
    assert status == "In use: tiny-llama + bob (the base in 4 bits)"
    app = build_app(StandaloneHost(params))  # nothing loaded (an Unload in 2. Train): it says so
    tab = next(b for b in app.blocks.values() if type(b).__name__ == "Tab" and b.label == "4. Use")
    use_view = next(app.fns[d["id"]].fn for d in app.config["dependencies"]
                    if [tab._id, "select"] in [list(t) for t in d["targets"]]
                    and app.fns[d["id"]].fn.__name__ == "use_view")
    assert use_view("tiny-llama", "bob")[4] == "Nothing is loaded for chat."
    # Use has its own Unload (it was only in 2. Train, with its message there)
    button = next(b for b in app.blocks.values() if type(b).__name__ == "Button" and b.value == "Unload")
    unload = next(app.fns[d["id"]].fn for d in app.config["dependencies"]
                  if [button._id, "click"] in [list(t) for t in d["targets"]])
    assert unload() == "No model is loaded."


def test_use_starts_at_the_only_model_in_the_standalone_app(webui_root):
    """Nothing loaded yet: *4. Use* starts at the only model, as *2. Train* and *3. Evaluate* do."""
    from extensions.dialogue_lora.standalone import build_app

    app = build_app(StandaloneHost({}))
    tab = next(b for b in app.blocks.values() if type(b).__name__ == "Tab" and b.label == "4. Use")
    use_view = next(app.fns[d["id"]].fn for d in app.config["dependencies"]
                    if [tab._id, "select"] in [list(t) for t in d["targets"]] and app.fns[d["id"]].fn.__name__ == "use_view")
    assert use_view(None, None)[0]["value"] == "tiny-llama"
    shutil.copytree(webui_root / "user_data" / "models" / "tiny-llama", webui_root / "user_data" / "models" / "other")
    assert "value" not in use_view(None, None)[0]  # two to choose from: no guess


def test_the_train_form_starts_at_the_loaded_or_only_model(webui_root):
    """A fresh Train form needs no pick where there is nothing to choose: the model loaded now, else the
    only one in the folder; with several and none loaded it stays empty (no silent guess)."""
    dirs = resolve_dirs(webui_root)

    class Loaded(StandaloneHost):
        model = "tiny-llama"

        def in_use(self):
            return self.model, []

    assert TabLogic(StandaloneHost({}, dirs)).default_model() == "tiny-llama"  # the only one
    shutil.copytree(dirs.models / "tiny-llama", dirs.models / "other-llama")
    assert TabLogic(StandaloneHost({}, dirs)).default_model() is None
    host = Loaded({}, dirs)
    assert TabLogic(host).default_model() == "tiny-llama"
    host.model = "gone-llama"  # loaded from elsewhere: not one the form can list
    assert TabLogic(host).default_model() is None


def test_a_fresh_page_shows_the_current_runs_form(tmp_path, monkeypatch):
    """After a reload, *2. Train* shows the run's model, dataset, name and settings (so that Resume after
    a Stop has them); a form being filled in is left alone."""
    import types

    monkeypatch.chdir(tmp_path)
    from extensions.dialogue_lora.standalone import build_app

    config = {"model_name": "tiny-llama", "dataset_name": str(tmp_path / "bob.json"), "lora_name": "bob",
              "learning_rate": 0.01, "val_ratio": 0.4, "target_modules": ["q_proj", "v_proj"]}
    app = build_app(StandaloneHost({}))
    job = types.SimpleNamespace(config=config, running=True, state="running", last=lambda *e: None)
    monkeypatch.setattr(jobs, "current", lambda kind: job if kind == "train" else None)
    tab = next(b for b in app.blocks.values() if type(b).__name__ == "Tab" and b.label == "2. Train")
    restore = [app.fns[d["id"]].fn for d in app.config["dependencies"]
               if [tab._id, "select"] in [list(t) for t in d["targets"]] and app.fns[d["id"]].fn.__name__ == "restore_form"]
    assert len(restore) == 1
    values = restore[0](None, None, "")
    assert values[:3] == ["tiny-llama", "bob.json", "bob"]
    assert 0.01 in values and 0.4 in values and "q_proj,v_proj" in values
    assert all(isinstance(v, dict) for v in restore[0]("tiny-llama", None, ""))  # being filled in: untouched
    assert all(isinstance(v, dict) for v in restore[0](None, "alice.json", ""))
    # the model a fresh form starts with (the only one, or the one loaded) is no sign of a form being filled in
    monkeypatch.setattr(TabLogic, "default_model", lambda self: "tiny-llama")
    assert restore[0]("tiny-llama", None, "")[:3] == ["tiny-llama", "bob.json", "bob"]
    # stopped with a checkpoint: Resume needs the form; finished, failed or stopped with nothing saved: the
    # next run must not quietly repeat its settings
    for state, checkpoint, restored in (("stopped", "loras/bob/checkpoint-5", True), ("stopped", None, False),
                                        ("done", None, False), ("failed", None, False)):
        job.running, job.state = False, state
        job.last = lambda *e, c=checkpoint: {"event": "end", "checkpoint": c}
        values = restore[0](None, None, "")
        assert (values[:3] == ["tiny-llama", "bob.json", "bob"]) is restored, state
        assert restored or all(isinstance(v, dict) for v in values)
    # a page built when tiny-llama was the only model starts at it, after a reload too, when a merge has
    # added a second model since (no default now): still a fresh form
    job.running, job.state = True, "running"
    app = build_app(StandaloneHost({}))
    monkeypatch.setattr(TabLogic, "default_model", lambda self: None)
    tab = next(b for b in app.blocks.values() if type(b).__name__ == "Tab" and b.label == "2. Train")
    restore = [app.fns[d["id"]].fn for d in app.config["dependencies"]
               if [tab._id, "select"] in [list(t) for t in d["targets"]] and app.fns[d["id"]].fn.__name__ == "restore_form"]
    assert restore[0]("tiny-llama", None, "")[:3] == ["tiny-llama", "bob.json", "bob"]
    assert all(isinstance(v, dict) for v in restore[0]("other-llama", None, ""))  # being filled in: untouched


def test_gradient_checkpointing_is_a_field_of_the_form(tmp_path, monkeypatch, logic):
    """Off is faster where the card has the memory (on by default on GPUs): the tab offers what
    --gradient_checkpointing does; a run's form restores it, and a run recorded without it gets auto."""
    import types

    monkeypatch.chdir(tmp_path)
    from extensions.dialogue_lora.standalone import build_app

    app = build_app(StandaloneHost({}))
    box = next(b for b in app.blocks.values()
               if type(b).__name__ == "Dropdown" and (b.label or "").startswith("Gradient checkpointing"))
    assert [c[1] for c in box.choices] == ["auto", "on", "off"] and box.value == "auto"
    tab = next(b for b in app.blocks.values() if type(b).__name__ == "Tab" and b.label == "2. Train")
    deps = [d for d in app.config["dependencies"] if [tab._id, "select"] in [list(t) for t in d["targets"]]
            and app.fns[d["id"]].fn.__name__ == "restore_form"]
    restore, outputs = app.fns[deps[0]["id"]].fn, deps[0]["outputs"]
    at = outputs.index(box._id)
    config = {"model_name": "tiny-llama", "dataset_name": str(tmp_path / "bob.json"), "lora_name": "bob"}
    job = types.SimpleNamespace(config=config, running=True, state="running", last=lambda *e: None)
    monkeypatch.setattr(jobs, "current", lambda kind: job if kind == "train" else None)
    assert restore(None, None, "")[at] == "auto"  # recorded before the field existed
    config["gradient_checkpointing"] = "off"
    assert restore(None, None, "")[at] == "off"
    # a checkpoint's settings (what Resume fills the form from) record what it came to: True/False
    for recorded, shown in ((False, "off"), (True, "on"), ("sideways", "auto")):
        config["gradient_checkpointing"] = recorded
        assert restore(None, None, "")[at] == shown
    logic.save(*form())
    cfg = logic.train_config("tiny-llama", "bob.json", "bob", {"gradient_checkpointing": "off"}, False, False)
    assert cfg["gradient_checkpointing"] == "off"


def test_opening_train_picks_the_only_dataset(tmp_path, monkeypatch):
    """With no run to show, an empty *Dataset* gets the only prepared dataset there is (made by the CLI, say),
    and the adapter its name while the name is the default; with two to choose from it stays empty."""
    monkeypatch.chdir(tmp_path)
    from extensions.dialogue_lora.standalone import build_app
    from extensions.dialogue_lora.ui import DEFAULT_ADAPTER_NAME

    monkeypatch.setattr(jobs, "current", lambda kind: None)
    app = build_app(StandaloneHost({}))
    tab = next(b for b in app.blocks.values() if type(b).__name__ == "Tab" and b.label == "2. Train")
    restore = [app.fns[d["id"]].fn for d in app.config["dependencies"]
               if [tab._id, "select"] in [list(t) for t in d["targets"]] and app.fns[d["id"]].fn.__name__ == "restore_form"]
    datasets = tmp_path / "training" / "datasets"
    datasets.mkdir(parents=True)
    assert all(v.get("value") is None for v in restore[0](None, None, DEFAULT_ADAPTER_NAME)[1:3])  # none yet
    (datasets / "notes.txt").write_text("Bob: raw dialogue, not samples\n", encoding="utf-8")
    sample = json.dumps([{"input": "Al: Hi\nBob:", "output": "Hello.", "name": "Bob"}])
    (datasets / "bob.json").write_text(sample, encoding="utf-8")
    values = restore[0](None, None, DEFAULT_ADAPTER_NAME)
    assert values[1]["value"] == "bob.json" and values[1]["choices"] == ["bob.json"] and values[2] == "bob"
    values = restore[0](None, None, "alice-v2")  # a name typed: kept
    assert values[1]["value"] == "bob.json" and values[2] == {"__type__": "update"}
    assert restore[0](None, "bob.json", "bob")[1] == {"__type__": "update"}  # picked already: left alone
    (datasets / "alice.json").write_text(sample, encoding="utf-8")
    assert all(v.get("value") is None for v in restore[0](None, None, DEFAULT_ADAPTER_NAME)[1:3])


def test_opening_a_section_refreshes_before_it_streams(tmp_path, monkeypatch):
    """Gradio runs a tab's select handlers in turn: the live stream (train, evaluate) comes last, or the
    lists and the form wait for the run to end. With no evaluation yet, the stream fills all its outputs."""
    monkeypatch.chdir(tmp_path)
    from extensions.dialogue_lora.standalone import build_app

    app = build_app(StandaloneHost({}))
    for label, streaming in (("2. Train", "on_watch"), ("3. Evaluate", "on_watch_evaluation"),
                             ("4. Use", "on_watch_merge")):
        tab = next(b for b in app.blocks.values() if type(b).__name__ == "Tab" and b.label == label)
        deps = [d for d in app.config["dependencies"] if [tab._id, "select"] in [list(t) for t in d["targets"]]]
        names = [app.fns[d["id"]].fn.__name__ for d in deps]
        assert len(names) >= 2 and names[-1] == streaming, names
        if label == "3. Evaluate":
            dep = deps[-1]
    monkeypatch.setattr(jobs, "current", lambda kind: None)
    rows = list(app.fns[dep["id"]].fn(None, None))
    assert rows and all(len(row) == len(dep["outputs"]) == 9 for row in rows)

    # a reloaded page shows the evaluation's fields, the 4-/8-bit boxes as it loaded the base among them
    class Stopped:
        running, state, stopping, events = False, "stopped", False, []
        config = {"model_name": "tiny-llama", "lora_name": "bob4", "max_samples": 5, "load_in_4bit": False,
                  "load_in_8bit": True}

        def poll(self):
            pass

        def last(self, kind):
            return None

    monkeypatch.setattr(jobs, "current", lambda kind: Stopped())
    row = next(iter(app.fns[dep["id"]].fn(None, None)))
    assert row[2] == "Evaluation stopped" and row[3:] == ["tiny-llama", "bob4", "(the adapter's held-out split)", 5,
                                                          False, True]
    # another adapter picked: the tables of the last one go (they are in its eval.md); its own stay
    pick = next(app.fns[d["id"]].fn for d in app.config["dependencies"]
                if app.fns[d["id"]].fn.__name__ == "on_pick_for_evaluation")
    assert pick("bob") == ([], [], "")
    # the stopped evaluation's own adapter too: what is shown may be another's by now (it wrote nothing)
    assert pick("bob4") == ([], [], "")
    # one that kept no held-out split, which picking it selects: said now, not at *Evaluate*
    bare = tmp_path / "loras" / "bare"
    bare.mkdir(parents=True)
    (bare / "adapter_config.json").write_text("{}")
    (bare / "training_parameters.json").write_text(json.dumps({"heldout_file": None, "val_ratio": 0}))
    assert pick("bare") == ([], [], "adapter 'bare' records no held-out split (trained with 'Held-out share' 0, on "
                                     "too few samples to hold one out, or by another tool): pick a file in "
                                     "'Held-out samples'")
    (bare / "training_parameters.json").write_text(json.dumps({"heldout_file": "heldout.json"}))
    (bare / "heldout.json").write_text("[]")
    assert pick("bare") == ([], [], "")
    # ... and one evaluated before shows its own last report (its eval.json) in their place
    report = tmp_path / "loras" / "carol"
    report.mkdir(parents=True)
    (report / "eval.json").write_text(json.dumps({
        "perplexity_base": 40.0, "perplexity_adapter": 12.5, "heldout_file": "held.json", "n_replies": 1,
        "evaluated_at": "2026-12-03T00:10:00+00:00", "settings": {"load_in_4bit": True},
        "samples": [{"prompt": "Alice: Hi\nCarol:", "reference": "Hello.", "base_reply": "x", "adapter_reply": "Hi."}]}))
    metrics, samples, status = pick("carol")
    assert metrics[0] == ["perplexity (lower is better)", "40.000", "12.500"]
    assert samples == [["Alice: Hi ⏎ Carol:", "Hello.", "x", "Hi."]]
    assert status == (f"Last evaluated 2026-12-03 00:10 UTC: 1 reply from held.json, the base in 4 bits; report "
                      f"in {report / 'eval.md'}")
    # a reply that did not stop at a newline is marked as eval.md marks it, and the mark explained
    (report / "eval.json").write_text(json.dumps({
        "perplexity_base": 40.0, "perplexity_adapter": 12.5, "heldout_file": "held.json", "n_replies": 1,
        "evaluated_at": "2026-12-03T00:10:00+00:00", "samples": [{"prompt": "Alice: Hi\nCarol:", "reference": "Hello.", "base_reply": "x y z",
                     "adapter_reply": "Hi.", "base_stopped": False, "adapter_stopped": True}]}))
    metrics, samples, status = pick("carol")
    assert samples == [["Alice: Hi ⏎ Carol:", "Hello.", "x y z ⟶", "Hi."]]
    assert status.endswith("\n\n⟶ marks a reply that did not end at a newline within the token limit.")
    (report / "eval.json").write_text("[]")  # not a report this tool wrote: nothing to show
    assert pick("carol") == ([], [], "")
    Stopped.running = True  # a running evaluation keeps showing its progress
    assert all(isinstance(v, dict) for v in pick("bob"))
    Stopped.running = False


def test_the_app_refuses_a_taken_port_before_it_says_where_it_serves(capsys):
    import socket

    from extensions.dialogue_lora import standalone

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UserError, match=rf"^cannot serve on 127.0.0.1:{port}: .* \(try another --port\)$"):
            standalone.main(["--port", str(port)])
    assert "Dialogue LoRA: http" not in capsys.readouterr().out


def test_a_port_its_last_run_left_waiting_is_free_again(monkeypatch):
    """A restart right after a stop: the port's closed connections wait (TIME_WAIT), which the server's
    own bind allows; the check before it must allow it too."""
    import socket

    from extensions.dialogue_lora import standalone

    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the app's server (uvicorn) binds
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        conn, _ = server.accept()
        conn.close()  # the server side closes first: its end of the connection waits
        client.close()
    with socket.socket() as plain:  # the wait is there: a bind without the option is refused
        with pytest.raises(OSError):
            plain.bind(("127.0.0.1", port))

    class Served(Exception):
        pass

    def build_app(host):
        raise Served  # past the port check

    monkeypatch.setattr(standalone, "build_app", build_app)
    with pytest.raises(Served):
        standalone.main(["--port", str(port)])


def test_the_port_from_the_environment(monkeypatch):
    from extensions.dialogue_lora import standalone

    monkeypatch.setenv("DIALOGUE_LORA_PORT", "")
    monkeypatch.setattr(standalone, "build_app", lambda host: (_ for _ in ()).throw(KeyError("served")))
    with pytest.raises(KeyError):  # empty: the default port, no error
        standalone.main([])
    monkeypatch.setenv("DIALOGUE_LORA_PORT", "seven")
    with pytest.raises(UserError, match="DIALOGUE_LORA_PORT='seven' is not a port number"):
        standalone.main([])


def test_resume_after_a_restart_fills_the_form_from_the_checkpoint(webui_root, monkeypatch):
    """The app restarted, the form at its defaults: ticking Resume fills in the stopped run's model,
    dataset and settings from its checkpoint, so that Start continues it as it was (not with a default
    run length and schedule)."""
    monkeypatch.chdir(webui_root)
    from extensions.dialogue_lora.standalone import build_app

    dirs = resolve_dirs(webui_root)
    (dirs.datasets).mkdir(parents=True, exist_ok=True)
    (dirs.datasets / "cor.json").write_text(json.dumps([{"input": "Bob:", "output": "Hi."}]), encoding="utf-8")
    settings = {"model_name": "tiny-llama", "dataset_name": str(dirs.datasets / "cor.json"), "max_steps": 80,
                "epochs": 3, "learning_rate": 0.01, "lora_rank": 8, "target_modules": ["q_proj", "v_proj"]}
    for step, steps in ((9, 40), (18, 80)):  # the latest checkpoint's settings count
        ck = dirs.loras / "cor3" / f"checkpoint-{step}"
        ck.mkdir(parents=True)
        (ck / "trainer_state.json").write_text(json.dumps({"settings": dict(settings, max_steps=steps)}))
    logic = TabLogic(StandaloneHost({}, dirs))
    found = logic.resume_form("cor3")
    assert found is not None and found[1] == "checkpoint-18" and found[0]["max_steps"] == 80
    assert logic.resume_form("nobody") is None and logic.resume_form("") is None
    # what defaults resolved to shows as the defaults: a new run on the same form, or a rank changed, gets
    # its own (not another run's alpha of 16 for a rank of 4)
    from extensions.dialogue_lora.training import model_linear_layers

    base = str(webui_root / "user_data" / "models" / "tiny-llama")
    ck = dirs.loras / "cor4" / "checkpoint-3"
    ck.mkdir(parents=True)
    resolved = dict(settings, lora_alpha=16, target_modules=model_linear_layers(Path(base))[::-1], base_model_path=base)
    (ck / "trainer_state.json").write_text(json.dumps({"settings": resolved}))
    shown = logic.resume_form("cor4")[0]
    assert shown["lora_alpha"] is None and shown["target_modules"] is None
    (ck / "trainer_state.json").write_text(json.dumps({"settings": dict(resolved, lora_alpha=8, target_modules=[
        "q_proj"])}))
    assert logic.resume_form("cor4")[0]["lora_alpha"] == 8 and logic.resume_form("cor4")[0]["target_modules"] == ["q_proj"]

    app = build_app(StandaloneHost({}, dirs))
    box = next(b for b in app.blocks.values() if type(b).__name__ == "Checkbox" and b.label.startswith("Resume"))
    [dep] = [d for d in app.config["dependencies"] if [box._id, "input"] in [list(t) for t in d["targets"]]]
    fill = app.fns[dep["id"]].fn
    values = fill(True, "cor3")
    assert values[:2] == ["tiny-llama", "cor.json"] and "checkpoint-18" in values[2]
    assert 80 in values[3:] and 0.01 in values[3:] and "q_proj,v_proj" in values[3:]
    assert all(isinstance(v, dict) for v in fill(False, "cor3"))  # unticked: the form is left alone
    assert all(isinstance(v, dict) for v in fill(True, "nobody"))
    # a command-line run (`-d cor`: its dataset_name as typed) with settings the form has no field for: the
    # dataset is the file, and Start resumes with those settings as they were, not the defaults
    ck = dirs.loras / "cli" / "checkpoint-4"
    ck.mkdir(parents=True)
    cli = dict(settings, dataset_name="cor", dataset=str(dirs.datasets / "cor.json"), warmup_ratio=0.1,
               packing=False, precision="fp32", max_grad_norm=0.5, device="cpu", save_total_limit=5,
               gradient_checkpointing=True, fused_kernels=False, save_minutes=5, logging_steps=3)
    (ck / "trainer_state.json").write_text(json.dumps({"settings": cli}))
    filled = fill(True, "cli")
    assert filled[:2] == ["tiny-llama", "cor.json"]
    assert "on" in filled[3:]  # its gradient checkpointing, recorded as what it came to (True), in the field's words
    from extensions.dialogue_lora import training

    checked = []
    monkeypatch.setattr(training, "check", checked.append)
    form = {"max_steps": 80, "epochs": 3, "learning_rate": 0.01, "lora_rank": 8, "target_modules": "q_proj,v_proj",
            "warmup_ratio": 0.2}  # (a field the form had: the form's value stands)
    config = logic.train_config("tiny-llama", "cor.json", "cli", form, True, False)
    assert (config["packing"], config["precision"], config["max_grad_norm"], config["warmup_ratio"]) == (
        False, "fp32", 0.5, 0.2)
    assert [config[k] for k in ("save_total_limit", "save_minutes", "logging_steps")] == [5, 5, 3]
    assert "gradient_checkpointing" not in config and "fused_kernels" not in config  # (recorded as they came to)
    assert "device" not in config  # not a setting a resume must keep: the tab's own
    config = logic.train_config("tiny-llama", "cor.json", "cli", form, False, True)  # anew: the defaults
    assert "packing" not in config and "precision" not in config


def test_a_fresh_evaluate_section_shows_the_evaluations_form(webui_root, monkeypatch):
    """After a reload, *3. Evaluate* shows the evaluation's model, adapter and samples, also when its model
    field starts at the default model (the only one in the folder); a form being filled in is left alone."""
    import types

    monkeypatch.chdir(webui_root)
    from extensions.dialogue_lora.standalone import build_app

    dirs = resolve_dirs(webui_root)
    app = build_app(StandaloneHost({}, dirs))
    job = types.SimpleNamespace(config={"model_name": "tiny-llama", "lora_name": "bob", "max_samples": 0},
                                running=False, state="done", events=[], poll=lambda: [], stopping=False,
                                last=lambda *e: None, error=lambda: None)
    monkeypatch.setattr(jobs, "current", lambda kind: job if kind == "evaluate" else None)
    monkeypatch.setattr(TabLogic, "evaluation_tables", lambda self, j: ([], [], "done"))
    tab = next(b for b in app.blocks.values() if type(b).__name__ == "Tab" and b.label == "3. Evaluate")
    dep = [d for d in app.config["dependencies"] if [tab._id, "select"] in [list(t) for t in d["targets"]]][-1]
    watch = app.fns[dep["id"]].fn
    assert TabLogic(StandaloneHost({}, dirs)).default_model() == "tiny-llama"
    for model in (None, "tiny-llama"):
        rows = list(watch(model, None))
        assert rows[0][3:5] == ["tiny-llama", "bob"] and rows[0][6] == 0, rows[0]
    rows = list(watch("tiny-llama", "alice"))  # being filled in
    assert all(isinstance(v, dict) for v in rows[0][3:])


def test_with_no_model_in_the_folder_the_tab_says_to_put_one_there(tmp_path):
    models = tmp_path / "models"
    (models / "half-llama").mkdir(parents=True)
    (models / "half-llama" / "config.json").write_text("{}", encoding="utf-8")  # no weights
    logic = TabLogic(StandaloneHost({}, resolve_dirs(tmp_path, model_dir=models)))
    with pytest.raises(UserError, match=r"no models in .*models: put a Hugging Face model's folder there .*"
                                        r"half-llama hold\(s\) no weights"):
        logic.train_config(None, "bob.json", "bob", {}, False, False)
    with pytest.raises(UserError, match="no models in"):
        logic.start_evaluation(None, None, None, 0)
    # a webui user's folder of GGUF files: said, they are not what is trained
    (models / "llama-3-8b.Q4_K_M.gguf").write_bytes(b"GGUF")
    with pytest.raises(UserError, match=r"; llama-3-8b.Q4_K_M.gguf is GGUF \(llama.cpp's format\), which is not trained "
                                        r"here: the original model is needed$"):
        logic.train_config(None, "bob.json", "bob", {}, False, False)


def test_an_evaluation_that_has_its_replies_says_it_writes_the_report(logic):
    from types import SimpleNamespace

    job = SimpleNamespace(state="running", stopping=False, events=[{"stage": "generate", "done": 4, "total": 8}],
                          config={"lora_name": "bob4", "load_in_4bit": True})
    assert logic.evaluation_tables(job)[2] == "Evaluating bob4 (the base in 4 bits)… generate 4/8"
    job.events.append({"stage": "done", "done": 1, "total": 1})  # the worker's last word before the report
    assert logic.evaluation_tables(job)[2] == "Evaluating bob4 (the base in 4 bits)… writing the report"


def test_the_chat_tab_says_who_answers_from_what_and_samples_at_the_temperature_set(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from extensions.dialogue_lora.generation import DEFAULT_TEMPERATURE, sampling
    from extensions.dialogue_lora.standalone import build_app, chat_heading

    class Loaded(StandaloneHost):
        asked = []

        def in_use(self):
            return "tiny-llama", ["bob"]

        def reply(self, prompt, max_new_tokens=64, temperature=0.0):
            self.asked.append(temperature)
            return "Fine."

    host = Loaded({})
    assert chat_heading(host, "Bob", "") == "**Bob** answers, from `tiny-llama` + `bob`; you are **You**."
    host.in_use_bits = lambda: (False, True)
    assert chat_heading(host, "Bob", "") == ("**Bob** answers, from `tiny-llama` + `bob` (the base in 8 bits); you are "
                                             "**You**.")
    del host.in_use_bits
    assert chat_heading(StandaloneHost({}), "Bob", "Al").startswith("Nothing is loaded for chat: pick a model")
    app = build_app(host)
    tab = next(b for b in app.blocks.values() if type(b).__name__ == "Tab" and b.label == "Chat")
    on_select = [d for d in app.config["dependencies"] if [tab._id, "select"] in [list(t) for t in d["targets"]]]
    open_chat = app.fns[on_select[0]["id"]].fn
    assert len(on_select) == 1 and "**Bob** answers" in open_chat("Bob", "Al", [], None)[0]
    # a reloaded page's empty name box: the adapter's own character, not "Character"
    host.params["character"] = "Bob"
    assert open_chat("", "Al", [], None)[0].startswith("**Bob** answers")
    assert TabLogic(host).chat_name("  ") == "Bob" and "⚠️ your name is the character's" in chat_heading(host, "Bob", "bob")
    assert "⚠️ your name is the character's" in chat_heading(host, "İsmail", "ISMAIL")  # as sending would say
    # a conversation held with another adapter is let go when the tab opens
    heading, shown, turns, said_with = open_chat("Bob", "Al", [("Al", "hi"), ("Bob", "yo")], ["tiny-llama", ["carol"]])
    assert "A new conversation: the one before was with another model or adapter." in heading
    assert turns == [] and said_with is None
    assert open_chat("Bob", "Al", [("Al", "hi")], ["tiny-llama", ["bob"]])[2] != []  # the same: kept
    host.in_use = lambda: ("", [])  # unloaded (in 2. Train) since
    heading = open_chat("Bob", "Al", [("Al", "hi")], ["tiny-llama", ["bob"]])[0]
    assert heading.startswith("Nothing is loaded for chat: pick a model")
    assert "was with a model that is unloaded now" in heading
    # the Use section's temperature: shown at chat's default, and what the reply is sampled at (0: greedy)
    slider = next(b for b in app.blocks.values() if type(b).__name__ == "Slider" and b.label == "Temperature")
    assert slider.value == DEFAULT_TEMPERATURE
    assert TabLogic(host).chat([], "Hi", "Bob", "Al", 5, 0.9) == "Fine." and host.asked == [0.9]
    assert sampling(0) == {"greedy": True} and sampling(0.9) == {"greedy": False, "temperature": 0.9}


def test_a_long_run_keeps_one_step_event_between_the_others(webui_root):
    job = jobs.Job("train", {"model_name": "x"})
    job.kill()
    events = [{"event": "log", "message": "starting"}]
    events += [{"event": "step", "step": i, "loss": 2.0 - i / 1000} for i in range(1, 1001)]
    events += [{"event": "eval", "step": 1000, "eval_loss": 1.5}, {"event": "step", "step": 1001, "loss": 0.9},
               {"event": "end", "status": "done"}]
    job._offset = job.n_read = 0
    job.events.clear()
    job.progress_path.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    assert len(job.poll()) == len(events) == job.n_read  # poll still hands back every event it read
    assert [e["event"] for e in job.events] == ["log", "step", "eval", "step", "end"]
    assert job.last("step")["step"] == 1001 and job.last("eval")["eval_loss"] == 1.5
    assert job.losses()[:2] == [(1, 1.999), (2, 1.998)] and len(job.losses()) == 1001
    assert job.state == "done"


def test_your_name_in_the_quick_test_is_kept_as_typed_and_you_when_unset():
    assert ui.use_user_name({}) == ui.use_user_name({"user_name": "  "}) == "You"
    assert ui.use_user_name({"user_name": " Juliet\n"}) == "Juliet"  # one line, as the prompt takes it


def test_the_quick_tests_temperature_is_read_within_the_slider():
    assert ui.use_temperature({}) == ui.DEFAULT_TEMPERATURE
    assert ui.use_temperature({"temperature": "0.3"}) == 0.3  # settings.yaml
    assert ui.use_temperature({"temperature": 9}) == ui.MAX_TEMPERATURE and ui.use_temperature({"temperature": -1}) == 0
    assert ui.use_temperature({"temperature": "hot"}) == ui.use_temperature({"temperature": float("nan")}) == ui.DEFAULT_TEMPERATURE


def _save_lora(base_dir: Path, out: Path, params: dict) -> None:
    """A LoRA adapter of the tiny model saved as training saves one, with `params` as its settings."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir),
                           LoraConfig(task_type="CAUSAL_LM", r=4, target_modules=["q_proj", "v_proj"]))
    model.save_pretrained(out)
    (out / "training_parameters.json").write_text(json.dumps(params), encoding="utf-8")


def test_evaluate_and_use_load_the_base_as_the_adapter_was_trained(webui_root, monkeypatch):
    """An adapter trained with 'Load in 4-bit' (QLoRA on an 8-12 GB card) would not fit that card with its
    base unquantised: the tab's Evaluate and Use tick the box as it was trained, and pass it on."""
    pytest.importorskip("bitsandbytes")
    loras = webui_root / "user_data" / "loras"
    base = webui_root / "user_data" / "models" / "tiny-llama"
    _save_lora(base, loras / "q", {"name": "Bob", "base_model": "tiny-llama", "load_in_4bit": True})
    (loras / "elsewhere").mkdir()
    (loras / "elsewhere" / "adapter_config.json").write_text("{}", encoding="utf-8")
    logic = TabLogic(StandaloneHost({}, resolve_dirs(webui_root)))
    assert logic.trained_quantization("q") == (True, False)
    assert logic.trained_quantization("elsewhere") is None  # not recorded: the boxes stay as they are
    assert logic.trained_quantization(NO_ADAPTER) is None

    # Use (standalone): the base is loaded quantised, and the message says so
    assert logic.use("tiny-llama", "q", True, False) == "Loaded tiny-llama + q (the base in 4 bits) for chat."
    import bitsandbytes as bnb

    assert any(isinstance(m, bnb.nn.Linear4bit) for m in logic.host._loaded.model.modules())
    assert logic.host.reply("Alice: Hi\nBob:") is not None
    assert logic.use("tiny-llama", "q") == "Loaded tiny-llama + q for chat."  # unticked: unquantised
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in logic.host._loaded.model.modules())
    # a model stored in 4 bits (an unsloth -bnb-4bit upload) is held in 4 bits, ticked or not, and says so
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    stored = base.parent / "tiny-bnb-4bit"
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
    AutoModelForCausalLM.from_pretrained(base, quantization_config=q, device_map={"": "cpu"}).save_pretrained(stored)
    AutoTokenizer.from_pretrained(base).save_pretrained(stored)
    assert logic.use("tiny-bnb-4bit", NO_ADAPTER, False, True) == "Loaded tiny-bnb-4bit (the base in 4 bits) for chat."
    assert logic.host.in_use_bits() == (True, False)

    # Evaluate: the boxes go into the job's settings; both at once is refused in the tab's words
    started = []
    monkeypatch.setattr(jobs, "start", lambda kind, config: started.append((kind, config)))
    (webui_root / "user_data" / "training" / "datasets" / "held.json").write_text(
        json.dumps([{"input": "Alice: Hi\nBob:", "output": " Hello."}]), encoding="utf-8")
    logic.start_evaluation("tiny-llama", "q", "held.json", 5, True, False)
    assert started[-1][0] == "evaluate"
    assert (started[-1][1]["load_in_4bit"], started[-1][1]["load_in_8bit"]) == (True, False)
    with pytest.raises(UserError) as e:
        logic.start_evaluation("tiny-llama", "q", "held.json", 5, True, True)
    assert ui._error_text(e.value) == "⚠️ 'Load in 4-bit' and 'Load in 8-bit' cannot be used together"
    # Max samples: 2.5 is refused, not cut to 2; an empty field is all (0), as 3.0 is 3
    with pytest.raises(UserError, match=r"^'Max samples' must be a whole number \(got 2.5\)$"):
        logic.start_evaluation("tiny-llama", "q", "held.json", 2.5)
    logic.start_evaluation("tiny-llama", "q", "held.json", None)
    logic.start_evaluation("tiny-llama", "q", "held.json", 3.0)
    assert [c["max_samples"] for _, c in started[-2:]] == [0, 3.0]
    # an adapter or model gone since the lists were read: said at once, with what there is (no process)
    with pytest.raises(UserError, match=r"adapter 'gone' not found.*q"):
        logic.start_evaluation("tiny-llama", "gone", "held.json", 3)
    with pytest.raises(UserError, match=r"model 'gone' not found.*tiny-llama"):
        logic.start_evaluation("gone", "q", "held.json", 3)
    assert len(started) == 3  # (the three accepted above)


def test_a_failed_load_gives_its_memory_back(webui_root, monkeypatch):
    """A model load that ran out of memory: the chat model is gone, and the memory the half-loaded weights
    held is freed once the error no longer holds them (else the GPU cache is kept from training)."""
    import sys

    from extensions.dialogue_lora import generation, host

    freed = []
    monkeypatch.setattr(host, "free_memory", lambda: freed.append(sys.exc_info()[0]))

    def out_of_memory(*args, **kwargs):
        raise UserError("out of memory loading tiny-llama: try --load_in_4bit (or --load_in_8bit), or a smaller model")

    monkeypatch.setattr(generation, "load_for_generation", out_of_memory)
    logic = TabLogic(StandaloneHost({}, resolve_dirs(webui_root)))
    with pytest.raises(UserError) as e:
        logic.use("tiny-llama", NO_ADAPTER)
    assert e.value.__context__ is None  # not chained to the error whose frames held the weights
    assert freed == [None, None]  # before the load, and after it failed, outside any except clause
    assert logic.host.in_use() == ("", []) and logic.host.loaded_name == ""
    assert ui._error_text(e.value).startswith("⚠️ out of memory loading tiny-llama: try 'Load in 4-bit'")


def test_a_double_click_on_start_is_one_start(logic, monkeypatch):
    """The second click of a double click (or the same Start on another page at that moment) follows the
    run the first starts, instead of saying "already running", which read as a failure."""
    form = ("tiny-llama", "bob.json", "bob", False, False, 3)
    with logic.starting(form) as first:
        assert first is None  # a Start of its own
        with logic.starting(form) as again:  # while the first still checks its settings
            assert again == logic.last_start[1]
        with logic.starting(form[:-1] + (4,)) as other:  # another form is another Start
            assert other is None
    class Started:
        started = time.time() + 1
    monkeypatch.setattr(jobs, "current", lambda kind: Started)
    assert logic.started_since(logic.last_start[1]) is Started
    monkeypatch.setattr(jobs, "current", lambda kind: None)
    assert logic.started_since(time.time(), wait=5) is None  # no Start is checking: the first was refused
    logic.last_start = (form, time.time() - ui.DOUBLE_CLICK_SECONDS - 1)
    with logic.starting(form) as later:  # seconds later: a Start of its own
        assert later is None


def test_a_finished_run_unticks_resume_for_its_adapter_only(monkeypatch):
    from extensions.dialogue_lora.standalone import build_app

    app = build_app(StandaloneHost({}))
    after_run = next(f.fn for f in app.fns.values() if f.fn.__name__ == "after_run")

    class Done:
        state, config = "done", {"lora_name": "bob"}
    monkeypatch.setattr(jobs, "current", lambda kind: Done)
    assert after_run("bob") is False
    assert after_run("alice") == {"__type__": "update"}  # ticked to resume another adapter: left as it is
    Done.state = "stopped"
    assert after_run("bob") == {"__type__": "update"}


def test_a_finished_jobs_folder_goes_when_the_app_ends_a_running_ones_stays(webui_root):
    """The settings, progress and log of a job live in a temp folder while the app may show them; an app
    that ends takes the folders of its ended jobs with it (Windows never clears its temp folder), and
    leaves a running job's, which it still writes to."""
    import subprocess
    import sys

    app = ("import sys, time\nfrom extensions.dialogue_lora import jobs\n"
           "ended = jobs.start('train', {'model_name': 'x'}); ended.kill()\n"
           "dropped = jobs.Job('evaluate', {'model_name': 'x'}); dropped.kill(); print(dropped.dir)\n"
           "del dropped\n"
           "running = jobs.Job('merge', {'model_name': 'x'})\n"
           "print(ended.dir); print(running.dir, flush=True)\n")
    out = subprocess.run([sys.executable, "-c", app], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    dropped, ended, running = (Path(line) for line in out.stdout.split())
    assert not dropped.exists() and not ended.exists()
    assert (running / "config.json").is_file()
    shutil.rmtree(running, ignore_errors=True)


class _RunGoing:
    """A job that runs for `polls` polls, then ends (what ui's streams read of it)."""
    state, n_read, config = "running", 0, {}

    def __init__(self, polls: int):
        self.left = polls

    @property
    def running(self):
        return self.left > 0

    def poll(self):
        self.left -= 1

    def loss_series(self):
        return [], []

    def log_tail(self):
        return ""


@pytest.fixture
def app_fns(monkeypatch, webui_root):
    """The tab's event functions by name, with a run going that ends after a few polls."""
    from extensions.dialogue_lora.standalone import build_app

    monkeypatch.setattr(ui, "POLL_SECONDS", 0)
    monkeypatch.setattr(ui, "progress_markdown", lambda job: "" if job is None else ("running" if job.running else "ended"))
    app = build_app(StandaloneHost({}, resolve_dirs(webui_root)))
    going = _RunGoing(3)
    monkeypatch.setattr(jobs, "current", lambda kind: going)
    return {f.fn.__name__: f.fn for f in app.fns.values()}, going


def test_a_start_refused_for_a_run_going_follows_that_run_and_says_when_it_ends(app_fns, monkeypatch):
    """A page's Start refused because another page's run was going showed the last run's end under the
    refusal, and the refusal went when the run ended without a word that this Start never happened."""
    fns, going = app_fns

    def busy(self, *a, **k):
        raise UserError("a training run is already running: stop it or wait for it to finish")

    monkeypatch.setattr(TabLogic, "start_training", busy)
    shown = list(fns["on_start"]("tiny-llama", "bob.json", "bob", False, False))
    messages = [s[0] for s in shown]
    assert messages[0] == "Checking the settings…" and "already running" in messages[1]
    ended = messages.index(ui.RUN_ENDED)
    assert ended > 2 and all(m == {"__type__": "update"} for m in messages[2:ended])  # the refusal stays meanwhile
    assert messages[-1] == ui.RUN_ENDED and shown[-1][1] == "ended" and not going.running


def test_stop_follows_the_run_to_its_end(app_fns, monkeypatch):
    """Stop on a page that was not following the run (another page's) stayed on "Stopping…" for good."""
    fns, going = app_fns
    monkeypatch.setattr(TabLogic, "stop_training", lambda self: "Stopping: saving a checkpoint…")
    shown = list(fns["on_stop"]())
    assert shown[0][0] == "Stopping: saving a checkpoint…"
    assert shown[-1][0] == "" and shown[-1][1] == "ended"  # the run's own end in its place


def test_an_evaluation_refused_or_stopped_follows_the_one_going(app_fns, monkeypatch, webui_root):
    fns, going = app_fns
    monkeypatch.setitem(jobs._jobs, "evaluate", going)
    logic = TabLogic(StandaloneHost({}, resolve_dirs(webui_root)))
    with pytest.raises(UserError, match="already running"):  # before the form's own word, which would be
        logic.start_evaluation(None, None, None, 0)           # followed by "click Evaluate again"

    def busy(self, *a, **k):
        raise UserError("an evaluation is already running: stop it or wait for it to finish")

    monkeypatch.setattr(TabLogic, "start_evaluation", busy)
    monkeypatch.setattr(TabLogic, "evaluation_tables", lambda self, job: ([["m"]], [["s"]], "evaluating" if job.running else "evaluated"))
    shown = list(fns["on_evaluate"]("tiny-llama", "bob", None, 0, False, False))
    assert "already running" in shown[0][2] and shown[0][2].endswith("evaluating")  # its tables, not a wipe
    assert shown[-1][2] == f"evaluated\n\n{ui.RUN_ENDED_EVAL}" and shown[-1][0] == [["m"]]
    going.left = 3
    monkeypatch.setattr(TabLogic, "stop_evaluation", lambda self: "Stopping the evaluation…")
    shown = list(fns["on_stop_evaluation"]())
    assert shown[0][2] == "Stopping the evaluation…" and shown[-1][2] == "evaluated"


def test_a_conversation_is_let_go_when_another_page_loads_another_adapter(webui_root):
    """Page B chatting with bob; page A loads the model alone: B's next message was answered by the model
    alone, with bob's conversation as its context and the heading still saying bob. Opening the tab let it
    go; sending now does too, and says so."""
    from extensions.dialogue_lora.standalone import build_app

    class Switching(StandaloneHost):
        using = ("tiny-llama", ["bob"])

        def in_use(self):
            return self.using

        def reply(self, prompt, **kw):
            self.prompts.append(prompt)
            return "Hello."

    host = Switching({})
    host.prompts = []
    on_send = next(f.fn for f in build_app(host).fns.values() if f.fn.__name__ == "on_send")
    chat, turns, box, status, said_with, heading = on_send("Hi", [], "Bob", "Alice", 5, 0, None)
    assert status == "" and said_with == ["tiny-llama", ["bob"]] and heading == {"__type__": "update"}
    chat, turns, box, status, said_with, heading = on_send("Again", turns, "Bob", "Alice", 5, 0, said_with)
    assert len(turns) == 4 and status == ""
    host.using = ("tiny-llama", [])  # loaded on another page: the model alone
    chat, turns, box, status, said_with, heading = on_send("Are you there?", turns, "Bob", "Alice", 5, 0, said_with)
    assert status == "*A new conversation: the one before was with another model or adapter.*"
    assert turns == [("Alice", "Are you there?"), ("Bob", "Hello.")] and said_with == ["tiny-llama", []]
    assert "(no adapter)" in heading and host.prompts[-1] == "Alice: Are you there?\nBob:"


def test_a_message_sent_while_another_page_loads_is_judged_by_what_loads(webui_root):
    """Sent while a Load ran on another page: the conversation was said to be with "a model that is unloaded
    now" (the load had cleared what is in use), and the next message threw the new one away too."""
    import threading

    from extensions.dialogue_lora.standalone import build_app

    class Loading(StandaloneHost):
        def reply(self, prompt, **kw):
            with self._lock:
                return "Hello."

    host = Loading({})
    host._in_use = ("tiny-llama", ["bob"])
    on_send = next(f.fn for f in build_app(host).fns.values() if f.fn.__name__ == "on_send")
    turns = [("Alice", "Hi"), ("Bob", "Hello.")]
    held = threading.Event()

    def load_carol():
        with host._lock:
            host._in_use = ("", [])
            held.set()
            time.sleep(0.5)
            host._in_use = ("tiny-llama", ["carol"])

    loader = threading.Thread(target=load_carol)
    loader.start()
    held.wait(5)
    chat, turns, box, status, said_with, heading = on_send("Still there?", turns, "Bob", "Alice", 5, 0,
                                                           ["tiny-llama", ["bob"]])
    loader.join()
    assert status == "*A new conversation: the one before was with another model or adapter.*"
    assert said_with == ["tiny-llama", ["carol"]] and len(turns) == 2
    chat, turns, box, status, said_with, heading = on_send("And now?", turns, "Bob", "Alice", 5, 0, said_with)
    assert status == "" and len(turns) == 4  # kept: nothing changed since


def test_each_method_shows_its_own_settings(webui_root, monkeypatch):
    """Prompt tuning hides LoRA's rank, alpha, dropout and target modules (changed, they did nothing: the
    script refuses them for it) and shows its virtual tokens; LoRA the other way round."""
    monkeypatch.chdir(webui_root)
    from extensions.dialogue_lora.standalone import build_app

    app = build_app(StandaloneHost({}, resolve_dirs(webui_root)))
    method = next(b for b in app.blocks.values() if type(b).__name__ == "Dropdown" and b.label == "Method")
    [dep] = [d for d in app.config["dependencies"] if [method._id, "change"] in [list(t) for t in d["targets"]]]
    labels = [app.blocks[i].label.split(" (")[0] for i in dep["outputs"]]
    assert sorted(labels) == ["LoRA alpha", "LoRA dropout", "LoRA rank", "Target modules", "Virtual tokens"]
    for picked, shown in (("prompt_tuning", {"Virtual tokens"}), ("lora", set(labels) - {"Virtual tokens"})):
        updates = app.fns[dep["id"]].fn(picked)
        assert {label for label, u in zip(labels, updates) if u["visible"]} == shown
    visible = {b.label.split(" (")[0] for b in app.blocks.values() if getattr(b, "label", None) and b.visible}
    assert "LoRA rank" in visible and "Virtual tokens" not in visible  # as built: LoRA, the default


def test_loading_in_use_clears_the_quick_tests_load_first_warning(tmp_path, monkeypatch):
    """*Reply* before anything was loaded says to load a model first; a *Load adapter* that succeeds
    answers it, so the warning goes (it stayed under the reply box and read as 'still not loaded')."""
    monkeypatch.chdir(tmp_path)
    from extensions.dialogue_lora.standalone import build_app

    monkeypatch.setattr(TabLogic, "use", lambda self, *a: "Loaded tiny-llama + bob for chat.")
    app = build_app(StandaloneHost({}))
    [dep] = [d for d in app.config["dependencies"] if app.fns[d["id"]].fn.__name__ == "on_use"]
    warning = next(b for b in app.blocks.values() if b._id == dep["outputs"][-1])
    assert type(warning).__name__ == "Markdown"
    out = app.fns[dep["id"]].fn("tiny-llama", "bob", False, False)
    assert out[0] == "Loaded tiny-llama + bob for chat." and out[-1] == ""
    monkeypatch.setattr(TabLogic, "use", lambda self, *a: (_ for _ in ()).throw(UserError("no such adapter")))
    out = app.fns[dep["id"]].fn("tiny-llama", "bob", False, False)
    assert "no such adapter" in out[0] and isinstance(out[-1], dict)  # a failed load leaves it
