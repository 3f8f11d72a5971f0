"""The project's own error type and the CLI wrapper that turns it into one clear line.

Every check on user input raises `UserError` with a message that names the file, line or flag at fault.
Scripts run their `main` through `run_cli`, which prints `error: <message>` and exits non-zero
without a traceback; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Iterable


class UserError(Exception):
    """A problem with the user's input or setup, explained in one line."""

    exit_code = 2


class Interrupted(UserError):
    """The user asked to stop (Ctrl+C or the tab's Stop button); whatever was saved is named in the message."""

    exit_code = 130


class CliParser(argparse.ArgumentParser):
    """argparse with a bad flag reported like every other error: one line, not usage + message."""

    def error(self, message):
        raise UserError(f"{message} (see --help)")


def brief(error: BaseException | str, limit: int = 300) -> str:
    """A library's exception text as one line for a message: whitespace collapsed, cut at a word past `limit`."""
    text = " ".join(str(error).split())
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit)
    return text[: cut if cut > limit // 2 else limit] + " ..."


def quoted(text: str, limit: int = 80) -> str:
    """A name as a message quotes it (repr), cut where it is longer than `limit` with its length said: a
    pasted paragraph for --name filled the terminal twice over, once as asked and once in the error."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text):,} characters)"


def join_problems(problems: Iterable[str]) -> str:
    """Several problems found in one check, reported together (one line each after the first)."""
    problems = [p for p in problems if p]
    if len(problems) == 1:
        return problems[0]
    return f"{len(problems)} problems:\n  - " + "\n  - ".join(problems)


def closest(name: str, choices: Iterable[str] | dict[str, str], key: Callable[[str], str] = str.lower) -> str | None:
    """The choice nearest to `name` (compared by `key`: case-insensitive), for 'did you mean' hints: a typo's,
    not any name sharing a few letters (Hamlet is not a misspelt CAPULET); a short name's one wrong letter
    weighs more. `choices` may come keyed already ({key(c): c}), for many names asked of one list."""
    import difflib

    lowered = choices if isinstance(choices, dict) else {key(c): c for c in choices}
    cutoff = 0.6 if len(name) <= 4 else 0.7
    hits = difflib.get_close_matches(key(name), list(lowered), n=1, cutoff=cutoff)
    return lowered[hits[0]] if hits else None


class _Terminated(KeyboardInterrupt):
    """SIGTERM (a `kill`, a closing terminal): unwinds like Ctrl+C, so that half-written files are removed."""


def _on_sigterm(signum, frame):
    raise _Terminated()


def _stop_inside(error: BaseException) -> BaseException | None:
    """The Ctrl+C or SIGTERM that an error was raised while handling, if any."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, (KeyboardInterrupt, _Terminated)):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Run a script's main; UserError, Ctrl+C, SIGTERM and a file system refusal (a name too long, a
    symlink loop, no permission: OSError naming a file) become one line on stderr and an exit code."""
    import signal
    import threading

    for stream in (sys.stdout, sys.stderr):
        # a name or reply the console's encoding lacks (Windows' cp1252 when output is redirected) is
        # written as \u014c rather than failing after the work is done
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
    previous = None
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)  # a script may install its own (lora_finetune)
    try:
        return int(main(argv) or 0)
    except UserError as e:
        print(e if isinstance(e, Interrupted) else f"error: {e}", file=sys.stderr)  # a stop is not an error
        return e.exit_code
    except _Terminated:
        print("error: terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `chat.py ... | head`: the reader went away, nothing to report
        return 0
    except MemoryError:  # what the work itself did not catch (a file that expands past memory): one line
        print("error: out of memory: the input (or a line, a message in it) is larger than this machine's memory "
              "holds", file=sys.stderr)
        return UserError.exit_code
    except ImportError as e:  # an installed library that fails to load (a bitsandbytes built for another CUDA)
        stop = _stop_inside(e)
        if stop is not None:  # Ctrl+C while a lazy import ran: transformers reports it as a failed import
            print("error: terminated" if isinstance(stop, _Terminated) else "error: interrupted", file=sys.stderr)
            return 143 if isinstance(stop, _Terminated) else 130
        tb = e.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next  # the innermost frame: the module that failed, when the error names none
        what = (e.name or (tb.tb_frame.f_globals.get("__name__") if tb else None) or "a library").split(".")[0]
        print(f"error: {what} failed to load ({brief(e)}): reinstall it (pip install -r requirements.txt)",
              file=sys.stderr)
        return UserError.exit_code
    except OSError as e:
        if e.filename is None:
            raise
        print(f"error: {e.filename}: {e.strerror or brief(e)}", file=sys.stderr)
        return UserError.exit_code
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
