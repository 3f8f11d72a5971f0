"""Base model + adapter, loaded once, and reply generation that stops at the newline.

The chat script, evaluation and the tab's Use/Evaluate sections all generate through here:

    loaded = load_for_generation("tiny-llama", "bob")           # resolves folders, checks the adapter's base
    reply, stopped = generate_reply(loaded.model, loaded.tokenizer, "Alice: Hi!\\nBob:")
    with adapter_disabled(loaded.model) as base:                # the same weights without the adapter
        base_reply, _ = generate_reply(base, loaded.tokenizer, "Alice: Hi!\\nBob:")

Prompts are built by prompt.py (chat_prompt for a live chat, record_segments/record_examples for held-out
samples) and tokenised by encoding.piece_ids exactly as training tokenised them. Generation stops as soon as
the generated text of a row contains "\\n", whichever token carries it (a bare newline token, a byte
token, or a token that merges the newline with other characters); the reply is the text before it.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from . import prompt as prompt_mod
from .errors import UserError, brief
from .paths import CHECKPOINT_PREFIX, CHECKPOINT_STATE, resolve_adapter, resolve_dirs, resolve_model, unreadable

DEFAULT_MAX_NEW_TOKENS = 64


def add_loading_arguments(p) -> None:
    """The flags that say where and how the base model and adapter load (chat.py and evaluate_lora.py)."""
    q = p.add_mutually_exclusive_group()
    q.add_argument("--load_in_4bit", action="store_true",
                   help="load the base model in 4 bits (bitsandbytes; default: as the adapter was trained)")
    q.add_argument("--load_in_8bit", action="store_true",
                   help="load the base model in 8 bits (bitsandbytes; default: as the adapter was trained)")
    q.add_argument("--unquantised", "--unquantized", action="store_true",
                   help="load the base model whole, even for an adapter trained on a 4-bit or 8-bit base")
    p.add_argument("--model_dir", default=None, help="models directory (default: user_data/models or models)")
    p.add_argument("--lora_dir", default=None, help="adapters directory (default: user_data/loras or loras)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 or mps (default: the best available)")


@dataclass
class Loaded:
    """A base model (with its adapter applied when one was given) ready to generate."""

    model: Any
    tokenizer: Any
    model_path: Path
    adapter_path: Path | None = None
    bits: tuple[bool, bool] = (False, False)  # (4-bit, 8-bit): how the base is held, as asked or as stored
    as_trained: bool = False  # bits taken from the adapter's training (none asked for)

    @property
    def model_name(self) -> str:
        return self.model_path.name

    @property
    def adapter_name(self) -> str | None:
        return self.adapter_path.name if self.adapter_path else None


# --------------------------------------------------------------------------------------------- adapters


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: unreadable ({e})") from None
    if not isinstance(data, dict):  # damaged or replaced: not to be read as "no settings recorded"
        raise UserError(f"{path}: unreadable (a JSON {type(data).__name__}, not the object of settings it should hold)")
    return data


def read_training_parameters(adapter_path: str | os.PathLike, prompt: bool = False) -> dict:
    """The adapter's training_parameters.json ({} when it has none, e.g. an adapter trained elsewhere).

    A checkpoint (`checkpoint-N` of a run that is training or was stopped) has none: the settings its
    trainer_state.json records stand in (the characters, the base model's fingerprint), less the held-out
    file, which only the finished adapter holds. `prompt`: for building its prompts (chat, merge, the tab),
    the facts an older version did not record filled in from its data (`_with_learnt`)."""
    path = Path(adapter_path)
    params = _read_json(path / "training_parameters.json")
    if not params and path.name.startswith(CHECKPOINT_PREFIX):
        settings = _read_json(path / CHECKPOINT_STATE).get("settings")
        if isinstance(settings, dict):
            params = dict(settings, heldout_file=None, checkpoint=True)
    return _with_learnt(params, path) if prompt else params


# What training records of the prompts an adapter learnt (training.py). This project's first versions
# recorded none of them: chat then cued "Character:" and left out an alpaca adapter's instruction line.
PROMPT_FACTS = ("characters", "instruction", "context_turns")
_learnt_cache: dict[tuple, dict] = {}  # (file, size, mtime, name) -> facts: the tab asks at each message


def _with_learnt(params: dict, adapter_path: Path) -> dict:
    """`params` with the prompt facts it lacks worked out from the adapter's training data as training does
    now: the dataset it names while that is still what it trained on, else its held-out split beside it.
    Unchanged for an adapter trained elsewhere (no settings), one that records them all, or whose data is
    gone."""
    if not params or all(k in params for k in PROMPT_FACTS):
        return params
    from .fileio import file_sha256, load_records

    name = params.get("name") or None
    sha = params.get("dataset_sha256")
    heldout = adapter_path / str(params.get("heldout_file") or "heldout.json")
    for data in (params.get("dataset"), heldout):
        if not data:
            continue
        try:
            stat = Path(str(data)).stat()
        except (OSError, ValueError):
            continue
        key = (str(data), stat.st_size, stat.st_mtime_ns, name)
        if data != heldout:  # whether it is this adapter's data depends on the adapter: its hash, its split
            try:
                split = heldout.stat().st_mtime_ns
            except OSError:
                split = None
            key += (sha, str(heldout), split)
        if key not in _learnt_cache:
            _learnt_cache[key] = None  # (a dataset not the adapter's, or unreadable: not read again each time)
            try:
                # the dataset prepared again since (processed_dataset.json, another character's) is not its data:
                # told by the hash it recorded (before the file is parsed), else by its held-out split
                if data != heldout and sha and file_sha256(data) != sha:
                    continue
                records = load_records(data)
                if data != heldout and not sha and not _holds_split(records, heldout):
                    continue
                segments = prompt_mod.validate_records(records, str(data), name)
            except (UserError, ValueError, OSError):
                continue
            _learnt_cache[key] = {"characters": prompt_mod.record_characters(segments),
                                  "instruction": prompt_mod.instruction_template(records, name),
                                  "context_turns": prompt_mod.context_turns(records, name)}
        if _learnt_cache[key] is not None:
            return {**_learnt_cache[key], **params}
    return params


def _holds_split(records, heldout: Path) -> bool:
    """Whether a dataset holds all of an adapter's held-out samples (the first versions recorded no hash of
    the file they trained on); yes when the adapter kept no split to tell it by."""
    from .fileio import load_records

    if not heldout.is_file():
        return True
    key = lambda r: json.dumps(r, sort_keys=True, ensure_ascii=False)  # noqa: E731
    kept = {key(r) for r in records}
    return all(key(r) in kept for r in load_records(heldout))


def trained_bits(params: dict) -> tuple[bool, bool] | None:
    """(load_in_4bit, load_in_8bit) an adapter's training_parameters say it was trained with; None when
    they do not say (an adapter trained elsewhere)."""
    if not ({"load_in_4bit", "load_in_8bit"} & params.keys()):
        return None
    return bool(params.get("load_in_4bit")), bool(params.get("load_in_8bit"))


def quantization_note(adapter_path: str | os.PathLike, load_in_4bit: bool, load_in_8bit: bool,
                      model_path: str | os.PathLike | None = None, as_trained: bool = False) -> str | None:
    """A note when the base is loaded otherwise than the adapter was trained on it (4-bit, 8-bit or
    unquantised): it needs other memory, and the adapter's replies and scores may differ slightly. None
    for a base stored quantised (`model_path`): it loads as stored, as it did in training. `as_trained`:
    the load was to follow the adapter (then a missing bitsandbytes is why it did not)."""
    from .modeling import has_bitsandbytes, stored_bits

    recorded = trained_bits(read_training_parameters(adapter_path))
    if recorded is None or (model_path and stored_bits(model_path)):
        return None  # trained elsewhere: not known

    def bits(four, eight):
        return "4-bit" if four else "8-bit" if eight else "unquantised"

    trained, loaded = bits(*recorded), bits(load_in_4bit, load_in_8bit)
    if trained == loaded:
        return None
    flag = {"4-bit": " (--load_in_4bit)", "8-bit": " (--load_in_8bit)"}.get(trained, "")
    size = {"4-bit": 0, "8-bit": 1, "unquantised": 2}
    memory = "it takes more memory, and " if size[loaded] > size[trained] else ""
    article = "an" if trained == "unquantised" else "a"
    why = (" (bitsandbytes is not installed: pip install bitsandbytes)"
           if as_trained and loaded == "unquantised" and not has_bitsandbytes() else "")
    return (f"{Path(adapter_path).name} was trained on {article} {trained} base{flag} and the base is loaded {loaded} "
            f"here{why}: {memory}its replies may differ slightly from what it learnt")


def as_trained_note(loaded: Loaded) -> str | None:
    """Said where the base was quantised to follow the adapter's training, no flag asking for it."""
    if not loaded.as_trained:
        return None
    return (f"the base was loaded in {4 if loaded.bits[0] else 8} bits, as {loaded.adapter_name} was trained "
            "(--unquantised loads it whole)")


