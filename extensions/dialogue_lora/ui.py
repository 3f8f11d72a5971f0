"""The "Dialogue LoRA" tab: Prepare, Train, Evaluate, Use. Built the same inside the webui and standalone.

`build_tab(host)` lays out common Gradio components only (they exist in the webui's Gradio 4.37 fork and
in current Gradio) and wires each button to a method of `TabLogic`, which holds no Gradio code: plain values
in, plain values out, so it is tested without a browser. Training and evaluation run in separate processes
(jobs.py); their progress is streamed by generator callbacks that poll once a second.
"""
from __future__ import annotations

import contextlib
import dataclasses
import re
import json
import threading
import time
import unicodedata
from pathlib import Path
from types import SimpleNamespace

from . import jobs
from .errors import UserError
from .fileio import holds_samples, save_stamp
from .generation import DEFAULT_TEMPERATURE
from .host import bits_words
from .merging import DTYPES
from .prompt import as_learnt, one_line, recorded_name, user_turns_named
from .training import GRADIENT_CHECKPOINTING, METHOD_SETTINGS, METHODS, as_defaults, format_eta
from .paths import (MAX_NAME_BYTES, case_twin, check_name, on_disk, is_adapter_dir, list_adapters, list_datasets, list_models, picked_name, resolve_adapter,
                    resolve_model, windows_device)

POLL_SECONDS = 1.0
PLOT_SECONDS = 10.0  # the loss curve is drawn again at most this often while a run trains
DOUBLE_CLICK_SECONDS = 5.0  # a second Start with the same form this soon after the first is the same click
DEFAULT_ADAPTER_NAME = "my-character"  # the Train form's name until a dataset or the user gives one
DEFAULT_DATASET_NAME = "processed_dataset.json"  # Prepare's "Save as" until characters are picked
SAVED_REPORT = "Saved "  # how a save's report starts (a preview's does not)
PREVIEW_SAMPLES = 5
SOURCES = ("auto", "text", "discord", "csv", "renpy")
SOURCE_LABELS = {"auto": "auto (from the file)", "text": "text (script, story, chat log)",
                 "discord": "chat export (Discord, Telegram, WhatsApp, Messenger, LINE, KakaoTalk, Slack, ...)",
                 "csv": "CSV / TSV table", "renpy": "Ren'Py scripts (.rpy, or a zip of a game's)"}
FORMATS = ("rounds", "alpaca", "sharegpt", "messages")
RAW_SUFFIXES = (".txt", ".log", ".srt", ".vtt", ".ass", ".ssa", ".json", ".jsonl", ".csv", ".tsv", ".rpy", ".zip",
                ".html", ".htm", ".yarn", ".md")  # .zip: a Slack export, Ren'Py scripts; .html: a transcript's page
# The upload also takes Ren'Py's compiled scripts and archives, so that a game's .rpyc/.rpa get Prepare's
# advice (decompile them) rather than the browser's "invalid file type"
UPLOAD_SUFFIXES = RAW_SUFFIXES + (".rpyc", ".rpa")
# the context turns sliders' (Prepare's rounds, Use's): prepare_dataset.py takes up to 1000, but a
# dialogue's prompt seldom needs more, and a longer slider is hard to set to one turn
MAX_USE_TURNS = 50
MAX_TEMPERATURE = 1.5  # its temperature slider's
# A folder named under a field wraps anywhere: a path has no spaces, and was cut off at the field's edge on
# a narrow page (the webui takes it from script.custom_css, the standalone app at launch)
CSS = ".dialogue-lora-folder .info-text { overflow-wrap: anywhere; }"


def use_temperature(params: dict) -> float:
    """The quick test's temperature as last set (params["temperature"], kept across page reloads; from
    settings.yaml a string), within the slider's range; chat.py's default when unset or unreadable."""
    try:
        value = float(params.get("temperature", DEFAULT_TEMPERATURE))
    except (TypeError, ValueError):
        return DEFAULT_TEMPERATURE
    return min(max(value, 0.0), MAX_TEMPERATURE) if value == value else DEFAULT_TEMPERATURE


def use_user_name(params: dict) -> str:
    """The quick test's *Your name* as last typed (params["user_name"], kept across page reloads as the
    character's name is); "You" when unset."""
    return one_line(str(params.get("user_name") or "")) or "You"


DEFAULT_USE_TURNS = 5  # for an adapter that records none (trained before it was recorded), as chat.py
CHAT_FILTERS = ("non-responses", "conversation enders", "low-quality conversations")

# The training form: (TrainConfig field, label, kind). Defaults come from TrainConfig itself.
TRAIN_FIELDS = (
    ("epochs", "Epochs", "number"),
    ("batch_size", "Batch size", "number"),
    ("learning_rate", "Learning rate (0: 3e-4 for LoRA, 3e-2 for prompt tuning)", "number"),
    ("cutoff_len", "Cutoff length (tokens)", "number"),
    ("lora_rank", "LoRA rank", "number"),
    ("lora_alpha", "LoRA alpha (0: 2 × rank)", "number"),
    ("lora_dropout", "LoRA dropout", "number"),
    ("grad_accum", "Gradient accumulation steps", "number"),
    ("val_ratio", "Held-out share (val_ratio)", "number"),
    ("max_steps", "Max steps (0: the epochs decide; else it replaces them)", "number"),
    ("save_steps", "Checkpoint every N steps (0: per epoch; and every 20 minutes)", "number"),
    ("seed", "Seed", "number"),
    ("target_modules", "Target modules (empty: all linear layers)", "text"),
    ("method", "Method", "method"),
    ("num_virtual_tokens", "Virtual tokens (prompt tuning)", "number"),
    ("load_in_4bit", "Load in 4-bit (QLoRA)", "check"),
    ("load_in_8bit", "Load in 8-bit", "check"),
    ("gradient_checkpointing", "Gradient checkpointing (auto: on for GPUs; off: faster)", "choice"),
)


# The "choice" fields' choices (a run recorded before a field existed fills it with TrainConfig's default).
FIELD_CHOICES = {"gradient_checkpointing": GRADIENT_CHECKPOINTING}

def _choice(key: str, value, default: str) -> str:
    """A choice field's value from a run's settings: a checkpoint records gradient checkpointing as what it
    came to (True/False), an older run not at all (the default)."""
    if isinstance(value, bool):
        value = "on" if value else "off"
    return value if value in FIELD_CHOICES[key] else default


# The number fields' steps: the browser holds a value that is not a whole number of steps invalid, and
# its arrows move by one step (from 0.0003, one unit was a jump to 1.0003).
NUMBER_STEPS = {"learning_rate": 1e-5, "lora_alpha": 0.5, "lora_dropout": 0.01, "val_ratio": 0.01}

# What the library's messages call a CLI flag, the tab calls by its label.
_TAB_WORDS = {"resume": "Resume", "overwrite": "Overwrite", "lora_name": "Adapter name", "dataset_name": "Dataset",
              "model_name": "Base model", **{key: label.split(" (")[0] for key, label, _ in TRAIN_FIELDS},
              # Prepare and Evaluate
              "gap_minutes": "New conversation after a gap", "jsonfilename": "Save as", "txtfilename": "the file",
              "rounds": "Context turns", "format": "Format", "source": "Source", "max_samples": "Max samples",
              "csv_speaker_column": "Speaker column", "csv_text_column": "Text column",
              # Prepare's switches that keep what a filter dropped: `'Filters' without 'non-responses' keeps them`
              **{f"keep_{key}": f"Filters' without '{label}" for key, label in (
                  ("non_responses", "non-responses"), ("enders", "conversation enders"),
                  ("low_quality", "low-quality conversations"))},
              "strip_actions": "Strip actions",
              "keep_duplicates": "prepare_dataset.py --keep_duplicates",  # (no field: a command-line switch)
              # Use's merge
              "output_name": "Merged model name", "dtype": "Weights", "names": "Character(s) to learn"}
_FLAG = re.compile(r"--([a-z_0-9]+)")
# the scripts' short flags, as a message names them (`-l bob`, `-n 'Deleted Account'`): the tab's fields
# (not -m: `python -m nltk.downloader` in a note is a command to run)
_SHORT_FLAG = re.compile(r"(?<![\w-])-([lno]) ")
_SHORT_WORDS = {"l": "lora_name", "n": "names", "o": "output_name"}
# The scripts a message sends the user to, as the sections that do the same.
_TAB_PLACES = {"lora_finetune.py -d": "*2. Train*", "prepare_dataset.py": "*1. Prepare*", "lora_finetune.py": "*2. Train*"}


# 4. Use's adapter choice for a model loaded alone (the standalone app): a merged model, or a base to compare
NO_ADAPTER = "(none: the model alone)"


def _adapter(picked: str | None) -> str | None:
    return None if picked == NO_ADAPTER else picked


def tab_words(message: str) -> str:
    """A library message with the tab's labels for the flags it names (`--resume` -> 'Resume') and its
    sections for the scripts (`lora_finetune.py -d` -> *2. Train*)."""
    message = message.replace("(got None)", "(the field is empty)").replace(", not None", " (the field is empty)")
    for script, place in _TAB_PLACES.items():
        message = message.replace(script, place)
    message = _SHORT_FLAG.sub(lambda m: f"--{_SHORT_WORDS[m.group(1)]} ", message)
    return _FLAG.sub(lambda m: f"'{_TAB_WORDS[m.group(1)]}'" if m.group(1) in _TAB_WORDS else m.group(0), message)


_PLACEHOLDER = re.compile(r"put-[\w-]+-here\.txt")
_libraries = threading.Lock()
_libraries_loaded = False


def load_training_libraries() -> None:
    """Import what the checks before a run need: torch, and transformers' modules for building a model
    (the checks build the picked one on the meta device to list its layers), 5-10 s in a fresh process.
    The standalone app calls this in the background at launch, so that the first Start answers at once;
    the checks call it too, so that they wait for that import instead of racing it in a second thread."""
    global _libraries_loaded
    with _libraries:
        if _libraries_loaded:
            return
        try:
            import torch
            from transformers import AutoModelForCausalLM, LlamaConfig

            tiny = LlamaConfig(hidden_size=8, intermediate_size=8, num_hidden_layers=1, num_attention_heads=1,
                               num_key_value_heads=1, vocab_size=8)
            with torch.device("meta"):  # the shared modules and the usual architecture's: no memory used
                AutoModelForCausalLM.from_config(tiny)
        except (ImportError, OSError, RuntimeError, ValueError):  # the checks say what is missing, in their words
            return
        _libraries_loaded = True


def _resumable(job) -> bool:
    """A training job stopped with a checkpoint saved: Resume continues it."""
    return job.state == "stopped" and bool((job.last("end") or {}).get("checkpoint"))


def _stop(kind: str, idle: str, stopping: str) -> str:
    """Ask the running job of this kind to stop (its worker sees the stop file between steps)."""
    job = jobs.current(kind)
    if job is None or not job.running:
        return idle
    job.stop()
    return stopping


def _is_folder(folder: Path) -> bool:
    """A folder the datasets list offers too: a Ren'Py game's (scripts in it or in its game/) or an
    unzipped Slack export (folders of other chat exports are read by prepare_dataset.py)."""
    from .sources import renpy, slack

    try:
        return renpy.is_game_folder(folder) or slack.is_export(folder)
    except OSError:  # unreadable: not offered
        return False


