"""How fast does our trainer learn a character, next to the seed recipe, on the same samples?

    python bench/train_speed.py                               # CPU, about 2 minutes on 2 cores
    python bench/train_speed.py --samples 200                 # quicker
    python bench/train_speed.py --device cuda --shape llama3-8b   # GPU: LoRA bf16 and QLoRA 4-bit at 2048

CPU mode (the default; what CI and everyone can reproduce):

- a Llama-shaped model of realistic proportions for a small CPU (hidden 256, 4 layers, 4 heads with 2
  KV heads, MLP 896, vocabulary 8k; random weights; tokenizer trained on tinyshakespeare), built offline
  by extensions/dialogue_lora/tiny.py;
- samples with the length spread of real dialogue: ../shared/data/tinyshakespeare.txt prepared by our
  prepare_dataset.py (rounds 5) for six of its main speakers, shuffled; a held-out set is kept apart;
- (a) the seed recipe, reproduced: every sample padded to cutoff_len 256 (and truncated there), batch 4,
  loss on all tokens through the plain `DataCollatorForLanguageModeling(mlm=False)`, LoRA r=16 alpha=16
  dropout 0.05 on q_proj,v_proj, transformers `Trainer` (AdamW, lr 3e-4, linear decay); it trains on
  the same prompt + completion text as ours, so the comparison is of the recipes, not prompt formats;
- (b) our trainer (`training.train`) with its defaults (on the CPU: a batch as one row with per-sample
  attention, bf16 base weights where the CPU has AMX/AVX512-BF16, the fused LoRA forward;
  completion-only loss, LoRA on every linear layer, alpha 2r, warm-up + cosine), one epoch, `val_ratio 0` (the benchmark holds out its own
  samples and evaluates both adapters the same way);
- each in its own process for the same samples (forked from one that has imported torch, transformers
  and peft already: bench/common.Preloaded, so that no run's clock or the benchmark's minutes go to
  imports); then the held-out loss of both adapters (and of the base model) with the same
  completion-only loss (evaluation.completion_nll).

It prints per run samples/s, tokens/s (real tokens, padding not counted), peak memory and held-out loss,
and as its last line `speedup S` (our samples/s over the seed recipe's, training loops timed alike).

GPU mode (`--device cuda --shape llama3-8b`): random weights from the model's config (nothing is
downloaded), LoRA as our trainer configures it (r 16, alpha 32, every linear layer), sequence 2048,
in bf16 (the largest of 4, 2, 1 rows that fits the card) and as QLoRA (nf4, double quantisation, bf16
compute, gradient checkpointing, 1 row): tokens/s, model FLOPs utilisation against the card's bf16 dense
peak, and peak GPU memory. liger-kernel's fused kernels are used when installed (`--liger off` for the
plain path), and bf16 LoRA's decoder layers are compiled with torch.compile (`--compile off` for eager);
both only on CUDA, with the plain path as fallback. `--profile N` prints where N more
steps spend their time (torch.profiler, by operator). Every run is appended to bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:  # `python bench/x.py` from anywhere: the repo root holds bench/ and extensions/
    sys.path.insert(0, _ROOT)
from bench.common import (  # noqa: E402
    ROOT, SHARED_DATA, Preloaded, append_results, child_env, load_average, machine_info, run_measured,
)

CORPUS = SHARED_DATA / "tinyshakespeare.txt"
# Six of tinyshakespeare's main speakers (about 1,000 speeches): one adapter that speaks as any of them.
NAMES = ["GLOUCESTER", "DUKE VINCENTIO", "ROMEO", "MENENIUS", "PETRUCHIO", "CORIOLANUS"]
CPU_MODEL = dict(vocab_size=8000, hidden_size=256, num_layers=4, num_heads=4, num_kv_heads=2, intermediate_size=896)

# The seed recipe (the original lora_finetune.py, alpaca-lora style).
SEED = dict(cutoff_len=256, batch_size=4, lora_r=16, lora_alpha=16, lora_dropout=0.05,
            target_modules=["q_proj", "v_proj"], learning_rate=3e-4)

# Shapes for GPU mode: Llama 3 8B's published config, and a tiny one to try the code path anywhere.
SHAPES = {
    "llama3-8b": dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192,
                      rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=False),
    "llama-tiny": dict(vocab_size=8000, hidden_size=256, intermediate_size=896, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                       tie_word_embeddings=False),
}

# bf16 dense tensor-core peak (TFLOP/s, no sparsity) by device name; the first substring that matches wins.
# Cards without bf16 (T4, V100) list their fp16 peak, the dtype our trainer uses there.
PEAK_TFLOPS = [
    ("GH200", 989.0), ("H200", 989.0), ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0),
    ("H800", 989.0), ("B200", 2250.0), ("B100", 1750.0), ("A100", 312.0), ("A800", 312.0),
    ("L40S", 362.0), ("L40", 181.0), ("A10G", 70.0), ("A10", 125.0), ("L4", 121.0), ("A6000", 155.0),
    ("RTX 6000 Ada", 364.0), ("RTX 4090", 165.0), ("RTX 4080", 97.0), ("RTX 3090", 71.0), ("RTX 3080", 59.0),
    ("T4", 65.0), ("V100", 125.0),
    # AMD (ROCm names its cards this way too; the longer name first)
    ("MI325X", 1307.0), ("MI300X", 1307.0), ("MI300A", 981.0), ("MI250X", 383.0), ("MI250", 362.0),
    ("MI210", 181.0), ("MI100", 92.0), ("RX 7900 XTX", 123.0),
]


# ------------------------------------------------------------------------------------------ shared


def peak_tflops(device_name: str) -> float | None:
    """The card's dense bf16 peak from PEAK_TFLOPS, or None when the name is not in the table."""
    for key, tflops in PEAK_TFLOPS:
        if key.lower() in device_name.lower():
            return tflops
    return None


