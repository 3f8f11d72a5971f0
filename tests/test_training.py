"""Training on the tiny offline model, CPU: what the adapter learns, what is saved, how runs stop and resume.

The dataset has two speakers: Alice asks ("Where is the X and the Y?"), Bob answers like a pirate
("Arr, the X be by the Y, matey!"). The adapter is trained on Bob's lines only; Alice's lines are context.
"""
from __future__ import annotations

import importlib.util
import json
import re
import os
import shutil
from pathlib import Path

import pytest

from extensions.dialogue_lora import batching, encoding, modeling, paths, training, varlen
from extensions.dialogue_lora import prompt as prompt_mod
from extensions.dialogue_lora.errors import UserError
from extensions.dialogue_lora.paths import list_adapters, resolve_adapter
from extensions.dialogue_lora.training import TrainConfig, check, train
from lora_helpers import alice_records, bob_records, lock_held_elsewhere

# The tiny random model needs a larger step than a real one to learn within seconds.
TINY_LR = 3e-3


def token_losses(model, tok, records) -> list[tuple[int, float]]:
    """(token id, loss) for every completion token of the records."""
    import torch
    import torch.nn.functional as F

    out = []
    with torch.no_grad():
        for r in records:
            s = encoding.encode_record(r, tok, 256)
            ids = torch.tensor([s["input_ids"]])
            logits = model(input_ids=ids).logits[0, :-1]
            targets = torch.tensor(s["labels"][1:])
            losses = F.cross_entropy(logits, targets.clamp(min=0), reduction="none")
            out += [(int(t), float(l)) for t, l in zip(targets, losses) if t != encoding.IGNORE_INDEX]
    return out


def completion_loss(model, tok, records) -> float:
    """Mean loss per completion token (encoding + packed batches: the trainer's own definition)."""
    import torch

    samples = [encoding.encode_record(r, tok, 256) for r in records]
    total, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(samples), 8):
            batch = batching.collate(samples[i : i + 8], tok.pad_token_id, True, None)
            loss, k = batching.loss_sum(model, batch, "cpu")
            total += float(loss)
            n += k
    return total / n


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("train")
    (root / "models").mkdir()
    shutil.copytree(tiny_model_dir, root / "models" / "tiny")
    (root / "loras").mkdir()
    data = root / "bob.json"
    data.write_text(json.dumps(bob_records(120, 0)), encoding="utf-8")
    return root


@pytest.fixture(autouse=True)
def _base_measurement_never_asks(monkeypatch):
    """The trainer asks should_stop now and then while it measures the base model, by the clock: never here,
    so that the stoppers that count calls (one before the first step, then one per step) are exact on any
    machine. The tests of that asking set their own interval."""
    from extensions.dialogue_lora import training

    monkeypatch.setattr(training, "STOP_CHECK_SECONDS", float("inf"))


def make_cfg(env: Path, **kw) -> TrainConfig:
    base = dict(dataset_name=str(env / "bob.json"), model_name="tiny", model_dir=str(env / "models"),
                lora_dir=str(env / "loras"), learning_rate=TINY_LR, batch_size=8, epochs=3, lora_dropout=0.0)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def trained(env):
    events = []
    result = train(make_cfg(env, lora_name="bob", val_ratio=0.1), on_progress=events.append)
    return result, events


# --------------------------------------------------------------------------------------- the model


def test_packed_samples_do_not_see_each_other(tiny_model_dir):
    """A packed sample's logits equal its logits when run alone (4D block mask + reset positions)."""
    import torch

    model, tok = modeling.load_base(tiny_model_dir, device="cpu")
    samples = [encoding.encode_record(r, tok, 256) for r in bob_records(3, 5)]
    samples[1] = encoding.encode_record({"input": "Bob:", "output": "Arr!"}, tok, 256)
    batch = batching.collate_packed(samples, tok.pad_token_id, capacity=None)
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       position_ids=batch["position_ids"]).logits[0]
        unmasked = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0]
        at = 0
        for s in samples:
            n = len(s["input_ids"])
            alone = model(input_ids=torch.tensor([s["input_ids"]])).logits[0]
            assert torch.allclose(packed[at : at + n], alone, atol=1e-5)
            at += n
    # reset position_ids alone do not isolate the samples with sdpa: the later samples' logits differ
    n0 = len(samples[0]["input_ids"])
    assert not torch.allclose(unmasked[n0:], packed[n0:], atol=1e-4)


def test_learns_the_speaker_not_the_context(env, trained, tiny_model_dir):
    from peft import PeftModel

    result, _ = trained
    model, tok = modeling.load_base(tiny_model_dir, device="cpu")
    heldout = json.loads((result.output_dir / "heldout.json").read_text(encoding="utf-8"))
    assert len(heldout) == result.n_val == 12
    alice = alice_records(24, 7)
    bob_before, alice_before = completion_loss(model, tok, heldout), completion_loss(model, tok, alice)
    alice_tokens_before = token_losses(model, tok, alice)
    peft_model = PeftModel.from_pretrained(model, str(result.output_dir))
    peft_model.eval()
    bob_after, alice_after = completion_loss(peft_model, tok, heldout), completion_loss(peft_model, tok, alice)
    import math

    assert math.exp(bob_after) <= 0.6 * math.exp(bob_before), (bob_before, bob_after)
    # Alice's lines were context only: the tokens that only she says are not learned. (Tokens she shares
    # with Bob's replies, " the", the nouns and the newline, do get likelier: Bob's replies teach them.)
    bob_vocab = {t for r in bob_records(120, 0) for t in encoding.encode_record(r, tok, 256)["labels"]}
    before = [l for t, l in alice_tokens_before if t not in bob_vocab]
    peft_model.disable_adapter_layers()
    assert abs(completion_loss(peft_model, tok, alice) - alice_before) < 1e-6
    peft_model.enable_adapter_layers()
    after = [l for t, l in token_losses(peft_model, tok, alice) if t not in bob_vocab]
    assert len(before) >= 3 * len(alice)  # " Where", " is", " and", "?" ...
    own_before, own_after = sum(before) / len(before), sum(after) / len(after)
    print(f"Bob {bob_before:.3f} -> {bob_after:.3f}; Alice {alice_before:.3f} -> {alice_after:.3f}, "
          f"her own tokens {own_before:.3f} -> {own_after:.3f}")
    assert math.exp(own_after) >= 0.95 * math.exp(own_before), (own_before, own_after)
    assert math.exp(alice_after) > 0.8 * math.exp(alice_before), (alice_before, alice_after)
    # the trainer's own held-out figures agree
    assert abs(result.eval_loss - bob_after) < 1e-3 and abs(result.base_eval_loss - bob_before) < 1e-3

    # greedy replies are one line: the newline comes, and the line is Bob's
    for rec in heldout[:4]:
        ids = tok(rec["input"], return_tensors="pt")
        out = peft_model.generate(**ids, max_new_tokens=40, do_sample=False)
        text = tok.decode(out[0][ids["input_ids"].shape[1] :], skip_special_tokens=True)
        assert "\n" in text, text
        assert text.split("\n", 1)[0].strip().startswith("Arr, the"), text


def test_saved_folder(trained):
    result, events = trained
    out = result.output_dir
    for f in ("adapter_config.json", "adapter_model.safetensors", "training_parameters.json", "training_log.json",
              "heldout.json", "README.md"):
        assert (out / f).is_file(), f
    assert not list(out.glob("checkpoint-*")) and not list(out.parent.glob(".bob*"))
    params = json.loads((out / "training_parameters.json").read_text())
    assert params["base_model"] == "tiny" and Path(params["base_model_path"]).is_absolute()
    assert params["base_fingerprint"] == {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
                                          "vocab_size": params["base_fingerprint"]["vocab_size"]}
    assert params["prompt_format"]["completion"] == "' ' + reply + '\\n'"
    assert params["heldout_file"] == "heldout.json" and params["n_train"] == 108 and params["n_val"] == 12
    assert params["seed"] == 42 and params["lora_alpha"] == 32 and params["learning_rate"] == TINY_LR
    assert "q_proj" in params["target_modules"] and "lm_head" not in params["target_modules"]
    assert Path(params["dataset"]).is_absolute() and len(params["dataset_sha256"]) == 64
    assert params["characters"] == ["Bob"]  # the cue it learnt: chat.py's and the tab's default --name
    assert params["user_turns_named"] is True  # `Alice: ...`: chat names the user's lines as training did
    assert params["context_turns"] == prompt_mod.context_turns(bob_records(1, 0)) >= 1  # chat's default --rounds
    assert params["epochs_trained"] == params["epochs"] and params["steps"] == params["total_steps"]
    device = modeling.pick_device()
    if device.type == "cpu":
        # one row a batch with per-sample attention; bf16 where the CPU has it, and the adapter fp32
        assert params["attn_implementation"] == varlen.NAME and params["packing"]
        assert params["scored_last_layer"]  # the last layer only where the loss reads it (last_layer.py)
        assert params["fused_kernels"].startswith("off (they need CUDA")
    else:  # a GPU (the suite is also run on one by hand): padded rows with a block mask
        assert params["attn_implementation"] in ("sdpa", "flash_attention_2") and not params["scored_last_layer"]
        liger = importlib.util.find_spec("liger_kernel") is not None and device.type == "cuda"
        assert (params["fused_kernels"] == "liger") == liger
    assert params["dtype"] == str(modeling.training_dtype(device)).replace("torch.", "")
    from safetensors.torch import load_file

    assert {str(t.dtype) for t in load_file(str(out / "adapter_model.safetensors")).values()} == {"torch.float32"}
    log = json.loads((out / "training_log.json").read_text())
    assert [e["epoch"] for e in log["evals"]] == [1, 2, 3]
    assert log["steps"] and set(log["steps"][0]) >= {"step", "epoch", "loss", "lr", "tokens_per_s"}
    steps = [e for e in events if e["event"] == "step"]
    assert len(steps) == result.total_steps == 3 * 14
    assert set(steps[0]) >= {"step", "total_steps", "epoch", "loss", "lr", "tokens_per_s", "eta_s"}
    evals = [e for e in events if e["event"] == "eval"]
    assert evals[0].get("base") and all("perplexity" in e for e in evals)
    assert events[-1]["event"] == "done"
    card = (out / "README.md").read_text()
    assert "PeftModel.from_pretrained" in card and "perplexity" in card
    assert "(llama) to speak as `Bob`, from `bob.json`." in card and "then the cue `Bob:` of the character" in card


def test_the_card_names_the_cast_most_trained_first():
    from extensions.dialogue_lora.training import _cast_words

    assert _cast_words(["Juliet", "Romeo"]) == "to speak as `Juliet` and `Romeo` (most trained lines first), from"
    many = _cast_words([f"C{i}" for i in range(11)])
    assert many.startswith("to speak as `C0`, `C1`,") and "`C7` and 3 more (most" in many
    assert _cast_words([]) == "for prompts that cue no character, from"


