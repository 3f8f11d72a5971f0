"""merge_lora.py: an adapter merged into its base gives the adapter's outputs from a plain model folder; what
is there already (a download, the base, an earlier merge) is never lost."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from extensions.dialogue_lora import merging
from extensions.dialogue_lora.errors import UserError
from extensions.dialogue_lora.merging import MERGE_FILE, MergeConfig, merge, plan
from extensions.dialogue_lora.paths import list_models
from lora_helpers import lock_held_elsewhere, one_thread, shared_adapter, subprocess_env

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def layout(webui_root, tmp_path_factory, tiny_model_dir):
    adapter = webui_root / "user_data" / "loras" / "bob"
    shutil.copytree(shared_adapter(tmp_path_factory, tiny_model_dir), adapter)
    params = json.loads((adapter / "training_parameters.json").read_text(encoding="utf-8"))
    params["characters"] = ["Bob"]
    (adapter / "training_parameters.json").write_text(json.dumps(params), encoding="utf-8")
    return webui_root


def _logits(model, tokenizer, text):
    import torch

    ids = torch.tensor([tokenizer(text)["input_ids"]])
    with torch.no_grad():
        return model(input_ids=ids).logits[0]


def test_the_merged_model_answers_as_the_adapter(layout):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from extensions.dialogue_lora.generation import adapter_disabled, load_for_generation

    with one_thread():
        result = merge(MergeConfig(model_name="tiny-llama", lora_name="bob"))
        models = layout / "user_data" / "models"
        assert result.output_dir == models / "tiny-llama-bob" and not result.replaced
        assert result.characters == ["Bob"] and result.dtype == "float32"
        assert list_models(models) == ["tiny-llama", "tiny-llama-bob"]  # offered like any model
        assert sorted(p.name for p in models.iterdir()) == ["tiny-llama", "tiny-llama-bob"]  # no lock, no temp left

        merged = AutoModelForCausalLM.from_pretrained(str(result.output_dir)).eval()
        tokenizer = AutoTokenizer.from_pretrained(str(result.output_dir))
        loaded = load_for_generation("tiny-llama", "bob", device="cpu")
        text = "Alice: Where is the boat?\nBob:"
        want = _logits(loaded.model, loaded.tokenizer, text)
        with adapter_disabled(loaded.model) as base:
            before = _logits(base, loaded.tokenizer, text)
        assert (want - before).abs().max() > 1e-2  # the adapter changes the outputs: the check below means something
        torch.testing.assert_close(_logits(merged, tokenizer, text), want, atol=1e-4, rtol=1e-4)

    record = json.loads((result.output_dir / MERGE_FILE).read_text(encoding="utf-8"))
    assert record["base_model"] == "tiny-llama" and record["adapter"] == "bob" and record["characters"] == ["Bob"]
    card = (result.output_dir / "README.md").read_text(encoding="utf-8")
    assert "You: Hello there.\nBob:\n" in card and f'convert_hf_to_gguf.py "{result.output_dir}"' in card
    assert "`chat.py -m tiny-llama-bob` prompts it so" in card
    assert "`chat.py -m \"my bob\"` prompts" in merging.model_card(record, result.output_dir.with_name("my bob"))
    assert "You: Hello there.\n" in merging.model_card(record, result.output_dir)  # the user named, as trained
    assert "\nHello there.\n" in merging.model_card(dict(record, user_turns_named=False), result.output_dir)
    assert record["files"] == sorted(p.name for p in result.output_dir.iterdir())  # what a later merge replaces
    # the tokenizer is the base's, byte for byte
    base_dir = models / "tiny-llama"
    assert (result.output_dir / "tokenizer.json").read_bytes() == (base_dir / "tokenizer.json").read_bytes()


def test_bf16_halves_the_weights(layout):
    with one_thread():
        full = merge(MergeConfig(model_name="tiny-llama", lora_name="bob", output_name="bob-fp32", dtype="fp32"))
        half = merge(MergeConfig(model_name="tiny-llama", lora_name="bob", output_name="bob-bf16", dtype="bf16"))
    config = json.loads((half.output_dir / "config.json").read_text(encoding="utf-8"))
    assert (config.get("dtype") or config.get("torch_dtype")) == "bfloat16"
    weights = lambda r: sum(f.stat().st_size for f in r.output_dir.glob("*.safetensors"))  # noqa: E731
    assert weights(half) < 0.6 * weights(full)


def test_nothing_there_is_lost(layout, monkeypatch):
    models = layout / "user_data" / "models"
    out = models / "tiny-llama-bob"
    # a model of the user's under that name: never replaced, --overwrite or not
    shutil.copytree(models / "tiny-llama", out)
    for overwrite in (False, True):
        with pytest.raises(UserError, match="no merge wrote .* never replaced"):
            merge(MergeConfig(model_name="tiny-llama", lora_name="bob", overwrite=overwrite))
    shutil.rmtree(out)
    with pytest.raises(UserError, match="base model's own folder"):
        merge(MergeConfig(model_name="tiny-llama", lora_name="bob", output_name="tiny-llama", overwrite=True))

    with one_thread():
        merge(MergeConfig(model_name="tiny-llama", lora_name="bob"))
        with pytest.raises(UserError, match="holds an earlier merge: --overwrite"):
            merge(MergeConfig(model_name="tiny-llama", lora_name="bob"))
        (out / "notes.txt").write_text("mine")
        first = json.loads((out / MERGE_FILE).read_text(encoding="utf-8"))["merged_at"]
        # a merge killed between its two renames set the earlier one aside: it is put back, not replaced
        out.rename(models / ".tiny-llama-bob.old-999999")
        (models / ".tiny-llama-bob.tmp-999999").mkdir()  # and the half-written one goes
        with pytest.raises(UserError, match="holds an earlier merge"):
            merge(MergeConfig(model_name="tiny-llama", lora_name="bob"))
        assert (out / "notes.txt").read_text() == "mine"
        assert sorted(p.name for p in models.iterdir()) == ["tiny-llama", "tiny-llama-bob"]
        assert json.loads((out / MERGE_FILE).read_text(encoding="utf-8"))["merged_at"] == first

        (out / "tiny-llama-bob-Q8_0.gguf").write_bytes(b"GGUF")  # converted into the folder, as llama.cpp does
        result = merge(MergeConfig(model_name="tiny-llama", lora_name="bob", overwrite=True))
        assert result.replaced and (out / MERGE_FILE).is_file()
        assert sorted(p.name for p in models.iterdir()) == ["tiny-llama", "tiny-llama-bob"]
        # what the earlier merge did not write stays in the folder, and the run says so
        assert result.kept == ["notes.txt", "tiny-llama-bob-Q8_0.gguf"]
        assert (out / "notes.txt").read_text() == "mine" and (out / "tiny-llama-bob-Q8_0.gguf").read_bytes() == b"GGUF"
        assert "kept what else was in it: notes.txt, tiny-llama-bob-Q8_0.gguf (a GGUF of the earlier merge" \
            in result.summary()
        # a file the merge wrote and the user edited since (its card): kept beside the new merge's own
        card = (out / "README.md").read_text(encoding="utf-8")
        (out / "README.md").write_text("my notes on Bob", encoding="utf-8")
        result = merge(MergeConfig(model_name="tiny-llama", lora_name="bob", overwrite=True))
        assert result.kept == ["README.md.yours", "notes.txt", "tiny-llama-bob-Q8_0.gguf"]
        assert (out / "README.md.yours").read_text(encoding="utf-8") == "my notes on Bob"
        assert (out / "README.md").read_text(encoding="utf-8").splitlines()[0] == card.splitlines()[0]
        assert "(NAME.yours: your copy of a file the merge writes, beside the new merge's own)" in result.summary()
        (out / "README.md.yours").unlink()
        # a merge killed after putting the new merge in place, before the user's files followed from the
        # earlier one: the next merge (or any) brings them over before it removes the earlier one
        shutil.copytree(out, models / ".tiny-llama-bob.old-999999")
        (out / "notes.txt").unlink()
        (out / "tiny-llama-bob-Q8_0.gguf").unlink()
        result = merge(MergeConfig(model_name="tiny-llama", lora_name="bob", overwrite=True))
        assert result.kept == ["notes.txt", "tiny-llama-bob-Q8_0.gguf"]
        assert (out / "tiny-llama-bob-Q8_0.gguf").read_bytes() == b"GGUF"
        assert sorted(p.name for p in models.iterdir()) == ["tiny-llama", "tiny-llama-bob"]
        # one cut off while removing the earlier merge (its record gone first): what is left is the merge's
        # own, and stays out of the new one (a model.safetensors beside shards would be loaded instead)
        (models / ".tiny-llama-bob.old-999999").mkdir()
        (models / ".tiny-llama-bob.old-999999" / "model-00001-of-00002.safetensors").write_bytes(b"old")
        merge(MergeConfig(model_name="tiny-llama", lora_name="bob", overwrite=True))
        assert not (out / "model-00001-of-00002.safetensors").exists()
        assert sorted(p.name for p in models.iterdir()) == ["tiny-llama", "tiny-llama-bob"]
        # a file of the user's under a name the new merge writes (the earlier one did not): both are kept
        record = json.loads((out / MERGE_FILE).read_text(encoding="utf-8"))
        (out / MERGE_FILE).write_text(json.dumps(dict(record, files=[f for f in record["files"] if f != "README.md"])))
        (out / "README.md").write_text("my notes")
        result = merge(MergeConfig(model_name="tiny-llama", lora_name="bob", overwrite=True))
        assert "README.md.yours" in result.kept and (out / "README.md.yours").read_text() == "my notes"
        assert (out / "README.md").read_text(encoding="utf-8").startswith("# tiny-llama-bob")
        # a merge of this adapter is not given it again (its changes doubled: noise), nor merged into again
        with pytest.raises(UserError, match="already holds adapter 'bob' .merge_lora.py merged it into tiny-llama."):
            merge(MergeConfig(model_name="tiny-llama-bob", lora_name="bob", output_name="twice"))
        from extensions.dialogue_lora.generation import load_for_generation

        with pytest.raises(UserError, match="use 'tiny-llama-bob' alone, or the adapter with 'tiny-llama'"):
            load_for_generation("tiny-llama-bob", "bob", device="cpu")
        # another merge's leftovers whose process is gone (a kill -9): the webui would list them as models
        (models / ".other.tmp-999999999").mkdir()
        (models / ".other.tmp-999999999" / "model.safetensors").write_bytes(b"half")
        merge(MergeConfig(model_name="tiny-llama", lora_name="bob", overwrite=True))
        assert sorted(p.name for p in models.iterdir()) == ["tiny-llama", "tiny-llama-bob"]

    monkeypatch.setattr(merging, "free_bytes", lambda folder: 1 << 20)
    with pytest.raises(UserError, match=r"1.0 MB free, the merged model needs about 6\d MB"):  # margin included
        merge(MergeConfig(model_name="tiny-llama", lora_name="bob", output_name="other"))
    assert not (models / "other").exists()


def test_a_failed_write_leaves_no_folder(layout, monkeypatch):
    from transformers import PreTrainedModel

    def full_disk(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", full_disk)
    with one_thread(), pytest.raises(UserError, match="cannot write the merged model .No space left on device.; "
                                                      "nothing was written"):
        merge(MergeConfig(model_name="tiny-llama", lora_name="bob"))
    assert sorted(p.name for p in (layout / "user_data" / "models").iterdir()) == ["tiny-llama"]


def test_a_folder_opened_in_a_file_manager_is_still_empty(layout):
    """Finder leaves .DS_Store in a folder it showed, Explorer Thumbs.db: the merge was refused as 'holds files
    that no merge wrote', even with --overwrite, over a file the user cannot see."""
    out = layout / "user_data" / "models" / "tiny-llama-bob"
    out.mkdir()
    (out / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (out / "Thumbs.db").write_bytes(b"\xd0\xcf")
    with one_thread():
        result = merge(MergeConfig(model_name="tiny-llama", lora_name="bob"))
    assert result.output_dir == out and result.kept == [] and (out / "config.json").is_file()
    assert result.summary().startswith(f"wrote {out} (")  # not 'replaced': there was no merge
    (out / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")  # and again, beside an earlier merge
    with one_thread():
        again = merge(MergeConfig(model_name="tiny-llama", lora_name="bob", overwrite=True))
    assert again.kept == [] and again.summary().startswith(f"replaced {out} (")


def test_a_merge_that_cannot_go_in_place_leaves_the_earlier_one_as_it_was(layout, monkeypatch):
    """Windows: a program holding the earlier merge's folder open, past replace_folder's retries."""
    from extensions.dialogue_lora import merging

    models = layout / "user_data" / "models"
    with one_thread():
        first = merge(MergeConfig(model_name="tiny-llama", lora_name="bob")).output_dir
    (first / "notes.txt").write_text("mine", encoding="utf-8")
    before = sorted(p.name for p in first.iterdir())
    real = merging.replace_folder

    def held(src, dst):
        if ".tmp-" in src.name:  # the new merge will not go in
            raise PermissionError(13, "Access is denied", str(src))
        real(src, dst)

    monkeypatch.setattr(merging, "replace_folder", held)
    with one_thread(), pytest.raises(UserError, match=r"the merged model could not be put in place \(Access is "
                                                      r"denied\); close what has the folder open"):
        merge(MergeConfig(model_name="tiny-llama", lora_name="bob", overwrite=True))
    assert sorted(p.name for p in first.iterdir()) == before and (first / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in models.iterdir()) == ["tiny-llama", first.name]  # no copy of a model left

    def stuck(src, dst):  # and the earlier merge cannot go back: said where it is, put back by the next merge
        if ".tmp-" in src.name or ".old-" in src.name:
            raise PermissionError(13, "Access is denied", str(src))
        real(src, dst)

    monkeypatch.setattr(merging, "replace_folder", stuck)
    with one_thread(), pytest.raises(UserError, match=r"\(Access is denied\); the earlier merge is set aside as "
                                                      r".*\.tiny-llama-bob\.old-\d+ \(the next merge of this name"):
        merge(MergeConfig(model_name="tiny-llama", lora_name="bob", overwrite=True))
    assert not first.exists()
    monkeypatch.setattr(merging, "replace_folder", real)
    with one_thread(), pytest.raises(UserError, match="holds an earlier merge: --overwrite"):
        merge(MergeConfig(model_name="tiny-llama", lora_name="bob"))
    assert (first / "notes.txt").read_text() == "mine"


def test_no_merge_of_weights_saved_again_while_it_ran(layout, monkeypatch):
    """An --overwrite run of the adapter: a merge is refused while it trains; and weights saved again while
    a merge ran left a merge of the old weights recorded as of the new ones (chat then refused the new
    adapter on it as "already merged"). Nothing is written then."""
    from transformers import PreTrainedModel

    adapter = layout / "user_data" / "loras" / "bob"
    real = PreTrainedModel.save_pretrained

    def saved_again_meanwhile(self, *args, **kwargs):
        real(self, *args, **kwargs)
        weights = adapter / "adapter_model.safetensors"
        weights.write_bytes(weights.read_bytes() + b" ")  # the run's final save: other weights

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", saved_again_meanwhile)
    with one_thread(), pytest.raises(UserError, match=r"bob: saved again while it was merged .*nothing was written"):
        merge(MergeConfig(model_name="tiny-llama", lora_name="bob"))
    models = layout / "user_data" / "models"
    assert sorted(p.name for p in models.iterdir()) == ["tiny-llama"]
    with lock_held_elsewhere(adapter.parent / ".bob.lock.txt") as pid:
        with pytest.raises(UserError, match=rf"^adapter 'bob' is being trained again now \(process {pid}\)"):
            merge(MergeConfig(model_name="tiny-llama", lora_name="bob"))


def test_what_cannot_be_merged(layout):
    loras = layout / "user_data" / "loras"
    pt = loras / "bob-pt"
    pt.mkdir()
    (pt / "adapter_config.json").write_text(json.dumps({"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 8}))
    with pytest.raises(UserError, match="'bob-pt' is prompt tuning, not LoRA"):
        merge(MergeConfig(model_name="tiny-llama", lora_name="bob-pt"))
    # a model stored quantised (unsloth's -bnb-4bit uploads, GPTQ): PEFT would round the adapter away in
    # its 4-bit weights, or fail at the write with an empty message
    models = layout / "user_data" / "models"
    for name, quantization, said in (
            ("tiny-bnb-4bit", {"quant_method": "bitsandbytes", "load_in_4bit": True, "load_in_8bit": False},
             "bitsandbytes 4-bit"),
            ("tiny-gptq", {"quant_method": "gptq", "bits": 4, "group_size": 128}, "gptq 4-bit"),
            ("tiny-awq", {"quant_method": "awq"}, "awq")):
        shutil.copytree(models / "tiny-llama", models / name)
        config = json.loads((models / name / "config.json").read_text(encoding="utf-8"))
        (models / name / "config.json").write_text(json.dumps(dict(config, quantization_config=quantization)))
        with pytest.raises(UserError, match=rf"^model '{name}' is stored quantised \({said}\): the adapter cannot be "
                                            "merged into its weights; merge it into the full-precision model"):
            merge(MergeConfig(model_name=name, lora_name="bob"))
        assert not list(models.glob(f"*{name}-bob*"))
    # a model without its tokenizer: said before minutes of loading (the merged model carries one)
    shutil.copytree(models / "tiny-llama", models / "notok", ignore=shutil.ignore_patterns("tokenizer*", "special*"))
    with pytest.raises(UserError, match=r"notok holds no tokenizer"):
        plan(MergeConfig(model_name="notok", lora_name="bob"))
    with pytest.raises(UserError) as e:
        MergeConfig(model_name="", lora_name="bob", dtype="int4", output_name="../up")
    assert str(e.value).startswith("3 problems") and "--dtype" in str(e.value) and "--output_name" in str(e.value)


@pytest.mark.slow
def test_the_cli(layout):
    def run(*args):
        return subprocess.run([sys.executable, str(ROOT / "merge_lora.py"), *args], cwd=layout, capture_output=True,
                              text=True, timeout=300, env=subprocess_env())

    r = run("-m", "tiny-llama", "-l", "bob", "-o", "Bob model")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("wrote ") and "Bob model" in r.stdout and "speaks as Bob" in r.stdout
    for args, fragment in ((["-m", "tiny-lama", "-l", "bob"], "did you mean 'tiny-llama'"),
                           (["-m", "tiny-llama", "-l", "bob", "-o", "Bob model"], "--overwrite"),
                           (["-m", "tiny-llama", "-l", "bob", "--dtype", "q4"], "--dtype")):
        r = run(*args)
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and fragment in r.stderr, r.stderr


def test_chat_prompts_a_merged_model_as_its_adapter(layout, monkeypatch, capsys):
    """The merge record carries the adapter's characters and instruction line: chat.py without -l builds the
    same prompt as with the adapter (an alpaca adapter's merge was prompted without its line)."""
    import io

    from transformers.utils import logging as hf_logging

    from extensions.dialogue_lora import generation

    sys.path.insert(0, str(ROOT))
    import chat as chat_cli

    params_file = layout / "user_data" / "loras" / "bob" / "training_parameters.json"
    params = json.loads(params_file.read_text(encoding="utf-8"))
    params_file.write_text(json.dumps(dict(params, instruction="Continue the dialogue as {name}.")), encoding="utf-8")
    with one_thread():
        result = merge(MergeConfig(model_name="tiny-llama", lora_name="bob"))
    card = (result.output_dir / "README.md").read_text(encoding="utf-8")
    assert "Continue the dialogue as Bob.\nYou: Hello there.\nBob:\n" in card

    prompts = []
    monkeypatch.setattr(generation, "generate_reply", lambda model, tok, prompt, **kw: (prompts.append(prompt), ("Arr!", True))[1])
    for var in ("TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_NO_ADVISORY_WARNINGS"):
        monkeypatch.delenv(var, raising=False)
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    try:
        monkeypatch.setattr(sys, "stdin", io.StringIO("Where is the boat?\n"))
        assert chat_cli.main(["-m", "tiny-llama-bob", "--user", "Alice", "--device", "cpu"]) == 0
        assert prompts == ["Continue the dialogue as Bob.\nAlice: Where is the boat?\nBob:"]
        assert capsys.readouterr().out == "Bob: Arr!\n"
        monkeypatch.setattr(sys, "stdin", io.StringIO("Hi\n"))
        assert chat_cli.main(["-m", "tiny-llama-bob", "--name", "Carol", "--device", "cpu"]) == 0
        assert "warning: merged model tiny-llama-bob learnt Bob, not Carol" in capsys.readouterr().err
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def test_a_checkpoint_merges_under_its_runs_name(layout):
    loras = layout / "user_data" / "loras"
    shutil.copytree(loras / "bob", loras / "bob2" / "checkpoint-3")
    plan = merging.plan(MergeConfig(model_name="tiny-llama", lora_name=str(loras / "bob2" / "checkpoint-3")))
    assert plan.out.name == "tiny-llama-bob2-checkpoint-3"  # not one name for every run's step 3
