"""Golden tests of tokenisation, loss masking and cutting, with a character-level mock tokenizer.

One character is one token (its code point), BOS is 1, so every expected input_ids/labels list can be
checked by eye against the text.
"""
from __future__ import annotations

import pytest

from extensions.dialogue_lora import batching, encoding

BOS = 1
X = encoding.IGNORE_INDEX


class CharTokenizer:
    """One token per character (its code point); BOS prepended when add_special_tokens."""

    def __init__(self, bos: int | None = BOS, eos_after: bool = False):
        self.bos = bos
        self.eos_after = eos_after

    def encode(self, text, add_special_tokens=True):
        ids = [ord(c) for c in text]
        if add_special_tokens:
            ids = ([self.bos] if self.bos is not None else []) + ids + ([2] if self.eos_after else [])
        return ids

    def decode(self, ids):
        return "".join(" " if i == 0x2581 else chr(i) for i in ids if i > 2)


class SentencePieceLike(CharTokenizer):
    """Adds a word boundary token (0x2581, '▁') before every encoded text, as Llama-2's tokenizer does."""

    def encode(self, text, add_special_tokens=True):
        ids = [0x2581] + [0x2581 if c == " " else ord(c) for c in text]
        return ([self.bos] if add_special_tokens else []) + ids


def c(text: str) -> list[int]:
    return [ord(ch) for ch in text]


def test_rounds_sample_golden():
    rec = {"input": "A: hi\nB:", "output": "yo"}
    enc = encoding.encode_record(rec, CharTokenizer(), cutoff_len=64)
    assert enc["input_ids"] == [BOS] + c("A: hi\nB:") + c(" yo\n")
    assert enc["labels"] == [X] + [X] * 8 + c(" yo\n")


def test_trainable_newline_and_leading_space():
    enc = encoding.encode_segments([("B:", False), (" ok\n", True)], CharTokenizer(), 64)
    assert enc == {"input_ids": [BOS, 66, 58, 32, 111, 107, 10], "labels": [X, X, X, 32, 111, 107, 10]}


def test_multi_turn_trains_every_assistant_turn():
    segs = [("U: a\nB:", False), (" x\n", True), ("U: b\nB:", False), (" y\n", True)]
    enc = encoding.encode_segments(segs, CharTokenizer(), 64)
    assert enc["input_ids"] == [BOS] + c("U: a\nB:") + c(" x\n") + c("U: b\nB:") + c(" y\n")
    assert enc["labels"] == [X] + [X] * 7 + c(" x\n") + [X] * 7 + c(" y\n")


def test_sharegpt_record_golden():
    rec = {"name": "B", "conversations": [{"from": "human", "value": "U: a"}, {"from": "gpt", "value": "x"}]}
    enc = encoding.encode_record(rec, CharTokenizer(), 64)
    assert enc["input_ids"] == [BOS] + c("U: a\nB:") + c(" x\n")
    assert enc["labels"] == [X] * 8 + c(" x\n")


def test_cut_oldest_context_keeps_bos_and_completion():
    rec = {"input": "A: hi\nA: hello\nB:", "output": "yo"}  # 1 + 17 + 4 = 22 tokens
    enc = encoding.encode_record(rec, CharTokenizer(), cutoff_len=16)
    assert enc["input_ids"] == [BOS] + c("A: hello\nB:") + c(" yo\n")  # the oldest line goes, whole
    assert enc["labels"] == [X] * 12 + c(" yo\n")
    # a line that does not fit whole goes whole: no "lo" left of "A: hello"
    enc = encoding.encode_record(rec, CharTokenizer(), cutoff_len=10)
    assert enc["input_ids"] == [BOS] + c("B:") + c(" yo\n")


def test_cut_alpaca_sample_keeps_its_instruction_line():
    """Chat puts the instruction first in every prompt: a sample cut to fit keeps it and loses the oldest
    dialogue instead (it was the first thing cut)."""
    rec = {"instruction": "Be B.", "input": "A: hello there\nB:", "output": "yo"}  # 1 + 6 + 17 + 4 = 28 tokens
    enc = encoding.encode_record(rec, CharTokenizer(), cutoff_len=20)
    assert enc["input_ids"] == [BOS] + c("Be B.\n") + c("B:") + c(" yo\n")
    assert enc["labels"] == [X] * 9 + c(" yo\n")
    # when the instruction and the reply alone do not fit, the reply wins (the instruction is cut as before)
    enc = encoding.encode_record(rec, CharTokenizer(), cutoff_len=8)
    assert enc["input_ids"] == [BOS] + c("B:") + c(" yo\n")


