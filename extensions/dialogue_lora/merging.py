"""A LoRA adapter merged into its base model: one full model folder that every loader reads.

The webui applies adapters with its Transformers loader only. Merged, the character is an ordinary model
folder in the models directory: the Transformers loader loads it as is, and llama.cpp's converter turns it
into a GGUF for the llama.cpp loader, koboldcpp or ollama.

    result = merge(MergeConfig(model_name="tiny-llama", lora_name="bob"))   # -> models/tiny-llama-bob

The folder is written beside its place (`.NAME.tmp-PID`) and renamed into it when complete. A folder
already there is replaced only with `overwrite`, and only when an earlier merge wrote it (its
`MERGE_FILE`): a model you downloaded is never replaced, nor is the base itself.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError, brief, join_problems
from .fileio import atomic_write_json, atomic_write_text, default_file_mode, free_bytes, held_lock, sync_folder
from .paths import check_name, resolve_adapter, resolve_dirs, resolve_model

MERGE_FILE = "dialogue_lora_merge.json"
DTYPES = {"auto": None, "bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4, "float64": 8}
_WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pt", "*.pth")


@dataclass
class MergeConfig:
    model_name: str
    """-m: the base model the adapter was trained on (a folder under the models directory, or a path)."""
    lora_name: str
    """-l: the adapter (a folder under the loras directory, or a path)."""
    output_name: str | None = None
    """-o: the merged model's folder name in the models directory (default: MODEL-ADAPTER)."""
    dtype: str = "auto"
    """auto (the base model's own), bf16, fp16 or fp32."""
    overwrite: bool = False
    """Replace a model that an earlier merge wrote under that name."""
    model_dir: str | None = None
    lora_dir: str | None = None

    def __post_init__(self) -> None:
        problems = []
        if not str(self.model_name or "").strip():
            problems.append("--model_name is empty: the base model the adapter was trained on")
        if not str(self.lora_name or "").strip():
            problems.append("--lora_name is empty: the adapter to merge")
        if self.dtype not in DTYPES:
            problems.append(f"--dtype must be one of {', '.join(DTYPES)} (got {self.dtype!r})")
        if self.output_name is not None:
            try:
                check_name(self.output_name, "--output_name")
            except UserError as e:
                problems.append(str(e))
        if problems:
            raise UserError(join_problems(problems))


@dataclass
class MergeResult:
    output_dir: Path
    size_bytes: int
    dtype: str
    characters: list[str]
    replaced: bool


@dataclass
class _Plan:
    model_path: Path
    adapter_path: Path
    out: Path
    dtype: str
    params: dict


def _source_dtype(model_path: Path) -> str:
    from .modeling import _config_of

    config = _config_of(model_path)
    dtype = (config.get("torch_dtype") or config.get("dtype")) if isinstance(config, dict) else None
    return dtype if dtype in _BYTES else "float32"


def _weights_bytes(model_path: Path) -> int:
    return sum(f.stat().st_size for pattern in _WEIGHT_FILES for f in model_path.glob(pattern) if f.is_file())


def plan(cfg: MergeConfig) -> _Plan:
    """Everything checked before a weight loads: the model, the adapter and its base, the output's place."""
    from .generation import check_adapter_base, read_adapter_config, read_training_parameters

    dirs = resolve_dirs(model_dir=cfg.model_dir, lora_dir=cfg.lora_dir)
    model_path = resolve_model(cfg.model_name, dirs.models)
    adapter_path = resolve_adapter(cfg.lora_name, dirs.loras)
    kind = str(read_adapter_config(adapter_path).get("peft_type") or "LORA").upper()
    if kind != "LORA":
        raise UserError(f"adapter {adapter_path.name!r} is {kind.lower().replace('_', ' ')}, not LoRA: its "
                        "virtual tokens are not weights that merge into the model; load it as an adapter")
    check_adapter_base(adapter_path, model_path)
    name = cfg.output_name or f"{model_path.name}-{adapter_path.name}"
    if cfg.output_name is None:
        try:
            check_name(name, "the merged model's name")
        except UserError as e:
            raise UserError(f"{e}; give one with --output_name") from None
    out = (dirs.models / name).absolute()
    _check_output(out, model_path, cfg.overwrite)
    dtype = DTYPES[cfg.dtype] or _source_dtype(model_path)
    need = _weights_bytes(model_path) * _BYTES[dtype] // _BYTES[_source_dtype(model_path)]
    free = free_bytes(out.parent)
    if free is not None and need and free < need * 1.05 + (64 << 20):
        raise UserError(f"{out.parent}: {free >> 20} MB free, the merged model needs about {need >> 20} MB "
                        f"({dtype}): free some space first")
    return _Plan(model_path, adapter_path, out, dtype, read_training_parameters(adapter_path))


def _check_output(out: Path, model_path: Path, overwrite: bool) -> None:
    resolved = out.resolve()
    if resolved == model_path or model_path in resolved.parents or resolved in model_path.parents:
        raise UserError(f"{out} is the base model's own folder (or holds it): give the merged model another "
                        "name with --output_name")
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir() or out.is_symlink():
        raise UserError(f"{out} exists and is not a folder: give the merged model another name with --output_name")
    if not any(out.iterdir()):
        return
    if not (out / MERGE_FILE).is_file():
        raise UserError(f"{out} holds files that no merge wrote (a model of yours?): it is never replaced; "
                        "give the merged model another name with --output_name")
    if not overwrite:
        raise UserError(f"{out} holds an earlier merge: --overwrite to replace it, or another --output_name")


