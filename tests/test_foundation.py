"""The shared ground: the prompt format, dataset reading, safe writes, folder resolution, name checks."""
from __future__ import annotations

import importlib
import json
import os
import re

import pytest

from extensions.dialogue_lora import fileio, paths, prompt
from extensions.dialogue_lora.errors import UserError, closest, join_problems, run_cli


# --- prompt.py -------------------------------------------------------------------------------------

def test_build_prompt_golden():
    turns = [("Alice", "Hi  Bob!"), (None, "The door opens."), ("Alice", "Coming\ntonight?")]
    assert prompt.build_prompt(turns, "Bob") == "Alice: Hi Bob!\nThe door opens.\nAlice: Coming tonight?\nBob:"


def test_prompt_with_no_context_is_just_the_cue():
    assert prompt.build_prompt([], "Bob") == "Bob:"


def test_completion_has_leading_space_and_trained_newline():
    assert prompt.completion("Wouldn't miss it.") == " Wouldn't miss it.\n"
    assert prompt.completion("two\nlines") == " two lines\n"


def test_chat_prompt_keeps_last_rounds():
    hist = [("A", "1"), ("B", "2"), ("A", "3")]
    assert prompt.chat_prompt(hist, "B", 2) == "B: 2\nA: 3\nB:"
    assert prompt.chat_prompt(hist, "B", 0) == "B:"


def test_an_alpaca_adapters_instruction_goes_where_training_put_it():
    records = [{"instruction": f"Continue the dialogue as {n}.", "input": inp, "output": "x", "name": n}
               for n, inp in (("Bob", "Alice: Hi\nBob:"), ("Carol", "Carol:"))]
    template = prompt.instruction_template(records)
    assert template == "Continue the dialogue as {name}."
    # the chat prompt is the training prompt of a sample with that context
    trained = prompt.record_segments(records[0])[0][0]
    assert prompt.chat_prompt([("Alice", "Hi")], "Bob", 5, template) == trained == "Continue the dialogue as Bob.\nAlice: Hi\nBob:"
    assert prompt.chat_prompt([], "Bob", 5, None) == "Bob:"
    # no single line to put back: none
    assert prompt.instruction_template(records + [{"instruction": "Reply as {name}.", "input": "Bob:", "output": "y"}]) is None
    assert prompt.instruction_template(records + [{"input": "Bob:", "output": "y"}]) is None
    assert prompt.instruction_template([{"input": "Bob:", "output": "y"}]) is None


def test_another_tools_system_message_is_the_instruction_chat_puts_back():
    """A messages sample's system message is trained before the dialogue: chat puts it there too."""
    records = [{"messages": [{"role": "system", "content": f"You are {n}, a grumpy pirate.\n\nNever break  character."},
                             {"role": "user", "content": "Alice: Hi there!"}, {"role": "assistant", "content": "Arr."}],
                "name": n} for n in ("Bob", "Carol")]
    template = prompt.instruction_template(records)
    assert template == "You are {name}, a grumpy pirate.\nNever break character."
    trained = prompt.record_segments(records[0])[0][0]
    assert prompt.chat_prompt([("Alice", "Hi there!")], "Bob", 5, template) == trained
    assert prompt.context_turns(records) == 1  # the system lines are no turns
    assert prompt.instruction_template(records + [{"messages": records[0]["messages"][1:], "name": "Bob"}]) is None
    # whole words only; the cue of samples that name none; a `{name}` of the text's own cannot be rebuilt
    ann = [{"messages": [{"role": "system", "content": f"You are {n}. Annie is your sister."},
                         {"role": "user", "content": "Alice: Hi"}, {"role": "assistant", "content": "Yo."}], "name": n}
           for n in ("Ann", "Bob")]
    assert prompt.instruction_template(ann) == "You are {name}. Annie is your sister."
    unnamed = [{k: v for k, v in r.items() if k != "name"} for r in records[:1]]
    assert prompt.instruction_template(unnamed, "Bob") == "You are {name}, a grumpy pirate.\nNever break character."
    braces = [{"instruction": "Reply as Bob, in JSON like {name: Bob}.", "input": "Bob:", "output": "{}"}]
    template = prompt.instruction_template(braces)  # `{name:` is not the placeholder: the line comes back whole
    assert prompt.chat_prompt([], "Bob", 5, template) == prompt.record_segments(braces[0])[0][0]
    assert prompt.instruction_template([dict(braces[0], instruction="Use {name} as the key, Bob.")]) is None
    # an input ending after its cue (`Bob:\n`) still names the character
    assert prompt.instruction_template([{"instruction": "Continue as Bob.", "input": "Alice: Hi\nBob:\n", "output": "x"},
                                        {"instruction": "Continue as Bob.", "input": "Bob: ", "output": "y"}]) == (
        "Continue as {name}.")


def test_a_cue_followed_by_a_space_or_newline_is_trained_as_chat_prompts_it():
    """Another tool's `Bob: ` (or `Bob:\n`): the reply follows the cue's colon, as in every chat prompt."""
    for cue in ("Bob: ", "Bob:\n", "Bob:"):
        assert prompt.record_segments({"input": f"Alice: Hi\n{cue}", "output": "Yo."}) == [
            ("Alice: Hi\nBob:", False), (" Yo.\n", True)]
    assert prompt.record_segments({"instruction": "Be Bob.", "input": "Bob: ", "output": "Yo."})[0] == (
        "Be Bob.\nBob:", False)


