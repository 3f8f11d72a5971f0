"""Where models, adapters and datasets live, resolved the way text-generation-webui does.

Current webui versions keep user files under `user_data/` (`user_data/models`, `user_data/loras`,
`user_data/training/datasets`); older ones use `models/`, `loras/` and `training/datasets/` at the root.
The CLI, the tab and the standalone app all resolve through `resolve_dirs`.
"""
from __future__ import annotations

import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError, closest

# Files that make a folder a loadable model (weights in any of the forms transformers reads).
_MODEL_MARKERS = ("config.json",)
_ADAPTER_MARKER = "adapter_config.json"
# a training run's resumable checkpoints inside its adapter folder: checkpoint-N
CHECKPOINT_PREFIX = "checkpoint-"
CHECKPOINT_STATE = "trainer_state.json"  # in a checkpoint: the position in the data and the run's settings
# letters of any script (Éowyn), digits, and marks that names carry (O'Brien, Bob (v2)); no path, wildcard
# or character Windows refuses in a file name. Combining marks (Unicode category M) are allowed after the first
# character: `\w` leaves them out, and Hindi (प्रिया), Tamil (தமிழ்) or a decomposed Zoë cannot be written without.
_SAFE_NAME = re.compile(r"^[^\W_][\w .,+'’()-]*$")


def _safe_name(name: str) -> bool:
    # each mark after the first character stands in as a letter for _SAFE_NAME
    return bool(_SAFE_NAME.match(name[:1] + "".join("a" if unicodedata.category(c).startswith("M") else c
                                                    for c in name[1:])))


def _candidates(name: str | os.PathLike, folder: Path) -> tuple[str, list[Path]]:
    """A model or adapter given by name or path: (the name trimmed, the places it may be). Trimmed, as
    check_name trims the names it creates (`-l " x "` trained loras/x); `~` expanded (cmd and PowerShell, or
    `-m=~/x`, leave it); and its spelling in `folder` (`on_disk`: Zoë written composed, as check_name writes it,
    or decomposed, as macOS writes it)."""
    name = os.path.expanduser(str(name).strip())
    places = [folder / name, Path(name)]
    spelt = on_disk(folder, name)
    return name, places + ([folder / spelt] if spelt != name else [])


def on_disk(folder: str | os.PathLike, name: str) -> str:
    """`name` as an entry of `folder` spells it: the same name in another Unicode normal form (Zoë composed,
    or decomposed as macOS writes it) is that entry; else `name` as it is."""
    try:
        entries = os.listdir(folder)
    except OSError:
        return name
    if name in entries:
        return name
    nfc = unicodedata.normalize("NFC", name)
    return next((e for e in sorted(entries) if unicodedata.normalize("NFC", e) == nfc), name)


def case_twin(folder: str | os.PathLike, name: str) -> str | None:
    """An entry of `folder` whose name differs from `name` only in case (or Unicode normal form): Windows and
    macOS file systems take them for one, so writing `name` there would make a second entry that collides when
    copied over (or, there, replaces the other). None when `name` itself is there or no such entry."""
    try:
        entries = os.listdir(folder)
    except OSError:
        return None
    nfc = unicodedata.normalize("NFC", name)
    key = nfc.lower()
    if name in entries or any(unicodedata.normalize("NFC", e) == nfc for e in entries):
        return None  # there (in another normal form: a macOS copy's Zoë; it is that name, not a twin to avoid)
    return next((e for e in sorted(entries) if unicodedata.normalize("NFC", e).lower() == key), None)


@dataclass(frozen=True)
class Dirs:
    models: Path
    loras: Path
    datasets: Path


def resolve_dirs(
    root: str | os.PathLike | None = None,
    model_dir: str | os.PathLike | None = None,
    lora_dir: str | os.PathLike | None = None,
    dataset_dir: str | os.PathLike | None = None,
) -> Dirs:
    """The webui's folders under `root` (default: the working folder); explicit folders win."""
    root = Path(root) if root is not None else Path.cwd()
    base = root / "user_data" if (root / "user_data").is_dir() else root
    return Dirs(
        # `~` expanded here: an unexpanded one (cmd, `--lora_dir=~/x`) made a folder called `~` in the working one
        models=Path(os.path.expanduser(model_dir)) if model_dir else base / "models",
        loras=Path(os.path.expanduser(lora_dir)) if lora_dir else base / "loras",
        datasets=Path(os.path.expanduser(dataset_dir)) if dataset_dir else base / "training" / "datasets",
    )