def _is_dialogue(path: Path) -> bool:
    """A file Prepare can read: text or CSV, JSON that is a Discord, Telegram or Messenger export, a SillyTavern chat, a
    Slack export's zip, a Ren'Py script or a zip of them (not a prepared dataset, not a settings file); the
    webui's `put-...-here.txt` placeholders are not dialogue."""
    from .sources import renpy, slack
    from .sources.sillytavern import looks_like

    suffix = path.suffix.lower()
    if suffix == ".zip":
        return slack.is_export(path) or renpy.is_zip_of_scripts(path)
    if suffix not in RAW_SUFFIXES or _PLACEHOLDER.fullmatch(path.name) or holds_samples(path):
        return False
    if suffix in (".json", ".jsonl"):
        try:
            with open(path, "rb") as f:
                head = f.read(1 << 16)
        except OSError:
            return False
        if suffix == ".jsonl" and looks_like(head.decode("utf-8", "replace")):  # a SillyTavern chat
            return True
        # a Telegram account export's chats come after its contacts: its opening words tell it
        return head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{") and (
            b'"messages"' in head or b'"chats"' in head or (b'"about"' in head[:300] and b"Telegram" in head[:300]))
    return True


def _upload_path(upload) -> Path:
    """An upload's file: Gradio passes a path (4.x: a file object with .name)."""
    return Path(upload if isinstance(upload, (str, Path)) else getattr(upload, "name", upload))


def train_defaults() -> dict:
    """TrainConfig's defaults for the form (the CLI's defaults), by field name."""
    from .training import TrainConfig

    out = {}
    for f in dataclasses.fields(TrainConfig):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


_EVAL_MEMORY = re.compile(r"try a smaller --batch_size \(it was (\d+)\), --cutoff_len or --max_new_tokens(, or "
                          r"--load_in_4bit)?")


def _evaluation_memory(message: str) -> str:
    """Evaluation's out-of-memory advice in the tab, whose *3. Evaluate* has no batch size, cutoff or reply
    length ('Batch size' and 'Cutoff length' are Train's, which evaluation does not read)."""
    return _EVAL_MEMORY.sub(lambda m: ("tick --load_in_4bit, or " if m.group(2) else "")
                            + f"run evaluate_lora.py with a smaller batch size than the tab's {m.group(1)} (or a "
                            "shorter cutoff or reply length)", message)


def _pick_heldout(message: str) -> str:
    """evaluate_lora.py's words for a missing held-out split in the tab's."""
    return tab_words(message.replace("pass one with -d HELD_OUT.json", "pick a file in 'Held-out samples'").replace(
        "pass the samples to score with -d HELD_OUT.json", "pick a file in 'Held-out samples'"))


def _text_value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def progress_markdown(job: jobs.Job | None) -> str:
    """One status block for a training job: step, loss, tokens/s, time left; how it ended."""
    if job is None:
        return "No training has run since the app started."
    step = job.last("step")
    evaluation = job.last("eval")
    lines = []
    state = job.state
    adapter = job.config.get("lora_name", "")
    title = {"running": "Training", "done": "Finished", "stopped": "Stopped", "failed": "Failed"}[state]
    if state == "running" and getattr(job, "stopping", False):
        title = "Stopping (saving a checkpoint)"
    lines.append(f"### {title}: {adapter}{_config_bits(job.config)}")
    if step:
        total = step.get("total_steps")
        parts = [f"**step {step.get('step')}" + (f"/{total}" if total else "") + "**"]
        if step.get("loss") is not None:
            parts.append(f"loss {float(step['loss']):.4f}")
        if step.get("tokens_per_s") is not None:
            parts.append(f"{float(step['tokens_per_s']):,.0f} tokens/s")
        if state == "running":
            parts.append(f"{format_eta(step.get('eta_s'))} left")
        if step.get("epoch") is not None:
            parts.append(f"epoch {float(step['epoch']):.2f}")
        lines.append(" · ".join(parts))
    elif state == "running":
        lines.append(f"starting (loading the model and data)… {int(time.time() - job.started)} s")
    # (a phase said as it starts, `tokenizing 300,000 samples ...`, is no note once the run is past it)
    notes = [e["message"] for e in job.events if e.get("event") == "log" and e.get("message") and not e.get("phase")]
    if notes:  # samples dropped, a resume, mixed instructions: said once by the run
        lines.append("  \n".join(f"*{_md_text(tab_words(n))}*" for n in notes))
    if evaluation:
        bits = [f"{k.replace('_', ' ')} {float(evaluation[k]):.4f}" for k in ("eval_loss", "perplexity", "loss")
                if isinstance(evaluation.get(k), (int, float))]
        if bits:
            where = "before training" if not evaluation.get("step") else f"at step {evaluation['step']}"
            lines.append(f"held-out {where}: " + ", ".join(bits))
    if state == "done":
        lines.append(f"Saved the adapter **{adapter}**; pick it in Evaluate or Use.")
    elif state == "stopped":
        end = job.last("end") or {}
        # the form may show another run's fields by now (a dataset saved in Prepare): name the one to resume
        again = (f" To continue, Start with the adapter name **{adapter}** and *Resume* ticked." if _resumable(job)
                 else " Start again when you are ready.")
        lines.append((end.get("message") or "Stopped.") + again)
    elif state == "failed":  # wrapped text (a code block scrolled sideways), in the form's words
        lines.append("**Error:** " + _md_text(tab_words(job.error() or "unknown error")))
    return "\n\n".join(lines)


def _md_text(text: str) -> str:
    """Plain text shown as Markdown: its marks escaped, its lines kept."""
    text = re.sub(r"([\\`*_{}\[\]<>#|])", r"\\\1", text)
    return "  \n".join(text.splitlines())


def show_sample(record: dict, number: int) -> str:
    """A sample as the model is trained on it: the context, then the cue, with the learnt reply in «»; in
    ⟦⟧ when the sample writes « or » itself (French quotes), so that the marks stay unambiguous."""
    from .prompt import record_segments

    try:
        segments = record_segments(record)
    except ValueError as e:
        return f"— sample {number}: {e} —"
    opening, closing = ("⟦", "⟧") if any("«" in t or "»" in t for t, _ in segments) else ("«", "»")
    text = "".join(f"{t[:len(t) - len(t.lstrip())]}{opening}{t.strip()}{closing}\n" if trainable else t
                   for t, trainable in segments)
    return f"— sample {number} —\n{text.rstrip()}"


def loss_figure(points: list[tuple[int, float]], before: list[tuple[int, float]] = ()):
    """A small matplotlib loss curve (no pyplot, so no GUI backend), or None when there is nothing to draw.
    `before`: a resumed run's logged losses before its stop (means over the logging steps), drawn apart
    from this run's per-step losses so that the two kinds of point are not joined into one line."""
    if not points and not before:
        return None
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    fig = Figure(figsize=(6, 2.6), dpi=100)
    ax = fig.add_subplot(111)
    if before:
        steps, losses = zip(*before)
        ax.plot(steps, losses, marker=".", linewidth=1, color="0.6", label="before the stop (logged means)")
    if points:
        steps, losses = zip(*points)
        ax.plot(steps, losses, marker="." if len(points) < 40 else None, linewidth=1.5, color="C0",
                label="since resuming" if before else None)
    if before:
        ax.legend(loc="best", fontsize="small", framealpha=0.8)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole: no 1.25 on a short run
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