def _leftovers(root: Path, name: str) -> list[Path]:
    import glob
    import re

    pattern = re.compile(rf"\.{re.escape(name)}\.(tmp|old)-\d+")
    return sorted(p for p in root.glob(f".{glob.escape(name)}.*-*") if p.is_dir() and pattern.fullmatch(p.name))


def _tidy(out: Path) -> None:
    """What a killed merge of this name left (none runs: we hold its lock). A merge killed between its two
    renames had set the earlier merge aside as `.NAME.old-PID`: it goes back; half-written ones go."""
    for left in _leftovers(out.parent, out.name):
        if ".old-" in left.name and not out.exists():
            os.replace(left, out)
        else:
            shutil.rmtree(left, ignore_errors=True)


def merge(cfg: MergeConfig, log=None) -> MergeResult:
    """Merge the adapter into its base model and save the result as a model folder; see the module doc."""
    say = log or (lambda msg: None)
    p = plan(cfg)
    root = p.out.parent
    root.mkdir(parents=True, exist_ok=True)
    busy = lambda holder: (f"{p.out}: another merge{f' (process {holder})' if holder else ''} is writing "  # noqa: E731
                           "this model: wait for it to finish, or give another --output_name")
    with held_lock(root / f".{p.out.name}.lock", busy):
        _tidy(p.out)
        _check_output(p.out, p.model_path, cfg.overwrite)  # again, now that no other merge can write it
        say(f"loading {p.model_path.name} ({p.dtype}) and {p.adapter_path.name} ...")
        merged = _merged_model(p)
        tmp = root / f".{p.out.name}.tmp-{os.getpid()}"
        say(f"writing {p.out} ...")
        with _writing(tmp, p.out):
            merged.save_pretrained(str(tmp), max_shard_size="4GB")
            _copy_tokenizer(p.model_path, tmp)
            for f in tmp.iterdir():  # safetensors writes 0600: the mode a plain write gives
                if f.is_file():
                    f.chmod(default_file_mode())
            record = _record(p)
            atomic_write_text(tmp / "README.md", model_card(record, p.out.name))
            atomic_write_json(tmp / MERGE_FILE, record)  # last: a folder without it is not a finished merge
            sync_folder(tmp)
        replaced = p.out.exists()
        if replaced:
            old = root / f".{p.out.name}.old-{os.getpid()}"
            os.replace(p.out, old)
            os.replace(tmp, p.out)
            sync_folder(root, files=False)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, p.out)
    size = sum(f.stat().st_size for f in p.out.iterdir() if f.is_file())
    return MergeResult(p.out, size, p.dtype, list(p.params.get("characters") or []), replaced)


def _merged_model(p: _Plan):
    import torch

    from .generation import apply_adapter
    from .modeling import load_base, out_of_memory

    base, _ = load_base(p.model_path, device="cpu", dtype=getattr(torch, p.dtype))
    model = apply_adapter(base, p.adapter_path, p.model_path)
    try:
        merged = model.merge_and_unload()
    except (RuntimeError, MemoryError) as e:
        if not out_of_memory(e):
            raise
        raise UserError(f"out of memory merging {p.adapter_path.name} into {p.model_path.name}: the base model "
                        f"is loaded whole in {p.dtype}; close other programs or merge on a machine with more "
                        "memory") from None
    return merged


# The base's tokenizer files, copied as they are (the loaded tokenizer may have been given a pad token)
_TOKENIZER_FILES = ("tokenizer*", "special_tokens_map.json", "added_tokens.json", "vocab.*", "merges.txt",
                    "chat_template.*", "*.tiktoken", "spiece.model", "sentencepiece*.model")


def _copy_tokenizer(model_path: Path, out: Path) -> None:
    for pattern in _TOKENIZER_FILES:
        for f in model_path.glob(pattern):
            if f.is_file() and not (out / f.name).exists():
                shutil.copyfile(f, out / f.name)


@contextlib.contextmanager
def _writing(tmp: Path, out: Path):
    """A failed write (a full disk) is one line, and leaves no partial folder (a full disk stays full)."""
    try:
        yield
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, (UserError, KeyboardInterrupt)) or not isinstance(e, Exception):
            raise
        reason = e.strerror if isinstance(e, OSError) and e.strerror else brief(e)
        kept = "the earlier merge there is kept" if (out / MERGE_FILE).is_file() else "nothing was written"
        raise UserError(f"{tmp}: cannot write the merged model ({reason}); {kept}") from None


def _record(p: _Plan) -> dict:
    params = p.params
    return {
        "base_model": p.model_path.name,
        "base_model_path": str(p.model_path),
        "adapter": p.adapter_path.name,
        "adapter_path": str(p.adapter_path),
        "dtype": p.dtype,
        "characters": params.get("characters") or [],
        "prompt_format": params.get("prompt_format"),
        "instruction": params.get("instruction"),
        "merged_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def model_card(record: dict, name: str) -> str:
    chars = record["characters"]
    who = ", ".join(chars) if chars else "the adapter's character"
    cue = f"{chars[0]}:" if chars else "Name:"
    return f"""# {name}

{record['base_model']} with the LoRA adapter {record['adapter']} merged into its weights ({record['dtype']}),
by dialogue_lora's merge_lora.py on {record['merged_at']}. It speaks as {who}.

## Prompt

As the adapter was trained: the last turns as `Name: text` lines, ending with the character's cue, one
reply per line (stop generating at the newline):

```
You: Hello there.
{cue}
```

In text-generation-webui, the Dialogue LoRA tab's *4. Use* section does this (*Character chat*, *Stop at
newline*, the character's name), with this model loaded by any loader.

## GGUF (llama.cpp, koboldcpp, ollama)

```
python llama.cpp/convert_hf_to_gguf.py {name} --outtype q8_0
```
"""
