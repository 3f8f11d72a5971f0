"""generation.py: loading base + adapter (and refusing the wrong ones), the newline stop, batching, the
adapter toggle, and the chat session's handling of lines."""
from __future__ import annotations

import json
import shutil

import pytest

from extensions.dialogue_lora import prompt as P
from extensions.dialogue_lora.errors import UserError
from extensions.dialogue_lora.generation import (
    ChatSession,
    NewlineStop,
    adapter_disabled,
    check_adapter_base,
    generate_replies,
    generate_reply,
    load_for_generation,
    prompt_ids,
    read_training_parameters,
)

from lora_helpers import bob_records, one_thread, shared_adapter


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def adapter(tmp_path_factory, tiny_model_dir):
    return shared_adapter(tmp_path_factory, tiny_model_dir)


@pytest.fixture(scope="module")
def loaded(tiny_model_dir, adapter):
    return load_for_generation(tiny_model_dir, adapter, device="cpu")


@pytest.fixture(scope="module")
def other_model_dir(tmp_path_factory):
    """A second tiny model with other dimensions: adapters of the first must not load on it."""
    from extensions.dialogue_lora.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("other") / "other-llama", ["Alice: hi\nBob: hello\n"] * 20,
                            vocab_size=300, hidden_size=32, num_layers=1)


# ------------------------------------------------------------------------------------------- loading


def test_missing_adapter_lists_the_adapters_found(webui_root, adapter):
    shutil.copytree(adapter, webui_root / "user_data" / "loras" / "bob")
    with pytest.raises(UserError) as e:
        load_for_generation("tiny-llama", "bobb")
    msg = str(e.value)
    assert "'bobb' not found" in msg and "did you mean 'bob'" in msg and "bob" in msg.split("adapters in")[1]


def test_adapter_on_another_base_is_refused_before_loading(adapter, other_model_dir):
    with pytest.raises(UserError) as e:
        check_adapter_base(adapter, other_model_dir)
    msg = str(e.value)
    assert "\n" not in msg
    assert "hidden_size: adapter trained on 64, this model has 32" in msg
    assert "'other-llama'" in msg and "trained on 'tiny-llama'" in msg


def test_adapter_without_fingerprint_still_gets_a_one_line_error(adapter, other_model_dir, tmp_path):
    """An adapter trained by another tool (no training_parameters.json, base path unknown here): PEFT's shape
    error at load time becomes the same kind of message."""
    bare = tmp_path / "bare"
    shutil.copytree(adapter, bare)
    (bare / "training_parameters.json").unlink()
    cfg = json.loads((bare / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "/nowhere/some-base"
    (bare / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError) as e:
        load_for_generation(other_model_dir, bare, device="cpu")
    msg = str(e.value)
    assert "does not fit model 'other-llama'" in msg and "some-base" in msg and "\n" not in msg


def test_an_adapter_without_its_weights_file_says_so(adapter, tiny_model_dir, tmp_path):
    """PEFT then looked for the folder on the model hub: 'Repo id must be in the form ...'."""
    bare = tmp_path / "x"
    shutil.copytree(adapter, bare)
    (bare / "adapter_model.safetensors").unlink()
    with pytest.raises(UserError, match=r"^adapter folder .*x has no adapter_model.safetensors \(its weights\): copy"):
        load_for_generation(tiny_model_dir, bare, device="cpu")


def test_a_damaged_adapter_names_its_damaged_file(adapter, tiny_model_dir, tmp_path):
    copy = tmp_path / "cut"
    shutil.copytree(adapter, copy)
    weights = copy / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:3000])  # a copy cut short
    with pytest.raises(UserError, match=r"^could not read the adapter's weights, .*cut/adapter_model\.safetensors "
                                        r"\(damaged or incomplete\?\)"):
        load_for_generation(tiny_model_dir, copy, device="cpu")
    shutil.copy(adapter / "adapter_model.safetensors", weights)
    (copy / "adapter_config.json").write_text('{"peft_type": ', encoding="utf-8")
    with pytest.raises(UserError, match=r"^.*cut/adapter_config\.json: unreadable \(Expecting value"):
        load_for_generation(tiny_model_dir, copy, device="cpu")


