"""Long jobs (training, evaluation, merging) in a separate Python process, watched through a progress file.

The tab must survive whatever the job does: an out-of-memory error, a crash in a CUDA kernel, a killed
process. So the job runs in its own interpreter (`worker.py`, imported by path from this folder, so it
works whether the folder is `extensions/dialogue_lora` or `user_data/extensions/dialogue_lora`), gets its
settings as a JSON file, appends progress dicts as JSON lines to a file, and stops (saving a checkpoint)
when a stop file appears. The tab polls the progress file; a page reload re-attaches to the running job.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path

from .errors import UserError

PACKAGE_DIR = Path(__file__).resolve().parent
# Import this folder as a package by path in a fresh interpreter, then run worker.main(argv).
_BOOT = (
    "import importlib.util, sys\n"
    "d = sys.argv[1]\n"
    "spec = importlib.util.spec_from_file_location('dialogue_lora', d + '/__init__.py', "
    "submodule_search_locations=[d])\n"
    "m = importlib.util.module_from_spec(spec); sys.modules['dialogue_lora'] = m; spec.loader.exec_module(m)\n"
    "from dialogue_lora.worker import main\n"
    "sys.exit(main(sys.argv[2:]))\n"
)

# Set in a worker's environment: its stdin is a pipe from the app, closed when the app ends (worker.py).
PARENT_PIPE = "DIALOGUE_LORA_PARENT_PIPE"
_jobs: dict[str, "Job"] = {}  # the latest job of each kind, kept across page reloads
_lock = threading.Lock()


class Job:
    """One run of worker.py. `poll()` reads new progress; `state` is running, done, stopped or failed."""

    def __init__(self, kind: str, config: dict, cwd: str | os.PathLike | None = None):
        self.kind = kind
        self.config = dict(config)
        self.dir = Path(tempfile.mkdtemp(prefix=f"dialogue_lora_{kind}_"))
        self.config_path = self.dir / "config.json"
        self.progress_path = self.dir / "progress.jsonl"
        self.stop_path = self.dir / "stop"
        self.log_path = self.dir / "log.txt"
        self.config_path.write_text(json.dumps(self.config, indent=2, default=str), encoding="utf-8")
        # Every event but the steps, which come one a step for as long as a run lasts (days: hundreds of
        # thousands of dicts): a run of them is kept as its newest, their losses as (step, loss) pairs
        self.events: list[dict] = []
        self.step_losses: list[tuple[int, float]] = []
        self.n_read = 0  # events read so far, steps included: the tab redraws its curve when this moves
        self._offset = 0
        # several pages (and a page's stream and its buttons) poll one job from Gradio's threads: without
        # the lock two polls read the same lines, the events doubled and the offset past the file's end
        self._poll_lock = threading.Lock()
        self.started = time.time()
        # PYTHONIOENCODING: the log is read as UTF-8 (Windows would write it in its code page: 'Jörg' came
        # out as 'J�rg'); backslashreplace: a file name's undecodable bytes are no crash
        # HF_HUB_DISABLE_PROGRESS_BARS: a checkpoint's loading bar would fill the tab's Log box
        env = dict(os.environ, PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false",
                   HF_HUB_DISABLE_PROGRESS_BARS="1", PYTHONIOENCODING="utf-8:backslashreplace",
                   **{PARENT_PIPE: "1"})
        with open(self.log_path, "wb") as log:
            # stdin: a pipe this process never writes to and holds open while it lives; when it ends (the
            # webui closed, crashed or was killed) the OS closes it and the worker, reading it, sees the end
            # and its own session (process group on Windows): Ctrl+C in the webui's terminal signals the
            # terminal's whole group, which would kill the run mid-step with nothing saved; left out of it,
            # the run sees the webui go (the pipe) and saves a checkpoint first. On Windows no console either:
            # closing the webui's console window ends every process attached to it, whatever its group
            group = ({"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW}
                     if os.name == "nt" else {"start_new_session": True})
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _BOOT, str(PACKAGE_DIR), kind, str(self.config_path),
                 str(self.progress_path), str(self.stop_path)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.PIPE,
                cwd=str(cwd) if cwd else None, env=env, **group,
            )
        # its folder goes with it (or when the app ends), unless the run is still going: it writes there
        weakref.finalize(self, _remove_if_ended, self.proc, self.dir)

    # -- reading progress ------------------------------------------------------------------------
    def poll(self) -> list[dict]:
        """New progress dicts since the last call (a partly written last line waits for the next call)."""
        with self._poll_lock:
            try:
                with open(self.progress_path, "rb") as f:
                    f.seek(self._offset)
                    chunk = f.read()
            except FileNotFoundError:
                return []
            end = chunk.rfind(b"\n") + 1
            self._offset += end
            new = []
            for line in chunk[:end].splitlines():
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if isinstance(event, dict):
                    new.append(event)
            for event in new:
                self._keep(event)
            self.n_read += len(new)
            return new

    def _keep(self, event: dict) -> None:
        if event.get("event") != "step":
            self.events.append(event)
            return
        if event.get("loss") is not None and event.get("step") is not None:
            self.step_losses.append((int(event["step"]), float(event["loss"])))
        if self.events and self.events[-1].get("event") == "step":
            self.events[-1] = event  # `last("step")` and the order of kinds stay as they were
        else:
            self.events.append(event)

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    @property
    def stopping(self) -> bool:
        """Asked to stop (Stop was clicked), and not ended yet."""
        return self.running and self.stop_path.exists()

    def last(self, *events: str) -> dict | None:
        for e in reversed(self.events):
            if not events or e.get("event") in events:
                return e
        return None

    @property
    def state(self) -> str:
        if self.running:
            return "running"
        self.poll()
        end = self.last("end")
        if end is not None:
            return {"done": "done", "stopped": "stopped"}.get(end.get("status"), "failed")
        return "failed"  # the process died without saying how it ended (killed, crashed)

    def error(self) -> str | None:
        """Why the job failed: its own message, else the end of its log (a crash, an OOM kill)."""
        if self.state != "failed":
            return None
        end = self.last("end")
        if end and end.get("message"):
            return str(end["message"])
        code = self.proc.returncode
        why = "killed (out of memory?)" if code in (-9, 137) else f"exited with code {code}"
        return f"the {self.kind} process {why}:\n{self.log_tail()}"

    def log_tail(self, lines: int = 15) -> str:
        try:
            # newline="": a progress bar's "\r" redraws stay within their line (not one line each)
            with open(self.log_path, encoding="utf-8", errors="replace", newline="") as f:
                text = f.read()
        except OSError:
            return ""
        return "\n".join(as_drawn(text).splitlines()[-lines:])

    def loss_series(self) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
        """(step, loss) points: (the logged means before a resumed run's stop, every step of this run)."""
        before = [(int(h["step"]), float(h["loss"])) for e in self.events if e.get("event") == "history"
                  for h in e.get("steps", []) if h.get("loss") is not None]
        return before, list(self.step_losses)

    def losses(self) -> list[tuple[int, float]]:
        """(step, loss) of every step so far; a resumed run's start with the logged losses before its stop."""
        before, since = self.loss_series()
        return before + since

    # -- control ---------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the job to save a checkpoint and exit (the worker checks for the stop file)."""
        self.stop_path.touch()

    def wait(self, timeout: float | None = None) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        if self.running:
            self.proc.kill()
            self.proc.wait()


def as_drawn(text: str) -> str:
    """A log as a terminal shows it: of a line redrawn with "\r" (a tqdm bar), only its last drawing;
    "\r\n" is a line end (Windows)."""
    drawn = []
    for line in text.replace("\r\n", "\n").split("\n"):
        parts = [p for p in line.split("\r") if p.strip()]
        drawn.append(parts[-1] if parts else "")
    return "\n".join(drawn)


def _remove_if_ended(proc: subprocess.Popen, folder: Path) -> None:
    if proc.poll() is not None:
        shutil.rmtree(folder, ignore_errors=True)


def check_idle(kind: str) -> None:
    """A UserError when a job of this kind is running (said before a form's own checks: fixing the form
    would not help)."""
    current = _jobs.get(kind)
    if current is not None and current.running:
        what = {"train": "a training run", "evaluate": "an evaluation", "merge": "a merge"}.get(kind, f"a {kind} job")
        raise UserError(f"{what} is already running: stop it or wait for it to finish")


def start(kind: str, config: dict, cwd: str | os.PathLike | None = None) -> Job:
    """Start a job unless one of the same kind is still running."""
    with _lock:
        check_idle(kind)
        current = _jobs.get(kind)
        job = Job(kind, config, cwd)
        _jobs[kind] = job
        if current is not None:  # its settings, progress and log in the temp folder: nothing shows them now
            shutil.rmtree(current.dir, ignore_errors=True)
        return job


def current(kind: str) -> Job | None:
    """The latest job of this kind (running or finished), for re-attaching after a page reload."""
    return _jobs.get(kind)