class TabLogic:
    """The tab's behaviour, free of Gradio: each method is one button or field change."""

    def __init__(self, host):
        self.host = host
        self._loaded_saves: dict[str, tuple] = {}  # adapter -> its save as it was when Use loaded it
        self.last_start: tuple[tuple, float] | None = None  # (Start's form, when): a double click is one Start
        self._checking = 0  # Starts checking their settings now (a double click's second waits for the first)
        self._lock = threading.Lock()

    # -- folders ---------------------------------------------------------------------------------
    def models(self) -> list[str]:
        return list_models(self.host.dirs().models)

    def default_model(self) -> str | None:
        """The base model a fresh Train form starts with: the one loaded now (in the webui, or for chat in
        the standalone app), else the only one in the models folder; None where that is a choice to make."""
        models = self.models()
        loaded = self.host.in_use()[0]
        if loaded in models:
            return loaded
        return models[0] if len(models) == 1 else None

    def adapters(self) -> list[str]:
        return list_adapters(self.host.dirs().loras)

    def datasets(self) -> list[str]:
        """Prepared datasets only: raw dialogue or a settings file in the same folder cannot be trained on."""
        d = self.host.dirs().datasets
        return [name for name in list_datasets(d) if holds_samples(d / name)]

    def raw_files(self) -> list[str]:
        d = self.host.dirs().datasets
        if not d.is_dir():
            return []
        return sorted(p.name for p in d.iterdir() if not p.name.startswith(".")  # (macOS's `._NAME` files)
                      and (p.is_file() and _is_dialogue(p) or p.is_dir() and _is_folder(p)))

    def input_path(self, upload, picked) -> Path:
        """The dialogue file: an upload (read only, never run) wins over a file picked from the datasets folder."""
        if upload:
            path = _upload_path(upload)
        elif picked:
            folder = self.host.dirs().datasets
            path = folder / picked_name(str(picked), folder, "file name")
        else:
            raise UserError("upload a dialogue file or pick one from the list")
        if not path.is_file() and not (not upload and path.is_dir() and _is_folder(path)):
            raise UserError(f"{path}: no such file")
        return path

    # -- Prepare ---------------------------------------------------------------------------------
    @staticmethod
    @contextlib.contextmanager
    def _upload_named(upload):
        """Messages about an upload name its file, not Gradio's temporary folder (/tmp/gradio/<hash>/...)."""
        try:
            yield
        except UserError as e:
            if not upload:
                raise
            path = _upload_path(upload)
            raise UserError(str(e).replace(str(path), path.name)) from None

    @staticmethod
    def _report_text(report, upload) -> str:
        text = report.format()
        if upload:
            path = _upload_path(upload)
            text = text.replace(str(path), path.name)
        return text

    def scan(self, upload, picked, source: str, csv_speaker: str = "", csv_text: str = "") -> list[tuple[str, str]]:
        """Speakers found in the file, most lines first, as (label with count, name) choices."""
        from .prepare import scan_speakers_with_unit

        with self._upload_named(upload):
            path = self.input_path(upload, picked)
            counts, unit = scan_speakers_with_unit(path, source=source or "auto", **_csv_columns(csv_speaker, csv_text))
        if not counts:
            raise UserError(f"{path.name}: no speakers found: is this dialogue (`Name: text` lines, a script, an "
                            "export)?")
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        one = {"speeches": "speech"}.get(unit, unit[:-1])
        return [(f"{name} ({n} {unit if n != 1 else one})", name) for name, n in ranked]

    def prepare_config(self, upload, picked, source, names, rounds, out_format, strip_actions, filters, out_name,
                       gap_minutes=10, csv_speaker="", csv_text=""):
        from .prepare import PrepareConfig

        names = [names] if isinstance(names, str) else list(names or [])
        if not names:
            # the file's own problem first (none chosen, empty, unreadable): it is why the list is empty
            self.scan(upload, picked, source, csv_speaker, csv_text)
            raise UserError("pick at least one character in 'Character(s) to learn'")
        out_name = check_name(out_name or "", "'Save as'")
        if not out_name.lower().endswith((".json", ".jsonl")):  # `bob.txt`: bob.json, not bob.txt.json
            stem = out_name[: -len(Path(out_name).suffix)] if Path(out_name).suffix.lower() in RAW_SUFFIXES else out_name
            out_name = (stem or out_name) + ".json"
        filters = set(filters or ())
        values = {
            "names": names,
            # a whole number as the form sends it (2.0) made an int; 2.5 is refused by the checks, not cut
            "rounds": int(rounds) if isinstance(rounds, (int, float)) and float(rounds).is_integer() else rounds,
            "txtfilename": str(self.input_path(upload, picked)),
            "jsonfilename": str(self.host.dirs().datasets / out_name),
            "format": out_format or "rounds",
            "source": source or "auto",
            "strip_actions": bool(strip_actions),
            "gap_minutes": gap_minutes,  # checked by PrepareConfig (a blank field is None)
            "filter_non_responses": "non-responses" in filters,
            "filter_enders": "conversation enders" in filters,
            "filter_low_quality": "low-quality conversations" in filters,
            **_csv_columns(csv_speaker, csv_text),
        }
        known = {f.name for f in dataclasses.fields(PrepareConfig)}
        return PrepareConfig(**{k: v for k, v in values.items() if k in known})

    def preview(self, *form) -> tuple[str, str]:
        """(the first samples as training sees them, the report); nothing is written."""
        from .prepare import preview

        with self._upload_named(form[0]):
            samples, report = preview(self.prepare_config(*form), n=PREVIEW_SAMPLES)
        return "\n\n".join(show_sample(s, i) for i, s in enumerate(samples, 1)), self._report_text(report, form[0])

    def save(self, *form, overwrite: bool = False) -> tuple[str, str]:
        """Write the dataset; returns (file name, report). An existing file needs `overwrite`."""
        from .prepare import prepare

        with self._upload_named(form[0]):
            cfg = self.prepare_config(*form)
        out = Path(cfg.jsonfilename)
        twin = case_twin(out.parent, out.name)
        if twin is not None:  # `Bob.json` beside `bob.json`: one file on Windows and macOS
            raise UserError(f"'Save as' {out.name!r}: a dataset {twin!r} exists in {out.parent}, and names differing "
                            f"only in case are one file on Windows and macOS: save as {twin} (with 'Overwrite if it "
                            "exists' to replace it) or another name")
        if out.exists() and not overwrite:
            raise UserError(f"{out.name} already exists in {out.parent}: tick 'Overwrite if it exists' to replace it")
        with self._upload_named(form[0]):
            report = prepare(cfg, write=True)
        return out.name, f"{SAVED_REPORT}{out.name} in {out.parent}.\n\n" + self._report_text(report, form[0])

    # -- Train -----------------------------------------------------------------------------------
    def train_config(self, model, dataset, adapter, settings: dict, resume: bool, overwrite: bool) -> dict:
        dirs = self.host.dirs()
        if not model:
            raise self.no_model()
        if not dataset:
            raise UserError(f"pick a dataset (the list shows the files in {dirs.datasets})")
        adapter = check_name(adapter, "adapter name")
        dataset_path = dirs.datasets / picked_name(dataset, dirs.datasets, "dataset name")
        if not dataset_path.is_file():
            raise UserError(f"{dataset_path}: no such file")
        config = dict(settings)  # an adapter of that name already there: the checks below say what to do
        if resume:  # what the form has no field for (a command-line run's --warmup_ratio) goes on as it was
            found = self.resume_form(adapter)
            if found is not None:
                from .training import CARRIED_ON_RESUME, RESUME_KEYS

                for key in (*RESUME_KEYS, *CARRIED_ON_RESUME):
                    if key in found[0]:
                        config.setdefault(key, found[0][key])
        for key, default in train_defaults().items():  # a blank or 0 field with no fixed default: the default
            if default is None and key in config and config[key] in (None, "", 0):
                config[key] = None
        for key in ("epochs", "batch_size", "cutoff_len", "lora_rank", "grad_accum", "max_steps", "save_steps",
                    "seed", "num_virtual_tokens"):
            value = config.get(key)
            # Gradio's numbers are floats: 3.0 is 3, and 2.9 stays 2.9 for the checks to refuse (not cut to 2)
            if isinstance(value, float) and value.is_integer():
                config[key] = int(value)
        modules = config.get("target_modules")
        if isinstance(modules, str):
            modules = [m.strip() for m in modules.split(",") if m.strip()]
            config["target_modules"] = modules or None
        config.update(
            model_name=str(model), dataset_name=str(dataset_path), lora_name=adapter,
            model_dir=str(dirs.models), lora_dir=str(dirs.loras), resume=bool(resume), overwrite=bool(overwrite),
        )
        load_training_libraries()
        from .training import TrainConfig, check

        known = {f.name for f in dataclasses.fields(TrainConfig)}
        config = {k: v for k, v in config.items() if k in known}
        try:  # every setting, the dataset, the model's layers, what to resume: before a process starts
            check(TrainConfig(**config))
        except UserError as e:
            raise UserError(tab_words(str(e))) from None
        return config

    def no_model(self) -> UserError:
        """What to do when no base model is picked: pick one, or, with none in the folder, put one there
        (naming the folders left out for having no weights)."""
        from .paths import has_weights, is_model_dir

        folder = self.host.dirs().models
        if self.models():
            return UserError(f"pick a base model (the list shows the models in {folder})")
        unweighted = (sorted(p.name for p in folder.iterdir() if is_model_dir(p) and not has_weights(p))
                      if folder.is_dir() else [])
        skipped = f"; {', '.join(unweighted[:3])} hold(s) no weights (.safetensors or .bin)" if unweighted else ""
        # a webui user's folder often holds llama.cpp's GGUF files only: those are not for training
        ggufs = sorted(folder.glob("*.gguf")) + sorted(folder.glob("*/*.gguf")) if folder.is_dir() else []
        if ggufs:
            skipped += (f"; {ggufs[0].relative_to(folder)}{' and others' if len(ggufs) > 1 else ''} "
                        "is GGUF (llama.cpp's format), which is not trained here: the original model is needed")
        return UserError(f"no models in {folder}: put a Hugging Face model's folder there (its config.json, "
                         f"tokenizer and weights), then Refresh lists{skipped}")

    def resume_form(self, adapter) -> tuple[dict, str] | None:
        """(the settings of the adapter's latest checkpoint, its name) when the adapter has a stopped run to
        resume; None otherwise. Resume fills the form with them: a form at its defaults (the app restarted)
        would quietly change the run's length and schedule."""
        from .training import resumed_settings

        name = str(adapter or "").strip()
        if not name or "/" in name or "\\" in name:
            return None
        loras = self.host.dirs().loras
        found = resumed_settings(loras / on_disk(loras, name))  # (a folder spelt decomposed: a macOS copy's)
        return None if found is None else (as_defaults(found[0]), found[1])

    def start_training(self, model, dataset, adapter, settings: dict, resume=False, overwrite=False) -> jobs.Job:
        jobs.check_idle("train")
        return jobs.start("train", self.train_config(model, dataset, adapter, settings, resume, overwrite))

    @contextlib.contextmanager
    def starting(self, form: tuple):
        """Around a Start: yields when the same form was Started less than DOUBLE_CLICK_SECONDS ago (a double
        click, or the same Start on two pages at once), which then follows that one's run; else None."""
        with self._lock:
            now = time.time()
            first = self.last_start
            again = bool(first and first[0] == form and now - first[1] < DOUBLE_CLICK_SECONDS)
            if not again:
                self.last_start = (form, now)
                self._checking += 1
        try:
            yield first[1] if again else None
        finally:
            if not again:
                with self._lock:
                    self._checking -= 1

    def started_since(self, since: float, wait: float = 60.0) -> jobs.Job | None:
        """The training job started at `since` or later, once it has (a Start checks the settings first:
        seconds on the first, which imports the training libraries); None when no Start is still checking."""
        deadline = time.time() + wait
        while time.time() < deadline:
            checking = self._checking  # first: a Start that ends after this read has set the job read next
            job = jobs.current("train")
            if job is not None and job.started >= since:
                return job
            if not checking:
                return None
            time.sleep(0.2)
        return None

    def stop_training(self) -> str:
        """Stop the run; with none running, the last run's status stays (a stopped run's says how to resume)."""
        job = jobs.current("train")
        idle = "Nothing is training." if job is None else f"Nothing is training.\n\n{progress_markdown(job)}"
        return _stop("train", idle, "Stopping: saving a checkpoint, then the process exits…")

    # -- Evaluate --------------------------------------------------------------------------------
    def stop_evaluation(self) -> str:
        return _stop("evaluate", "Nothing is being evaluated.", "Stopping the evaluation (nothing is written)…")

    def heldout_choices(self) -> list[str]:
        return ["(the adapter's held-out split)"] + self.datasets()

    def start_evaluation(self, model, adapter, heldout, max_samples, load_in_4bit=False, load_in_8bit=False) -> jobs.Job:
        jobs.check_idle("evaluate")  # said first: fixing the form would not help
        dirs = self.host.dirs()
        if not model or not adapter:
            raise self.no_model() if not model and not self.models() else UserError("pick a base model and an adapter")
        config = {
            "model_name": str(model), "lora_name": picked_name(adapter, dirs.loras, "adapter name"),
            "model_dir": str(dirs.models), "lora_dir": str(dirs.loras),
            # an empty field is all (0), as the label's 0; 2.5 is refused by EvalConfig's checks, not cut to 2
            "max_samples": 0 if max_samples in (None, "") else max_samples,
            "load_in_4bit": bool(load_in_4bit), "load_in_8bit": bool(load_in_8bit),
        }
        if heldout and heldout in self.datasets():
            config["dataset"] = str(dirs.datasets / heldout)
        from .evaluation import EvalConfig, resolve_heldout
        from .generation import read_training_parameters

        try:
            cfg = EvalConfig(**config)
        except UserError as e:
            raise UserError(tab_words(str(e))) from None
        # gone since the lists were read (renamed, deleted): said now, as Merge does, not by a process started
        resolve_model(config["model_name"], dirs.models)
        adapter_path = resolve_adapter(config["lora_name"], dirs.loras)
        try:  # no held-out set to use: say so now, in the tab's words
            resolve_heldout(cfg, adapter_path, read_training_parameters(adapter_path))
        except UserError as e:
            raise UserError(_pick_heldout(str(e))) from None
        return jobs.start("evaluate", config)

    def own_split_note(self, adapter) -> str:
        """Why an adapter's own held-out split, which picking it selects, cannot be scored (none kept, its
        file gone), said when it is picked rather than at *Evaluate*; '' when it can."""
        from .evaluation import EvalConfig, resolve_heldout

        recorded = self._recorded(adapter)
        if recorded is None:
            return ""
        try:
            resolve_heldout(EvalConfig("base", recorded[0].name), *recorded)  # (the model plays no part)
        except UserError as e:
            return _pick_heldout(str(e))
        return ""

    @staticmethod
    def evaluation_tables(job: jobs.Job) -> tuple[list, list, str]:
        """(metric rows, sample rows, status) of an evaluation job."""
        if job.state == "running":
            info = next((e for e in reversed(job.events) if e.get("stage")), {})  # not a log line's
            stage = info.get("stage") or "load"
            done, total = info.get("done"), info.get("total")
            count = f" {done}/{total}" if done is not None and total and total > 1 else ""
            # "done": the replies and metrics are in, the report is being written and the process ending
            stage = {"load": "loading the model and adapter", "metrics": "computing the metrics",
                     "done": "writing the report"}.get(stage, stage)
            what = job.config.get("lora_name", "") + _config_bits(job.config)
            if job.stopping:  # the worker sees the stop between batches: say so, or Stop looks ignored
                return [], [], (f"Stopping the evaluation of {what} after the current batch of replies… "
                                f"({stage}{count})")
            return [], [], f"Evaluating {what}… {stage}{count}"
        if job.state == "stopped":
            said = (job.last("end") or {}).get("message") or ""
            return [], [], "Evaluation stopped" + ("; nothing was written" if "nothing was written" in said else "")
        if job.state != "done":
            return [], [], f"Evaluation failed: {tab_words(_evaluation_memory(job.error() or 'unknown error'))}"
        end = job.last("end") or {}
        try:
            result = json.loads(Path(end["eval_json"]).read_text(encoding="utf-8"))
        except (OSError, ValueError, KeyError):  # the adapter replaced or deleted since, its report with it
            return [], [], ""
        return TabLogic._result_tables(result, end.get("eval_md"))

    def saved_evaluation(self, adapter: str | None) -> tuple[list, list, str] | None:
        """The tables of the adapter's last report (its eval.json), for Evaluate when it is picked; None
        when it has none that can be read."""
        adapter = _adapter(adapter)
        if not adapter or "/" in adapter or "\\" in adapter:
            return None
        folder = self.host.dirs().loras / adapter
        try:
            result = json.loads((folder / "eval.json").read_text(encoding="utf-8"))
            if "perplexity_adapter" not in result:  # another tool's eval.json
                return None
            metrics, samples, status = self._result_tables(result, folder / "eval.md")
        except (OSError, ValueError, TypeError, KeyError, AttributeError):  # none, or not one a report wrote
            return None
        return metrics, samples, f"Last evaluated{_when(result.get('evaluated_at'))}: {status}"

    @staticmethod
    def _result_tables(result: dict, report) -> tuple[list, list, str]:
        """(metric rows, sample rows, status) of an evaluation's result (eval.json)."""
        from .evaluation import UNSTOPPED, UNSTOPPED_NOTE, base_loading, context_tail, metric_rows

        metrics = [list(row) for row in metric_rows(result)]
        # the context's last lines, one per row of the cell (" ⏎ " between them), as eval.md shows it
        shown = result.get("samples", [])[:20]
        # a reply that did not stop at the newline marked as eval.md marks it (a result from before stops
        # were recorded: none marked)
        unstopped = [[not s.get(f"{who}_stopped", True) for who in ("base", "adapter")] for s in shown]
        samples = [[context_tail(s["prompt"]).replace("\n", " ⏎ "), s["reference"],
                    s["base_reply"] + (UNSTOPPED if base else ""), s["adapter_reply"] + (UNSTOPPED if adapter else "")]
                   for s, (base, adapter) in zip(shown, unstopped)]
        notes = tab_words("; ".join(result.get("notes") or []))
        n = result.get('n_replies', len(samples))
        status = f"{n} {'reply' if n == 1 else 'replies'} from {result.get('heldout_file')}{base_loading(result)}; " \
                 f"report in {report}" + (f"\n\n{notes}" if notes else "")
        if any(any(pair) for pair in unstopped):
            status += f"\n\n{UNSTOPPED_NOTE}"
        return metrics, samples, status

    # -- Merge (in 4. Use) ------------------------------------------------------------------------
    def start_merge(self, model, adapter, name, dtype, overwrite) -> jobs.Job:
        """A merge in its own process (it loads the whole base model); its refusals come first, here."""
        from .merging import MergeConfig, plan

        dirs = self.host.dirs()
        adapter = _adapter(adapter)
        if not adapter:
            raise UserError("pick the adapter to merge")
        model = model or self.base_of(adapter)  # a reloaded page shows the adapter in use, its base not filled in
        if not model:
            raise UserError("pick the base model to merge it into (the one it was trained on)")
        config = {"model_name": str(model), "lora_name": picked_name(adapter, dirs.loras, "adapter name"),
                  "output_name": (name or "").strip() or None, "dtype": dtype or "auto", "overwrite": bool(overwrite),
                  "model_dir": str(dirs.models), "lora_dir": str(dirs.loras)}
        try:
            plan(MergeConfig(**config))
        except UserError as e:
            raise UserError(tab_words(str(e))) from None
        return jobs.start("merge", config)

    def merge_name_hint(self, model, adapter) -> str:
        """The merged model's name when the field is left empty, for its placeholder."""
        from .merging import default_output_name

        dirs = self.host.dirs()
        adapter = _adapter(adapter)
        if not model or not adapter:
            return "MODEL-ADAPTER"
        try:
            return default_output_name(resolve_model(model, dirs.models), resolve_adapter(adapter, dirs.loras))
        except UserError:
            return "MODEL-ADAPTER"

    @staticmethod
    def merge_status(job: jobs.Job) -> str:
        if job.state == "running":
            said = (job.last("log") or {}).get("message") or "starting ..."
            return f"Merging: {said}"
        if job.state == "done":
            return (job.last("end") or {}).get("message") or "Merged."
        if job.state == "stopped":
            return "Merge stopped: nothing was written."
        return f"⚠️ Merge failed: {tab_words(job.error() or 'unknown error')}"

    # -- Use -------------------------------------------------------------------------------------
    def _recorded(self, adapter: str | None) -> tuple[Path, dict] | None:
        """(folder, training_parameters.json) of an adapter in the loras folder; None when there is no such
        adapter or its settings cannot be read (the model alone: NO_ADAPTER)."""
        adapter = _adapter(adapter)
        if not adapter:
            return None
        from .generation import read_training_parameters

        path = self.host.dirs().loras / adapter
        if not is_adapter_dir(path):
            return None
        try:
            return path, read_training_parameters(path, prompt=True)
        except UserError:
            return None

    def base_of(self, adapter: str | None) -> str | None:
        """The base model an adapter was trained on, when it is one in the models folder."""
        return self._base(self._recorded(adapter))

    def trained_quantization(self, adapter: str | None) -> tuple[bool, bool] | None:
        """(load_in_4bit, load_in_8bit) as the adapter was trained: Evaluate and Use load its base the same
        way when it is picked, so that a model that fitted the card in training fits there too (unquantised,
        a 4-bit-trained 8B needs 16 GB more). None when its settings do not say (trained elsewhere)."""
        from .generation import trained_bits

        recorded = self._recorded(adapter)
        return trained_bits(recorded[1]) if recorded is not None else None

    def adapter_facts(self, adapter: str | None) -> tuple[str, str | None, str]:
        """(character, base model, characters note) of an adapter, its settings read once: the character it
        was trained for (its recorded name, else the cue of its held-out samples), and for an adapter
        trained on several characters which ones, since the name field holds one."""
        recorded = self._recorded(adapter)
        return self._character(recorded), self._base(recorded), self._characters_note(adapter, recorded)

    def _base(self, recorded: tuple[Path, dict] | None) -> str | None:
        if recorded is None:
            return None
        params = recorded[1]
        models = self.models()
        for value in (params.get("base_model"), params.get("base_model_path")):
            if value and Path(str(value)).name in models:
                return Path(str(value)).name
        return None

    def name_note(self, name: str | None, adapter: str | None) -> str:
        """A warning when the character name typed in 4. Use is not one the picked adapter learnt (chat.py
        warns the same); else the adapter's characters note."""
        recorded = self._recorded(adapter)
        learnt = [str(n) for n in (recorded[1].get("characters") or [])] if recorded else []
        typed = " ".join(str(name or "").split())
        if typed and learnt and as_learnt(typed, learnt) is None:
            return (f"⚠️ **{adapter}** learnt {', '.join(learnt)}, not {typed}: it may not speak as them (the cue "
                    "it answers to is the name)")
        return self._characters_note(adapter, recorded)

    @staticmethod
    def _characters_note(adapter: str | None, recorded: tuple[Path, dict] | None) -> str:
        names = [str(n) for n in (recorded[1].get("characters") or [])] if recorded else []
        if len(names) < 2:
            return ""
        return (f"**{adapter}** speaks as {', '.join(names[:-1])} and {names[-1]}: put the one you want in "
                "*Character name*.")

    @staticmethod
    def _character(recorded: tuple[Path, dict] | None) -> str:
        if recorded is None:
            return ""
        path, params = recorded
        if recorded_name(params) or params.get("characters"):  # several: the one with the most samples
            return recorded_name(params) or str(params["characters"][0])
        # else the cue that ends the prompts it was trained on (held-out samples, else the dataset)
        from .fileio import load_records
        from .prompt import record_examples

        for samples in (path / str(params.get("heldout_file") or "heldout.json"), params.get("dataset")):
            if not samples:
                continue
            try:
                record = load_records(samples)[0]
                prompt_text = record_examples(record)[0][0]
            except (UserError, ValueError, IndexError):
                continue
            if record.get("name"):
                return str(record["name"])
            return prompt_text.rsplit("\n", 1)[-1].rstrip(":").strip()
        return ""

    def _use_turns(self, recorded) -> None:
        """Context turns as many as the adapter's samples had (its dataset's --rounds; at least 1, the
        user's line), else the default, as chat.py: never the previous adapter's."""
        known = isinstance(recorded, int) and not isinstance(recorded, bool) and recorded >= 0
        self.host.params["rounds"] = min(max(recorded, 1), MAX_USE_TURNS) if known else DEFAULT_USE_TURNS

    def use(self, model, adapter, load_in_4bit=False, load_in_8bit=False) -> str:
        """Apply `adapter` to the webui's model, or (standalone) load `model` with it, 4-/8-bit if asked."""
        adapter = _adapter(adapter)
        if not adapter and not (self.host.own_model and model):  # the standalone app loads a model alone too
            if self.host.own_model and not model and not self.models():
                raise self.no_model()
            raise UserError("pick a base model (and an adapter)" if self.host.own_model else "pick an adapter")
        adapter = picked_name(adapter, self.host.dirs().loras, "adapter name") if adapter else None
        if self.host.own_model:  # the webui's model is loaded as its Model tab says
            message = self.host.use_adapter(model, adapter, load_in_4bit=bool(load_in_4bit),
                                            load_in_8bit=bool(load_in_8bit))
        else:
            message = self.host.use_adapter(model, adapter)
        self.host.params["character_chat"] = True
        self.host.params["stop_at_newline"] = True
        if not adapter:  # a model merge_lora.py wrote says what its adapter learnt; any other, nothing
            from .merging import read_merge_record

            record = read_merge_record(self.host.dirs().models / picked_name(model, self.host.dirs().models, "model"))
            self.host.params["character"] = next(iter(record.get("characters") or []), "")
            self.host.params["instruction"] = record.get("instruction") or None
            self.host.params["user_turns_named"] = user_turns_named(record)
            self.host.params["adapter"] = None
            self._use_turns(record.get("context_turns"))
            return message
        # the webui's Chat tab cues the adapter's own character, not the default bot name; an adapter
        # that does not say whose it is clears the previous one's, so the webui's bot name is used
        recorded = self._recorded(adapter)
        self.host.params["character"] = self._character(recorded)
        # the line an adapter trained on alpaca samples saw before the dialogue (prompt.chat_prompt)
        self.host.params["instruction"] = (recorded[1].get("instruction") or None) if recorded else None
        # samples whose user lines named no one: the user's go bare (prompt.chat_prompt)
        self.host.params["user_turns_named"] = user_turns_named(recorded[1]) if recorded else True
        self._use_turns(recorded[1].get("context_turns") if recorded else None)
        self.host.params["adapter"] = adapter  # whose name that is: not used once the adapter is taken off
        self._loaded_saves = {adapter: save_stamp(self.host.dirs().loras / adapter)}
        from .generation import recorded_base

        base = Path(str(recorded_base(recorded[0]) or "")).name if recorded else ""
        current = model or self.host.in_use()[0]
        if base and current and Path(str(current)).name != base:  # the same shape (checked), other weights
            message += (f" Note: {adapter} was trained on {base}, not on {current}: its replies may not be "
                        "what it learnt")
        return message

    def saved_again(self, applied: list[str]) -> str:
        """A note when an adapter in use was saved again since Use loaded it (a run of that name finished, or
        was merged over): the model in memory still has the old weights until it is loaded again."""
        loras = self.host.dirs().loras
        again = [a for a in applied if a in self._loaded_saves and save_stamp(loras / a) != self._loaded_saves[a]]
        if not again:
            return ""
        button = "Load adapter" if self.host.own_model else "Apply adapter"
        return (f" ⚠️ {', '.join(again)} was saved again since it was loaded (a new training run): the chat still "
                f"uses the weights it had then; press *{button}* to use the new ones.")

    def chat_name(self, name: str | None) -> str:
        """The character a chat cues: the name typed (as an adapter in use learnt it: `bob` is cued `Bob:`, as
        chat.py cues it), else the one the adapter in use learnt (a reloaded page shows an empty box while the
        adapter is still applied), else "Character"."""
        from .prompt import one_line

        typed = one_line(name or "")
        if typed:
            for adapter in self.host.in_use()[1]:
                recorded = self._recorded(adapter)
                learnt = [str(n) for n in (recorded[1].get("characters") or [])] if recorded else []
                match = as_learnt(typed, learnt)
                if match:
                    return match
            return typed
        return one_line(str(self.host.params.get("character") or "")) or "Character"

    def chat(self, history: list[tuple[str, str]], message: str, name: str, user_name: str, rounds: int,
             temperature: float = 0.0) -> str:
        """One reply of the character to `message`, after `history` ((speaker, text) turns), sampled at
        `temperature` (0: the likeliest reply, the same each time)."""
        from .prompt import chat_prompt, check_chat_names, one_line

        name = self.chat_name(name)
        user_name = one_line(user_name or "") or "You"
        check_chat_names([name], user_name, "'Character name'", "'Your name'")
        if not (message or "").strip():
            raise UserError("type a message first")
        turns = list(history) + [(user_name, message)]
        prompt = chat_prompt(turns, name, int(rounds), self.host.params.get("instruction"),
                             None if user_turns_named(self.host.params) else user_name)
        reply = self.host.reply(prompt, temperature=float(temperature or 0))
        if not reply:
            raise UserError(f"{name} ended the line at once (an empty reply): train longer or on more lines")
        return reply


