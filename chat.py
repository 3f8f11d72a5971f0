"""Talk to a character adapter in the terminal, one line per reply.

    python chat.py -m MODEL -l LORA --name Bob [--user Alice] [--rounds 5]
    printf 'Hi Bob!\\nWhere is the boat?\\n' | python chat.py -m MODEL -l LORA --name Bob --user Alice

Each of your lines is a turn said by --user; the character answers as `Bob: reply`, stopped at the
newline the adapter was trained to write. The last --rounds turns are the context, in the training
format. Piped (stdin not a terminal), it prints nothing but the replies. Several characters trained into
one adapter: --name Bob,Carol, then `@Carol text` (or `/as Carol`). Leave with /quit or end of input.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import tempfile

DEFAULT_ROUNDS = 5  # context turns when the adapter records none (trained before it was recorded)
DEFAULT_TOP_P = 0.9

try:
    from extensions.dialogue_lora.errors import CliParser, UserError, join_problems, quoted, run_cli
    from extensions.dialogue_lora.generation import DEFAULT_MAX_NEW_TOKENS, DEFAULT_TEMPERATURE, add_loading_arguments
except KeyboardInterrupt:  # Ctrl+C while the modules load: a line, not a traceback
    sys.stderr.write("error: interrupted\n")
    sys.exit(130)


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-m", "--model_name", required=True, help="base model: a folder under the models directory, or a path")
    p.add_argument("-l", "--lora_name", default=None, help="adapter: a folder under the loras directory, or a path "
                   "(default: none, the base model alone)")
    p.add_argument("-n", "--name", default=None, help="the character(s) the model speaks as: Bob, or Bob,Carol (the first "
                   "answers); default: the name recorded when the adapter was trained")
    p.add_argument("--user", default="You", help="your speaker name in the conversation (default: You)")
    p.add_argument("--rounds", type=int, default=None, help="previous turns kept as context, 1 or more (default: the "
                   "most the adapter's samples had, as recorded in training, else 5)")
    p.add_argument("--max_new_tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS,
                   help="most tokens per reply (default %(default)s)")
    p.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE,
                   help=f"sampling temperature; 0 = greedy (default {DEFAULT_TEMPERATURE})")
    p.add_argument("--top_p", type=float, default=DEFAULT_TOP_P, help=f"nucleus sampling (default {DEFAULT_TOP_P})")
    p.add_argument("--repetition_penalty", type=float, default=1.0, help="above 1 discourages repeats (default 1.0)")
    p.add_argument("--seed", type=int, default=None, help="random seed for reproducible sampling")
    add_loading_arguments(p)
    return p


@contextlib.contextmanager
def quiet_stderr(enabled: bool):
    """Silence library chatter on stderr (progress bars, warnings, C-level prints) while `enabled`.

    What was written is shown again only if a bug (not a UserError) escapes, so nothing useful is lost.
    """
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as buf:
        os.dup2(buf.fileno(), 2)
        try:
            yield
        except (UserError, KeyboardInterrupt, BrokenPipeError, SystemExit):
            raise
        except BaseException:
            sys.stderr.flush()
            os.dup2(saved, 2)
            buf.seek(0)
            sys.stderr.write(buf.read().decode("utf-8", "replace"))
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def _quiet_libraries() -> None:
    from extensions.dialogue_lora.modeling import quiet_libraries
    import warnings

    quiet_libraries()

    warnings.filterwarnings("ignore")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    interactive = sys.stdin.isatty()
    from extensions.dialogue_lora.fileio import is_utf16
    from extensions.dialogue_lora.generation import ChatSession, Problem, read_training_parameters
    from extensions.dialogue_lora.paths import resolve_adapter, resolve_dirs
    from extensions.dialogue_lora.prompt import recorded_name, user_turns_named

    names, instruction, recorded_turns, facts = args.name, None, None, {}
    if names is not None and not names.strip(" ,\uff0c\u3001"):  # (a full-width comma separates too)
        raise UserError("--name is empty: give the character the model speaks as, e.g. --name Bob "
                        "(or leave it out to use the name recorded with the adapter)")
    if names is not None:  # read as prepare_dataset.py reads --name: `O’Brien` is the O'Brien it trained
        from extensions.dialogue_lora.prepare import split_names  # on, `小明，小红` two names

        names = ",".join(split_names(names)) or names  # (all colons: ChatSession says why)
    if args.lora_name:  # a missing adapter fails here, before anything heavy loads
        adapter = resolve_adapter(args.lora_name, resolve_dirs(lora_dir=args.lora_dir).loras)
        params = read_training_parameters(adapter, prompt=True)
        trained_name = recorded_name(params)  # its --name, where it learnt to answer to it
        learnt = params.get("characters") or ([trained_name] if trained_name else [])
        if names and learnt:
            names = _as_learnt(names, learnt, f"adapter {args.lora_name}")
        names = names or trained_name or ",".join(learnt)
        instruction = params.get("instruction") or None
        recorded_turns = params.get("context_turns")
        facts = params
    else:  # a model merge_lora.py wrote knows what its adapter learnt: the names and the instruction line
        from extensions.dialogue_lora.merging import read_merge_record
        from extensions.dialogue_lora.paths import resolve_model

        record = read_merge_record(resolve_model(args.model_name, resolve_dirs(model_dir=args.model_dir).models))
        learnt = [str(c) for c in record.get("characters") or []]
        if names and learnt:
            names = _as_learnt(names, learnt, f"merged model {args.model_name}")
        names = names or ",".join(learnt)
        instruction = record.get("instruction") or None
        recorded_turns = record.get("context_turns")
        facts = record
    if not names:
        raise UserError("--name is required: the character the model speaks as, e.g. --name Bob")
    if not " ".join(str(args.user).split()):
        raise UserError("--user is empty: your name in the conversation (default You)")
    if ":" in str(args.user):
        raise UserError(f"--user {quoted(args.user)} must not contain ':' (it ends your name in the conversation)")
    rounds = args.rounds
    if rounds is None:  # as many turns as the adapter learnt from (a dataset prepared with --rounds 10: 10)
        known = isinstance(recorded_turns, int) and not isinstance(recorded_turns, bool) and recorded_turns >= 0
        rounds = max(recorded_turns, 1) if known else DEFAULT_ROUNDS  # 0 (no context): the user's line alone
    named = user_turns_named(facts)  # its samples' user lines named no one: yours go without your name too
    session = ChatSession(str(names).split(","), args.user, rounds, instruction, named)  # bad names fail before loading
    if not named:
        print("note: its samples' user lines named no speaker: yours are given without your name, as it learnt "
              "them", file=sys.stderr, flush=True)
    if args.max_new_tokens < 1:
        raise UserError("--max_new_tokens must be at least 1")
    if args.seed is not None and not 0 <= args.seed < 2**32:  # numpy's range: said before the model loads
        raise UserError(f"--seed must be from 0 to {2**32 - 1} (got {args.seed})")
    problems = []
    if not 0 <= args.temperature < math.inf:
        problems.append(f"--temperature must be 0 (greedy) or a finite number above it (got {args.temperature:g})")
    if not 0 < args.top_p <= 1:
        problems.append(f"--top_p must be above 0 and at most 1 (got {args.top_p:g})")
    if not 0 < args.repetition_penalty < math.inf:
        problems.append(f"--repetition_penalty must be a finite number above 0: 1 changes nothing, above 1 discourages repeats (got {args.repetition_penalty:g})")
    if problems:
        raise UserError(join_problems(problems))
    sampling = [f for f, unused in (("--top_p", args.top_p != DEFAULT_TOP_P), ("--seed", args.seed is not None)) if unused]
    if args.temperature == 0 and sampling:  # greedy: nothing is drawn at random
        print(f"note: --temperature 0 always takes the likeliest reply: {' and '.join(sampling)} "
              f"change{'s' if len(sampling) == 1 else ''} nothing",
              file=sys.stderr, flush=True)

    def info(msg: str) -> None:
        if interactive:
            print(msg, file=sys.stderr, flush=True)

    _quiet_libraries()
    what = f"{args.model_name}" + (f" + {args.lora_name}" if args.lora_name else " (no adapter)")
    info(f"loading {what} ...")
    with quiet_stderr(True):  # library chatter while loading (bitsandbytes notices, progress bars), even on a terminal
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        from extensions.dialogue_lora.generation import generate_reply, load_for_generation, sampling
        from extensions.dialogue_lora.modeling import out_of_memory

        loaded = load_for_generation(
            args.model_name,
            args.lora_name,
            model_dir=args.model_dir,
            lora_dir=args.lora_dir,
            load_in_4bit=args.load_in_4bit,
            load_in_8bit=args.load_in_8bit,
            as_trained=not args.unquantised,
            device=args.device,
        )
        if args.seed is not None:
            from transformers import set_seed

            set_seed(args.seed)
    if loaded.adapter_path is not None:  # after the quiet load: said, as the name warning is
        from extensions.dialogue_lora.generation import as_trained_note, other_weights_note, quantization_note

        other = other_weights_note(loaded.adapter_path, loaded.model_path)
        if other:
            print(f"note: {other}", file=sys.stderr, flush=True)
        note = quantization_note(loaded.adapter_path, *loaded.bits, loaded.model_path, as_trained=not args.unquantised)
        if note:
            print(f"note: {note}", file=sys.stderr, flush=True)
        elif followed := as_trained_note(loaded):
            info(followed)

    def reply_fn(prompt: str):
        try:
            return generate_reply(
                loaded.model, loaded.tokenizer, prompt, max_new_tokens=args.max_new_tokens, top_p=args.top_p,
                repetition_penalty=args.repetition_penalty if args.repetition_penalty != 1.0 else None,
                **sampling(args.temperature),
            )
        except (RuntimeError, MemoryError) as e:  # the model fitted, a long context's reply did not
            if not out_of_memory(e):
                raise
            raise UserError("out of memory generating a reply: try --load_in_4bit, fewer --rounds of context "
                            "or a smaller --max_new_tokens") from None

    info(session.help_text())
    if not interactive and hasattr(sys.stdin, "reconfigure"):  # bytes that are not UTF-8 become U+FFFD below
        peek = getattr(getattr(sys.stdin, "buffer", None), "peek", None)  # (reads nothing)
        utf16 = peek is not None and is_utf16(peek(2))  # PowerShell 5's `>` writes UTF-16
        # -sig: a BOM (Notepad's) is no text
        sys.stdin.reconfigure(encoding="utf-16" if utf16 else "utf-8-sig", errors="surrogateescape")
    lines = _read_interactive(args.user) if interactive else (line.rstrip("\n") for line in sys.stdin)
    try:
        for line in lines:
            with quiet_stderr(not interactive):
                replies, messages = session.handle(line, reply_fn)
            for r in replies:
                print(r, flush=True)
            for m in messages:
                if interactive:
                    info(m)
                elif isinstance(m, Problem):  # piped: only what went wrong, on stderr
                    print(f"warning: {m}", file=sys.stderr, flush=True)
            if session.done:
                break
    except KeyboardInterrupt:
        info("")
        return 130  # as any program Ctrl+C stops: a script that runs the chat can tell
    return 0


def _as_learnt(names: str, learnt: list[str], source: str) -> str:
    """--name as the adapter learnt its characters: their casing (`bob` is cued `Bob:`, as in training),
    each once; a warning for a name it did not learn (it can still be asked to speak as anyone)."""
    from extensions.dialogue_lora.prompt import as_learnt

    out, unknown = [], []
    for n in (" ".join(n.split()) for n in names.split(",")):  # ` QUEEN  ELIZABETH ` is the queen
        if ":" in n:  # ChatSession says why, in one line
            return names
        name = as_learnt(n, learnt) or n
        if n and name not in out:
            out.append(name)
            if name is n:  # not one it learnt
                unknown.append(n)
    if unknown:
        print(f"warning: {source} learnt {', '.join(learnt)}, not {', '.join(unknown)}: "
              "it may not speak as them", file=sys.stderr, flush=True)
    return ",".join(out)


def _read_interactive(user: str):
    while True:
        try:
            yield input(f"{user}: ")
        except EOFError:
            print(file=sys.stderr)
            return


if __name__ == "__main__":
    sys.exit(run_cli(main))
