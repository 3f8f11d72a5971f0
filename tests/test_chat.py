"""chat.py as a person (or a pipe) uses it: piped lines in, one `Bob: reply` line out per line, nothing else."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lora_helpers import shared_adapter, subprocess_env

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def layout(webui_root, tmp_path_factory, tiny_model_dir):
    shutil.copytree(shared_adapter(tmp_path_factory, tiny_model_dir), webui_root / "user_data" / "loras" / "bob")
    return webui_root


def chat(args: list[str], lines: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "chat.py"), *args], input=lines, cwd=cwd, capture_output=True,
                          text=True, timeout=300, env=subprocess_env())


@pytest.mark.slow
def test_three_piped_lines_give_three_one_line_replies(layout):
    lines = "Where is the boat and the bread?\nWhere is the river and the road?\nWhere is the song and the day?\n"
    p = chat(["-m", "tiny-llama", "-l", "bob", "--name", "Bob", "--user", "Alice", "--temperature", "0"], lines, layout)
    assert p.returncode == 0, p.stderr
    out = p.stdout.splitlines()
    assert len(out) == 3, p.stdout
    for line in out:
        assert line.startswith("Bob: Arr") and line.endswith("matey!"), line  # the trained voice, stopped at "\n"
    assert p.stderr == ""  # piped: no banner, no prompts, no loading chatter


def test_base_model_alone_and_quit(layout, monkeypatch, capsys):
    """No --lora: the base model answers (gibberish, still one line each); /quit ends the session.
    Run in-process (chat.main with a piped stdin) to spare a process start."""
    import io

    sys.path.insert(0, str(ROOT))
    import chat as chat_cli

    from transformers.utils import logging as hf_logging

    for var in ("TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_NO_ADVISORY_WARNINGS"):
        monkeypatch.delenv(var, raising=False)  # chat.main sets them; monkeypatch restores the state before
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    # "caf\udce9": a Latin-1 byte piped in under a UTF-8 locale (Python reads it as a lone surrogate)
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hello\nAnyone at the caf\udce9?\n/quit\nnot read\n"))
    try:
        assert chat_cli.main(["-m", "tiny-llama", "--name", "Bob", "--max_new_tokens", "6", "--seed", "1",
                              "--device", "cpu"]) == 0
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and all(line.startswith("Bob:") for line in out)


def test_piped_bytes_that_are_not_utf8_under_a_strict_locale(layout):
    """A desktop's UTF-8 locale reads stdin strictly (C.UTF-8 does not): a Latin-1 byte stopped chat.py."""
    env = dict(subprocess_env(), PYTHONIOENCODING="utf-8:strict")
    p = subprocess.run([sys.executable, str(ROOT / "chat.py"), "-m", "tiny-llama", "--name", "Bob",
                        "--max_new_tokens", "4", "--device", "cpu"], input=b"Hello\nAnyone at the caf\xe9?\n",
                       cwd=layout, capture_output=True, timeout=300, env=env)
    assert p.returncode == 0 and b"Traceback" not in p.stderr, p.stderr
    assert len(p.stdout.splitlines()) == 2
    # a file saved with a BOM (Windows Notepad): its first line is still a command
    p = subprocess.run(p.args, input=b"\xef\xbb\xbf/quit\nHello\n", cwd=layout, capture_output=True, timeout=300,
                       env=env)
    assert p.returncode == 0 and p.stdout == b"", (p.stdout, p.stderr)
    # and one saved as UTF-16 (Windows PowerShell 5's `>`): its lines, not bytes with NULs
    p = subprocess.run(p.args, input="Hello\n/quit\n".encode("utf-16"), cwd=layout, capture_output=True, timeout=300,
                       env=env)
    assert p.returncode == 0 and len(p.stdout.splitlines()) == 1 and b"\x00" not in p.stdout, (p.stdout, p.stderr)