def read_adapter_config(adapter_path: str | os.PathLike) -> dict:
    return _read_json(Path(adapter_path) / "adapter_config.json")


def recorded_base(adapter_path: str | os.PathLike) -> str | None:
    """The base model an adapter says it was trained on (training_parameters, else adapter_config)."""
    params = read_training_parameters(adapter_path)
    cfg = read_adapter_config(adapter_path)
    for value in (params.get("base_model"), params.get("base_model_path"), cfg.get("base_model_name_or_path")):
        if value:
            return str(value)
    return None


def check_adapter_base(adapter_path: str | os.PathLike, model_path: str | os.PathLike) -> None:
    """Refuse, in one line and before any weights load, an adapter trained on a different base model.

    Compares the base fingerprint (type, width, depth, vocabulary) saved in training_parameters.json with
    the model's config. An adapter with no saved fingerprint (trained by another tool) is compared with the
    base folder named in its adapter_config.json when that folder exists here; otherwise PEFT's own shape
    check at load time is turned into the same kind of message (see `load_for_generation`).
    """
    from .merging import already_merged
    from .modeling import base_fingerprint, fingerprint_mismatch

    adapter_path, model_path = Path(adapter_path), Path(model_path)
    merged_on = already_merged(model_path, adapter_path)
    if merged_on:  # applied twice, its changes doubled: the replies were noise
        raise UserError(f"model {model_path.name!r} already holds adapter {adapter_path.name!r} (merge_lora.py "
                        f"merged it into {merged_on}): use {model_path.name!r} alone, or the adapter with "
                        f"{merged_on!r}")
    saved = read_training_parameters(adapter_path).get("base_fingerprint")
    if not saved:
        base = read_adapter_config(adapter_path).get("base_model_name_or_path")
        base_dir = Path(base) if base else None
        if base_dir is not None and (base_dir / "config.json").is_file():
            saved = base_fingerprint(base_dir)
    if not isinstance(saved, dict):
        return
    diffs = fingerprint_mismatch(saved, base_fingerprint(model_path))
    if diffs:
        raise UserError(_other_base_message(adapter_path, model_path, "; ".join(diffs)))