def test_a_damaged_settings_file_is_an_error_not_no_settings(adapter, tmp_path):
    copy = tmp_path / "bob"
    shutil.copytree(adapter, copy)
    (copy / "training_parameters.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(UserError, match=r"training_parameters.json: unreadable \(a JSON list, not the object"):
        read_training_parameters(copy)


def test_loaded_model_knows_its_names(loaded, adapter):
    assert loaded.model_name == "tiny-llama" and loaded.adapter_name == adapter.name
    assert read_training_parameters(loaded.adapter_path)["heldout_file"] == "heldout.json"


# ---------------------------------------------------------------------------------------- generation


def test_newline_stop_fires_whatever_token_holds_the_newline(tiny_model_dir):
    """The criterion decodes the generated tokens: a token that merges "\\n" with other characters counts."""
    import torch

    from extensions.dialogue_lora.modeling import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    for text in (" Arr, matey!\nAlice: what", " ok?\n\nBob:", "\n"):
        ids = tok.encode(text, add_special_tokens=False)
        newline_at = next(i for i in range(1, len(ids) + 1) if "\n" in tok.decode(ids[:i]))
        prompt = [5, 6, 7]
        for n in range(1, len(ids) + 1):
            stop = NewlineStop(tok, len(prompt), 1)
            done = stop(torch.tensor([prompt + ids[:n]]))
            assert bool(done[0]) == (n >= newline_at), (text, n)


def test_trained_adapter_replies_end_at_the_newline(loaded):
    reply, stopped = generate_reply(loaded.model, loaded.tokenizer, "Alice: Where is the boat and the bread?\nBob:",
                                    max_new_tokens=40)
    assert stopped and "\n" not in reply
    assert reply.startswith("Arr") and reply.endswith("matey!")


def test_base_model_runs_out_of_tokens_without_a_newline(loaded):
    with adapter_disabled(loaded.model) as base:
        reply, stopped = generate_reply(base, loaded.tokenizer, "Alice: Where is the boat?\nBob:", max_new_tokens=8)
    assert "\n" not in reply
    assert not stopped  # random weights: no newline within 8 tokens (checked: the base never writes one here)


def test_batched_generation_matches_one_by_one(loaded):
    """Left padding: prompts of different lengths in one batch give the same greedy replies as alone."""
    prompts = [
        "Bob:",
        "Alice: Where is the boat and the bread?\nBob:",
        "Alice: Hi.\nBob: Arr.\nAlice: Where is the river and the road tonight, Bob?\nBob:",
    ]
    batched = generate_replies(loaded.model, loaded.tokenizer, prompts, max_new_tokens=16, batch_size=3)
    alone = [generate_reply(loaded.model, loaded.tokenizer, p, max_new_tokens=16) for p in prompts]
    assert batched == alone
    # the random base too: the adapter's replies barely hang on the prompt, so padding seen would go unnoticed
    with adapter_disabled(loaded.model) as base:
        batched = generate_replies(base, loaded.tokenizer, prompts, max_new_tokens=16, batch_size=3)
        alone = [generate_reply(base, loaded.tokenizer, p, max_new_tokens=16) for p in prompts]
    assert batched == alone and len(set(alone)) == len(alone)


def test_adapter_toggle_gives_the_base_model(loaded, tiny_model_dir):
    import torch

    from extensions.dialogue_lora.modeling import load_base

    base, tok = load_base(tiny_model_dir, device="cpu")
    ids = torch.tensor([prompt_ids(tok, "Alice: Where is the boat?\nBob:")])
    with torch.no_grad():
        plain = base(input_ids=ids).logits
        with_adapter = loaded.model(input_ids=ids).logits
        with adapter_disabled(loaded.model) as m:
            toggled = m(input_ids=ids).logits
        again = loaded.model(input_ids=ids).logits
    assert torch.allclose(toggled, plain, atol=1e-5)
    assert not torch.allclose(with_adapter, plain, atol=1e-3)
    assert torch.allclose(again, with_adapter)  # switched back on after the block


def test_prompt_ids_are_the_training_prefix(loaded):
    """The prompt is tokenised exactly as training tokenised the context before the completion."""
    from extensions.dialogue_lora.encoding import encode_record

    for rec in bob_records(3, 7) + [{"conversations": [
        {"from": "human", "value": "Alice: Where is the boat?"}, {"from": "gpt", "value": "Arr, by the river."},
        {"from": "human", "value": "Alice: And the bread?"}, {"from": "gpt", "value": "Gone, matey!"}]}]:
        enc = encode_record(rec, loaded.tokenizer, 512, name="Bob")
        segs = P.record_segments(rec, "Bob")
        last = max(i for i, (_, t) in enumerate(segs) if t)
        ids = prompt_ids(loaded.tokenizer, [t for t, _ in segs[:last]])
        assert enc["input_ids"][: len(ids)] == ids
        if "input" in rec:  # single turn: nothing before the completion is scored
            assert all(label == -100 for label in enc["labels"][: len(ids)])
        assert enc["labels"][len(ids)] != -100


def test_long_prompts_keep_their_newest_whole_lines(loaded):
    tok = loaded.tokenizer
    text = "Alice: " + "word " * 200 + "\nCarol: Where is the boat?\nBob:"
    ids = prompt_ids(tok, text, max_tokens=30)
    assert len(ids) <= 30 and ids[0] == tok.bos_token_id
    assert tok.decode(ids[1:]) == "Carol: Where is the boat?\nBob:"  # no fragment of Alice's line
    # a last line longer than the room is cut mid-line: something must go
    ids = prompt_ids(tok, "Bob: " + "word " * 200, max_tokens=20)
    assert len(ids) == 20 and tok.decode(ids[1:]).strip().endswith("word")


def test_a_long_chat_keeps_its_instruction_as_training_does(loaded):
    """A chat prompt cut to the model's context loses its oldest dialogue and keeps the adapter's
    instruction, as a cut training sample keeps it (encoding.encode_segments)."""
    from extensions.dialogue_lora.encoding import encode_record
    from extensions.dialogue_lora.prompt import chat_prompt

    tok = loaded.tokenizer
    history = [("Alice" if i % 2 else "Carol", f"line number {i} goes here ok") for i in range(12)]
    prompt = chat_prompt(history, "Bob", 12, "You are {name}, a grumpy pirate.")
    assert prompt.startswith("You are Bob, a grumpy pirate.\nCarol: line number 0")
    ids = prompt_ids(tok, prompt, max_tokens=70)
    text = tok.decode(ids[1:])
    assert len(ids) <= 70 and text.startswith("You are Bob, a grumpy pirate.\n")
    assert text.endswith("Alice: line number 11 goes here ok\nBob:") and "line number 0 " not in text
    assert text.split("\n")[1].split(":")[0] in ("Alice", "Carol")  # whole lines after the instruction
    # what training keeps of the same sample cut to the same length (the reply's tokens added)
    record = {"instruction": "You are Bob, a grumpy pirate.", "input": str(prompt).split("\n", 1)[1],
              "output": "Arr."}
    reply = len(tok("Arr.", add_special_tokens=False)["input_ids"]) + 1
    trained = encode_record(record, tok, 70 + reply)["input_ids"]
    assert tok.decode(trained[1:]).startswith(text.split("\n")[0] + "\n" + text.split("\n")[1])
    # a plain prompt (no instruction) is cut from the top as before; no room for the instruction: cut too
    assert tok.decode(prompt_ids(tok, str(prompt), max_tokens=70)[1:]).split(":")[0] in ("Alice", "Carol")
    tiny = prompt_ids(tok, prompt, max_tokens=5)
    assert len(tiny) <= 5 and "pirate" not in tok.decode(tiny)
    # the instruction is kept only with the whole cue line after it, whatever the room
    pinned = len(prompt_ids(tok, prompt.pinned)) - 1
    for limit in range(pinned - 2, pinned + 8):
        text = tok.decode(prompt_ids(tok, prompt, max_tokens=limit)[1:])
        assert text.endswith("\nBob:") or text == "Bob:" or text.endswith("ok\nBob:"), (limit, text)


def test_evaluation_prompts_a_long_sample_as_training_cut_it(loaded):
    """A held-out sample longer than the cutoff is prompted with what training kept of it: whole old lines
    gone, room left for the reply; a short one with its whole context."""
    from extensions.dialogue_lora.encoding import IGNORE_INDEX, completion_prompts, encode_record

    tok = loaded.tokenizer
    lines = [f"{'Alice' if i % 2 else 'Bob'}: line number {i} goes here ok" for i in range(12)]
    rec = {"input": "\n".join(lines) + "\nBob:", "output": "Arr, by the river."}
    for cutoff in (60, 512):
        enc = encode_record(rec, tok, cutoff)
        start = enc["labels"].index(next(t for t in enc["labels"] if t != IGNORE_INDEX))
        [got] = completion_prompts(rec, tok, cutoff)
        assert got == enc["input_ids"][:start]
        text = tok.decode(got[1:])
        assert text.endswith("\nBob:") and text.split(":", 1)[0] in ("Alice", "Bob")  # starts with a whole line
        if cutoff == 512:
            assert got == prompt_ids(tok, rec["input"])
    assert completion_prompts(rec, tok, 5) == [None]  # the reply alone does not fit
    # a multi-turn sample is cut once, as training cuts it: replies the cut left out have no prompt
    turns = [{"from": "human" if i % 2 == 0 else "gpt", "value": f"line number {i} goes here ok"} for i in range(8)]
    multi = {"conversations": turns, "name": "Bob"}
    enc = encode_record(multi, tok, 60)
    got = completion_prompts(multi, tok, 60)
    starts = [i for i, t in enumerate(enc["labels"]) if t != IGNORE_INDEX and enc["labels"][i - 1] == IGNORE_INDEX]
    assert len(got) == 4 and got[:4 - len(starts)] == [None] * (4 - len(starts)) and len(starts) < 4
    assert got[4 - len(starts):] == [enc["input_ids"][:i] for i in starts]


def test_bad_max_new_tokens(loaded):
    with pytest.raises(UserError, match="max_new_tokens"):
        generate_reply(loaded.model, loaded.tokenizer, "Bob:", max_new_tokens=0)


# --------------------------------------------------------------------------------------------- chat


def _echo():
    seen = []

    def reply_fn(prompt):
        seen.append(prompt)
        return f"reply {len(seen)}\n(ignored)", True

    return seen, reply_fn


def test_chat_session_keeps_the_last_rounds_in_training_format():
    seen, fn = _echo()
    s = ChatSession(["Bob"], "Alice", rounds=2)
    assert s.handle("Hello Bob!", fn) == (["Bob: reply 1"], [])
    s.handle("Where is the boat?", fn)
    assert seen[0] == "Alice: Hello Bob!\nBob:"
    assert seen[1] == P.chat_prompt([("Alice", "Hello Bob!"), ("Bob", "reply 1"),
                                     ("Alice", "Where is the boat?")], "Bob", 2)
    assert seen[1] == "Bob: reply 1\nAlice: Where is the boat?\nBob:"  # 2 turns: the oldest dropped


def test_chat_session_gives_the_users_lines_bare_where_the_samples_named_no_user():
    """An adapter trained on a chat app's sharegpt (`Hi Bob!`, not `Alice: Hi Bob!`) is prompted as it learnt."""
    seen, fn = _echo()
    s = ChatSession(["Bob"], "Alice", rounds=5, user_named=False)
    s.handle("Hello Bob!", fn)
    s.handle("Where is the boat?", fn)
    assert seen[1] == "Hello Bob!\nBob: reply 1\nWhere is the boat?\nBob:"
    assert P.user_turns_named({}) and P.user_turns_named({"user_turns_named": True})
    assert not P.user_turns_named({"user_turns_named": False})


def test_chat_session_leaves_an_empty_reply_out_of_the_conversation():
    seen = []
    s = ChatSession(["Bob"], "Alice", rounds=5)
    assert s.handle("hi", lambda p: (seen.append(p), ("", True))[1]) == (["Bob:"], [])  # shown as it came
    s.handle("again", lambda p: (seen.append(p), ("Yes?", True))[1])
    assert seen[1] == "Alice: hi\nAlice: again\nBob:"  # no `Bob: ` turn, which training never has


def test_chat_session_keeps_one_line_of_a_reply_functions_answer():
    """A reply_fn of one's own may return the raw generation: the reply stops at its newline, as generate_reply's."""
    s = ChatSession(["Bob"], "Alice", rounds=5)
    assert s.handle("hi", lambda p: ("yo\nAlice: second line", True)) == (["Bob: yo"], [])
    assert s.history[-1] == ("Bob", "yo")


def test_chat_session_puts_an_alpaca_adapters_instruction_first():
    seen, fn = _echo()
    s = ChatSession(["Bob"], "Alice", rounds=2, instruction="Continue the dialogue as {name}.")
    s.handle("Hello Bob!", fn)
    assert seen[0] == "Continue the dialogue as Bob.\nAlice: Hello Bob!\nBob:"


def test_chat_session_addresses_several_characters():
    seen, fn = _echo()
    s = ChatSession(["Bob", "Carol"], "Alice", rounds=5)
    assert s.handle("@carol Hi there", fn)[0] == ["Carol: reply 1"]
    assert seen[-1] == "Alice: Hi there\nCarol:"
    assert s.handle("And you?", fn)[0][0].startswith("Bob: ")  # @ addresses one line only
    assert s.handle("@Carol", fn)[0][0].startswith("Carol: ")  # Carol speaks without a user line
    assert seen[-1].endswith("Bob: reply 2\nCarol:")
    assert s.handle("/as Carol", fn) == ([], ["Carol answers from now on"])
    assert s.handle("Well?", fn)[0][0].startswith("Carol: ")
    assert "unknown character" in s.handle("/as Dave", fn)[1][0]
    assert s.handle("/as", fn)[1][0].startswith("/as needs a name: /as NAME; characters: Bob, Carol")
    assert s.handle("@Dave hi", fn)[0][0].startswith("Carol: ")  # not a character: plain text
    assert seen[-1].split("\n")[-2] == "Alice: @Dave hi"
    assert s.handle("", fn) == ([], [])
    # a name of several words, in any case, with a comma or colon after it (only the first word was read)
    royals = ChatSession(["KING RICHARD III", "QUEEN ELIZABETH", "QUEEN"], "You", rounds=5)
    assert royals.handle("@queen elizabeth, hi there", fn)[0][0].startswith("QUEEN ELIZABETH: ")
    assert seen[-1] == "You: hi there\nQUEEN ELIZABETH:"
    assert royals.handle("@QUEEN: and you?", fn)[0][0].startswith("QUEEN: ")
    assert royals.handle("@QUEENS hi", fn)[0][0].startswith("KING RICHARD III: ")  # no name: plain text
    assert ChatSession(["Straße"], "You").addressed("STRASSE, hi") == ("Straße", "hi")  # casefolding lengthens it
    s.handle("/reset", fn)
    assert s.history == []
    s.handle("/quit", fn)
    assert s.done


def test_chat_session_rejects_bad_names():
    with pytest.raises(UserError, match="--name is empty"):
        ChatSession([" ", ""], "Alice")
    with pytest.raises(UserError, match="':'"):
        ChatSession(["Bob:"], "Alice")
    with pytest.raises(UserError, match="--rounds"):
        ChatSession(["Bob"], "Alice", rounds=-1)
    with pytest.raises(UserError, match="--user 'bob' is also a character the model speaks as"):
        ChatSession(["Bob", "Carol"], "bob")


def test_prompt_tuning_adapters_generate_and_toggle(tiny_model_dir):
    """Virtual-token adapters (training's --method prompt_tuning): PEFT ignores position ids for them, so
    prompts go one at a time (left padding would shift positions); the toggle gives the plain base model."""
    import torch
    from peft import PromptTuningConfig, get_peft_model

    from extensions.dialogue_lora.evaluation import completion_nll
    from extensions.dialogue_lora.encoding import encode_record
    from extensions.dialogue_lora.modeling import load_base

    torch.manual_seed(0)
    base, tok = load_base(tiny_model_dir, device="cpu")
    model = get_peft_model(base, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)).eval()
    prompts = ["Bob:", "Alice: Where is the boat and the bread?\nBob:"]
    batched = generate_replies(model, tok, prompts, max_new_tokens=6, batch_size=2)
    assert batched == [generate_reply(model, tok, p, max_new_tokens=6) for p in prompts]
    with adapter_disabled(model) as plain:
        assert plain is model.get_base_model()
    enc = [encode_record(r, tok, 128) for r in bob_records(2, 5)]
    with_virtual = completion_nll(model, enc)
    with adapter_disabled(model) as plain:
        without = completion_nll(plain, enc)
    assert with_virtual[1] == without[1] and with_virtual[0] != pytest.approx(without[0])


def test_an_adapter_that_does_not_fit_in_memory_is_one_line(tmp_path, monkeypatch):
    """The base fitted, its adapter did not: the error says what to do (it was a traceback in the tab)."""
    import torch
    from peft import PeftModel

    from extensions.dialogue_lora.errors import UserError
    from extensions.dialogue_lora.generation import apply_adapter

    (tmp_path / "bob").mkdir()
    (tmp_path / "bob" / "adapter_model.safetensors").write_bytes(b"")
    (tmp_path / "bob" / "adapter_config.json").write_text('{"peft_type": "LORA"}', encoding="utf-8")

    def full(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 64.00 MiB")

    monkeypatch.setattr(PeftModel, "from_pretrained", full)
    with pytest.raises(UserError, match=r"^out of memory applying the adapter bob to the model: try --load_in_4bit"):
        apply_adapter(object(), tmp_path / "bob")


def test_bitsandbytes_8bit_cast_notice_is_said_once(caplog):
    """bitsandbytes' 8-bit layers warn at every product that they cast their input (a thousand lines an
    evaluation, mixed into chat on a terminal): said once."""
    import logging

    from extensions.dialogue_lora.modeling import quiet_known_notices

    quiet_known_notices()
    quiet_known_notices()  # a second load adds no second filter
    log = logging.getLogger("bitsandbytes.autograd._functions")
    (once,) = log.filters
    once.seen.clear()  # an earlier test's 8-bit model may have said it
    with caplog.at_level(logging.WARNING):
        for dtype in ("torch.float32", "torch.float32", "torch.bfloat16"):
            log.warning("MatMul8bitLt: inputs will be cast from %s to float16 during quantization", dtype)
        log.warning("something else")
    assert [r.getMessage() for r in caplog.records] == [
        "MatMul8bitLt: inputs will be cast from torch.float32 to float16 during quantization", "something else"]
