#!/usr/bin/env python3
"""Turn raw dialogue into training samples for one or more characters.

    python prepare_dataset.py --name Bob -t examples/dataset.txt
    python prepare_dataset.py examples/dataset.txt --name Bob          (the same)
    python prepare_dataset.py -n ROMEO -n JULIET -t plays.txt -j romeo_juliet.jsonl --format sharegpt
    python prepare_dataset.py -n Alex -t exports/ --source discord --gap_minutes 30

Every flag is described in README.md ("Preparing a dataset"). The work is done by extensions/dialogue_lora/prepare.py.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

try:
    from extensions.dialogue_lora.dialogue import LAYOUTS
    from extensions.dialogue_lora.errors import CliParser, UserError, join_problems, run_cli
    from extensions.dialogue_lora.prepare import DEFAULT_INPUT, DEFAULT_OUTPUT, PrepareConfig, prepare, preview, resolve_source
    from extensions.dialogue_lora.prompt import FORMATS
    from extensions.dialogue_lora.samples import DEFAULT_INSTRUCTION
    from extensions.dialogue_lora.sources import CHAT_EXPORTS, SOURCES
    from extensions.dialogue_lora.sources.csv_dialogue import DEFAULT_COLUMNS
except KeyboardInterrupt:  # Ctrl+C while the modules load: a line, not a traceback
    sys.stderr.write("error: interrupted\n")
    sys.exit(130)


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    def _get_help_string(self, action):  # no "(default: None)" on flags without a default; 10, not 10.0
        if isinstance(action.default, float):
            return f"{action.help} (default: {action.default:g})"
        return action.help if action.default is None else super()._get_help_string(action)


def _sample_count(text: str) -> int:
    try:
        return min(int(text), sys.maxsize)  # (more than any file holds: all of them)
    except ValueError:  # `--dry_run chat.txt`: the optional number took the input
        looks_numeric = text.replace(".", "", 1).replace("e", "", 1).replace("-", "").replace("+", "").isdigit()
        if looks_numeric and not Path(text).exists():  # 1e3, 2.5 (a file named 2024-01-05 is the input)
            raise argparse.ArgumentTypeError(f"takes a whole number of samples, not {text!r}") from None
        raise argparse.ArgumentTypeError(f"takes a number of samples, not {text!r}; give the input before "
                                         "--dry_run, or as --txtfilename") from None


class _OneInput(argparse.Action):
    """-t given twice is refused: argparse keeps the last, and the first file was quietly not read."""

    def __call__(self, parser, namespace, values, option_string=None):
        before = getattr(namespace, "_input_given", None)
        if before is not None and before != values:
            parser.error(f"--txtfilename given twice ({before!r} and {values!r}): one input a run (a folder of "
                         "text files is read whole)")
        namespace._input_given = values
        setattr(namespace, self.dest, values)


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(
        description="Turn raw dialogue (text, play or film script, subtitles, a saved web page, text copied out of a "
                    "chat app, a Discord, Telegram, WhatsApp, Messenger, Instagram, SillyTavern or Slack chat, "
                    "game-dialogue CSV, Ren'Py or Yarn Spinner scripts) into training samples for one or more "
                    "characters.",
        formatter_class=_Help,
    )
    p.add_argument("input", nargs="?", default=None, metavar="INPUT",
                   help="the input, as --txtfilename gives it (one or the other)")
    p.add_argument("--name", "-n", action="append", dest="names", metavar="NAME",
                   help="character to make samples for (case-insensitive); repeat it or comma-separate "
                   "for several; '*' for every speaker (required)")
    p.add_argument("--rounds", "-r", type=int, default=5, help="previous turns given as context")
    p.add_argument("--txtfilename", "-t", default=DEFAULT_INPUT, action=_OneInput,
                   help="input: text file, subtitles, a saved web page (.html), CSV file, a chat export "
                        "(Discord/Telegram/Messenger JSON, SillyTavern .jsonl, WhatsApp .txt, Slack .zip) or a "
                        "folder of them, a Yarn Spinner script (.yarn), or Ren'Py scripts (a .rpy file, a game's "
                        "folder or a zip of it)")
    p.add_argument("--jsonfilename", "-j", default=DEFAULT_OUTPUT,
                   help="output: .json (JSON array) or .jsonl (one object a line)")
    p.add_argument("--format", default="rounds", choices=FORMATS, help="output format")
    p.add_argument("--source", default="auto", choices=SOURCES,
                   help="input kind (auto: from the content); discord: any chat export (Discord, Telegram, "
                   "WhatsApp, Slack, SillyTavern, ...)")
    p.add_argument("--layout", default="auto", choices=LAYOUTS,
                   help="text layout: 'Name: text' lines, play script or film script (auto: per file)")
    p.add_argument("--strip_actions", action="store_true",
                   help="remove actions from the outputs: (...), [...], （...） and *...* (the context keeps them)")
    p.add_argument("--keep_duplicates", action="store_true", help="keep exact duplicate samples")
    p.add_argument("--instruction", default=DEFAULT_INSTRUCTION,
                   help="alpaca instruction; {name} becomes the character")
    d = p.add_argument_group(f"Chat exports ({CHAT_EXPORTS})")
    d.add_argument("--gap_minutes", type=float, default=10.0, help="silence that starts a new conversation")
    d.add_argument("--keep_non_responses", action="store_true", help="keep messages like lol, lmao, gg")
    d.add_argument("--keep_enders", action="store_true", help="keep conversation enders like gtg, cya")
    d.add_argument("--keep_low_quality", action="store_true",
                   help="keep short conversations of short messages (see --min_messages, --short_chars)")
    d.add_argument("--min_messages", type=int, default=5, help="low quality: conversations with fewer turns ...")
    d.add_argument("--short_chars", type=int, default=30, help="... all shorter than this many characters (a CJK one counts two)")
    c = p.add_argument_group("game-dialogue CSV (defaults fit a LazyVoiceFinder export)")
    c.add_argument("--csv_speaker_column", default=DEFAULT_COLUMNS["speaker"],
                   help="who speaks the reply (at the default, usual names such as Speaker, Character or Name "
                   "are tried too)")
    c.add_argument("--csv_text_column", default=DEFAULT_COLUMNS["text"],
                   help="the reply (at the default, usual names such as Dialogue, Text or Line are tried too)")
    c.add_argument("--csv_prompt_column", default=DEFAULT_COLUMNS["prompt"],
                   help="the player's line before the reply ('' for none)")
    c.add_argument("--csv_emotion_column", default=DEFAULT_COLUMNS["emotion"], help="the reply's emotion ('' for none)")
    c.add_argument("--csv_group_column", default=DEFAULT_COLUMNS["group"],
                   help="shared by the rows of one response ('' for one row each)")
    c.add_argument("--csv_order_column", default=DEFAULT_COLUMNS["order"],
                   help="numbers the rows of one response: a group's rows in a row join while it rises; a "
                        "number that drops starts another response ('' for any rows in a row)")
    c.add_argument("--csv_player", default="Player", help="speaker name for the prompt column's lines")
    c.add_argument("--csv_name_prefix", action="store_true", help="start outputs with the speaker ('MaleNord: ...')")
    c.add_argument("--csv_emotion_prefix", action="store_true", help="start outputs with the emotion ('[Happy] ...')")
    p.add_argument("--dry_run", type=_sample_count, nargs="?", const=3, default=None, metavar="N",
                   help="write nothing; print the report and the first N samples (default 3)")
    return p


def config_from_args(args: argparse.Namespace) -> PrepareConfig:
    return PrepareConfig(
        names=args.names or [],
        rounds=args.rounds,
        txtfilename=args.txtfilename,
        jsonfilename=args.jsonfilename,
        format=args.format,
        source=args.source,
        layout=args.layout,
        strip_actions=args.strip_actions,
        dedupe=not args.keep_duplicates,
        gap_minutes=args.gap_minutes,
        filter_non_responses=not args.keep_non_responses,
        filter_enders=not args.keep_enders,
        filter_low_quality=not args.keep_low_quality,
        min_messages=args.min_messages,
        short_chars=args.short_chars,
        csv_speaker_column=args.csv_speaker_column,
        csv_text_column=args.csv_text_column,
        csv_prompt_column=args.csv_prompt_column,
        csv_emotion_column=args.csv_emotion_column,
        csv_group_column=args.csv_group_column,
        csv_order_column=args.csv_order_column,
        csv_player=args.csv_player,
        csv_name_prefix=args.csv_name_prefix,
        csv_emotion_prefix=args.csv_emotion_prefix,
        instruction=args.instruction,
    )


DISCORD_FLAGS = ("gap_minutes", "keep_non_responses", "keep_enders", "keep_low_quality", "min_messages", "short_chars")


def check_flags_apply(args: argparse.Namespace, parser: argparse.ArgumentParser, cfg: PrepareConfig) -> None:
    """Flags set for another kind of input, or another format, are an error rather than silently unused."""
    def changed(dests):
        return [f"--{d}" for d in dests if getattr(args, d) != parser.get_default(d)]

    source = resolve_source(cfg)
    read_as = f"{cfg.txtfilename} is read as {source} (--source)"
    problems = []
    if source != "discord" and (flags := changed(DISCORD_FLAGS)):
        problems.append(f"{', '.join(flags)}: for chat exports only ({CHAT_EXPORTS}), "
                        f"and {read_as}")
    if source != "csv" and (flags := changed(d for d in vars(args) if d.startswith("csv_"))):
        problems.append(f"{', '.join(flags)}: for CSV input only, and {read_as}")
    if source != "text" and changed(["layout"]):
        problems.append(f"--layout: for text files only, and {read_as}")
    if args.format != "alpaca" and changed(["instruction"]):
        problems.append(f"--instruction: for --format alpaca only (the format is {args.format})")
    if args.keep_low_quality and (flags := changed(["min_messages", "short_chars"])):
        problems.append(f"{', '.join(flags)}: {'they say' if len(flags) > 1 else 'it says'} which conversations are "
                        "low quality, and --keep_low_quality keeps them all")
    if problems:
        raise UserError(join_problems(problems))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.input is not None:
        if args.txtfilename != parser.get_default("txtfilename"):
            raise UserError(f"the input is given twice ({args.input!r} and --txtfilename {args.txtfilename!r}): "
                            "give one")
        args.txtfilename = args.input
    cfg = config_from_args(args)
    if args.dry_run is not None and args.dry_run < 0:
        raise UserError(f"--dry_run must be a number of samples to show, 0 or more, not {args.dry_run}")
    check_flags_apply(args, parser, cfg)
    if args.dry_run is not None:
        records, report = preview(cfg, args.dry_run)
        print(report.format())
        for rec in records:
            print(json.dumps(rec, ensure_ascii=False, indent=2))
        return 0
    report = prepare(cfg)
    print(report.format())
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