def test_loads_like_the_webui(trained, tiny_model_dir):
    """modules/LoRA.py: PeftModel.from_pretrained(shared.model, lora_dir/name, adapter_name=name), then load_adapter."""
    import torch
    from peft import PeftModel

    result, _ = trained
    model, tok = modeling.load_base(tiny_model_dir, device="cpu")
    ids = tok("Alice: Where is the boat and the rain?\nBob:", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        base_logits = model(ids).logits
    lora_dir = result.output_dir.parent
    wrapped = PeftModel.from_pretrained(model, str(lora_dir / "bob"), adapter_name="bob")
    second = lora_dir / "bob-copy"
    shutil.copytree(result.output_dir, second)
    wrapped.load_adapter(str(second), adapter_name="bob-copy")
    wrapped.set_adapter("bob-copy")
    wrapped.eval()
    with torch.no_grad():
        adapted = wrapped(ids).logits
    assert not torch.allclose(adapted, base_logits, atol=1e-3)
    shutil.rmtree(second)


# ---------------------------------------------------------------------------------------- checks


def test_a_name_no_sample_trains_is_refused(env):
    """Rounds samples carry their cue (Bob): `--name Alice` would be unused, yet chat would speak as Alice."""
    with pytest.raises(UserError, match=r"--name 'Alice': no sample of .* trains it \(their characters: Bob\)"):
        check(make_cfg(env, name="Alice"))
    plan = check(make_cfg(env, name="Bob"))
    assert plan.characters == ["Bob"]
    assert plan.notes == ["--name Bob cues no sample: every sample names its character (it stays the character "
                          "chat.py and evaluation speak as by default)"]
    assert not check(make_cfg(env)).notes
    # the samples' cue in other casing: two cues for one character (chat would speak as one of them)
    with pytest.raises(UserError, match=r"--name 'bob': samples of bob.json cue 'Bob': spell it that way"):
        check(make_cfg(env, name="bob"))
    with pytest.raises(UserError, match=r"--name 'Alice,Bob': one name .* prepare_dataset.py --name"):
        make_cfg(env, name="Alice,Bob")
    # a run begun with such a spelling (before it was refused) resumes as it began: only said
    with pytest.raises(UserError) as e:
        check(make_cfg(env, name="bob", resume=True, lora_name="never-trained"))
    assert "spell it that way" not in str(e.value) and "no run of 'never-trained'" in str(e.value)
    # samples that cue both spellings themselves: --name of either is one of theirs, not refused
    both = env / "both.json"
    both.write_text(json.dumps(bob_records(3, 3) + [dict(r, input=r["input"][:-4] + "BOB:") for r in bob_records(2, 4)]))
    assert check(make_cfg(env, dataset_name=str(both), name="BOB")).characters == ["Bob", "BOB"]


def test_samples_whose_user_turns_name_no_speaker_are_said_to_chat_otherwise(env):
    plain = env / "plain.json"
    plain.write_text(json.dumps([{"conversations": [{"from": "human", "value": r["input"].split(": ", 1)[1].split("\n")[0]},
                                                    {"from": "gpt", "value": r["output"]}]} for r in bob_records(4, 6)]))
    assert any(n.startswith("the samples' user turns name no speaker") for n in check(make_cfg(env, dataset_name=str(plain))).notes)
    assert not any("name no speaker" in n for n in check(make_cfg(env)).notes)
    # recorded: chat gives the user's lines bare, as they were trained (the tab, chat.py, a merge's record)
    train(make_cfg(env, lora_name="plain", dataset_name=str(plain), name="Bob", max_steps=1, val_ratio=0.0))
    assert json.loads((env / "loras" / "plain" / "training_parameters.json").read_text())["user_turns_named"] is False


def test_a_character_with_no_trained_sample_is_not_recorded_as_learnt(env):
    """A character whose only sample is too long for --cutoff_len (or held out) was recorded in `characters`:
    chat.py and the tab offered to speak as someone the adapter never learnt."""
    cast = env / "cast.json"
    ann = {"instruction": "", "input": "Bob: Who goes there?\nAnn:", "output": " ".join(["far"] * 300)}
    cast.write_text(json.dumps(bob_records(6, 2) + [ann]), encoding="utf-8")
    logs = []
    train(make_cfg(env, lora_name="cast", dataset_name=str(cast), max_steps=1, val_ratio=0.0, cutoff_len=64),
          on_progress=lambda e: logs.append(e.get("message", "")) if e["event"] == "log" else None)
    params = json.loads((env / "loras" / "cast" / "training_parameters.json").read_text())
    assert params["characters"] == ["Bob"] and params["n_dropped"] == 1
    assert "not learnt: Ann (each of their samples was held out or has a reply longer than --cutoff_len)" in logs


def test_config_messages_name_the_flag():
    with pytest.raises(UserError, match="--load_in_4bit and --load_in_8bit cannot be used together"):
        TrainConfig(load_in_4bit=True, load_in_8bit=True)
    with pytest.raises(UserError) as e:
        TrainConfig(batch_size=0, method="qlora", val_ratio=0.7, lora_name="../x")
    msg = str(e.value)
    for flag in ("--batch_size", "--method", "--val_ratio", "--lora_name"):
        assert flag in msg
    assert TrainConfig(target_modules="q_proj, v_proj").target_modules == ["q_proj", "v_proj"]
    assert TrainConfig(method="prompt_tuning").lr == 3e-2 and TrainConfig().lr == 3e-4
    for bad, words in ((dict(name="Bob:"), "--name 'Bob:' must not contain ':'"), (dict(name=" "), "--name is empty"),
                       (dict(learning_rate=float("inf")), "--learning_rate must be a number > 0 (got inf)"),
                       (dict(weight_decay=float("nan")), "--weight_decay must be a finite number >= 0"),
                       (dict(epochs=10**20), "--epochs must be at most 100,000 (got 100,000,000,000,000,000,000)"),
                       (dict(max_steps=10**9), "--max_steps must be at most 100,000,000"),
                       # (1e300 overflowed the float32 scale at the first step, after the model had loaded)
                       (dict(lora_alpha=1e300), "--lora_alpha must be a number > 0 and at most 1,000,000 (got 1e+300)")):
        with pytest.raises(UserError, match=re.escape(words)):
            TrainConfig(**bad)
    assert TrainConfig(name="  Old   Bob ").name == "Old Bob"


def test_check_reports_everything_before_loading(env, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"input": "A:", "output": "x"}, {"input": "A:", "output": "y"}, {"text": "?"}]))
    with pytest.raises(UserError) as e:
        check(make_cfg(env, model_name="tinny", dataset_name=str(bad), lora_name="c"))
    msg = str(e.value)
    assert "2 problems" in msg and "'tinny' not found" in msg and "tiny" in msg and "bad.json: sample 3" in msg
    # a model folder without its tokenizer is one of them (it was said after the start, once loading)
    bare = env / "models" / "notok"
    bare.mkdir()
    for f in (env / "models" / "tiny").iterdir():
        if f.name in ("config.json", "model.safetensors"):
            shutil.copy(f, bare / f.name)
    with pytest.raises(UserError) as e:
        check(make_cfg(env, model_name="notok", dataset_name=str(bad), lora_name="c"))
    assert "2 problems" in str(e.value) and "notok holds no tokenizer" in str(e.value)
    shutil.rmtree(bare)


def test_missing_target_module_lists_linear_layers(env):
    with pytest.raises(UserError) as e:
        check(make_cfg(env, target_modules=["q_proj", "c_attn"], lora_name="t"))
    assert "c_attn" in str(e.value) and "q_proj" in str(e.value) and "down_proj" in str(e.value)


def test_sizes_the_model_cannot_use_are_refused_before_it_loads(env):
    """A rank above the hidden size (64 here), virtual tokens over half the context (2048 positions)."""
    with pytest.raises(UserError, match=r"--lora_rank 65 is above the model's hidden size \(64\)"):
        check(make_cfg(env, lora_rank=65, lora_name="r"))
    assert check(make_cfg(env, lora_rank=64, lora_name="r"))
    with pytest.raises(UserError, match=r"--num_virtual_tokens 1025: the model's context is 2048 positions.*at most 1024"):
        check(make_cfg(env, method="prompt_tuning", num_virtual_tokens=1025, lora_name="p", lora_rank=8))


def test_4bit_without_bitsandbytes(env, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    with pytest.raises(UserError, match="pip install bitsandbytes"):
        check(make_cfg(env, load_in_4bit=True, lora_name="q"))


def test_overwrite_refusal_changes_nothing(env):
    out = env / "loras" / "taken"
    out.mkdir()
    (out / "adapter_config.json").write_text("{}")
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()}
    with pytest.raises(UserError, match="--overwrite"):
        train(make_cfg(env, lora_name="taken", max_steps=1))
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()} == before
    res = train(make_cfg(env, lora_name="taken", max_steps=2, val_ratio=0, overwrite=True))
    assert res.step == 2 and (out / "adapter_model.safetensors").is_file()
    assert json.loads((out / "adapter_config.json").read_text())["peft_type"] == "LORA"
    # no held-out split: none recorded (evaluation asks for -d), and max_steps' epochs are what ran
    params = json.loads((out / "training_parameters.json").read_text())
    assert params["heldout_file"] is None and not (out / "heldout.json").exists()
    assert params["epochs_trained"] == round(2 / params["steps_per_epoch"], 4)
    # the files get the mode a plain write gives them, not a temporary file's 0600
    old = os.umask(0o022)
    os.umask(old)
    assert {p.name: p.stat().st_mode & 0o777 for p in out.iterdir() if p.is_file()} == {
        p.name: 0o666 & ~old for p in out.iterdir() if p.is_file()}


def test_a_cutoff_past_the_models_context_is_cut_to_it(env, monkeypatch):
    """Positions the model was never built for are not trained on: cutoff_len is cut to its context."""
    short = env / "models" / "short20"
    if not short.exists():
        shutil.copytree(env / "models" / "tiny", short)
        config = json.loads((short / "config.json").read_text())
        config["max_position_embeddings"] = 20
        (short / "config.json").write_text(json.dumps(config))
    assert modeling.fit_cutoff(256, str(short)) == (20, "--cutoff_len 256 is longer than the model's context "
                                                        "(20 positions): samples cut at 20 tokens")
    assert modeling.fit_cutoff(20, str(short)) == (20, None)
    assert modeling.fit_cutoff(16, str(short), n_virtual=12)[0] == 8  # a soft prompt takes positions too
    lengths = []
    real = encoding.encode_records
    monkeypatch.setattr(encoding, "encode_records", lambda recs, tok, cutoff, name=None: (
        lambda out: (lengths.extend(len(s["input_ids"]) for s in out[0]), out)[1])(real(recs, tok, cutoff, name)))
    logs = []
    res = train(make_cfg(env, model_name="short20", lora_name="short", max_steps=2, val_ratio=0),
                on_progress=lambda e: logs.append(e.get("message", "")) if e["event"] == "log" else None)
    assert res.step == 2 and lengths and max(lengths) <= 20 and "(20 positions): samples cut at 20 tokens" in "\n".join(logs)


def test_gradient_checkpointing_keeps_the_full_last_layer(env):
    """Checkpointing recomputes each layer's forward in the backward: the last layer stays whole there."""
    res = train(make_cfg(env, lora_name="gc", max_steps=2, val_ratio=0, gradient_checkpointing="on"))
    params = json.loads((res.output_dir / "training_parameters.json").read_text())
    assert res.step == 2 and params["gradient_checkpointing"] and not params["scored_last_layer"]


def test_fused_kernels_on_names_why_they_cannot_run(env):
    cfg = make_cfg(env, lora_name="fk", max_steps=1, val_ratio=0, device="cpu", fused_kernels="on")
    with pytest.raises(UserError, match=r"^--fused_kernels on: they need CUDA, and this run is on cpu$"):
        check(cfg)  # before any model loads
    with pytest.raises(UserError, match=r"^--fused_kernels on: they need CUDA, and this run is on cpu$"):
        train(cfg)
    with pytest.raises(UserError, match="--fused_kernels must be auto, on or off"):
        make_cfg(env, fused_kernels="liger")


def test_a_base_is_frozen_for_training_without_casts(tiny_model_dir):
    """A quantised base is not cast to fp32 beside its 4-bit weights (PEFT's kbit preparation would)."""
    import torch

    model, _ = modeling.load_base(tiny_model_dir, device="cpu", dtype=torch.bfloat16, for_training=True)
    modeling.freeze_for_training(model, gradient_checkpointing=True)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert not any(p.requires_grad for p in model.parameters()) and model.is_gradient_checkpointing


def test_4bit_gradients_are_the_same_after_an_evaluation(tiny_model_dir):
    """bitsandbytes repacks CPU 4-bit weights for inference in eval mode, after which no gradient passed
    them: training evaluates between steps, so the gradients must not change across an evaluation."""
    import torch
    from peft import LoraConfig, get_peft_model

    model, _ = modeling.load_base(tiny_model_dir, device="cpu", load_in_4bit=True, for_training=True)
    modeling.freeze_for_training(model, gradient_checkpointing=False)
    torch.manual_seed(0)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    for name, p in model.named_parameters():  # B starts at zero: give it values so every path carries
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)
    ids = torch.randint(0, model.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(1))

    def grads():
        model.train()
        model(input_ids=ids, labels=ids).loss.backward()
        out = {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}
        model.zero_grad()
        return out

    before = grads()
    model.eval()
    with torch.no_grad():
        model(input_ids=ids)
    after = grads()
    for k, g in before.items():
        assert torch.allclose(after[k], g, rtol=1e-4, atol=1e-6), k


# -------------------------------------------------------------------------------- stop and resume


