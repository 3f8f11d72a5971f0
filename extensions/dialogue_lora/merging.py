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
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError, brief, join_problems
from .fileio import (atomic_write_json, atomic_write_text, default_file_mode, free_bytes, held_lock, nearest_existing,
                     replace_folder, sync_folder)
from .paths import (CHECKPOINT_PREFIX, case_twin, check_name, lock_file, os_litter, refuse_while_retrained,
                    resolve_adapter, resolve_dirs, resolve_model, shell_word)
from .prompt import user_turns_named

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
                # the name as checked (trimmed, NFC) is the one written: `-o "x "` wrote `models/x `
                self.output_name = check_name(self.output_name, "--output_name")
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
    kept: list[str]
    """With --overwrite: the files and folders of the user's in the earlier merge's folder, kept in the new one."""

    def summary(self) -> str:
        chars = f"; it speaks as {', '.join(self.characters)}" if self.characters else ""
        kept = f"; kept what else was in it: {', '.join(self.kept)}" if self.kept else ""
        if any(k.lower().endswith(".gguf") for k in self.kept):
            kept += " (a GGUF of the earlier merge: convert the new one again)"
        if any(".yours" in k for k in self.kept):
            kept += " (NAME.yours: your copy of a file the merge writes, beside the new merge's own)"
        verb = "replaced" if self.replaced else "wrote"
        return f"{verb} {self.output_dir} ({megabytes(self.size_bytes)}, {self.dtype}){chars}{kept}"


@dataclass
class _Plan:
    model_path: Path
    adapter_path: Path
    out: Path
    dtype: str
    params: dict


def _source_dtype(model_path: Path) -> str:
    from .modeling import config_of

    config = config_of(model_path)
    dtype = (config.get("torch_dtype") or config.get("dtype")) if isinstance(config, dict) else None
    return dtype if dtype in _BYTES else "float32"


def megabytes(n: int) -> str:
    """A size for a message: 1 decimal under 10 MB (a tiny model is not "0 MB")."""
    mb = n / 2**20
    return f"{mb:.1f} MB" if mb < 10 else f"{mb:,.0f} MB"


def _weights_bytes(model_path: Path) -> int:
    return sum(f.stat().st_size for pattern in _WEIGHT_FILES for f in model_path.glob(pattern) if f.is_file())


def default_output_name(model_path: Path, adapter_path: Path) -> str:
    """MODEL-ADAPTER; a checkpoint is named with its run (tiny-llama-bob-checkpoint-5), not one name for
    every run's step 5."""
    adapter_name = (f"{adapter_path.parent.name}-{adapter_path.name}"
                    if adapter_path.name.startswith(CHECKPOINT_PREFIX) else adapter_path.name)
    return f"{model_path.name}-{adapter_name}"


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
    from .modeling import stored_quantization, tokenizer_problem

    problem = tokenizer_problem(model_path)  # (the merged model carries its tokenizer: before minutes of loading)
    if problem:
        raise UserError(problem)
    stored = stored_quantization(model_path)
    if stored:  # PEFT would round the adapter into the quantised weights, or fail to write them back
        raise UserError(f"model {model_path.name!r} is stored quantised ({stored}): the adapter cannot be merged "
                        "into its weights; merge it into the full-precision model that one was made from (it fits "
                        "any model of the same shape), or load the adapter on this one as it is")
    name = cfg.output_name or default_output_name(model_path, adapter_path)
    if cfg.output_name is None:
        try:
            check_name(name, "the merged model's name")
        except UserError as e:
            raise UserError(f"{e}; give one with --output_name") from None
    out = (dirs.models / name).absolute()
    _check_output(out, model_path, cfg.overwrite)
    existing = nearest_existing(out.parent)
    if existing is not None and existing.is_dir() and not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{existing}: not writable: the merged model could not be saved there (--model_dir)")
    source = _source_dtype(model_path)
    dtype = DTYPES[cfg.dtype] or source
    # the weights in the new type, a margin for the rest of the folder
    need = int(_weights_bytes(model_path) * _BYTES[dtype] / _BYTES[source] * 1.05) + (64 << 20)
    free = free_bytes(out.parent)
    if free is not None and free < need:
        raise UserError(f"{out.parent}: {megabytes(free)} free, the merged model needs about {megabytes(need)} "
                        f"({dtype}): free some space first")
    return _Plan(model_path, adapter_path, out, dtype, read_training_parameters(adapter_path, prompt=True))


