"""Training a character adapter: `TrainConfig`, `check`, `train`.

    from extensions.dialogue_lora.training import TrainConfig, train
    result = train(TrainConfig(dataset_name="processed_dataset.json", model_name="my-model", lora_name="Bob"))

`check(cfg)` validates everything it can before a model loads (model folder, dataset, output folder,
bitsandbytes, target modules against the model's architecture) and reports all problems at once.
`train(cfg, on_progress, should_stop)` then:

1. splits the samples into train/held-out (reproducible from `seed`) and encodes them (encoding.py:
   loss only on completions, the trailing newline included; over-long context cut from the oldest end);
2. loads the base model (modeling.load_base: bf16/fp16/fp32, optional 4-bit/8-bit) and wraps it with a
   PEFT LoRA (or prompt-tuning) adapter;
3. runs a plain PyTorch loop: packed batches, no attention between their samples (batching.py), AdamW, linear
   warm-up then cosine decay, gradient clipping, gradient accumulation, DDP when started by torchrun or
   `accelerate launch` (only rank 0 writes anything);
4. reports progress as plain dicts, evaluates held-out loss/perplexity after every epoch, saves
   resumable checkpoints (`checkpoint-N`: adapter, optimizer, scheduler, RNG, position in the data),
   stops cleanly (with a checkpoint) when `should_stop()` says so;
5. writes the final folder atomically: adapter_config.json, adapter_model.safetensors,
   training_parameters.json, training_log.json, heldout.json, README.md.
"""
from __future__ import annotations

import contextlib
import datetime
import functools
import json
import math
import os
import random
import re
import shutil
import time
import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from . import batching, encoding, fused_lora, last_layer, modeling, paths, varlen
from . import prompt as prompt_mod
from .errors import UserError, brief, join_problems, quoted
from .fileio import (atomic_write_json, atomic_write_text, default_file_mode, file_sha256, free_bytes, held_lock,
                     load_records, missing_parents, nearest_existing, remove_empty, replace_folder, samples_sha256,
                     sync_folder, write_records)

METHODS = ("lora", "prompt_tuning")
# The settings only one method reads: the script refuses them for the other, the tab shows them for its own.
METHOD_SETTINGS = {"lora": ("lora_rank", "lora_alpha", "lora_dropout", "target_modules"),
                   "prompt_tuning": ("num_virtual_tokens",)}
GRADIENT_CHECKPOINTING = ("auto", "on", "off")
CHECKPOINT_PREFIX = paths.CHECKPOINT_PREFIX
HELDOUT_FILE = "heldout.json"
# The end-of-epoch checkpoint is skipped when the last one is younger than this: a run of many short
# epochs (the quick start's 60 one-step epochs) would otherwise write one per step. A stop always saves.
EPOCH_CHECKPOINT_MIN_S = 60.0
PARAMS_FILE = "training_parameters.json"
LOG_FILE = "training_log.json"
STATE_FILE = paths.CHECKPOINT_STATE
# What an adapter folder may hold (ours, the evaluation's, PEFT's and the webui Training tab's files):
# --overwrite replaces a folder of these, checkpoints and half-written checkpoints, and nothing else.
ADAPTER_FOLDER_FILES = frozenset({
    "adapter_config.json", "adapter_model.safetensors", "adapter_model.bin", "README.md", PARAMS_FILE, LOG_FILE,
    HELDOUT_FILE, "eval.json", "eval.md", "loss_curve.png", "training_prompt.json",
})
PROMPT_TUNING_INIT_TEXT = "Continue the dialogue in character, one line per reply:"
# Settings a resumed run must share with the run it continues (anything else may change).
RESUME_KEYS = (
    "method", "lora_rank", "lora_alpha", "lora_dropout", "target_modules", "num_virtual_tokens", "batch_size",
    "grad_accum", "cutoff_len", "val_ratio", "seed", "packing", "load_in_4bit", "load_in_8bit", "learning_rate",
    "dtype", "name", "samples_sha256", "samples_text_sha256", "base_fingerprint", "base_weights_sha256",
    "weight_decay", "warmup_ratio", "max_grad_norm",
    # the number of processes: it sets the steps of an epoch and which samples each step takes
    "world_size",
)


MAX_EPOCHS = 100_000
MAX_STEPS = 100_000_000


def _real(v) -> bool:
    """A number a setting can be compared with (a blank field in the tab arrives as None)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass
class TrainConfig:
    """Every setting of a training run; the CLI flag of each field is `--<field name>`."""

    dataset_name: str = "processed_dataset.json"
    """Samples (JSON array or JSONL, any of the four prepare_dataset formats): a path, or a file in the datasets folder."""
    model_name: str = "pygmalion-6b"
    """Base model: a folder in the models folder, or any path to a transformers model folder."""
    lora_name: str = "lora_test"
    """Name of the adapter folder written in the loras folder."""
    batch_size: int = 4
    """Samples per step on each process (packed together, never padded to cutoff_len)."""
    epochs: int = 10
    """Passes over the training samples."""
    cutoff_len: int = 256
    """Most tokens per sample; longer samples lose their oldest context (never the reply)."""
    lora_rank: int = 16
    """LoRA rank r (adapter size)."""
    learning_rate: float | None = None
    """Peak learning rate; default 3e-4 for LoRA, 3e-2 for prompt tuning."""
    lora_alpha: float | None = None
    """LoRA scaling alpha; default 2 x lora_rank (the adapter's scale alpha/r stays 2 whatever the rank)."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA input (0, as unsloth and LLaMA-Factory set it, also saves the random masks: about a fifth of a CPU step)."""
    target_modules: list[str] | None = None
    """Layer names the LoRA adapts (e.g. q_proj,v_proj); default every linear layer except the output head."""
    load_in_4bit: bool = False
    """QLoRA: load the base model in 4-bit nf4 with double quantisation (needs bitsandbytes)."""
    load_in_8bit: bool = False
    """Load the base model in 8-bit (needs bitsandbytes)."""
    method: str = "lora"
    """lora, or prompt_tuning (learns num_virtual_tokens soft prompt vectors, the model untouched)."""
    num_virtual_tokens: int = 20
    """Soft prompt length for --method prompt_tuning."""
    grad_accum: int = 1
    """Batches whose gradients are summed before each optimizer step."""
    val_ratio: float = 0.05
    """Share of samples held out for evaluation (saved as heldout.json; 0 for none)."""
    seed: int = 42
    """Seed of the held-out split, the data order, dropout and the adapter's initialisation."""
    save_steps: int = 0
    """Also save a resumable checkpoint every N steps (one is saved after each epoch anyway, at most one a minute)."""
    save_minutes: float = 20.0
    """Also save one when this many minutes have passed since the last (0: never): a crash, a kill or a full
    disk at the final save loses at most that much of a long epoch."""
    max_steps: int = 0
    """Stop after this many optimizer steps (0: train for --epochs)."""
    resume: bool = False
    """Continue from the newest checkpoint in the adapter folder."""
    overwrite: bool = False
    """Replace an existing adapter folder of the same name (it is replaced only when the new one is complete)."""
    model_dir: str | None = None
    """Models folder; default user_data/models when user_data/ exists, else models/."""
    lora_dir: str | None = None
    """Adapters folder; default user_data/loras when user_data/ exists, else loras/."""
    dataset_dir: str | None = None
    """Datasets folder searched for a bare dataset name; default user_data/training/datasets or training/datasets."""
    logging_steps: int = 10
    """Steps between lines in training_log.json."""
    warmup_ratio: float = 0.03
    """Share of the steps spent warming the learning rate up from 0 (then cosine decay to 0)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0: off)."""
    packing: bool = True
    """Pack a batch's samples into shared rows with a block-diagonal mask (off: pad to the longest sample)."""
    gradient_checkpointing: str = "auto"
    """auto (on for GPUs, off on CPU), on, off: trades compute for memory."""
    fused_kernels: str = "auto"
    """auto (liger-kernel's fused RMSNorm and SwiGLU on CUDA when liger-kernel is installed), on, off."""
    precision: str = "auto"
    """auto (bf16 on GPUs that have it and on CPUs with AMX/AVX512-BF16, fp16 on older GPUs, else fp32), bf16, fp32; the adapter itself is kept in fp32."""
    save_total_limit: int = 2
    """Checkpoints kept while training (the oldest go first); all are removed when the final adapter is saved."""
    name: str | None = None
    """The character's cue for multi-turn samples (sharegpt/messages) that carry no "name" key."""
    device: str | None = None
    """cpu, cuda, cuda:1, mps; default: the best available (this process's GPU under torchrun)."""
    eval_base: bool = True
    """Measure the base model's held-out loss before training (the model card compares it)."""

    def __post_init__(self) -> None:
        if isinstance(self.target_modules, str):
            self.target_modules = [t.strip() for t in self.target_modules.split(",") if t.strip()]
        if self.target_modules is not None:
            self.target_modules = list(self.target_modules) or None
        problems = []

        def need(ok: bool, msg: str) -> None:
            if not ok:
                problems.append(msg)

        for f in ("batch_size", "epochs", "cutoff_len", "lora_rank", "num_virtual_tokens", "grad_accum",
                  "logging_steps", "save_total_limit"):
            v = getattr(self, f)
            need(isinstance(v, int) and not isinstance(v, bool) and v >= 1, f"--{f} must be a whole number >= 1 (got {v!r})")
        # a length no card trains to the end of (a typo's zeros): its ETA read in millions of hours
        need(not isinstance(self.epochs, int) or self.epochs <= MAX_EPOCHS,
             f"--epochs must be at most {MAX_EPOCHS:,} (got {self.epochs:,})")
        need(not isinstance(self.max_steps, int) or self.max_steps <= MAX_STEPS,
             f"--max_steps must be at most {MAX_STEPS:,} (got {self.max_steps:,})")
        # not -1 for "random", as some tools take it: a run is reproducible, and resumable, by its seed
        need(isinstance(self.seed, int) and not isinstance(self.seed, bool) and 0 <= self.seed < 2**32,
             f"--seed must be a whole number from 0 to {2**32 - 1} (got {self.seed!r})")
        for f in ("save_steps", "max_steps"):
            v = getattr(self, f)
            need(isinstance(v, int) and not isinstance(v, bool) and v >= 0, f"--{f} must be a whole number >= 0 (got {v!r})")
        need(_real(self.save_minutes) and 0 <= self.save_minutes < math.inf,
             f"--save_minutes must be a number of minutes, 0 or more (got {self.save_minutes!r})")
        need(not isinstance(self.cutoff_len, int) or not 1 <= self.cutoff_len < 8, f"--cutoff_len must be at least 8 (got {self.cutoff_len})")
        need(self.method in METHODS, f"--method must be one of {', '.join(METHODS)} (got {self.method!r})")
        need(self.learning_rate is None or _real(self.learning_rate) and 0 < self.learning_rate < math.inf,
             f"--learning_rate must be a number > 0 (got {self.learning_rate})")
        # (an alpha of 1e300 overflowed the float32 scale at the first step, after the model had loaded)
        need(self.lora_alpha is None or _real(self.lora_alpha) and 0 < self.lora_alpha <= MAX_ALPHA,
             f"--lora_alpha must be a number > 0 and at most {MAX_ALPHA:,} (got {self.lora_alpha})")
        if self.name is not None:  # the cue: one line, and the colon that ends it is added by the prompt
            self.name = " ".join(str(self.name).split())
            need(bool(self.name), "--name is empty (leave it out: samples name their character)")
            need(":" not in self.name, f"--name {quoted(self.name)} must not contain ':' (the cue adds it: --name Bob)")
            # one cue: prepare_dataset.py's --name takes several comma-separated, this one would cue `Alice,Bob:`
            need(not any(c in self.name for c in ",\uff0c\u3001"),
                 f"--name {quoted(self.name)}: one name (the cue of samples that name no character); the samples "
                 "of several are made with prepare_dataset.py --name")
        need(_real(self.lora_dropout) and 0 <= self.lora_dropout < 1, f"--lora_dropout must be in [0, 1) (got {self.lora_dropout})")
        need(_real(self.val_ratio) and 0 <= self.val_ratio < 0.5, f"--val_ratio must be in [0, 0.5) (got {self.val_ratio})")
        need(_real(self.warmup_ratio) and 0 <= self.warmup_ratio < 1, f"--warmup_ratio must be in [0, 1) (got {self.warmup_ratio})")
        need(_real(self.weight_decay) and 0 <= self.weight_decay < math.inf, f"--weight_decay must be a finite number >= 0 (got {self.weight_decay})")
        need(_real(self.max_grad_norm) and self.max_grad_norm >= 0, f"--max_grad_norm must be >= 0 (got {self.max_grad_norm})")
        need(not (self.load_in_4bit and self.load_in_8bit), "--load_in_4bit and --load_in_8bit cannot be used together")
        need(not (self.resume and self.overwrite), "--resume and --overwrite cannot be used together")
        need(self.gradient_checkpointing in GRADIENT_CHECKPOINTING,
             f"--gradient_checkpointing must be auto, on or off (got {self.gradient_checkpointing!r})")
        need(self.fused_kernels in modeling.FUSED_KERNELS,
             f"--fused_kernels must be auto, on or off (got {self.fused_kernels!r})")
        need(self.precision in modeling.PRECISIONS,
             f"--precision must be one of {', '.join(modeling.PRECISIONS)} (got {self.precision!r})")
        need(bool(str(self.model_name or "").strip()), "--model_name is empty")
        need(bool(str(self.dataset_name or "").strip()), "--dataset_name is empty")
        try:
            self.lora_name = paths.check_name(self.lora_name, "--lora_name")
            # evaluate reads `checkpoint-N` as a run's checkpoint, and merge names any `checkpoint-...` after the
            # folder above it (loras-checkpoint-5): not the name of an adapter
            need(not self.lora_name.startswith(CHECKPOINT_PREFIX),
                 f"--lora_name {self.lora_name!r} is named like a training checkpoint ({CHECKPOINT_PREFIX}N), "
                 "which evaluate and merge would take it for: choose another name")
        except UserError as e:
            problems.append(str(e))
        if problems:
            raise UserError(join_problems(problems))

    # resolved defaults
    @property
    def lr(self) -> float:
        if self.learning_rate is not None:
            return float(self.learning_rate)
        return 3e-2 if self.method == "prompt_tuning" else 3e-4

    @property
    def alpha(self) -> float:
        if self.lora_alpha is None:
            return 2 * self.lora_rank
        return int(self.lora_alpha) if float(self.lora_alpha).is_integer() else float(self.lora_alpha)  # 16.5 stays

    @classmethod
    def field_help(cls) -> dict[str, str]:
        """Each field's one-line help (its docstring above), for the CLI and the tab."""
        import ast
        import inspect

        tree = ast.parse(inspect.getsource(cls))
        body = tree.body[0].body
        out = {}
        for a, b in zip(body, body[1:]):
            if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr) and isinstance(getattr(b, "value", None), ast.Constant):
                out[a.target.id] = str(b.value.value)
        return out