def matmul_params(cfg: dict, lm_head: bool = True) -> int:
    """Weights that take part in a matrix multiply per token: every linear layer (the embedding lookup is not one)."""
    d, L, f = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["intermediate_size"]
    head_dim = d // cfg["num_attention_heads"]
    kv = cfg.get("num_key_value_heads", cfg["num_attention_heads"]) * head_dim
    per_layer = d * d * 2 + d * kv * 2 + 3 * d * f
    return L * per_layer + (d * cfg["vocab_size"] if lm_head else 0)


def lora_params(cfg: dict, r: int) -> int:
    """LoRA weights on every linear layer of the decoder (the output head is not adapted)."""
    d, L, f = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["intermediate_size"]
    kv = cfg.get("num_key_value_heads", cfg["num_attention_heads"]) * (d // cfg["num_attention_heads"])
    shapes = [(d, d), (d, kv), (d, kv), (d, d), (d, f), (d, f), (f, d)]
    return L * sum(r * (i + o) for i, o in shapes)


def flops_per_token(cfg: dict, seq_len: int, lora_r: int) -> float:
    """Training FLOPs per token of a frozen-base LoRA step, recomputation not counted.

    Frozen weights need the forward (2N) and the gradient of their input (2N), not their own gradient:
    4N. The LoRA weights are trained in full: 6 per weight. Causal attention (scores and weighted sum,
    keys up to the token: seq/2 on average) costs 2 * 2 * d * seq/2 forward and twice that backward:
    6 * d * seq per layer.
    """
    n = matmul_params(cfg)
    attn = 6 * cfg["num_hidden_layers"] * cfg["hidden_size"] * seq_len
    return 4.0 * n + 6.0 * lora_params(cfg, lora_r) + attn


# Memory of one row of a bf16 LoRA step, measured for Llama 3 8B at seq 2048: 34.8 bytes per token x layer x
# hidden unit with liger's fused loss (8,902 MiB a row on an H200, 2026-12-04; compiled and eager alike; 36
# leaves a margin), and without it the full logits and their gradient on top: about 23 bytes per token x
# vocabulary entry (14,550 MiB a row eager, 11,750 compiled, on the H100 of 2026-11-22).
ACT_BYTES_PER_TOKEN_LAYER_UNIT = 36
LOGIT_BYTES_PER_TOKEN_WORD = 23
AUTO_BATCHES = (4, 2, 1)  # MFU levels off from 4 rows: 52.0% at 4 and 52.5% at 8 on an H200


def auto_batch(mode: str, cfg: dict, seq: int, lora_r: int, card_bytes: int | None, fused_loss: bool) -> int:
    """`--batch`'s default. QLoRA: 1 (the memory target's set-up, a consumer card's). bf16 LoRA: the largest
    of 4, 2 and 1 rows whose estimated peak fits in 90% of `card_bytes` (the card less what other programs
    hold): the bf16 weights, the fp32 LoRA weights with their gradient and Adam's two moments (16 bytes
    each), and the rows' activations (with the logits unless the loss is liger's fused one). Without a card
    to size against (the CPU, mps): 1."""
    if mode != "lora" or not card_bytes:
        return 1
    weights = 2 * (matmul_params(cfg) + cfg["vocab_size"] * cfg["hidden_size"]) + 16 * lora_params(cfg, lora_r)
    row = ACT_BYTES_PER_TOKEN_LAYER_UNIT * seq * cfg["num_hidden_layers"] * cfg["hidden_size"]
    if not fused_loss:
        row += LOGIT_BYTES_PER_TOKEN_WORD * seq * cfg["vocab_size"]
    return next((rows for rows in AUTO_BATCHES if weights + rows * row <= 0.9 * card_bytes), 1)


def compile_for(wanted: str, mode: str, device: str) -> str:
    """`--compile`'s choice for one mode: auto compiles bf16 LoRA on CUDA, where it was measured to help
    (44.5% MFU against 37.5% at batch 1, 52.0% against 48.4% at batch 4, H200); QLoRA's 4-bit layers were
    not timed compiled, so auto leaves them eager."""
    if wanted != "auto":
        return wanted
    return "on" if mode == "lora" and device.startswith("cuda") else "off"


def _fmt_mb(x: float | None) -> str:
    return "n/a" if x is None else f"{x:,.0f} MB"


# ------------------------------------------------------------------------------------------ CPU mode


def build_cpu_model(out: Path) -> Path:
    from extensions.dialogue_lora.tiny import build_tiny_model

    text = CORPUS.read_text(encoding="utf-8")
    return build_tiny_model(out, [text], **CPU_MODEL)


def prepare_samples(out_json: Path, data: str = "shakespeare") -> list[dict]:
    """Samples (rounds 5) through our prepare_dataset.py command line.

    shakespeare: tinyshakespeare for six of its main speakers (play speeches: long, a third of the samples
    longer than 256 tokens). chat: 4,000 generated chat-style lines (bench/prepare_speed.py's generator,
    median 9 words a line) for its main speaker, the length of Discord or game dialogue.
    """
    cmd = [sys.executable, str(ROOT / "prepare_dataset.py"), "-j", str(out_json), "--rounds", "5"]
    if data == "chat":
        from bench.prepare_speed import TARGET, write_dialogue

        src = out_json.parent / "chat.txt"
        write_dialogue(src, 4000, seed=1)
        cmd += ["-t", str(src), "--name", TARGET]
    else:
        cmd += ["-t", str(CORPUS)]
        for name in NAMES:
            cmd += ["--name", name]
    run_measured(cmd, cwd=ROOT, env=child_env()).check("prepare_dataset.py")
    return json.loads(out_json.read_text(encoding="utf-8"))


def seed_text(record: dict) -> str:
    """The whole training text of a sample (prompt + completion), as one string for the seed recipe."""
    from extensions.dialogue_lora import prompt

    return "".join(text for text, _ in prompt.record_segments(record))


def _warm_imports() -> None:
    """Import the heavy libraries before the clock starts, the same for both runs."""
    import peft  # noqa: F401
    import torch  # noqa: F401
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401


def _mark(marks: list) -> None:
    """The wall and CPU (all threads) clocks at the end of a step."""
    marks.append((time.perf_counter(), time.process_time()))


def worker_seed(model_dir: str, data: str, out_dir: str) -> dict:
    """The seed recipe: pad to cutoff_len, loss on all tokens, LoRA on q_proj,v_proj, transformers Trainer."""
    _warm_imports()
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorForLanguageModeling, Trainer,
                              TrainerCallback, TrainingArguments)

    marks: list = []

    class Marks(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            _mark(marks)

    t_job = time.perf_counter()
    records = json.loads(Path(data).read_text(encoding="utf-8"))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(
        r=SEED["lora_r"], lora_alpha=SEED["lora_alpha"], target_modules=SEED["target_modules"],
        lora_dropout=SEED["lora_dropout"], bias="none", task_type="CAUSAL_LM"))
    dataset = [
        dict(tokenizer(seed_text(r), truncation=True, max_length=SEED["cutoff_len"], padding="max_length"))
        for r in records
    ]
    real_tokens = sum(sum(d["attention_mask"]) for d in dataset)
    args = TrainingArguments(
        output_dir=str(Path(out_dir) / "trainer"), per_device_train_batch_size=SEED["batch_size"],
        num_train_epochs=1, learning_rate=SEED["learning_rate"], logging_steps=20, save_strategy="no",
        report_to="none", use_cpu=True, disable_tqdm=True, dataloader_pin_memory=False, seed=42,
    )
    trainer = Trainer(model=model, args=args, train_dataset=dataset, callbacks=[Marks()],
                      data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False))
    trainer.train()
    model.save_pretrained(out_dir)
    return {"samples": len(dataset), "tokens": real_tokens, "padded_tokens": len(dataset) * SEED["cutoff_len"],
            "batch_size": SEED["batch_size"], "marks": marks, "job_s": time.perf_counter() - t_job,
            "adapter": out_dir, "steps": len(marks)}


