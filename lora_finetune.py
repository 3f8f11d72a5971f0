#!/usr/bin/env python
"""Train a character adapter (LoRA or prompt tuning) on dialogue samples.

    python lora_finetune.py -d processed_dataset.json -m my-model -l bob
    torchrun --nproc_per_node 2 lora_finetune.py ...      (or: accelerate launch lora_finetune.py ...)

Writes loras/NAME (user_data/loras/NAME in a webui folder): a PEFT adapter the webui's LoRA menu loads,
plus training_parameters.json, training_log.json, heldout.json and a README.md model card.
See README.md, "Training a character adapter".
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

try:
    from extensions.dialogue_lora.errors import CliParser, Interrupted, UserError, run_cli  # noqa: E402
    from extensions.dialogue_lora.fileio import same_file  # noqa: E402
    from extensions.dialogue_lora.modeling import FUSED_KERNELS, PRECISIONS  # noqa: E402
    from extensions.dialogue_lora.training import (GRADIENT_CHECKPOINTING, METHOD_SETTINGS, METHODS, TrainConfig,  # noqa: E402
                                                    event_line, format_eta, loss_text)
except KeyboardInterrupt:  # Ctrl+C while the modules load: a line, not a traceback
    sys.stderr.write("error: interrupted\n")
    sys.exit(130)

_SHORT = {"dataset_name": "-d", "model_name": "-m", "lora_name": "-l", "batch_size": "-b", "epochs": "-e",
          "cutoff_len": "-c", "lora_rank": "-r"}
# evaluate_lora.py's spelling of the same flag, and prepare_dataset.py's short one
_ALIASES = {"dataset_name": ["--dataset"], "name": ["-n"]}
_CHOICES = {"method": list(METHODS), "gradient_checkpointing": list(GRADIENT_CHECKPOINTING),
            "fused_kernels": list(FUSED_KERNELS), "precision": list(PRECISIONS)}
_ON_BY_DEFAULT = {"packing", "eval_base"}
_OFF_HELP = {
    "packing": "do not pack samples together: pad each to the longest in its batch (slower; packing is the default)",
    "eval_base": "skip measuring the base model's held-out loss before training",
}


def _module_list(text: str) -> str:
    if not any(t.strip() for t in text.split(",")):  # given, but empty: not the same as leaving it out
        raise argparse.ArgumentTypeError("takes layer names, e.g. q_proj,v_proj (leave it out for every linear layer)")
    return text


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(description=__doc__.split("\n\n")[0], epilog="See README.md, section 'Training a character adapter'.")
    helps = TrainConfig.field_help()
    defaults = TrainConfig.__dataclass_fields__
    for name, f in defaults.items():
        flags = [f"--{name}"] + ([_SHORT[name]] if name in _SHORT else []) + _ALIASES.get(name, [])
        h = helps.get(name, "")
        default = f.default
        if default is not None and not isinstance(default, bool) and "default" not in h.lower():
            h += f" (default: {default:g})" if isinstance(default, float) else f" (default: {default})"
        if name in _ON_BY_DEFAULT:
            p.add_argument(f"--no_{name}", dest=name, action="store_false", default=True, help=_OFF_HELP[name])
        elif isinstance(default, bool):
            p.add_argument(*flags, action="store_true", default=default, help=h)
        elif name == "target_modules":
            p.add_argument(*flags, default=None, type=_module_list, help=h + " Comma-separated.")
        else:
            typ = {"learning_rate": float, "lora_alpha": float}.get(name) or (type(default) if default is not None else str)
            kw = {"choices": _CHOICES[name]} if name in _CHOICES else {}
            p.add_argument(*flags, type=typ, default=default, help=h, **kw)
    tools = p.add_argument_group("for tools: a progress file and a stop file (the tab's worker reports the same events)")
    tools.add_argument("--progress_file", help="append every progress event to this file as a JSON line (flushed)")
    tools.add_argument("--stop_file", help="when this file appears, save a checkpoint and exit cleanly")
    return p


class _Stopper:
    """should_stop(): Ctrl+C / SIGTERM or a --stop_file asks the trainer to save a checkpoint and stop."""

    def __init__(self, stop_file: str | None):
        self.stop_file = Path(stop_file) if stop_file else None
        self.signalled = 0  # the signal that asked to stop (SIGINT: Ctrl+C, SIGTERM), 0 for none
        self.quit_by = 0  # the second one, which quits at once
        self._previous: dict = {}
        self.stepping = lambda: True  # whether training has begun: before, a stop saves nothing
        self.say = True  # torchrun's other processes leave the saying to rank 0

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handler)
            except (ValueError, OSError):  # not the main thread
                pass

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handler(self, signum, frame):
        if self.signalled:  # a second Ctrl+C: stop now
            self.quit_by = signum
            raise KeyboardInterrupt
        self.signalled = signum
        again = "Ctrl+C again to quit at once" if signum == signal.SIGINT else "a second signal quits at once"
        if not self.say:
            return
        if not self.stepping():
            print(f"\nstopping before the first step (the model is loading): nothing new will be saved ({again})",
                  file=sys.stderr, flush=True)
            return
        print(f"\nstopping after the current step with a checkpoint; a run at its last step, or saving its adapter, "
              f"finishes instead ({again})", file=sys.stderr, flush=True)

    def __call__(self) -> bool:
        return self.signalled or (self.stop_file is not None and self.stop_file.exists())


def _progress_log_or_new(path: Path) -> bool:
    """Whether `path` is absent, empty, or a progress log (its first line one of the events written to it);
    a pipe or a device (`/dev/stdout`, a FIFO a monitor reads) is not read: that would wait for a writer."""
    if str(path) in ("/dev/stdout", "/dev/stderr") or str(path).startswith(("/dev/fd/", "/proc/self/fd/")):
        return True  # the run's own output, even sent to a log file with other lines in it
    if not path.is_file():
        return True  # absent, a pipe, a device, a folder
    try:
        with open(path, "rb") as f:
            first = f.readline(1 << 16)
    except OSError:
        return True  # gone since, or unreadable: the open for writing says why
    if not first.strip():
        return True
    try:
        event = json.loads(first)
    except ValueError:
        return False
    return isinstance(event, dict) and "event" in event


class _Reporter:
    """on_progress(): a tqdm bar with loss, lr, tokens/s and ETA, eval lines, and the --progress_file."""

    def __init__(self, progress_file: str | None):
        self.bar = None
        self.begun = False  # the run's "begin" event: a stop from then on saves a checkpoint
        self.progress_file = progress_file
        try:
            self.file = open(progress_file, "a", encoding="utf-8") if progress_file else None
        except OSError as e:
            raise UserError(f"--progress_file {progress_file}: cannot write there ({e.strerror})") from None

    def __call__(self, ev: dict) -> None:
        if self.file is not None:
            try:
                self.file.write(json.dumps(ev, default=str) + "\n")
                self.file.flush()
            except OSError as e:  # (a full disk): the progress file is a view of the run, not worth the run
                self._drop_file()
                print(f"warning: --progress_file {self.progress_file}: cannot write ({e.strerror or e}); "
                      "training goes on without it", file=sys.stderr, flush=True)
        kind = ev.get("event")
        if kind == "step":
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(total=ev["total_steps"], initial=ev["step"] - 1, desc="training", unit="step",
                                dynamic_ncols=True)
            self.bar.set_postfix(loss=f"{ev['loss']:.3f}", lr=f"{ev['lr']:.2e}", tok_s=f"{ev['tokens_per_s']:.0f}",
                                 eta=format_eta(ev["eta_s"]), refresh=False)
            self.bar.update(ev["step"] - self.bar.n)
        elif kind == "begin":
            self.begun = True
        else:
            line = event_line(ev)
            if line:
                self._print(line)

    def _print(self, msg: str) -> None:
        if self.bar is not None:
            self.bar.write(msg)
        else:
            print(msg, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self._drop_file()

    def _drop_file(self) -> None:
        file, self.file = self.file, None
        if file is not None:
            try:
                file.close()
            except OSError:  # its last bytes could not be written either: said when they were
                pass


# Flags that only one --method reads: given with the other, they are an error, not silently unused.
def _latest_checkpoint(cfg: TrainConfig, started: float) -> str:
    """What a quit at once leaves of this run: its finished adapter (the swap into place cut off or done),
    else its latest checkpoint."""
    from extensions.dialogue_lora.paths import finished_save, resolve_dirs, shell_word, swap_leftovers
    from extensions.dialogue_lora.training import checkpoints

    loras = resolve_dirs(lora_dir=cfg.lora_dir).loras
    out = loras / cfg.lora_name
    if any(finished_save(p) for p in swap_leftovers(loras, cfg.lora_name, "tmp")):
        return (f"the finished adapter is saved but not yet in place as {out}: run lora_finetune.py with "
                f"-l {shell_word(cfg.lora_name)} again and it is put there before anything else")
    try:
        card = (out / "README.md").stat().st_mtime if finished_save(out) else 0.0
    except OSError:
        card = 0.0
    if card >= started - 1:  # this run's card, written last: the adapter is in place
        return f"the adapter was saved in {out} (the checkpoints it replaces may be left there)"
    found = checkpoints(out)
    if cfg.overwrite:  # the replaced run's checkpoints stay until this run saves one: not this run's to resume
        found = [c for c in found if c.stat().st_mtime >= started - 1]
    if not found:
        return f"nothing more was saved; no checkpoint of this run of {cfg.lora_name} is saved"
    again = "the same command with --resume in place of --overwrite" if cfg.overwrite else "--resume"
    return f"nothing more was saved; the latest checkpoint is {found[-1]} ({again} continues from it)"


def given_flags(parser: argparse.ArgumentParser, argv: list[str] | None) -> set[str]:
    """The settings named on the command line (whatever their value: `--lora_rank 16` is given, though 16
    is the default)."""
    saved = [(a, a.default) for a in parser._actions]
    try:
        for a in parser._actions:
            a.default = argparse.SUPPRESS
        given, _ = parser.parse_known_args(argv)
    finally:
        for a, default in saved:
            a.default = default
    return set(vars(given))


def check_method_flags(args: dict, given: set[str]) -> None:
    unused = [f"--{name}" for method, names in METHOD_SETTINGS.items() if method != args["method"]
              for name in names if name in given]
    if unused:
        raise UserError(f"{', '.join(unused)}: not used by --method {args['method']}")


def main(argv: list[str] | None = None) -> int:
    """Train; a user error is also written to --progress_file as an error event, whenever it is found (a
    bad flag, a setting, the data, the model), so that a tool watching the file learns why the run ended."""
    try:
        return _train(argv)
    except UserError as e:
        if not isinstance(e, Interrupted):  # a stop: the trainer has written its end event
            _error_event(argv, e)
        raise


def _error_event(argv: list[str] | None, error: UserError) -> None:
    import os

    pre = CliParser(add_help=False)  # raises rather than printing usage and exiting
    pre.add_argument("--progress_file")
    try:
        progress_file = pre.parse_known_args(sys.argv[1:] if argv is None else argv)[0].progress_file
    except UserError:  # `--progress_file` given no value: that is the error being reported
        return
    if not progress_file or int(os.environ.get("RANK", "0") or 0) != 0 or not _progress_log_or_new(Path(progress_file)):
        return
    try:
        with open(progress_file, "a", encoding="utf-8") as f:
            f.write(json.dumps({"event": "error", "message": str(error)}) + "\n")
    except OSError:  # the file itself may be what went wrong
        pass


def _stopped_run(cfg: TrainConfig) -> tuple[dict, str] | None:
    """(the settings, the checkpoint's name) of the run --resume goes on with; None when there is none."""
    from extensions.dialogue_lora.paths import on_disk, resolve_dirs
    from extensions.dialogue_lora.training import resumed_settings

    loras = resolve_dirs(lora_dir=cfg.lora_dir).loras
    return resumed_settings(loras / on_disk(loras, cfg.lora_name))  # (a folder spelt decomposed: a macOS copy's)


def _with_runs_length(cfg: TrainConfig, say: bool, found: tuple[dict, str] | None) -> TrainConfig:
    """--resume with neither --epochs nor --max_steps: the run's own length, as its checkpoint saved it (`found`:
    `_stopped_run`; the defaults would quietly shorten the run, and reshape its learning-rate schedule);
    `say`: note it (rank 0)."""
    import dataclasses

    from extensions.dialogue_lora.training import run_length

    if found is None:  # nothing to resume: train() says so
        return cfg
    length = run_length(found[0])
    if not (length.get("max_steps") or "epochs" in length) or all(getattr(cfg, k) == v for k, v in length.items()):
        return cfg
    said = f"--max_steps {length['max_steps']}" if length.get("max_steps") else f"--epochs {length['epochs']:g}"
    if say:
        print(f"note: --resume goes on to the run's own length ({said}); give --epochs or --max_steps to change it",
              file=sys.stderr)
    return dataclasses.replace(cfg, **length)


# What a resume never takes from the run: where it is and what to do with it (this command's), its length
# (_with_runs_length), and how to run on this machine
_NOT_CARRIED = {"lora_name", "lora_dir", "resume", "overwrite", "epochs", "max_steps", "dataset_dir", "device",
                "gradient_checkpointing", "fused_kernels", "eval_base",
                # the base: by its path where neither is given (the folder it was in may not be where -m looks)
                "model_name", "model_dir"}
NOTED_SETTINGS = 8  # settings named in the note; more are counted


def _with_runs_settings(cfg: TrainConfig, given: set[str], say: bool,
                        found: tuple[dict, str] | None) -> TrainConfig:
    """--resume: the settings the command does not give are the run's, as its checkpoint saved them (`found`:
    `_stopped_run`; the defaults would be refused as changed, one flag at a time, or, for the few a
    checkpoint can take, change the run); `say`: note which (rank 0)."""
    import dataclasses

    from extensions.dialogue_lora.training import as_defaults

    if found is None:  # nothing to resume: train() says so
        return cfg
    saved = as_defaults(found[0])
    if isinstance(saved.get("dataset"), str):  # the file it read (-d as given was relative to its folder)
        saved["dataset_name"] = saved["dataset"]
    take = {}
    base = saved.get("base_model_path")
    if not {"model_name", "model_dir"} & given and isinstance(base, str) and Path(base).is_dir():
        if Path(base).name == saved.get("model_name"):  # the name it was given, in the folder it was found in
            take.update(model_name=Path(base).name, model_dir=str(Path(base).parent))
        else:
            take["model_name"] = base
    method = saved.get("method") if "method" not in given else cfg.method
    defaults = TrainConfig(method=method) if method in METHODS else cfg
    for f in dataclasses.fields(TrainConfig):
        k = f.name
        if k in _NOT_CARRIED or k in given or k not in saved or saved[k] == getattr(cfg, k):
            continue
        if k == "learning_rate" and saved[k] == defaults.lr:  # the run's method's default, resolved: the same
            continue
        if k == "packing" and method == "prompt_tuning":  # recorded off: soft prompts are never packed
            continue
        take[k] = saved[k]
    if not take:
        return cfg
    try:
        resumed = dataclasses.replace(cfg, **take)
    except UserError:  # a checkpoint's settings this version refuses: the command's own, and check() says why
        return cfg
    if say:
        shown = [_flag_words(k, v) for k, v in list(take.items())[:NOTED_SETTINGS]]
        more = f" and {len(take) - NOTED_SETTINGS} more" if len(take) > NOTED_SETTINGS else ""
        print(f"note: --resume goes on with the run's own {', '.join(shown)}{more}; give a flag to change one",
              file=sys.stderr)
    return resumed


def _flag_words(key: str, value) -> str:
    """A setting as the flag that gives it (`--no_packing`, `--load_in_4bit`, `--lora_rank 2`)."""
    if isinstance(value, bool):
        return f"--{key}" if value else f"--no_{key}"
    return f"--{key} {_flag_value(value)}"


def _flag_value(value) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def _train(argv: list[str] | None) -> int:
    import os

    parser = build_parser()
    args = vars(parser.parse_args(argv))
    given = given_flags(parser, argv)
    progress_file, stop_file = args.pop("progress_file"), args.pop("stop_file")
    if stop_file and progress_file and same_file(stop_file, progress_file):
        raise UserError(f"--progress_file and --stop_file are one file ({stop_file}): the first progress written "
                        "would stop the run; give them two names")
    if stop_file and Path(stop_file).exists():  # left from an earlier stop: it would stop this run at once
        raise UserError(f"--stop_file {stop_file} exists already: delete it first (it asks a run to stop)")
    if progress_file and not _progress_log_or_new(Path(progress_file)):  # it is appended to: a dataset, an
        # adapter's config or a README given by mistake would get JSON lines at its end
        raise UserError(f"--progress_file {progress_file} is a file of another kind (not a progress log this "
                        "tool wrote): give a new file's name, or an earlier run's progress log")
    cfg = TrainConfig(**args)
    main_process = int(os.environ.get("RANK", "0") or 0) == 0
    stopped = _stopped_run(cfg) if cfg.resume else None  # its checkpoint's settings, read once
    if cfg.resume:
        cfg = _with_runs_settings(cfg, given, main_process, stopped)
    check_method_flags({"method": cfg.method}, given)  # (a resumed run's method, where not given)
    if cfg.resume and not {"epochs", "max_steps"} & given:
        cfg = _with_runs_length(cfg, main_process, stopped)
    if cfg.max_steps and "epochs" in given:
        print(f"note: --max_steps {cfg.max_steps} sets the run's length; --epochs {cfg.epochs:g} is not used",
              file=sys.stderr)
    from extensions.dialogue_lora.training import train

    stopper = _Stopper(stop_file)
    stopper.install()
    reporter = _Reporter(progress_file if main_process else None)
    stopper.stepping, stopper.say = (lambda: reporter.begun), main_process  # only rank 0 sees the events
    started = time.time()
    try:
        result = train(cfg, on_progress=reporter if main_process else None, should_stop=stopper)
    except KeyboardInterrupt:  # the second Ctrl+C: no checkpoint of the moment, say what there is
        stop = Interrupted(f"quit at once: {_latest_checkpoint(cfg, started)}")
        stop.exit_code = 128 + (stopper.quit_by or signal.SIGINT)  # 143 for a second SIGTERM
        raise stop from None
    finally:
        reporter.close()
        stopper.uninstall()
    if not main_process:
        return 0
    if result.stopped:
        again = ("the same command with --resume in place of --overwrite" if cfg.overwrite
                 else "the same command" if cfg.resume else "the same command plus --resume")
        if not stopper.signalled and stop_file:
            again += f", once {stop_file} is deleted"
        if result.checkpoint is None:
            msg = "stopped before the first step: nothing was saved"
        elif not reporter.begun:  # stopped while loading a run to resume: its checkpoint is as it was
            msg = (f"stopped before the first step: nothing new was saved; {result.checkpoint} (step "
                   f"{result.step}/{result.total_steps}) is as it was; continue with {again}")
        else:
            msg = f"stopped at step {result.step}/{result.total_steps}; checkpoint saved in {result.checkpoint}; " \
                  f"continue with {again}"
        if stopper.signalled:
            stop = Interrupted(msg)
            stop.exit_code = 128 + stopper.signalled  # 130 for Ctrl+C, 143 for SIGTERM, as shells expect
            raise stop
        print(msg)
        return 0
    line = f"adapter saved in {result.output_dir}"
    if result.eval_loss is not None:
        base = f" (base model {loss_text(result.base_eval_loss, 4)})" if result.base_eval_loss is not None else ""
        line += f"; held-out loss {loss_text(result.eval_loss, 4)}{base}, perplexity {loss_text(result.perplexity, 2)}"
    print(line)
    return 0


if __name__ == "__main__":
    code = run_cli(main)
    # the work is saved or refused by now: a late Ctrl+C must not print a traceback from an exit handler
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(code)
