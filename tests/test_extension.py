"""The webui contract (script.py): loading both ways, params, the newline stop, the training-format chat prompt,
and the host adapter against stand-ins for the webui's modules."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

from extensions.dialogue_lora import script, webui
from extensions.dialogue_lora.errors import UserError
from extensions.dialogue_lora.prompt import chat_prompt

ROOT = Path(__file__).resolve().parent.parent
EXT = ROOT / "extensions" / "dialogue_lora"
CHECK = Path(__file__).with_name("webui_load_check.py")


# ------------------------------------------------------------------------------------------ params


def test_params_contract():
    assert script.params["display_name"] == "Dialogue LoRA"
    assert script.params["is_tab"] is True
    assert script.params["stop_at_newline"] is True
    from extensions.dialogue_lora.generation import DEFAULT_TEMPERATURE

    assert script.params["temperature"] == DEFAULT_TEMPERATURE  # a literal there: script.py imports nothing heavy
    for hook in ("setup", "ui", "state_modifier", "custom_generate_chat_prompt", "custom_css"):
        assert callable(getattr(script, hook))
    # the folder under Train's model and dataset fields wraps anywhere (a path has no spaces to wrap at)
    assert script.custom_css() == ".dialogue-lora-folder .info-text { overflow-wrap: anywhere; }"


def test_setup_normalises_settings_yaml_values():
    params = {"stop_at_newline": "false", "character_chat": "yes", "rounds": "3", "is_tab": True}
    webui.setup(params)
    assert params == {"stop_at_newline": False, "character_chat": True, "rounds": 3, "is_tab": True}
    params = {"rounds": "many"}
    webui.setup(params)
    assert params["rounds"] == 5


# ------------------------------------------------------------------------------------------ newline stop


@pytest.mark.parametrize(
    "before, after",
    [
        ("", '"\\n"'),
        (None, '"\\n"'),
        ('"\\nYou:"', '"\\nYou:", "\\n"'),
        ('"\\nYou:", ', '"\\nYou:", "\\n"'),
        ('"###", "\\n"', '"###", "\\n"'),  # already there: unchanged
        ("'\\n'", "'\\n'"),
    ],
)
def test_newline_stop_ui_string(before, after):
    state = {"custom_stopping_strings": before}
    assert script.state_modifier(state) is state
    assert state["custom_stopping_strings"] == after
    import ast

    items = ast.literal_eval(f"[{after}]")  # exactly how the webui reads it
    assert "\n" in items
    assert items.count("\n") == 1


def test_newline_stop_api_list_and_idempotent():
    state = {"custom_stopping_strings": ["###", "\nYou:"]}
    script.state_modifier(state)
    script.state_modifier(state)
    assert state["custom_stopping_strings"] == ["###", "\nYou:", "\n"]


def test_newline_stop_missing_key_and_malformed_string():
    state = {}
    script.state_modifier(state)
    assert state["custom_stopping_strings"] == '"\\n"'
    state = {"custom_stopping_strings": '"unclosed'}
    script.state_modifier(state)
    assert state["custom_stopping_strings"].endswith('"\\n"')  # ours added, theirs kept as it was
    assert state["custom_stopping_strings"].startswith('"unclosed')


def test_newline_stop_off(monkeypatch):
    monkeypatch.setitem(script.params, "stop_at_newline", False)
    state = {"custom_stopping_strings": '"###"'}
    script.state_modifier(state)
    assert state["custom_stopping_strings"] == '"###"'


# ------------------------------------------------------------------------------------------ chat prompt


def _state(rows, name1="Alice", name2="Bob"):
    return {"name1": name1, "name2": name2, "history": {"internal": rows, "visible": rows}}


def test_character_chat_prompt_is_the_training_format(monkeypatch):
    monkeypatch.setitem(script.params, "character_chat", True)
    monkeypatch.setitem(script.params, "rounds", 3)
    rows = [["<|BEGIN-VISIBLE-CHAT|>", "Ahoy!"], ["Hi Bob!", "Hello Alice."], ["Coming tonight?", "Aye."]]
    state = _state(rows)
    # the webui passes the rows before the current message as kwargs["history"]
    got = script.custom_generate_chat_prompt("See you at 8?", state, history={"internal": rows}, _continue=False)
    assert got == "Alice: Coming tonight?\nBob: Aye.\nAlice: See you at 8?\nBob:"
    expected = chat_prompt([("Bob", "Ahoy!"), ("Alice", "Hi Bob!"), ("Bob", "Hello Alice."),
                            ("Alice", "Coming tonight?"), ("Bob", "Aye."), ("Alice", "See you at 8?")], "Bob", 3)
    assert got == expected


def test_character_chat_prompt_first_message_and_multiline(monkeypatch):
    monkeypatch.setitem(script.params, "character_chat", True)
    monkeypatch.setitem(script.params, "rounds", 5)
    assert script.custom_generate_chat_prompt("Hi\nthere", _state([])) == "Alice: Hi there\nBob:"
    monkeypatch.setitem(script.params, "rounds", 0)  # never fewer than the user's own line
    assert script.custom_generate_chat_prompt("Hi", _state([["a", "b"]])) == "Alice: Hi\nBob:"


def test_character_chat_prompt_uses_the_tabs_character_name_over_the_bot_name(monkeypatch):
    monkeypatch.setitem(script.params, "character_chat", True)
    monkeypatch.setitem(script.params, "rounds", 5)
    rows = [["Hi!", "Hello."]]
    state = _state(rows, name1="You", name2="AI")  # the webui's default names
    monkeypatch.setitem(script.params, "character", "Bob")
    got = script.custom_generate_chat_prompt("Coming tonight?", state, history={"internal": rows})
    assert got == "You: Hi!\nBob: Hello.\nYou: Coming tonight?\nBob:"
    monkeypatch.setitem(script.params, "character", "")
    assert script.custom_generate_chat_prompt("Coming?", _state([], name2="AI")).endswith("\nAI:")


def test_an_alpaca_adapters_instruction_leads_the_chat_prompt_while_it_is_applied(monkeypatch):
    monkeypatch.setitem(script.params, "character_chat", True)
    monkeypatch.setitem(script.params, "character", "Bob")
    monkeypatch.setitem(script.params, "instruction", "Continue the dialogue as {name}.")
    monkeypatch.setitem(script.params, "adapter", "bob")
    shared = types.ModuleType("modules.shared")
    shared.lora_names = ["bob"]
    monkeypatch.setitem(sys.modules, "modules.shared", shared)
    got = script.custom_generate_chat_prompt("Coming?", _state([], name1="Alice", name2="AI"))
    assert got == "Continue the dialogue as Bob.\nAlice: Coming?\nBob:"
    shared.lora_names = []
    assert script.custom_generate_chat_prompt("Coming?", _state([], name1="Alice", name2="AI")) == "Alice: Coming?\nAI:"


def test_a_merged_model_loaded_in_the_webui_is_prompted_as_its_adapter(monkeypatch, tmp_path):
    """merge_lora.py's record in the loaded model's folder gives the character and the instruction line, as
    the adapter itself would when applied; a name typed in the tab still wins."""
    import json

    monkeypatch.setitem(script.params, "character_chat", True)
    monkeypatch.setitem(script.params, "character", "")
    monkeypatch.setitem(script.params, "instruction", "")
    monkeypatch.setitem(script.params, "adapter", None)
    (tmp_path / "tiny-llama-bob").mkdir()
    (tmp_path / "tiny-llama-bob" / "dialogue_lora_merge.json").write_text(json.dumps(
        {"characters": ["Bob"], "instruction": "Continue the dialogue as {name}."}))
    shared = types.ModuleType("modules.shared")
    shared.lora_names, shared.model_name = [], "tiny-llama-bob"
    shared.args = types.SimpleNamespace(model_dir=str(tmp_path))
    monkeypatch.setitem(sys.modules, "modules.shared", shared)
    got = script.custom_generate_chat_prompt("Coming?", _state([], name1="Alice", name2="AI"))
    assert got == "Continue the dialogue as Bob.\nAlice: Coming?\nBob:"
    monkeypatch.setitem(script.params, "character", "Robert")
    assert script.custom_generate_chat_prompt("Coming?", _state([], name1="Alice", name2="AI")) == \
        "Continue the dialogue as Robert.\nAlice: Coming?\nRobert:"
    shared.model_name = "tiny-llama"  # any other model: the webui's bot name, no line
    monkeypatch.setitem(script.params, "character", "")
    assert script.custom_generate_chat_prompt("Coming?", _state([], name1="Alice", name2="AI")) == "Alice: Coming?\nAI:"


def test_the_adapters_character_name_lasts_while_the_adapter_is_applied(monkeypatch):
    monkeypatch.setitem(script.params, "character_chat", True)
    monkeypatch.setitem(script.params, "character", "Bob")
    monkeypatch.setitem(script.params, "adapter", "bob")
    shared = types.ModuleType("modules.shared")
    shared.lora_names = ["bob"]
    monkeypatch.setitem(sys.modules, "modules.shared", shared)
    assert script.custom_generate_chat_prompt("Coming?", _state([], name2="AI")).endswith("\nBob:")
    shared.lora_names = []  # taken off in the webui's own LoRA menu
    assert script.custom_generate_chat_prompt("Coming?", _state([], name2="AI")).endswith("\nAI:")


def test_character_chat_prompt_continue_and_impersonate():
    rows = [["Hi Bob!", "Hello"]]
    got = webui.character_chat_prompt("", _state(rows), 5, history={"internal": rows}, _continue=True)
    assert got == "Alice: Hi Bob!\nBob: Hello"  # the model continues the unfinished reply
    got = webui.character_chat_prompt("", _state(rows), 5, impersonate=True)
    assert got == "Alice: Hi Bob!\nBob: Hello\nAlice:"
    # an adapter whose samples' user lines named no one: the user's go bare (but for impersonating the user)
    got = webui.character_chat_prompt("Coming?", _state(rows), 5, history={"internal": rows}, user_named=False)
    assert got == "Hi Bob!\nBob: Hello\nComing?\nBob:"
    assert webui.character_chat_prompt("", _state(rows), 5, impersonate=True, user_named=False).endswith("\nAlice:")


def test_the_apis_system_messages_are_no_ones_line():
    """The webui's API puts a system message mid-conversation in a row of its own, marked in its metadata."""
    rows = [["Hi Bob!", "Hello Alice.", "", {}], ["Keep replies short.", "", "", {"role": "system"}]]
    got = webui.character_chat_prompt("Coming tonight?", _state(rows), 5, history={"internal": rows})
    assert got == "Alice: Hi Bob!\nBob: Hello Alice.\nAlice: Coming tonight?\nBob:"


