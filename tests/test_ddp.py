"""The command line in real processes: two-process DDP under torchrun (gloo, CPU), --stop_file,
--progress_file and --resume, Ctrl+C, and one-line errors."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_training import TINY_LR, bob_records  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture
def work(webui_root):
    data = webui_root / "user_data" / "training" / "datasets" / "bob.json"
    data.write_text(json.dumps(bob_records(48, 1)))
    return webui_root


def _env():
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.pop("RANK", None), env.pop("WORLD_SIZE", None), env.pop("LOCAL_RANK", None)
    return env


ARGS = ["-d", "bob.json", "-m", "tiny-llama", "-b", "4", "-e", "2", "--learning_rate", str(TINY_LR)]


def test_torchrun_two_processes(work):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           str(ROOT / "lora_finetune.py"), *ARGS, "-l", "ddp", "--progress_file", "progress.jsonl"]
    p = subprocess.run(cmd, cwd=work, env=_env(), capture_output=True, text=True, timeout=400)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    out = work / "user_data" / "loras" / "ddp"
    params = json.loads((out / "training_parameters.json").read_text())
    assert params["world_size"] == 2
    # 48 samples, 2 held out: 46 -> 12 batches of 4, split over 2 processes -> 6 steps an epoch
    assert params["steps_per_epoch"] == 6 and params["total_steps"] == 12
    events = [json.loads(l) for l in (work / "progress.jsonl").read_text().splitlines()]
    steps = [e["step"] for e in events if e["event"] == "step"]
    assert steps == list(range(1, 13))  # only rank 0 reports: no step twice
    assert p.stdout.count("adapter saved in") == 1  # only rank 0 prints
    log = json.loads((out / "training_log.json").read_text())
    assert [e["event"] for e in events if e["event"] == "start"] == ["start"]  # once: rank 0's
    base = next(e for e in events if e.get("base"))
    assert len(log["evals"]) == 2 and log["evals"][-1]["eval_loss"] < base["eval_loss"]
    from peft import PeftConfig

    assert PeftConfig.from_pretrained(str(out)).peft_type == "LORA"
    # each step covers the batches one process takes with --grad_accum 2, and its loss is the mean over
    # all their target tokens: the same adapter (a mean of each process's own mean weighed a process with
    # few targets more)
    p = _cli([*ARGS, "-l", "one", "--grad_accum", "2"], work)
    assert p.returncode == 0, p.stderr[-3000:]
    from safetensors.torch import load_file

    two, one = (load_file(str(work / "user_data" / "loras" / n / "adapter_model.safetensors")) for n in ("ddp", "one"))
    assert two.keys() == one.keys()
    for k in two:
        assert (two[k] - one[k]).abs().max() < 1e-4, k


def _free_port() -> int:
    """A port no one listens on now: a fixed one failed when two test runs met (EADDRINUSE)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(args, cwd, **kw):
    return subprocess.run([sys.executable, str(ROOT / "lora_finetune.py"), *args], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=400, **kw)


def _wait_for_a_step(progress: Path, proc: subprocess.Popen) -> None:
    deadline = time.time() + 300
    while time.time() < deadline:
        if progress.exists() and '"event": "step"' in progress.read_text():
            return
        if proc.poll() is not None:  # it failed before its first step: its error, not 300 s of waiting
            raise AssertionError(f"the run ended (code {proc.returncode}) before a step: {proc.stderr.read()[-2000:]}")
        time.sleep(0.2)
    raise AssertionError(f"no step in {progress} after 300 s")


def test_a_stop_file_left_from_before_is_refused(work):
    (work / "STOP").write_text("")  # an earlier run's: it would stop this one at once, every time
    p = _cli([*ARGS, "-l", "early", "--stop_file", "STOP"], work)
    assert p.returncode == 2 and p.stderr == "error: --stop_file STOP exists already: delete it first (it asks a run to stop)\n"
    assert not (work / "user_data" / "loras" / "early").exists()
    # one file for both: the first progress line would be the stop
    p = _cli([*ARGS, "-l", "early", "--stop_file", "p.jsonl", "--progress_file", "./p.jsonl"], work)
    assert p.returncode == 2 and p.stderr.startswith("error: --progress_file and --stop_file are one file (p.jsonl)")