@pytest.mark.slow
def test_several_characters_in_one_adapter(layout):
    import json

    params_file = layout / "user_data" / "loras" / "bob" / "training_parameters.json"
    params = json.loads(params_file.read_text(encoding="utf-8"))
    params_file.write_text(json.dumps(dict(params, characters=["Bob", "Carol"])), encoding="utf-8")  # learnt both
    p = chat(["-m", "tiny-llama", "-l", "bob", "--name", "Bob,Carol", "--user", "Alice", "--temperature", "0",
              "--max_new_tokens", "12"],
             "Hi all\n@Carol Where is the boat?\n/as Carol\nAnd you?\n/as Dave\n@Bob\n/quit\nnot read\n", layout)
    assert p.returncode == 0, p.stderr
    speakers = [line.split(":", 1)[0] for line in p.stdout.splitlines()]
    assert speakers == ["Bob", "Carol", "Carol", "Bob"]
    # piped, stderr stays quiet but for a mistake in the input
    assert p.stderr == "warning: unknown character 'Dave'; characters: Bob, Carol\n"


@pytest.mark.slow
def test_errors_are_one_line(layout):
    p = chat(["-m", "tiny-llama", "-l", "bobby", "--name", "Bob"], "hi\n", layout)
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert p.stderr.startswith("error: adapter 'bobby' not found") and "bob" in p.stderr
    assert p.stdout == ""
    # a colon inside a name is refused (a trailing one is read away, as prepare_dataset.py's --name reads it)
    p = chat(["-m", "tiny-llama", "--name", "Bo:b"], "hi\n", layout)
    assert p.returncode != 0 and p.stderr.startswith("error: name 'Bo:b' must not contain ':'")
    p = chat(["-m", "tiny-llama", "-l", "bob", "--name", "Bo:b"], "hi\n", layout)  # one line, no warning first
    assert p.returncode != 0 and p.stderr.startswith("error: name 'Bo:b' must not contain ':'"), p.stderr
    # sampling settings and devices are checked before the model loads, each in one line
    for bad, words in ((["--top_p", "5"], "--top_p must be above 0 and at most 1"),
                       (["--repetition_penalty", "-1"], "--repetition_penalty must be a finite number above 0"),
                       (["--device", "tpu"], "--device 'tpu' is not a device name"),
                       (["--temperature", "inf"], "--temperature must be 0 (greedy) or a finite number"),
                       (["--temperature", "warm"], "argument --temperature: invalid float value: 'warm' (see --help)"),
                       (["--name", ""], "--name is empty"),
                       (["--seed", "-1"], "--seed must be from 0 to 4294967295 (got -1)"),  # was numpy's traceback
                       (["--rounds", "0"], "--rounds must be 1 or more"),  # the prompt left out what was typed
                       (["--user", " "], "--user is empty"),  # became 'You' unsaid
                       (["--user", "A:B"], "--user 'A:B' must not contain ':'"),
                       (["--bogus"], "unrecognized arguments: --bogus")):
        p = chat(["-m", "tiny-llama", "--name", "Bob", *bad], "hi\n", layout)
        assert p.returncode == 2 and p.stderr.strip() == f"error: {p.stderr.strip()[7:]}" and words in p.stderr, p.stderr
        assert "\n" not in p.stderr.strip() and p.stdout == ""


def test_name_defaults_to_the_characters_the_adapter_learnt(layout):
    import json

    params_file = layout / "user_data" / "loras" / "bob" / "training_parameters.json"
    params = json.loads(params_file.read_text(encoding="utf-8"))
    params.update(name=None, characters=["Bob"])  # as training records a run without --name
    params_file.write_text(json.dumps(params), encoding="utf-8")
    p = chat(["-m", "tiny-llama", "-l", "bob", "--temperature", "0", "--max_new_tokens", "4"], "Hi Bob\n", layout)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("Bob:") and p.stdout.count("\n") == 1
    assert "note: --temperature 0" not in p.stderr
    # sampling's own settings with greedy replies: said to change nothing
    p = chat(["-m", "tiny-llama", "-l", "bob", "--temperature", "0", "--seed", "3", "--top_p", "0.5",
              "--max_new_tokens", "4"], "Hi Bob\n", layout)
    assert "note: --temperature 0 always takes the likeliest reply: --top_p and --seed change nothing" in p.stderr
    # a name is cued as the adapter learnt it (`Bob:`, not `bob:`), each once; one it did not learn is warned of
    p = chat(["-m", "tiny-llama", "-l", "bob", "--name", "bob,Carol,BOB", "--temperature", "0", "--max_new_tokens",
              "4"], "Hi Bob\n", layout)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("Bob:") and p.stdout.count("\n") == 1
    assert p.stderr == "warning: adapter bob learnt Bob, not Carol: it may not speak as them\n"
    # --name is read as prepare_dataset.py reads it: a full-width comma separates, `Bob:` is Bob
    p = chat(["-m", "tiny-llama", "-l", "bob", "--name", "Bob:\uff0cCarol", "--temperature", "0",
              "--max_new_tokens", "4"], "Hi Bob\n", layout)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("Bob:") and p.stderr == "warning: adapter bob learnt Bob, not Carol: it may not speak as them\n"