def test_character_chat_off_defers_to_the_webui(monkeypatch):
    monkeypatch.setitem(script.params, "character_chat", False)
    calls = []
    fake_chat = types.ModuleType("modules.chat")
    fake_chat.generate_chat_prompt = lambda text, state, **kw: calls.append((text, kw)) or "WEBUI PROMPT"
    monkeypatch.setitem(sys.modules, "modules", types.ModuleType("modules"))
    monkeypatch.setitem(sys.modules, "modules.chat", fake_chat)
    assert script.custom_generate_chat_prompt("hi", _state([]), _continue=False) == "WEBUI PROMPT"
    assert calls == [("hi", {"_continue": False})]


# ------------------------------------------------------------------------------------------ loading


def _run_check(cwd: Path, *args: str, python: str = sys.executable) -> dict:
    proc = subprocess.run([python, str(CHECK), *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(cwd), "GRADIO_ANALYTICS_ENABLED": "False"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def check_loaded(out: dict) -> None:
    assert out["heavy_loaded"] == []  # no torch/transformers/peft needed to load and build
    assert {"1. Prepare", "2. Train", "3. Evaluate", "4. Use"} <= set(out["labels"])
    assert {"Epochs", "LoRA rank", "Load in 4-bit (QLoRA)", "Adapter", "Character(s) to learn"} <= set(out["labels"])
    assert out["ui_stops"] == '"\\nYou:", "\\n"'
    assert out["api_stops"] == ["###", "\n"]
    assert out["prompt"] == "Alice: Hi Bob!\nBob: Hello.\nAlice: Are you coming?\nBob:"


@pytest.mark.slow
def test_loads_by_file_path_from_another_folder_without_webui_or_model(tmp_path):
    """As the webui loads user_data/extensions/NAME/script.py: not a package, nothing else around."""
    target = tmp_path / "user_data" / "extensions" / "dialogue_lora"
    shutil.copytree(EXT, target, ignore=shutil.ignore_patterns("__pycache__"))
    out = _run_check(tmp_path, str(target / "script.py"))
    assert out["module"] == "user_ext_dialogue_lora"
    check_loaded(out)
    assert not (tmp_path / "user_data" / "models").exists()  # building the tab created nothing


@pytest.mark.slow
def test_loads_as_package_module(tmp_path):
    out = _run_check(tmp_path, "unused", "--package-root", str(ROOT))
    assert out["module"] == "extensions.dialogue_lora.script"
    check_loaded(out)


# ------------------------------------------------------------------------------------------ the webui host


@pytest.fixture
def fake_webui(monkeypatch, tmp_path):
    """Stand-ins for modules.shared, modules.LoRA and modules.models, as the webui defines them."""
    shared = types.ModuleType("modules.shared")
    shared.model = None
    shared.tokenizer = None
    shared.model_name = "None"
    shared.lora_names = []
    shared.user_data_dir = tmp_path / "user_data"
    shared.args = types.SimpleNamespace(model_dir=str(tmp_path / "user_data/models"),
                                        lora_dir=str(tmp_path / "user_data/loras"), loader=None)
    lora = types.ModuleType("modules.LoRA")
    lora.calls = []

    def add_lora_to_model(names):
        lora.calls.append(list(names))
        shared.lora_names = list(names)

    lora.add_lora_to_model = add_lora_to_model
    models = types.ModuleType("modules.models")

    def unload_model(keep_model_name=False):
        shared.model = shared.tokenizer = None
        shared.model_name = "None"

    models.unload_model = unload_model
    pkg = types.ModuleType("modules")
    for name, mod in (("modules", pkg), ("modules.shared", shared), ("modules.LoRA", lora),
                      ("modules.models", models)):
        monkeypatch.setitem(sys.modules, name, mod)
    (tmp_path / "user_data" / "loras" / "bob").mkdir(parents=True)
    (tmp_path / "user_data" / "loras" / "bob" / "adapter_config.json").write_text("{}")
    return shared, lora


def test_webui_host_folders_and_memory(fake_webui, tmp_path):
    shared, _ = fake_webui
    host = webui.WebuiHost({})
    d = host.dirs()
    assert d.models == tmp_path / "user_data/models"
    assert d.loras == tmp_path / "user_data/loras"
    assert d.datasets == tmp_path / "user_data/training/datasets"
    assert "No model is loaded" in host.memory_status()

    class Model:
        def get_memory_footprint(self):
            return 3 * 1024**3

    shared.model, shared.model_name = Model(), "pygmalion-6b"
    status = host.memory_status()
    assert "pygmalion-6b" in status and "3.0 GB" in status and "unload" in status
    assert "Unloaded" in host.unload_model()
    assert shared.model is None


def test_webui_host_applies_adapters_with_transformers_only(fake_webui):
    shared, lora = fake_webui
    host = webui.WebuiHost({})
    with pytest.raises(UserError, match="Load a base model"):
        host.use_adapter(None, "bob")
    with pytest.raises(UserError, match="Load a base model"):  # not shown as the character's reply
        host.reply("Bob:")
    shared.model, shared.model_name = object(), "tiny"
    shared.args.loader = "llama.cpp"
    with pytest.raises(UserError, match="llama.cpp.*Transformers"):
        host.use_adapter(None, "bob")
    assert lora.calls == []
    shared.args.loader = "Transformers"
    assert host.in_use() == ("tiny", [])
    assert host.use_adapter(None, "bob") == "Applied bob to tiny."
    assert lora.calls == [["bob"]]
    assert host.in_use() == ("tiny", ["bob"])  # what the Use section shows when it opens
    # applied again (retrained since): off first, so the webui reads it anew instead of skipping it
    assert host.use_adapter(None, "bob") == "Applied bob to tiny."
    assert lora.calls == [["bob"], [], ["bob"]]


def test_webui_host_takes_a_prompt_tuning_adapter_off_and_says_the_webuis_errors(fake_webui):
    """The webui takes adapters off with PEFT's unload(), which a prompt-tuning model lacks: applying any
    adapter after one failed with AttributeError, shown as the tab's bare "Error"."""
    shared, lora = fake_webui
    base = object()

    class PromptTuned:  # what PEFT wraps the model in for prompt tuning: no unload()
        def get_base_model(self):
            return base

    shared.model, shared.model_name, shared.args.loader = PromptTuned(), "tiny", "Transformers"
    shared.lora_names = ["soft"]
    real = lora.add_lora_to_model

    def strict(names):  # as the webui's add_lora_transformers: anything to take off goes through unload()
        if set(shared.lora_names) - set(names):
            shared.model.unload()
        real(names)

    lora.add_lora_to_model = strict
    assert host_apply(fake_webui, "bob") == "Applied bob to tiny."
    assert shared.model is base and lora.calls == [["bob"]]

    def broken(names):
        raise RuntimeError("Error(s) in loading state_dict for LoraModel: size mismatch for lora_A")

    lora.add_lora_to_model = broken
    with pytest.raises(UserError, match=r"^the webui could not apply bob: RuntimeError: Error\(s\) in loading"):
        host_apply(fake_webui, "bob")


def host_apply(fake_webui, adapter):
    return webui.WebuiHost({}).use_adapter(None, adapter)


def test_webui_host_loads_a_model_unloaded_for_idleness_again(fake_webui, monkeypatch):
    """--idle-timeout unloads the model and keeps its name; the webui loads it again before its next
    generation, and the tab's Apply and quick test do so too (they said "load a base model")."""
    shared, lora = fake_webui
    shared.args.loader = "Transformers"
    models = sys.modules["modules.models"]
    woken = []

    def load_model_if_idle_unloaded():
        if shared.model is None and shared.model_name != "None":
            shared.model = object()
            woken.append(shared.model_name)

    monkeypatch.setattr(models, "load_model_if_idle_unloaded", load_model_if_idle_unloaded, raising=False)
    shared.model, shared.model_name = None, "tiny"
    assert host_apply(fake_webui, "bob") == "Applied bob to tiny."
    assert woken == ["tiny"] and lora.calls == [["bob"]]
    # unloaded again; the quick test wakes the model, which comes back without the adapter: said, not
    # answered by the base as if it were bob
    host = webui.WebuiHost({"adapter": "bob"})
    shared.model, shared.lora_names = None, []
    for _ in range(2):  # and again after it was said (or after the webui's own chat reloaded the model)
        with pytest.raises(UserError, match=r"^bob is not applied now \(the webui's reload of a model it unloaded "
                                            r"for being idle, or its LoRA menu, took it off\): click Apply adapter again$"):
            host.reply("Alice: hi\nBob:")
    assert woken == ["tiny", "tiny"]


def test_the_quick_test_takes_the_webuis_generation_lock(fake_webui, monkeypatch):
    """A chat reply being generated, or the webui's idle timer unloading the model, holds
    shared.generation_lock: the quick test waits for it (and finds the model gone if it was unloaded)."""
    import threading

    from extensions.dialogue_lora import generation

    shared, _lora = fake_webui
    shared.generation_lock = threading.Lock()
    models = sys.modules["modules.models"]
    models.last_generation_time = 0.0
    shared.model, shared.model_name, shared.args.loader = object(), "tiny", "Transformers"
    monkeypatch.setattr(generation, "generate_reply",
                        lambda *a, **k: ("Hello." if shared.generation_lock.locked() else "unlocked", True))
    host = webui.WebuiHost({})
    assert host.reply("Alice: Hi\nBob:") == "Hello."
    assert models.last_generation_time > 0  # the idle timer counts the quick test as use
    assert not shared.generation_lock.locked()
    # the idle timer holds the lock and unloads the model: the quick test, waiting, then says so
    shared.generation_lock.acquire()
    got = []

    def ask():
        try:
            got.append(host.reply("Alice: Hi\nBob:"))
        except UserError as e:
            got.append(str(e))

    asking = threading.Thread(target=ask)
    asking.start()
    asking.join(0.3)
    assert asking.is_alive() and got == []  # waiting for the lock
    models.unload_model()
    shared.generation_lock.release()
    asking.join(5)
    assert got and got[0].startswith("Load a base model")


def test_the_readmes_settings_table_lists_every_param():
    """settings.yaml sets only the keys `params` has (the webui's apply_settings): the table says no more, no less."""
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `dialogue_lora-(\w+)` \|", readme, re.M))
    assert documented == set(script.params) - {"is_tab"}


def test_the_extensions_requirements_are_the_projects_without_the_webuis_own():
    """extensions/dialogue_lora/requirements.txt (what the webui's update script installs, with --upgrade)
    holds the project's requirements that the webui lacks, at the same bounds, and none of the webui's own."""
    def reqs(path):
        lines = (line.split("#")[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
        return {line.split(">=")[0].lower(): line for line in lines if line}

    ours, project = reqs(EXT / "requirements.txt"), reqs(ROOT / "requirements.txt")
    assert ours and all(project.get(name) == line for name, line in ours.items())
    assert not ours.keys() & {"torch", "transformers", "peft", "accelerate", "gradio", "safetensors", "tokenizers"}
    assert {"ftfy", "sacrebleu", "matplotlib"} <= ours.keys()
