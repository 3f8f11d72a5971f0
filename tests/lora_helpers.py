"""Test helper: train a small LoRA adapter on the tiny model, quickly, with PEFT directly.

The adapter learns one speaker's pattern (Bob: "Arr, the X be by the Y, matey!") and the trailing newline,
and is saved the way training.py saves adapters (adapter files, training_parameters.json with the base
fingerprint and the held-out file name, heldout.json, training_log.json), so evaluation and chat tests do
not depend on the training module's speed or options.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
from pathlib import Path

WORDS = "market rain town bread river light night day friend road home song boat".split()


BOB_ASKED = ("Alice: Where is the {} and the {}?\nBob:", "Arr, the {} be by the {}, matey!")
ALICE_ASKED = ("Bob: Arr, the {} be by the {}, matey!\nAlice:", "Where is the {} and the {}?")


def _records(n: int, seed: int, templates: tuple[str, str]) -> list[dict]:
    """n samples of (prompt, reply) templates, each filled with four different words."""
    rng = random.Random(seed)
    prompt, reply = templates
    out = []
    for _ in range(n):
        a, b, c, d = rng.sample(WORDS, 4)
        out.append({"input": prompt.format(a, b), "output": reply.format(c, d)})
    return out


def bob_records(n: int, seed: int) -> list[dict]:
    """Bob answers Alice like a pirate: the speaker the tests' adapters learn."""
    return _records(n, seed, BOB_ASKED)


def alice_records(n: int, seed: int) -> list[dict]:
    """Alice's lines as completions: what the adapter never learned (they were context only)."""
    return _records(n, seed, ALICE_ASKED)


def train_adapter(model_dir: Path, out_dir: Path, steps: int = 30, lr: float = 1e-2, n_train: int = 16,
                  n_heldout: int = 6, seed: int = 0) -> Path:
    """Train and save a LoRA adapter for the tiny model in `model_dir`; returns `out_dir`."""
    import torch
    from peft import LoraConfig, get_peft_model

    from extensions.dialogue_lora.encoding import encode_record
    from extensions.dialogue_lora.modeling import base_fingerprint, load_base
    from extensions.dialogue_lora.prompt import context_turns

    torch.manual_seed(seed)
    model, tok = load_base(model_dir, device="cpu", for_training=True)
    model = get_peft_model(model, LoraConfig(
        r=8, lora_alpha=16, lora_dropout=0.0, task_type="CAUSAL_LM",
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    ))
    train = bob_records(n_train, seed)
    heldout = bob_records(n_heldout, seed + 1000)
    enc = [encode_record(r, tok, 128) for r in train]
    width = max(len(e["input_ids"]) for e in enc)
    ids = torch.full((len(enc), width), tok.pad_token_id)
    labels = torch.full((len(enc), width), -100)
    mask = torch.zeros((len(enc), width), dtype=torch.long)
    for i, e in enumerate(enc):
        n = len(e["input_ids"])
        ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(e["input_ids"]), torch.tensor(e["labels"]), 1
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    log = []
    for step in range(1, steps + 1):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        log.append({"step": step, "epoch": step / steps, "loss": float(loss.detach()), "lr": lr, "tokens_per_s": 0.0})
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    (out_dir / "heldout.json").write_text(json.dumps(heldout, indent=1), encoding="utf-8")
    (out_dir / "training_parameters.json").write_text(json.dumps({
        "base_model": Path(model_dir).name,
        "base_model_path": str(model_dir),
        "base_fingerprint": base_fingerprint(model_dir),
        "dataset": "bob.json",
        "heldout_file": "heldout.json",
        "cutoff_len": 128,
        # the prompt facts training records (an adapter without them is an older version's: test_chat)
        "characters": ["Bob"],
        "instruction": None,
        "context_turns": context_turns(train),
    }, indent=1), encoding="utf-8")
    (out_dir / "training_log.json").write_text(json.dumps({
        "steps": log, "evals": [{"step": steps, "epoch": 1.0, "eval_loss": log[-1]["loss"]}]}), encoding="utf-8")
    return out_dir


_CACHE: dict = {}


@contextlib.contextmanager
def one_thread():
    """Run torch on one thread: for a model this small, a second thread only adds synchronisation, and on a
    busy 2-core machine each op then waits for the other thread (measured: a forward pass 30 ms -> 1 s)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def lock_held_elsewhere(lock: Path):
    """A training run's lock (`.NAME.lock.txt`) held by another process, as a run in another shell holds it;
    yields that process's id."""
    import subprocess
    import sys

    hold = ("import sys, time; from pathlib import Path; from extensions.dialogue_lora.fileio import held_lock\n"
            "with held_lock(Path(sys.argv[1]), str):\n print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(lock)], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[1])
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


def subprocess_env() -> dict:
    """Environment for the CLIs run as subprocesses in tests: offline, one thread (see one_thread)."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false")
    return env


def shared_adapter(tmp_path_factory, model_dir: Path) -> Path:
    """One trained adapter per test session (evaluation and chat tests share it); copy it before changing it."""
    key = str(model_dir)
    if key not in _CACHE:
        with one_thread():
            _CACHE[key] = train_adapter(model_dir, tmp_path_factory.mktemp("trained") / "bob")
    return _CACHE[key]
