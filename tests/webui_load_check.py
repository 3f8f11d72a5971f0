"""Load the extension the way text-generation-webui does and build its tab; print what happened as JSON.

    python tests/webui_load_check.py path/to/dialogue_lora/script.py [--package-root ROOT]

By default the script is loaded by file path (`spec_from_file_location`, as the webui loads
user_data/extensions/NAME/script.py); with --package-root it is imported as the package module
`extensions.dialogue_lora.script` from ROOT. torch, transformers, peft, accelerate and bitsandbytes are made
unimportable first: loading the extension and building the tab must not need them. Used by
tests/test_extension.py (current Gradio) and tests/test_gradio4.py (Gradio 4.37.2 in its own venv).
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import json
import sys

HEAVY = ("torch", "transformers", "peft", "accelerate", "bitsandbytes")


class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HEAVY:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
        return None


def main(argv: list[str]) -> int:
    script = argv[0]
    sys.meta_path.insert(0, _Blocker())
    if "--package-root" in argv:
        sys.path.insert(0, argv[argv.index("--package-root") + 1])
        ext = importlib.import_module("extensions.dialogue_lora.script")
    else:
        spec = importlib.util.spec_from_file_location("user_ext_dialogue_lora", script)
        ext = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = ext
        spec.loader.exec_module(ext)
    # what the webui does next: settings.yaml overrides, setup(), then the tab
    ext.params["rounds"] = 3
    ext.setup()
    import gradio as gr

    with gr.Blocks() as demo:
        with gr.Tab(ext.params.get("display_name", "dialogue_lora"), elem_classes="extension-tab"):
            ext.ui()
    config = demo.get_config_file()  # what the browser receives: every component must serialise
    ui_state = {"custom_stopping_strings": '"\\nYou:"'}
    api_state = {"custom_stopping_strings": ["###"]}
    ext.state_modifier(ui_state)
    ext.state_modifier(api_state)
    ext.params["character_chat"] = True
    prompt = ext.custom_generate_chat_prompt(
        "Are you coming?", {"name1": "Alice", "name2": "Bob", "history": {"internal": [["Hi Bob!", "Hello."]]}},
        history={"internal": [["Hi Bob!", "Hello."]]},
    )
    labels = sorted({c.get("props", {}).get("label") for c in config["components"] if c.get("props", {}).get("label")})
    print(json.dumps({
        "gradio": gr.__version__,
        "module": ext.__name__,
        "components": len(config["components"]),
        "labels": labels,
        "ui_stops": ui_state["custom_stopping_strings"],
        "api_stops": api_state["custom_stopping_strings"],
        "prompt": prompt,
        "heavy_loaded": [m for m in HEAVY if m in sys.modules],
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