# ------------------------------------------------------------------------------------------- Gradio


# What a button can meet that is the user's to fix: shown in the tab as one line, never a traceback.
EXPECTED = (UserError, ImportError)
# Said where a Start refused because a run was going had waited for that run's end
RUN_ENDED = "The run that was going has ended; yours did not start: click *Start training* again."
RUN_ENDED_EVAL = "That evaluation has ended; yours did not start: click *Evaluate* again."


def _csv_columns(speaker: str | None, text: str | None) -> dict:
    """The CSV column fields as PrepareConfig fields; a blank one keeps the default (and its usual names)."""
    named = {"csv_speaker_column": (speaker or "").strip(), "csv_text_column": (text or "").strip()}
    return {k: v for k, v in named.items() if v}


def _name_words(name: str) -> list[str]:
    """The runs of letters and digits of a name, casefolded, with the combining marks after them (`\\w` leaves
    marks out: Hindi प्रिया fell apart, a decomposed `Zoe` + diaeresis lost it); NFC first, as check_name."""
    words, word = [], ""
    for c in unicodedata.normalize("NFC", unicodedata.normalize("NFC", name).casefold()):  # (casefold may undo NFC)
        if c.isalnum() or (word and unicodedata.category(c).startswith("M")):
            word += c
        elif word:
            words.append(word)
            word = ""
    return words + ([word] if word else [])


