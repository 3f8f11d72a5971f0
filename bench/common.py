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


class Preloaded:
    """Python scripts run as processes forked from a server that has imported `modules` already.

    Importing torch, transformers and peft takes 10-15 s on a 2-core machine (peft pulls in
    bitsandbytes, and bitsandbytes torch's compiler): a benchmark of six measured runs spent more time
    importing than training. The server imports once, runs nothing else (no torch operation, so no
    thread pool for a fork to break), and forks a child per job. Each job is still a process of its
    own, run as `python script args` would run it and waited for with wait4 like run_measured, so its
    peak memory is its own (the imported modules included, as in a fresh process).

        with Preloaded(["torch", "peft"], env=child_env()) as server:
            m = server.run(script, ["--flag"], cwd=tmp)
    """

    def __init__(self, modules: list[str], env: dict | None = None):
        # started, not waited for: the caller's own set-up runs while the server imports
        self._proc = subprocess.Popen(
            [sys.executable, "-c", "from bench.common import _preload_server; _preload_server()", *modules],
            cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        self._ready = False

    def run(self, script: str | os.PathLike, args: list[str], cwd: str | os.PathLike | None = None) -> Measured:
        """Run `script` with `args` in a forked child; like run_measured, but without the imports' time."""
        import json

        if not self._ready:
            said = self._proc.stdout.readline().strip()
            if said != "ready":
                raise RuntimeError(f"the preloading server did not start (it said {said!r}; its errors are above)")
            self._ready = True
        with tempfile.TemporaryDirectory(prefix="preloaded.") as tmp:
            out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
            job = {"script": str(script), "args": [str(a) for a in args], "cwd": str(cwd or ROOT),
                   "stdout": str(out), "stderr": str(err)}
            self._proc.stdin.write(json.dumps(job) + "\n")
            self._proc.stdin.flush()
            line = self._proc.stdout.readline()
            if not line:
                raise RuntimeError("the preloading server stopped (its errors are above)")
            r = json.loads(line)
            return Measured(r["seconds"], max_rss_mb(r["ru_maxrss"]), r["returncode"],
                            out.read_text(errors="replace"), err.read_text(errors="replace"))

    def close(self) -> None:
        if self._proc.stdin and not self._proc.stdin.closed:
            self._proc.stdin.close()
        self._proc.wait()

    def __enter__(self) -> "Preloaded":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _preload_server() -> None:
    """Preloaded's server: import argv's modules, then one forked child per job line on stdin."""
    import importlib
    import json

    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # what the imports print must not mix with the replies
    from extensions.dialogue_lora.modeling import quiet_known_notices

    quiet_known_notices()  # as the project's own runs do (bitsandbytes' kernel-hub notice on AVX512-BF16 CPUs)
    for name in sys.argv[1:]:
        importlib.import_module(name)
    replies.write("ready\n")
    replies.flush()
    for line in sys.stdin:
        job = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        t0 = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            replies.close()
            os._exit(_preloaded_child(job))
        _, status, usage = os.wait4(pid, 0)
        replies.write(json.dumps({"seconds": time.perf_counter() - t0, "ru_maxrss": usage.ru_maxrss,
                                  "returncode": os.waitstatus_to_exitcode(status)}) + "\n")
        replies.flush()


def _preloaded_child(job: dict) -> int:
    """In the forked child: become `python script args` (cwd, output files, argv, sys.path) and run it."""
    import runpy
    import traceback

    code = 1
    try:
        os.chdir(job["cwd"])
        fd = os.open(os.devnull, os.O_RDONLY)
        os.dup2(fd, 0)  # stdin was the job pipe
        os.close(fd)
        for target, path in ((1, job["stdout"]), (2, job["stderr"])):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, target)
            os.close(fd)
        sys.argv = [job["script"], *job["args"]]
        sys.path[0] = str(Path(job["script"]).resolve().parent)
        try:
            runpy.run_path(job["script"], run_name="__main__")
            code = 0
        except SystemExit as e:
            if e.code is None or isinstance(e.code, int):
                code = e.code or 0
            else:
                print(e.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - what python itself would print for an uncaught error
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
    return code


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