def test_a_name_typed_with_a_curly_apostrophe_is_the_one_prepare_cleaned():
    from extensions.dialogue_lora.prepare import split_names

    assert split_names("O\u2019Brien\u3001Zoe\u0308\uff0c小明") == ["O'Brien", "Zo\u00eb", "小明"]


def test_context_turns_default_to_the_adapters_samples(layout, monkeypatch):
    """Without --rounds, chat shows the adapter as many turns as its samples had (recorded in training)."""
    import json
    import sys

    from extensions.dialogue_lora import generation

    sys.path.insert(0, str(ROOT))
    import chat as chat_cli

    seen = []

    class Stop(Exception):
        pass

    class Session:
        def __init__(self, names, user, rounds, instruction, user_named=True):
            seen.append(rounds)
            raise Stop

    monkeypatch.setattr(generation, "ChatSession", Session)
    monkeypatch.chdir(layout)
    params_file = layout / "user_data" / "loras" / "bob" / "training_parameters.json"
    original = params_file.read_text(encoding="utf-8")
    params = json.loads(original)
    try:
        for recorded, flag, want in ((3, [], 3), (3, ["--rounds", "7"], 7), (None, [], 5), (0, [], 1)):
            params["context_turns"] = recorded
            params_file.write_text(json.dumps(params), encoding="utf-8")
            with pytest.raises(Stop):
                chat_cli.main(["-m", "tiny-llama", "-l", "bob", "--name", "Bob", *flag])
            assert seen[-1] == want
    finally:
        params_file.write_text(original, encoding="utf-8")