def parse_overrides(items: list[str]) -> dict:
    """`--set key=value` pairs for our TrainConfig (values as JSON where they parse, else text)."""
    from dataclasses import fields

    from extensions.dialogue_lora.training import TrainConfig

    known = {f.name for f in fields(TrainConfig)}
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in known:
            raise SystemExit(f"error: --set {item!r}: expected KEY=VALUE with KEY a TrainConfig field")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def worker_ours(model_dir: str, data: str, out_dir: str, overrides: dict | None = None) -> dict:
    """Our trainer with its defaults: one epoch, no internal held-out split (the benchmark evaluates)."""
    _warm_imports()
    from extensions.dialogue_lora.training import TrainConfig, train

    marks: list = []
    last: dict = {}

    def on_progress(info: dict) -> None:
        if info.get("event") == "step":
            _mark(marks)
            last.update(info)

    out = Path(out_dir)
    cfg = TrainConfig(dataset_name=data, model_name=model_dir, lora_name=out.name, lora_dir=str(out.parent),
                      epochs=1, val_ratio=0.0, overwrite=True, device="cpu", **(overrides or {}))
    t_job = time.perf_counter()
    result = train(cfg, on_progress)
    job_s = time.perf_counter() - t_job
    return {"samples": result.n_train, "tokens": round(last["tokens_per_s"] * last["elapsed_s"]),
            "padded_tokens": None, "batch_size": cfg.batch_size, "marks": marks, "job_s": job_s,
            "adapter": str(result.output_dir), "steps": result.step, "dropped": result.n_dropped}