def _adapter_tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def test_grad_accum_trains_what_one_batch_of_its_samples_trains(env):
    """A step's loss is the mean over the target tokens of all its micro-batches (not a mean of their means):
    two batches of 2 accumulated train the adapter that one batch of the same 4 samples trains. The replies
    differ in length, so the two ways of averaging would differ. (test_ddp compares processes against
    --grad_accum, which share this code: this pins the normalisation itself.)"""
    import torch

    data = env / "accum.json"
    records = [{"input": "Alice: Where is the ship?\nBob:", "output": "Arr." if i % 2 else
                "Arr, the ship sails at dawn past the rocks and the old lighthouse on the hill."} for i in range(4)]
    data.write_text(json.dumps(records))
    common = dict(dataset_name=str(data), max_steps=1, val_ratio=0.0, packing=False, learning_rate=1e-2)
    train(make_cfg(env, lora_name="accum2", batch_size=2, grad_accum=2, **common))
    train(make_cfg(env, lora_name="accum1", batch_size=4, grad_accum=1, **common))
    two, one = (_adapter_tensors(env / "loras" / n) for n in ("accum2", "accum1"))
    moved = [k for k in one if "lora_B" in k]
    assert moved and all(one[k].abs().max() > 0 for k in moved)  # the step did train
    for k in one:
        assert torch.allclose(two[k], one[k], atol=1e-6), k


def _stop_from_call(n: int):
    """should_stop() that says stop from its n-th call on (the trainer asks once before the first step,
    then after every step)."""
    calls = {"n": 0}

    def should_stop():
        calls["n"] += 1
        return calls["n"] >= n

    return should_stop


def test_the_split_keeps_copies_of_a_sample_on_one_side():
    records = [{"input": f"Alice: {i}\nBob:", "output": "Aye.", "source": f"a.txt:{i}"} for i in range(50)]
    # without copies: the split it always was (the first n_val of the seeded shuffle)
    assert training.split(records, 0.2, 42) == training.split(records, 0.2, 42, together=False)
    # `--keep_duplicates`, a file joined with itself: the copies differ only in `source`
    doubled = records + [dict(r, source="b.txt") for r in records] + [{"input": "Bob:", "output": "Hm."}] * 3
    train_idx, val_idx = training.split(doubled, 0.2, 42)
    key = lambda i: (doubled[i]["input"], doubled[i]["output"])  # noqa: E731
    assert not {key(i) for i in train_idx} & {key(i) for i in val_idx}
    assert 18 <= len(val_idx) <= training.n_val_of(len(doubled), 0.2) == 21  # the share asked, copies included
    # one sample copied 200 times ("lol" to every "ok"): not most of the held-out set, nor of the records
    many = [{"input": "ok", "output": "lol"}] * 200 + [{"input": f"q{i}", "output": "a"} for i in range(19)]
    for seed in range(5):
        val = training.split(many, 0.1, seed)[1]
        assert len(val) <= training.n_val_of(219, 0.1) and all(many[i]["input"] != "ok" for i in val)
    assert sorted(train_idx + val_idx) == list(range(len(doubled)))
    plain = training.split(doubled, 0.2, 42, together=False)
    assert {key(i) for i in plain[0]} & {key(i) for i in plain[1]}  # what a split without it gave
    # a dataset doubled holds out as many distinct samples as the dataset did, each with its copy; copies of
    # one sample alone: none
    val = training.split([{"input": c} for c in "abcd"] * 2, 0.05, 42)[1]
    assert len(val) == 2 and val[1] - val[0] == 4
    assert training.split([{"input": "a"}] * 4, 0.2, 0) == ([0, 1, 2, 3], [])


def test_a_run_from_before_copies_were_kept_together_resumes_with_its_split(env):
    data = env / "copies.json"
    records = bob_records(20, 5)
    data.write_text(json.dumps(records + records))
    common = dict(dataset_name=str(data), batch_size=4, epochs=1, val_ratio=0.2)
    train(make_cfg(env, lora_name="copies", **common), should_stop=_stop_from_call(2))
    checkpoint = env / "loras" / "copies" / "checkpoint-1"
    state = json.loads((checkpoint / training.STATE_FILE).read_text())
    assert state["settings"]["split"] == training.SPLIT
    state["settings"].pop("split")  # as a checkpoint from before it saved one
    (checkpoint / training.STATE_FILE).write_text(json.dumps(state))
    train(make_cfg(env, lora_name="copies", resume=True, **common))
    out = env / "loras" / "copies"
    held = json.loads((out / training.HELDOUT_FILE).read_text())
    _, plain = training.split(records + records, 0.2, 42, together=False)
    assert held == [(records + records)[i] for i in plain]
    assert json.loads((out / "training_parameters.json").read_text())["split"] == "plain"


def test_resume_gives_the_uninterrupted_result(env):
    import torch

    small = env / "small.json"
    small.write_text(json.dumps(bob_records(40, 3)))
    common = dict(dataset_name=str(small), batch_size=4, epochs=2, val_ratio=0.1, lora_dropout=0.1, seed=7)
    full = train(make_cfg(env, lora_name="full", **common))
    stop = train(make_cfg(env, lora_name="part", **common), should_stop=_stop_from_call(2))  # after step 1
    assert stop.stopped and stop.step == 1 and stop.checkpoint.name == "checkpoint-1"
    part = env / "loras" / "part"
    assert not (part / "adapter_model.safetensors").exists()
    # stop again mid-epoch 2 (from a resumed run at step 1: the 12th call comes after step 12), then finish
    mid = train(make_cfg(env, lora_name="part", resume=True, **common), should_stop=_stop_from_call(12))
    assert mid.stopped and mid.step == 12
    done = train(make_cfg(env, lora_name="part", resume=True, **common))
    assert not done.stopped and done.step == full.step == 18
    a, b = _adapter_tensors(env / "loras" / "full"), _adapter_tensors(part)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k
    la = json.loads((env / "loras" / "full" / "training_log.json").read_text())
    lb = json.loads((part / "training_log.json").read_text())
    assert [round(e["eval_loss"], 5) for e in la["evals"]] == [round(e["eval_loss"], 5) for e in lb["evals"]]
    # the loss curve too: a logged entry after a resume averages the same steps as the uninterrupted one's
    assert [(e["step"], round(e["loss"], 4)) for e in la["steps"]] == [(e["step"], round(e["loss"], 4)) for e in lb["steps"]]
    assert not list(part.glob("checkpoint-*"))
    # a finished run has nothing to resume
    with pytest.raises(UserError, match="no checkpoint"):
        check(make_cfg(env, lora_name="part", resume=True, **common))
    # a resume with settings that change the data order is refused
    train(make_cfg(env, lora_name="other", **common), should_stop=_stop_from_call(2))
    with pytest.raises(UserError, match="--batch_size was 4"):
        train(make_cfg(env, lora_name="other", resume=True, **dict(common, batch_size=8)))
    with pytest.raises(UserError, match="--batch_size was 4.*Resume with its settings"):  # before the model loads
        check(make_cfg(env, lora_name="other", resume=True, **dict(common, batch_size=8)))
    # ... and so is one on other samples, or with another dropout
    other = env / "other.json"
    other.write_text(json.dumps(bob_records(40, 4)))
    with pytest.raises(UserError, match=r"it was trained on .*, now .*other.json, whose samples differ: resume with"):
        train(make_cfg(env, lora_name="other", resume=True, **dict(common, dataset_name=str(other))))
    # the same file, changed since (a dataset saved again over it)
    said = training._resume_mismatch(Path("c"), {"dataset": "d.json", "samples_sha256": "1"},
                                     {"dataset": "d.json", "samples_sha256": "2", "dataset_sha256": "3"})
    assert said == ("--resume: c was trained with other settings: d.json has changed since the checkpoint was saved: "
                    "resume with the samples it was trained on, or train anew with --overwrite")
    with pytest.raises(UserError, match="--lora_dropout was 0.1, now 0.0"):
        train(make_cfg(env, lora_name="other", resume=True, **dict(common, lora_dropout=0.0)))
    # settings the optimizer and schedule were built with (a resumed optimizer keeps its weight decay)
    for flag, value in (("weight_decay", 0.5), ("warmup_ratio", 0.5), ("max_grad_norm", 0.01)):
        with pytest.raises(UserError, match=f"--{flag} was .*, now {value}"):
            check(make_cfg(env, lora_name="other", resume=True, **dict(common, **{flag: value})))
    # the same samples in another file layout are the same samples
    same = env / "same.jsonl"
    same.write_text("".join(json.dumps(r, indent=None) + "\n" for r in bob_records(40, 3)))
    assert not train(make_cfg(env, lora_name="other", resume=True, **dict(common, dataset_name=str(same)))).stopped


def test_stop_before_the_first_step_saves_nothing(env, monkeypatch):
    from extensions.dialogue_lora import training

    monkeypatch.setattr(training, "STOP_CHECK_SECONDS", 0.0)  # asked at once while the base is measured
    events = []
    result = train(make_cfg(env, lora_name="early", val_ratio=0.2), on_progress=events.append,
                   should_stop=lambda: True)
    assert result.stopped and result.step == 0 and result.checkpoint is None
    # asked while the model loaded: the base model's measurement (minutes on a big one) ends at once
    assert result.base_eval_loss is None and not [e for e in events if e["event"] == "eval"]
    assert not (env / "loras" / "early").exists()
    assert not list((env / "loras").glob(".early*"))  # nor a lock


def test_a_stop_while_the_base_is_measured_ends_it_without_a_step(env, monkeypatch):
    """The base model's held-out loss takes minutes on a big model: a stop asked for meanwhile ends the
    run within a batch of it, before any step and without saving, and says it began no training."""
    from extensions.dialogue_lora import training

    monkeypatch.setattr(training, "STOP_CHECK_SECONDS", 0.0)
    events = []
    # the first ask (model loaded) says go on; the first one while measuring, stop
    result = train(make_cfg(env, lora_name="mid", val_ratio=0.4, batch_size=1), on_progress=events.append,
                   should_stop=_stop_from_call(2))
    assert result.stopped and result.step == 0 and result.checkpoint is None and result.base_eval_loss is None
    kinds = [e["event"] for e in events]
    assert "begin" not in kinds and "eval" not in kinds and "step" not in kinds and kinds[-1] == "done"
    assert not (env / "loras" / "mid").exists()
    # asked at the end of it too (a stop in its last seconds, or under torchrun): still no step, as Ctrl+C said
    monkeypatch.setattr(training, "STOP_CHECK_SECONDS", float("inf"))
    events = []
    result = train(make_cfg(env, lora_name="mid", val_ratio=0.4, batch_size=1), on_progress=events.append,
                   should_stop=lambda: True)
    assert result.stopped and result.step == 0 and result.checkpoint is None and result.base_eval_loss is not None
    assert "begin" not in [e["event"] for e in events] and not (env / "loras" / "mid").exists()
    # asked now and then (not before every batch, which may read a file): a quick measurement is not asked
    monkeypatch.setattr(training, "STOP_CHECK_SECONDS", 60.0)
    check = training._now_and_then(lambda: True, 60.0)
    assert check() is True and check() is False  # at once (a stop asked while loading), then not before the interval
    calls = []
    result = train(make_cfg(env, lora_name="mid", val_ratio=0.4, batch_size=1, max_steps=1),
                   should_stop=lambda: calls.append(1) and False)
    # as the measurement starts, before the first step, and after step 1
    assert not result.stopped and result.base_eval_loss is not None and len(calls) == 3


def test_overwrite_keeps_the_old_checkpoints_until_it_saves_its_own(env):
    common = dict(lora_name="ow", max_steps=6, val_ratio=0.0)
    train(make_cfg(env, **common), should_stop=_stop_from_call(4))  # stopped after step 3
    old = env / "loras" / "ow" / "checkpoint-3"
    assert old.is_dir()
    train(make_cfg(env, overwrite=True, **common), should_stop=lambda: True)  # stopped before a step
    assert old.is_dir()  # all the user had: not deleted by a run that saved nothing
    stopped = train(make_cfg(env, overwrite=True, **common), should_stop=_stop_from_call(3))
    assert stopped.checkpoint.name == "checkpoint-2" and not old.exists()


def test_a_run_stopped_before_its_first_step_leaves_no_folder_it_made(env):
    deep = env / "new" / "deep" / "loras"
    train(make_cfg(env, lora_name="early", lora_dir=str(deep), max_steps=3, val_ratio=0.0),
          should_stop=lambda: True)
    assert not (env / "new").exists()  # `loras` went, and so did the two above it that the run made