def test_ctrl_c_ends_the_chat_with_the_interrupts_exit_code(layout, monkeypatch):
    import io

    sys.path.insert(0, str(ROOT))
    import chat as chat_cli
    from extensions.dialogue_lora import generation

    def interrupted(self, line, reply_fn):
        raise KeyboardInterrupt

    monkeypatch.setattr(generation.ChatSession, "handle", interrupted)
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hello\n"))
    from transformers.utils import logging as hf_logging

    for var in ("TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_NO_ADVISORY_WARNINGS"):
        monkeypatch.delenv(var, raising=False)
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    try:
        assert chat_cli.main(["-m", "tiny-llama", "--name", "Bob", "--device", "cpu"]) == 130
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def test_running_out_of_memory_for_a_reply_is_one_line(layout, monkeypatch):
    import io

    import torch

    sys.path.insert(0, str(ROOT))
    import chat as chat_cli
    from extensions.dialogue_lora import generation
    from extensions.dialogue_lora.errors import UserError

    def full(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(generation, "generate_reply", full)
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hello\n"))
    monkeypatch.chdir(layout)
    with pytest.raises(UserError, match="^out of memory generating a reply: try --load_in_4bit"):
        chat_cli.main(["-m", "tiny-llama", "--name", "Bob", "--device", "cpu"])


def test_a_learnt_name_written_with_other_spaces_is_that_character(capsys):
    """` QUEEN  ELIZABETH ` was cued as the queen after a warning that it was not her."""
    import chat as chat_cli

    assert chat_cli._as_learnt(" queen  elizabeth ,Bob", ["QUEEN ELIZABETH", "Bob"], "adapter x") == "QUEEN ELIZABETH,Bob"
    assert capsys.readouterr().err == ""
    assert chat_cli._as_learnt("zoe,İSMAİL", ["Zoë", "İsmail"], "adapter x") == "Zoë,İsmail"  # accents, Turkish i
    assert chat_cli._as_learnt("ha", ["Hà", "Hạ"], "adapter x") == "ha"  # which one is not for chat to guess
    assert "adapter x learnt Hà, Hạ, not ha" in capsys.readouterr().err
    assert chat_cli._as_learnt("Carol", ["Bob"], "adapter x") == "Carol"
    assert "adapter x learnt Bob, not Carol" in capsys.readouterr().err


def test_a_qlora_adapter_loads_its_base_in_4_bits_unless_told_and_whole_is_noted(layout, monkeypatch, capsys):
    """An adapter trained with --load_in_4bit: its base is loaded in 4 bits by default (as the tab does);
    --unquantised loads it whole, which is said once, on stderr."""
    import io
    import json

    sys.path.insert(0, str(ROOT))
    import chat as chat_cli
    from extensions.dialogue_lora import generation

    seen = []
    real_load = generation.load_for_generation

    def recording_load(*args, **kwargs):
        seen.append(real_load(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(generation, "load_for_generation", recording_load)

    for var in ("TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_NO_ADVISORY_WARNINGS"):
        monkeypatch.delenv(var, raising=False)
    params_file = layout / "user_data" / "loras" / "bob" / "training_parameters.json"
    params = json.loads(params_file.read_text(encoding="utf-8"))
    params_file.write_text(json.dumps(dict(params, load_in_4bit=True)), encoding="utf-8")
    args = ["-m", "tiny-llama", "-l", "bob", "--name", "Bob", "--max_new_tokens", "2", "--device", "cpu"]
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hello\n"))
    assert chat_cli.main(args) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 1 and captured.err == ""  # piped: nothing to warn of
    assert seen[-1].bits == (True, False) and seen[-1].as_trained
    assert type(seen[-1].model.get_base_model().model.layers[0].mlp.up_proj.base_layer).__name__ == "Linear4bit"

    monkeypatch.setattr(sys, "stdin", io.StringIO("Hello\n"))
    assert chat_cli.main(args + ["--unquantized"]) == 0  # either spelling
    captured = capsys.readouterr()
    assert seen[-1].bits == (False, False) and not seen[-1].as_trained
    assert len(captured.out.splitlines()) == 1
    assert captured.err == ("note: bob was trained on a 4-bit base (--load_in_4bit) and the base is loaded unquantised "
                            "here: it takes more memory, and its replies may differ slightly from what it learnt\n")


def test_a_base_of_the_same_shape_with_other_weights_is_said(layout):
    """An adapter trained on a base, chatted with on its Instruct model or another fine-tune (same shape,
    other weights): it loads, and is said to be off its base, in chat and in a merge."""
    import json

    from safetensors.torch import load_file, save_file

    from extensions.dialogue_lora.merging import MergeConfig, merge
    from extensions.dialogue_lora.paths import weights_sample_sha256

    models = layout / "user_data" / "models"
    shutil.copytree(models / "tiny-llama", models / "tiny-tuned")
    weights = models / "tiny-tuned" / "model.safetensors"
    tensors = load_file(weights)
    first = next(iter(tensors))
    tensors[first] = tensors[first] * 1.01
    save_file(tensors, weights, metadata={"format": "pt"})
    params_file = layout / "user_data" / "loras" / "bob" / "training_parameters.json"
    params = json.loads(params_file.read_text(encoding="utf-8"))
    params["base_weights_sha256"] = weights_sample_sha256(models / "tiny-llama")
    params_file.write_text(json.dumps(params), encoding="utf-8")
    note = ("note: adapter 'bob' was trained on 'tiny-llama'; model 'tiny-tuned' has the same shape but other "
            "weights: it loads, but its replies may be off (it learnt its changes on the other model)\n")
    args = ["-l", "bob", "--name", "Bob", "--max_new_tokens", "2"]
    p = chat(["-m", "tiny-tuned", *args], "Hi\n", layout)
    assert p.returncode == 0 and p.stderr == note, p.stderr
    p = chat(["-m", "tiny-llama", *args], "Hi\n", layout)
    assert p.returncode == 0 and p.stderr == ""  # its own base: nothing said
    said = []
    merge(MergeConfig(model_name="tiny-tuned", lora_name="bob"), log=said.append)
    assert note.strip() in said


def test_a_quantised_uploads_adapter_on_its_full_model_is_not_other_weights(tmp_path):
    """Trained on a `-bnb-4bit` upload and merged into (or chatted on) the full model it came from, as the
    README advises: their files differ, but the base is the same (their names say so). Another model is
    still said to be one."""
    import json

    from extensions.dialogue_lora.generation import other_weights_note

    for name in ("Llama-3B", "Llama-3B-bnb-4bit", "Llama-3B-Instruct", "Llama-3B-Instruct-bnb-4bit"):
        folder = tmp_path / name
        folder.mkdir()
        config = {"model_type": "llama"}
        if name.endswith("4bit"):
            config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
        (folder / "config.json").write_text(json.dumps(config))
        (folder / "model.safetensors").write_bytes(name.encode() * 100)
    adapter = tmp_path / "bob"
    adapter.mkdir()

    def note(trained_on: str, used_on: str, recorded: bool = True):
        params = {"base_model": trained_on, "base_model_path": str(tmp_path / trained_on),
                  "base_weights_sha256": "0" * 64}
        if recorded:
            params["base_stored_quantization"] = "bitsandbytes 4-bit" if trained_on.endswith("4bit") else None
        (adapter / "training_parameters.json").write_text(json.dumps(params))
        return other_weights_note(adapter, tmp_path / used_on)

    assert note("Llama-3B-bnb-4bit", "Llama-3B") is None
    assert note("Llama-3B-bnb-4bit", "Llama-3B", recorded=False) is None  # from before it was recorded
    assert note("Llama-3B", "Llama-3B-bnb-4bit") is None
    assert note("Llama-3B-bnb-4bit", "Llama-3B-Instruct").startswith(
        "adapter 'bob' was trained on 'Llama-3B-bnb-4bit'; model 'Llama-3B-Instruct' has the same shape")
    assert note("Llama-3B", "Llama-3B-Instruct-bnb-4bit") is not None
    assert note("Llama-3B", "Llama-3B-Instruct") is not None  # full weights: their files tell
    # the webui's downloader names folders `owner_model`; a full model's name may end in -hf
    from extensions.dialogue_lora.generation import _base_name

    assert _base_name("unsloth_Llama-3.2-3B-Instruct-bnb-4bit") == _base_name("meta-llama_Llama-3.2-3B-Instruct")
    assert _base_name("TheBloke_Llama-2-7B-Chat-GPTQ") == _base_name("meta-llama_Llama-2-7b-chat-hf")
    assert _base_name("Llama-3.2-3B-bnb-4bit") != _base_name("Llama-3.2-3B-Instruct")


def test_an_adapter_from_before_prompt_facts_were_recorded_is_prompted_as_it_learnt(layout, monkeypatch):
    """The first versions recorded no characters, instruction line or context turns: chat cued `Character:`
    (or asked for --name) and left out an alpaca adapter's instruction. They come from its data now."""
    import json
    import sys

    from extensions.dialogue_lora import generation
    from extensions.dialogue_lora.merging import MergeConfig, _record, plan

    adapter = layout / "user_data" / "loras" / "bob"
    data = layout / "bob_alpaca.json"
    records = [{"instruction": "Continue the dialogue as Bob.", "input": f"Alice: line {i}\nAlice: more\nBob:",
                "output": f"Reply {i}.", "name": "Bob"} for i in range(6)]
    data.write_text(json.dumps(records), encoding="utf-8")
    params_file = adapter / "training_parameters.json"
    params = json.loads(params_file.read_text(encoding="utf-8"))
    for key in generation.PROMPT_FACTS:
        params.pop(key, None)
    from extensions.dialogue_lora.fileio import file_sha256

    params.update(name=None, dataset=str(data), dataset_sha256=file_sha256(data))
    params_file.write_text(json.dumps(params), encoding="utf-8")

    learnt = generation.read_training_parameters(adapter, prompt=True)
    assert (learnt["characters"], learnt["instruction"], learnt["context_turns"]) == (
        ["Bob"], "Continue the dialogue as {name}.", 2)
    assert "characters" not in generation.read_training_parameters(adapter)  # the file itself is left as it was
    assert "characters" not in json.loads(params_file.read_text(encoding="utf-8"))
    monkeypatch.chdir(layout)
    record = _record(plan(MergeConfig(model_name="tiny-llama", lora_name="bob")))
    assert record["characters"] == ["Bob"] and record["instruction"] == "Continue the dialogue as {name}."
    # a second adapter naming the same file, but trained on another version of it: its own split tells, not
    # what the first one's reading left in the cache
    other = adapter.parent / "bob-other"
    shutil.copytree(adapter, other)
    (other / "training_parameters.json").write_text(json.dumps(dict(params, dataset_sha256="0" * 64)),
                                                    encoding="utf-8")
    assert generation.read_training_parameters(other, prompt=True)["instruction"] is None
    assert generation.read_training_parameters(adapter, prompt=True)["instruction"] == "Continue the dialogue as {name}."
    shutil.rmtree(other)

    seen = []

    class Stop(Exception):
        pass

    class Session:
        def __init__(self, names, user, rounds, instruction, user_named=True):
            seen.append((names, rounds, instruction))
            raise Stop

    monkeypatch.setattr(generation, "ChatSession", Session)
    monkeypatch.chdir(layout)
    sys.path.insert(0, str(ROOT))
    import chat as chat_cli

    with pytest.raises(Stop):
        chat_cli.main(["-m", "tiny-llama", "-l", "bob"])  # no --name needed
    assert seen[-1] == (["Bob"], 2, "Continue the dialogue as {name}.")
    # the dataset prepared again since (another character's, in the same file): not what it learnt, so its
    # held-out split beside it tells (here the shared adapter's rounds samples, no instruction)
    data.write_text(json.dumps([dict(r, instruction="Continue the dialogue as Alice.", name="Alice",
                                     input=r["input"].replace("Bob:", "Alice:")) for r in records]), encoding="utf-8")
    heldout = generation.read_training_parameters(adapter, prompt=True)
    assert heldout["characters"] == ["Bob"] and heldout["instruction"] is None
    # without a recorded hash (the first versions'), the held-out samples not all in it tell the same
    params.pop("dataset_sha256")
    params_file.write_text(json.dumps(params), encoding="utf-8")
    assert generation.read_training_parameters(adapter, prompt=True)["characters"] == ["Bob"]
    # the dataset gone: the held-out split, as above
    data.unlink()
    heldout = generation.read_training_parameters(adapter, prompt=True)
    assert heldout["characters"] == ["Bob"] and heldout["instruction"] is None
    # both gone: nothing to tell, as before
    (adapter / str(params.get("heldout_file") or "heldout.json")).unlink()
    assert "characters" not in generation.read_training_parameters(adapter, prompt=True)


def test_the_scripts_take_each_others_spelling_of_the_same_flag():
    """`-d bob --dataset` in one script and `--dataset_name` in another, `-n` only in prepare_dataset.py:
    a flag learnt in one script was 'unrecognized' or 'ambiguous' in the next."""
    import importlib

    train = importlib.import_module("lora_finetune").build_parser()
    args = train.parse_args(["--dataset", "bob", "-n", "Bob"])
    assert (args.dataset_name, args.name) == ("bob", "Bob")
    evaluate = importlib.import_module("evaluate_lora").build_parser()
    args = evaluate.parse_args(["-m", "x", "-l", "y", "--dataset_name", "bob", "-b", "2", "-c", "64", "-n", "Bob"])
    assert (args.dataset, args.batch_size, args.cutoff_len, args.name) == ("bob", 2, 64, "Bob")
    chat = importlib.import_module("chat").build_parser()
    assert chat.parse_args(["-m", "x", "-n", "Bob"]).name == "Bob"