def other_weights_note(adapter_path: str | os.PathLike, model_path: str | os.PathLike) -> str | None:
    """A base of the adapter's shape (it loads) but with other weights than the one it was trained on (an
    Instruct model for its base, another fine-tune): said, since its changes were learnt on the other's
    outputs. None when they are the same, or the adapter records no weights (trained elsewhere)."""
    from .modeling import stored_quantization
    from .paths import weights_sample_sha256

    adapter_path, model_path = Path(adapter_path), Path(model_path)
    params = read_training_parameters(adapter_path)
    recorded = params.get("base_weights_sha256")
    if not recorded:
        return None
    base = recorded_base(adapter_path)
    trained_quantised = params.get("base_stored_quantization")
    trained_path = params.get("base_model_path")
    if "base_stored_quantization" not in params and trained_path and (Path(trained_path) / "config.json").is_file():
        trained_quantised = stored_quantization(trained_path)  # (an adapter from before that was recorded)
    trained_on = f"on {Path(base).name!r}" if base else "on another base model"
    if trained_quantised or stored_quantization(model_path):
        # a `-bnb-4bit` upload and its full model have other files but are one base: only their names tell
        if base and _base_name(base) == _base_name(model_path.name):
            return None
        return (f"adapter {adapter_path.name!r} was trained {trained_on}; model {model_path.name!r} has the same "
                "shape, but by its name is neither that base nor a quantised copy of it: if it is another model, "
                "the adapter loads, but its replies may be off (it learnt its changes on the other model)")
    now = weights_sample_sha256(model_path)
    if now is None or now == recorded:
        return None
    return (f"adapter {adapter_path.name!r} was trained {trained_on}; model {model_path.name!r} has the same shape "
            "but other weights: it loads, but its replies may be off (it learnt its changes on the other model)")