@dataclass
class Plan:
    """What `check` resolved: where everything is, the samples, and what to resume from."""

    model_path: Path
    dataset_path: Path
    lora_root: Path
    out_dir: Path
    records: list[dict]
    resume_from: Path | None
    target_modules: list[str] | None
    characters: list[str] = field(default_factory=list)  # the cues the samples train, most first
    cues: list[list[str]] = field(default_factory=list)  # each sample's (of `records`), for what a run learns
    notes: list[str] = field(default_factory=list)  # said when the run starts (samples left out)
    # samples_sha256 and samples_text_sha256 of the samples as the file holds them, empty replies too: what
    # --resume compares (a checkpoint from before such samples were left out hashed them all)
    loaded_sha256: dict = field(default_factory=dict)
    # --overwrite: the replaced run's checkpoints, deleted only once this run has saved one of its own
    stale: list[Path] = field(default_factory=list)
    # the file's SHA-256 as check() read it: hashed when the settings are written (minutes later, after the
    # model loads), a file prepared again meanwhile was recorded as the one trained on
    dataset_sha256: str | None = None
    user_turns_named: bool = True  # False: the samples' user turns named no speaker (prompt.unlabelled_user_turns)


@dataclass
class TrainResult:
    output_dir: Path
    step: int
    total_steps: int
    stopped: bool = False
    checkpoint: Path | None = None
    train_loss: float | None = None
    eval_loss: float | None = None
    perplexity: float | None = None
    base_eval_loss: float | None = None
    n_train: int = 0
    n_val: int = 0
    n_dropped: int = 0
    log: dict = field(default_factory=dict)


def event_line(ev: dict) -> str | None:
    """The line a progress event reads as in a log (lora_finetune.py's output, the tab's Log box); None for
    the events a progress bar or status shows instead (steps, begin, done)."""
    kind = ev.get("event")
    if kind == "eval":
        what = "base model" if ev.get("base") else f"epoch {ev['epoch']}"
        return f"held-out ({what}): loss {loss_text(ev['eval_loss'], 4)}, perplexity {loss_text(ev['perplexity'], 2)}"
    if kind == "save":
        return f"saved checkpoint {ev['path']}"
    if kind == "start":  # the device said: a torch without the GPU's support trained on the CPU unseen
        device = f" (device: {ev['device']})" if ev.get("device") else ""
        return f"training {ev['adapter']} on {ev['model']}, with {ev['samples']} samples from {ev['dataset']}{device}"
    if kind == "log" and ev.get("message"):
        return str(ev["message"])
    return None


def format_eta(seconds) -> str:
    """Time left as `m:ss` or `h:mm:ss` (the tab's status and lora_finetune.py's bar)."""
    if seconds is None:
        return "?"
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def loss_text(x, digits: int) -> str:
    """A loss or perplexity, or n/a (a perplexity too large for a float, a loss that is not a number)."""
    return "n/a" if x is None else f"{x:.{digits}f}"


# ----------------------------------------------------------------------------------------------- checks


def _dataset_candidates(name: str, dataset_dir: Path) -> list[Path]:
    """The files `-d name` may mean, in the order they are taken: the path as given, then in the datasets
    folder, then a bare name with an extension (as the tab and the webui list datasets)."""
    p = Path(os.path.expanduser(name))  # `-d ~/x.json` from cmd or PowerShell, which leave `~` as it is
    return [p, dataset_dir / name] + [folder / (name + ext) for ext in (".json", ".jsonl")
                                      for folder in (dataset_dir, Path("."))]


def resolve_dataset(name: str, dataset_dir: Path) -> Path:
    candidates = _dataset_candidates(name, dataset_dir)
    taken = next((c for c in candidates if c.is_file()), None)
    if taken is not None:
        return taken.resolve()
    p, q = candidates[:2]
    if p.is_dir() or q.is_dir():
        raise UserError(f"dataset {name!r} is a folder: give a .json or .jsonl file (--dataset_name)")
    if p.exists():  # a pipe or a device (`-d /dev/stdin`): the samples are read more than once
        raise UserError(f"dataset {name!r} is not a regular file (a pipe or a device): save the samples to a "
                        "file first (--dataset_name)")
    found = paths.list_datasets(dataset_dir)
    listing = f"; datasets in {dataset_dir}: {', '.join(found)}" if found else ""
    looked = f"{p} and {q}" if p.resolve() != q.resolve() else f"{p}"
    raise UserError(f"dataset {name!r} not found (looked for {looked}){listing}")


def other_dataset(name: str, dataset_dir: Path, chosen: Path) -> Path | None:
    """Another file that `-d name` could have meant (`bob.json` here and in the datasets folder): the one not
    trained, for a note; None when there is none."""
    for c in _dataset_candidates(name, dataset_dir):
        try:
            if c.is_file() and c.resolve() != chosen:
                return c.resolve()
        except OSError:
            continue
    return None


def checkpoints(out_dir: Path) -> list[Path]:
    """The checkpoint-N folders of a run, oldest first (complete ones only: they hold trainer_state.json)."""
    if not out_dir.is_dir():
        return []
    found = []
    for p in out_dir.iterdir():
        if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX) and p.name[len(CHECKPOINT_PREFIX):].isdigit():
            if (p / STATE_FILE).is_file() and not _another_trainers(p):
                found.append((int(p.name[len(CHECKPOINT_PREFIX):]), p))
    return [p for _, p in sorted(found)]


def _saved_settings(checkpoint: Path) -> dict:
    """The settings a checkpoint saved ({} when unreadable)."""
    try:
        settings = json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8")).get("settings")
    except (OSError, ValueError, AttributeError):
        return {}
    return settings if isinstance(settings, dict) else {}


def resumed_settings(out_dir: Path) -> tuple[dict, str] | None:
    """(the settings its newest readable checkpoint saved, that checkpoint's name) of a stopped run in
    `out_dir`; None when there is none. A resume takes its length from them where none is given: the
    command line's defaults (the tab's, after a restart) would quietly shorten the run and reshape its
    learning-rate schedule."""
    for latest in reversed(checkpoints(out_dir)):
        settings = _saved_settings(latest)
        if settings:
            return settings, latest.name
    return None


# A stopped run's settings that a resume keeps beyond RESUME_KEYS (which it must keep) where not given again:
# the tab's form has no field for them, and the command line would put its defaults in. Not --device,
# --gradient_checkpointing or --fused_kernels: how to run on this machine is this command's choice (and the
# run records what they came to)
CARRIED_ON_RESUME = ("precision", "save_total_limit", "save_minutes", "logging_steps")


def as_defaults(settings: dict) -> dict:
    """A checkpoint's settings with the values its defaults resolved to (an alpha twice the rank, every
    linear layer) as defaults again: the resume resolves them the same, and a rank changed afterwards, or
    the next run on the same form, gets its own instead of another run's 32."""
    out = dict(settings)
    rank, alpha = out.get("lora_rank"), out.get("lora_alpha")
    if isinstance(rank, int) and alpha == 2 * rank:
        out["lora_alpha"] = None
    modules, base = out.get("target_modules"), out.get("base_model_path")
    if isinstance(modules, list) and isinstance(base, str):
        try:
            if sorted(modules) == sorted(model_linear_layers(Path(base))):
                out["target_modules"] = None
        except (UserError, OSError, ValueError):
            pass  # the base is gone or unreadable: the list as recorded
    return out


def run_length(settings: dict) -> dict:
    """The length settings (epochs, max_steps) a run's saved settings hold."""
    return {k: settings[k] for k in ("epochs", "max_steps") if _real(settings.get(k))}


def _another_trainers(checkpoint: Path) -> bool:
    """A checkpoint that transformers' Trainer wrote (the webui's Training tab, Axolotl): its trainer_state.json
    has a `global_step` and none of our run's settings. It cannot be resumed here."""
    try:
        state = json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False  # damaged: taken as ours, and said so when it is resumed
    return isinstance(state, dict) and "global_step" in state and "settings" not in state


def _foreign_checkpoints(out_dir: Path) -> list[str]:
    return sorted(p.name for p in out_dir.glob(f"{CHECKPOINT_PREFIX}*") if p.is_dir() and _another_trainers(p))


def linear_layer_names(model) -> list[str]:
    """Names (last component) of the model's linear layers that a LoRA can adapt, output head excluded."""
    import torch.nn as nn

    types: tuple = (nn.Linear,)
    with contextlib.suppress(ImportError):
        from transformers.pytorch_utils import Conv1D

        types += (Conv1D,)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names = set()
    for full, mod in model.named_modules():
        if isinstance(mod, types) and mod is not head and full:
            leaf = full.rsplit(".", 1)[-1]
            if leaf not in ("lm_head", "embed_out", "output"):
                names.add(leaf)
    return sorted(names)


