"""Helpers shared by the benchmarks: machine description, measured subprocesses, peak memory, RESULTS.md.

Benchmarks are scripts, not tests: they print their figures and append one section per run to
bench/RESULTS.md (date, machine, settings, figures), so every run so far stays on record.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS = BENCH_DIR / "RESULTS.md"
SHARED_DATA = ROOT.parent / "shared" / "data"

_RESULTS_HEADER = """# Benchmark results

Every run of `bench/prepare_speed.py` and `bench/train_speed.py` appends a section here (newest last):
date, machine, settings and figures. Ratios (`R x floor`, `speedup S`) are measured side by side in one
run, so they hold up better than absolute figures when the machine is shared. See README.md, "Benchmarks".
"""


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def total_ram_gb() -> float | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    except (ValueError, OSError, AttributeError):
        return None


def machine_info(gpu: bool = False) -> str:
    """One line: CPU, cores, RAM, OS, Python, and (when asked and present) torch and the GPU."""
    parts = [f"{cpu_name()}, {os.cpu_count()} cores"]
    ram = total_ram_gb()
    if ram:
        parts.append(f"{ram:.0f} GB RAM")
    parts.append(f"{platform.system()} {platform.release()}")
    parts.append(f"Python {platform.python_version()}")
    if gpu:
        try:
            import torch

            parts.append(f"torch {torch.__version__}")
            if torch.cuda.is_available():
                parts.append(f"GPU {torch.cuda.get_device_name(0)}")
        except ImportError:
            pass
    return ", ".join(parts)


def load_average() -> str:
    """The 1-minute load average: how busy the shared machine was during the run."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "n/a"


def max_rss_mb(ru_maxrss: int) -> float:
    """ru_maxrss is KiB on Linux and bytes on macOS."""
    return ru_maxrss / (1024 * 1024) if sys.platform == "darwin" else ru_maxrss / 1024


def self_peak_rss_mb() -> float:
    return max_rss_mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


@dataclass
class Measured:
    """A finished subprocess: wall seconds, its own peak resident memory (MB), exit code and output."""

    seconds: float
    peak_rss_mb: float
    returncode: int
    stdout: str
    stderr: str

    def check(self, what: str) -> "Measured":
        if self.returncode != 0:
            tail = (self.stderr or self.stdout).strip().splitlines()[-15:]
            raise RuntimeError(f"{what} failed (exit {self.returncode}):\n" + "\n".join(tail))
        return self


def run_measured(cmd: list[str], cwd: str | os.PathLike | None = None, env: dict | None = None) -> Measured:
    """Run `cmd`, timing it and reading the peak RSS of that one child (and its waited-for children).

    `os.wait4` returns the rusage of exactly this child, so a large earlier run does not leak into a
    later reading the way RUSAGE_CHILDREN's running maximum would. Output goes to temporary files (no
    pipe to fill up while we wait).
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Measured(seconds, max_rss_mb(usage.ru_maxrss), proc.returncode, out.read(), err.read())


def child_env(**extra: str) -> dict:
    """The environment for measured children: offline, repo root importable, no tokenizer threads."""
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True,
            timeout=10,
        )
        sha = out.stdout.strip() or "unknown"
        return sha + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def append_results(title: str, settings: dict, figures: list[str], machine: str | None = None,
                   path: Path = RESULTS) -> Path:
    """Append one run to RESULTS.md: a heading with the UTC date, machine, settings and figure lines."""
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"## {now}: {title}", ""]
    lines.append(f"- machine: {machine or machine_info()} (load {load_average()})")
    lines.append(f"- commit: {git_commit()}")
    lines.append("- settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    lines.append("")
    lines.append("```")
    lines.extend(figures)
    lines.append("```")
    lines.append("")
    text = "\n".join(lines) + "\n"
    before = path.read_text(encoding="utf-8") if path.exists() else ""
    if not before.strip():
        text = _RESULTS_HEADER + "\n" + text
    elif not before.endswith("\n\n"):  # a hand-written note above may end without a blank line
        text = ("\n" if before.endswith("\n") else "\n\n") + text
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)
    return path