def test_context_turns_are_the_most_turns_a_reply_follows():
    rounds = [{"input": "Alice: a\nCarol: b\nAlice: c\nBob:", "output": "x"}, {"input": "Bob:", "output": "y"}]
    assert prompt.context_turns(rounds) == 3
    alpaca = [{"instruction": "Continue the dialogue as Bob.", "input": "Alice: a\nBob:", "output": "x"}]
    assert prompt.context_turns(alpaca) == 1  # the instruction line is no turn
    multi = [{"conversations": [{"from": "human", "value": "Alice: a"}, {"from": "gpt", "value": "x"},
                                {"from": "human", "value": "Alice: b"}, {"from": "gpt", "value": "y"}]}]
    assert prompt.context_turns(multi, "Bob") == 3  # a, Bob's x and b before y
    assert prompt.context_turns([{"input": "Bob:", "output": "y"}]) == 0
    assert prompt.context_turns([]) is None


def test_extract_reply_stops_at_newline():
    assert prompt.extract_reply(" Aye, matey!\nAlice: more") == "Aye, matey!"
    assert prompt.extract_reply(" no newline") == "no newline"
    # other line breaks a model may produce end the line too; control characters go (they show as boxes)
    assert prompt.extract_reply(" Hi there\r more\nx") == "Hi there"
    assert prompt.extract_reply("one\x1ctwo") == prompt.extract_reply("one\u2028two") == "one"
    assert prompt.extract_reply("ring\x07 ring\tdone") == "ring ring\tdone" and prompt.extract_reply("\n") == ""


@pytest.mark.parametrize(
    "record, fmt",
    [
        ({"input": "Bob:", "output": "x"}, "rounds"),
        ({"instruction": "i", "input": "", "output": "x"}, "alpaca"),
        ({"conversations": [{"from": "gpt", "value": "x"}]}, "sharegpt"),
        ({"messages": [{"role": "assistant", "content": "x"}]}, "messages"),
    ],
)
def test_detect_format(record, fmt):
    assert prompt.detect_format(record) == fmt


def test_detect_format_unknown_names_keys():
    with pytest.raises(ValueError, match="keys: text"):
        prompt.detect_format({"text": "x"})


def test_all_formats_give_the_same_training_text():
    rounds = {"input": "Alice: Hi\nBob:", "output": "Ahoy!"}
    sharegpt = {"name": "Bob", "conversations": [{"from": "human", "value": "Alice: Hi"}, {"from": "gpt", "value": "Ahoy!"}]}
    messages = {"name": "Bob", "messages": [{"role": "user", "content": "Alice: Hi"}, {"role": "assistant", "content": "Ahoy!"}]}
    expected = [("Alice: Hi\nBob:", False), (" Ahoy!\n", True)]
    for rec in (rounds, sharegpt, messages):
        assert prompt.record_segments(rec) == expected


def test_a_samples_own_name_is_one_line_that_a_cue_can_end():
    """Another tool's `name`: `A: B` cued `A: B:` (read back as A), `B\nX` cued X, and an escape code was
    printed by chat.py as the character's name."""
    rec = {"conversations": [{"from": "human", "value": "Alice: Hi"}, {"from": "gpt", "value": "Ahoy!"}]}
    assert prompt.record_segments(dict(rec, name=" Bob  Smith "))[0] == ("Alice: Hi\nBob Smith:", False)
    assert prompt.record_segments(dict(rec, name=""), "Bob")[0] == ("Alice: Hi\nBob:", False)
    for bad, why in (("A: B", "must not contain ':'"), ("B\nX", "line break or control"),
                     ("Bo\x1b[2Jb", "line break or control"), (5, "'name' is int, expected text")):
        with pytest.raises(ValueError, match=why):
            prompt.record_segments(dict(rec, name=bad))
    with pytest.raises(UserError, match=r"data.json: sample 2: 'name' 'A: B' must not contain ':'"):
        prompt.validate_records([rec, dict(rec, name="A: B")], "data.json")


def test_an_adapters_recorded_name_is_its_default_speaker_only_where_it_was_learnt():
    assert prompt.recorded_name({"name": "Bob", "characters": ["Bob", "Ann"]}) == "Bob"
    assert prompt.recorded_name({"name": "Bob", "characters": ["Ann"]}) is None  # `not learnt: Bob`
    assert prompt.recorded_name({"name": "Bob", "characters": []}) == "Bob"  # no cue in the samples: chat's cue
    assert prompt.recorded_name({"name": "Bob"}) == "Bob"  # an adapter from before characters were recorded
    assert prompt.recorded_name({"characters": ["Ann"]}) is None
    rec = {"conversations": [{"from": "human", "value": "Alice: Hi"}, {"from": "gpt", "value": "Ahoy!"}]}
    assert prompt.needs_name(rec) and prompt.needs_name(dict(rec, name="  "))
    assert not prompt.needs_name(dict(rec, name="Bob")) and not prompt.needs_name({"input": "A: x\nB:", "output": "y"})


