"""The process a tab job runs in (see jobs.py): `worker.main([kind, config.json, progress.jsonl, stop_file])`.

It builds the job's config from the JSON file, runs it, and appends every progress dict as a JSON line.
The last line says how it ended: {"event": "end", "status": "done" | "stopped" | "error", "message", ...}. A crash that kills the interpreter leaves no last line; jobs.py then
reports the exit code and the end of the log.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path

from .errors import Interrupted, UserError
from .jobs import PARENT_PIPE
from .modeling import out_of_memory


class ProgressWriter:
    """Appends dicts as JSON lines, flushed at once so the tab sees them while the job runs."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.failed = False

    def __call__(self, event: dict) -> None:
        event = dict(event)
        event.setdefault("time", time.time())
        try:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(event, ensure_ascii=False, default=str) + "\n")
        except OSError as e:  # (a full disk): the tab loses its view of the run, the run goes on and saves
            if not self.failed:
                self.failed = True
                print(f"warning: cannot write the progress file {self.path} ({e.strerror or e}); the run goes on",
                      file=sys.stderr, flush=True)


def run_train(config: dict, report: ProgressWriter, should_stop) -> dict:
    from .training import TrainConfig, event_line, train

    def report_and_log(event: dict) -> None:  # the tab's Log box reads as lora_finetune.py's output
        report(event)
        line = event_line(event)
        if line:
            print(line, file=sys.stderr, flush=True)

    cfg = TrainConfig(**config)
    result = train(cfg, on_progress=report_and_log, should_stop=should_stop)
    if result.stopped:
        if result.checkpoint is None:
            return {"status": "stopped", "checkpoint": None, "message": "Stopped before the first step: nothing was saved."}
        return {"status": "stopped", "checkpoint": str(result.checkpoint),
                "message": f"Stopped at step {result.step}; checkpoint saved in {result.checkpoint}."}
    return {"status": "done", "output_dir": str(result.output_dir), "message": f"Saved {result.output_dir}."}


def run_evaluate(config: dict, report: ProgressWriter, should_stop) -> dict:
    from .evaluation import EvalConfig, evaluate, write_report
    from .paths import resolve_adapter, resolve_dirs

    cfg = EvalConfig(**config)
    result = evaluate(cfg, on_progress=report, should_stop=should_stop)
    written = write_report(result, resolve_adapter(cfg.lora_name, resolve_dirs(lora_dir=cfg.lora_dir).loras))
    return {"status": "done", "eval_json": str(written["json"]), "eval_md": str(written["markdown"])}


def run_merge(config: dict, report: ProgressWriter, should_stop) -> dict:
    from .merging import MergeConfig, merge

    result = merge(MergeConfig(**config), log=lambda message: report({"event": "log", "message": message}))
    summary = result.summary()
    return {"status": "done", "output_dir": str(result.output_dir), "message": summary[0].upper() + summary[1:]}


KINDS = {"train": run_train, "evaluate": run_evaluate, "merge": run_merge}


def _watch_app() -> threading.Event:
    """Set once the app that started this job has ended: the end of the stdin pipe it holds (jobs.py), which
    every OS reports when the app's process goes, however it goes. (The parent's pid is no sign on Windows,
    where os.getppid() goes on naming a parent that has exited.) Started by hand, without that pipe, never."""
    gone = threading.Event()
    if os.environ.get(PARENT_PIPE) == "1" and sys.stdin is not None:
        fd = sys.stdin.fileno()

        def wait_for_eof():
            # os.read on the descriptor, not sys.stdin: a thread blocked inside the buffered reader holds its
            # lock, and the interpreter's shutdown then dies with "Fatal Python error" trying to take it
            try:
                while os.read(fd, 65536):
                    pass
            except OSError:
                pass
            gone.set()

        threading.Thread(target=wait_for_eof, name="app-watch", daemon=True).start()
    return gone


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 4 or argv[0] not in KINDS:
        print(f"usage: worker {'|'.join(KINDS)} CONFIG.json PROGRESS.jsonl STOP_FILE", file=sys.stderr)
        return 2
    kind, config_path, progress_path, stop_path = argv
    report = ProgressWriter(progress_path)
    stop = Path(stop_path)
    app_gone = _watch_app()

    def should_stop() -> bool:
        # the Stop button; or the app that started this job has exited (the webui closed or restarted):
        # nobody could watch or stop the job any more, so it saves a checkpoint and ends (Resume continues it)
        return stop.exists() or app_gone.is_set()

    try:
        config = json.loads(Path(config_path).read_text(encoding="utf-8"))
        result = KINDS[kind](config, report, should_stop)
    except Interrupted as e:
        report({"event": "end", "status": "stopped", "message": str(e)})
        return 0
    except UserError as e:
        report({"event": "end", "status": "error", "message": str(e)})
        return e.exit_code
    except KeyboardInterrupt:
        report({"event": "end", "status": "stopped", "message": "interrupted"})
        return 130
    except Exception as e:  # a bug or an out-of-memory error: say it in the tab, keep the traceback in the log
        traceback.print_exc()
        message = f"{type(e).__name__}: {e}"
        if out_of_memory(e) or "out of memory" in str(e).lower():
            message += (" — try 4-bit loading, a smaller batch size or cutoff length, or unload the webui's "
                        "model first")
        report({"event": "end", "status": "error", "message": message})
        return 1
    report({"event": "end", **result})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