def test_another_trainers_checkpoints_are_not_offered_for_resuming(env):
    """transformers' Trainer (the webui's Training tab) writes checkpoint-N/trainer_state.json too."""
    hf = env / "loras" / "webui" / "checkpoint-100"
    hf.mkdir(parents=True)
    (hf / "trainer_state.json").write_text(json.dumps({"global_step": 100, "log_history": []}))
    (hf / "adapter_config.json").write_text("{}")
    with pytest.raises(UserError, match="checkpoints were written by another trainer and cannot be resumed here: "
                                        "--overwrite to replace them"):
        check(make_cfg(env, lora_name="webui", max_steps=2, val_ratio=0.0))
    with pytest.raises(UserError, match=r"--resume: .*checkpoints \(checkpoint-100\) were written by another trainer"):
        check(make_cfg(env, lora_name="webui", max_steps=2, val_ratio=0.0, resume=True))
    train(make_cfg(env, lora_name="webui", max_steps=2, val_ratio=0.0, overwrite=True))
    assert (env / "loras" / "webui" / "adapter_config.json").is_file()


def test_resume_knows_its_base_by_its_weights_and_its_samples_by_their_text(env):
    """A base of the same shape with other weights (an Instruct model for its base) is refused; the same
    samples prepared from a renamed raw file (only their `source` differs) and the target modules in
    another order are not a change."""
    from safetensors.torch import load_file, save_file

    models = env / "models"
    other = models / "tiny-other"
    shutil.copytree(models / "tiny", other)
    weights = load_file(other / "model.safetensors")
    save_file({k: v + 0.01 for k, v in weights.items()}, other / "model.safetensors", metadata={"format": "pt"})
    data = env / "sourced.json"
    records = [dict(r, source=f"play.txt:{i}") for i, r in enumerate(bob_records(40, 3))]
    data.write_text(json.dumps(records))
    common = dict(lora_name="sw", dataset_name=str(data), target_modules=["v_proj", "q_proj"], max_steps=8)
    train(make_cfg(env, **common), should_stop=_stop_from_call(2))
    with pytest.raises(UserError, match=r"the base model's weights differ from those it was trained on \(was tiny, "
                                        r"now tiny-other: the same shape, other weights\): resume on the model it was "
                                        r"trained on, or train anew with --overwrite$"):
        check(make_cfg(env, model_name="tiny-other", resume=True, **common))
    # a model of another shape is not said to have the same one
    from extensions.dialogue_lora.tiny import build_tiny_model

    build_tiny_model(models / "tiny-wide", ["Alice: hi\nBob: hello\n"], hidden_size=32)
    with pytest.raises(UserError, match=r"\(was tiny, now tiny-wide: another shape\): resume on the model"):
        check(make_cfg(env, model_name="tiny-wide", resume=True, **common))
    shutil.rmtree(models / "tiny-wide")
    data.write_text(json.dumps([dict(r, source=f"renamed.txt:{i}") for i, r in enumerate(records)]))
    common["target_modules"] = ["q_proj", "v_proj"]
    assert check(make_cfg(env, resume=True, **common)).resume_from.name == "checkpoint-1"
    assert train(make_cfg(env, resume=True, **common)).step == 8
    shutil.rmtree(other)


def test_samples_with_an_empty_reply_are_left_out_with_a_note(env):
    """Another tool's `"output": ""` (or a blank assistant turn) would teach the model to say nothing."""
    data = env / "blanks.jsonl"
    records = bob_records(20, 2)
    records[3]["output"] = ""
    records[7]["output"] = "   "
    chat = {"conversations": [{"from": "human", "value": "Alice: hi"}, {"from": "gpt", "value": ""}]}
    data.write_text("\n".join(json.dumps(r) for r in [*records, chat]) + "\n")
    plan = check(make_cfg(env, lora_name="blank", dataset_name=str(data), name="Bob"))
    assert len(plan.records) == 18 and all(r.get("output", "x").strip() for r in plan.records)
    # --resume compares the samples as the file holds them, as a checkpoint written before they were left out
    from extensions.dialogue_lora.fileio import load_records, samples_sha256
    assert plan.loaded_sha256["samples_sha256"] == samples_sha256(load_records(data))
    assert plan.notes == [f"3 sample(s) left out: their reply is empty, which would teach the model to say nothing "
                          f"(the first: {data}:4)",
                          # the one sample --name cued was left out: said
                          "--name Bob cues no sample: every sample names its character (it stays the character "
                          "chat.py and evaluation speak as by default)"]
    # a multi-turn sample keeps its other turns, the empty one as context only
    from extensions.dialogue_lora.prompt import record_segments
    two = {"conversations": [{"from": "human", "value": "Alice: hi"}, {"from": "gpt", "value": ""},
                             {"from": "human", "value": "Alice: well?"}, {"from": "gpt", "value": "Arr."}]}
    assert [t for _, t in record_segments(two, "Bob")] == [False, False, False, True]
    data.write_text(json.dumps([dict(r, output="") for r in records]))
    with pytest.raises(UserError, match="every sample's reply is empty: nothing to learn"):
        check(make_cfg(env, lora_name="blank", dataset_name=str(data)))


def test_resume_past_max_steps_is_refused(env, monkeypatch):
    common = dict(lora_name="past", val_ratio=0.0)
    train(make_cfg(env, max_steps=6, **common), should_stop=_stop_from_call(4))  # checkpoint-3
    ckpt = env / "loras" / "past" / "checkpoint-3"
    umask = os.umask(0o022)
    os.umask(umask)
    assert {p.stat().st_mode & 0o777 for p in ckpt.iterdir()} == {0o666 & ~umask}  # not safetensors' 0600
    with pytest.raises(UserError, match="checkpoint-3 is already past --max_steps 2: nothing is left to train"):
        train(make_cfg(env, max_steps=2, resume=True, **common))
    # the process count sets an epoch's steps: resumed on two processes, the run looped without a step
    with monkeypatch.context() as m:
        m.setenv("WORLD_SIZE", "2")
        with pytest.raises(UserError, match=r"it ran as 1 process\(es\), now 2: resume with as many"):
            train(make_cfg(env, max_steps=6, resume=True, **common))
    assert train(make_cfg(env, max_steps=4, resume=True, **common)).step == 4


def test_resume_with_fewer_epochs_than_done_is_refused_and_keeps_the_checkpoint(env):
    """Resumed with the form's default epochs after a reload, the run ended at once as 'finished' and its
    final save deleted the checkpoint: the rest of the run could never be trained."""
    common = dict(lora_name="fewer", val_ratio=0.0, batch_size=40)  # 3 steps an epoch
    stopped = train(make_cfg(env, epochs=4, **common), should_stop=_stop_from_call(6))  # checkpoint-5
    per_epoch = stopped.total_steps // 4
    assert stopped.stopped and stopped.step == 5 > per_epoch, (stopped.step, per_epoch)
    with pytest.raises(UserError, match=rf"checkpoint-5 is at step 5 and these settings train {per_epoch} step\(s\) "
                                        r"in all: nothing left to resume; set --epochs 4 as the run had"):
        train(make_cfg(env, epochs=1, resume=True, **common))
    with pytest.raises(UserError, match="nothing left to resume"):  # said by the checks, before the model loads
        check(make_cfg(env, epochs=1, resume=True, **common))
    assert (env / "loras" / "fewer" / "checkpoint-5" / "trainer_state.json").is_file()
    assert train(make_cfg(env, epochs=4, resume=True, max_steps=6, **common)).step == 6


def test_overwrite_never_replaces_a_model_and_keeps_the_users_files(env):
    model = env / "models" / "tiny"
    before = sorted(p.name for p in model.iterdir())
    with pytest.raises(UserError, match="holds a model \\(config.json\\), not an adapter: it is never replaced"):
        train(make_cfg(env, lora_name="tiny", lora_dir=str(env / "models"), max_steps=1, overwrite=True))
    assert sorted(p.name for p in model.iterdir()) == before
    out = env / "loras" / "noted"
    train(make_cfg(env, lora_name="noted", max_steps=1, val_ratio=0))
    (out / "notes.txt").write_text("what I tried")
    (out / "mydata").mkdir()
    (out / "mydata" / "lines.txt").write_text("Bob: hi")
    (out / "eval.md").write_text("the old adapter's report")  # about the replaced adapter: goes with it
    (out / "checkpoint-best").mkdir()  # a checkpoint copied aside by hand: the user's, not a run's
    (out / "checkpoint-best" / "why.txt").write_text("lowest loss")
    (out / "checkpoint-7").mkdir()  # named like one, but no trainer wrote it (no trainer_state.json)
    (out / "checkpoint-7" / "mine.txt").write_text("precious")
    # stopped after its first checkpoint, which is when the replaced run's checkpoints are deleted
    assert train(make_cfg(env, lora_name="noted", max_steps=2, val_ratio=0, overwrite=True),
                 should_stop=_stop_from_call(2)).stopped
    assert (out / "checkpoint-best" / "why.txt").is_file() and (out / "checkpoint-1").is_dir()
    train(make_cfg(env, lora_name="noted", max_steps=2, val_ratio=0, resume=True))
    assert (out / "notes.txt").read_text() == "what I tried" and (out / "mydata" / "lines.txt").is_file()
    assert (out / "checkpoint-best" / "why.txt").read_text() == "lowest loss"
    assert (out / "checkpoint-7" / "mine.txt").read_text() == "precious"
    assert json.loads((out / "training_parameters.json").read_text())["steps"] == 2 and not (out / "eval.md").exists()
    # a folder no run wrote (no adapter, no checkpoint): files named like a run's are the user's, never replaced
    mine = env / "loras" / "project"
    mine.mkdir()
    (mine / "README.md").write_text("# My project")
    (mine / "data.csv").write_text("a,b")
    for overwrite in (False, True):
        with pytest.raises(UserError, match=r"holds no adapter and no checkpoint, but files a run would replace "
                                            r"\(README.md\): move them out"):
            train(make_cfg(env, lora_name="project", max_steps=1, val_ratio=0, overwrite=overwrite))
    assert (mine / "README.md").read_text() == "# My project"
    (mine / "README.md").unlink()
    with pytest.raises(UserError, match="--overwrite to train into it, its files kept"):
        check(make_cfg(env, lora_name="project", max_steps=1, val_ratio=0))
    train(make_cfg(env, lora_name="project", max_steps=1, val_ratio=0, overwrite=True))
    assert (mine / "data.csv").read_text() == "a,b" and (mine / "adapter_config.json").is_file()


_HOLD = """
import sys, time
from pathlib import Path
from extensions.dialogue_lora.fileio import held_lock
from extensions.dialogue_lora.errors import UserError
try:
    with held_lock(Path(sys.argv[1]), lambda holder: "busy"):
        start = time.time(); print("held", flush=True); time.sleep(float(sys.argv[2]))
        print(f"span {start} {time.time()}", flush=True)
except UserError:
    print("refused", flush=True)
"""


def _holders(lock, n, seconds):
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    return [subprocess.Popen([sys.executable, "-c", _HOLD, str(lock), str(seconds)], stdout=subprocess.PIPE, text=True,
                             env=env) for _ in range(n)]


def test_a_second_run_of_the_same_adapter_is_refused_while_the_first_runs(env):
    lock = env / "loras" / ".busy.lock.txt"
    lock.write_text("12345")  # a killed run's: a lock file alone does not hold
    holder = _holders(lock, 1, 60)[0]
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=f"another training run \\(process {holder.pid}\\) is writing"):
            train(make_cfg(env, lora_name="busy", max_steps=1))
        # --resume and --overwrite too: not "no run to resume" for a run that has saved nothing yet, alone
        for flag in ("resume", "overwrite"):
            with pytest.raises(UserError, match=f"^[^\n]*busy: another training run \\(process {holder.pid}\\) is writing"
                                                f"[^\n]*$"):
                train(make_cfg(env, lora_name="busy", max_steps=1, **{flag: True}))
    finally:
        holder.kill()
        holder.wait()
    assert not train(make_cfg(env, lora_name="busy", max_steps=1, val_ratio=0.0)).stopped  # gone with its process
    assert not lock.exists()


def test_the_lock_admits_one_process_at_a_time(tmp_path):
    """Processes that start together: never two inside at once (a pid written after the file appeared, or
    a stale lock taken over by two at once, used to let two in)."""
    for _ in range(3):
        procs = _holders(tmp_path / ".x.lock", 4, 0.3)
        spans = []
        for p in procs:
            out, _ = p.communicate(timeout=120)
            spans += [tuple(map(float, line.split()[1:])) for line in out.splitlines() if line.startswith("span")]
        assert spans  # someone got in
        spans.sort()
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), spans