def _check_output(out: Path, model_path: Path, overwrite: bool) -> None:
    resolved = out.resolve()
    if resolved == model_path or model_path in resolved.parents or resolved in model_path.parents:
        raise UserError(f"{out} is the base model's own folder (or holds it): give the merged model another "
                        "name with --output_name")
    twin = case_twin(out.parent, out.name)
    if twin is not None:  # one folder on Windows and macOS: a copy there would mix them, or replace the base
        base = " (the base model)" if (out.parent / twin).resolve() == model_path else ""
        raise UserError(f"--output_name {out.name!r}: a model {twin!r}{base} exists, and names differing only in "
                        "case are one folder on Windows and macOS: give the merged model another name"
                        + ("" if base else f" (or the name {twin!r}, with --overwrite to replace an earlier merge)"))
    if not out.exists() and not out.is_symlink():
        return
    if out.is_symlink():
        raise UserError(f"{out} is a symbolic link: give the merged model another name with --output_name")
    if not out.is_dir():
        raise UserError(f"{out} exists and is not a folder: give the merged model another name with --output_name")
    if all(os_litter(e.name) for e in out.iterdir()):  # empty, but for Finder's .DS_Store and such
        return
    if not (out / MERGE_FILE).is_file():
        raise UserError(f"{out} holds files that no merge wrote (a model of yours?): it is never replaced; "
                        "give the merged model another name with --output_name")
    if not overwrite:
        raise UserError(f"{out} holds an earlier merge: --overwrite to replace it, or another --output_name")


_LEFTOVER = re.compile(r"\.(.+)\.(tmp|old)-(\d+)")


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill would end the process there: count it alive
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _tidy(out: Path) -> None:
    """What killed merges left (`.NAME.tmp-PID` half written, which the webui would list as a model): this
    name's (none runs: we hold its lock), and other names' whose process is gone. A merge killed after
    setting the earlier merge aside as `.NAME.old-PID` and before putting the new one in its place: the
    earlier one goes back; killed after, the user's own files in it (a GGUF) join the new one."""
    for left in sorted(out.parent.iterdir()):
        m = _LEFTOVER.fullmatch(left.name)
        if not m or not left.is_dir() or (m.group(1) != out.name and _pid_alive(int(m.group(3)))):
            continue
        target = out.parent / m.group(1)
        if m.group(2) == "old" and not target.exists():
            replace_folder(left, target)
            continue
        # without its record, an earlier merge's folder is one whose removal was cut off: the user's files
        # had gone over before (what is left is the merge's own, which must not join the new one)
        if m.group(2) == "old" and read_merge_record(left):
            _move_users_entries(left, target)
        shutil.rmtree(left, ignore_errors=True)


def _move_users_entries(old: Path, out: Path) -> list[str]:
    """What the user put in an earlier merge's folder (see _users_entries) moves to the new merge `out`; the
    names they have there. Never into a merge's temporary folder: a merge killed there would take it with it.
    A name the new merge wrote itself (a file it did not write before) keeps the merge's, and the user's
    goes beside it as `NAME.yours`."""
    moved = []
    for name in _users_entries(old):
        target, n = name, 1
        while (out / target).exists():
            target = f"{name}.yours" if n == 1 else f"{name}.yours-{n}"
            n += 1
        replace_folder(old / name, out / target)
        moved.append(target)
    return sorted(moved)