def test_other_tools_layouts_are_read_as_they_mean_it():
    """OpenAI's, LLaMA-Factory's and Axolotl's ways of writing a sample: read as such, not trained wrongly."""
    rec = {"system": "You are Bob.", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "Hi Bob!"}], "name": "Alice"},
        {"role": "assistant", "content": "As an AI, I cannot.", "weight": 0},  # marked: not to be learnt
        {"role": "user", "content": "Alice: Please?"},  # already names its speaker: not twice
        {"role": "assistant", "content": "Fine.", "name": "Bob"}]}
    assert prompt.record_segments(rec) == [
        ("You are Bob.\nAlice: Hi Bob!\nAssistant: As an AI, I cannot.\nAlice: Please?\nBob:", False), (" Fine.\n", True)]
    assert prompt.instruction_of(rec) == "You are Bob." and prompt.record_cues(prompt.record_segments(rec)) == ["Bob"]
    assert not prompt.needs_name(rec)  # its reply names its speaker
    # either key pair in either list (a Hugging Face set's conversations in role/content)
    pair = [{"role": "user", "content": "Alice: hi"}, {"role": "assistant", "content": "yo"}]
    swapped = [{"from": "human", "value": "Alice: hi"}, {"from": "gpt", "value": "yo"}]
    for r in ({"conversations": pair}, {"messages": swapped}):
        assert prompt.record_segments(r, "Bob") == [("Alice: hi\nBob:", False), (" yo\n", True)]
    # Windows line ends inside a string; LLaMA-Factory alpaca's system before the instruction
    assert prompt.record_segments({"input": "Alice: hi\r\nBob:", "output": "yo"})[0] == ("Alice: hi\nBob:", False)
    alpaca = {"system": "Sys.", "instruction": "Be Bob.", "input": "Alice: hi\r\nBob:", "output": "yo"}
    assert prompt.record_segments(alpaca)[0] == ("Sys.\nBe Bob.\nAlice: hi\nBob:", False)
    assert prompt.instruction_of(alpaca) == "Sys.\nBe Bob."
    for bad, why in (
            ({"messages": [pair[0], {"role": "assistant", "content": None, "tool_calls": [{}]}]}, "tool call or its result"),
            ({"conversations": [swapped[0], {"from": "function_call", "value": "{}"}]}, "tool call or its result"),
            ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}, pair[1]]}, "type 'image_url': only text"),
            ({"messages": [pair[0], dict(pair[1], weight=0.5)]}, "'weight' is 0.5: 0 .context only. or 1"),
            ({"messages": [pair[0], dict(pair[1], weight=0)]}, "each assistant turn has 'weight': 0"),
            ({"instruction": "q", "input": "", "output": "a", "history": [["q0", "a0"]]}, "'history' .* not read")):
        with pytest.raises(ValueError, match=why):
            prompt.record_segments(bad)


def test_a_dataset_whose_user_turns_name_no_speaker_is_told():
    plain = {"conversations": [{"from": "human", "value": "Hi Bob! Coming tonight?"}, {"from": "gpt", "value": "No."}]}
    labelled = {"conversations": [{"from": "human", "value": "Alice: Hi"}, {"from": "gpt", "value": "No."}]}
    assert prompt.unlabelled_user_turns([plain, plain])
    assert not prompt.unlabelled_user_turns([plain, labelled])  # some do: the dataset's way
    assert not prompt.unlabelled_user_turns([{"input": "Hi\nBob:", "output": "No."}])  # not multi-turn
    named = {"messages": [{"role": "user", "content": "Hi", "name": "Alice"}, {"role": "assistant", "content": "No."}]}
    assert not prompt.unlabelled_user_turns([named])  # its name is its label


def test_alpaca_segments_put_instruction_first():
    rec = {"instruction": "Continue as Bob.", "input": "Alice: Hi\nBob:", "output": "Ahoy!"}
    assert prompt.record_segments(rec) == [("Continue as Bob.\nAlice: Hi\nBob:", False), (" Ahoy!\n", True)]


def test_multi_turn_trains_every_assistant_turn():
    rec = {
        "name": "Bob",
        "messages": [
            {"role": "user", "content": "Alice: Hi\nCarol: Hey"},
            {"role": "assistant", "content": "Ahoy!"},
            {"role": "user", "content": "Alice: Again?"},
            {"role": "assistant", "content": "Aye."},
        ],
    }
    segs = prompt.record_segments(rec)
    assert segs == [
        ("Alice: Hi\nCarol: Hey\nBob:", False),
        (" Ahoy!\n", True),
        ("Alice: Again?\nBob:", False),
        (" Aye.\n", True),
    ]
    assert prompt.record_examples(rec) == [
        ("Alice: Hi\nCarol: Hey\nBob:", "Ahoy!"),
        ("Alice: Hi\nCarol: Hey\nBob: Ahoy!\nAlice: Again?\nBob:", "Aye."),
    ]


def test_multi_turn_without_name_uses_given_or_default_cue():
    rec = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]}
    assert prompt.record_segments(rec)[0][0] == "Hi\nAssistant:"
    assert prompt.record_segments(rec, name="Bob")[0][0] == "Hi\nBob:"


def test_validate_records_names_the_bad_sample():
    with pytest.raises(UserError, match=r"data.json: sample 2: .*no assistant turn"):
        prompt.validate_records(
            [{"input": "Bob:", "output": "x"}, {"messages": [{"role": "user", "content": "x"}]}], "data.json"
        )
    with pytest.raises(UserError, match=r"sample 1: 'output' is int"):
        prompt.validate_records([{"input": "Bob:", "output": 3}])


def test_a_rounds_sample_must_end_with_the_cue():
    with pytest.raises(ValueError, match="'input' must end with the cue of the character who replies"):
        prompt.record_segments({"input": "Alice: hi", "output": "yo"})
    # an alpaca sample from elsewhere may end with no name: trained, but no character is recorded for it
    segs = [prompt.record_segments({"instruction": "Summarise.", "input": "a long text", "output": "short"}),
            prompt.record_segments({"input": "Alice: hi\nBob:", "output": "yo"})]
    assert prompt.record_characters(segs) == ["Bob"]
    assert prompt.characters_of([["Ann"], ["Bob", "Bob"], []]) == ["Bob", "Ann"]  # most learnt replies first


