"""Smoke tests of the benchmark helpers (bench/): the generator, the floor, measuring, recording, FLOPs.

No timings are asserted here: the benchmarks themselves print and record those (bench/RESULTS.md).
"""
from __future__ import annotations

import json
import sys

import pytest

from bench import common, prepare_speed, train_speed


def test_generator_is_dialogue_and_reproducible():
    lines = list(prepare_speed.generate_lines(4000, seed=1))
    assert len(lines) == 4000
    assert lines == list(prepare_speed.generate_lines(4000, seed=1))
    assert all("\n" not in line for line in lines)
    names = {s for s, _ in prepare_speed.SPEAKERS}
    turns = [line for line in lines if line.split(":", 1)[0] in names]
    narration = [line for line in lines if line and line.split(":", 1)[0] not in names]
    assert len(turns) > 0.9 * len(lines)
    assert narration, "some narration lines"
    assert set(line.split(":", 1)[0] for line in turns) == names
    counts = {n: sum(1 for line in turns if line.startswith(n + ":")) for n in names}
    assert max(counts, key=counts.get) == prepare_speed.TARGET
    lengths = sorted(len(line) for line in turns)
    assert lengths[len(lengths) // 2] < 80 < lengths[-1], "a realistic spread: short median, long tail"


def test_floor_writes_one_json_object_per_line(tmp_path):
    src, dst = tmp_path / "d.txt", tmp_path / "floor.jsonl"
    prepare_speed.write_dialogue(src, 3000, seed=2)
    m = common.run_measured(prepare_speed.floor_cmd(src, dst)).check("the floor")
    assert m.peak_rss_mb > 1 and m.seconds > 0
    src_lines = src.read_text(encoding="utf-8").splitlines()
    out = [json.loads(line) for line in dst.read_text(encoding="utf-8").splitlines()]
    assert len(out) == len(src_lines) == 3000
    first = src_lines[0]
    assert out[0] == {"name": first.partition(":")[0], "text": first.partition(":")[2].strip()}


def test_run_measured_reports_failure(tmp_path):
    m = common.run_measured([sys.executable, "-c", "import sys; print('boom', file=sys.stderr); sys.exit(3)"])
    assert m.returncode == 3
    with pytest.raises(RuntimeError, match="exit 3"):
        m.check("a failing child")


def test_preloaded_runs_a_script_as_python_would(tmp_path):
    """A job forked from the preloading server: its own argv, cwd, output, exit code and peak memory."""
    script = tmp_path / "job.py"
    script.write_text(
        "import os, sys, json\n"
        "print(json.dumps({'argv': sys.argv[1:], 'cwd': os.getcwd(), 'name': __name__}))\n"
        "if sys.argv[1] == 'fail': raise ValueError('bad input')\n"
        "if sys.argv[1] == 'message': sys.exit('a message')\n"
        "block = bytearray(60 * 2**20); block[::4096] = b'x' * len(block[::4096])\n"
        "sys.exit(int(sys.argv[1]))\n", encoding="utf-8")
    with common.Preloaded(["json"], env=common.child_env()) as server:
        ok = server.run(script, ["0", "two words"], cwd=tmp_path)
        three = server.run(script, ["3"], cwd=tmp_path)
        fail = server.run(script, ["fail"], cwd=tmp_path)
        message = server.run(script, ["message"], cwd=tmp_path)
    assert ok.returncode == 0 and ok.check("ok") is ok
    assert json.loads(ok.stdout) == {"argv": ["0", "two words"], "cwd": str(tmp_path), "name": "__main__"}
    assert ok.peak_rss_mb > 60  # the job's own peak: the 60 MB it touched
    assert three.returncode == 3
    assert fail.returncode == 1 and "ValueError: bad input" in fail.stderr
    assert message.returncode == 1 and "a message" in message.stderr
    with pytest.raises(RuntimeError, match="exit 1"):
        fail.check("a failing job")


def test_append_results_keeps_every_run(tmp_path):
    path = tmp_path / "RESULTS.md"
    common.append_results("first", {"lines": 10}, ["prepare: 1 lines/s, 1.00 x floor"], machine="test box", path=path)
    common.append_results("second", {"lines": 20}, ["speedup 2.00"], machine="test box", path=path)
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# Benchmark results")
    assert text.count("# Benchmark results") == 1
    assert text.index("first") < text.index("second")
    assert "lines=20" in text and "speedup 2.00" in text and "test box" in text


def test_append_results_starts_a_heading_after_a_note_without_blank_line(tmp_path):
    path = tmp_path / "RESULTS.md"
    common.append_results("first", {"lines": 10}, ["speedup 1.00"], machine="test box", path=path)
    path.write_text(path.read_text(encoding="utf-8") + "A note written by hand.", encoding="utf-8")
    common.append_results("second", {"lines": 20}, ["speedup 2.00"], machine="test box", path=path)
    text = path.read_text(encoding="utf-8")
    assert "A note written by hand.\n\n## " in text


def test_peak_table_and_flops():
    assert train_speed.peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert train_speed.peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert train_speed.peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert train_speed.peak_tflops("Tesla T4") == 65.0
    assert train_speed.peak_tflops("AMD Instinct MI250X") == 383.0  # not MI250's
    assert train_speed.peak_tflops("AMD Instinct MI300X") == 1307.0
    assert train_speed.peak_tflops("Some Future Card") is None
    cfg = train_speed.SHAPES["llama3-8b"]
    # Llama 3 8B: 8.03B weights, of which 0.53B are the input embedding (a lookup, not a matmul)
    assert train_speed.matmul_params(cfg) == pytest.approx(8.03e9 - 128256 * 4096, rel=0.01)
    fpt = train_speed.flops_per_token(cfg, 2048, 16)
    assert 4 * 7.5e9 < fpt < 4 * 7.5e9 * 1.15


def test_cuda_mode_without_cuda_is_one_clear_line(capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert train_speed.main(["--device", "cuda", "--shape", "llama3-8b", "--no_record"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --device cuda needs a CUDA GPU")


def test_mps_without_a_shape_is_refused_rather_than_timing_the_cpu(capsys):
    with pytest.raises(SystemExit) as e:
        train_speed.parse_args(["--device", "mps"])
    assert e.value.code == 2 and "--device mps: give --shape" in capsys.readouterr().err


def test_gpu_mode_makes_the_named_gpu_current(monkeypatch):
    """`--device cuda` (the README's command) is the current GPU, `cuda:1` the second: torch's set_device
    refuses a CUDA device without an index, so a bare `cuda` failed before the first step."""
    torch = pytest.importorskip("torch")
    made = []
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: made.append(d) if d.index is not None else
                        (_ for _ in ()).throw(ValueError("Expected a torch.device with a specified index")))
    assert train_speed.gpu_of("cuda") == torch.device("cuda", 0)
    assert train_speed.gpu_of("cuda:1") == torch.device("cuda", 1)
    assert made == [torch.device("cuda", 0), torch.device("cuda", 1)]
    assert train_speed.gpu_of("cpu") == torch.device("cpu") and len(made) == 2


def test_train_speed_median_run_and_repeat_flag():
    rs = [{"samples": 8, "samples_per_s": x, "tokens_per_s": 10 * x, "cpu_samples_per_s": x / 2, "job_s": 1.0,
           "peak_rss_mb": 100.0} for x in (3.0, 1.0, 2.0)]
    m = train_speed._median_run(rs)
    assert m["samples_per_s"] == 2.0 and m["tokens_per_s"] == 20.0 and m["samples"] == 8
    with pytest.raises(SystemExit):
        train_speed.parse_args(["--repeat", "0"])
    with pytest.raises(SystemExit):
        train_speed.parse_args(["--profile", "-1"])


@pytest.mark.slow
def test_gpu_mode_path_runs_on_the_cpu_with_the_tiny_shape(capsys):
    """The GPU mode's code (random model from a config, our LoRA forward, timed steps, MFU figures) on a
    small shape, both modes, so that a GPU session starts from a path known to run."""
    rc = train_speed.main(["--device", "cpu", "--shape", "llama-tiny", "--seq", "64", "--steps", "2", "--warmup", "1",
                           "--profile", "1", "--no_record"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "profile of 1 step(s), operators by own CPU time:" in out and "aten::mm" in out
    lora = next(line for line in out.splitlines() if line.startswith("lora "))
    qlora = next(line for line in out.splitlines() if line.startswith("qlora"))
    assert "tokens/s" in lora and "fused LoRA forward on 28 layers" in lora  # 4 layers x 7 projections
    assert "fused LoRA forward on 0 layers" in qlora  # a 4-bit base keeps PEFT's forward


def test_gpu_mode_defaults_size_the_batch_to_the_card_and_compile_bf16_lora_on_cuda():
    """bf16 LoRA's MFU levels off from 4 rows (52.0% at 4 on an H200, 44.5% at 1): the default takes the
    largest of 4, 2, 1 rows that fits the card; QLoRA keeps 1 row, its memory target's set-up."""
    cfg = train_speed.SHAPES["llama3-8b"]
    gib = 2**30
    cards = {"H200": 140, "H100 80GB": 79.6, "A100 40GB": 39.4, "L40S 48GB": 44.4, "RTX 4090": 24}
    fused = {name: train_speed.auto_batch("lora", cfg, 2048, 16, mem * gib, fused_loss=True) for name, mem in cards.items()}
    assert fused == {"H200": 4, "H100 80GB": 4, "A100 40GB": 2, "L40S 48GB": 2, "RTX 4090": 1}
    # without liger the 128k-wide logits and their gradient come on top of every row
    plain = {name: train_speed.auto_batch("lora", cfg, 2048, 16, mem * gib, fused_loss=False) for name, mem in cards.items()}
    assert plain == {"H200": 4, "H100 80GB": 2, "A100 40GB": 1, "L40S 48GB": 1, "RTX 4090": 1}
    assert train_speed.auto_batch("qlora", cfg, 2048, 16, 140 * gib, fused_loss=True) == 1
    assert train_speed.auto_batch("lora", cfg, 2048, 16, None, fused_loss=True) == 1  # CPU, mps: nothing to size
    # measured peaks (MiB) at 1 row and more: the estimate keeps above each, within a margin
    weights = 2 * (train_speed.matmul_params(cfg) + 128256 * 4096) + 16 * train_speed.lora_params(cfg, 16)
    row = train_speed.ACT_BYTES_PER_TOKEN_LAYER_UNIT * 2048 * 32 * 4096
    logits = train_speed.LOGIT_BYTES_PER_TOKEN_WORD * 2048 * 128256
    for rows, measured, extra in ((1, 24844, 0), (4, 51551, 0), (8, 87161, 0),  # H200, liger's loss (compiled)
                                  (4, 51072, 0),  # H200, liger eager
                                  (1, 30490, logits), (4, 62935, logits)):  # H100, no liger (eager; compiled)
        estimate = weights + rows * (row + extra)
        assert measured * 2**20 < estimate < 1.25 * measured * 2**20, (rows, measured)
    assert train_speed.compile_for("auto", "lora", "cuda") == "on"
    assert train_speed.compile_for("auto", "lora", "cuda:1") == "on"
    assert train_speed.compile_for("auto", "qlora", "cuda") == "off"  # not timed compiled
    assert train_speed.compile_for("auto", "lora", "cpu") == "off"
    assert train_speed.compile_for("off", "lora", "cuda") == "off"
    assert train_speed.parse_args(["--device", "cuda", "--compile"]).compile == "on"  # the older bare flag
    assert train_speed.parse_args(["--device", "cuda"]).batch is None
    with pytest.raises(SystemExit):
        train_speed.parse_args(["--device", "cuda", "--batch", "0"])


def test_gpu_mode_passes_each_mode_its_compile_choice_and_leaves_the_batch_to_the_worker(monkeypatch, capsys):
    seen = []

    class Failed:
        returncode, stdout, stderr, peak_rss_mb = 1, "", "boom", 0.0

    monkeypatch.setattr(train_speed, "run_measured", lambda cmd, **kw: seen.append(cmd) or Failed())
    assert train_speed.run_gpu(train_speed.parse_args(["--device", "cuda", "--no_record"])) == 1
    lora, qlora = seen
    assert lora[lora.index("--compile") + 1] == "on" and qlora[qlora.index("--compile") + 1] == "off"
    assert "--batch" not in lora and "--batch" not in qlora  # sized in the worker, against its card
    seen.clear()
    train_speed.run_gpu(train_speed.parse_args(["--device", "cuda", "--no_record", "--batch", "2", "--compile", "off"]))
    assert all(c[c.index("--batch") + 1] == "2" and c[c.index("--compile") + 1] == "off" for c in seen)
    assert "lora: FAILED (exit 1): boom" in capsys.readouterr().out


def test_gpu_mode_out_of_memory_is_one_line_not_a_compile_fallback(monkeypatch):
    """Memory running out in a step says which batch to lower (it was taken for a compiler failure and
    retried eager inside the handler, which still held the failed step's tensors)."""
    torch = pytest.importorskip("torch")

    def full(*a, **k):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(torch.optim.AdamW, "step", full)
    args = train_speed.parse_args(["--device", "cpu", "--shape", "llama-tiny", "--seq", "32", "--steps", "1",
                                   "--warmup", "1", "--compile", "on"])
    args.mode = "lora"
    with pytest.raises(SystemExit, match=r"^error: out of memory at 1 row\(s\) of 32 tokens: pass a smaller --batch"):
        train_speed.worker_gpu(args)