# what an upload's name adds for its quantised copy: `Llama-3.2-3B-bnb-4bit`, `...-unsloth-bnb-4bit`, `...-GPTQ`
_QUANTISED_SUFFIX = re.compile(r"[-_.](?:unsloth[-_.])?(?:bnb[-_.]?)?[48][-_.]?bit(?:[-_.]bnb)?$|[-_.](?:gptq|awq|"
                               r"int[48]|bnb|nf4)(?:[-_.][\w.-]*)?$", re.IGNORECASE)


def _base_name(name: str) -> str:
    """A model's name without its quantised copy's suffix, its owner (the webui's downloader names a folder
    `owner_model`) and `-hf`, for telling a base from its upload."""
    name = Path(name).name.casefold()
    name = name.split("_", 1)[1] if "_" in name and name.split("_", 1)[1] else name
    while (shorter := _QUANTISED_SUFFIX.sub("", name)) != name:
        name = shorter
    return name.removesuffix("-hf")


def _other_base_message(adapter_path: Path, model_path: Path, detail: str) -> str:
    base = recorded_base(adapter_path)
    trained_on = f"trained on {Path(base).name!r}" if base else "trained on another base model"
    return (
        f"adapter {adapter_path.name!r} was {trained_on} and does not fit model {model_path.name!r} ({detail}); "
        f"load it with the base model it was trained on"
    )


def load_for_generation(
    model: str | os.PathLike,
    lora: str | os.PathLike | None = None,
    *,
    model_dir: str | os.PathLike | None = None,
    lora_dir: str | os.PathLike | None = None,
    load_in_4bit: bool = False,
    load_in_8bit: bool = False,
    as_trained: bool = False,
    device=None,
) -> Loaded:
    """Resolve and check the model and adapter, then load them once, 4-/8-bit as asked.

    `as_trained` with neither asked: the base is quantised as the adapter's training was (a QLoRA adapter
    from an 8 GB card would not fit beside its base loaded whole), where bitsandbytes is installed.
    `model` and `lora` are names under the webui's models/loras folders (user_data/ layout or the old one)
    or paths. Errors (UserError, one line): unknown model (lists the models found), unknown adapter (lists
    the adapters found), adapter trained on another base (says what differs), missing bitsandbytes.
    """
    dirs = resolve_dirs(model_dir=model_dir, lora_dir=lora_dir)
    model_path = resolve_model(model, dirs.models)
    adapter_path = resolve_adapter(lora, dirs.loras) if lora else None
    if adapter_path is not None:
        check_adapter_base(adapter_path, model_path)

    from .modeling import has_bitsandbytes, load_base, stored_bits

    stored = stored_bits(model_path)
    if stored is not None:  # loaded as stored (a -bnb-4bit upload): a quantisation asked on top does not apply
        load_in_4bit = load_in_8bit = as_trained = False
    elif as_trained and adapter_path is not None and not (load_in_4bit or load_in_8bit):
        recorded = trained_bits(read_training_parameters(adapter_path))
        # without bitsandbytes it loads whole, and quantization_note says so
        as_trained = bool(recorded and any(recorded)) and has_bitsandbytes()
        if as_trained:
            load_in_4bit, load_in_8bit = recorded
    else:
        as_trained = False
    base, tokenizer = load_base(model_path, load_in_4bit=load_in_4bit, load_in_8bit=load_in_8bit, device=device)
    result = base
    if adapter_path is not None:
        result = apply_adapter(base, adapter_path, model_path)
    result.eval()
    return Loaded(result, tokenizer, model_path, adapter_path, stored or (bool(load_in_4bit), bool(load_in_8bit)),
                  as_trained)