def model_linear_layers(model_path: Path) -> list[str]:
    """The linear layer names of a model folder's architecture, found without loading weights (meta device)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(str(model_path))
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"could not read the model in {model_path}: {brief(e)}") from None
    return linear_layer_names(model)


def _size_problems(cfg: TrainConfig, model_path: Path) -> list[str]:
    """Sizes that cannot fit the model, from its config.json (before minutes of loading): a LoRA rank above
    its hidden size (the adapter's matrices would outgrow the layers they adapt, for nothing), and virtual
    tokens that take more than half of its context from every sample."""
    try:
        config = modeling.text_part(modeling.config_of(model_path))
    except UserError:
        return []  # said when the model loads
    hidden = config.get("hidden_size") if isinstance(config, dict) else None
    problems = []
    if cfg.method == "lora" and isinstance(hidden, int) and hidden > 0 and cfg.lora_rank > hidden:
        problems.append(f"--lora_rank {cfg.lora_rank} is above the model's hidden size ({hidden}): so large a rank "
                        "adds nothing but size (usual ranks: 8 to 64)")
    limit = modeling.context_limit(config)
    if cfg.method == "prompt_tuning" and limit and cfg.num_virtual_tokens > limit // 2:
        problems.append(f"--num_virtual_tokens {cfg.num_virtual_tokens}: the model's context is {limit} positions, "
                        f"and the soft prompt takes its tokens from every sample and every chat prompt: at most "
                        f"{limit // 2} (usual: 8 to 100)")
    return problems


def check(cfg: TrainConfig) -> Plan:
    """Validate everything that can be checked before a model loads; all problems in one UserError."""
    problems: list[str] = []
    dirs = paths.resolve_dirs(model_dir=cfg.model_dir, lora_dir=cfg.lora_dir, dataset_dir=cfg.dataset_dir)
    # an adapter folder spelt in another Unicode normal form (a macOS copy's decomposed Zoë) is that adapter:
    # check_name's composed spelling would make a second folder beside it
    cfg.lora_name = paths.on_disk(dirs.loras, cfg.lora_name)
    model_path = dataset_path = None
    records: list[dict] = []
    characters: list[str] = []
    cues: list[list[str]] = []
    user_turns_named = True
    notes: list[str] = []
    loaded_sha256: dict = {}
    dataset_sha256 = None
    try:
        model_path = paths.resolve_model(cfg.model_name, dirs.models)
    except UserError as e:  # the seed script's default, likely never typed: say that -m picks the model
        default = cfg.model_name == TrainConfig.model_name
        problems.append(str(e).replace(" not found", " (the default: pick one with -m/--model_name) not found", 1)
                        if default else str(e))
    try:
        dataset_path = resolve_dataset(cfg.dataset_name, dirs.datasets)
        other = other_dataset(cfg.dataset_name, dirs.datasets, dataset_path)
        if other is not None:  # which one -d meant is a guess: the one not taken is named
            notes.append(f"-d {cfg.dataset_name} is {dataset_path}; {other} is there too: give its path to train "
                         "that one")
        records = load_records(dataset_path)
        dataset_sha256 = file_sha256(dataset_path)
        segments = prompt_mod.validate_records(records, str(dataset_path), cfg.name)
        loaded_sha256 = {"samples_sha256": samples_sha256(records),
                         "samples_text_sha256": samples_sha256(records, leave_out=("source",))}
        empty = [i for i, pieces in enumerate(segments) if not any(trainable for _, trainable in pieces)]
        if empty:  # `"output": ""` from another tool: nothing to learn but ending the turn at once
            if len(empty) == len(records):
                raise UserError(f"{dataset_path}: every sample's reply is empty: nothing to learn")
            where = getattr(records, "where", None) or (lambda i: f"{dataset_path}: sample {i + 1}")
            notes.append(f"{len(empty)} sample(s) left out: their reply is empty, which would teach the model to "
                         f"say nothing (the first: {where(empty[0])})")
            left_out = set(empty)
            records = [r for i, r in enumerate(records) if i not in left_out]
            segments = [s for i, s in enumerate(segments) if i not in left_out]
        cues = [prompt_mod.record_cues(pieces) for pieces in segments]
        characters = prompt_mod.characters_of(cues)
        unnamed = [prompt_mod.needs_name(r) for r in records]  # the samples --name cues
        # the cues the samples carry themselves (rounds, alpaca, named multi-turn)
        own = prompt_mod.characters_of(c for c, cued in zip(cues, unnamed) if not cued)
        twin = next((c for c in own if prompt_mod.name_key(c) == prompt_mod.name_key(cfg.name)),
                    None) if cfg.name and cfg.name not in own else None
        user_turns_named = not prompt_mod.unlabelled_user_turns(records)
        if not user_turns_named:
            notes.append("the samples' user turns name no speaker (`Hi Bob!`, not `Alice: Hi Bob!`): chat.py and "
                         "the tab give your lines without your name, as they were trained; samples made by "
                         "prepare_dataset.py name every speaker, the character's own turns too")
        if twin is not None:  # two cues for one character: chat would speak as one, half of what was learnt
            form = (" (the same letters in another Unicode form)"
                    if unicodedata.normalize("NFC", twin) == unicodedata.normalize("NFC", cfg.name) else "")
            message = f"--name {quoted(cfg.name)}: samples of {dataset_path.name} cue {twin!r}{form}"
            if cfg.resume:  # a run begun so (before this was refused) goes on as it began: its hours are not lost
                notes.append(f"{message}: the adapter learns both cues")
            else:
                problems.append(f"{message}: spell it that way")
        elif cfg.name and characters and cfg.name not in characters:
            # rounds and alpaca samples (and named multi-turn ones) carry their cue: --name would be unused,
            # yet recorded, and chat would speak as a character nothing was trained on
            problems.append(f"--name {quoted(cfg.name)}: no sample of {dataset_path.name} trains it (their characters: "
                            f"{', '.join(characters[:8])}); --name is the cue for sharegpt/messages samples that "
                            "name no character: leave it out")
        elif cfg.name and characters and not any(unnamed):
            # it cues no sample; it is still what chat and evaluation speak as by default (one of the cast)
            notes.append(f"--name {cfg.name} cues no sample: every sample names its character (it stays the "
                         "character chat.py and evaluation speak as by default)")
    except UserError as e:
        problems.append(str(e))
    if records and cfg.val_ratio > 0 and len(records) - n_val_of(len(records), cfg.val_ratio) < 1:
        problems.append(f"{dataset_path}: {len(records)} sample(s) is too few to hold some out; use --val_ratio 0")
    if cfg.load_in_4bit or cfg.load_in_8bit:
        try:
            modeling.require_bitsandbytes("--load_in_4bit" if cfg.load_in_4bit else "--load_in_8bit")
        except UserError as e:
            problems.append(str(e))
    device = None
    try:
        device = modeling.pick_device(cfg.device)
    except UserError as e:
        problems.append(str(e))
    if cfg.fused_kernels == "on" and device is not None:  # device and package now (the model type: on load)
        reason = modeling.fused_kernels_missing(device)
        if reason:
            problems.append(f"--fused_kernels on: {reason}")
    if model_path is not None:
        problems += _size_problems(cfg, model_path)
        tokenizer = modeling.tokenizer_problem(model_path)
        if tokenizer:
            problems.append(tokenizer)
    linear: list[str] = []
    targets = cfg.target_modules
    if model_path is not None and cfg.method == "lora":
        try:
            linear = model_linear_layers(model_path)
        except UserError as e:
            problems.append(str(e))
        if linear and targets and targets != ["all-linear"]:
            missing = [t for t in targets if t not in linear]
            if missing:
                problems.append(
                    f"--target_modules: the model has no layer named {', '.join(missing)}; "
                    f"its linear layers are: {', '.join(linear)}"
                )
        if linear and (not targets or targets == ["all-linear"]):
            targets = linear
    lora_root = dirs.loras
    out_dir = lora_root / cfg.lora_name
    twin = paths.case_twin(lora_root, cfg.lora_name)
    if twin is not None:  # a second folder here, the same one on Windows and macOS (copied there, they collide)
        kind = "an adapter" if paths.is_adapter_dir(lora_root / twin) else "an entry"
        problems.append(f"--lora_name {cfg.lora_name!r}: {kind} {twin!r} exists, and names differing only in case "
                        f"are one folder on Windows and macOS: use the name {twin!r} (with --overwrite to replace "
                        "it) or another")
    if paths.interrupted_save(lora_root, cfg.lora_name):  # put the adapter back before judging the folder
        with held_lock(paths.lock_file(lora_root, cfg.lora_name), lambda holder: _busy(out_dir, holder)):
            _tidy(lora_root, out_dir)
    holder = paths.training_pid(lora_root, cfg.lora_name)  # (before the lock: Windows hides a held lock's pid)
    if holder is not None:  # its folder is mid-run: what --resume or --overwrite would find there says nothing
        found, resume_from = [_busy(out_dir, holder)], None
    else:
        found, resume_from = _output_problems(cfg, out_dir)
    problems += found
    if problems:
        raise UserError(join_problems(problems))
    plan = Plan(model_path, dataset_path, lora_root, out_dir, records, resume_from, targets, characters, cues, notes,
                loaded_sha256, dataset_sha256=dataset_sha256, user_turns_named=user_turns_named)
    if resume_from is not None:  # the settings it needs, before minutes of loading (the model's: after)
        try:
            before = json.loads((resume_from / STATE_FILE).read_text(encoding="utf-8")).get("settings", {})
        except (OSError, ValueError, AttributeError):
            before = {}  # damaged: said in full when the run reads it
        # the process count as torchrun sets it (_Dist reads the same), so that a changed one is refused
        # before the model loads
        now = dict(_settings(cfg, plan), world_size=int(os.environ.get("WORLD_SIZE", "1") or 1))
        try:
            shape = modeling.base_fingerprint(model_path)  # its config.json: for the words only
        except (UserError, AttributeError, TypeError):  # an unreadable config is said when the model loads
            shape = None
        problem = _resume_mismatch(resume_from, before, now, shape)
        if problem:
            raise UserError(problem)
        done = int(resume_from.name[len(CHECKPOINT_PREFIX):])
        if cfg.max_steps and cfg.max_steps < done:  # equal is fine: a run stopped at its last step finishes
            raise UserError(f"--resume: {resume_from.name} is already past --max_steps {cfg.max_steps}: nothing is left "
                            f"to train; give --max_steps above {done}, or leave it out to finish the epochs")
        per_epoch = before.get("steps_per_epoch")
        if not cfg.max_steps and isinstance(per_epoch, int):  # the same samples and batches (checked above)
            problem = _too_few_steps(resume_from.name, done, cfg.epochs * per_epoch, before)
            if problem:  # said before the model loads
                raise UserError(problem)
    return plan


def _too_few_steps(checkpoint: str, step: int, total: int, before: dict) -> str | None:
    """Why a checkpoint cannot be resumed to `total` steps: the loop would end at once and the final save
    delete the checkpoint, the rest of the run lost (None: it can; one at exactly its last step finishes)."""
    if step < total or (step == total and before.get("total_steps") in (None, total)):
        return None
    had = f"--max_steps {before['max_steps']}" if before.get("max_steps") else f"--epochs {before.get('epochs', '?')}"
    return (f"{checkpoint} is at step {step} and these settings train {total} step(s) in all: nothing left to "
            f"resume; set {had} as the run had (or more) to train the rest")


def _output_problems(cfg: TrainConfig, out_dir: Path) -> tuple[list[str], Path | None]:
    """What stands in the way of writing `out_dir` (an existing run, a file, no permission), and the
    checkpoint to resume from. Checked before the model loads, and again once the run holds the lock."""
    problems, resume_from = _unwritable(out_dir), None
    if out_dir.is_symlink():
        # the final save swaps a new folder in by renames: the link would become a folder, and the files
        # beside the adapter could not move across to it from another disk
        target = Path(os.path.realpath(out_dir))
        problems.append(f"{out_dir} is a symbolic link to {target}: train into that folder itself "
                        f"(--lora_dir {target.parent} --lora_name {target.name}), or choose another --lora_name")
    elif out_dir.exists() and not out_dir.is_dir():
        problems.append(f"{out_dir} exists and is not a folder")
    elif cfg.resume and not _holds_a_run(out_dir):
        cut = paths.interrupted_save(out_dir.parent, cfg.lora_name)
        problems.append(f"--resume: there is no run of {cfg.lora_name!r} in {out_dir.parent} to resume"
                        + (cut if cut else " (leave --resume out to start one)"))
    elif _holds_a_run(out_dir):
        # each read once: a checkpoint's state is parsed to tell ours from another trainer's
        found, foreign, adapter = checkpoints(out_dir), _foreign_checkpoints(out_dir), paths.is_adapter_dir(out_dir)
        if cfg.resume:
            if found:
                resume_from = found[-1]
            elif foreign:
                problems.append(f"--resume: {out_dir}'s checkpoints ({', '.join(foreign)}) were "
                                "written by another trainer (transformers' Trainer: the webui's Training tab?) and "
                                "cannot be resumed here; --overwrite to train anew in their place")
            else:
                problems.append(
                    f"--resume: {out_dir} holds no checkpoint to resume from"
                    + (" (the run finished; use --overwrite to train again)" if adapter else "")
                )
        elif paths.is_model_dir(out_dir) and not adapter:  # `--lora_dir models` by mistake
            problems.append(f"{out_dir} holds a model (config.json), not an adapter: it is never replaced; choose "
                            "another --lora_name")
        elif not (adapter or found or foreign) and _named_like_ours(out_dir):
            # no run wrote these (no adapter, no checkpoint): the user's README.md, an eval.json of theirs
            problems.append(f"{out_dir} holds no adapter and no checkpoint, but files a run would replace "
                            f"({', '.join(_named_like_ours(out_dir))}): move them out, or choose another --lora_name")
        elif not cfg.overwrite:
            if found:
                choices = f"--resume to continue from {found[-1].name}, --overwrite to start again"
            elif foreign:
                choices = ("its checkpoints were written by another trainer and cannot be resumed here: --overwrite "
                           "to replace them")
            elif adapter:
                choices = "it is a finished adapter: --overwrite to replace it"
            else:  # the user's own files: kept, the adapter saved among them
                choices = "it holds no adapter and no checkpoint: --overwrite to train into it, its files kept"
            problems.append(f"{out_dir} already exists and is not empty ({choices}, or another --lora_name)")
    return problems, resume_from


# In an adapter folder, a run's own entries besides ADAPTER_FOLDER_FILES: checkpoints, and what a killed
# write left (`.checkpoint-N.tmp`, fileio's `.eval.json.x1y2.tmp`).
_HALF_WRITTEN = re.compile(r"\..*\.tmp")
_CHECKPOINT_NAME = re.compile(rf"{re.escape(CHECKPOINT_PREFIX)}\d+")


def _is_run_entry(path: Path) -> bool:
    """A trainer's checkpoint (`checkpoint-N` holding its trainer_state.json: ours, or the webui Training
    tab's, which --overwrite replaces) or what a killed write left; a `checkpoint-1` folder of the user's,
    with no state in it, is not."""
    if _HALF_WRITTEN.fullmatch(path.name):
        return True
    return bool(_CHECKPOINT_NAME.fullmatch(path.name)) and (path / STATE_FILE).is_file()


def _holds_a_run(out_dir: Path) -> bool:
    """Whether the folder holds anything but the half-written leftovers of a killed save, which the
    run clears (`.checkpoint-N.tmp`): those alone do not make the name taken."""
    return out_dir.is_dir() and any(not _HALF_WRITTEN.fullmatch(p.name) and not paths.os_litter(p.name)
                                    for p in out_dir.iterdir())


def _named_like_ours(out_dir: Path) -> list[str]:
    """The entries of `out_dir` named as the files a run writes (README.md, eval.json...)."""
    return sorted(p.name for p in out_dir.iterdir() if p.name in ADAPTER_FOLDER_FILES)


def _foreign_entries(out_dir: Path) -> list[str]:
    """What in an adapter folder no run wrote (the user's notes): kept when the folder is replaced."""
    return sorted(p.name for p in out_dir.iterdir()
                  if p.name not in ADAPTER_FOLDER_FILES and not _is_run_entry(p) and not paths.os_litter(p.name))


def _unwritable(out_dir: Path) -> list[str]:
    """Why the adapter could not be saved in `out_dir` (checked before hours of training, not after)."""
    existing = nearest_existing(out_dir.parent)
    if existing is not None and not existing.is_dir():
        return [f"{out_dir}: cannot save there: {existing} is a file, not a folder (--lora_dir)"]
    # the final save renames a folder beside the adapter's: its parent must take new entries; an
    # existing adapter folder must take checkpoints
    for folder in ([out_dir] if out_dir.is_dir() else []) + ([existing] if existing is not None else []):
        if not os.access(folder, os.W_OK | os.X_OK):
            return [f"{folder}: not writable: the adapter could not be saved there (--lora_dir)"]
    return []


MAX_ALPHA = 1_000_000  # far above any use (alpha/rank is the scale: 2 by default)


def n_val_of(n: int, val_ratio: float) -> int:
    if val_ratio <= 0 or n < 2:
        return 0
    return min(n - 1, max(1, round(n * val_ratio)))


# training_parameters.json's `split`: copies of a sample are kept on one side (a checkpoint without it
# resumes with the split it was trained with)
SPLIT = "copies together"


def split(records: list[dict], val_ratio: float, seed: int, together: bool = True) -> tuple[list[int], list[int]]:
    """(train indices, held-out indices), reproducible from the seed; both in dataset order. The first
    n_val of a seeded shuffle are held out. With `together`, a sample goes with its copies (the same
    sample but for its place in the raw file: `--keep_duplicates`, a file joined with itself), which
    scored as held out after being trained on would flatter the adapter: the distinct samples are
    shuffled, and held out in that order while their records fit in n_val (the first one may take up to
    twice that: a dataset doubled holds out one sample and its copy). Without copies the split is the same."""
    if not together:
        idx = list(range(len(records)))
        random.Random(seed).shuffle(idx)
        k = n_val_of(len(records), val_ratio)
        return sorted(idx[k:]), sorted(idx[:k])
    keys = [_copy_key(r) for r in records]
    sizes = Counter(keys)
    distinct = list(sizes)  # in the dataset's order: shuffled as the records would be without copies
    random.Random(seed).shuffle(distinct)
    k = n_val_of(len(records), val_ratio)
    chosen, taken = set(), 0
    for key in distinct:
        if taken >= k:
            break
        if taken + sizes[key] <= k or (not taken and sizes[key] <= 2 * k and sizes[key] < len(records)):
            chosen.add(key)
            taken += sizes[key]
    val = [i for i in range(len(records)) if keys[i] in chosen]
    return [i for i in range(len(records)) if keys[i] not in chosen], val


def _copy_key(record) -> str:
    if not isinstance(record, dict):
        return repr(record)
    return json.dumps({k: v for k, v in record.items() if k != "source"}, sort_keys=True, ensure_ascii=False)


# ---------------------------------------------------------------------------------------- distributed


class _Dist:
    """torch.distributed when started by torchrun / accelerate launch (WORLD_SIZE > 1), else one process."""

    def __init__(self, device):
        import torch.distributed as dist

        self.world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        self.rank = int(os.environ.get("RANK", "0") or 0)
        self.owned = False
        self.dist = dist
        if self.world > 1 and not dist.is_initialized():
            # gloo without NCCL: torch's Windows builds have none ("Distributed package doesn't have NCCL")
            nccl = device.type == "cuda" and dist.is_nccl_available()
            dist.init_process_group(backend="nccl" if nccl else "gloo")
            self.owned = True
        self.main = self.rank == 0

    def barrier(self):
        if self.world > 1:
            self.dist.barrier()

    def sum(self, values: list[float], device) -> list[float]:
        if self.world == 1:
            return values
        import torch

        t = torch.tensor(values, dtype=torch.float64, device=device)
        self.dist.all_reduce(t)
        return t.tolist()

    def close(self):
        if self.owned and self.dist.is_initialized():
            self.dist.destroy_process_group()


# ------------------------------------------------------------------------------------------- training


def _seed_all(seed: int) -> None:
    import torch

    random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def _rng_state() -> dict:
    import torch

    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    import torch

    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        # a run saved on more GPUs than this machine has: the ones here take theirs, not an IndexError
        for index, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, index)


def _lr_lambda(total_steps: int, warmup_steps: int):
    def f(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)  # (never 0: the first step learns too)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return f


def _attach_adapter(model, cfg: TrainConfig, plan: Plan):
    from peft import LoraConfig, PromptTuningConfig, PromptTuningInit, get_peft_model

    if cfg.method == "lora":
        pcfg = LoraConfig(
            r=cfg.lora_rank,
            lora_alpha=cfg.alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=plan.target_modules or "all-linear",
            bias="none",
            task_type="CAUSAL_LM",
        )
    else:
        pcfg = PromptTuningConfig(
            task_type="CAUSAL_LM",
            num_virtual_tokens=cfg.num_virtual_tokens,
            prompt_tuning_init=PromptTuningInit.TEXT,
            prompt_tuning_init_text=PROMPT_TUNING_INIT_TEXT,
            tokenizer_name_or_path=str(plan.model_path),
        )
    return get_peft_model(model, pcfg)


def _use_gc(cfg: TrainConfig, device) -> bool:
    if cfg.gradient_checkpointing == "auto":  # a GPU's memory is the limit (a Mac's, shared with all else)
        return device.type in ("cuda", "mps")
    return cfg.gradient_checkpointing == "on"


def _settings(cfg: TrainConfig, plan: Plan) -> dict:
    """Every resolved setting of the run (training_parameters.json)."""
    s = asdict(cfg)
    s.update(
        learning_rate=cfg.lr,
        lora_alpha=cfg.alpha,
        packing=cfg.packing and cfg.method != "prompt_tuning",  # soft prompts: one sample a row (see _train)
        target_modules=plan.target_modules if cfg.method == "lora" else None,
        base_model=cfg.model_name,
        base_model_path=str(plan.model_path),
        dataset=str(plan.dataset_path),
        dataset_sha256=plan.dataset_sha256,  # the file as it was read
        # the samples themselves, not the file's name or layout: --resume on other data is refused; and the
        # same without the lines' places in the raw file (`source`), which training never reads: the one
        # compared when both runs have it (a raw file renamed and prepared again gives the same samples)
        **plan.loaded_sha256,
        # a base of the same shape is not the same base (Llama-3-8B and its Instruct): --resume refuses it
        base_weights_sha256=paths.weights_sample_sha256(plan.model_path),
        # a -bnb-4bit upload's adapter merges into (and chats on) its full model, whose files differ
        base_stored_quantization=modeling.stored_quantization(plan.model_path),
        prompt_format=prompt_mod.PROMPT_FORMAT,
        # alpaca samples' shared instruction line (`{name}` for the character): chat puts it where training did
        instruction=prompt_mod.instruction_template(plan.records, cfg.name or None),
        heldout_file=HELDOUT_FILE,
        # the cues it learnt to answer to: chat.py, evaluation and the tab default --name to these
        characters=plan.characters,
        # the most turns a reply followed (the dataset's --rounds): chat.py and the tab default to it
        context_turns=prompt_mod.context_turns(plan.records, cfg.name),
        # samples whose user turns named no speaker (a chat app's sharegpt): chat gives the user's lines bare
        user_turns_named=plan.user_turns_named,
    )
    for k in ("resume", "overwrite"):
        s.pop(k, None)
    return s


# How often a measurement of the base model asks whether to stop (should_stop may read a file).
STOP_CHECK_SECONDS = 2.0


class _StopAsked(Exception):
    """A stop asked for while the base model was measured (before any step)."""


def _now_and_then(should_stop, seconds: float):
    """should_stop, asked at once (a stop asked for while the model loaded measures nothing), then at most
    once every `seconds` (never, with `seconds` inf)."""
    last = None

    def check() -> bool:
        nonlocal last
        now = time.monotonic()
        if seconds == float("inf") or (last is not None and now - last < seconds):
            return False
        last = now
        return bool(should_stop())

    return check


def _evaluate(model, samples, cfg, device, dist, autocast, collate, score, stop=None):
    """(mean loss over completion tokens of `samples`, number of tokens), sharded over processes.

    `collate` and `score` are batching.collate and batching.loss_sum with the run's settings bound. `stop`
    (one process only: the others would wait in the sum) is asked before each batch; yes raises _StopAsked."""
    import torch

    order = sorted(range(len(samples)), key=lambda i: len(samples[i]["input_ids"]))
    batches = [order[i : i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for b in batches[dist.rank :: dist.world]:
                if stop is not None and stop():
                    raise _StopAsked
                batch = collate([samples[i] for i in b])
                with autocast():
                    loss, n = score(model, batch)
                total += float(loss)
                count += n
    finally:  # memory running out here leaves the run training (run_eval goes on without the figure)
        if was_training:
            model.train()
    total, count = dist.sum([total, float(count)], device)
    return (total / count if count else float("nan")), int(count)


def _ppl(loss: float | None) -> float | None:
    if loss is None or loss != loss:
        return None
    return math.exp(min(loss, 50.0))


def train(
    cfg: TrainConfig,
    on_progress: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train an adapter as `cfg` says; see the module docstring. Raises UserError on bad input or OOM."""
    plan = check(cfg)
    device = modeling.pick_device(cfg.device)
    if device.type == "cuda":
        import torch

        torch.cuda.set_device(device)  # NCCL, DDP and anything else that takes "the current GPU": this one
    dist = _Dist(device)
    emit = (on_progress if dist.main else None) or (lambda d: None)
    # which files a name stood for (`-d bob` is the datasets folder's, `-d bob.json` the working folder's)
    emit({"event": "start", "model": str(plan.model_path), "dataset": str(plan.dataset_path),
          "samples": len(plan.records), "adapter": str(plan.out_dir), "device": modeling.device_label(device)})
    for note in plan.notes:
        emit({"event": "log", "message": note})
    try:
        with _claim(plan) if dist.main else contextlib.nullcontext():
            if dist.main:  # again, now that no other run can write there (one may have finished meanwhile)
                problems, plan.resume_from = _output_problems(cfg, plan.out_dir)
                if problems:
                    raise UserError(join_problems(problems))
            return _train(cfg, plan, device, dist, emit, should_stop)
    except (RuntimeError, MemoryError) as e:
        if not modeling.out_of_memory(e):
            raise
        raise UserError(f"out of memory on {device}: try {_memory_advice(cfg, device, plan.model_path)}") from None
    finally:
        dist.close()


@contextlib.contextmanager
def _claim(plan: Plan):
    """Hold `.NAME.lock.txt` beside the adapter while training, so that a second run of the same name stops at
    once instead of replacing this one's result; then tidy what a killed run of it left."""
    root, out = plan.lora_root, plan.out_dir
    made = missing_parents(root)  # `--lora_dir new/deep/loras`: all three are ours to remove if left empty
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{root}: cannot create ({e.strerror or e}) (--lora_dir)") from None

    try:
        with held_lock(paths.lock_file(root, out.name), lambda holder: _busy(out, holder)):
            _tidy(root, out)
            yield
    finally:
        remove_empty(made)  # only those nothing was saved in


def _busy(out: Path, holder: str) -> str:
    who = f" (process {holder})" if holder else ""
    return f"{out}: another training run{who} is writing this adapter: wait for it to finish, or pick another --lora_name"


def _tidy(root: Path, out: Path) -> None:
    """Leftovers of a killed run of this adapter (none runs: we hold its lock): a final save (`.NAME.tmp-PID`:
    swapped into place when it is complete, as the run would have done, its checkpoints then going, unless
    an adapter saved since stands there; else removed, the user's own files in it moved back first), the
    previous folder set aside for the swap (`.NAME.old-PID`: when the swap never finished, the new adapter
    goes in place if it was complete, else the old folder goes back), and half-written checkpoints
    (`.checkpoint-N.tmp`)."""
    for old in paths.swap_leftovers(root, out.name, "old"):
        new = root / f".{out.name}.tmp-{old.name.rsplit('-', 1)[-1]}"
        if out.exists():
            shutil.rmtree(old, ignore_errors=True)
        elif paths.finished_save(new):  # the new adapter was complete (its card is written last)
            replace_folder(new, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            replace_folder(old, out)
    for tmp in paths.swap_leftovers(root, out.name, "tmp"):
        if paths.finished_save(tmp) and not _newer_save(out, tmp):  # complete, the swap into place never came
            _swap_in(tmp, out, root / f".{out.name}.old-{tmp.name.rsplit('-', 1)[-1]}")
            continue
        # the user's files, moved here from the adapter folder just before a swap that never came
        rescued = _foreign_entries(tmp)
        if rescued and not out.is_dir():
            continue  # nowhere to put them back: the folder stays, as the user left it
        for entry in rescued:
            if not (out / entry).exists():
                replace_folder(tmp / entry, out / entry)
        if _foreign_entries(tmp):
            continue  # a name taken meanwhile: keep the folder rather than lose a file
        shutil.rmtree(tmp, ignore_errors=True)
    if out.is_dir():
        for path in out.glob(f".{CHECKPOINT_PREFIX}*.tmp"):
            shutil.rmtree(path, ignore_errors=True)


def _free_name(folder: Path, name: str) -> Path:
    """`folder / name`, or `NAME (2).EXT`, `NAME (3).EXT`, ... when that is taken."""
    path, n = folder / name, 1
    stem, dot, ext = name.rpartition(".") if "." in name.strip(".") else (name, "", "")
    while path.exists() or path.is_symlink():
        n += 1
        path = folder / (f"{stem} ({n}).{ext}" if dot else f"{name} ({n})")
    return path


def _newer_save(out: Path, tmp: Path) -> bool:
    """Whether `out` holds a finished adapter saved after `tmp` was (put there by hand since the kill): kept.
    By the cards' modification times, which copies keep (`cp -a` of the loras folder, a move to another
    disk); the change time would make every copied folder's old adapter look newer than the new one."""
    try:
        return paths.finished_save(out) and (out / "README.md").stat().st_mtime > (tmp / "README.md").stat().st_mtime
    except OSError:
        return False


@dataclass
class _Built:
    """A run's model made ready (base loaded, adapter attached, fast paths on), its encoded samples, and how a
    batch goes through it."""

    model: object
    train_set: list
    val_set: list
    n_dropped: int  # samples whose reply alone is longer than cutoff_len
    dropped_train: list[int]  # those of the training samples (their places in the list given)
    autocast: Callable
    scaler: object  # fp16's loss scaler, or None
    collate: Callable
    score: Callable
    facts: dict  # how it trains, for the run's settings (dtype, attention, packing...)


# From this many samples the phases before the first step take long enough to be said as they start
SAID_FROM = 5000


def _build(cfg: TrainConfig, plan: Plan, train_records: list[dict], val_records: list[dict], device, emit) -> _Built:
    """Load the base, encode the samples, attach the adapter, and switch on the fast paths that fit (one row
    without padding on the CPU, the scored last layer, the fused LoRA forward and kernels)."""
    import torch

    # a model stored quantised (an unsloth -bnb-4bit upload) loads as --load_in_4bit would load it
    quantized = cfg.load_in_4bit or cfg.load_in_8bit or bool(modeling.stored_quantization(plan.model_path))
    dtype = modeling.training_dtype(device, cfg.precision, quantized)
    attn = modeling.default_attn_implementation(device, dtype)  # 4-bit layers give back their input's dtype
    model, tokenizer = modeling.load_base(
        plan.model_path,
        load_in_4bit=cfg.load_in_4bit,
        load_in_8bit=cfg.load_in_8bit,
        device=device,
        for_training=True,
        attn_implementation=attn,
        dtype=dtype,
    )
    attn = getattr(model.config, "_attn_implementation", None) or attn  # load_base may have fallen back
    use_flash = attn == "flash_attention_2"
    n_virtual = cfg.num_virtual_tokens if cfg.method == "prompt_tuning" else 0
    cutoff, note = modeling.fit_cutoff(cfg.cutoff_len, model, n_virtual)
    if note:
        emit({"event": "log", "message": note})
    n_samples = len(train_records) + len(val_records)
    if n_samples >= SAID_FROM:  # a minute or more with nothing said, at hundreds of thousands of samples
        emit({"event": "log", "message": f"tokenizing {n_samples:,} samples ...", "phase": True})
    train_set, dropped_t = encoding.encode_records(train_records, tokenizer, cutoff, cfg.name)
    val_set, dropped_v = encoding.encode_records(val_records, tokenizer, cutoff, cfg.name)
    n_dropped = len(dropped_t) + len(dropped_v)
    if not train_set:
        raise UserError(
            f"no training sample fits in --cutoff_len {cutoff} ({n_dropped} dropped because their reply "
            "alone is longer): raise --cutoff_len" + (" (the model's context allows no more)" if note else "")
        )
    if n_dropped:
        emit({"event": "log", "message": f"{n_dropped} sample(s) dropped: their reply alone exceeds --cutoff_len {cutoff}"})

    gc = _use_gc(cfg, device)
    modeling.freeze_for_training(model, gc)
    kernels = modeling.apply_fused_kernels(model, device, cfg.fused_kernels)
    packing = cfg.packing and not n_virtual  # soft prompts go in front of each row: one sample a row
    # On the CPU a batch is one row without padding, attention a sample at a time (varlen.py), where
    # the model takes it; else padded rows and a block mask.
    flat = packing and device.type == "cpu" and varlen.enable(model, device)
    if flat:
        attn = varlen.NAME
    model = _attach_adapter(model, cfg, plan)
    fused_lora.fuse_lora_forward(model)
    keep_logits = batching.accepts_logits_to_keep(model)
    # A single row's last layer computed only where the loss reads it (last_layer.py); not under
    # gradient checkpointing, whose recomputation would run the layer's full forward.
    scored_last = flat and keep_logits and not gc and not n_virtual and last_layer.enable(model, device)
    capacity = None if use_flash else cutoff  # rows of at most cutoff_len: attention cost stays bounded
    with_mask = not use_flash
    # A sliding-window model (Mistral, Gemma's local layers) must see its window in training too: the
    # CPU's per-sample attention and flash-attention take it from each layer; the block mask, which
    # replaces the model's own, carries it when every layer slides, and is left out (padded rows, the
    # model's own masks) when only some do.
    window, everywhere = varlen.sliding_window(model.config)
    if window is not None and window >= cutoff:
        window = None  # no sample is longer than the window
    if packing and with_mask and not flat and window is not None and not everywhere:
        packing = False
        emit({"event": "log", "message": f"packing off: the model's local layers see {window} tokens and "
              "its others all of a sample, which one packed mask cannot say; rows are padded instead"})
    pad_id = tokenizer.pad_token_id

    # CUDA: autocast, as the recipes it is tested against. CPU bf16: without it (about 6% faster), the
    # base is bf16 already and the adapter's fp32 weights are cast where used (fused_lora.py, PEFT).
    use_amp = device.type == "cuda" and dtype in (torch.bfloat16, torch.float16)
    autocast = (lambda: torch.autocast("cuda", dtype=dtype)) if use_amp else contextlib.nullcontext
    scaler = torch.amp.GradScaler("cuda") if use_amp and dtype == torch.float16 else None
    # oneDNN compiles its bf16 CPU kernels once per matrix shape (tens of ms each): round the rows'
    # length and the number of scored positions up to a multiple of 64 so that few shapes recur.
    multiple = 64 if device.type == "cpu" and dtype == torch.bfloat16 else 1
    # SDPA takes the block mask as bools; eager attention (Gemma 2, GPT-Neo) adds it to its scores
    additive = dtype if packing and with_mask and not flat and attn != "sdpa" else None
    collate = functools.partial(batching.collate, pad_id=pad_id, packing=packing, capacity=capacity,
                                with_mask=with_mask, multiple=multiple, flat=flat, window=window, additive=additive)
    # with flash-attention too (no mask: the positions tell the samples apart), which a model that does not
    # pass them on to its attention (GPTBigCode, Persimmon) ignores
    problem = _packing_problem(model, device, collate, capacity) if packing and not flat else None
    if problem:
        packing = False
        collate = functools.partial(collate, packing=False)
        emit({"event": "log", "message": f"packing off: this model's {attn} attention {problem}; rows are padded "
              "instead"})
    score = functools.partial(batching.loss_sum, device=device, keep_logits=keep_logits, n_virtual=n_virtual,
                              multiple=multiple)

    facts = {"dtype": str(dtype).replace("torch.", ""), "gradient_checkpointing": gc, "attn_implementation": attn,
             # the packing asked for (what a resume must match); `packed`: what the model allowed
             "packed": packing, "scored_last_layer": scored_last, "fused_kernels": kernels}
    return _Built(model, train_set, val_set, n_dropped, dropped_t, autocast, scaler, collate, score, facts)


def _packing_problem(model, device, collate, capacity: int | None) -> str | None:
    """Why packed rows would not train as samples alone (None: they do): two samples packed in one row by
    `collate` must get the logits each gets alone (varlen.same_logits, as varlen.isolates). The block mask
    replaces the model's own, and a model may read it otherwise, or not take it."""
    import torch

    row, _, _ = varlen.probe_row(model, device)
    samples = [row[0, :5].tolist(), row[0, 5:].tolist()]
    order = batching.pack_rows([len(s) for s in samples], capacity)
    if len(order) > 1:
        return None  # rows too short for two samples: nothing is packed
    batch = collate([{"input_ids": s, "labels": s} for s in samples])
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            mask = batch.get("attention_mask")
            packed = model(input_ids=batch["input_ids"].to(device), position_ids=batch["position_ids"].to(device),
                           attention_mask=None if mask is None else mask.to(device)).logits[0].float()
            alone = torch.cat([model(input_ids=torch.tensor([samples[i]], device=device)).logits[0].float()
                               for i in order[0]])
    except (ValueError, RuntimeError, TypeError, IndexError):
        return "does not take a packed row's mask"  # (Bloom: its ALiBi wants the plain one)
    finally:
        model.train(was_training)
    return None if varlen.same_logits(packed[: len(alone)], alone) else "does not keep samples packed in one row apart"


def _train(cfg: TrainConfig, plan: Plan, device, dist: _Dist, emit, should_stop) -> TrainResult:
    import torch

    _seed_all(cfg.seed)
    records = plan.records
    # a run resumed splits as it began (copies apart, before they were kept together)
    together = plan.resume_from is None or _saved_settings(plan.resume_from).get("split") == SPLIT
    train_idx, val_idx = split(records, cfg.val_ratio, cfg.seed, together)
    if cfg.val_ratio > 0 and not val_idx:  # it is all trained on, so no held-out loss and no split saved
        distinct = len({_copy_key(r) for r in records})
        why = ("1 sample: too few to hold one out" if len(records) == 1 else
               f"{len(records)} samples, all copies of one: too few to hold one out apart from what is trained on"
               if distinct == 1 else f"{len(records)} samples, {distinct} distinct, each with more copies than the "
               f"{n_val_of(len(records), cfg.val_ratio)} to hold out: none held out (a copy held out would have "
               "been trained on)")
        emit({"event": "log", "message": f"{why} at --val_ratio {cfg.val_ratio:g}; no held-out loss, and "
                                         "evaluation will need -d"})
    elif val_idx:  # the first line counts every sample; this says how many of them are held out
        emit({"event": "log", "message": f"{len(val_idx)} of the {len(records)} samples held out for the held-out "
                                         f"loss (--val_ratio {cfg.val_ratio:g}; {HELDOUT_FILE} for evaluation)"})

    built = _build(cfg, plan, [records[i] for i in train_idx], [records[i] for i in val_idx], device, emit)
    model, train_set, val_set, n_dropped = built.model, built.train_set, built.val_set, built.n_dropped
    autocast, scaler, collate, score = built.autocast, built.scaler, built.collate, built.score

    params = [p for p in model.parameters() if p.requires_grad]
    if dist.main:
        _check_space(plan, sum(p.numel() * p.element_size() for p in params))
    # The fused kernel (CPU and CUDA) updates all adapter tensors at once: ~6x faster than the
    # per-tensor loop for the many small LoRA matrices (a tenth of a CPU step at hidden size 256).
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in params)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None)

    nb = math.ceil(len(train_set) / cfg.batch_size)
    per_rank = math.ceil(nb / dist.world)
    steps_per_epoch = math.ceil(per_rank / cfg.grad_accum)
    total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch
    warmup = int(round(cfg.warmup_ratio * total_steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(total_steps, warmup))

    settings = _settings(cfg, plan)
    settings["split"] = SPLIT if together else "plain"
    if plan.cues:  # the characters it learns: a character whose every sample was held out or dropped is not one
        dropped = {train_idx[i] for i in built.dropped_train}
        settings["characters"] = prompt_mod.characters_of(plan.cues[i] for i in train_idx if i not in dropped)
        unlearnt = [c for c in plan.characters if c not in settings["characters"]]
        if unlearnt:
            emit({"event": "log", "message": f"not learnt: {', '.join(unlearnt)} (each of their samples was held "
                                             "out or has a reply longer than --cutoff_len)"})
    if not plan.characters:  # e.g. a general alpaca dataset: its replies follow no one's `Name:`
        then = (f"chat.py and the tab cue {cfg.name} (--name), which it never answered to" if cfg.name
                else "chat.py and the tab will ask for --name")
        emit({"event": "log", "message": "no sample ends its prompt with a character's cue (`Name:`): the adapter "
                                         f"learns to answer prompts, not to speak as a character; {then}"})
    if settings["instruction"] is None and any(isinstance(r, dict) and prompt_mod.instruction_of(r) for r in records):
        # chat.py, the tab and the webui put one shared instruction line in front (training_parameters.json)
        emit({"event": "log", "message": "samples with different instruction lines or system messages (or some "
                                         "without one, or one with a `{name}` of its own): chat prompts cannot "
                                         "have the line each was trained with; one instruction for all "
                                         "(prepare_dataset.py --instruction) chats as trained"})
    settings.update(
        base_fingerprint=modeling.base_fingerprint(model),
        n_train=len(train_set),
        n_val=len(val_set),
        n_dropped=n_dropped,
        world_size=dist.world,
        total_steps=total_steps,
        steps_per_epoch=steps_per_epoch,
        **built.facts,
    )

    log = {"steps": [], "evals": []}
    step, epoch, step_in_epoch = 0, 0, 0
    base_eval = saved_window = None
    if plan.resume_from is not None:
        state = _restore(plan.resume_from, settings, model, optimizer, scheduler, scaler, device, dist)
        step, epoch, step_in_epoch = state["step"], state["epoch"], state["step_in_epoch"]
        log = state.get("log", log)
        saved_window = state.get("loss_window")
        base_eval = state.get("base_eval_loss")
        problem = _too_few_steps(plan.resume_from.name, step, total_steps, state.get("settings", {}))
        if problem:
            raise UserError(problem)
        emit({"event": "log", "message": f"resumed from {plan.resume_from} at step {step} of {total_steps}"})
        for note in (_half_precision_change(state.get("settings", {}), settings),
                     _length_change(state.get("settings", {}), total_steps)):
            if note:
                emit({"event": "log", "message": note})
        emit({"event": "history", "steps": log.get("steps", [])})  # the loss curve before the stop
    elif cfg.overwrite and plan.out_dir.is_dir():
        # a previous run's checkpoints must not be resumed by mistake, but they are all the user has
        # until this run saves: they go with this run's first checkpoint (or its final adapter)
        # only a trainer's (`checkpoint-N` with its state, `.checkpoint-N.tmp`): a `checkpoint-best` or a
        # `checkpoint-1` of the user's is theirs, kept as _foreign_entries keeps it
        plan.stale = [p for p in plan.out_dir.iterdir()
                      if p.is_dir() and _is_run_entry(p) and p.name.lstrip(".").startswith(CHECKPOINT_PREFIX)]

    ddp_model = model
    if dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ddp_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)

    eval_time = 0.0

    def run_eval(base: bool = False, stop=None) -> tuple[float | None, float | None]:
        nonlocal eval_time
        if not val_set:
            return None, None
        t0 = time.time()
        ran_out = False
        try:
            if base:  # the base model alone: no LoRA, no soft prompt
                with model.disable_adapter():
                    loss, _ = _evaluate(model, val_set, cfg, device, dist, autocast, collate,
                                        functools.partial(score, n_virtual=0), stop)
            else:
                loss, _ = _evaluate(model, val_set, cfg, device, dist, autocast, collate, score)
        except (RuntimeError, MemoryError) as e:
            # the held-out batches group the longest samples: a figure is not worth the run (the final
            # save comes after the last one). One process only: the others would wait in a collective.
            if dist.world > 1 or not modeling.out_of_memory(e):
                raise
            ran_out = True
        eval_time += time.time() - t0
        if ran_out:  # out of the except clause, so that the batch's tensors are gone
            modeling.free_memory()
            whose = "the base model's" if base else "the"
            emit({"event": "log", "message": f"{whose} held-out loss was not measured at step {step}: out of "
                                             "memory (the run goes on; a smaller --batch_size measures it)"})
            return None, None
        return loss, _ppl(loss)

    def stopped_before_training() -> TrainResult:  # nothing new to save
        checkpoint = plan.resume_from
        emit({"event": "done", "step": step, "total_steps": total_steps, "stopped": True,
              "checkpoint": str(checkpoint) if checkpoint else None})
        return TrainResult(plan.out_dir, step, total_steps, stopped=True, checkpoint=checkpoint,
                           base_eval_loss=base_eval, n_train=len(train_set), n_val=len(val_set),
                           n_dropped=n_dropped, log=log)

    if base_eval is None and val_set and cfg.eval_base and plan.resume_from is None:
        # minutes on a big model: a stop asked for while the model loaded or meanwhile ends it within a
        # couple of seconds (one process: several would wait for each other in the sum; they measure it whole)
        stop = (_now_and_then(should_stop, STOP_CHECK_SECONDS) if should_stop is not None and dist.world == 1
                else None)
        if len(val_set) >= SAID_FROM // 5:
            emit({"event": "log", "message": f"measuring the base model's held-out loss on {len(val_set):,} "
                                             "samples before training ...", "phase": True})
        try:
            base_eval, base_ppl = run_eval(base=True, stop=stop)
        except _StopAsked:
            return stopped_before_training()
        if base_eval is not None:
            emit({"event": "eval", "step": 0, "total_steps": total_steps, "epoch": 0, "eval_loss": base_eval,
                  "perplexity": base_ppl, "base": True})
    # A stop asked for before now ends here, saving nothing. Every process asks, so that they all take the
    # same branch; once, so that a stop asked for from the first step on trains that step and saves.
    if dist.sum([1.0 if should_stop is not None and should_stop() else 0.0], device)[0] > 0:
        return stopped_before_training()
    emit({"event": "begin", "step": step, "total_steps": total_steps})  # a stop now saves a checkpoint

    last_saved = step if plan.resume_from is not None else -1
    last_save_time = time.time()
    tokens_seen, t_start = 0, time.time()
    eval_time = 0.0  # (the base model's measurement, before: not in the run's tokens/s)
    steps_this_session = 0
    window = {"loss": 0.0, "n": 0}
    if isinstance(saved_window, dict) and set(saved_window) == {"loss", "n"}:
        window = {"loss": float(saved_window["loss"]), "n": float(saved_window["n"])}
    last_loss = None
    eval_loss = ppl = None
    stopped = False
    bad_steps = 0  # steps in a row with a non-finite loss

    def save_checkpoint() -> Path:
        nonlocal last_saved, last_save_time
        path = _save_checkpoint(model, optimizer, scheduler, scaler, plan, dist, cfg, settings, log,
                                step, epoch, step_in_epoch, base_eval, window)
        last_saved, last_save_time = step, time.time()
        emit({"event": "save", "step": step, "total_steps": total_steps, "epoch": epoch, "path": str(path)})
        return path

    ddp_model.train()
    while step < total_steps and not stopped:
        batches = batching.epoch_batches(len(train_set), cfg.batch_size, cfg.seed, epoch)
        mine = [batches[(j * dist.world + dist.rank) % nb] for j in range(per_rank)]
        groups = [mine[k : k + cfg.grad_accum] for k in range(0, per_rank, cfg.grad_accum)]
        while step_in_epoch < len(groups) and step < total_steps:
            group = groups[step_in_epoch]
            collated = [collate([train_set[i] for i in b]) for b in group]
            n_group = sum(int((c["targets"] != encoding.IGNORE_INDEX).sum()) for c in collated)
            # every process's loss over the step's target tokens on all of them, times the process count
            # (DDP averages the gradients): the mean over the step's tokens wherever they were, as one
            # process with --grad_accum gives, and as the loss is logged
            n_all = n_group if dist.world == 1 else dist.sum([float(n_group)], device)[0]
            step_loss, step_tokens = 0.0, 0
            ran_out = False
            try:
                for k, batch in enumerate(collated):
                    sync = k == len(collated) - 1 or dist.world == 1
                    ctx = contextlib.nullcontext() if sync else ddp_model.no_sync()
                    with ctx:
                        with autocast():
                            loss, n = score(ddp_model, batch)
                        scaled = loss * dist.world / max(n_all, 1)
                        (scaler.scale(scaled) if scaler else scaled).backward()
                    step_loss += float(loss.detach())
                    step_tokens += batch["n_tokens"]
            except (RuntimeError, MemoryError) as e:
                # with steps to keep, in one process only: the others of a DDP run would wait for it in
                # their next collective
                if step == 0 or dist.world > 1 or not modeling.out_of_memory(e):
                    raise
                ran_out = True
            if ran_out:  # out of the except clause: the error's frames, which held the activations, are gone
                # and so must the step's own tensors: a backward cut off keeps its graph alive through them
                loss = scaled = batch = collated = None  # noqa: F841
                raise _out_of_memory_mid_run(cfg, step, device, plan, last_saved, optimizer, save_checkpoint)
            if scaler:
                scaler.unscale_(optimizer)
            if cfg.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            lr = scheduler.get_last_lr()[0]
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            step_in_epoch += 1
            steps_this_session += 1
            stop_local = 1.0 if (should_stop is not None and should_stop()) else 0.0
            since_save = time.time() - last_save_time
            save_due = 1.0 if since_save >= EPOCH_CHECKPOINT_MIN_S else 0.0  # ranks agree below
            timed = 1.0 if cfg.save_minutes and since_save >= cfg.save_minutes * 60 else 0.0
            loss_sum, n_sum, tok_sum, stop_any, save_due, timed = dist.sum(
                [step_loss, float(n_group), float(step_tokens), stop_local, save_due, timed], device)
            last_loss = loss_sum / max(n_sum, 1)
            # a NaN or infinite loss poisons the weights at once (the fp16 scaler skips such steps: a
            # few in a row are its normal search for a scale)
            bad_steps = 0 if math.isfinite(last_loss) else bad_steps + 1
            if bad_steps > (8 if scaler is not None else 0):
                raise UserError(f"training diverged: the loss is {last_loss} at step {step}; lower --learning_rate "
                                f"(it was {cfg.lr:g}) and train again" + ("" if cfg.max_grad_norm else
                                ", or set --max_grad_norm 1") + ("" if scaler is None else
                                ", or --precision fp32 (fp16, this GPU's half precision, overflows on some models)"))
            tokens_seen += tok_sum
            window["loss"] += loss_sum
            window["n"] += n_sum
            elapsed = time.time() - t_start
            train_s = max(elapsed - eval_time, 1e-9)
            frac_epoch = epoch + step_in_epoch / len(groups)
            emit({
                "event": "step", "step": step, "total_steps": total_steps, "epoch": round(frac_epoch, 4),
                "loss": last_loss, "lr": lr, "tokens_per_s": tokens_seen / train_s,
                "eta_s": elapsed / steps_this_session * (total_steps - step), "elapsed_s": elapsed,
            })
            if step % cfg.logging_steps == 0 or step == total_steps:
                entry = {"step": step, "epoch": round(frac_epoch, 4), "loss": window["loss"] / max(window["n"], 1),
                         "lr": lr, "tokens_per_s": tokens_seen / train_s}
                log["steps"].append(entry)
                window = {"loss": 0.0, "n": 0}
                emit({"event": "log", **entry, "total_steps": total_steps})
            end_of_epoch = step_in_epoch == len(groups)
            if end_of_epoch:
                eval_loss, ppl = run_eval()
                if eval_loss is not None:
                    entry = {"epoch": epoch + 1, "step": step, "eval_loss": eval_loss, "perplexity": ppl}
                    log["evals"].append(entry)
                    emit({"event": "eval", "total_steps": total_steps, **entry})
                epoch += 1
                step_in_epoch = 0
            if stop_any > 0 and step < total_steps:  # a stop at the last step just finishes
                stopped = True
                break
            epoch_save = end_of_epoch and save_due > 0
            if step < total_steps and ((cfg.save_steps and step % cfg.save_steps == 0) or epoch_save or timed > 0):
                save_checkpoint()
            if end_of_epoch:
                break

    checkpoint = None
    if stopped:
        checkpoint = _save_checkpoint_path(plan, step) if last_saved == step else save_checkpoint()
        emit({"event": "done", "step": step, "total_steps": total_steps, "stopped": True, "checkpoint": str(checkpoint)})
        return TrainResult(plan.out_dir, step, total_steps, stopped=True, checkpoint=checkpoint, train_loss=last_loss,
                           eval_loss=eval_loss, perplexity=ppl, base_eval_loss=base_eval, n_train=len(train_set),
                           n_val=len(val_set), n_dropped=n_dropped, log=log)

    if val_set and (not log["evals"] or log["evals"][-1]["step"] != step):
        eval_loss, ppl = run_eval()
        if eval_loss is not None:
            entry = {"epoch": round(epoch + step_in_epoch / max(steps_per_epoch, 1), 4), "step": step,
                     "eval_loss": eval_loss, "perplexity": ppl}
            log["evals"].append(entry)
            emit({"event": "eval", "total_steps": total_steps, **entry})
    result = TrainResult(plan.out_dir, step, total_steps, train_loss=last_loss, eval_loss=eval_loss, perplexity=ppl,
                         base_eval_loss=base_eval, n_train=len(train_set), n_val=len(val_set), n_dropped=n_dropped,
                         log=log)
    if dist.main:
        heldout = [records[i] for i in val_idx]
        _save_final(model, plan, cfg, settings, log, heldout, result)
    dist.barrier()
    emit({"event": "done", "step": step, "total_steps": total_steps, "stopped": False, "output_dir": str(plan.out_dir),
          "eval_loss": eval_loss, "perplexity": ppl})
    return result


# Settings a method does not read (lora_finetune refuses them on the command line; the tab's form sends all).
_UNUSED_BY = {"prompt_tuning": ("lora_rank", "lora_alpha", "lora_dropout", "target_modules"),
              "lora": ("num_virtual_tokens",)}


def _restore(checkpoint: Path, settings: dict, model, optimizer, scheduler, scaler, device, dist) -> dict:
    """Load a checkpoint into the run (the adapter's weights, the optimizer, scheduler and loss scaler, this
    process's RNG), refusing one trained with other settings; returns its saved state, step, epoch and
    step_in_epoch made ints. A damaged file is one line naming the checkpoint (_read_checkpoint)."""
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = _read_checkpoint(checkpoint, lambda: dict(json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8"))))
    problem = _resume_mismatch(checkpoint, state.get("settings", {}), settings)
    if problem:
        raise UserError(problem)

    def load():
        set_peft_model_state_dict(model, load_file(str(checkpoint / "adapter_model.safetensors"), device=str(device)))
        optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", map_location=device, weights_only=True))
        scheduler.load_state_dict(torch.load(checkpoint / "scheduler.pt", weights_only=True))
        if scaler is not None and (checkpoint / "scaler.pt").exists():
            scaler.load_state_dict(torch.load(checkpoint / "scaler.pt", weights_only=True))

    _read_checkpoint(checkpoint, load)
    state.update(_read_checkpoint(checkpoint, lambda: {k: int(state[k]) for k in ("step", "epoch", "step_in_epoch")}))
    rng_file = checkpoint / f"rng_state_{dist.rank}.pt"
    if rng_file.exists():
        _read_checkpoint(checkpoint, lambda: _set_rng_state(torch.load(rng_file, weights_only=False)))
    return state


def _length_change(before: dict, total_steps: int) -> str | None:
    """A note when a resumed run is to end elsewhere than planned: the learning-rate schedule is fitted to
    the new length from here on, so the rate jumps (a shorter run decays faster)."""
    planned = before.get("total_steps")
    if not _real(planned) or planned == total_steps:
        return None
    return (f"the run was planned for {planned} steps and these settings train {total_steps}: the learning-rate "
            f"schedule is fitted to {total_steps} from here on")


_HALF = frozenset({"float16", "bfloat16"})


def _half_precision_change(before: dict, settings: dict) -> str | None:
    """A note when a run goes on in the other half precision: the card decides between them (fp16 on a T4
    or V100, bf16 from Ampere on), so a checkpoint moved between such cards may resume, its adapter and
    optimizer being fp32 either way. fp32 against either is a choice (--precision) and must match."""
    was, now = before.get("dtype"), settings.get("dtype")
    if was == now or not {was, now} <= _HALF:
        return None
    return (f"the run was trained in {was} and goes on in {now}, this card's half precision: the losses "
            "may differ slightly from an uninterrupted run's")


def _resume_mismatch(resume_from: Path, before: dict, settings: dict, shape: dict | None = None) -> str | None:
    """Why a checkpoint cannot be resumed with these settings (None: it can). Keys missing on either side
    are not compared: check() has no model yet, so no fingerprint or dtype; `shape`, the model's fingerprint
    as its config.json gives it, only says whether a model with other weights has the same shape."""
    unused = _UNUSED_BY.get(settings.get("method"), ())  # e.g. the LoRA rank of a prompt-tuning run
    if "samples_text_sha256" in before and "samples_text_sha256" in settings:  # the file's places not counted
        unused = (*unused, "samples_sha256")

    def same(k) -> bool:
        if k == "target_modules" and isinstance(before[k], list) and isinstance(settings[k], list):
            return sorted(before[k]) == sorted(settings[k])  # `v_proj,q_proj` is `q_proj,v_proj`
        if k == "base_weights_sha256" and None in (before[k], settings[k]):  # a weights file unreadable: unknown
            return True
        return before[k] == settings[k] or (k == "dtype" and _half_precision_change(before, settings))

    changed = [k for k in RESUME_KEYS
               if k in before and k in settings and k not in unused and not same(k)]
    if "samples_sha256" not in before and before.get("dataset_sha256") not in (None, settings["dataset_sha256"]):
        changed.append("samples_sha256")  # a checkpoint from before samples were hashed: the file's bytes
    if not changed:
        return None

    def what(k):
        if k in ("samples_sha256", "samples_text_sha256"):
            was, now = before.get("dataset"), settings.get("dataset")
            changed_file = (f"{now} has changed since the checkpoint was saved" if was == now
                            else f"it was trained on {was}, now {now}, whose samples differ")
            return f"{changed_file}: resume with the samples it was trained on, or train anew with --overwrite"
        if k == "base_fingerprint":
            return f"the base model differs (was {before.get('base_model')}, now {settings.get('base_model')})"
        if k == "base_weights_sha256":
            now = settings.get("base_fingerprint", shape)
            same_shape = ("" if not now or not before.get("base_fingerprint")
                          else ": the same shape, other weights" if now == before["base_fingerprint"]
                          else ": another shape")
            return (f"the base model's weights differ from those it was trained on (was {before.get('base_model')}, "
                    f"now {settings.get('base_model')}{same_shape}): resume on the model it was trained on, or "
                    "train anew with --overwrite")
        if k == "dtype":
            return f"--precision gave {before[k]}, now {settings.get(k)}"
        if k == "world_size":
            return (f"it ran as {before[k]} process(es), now {settings.get(k)}: resume with as many "
                    f"(torchrun --nproc_per_node {before[k]}, or no torchrun for 1)")
        if k == "lora_alpha" and "lora_rank" in changed and settings.get(k) == 2 * settings.get("lora_rank", 0):
            # not given: twice the rank, so a changed rank changes it too
            return f"--lora_alpha was {before[k]!r}, now {settings.get(k)!r} (twice --lora_rank when not given)"
        return f"--{k} was {before[k]!r}, now {settings.get(k)!r}"

    advised = {"samples_sha256", "samples_text_sha256", "base_weights_sha256"}  # each says what to do itself
    return (f"--resume: {resume_from} was trained with other settings: " + "; ".join(what(k) for k in changed)
            + ("" if set(changed) <= advised else ". Resume with its settings, or train anew with --overwrite"))


def _read_checkpoint(path: Path, read):
    """`read()` of a checkpoint's files; a damaged one is one line that names the checkpoint to fall back on."""
    try:
        return read()
    except (*modeling.damaged_file_types(), RuntimeError, KeyError, TypeError) as e:  # torch's reader: RuntimeError
        if modeling.out_of_memory(e):
            raise  # not the file's fault: train() says what to do
        older = [c for c in checkpoints(path.parent) if c != path]
        fallback = (f"delete it (or move it away) and --resume continues from {older[-1].name}" if older
                    else "no older checkpoint is kept: train anew with --overwrite")
        raise UserError(f"{path}: damaged checkpoint, cannot resume from it ({brief(e)}); {fallback}") from None


def _memory_advice(cfg: TrainConfig, device, model_path: Path | None = None) -> str:
    """What frees memory for this run: not what it does already (a 4-bit base, asked for or stored so in
    `model_path`: a -bnb-4bit upload; checkpointing, on by default on a GPU)."""
    advice = ["fewer --num_virtual_tokens"] if cfg.method == "prompt_tuning" else []
    if not (cfg.load_in_4bit or (model_path is not None and modeling.stored_quantization(model_path))):
        advice.append("--load_in_4bit")
    advice.append("a smaller --batch_size or --cutoff_len (with --grad_accum to keep the effective batch)")
    if not _use_gc(cfg, device):
        advice.append("--gradient_checkpointing on")
    return ", ".join(advice[:-1]) + (", or " if len(advice) > 1 else "") + advice[-1]


def _out_of_memory_mid_run(cfg: TrainConfig, step: int, device, plan: Plan, last_saved: int, optimizer,
                           save_checkpoint) -> UserError:
    """Memory ran out in a step's forward or backward pass: the weights, optimizer and schedule are still
    the last step's, so the steps trained so far are saved as a checkpoint (usable as an adapter, and
    resumable once memory is freed) instead of being lost with the error."""
    optimizer.zero_grad(set_to_none=True)  # the step's half-made gradients
    modeling.free_memory()
    checkpoint = _save_checkpoint_path(plan, step) if last_saved == step else save_checkpoint()
    return UserError(
        f"out of memory on {device} at step {step + 1}: the {step} steps trained are saved in {checkpoint} (an "
        "adapter you can use already); after freeing memory (other programs, a model loaded in the webui) go on "
        f"with --resume, or train anew (--overwrite) with {_memory_advice(cfg, device, plan.model_path)}"
    )


def _save_checkpoint_path(plan: Plan, step: int) -> Path:
    return plan.out_dir / f"{CHECKPOINT_PREFIX}{step}"


def _save_checkpoint(model, optimizer, scheduler, scaler, plan, dist, cfg, settings, log, step, epoch,
                     step_in_epoch, base_eval, window=None) -> Path:
    """Write checkpoint-N atomically (a temp folder renamed into place), keep the newest save_total_limit."""
    import torch

    final = _save_checkpoint_path(plan, step)
    tmp = plan.out_dir / f".{final.name}.tmp"
    with _writing(tmp, "the checkpoint", _kept_checkpoint(plan)):
        if dist.main:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
        dist.barrier()
        torch.save(_rng_state(), tmp / f"rng_state_{dist.rank}.pt")
        if dist.main:
            model.save_pretrained(str(tmp))
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
            torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
            if scaler is not None:
                torch.save(scaler.state_dict(), tmp / "scaler.pt")
        dist.barrier()
        if dist.main:
            atomic_write_json(tmp / STATE_FILE, {
                "step": step, "epoch": epoch, "step_in_epoch": step_in_epoch, "settings": settings, "log": log,
                "base_eval_loss": base_eval, "world_size": dist.world,
                # the loss summed since the last logged step: the log's next entry covers the same steps
                # as an uninterrupted run's
                "loss_window": window,
            })
            _plain_modes(tmp)
            sync_folder(tmp)
            if final.exists():
                shutil.rmtree(final)
            replace_folder(tmp, final)
            sync_folder(plan.out_dir, files=False)
            for stale in plan.stale:  # --overwrite: the replaced run's checkpoints go once this run has one
                if stale != final:  # one of the same step was replaced just above
                    shutil.rmtree(stale, ignore_errors=True)
            plan.stale.clear()
            for old in checkpoints(plan.out_dir)[: -cfg.save_total_limit]:
                # renamed first, in one step: a kill midway through the deletion leaves a `.checkpoint-N.tmp`
                # that the next run clears, not a half-deleted checkpoint offered for --resume
                gone = old.with_name(f".{old.name}.tmp")
                shutil.rmtree(gone, ignore_errors=True)
                try:
                    replace_folder(old, gone)
                except OSError:  # held open by another program: kept until a later save tries again
                    continue
                shutil.rmtree(gone, ignore_errors=True)  # what stays is cleared by the next run
    dist.barrier()
    return final


def _plain_modes(folder: Path) -> None:
    """safetensors writes its file 0600: what we save gets the mode a plain write would give it."""
    mode = default_file_mode()
    for f in folder.iterdir():
        if f.is_file():
            f.chmod(mode)


def _kept_checkpoint(plan: Plan) -> str:
    found = [c for c in checkpoints(plan.out_dir) if c not in plan.stale] if plan.out_dir.is_dir() else []
    if found:
        return f"{found[-1]} is kept: free some space, then --resume continues from it"
    return "no checkpoint of this run was saved yet: free some space and train again"


@contextlib.contextmanager
def _writing(tmp: Path, what: str, kept: str):
    """A failed save (disk full, permissions) is one line naming the folder and what is kept, and leaves
    no partial folder behind (a full disk stays full otherwise)."""
    try:
        yield
    except (UserError, KeyboardInterrupt):
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except Exception as e:  # OSError, torch's writer (RuntimeError), safetensors' SafetensorError
        shutil.rmtree(tmp, ignore_errors=True)
        with contextlib.suppress(OSError):
            tmp.parent.rmdir()  # a run folder this first save made (only if empty)
        reason = e.strerror if isinstance(e, OSError) and e.strerror else brief(e)
        free = free_bytes(tmp.parent)
        if free is not None and free < 64 << 20 and "space" not in reason.lower():  # torch's writer does not say
            reason = f"the disk is full: {free >> 20} MB free; {reason}"
        elif "unexpected pos" in reason:  # torch's writer, on a write the system cut short
            reason = f"a write was cut short: a disk quota or a file-size limit (ulimit -f)?; {reason}"
        raise UserError(f"{tmp}: cannot save {what} ({reason}); {kept}") from None


def _check_space(plan: Plan, adapter_bytes: int) -> None:
    """Refuse to start a run whose saves the disk cannot hold: a checkpoint (the adapter and the optimizer's
    two moments) and the finished adapter beside it, before hours of training rather than after them."""
    need = 4 * adapter_bytes + (16 << 20)
    free = free_bytes(plan.out_dir)
    if free is not None and free < need:
        raise UserError(f"{nearest_existing(plan.out_dir)}: {free >> 20} MB free, and this run's checkpoint and "
                        f"adapter need about {need >> 20} MB: free some space, or choose another --lora_dir")


def _fmt(x, digits=4):
    return "-" if x is None else f"{x:.{digits}f}"


def _held_out_words(settings: dict, result: TrainResult) -> str:
    """The held-out count as heldout.json holds it (evaluation scores those), and how many of them the run
    scored when some were longer than the cutoff."""
    held = settings.get("n_heldout", result.n_val)
    if not held:
        return "0"
    scored = f", {result.n_val} of them scored (the rest longer than the cutoff)" if held != result.n_val else ""
    return f"{held} (`{HELDOUT_FILE}`{scored})"


CARD_CAST = 8  # characters named on a card; more are counted


def _cast_words(characters: list[str]) -> str:
    """Whom an adapter speaks as, for its card: the characters it learnt, most trained replies first."""
    if not characters:
        return "for prompts that cue no character, from"
    shown = [f"`{c}`" for c in characters[:CARD_CAST]]
    more = len(characters) - len(shown)
    if more:
        shown.append(f"{more} more")
    if len(shown) == 1:
        return f"to speak as {shown[0]}, from"
    listed = ", ".join(shown[:-1]) + " and " + shown[-1]
    return f"to speak as {listed} (most trained lines first), from"


def _cue_example(settings: dict) -> str:
    return prompt_mod.recorded_name(settings) or next(iter(settings.get("characters") or []), "") or "Name"


def model_card(settings: dict, result: TrainResult, name: str) -> str:
    """README.md beside the adapter: what it is, what it was trained on, how to load it, how it did."""
    method = "LoRA" if settings["method"] == "lora" else "prompt tuning"
    base_ppl = _ppl(result.base_eval_loss)
    lines = [
        f"# {name}",
        "",
        f"A {method} adapter {paths.CARD_MARK} on `{settings['base_model']}` "
        f"({settings['base_fingerprint'].get('model_type')}) {_cast_words(settings.get('characters') or [])} "
        f"`{Path(settings['dataset']).name}`.",
        "",
        "## Prompt format",
        "",
        f"The last few dialogue turns as `Speaker: text` lines, then the cue `{_cue_example(settings)}:` of the "
        "character who answers; the model writes one line and a newline. Stop generation at the first newline.",
        "",
        "## Data",
        "",
        f"- dataset: `{settings['dataset']}`",
        f"- training samples: {result.n_train}; held out: {_held_out_words(settings, result)}; "
        f"dropped as too long: {result.n_dropped}",
        "",
        "## Settings",
        "",
    ]
    method_keys = (["lora_rank", "lora_alpha", "lora_dropout", "target_modules"] if settings.get("method") == "lora"
                   else ["num_virtual_tokens"])
    keys = ["method", *method_keys, "learning_rate", "batch_size", "grad_accum", "epochs", "max_steps", "cutoff_len",
            "load_in_4bit", "load_in_8bit", "seed", "world_size", "dtype"]
    for k in keys:
        if k in settings and settings[k] is not None:
            lines.append(f"- {k}: `{settings[k]}`")
    trained = f" ({settings['epochs_trained']:g} epochs)" if settings.get("epochs_trained") is not None else ""
    lines += [
        f"- steps: {result.step}{trained}",
        "",
        "## Results (held-out completions)",
        "",
        "| model | loss | perplexity |",
        "|---|---|---|",
        f"| base | {_fmt(result.base_eval_loss)} | {_fmt(base_ppl, 2)} |",
        f"| with this adapter | {_fmt(result.eval_loss)} | {_fmt(result.perplexity, 2)} |",
        "",
        "## Loading",
        "",
        "In text-generation-webui: put this folder in the loras folder, load the base model with the",
        "Transformers loader, pick the adapter in the LoRA menu, and add `\"\\n\"` to the custom stopping strings",
        "(the dialogue_lora extension does this for you).",
        "",
        "With PEFT:",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "from peft import PeftModel",
        f"base = AutoModelForCausalLM.from_pretrained({settings['base_model_path']!r})",
        f"model = PeftModel.from_pretrained(base, 'loras/{name}')",
        "```",
        "",
        f"Trained {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC.",
        "",
    ]
    return "\n".join(lines)


def _save_final(model, plan: Plan, cfg: TrainConfig, settings: dict, log: dict, heldout: list[dict],
                result: TrainResult) -> None:
    """Write the complete adapter folder beside the target, then swap it into place."""
    root = plan.lora_root
    tmp = root / f".{cfg.lora_name}.tmp-{os.getpid()}"
    with _writing(tmp, "the adapter", _kept_checkpoint(plan)):
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        model.save_pretrained(str(tmp))
        per_epoch = settings.get("steps_per_epoch")
        final_settings = dict(settings, n_train=result.n_train, n_val=result.n_val, steps=result.step,
                              # what ran: --max_steps can end a run before or after --epochs
                              epochs_trained=round(result.step / per_epoch, 4) if per_epoch else None,
                              final_eval_loss=result.eval_loss, final_perplexity=result.perplexity,
                              base_eval_loss=result.base_eval_loss,
                              # heldout.json's samples; n_val of them fit the cutoff and were scored
                              n_heldout=len(heldout))
        if heldout:
            write_records(tmp / HELDOUT_FILE, heldout)
        else:  # --val_ratio 0: no split to record (evaluation then asks for -d)
            final_settings["heldout_file"] = None
        atomic_write_json(tmp / PARAMS_FILE, final_settings)
        atomic_write_json(tmp / LOG_FILE, log)
        _plain_modes(tmp)
        atomic_write_text(tmp / "README.md", model_card(final_settings, result, cfg.lora_name))
        sync_folder(tmp)
    try:
        _swap_in(tmp, plan.out_dir, root / f".{cfg.lora_name}.old-{os.getpid()}")
    except OSError as e:  # (Windows: a program holding the folder open, past replace_folder's retries)
        raise UserError(f"{plan.out_dir}: the finished adapter could not be put in place ({e.strerror or e}); it "
                        f"is saved whole in {tmp}, and the next run of the name {cfg.lora_name!r} puts it in "
                        "place before anything else (close first what has the folder open)") from None


def _swap_in(tmp: Path, out: Path, old: Path) -> None:
    """A complete adapter folder `tmp` into place as `out`; what `out` held goes (the replaced adapter, the
    run's checkpoints) but the user's own files, which move across. Killed at any point, _tidy finishes it."""
    if out.exists():
        moved = []  # (the user's entry, where it went in tmp)
        try:
            for name in _foreign_entries(out):  # the user's notes beside the adapter stay with it
                # a name the killed swap moved already, written again since: both kept
                moved.append((name, _free_name(tmp, name)))
                replace_folder(out / name, moved[-1][1])
            replace_folder(out, old)
            try:
                replace_folder(tmp, out)
            except OSError:
                replace_folder(old, out)
                raise
        except OSError:
            # the folder as it was, the user's files back in it; the next run puts the new one in place
            for name, there in moved:  # each that can (one held open stays in tmp, with the new adapter)
                if there.exists() or there.is_symlink():
                    with contextlib.suppress(OSError):
                        replace_folder(there, out / name)
            raise
        sync_folder(out.parent, files=False)
        shutil.rmtree(old, ignore_errors=True)  # the replaced adapter and this run's checkpoints
    else:
        replace_folder(tmp, out)