def is_model_dir(path: Path) -> bool:
    return path.is_dir() and any((path / m).is_file() for m in _MODEL_MARKERS)


def is_adapter_dir(path: Path) -> bool:
    return path.is_dir() and (path / _ADAPTER_MARKER).is_file()


# A model's weights, one file or shards: a folder with none (a download cut short, a config alone) is not offered.
_WEIGHTS = ("*.safetensors", "*.bin", "*.pt", "*.pth")


def has_weights(path: Path) -> bool:
    return any(next(path.glob(pattern), None) is not None for pattern in _WEIGHTS)


WEIGHTS_SAMPLES = 64  # pieces of each weights file read, evenly spaced
WEIGHTS_SAMPLE_BYTES = 1024


def _loaded_weights(path: Path) -> list[Path]:
    """The weights files transformers loads from a model folder: a shard index's files, else the one file,
    else (a folder laid out otherwise) every file of the first kind found. Not Mistral's
    `consolidated.safetensors` beside its shards."""
    import json

    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        try:
            weight_map = json.loads((path / index).read_text(encoding="utf-8")).get("weight_map") or {}
        except (OSError, ValueError, AttributeError):
            continue
        shards = sorted({path / str(name) for name in weight_map.values()})
        if shards:
            return shards
    for single in ("model.safetensors", "pytorch_model.bin"):
        if (path / single).is_file():
            return [path / single]
    for pattern in _WEIGHTS:
        files = sorted(p for p in path.glob(pattern) if p.is_file())
        if files:
            return files
    return []


def unreadable(file: Path) -> str | None:
    """Why a file that is there cannot be opened (no permission: transformers and PEFT say "No such file" of
    it); None when it opens, or is not there (the loader says so)."""
    try:
        with open(file, "rb"):
            return None
    except FileNotFoundError:
        return None
    except OSError as e:
        return f"{file}: cannot be read ({e.strerror or e})"


def unreadable_weights(path: Path) -> str | None:
    """`unreadable` of the first weights file a load of the model folder reads that cannot be opened."""
    return next(filter(None, map(unreadable, _loaded_weights(Path(path)))), None)