def apply_adapter(base, adapter_path: str | os.PathLike, model_path: str | os.PathLike | None = None):
    """Wrap a loaded base model with a saved PEFT adapter (inference only); shape errors become one line."""
    from peft import PeftModel

    adapter_path = Path(adapter_path)
    from .modeling import damaged_file_types, out_of_memory

    weights = next((adapter_path / w for w in ("adapter_model.safetensors", "adapter_model.bin")
                    if (adapter_path / w).is_file()), None)
    if weights is None:
        # else PEFT looks for it on the model hub and says the folder is no "repo id"
        raise UserError(f"adapter folder {adapter_path} has no adapter_model.safetensors (its weights): copy the "
                        "file back, or train it again")
    if not read_adapter_config(adapter_path):  # (a damaged one is named there)
        raise UserError(f"adapter folder {adapter_path} has no adapter_config.json (its settings), or an empty one: "
                        "copy the file back, or train it again")
    problem = unreadable(weights)
    if problem:
        raise UserError(problem)
    try:
        return PeftModel.from_pretrained(base, str(adapter_path), is_trainable=False)
    except damaged_file_types() as e:
        raise UserError(f"could not read the adapter's weights, {weights} (damaged or incomplete?): {brief(e)}") from None
    except (RuntimeError, MemoryError) as e:
        if out_of_memory(e):  # the base fitted, its adapter did not
            raise UserError(f"out of memory applying the adapter {adapter_path.name} to the model: try "
                            "--load_in_4bit (or --load_in_8bit), or a smaller model") from None
        if "size mismatch" not in str(e):
            raise
        first = next((line.strip() for line in str(e).splitlines() if "size mismatch" in line), "shapes differ")
        model_name = Path(model_path) if model_path else Path(getattr(base, "name_or_path", "") or "model")
        raise UserError(_other_base_message(adapter_path, model_name, brief(first, 200))) from None
    except ValueError as e:
        if "Target modules" in str(e) or "target_modules" in str(e):
            raise UserError(_other_base_message(adapter_path, Path(model_path or "model"), brief(e))) from None
        raise


def is_peft(model) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


def is_prompt_learning(model) -> bool:
    """A PEFT prompt-tuning (virtual tokens) model, as opposed to LoRA."""
    if not is_peft(model):
        return False
    return bool(getattr(model.peft_config[model.active_adapter], "is_prompt_learning", False))


def virtual_tokens(model) -> int:
    """The positions a prompt-tuning adapter's soft prompt takes in front of every prompt (0 for others)."""
    if not is_prompt_learning(model):
        return 0
    n = getattr(model.peft_config[model.active_adapter], "num_virtual_tokens", 0)
    return n if isinstance(n, int) else 0


@contextlib.contextmanager
def adapter_disabled(model) -> Iterator[Any]:
    """The base model without its adapter, for comparisons, with no second copy of the weights.

    Yields the model to call: for LoRA the same PeftModel with its adapter layers switched off; for prompt
    tuning the underlying base model (the virtual tokens are simply not added); a plain model as it is.
    """
    if not is_peft(model):
        yield model
        return
    if is_prompt_learning(model):
        yield model.get_base_model()
        return
    with model.disable_adapter():
        yield model


# ------------------------------------------------------------------------------------------- generation


def model_device(model):
    """Where a model's inputs go: its input embeddings' device (a model spread over GPUs and the CPU by
    device_map="auto", as the webui loads big ones, may have other parameters first), else its first
    parameter's."""
    import torch

    try:
        embeddings = model.get_input_embeddings()
    except (AttributeError, NotImplementedError):
        embeddings = None
    weight = getattr(embeddings, "weight", None)
    if weight is not None and weight.device.type != "meta":
        return weight.device
    try:
        return next(p.device for p in model.parameters() if p.device.type != "meta")
    except StopIteration:
        return torch.device("cpu")