def test_a_lone_surrogate_in_a_sample_is_named_and_chat_input_is_repaired():
    with pytest.raises(ValueError, match=r"'input' holds a broken character, a lone surrogate \\ud83d"):
        prompt.record_segments({"input": "Alice: hi \ud83d\nBob:", "output": "yo"})
    assert prompt.replace_broken("caf\udce9 \ud83d") == "caf\ufffd \ufffd"


def test_a_bad_jsonl_sample_is_named_by_its_line(tmp_path):
    p = tmp_path / "data.jsonl"
    p.write_text('{"input": "Bob:", "output": "x"}\n\n{"input": "Bob:"}\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"data.jsonl:3: unknown sample format"):
        prompt.validate_records(fileio.load_records(p), str(p))


# --- fileio.py -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["out.json", "out.jsonl"])
def test_write_and_load_records_roundtrip(tmp_path, name):
    recs = [{"input": "Bob:", "output": "don't"}, {"input": "Ali: «ça»\nBob:", "output": "ok"}]
    path = tmp_path / name
    assert fileio.write_records(path, iter(recs)) == 2
    assert fileio.load_records(path) == recs
    if name.endswith(".json"):
        assert json.loads(path.read_text(encoding="utf-8")) == recs
    else:
        assert len(path.read_text(encoding="utf-8").splitlines()) == 2


def test_a_write_through_a_symlink_replaces_the_file_it_points_to(tmp_path):
    target = tmp_path / "real.json"
    target.write_text("old", encoding="utf-8")
    link = tmp_path / "linked.json"
    link.symlink_to(target)
    fileio.atomic_write_text(link, "new")
    assert link.is_symlink() and target.read_text(encoding="utf-8") == "new"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["linked.json", "real.json"]


def test_failed_write_leaves_old_file(tmp_path):
    path = tmp_path / "out.json"
    path.write_text("precious", encoding="utf-8")

    def boom():
        yield {"a": 1}
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        fileio.write_records(path, boom())
    assert path.read_text(encoding="utf-8") == "precious"
    assert os.listdir(tmp_path) == ["out.json"]  # no temporary file left behind


def test_a_killed_writers_temporary_file_is_cleared_by_the_next_write(tmp_path):
    """A prepare killed mid-write left a hidden `.out.json.xxxxxxxx.tmp` of its size, for good."""
    import time

    path = tmp_path / "out.json"
    stale, fresh, busy = (tmp_path / f".out.json.{k * 8}.tmp" for k in "abc")
    other = tmp_path / ".out.json.old.abcdefgh.tmp"  # another file's (out.json.old): not ours to judge
    for f in (stale, fresh, busy, other):
        f.write_bytes(b"x" * 1000)
    old = time.time() - 2 * fileio.STALE_TEMP_S
    for f in (stale, busy, other):
        os.utime(f, (old, old))
    fd = os.open(busy, os.O_RDWR)  # a writer at work: its lock held
    try:
        assert fileio._try_lock(fd)
        fileio.write_records(path, [{"input": "Bob:", "output": "hi"}])
    finally:
        os.close(fd)
    assert not stale.exists() and fresh.exists() and busy.exists() and other.exists()
    assert json.loads(path.read_text(encoding="utf-8")) == [{"input": "Bob:", "output": "hi"}]


def test_one_sample_of_turns_in_from_value_is_no_discord_export(tmp_path):
    path = tmp_path / "one.json"
    path.write_text('{"messages": [{"from": "human", "value": "Alice: hi"}, {"from": "gpt", "value": "yo"}]}')
    (record,) = fileio.load_records(path)
    assert prompt.record_segments(record, "Bob") == [("Alice: hi\nBob:", False), (" yo\n", True)]


@pytest.mark.parametrize("indent", [None, 1])
def test_samples_in_an_object_around_them_are_read(tmp_path, indent):
    path = tmp_path / "wrapped.json"
    samples = [{"input": "Alice: hi\nBob:", "output": "yo"}, {"input": "Alice: so?\nBob:", "output": "no"}]
    path.write_text(json.dumps({"version": 2, "data": samples}, indent=indent))
    assert list(fileio.load_records(path)) == samples
    path.write_text(json.dumps({"data": samples, "more": []}, indent=indent))  # two lists: whose samples?
    with pytest.raises(UserError, match="unknown sample format"):
        prompt.validate_records(fileio.load_records(path), str(path))


def test_a_webui_format_template_and_a_cp1252_file_are_said_as_such(tmp_path):
    path = tmp_path / "alpaca-format.json"
    path.write_text(json.dumps({"instruction,output": "User: %instruction%\nAssistant: %output%",
                                "instruction,input,output": "User: %instruction%: %input%\nAssistant: %output%"}))
    with pytest.raises(UserError, match="alpaca-format.json: a text-generation-webui format template"):
        fileio.load_records(path)
    path.write_bytes(b'[{"input": "A: hi\\nB:",\n "output": "caf\xe9"}]')
    with pytest.raises(UserError, match=r"alpaca-format.json:2: not UTF-8 text \(byte 39\): save it as UTF-8"):
        fileio.load_records(path)


def test_objects_one_after_another_over_several_lines_are_said_as_such(tmp_path):
    path = tmp_path / "jq.json"
    path.write_text('{\n "input": "A: x\\nB:",\n "output": "y"\n}\n{\n "input": "A: x\\nB:",\n "output": "y"\n}\n')
    with pytest.raises(UserError, match=r"jq.json:5: malformed JSON \(a second object after the first.*jq -c"):
        fileio.load_records(path)
    path.write_text('{\n "input": "A: x\\nB:",\n "output": "y"\n}\n}\n')  # a stray brace is no second object
    with pytest.raises(UserError, match=r"jq.json:5: malformed JSON \(Extra data"):
        fileio.load_records(path)


def test_a_file_is_a_dataset_by_its_samples_shape_not_by_what_training_makes_of_them(tmp_path):
    """A sample training refuses (LLaMA-Factory's history) still makes its file a dataset: the tab lists it
    and prepare does not read it as dialogue; a Telegram export's `from` is a sender, not sharegpt's role."""
    path = tmp_path / "lf.jsonl"
    path.write_text(json.dumps({"instruction": "q", "input": "", "output": "a", "history": [["q0", "a0"]]}) + "\n")
    assert fileio.holds_samples(path) is True
    path.write_text(json.dumps({"data": [{"input": "A: hi\nB:", "output": "yo"}]}) + "\n")
    assert fileio.holds_samples(path) is True  # samples in an object around them, as training reads them
    path.write_text(json.dumps({"data": [{"input": "A: hi\nB:", "output": "yo"}]}, indent=2) + "\n")
    assert fileio.holds_samples(path) is True  # pretty-printed too
    path.write_text(json.dumps({"input": "A: hi\nB:", "output": "yo"}, indent=2) + "\n")
    assert fileio.holds_samples(path) is True  # one sample over several lines
    telegram = tmp_path / "result.json"
    telegram.write_text(json.dumps({"name": "Raid Night", "messages": [{"id": 1, "type": "message", "from": "Sam",
                                                                         "text": "hi"}]}))
    assert fileio.holds_samples(telegram) is False
    with pytest.raises(UserError, match="not a prepared dataset"):
        fileio.load_records(telegram)


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "empty"),
        ("[]", "holds no samples"),
        ('[{"input": "x"},\n {"input": }]', r"bad.json:2: malformed JSON"),
        ('{"a": 1}\n{"a": \n', r"bad.json:2: malformed JSON line"),
        ('{"input": "a", "output": "b"\n', r"bad.json:1: malformed JSON \(it ends before a bracket or brace is closed\)"),
        ("[1, 2]", "bad.json: sample 1 is a number, expected a JSON object"),
        ('{"input": "A:", "output": "x"}\n\n[1]\n', r"bad.json:3 is a list"),
        ("Alice: hi\nBob: yo\n", "not a prepared dataset .*turns raw dialogue into one"),
        ('{\n "guild": {},\n "messages": [{"author": {"name": "A"}, "content": "hi"}]\n}', "turns a Discord export"),
        ('{"guild": {}, "messages": [{"author": {"name": "A"}, "content": "hi"}]}\n', "turns a Discord export"),
        ('{"adapter": "bob", "evaluated_at": "2026-12-02", "samples": []}', r"an evaluation's report .*give the dataset"),
        ("[" * 100_000 + "]" * 100_000, r"bad.json: unreadable JSON \(nested too deep to be samples\)"),
        ('{"input": "A:", "output": "x"}\n{"a": ' + "[" * 100_000 + "]" * 100_000 + "}\n",
         r"bad.json:2: unreadable JSON line \(nested too deep"),
    ],
)
def test_load_records_errors(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError, match=message):
        fileio.load_records(path)