def weights_sample_sha256(path: Path) -> str | None:
    """A model's weights told apart cheaply: each weights file's name and size and 64 pieces of 1 KiB spread
    over it (64 KiB a file, in milliseconds; reading a whole 16 GB model would take a minute). Two fine-tunes
    of one base have the same shape (base_fingerprint) but differ in every tensor, so in these bytes too; a
    merge that changed a few layers' projections is caught with odds near 99%. Only the files a load reads
    (`_loaded_weights`: a `pytorch_model.bin` or `consolidated.safetensors` beside them, deleted, changes
    nothing). None when there is no weights file or one cannot be read."""
    import hashlib

    files = _loaded_weights(path)
    if not files:
        return None
    digest = hashlib.sha256()
    for file in files:
        try:
            size = file.stat().st_size
            digest.update(f"{file.name}\0{size}\0".encode("utf-8"))
            with open(file, "rb") as f:
                for i in range(WEIGHTS_SAMPLES):
                    f.seek(size * i // WEIGHTS_SAMPLES)
                    digest.update(f.read(WEIGHTS_SAMPLE_BYTES))
        except OSError:
            return None
    return digest.hexdigest()


def _listed(name: str) -> tuple[str, str]:
    """The order of the lists a person reads: case aside (`base` before `Zoë`), then as written."""
    return name.casefold(), name


def list_models(model_dir: str | os.PathLike) -> list[str]:
    """Model folders (a config.json and weights) directly under `model_dir`, sorted."""
    d = Path(model_dir)
    if not d.is_dir():
        return []
    return sorted((p.name for p in d.iterdir() if is_model_dir(p) and has_weights(p)), key=_listed)


def list_adapters(lora_dir: str | os.PathLike) -> list[str]:
    """Adapter folders (those with an adapter_config.json) directly under `lora_dir`, sorted."""
    d = Path(lora_dir)
    if not d.is_dir():
        return []
    # a dot-name is ours in the making (`.NAME.tmp-PID`) or hidden: never an adapter to offer
    return sorted((p.name for p in d.iterdir() if not p.name.startswith(".") and is_adapter_dir(p)), key=_listed)


# What file managers leave in the folders they show (Finder's, Explorer's): never the user's work, and never
# what makes a folder taken (an adapter or merge folder opened in Finder was refused as holding files)
_LITTER = {".DS_Store", ".localized", "Thumbs.db", "desktop.ini"}


def os_litter(name: str) -> bool:
    """Whether a folder entry is a file manager's (`.DS_Store`, `Thumbs.db`, macOS's `._NAME` on FAT drives)."""
    return name in _LITTER or name.startswith("._")


def list_datasets(dataset_dir: str | os.PathLike) -> list[str]:
    """Dataset files (.json, .jsonl) directly under `dataset_dir`, sorted; no hidden one (macOS's `._bob.json`
    beside bob.json on a FAT or network drive, our `.NAME.tmp` in the making)."""
    d = Path(dataset_dir)
    if not d.is_dir():
        return []
    return sorted((p.name for p in d.iterdir() if p.is_file() and p.suffix.lower() in (".json", ".jsonl")
                   and not p.name.startswith(".")), key=_listed)


# Windows' paths stop at 260 characters, and an adapter's deepest file is ...\user_data\loras\NAME\
# checkpoint-1234\adapter_model.safetensors: 200 left no room for the folders above
MAX_NAME_BYTES = 120
# names Windows gives to devices, whatever the extension: a folder `NUL` cannot exist there (COM¹ too)
_WINDOWS_DEVICES = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in "123456789¹²³"),
                    *(f"LPT{i}" for i in "123456789¹²³")}


def windows_device(name: str) -> bool:
    """Whether Windows takes the name for a device (`con`, `Aux.json`): no file or folder can have it there."""
    return name.split(".")[0].strip().upper() in _WINDOWS_DEVICES


def check_name(name: str, what: str = "name") -> str:
    """A name typed by the user for a file or folder of ours: it must stay inside its folder."""
    # NFC: one spelling of Zoë whichever way it was typed (the name returned is the one to write)
    name = unicodedata.normalize("NFC", (name or "").strip())
    if not name:
        raise UserError(f"{what} is empty")
    if "/" in name or "\\" in name or ".." in name or not _safe_name(name):
        raise UserError(
            f"{what} {name!r} is not allowed: start with a letter or digit; then letters, digits, spaces and "
            ". , _ + - ' ( ) "
            "(no slashes, no '..', not starting with a dot)"
        )
    if name.endswith(".") or windows_device(name):
        raise UserError(f"{what} {name!r} is not allowed: Windows reserves it (a device name, or a name "
                        "ending in a dot)")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        n = len(name.encode("utf-8"))
        # in bytes: what file systems count (a Chinese or Hindi letter takes 3); said in letters too
        size = f"{n} bytes" if n == len(name) else f"{len(name)} characters, {n} bytes in UTF-8"
        raise UserError(f"{what} is too long ({size}): at most {MAX_NAME_BYTES} bytes, so that the adapter's files "
                        "stay within Windows' 260-character paths")
    return name


def picked_name(name: str, folder: str | os.PathLike, what: str = "name") -> str:
    """A name picked from a listing of `folder` (a dialogue file, a dataset, an adapter): any name the folder
    may hold, `WhatsApp Chat (1).txt` or `bob's lines.json` too (check_name's rule is for names we create),
    as long as it is an entry of that folder and not a path out of it."""
    name = name or ""
    if not name.strip():
        raise UserError(f"{what} is empty")
    if name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise UserError(f"{what} {name!r} is not a name in {folder}")
    return name


def _listing(names: list[str], folder: Path, kind: str) -> str:
    if not names:
        return f"no {kind} found in {folder}"
    return f"{kind} in {folder}: " + ", ".join(names)