def merge(cfg: MergeConfig, log=None) -> MergeResult:
    """Merge the adapter into its base model and save the result as a model folder; see the module doc."""
    say = log or (lambda msg: None)
    p = plan(cfg)
    root = p.out.parent
    root.mkdir(parents=True, exist_ok=True)
    busy = lambda holder: (f"{p.out}: another merge{f' (process {holder})' if holder else ''} is writing "  # noqa: E731
                           "this model: wait for it to finish, or give another --output_name")
    with held_lock(lock_file(root, p.out.name), busy):
        _tidy(p.out)
        _check_output(p.out, p.model_path, cfg.overwrite)  # again, now that no other merge can write it
        refuse_while_retrained(p.adapter_path, "merge")
        from .generation import other_weights_note

        other = other_weights_note(p.adapter_path, p.model_path)
        if other:
            say(f"note: {other}")
        say(f"loading {p.model_path.name} ({p.dtype}) and {p.adapter_path.name} ...")
        record = _record(p)  # before the load: it hashes the weights merged
        merged = _merged_model(p)
        tmp = root / f".{p.out.name}.tmp-{os.getpid()}"
        say(f"writing {p.out} ...")
        with _writing(tmp, p.out):
            merged.save_pretrained(str(tmp), max_shard_size="4GB")
            _copy_tokenizer(p.model_path, tmp)
            for f in tmp.iterdir():  # safetensors writes 0600: the mode a plain write gives
                if f.is_file():
                    f.chmod(default_file_mode())
            now = _adapter_sha256(p.adapter_path)
            if now != record["adapter_sha256"]:  # a run saved it again meanwhile (or rotated a checkpoint away)
                raise UserError(f"{p.adapter_path}: {'saved again' if now else 'gone'} while it was merged (a "
                                "training run of it): nothing was written, since the record would not be of the "
                                "weights merged; merge again")
            record["merged_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
            atomic_write_text(tmp / "README.md", model_card(record, p.out))
            record["files"] = sorted([f.name for f in tmp.iterdir()] + [MERGE_FILE])
            record["sha256"] = _small_file_hashes(tmp)
            atomic_write_json(tmp / MERGE_FILE, record)  # last: a folder without it is not a finished merge
            sync_folder(tmp)
        replaced = bool(read_merge_record(p.out))  # (a folder of a file manager's litter alone is not a merge)
        kept = []
        if p.out.exists():
            # the earlier merge aside, the new one in, then what the user put in the earlier one (a GGUF
            # converted into the folder, notes) over to it: killed at any point, _tidy finishes the job
            old = root / f".{p.out.name}.old-{os.getpid()}"
            _put_in_place(tmp, p.out, old)
            kept = _move_users_entries(old, p.out)
            sync_folder(root, files=False)
            shutil.rmtree(old, ignore_errors=True)
        else:
            _put_in_place(tmp, p.out)
    size = sum(f.stat().st_size for f in p.out.iterdir() if f.is_file() and f.name not in kept)
    return MergeResult(p.out, size, p.dtype, list(p.params.get("characters") or []), replaced, kept)


def _put_in_place(tmp: Path, out: Path, old: Path | None = None) -> None:
    """The written merge `tmp` in as `out`, the earlier merge first set aside as `old`. A rename refused past
    replace_folder's retries (Windows: a program holding the folder open) puts the earlier merge back, and
    takes the new one away (a whole model's copy, hidden, which only a merge again could put in place); an
    earlier merge that cannot go back either is said where it is (the next merge of the name puts it back)."""
    aside = False  # the earlier merge is set aside, not back in place
    try:
        if old is not None:
            replace_folder(out, old)
            aside = True
        replace_folder(tmp, out)
    except OSError as e:
        if aside:
            with contextlib.suppress(OSError):
                replace_folder(old, out)
                aside = False
        shutil.rmtree(tmp, ignore_errors=True)
        where = (f"; the earlier merge is set aside as {old} (the next merge of this name puts it back)" if aside
                 else "")
        raise UserError(f"{out}: the merged model could not be put in place ({e.strerror or e}){where}; close "
                        "what has the folder open (an Explorer window, a console in it) and merge again") from None


def _adapter_sha256(adapter_path: Path) -> str | None:
    from .fileio import file_sha256

    weights = adapter_path / "adapter_model.safetensors"
    return file_sha256(weights) if weights.is_file() else None


def already_merged(model_path: Path, adapter_path: Path) -> str | None:
    """The base model's name when `model_path` is a merge of this very adapter (its weights' SHA-256), else None."""
    record = read_merge_record(model_path)
    if not record.get("adapter_sha256") or record["adapter_sha256"] != _adapter_sha256(adapter_path):
        return None
    return str(record.get("base_model") or "its base model")


# Files a merge hashes (its card, the configs, small tokenizer files): ones a user may edit. Weights are not.
_HASHED_MAX = 1 << 20


def _small_file_hashes(folder: Path) -> dict:
    from .fileio import file_sha256

    return {f.name: file_sha256(f) for f in sorted(folder.iterdir())
            if f.is_file() and f.name != MERGE_FILE and f.stat().st_size <= _HASHED_MAX}


def _users_entries(out: Path) -> list[str]:
    """What in an earlier merge's folder that merge did not write (its record lists its files), and what
    the user has edited since (a README.md or a config.json whose SHA-256 is not the one it wrote)."""
    from .fileio import file_sha256

    record = read_merge_record(out)
    own = set(record.get("files") or [])
    hashes = record.get("sha256") if isinstance(record.get("sha256"), dict) else {}
    edited = {name for name, digest in hashes.items()
              if (out / name).is_file() and file_sha256(out / name) != digest}
    return sorted(e.name for e in out.iterdir() if (e.name not in own or e.name in edited) and not os_litter(e.name))


def read_merge_record(model_path: str | os.PathLike) -> dict:
    """A merged model's record ({} for any other model folder, or one that cannot be read)."""
    import json

    try:
        data = json.loads((Path(model_path) / MERGE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


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
    """What merge_lora.py writes as MERGE_FILE (the merge's own files are added once they are written)."""
    params = p.params
    return {
        "base_model": p.model_path.name,
        "base_model_path": str(p.model_path),
        "adapter": p.adapter_path.name,
        "adapter_path": str(p.adapter_path),
        "adapter_sha256": _adapter_sha256(p.adapter_path),
        "dtype": p.dtype,
        "characters": params.get("characters") or [],
        "prompt_format": params.get("prompt_format"),
        "instruction": params.get("instruction"),
        "context_turns": params.get("context_turns"),
        "user_turns_named": user_turns_named(params),
        "merged_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def model_card(record: dict, out: Path) -> str:
    from .prompt import chat_prompt

    chars = record["characters"]
    who = ", ".join(chars) if chars else "the adapter's character"
    example = chat_prompt([("You", "Hello there.")], chars[0] if chars else "Name", 5, record.get("instruction"),
                          None if user_turns_named(record) else "You")  # (its samples' user lines named no one)
    line = " (after its instruction line, as the adapter learnt it)" if record.get("instruction") else ""
    return f"""# {out.name}

{record['base_model']} with the LoRA adapter {record['adapter']} merged into its weights ({record['dtype']}),
by dialogue_lora's merge_lora.py on {record['merged_at']}. It speaks as {who}.

## Prompt

As the adapter was trained: the last turns as `Name: text` lines, ending with the character's cue{line}, one
reply per line (stop generating at the newline):

```
{example}
```

`chat.py -m {shell_word(out.name)}` prompts it so (the characters and the instruction come from dialogue_lora_merge.json).
In text-generation-webui, the Dialogue LoRA tab's *4. Use* section does it too (*Character chat*, *Stop at
newline*; the character and the instruction come from the same record), with this model loaded by any loader.

## GGUF (llama.cpp, koboldcpp, ollama)

```
python llama.cpp/convert_hf_to_gguf.py "{out}" --outtype q8_0
```
"""