def test_a_lock_on_a_full_disk_is_one_line(tmp_path, monkeypatch):
    """The lock file is made, but its pid cannot be written (a review's full tmpfs): a traceback before."""
    import errno

    from extensions.dialogue_lora import fileio

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileio.os, "write", full)
    with pytest.raises(UserError, match=r"\.x\.lock: cannot write the lock \(No space left on device\)"):
        with fileio.held_lock(tmp_path / ".x.lock", lambda holder: "busy"):
            pass
    assert not (tmp_path / ".x.lock").exists()


def test_a_killed_runs_leftovers_are_tidied(env):
    """A kill between the final save's two renames: the old folder goes back (or the complete new one
    goes in); half-written folders go; none is ever offered as an adapter."""
    dead = 999_999_999  # no such process
    loras = env / "loras"
    train(make_cfg(env, lora_name="k", max_steps=6, val_ratio=0.0), should_stop=_stop_from_call(4))
    os.replace(loras / "k", loras / f".k.old-{dead}")  # set aside, the new adapter half-written
    (loras / f".k.tmp-{dead}").mkdir()
    (loras / f".k.tmp-{dead}" / "adapter_config.json").write_text("{}")
    assert not any(n.startswith(".") for n in list_adapters(loras))
    with pytest.raises(UserError, match="--resume to continue"):  # put back: its checkpoint is there again
        train(make_cfg(env, lora_name="k", max_steps=6, val_ratio=0.0))
    assert (loras / "k" / "checkpoint-3").is_dir() and not list(loras.glob(".k.*"))
    assert train(make_cfg(env, lora_name="k", max_steps=6, val_ratio=0.0, resume=True)).step == 6
    # cut off between the two renames, the new adapter complete: chat and evaluation say where it is and
    # how to get it back; --resume (or any run of the name) puts it back first
    os.replace(loras / "k", loras / f".k.tmp-{dead}")
    with pytest.raises(UserError, match=r"adapter 'k' not found.*was cut off while saving \(its adapter is in "
                                        r".*\.k\.tmp-999999999\): run lora_finetune.py with -l k again"):
        resolve_adapter("k", loras)
    with pytest.raises(UserError, match="no checkpoint to resume from .the run finished"):
        check(make_cfg(env, lora_name="k", max_steps=6, val_ratio=0.0, resume=True))
    assert resolve_adapter("k", loras) == (loras / "k").resolve()


def test_a_kill_after_the_final_save_before_its_swap_keeps_the_adapter(env):
    """Killed after the complete adapter was written beside the run's folder of checkpoints, before the swap:
    the next run of the name (a --resume too) finishes the swap; the hours trained are not thrown away."""
    dead = 999_999_999
    loras = env / "loras"
    common = dict(lora_name="ks", max_steps=6, val_ratio=0.0)
    train(make_cfg(env, **common), should_stop=_stop_from_call(4))
    done = env / "done"
    train(make_cfg(env, lora_dir=str(done), **common))  # the same run, finished, elsewhere
    (loras / "ks" / "notes.txt").write_text("mine")
    shutil.copytree(done / "ks", loras / f".ks.tmp-{dead}")
    with pytest.raises(UserError, match=r"holds no adapter yet; a training run of 'ks' was cut off while saving"):
        resolve_adapter("ks", loras)
    with pytest.raises(UserError, match="no checkpoint to resume from .the run finished"):
        check(make_cfg(env, resume=True, **common))
    assert paths.finished_save(loras / "ks") and not list(loras.glob(".ks.*"))
    assert (loras / "ks" / "notes.txt").read_text() == "mine" and not list((loras / "ks").glob("checkpoint-*"))
    assert resolve_adapter("ks", loras) == (loras / "ks").resolve()
    # an adapter saved there since (by hand) is newer than the leftover: kept, the leftover goes
    shutil.copytree(done / "ks", loras / f".ks.tmp-{dead}")
    os.utime(loras / f".ks.tmp-{dead}" / "README.md", (1, 1))
    (loras / "ks" / "adapter_config.json").write_text('{"r": 99}')
    with pytest.raises(UserError, match="it is a finished adapter"):
        check(make_cfg(env, **common))
    assert (loras / "ks" / "adapter_config.json").read_text() == '{"r": 99}' and not list(loras.glob(".ks.*"))
    # killed after the user's notes moved across, notes written again since: both kept
    shutil.rmtree(loras / "ks")
    train(make_cfg(env, **common), should_stop=_stop_from_call(4))
    (loras / "ks" / "notes.txt").write_text("new")
    tmp = loras / f".ks.tmp-{dead}"
    shutil.copytree(done / "ks", tmp)
    (tmp / "notes.txt").write_text("old")
    with pytest.raises(UserError, match="it is a finished adapter"):
        check(make_cfg(env, **common))
    assert {p.name: p.read_text() for p in (loras / "ks").glob("notes*")} == {"notes.txt": "old", "notes (2).txt": "new"}


def test_a_final_save_cut_off_before_the_card_is_not_taken_for_an_adapter(env):
    """A run with no checkpoint yet killed in its final save: PEFT's save_pretrained had written its own
    README.md, which is not our card. The next run of the name clears the half-written folder and trains."""
    dead = 999_999_999
    loras = env / "loras"
    half = loras / f".h.tmp-{dead}"
    half.mkdir(parents=True)
    (half / "README.md").write_text("---\nbase_model: x\nlibrary_name: peft\n---\n# Model Card for Model ID\n")
    (half / "adapter_config.json").write_text("{}")
    assert "cut off while saving" not in str(pytest.raises(UserError, resolve_adapter, "h", loras).value)
    result = train(make_cfg(env, lora_name="h", max_steps=2, val_ratio=0.0))
    assert result.step == 2 and not half.exists()
    assert paths.finished_save(loras / "h") and resolve_adapter("h", loras) == (loras / "h").resolve()


def test_a_runs_tidying_leaves_another_adapters_leftovers_alone(env):
    """`.y.tmp-1.tmp-PID` is what a killed save of an adapter called `y.tmp-1` left, not one of `y`'s."""
    dead = 999_999_999
    loras = env / "loras"
    train(make_cfg(env, lora_name="y.tmp-1", max_steps=2, val_ratio=0.0))
    other = loras / f".y.tmp-1.tmp-{dead}"
    os.replace(loras / "y.tmp-1", other)  # killed before its rename into place
    assert check(make_cfg(env, lora_name="y", max_steps=2, val_ratio=0.0)).resume_from is None
    assert other.is_dir() and not (loras / "y").exists()
    # and the hint after a kill between the swap's renames names the folder the next run puts back: the
    # complete new adapter, not the old one set aside
    train(make_cfg(env, lora_name="z", max_steps=2, val_ratio=0.0))
    shutil.copytree(loras / "z", loras / f".z.tmp-{dead}")
    os.replace(loras / "z", loras / f".z.old-{dead}")
    with pytest.raises(UserError, match=rf"its adapter is in .*\.z\.tmp-{dead}\)"):
        resolve_adapter("z", loras)


def test_a_kill_after_the_users_files_moved_for_the_swap_loses_none_of_them(env):
    """--overwrite's final save moves the user's notes into the new folder just before the swap; a kill
    there leaves them in `.NAME.tmp-PID`, and the next run puts them back instead of deleting them."""
    dead = 999_999_999
    loras = env / "loras"
    common = dict(lora_name="n1", max_steps=2, val_ratio=0.0)
    train(make_cfg(env, **common))
    tmp = loras / f".n1.tmp-{dead}"  # a complete new adapter, the user's notes moved into it
    shutil.copytree(loras / "n1", tmp)
    (tmp / "notes.txt").write_text("precious")
    (tmp / "art").mkdir()
    (tmp / "art" / "face.png").write_bytes(b"png")
    train(make_cfg(env, overwrite=True, **common))
    assert (loras / "n1" / "notes.txt").read_text() == "precious"
    assert (loras / "n1" / "art" / "face.png").read_bytes() == b"png"
    assert not tmp.exists()
    # cut off before the rename of a first save: the complete adapter goes into place, notes and all
    shutil.copytree(loras / "n1", tmp)
    shutil.rmtree(loras / "n1")
    with pytest.raises(UserError, match="it is a finished adapter"):
        check(make_cfg(env, **common))
    assert (loras / "n1" / "notes.txt").read_text() == "precious" and not tmp.exists()
    # an incomplete one (no model card: it is written last) holding the user's files, and no folder to
    # put them back into: it stays as it is
    (tmp / "art").mkdir(parents=True)
    (tmp / "art" / "face.png").write_bytes(b"png")
    shutil.rmtree(loras / "n1")
    train(make_cfg(env, **common))
    assert (tmp / "art" / "face.png").read_bytes() == b"png"


def test_a_folder_holding_only_a_half_written_checkpoint_is_free(env):
    loras = env / "loras"
    (loras / "kb" / ".checkpoint-5.tmp").mkdir(parents=True)  # a kill during the first checkpoint's save
    (loras / "kb" / ".checkpoint-5.tmp" / "adapter_config.json").write_text("{}")
    with pytest.raises(UserError, match="no run of 'kb'"):
        check(make_cfg(env, lora_name="kb", max_steps=2, val_ratio=0.0, resume=True))
    assert train(make_cfg(env, lora_name="kb", max_steps=2, val_ratio=0.0)).step == 2
    assert not (loras / "kb" / ".checkpoint-5.tmp").exists()