def prompt_ids(tokenizer, prompt: str | Sequence[str], max_tokens: int | None = None) -> list[int]:
    """Token ids of a prompt, exactly as training tokenised the context before a completion.

    `prompt` is one text, or the consecutive pieces training saw (a multi-turn sample's context and
    earlier completions, each tokenised on its own). Longer than `max_tokens`: the oldest lines are cut,
    whole, as training cuts long samples (the tokenizer's special prefix, e.g. BOS, is kept; a last line
    longer than the room is cut mid-line, since something must go). A chat prompt's instruction
    (prompt.ChatPrompt.pinned) is kept too, as training keeps it, while the dialogue after it leaves room.
    """
    from .encoding import _line_start, _next_line_start, _pinned, piece_ids

    pieces = [prompt] if isinstance(prompt, str) else list(prompt)
    prefix, ids = piece_ids(tokenizer, pieces)
    body = [t for piece in ids for t in piece]
    if max_tokens is not None and len(prefix) + len(body) > max_tokens:
        room = max(max_tokens - len(prefix), 1)
        # the instruction stays when the last line (the cue) fits after it whole, as training keeps it
        cue = len(body) - _line_start(tokenizer, body, 0, len(body))
        head = _pinned(tokenizer, getattr(prompt, "pinned", ""), body, room - cue)
        start = len(body) - (room - head)
        whole = _next_line_start(tokenizer, body, start, len(body)) if start > head else start
        body = body[:head] + body[whole if whole < len(body) else start:]
    return list(prefix) + body


class NewlineStop:
    """Stopping criterion: a row is finished once its generated text contains "\\n".

    Decodes each unfinished row's new tokens, so it works whatever token holds the newline (a BPE merges it
    with what is around it). A row that has stopped is not decoded again (`stopped`).
    """

    def __init__(self, tokenizer, prompt_len: int, batch_size: int):
        self.tokenizer = tokenizer
        self.prompt_len = prompt_len
        self.stopped = [False] * batch_size

    def __call__(self, input_ids, scores=None, **kwargs):
        import torch

        for row in range(input_ids.shape[0]):
            if not self.stopped[row]:
                text = self.tokenizer.decode(input_ids[row, self.prompt_len :], skip_special_tokens=True)
                self.stopped[row] = prompt_mod.STOP in text
        return torch.tensor(self.stopped, dtype=torch.bool, device=input_ids.device)


def _criteria_class():
    """NewlineStop as transformers' StoppingCriteria, made here so that importing this module stays light."""
    from transformers import StoppingCriteria

    class _NewlineCriteria(NewlineStop, StoppingCriteria):
        pass

    return _NewlineCriteria


def _generation_config(model, tokenizer, max_new_tokens, greedy, temperature, top_p, top_k, repetition_penalty):
    import copy

    from transformers import GenerationConfig

    base = getattr(model, "generation_config", None)
    gen = copy.deepcopy(base) if base is not None else GenerationConfig()
    gen.max_new_tokens = int(max_new_tokens)
    gen.max_length = None
    gen.min_new_tokens = None
    gen.min_length = 0
    gen.num_beams = 1
    gen.do_sample = not greedy
    if greedy:
        gen.temperature, gen.top_p, gen.top_k = None, None, None
    else:
        gen.temperature, gen.top_p, gen.top_k = float(temperature), float(top_p), top_k
    gen.repetition_penalty = float(repetition_penalty) if repetition_penalty else None
    if gen.pad_token_id is None:
        gen.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if gen.eos_token_id is None and tokenizer.eos_token_id is not None:
        gen.eos_token_id = tokenizer.eos_token_id
    return gen