def dataset_name_for(names) -> str:
    """A dataset file name for the characters picked: `bob.json`, `romeo-juliet.json`; the default when none
    (or none has a letter or digit a file name may hold)."""
    words = ["-".join(_name_words(str(n))) for n in names or ()]
    # cut at 80 characters and at the name limit's bytes (less `.json`): eight Japanese names ran to 136 bytes,
    # which Save as then refused
    whole = "-".join(w for w in words if w)
    stem = whole[:80].encode("utf-8")[: MAX_NAME_BYTES - 5].decode("utf-8", "ignore")
    if stem != whole and "-" in stem:  # cut: at a name's end, not inside one (a syllable's letters apart)
        stem = stem.rsplit("-", 1)[0]
    stem = stem.strip("-")
    if windows_device(stem):  # a character called Con or Aux: a name Save as (and an adapter) may have
        stem += "-lines"
    return f"{stem}.json" if stem else DEFAULT_DATASET_NAME


def _error_text(e: Exception) -> str:
    if isinstance(e, ImportError):
        name = getattr(e, "name", None) or str(e)
        return f"⚠️ this needs the Python package {name!r}, which is not installed: pip install {name}"
    return f"⚠️ {tab_words(str(e))}"


def build_tab(host) -> dict:
    """Lay out the tab inside the current gr.Blocks context (the webui's tab, or the standalone app): one
    function per section lays out and wires its part; what crosses sections is wired here.

    Returns the few components the standalone app's chat box shares (character and user names, rounds).
    """
    import gradio as gr

    logic = TabLogic(host)
    with gr.Tabs():
        with gr.Tab("1. Prepare"):
            prep = _prepare_section(gr, logic, host)
        with gr.Tab("2. Train") as train_tab:
            train = _train_section(gr, logic, host, train_tab)
        with gr.Tab("3. Evaluate") as eval_tab:
            ev = _evaluate_section(gr, logic, eval_tab)
        with gr.Tab("4. Use") as use_tab:
            use = _use_section(gr, logic, host, use_tab)

    # A saved dataset is picked in Train, and names the adapter
    def on_save(*values):
        *values, overwrite, shown = values
        try:
            saved, text = logic.save(*values, overwrite=overwrite)
        except EXPECTED as e:  # a last save's report goes (it would read as this one's); a preview's stays
            kept = "" if (shown or "").startswith(SAVED_REPORT) else gr.update()
            return kept, _error_text(e), gr.update(), gr.update()
        kept = f" (the earlier one is kept as {Path(saved).name}.bak)" if f"kept as {Path(saved).name}.bak" in text else ""
        return (text, f"Saved **{saved}**{kept}: train on it in *2. Train*.", dd_update(logic.datasets(), saved),
                Path(saved).stem)

    prep.save_btn.click(on_save, prep.form + [prep.overwrite, prep.report],
                        [prep.report, prep.status, train.dataset, train.adapter_name])

    def adapter_lists():  # a run that ended has made or changed an adapter
        return dd_update(logic.adapters()), dd_update(use.adapters())  # Use's with its "(none: …)" choice

    for event in (train.started, train.watched):
        event.then(adapter_lists, None, [ev.adapter, use.adapter])
    # a merge has made a model: every model list offers it (the selections stay)
    use.merged.then(lambda: (dd_update(logic.models()),) * 3, None, [train.model, ev.model, use.model])
    return {"logic": logic, "char_name": use.char_name, "user_name": use.user_name, "rounds": use.rounds,
            "temperature": use.temperature}


def _config_bits(config: dict) -> str:
    """" (the base in 4 bits)" for a job run on a quantised base (its config's load_in_4bit/8bit)."""
    return bits_words(bool(config.get("load_in_4bit")), bool(config.get("load_in_8bit")))


def _when(iso) -> str:
    """" 2026-12-03 01:05 UTC" from a report's ISO time; "" when it has none."""
    import datetime

    try:
        at = datetime.datetime.fromisoformat(str(iso))
    except ValueError:
        return ""
    if at.tzinfo is None:
        return f" {at:%Y-%m-%d %H:%M}"
    return f" {at.astimezone(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"


def _follow(job, view):
    """view(job) every POLL_SECONDS while the job runs, and once more when it has ended."""
    while job.running:
        job.poll()
        yield view(job)
        time.sleep(POLL_SECONDS)
    job.poll()
    yield view(job)


def dd_update(choices, *value):
    """New choices for a dropdown; its selection stays unless a value is given."""
    import gradio as gr

    return gr.update(choices=choices, value=value[0]) if value else gr.update(choices=choices)


