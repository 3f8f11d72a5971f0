"""text-generation-webui extension: the "Dialogue LoRA" tab and the chat hooks. The contract only.

The webui imports this file in one of two ways: as the package module `extensions.dialogue_lora.script`
(a built-in extension), or by file path from `user_data/extensions/dialogue_lora/script.py` with
`importlib.util.spec_from_file_location`, where it is a lone module and relative imports fail. In the
second case `_package()` registers this folder as a package first, so the rest of the code is the same.

Nothing heavy is imported here: torch, transformers, peft and the webui's own modules load on use, so
a missing optional library or an unloaded model never stops the webui from starting.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

# Overridable from the webui's settings.yaml as `dialogue_lora-KEY` (the webui applies them before setup()).
params = {
    "display_name": "Dialogue LoRA",
    "is_tab": True,
    "stop_at_newline": True,  # add "\n" to the stopping strings: one line per reply, as trained
    "character_chat": False,  # build the chat prompt in the training format (custom_generate_chat_prompt)
    "rounds": 5,  # context turns in that prompt (prepare_dataset's --rounds)
    "character": "",  # the character's name in that prompt; empty: the webui's bot name (Character tab)
    "instruction": "",  # a line before the dialogue: what an adapter trained on alpaca samples saw there
    "temperature": 0.7,  # the Use section's quick test (generation.DEFAULT_TEMPERATURE); the Chat tab has its own
    "user_name": "You",  # the quick test's *Your name*; the Chat tab has the webui's own
}


def _package() -> str:
    """The import name of this folder's package, registering the folder as one when loaded by file path."""
    if __package__:
        return __package__
    import importlib.util
    import zlib

    folder = Path(__file__).resolve().parent
    name = "dialogue_lora"
    existing = sys.modules.get(name)
    if existing is not None and Path(getattr(existing, "__file__", "") or "").resolve().parent != folder:
        name = f"dialogue_lora_{zlib.crc32(str(folder).encode()):08x}"  # another copy holds the plain name
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, folder / "__init__.py", submodule_search_locations=[str(folder)]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return name


_webui = importlib.import_module(f"{_package()}.webui")
_prompt = importlib.import_module(f"{_package()}.prompt")


def setup():
    """Runs once when the webui loads the extension (after settings.yaml overrides are applied)."""
    _webui.setup(params)


def ui():
    """The tab (params["is_tab"] puts it after the webui's own tabs)."""
    from importlib import import_module

    import_module(f"{_webui.__package__}.ui").build_tab(_webui.WebuiHost(params))


def custom_css():
    """The tab's few style rules (the webui adds each extension's to its page)."""
    from importlib import import_module

    return import_module(f"{_webui.__package__}.ui").CSS


def state_modifier(state):
    """Add "\\n" to the custom stopping strings (UI string or API list form) when stop_at_newline is on."""
    if params.get("stop_at_newline", True):
        _webui.add_newline_stop(state)
    return state


def custom_generate_chat_prompt(user_input, state, **kwargs):
    """With character chat on, the prompt is the training format; otherwise the webui's own prompt."""
    if params.get("character_chat"):
        character, instruction = params.get("character"), params.get("instruction")
        named = _prompt.user_turns_named(params)  # the user's lines named, as the samples had them
        applied = _webui.applied_loras()
        if params.get("adapter") and applied is not None and params["adapter"] not in applied:
            # its adapter was taken off (the webui's LoRA menu): the Character tab's bot name, no instruction
            character = instruction = None
            named = True
        if not (params.get("adapter") and applied and params["adapter"] in applied):
            # no adapter of the tab's applied: a model merge_lora.py wrote says what its adapter learnt
            merged = _webui.loaded_merge_record()
            instruction = instruction or merged.get("instruction") or None
            character = character or next(iter(merged.get("characters") or []), None)
            named = named and _prompt.user_turns_named(merged)
        # at least the user's own line: 0 turns would cue a reply to nothing
        return _webui.character_chat_prompt(user_input, state, max(1, int(params.get("rounds", 5))),
                                            character=character, instruction=instruction, user_named=named,
                                            **kwargs)
    return _webui.default_chat_prompt(user_input, state, **kwargs)