def _median_run(rs: list[dict]) -> dict:
    """One run's figures as the median over its rounds (the counts are the same in every round)."""
    out = dict(rs[0])
    for key in ("samples_per_s", "tokens_per_s", "cpu_samples_per_s", "job_s", "peak_rss_mb"):
        values = [r[key] for r in rs if r.get(key) is not None]
        if values:
            out[key] = statistics.median(values)
    return out


def rates(r: dict) -> dict:
    """samples/s and tokens/s over steps 2..n (the first step is warm-up), by the wall and the CPU clock."""
    marks = r["marks"]
    samples = r["samples"] - min(r["batch_size"], r["samples"])
    per_sample = r["tokens"] / r["samples"]
    wall = marks[-1][0] - marks[0][0]
    cpu = marks[-1][1] - marks[0][1]
    return {"samples_per_s": samples / wall, "tokens_per_s": samples * per_sample / wall,
            "cpu_samples_per_s": samples / cpu, "loop_s": wall, "loop_cpu_s": cpu}


def heldout_loss(model_dir: Path, adapter: Path | None, records: list[dict], cutoff_len: int = 256) -> float:
    """Mean loss over the reference completion tokens (newline included) of held-out samples."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from extensions.dialogue_lora import encoding
    from extensions.dialogue_lora.evaluation import completion_nll

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    model.eval()
    encoded, _ = encoding.encode_records(records, tokenizer, cutoff_len)
    total, n = completion_nll(model, encoded, batch_size=8, pad_id=tokenizer.pad_token_id)
    return total / n


# What the measured runs import, loaded once by the server they are forked from (common.Preloaded).
PRELOAD = ["torch", "transformers", "transformers.trainer", "transformers.models.llama.modeling_llama", "peft",
           "extensions.dialogue_lora.training", "extensions.dialogue_lora.evaluation"]


def worker_heldout(model_dir: str, data: str, adapters: list[str | None]) -> dict:
    """The held-out loss of the base model (None) and of each adapter, for the records in `data`."""
    records = json.loads(Path(data).read_text(encoding="utf-8"))
    return {"losses": [heldout_loss(Path(model_dir), Path(a) if a else None, records) for a in adapters]}


def run_cpu(args) -> int:
    import torch

    parse_overrides(args.set)  # a bad --set fails now, not after the seed run
    load_at_start = load_average()
    env = child_env()
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="train_speed.") as tmp, Preloaded(PRELOAD, env=env) as server:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        model_dir = build_cpu_model(tmp / "models" / "bench-llama")
        records = prepare_samples(tmp / "samples.json", args.data)
        random.Random(args.seed).shuffle(records)
        heldout = records[: args.heldout]
        train_recs = records[args.heldout : args.heldout + args.samples]
        if len(train_recs) < args.samples:
            print(f"note: only {len(train_recs)} training samples available")
        train_json = tmp / "train.json"
        train_json.write_text(json.dumps(train_recs, ensure_ascii=False), encoding="utf-8")
        heldout_json = tmp / "heldout.json"
        heldout_json.write_text(json.dumps(heldout, ensure_ascii=False), encoding="utf-8")
        print(f"setup {time.perf_counter() - t0:.1f} s: model {CPU_MODEL}, {len(records)} samples "
              f"({len(train_recs)} trained, {len(heldout)} held out), {threads} torch threads")

        # The runs alternate (seed, ours, seed, ours, ...) for --repeat rounds, and each figure is the
        # median over the rounds: a shared machine's speed drifts on the scale of a run, so one pair of
        # runs can be off by a third either way; a ratio of runs next to each other, taken as the
        # median of several rounds, is not.
        rounds: dict[str, list[dict]] = {label: [] for label in args.runs}
        for k in range(args.repeat):
            for label in args.runs:
                out_dir = tmp / "loras" / f"{label}-{k}"
                result_file = tmp / f"{label}-{k}.json"
                cmd = ["--_worker", label, "--_model", str(model_dir), "--_data", str(train_json), "--_out", str(out_dir),
                       "--_result", str(result_file)]
                if label == "ours":
                    cmd += [f"--set={item}" for item in args.set]
                m = server.run(Path(__file__).resolve(), cmd, cwd=tmp).check(f"the {label} run")
                r = json.loads(result_file.read_text(encoding="utf-8"))
                r["peak_rss_mb"] = m.peak_rss_mb
                r.update(rates(r))
                rounds[label].append(r)
                print(f"round {k + 1}/{args.repeat} {label}: {r['samples']} samples, {r['samples_per_s']:.2f} samples/s "
                      f"(job {r['job_s']:.1f} s, process {m.seconds:.1f} s, load {load_average()})")
        runs = {label: _median_run(rs) for label, rs in rounds.items()}

        t_eval = time.perf_counter()
        # every round trains the same adapter (same seeds): the first round's is scored
        adapters = [""] + [rounds[label][0]["adapter"] for label in runs]
        result_file = tmp / "heldout-result.json"
        server.run(Path(__file__).resolve(), ["--_worker", "heldout", "--_model", str(model_dir), "--_data",
                                              str(heldout_json), "--_out", json.dumps(adapters),
                                              "--_result", str(result_file)], cwd=tmp).check("the held-out evaluation")
        base_loss, *losses = json.loads(result_file.read_text(encoding="utf-8"))["losses"]
        for r, loss in zip(runs.values(), losses):
            r["heldout_loss"] = loss
        eval_s = time.perf_counter() - t_eval

    figures = [f"held-out ({len(heldout)} samples, completion tokens only): base model loss {base_loss:.3f}"]
    for label, r in runs.items():
        pad = (f" ({r['padded_tokens'] / r['samples'] * r['samples_per_s']:,.0f} with padding)"
               if r.get("padded_tokens") else "")
        figures.append(
            f"{label:5s}: {r['samples_per_s']:6.2f} samples/s, {r['tokens_per_s']:7,.0f} tokens/s{pad}, "
            f"peak memory {_fmt_mb(r['peak_rss_mb'])}, held-out loss {r['heldout_loss']:.3f}; "
            f"{r['samples']} samples in {r['steps']} steps, {r['cpu_samples_per_s']:.2f} samples per CPU-second, "
            f"whole job {r['job_s']:.1f} s"
        )
    if "seed" in runs and "ours" in runs:
        s, o = runs["seed"], runs["ours"]
        pairs = [b["samples_per_s"] / a["samples_per_s"] for a, b in zip(rounds["seed"], rounds["ours"])]
        speedup = statistics.median(pairs)
        if len(pairs) > 1:
            figures.append("speedup in each round (ours over the seed run just before it): "
                           + ", ".join(f"{x:.2f}" for x in pairs))
        cpu_speedup = o["cpu_samples_per_s"] / s["cpu_samples_per_s"]
        job_speedup = (o["samples"] / o["job_s"]) / (s["samples"] / s["job_s"])
        verdict = "no worse" if o["heldout_loss"] <= s["heldout_loss"] else "WORSE"
        figures.append(f"held-out loss: ours {o['heldout_loss']:.3f} vs seed {s['heldout_loss']:.3f} ({verdict}); "
                       f"speedup by CPU time {cpu_speedup:.2f}, whole jobs (load, encode, train, save) {job_speedup:.2f}")
        figures.append(f"speedup {speedup:.2f}")
    print("\n".join(figures))
    if not args.no_record:
        settings = {"load at start": load_at_start, "device": "cpu", "torch_threads": threads, "model": "hidden 256, 4 layers, 4 heads (2 kv), mlp 896, vocab 8k",
                    "data": (f"tinyshakespeare rounds 5, {len(NAMES)} speakers" if args.data == "shakespeare"
                             else "generated chat lines rounds 5, 1 speaker"), "samples": args.samples,
                    "heldout": len(heldout), "epochs": 1, "rounds": args.repeat, "figures": "median over the rounds", "seed recipe": "pad 256, batch 4, all-token loss, r16 a16 q,v, Trainer",
                    "ours": "training.train defaults, val_ratio 0" + "".join(f", {i}" for i in args.set), "eval": f"{eval_s:.0f} s"}
        append_results("train_speed (CPU)", settings, figures, machine=machine_info(gpu=True))
    return 0


# ------------------------------------------------------------------------------------------ GPU mode


def build_random_model(shape: str, device, dtype, load_in_4bit: bool, seed: int = 0):
    """A Llama model with random weights from a config, on `device`; nothing is read from disk.

    4-bit: the decoder's linear layers become bitsandbytes nf4 layers (double quantisation, `dtype`
    compute), each quantised right after it is drawn, so the full-precision model never exists at once.
    """
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(**SHAPES[shape])
    config.use_cache = False
    torch.manual_seed(seed)
    if not load_in_4bit:
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
        return model

    import bitsandbytes as bnb
    from torch import nn

    from extensions.dialogue_lora.modeling import quantization_config

    qc = quantization_config(load_in_4bit=True, device=device)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    std = config.initializer_range
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and name != "lm_head":
            with torch.device("meta"):
                q = bnb.nn.Linear4bit(module.in_features, module.out_features, bias=False,
                                      compute_dtype=qc.bnb_4bit_compute_dtype,
                                      compress_statistics=qc.bnb_4bit_use_double_quant,
                                      quant_type=qc.bnb_4bit_quant_type)
            w = torch.empty(module.out_features, module.in_features, dtype=dtype, device=device).normal_(0.0, std)
            q.weight = bnb.nn.Params4bit(w, requires_grad=False, compress_statistics=qc.bnb_4bit_use_double_quant,
                                         quant_type=qc.bnb_4bit_quant_type).to(device)
            model.set_submodule(name, q)
            del w
        elif any(True for _ in module.parameters(recurse=False)) and not isinstance(module, bnb.nn.Linear4bit):
            module.to_empty(device=device, recurse=False)
            with torch.no_grad():
                for pname, p in module.named_parameters(recurse=False):
                    if "norm" in type(module).__name__.lower():
                        p.fill_(1.0)
                    else:
                        p.normal_(0.0, std)
    rotary = model.model.rotary_emb
    model.model.rotary_emb = type(rotary)(config=config).to(device)  # its buffers were on meta
    model.is_loaded_in_4bit = True
    return model


def apply_liger(model, wanted: str, device, compiled: bool) -> str:
    """Our trainer's fused kernels (modeling.apply_fused_kernels: liger-kernel's RMSNorm and SwiGLU,
    CUDA only), and for this benchmark's full-sequence loss liger's fused linear and cross-entropy,
    which never holds the logits.

    Under --compile the layers are left to the compiler, which fuses the norms and SwiGLU itself;
    liger's kernels are autograd functions of their own that would split each compiled layer into
    pieces. Only the loss, outside the compiled layers, is liger's then.
    """
    from extensions.dialogue_lora import modeling

    if wanted == "off":
        return "off"
    missing = modeling.fused_kernels_missing(device, model)
    if missing:
        if wanted == "on":
            raise SystemExit(f"error: --liger on: {missing}")
        return f"off ({missing})"
    if not compiled:
        modeling.apply_fused_kernels(model, device, "on")
    from liger_kernel.transformers import apply_liger_kernel_to_llama

    apply_liger_kernel_to_llama(rope=False, rms_norm=False, swiglu=False, cross_entropy=False,
                                fused_linear_cross_entropy=True, model=model)
    return "loss only (layers compiled)" if compiled else "on"


def gpu_of(name: str):
    """The device `--device` names, made the current GPU: synchronize() and the peak-memory counters act on
    that one (with --device cuda:1, the second). A bare `cuda` is the current GPU's index: set_device takes
    no device without one."""
    import torch

    device = torch.device(name)
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
    return device


def worker_gpu(args) -> dict:
    """One hardware run: build, adapt, warm up, then time `--steps` training steps of batch x seq tokens."""
    import torch
    from peft import LoraConfig, get_peft_model

    from extensions.dialogue_lora import fused_lora, modeling
    from extensions.dialogue_lora.training import TrainConfig

    device = gpu_of(args.device)
    dtype = modeling.pick_dtype(device)
    qlora = args.mode == "qlora"
    defaults = TrainConfig()
    cfg = SHAPES[args.shape]
    t0 = time.perf_counter()
    model = build_random_model(args.shape, device, dtype, load_in_4bit=qlora)
    build_s = time.perf_counter() - t0
    args.compile = compile_for(args.compile, args.mode, args.device)  # a worker started by hand may say auto
    liger = apply_liger(model, args.liger, device, compiled=args.compile == "on" and device.type == "cuda")
    gc = {"on": True, "off": False}.get(args.grad_ckpt, qlora)
    modeling.freeze_for_training(model, gc)  # as our trainer prepares a base, quantised or not
    model = get_peft_model(model, LoraConfig(r=defaults.lora_rank, lora_alpha=defaults.alpha,
                                             lora_dropout=defaults.lora_dropout, target_modules="all-linear",
                                             bias="none", task_type="CAUSAL_LM"))
    # our trainer's LoRA forward (fused_lora.py): bf16 bases only, a 4-bit base keeps PEFT's own
    fused = fused_lora.fuse_lora_forward(model)
    params = [p for p in model.parameters() if p.requires_grad]  # PEFT keeps them in fp32
    optimizer = torch.optim.AdamW(params, lr=defaults.lr, fused=device.type == "cuda")
    compiled = "off"
    if args.compile == "on":
        if device.type != "cuda":
            compiled = "off (no CUDA)"
        else:
            # each decoder layer on its own: one compilation serves all 32 (as torchtune does), where
            # the whole model would be traced layer after layer
            for layer in model.get_base_model().model.layers:
                layer.compile()
            compiled = "on (per layer)"
    card = None
    if device.type == "cuda":  # what this process may have: free now, and what it holds already (the model)
        free, _ = torch.cuda.mem_get_info(device)
        card = free + torch.cuda.memory_reserved(device)
    fused_loss = liger == "on" or liger.startswith("loss only")
    rows = args.batch or auto_batch(args.mode, cfg, args.seq, defaults.lora_rank, card, fused_loss)
    gen = torch.Generator(device="cpu").manual_seed(0)
    batch = torch.randint(0, cfg["vocab_size"], (rows, args.seq), generator=gen).to(device)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda")

    def one_step():
        with autocast:
            loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, defaults.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    def sync():  # the GPU's queued work done before the clock reads (an Apple GPU's too)
        if device.type == "cuda":
            torch.cuda.synchronize()
        elif device.type == "mps":
            torch.mps.synchronize()

    def warm_up() -> str:
        """The untimed steps; compiled layers that fail fall back to eager ones. Returns what `compiled` became."""
        failed = None
        try:
            for _ in range(args.warmup):
                one_step()
        except torch.cuda.OutOfMemoryError:
            raise  # not a compiler failure: eager would run out too
        except Exception as e:  # noqa: BLE001 - torch.compile failing is a reason to fall back, not to stop
            if not compiled.startswith("on"):
                raise
            failed = (type(e).__name__, str(e))
        if failed is None:
            return compiled
        # out of the except block, whose traceback holds the failed step's tensors
        print(f"note: torch.compile failed ({failed[0]}: {failed[1]}); timing the plain path")
        for layer in model.get_base_model().model.layers:
            layer._compiled_call_impl = None  # what nn.Module.compile set: back to the eager forward
        optimizer.zero_grad(set_to_none=True)
        for _ in range(args.warmup):
            one_step()
        return f"failed ({failed[0]}), plain"

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    try:  # the warm-up, its eager retry and the timed steps alike
        compiled = warm_up()
        sync()
        t = time.perf_counter()
        for _ in range(args.steps):
            loss = one_step()
        sync()
    except torch.cuda.OutOfMemoryError:
        given = "--batch" if args.batch else "--batch (it was sized to the card: another program may hold memory)"
        raise SystemExit(f"error: out of memory at {rows} row(s) of {args.seq} tokens: pass a smaller {given}") from None
    seconds = time.perf_counter() - t
    if args.profile:
        print_profile(one_step, sync, args.profile, device)
    tokens = args.steps * rows * args.seq
    tps = tokens / seconds
    fpt = flops_per_token(cfg, args.seq, defaults.lora_rank)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type  # cpu, mps
    peak = args.peak_tflops or peak_tflops(name)
    return {
        "mode": args.mode, "shape": args.shape, "device": name, "dtype": str(dtype).replace("torch.", ""),
        "seq": args.seq, "batch": rows, "steps": args.steps, "seconds": seconds, "tokens_per_s": tps,
        "flops_per_token": fpt, "tflops": tps * fpt / 1e12, "peak_tflops": peak,
        "mfu": (tps * fpt / 1e12 / peak) if peak else None,
        # mps keeps no peak: what Metal holds at the end, after the steps, stands for it
        "peak_gpu_mb": (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else
                        torch.mps.driver_allocated_memory() / 2**20 if device.type == "mps" else None),
        "reserved_gpu_mb": torch.cuda.max_memory_reserved(device) / 2**20 if device.type == "cuda" else None,
        "gradient_checkpointing": gc, "liger": liger, "compile": compiled, "build_s": build_s, "fused_lora": fused,
        "loss": float(loss), "lora_r": defaults.lora_rank, "lora_alpha": defaults.alpha,
    }


def print_profile(one_step, sync, steps: int, device) -> None:
    """Where a step's time goes: `steps` more steps under torch.profiler (after the timed ones, so the
    figures above are not slowed by it), as a table of operators by their own GPU time (CPU time on the CPU)."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            one_step()
        sync()
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    print(f"profile of {steps} step(s), operators by own {'GPU' if cuda else 'CPU'} time:")
    print(prof.key_averages().table(sort_by=key, row_limit=40, max_name_column_width=70))