def _prepare_section(gr, logic: TabLogic, host) -> SimpleNamespace:
    """1. Prepare: a dialogue file in, the speakers found, a preview (Save is wired in build_tab)."""
    gr.Markdown("Turn raw dialogue (a script or play, subtitles, a chat log, a Discord, Telegram, WhatsApp, Messenger, "
                "LINE, KakaoTalk, iMessage, WeChat, Signal, SillyTavern or Slack chat, a game CSV, a Yarn Spinner or "
                "Ren'Py game's scripts, a saved web page) into training samples for one or more characters.")
    with gr.Row():
        upload = gr.File(label="Upload a dialogue file", file_types=list(UPLOAD_SUFFIXES), type="filepath")
        with gr.Column():
            picked = gr.Dropdown(label="…or pick a file", info=f"in {host.dirs().datasets}",
                                 choices=logic.raw_files(), value=None)
            refresh_raw = gr.Button("Refresh file list", size="sm")
            source = gr.Dropdown(label="Source", choices=[(SOURCE_LABELS.get(v, v), v) for v in SOURCES], value="auto")
    speakers = gr.Dropdown(label="Character(s) to learn", choices=[], multiselect=True,
                           info="Filled from the file: each speaker and how often they speak")
    with gr.Row():
        rounds = gr.Slider(label="Context turns (rounds)", minimum=0, maximum=MAX_USE_TURNS, step=1, value=5)
        out_format = gr.Dropdown(label="Format", choices=list(FORMATS), value="rounds")
        strip_actions = gr.Checkbox(label="Strip actions like (laughs) and *waves*", value=False)
    with gr.Accordion("Chat-export options (Discord, Telegram, WhatsApp, Messenger, SillyTavern, Slack)", open=False):
        with gr.Row():
            filters = gr.Dropdown(label="Filters", multiselect=True, choices=list(CHAT_FILTERS),
                                  value=list(CHAT_FILTERS))
            gap = gr.Number(label="New conversation after a gap of (minutes)", value=10)
    with gr.Accordion("CSV columns (game exports, tables)", open=False):
        with gr.Row():
            csv_speaker = gr.Textbox(label="Speaker column", placeholder="blank: Voice Type, Speaker, "
                                     "Character, Name… whichever the file has")
            csv_text = gr.Textbox(label="Text column", placeholder="blank: Dialogue 1 - English, Text, "
                                  "Line, Dialogue… whichever the file has")
    with gr.Row():
        out_name = gr.Textbox(label="Save as (in the datasets folder)", value=DEFAULT_DATASET_NAME)
        named = gr.State(DEFAULT_DATASET_NAME)  # the name last filled in for the user: it follows the picks
        prep_overwrite = gr.Checkbox(label="Overwrite if it exists", value=False)
    with gr.Row():
        preview_btn = gr.Button("Preview")
        save_btn = gr.Button("Save dataset", variant="primary")
    prep_status = gr.Markdown()
    with gr.Row():
        preview_box = gr.Textbox(label="Preview: what the model reads, and in «» (⟦⟧ if the text has «) what it learns to reply",
                                 lines=14, interactive=False)
        prep_report = gr.Textbox(label="Report", lines=14, interactive=False)

    form = [upload, picked, source, speakers, rounds, out_format, strip_actions, filters, out_name, gap,
            csv_speaker, csv_text]
    scan_inputs = [upload, picked, source, csv_speaker, csv_text]

    def on_file(upload_v, picked_v, source_v, speaker_col="", text_col="", keep=()):
        """The speakers of the chosen file; those in `keep` (the characters picked) stay picked."""
        if not upload_v and not picked_v:
            return dd_update([], []), ""
        try:
            choices = logic.scan(upload_v, picked_v, source_v, speaker_col, text_col)
        except EXPECTED as e:  # with characters picked (a column being typed), the list and picks stay
            return gr.update() if keep else dd_update([], []), _error_text(e)
        found = {name for _, name in choices}
        return (dd_update(choices, [n for n in keep or () if n in found]),
                f"{len(choices)} speakers found: pick the character(s) to learn.")

    def on_new_file(upload_v, picked_v, source_v, speaker_col, text_col, out_v, named_v):
        """Another file (or source): its speakers; the last file's preview and report go, and so does a
        "Save as" name that followed its characters (one the user typed stays)."""
        reset = out_v.strip() == named_v if out_v else True
        return (*on_file(upload_v, picked_v, source_v, speaker_col, text_col), "", "",
                DEFAULT_DATASET_NAME if reset else gr.update(), DEFAULT_DATASET_NAME if reset else named_v)

    switched = [speakers, prep_status, preview_box, prep_report, out_name, named]
    for trigger in (upload.change, source.change):
        trigger(on_new_file, scan_inputs + [out_name, named], switched)
    # the columns read again when one is typed in (Enter, or leaving the field), the characters kept
    for trigger in (csv_speaker.submit, csv_speaker.blur, csv_text.submit, csv_text.blur):
        trigger(on_file, scan_inputs + [speakers], [speakers, prep_status])

    # The file chosen last is the one read: picking a file drops the upload, uploading clears the pick
    # (an upload used to win over a file picked after it, with no sign of it). A pick of nothing (the
    # list closed with Escape reports one when it loses focus) changes nothing.
    def on_pick(picked_v, source_v, speaker_col, text_col, out_v, named_v):
        if not picked_v:
            return (gr.update(),) * 7
        return (None, *on_new_file(None, picked_v, source_v, speaker_col, text_col, out_v, named_v))

    picked.input(on_pick, [picked, source, csv_speaker, csv_text, out_name, named], [upload, *switched])
    upload.upload(lambda: None, None, picked)
    for trigger in (refresh_raw.click, picked.focus):  # focus: files copied in after the page loaded
        trigger(lambda: dd_update(logic.raw_files()), None, picked)

    def on_names(names, out_v, named_v):
        """"Save as" follows the characters picked (`bob.json`, `romeo-juliet.json`) until the user types a name."""
        if (out_v or "").strip() != named_v:
            return gr.update(), named_v
        name = dataset_name_for(names)
        return name, name

    speakers.input(on_names, [speakers, out_name, named], [out_name, named])

    def on_preview(*values):
        try:
            text, report = logic.preview(*values)
        except EXPECTED as e:
            return "", "", _error_text(e)
        return text, report, "Preview of the first samples (nothing written yet)."

    preview_btn.click(on_preview, form, [preview_box, prep_report, prep_status])
    return SimpleNamespace(form=form, save_btn=save_btn, overwrite=prep_overwrite, report=prep_report,
                           status=prep_status)


def _train_section(gr, logic: TabLogic, host, train_tab) -> SimpleNamespace:
    """2. Train: the form, Start / Stop / Show progress, the run's progress and loss curve."""
    with gr.Row():
        memory = gr.Markdown(host.memory_status())
        unload_btn = gr.Button("Unload the loaded model", size="sm")
    with gr.Row():
        # the folders as info, which wraps (CSS): in the label a long path was cut off on a narrow page
        model = gr.Dropdown(label="Base model", info=f"in {host.dirs().models}", choices=logic.models(),
                            value=logic.default_model(), elem_classes=["dialogue-lora-folder"])
        dataset = gr.Dropdown(label="Dataset", info=f"in {host.dirs().datasets}", choices=logic.datasets(),
                              value=None, elem_classes=["dialogue-lora-folder"])
        adapter_name = gr.Textbox(label="Adapter name (saved in the loras folder)", value=DEFAULT_ADAPTER_NAME)
    # below the fields, not beside them: a fourth column squeezed them on a narrow page
    refresh_train = gr.Button("Refresh lists", size="sm")
    try:
        defaults = train_defaults()
        defaults_error = ""
    except ImportError as e:  # the training module needs a library that is missing
        defaults, defaults_error = {}, f"⚠️ training is unavailable here: {e}"
    if defaults_error:
        gr.Markdown(defaults_error)
    setting_boxes = []

    def shown(key):  # a setting of the other method is hidden (LoRA's rank for prompt tuning)
        method = defaults.get("method") or "lora"
        return all(key not in keys for m, keys in METHOD_SETTINGS.items() if m != method)

    with gr.Accordion("Training settings (the CLI's defaults)", open=False):
        fields = [(key, label, kind) for key, label, kind in TRAIN_FIELDS if key in defaults]
        with gr.Row():
            for key, label, kind in fields:
                value = defaults[key]
                if kind == "method":
                    box = gr.Dropdown(label=label, choices=list(METHODS), value=value or "lora")
                elif kind == "text":
                    box = gr.Textbox(label=label, value=_text_value(value), visible=shown(key))
                elif kind == "number":
                    # no `minimum`: Gradio's own check said "Value -1 is less than minimum value 0" in a toast
                    # and marked every output as failed; the settings' check says it in the form's words
                    box = gr.Number(label=label, value=value, step=NUMBER_STEPS.get(key, 1), visible=shown(key))
                else:
                    continue
                setting_boxes.append((key, box))
        with gr.Row():  # their own row: squeezed in beside the fields, a checkbox lost its label
            for key, label, kind in fields:  # the memory settings, together
                if kind == "check":
                    setting_boxes.append((key, gr.Checkbox(label=label, value=bool(defaults[key]))))
                elif kind == "choice":
                    setting_boxes.append((key, gr.Dropdown(label=label, choices=list(FIELD_CHOICES[key]),
                                                           value=defaults[key], visible=shown(key))))
    with gr.Row():
        resume = gr.Checkbox(label="Resume a stopped run of this adapter", value=False)
        train_overwrite = gr.Checkbox(label="Overwrite an existing adapter of this name", value=False)
    with gr.Row():
        start_btn = gr.Button("Start training", variant="primary")
        stop_btn = gr.Button("Stop (saves a checkpoint)", variant="stop")
        watch_btn = gr.Button("Show progress")
    # Start's own word (refused, checking): apart from the progress, which a run's stream rewrites
    train_msg = gr.Markdown()
    # empty until the section's first poll fills it: a value set here, when the page was built, said "no
    # training has run" on a page reloaded during a run
    progress = gr.Markdown("")
    loss_plot = gr.Plot(label="Loss", show_label=False)  # its label covered the top tick; the axis names it
    train_log = gr.Textbox(label="Log (last lines)", lines=6, interactive=False)

    setting_keys = [k for k, _ in setting_boxes]
    setting_inputs = [b for _, b in setting_boxes]
    by_key = dict(setting_boxes)
    if "method" in by_key:  # each method's own settings only (a LoRA rank changed for prompt tuning did nothing)
        own = [(key, method) for method, keys in METHOD_SETTINGS.items() for key in keys if key in by_key]
        by_key["method"].change(lambda m: [gr.update(visible=m == method) for _, method in own], by_key["method"],
                                [by_key[key] for key, _ in own], queue=False)
    train_outputs = [progress, loss_plot, train_log]

    def render(job, plot: bool = True):
        if job is None:
            return progress_markdown(None), None, ""
        if not plot:
            return progress_markdown(job), gr.update(), job.log_tail()
        before, since = job.loss_series()
        return progress_markdown(job), loss_figure(since, before), job.log_tail()

    def follow(job):
        """Yield the job's progress every POLL_SECONDS until it ends (a page reload can re-attach); the loss
        curve at most every PLOT_SECONDS, since drawing it takes 0.1-0.2 s of CPU a training run could use."""
        drawn_at, drawn = 0.0, None
        while True:
            running = job.running  # before the poll: a job that ended after it is shown once more, complete
            job.poll()
            steps = job.n_read
            draw = not running or (steps != drawn and time.time() - drawn_at >= PLOT_SECONDS)
            if draw:
                drawn_at, drawn = time.time(), steps
            yield render(job, plot=draw)  # not drawn: the curve on show stays
            if not running:
                return
            time.sleep(POLL_SECONDS)

    def on_start(model_v, dataset_v, adapter_v, resume_v, overwrite_v, *values):
        form = (model_v, dataset_v, adapter_v, resume_v, overwrite_v, *values)
        refused_by = None
        with logic.starting(form) as first:
            if first is None:
                # at once: the first Start after the app starts imports the training libraries (seconds)
                yield "Checking the settings…", gr.update(), gr.update(), gr.update()
                try:
                    job = logic.start_training(model_v, dataset_v, adapter_v, dict(zip(setting_keys, values)),
                                               resume_v, overwrite_v)
                except EXPECTED as e:  # the run on show (another page's, or the last) stays
                    yield _error_text(e), gr.update(), gr.update(), gr.update()
                    refused_by = jobs.current("train")
                    if refused_by is None or not refused_by.running:
                        return
        if refused_by is not None:
            # a run going (another page's): followed, the refusal above it; when it ends, that this Start
            # did not happen (the page showed the last run's end, and the refusal went with the run)
            yield from with_message(refused_by, clear_first=False, ended=RUN_ENDED)
            return
        if first is not None:
            # a double click (or the same Start on another page at that moment): not "already running", which
            # read as a failure, but the run the first click starts, once it has
            job = logic.started_since(first)
            if job is None:  # the first click was refused: its message is on show
                yield gr.update(), gr.update(), gr.update(), gr.update()
                return
        yield from with_message(job, clear_first=first is None)

    def with_message(job, clear_first: bool, ended: str = ""):
        """The run's progress, with Start's message: cleared as the run starts (if asked) and when it ends
        (`ended` in its place then); between, a warning a second Start gave (on this page or another) stays on
        show."""
        first, was_running = clear_first, job.running
        for shown in follow(job):
            yield ("" if first else ended if was_running and not job.running else gr.update()), *shown
            first = False

    def on_watch():
        job = jobs.current("train")
        if job is None:
            yield gr.update(), progress_markdown(None), None, ""
            return
        yield from with_message(job, clear_first=False)

    # Streams run side by side (concurrency_limit=None): Gradio's default of one at a time per handler
    # queued a second page's Start behind the first page's run, to start it unseen when that run ended.
    # trigger_mode "multiple": Gradio's default ("once") dropped a second click on the page whose Start is
    # streaming its run, without a word; now it is refused with the reason, as on any other page.
    started = start_btn.click(on_start, [model, dataset, adapter_name, resume, train_overwrite] + setting_inputs,
                              [train_msg] + train_outputs, concurrency_limit=None, trigger_mode="multiple")
    watched = watch_btn.click(on_watch, None, [train_msg] + train_outputs, concurrency_limit=None)

    def on_stop():
        """Stop the run, and follow it to its end (a page that had not shown it, another page's run, stayed on
        "Stopping" with the last run's status under it)."""
        job = jobs.current("train")
        message = logic.stop_training()
        if job is None or not job.running:
            yield gr.update(), message, gr.update(), gr.update()
            return
        yield message, gr.update(), gr.update(), gr.update()  # above the progress until the run has stopped
        yield from with_message(job, clear_first=False)

    stop_btn.click(on_stop, None, [train_msg] + train_outputs, concurrency_limit=None)

    def after_run(adapter_v):
        """A run of the adapter named that finished has no checkpoint left: Resume ticked would refuse the
        next Start (another adapter's Resume stays as it is)."""
        job = jobs.current("train")
        finished = job is not None and job.state == "done" and job.config.get("lora_name") == (adapter_v or "").strip()
        return False if finished else gr.update()

    for event in (started, watched):
        event.then(after_run, adapter_name, resume)

    unload_btn.click(lambda: _unloaded(host), None, memory)
    # Lists refresh when a section opens (files appear while the app runs) and on the Refresh buttons.
    def train_lists():
        return dd_update(logic.models()), dd_update(logic.datasets()), host.memory_status()

    for trigger in (refresh_train.click, train_tab.select):
        trigger(train_lists, None, [model, dataset, memory])

    def on_dataset(dataset_v, adapter_v):
        """The adapter's name follows the dataset picked while it is the default or another dataset's name."""
        names = {Path(d).stem for d in logic.datasets()} | {DEFAULT_ADAPTER_NAME, ""}
        return Path(dataset_v).stem if dataset_v and (adapter_v or "").strip() in names else gr.update()

    dataset.input(on_dataset, [dataset, adapter_name], adapter_name)

    def form_values(c: dict, leave_unrecorded: bool = False) -> list:
        """The settings fields' values from a run's settings `c`: a number left to its default (None) as the
        0 that means it, as on a fresh page; a setting `c` lacks left as the field has it, if so asked."""
        return [gr.update() if leave_unrecorded and k not in c
                else _text_value(c.get(k)) if isinstance(box, gr.Textbox)
                else _choice(k, c.get(k), defaults[k]) if k in FIELD_CHOICES
                else (0 if c.get(k) is None and isinstance(box, gr.Number) else c.get(k)) for k, box in setting_boxes]

    def restore_form(model_v, dataset_v, adapter_v):
        """A fresh page (after a reload) shows the form of a run that is training or can be resumed: its
        model, dataset, name and settings, so that Resume after a Stop has them. Not a finished or failed
        run's (the next run would quietly repeat them), and a form being filled in is left alone."""
        job = jobs.current("train")
        if job is None or not (job.running or _resumable(job)):
            # no run to show: an empty model field gets the model loaded since the page was built, an empty
            # dataset field the only dataset there is (and the adapter its name, as picking it does)
            datasets = [] if dataset_v else logic.datasets()
            only = datasets[0] if len(datasets) == 1 else None
            return [gr.update() if model_v else gr.update(value=logic.default_model()),
                    dd_update(datasets, only) if only else gr.update(),
                    on_dataset(only, adapter_v) if only else gr.update(), *[gr.update()] * len(setting_inputs)]
        # a model a fresh form does not start with: the one the page was built with (a reload shows that,
        # even when the folder has gained models since), or the default now
        if dataset_v or (model_v and model_v not in (model.value, logic.default_model())):
            return [gr.update()] * (3 + len(setting_inputs))
        c = job.config
        return [c.get("model_name"), Path(str(c.get("dataset_name", ""))).name, c.get("lora_name"), *form_values(c)]

    train_tab.select(restore_form, [model, dataset, adapter_name], [model, dataset, adapter_name, *setting_inputs])

    def on_resume(resume_v, adapter_v):
        """Ticking Resume fills the form from the named adapter's checkpoint: its model, dataset and
        settings, so that Start continues it as it was (settings changed after it are the user's)."""
        found = logic.resume_form(adapter_v) if resume_v else None
        if found is None:
            return [gr.update()] * (3 + len(setting_inputs))
        c, checkpoint = found
        # a setting the checkpoint does not record (an older version's) leaves its field as it is
        values = form_values(c, leave_unrecorded=True)
        datasets = logic.datasets()
        data = Path(str(c.get("dataset") or c.get("dataset_name") or "")).name  # (the path: `-d bob` is bob.json)
        return [c.get("model_name") if c.get("model_name") in logic.models() else gr.update(),
                data if data in datasets else gr.update(), f"Settings filled in from {checkpoint}: *Start training* "
                f"continues it as it was.", *values]

    resume.input(on_resume, [resume, adapter_name], [model, dataset, train_msg, *setting_inputs])
    # Opening the section shows the current run (after a page reload too), live while it trains;
    # "once": reopening it while that is streaming adds no second stream. Registered last: Gradio runs a
    # tab's handlers in turn, and one that streams would hold back those after it until the run ends.
    train_tab.select(on_watch, None, [train_msg] + train_outputs, trigger_mode="once", concurrency_limit=None)
    return SimpleNamespace(model=model, dataset=dataset, adapter_name=adapter_name, started=started, watched=watched)