def generate_replies(
    model,
    tokenizer,
    prompts: Sequence[str | Sequence[str]],
    *,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    greedy: bool = True,
    temperature: float = 0.7,
    top_p: float = 0.9,
    top_k: int | None = None,
    repetition_penalty: float | None = None,
    batch_size: int = 8,
    max_prompt_tokens: int | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> list[tuple[str, bool]]:
    """(reply, stopped_at_newline) for each prompt; prompts are batched with left padding.

    A prompt is a text (e.g. prompt.chat_prompt), the pieces of a held-out sample's context (see
    `prompt_ids`), or its token ids already (a list of ints: evaluation's, cut as training cut it). The
    reply is the generated text up to the first newline, trimmed; `stopped_at_newline` is False when
    `max_new_tokens` (or the end-of-sequence token) came first. `on_batch(done, total)` reports progress
    after each batch.
    """
    import torch

    if max_new_tokens < 1:
        raise UserError("--max_new_tokens must be at least 1")
    if max_prompt_tokens is None:
        from .modeling import context_limit

        limit = context_limit(model)  # a multimodal model's from its text config
        limit = limit - virtual_tokens(model) if limit else limit  # a soft prompt takes its positions first
        if isinstance(limit, int) and limit > max_new_tokens:
            max_prompt_tokens = limit - max_new_tokens
    if is_prompt_learning(model):
        # PEFT drops position_ids for virtual-token models, so left padding would shift positions: one at a time
        batch_size = 1
    gen = _generation_config(model, tokenizer, max_new_tokens, greedy, temperature, top_p, top_k, repetition_penalty)
    pad_id = gen.pad_token_id if gen.pad_token_id is not None else 0
    device = model_device(model)
    criteria_cls = _criteria_class()
    from transformers import StoppingCriteriaList

    results: list[tuple[str, bool]] = []
    encoded = [list(p) if _is_ids(p) else prompt_ids(tokenizer, p, max_prompt_tokens) for p in prompts]
    for start in range(0, len(encoded), max(1, batch_size)):
        batch = encoded[start : start + max(1, batch_size)]
        width = max(len(ids) for ids in batch)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, ids in enumerate(batch):  # left padding: every prompt ends where generation starts
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention[row, width - len(ids) :] = 1
        stop = criteria_cls(tokenizer, width, len(batch))
        with torch.no_grad():
            out = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention.to(device),
                generation_config=gen,
                stopping_criteria=StoppingCriteriaList([stop]),
            )
        for row in range(len(batch)):
            text = tokenizer.decode(out[row, width:], skip_special_tokens=True)
            results.append((prompt_mod.extract_reply(text), prompt_mod.STOP in text))
        if on_batch is not None:
            on_batch(len(results), len(encoded))
    return results


DEFAULT_TEMPERATURE = 0.7  # chat's (chat.py, the app's chat): a little variety; 0 always takes the likeliest


def sampling(temperature: float) -> dict:
    """generate_reply's keywords for a chat temperature: 0 is greedy (the likeliest token each time)."""
    temperature = float(temperature)
    return {"greedy": True} if temperature <= 0 else {"greedy": False, "temperature": temperature}


def _is_ids(prompt) -> bool:
    return not isinstance(prompt, str) and len(prompt) > 0 and all(isinstance(t, int) for t in prompt)


def generate_reply(
    model,
    tokenizer,
    prompt: str | Sequence[str],
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    greedy: bool = True,
    **kwargs,
) -> tuple[str, bool]:
    """(reply, stopped_at_newline) for one prompt; see `generate_replies` for the options."""
    return generate_replies(model, tokenizer, [prompt], max_new_tokens=max_new_tokens, greedy=greedy, **kwargs)[0]


# ------------------------------------------------------------------------------------------------ chat


class Problem(str):
    """A ChatSession message about a mistake in the input: said even where other messages are not
    (piped chat keeps stderr for such things)."""