def require_cuda(device: str) -> str | None:
    """None when `device` can run; else the one-line reason it cannot."""
    if not device.startswith("cuda"):
        return None
    import torch

    if torch.cuda.is_available():
        return None
    build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
    return (f"--device {device} needs a CUDA GPU, and none is available here (torch {torch.__version__}, {build}); "
            "run `python bench/train_speed.py` for the CPU benchmark")


def run_gpu(args) -> int:
    env = child_env()
    rows, results = [], []
    for mode in args.modes:
        with tempfile.TemporaryDirectory(prefix="train_speed_gpu.") as tmp:
            result_file = Path(tmp) / "result.json"
            cmd = [sys.executable, str(Path(__file__).resolve()), "--_worker", "gpu", "--_result", str(result_file),
                   "--_mode", mode, "--device", args.device, "--shape", args.shape, "--seq", str(args.seq),
                   "--steps", str(args.steps), "--warmup", str(args.warmup), "--liger", args.liger,
                   "--grad_ckpt", args.grad_ckpt, "--profile", str(args.profile),
                   "--compile", compile_for(args.compile, mode, args.device)]
            if args.batch:  # else each mode's own default (auto_batch), sized in the worker against its card
                cmd += ["--batch", str(args.batch)]
            if args.peak_tflops:
                cmd += ["--peak_tflops", str(args.peak_tflops)]
            m = run_measured(cmd, cwd=ROOT, env=env)
            print(m.stdout, end="")
            if m.returncode != 0:
                tail = (m.stderr.strip().splitlines() or ["(no output)"])[-1]
                rows.append(f"{mode}: FAILED (exit {m.returncode}): {tail}")
                print(rows[-1])
                continue
            r = json.loads(result_file.read_text(encoding="utf-8"))
            r["peak_rss_mb"] = m.peak_rss_mb
        results.append(r)
        mfu = "n/a (card not in the peak table: pass --peak_tflops)" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
        rows.append(
            f"{mode:5s} {r['dtype']} on {r['device']}: {r['tokens_per_s']:,.0f} tokens/s, {r['tflops']:.1f} TFLOP/s, "
            f"MFU {mfu} (peak {r['peak_tflops']} TFLOP/s), peak GPU memory {_fmt_mb(r['peak_gpu_mb'])} "
            f"(reserved {_fmt_mb(r['reserved_gpu_mb'])}); seq {r['seq']} x batch {r['batch']}, {r['steps']} steps, "
            f"grad ckpt {'on' if r['gradient_checkpointing'] else 'off'}, liger {r['liger']}, compile {r['compile']}, "
            f"fused LoRA forward on {r.get('fused_lora', 0)} layers, "
            f"last loss {r['loss']:.2f}"
        )
        print(rows[-1])
    if not args.no_record:
        settings = {"device": args.device, "shape": args.shape, "seq": args.seq,
                    "batch": args.batch or "auto (qlora 1; lora the largest of 4, 2, 1 that fits the card)",
                    "compile": args.compile,
                    "steps": args.steps, "warmup": args.warmup, "lora": "r16 a32 all-linear (our defaults)",
                    "flops/token": "4N + 6N_lora + 6*L*d*seq (causal attention), recompute not counted"}
        append_results(f"train_speed ({args.device}, {args.shape})", settings, rows, machine=machine_info(gpu=True))
    return 0 if results and len(results) == len(args.modes) else 1


