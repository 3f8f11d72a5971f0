"""Where the tab runs: the folders it uses and the model it chats with.

`ui.build_tab(host)` asks its host for folders, for the memory a loaded model holds, to apply an adapter
and for a test reply. `StandaloneHost` (here) serves `python -m extensions.dialogue_lora`: it loads its own
base model + adapter through generation.py. `webui.WebuiHost` uses the model loaded in the webui.
"""
from __future__ import annotations

import threading

from .errors import UserError
from .generation import DEFAULT_MAX_NEW_TOKENS
from .modeling import free_memory
from .paths import Dirs, resolve_dirs


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GB"


def bits_words(load_in_4bit: bool = False, load_in_8bit: bool = False) -> str:
    """" (the base in 4 bits)" for a base loaded quantised; "" for one loaded whole."""
    return " (the base in 4 bits)" if load_in_4bit else " (the base in 8 bits)" if load_in_8bit else ""


class Host:
    """The tab's view of where it runs. Subclasses say how models are loaded and used."""

    own_model = True  # the Use section loads its own base model (standalone) rather than the webui's

    def __init__(self, params: dict | None = None, dirs: Dirs | None = None):
        self.params = params if params is not None else {}
        self._dirs = dirs

    def dirs(self) -> Dirs:
        return self._dirs or resolve_dirs()

    def memory_status(self) -> str:
        return ""

    def unload_model(self) -> str:
        return "No model is loaded."

    def use_adapter(self, model: str | None, adapter: str) -> str:
        """Apply `adapter` (a host that loads its own model takes `load_in_4bit`/`load_in_8bit` too)."""
        raise NotImplementedError

    def in_use(self) -> tuple[str, list[str]]:
        """(base model, adapters) in use now: what the Use section shows again after a page reload."""
        return "", []

    def in_use_settled(self) -> tuple[str, list[str]]:
        """`in_use` once a Load under way has ended (a chat message sent meanwhile is answered by what it loads)."""
        return self.in_use()

    def in_use_bits(self) -> tuple[bool, bool]:
        """(load_in_4bit, load_in_8bit) the model in use was loaded with by this host (the webui's: its own)."""
        return False, False

    def reply(self, prompt: str, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, temperature: float = 0.0) -> str:
        """The model's one-line reply to `prompt`, sampled at `temperature` (0: greedy)."""
        raise NotImplementedError


class StandaloneHost(Host):
    """The standalone app: folders as the CLI resolves them; one base model (+ adapter) loaded for chat."""

    own_model = True

    def __init__(self, params: dict | None = None, dirs: Dirs | None = None):
        super().__init__(params, dirs)
        self._lock = threading.Lock()
        self._loaded = None  # generation.Loaded
        self._in_use: tuple[str, list[str]] = ("", [])  # (model, adapters) of _loaded
        self._bits = (False, False)  # (load_in_4bit, load_in_8bit) of _loaded

    @property
    def loaded_name(self) -> str:
        """"MODEL + ADAPTER (the base in 4 bits)"; "" when nothing is loaded."""
        model, adapters = self._in_use
        return " + ".join([model, *adapters]) + bits_words(*self._bits) if model else ""

    def memory_status(self) -> str:
        if self._loaded is None:
            return "No model is loaded for chat: training has the memory to itself."
        return (
            f"**{self.loaded_name}** is loaded for chat. Training runs in its own process; "
            "unload the chat model first if memory is tight."
        )

    def unload_model(self) -> str:
        with self._lock:
            if self._loaded is None:
                return "No model is loaded."
            self._loaded = None
            name, self._in_use, self._bits = self.loaded_name, ("", []), (False, False)
        free_memory()
        return f"Unloaded {name}."

    def use_adapter(self, model: str | None, adapter: str | None, *, load_in_4bit: bool = False,
                    load_in_8bit: bool = False) -> str:
        if not model:
            raise UserError("pick a base model")
        from .generation import load_for_generation

        dirs = self.dirs()
        with self._lock:
            self._loaded = None  # free the previous model before loading the next
            self._in_use, self._bits = ("", []), (False, False)
            free_memory()
            failed = None
            try:
                self._loaded = load_for_generation(model, adapter or None, model_dir=dirs.models, lora_dir=dirs.loras,
                                                   load_in_4bit=load_in_4bit, load_in_8bit=load_in_8bit)
            except UserError as e:  # out of memory, loading the base or applying the adapter, among them
                failed = str(e)
            if failed is not None:
                # here, not in the except clause: the error's frames hold the half-loaded weights until it is
                # gone, and the GPU memory they leave cached would be kept from the next training run
                free_memory()
                raise UserError(failed)
            self._in_use = (model, [adapter] if adapter else [])
            self._bits = self._loaded.bits  # a model stored in 4 bits is, ticked or not
        return f"Loaded {self.loaded_name} for chat."

    def in_use(self) -> tuple[str, list[str]]:
        return self._in_use

    def in_use_settled(self) -> tuple[str, list[str]]:
        with self._lock:  # a Load holds it while it loads
            return self.in_use()

    def in_use_bits(self) -> tuple[bool, bool]:
        return self._bits

    def reply(self, prompt: str, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, temperature: float = 0.0) -> str:
        from .generation import generate_reply, sampling

        with self._lock:  # read under the lock: a Load or Unload under way may leave no model
            loaded = self._loaded
            if loaded is None:
                raise UserError("load a model (and adapter) first")
            reply, _stopped = generate_reply(loaded.model, loaded.tokenizer, prompt, max_new_tokens=max_new_tokens,
                                             **sampling(temperature))
        return reply