def test_cut_multi_turn_sample_keeps_its_system_message():
    """Another tool's system message is chat's instruction (prompt.instruction_of): kept as alpaca's is."""
    rec = {"messages": [{"role": "system", "content": "Be B."}, {"role": "user", "content": "A: hello there"},
                        {"role": "assistant", "content": "yo"}], "name": "B"}
    enc = encoding.encode_record(rec, CharTokenizer(), cutoff_len=20)
    assert enc["input_ids"] == [BOS] + c("Be B.\n") + c("B:") + c(" yo\n")


def test_special_token_spellings_in_the_text_stay_text(tiny_model_dir):
    """`</s>` typed in a chat about models is text: read as EOS, it taught the model to end its reply there."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    rec = {"input": "Alice: <s> and </s>?\nBob:", "output": "Type </s> to end it."}
    enc = encoding.encode_record(rec, tok, 256)
    assert enc["input_ids"].count(tok.bos_token_id) == 1 and tok.eos_token_id not in enc["input_ids"]
    assert tok.decode([t for t in enc["labels"] if t != X]) == " Type </s> to end it.\n"


def test_cut_drops_older_completions_before_the_last():
    segs = [("U:", False), (" x\n", True), ("B:", False), (" y\n", True)]
    enc = encoding.encode_segments(segs, CharTokenizer(), 7)
    assert enc["input_ids"] == [BOS] + c("B:") + c(" y\n")
    assert enc["labels"] == [X, X, X] + c(" y\n")  # no end of an older completion left as a target
    # a sample cut inside an older reply (sharegpt at cutoff 256): the reply's line goes whole
    segs = [("U: a\nB:", False), (" arr by the town\n", True), ("U: b\nB:", False), (" y\n", True)]
    enc = encoding.encode_segments(segs, CharTokenizer(), 20)
    assert enc["input_ids"] == [BOS] + c("U: b\nB:") + c(" y\n")
    assert enc["labels"] == [X] * 8 + c(" y\n")


def test_completion_that_does_not_fit_is_dropped():
    rec = {"input": "A:", "output": "a long reply"}
    assert encoding.encode_record(rec, CharTokenizer(), cutoff_len=10) is None
    # the reply without its cue is not trained either (it would follow BOS with nobody's turn)
    assert encoding.encode_record(rec, CharTokenizer(), cutoff_len=15) is None
    # exactly fitting: BOS + the cue + 14 completion tokens
    assert encoding.encode_record(rec, CharTokenizer(), cutoff_len=17)["input_ids"] == [BOS] + c("A: a long reply\n")


def test_encode_records_counts_dropped():
    recs = [{"input": "A:", "output": "ok"}, {"input": "A:", "output": "x" * 50}, {"input": "A:", "output": "no"}]
    out, dropped = encoding.encode_records(recs, CharTokenizer(), 16)
    assert dropped == [1] and len(out) == 2


def test_stored_samples_are_compact_and_collate_as_lists_do():
    """A run keeps its encoded samples as 32-bit arrays (8 bytes a token, not lists of ints' ~37); each
    collation gives the same tensors from them as from lists."""
    from array import array

    import torch

    recs = [{"input": "A: hi" + " x" * k + "\nB:", "output": "reply " * (k % 3 + 1)} for k in range(1, 9)]
    stored, dropped = encoding.encode_records(recs, CharTokenizer(), 48)
    lists = [encoding.encode_record(r, CharTokenizer(), 48) for r in recs]
    assert not dropped and [{k: list(v) for k, v in s.items()} for s in stored] == lists
    tokens = sum(len(s["input_ids"]) for s in stored)
    assert all(isinstance(v, array) and v.itemsize == 4 for s in stored for v in s.values())
    for kind in ({"packing": True, "capacity": 64}, {"packing": True, "capacity": None, "flat": True, "multiple": 8},
                 {"packing": False, "capacity": None, "multiple": 8}):
        a, b = batching.collate(stored, 0, **kind), batching.collate(lists, 0, **kind)
        assert a.keys() == b.keys() and a["n_tokens"] == b["n_tokens"] == tokens
        for key, t in a.items():
            if isinstance(t, torch.Tensor):
                assert torch.equal(t, b[key]) and t.dtype == b[key].dtype, (kind, key)


def test_collate_flat_bounds_positions_and_padding():
    a = {"input_ids": [1, 5, 6], "labels": [X, 5, 6]}
    b = {"input_ids": [1, 7], "labels": [X, 7]}
    batch = batching.collate_flat([a, b], pad_id=0, multiple=4)
    assert batch["input_ids"].tolist() == [[1, 5, 6, 1, 7, 0, 0, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 1, 2]]
    assert batch["targets"].tolist() == [[5, 6, X, 7, X, X, X, X]]
    assert batch["cu_seqlens"].tolist() == [0, 3, 5, 8] and str(batch["cu_seqlens"].dtype) == "torch.int32"
    assert batch["n_tokens"] == 5


def test_no_bos_tokenizer():
    enc = encoding.encode_segments([("B:", False), (" k\n", True)], CharTokenizer(bos=None), 64)
    assert enc == {"input_ids": c("B: k\n"), "labels": [X, X] + c(" k\n")}


def test_appended_eos_is_not_put_mid_sample():
    enc = encoding.encode_segments([("B:", False), (" k\n", True)], CharTokenizer(eos_after=True), 64)
    assert enc["input_ids"] == [BOS] + c("B: k\n")


def test_sentencepiece_dummy_prefix_not_doubled():
    tok = SentencePieceLike()
    enc = encoding.encode_segments([("B:", False), (" k\n", True)], tok, 64)
    # "▁B:" then the reply as in running text: "▁k\n", not "▁▁k\n"
    assert enc["input_ids"] == [BOS, 0x2581, 66, 58, 0x2581, 107, 10]
    assert enc["labels"] == [X, X, X, X, 0x2581, 107, 10]


def test_sentencepiece_later_turns_start_their_lines_as_in_running_text():
    """A multi-turn sample's later prompt pieces start a line: `\nAlice` in running text has no word boundary
    before `Alice`, which a dummy prefix put there ("▁Alice") when the piece was encoded on its own."""
    tok = SentencePieceLike()
    segs = [("U: a\nB:", False), (" x\n", True), ("U: b\nB:", False), (" y\n", True)]
    enc = encoding.encode_segments(segs, tok, 64)
    running = tok.encode("U: a\nB: x\nU: b\nB: y\n", add_special_tokens=True)  # the whole text at once
    assert enc["input_ids"] == running
    assert enc["labels"] == [X] * 9 + [0x2581, 120, 10] + [X] * 7 + [0x2581, 121, 10]  # BOS and "▁U: a\nB:"


def test_bad_cutoff():
    with pytest.raises(ValueError):
        encoding.encode_segments([("a", False), ("b", True)], CharTokenizer(), 0)


def test_real_tokenizer_boundary(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    rec = {"input": "Alice: Where is the boat?\nBob:", "output": "Arr, matey!"}
    enc = encoding.encode_record(rec, tok, 256)
    n_prompt = len(tok.encode(rec["input"]))
    assert enc["input_ids"][:n_prompt] == tok.encode(rec["input"])  # the prompt exactly as at inference
    assert all(l == X for l in enc["labels"][:n_prompt])
    assert tok.decode([t for t in enc["labels"] if t != X]) == " Arr, matey!\n"


# ------------------------------------------------------------------------------------- batching


def test_shifted_targets_stay_inside_a_sample():
    a = {"input_ids": [1, 5, 6], "labels": [X, 5, 6]}
    b = {"input_ids": [1, 7, 8, 9], "labels": [X, X, 8, 9]}
    batch = batching.collate_packed([a, b], pad_id=0, capacity=None)
    assert batch["input_ids"].tolist() == [[1, 5, 6, 1, 7, 8, 9]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1, 2, 3]]
    assert batch["targets"].tolist() == [[5, 6, X, X, 8, 9, X]]
    m = batch["attention_mask"][0, 0].int().tolist()
    assert m[4] == [0, 0, 0, 1, 1, 0, 0]  # sample b's 2nd token sees only b
    assert m[2] == [1, 1, 1, 0, 0, 0, 0]


def test_pack_rows_capacity_and_padding():
    s = [{"input_ids": [1] * n, "labels": [X] + [3] * (n - 1)} for n in (4, 3, 5)]
    assert batching.pack_rows([4, 3, 5], 8) == [[2, 1], [0]]  # first-fit decreasing
    batch = batching.collate_packed(s, pad_id=0, capacity=8)
    assert batch["input_ids"].shape == (2, 8)
    assert batch["position_ids"][0].tolist() == [0, 1, 2, 3, 4, 0, 1, 2]
    assert batch["input_ids"][1].tolist() == [1] * 4 + [0] * 4
    m = batch["attention_mask"][1, 0]
    assert m[5].int().tolist() == [0, 0, 0, 0, 0, 1, 0, 0]  # padding attends only to itself (no NaN)
    assert batch["targets"][1, 4:].tolist() == [X] * 4


def test_epoch_batches_reproducible():
    a = batching.epoch_batches(10, 3, seed=1, epoch=0)
    assert a == batching.epoch_batches(10, 3, seed=1, epoch=0)
    assert a != batching.epoch_batches(10, 3, seed=1, epoch=1)
    assert sorted(i for b in a for i in b) == list(range(10)) and [len(b) for b in a] == [3, 3, 3, 1]
