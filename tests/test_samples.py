"""Turns -> samples: context window, cue, rules (empty, actions, duplicates), the four formats, and that the
chat formats load through a real chat template the way the webui and Axolotl load them."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from extensions.dialogue_lora import prompt
from extensions.dialogue_lora.dialogue import BREAK, Turn, parse_lines
from extensions.dialogue_lora.prepare import PrepareConfig, prepare
from hypothesis import given
from hypothesis import strategies as st

from extensions.dialogue_lora.samples import SeenKeys, Tally, iter_samples, to_record

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "dataset.txt"

BOB_SAMPLES = [
    {
        "input": "Alice: Hi Bob! Are you coming to the party tonight?\nBob:",
        "output": "I don't know, Alice. I have a lot of work.",
        "name": "Bob",
        "source": "dataset.txt:2",
    },
    {
        "input": "Alice: Hi Bob! Are you coming to the party tonight?\n"
        "Bob: I don't know, Alice. I have a lot of work.\n"
        "Alice: Oh come on, it's Friday!\n"
        "The rain starts to fall outside.\n"
        "Bob:",
        "output": "Boo! (laughs) Got you.",
        "name": "Bob",
        "source": "dataset.txt:5",
    },
    {
        "input": "Alice: Oh come on, it's Friday!\n"
        "The rain starts to fall outside.\n"
        "Bob: Boo! (laughs) Got you.\n"
        "Alice: You scared me! *throws a pillow at him*\n"
        "Alice: So... are you coming or not?\n"
        "Bob:",
        "output": "*sighs* Fine, I'll be there at 8:30.",
        "name": "Bob",
        "source": "dataset.txt:9",
    },
    {
        "input": "Bob: Boo! (laughs) Got you.\n"
        "Alice: You scared me! *throws a pillow at him*\n"
        "Alice: So... are you coming or not?\n"
        "Bob: *sighs* Fine, I'll be there at 8:30.\n"
        "Alice: Great! See you there.\n"
        "Bob:",
        "output": "See you, Alice.",
        "name": "Bob",
        "source": "dataset.txt:11",
    },
]


def run(tmp_path, text=None, **kw):
    src = EXAMPLE
    if text is not None:
        src = tmp_path / "in.txt"
        src.write_text(text, encoding="utf-8")
    out = tmp_path / kw.pop("out", "out.json")
    kw.setdefault("names", ["Bob"])
    report = prepare(PrepareConfig(txtfilename=str(src), jsonfilename=str(out), **kw))
    return json.loads(out.read_text(encoding="utf-8")) if out.suffix == ".json" else out, report


def samples_of(text, names=("Bob",), **kw):
    return list(iter_samples(parse_lines(text.splitlines(True), "t.txt"), names, **kw))


def test_example_gives_the_four_bob_samples(tmp_path):
    records, report = run(tmp_path)
    assert records == BOB_SAMPLES
    assert report.samples_written == 4
    assert report.speakers == {"Alice": 5, "Bob": 4}
    assert report.dropped == {"empty": 1}
    assert report.repaired_lines == 1  # donâ€™t -> don't
    assert "!" not in [r["output"] for r in records]  # the seed's lstrip bug turned Bob:Boo! into "!"


def test_input_is_exactly_prompt_build_prompt():
    text = EXAMPLE.read_text(encoding="utf-8")
    all_turns = [t for t in parse_lines(text.splitlines(True), "dataset.txt") if t.text]
    for rounds in (0, 1, 3, 5, 50):
        for s in samples_of(text, rounds=rounds):
            i = next(k for k, t in enumerate(all_turns) if t.source.endswith(":" + s.source.split(":")[1]))
            context = [(t.speaker, t.text) for t in all_turns[max(0, i - rounds) : i]] if rounds else []
            assert s.input == prompt.build_prompt(context, s.name)
            assert s.context == "\n".join(prompt.format_turn(sp, tx) for sp, tx in context)


def test_no_context_is_just_the_cue():
    assert [s.input for s in samples_of("Bob: Hi.\nAlice: Hey.\nBob: Bye.\n", rounds=0)] == ["Bob:", "Bob:"]
    assert [s.input for s in samples_of("Bob: Hi.\n")] == ["Bob:"]


def test_rounds_limits_context():
    got = samples_of("A: 1\nB: 2\nA: 3\nBob: 4\n", rounds=2)
    assert got[0].input == "B: 2\nA: 3\nBob:"


def test_names_case_insensitive_cue_cased_as_in_data():
    got = samples_of("Alice: Hi\nBOB: Hey\n", names=["bob"])
    assert [(s.input, s.output, s.name) for s in got] == [("Alice: Hi\nBOB:", "Hey", "BOB")]


def test_several_characters_and_all():
    text = "Alice: a\nBob: b\nCarol: c\n"
    assert [s.name for s in samples_of(text, names=["Alice", "carol"])] == ["Alice", "Carol"]
    assert [s.name for s in samples_of(text, names=["*"])] == ["Alice", "Bob", "Carol"]


def test_all_leaves_out_the_accounts_an_export_says_are_gone(tmp_path):
    """Telegram's "Deleted Account", Discord's "Deleted User" (numbered or not): many people under one
    name, no character. `*` leaves them out, and says so; asked for by name, they are trained."""
    text = "Alice: a\nDeleted Account: b\nDeleted User 5a3b2c1d: c\nDeleted User: d\nBob: e\nDeleted Accountant: f\n"
    assert [s.name for s in samples_of(text, names=["*"])] == ["Alice", "Bob", "Deleted Accountant"]
    got = samples_of(text, names=["deleted account"])
    assert [(s.input.splitlines()[-1], s.output) for s in got] == [("Deleted Account:", "b")]
    data = tmp_path / "chat.txt"
    data.write_text(text, encoding="utf-8")
    report = prepare(PrepareConfig(names=["*"], txtfilename=str(data), jsonfilename=str(tmp_path / "out.json")))
    assert ("'*' leaves out Deleted Account, Deleted User, Deleted User 5a3b2c1d: the export's name for accounts that "
            "are gone, many people under one name (-n \"Deleted Account\" to train them anyway)") in report.notes


def test_empty_turns_are_neither_samples_nor_context():
    tally = Tally()
    got = samples_of("Alice: Hi\nBob:\nBob: Hello\n", tally=tally)
    assert [(s.input, s.output) for s in got] == [("Alice: Hi\nBob:", "Hello")]
    assert tally.dropped["empty"] == 1


def test_narration_is_context_never_a_target():
    got = samples_of("The door opens.\nBob: Who's there?\n", names=["*"])
    assert [(s.input, s.output) for s in got] == [("The door opens.\nBob:", "Who's there?")]


def test_strip_actions_outputs_only():
    tally = Tally()
    text = "Bob: *waves* Hi (smiles) there.\nAlice: Hey.\nBob: (sighs)\nBob: *nods* ...\nBob: Bye.\n"
    got = samples_of(text, strip_actions=True, tally=tally)
    assert [(s.input, s.output) for s in got] == [
        ("Bob:", "Hi there."),
        ("Bob: *waves* Hi (smiles) there.\nAlice: Hey.\nBob: (sighs)\nBob: *nods* ...\nBob:", "Bye."),
    ]
    assert tally.dropped["action_only"] == 2  # `...` alone is not a reply either


def test_actions_kept_by_default():
    assert samples_of("Bob: *waves* Hi.\n")[0].output == "*waves* Hi."


def test_duplicates_removed_and_counted():
    text = "Alice: Hi\nBob: Hello\n\nAlice: Hi\nBob: Hello\n"
    tally = Tally()
    got = list(iter_samples(
        [Turn("Alice", "Hi"), Turn("Bob", "Hello"), BREAK, Turn("Alice", "Hi"), Turn("Bob", "Hello")],
        ["Bob"], tally=tally,
    ))
    assert len(got) == 1 and tally.dropped["duplicate"] == 1
    # same output after a different context is not a duplicate
    assert len(samples_of(text)) == 2
    keep = list(iter_samples([Turn("Bob", "x"), BREAK, Turn("Bob", "x")], ["Bob"], dedupe=False))
    assert len(keep) == 2


_NEAR = st.sampled_from([0, 1, -1, 2**48 - 1, 2**48, -(2**63), 2**63 - 1])


@given(st.lists(st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(-40, 40), _NEAR), max_size=300))
def test_seen_keys_is_an_exact_set(keys):
    """The compact duplicate set answers as a Python set would (bucket edges, 0, both signs)."""
    seen, ref = SeenKeys(), set()
    for k in keys:
        assert seen.add(k) == (k not in ref)
        ref.add(k)
    assert len(seen) == len(ref)


def test_seen_keys_ignores_a_match_across_two_keys():
    """Keys are 6-byte slices of one bytes string: a match straddling two of them is not a key."""
    seen = SeenKeys()
    assert seen.add(int.from_bytes(bytes([1, 2, 3, 4, 5, 6]), "little"))
    assert seen.add(int.from_bytes(bytes([7, 8, 9, 10, 11, 12]), "little"))
    straddler = int.from_bytes(bytes([4, 5, 6, 7, 8, 9]), "little")  # same bucket (top 16 bits 0)
    assert seen.add(straddler) and not seen.add(straddler) and len(seen) == 3


def test_break_resets_context():
    got = list(iter_samples([Turn("Alice", "a"), BREAK, Turn("Bob", "b")], ["Bob"]))
    assert got[0].input == "Bob:"


# ------------------------------------------------------------------------------------------ formats

SAMPLE = samples_of("Alice: Coming tonight?\nThe bell rings.\nBob: Wouldn't miss it.\n")[0]
LONE = samples_of("Bob: Hi.\n")[0]


def test_rounds_record():
    assert to_record(SAMPLE, "rounds") == {
        "input": "Alice: Coming tonight?\nThe bell rings.\nBob:",
        "output": "Wouldn't miss it.",
        "name": "Bob",
        "source": "t.txt:3",
    }


def test_alpaca_record():
    rec = to_record(SAMPLE, "alpaca", "Continue the dialogue as {name}.")
    assert rec == {
        "instruction": "Continue the dialogue as Bob.",
        "input": "Alice: Coming tonight?\nThe bell rings.\nBob:",
        "output": "Wouldn't miss it.",
        "name": "Bob",
        "source": "t.txt:3",
    }
    assert prompt.record_segments(rec) == [
        ("Continue the dialogue as Bob.\nAlice: Coming tonight?\nThe bell rings.\nBob:", False),
        (" Wouldn't miss it.\n", True),
    ]


def test_sharegpt_record():
    assert to_record(SAMPLE, "sharegpt") == {
        "conversations": [
            {"from": "human", "value": "Alice: Coming tonight?\nThe bell rings."},
            {"from": "gpt", "value": "Wouldn't miss it."},
        ],
        "name": "Bob",
        "source": "t.txt:3",
    }
    assert to_record(LONE, "sharegpt")["conversations"] == [
        {"from": "human", "value": ""},
        {"from": "gpt", "value": "Hi."},
    ]


def test_messages_record():
    assert to_record(SAMPLE, "messages") == {
        "messages": [
            {"role": "user", "content": "Alice: Coming tonight?\nThe bell rings."},
            {"role": "assistant", "content": "Wouldn't miss it."},
        ],
        "name": "Bob",
        "source": "t.txt:3",
    }


@pytest.mark.parametrize("fmt", ["rounds", "sharegpt", "messages"])
@pytest.mark.parametrize("sample", [SAMPLE, LONE], ids=["context", "no-context"])
def test_every_format_trains_exactly_the_rounds_prompt(fmt, sample):
    expected = [(sample.input, False), (prompt.completion(sample.output), True)]
    assert prompt.record_segments(to_record(sample, fmt)) == expected


@pytest.mark.parametrize("fmt", ["rounds", "alpaca", "sharegpt", "messages"])
def test_formats_written_as_json_and_jsonl(tmp_path, fmt):
    records, _ = run(tmp_path, format=fmt)
    assert len(records) == 4
    prompt.validate_records(records)
    path, _ = run(tmp_path, format=fmt, out="out.jsonl")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(x) for x in lines] == records


def test_instruction_is_configurable(tmp_path):
    records, _ = run(tmp_path, format="alpaca", instruction="Reply in character as {name}, briefly.")
    assert {r["instruction"] for r in records} == {"Reply in character as Bob, briefly."}


# ------------------------------------------------------------------------------------------ chat templates

# ChatML-like, and a strict one that (like Llama 2 / Mistral / Gemma templates) insists on alternation.
CHATML = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
STRICT = (
    "{% for m in messages %}"
    "{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]{% else %} {{ m['content'] }}</s>{% endif %}"
    "{% endfor %}"
)


@pytest.fixture(scope="module")
def tokenizer():
    from extensions.dialogue_lora.tiny import train_tokenizer

    return train_tokenizer([EXAMPLE.read_text(encoding="utf-8")], vocab_size=300)


def _as_messages(rec: dict) -> list[dict]:
    """What text-generation-webui's Chat Dataset loader and Axolotl's default role map do with a row."""
    if "messages" in rec:
        return rec["messages"]
    roles = {"human": "user", "gpt": "assistant"}
    return [{"role": roles.get(t["from"], t["from"]), "content": t["value"]} for t in rec["conversations"]]


@pytest.mark.parametrize("fmt", ["sharegpt", "messages"])
@pytest.mark.parametrize("template", [CHATML, STRICT], ids=["chatml", "strict-alternation"])
def test_chat_formats_load_through_a_chat_template(tmp_path, tokenizer, fmt, template):
    """Like the webui's tokenize_conversation: the assistant's tokens follow the generation-prompt prefix."""
    tokenizer.chat_template = template
    records, _ = run(tmp_path, "Bob: Hi.\nAlice: Hello, Bob.\nBob: How are you?\n", format=fmt)
    assert len(records) == 2 and _as_messages(records[0])[0]["content"] == ""  # no context: empty user turn
    for rec in records:
        messages = _as_messages(rec)
        assert [m["role"] for m in messages] == ["user", "assistant"]
        full = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False)
        head = tokenizer.apply_chat_template(
            messages[:1], tokenize=True, return_dict=False, add_generation_prompt=True
        )
        assert isinstance(full, list) and all(isinstance(i, int) for i in full) and len(full) > len(head)
        if template == CHATML:
            assert full[: len(head)] == head  # the prefix property the webui's label masking relies on
        text = tokenizer.apply_chat_template(messages, tokenize=False)
        assert messages[1]["content"] in text and text.count(messages[1]["content"]) == 1
    # and the project's own reader sees the same prompt as the rounds format
    assert prompt.record_segments(records[1])[0][0] == "Bob: Hi.\nAlice: Hello, Bob.\nBob:"


def test_an_assistant_first_conversation_would_break_strict_templates(tokenizer):
    """Why a sample with no context keeps an (empty) user message instead of omitting it."""
    from jinja2.exceptions import TemplateError

    tokenizer.chat_template = STRICT
    with pytest.raises(TemplateError):
        tokenizer.apply_chat_template([{"role": "assistant", "content": "Hi."}], tokenize=False)