def test_a_progress_file_that_holds_something_else_is_refused_and_kept(work):
    """It is appended to: a dataset or an adapter's config given by mistake got JSON lines at its end."""
    mine = work / "notes.txt"
    mine.write_text("Bob: my own notes\n")
    p = _cli([*ARGS, "-l", "early", "--progress_file", "notes.txt"], work)
    assert p.returncode == 2 and p.stderr == ("error: --progress_file notes.txt is a file of another kind (not a "
                                              "progress log this tool wrote): give a new file's name, or an earlier "
                                              "run's progress log\n")
    assert mine.read_text() == "Bob: my own notes\n" and not (work / "user_data" / "loras" / "early").exists()
    # a pipe a monitor reads is not read first (that would wait for a writer): its events go to it
    if hasattr(os, "mkfifo"):
        os.mkfifo(work / "fifo")
        reader = subprocess.Popen(["cat", str(work / "fifo")], stdout=subprocess.PIPE, text=True)
        p = _cli([*ARGS, "-l", "early", "--progress_file", "fifo", "--lora_rank", "0"], work)
        assert p.returncode == 2 and '"event": "error"' in reader.communicate(timeout=60)[0]
    # /dev/stdout sent to a log file with other lines in it: the run's own output, not a file of the user's
    log = work / "out.log"
    log.write_text("nohup: ignoring input\n")
    with open(log, "a") as out:
        p = subprocess.run([sys.executable, str(ROOT / "lora_finetune.py"), *ARGS, "-l", "early", "--progress_file",
                            "/dev/stdout", "--lora_rank", "0"], cwd=work, env=_env(), stdout=out, stderr=subprocess.PIPE,
                           text=True, timeout=400)
    assert p.returncode == 2 and "--lora_rank" in p.stderr and '"event": "error"' in log.read_text()
    # an earlier run's log is appended to (a resumed run's events follow the stopped one's)
    (work / "p.jsonl").write_text('{"event": "error", "message": "x"}\n')
    p = _cli([*ARGS, "-l", "early", "--progress_file", "p.jsonl", "--lora_rank", "0"], work)
    assert p.returncode == 2 and (work / "p.jsonl").read_text().count('"event": "error"') == 2