def resolve_model(name: str | os.PathLike, model_dir: str | os.PathLike) -> Path:
    """`name` is a folder under `model_dir`, or any path to a model folder; else a clear error listing models."""
    model_dir = Path(model_dir)
    name, candidates = _candidates(name, model_dir)
    for c in candidates:
        # a GGUF file, or a folder whose only weights are one (the webui's llamacpp_HF folders have a config)
        gguf = c if c.is_file() and c.suffix.lower() == ".gguf" else next(c.glob("*.gguf"), None) if c.is_dir() else None
        if gguf is not None and not (c.is_dir() and has_weights(c)):
            raise UserError(f"{gguf} is a GGUF model (llama.cpp's format), which transformers does not train or "
                            "load here: use the original Hugging Face model (a folder with config.json and "
                            ".safetensors weights), the one the GGUF was made from")
        if is_model_dir(c):
            return c.resolve()
    for c in candidates:
        if c.is_dir() and (c / "adapter_config.json").is_file():
            raise UserError(f"{c} is an adapter (adapter_config.json), not a model: pass it with -l/--lora_name, "
                            "and the base model it was trained on with -m/--model_name")
        if c.is_dir():
            raise UserError(f"model folder {c} has no config.json: not a transformers model")
        if c.is_file() and is_model_dir(c.parent):
            raise UserError(f"{c} is a file of the model in {c.parent}: give the folder")
    found = list_models(model_dir)
    for c in candidates:  # rather than "not found" of a name that is there
        if c.is_file():
            raise UserError(f"{c} is a file, not a model folder (a folder with config.json and weights); "
                            f"{_listing(found, model_dir, 'models')}")
    hint = closest(Path(name).name, found)
    hint = f" (did you mean {hint!r}?)" if hint else ""
    raise UserError(f"model {str(name)!r} not found{hint}; {_listing(found, model_dir, 'models')}"
                    + _old_layout_hint(model_dir, list_models, "--model_dir"))


def _old_layout_hint(folder: Path, listed, flag: str) -> str:
    """A user_data/ folder makes user_data/models (and user_data/loras) the folder looked in: say so when the
    old layout's models/ (loras/) beside it holds some (a user_data/ made by something else hid them)."""
    if folder.parent.name != "user_data" or folder.name not in ("models", "loras"):
        return ""
    old = folder.parent.parent / folder.name
    if not listed(old):
        return ""
    kind = "models" if folder.name == "models" else "adapters"
    return (f" (user_data/ is here, so {kind} are looked for in {folder}; {old} holds "
            f"{', '.join(listed(old))}: pass {flag} {old}, or move them)")


# In the model card a run writes last into its adapter folder: how a finished save is told from one cut off
# (PEFT's save_pretrained writes a README.md of its own first).
CARD_MARK = "trained by dialogue_lora"


def finished_save(folder: Path) -> bool:
    """Whether an adapter folder a final save was writing is complete: its card, written last, is ours."""
    try:
        with open(folder / "README.md", encoding="utf-8", errors="replace") as f:
            return CARD_MARK in f.read(4096)
    except OSError:
        return False


def shell_word(name: str) -> str:
    """`name` as one word of a command to copy: in double quotes when it has a space, an apostrophe or a
    bracket (they mean the same in bash, cmd and PowerShell; check_name's names hold no `"` `$` or `)."""
    return name if re.fullmatch(r"[\w.,+-]+", name) else f'"{name}"'


def interrupted_save(lora_dir: str | os.PathLike, name: str) -> str:
    """A hint when a training run of `name` was killed in its final save's swap (its adapter then sits in
    `.NAME.tmp-PID` or `.NAME.old-PID`, put back by the next run of that name); "" when not."""
    d = Path(lora_dir)
    if not d.is_dir() or not name or "/" in name:
        return ""
    left = swap_leftovers(d, name, "tmp") + swap_leftovers(d, name, "old")
    if not left:
        return ""
    # the one the next run puts in place: a complete new adapter (its card is written last), else the old one
    kept = next((p for p in left if p.name.startswith(f".{name}.tmp-") and finished_save(p)), None)
    kept = kept or next((p for p in left if p.name.startswith(f".{name}.old-")), None)
    if kept is None:  # only a save cut off before it was complete: nothing to get back (the next run clears it)
        return ""
    return (f"; a training run of {name!r} was cut off while saving (its adapter is in {kept}): run "
            f"lora_finetune.py with -l {shell_word(name)} again and it is put back before anything else")


