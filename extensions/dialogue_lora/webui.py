"""Everything that knows about text-generation-webui: the chat hooks' logic and the tab's host inside it.

The hook helpers are pure functions of the webui's `state` dict (tested without the webui). `WebuiHost`
imports the webui's `modules.shared`, `modules.LoRA` and `modules.models` lazily, inside its methods, so this
file imports anywhere.
"""
from __future__ import annotations

import ast
import contextlib
import sys
import time
from pathlib import Path

from . import prompt as fmt
from .errors import UserError
from .generation import DEFAULT_MAX_NEW_TOKENS
from .host import Host, format_bytes
from .paths import Dirs, resolve_dirs

NEWLINE = fmt.STOP
# The webui marks a greeting row's (empty) user side with this.
_GREETING_MARK = "<|BEGIN-VISIBLE-CHAT|>"


def setup(params: dict) -> None:
    """Normalise settings that settings.yaml may give as strings."""
    for key in ("stop_at_newline", "character_chat", "is_tab"):
        value = params.get(key)
        if isinstance(value, str):
            params[key] = value.strip().lower() in ("1", "true", "yes", "on")
    try:
        params["rounds"] = max(1, int(params.get("rounds", 5)))  # 0 would leave out what the user just said
    except (TypeError, ValueError):
        params["rounds"] = 5


def add_newline_stop(state: dict) -> dict:
    """Add "\\n" to state["custom_stopping_strings"], keeping what was there; returns `state` (changed in place).

    The webui's UI gives a string of quoted items (read with `ast.literal_eval(f"[{s}]")`), the API a
    list; both forms are kept as they came.
    """
    current = state.get("custom_stopping_strings")
    if isinstance(current, (list, tuple)):
        if NEWLINE not in current:
            state["custom_stopping_strings"] = [*current, NEWLINE]
        return state
    text = (current or "").strip() if isinstance(current, str) or current is None else str(current)
    try:
        items = ast.literal_eval(f"[{text}]") if text else []
    except (ValueError, SyntaxError):
        items = None  # the user's own string is malformed; the webui will say so, we still add ours
    if items is not None and NEWLINE in items:
        return state
    state["custom_stopping_strings"] = (text.rstrip(", ") + ", " if text else "") + '"\\n"'
    return state


def history_turns(rows, name1: str, name2: str) -> list[tuple[str, str]]:
    """The webui's history["internal"] rows ([user, reply, ...]) as (speaker, text) turns, oldest first."""
    turns: list[tuple[str, str]] = []
    for row in rows or []:
        meta = row[3] if len(row) > 3 else None
        if isinstance(meta, dict) and meta.get("role") == "system":  # the API's system message mid-chat: no one's line
            continue
        user = (row[0] if len(row) > 0 else "") or ""
        reply = (row[1] if len(row) > 1 else "") or ""
        if user.strip() and user != _GREETING_MARK:
            turns.append((name1, user))
        if reply.strip():
            turns.append((name2, reply))
    return turns


def character_chat_prompt(user_input: str, state: dict, rounds: int, character: str | None = None,
                          instruction: str | None = None, user_named: bool = True, **kwargs) -> str:
    """The chat prompt in the training format: the last `rounds` turns as `Name: text` lines, then `Name2:`.

    `character` (the tab's "Character name", filled from the adapter's training data) names the
    character's turns; without it, the webui's bot name (state["name2"]) does. The adapter learned to
    answer after its own name's cue, so with the webui's default bot name it would be cued as someone else.

    `kwargs["history"]` (the webui passes it; it holds the rows before the current message) wins over
    state["history"]. With `_continue`, the last reply is unfinished: the prompt ends with it after the cue.
    With `impersonate`, the user's cue is used instead. `instruction`: the line an adapter trained on alpaca
    samples saw before the dialogue (prompt.chat_prompt). `user_named` False: the user's lines go without
    their name, as an adapter whose samples' user turns named no one learnt them.
    """
    name1 = (state.get("name1") or "You").strip()
    name2 = (character or "").strip() or (state.get("name2") or "Character").strip()
    history = kwargs.get("history") or state.get("history") or {}
    rows = history.get("internal", []) if isinstance(history, dict) else history
    turns = history_turns(rows, name1, name2)
    bare = None if user_named else name1
    if kwargs.get("_continue") and turns and turns[-1][0] == name2:
        partial = turns.pop()[1]
        return fmt.chat_prompt(turns, name2, rounds, instruction, bare) + " " + fmt.one_line(partial)
    if user_input and user_input.strip() and not kwargs.get("_continue"):
        turns.append((name1, user_input))
    if kwargs.get("impersonate"):  # (the user's own cue: their lines named, whatever the samples had)
        return fmt.chat_prompt(turns, name1, rounds, instruction)
    return fmt.chat_prompt(turns, name2, rounds, instruction, bare)


def default_chat_prompt(user_input: str, state: dict, **kwargs):
    """The webui's own chat prompt (what it builds when no extension takes over)."""
    try:
        from modules.chat import generate_chat_prompt
    except ImportError:  # not inside the webui: let the caller build its own
        return None
    return generate_chat_prompt(user_input, state, **kwargs)