def test_load_records_missing_and_binary(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        fileio.load_records(tmp_path / "nope.json")
    (tmp_path / "bin.json").write_bytes(b"\x00\x01\x02")
    with pytest.raises(UserError, match="binary"):
        fileio.load_records(tmp_path / "bin.json")


def test_load_records_reads_one_sample_over_several_lines(tmp_path):
    """A pretty-printed single sample, even in the messages format (whose "messages" have roles, where a
    Discord export's have authors)."""
    sample = {"messages": [{"role": "user", "content": "Alice: hi"}, {"role": "assistant", "content": "yo"}]}
    (tmp_path / "one.json").write_text(json.dumps(sample, indent=1), encoding="utf-8")
    assert fileio.load_records(tmp_path / "one.json") == [sample]


def test_load_records_accepts_bom(tmp_path):
    (tmp_path / "bom.json").write_bytes('\ufeff[{"input": "Bob:", "output": "x"}]'.encode("utf-8"))
    assert fileio.load_records(tmp_path / "bom.json") == [{"input": "Bob:", "output": "x"}]
    # Windows PowerShell 5's `>` writes UTF-16 with its mark: read, not called binary
    (tmp_path / "ps.json").write_bytes('[{"input": "Bob:", "output": "é"}]\r\n'.encode("utf-16"))
    assert fileio.load_records(tmp_path / "ps.json") == [{"input": "Bob:", "output": "é"}]


# --- paths.py --------------------------------------------------------------------------------------

def test_a_weights_file_that_cannot_be_read_is_said_so(tmp_path, monkeypatch):
    """(transformers and PEFT say "No such file" of a file they may not open; tests run as root here)"""
    (tmp_path / "model.safetensors").write_bytes(b"x")
    assert paths.unreadable_weights(tmp_path) is None and paths.unreadable(tmp_path / "gone") is None

    def refuse(file, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(file))

    monkeypatch.setattr(paths, "open", refuse, raising=False)
    assert paths.unreadable_weights(tmp_path) == f"{tmp_path / 'model.safetensors'}: cannot be read (Permission denied)"


def test_resolve_dirs_follows_webui_layouts(tmp_path):
    old = paths.resolve_dirs(tmp_path)
    assert (old.models, old.loras, old.datasets) == (
        tmp_path / "models", tmp_path / "loras", tmp_path / "training" / "datasets"
    )
    (tmp_path / "user_data").mkdir()
    new = paths.resolve_dirs(tmp_path)
    assert new.models == tmp_path / "user_data" / "models"
    assert new.loras == tmp_path / "user_data" / "loras"
    assert paths.resolve_dirs(tmp_path, lora_dir="x").loras.name == "x"


def test_resolve_model_lists_what_exists(tmp_path):
    for name in ("llama-7b", "mistral-7b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
        (tmp_path / name / "model-00001-of-00002.safetensors").write_text("")
    (tmp_path / "half-downloaded").mkdir()  # a config, no weights: not offered
    (tmp_path / "half-downloaded" / "config.json").write_text("{}")
    assert paths.resolve_model("llama-7b", tmp_path) == (tmp_path / "llama-7b").resolve()
    assert paths.list_models(tmp_path) == ["llama-7b", "mistral-7b"]
    with pytest.raises(UserError, match=r"config\.json is a file of the model in .*llama-7b: give the folder"):
        paths.resolve_model(tmp_path / "llama-7b" / "config.json", tmp_path / "elsewhere")
    with pytest.raises(UserError) as e:
        paths.resolve_model("lama-7b", tmp_path)
    assert "did you mean 'llama-7b'" in str(e.value) and "llama-7b, mistral-7b" in str(e.value)
    with pytest.raises(UserError, match="no models found"):
        paths.resolve_model("x", tmp_path / "empty")
    # not a near miss: no hint (Hamlet is no misspelt CAPULET)
    with pytest.raises(UserError) as e:
        paths.resolve_model("gemma-2b", tmp_path)
    assert "did you mean" not in str(e.value)
    # llama.cpp's GGUF, a file or a folder holding one (without config.json): not a model trained here
    (tmp_path / "q4.gguf").write_bytes(b"GGUF")
    (tmp_path / "gguf-only").mkdir()
    (tmp_path / "gguf-only" / "m-Q8_0.gguf").write_bytes(b"GGUF")
    for name, file in (("q4.gguf", "q4.gguf"), ("gguf-only", "gguf-only/m-Q8_0.gguf")):
        with pytest.raises(UserError, match=rf"^{re.escape(str(tmp_path / file))} is a GGUF model \(llama.cpp's "
                                            r"format\), which transformers does not train"):
            paths.resolve_model(name, tmp_path)
    (tmp_path / "gguf-only" / "config.json").write_text("{}")  # the webui's llamacpp_HF folder: still GGUF
    with pytest.raises(UserError, match=r"m-Q8_0.gguf is a GGUF model"):
        paths.resolve_model("gguf-only", tmp_path)
    (tmp_path / "llama-7b" / "llama-7b-Q8_0.gguf").write_bytes(b"GGUF")  # converted beside the weights: fine
    assert paths.resolve_model("llama-7b", tmp_path) == (tmp_path / "llama-7b").resolve()
    # an adapter passed as the model
    (tmp_path / "bob").mkdir()
    (tmp_path / "bob" / "adapter_config.json").write_text("{}")
    with pytest.raises(UserError, match=r"bob is an adapter \(adapter_config.json\), not a model: pass it with -l"):
        paths.resolve_model(tmp_path / "bob", tmp_path / "empty")


def test_a_user_data_folder_that_hides_the_old_models_folder_is_said(tmp_path):
    """The webui's layouts: models/ (old), user_data/models (new, whenever user_data/ exists)."""
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    (tmp_path / "models" / "tiny" / "config.json").write_text("{}")
    (tmp_path / "models" / "tiny" / "model.safetensors").write_text("")
    (tmp_path / "user_data").mkdir()
    with pytest.raises(UserError) as e:
        paths.resolve_model("tiny", paths.resolve_dirs(tmp_path).models)
    new, old = tmp_path / "user_data" / "models", tmp_path / "models"
    assert str(e.value).endswith(f"(user_data/ is here, so models are looked for in {new}; {old} holds tiny: pass "
                                 f"--model_dir {old}, or move them)")
    # and the adapters in the old layout's loras/
    (tmp_path / "loras" / "bob").mkdir(parents=True)
    (tmp_path / "loras" / "bob" / "adapter_config.json").write_text("{}")
    with pytest.raises(UserError) as e:
        paths.resolve_adapter("bob", paths.resolve_dirs(tmp_path).loras)
    new, old = tmp_path / "user_data" / "loras", tmp_path / "loras"
    assert str(e.value).endswith(f"(user_data/ is here, so adapters are looked for in {new}; {old} holds bob: pass "
                                 f"--lora_dir {old}, or move them)")


def test_resolve_adapter_says_what_a_folder_without_an_adapter_holds(tmp_path):
    (tmp_path / "bob").mkdir()
    (tmp_path / "bob" / "adapter_config.json").write_text("{}")
    (tmp_path / "notes").mkdir()
    (tmp_path / "half" / "checkpoint-40").mkdir(parents=True)
    assert paths.resolve_adapter("bob", tmp_path) == (tmp_path / "bob").resolve()
    with pytest.raises(UserError, match=r"notes holds no adapter \(no adapter_config.json\); adapters in .*: bob"):
        paths.resolve_adapter("notes", tmp_path)
    with pytest.raises(UserError, match=r"half holds the checkpoints of an unfinished run.*-l half --resume"):
        paths.resolve_adapter("half", tmp_path)
    with pytest.raises(UserError, match=r"adapter 'bobb' not found \(did you mean 'bob'\?\)"):
        paths.resolve_adapter("bobb", tmp_path)


@pytest.mark.parametrize("bad", ["", "../x", "a/b", "a\\b", ".hidden", "..", "x/../../etc", "'quoted'", "a*b", "a:b"])
def test_check_name_refuses_escapes(bad):
    with pytest.raises(UserError, match="^adapter name (is empty|.+ is not allowed: start with a letter or digit)"):
        paths.check_name(bad, "adapter name")


def test_shell_word_quotes_what_a_shell_would_split(tmp_path):
    assert paths.shell_word("bob-v2.1") == "bob-v2.1"
    assert paths.shell_word("O'Brien") == '"O\'Brien"'
    assert paths.shell_word("Bob (v2)") == '"Bob (v2)"'
    # the resume hint's command can be copied as it is
    (tmp_path / "O'Brien" / f"{paths.CHECKPOINT_PREFIX}3").mkdir(parents=True)
    with pytest.raises(UserError, match=r'-l "O\'Brien" --resume'):
        paths.resolve_adapter("O'Brien", tmp_path)


def test_check_name_accepts_ordinary_names():
    assert paths.check_name(" Bob v2.1_final ", "adapter name") == "Bob v2.1_final"
    # names as characters have them: an apostrophe (straight or curly), a version in brackets
    assert paths.check_name("O'Brien", "adapter name") == "O'Brien"
    assert paths.check_name("d’Artagnan (v2), final", "adapter name") == "d’Artagnan (v2), final"


# --- errors.py -------------------------------------------------------------------------------------

def test_run_cli_turns_user_errors_into_one_line(capsys):
    def main(argv):
        raise UserError("data.json: sample 3: no output")

    assert run_cli(main, []) == 2
    err = capsys.readouterr().err
    assert err == "error: data.json: sample 3: no output\n"

    def too_big(argv):
        raise MemoryError()

    assert run_cli(too_big, []) == 2  # (a line of gigabytes): one line, no traceback
    assert capsys.readouterr().err.startswith("error: out of memory: the input")


def test_run_cli_says_which_installed_library_failed_to_load(capsys, tmp_path, monkeypatch):
    """A bitsandbytes built for another CUDA (PEFT imports it whenever it is installed): one line, not a
    traceback from inside the libraries."""
    broken = tmp_path / "brokenlib"
    broken.mkdir()
    (broken / "__init__.py").write_text("raise ImportError('libbitsandbytes_cuda118.so: cannot open shared object file')")
    monkeypatch.syspath_prepend(str(tmp_path))

    def main(argv):
        importlib.import_module("brokenlib")

    assert run_cli(main, []) == 2
    assert capsys.readouterr().err == ("error: brokenlib failed to load (libbitsandbytes_cuda118.so: cannot open shared "
                                       "object file): reinstall it (pip install -r requirements.txt)\n")


def test_run_cli_says_interrupted_for_a_ctrl_c_a_lazy_import_reported_as_failing(capsys):
    """transformers' lazy modules report a Ctrl+C during their import as `Could not import module ...`."""
    def main(argv):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as e:
            raise ImportError("Could not import module 'LlamaForCausalLM'.") from e

    assert run_cli(main, []) == 130
    assert capsys.readouterr().err == "error: interrupted\n"


def test_run_cli_reports_a_file_system_refusal_and_sigterm_in_one_line(capsys, tmp_path):
    long_name = tmp_path / ("a" * 300 + ".json")

    def write(argv):
        fileio.atomic_write_text(long_name, "x")

    assert run_cli(write, []) == 2
    assert capsys.readouterr().err == f"error: {long_name}: File name too long\n"

    def bug(argv):
        raise OSError("no file involved")  # not about a file: a bug, and it keeps its traceback

    with pytest.raises(OSError):
        run_cli(bug, [])

    import signal

    def killed(argv):
        os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    assert run_cli(killed, []) == 143
    assert capsys.readouterr().err == "error: terminated\n"
    assert signal.getsignal(signal.SIGTERM) is before


def test_join_problems_and_closest():
    assert join_problems(["a"]) == "a"
    assert join_problems(["a", "b"]) == "2 problems:\n  - a\n  - b"
    assert closest("romeo", ["ROMEO", "JULIET"]) == "ROMEO"
    assert closest("zzz", ["ROMEO"]) is None


def test_the_tiny_model_builder_checks_its_flags_and_never_writes_into_other_files(tmp_path, capsys):
    from extensions.dialogue_lora import tiny

    with pytest.raises(UserError, match="--hidden_size must be a multiple of 8.*\n.*--num_layers"):
        tiny.main([str(tmp_path / "m"), "--hidden_size", "7", "--num_layers", "0"])
    with pytest.raises(UserError, match="nothere.txt: no such file"):
        tiny.main([str(tmp_path / "m"), "--corpus", str(tmp_path / "nothere.txt")])
    adapter = tmp_path / "bob"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}", encoding="utf-8")
    with pytest.raises(UserError, match="holds other files \\(adapter_config.json\\): not touched"):
        tiny.main([str(adapter)])
    assert sorted(p.name for p in adapter.iterdir()) == ["adapter_config.json"]
    model = tmp_path / "tiny"
    assert tiny.main([str(model), "--hidden_size", "16", "--num_layers", "1", "--vocab_size", "64"]) == 0
    first = (model / "model.safetensors").read_bytes()
    assert tiny.main([str(model), "--hidden_size", "16", "--num_layers", "1", "--vocab_size", "64"]) == 0  # rebuilt
    assert (model / "model.safetensors").read_bytes() == first


def test_a_models_weights_are_told_by_the_files_a_load_reads(tmp_path):
    """--resume's base check: a sample of the weights transformers loads (a shard index's files), not a
    `consolidated.safetensors` beside them, and not the bytes of another model of the same shape."""
    import json

    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(b"a" * 5000)
    (tmp_path / "model-00002-of-00002.safetensors").write_bytes(b"b" * 5000)
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "x": "model-00001-of-00002.safetensors", "y": "model-00002-of-00002.safetensors"}}))
    before = paths.weights_sample_sha256(tmp_path)
    (tmp_path / "consolidated.safetensors").write_bytes(b"c" * 9000)
    assert paths.weights_sample_sha256(tmp_path) == before
    (tmp_path / "model-00002-of-00002.safetensors").write_bytes(b"b" * 4000 + b"B" * 1000)  # other weights
    assert paths.weights_sample_sha256(tmp_path) not in (before, None)
    assert paths.weights_sample_sha256(tmp_path / "nothing") is None