def swap_leftovers(lora_dir: Path, name: str, kind: str) -> list[Path]:
    """The folders a final save of adapter `name` left when it was killed: `.NAME.tmp-PID` (kind "tmp", the
    new adapter being written) or `.NAME.old-PID` ("old", the previous one set aside), sorted. Exactly
    these: not `.NAME.tmp-1.tmp-PID`, the leftover of an adapter called `NAME.tmp-1`."""
    import glob

    pattern = re.compile(rf"\.{re.escape(name)}\.{kind}-\d+")
    return sorted(p for p in lora_dir.glob(f".{glob.escape(name)}.{kind}-*") if p.is_dir() and pattern.fullmatch(p.name))


def resolve_adapter(name: str | os.PathLike, lora_dir: str | os.PathLike) -> Path:
    """An existing adapter: a folder under `lora_dir`, or any path to one; else a clear error listing adapters."""
    lora_dir = Path(lora_dir)
    name, candidates = _candidates(name, lora_dir)
    for c in candidates:
        if is_adapter_dir(c):
            return c.resolve()
    found = list_adapters(lora_dir)
    listing = _listing(found, lora_dir, "adapters")
    trainer = training_pid(lora_dir, str(name))
    if trainer is not None:  # its first save is still to come (its checkpoints may be there already)
        by = f" (process {trainer})" if trainer else ""
        raise UserError(f"adapter {str(name)!r} is being trained{by} and has no saved adapter yet: "
                        f"wait for it to finish; {listing}")
    for c in candidates:
        if c.is_dir():  # there, but not (yet) an adapter: say which, rather than "not found"
            cut = interrupted_save(lora_dir, str(name)) if c == lora_dir / str(name) else ""
            if cut:  # killed as its final save was swapped in: the next run finishes that, not a --resume
                raise UserError(f"adapter folder {c} holds no adapter yet{cut}; {listing}")
            if any(p.name.startswith(CHECKPOINT_PREFIX) for p in c.iterdir()):
                raise UserError(f"adapter folder {c} holds the checkpoints of an unfinished run, no adapter "
                                f"yet: unless it is still training, finish it with lora_finetune.py ... -l {shell_word(c.name)} --resume; "
                                f"{listing}")
            raise UserError(f"adapter folder {c} holds no adapter (no {_ADAPTER_MARKER}); {listing}")
    hint = closest(Path(name).name, found)
    hint = f" (did you mean {hint!r}?)" if hint else ""
    raise UserError(f"adapter {str(name)!r} not found{hint}; {listing}{interrupted_save(lora_dir, str(name))}"
                    + _old_layout_hint(lora_dir, list_adapters, "--lora_dir"))


def lock_file(folder: Path, name: str) -> Path:
    """The lock a run writing `folder/name` holds: `.NAME.lock.txt`. The webui's LoRA menu lists every entry
    of its folder, dot-files too, but not `.txt` files, so a run's lock (or a killed run's) never shows there."""
    return folder / f".{name}.lock.txt"


def refuse_while_retrained(adapter_path: Path, then: str) -> None:
    """A UserError when a run (an --overwrite one) is training the adapter again: its save would replace the
    weights being read, under what is written of them (an evaluation's report, a merge's record)."""
    pid = training_pid(adapter_path.parent, adapter_path.name)
    if pid is not None:
        raise UserError(f"adapter {adapter_path.name!r} is being trained again now (process {pid or 'unknown'}): "
                        f"{then} it when that run ends")


def training_pid(lora_dir: Path, name: str) -> str | None:
    """The process id of the training run that holds adapter `name`'s lock (`.NAME.lock.txt`) now ("" when
    it cannot be read); None when no run holds it (a killed run's file, whose pid may be reused, says nothing)."""
    from .fileio import lock_holder

    holder = lock_holder(lock_file(lora_dir, name))
    return None if holder is None or holder == str(os.getpid()) else holder