def _unloaded(host) -> str:
    """Unload the model in use (2. Train's button before a run, 4. Use's in the standalone app)."""
    try:
        return host.unload_model()
    except EXPECTED as e:
        return _error_text(e)


def _quantization_boxes(gr, logic: TabLogic, adapter, visible: bool = True) -> tuple:
    """'Load in 4-bit' and 'Load in 8-bit' (the training form's words, which the out-of-memory advice names)
    for a section that loads its own base model: ticked as the adapter picked was trained, one at a time."""
    four = gr.Checkbox(label="Load in 4-bit", value=False, visible=visible, min_width=120,
                       info="less memory; picking an adapter sets these as it was trained")
    eight = gr.Checkbox(label="Load in 8-bit", value=False, visible=visible, min_width=120,
                        info="less memory; one of the two at a time")

    def as_trained(adapter_v):
        if not _adapter(adapter_v):  # the model alone: loaded whole unless ticked again
            return False, False
        trained = logic.trained_quantization(adapter_v)
        return (gr.update(), gr.update()) if trained is None else trained

    # .input, the user's pick: a page reload shows the boxes of what is in use (or being evaluated) instead
    adapter.input(as_trained, adapter, [four, eight])
    four.input(lambda v: False if v else gr.update(), four, eight)
    eight.input(lambda v: False if v else gr.update(), eight, four)
    return four, eight


def _evaluate_section(gr, logic: TabLogic, eval_tab) -> SimpleNamespace:
    """3. Evaluate: base model against adapter on held-out samples, in its own process."""
    with gr.Row():
        ev_model = gr.Dropdown(label="Base model", choices=logic.models(), value=logic.default_model())  # as Train
        ev_adapter = gr.Dropdown(label="Adapter", choices=logic.adapters(), value=None)
        ev_data = gr.Dropdown(label="Held-out samples", choices=logic.heldout_choices(),
                              value=logic.heldout_choices()[0])
        ev_max = gr.Number(label="Max samples (0: all)", value=50)
    with gr.Row():
        ev_4bit, ev_8bit = _quantization_boxes(gr, logic, ev_adapter)
        ev_btn = gr.Button("Evaluate base vs adapter", variant="primary")
        ev_stop = gr.Button("Stop", variant="stop")
        ev_refresh = gr.Button("Refresh lists", size="sm")
    ev_status = gr.Markdown()
    ev_metrics = gr.Dataframe(headers=["metric", "base", "adapter"], value=[], interactive=False)
    # fixed shares of the width, text wrapped: all four columns fit the page side by side
    ev_samples = gr.Dataframe(headers=["context", "reference", "base reply", "adapter reply"], value=[],
                              wrap=True, interactive=False, column_widths=["34%", "22%", "22%", "22%"])

    def follow_evaluation(job):
        yield from _follow(job, logic.evaluation_tables)

    def on_evaluate(model_v, adapter_v, data_v, max_v, four_v, eight_v):
        try:
            job = logic.start_evaluation(model_v, adapter_v, data_v, max_v, four_v, eight_v)
        except EXPECTED as e:
            refusal, job = _error_text(e), jobs.current("evaluate")
            if job is None or not job.running:
                yield [], [], refusal
                return
            # an evaluation going (another page's): followed, the refusal above its status until it ends
            for metrics, samples, status in follow_evaluation(job):
                yield metrics, samples, (f"{refusal}\n\n{status}" if job.running else f"{status}\n\n{RUN_ENDED_EVAL}")
            return
        yield from follow_evaluation(job)

    def on_watch_evaluation(model_v, adapter_v):
        job = jobs.current("evaluate")
        if job is None:
            yield [gr.update()] * 9
            return
        # a fresh page (its model field empty or at the default it starts with): show what the evaluation is
        # of, once
        fresh = not adapter_v and (not model_v or model_v in (ev_model.value, logic.default_model()))
        for row in follow_evaluation(job):
            yield [*row, *(evaluation_fields(job) if fresh else [gr.update()] * 6)]
            fresh = False

    def evaluation_fields(job) -> list:
        c = job.config
        data = Path(c["dataset"]).name if c.get("dataset") else logic.heldout_choices()[0]
        return [c.get("model_name"), c.get("lora_name"), data, c.get("max_samples", 0), bool(c.get("load_in_4bit")),
                bool(c.get("load_in_8bit"))]

    # the adapter's own base model, when the field is empty; its own held-out split (a file picked for the
    # adapter before was for that one's characters)
    ev_adapter.input(lambda a, m: (gr.update() if m else (logic.base_of(a) or gr.update()), logic.heldout_choices()[0]),
                     [ev_adapter, ev_model], [ev_model, ev_data])
    ev_outputs = [ev_metrics, ev_samples, ev_status]

    def on_pick_for_evaluation(adapter_v):
        """Another adapter picked: the tables shown were another's; its own last report's, when it has one,
        take their place. A running evaluation keeps its own."""
        job = jobs.current("evaluate")
        if not adapter_v or (job is not None and job.running):
            return [gr.update()] * 3
        return logic.saved_evaluation(adapter_v) or ([], [], logic.own_split_note(adapter_v))

    ev_adapter.input(on_pick_for_evaluation, ev_adapter, ev_outputs)
    ev_btn.click(on_evaluate, [ev_model, ev_adapter, ev_data, ev_max, ev_4bit, ev_8bit], ev_outputs,
                 concurrency_limit=None)

    def on_stop_evaluation():
        job = jobs.current("evaluate")
        message = logic.stop_evaluation()
        yield gr.update(), gr.update(), message
        if job is not None and job.running:  # followed to its end, on a page that had not shown it too
            for metrics, samples, status in follow_evaluation(job):
                yield metrics, samples, (message if job.running else status)

    ev_stop.click(on_stop_evaluation, None, ev_outputs, concurrency_limit=None)

    def eval_lists():
        return dd_update(logic.models()), dd_update(logic.adapters()), dd_update(logic.heldout_choices())

    for trigger in (ev_refresh.click, eval_tab.select):
        trigger(eval_lists, None, [ev_model, ev_adapter, ev_data])
    # after the lists (see train_tab above): the running evaluation, or the last one's tables
    eval_tab.select(on_watch_evaluation, [ev_model, ev_adapter],
                    ev_outputs + [ev_model, ev_adapter, ev_data, ev_max, ev_4bit, ev_8bit],
                    concurrency_limit=None,
                    trigger_mode="once")
    return SimpleNamespace(model=ev_model, adapter=ev_adapter)