class ChatSession:
    """A terminal conversation with one or more characters, kept in the training format.

    `names` are the characters the model speaks as (an adapter trained on several speakers knows each by
    its cue); the first answers by default. A line is handled by `handle(line, reply_fn)`:

    - plain text: the user says it, then the current character replies;
    - `@Carol text`: the user says "text" and Carol replies (Carol stays the current character afterwards
      only with `/as`); `@Carol` alone lets Carol speak next without a user line (characters can answer
      each other: `@Bob`, then `@Carol`);
    - `/as Carol`: Carol answers from now on; `/reset`: forget the conversation; `/help`; `/quit` (or EOF).

    The prompt for each reply is prompt.chat_prompt(history, name, rounds): the last `rounds` turns as
    `Speaker: text` lines, then the cue `Name:`, exactly as the adapter was trained.
    """

    def __init__(self, names: Sequence[str], user: str = "You", rounds: int = 5, instruction: str | None = None,
                 user_named: bool = True):
        names = [prompt_mod.one_line(n) for n in names if prompt_mod.one_line(n)]
        if not names:
            raise UserError("--name is empty: give the character to speak as, e.g. --name Bob (or Bob,Carol)")
        if rounds < 1:  # 0 would leave out what the user just said
            raise UserError(f"--rounds must be 1 or more: the turns the character sees, yours included (got {rounds})")
        self.names = names
        self.user = prompt_mod.one_line(user) or "You"
        prompt_mod.check_chat_names(names, self.user)
        self.rounds = rounds
        self.instruction = instruction  # an alpaca-trained adapter's line before the dialogue (prompt.chat_prompt)
        self.bare = None if user_named else self.user  # the user's lines unnamed, as such an adapter learnt them
        self.current = names[0]
        self.history: list[tuple[str | None, str]] = []
        self.done = False

    def find_name(self, name: str) -> str | None:
        wanted = prompt_mod.name_key(name)
        return next((n for n in self.names if prompt_mod.name_key(n) == wanted), None)

    def addressed(self, text: str) -> tuple[str, str] | None:
        """(character, the rest) for `@Name rest`: the longest character name the text starts with, in any
        case, spaces in it too (`@QUEEN ELIZABETH hi`), followed by the end, a space, `,` or `:`."""
        for name in sorted(self.names, key=len, reverse=True):
            n = name.casefold()
            # the text's own length for the name (casefolding may change it: `Straße` is `strasse`)
            end = next((i for i in range(len(text) + 1) if len(text[:i].casefold()) >= len(n)), None)
            if end is not None and text[:end].casefold() == n and (end == len(text) or text[end] in " ,:"):
                return name, text[end:].lstrip(",:").strip()
        return None

    def help_text(self) -> str:
        others = f" ({', '.join(self.names)})" if len(self.names) > 1 else ""
        return (
            f"Type a line as {self.user}; {self.current} answers. @Name text: address a character{others}; "
            "@Name alone: let them speak; /as Name: switch who answers; /reset: start over; /quit: leave."
        )

    def handle(self, line: str, reply_fn: Callable[[str], tuple[str, bool]]) -> tuple[list[str], list[str]]:
        """(reply lines "Name: reply", info messages) for one input line; sets `done` on /quit."""
        text = prompt_mod.replace_broken(line).strip()  # piped bytes that were not UTF-8
        if not text:
            return [], []
        if text.startswith("/"):
            cmd, _, arg = text.partition(" ")
            cmd = cmd.lower()
            if cmd in ("/quit", "/exit"):
                self.done = True
                return [], []
            if cmd == "/reset":
                self.history.clear()
                return [], ["conversation forgotten"]
            if cmd == "/help":
                return [], [self.help_text()]
            if cmd == "/as":
                if not arg.strip():
                    return [], [Problem(f"/as needs a name: /as NAME; characters: {', '.join(self.names)}")]
                found = self.find_name(arg)
                if not found:
                    return [], [Problem(f"unknown character {arg.strip()!r}; characters: {', '.join(self.names)}")]
                self.current = found
                return [], [f"{found} answers from now on"]
            # any other "/..." is ordinary text (a line may well start with a slash)
        speaker = self.current
        if text.startswith("@"):
            found = self.addressed(text[1:])
            if found:  # else ordinary text (`@everyone ...`)
                speaker, text = found
        history = self.history + ([(self.user, prompt_mod.one_line(text))] if text else [])
        got = reply_fn(prompt_mod.chat_prompt(history, speaker, self.rounds, self.instruction, self.bare))
        if not (isinstance(got, tuple) and len(got) == 2 and isinstance(got[0], str)):
            raise TypeError(f"reply_fn must return (reply text, whether it stopped at the newline), as "
                            f"generate_reply does; it returned {type(got).__name__}")
        self.history = history  # only now: a reply function that failed leaves the conversation as it was
        reply = prompt_mod.extract_reply(got[0])  # one line, as generate_reply gives it (a reply_fn of one's own)
        self.history.append((speaker, reply))
        return [f"{speaker}: {reply}".rstrip()], []