def test_a_failed_save_is_one_line_and_leaves_no_partial_folder(env, monkeypatch):
    import errno

    import torch

    real_save = torch.save

    def full_disk(obj, f, *a, **k):
        if str(f).endswith("optimizer.pt"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(UserError, match=r"cannot save the checkpoint \(No space left on device\); no checkpoint"):
        train(make_cfg(env, lora_name="diskfull", max_steps=4, save_steps=2, val_ratio=0.0))
    assert not list((env / "loras").rglob("*.tmp"))


def test_a_write_torch_found_cut_short_is_said_as_such(tmp_path):
    """torch's writer says "unexpected pos" where a quota or a file-size limit cut its write short."""
    from extensions.dialogue_lora.training import _writing

    tmp = tmp_path / "run" / ".checkpoint-4.tmp"
    tmp.mkdir(parents=True)
    with pytest.raises(UserError, match=r"checkpoint-4.tmp: cannot save the checkpoint \(a write was cut short: "
                                        r".*unexpected pos 303168 vs 303060\); none kept$"):
        with _writing(tmp, "the checkpoint", "none kept"):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 303168 vs 303060")
    assert not tmp.exists()


def test_the_adapter_folder_is_checked_before_training(env):
    (env / "afile").write_text("x")
    with pytest.raises(UserError, match="is a file, not a folder"):
        check(make_cfg(env, lora_name="y", lora_dir=str(env / "afile")))
    with pytest.raises(UserError, match="at most 120"):
        make_cfg(env, lora_name="a" * 250)
    assert make_cfg(env, lora_name="Éowyn").lora_name == "Éowyn"  # a letter, in any script
    for reserved in ("NUL", "con.json", "bob."):  # names Windows cannot create
        with pytest.raises(UserError, match="Windows reserves it"):
            make_cfg(env, lora_name=reserved)


def test_a_diverging_run_stops_with_a_clear_error(env):
    with pytest.raises(UserError, match="training diverged: the loss is (nan|inf) at step"):
        train(make_cfg(env, lora_name="nan", learning_rate=1e30, max_steps=8, val_ratio=0.0, max_grad_norm=0))


# ------------------------------------------------------------------------------ methods and bits


def test_a_stopped_prompt_tuning_run_resumes_with_the_same_form(env):
    """The tab sends every field: packing (on, and off in effect for soft prompts) and a LoRA rank that
    prompt tuning never reads must not make its own checkpoint 'other settings'."""
    form = dict(lora_name="soft-resume", method="prompt_tuning", num_virtual_tokens=4, max_steps=4, val_ratio=0.0,
                learning_rate=3e-2)
    stopped = train(make_cfg(env, **form), should_stop=_stop_from_call(3))
    assert stopped.checkpoint.name == "checkpoint-2"
    assert train(make_cfg(env, resume=True, lora_rank=32, **form)).step == 4
    with pytest.raises(UserError, match="--num_virtual_tokens was 4, now 8"):  # one it does read
        train(make_cfg(env, **dict(form, lora_name="soft-resume2")), should_stop=_stop_from_call(2))
        train(make_cfg(env, resume=True, **dict(form, lora_name="soft-resume2", num_virtual_tokens=8)))


def test_prompt_tuning(env, tiny_model_dir):
    from peft import PeftModel

    res = train(make_cfg(env, lora_name="soft", method="prompt_tuning", num_virtual_tokens=8, epochs=1,
                         learning_rate=3e-2, val_ratio=0.1))
    cfg = json.loads((res.output_dir / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "PROMPT_TUNING" and cfg["num_virtual_tokens"] == 8
    assert res.eval_loss < res.base_eval_loss
    model, tok = modeling.load_base(tiny_model_dir, device="cpu")
    wrapped = PeftModel.from_pretrained(model, str(res.output_dir))
    ids = tok("Alice: Where is the boat and the rain?\nBob:", return_tensors="pt")
    out = wrapped.generate(**ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > 0


@pytest.mark.parametrize("bits", [4, 8])
def test_quantized_training_on_cpu(env, tiny_model_dir, bits):
    from peft import PeftModel

    flag = {4: "load_in_4bit", 8: "load_in_8bit"}[bits]
    res = train(make_cfg(env, lora_name=f"q{bits}", max_steps=3, val_ratio=0.1, **{flag: True}))
    params = json.loads((res.output_dir / "training_parameters.json").read_text())
    assert params[flag] is True and res.step == 3 and res.eval_loss is not None
    model, _ = modeling.load_base(tiny_model_dir, device="cpu", **{flag: True})
    PeftModel.from_pretrained(model, str(res.output_dir))


def test_damaged_files_are_one_line_errors(env, tmp_path):
    common = dict(lora_name="dmg", max_steps=8, val_ratio=0.0, save_steps=2, save_total_limit=2)
    train(make_cfg(env, **common), should_stop=_stop_from_call(6))  # checkpoints 4 and 5
    assert sorted(p.name for p in (env / "loras" / "dmg").glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-5"]
    latest = env / "loras" / "dmg" / "checkpoint-5"
    opt = latest / "optimizer.pt"
    opt.write_bytes(opt.read_bytes()[:100])
    with pytest.raises(UserError, match="checkpoint-5: damaged checkpoint.*continues from checkpoint-4"):
        train(make_cfg(env, resume=True, **common))
    # a truncated base model
    broken = env / "models" / "broken"
    shutil.copytree(env / "models" / "tiny", broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    with pytest.raises(UserError, match="could not load the model in .*broken"):
        train(make_cfg(env, lora_name="b", model_name="broken", max_steps=1))


def test_an_adapter_folder_opened_in_a_file_manager_is_not_taken(env):
    """Finder's .DS_Store (or macOS's ._ files on a FAT drive) in an empty adapter folder: a new run goes on
    (it needed --overwrite), and the file manager's files do not join the adapter."""
    out = env / "loras" / "shown"
    out.mkdir(parents=True)
    (out / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (out / "._notes.txt").write_bytes(b"\0\5\x16\7")
    train(make_cfg(env, lora_name="shown", max_steps=1, val_ratio=0.0))
    assert (out / "adapter_model.safetensors").is_file() and not (out / ".DS_Store").exists()


def test_a_folder_held_open_keeps_an_old_checkpoint_and_a_finished_adapter_is_said_where_it_is(env, monkeypatch):
    """On Windows a folder another program holds open (an antivirus scan, Explorer) cannot be renamed, past
    replace_folder's retries: an old checkpoint then stays (the run goes on), and a final save that cannot go
    in place says where the finished adapter is; the next run of the name puts it there."""
    from extensions.dialogue_lora import paths

    real = training.replace_folder

    def held(src, dst):
        if src.name.startswith("checkpoint-") or src.name.startswith(".win.tmp-"):
            raise PermissionError(13, "Access is denied", str(src))
        real(src, dst)

    monkeypatch.setattr(training, "replace_folder", held)
    common = dict(lora_name="win", max_steps=6, val_ratio=0.0, save_steps=2, save_total_limit=1)
    out = env / "loras" / "win"
    with pytest.raises(UserError, match=r"win: the finished adapter could not be put in place \(Access is denied\); "
                                        r"it is saved whole in .*\.win\.tmp-\d+, and the next run of the name 'win'"):
        train(make_cfg(env, **common), should_stop=_stop_from_call(10))
    # its checkpoints could not be renamed away: both stay (nor could the last go into place at all)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    saved = [p for p in (env / "loras").glob(".win.tmp-*") if paths.finished_save(p)]
    assert len(saved) == 1 and not (out / "adapter_model.safetensors").exists()
    monkeypatch.setattr(training, "replace_folder", real)
    with pytest.raises(UserError, match="already exists"):  # any run of the name: the adapter goes in first
        train(make_cfg(env, **common))
    assert paths.finished_save(out) and not saved[0].exists() and not list(out.glob("checkpoint-*"))


@pytest.mark.parametrize("held", ["adapter", "new"])
def test_a_replaced_adapter_that_cannot_be_moved_keeps_the_users_notes_in_it(env, monkeypatch, held):
    """--overwrite, the old folder (or the new one) held open past the retries: the user's notes, moved into
    the new adapter for the swap, go back into the folder as it was, not into the hidden .NAME.tmp-PID."""
    from extensions.dialogue_lora import paths

    name = f"kept-{held}"
    out = env / "loras" / name
    train(make_cfg(env, lora_name=name, max_steps=1, val_ratio=0.0))
    (out / "notes.txt").write_text("my notes", encoding="utf-8")
    real = training.replace_folder

    def refused(src, dst):
        if (src == out and held == "adapter") or (src.name.startswith(f".{name}.tmp-") and held == "new"):
            raise PermissionError(13, "Access is denied", str(src))
        real(src, dst)

    monkeypatch.setattr(training, "replace_folder", refused)
    with pytest.raises(UserError, match=f"{name}: the finished adapter could not be put in place"):
        train(make_cfg(env, lora_name=name, max_steps=2, val_ratio=0.0, overwrite=True))
    assert (out / "notes.txt").read_text(encoding="utf-8") == "my notes" and paths.finished_save(out)
    saved = list((env / "loras").glob(f".{name}.tmp-*"))
    assert len(saved) == 1 and not (saved[0] / "notes.txt").exists() and not list((env / "loras").glob(f".{name}.old-*"))
    monkeypatch.setattr(training, "replace_folder", real)
    with pytest.raises(UserError, match="already exists"):  # the next run puts the new one in, the notes with it
        train(make_cfg(env, lora_name=name, max_steps=1, val_ratio=0.0))
    assert (out / "notes.txt").read_text(encoding="utf-8") == "my notes" and not saved[0].exists()
    assert json.loads((out / training.PARAMS_FILE).read_text(encoding="utf-8"))["max_steps"] == 2


def test_training_on_alpaca_samples_records_their_instruction_for_chat(env):
    alpaca = env / "alpaca.json"
    alpaca.write_text(json.dumps([{"instruction": "Continue the dialogue as Bob.", **r} for r in bob_records(8, 1)]))
    logs = []
    train(make_cfg(env, lora_name="al", dataset_name=str(alpaca), max_steps=1, val_ratio=0.0),
          on_progress=lambda e: logs.append(e.get("message", "")) if e["event"] == "log" else None)
    # one shared instruction: recorded for chat, nothing to warn about
    assert not any(m.startswith("alpaca samples") for m in logs)
    params = json.loads((env / "loras" / "al" / "training_parameters.json").read_text())
    assert params["instruction"] == "Continue the dialogue as {name}."
    mixed = env / "mixed.json"
    mixed.write_text(json.dumps([{"instruction": f"Line {i} as Bob.", **r} for i, r in enumerate(bob_records(8, 1))]))
    train(make_cfg(env, lora_name="mx", dataset_name=str(mixed), max_steps=1, val_ratio=0.0),
          on_progress=lambda e: logs.append(e.get("message", "")) if e["event"] == "log" else None)
    assert any(m.startswith("samples with different instruction lines or system messages") for m in logs)
    assert json.loads((env / "loras" / "mx" / "training_parameters.json").read_text())["instruction"] is None
    logs.clear()
    train(make_cfg(env, lora_name="ro", max_steps=1, val_ratio=0.0),
          on_progress=lambda e: logs.append(e.get("message", "")) if e["event"] == "log" else None)
    assert not any(m.startswith(("alpaca samples", "no sample ends")) for m in logs)
    # a general alpaca dataset (no one's cue before the reply): trained, and said to be no character
    general = env / "general.json"
    general.write_text(json.dumps([{"instruction": "Say hello.", "input": "", "output": "Hello!"}] * 4))
    train(make_cfg(env, lora_name="gen", dataset_name=str(general), max_steps=1, val_ratio=0.0),
          on_progress=lambda e: logs.append(e.get("message", "")) if e["event"] == "log" else None)
    assert any(m.startswith("no sample ends its prompt with a character's cue") for m in logs)
    assert json.loads((env / "loras" / "gen" / "training_parameters.json").read_text())["characters"] == []
    logs.clear()  # with --name: the cue chat will give it, said; not that the samples name their characters
    train(make_cfg(env, lora_name="gen-bob", dataset_name=str(general), max_steps=1, val_ratio=0.0, name="Bob"),
          on_progress=lambda e: logs.append(e.get("message", "")) if e["event"] in ("log", "note") else None)
    assert any(m.endswith("not to speak as a character; chat.py and the tab cue Bob (--name), which it never "
                          "answered to") for m in logs), logs
    assert not any("cues no sample" in m for m in logs)
    one = env / "one.json"  # one sample at the default --val_ratio: trained on, no split, and said
    one.write_text(json.dumps(bob_records(1, 1)))
    logs.clear()
    train(make_cfg(env, lora_name="one", dataset_name=str(one), max_steps=1),
          on_progress=lambda e: logs.append(e.get("message", "")) if e["event"] == "log" else None)
    assert any(m.startswith("1 sample: too few to hold one out at --val_ratio 0.05") for m in logs)
    assert json.loads((env / "loras" / "one" / "training_parameters.json").read_text())["heldout_file"] is None
    copies = env / "copies.json"  # ten copies of one sample (`--keep_duplicates`): none can be held out apart
    copies.write_text(json.dumps([dict(bob_records(1, 1)[0], source=f"x.txt:{i}") for i in range(10)]))
    logs.clear()
    train(make_cfg(env, lora_name="allcopies", dataset_name=str(copies), max_steps=1, val_ratio=0.1),
          on_progress=lambda e: logs.append(e.get("message", "")) if e["event"] == "log" else None)
    assert ("10 samples, all copies of one: too few to hold one out apart from what is trained on at --val_ratio "
            "0.1; no held-out loss, and evaluation will need -d") in logs
    assert not any(" held out for the held-out loss" in m for m in logs)
    logs.clear()  # a split: how many of the samples the first line counted are held out, and where they go
    train(make_cfg(env, lora_name="split", max_steps=1, val_ratio=0.25),
          on_progress=lambda e: logs.append(e.get("message", "")) if e["event"] == "log" else None)
    held = json.loads((env / "loras" / "split" / "heldout.json").read_text())
    total = len(json.loads(Path(make_cfg(env).dataset_name).read_text()))
    assert (f"{len(held)} of the {total} samples held out for the held-out loss (--val_ratio 0.25; heldout.json "
            "for evaluation)") in logs, logs


def test_a_fractional_lora_alpha_is_kept(env):
    assert make_cfg(env, lora_alpha=16.5).alpha == 16.5 and make_cfg(env, lora_alpha=16.0).alpha == 16
    train(make_cfg(env, lora_name="frac", lora_alpha=16.5, max_steps=1, val_ratio=0.0))
    assert json.loads((env / "loras" / "frac" / "adapter_config.json").read_text())["lora_alpha"] == 16.5


def test_a_checkpoint_can_be_chatted_with_and_evaluated_on_given_samples(env):
    from extensions.dialogue_lora.evaluation import EvalConfig, resolve_heldout
    from extensions.dialogue_lora.generation import check_adapter_base, read_training_parameters

    stopped = train(make_cfg(env, lora_name="ck", max_steps=6, val_ratio=0.25), should_stop=_stop_from_call(3))
    ckpt = stopped.checkpoint
    params = read_training_parameters(ckpt)
    assert params["characters"] == ["Bob"] and params["checkpoint"] and params["heldout_file"] is None
    check_adapter_base(ckpt, env / "models" / "tiny")  # its recorded base: refused only on another model
    with pytest.raises(UserError, match=r"is a checkpoint: the held-out split is saved with the finished adapter; "
                                        r"pass the samples to score with -d"):
        resolve_heldout(EvalConfig(model_name="tiny", lora_name=str(ckpt)), ckpt, params)
    assert read_training_parameters(env / "loras" / "nothing-here") == {}


def test_a_pipe_as_the_dataset_is_named_as_one(env):
    from extensions.dialogue_lora.evaluation import EvalConfig, resolve_heldout

    fifo = env / "pipe.json"
    os.mkfifo(fifo)
    with pytest.raises(UserError, match=r"dataset .*pipe\.json' is not a regular file \(a pipe or a device\): save the "
                                        r"samples to a file first \(--dataset_name\)"):
        check(make_cfg(env, dataset_name=str(fifo)))
    with pytest.raises(UserError, match=r"held-out file .*pipe\.json' is not a regular file"):
        resolve_heldout(EvalConfig(model_name="tiny", lora_name="x", dataset=str(fifo)), env, {})


def test_a_changed_rank_says_the_alpha_followed_it():
    from extensions.dialogue_lora.training import _resume_mismatch

    before = {"method": "lora", "lora_rank": 16, "lora_alpha": 32, "learning_rate": 1e-3, "samples_sha256": "a",
              "dataset_sha256": "b"}
    why = _resume_mismatch(Path("loras/x/checkpoint-7"), before, dict(before, lora_rank=8, lora_alpha=16))
    assert "--lora_rank was 16, now 8; --lora_alpha was 32, now 16 (twice --lora_rank when not given)" in why
    why = _resume_mismatch(Path("loras/x/checkpoint-7"), before, dict(before, lora_alpha=24))  # given: as it is
    assert why.endswith("--lora_alpha was 32, now 24. Resume with its settings, or train anew with --overwrite")


def test_memory_running_out_is_one_line_on_the_cpu_too(env, monkeypatch):
    """torch's CPU allocator raises a plain RuntimeError, not OutOfMemoryError: it was a traceback."""
    from extensions.dialogue_lora import training

    cpu_oom = RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
                           "memory: you tried to allocate 40000000000000 bytes. Error code 12")

    def fail(error):
        def raising(*args, **kwargs):
            raise error
        return raising

    monkeypatch.setattr(training, "_train", fail(cpu_oom))
    with pytest.raises(UserError, match="out of memory on cpu: try --load_in_4bit, a smaller --batch_size"):
        train(make_cfg(env, lora_name="oom", max_steps=1, device="cpu"))
    monkeypatch.setattr(training, "_train", fail(RuntimeError("a bug, not memory")))
    with pytest.raises(RuntimeError, match="a bug, not memory"):  # a bug keeps its traceback
        train(make_cfg(env, lora_name="oom", max_steps=1, device="cpu"))
    from transformers import AutoModelForCausalLM

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", fail(cpu_oom))
    with pytest.raises(UserError, match="out of memory loading .*tiny: try --load_in_4bit"):
        modeling.load_base(env / "models" / "tiny", device="cpu")


def test_a_model_stored_in_4_bits_trains_as_a_quantised_one(env, monkeypatch):
    """An unsloth-style -bnb-4bit upload (its config says quantization_config): it loads quantised without
    --load_in_4bit, so it is trained as one: on a CPU in fp32 compute, as --load_in_4bit would be."""
    pytest.importorskip("bitsandbytes")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    out = env / "models" / "tiny-bnb-4bit"
    if not out.exists():
        q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
        AutoModelForCausalLM.from_pretrained(env / "models" / "tiny", quantization_config=q,
                                             device_map={"": "cpu"}).save_pretrained(out)
        AutoTokenizer.from_pretrained(env / "models" / "tiny").save_pretrained(out)
    assert modeling.stored_quantization(out) == "bitsandbytes 4-bit"
    assert modeling.stored_quantization(env / "models" / "tiny") is None
    monkeypatch.setattr(modeling, "cpu_has_bf16", lambda: True)  # a CPU that would train a plain model in bf16
    result = train(make_cfg(env, model_name="tiny-bnb-4bit", lora_name="stored4", max_steps=2, val_ratio=0))
    params = json.loads((result.output_dir / "training_parameters.json").read_text())
    assert result.step == 2 and params["dtype"] == "float32" and params["load_in_4bit"] is False


def test_memory_running_out_while_measuring_the_held_out_loss_is_a_note(env, monkeypatch):
    """The held-out batches group the longest samples, and the last measurement comes just before the final
    save: a figure is not worth the run. It goes on, and the adapter is saved."""
    import torch

    from extensions.dialogue_lora import batching

    real = batching.loss_sum
    modes = []  # the model's mode at each training step's forward

    def loss_sum(model, *args, **kwargs):
        if not torch.is_grad_enabled():  # the held-out measurements
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        modes.append(model.training)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(batching, "loss_sum", loss_sum)
    events = []
    # 96 training samples in batches of 8: the epoch's measurement after step 12, two steps more after it
    result = train(make_cfg(env, lora_name="evaloom", max_steps=14, val_ratio=0.2), on_progress=events.append)
    assert not result.stopped and result.step == 14 and result.eval_loss is None and result.base_eval_loss is None
    assert (result.output_dir / "adapter_model.safetensors").is_file()
    notes = [e["message"] for e in events if e.get("message")]
    assert "the base model's held-out loss was not measured at step 0: out of memory (the run goes on; a smaller " \
           "--batch_size measures it)" in notes
    assert "the held-out loss was not measured at step 12: out of memory (the run goes on; a smaller --batch_size " \
           "measures it)" in notes
    assert not [e for e in events if e["event"] == "eval"]
    assert json.loads((result.output_dir / "training_log.json").read_text())["evals"] == []
    assert modes == [True] * 14  # a failed measurement leaves the model training, not in eval mode


def test_a_run_moved_between_fp16_and_bf16_cards_resumes_with_a_note(env):
    """The card picks the half precision (fp16 on a T4, bf16 from Ampere on; older versions recorded bf16
    on a T4): --precision cannot give the other, so a checkpoint moved between them would never resume."""
    from extensions.dialogue_lora.training import _half_precision_change, _resume_mismatch

    ckpt = Path("loras/x/checkpoint-7")
    before = {"method": "lora", "lora_rank": 16, "dtype": "bfloat16", "samples_sha256": "a"}
    assert _resume_mismatch(ckpt, before, dict(before, dtype="float16")) is None
    assert _half_precision_change(before, dict(before, dtype="float16")) == (
        "the run was trained in bfloat16 and goes on in float16, this card's half precision: the losses may "
        "differ slightly from an uninterrupted run's")
    assert _half_precision_change(before, before) is None
    # fp32 is a choice (--precision fp32), and is asked for again
    assert "--precision gave float32, now bfloat16" in _resume_mismatch(ckpt, dict(before, dtype="float32"), before)
    assert "--precision gave float16, now float32" in _resume_mismatch(ckpt, dict(before, dtype="float16"),
                                                                       dict(before, dtype="float32"))


def test_memory_running_out_mid_run_keeps_the_steps_trained(env, monkeypatch):
    """Out of memory at hour three (a long batch, another program taking the card): the steps trained so
    far are saved as a checkpoint, which --resume continues once memory is freed."""
    import torch

    from extensions.dialogue_lora import batching

    small = env / "oom.json"
    small.write_text(json.dumps(bob_records(40, 3)))
    common = dict(dataset_name=str(small), batch_size=4, epochs=2, val_ratio=0, seed=7, save_minutes=0)
    real = batching.loss_sum
    calls = {"n": 0}

    def loss_sum(*args, **kwargs):  # one call per step (no --grad_accum): the 6th step's runs out
        calls["n"] += 1
        if calls["n"] == 6:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*args, **kwargs)

    monkeypatch.setattr(batching, "loss_sum", loss_sum)
    with pytest.raises(UserError) as e:
        train(make_cfg(env, lora_name="oom", **common))
    checkpoint = env / "loras" / "oom" / "checkpoint-5"
    assert str(e.value).startswith(f"out of memory on cpu at step 6: the 5 steps trained are saved in {checkpoint} "
                                   "(an adapter you can use already)")
    assert "go on with --resume, or train anew (--overwrite) with --load_in_4bit, a smaller --batch_size" in str(e.value)
    assert (checkpoint / "adapter_model.safetensors").is_file()
    # again at once, from that checkpoint: it is the one named, not saved again
    calls["n"] = 5
    with pytest.raises(UserError, match="at step 6: the 5 steps trained are saved in .*checkpoint-5 "):
        train(make_cfg(env, lora_name="oom", resume=True, **common))
    monkeypatch.setattr(batching, "loss_sum", real)
    done = train(make_cfg(env, lora_name="oom", resume=True, **common))
    assert not done.stopped and done.step == 20 and (env / "loras" / "oom" / "adapter_model.safetensors").is_file()
    # with nothing trained yet there is nothing to keep: the advice alone, as before
    calls["n"] = 5  # the first step's call is the one that runs out
    monkeypatch.setattr(batching, "loss_sum", loss_sum)
    with pytest.raises(UserError, match=r"^out of memory on cpu: try --load_in_4bit"):
        train(make_cfg(env, lora_name="oom0", **common))
    assert not (env / "loras" / "oom0").exists()


def test_the_long_phases_before_the_first_step_are_said_on_big_datasets(env, monkeypatch):
    """Hundreds of thousands of samples take minutes to tokenize and to score on the base: a line as each
    starts (nothing was said between loading the weights and the base's held-out loss)."""
    events = []
    monkeypatch.setattr(training, "SAID_FROM", 10)
    train(make_cfg(env, lora_name="said", val_ratio=0.4, max_steps=1, overwrite=True), on_progress=events.append)
    logs = [e.get("message") or "" for e in events if e.get("event") == "log"]
    n = len(train.__globals__["load_records"](str(env / "bob.json")))
    assert f"tokenizing {n:,} samples ..." in logs
    said = [m for m in logs if m.startswith("measuring the base model's held-out loss on ")]
    assert len(said) == 1 and said[0].endswith(" samples before training ...")
    order = [e.get("message") or e["event"] for e in events]
    assert order.index(said[0]) < order.index("eval")  # said before the figure, not after it


def test_out_of_memory_advice_leaves_out_what_the_run_does_already(tmp_path):
    import torch

    from extensions.dialogue_lora.training import _memory_advice

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert _memory_advice(TrainConfig(), cpu) == ("--load_in_4bit, a smaller --batch_size or --cutoff_len (with "
                                                  "--grad_accum to keep the effective batch), or --gradient_checkpointing on")
    # a 4-bit run on a GPU (checkpointing on by default there): the batch and the cutoff are what is left
    assert _memory_advice(TrainConfig(load_in_4bit=True), cuda) == (
        "a smaller --batch_size or --cutoff_len (with --grad_accum to keep the effective batch)")
    assert _memory_advice(TrainConfig(method="prompt_tuning", gradient_checkpointing="off"), cuda).startswith(
        "fewer --num_virtual_tokens, --load_in_4bit, ")
    stored = tmp_path / "llama-bnb-4bit"  # a -bnb-4bit upload
    stored.mkdir()
    (stored / "config.json").write_text(json.dumps({"quantization_config": {"quant_method": "bitsandbytes",
                                                                            "load_in_4bit": True}}))
    assert "--load_in_4bit" not in _memory_advice(TrainConfig(), cpu, stored)


def test_a_linked_adapter_folder_is_refused_before_training(env, tmp_path):
    """The final save swaps folders by renames: a link would be replaced by a folder, and from another disk
    the user's files could not follow (the finished adapter was left in a hidden folder)."""
    target = tmp_path / "elsewhere" / "bob"
    target.mkdir(parents=True)
    (target / "notes.txt").write_text("mine")
    link = env / "loras" / "linked"
    link.parent.mkdir(exist_ok=True)
    link.symlink_to(target, target_is_directory=True)
    for kw in ({}, {"overwrite": True}):
        with pytest.raises(UserError, match=r"linked is a symbolic link to .*elsewhere/bob: train into that folder "
                                            r"itself \(--lora_dir .*elsewhere --lora_name bob\)"):
            train(make_cfg(env, lora_name="linked", max_steps=1, **kw))
    assert link.is_symlink() and (target / "notes.txt").read_text() == "mine"


def test_a_checkpoint_every_save_minutes(env):
    """A long epoch is covered: a kill, a crash or a full disk at the final save loses at most --save_minutes
    (a one-epoch run had no checkpoint at all, a review found)."""
    def run(name, minutes):
        saves = []
        train(make_cfg(env, lora_name=name, max_steps=4, val_ratio=0.0, save_minutes=minutes),
              on_progress=lambda e: saves.append(e["step"]) if e.get("event") == "save" else None)
        return saves

    assert run("timed", 1e-9) == [1, 2, 3]  # due at every step here; after the last, the adapter is saved
    assert run("untimed", 0) == []
    with pytest.raises(UserError, match="--save_minutes must be a number of minutes, 0 or more"):
        make_cfg(env, save_minutes=-1)


def test_a_disk_too_full_for_the_saves_is_refused_before_training(env, monkeypatch):
    from extensions.dialogue_lora import training

    steps = []
    monkeypatch.setattr(training, "free_bytes", lambda folder: 5 << 20)
    with pytest.raises(UserError, match=r"5 MB free, and this run's checkpoint and adapter need about \d+ MB"):
        train(make_cfg(env, lora_name="nospace", max_steps=2, val_ratio=0.0),
              on_progress=lambda e: steps.append(e) if e.get("event") == "step" else None)
    assert steps == [] and not (env / "loras" / "nospace").exists()


def test_a_bare_dataset_name_is_found_with_its_extension(tmp_path, monkeypatch):
    from extensions.dialogue_lora.training import resolve_dataset

    datasets = tmp_path / "datasets"
    datasets.mkdir()
    (datasets / "bobds.json").write_text("[]")
    (tmp_path / "processed_dataset.jsonl").write_text("")
    monkeypatch.chdir(tmp_path)
    assert resolve_dataset("bobds", datasets) == (datasets / "bobds.json").resolve()
    assert resolve_dataset("processed_dataset", datasets) == (tmp_path / "processed_dataset.jsonl").resolve()
    with pytest.raises(UserError, match="dataset 'nope' not found"):
        resolve_dataset("nope", datasets)
    # the same name in both places: the one taken as before, the other named for a note
    from extensions.dialogue_lora.training import other_dataset

    (tmp_path / "bobds.json").write_text("[]")
    assert other_dataset("bobds", datasets, resolve_dataset("bobds", datasets)) == (tmp_path / "bobds.json").resolve()
    assert resolve_dataset("bobds.json", datasets) == (tmp_path / "bobds.json").resolve()  # a file name: here first
    assert other_dataset("bobds.json", datasets, (tmp_path / "bobds.json").resolve()) == (datasets / "bobds.json").resolve()
    assert other_dataset("processed_dataset", datasets, (tmp_path / "processed_dataset.jsonl").resolve()) is None


def test_the_seed_scripts_default_model_is_said_to_be_the_default(env):
    with pytest.raises(UserError, match=r"model 'pygmalion-6b' \(the default: pick one with -m/--model_name\) not found"):
        check(make_cfg(env, model_name="pygmalion-6b"))


def test_an_adapter_still_in_its_first_training_is_said_to_be_training(tmp_path):
    loras = tmp_path / "loras"
    loras.mkdir()
    with pytest.raises(UserError, match="adapter 'lk' not found"):
        resolve_adapter("lk", loras)
    (loras / ".lk.lock.txt").write_text(str(os.getppid()))  # a killed run's file, its pid another process's now
    with pytest.raises(UserError, match="adapter 'lk' not found"):
        resolve_adapter("lk", loras)
    with lock_held_elsewhere(loras / ".lk.lock.txt") as pid:
        with pytest.raises(UserError, match=rf"adapter 'lk' is being trained \(process {pid}\) and has no saved adapter yet"):
            resolve_adapter("lk", loras)
        (loras / "lk" / "checkpoint-3").mkdir(parents=True)  # its first checkpoints: still training, not unfinished
        with pytest.raises(UserError, match=rf"adapter 'lk' is being trained \(process {pid}\)"):
            resolve_adapter("lk", loras)
    # a lock its process left behind says nothing: the checkpoints are an unfinished run's
    with pytest.raises(UserError, match="lk holds the checkpoints of an unfinished run.*--resume"):
        resolve_adapter("lk", loras)


def test_the_card_counts_the_held_out_samples_as_heldout_json_holds_them(env):
    """Some held-out replies longer than the cutoff: heldout.json keeps them (evaluation scores what fits),
    and the card said `held out: 12` of a file of 14."""
    records = bob_records(30, 5)
    for r in records[::3]:
        r["output"] = " ".join(["arr matey"] * 80)  # far past --cutoff_len 64
    data = env / "long.json"
    data.write_text(json.dumps(records))
    result = train(make_cfg(env, dataset_name=str(data), lora_name="card", cutoff_len=64, val_ratio=0.4, max_steps=2))
    out = env / "loras" / "card"
    held = json.loads((out / "heldout.json").read_text())
    params = json.loads((out / "training_parameters.json").read_text())
    assert params["n_heldout"] == len(held) > result.n_val > 0
    card = (out / "README.md").read_text()
    assert (f"held out: {len(held)} (`heldout.json`, {result.n_val} of them scored (the rest longer than the "
            "cutoff))") in card


def test_a_resume_without_a_length_goes_on_to_the_runs_own(env, capsys):
    """`lora_finetune.py ... --resume` without the -e the run was started with: the default (3 epochs) would
    quietly cut a 30-epoch run short and reshape its schedule; the run's own length is taken, and said."""
    import lora_finetune

    small = env / "length.json"
    small.write_text(json.dumps(bob_records(40, 3)))
    common = dict(dataset_name=str(small), batch_size=4, val_ratio=0.1, seed=7)
    stop = train(make_cfg(env, lora_name="len", epochs=2, **common), should_stop=_stop_from_call(2))
    assert stop.stopped and stop.step == 1
    capsys.readouterr()
    args = ["-d", str(small), "-m", "tiny", "--model_dir", str(env / "models"), "--lora_dir", str(env / "loras"),
            "-l", "len", "-b", "4", "--val_ratio", "0.1", "--seed", "7", "--learning_rate", str(TINY_LR),
            "--lora_dropout", "0"]
    assert lora_finetune.main([*args, "--resume"]) == 0
    captured = capsys.readouterr()
    # which files the names stood for, first
    assert captured.out.startswith(f"training {env / 'loras' / 'len'} on {env / 'models' / 'tiny'}, with 40 samples "
                                   f"from {small} (device: cpu)\n")
    err = captured.err
    assert ("note: --resume goes on to the run's own length (--epochs 2); give --epochs or --max_steps to change "
            "it") in err
    params = json.loads((env / "loras" / "len" / "training_parameters.json").read_text())
    assert params["epochs"] == 2 and params["steps"] == 18  # 2 epochs of 9 steps, not 3 of them
    assert "note: --resume goes on with the run's own" not in err  # every setting given again, as it was
    # only the adapter and --resume: the rest is the run's (the defaults were refused as changed, one by one)
    stop = train(make_cfg(env, lora_name="bare", epochs=2, **common), should_stop=_stop_from_call(2))
    # -m given: the model is looked for where this command says (the run's folder may be where it was)
    mine = TrainConfig(model_name="tiny", lora_name="bare", resume=True, lora_dir=str(env / "loras"))
    mine = lora_finetune._with_runs_settings(mine, {"model_name", "lora_name", "lora_dir", "resume"}, False,
                                             lora_finetune._stopped_run(mine))
    assert (mine.model_name, mine.model_dir, mine.seed) == ("tiny", None, 7)
    capsys.readouterr()
    assert lora_finetune.main(["-l", "bare", "--lora_dir", str(env / "loras"), "--resume"]) == 0
    err = capsys.readouterr().err
    assert (f"note: --resume goes on with the run's own --model_name tiny, --model_dir {env / 'models'}, "
            f"--dataset_name {small}, --learning_rate {TINY_LR:g}, --val_ratio 0.1, --seed 7; give a flag to change "
            "one") in err, err
    bare = json.loads((env / "loras" / "bare" / "training_parameters.json").read_text())
    assert bare["steps"] == 18 and bare["seed"] == 7 and bare["val_ratio"] == 0.1 and bare["batch_size"] == 4
    # a prompt-tuning run: its method is the run's, so its own flags are taken; what the method sets anyway
    # (its learning rate, no packing) is not said as the run's choice
    pt = dict(common, method="prompt_tuning", learning_rate=None)
    train(make_cfg(env, lora_name="pt", epochs=2, **pt), should_stop=_stop_from_call(2))
    capsys.readouterr()
    assert lora_finetune.main(["-l", "pt", "--lora_dir", str(env / "loras"), "--resume", "--num_virtual_tokens",
                               str(TrainConfig().num_virtual_tokens)]) == 0
    err = capsys.readouterr().err
    assert "--method prompt_tuning, --val_ratio 0.1, --seed 7; give a flag to change one" in err, err
    assert "--learning_rate" not in err and "packing" not in err
    # a length given is the user's: the schedule is fitted to it, and that is said
    stop = train(make_cfg(env, lora_name="len2", epochs=2, **common), should_stop=_stop_from_call(2))
    events = []
    train(make_cfg(env, lora_name="len2", epochs=3, resume=True, **common), on_progress=events.append)
    assert ("the run was planned for 18 steps and these settings train 27: the learning-rate schedule is fitted to "
            "27 from here on") in [e.get("message") for e in events]


def test_a_resumed_run_stopped_again_says_to_run_the_same_command(env, capsys, monkeypatch):
    """Its command has --resume already: not "the same command plus --resume"."""
    import lora_finetune

    small = env / "again.json"
    small.write_text(json.dumps(bob_records(40, 3)))
    common = dict(dataset_name=str(small), batch_size=4, val_ratio=0.0, epochs=2)
    assert train(make_cfg(env, lora_name="again", **common), should_stop=_stop_from_call(2)).step == 1
    monkeypatch.setattr(lora_finetune._Stopper, "__call__", lambda self, calls=[]: calls.append(1) or len(calls) >= 2)
    args = ["-d", str(small), "-m", "tiny", "--model_dir", str(env / "models"), "--lora_dir", str(env / "loras"),
            "-l", "again", "-b", "4", "--val_ratio", "0", "-e", "2", "--learning_rate", str(TINY_LR),
            "--lora_dropout", "0", "--resume"]
    capsys.readouterr()
    assert lora_finetune.main(args) == 0
    out = capsys.readouterr().out
    assert f"stopped at step 2/20; checkpoint saved in {env / 'loras' / 'again' / 'checkpoint-2'}; continue with the " \
           "same command\n" in out


def test_a_progress_file_that_cannot_be_written_does_not_end_the_run(tmp_path, capsys):
    """A full disk under the progress file (the tab's view of a run, or --progress_file) loses the view,
    not the run: the write fails quietly once said, and the run goes on to save."""
    import errno

    import lora_finetune
    from extensions.dialogue_lora.worker import ProgressWriter

    class Full:
        def write(self, *text):
            raise OSError(errno.ENOSPC, "No space left on device")

        flush = close = write

    reporter = lora_finetune._Reporter(str(tmp_path / "progress.jsonl"))
    reporter.file.close()
    reporter.file = Full()
    reporter({"event": "log", "message": "one"})
    reporter({"event": "log", "message": "two"})
    reporter.close()
    captured = capsys.readouterr()
    assert captured.err.count("cannot write (No space left on device); training goes on without it") == 1
    assert "two" in captured.out
    writer = ProgressWriter(tmp_path)  # a folder: open() fails as a full disk's write would
    writer({"event": "step"})
    writer({"event": "step"})
    assert writer.failed and capsys.readouterr().err.count("the run goes on") == 1


def test_the_dataset_hash_is_of_the_file_as_it_was_read(env, tmp_path):
    """A file prepared again while the model loaded was recorded (dataset_sha256) as the one trained on;
    evaluation reads that hash to tell the training file."""
    from extensions.dialogue_lora.fileio import file_sha256
    from extensions.dialogue_lora.training import _settings

    data = tmp_path / "d.json"
    data.write_text(json.dumps(bob_records(20, 0)), encoding="utf-8")
    read = file_sha256(data)
    cfg = make_cfg(env, dataset_name=str(data), lora_name="hashed")
    plan = check(cfg)
    data.write_text(json.dumps(bob_records(30, 1)), encoding="utf-8")  # prepared again, for someone else
    assert _settings(cfg, plan)["dataset_sha256"] == read != file_sha256(data)