def _merge_part(gr, logic: TabLogic, use_adapter, use_tab):
    """In 4. Use: the adapter picked above merged into a model folder (merge_lora.py), in its own process."""
    with gr.Accordion("Merge into a model (for llama.cpp / GGUF and loaders without adapters)", open=False):
        gr.Markdown("Writes the adapter picked above into a copy of its base model, a new folder in the models "
                    "folder: load it with any loader, or convert it to GGUF with llama.cpp's "
                    "`convert_hf_to_gguf.py`. The base model is loaded whole in memory, on the CPU.")
        with gr.Row():
            merge_model = gr.Dropdown(label="Base model (the adapter's)", choices=logic.models(), value=None)
            merge_name = gr.Textbox(label="Merged model name", placeholder=logic.merge_name_hint(None, None))
            merge_dtype = gr.Dropdown(label="Weights", choices=list(DTYPES), value="auto")
            merge_overwrite = gr.Checkbox(label="Overwrite (an earlier merge of that name)", value=False)
        merge_btn = gr.Button("Merge")
        merge_status = gr.Markdown()

    def follow_merge(job):
        yield from _follow(job, logic.merge_status)

    def on_merge(model_v, adapter_v, name_v, dtype_v, overwrite_v):
        try:
            job = logic.start_merge(model_v, adapter_v, name_v, dtype_v, overwrite_v)
        except EXPECTED as e:
            yield _error_text(e)
            return
        yield from follow_merge(job)

    def on_watch_merge():
        job = jobs.current("merge")
        if job is None:
            yield gr.update()
            return
        yield from follow_merge(job)

    merged = merge_btn.click(on_merge, [merge_model, use_adapter, merge_name, merge_dtype, merge_overwrite],
                             merge_status, concurrency_limit=None)
    merged.then(lambda: dd_update(logic.models()), None, merge_model)  # the new model is one to pick
    # the adapter's own base model, when the field is empty
    use_adapter.input(lambda a, m: gr.update() if m else (logic.base_of(a) or gr.update()), [use_adapter, merge_model],
                      merge_model)
    use_tab.select(lambda: dd_update(logic.models()), None, merge_model)
    # the name an empty field gives, as its placeholder
    for picked in (merge_model, use_adapter):
        picked.change(lambda m, a: gr.update(placeholder=logic.merge_name_hint(m, a)), [merge_model, use_adapter],
                      merge_name, queue=False)
    use_tab.select(on_watch_merge, None, merge_status, trigger_mode="once", concurrency_limit=None)
    return merged


def _use_section(gr, logic: TabLogic, host, use_tab) -> SimpleNamespace:
    """4. Use: an adapter applied (webui) or loaded with its base (standalone), the chat switches, a quick test."""
    params = host.params

    def use_adapters() -> list[str]:
        return ([NO_ADAPTER] if host.own_model else []) + logic.adapters()

    if host.own_model:
        gr.Markdown("Load a base model with an adapter for the chat box (or a model alone: a merged one, or a "
                    "base model to compare).")
    else:
        gr.Markdown("Apply an adapter to the model loaded in the webui (Transformers loader), then chat "
                    "in the Chat tab: character chat builds the prompt exactly as in training.")
    with gr.Row():
        # wide enough for a model's name (beside the buttons, 130 px cut `Meta-Llama-3.1-8B-Instruct` off)
        use_model = gr.Dropdown(label="Base model", choices=logic.models(), value=None,
                                visible=host.own_model, scale=2)
        use_adapter = gr.Dropdown(label="Adapter", choices=use_adapters(), value=None, scale=2)
        # the standalone app loads the base itself; the webui's model is loaded as its Model tab says
        use_4bit, use_8bit = _quantization_boxes(gr, logic, use_adapter, visible=host.own_model)
    with gr.Row():  # below the fields, as in *2. Train*
        use_btn = gr.Button("Load adapter" if host.own_model else "Apply adapter", variant="primary")
        # the app's chat model (the webui's own Model tab unloads the webui's)
        use_unload = gr.Button("Unload", size="sm", visible=host.own_model)
        use_refresh = gr.Button("Refresh lists", size="sm")
    use_status = gr.Markdown()  # what is in use (or why not)
    use_note = gr.Markdown()  # the picked adapter's characters: apart, so that picking keeps the line above
    with gr.Row():
        # the webui's chat hooks; the standalone chat always uses the training format and the newline
        char_chat = gr.Checkbox(label="Character chat (training-format prompt)", visible=not host.own_model,
                                value=bool(params.get("character_chat", False)))
        newline_stop = gr.Checkbox(label="Stop at newline (one line per reply)", visible=not host.own_model,
                                   value=bool(params.get("stop_at_newline", True)))
        use_rounds = gr.Slider(label="Context turns", minimum=1, maximum=MAX_USE_TURNS, step=1,
                               value=int(params.get("rounds", 5)))
        # the webui's Chat tab samples with its own settings: this one is the quick test's (and the app's chat)
        use_temp = gr.Slider(label="Temperature" + ("" if host.own_model else " (quick test)"), minimum=0,
                             maximum=MAX_TEMPERATURE, step=0.05, value=use_temperature(params),
                             info="0: always the likeliest reply; higher: more varied")
    with gr.Row():
        char_name = gr.Textbox(label="Character name", value=str(params.get("character") or ""))
        user_name = gr.Textbox(label="Your name", value=use_user_name(params))
    test_in = gr.Textbox(label="Quick test: say something", placeholder="Hello!")
    test_btn = gr.Button("Reply")
    test_out = gr.Textbox(label="The character's reply (one line)", interactive=False)  # not the button's word
    test_msg = gr.Markdown()  # why there is no reply: apart, so that it never reads as the character's words

    def on_use(model_v, adapter_v, four_v, eight_v):
        try:
            message = logic.use(model_v, adapter_v, four_v, eight_v)
        except EXPECTED as e:
            return _error_text(e), gr.update(), gr.update(), gr.update(), gr.update(), gr.update()
        # a quick test's "load a model first" from before is answered now
        return message, True, True, params.get("character", ""), int(params.get("rounds", 5)), ""

    use_btn.click(on_use, [use_model, use_adapter, use_4bit, use_8bit],
                  [use_status, char_chat, newline_stop, char_name, use_rounds, test_msg])
    use_unload.click(lambda: _unloaded(host), None, use_status)
    # .input: the user's pick, not the value set when the section opens (which would undo a typed name)
    def on_use_adapter(adapter_v, model_v):
        character, base, note = logic.adapter_facts(adapter_v)
        return character or gr.update(), (None if model_v else base) or gr.update(), note

    use_adapter.input(on_use_adapter, [use_adapter, use_model], [char_name, use_model, use_note])
    # .change, not .input: an input event sent without the queue read the box one keystroke behind
    char_name.change(logic.name_note, [char_name, use_adapter], use_note)
    use_refresh.click(lambda: (dd_update(logic.models()), dd_update(use_adapters())), None, [use_model, use_adapter])

    def use_view(model_picked, adapter_picked):
        """Opening the section shows what is in use and the chat switches as they are now: a page reload
        rebuilds the page from the values it was built with, which the switches may have left. The model,
        adapter and boxes are filled in from what is in use on a fresh page only: picks made are kept."""
        model_v, applied = host.in_use()
        models, adapters = logic.models(), use_adapters()
        adapter_v = next((a for a in applied if a in adapters), None)
        if adapter_v is None and model_v and host.own_model and not applied:
            adapter_v = NO_ADAPTER
        if not model_v:
            status = "Nothing is loaded for chat." if host.own_model else "No model is loaded in the webui."
        else:
            status = (f"In use: {model_v}" + (f" + {', '.join(applied)}" if applied else " (no adapter)")
                      + bits_words(*host.in_use_bits()) + logic.saved_again(applied))
        fresh = not adapter_picked and not (host.own_model and model_picked)
        if fresh:
            # nothing in use: the only model there is, as *2. Train* and *3. Evaluate* start with it
            start = model_v if model_v in models else (logic.default_model() if host.own_model else None)
            fields = [dd_update(models, start) if start else dd_update(models),
                      dd_update(adapters, adapter_v) if adapter_v else dd_update(adapters), *host.in_use_bits()]
        else:
            fields = [dd_update(models), dd_update(adapters), gr.update(), gr.update()]
        return (*fields, status,
                bool(params.get("character_chat", False)), bool(params.get("stop_at_newline", True)),
                str(params.get("character") or ""), int(params.get("rounds", 5)), use_temperature(params),
                use_user_name(params))

    use_tab.select(use_view, [use_model, use_adapter], [use_model, use_adapter, use_4bit, use_8bit, use_status,
                                                        char_chat, newline_stop, char_name, use_rounds, use_temp,
                                                        user_name])
    char_chat.change(lambda v: params.update(character_chat=bool(v)), char_chat, None)
    newline_stop.change(lambda v: params.update(stop_at_newline=bool(v)), newline_stop, None)
    use_rounds.change(lambda v: params.update(rounds=int(v)), use_rounds, None)
    use_temp.change(lambda v: params.update(temperature=float(v)), use_temp, None)
    char_name.change(lambda v: params.update(character=(v or "").strip()), char_name, None)
    user_name.change(lambda v: params.update(user_name=(v or "").strip()), user_name, None)

    def on_test(message, name, user, rounds_v, temperature_v):
        try:
            return logic.chat([], message, name, user, rounds_v, temperature_v), ""
        except EXPECTED as e:
            return "", _error_text(e)

    test_btn.click(on_test, [test_in, char_name, user_name, use_rounds, use_temp], [test_out, test_msg])
    test_in.submit(on_test, [test_in, char_name, user_name, use_rounds, use_temp], [test_out, test_msg])
    merged = _merge_part(gr, logic, use_adapter, use_tab)
    return SimpleNamespace(model=use_model, merged=merged, adapter=use_adapter, adapters=use_adapters,
                           char_name=char_name, user_name=user_name, rounds=use_rounds, temperature=use_temp,
                           status=use_status)