class WebuiHost(Host):
    """The tab inside the webui: its folders, its loaded model, its LoRA loading."""

    own_model = False

    def dirs(self) -> Dirs:
        shared = _shared()
        if shared is None:
            return resolve_dirs()
        data = Path(getattr(shared, "user_data_dir", "user_data"))
        old_layout = not data.is_dir() and Path("training/datasets").is_dir()
        return Dirs(
            models=Path(shared.args.model_dir),
            loras=Path(shared.args.lora_dir),
            datasets=Path("training/datasets") if old_layout else data / "training" / "datasets",
        )

    def _loaded(self):
        shared = _shared()
        if shared is None or shared.model is None or str(shared.model_name) == "None":
            return None
        return shared

    def memory_status(self) -> str:
        shared = self._loaded()
        if shared is None:
            return "No model is loaded in the webui: training has the GPU to itself."
        parts = [f"**{shared.model_name}** is loaded in the webui"]
        footprint = getattr(shared.model, "get_memory_footprint", None)
        if callable(footprint):
            try:
                parts.append(f"holding about {format_bytes(footprint())}")
            except (RuntimeError, ValueError, AttributeError) as e:  # some loaders' models cannot say
                parts.append(f"(memory unknown: {e})")
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            parts.append(f"(GPU memory in use: {format_bytes(torch.cuda.memory_allocated())})")
        return " ".join(parts) + ". Training runs in its own process and needs memory of its own: unload it first if memory is tight."

    def unload_model(self) -> str:
        if self._loaded() is None:
            return "No model is loaded."
        from modules.models import unload_model

        unload_model()
        return "Unloaded the webui's model; its memory is free for training."

    def loader_problem(self) -> str | None:
        shared = self._loaded()
        if shared is None:
            return "Load a base model in the webui's Model tab first (with the Transformers loader)."
        loader = getattr(shared.args, "loader", None)
        if loader and loader != "Transformers":
            return (
                f"The model is loaded with {loader}; LoRA adapters apply only with the Transformers loader. "
                "Reload the base model with Transformers in the Model tab."
            )
        return None

    def use_adapter(self, model: str | None, adapter: str) -> str:
        _wake()
        problem = self.loader_problem()
        if problem:  # an error, not a message: the tab must not switch character chat on
            raise UserError(problem)
        shared = _shared()
        from modules.LoRA import add_lora_to_model

        from .generation import recorded_base

        base = recorded_base(self.dirs().loras / adapter)
        warning = ""
        if base and Path(base).name != Path(str(shared.model_name)).name:
            warning = f" Note: it was trained on {Path(base).name}, the loaded model is {shared.model_name}."
        try:
            model = shared.model
            if getattr(shared, "lora_names", None) and hasattr(model, "get_base_model") and not hasattr(model, "unload"):
                # a prompt-tuning adapter is on: the webui takes adapters off with PEFT's unload(), which
                # prompt tuning lacks (AttributeError); it never changed the base model, which is underneath
                shared.model, shared.lora_names = model.get_base_model(), []
            if adapter in (getattr(shared, "lora_names", None) or []):
                # the webui skips a name it has applied already: take it off first, so that an adapter trained
                # again since its last Apply is read from disk anew
                add_lora_to_model([])
            add_lora_to_model([adapter])
        except Exception as e:  # the webui's own code: its error in a line, not the tab's bare "Error"
            raise UserError(f"the webui could not apply {adapter}: {type(e).__name__}: {e}") from e
        return f"Applied {adapter} to {shared.model_name}.{warning}"

    def in_use(self) -> tuple[str, list[str]]:
        shared = self._loaded()
        return (str(shared.model_name), applied_loras() or []) if shared is not None else ("", [])

    def reply(self, prompt: str, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, temperature: float = 0.0) -> str:
        _wake()
        shared = _shared()
        # the webui's own lock around a generation: a chat reply running now, and its idle timer's unload
        # (--idle_timeout), wait for the quick test, and it for them
        lock = getattr(shared, "generation_lock", None) if shared is not None else None
        with lock if lock is not None else contextlib.nullcontext():
            problem = self.loader_problem()  # asked once the lock is held: the model may have gone meanwhile
            if problem:  # not to be shown as the character's reply
                raise UserError(problem)
            adapter, applied = self.params.get("adapter"), applied_loras()
            if adapter and applied is not None and adapter not in applied:  # the base would answer as it
                raise UserError(f"{adapter} is not applied now (the webui's reload of a model it unloaded for being "
                                "idle, or its LoRA menu, took it off): click Apply adapter again")
            from .generation import generate_reply, sampling

            reply, _stopped = generate_reply(shared.model, shared.tokenizer, prompt, max_new_tokens=max_new_tokens,
                                             **sampling(temperature))
            models = sys.modules.get("modules.models")
            if models is not None and hasattr(models, "last_generation_time"):  # the idle timer counts it
                models.last_generation_time = time.time()
        return reply


def _wake() -> None:
    """Load the model again if the webui unloaded it for being idle (--idle-timeout keeps its name), as the
    webui does before each generation of its own (the tab's Apply and quick test said "load a model"). The
    webui applies no adapter to it then."""
    wake = getattr(sys.modules.get("modules.models"), "load_model_if_idle_unloaded", None)
    if callable(wake):
        wake()


def applied_loras() -> list[str] | None:
    """The LoRAs the webui has applied now, or None outside the webui."""
    shared = _shared()
    names = getattr(shared, "lora_names", None) if shared is not None else None
    return list(names) if isinstance(names, (list, tuple)) else None


def loaded_merge_record() -> dict:
    """The record merge_lora.py wrote into the loaded model's folder (its characters and instruction line);
    {} for any other model, or outside the webui."""
    shared = _shared()
    name = str(getattr(shared, "model_name", None) or "None") if shared is not None else "None"
    model_dir = getattr(getattr(shared, "args", None), "model_dir", None)
    if name == "None" or not model_dir:
        return {}
    from .merging import read_merge_record

    return read_merge_record(Path(model_dir) / name)


def _shared():
    """The webui's modules.shared, or None outside the webui (never imports it: only reads it if loaded)."""
    return sys.modules.get("modules.shared")