def test_windows_flushes_files_opened_to_write_retries_held_folders_and_drops_the_lock_file(tmp_path, monkeypatch):
    """Windows' ways, imitated here: it flushes only a file opened for writing (os.fsync on one opened to
    read is 'Bad file descriptor': every save failed), refuses to rename a folder another program holds open
    for a moment, and deletes no file that is still open."""
    import errno
    import fcntl

    def fsync(fd):
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY:
            raise OSError(errno.EBADF, "Bad file descriptor")

    for name in ("adapter_model.safetensors", "adapter_config.json"):
        (tmp_path / name).write_bytes(b"weights")
    monkeypatch.setattr(os, "fsync", fsync)
    with monkeypatch.context() as m:
        m.setattr(os, "name", "nt")
        fileio.sync_folder(tmp_path)
    with pytest.raises(OSError, match="Bad file descriptor"):  # the imitation tells the two apart
        fileio.sync_folder(tmp_path)
    assert (tmp_path / "adapter_config.json").read_bytes() == b"weights"

    real_replace, calls = os.replace, []

    def held_twice(src, dst):
        calls.append(src)
        if len(calls) <= 2:
            raise PermissionError(errno.EACCES, "Access is denied", str(src))
        real_replace(src, dst)

    src, dst = tmp_path / "a", tmp_path / "b"
    src.mkdir()
    monkeypatch.setattr(os, "replace", held_twice)
    monkeypatch.setattr(fileio, "RENAME_WAIT_S", 0)
    with pytest.raises(PermissionError):  # elsewhere a refusal is not a moment's hold: it stands at once
        fileio.replace_folder(src, dst)
    assert len(calls) == 1 and src.is_dir()
    calls.clear()
    with monkeypatch.context() as m:
        m.setattr(os, "name", "nt")
        fileio.replace_folder(src, dst)
    assert len(calls) == 3 and dst.is_dir() and not src.exists()

    real_unlink, open_fds = os.unlink, set()
    real_open, real_close = os.open, os.close

    def tracked_open(path, *a, **kw):
        fd = real_open(path, *a, **kw)
        if str(path).endswith(".lock"):
            open_fds.add(fd)
        return fd

    def tracked_close(fd):
        open_fds.discard(fd)
        real_close(fd)

    def unlink(path, *a, **kw):
        if str(path).endswith(".lock") and open_fds:
            raise PermissionError(errno.EACCES, "The process cannot access the file", str(path))
        real_unlink(path, *a, **kw)

    monkeypatch.setattr(os, "open", tracked_open)
    monkeypatch.setattr(os, "close", tracked_close)
    monkeypatch.setattr(os, "unlink", unlink)
    lock = tmp_path / "x.lock"
    with fileio.held_lock(lock, lambda pid: f"busy {pid}"):
        assert lock.exists()
    assert lock.exists()  # (the imitation: deleting it while open failed)
    with monkeypatch.context() as m:
        with fileio.held_lock(lock, lambda pid: f"busy {pid}"):
            m.setattr(os, "name", "nt")
    assert not lock.exists()


def test_macos_flushes_past_the_drives_cache(tmp_path, monkeypatch):
    """macOS's fsync leaves the data in the drive's cache: F_FULLFSYNC there, and fsync where the file system
    cannot (a network share)."""
    import fcntl
    import sys

    calls = []
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(fcntl, "F_FULLFSYNC", 51, raising=False)
    monkeypatch.setattr(fcntl, "fcntl", lambda fd, op: calls.append(("fcntl", op)))
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append(("fsync", fd)))
    fileio.atomic_write_text(tmp_path / "a.txt", "x")
    assert calls == [("fcntl", 51)] and (tmp_path / "a.txt").read_text() == "x"

    def unsupported(fd, op):
        raise OSError(45, "Operation not supported")

    calls.clear()
    monkeypatch.setattr(fcntl, "fcntl", unsupported)
    fileio.sync_folder(tmp_path, files=True)
    assert [c[0] for c in calls] == ["fsync", "fsync"]  # the file, then the folder