# ------------------------------------------------------------------------------------------ entry


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu (the seed-vs-ours comparison) or cuda / cuda:N (GPU mode)")
    p.add_argument("--shape", default=None, choices=sorted(SHAPES),
                   help="GPU mode: the model shape (default llama3-8b with --device cuda); llama-tiny tries the path on any device")
    p.add_argument("--samples", type=int, default=128, help="CPU mode: training samples per run (default 128)")
    p.add_argument("--heldout", type=int, default=64, help="CPU mode: held-out samples (default 64)")
    p.add_argument("--data", default="shakespeare", choices=["shakespeare", "chat"],
                   help="CPU mode: tinyshakespeare speeches (default) or generated chat-length lines")
    p.add_argument("--runs", default="seed,ours", help="CPU mode: which runs, comma-separated (default seed,ours)")
    p.add_argument("--seed", type=int, default=0, help="CPU mode: sample shuffle seed")
    p.add_argument("--repeat", type=int, default=5,
                   help="CPU mode: rounds of (seed, ours) runs; figures are medians over them (default 5)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="CPU mode: change one of our TrainConfig settings for the 'ours' run (repeatable), "
                        "e.g. --set lora_dropout=0.05 to try a variant; the defaults are what counts")
    p.add_argument("--modes", default="lora,qlora", help="GPU mode: lora (bf16) and/or qlora (4-bit), comma-separated")
    p.add_argument("--seq", type=int, default=2048, help="GPU mode: tokens per row (default 2048)")
    p.add_argument("--batch", type=int, default=None,
                   help="GPU mode: rows per step (default: 1 for qlora; for lora the largest of 4, 2, 1 that fits the card)")
    p.add_argument("--steps", type=int, default=10, help="GPU mode: timed steps (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="GPU mode: untimed steps first (default 3)")
    p.add_argument("--liger", default="auto", choices=["auto", "on", "off"],
                   help="GPU mode: liger-kernel fused kernels (auto: when installed and on CUDA)")
    p.add_argument("--compile", nargs="?", const="on", default="auto", choices=["auto", "on", "off"],
                   help="GPU mode: torch.compile each decoder layer (CUDA only; falls back to plain); "
                        "auto (default): bf16 lora on CUDA, where it was measured to help; a bare --compile is on")
    p.add_argument("--grad_ckpt", default="auto", choices=["auto", "on", "off"],
                   help="GPU mode: gradient checkpointing (auto: on for qlora, off for bf16 lora)")
    p.add_argument("--peak_tflops", type=float, default=None, help="GPU mode: the card's bf16 dense peak, if not in the table")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="GPU mode: after the timed steps, N more under torch.profiler, printed as a table of operators")
    p.add_argument("--no_record", action="store_true", help="do not append to bench/RESULTS.md")
    for hidden in ("--_worker", "--_model", "--_data", "--_out", "--_result", "--_mode"):
        p.add_argument(hidden, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [r for r in args.runs if r not in ("seed", "ours")] + [m for m in args.modes if m not in ("lora", "qlora")]
    if bad:
        p.error(f"unknown run or mode: {', '.join(bad)}")
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    if args.batch is not None and args.batch < 1:
        p.error("--batch must be at least 1")
    if args.profile < 0:
        p.error("--profile must be 0 (off) or a number of steps")
    if args.shape is None and args.device.startswith("mps"):  # the CPU comparison would run, on the CPU
        p.error("--device mps: give --shape (llama-tiny; llama3-8b takes 16 GB for its bf16 weights alone)")
    if args.shape is None and args.device.startswith("cuda"):
        args.shape = "llama3-8b"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args._worker:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        if args._worker == "gpu":
            args.mode = args._mode
            result = worker_gpu(args)
        else:
            if args._worker == "seed":
                result = worker_seed(args._model, args._data, args._out)
            elif args._worker == "heldout":
                result = worker_heldout(args._model, args._data, json.loads(args._out))
            else:
                result = worker_ours(args._model, args._data, args._out, parse_overrides(args.set))
        Path(args._result).write_text(json.dumps(result), encoding="utf-8")
        return 0
    reason = require_cuda(args.device)
    if reason:
        print(f"error: {reason}", file=sys.stderr)
        return 2
    if args.shape:
        return run_gpu(args)
    if not CORPUS.is_file():  # the CPU model's tokenizer and the samples come from it
        print(f"error: {CORPUS}: no such file (the shared data folder beside the project: ../shared/data)",
              file=sys.stderr)
        return 2
    return run_cpu(args)


if __name__ == "__main__":
    raise SystemExit(main())