def test_stop_file_then_resume(work):
    proc = subprocess.Popen([sys.executable, str(ROOT / "lora_finetune.py"), *ARGS, "-e", "10", "-l", "s",
                             "--stop_file", "STOP", "--progress_file", "p.jsonl"], cwd=work, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_a_step(work / "p.jsonl", proc)
    (work / "STOP").write_text("")
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-2000:]
    out = work / "user_data" / "loras" / "s"
    assert list(out.glob("checkpoint-*")) and not (out / "adapter_model.safetensors").exists()
    assert "--resume, once STOP is deleted" in stdout
    events = [json.loads(l) for l in (work / "p.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events][-2:] == ["save", "done"] and events[-1]["stopped"]
    # the same command again is refused (the folder is not empty) ...
    again = _cli([*ARGS, "-l", "s"], work)
    assert again.returncode == 2 and "--resume" in again.stderr and "Traceback" not in again.stderr
    # ... and continues with --resume
    (work / "STOP").unlink()
    p = _cli([*ARGS, "-e", "10", "-l", "s", "--resume"], work)
    assert p.returncode == 0, p.stderr[-2000:]
    assert (out / "adapter_model.safetensors").is_file() and not list(out.glob("checkpoint-*"))
    params = json.loads((out / "training_parameters.json").read_text())
    assert params["steps"] == params["total_steps"] == 10 * params["steps_per_epoch"]


def test_ctrl_c_saves_a_checkpoint(work):
    proc = subprocess.Popen([sys.executable, str(ROOT / "lora_finetune.py"), *ARGS, "-e", "50", "-l", "c",
                             "--progress_file", "c.jsonl"], cwd=work, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_a_step(work / "c.jsonl", proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-2000:]
    assert "checkpoint saved" in err and "Traceback" not in err and "error:" not in err
    assert list((work / "user_data" / "loras" / "c").glob("checkpoint-*"))


def test_cli_errors_are_one_line(work):
    p = _cli(["-d", "bob.json", "-m", "nope", "-l", "x", "--load_in_4bit", "--load_in_8bit"], work)
    assert p.returncode == 2 and p.stderr.startswith("error:") and "Traceback" not in p.stderr
    assert "--load_in_4bit and --load_in_8bit" in p.stderr
    p = _cli(["-d", "missing.json", "-m", "nope", "-l", "x"], work)
    assert p.returncode == 2 and "missing.json" in p.stderr and "tiny-llama" in p.stderr
    assert not (work / "user_data" / "loras" / "x").exists()
    # flags another method would read, a device that is not here, a folder as the dataset: one line each
    for bad, words in ((["--method", "prompt_tuning", "-r", "8"], "--lora_rank: not used by --method prompt_tuning"),
                       (["--num_virtual_tokens", "5"], "--num_virtual_tokens: not used by --method lora"),
                       (["--method", "prompt_tuning", "--lora_rank", "16"], "--lora_rank: not used"),  # the default, typed
                       (["--target_modules", ""], "argument --target_modules: takes layer names"),
                       (["--device", "cuda:7"], "--device cuda:7: "),
                       (["-c", "0"], "--cutoff_len must be a whole number >= 1 (got 0)"),
                       (["-d", "user_data"], "is a folder: give a .json or .jsonl file"),
                       (["--resume"], "--resume: there is no run of 'y'"),
                       (["--progress_file", "no/such/folder/p.jsonl"], "--progress_file no/such/folder/p.jsonl: cannot write"),
                       (["--name", "Bob:"], "--name 'Bob:' must not contain ':'"),
                       (["--epochs", "two"], "argument --epochs/-e: invalid int value: 'two' (see --help)")):
        p = _cli([*ARGS, "-l", "y", *bad], work)
        assert p.returncode == 2 and p.stderr.startswith("error:") and words in p.stderr, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert not (work / "user_data" / "loras" / "y").exists()
    h = _cli(["--help"], work)
    assert h.returncode == 0 and "--num_virtual_tokens" in h.stdout and "--stop_file" in h.stdout


def test_every_user_error_reaches_the_progress_file(tmp_path, monkeypatch):
    """A tool watching --progress_file learns why a run ended, whatever the error: a flag, a setting, the data."""
    import lora_finetune
    from extensions.dialogue_lora.errors import UserError

    monkeypatch.chdir(tmp_path)
    events = tmp_path / "p.jsonl"
    (tmp_path / "STOP").write_text("")
    for bad, words in ((["--stop_file", "STOP"], "--stop_file STOP exists already"),
                       (["-e", "0"], "--epochs"),
                       (["--load_in_4bit", "--load_in_8bit"], "--load_in_4bit and --load_in_8bit"),
                       (["--learning_rate", "abc"], "invalid float value: 'abc'"),
                       ([], "model 'nope' not found")):
        events.unlink(missing_ok=True)
        with pytest.raises(UserError, match=re.escape(words)):
            lora_finetune.main(["-m", "nope", "-l", "x", "--progress_file", str(events), *bad])
        assert [json.loads(line)["event"] for line in events.read_text().splitlines()] == ["error"], bad
        assert words in json.loads(events.read_text())["message"]


def test_ctrl_c_before_the_first_step_says_nothing_new_is_saved(capsys):
    import lora_finetune

    stopper = lora_finetune._Stopper(None)
    stopper.stepping = lambda: False  # the model is loading
    stopper._handler(signal.SIGINT, None)
    assert stopper() and capsys.readouterr().err == (
        "\nstopping before the first step (the model is loading): nothing new will be saved (Ctrl+C again to quit at "
        "once)\n")
    stopper = lora_finetune._Stopper(None)
    stopper._handler(signal.SIGTERM, None)
    assert capsys.readouterr().err.startswith("\nstopping after the current step with a checkpoint")


def test_a_second_ctrl_c_says_what_is_kept(work, monkeypatch, capsys):
    """The second Ctrl+C quits without saving: the message names the latest checkpoint there is."""
    import lora_finetune
    from extensions.dialogue_lora import training
    from extensions.dialogue_lora.errors import run_cli

    (work / "user_data" / "loras" / "q" / "checkpoint-7").mkdir(parents=True)
    (work / "user_data" / "loras" / "q" / "checkpoint-7" / "trainer_state.json").write_text("{}")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.chdir(work)
    monkeypatch.setattr(training, "train", interrupted)
    assert run_cli(lora_finetune.main, [*ARGS, "-l", "q", "--resume"]) == 130
    err = capsys.readouterr().err
    assert err.startswith("quit at once: nothing more was saved; the latest checkpoint is ")
    assert "checkpoint-7 (--resume continues from it)" in err


def test_a_quit_in_the_final_save_says_the_adapter_is_kept(work, monkeypatch, capsys):
    """A second signal while the finished adapter is swapped into place: it is saved (the next run puts it
    there), not lost; a second SIGTERM exits as SIGTERM does."""
    import lora_finetune
    from extensions.dialogue_lora import paths, training
    from extensions.dialogue_lora.errors import run_cli

    loras = work / "user_data" / "loras"
    tmp = loras / ".q.tmp-4242"
    tmp.mkdir(parents=True)
    (tmp / "README.md").write_text(f"# q\n\n{paths.CARD_MARK}\n")
    stoppers = []

    def quit_in_save(*args, should_stop=None, **kwargs):
        stopper = should_stop
        stoppers.append(stopper)
        stopper._handler(signal.SIGTERM, None)
        stopper._handler(signal.SIGTERM, None)  # raises KeyboardInterrupt, as the second one does

    monkeypatch.chdir(work)
    monkeypatch.setattr(training, "train", quit_in_save)
    monkeypatch.setattr(lora_finetune._Stopper, "install", lambda self: None)
    assert run_cli(lora_finetune.main, [*ARGS, "-l", "q"]) == 143
    err = capsys.readouterr().err
    assert "quit at once: the finished adapter is saved but not yet in place as " in err
    assert "run lora_finetune.py with -l q again and it is put there before anything else" in err
    # the swap done, its old folder being deleted: the adapter is in place
    tmp.rename(loras / "q")
    monkeypatch.setattr(training, "train", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    assert run_cli(lora_finetune.main, [*ARGS, "-l", "q", "--overwrite"]) == 130
    assert "quit at once: the adapter was saved in " in capsys.readouterr().err


def test_a_stop_while_a_resumed_run_loads_says_its_checkpoint_is_as_it_was(work, monkeypatch, capsys):
    import lora_finetune
    from extensions.dialogue_lora import training
    from extensions.dialogue_lora.errors import run_cli

    checkpoint = work / "user_data" / "loras" / "r" / "checkpoint-4"

    def stopped_while_loading(cfg, on_progress=None, should_stop=None):
        should_stop._handler(signal.SIGINT, None)  # before any `begin` event
        return training.TrainResult(checkpoint.parent, 4, 40, stopped=True, checkpoint=checkpoint)

    monkeypatch.chdir(work)
    monkeypatch.setattr(training, "train", stopped_while_loading)
    monkeypatch.setattr(lora_finetune._Stopper, "install", lambda self: None)
    assert run_cli(lora_finetune.main, [*ARGS, "-l", "r", "--resume"]) == 130
    err = capsys.readouterr().err
    assert "nothing new was saved; " in err and "checkpoint-4 (step 4/40) is as it was; continue with the same command" in err
    assert "checkpoint saved in" not in err


def test_max_steps_with_epochs_says_the_epochs_are_not_used(work, monkeypatch, capsys):
    import lora_finetune
    from extensions.dialogue_lora import training
    from extensions.dialogue_lora.errors import run_cli

    ran = {}

    def fake_train(cfg, **kwargs):
        ran["cfg"] = cfg
        raise training.UserError("stopped by the test")

    monkeypatch.chdir(work)
    monkeypatch.setattr(training, "train", fake_train)
    assert run_cli(lora_finetune.main, [*ARGS, "-l", "n", "--max_steps", "3"]) == 2
    assert "note: --max_steps 3 sets the run's length; --epochs 2 is not used" in capsys.readouterr().err
    assert run_cli(lora_finetune.main, ["-d", "bob.json", "-m", "tiny-llama", "-l", "n", "--max_steps", "3"]) == 2
    assert "note:" not in capsys.readouterr().err
    # typed, even at its default value
    assert run_cli(lora_finetune.main, ["-d", "bob.json", "-m", "tiny-llama", "-l", "n", "-e", "10", "--max_steps", "3"]) == 2
    assert "note: --max_steps 3 sets the run's length; --epochs 10 is not used" in capsys.readouterr().err
