"""Dataset preparation: the config, the entry function and its report.

    cfg = PrepareConfig(names=["Bob"], txtfilename="examples/dataset.txt")
    report = prepare(cfg)          # writes cfg.jsonfilename (atomically) and returns a PrepareReport
    print(report.format())

`prepare_dataset.py` (CLI) and the webui tab build the same `PrepareConfig`; the tab previews with
`preview(cfg)` (nothing written) and fills its speaker dropdown with `scan_speakers_with_unit(path)`
(`scan_speakers(path)` without the unit).
Everything streams: the input is read line by line and samples are written as they are made, so
memory stays flat whatever the file size (only duplicate removal's packed 6-byte hashes grow).
"""
from __future__ import annotations

import itertools
import os
import re
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

from .dialogue import LAYOUTS, ReadStats, Turn, clean_text, iter_text_turns
from .errors import UserError, closest, join_problems, quoted
from .fileio import holds_samples, keep_previous, missing_parents, nearest_existing, same_file, write_records
from .paths import case_twin, shell_word
from .prompt import loose_key, name_key
from .samples import ALL, DEFAULT_INSTRUCTION, FORMATTERS, RULES, Tally, iter_samples, nobody, wanted_names
from .sources import CHAT_EXPORTS, SOURCES, TEXT_SUFFIXES, check_input, detect_source, text_files
from .sources.csv_dialogue import DEFAULT_COLUMNS, CsvOptions, iter_csv_turns, scan_csv_speakers
from .sources.discord import DiscordOptions, iter_discord_turns, scan_discord_speakers
from .sources import yarn
from .sources.renpy import iter_renpy_turns

DEFAULT_INPUT = "dataset.txt"
DEFAULT_OUTPUT = "processed_dataset.json"
SPEAKERS_SHOWN = 10


# What separates names in one --name: a comma, and the commas a Chinese or Japanese keyboard types
NAME_SEPARATORS = re.compile("[,\uff0c\u3001]")  # , ， 、


def split_names(names) -> list[str]:
    """`--name` values: repeated and/or comma-separated, trimmed (a trailing `:` too), duplicates
    (the same name_key: any case, accents) removed."""
    if names is None:
        return []
    if isinstance(names, str):
        names = [names]
    out: list[str] = []
    seen: set[str] = set()
    for item in names:
        for n in NAME_SEPARATORS.split(str(item)):
            # cleaned as the data's names are (`O’Brien` is read as `O'Brien`); "Bob:" as typed from the data means Bob
            n = clean_text(n).rstrip(":").rstrip()
            if n and name_key(n) not in seen:
                seen.add(name_key(n))
                out.append(n)
    return out


@dataclass
class PrepareConfig:
    """Everything one preparation run needs. Field names are the CLI flags (`--name` is `names`)."""

    names: list[str] = field(default_factory=list)
    """--name/-n: the character(s) to make samples for; repeat or comma-separate; `*` for every speaker.
    Matched case-insensitively; the cue uses the casing found in the data."""
    rounds: int = 5
    """--rounds/-r: previous turns (narration included) given as context."""
    txtfilename: str = DEFAULT_INPUT
    """--txtfilename/-t: the input: a text file, a CSV file, or a chat export (file or folder)."""
    jsonfilename: str = DEFAULT_OUTPUT
    """--jsonfilename/-j: the output; .json writes a JSON array, .jsonl one object a line."""
    format: str = "rounds"
    """--format: rounds | alpaca | sharegpt | messages."""
    source: str = "auto"
    """--source: auto (from the content) | text | discord (chat exports: Discord, Telegram, Messenger, Slack, ...) | csv."""
    layout: str = "auto"
    """--layout: text layout, auto (per file) | lines (`Name: text`) | play (`NAME:` alone, speech below)."""
    strip_actions: bool = False
    """--strip_actions: remove `(...)` and `*...*` actions from the outputs (context keeps them)."""
    dedupe: bool = True
    """--keep_duplicates turns this off: exact duplicate samples (same input and output) are removed."""
    gap_minutes: float = 10.0
    """--gap_minutes: chat exports: a longer silence starts a new conversation."""
    filter_non_responses: bool = True
    """--keep_non_responses turns this off: chat exports: drop messages like `lol`, `lmao`, `gg`."""
    filter_enders: bool = True
    """--keep_enders turns this off: chat exports: drop conversation enders like `gtg`, `cya`, `going to sleep`."""
    filter_low_quality: bool = True
    """--keep_low_quality turns this off: chat exports: drop conversations with fewer than `min_messages`
    turns that are all shorter than `short_chars` characters."""
    min_messages: int = 5
    """--min_messages: chat exports' low-quality rule: conversations with fewer turns than this ..."""
    short_chars: int = 30
    """--short_chars: ... whose turns are all shorter than this many characters (a CJK one counts two) are dropped."""
    csv_speaker_column: str = DEFAULT_COLUMNS["speaker"]
    """--csv_speaker_column: CSV column naming who speaks the reply."""
    csv_text_column: str = DEFAULT_COLUMNS["text"]
    """--csv_text_column: CSV column holding the reply."""
    csv_prompt_column: str = DEFAULT_COLUMNS["prompt"]
    """--csv_prompt_column: CSV column holding the line that leads to the reply ("" for none)."""
    csv_emotion_column: str = DEFAULT_COLUMNS["emotion"]
    """--csv_emotion_column: CSV column with the reply's emotion ("" for none)."""
    csv_group_column: str = DEFAULT_COLUMNS["group"]
    """--csv_group_column: CSV column shared by the rows of one response ("" for one row each)."""
    csv_order_column: str = DEFAULT_COLUMNS["order"]
    """--csv_order_column: CSV column numbering the rows of one response: rows join while it rises ("" for any)."""
    csv_player: str = "Player"
    """--csv_player: speaker name given to the prompt column's lines."""
    csv_name_prefix: bool = False
    """--csv_name_prefix: start each CSV output with the speaker (`MaleNord: ...`)."""
    csv_emotion_prefix: bool = False
    """--csv_emotion_prefix: start each CSV output with its emotion (`[Happy] ...`)."""
    instruction: str = DEFAULT_INSTRUCTION
    """--instruction: alpaca's instruction; `{name}` becomes the character's name."""

    def check_output(self) -> None:
        """Where the samples go must not be the input, nor inside an input folder (a preview writes nothing)."""
        out = str(self.jsonfilename).strip()
        if str(self.txtfilename).strip() and same_file(out, self.txtfilename):
            raise UserError("--jsonfilename is the input file: it would be overwritten")
        if _inside_folder(out, self.txtfilename):  # .jsonl too: SillyTavern would list it as a chat
            raise UserError(f"--jsonfilename {out!r} is inside the input folder {self.txtfilename}: it would overwrite "
                            "an export there, or be read as one next time; write it elsewhere")
        path = Path(out)
        twin = case_twin(path.parent, path.name)
        if twin is not None:  # a second file here, one file on Windows and macOS (copied there, they collide)
            same = same_file(path.parent / twin, self.txtfilename)  # the input itself: only another name will do
            raise UserError(f"--jsonfilename {path.name!r}: a file {twin!r} exists in {path.parent}"
                            f"{' (the input)' if same else ''}, and names differing only in case are one file on "
                            "Windows and macOS: write to " + ("another name" if same else
                            f"{shell_word(str(path.parent / twin))} (an earlier dataset there is kept as .bak) or "
                            "another name"))

    def __post_init__(self):
        self.names = split_names(self.names)
        problems = []
        if not self.names:
            problems.append("--name is required: the character to make samples for (e.g. --name Bob)")
        for n in self.names:
            if ":" in n and n != ALL:
                problems.append(f"--name {quoted(n)}: a name cannot contain ':'")
        if ALL in self.names and len(self.names) > 1:
            others = ", ".join(n for n in self.names if n != ALL)
            problems.append(f"--name '*' means every speaker: give it alone, not with {others}")
        if not isinstance(self.rounds, int) or isinstance(self.rounds, bool) or not 0 <= self.rounds <= 1000:
            problems.append(f"--rounds must be a whole number from 0 to 1000, not {self.rounds!r}")
        if self.format not in FORMATTERS:
            problems.append(f"--format must be one of {', '.join(FORMATTERS)}, not {self.format!r}")
        if self.source not in SOURCES:
            problems.append(f"--source must be one of {', '.join(SOURCES)}, not {self.source!r}")
        if self.layout not in LAYOUTS:
            problems.append(f"--layout must be one of {', '.join(LAYOUTS)}, not {self.layout!r}")
        if not str(self.txtfilename or "").strip():
            problems.append("--txtfilename is empty")
        else:  # `-t ~/x.txt` from cmd or PowerShell, which leave `~` as it is
            self.txtfilename = os.path.expanduser(self.txtfilename)
        out = str(self.jsonfilename or "").strip()
        if out:  # the name checked is the one written: `-j "x.json "` wrote `x.json `, `-j " /x.json"` `./ /x.json`
            self.jsonfilename = out = os.path.expanduser(out)
        if not out:
            problems.append("--jsonfilename is empty")
        elif not out.lower().endswith((".json", ".jsonl")):
            problems.append(f"--jsonfilename {out!r} must end in .json (a JSON array) or .jsonl (one object a line)")
        try:
            gap = float(self.gap_minutes)
            if not gap > 0:
                raise ValueError
            self.gap_minutes = gap
        except (TypeError, ValueError):
            problems.append(f"--gap_minutes must be a number above 0, not {self.gap_minutes!r}")
        for flag in ("min_messages", "short_chars"):
            v = getattr(self, flag)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                problems.append(f"--{flag} must be a whole number >= 0, not {v!r}")
        for f in ("csv_speaker_column", "csv_text_column"):
            if not str(getattr(self, f) or "").strip():
                problems.append(f"--{f} is empty")
        if not str(self.csv_player or "").strip():
            problems.append("--csv_player is empty")
        if not str(self.instruction or "").strip():
            problems.append("--instruction is empty")
        elif others := [f for f in re.findall(r"\{(\w*)\}", str(self.instruction)) if f != "name"]:
            problems.append(f"--instruction: {{{others[0]}}} is not filled in; the one placeholder is {{name}}")
        if self.csv_name_prefix and self.format in ("rounds", "alpaca"):
            problems.append(f"--csv_name_prefix: a {self.format} input ends with the speaker's cue already "
                            "(the output would read 'MaleNord: MaleNord: ...'); it is for --format sharegpt or "
                            "messages files for other tools")
        if problems:
            raise UserError(join_problems(problems))

    @property
    def output_path(self) -> Path:
        return Path(self.jsonfilename)

    def discord_options(self) -> DiscordOptions:
        return DiscordOptions(
            gap_minutes=self.gap_minutes,
            filter_non_responses=self.filter_non_responses,
            filter_enders=self.filter_enders,
            filter_low_quality=self.filter_low_quality,
            min_messages=self.min_messages,
            short_chars=self.short_chars,
        )

    def csv_options(self) -> CsvOptions:
        return CsvOptions(
            speaker_column=self.csv_speaker_column,
            text_column=self.csv_text_column,
            prompt_column=self.csv_prompt_column,
            emotion_column=self.csv_emotion_column,
            group_column=self.csv_group_column,
            order_column=self.csv_order_column,
            player=self.csv_player,
            emotion_prefix=self.csv_emotion_prefix,
        )


def _inside_folder(path, folder) -> bool:
    """`path` would be one of the files of the folder `folder` (a folder of chat exports, read as one)."""
    try:
        return Path(folder).is_dir() and Path(path).resolve().parent == Path(folder).resolve()
    except (OSError, RuntimeError):
        return False


@dataclass
class PrepareReport:
    """What a run read, kept, dropped and wrote."""

    input: str
    source: str  # text | discord | csv | renpy
    output_format: str  # rounds | alpaca | sharegpt | messages
    # file -> its layout (dialogue.LAYOUTS, or the reader's: discord, csv, renpy, ...)
    layouts: dict = field(default_factory=dict)
    lines_read: int = 0  # physical lines (text/CSV rows/Discord messages)
    turns: int = 0  # turns after parsing (narration included)
    speakers: dict = field(default_factory=dict)  # speaker -> non-empty turns, most first
    samples_written: int = 0  # samples made (written when output is set)
    per_name: dict = field(default_factory=dict)  # character -> samples
    dropped: dict = field(default_factory=dict)  # rule -> lines dropped (see samples.RULES), all speakers
    dropped_of: dict = field(default_factory=dict)  # character asked for -> {rule: their lines dropped}
    replaced_bytes: int = 0  # undecodable bytes replaced with U+FFFD
    repaired_lines: int = 0  # lines whose mojibake (or similar) ftfy repaired
    output: str | None = None  # the file written; None for a preview
    seconds: float = 0.0
    notes: list = field(default_factory=list)  # things worth a look that are not errors

    def format(self) -> str:
        """The short text report the CLI prints."""
        layouts = sorted(set(self.layouts.values()))
        how = {"text": f"text, {'/'.join(layouts) or 'lines'} layout", "discord": "/".join(layouts) or "discord"}.get(
            self.source, self.source)
        unit = {"discord": "messages", "csv": "rows"}.get(self.source, "lines")
        lines = [f"read {self.input} ({how}): {self.lines_read} {unit}, {self.turns} turns"]
        top = list(self.speakers.items())
        shown = ", ".join(f"{n} {c}" for n, c in top[:SPEAKERS_SHOWN])
        more = f", ... +{len(top) - SPEAKERS_SHOWN} more" if len(top) > SPEAKERS_SHOWN else ""
        lines.append(f"speakers ({len(top)}): {shown or 'none'}{more}")
        per_name = list(self.per_name.items())
        per = ", ".join(f"{n} {c}" for n, c in per_name[:SPEAKERS_SHOWN])
        if len(per_name) > SPEAKERS_SHOWN:
            per += f", ... +{len(per_name) - SPEAKERS_SHOWN} more"
        where = f" -> {self.output}" if self.output else " (preview: nothing written)"
        lines.append(f"samples: {self.samples_written}" + (f" ({per})" if per else "") + f"{where} [{self.output_format}]")
        drops = [(r, c) for r, c in self.dropped.items() if c]
        own = "; ".join(f"{n}'s own: " + (", ".join(f"{r} {c}" for r, c in d.items()) or "none")
                        for n, d in self.dropped_of.items())
        lines.append("dropped: " + (", ".join(f"{r} {c}" for r, c in drops) if drops else "nothing")
                     + (f" (all speakers; {own})" if drops and own else ""))
        if self.replaced_bytes or self.repaired_lines:
            lines.append(
                f"cleaned: {self.repaired_lines} line(s) repaired by ftfy (mojibake, curly quotes, ligatures), "
                f"{self.replaced_bytes} undecodable byte(s) replaced"
            )
        lines.extend(f"note: {n}" for n in self.notes)
        lines.append(f"took {self.seconds:.2f} s")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------------------- pipeline


def merge_speakers(counts: Counter) -> dict[str, int]:
    """Speaker counts merged by name_key (shown in their most frequent spelling), most first."""
    groups: dict[str, Counter] = {}
    for name, c in counts.items():
        groups.setdefault(name_key(name), Counter())[name] += c
    merged = {g.most_common(1)[0][0]: sum(g.values()) for g in groups.values()}
    return dict(sorted(merged.items(), key=lambda kv: -kv[1]))


def resolve_source(cfg: PrepareConfig) -> str:
    if cfg.source != "auto":
        check_input(Path(cfg.txtfilename))
        return cfg.source
    return detect_source(cfg.txtfilename, (cfg.csv_speaker_column, cfg.csv_text_column))


def iter_turns(cfg: PrepareConfig, source: str, stats: ReadStats, tally: Tally) -> Iterator[Turn | None]:
    if source == "discord":
        return iter_discord_turns(cfg.txtfilename, cfg.discord_options(), stats, tally.dropped, tally.dropped_by,
                                  tally.aliases, tally.people)
    if source == "csv":
        return iter_csv_turns(cfg.txtfilename, cfg.csv_options(), stats, tally.dropped, tally.dropped_by)
    if source == "renpy":
        return iter_renpy_turns(cfg.txtfilename, stats)
    if Path(cfg.txtfilename).suffix.lower() == ".rpy":  # --source text on a script: its statements read as lines
        stats.add_note(f"{cfg.txtfilename}: a Ren'Py script read as text (--source text): --source auto or renpy "
                       "reads its say statements", hint=True)
    if Path(cfg.txtfilename).is_dir():
        files = text_files(Path(cfg.txtfilename))
        if not files:
            raise UserError(f"{cfg.txtfilename}: is a folder with no text files ({', '.join(TEXT_SUFFIXES)}), chat "
                            f"exports ({CHAT_EXPORTS}) or Ren'Py game scripts in it")
        return _text_folder(files, cfg.layout, stats)
    if yarn.is_script(cfg.txtfilename):  # a game's branching dialogue: each branch with its own context
        if cfg.layout != "auto":
            raise UserError(f"--layout {cfg.layout} does not apply to {cfg.txtfilename}: a Yarn Spinner script, "
                            "read node by node and branch by branch")
        return yarn.read(Path(cfg.txtfilename), stats)
    return iter_text_turns(cfg.txtfilename, cfg.layout, stats)


def _text_folder(files: list[Path], layout: str, stats: ReadStats) -> Iterator[Turn | None]:
    """The text files of a folder one after another, each its own conversations (a series' episodes)."""
    for path in files:
        yield None
        yield from iter_text_turns(path, layout, stats)


# The switch that keeps what a Discord filter dropped, for the error that names the filter.
_KEEP_FLAGS = {"non_response": "--keep_non_responses", "ender": "--keep_enders", "low_quality": "--keep_low_quality",
               "duplicate": "--keep_duplicates"}


def _why_dropped(tally: Tally, name: str) -> tuple[int, str]:
    """(lines of `name` dropped, "rule n, ...; --keep_x keeps them") from the per-speaker drop counts."""
    folded = name_key(name)
    rules = Counter({rule: c for (who, rule), c in tally.dropped_by.items() if who == folded})
    flags = sorted({_KEEP_FLAGS[r] for r in rules if r in _KEEP_FLAGS})
    why = ", ".join(f"{r} {c}" for r, c in rules.most_common())
    if flags:
        why += f"; {' / '.join(flags)} keep{'s' if len(flags) == 1 else ''} them"
    if "action_only" in rules:
        why += "; without --strip_actions those actions stay"
    if not flags and set(rules) == {"bot"}:
        why += ": a bot's messages are never samples"
    return sum(rules.values()), why


def _check_result(cfg: PrepareConfig, tally: Tally, source: str = "text") -> None:
    """Every requested character was found and got samples; else one clear error."""
    wanted = wanted_names(cfg.names)
    speakers = merge_speakers(tally.speakers)
    met = {name_key(s) for s in tally.seen}
    found = ", ".join(f"{n} ({c})" for n, c in list(speakers.items())[:SPEAKERS_SHOWN]) or "none"
    if len(speakers) > SPEAKERS_SHOWN:
        found += f", ... +{len(speakers) - SPEAKERS_SHOWN} more"
    got = Counter()
    for n, c in tally.per_name.items():
        got[name_key(n)] += c
    drops = ", ".join(f"{r} {c}" for r, c in tally.dropped.items() if c)
    if not tally.seen and not tally.dropped_by:
        if source in ("discord", "csv"):
            what = "messages by people" if source == "discord" else "rows with a reply"
            raise UserError(f"no {what} in {cfg.txtfilename}" + (f" (dropped: {drops})" if drops else ": it has none"))
        if source == "renpy":
            raise UserError(f"no character dialogue in {cfg.txtfilename}: {tally.turns} line(s) read, all narration "
                            "(say statements with no speaker, `\"Text.\"`, or by a Character(None))")
        raise UserError(f"no speaker lines in {cfg.txtfilename}: {tally.turns} line(s) read, all narration "
                        "(expected `Name: text` lines, a play's `NAME:` or `NAME.` cues, or a film script's cues "
                        "in capitals: see --layout)")
    problems, missing = [], []
    keyed = None  # the speakers by their loose key, for did-you-means: made once, not once a missing name
    for name in cfg.names if wanted is not None else ():
        n_dropped, why = _why_dropped(tally, name)
        if name_key(name) in met or n_dropped:
            if not got[name_key(name)]:
                lines = f"all {n_dropped} of their lines were" if n_dropped != 1 else "their one line was"
                problems.append(f"no samples for {quoted(name)} in {cfg.txtfilename}: {lines} dropped "
                                f"({why or 'nothing to keep'})")
            continue
        alias = tally.aliases.get(name_key(name))
        if alias:
            hint = f"their messages go under their server nickname: -n {alias!r}"
        elif len(missing) < SPEAKERS_SHOWN:  # (difflib over 10,000 speakers takes a while a name)
            if keyed is None:
                keyed = {loose_key(s): s for s in (list(speakers) or list(tally.seen))}
            hint = closest(name, keyed, key=loose_key)  # `Isık` -> IŞIK, `zoe` -> Zoë
            hint = f"did you mean {hint!r}?" if hint else ""
        else:
            hint = ""
        missing.append((name, hint))
    if len(missing) == 1:
        name, hint = missing[0]
        problems.append(f"name {quoted(name)} not found in {cfg.txtfilename}{f' ({hint})' if hint else ''}; "
                        f"speakers found: {found}")
    elif missing:  # said once with the speakers found, however many names are missing
        shown = [quoted(name) + (f" ({hint})" if hint else "") for name, hint in missing[:SPEAKERS_SHOWN]]
        more = f", ... +{len(missing) - SPEAKERS_SHOWN} more" if len(missing) > SPEAKERS_SHOWN else ""
        problems.append(f"{len(missing)} names not found in {cfg.txtfilename}: {', '.join(shown)}{more}; "
                        f"speakers found: {found}")
    if problems:
        raise UserError(join_problems(problems))
    if not sum(tally.per_name.values()):
        who = ", ".join(cfg.names)
        raise UserError(f"no samples for {who} in {cfg.txtfilename}: none of their turns was kept "
                        f"(dropped: {drops or 'none'})")


def prepare(cfg: PrepareConfig, write: bool = True, keep: int = 0, _kept: list | None = None) -> PrepareReport:
    """Read, clean, window, format and (when `write`) write the samples; return the report.

    The output is written to a temporary file and renamed into place only when the whole run
    succeeded: a failed run leaves an existing output as it was. `keep` first records are appended to
    `_kept` (used by `preview`).
    """
    t0 = time.perf_counter()
    if write:
        cfg.check_output()
    source = resolve_source(cfg)
    stats, tally = ReadStats(), Tally()
    samples = iter_samples(
        iter_turns(cfg, source, stats, tally),
        cfg.names,
        cfg.rounds,
        cfg.strip_actions,
        cfg.dedupe,
        tally,
        not_all=(cfg.csv_player,) if source == "csv" else (),
    )
    fmt, instruction = FORMATTERS[cfg.format], cfg.instruction
    if cfg.csv_name_prefix and source == "csv":  # the reply only: a context line names its speaker already
        plain = fmt
        fmt = lambda s, instruction: plain(s._replace(output=f"{s.name}: {s.output}"), instruction)  # noqa: E731
    out = cfg.output_path
    replaced: list[str] = []  # said in the report: a run on another character may have replaced a dataset

    def records():
        if keep and _kept is not None:
            for s in itertools.islice(samples, keep):
                rec = fmt(s, instruction)
                _kept.append(rec)
                yield rec
        for s in samples:
            yield fmt(s, instruction)
        try:  # raising here (before the rename) keeps an existing output intact
            _check_result(cfg, tally, source)
        except UserError as e:
            if not stats.hints:
                raise
            raise UserError(f"{e} (note: {'; '.join(stats.hints)})") from None
        # an earlier output, or empty: safe to replace; anything else (an export, settings, notes) is the user's
        if write and out.is_file():  # after the input's own errors, which come first
            held = holds_samples(out)
            if held is False:
                raise UserError(f"{out}: exists and is not a dataset of samples: not replaced; pick "
                                "another --jsonfilename")
            if held:  # kept: it may be hand-made or cleaned, or the samples a stopped run must resume on
                try:
                    backup = keep_previous(out)
                except OSError as e:
                    raise UserError(f"{out}: could not keep the earlier dataset as {out.name}.bak "
                                    f"({e.strerror or e}): not replaced") from None
                replaced.append(f"{out.name} replaced the earlier dataset of that name, kept as {backup.name}")

    if write:
        if out.is_dir():
            raise UserError(f"{out}: is a folder (--jsonfilename)")
        if out.exists() and not out.is_file():  # (through a link too) it would be replaced by a file
            raise UserError(f"{out}: is not a regular file (a pipe or a device): not replaced; pick another "
                            "--jsonfilename")
        blocker = nearest_existing(out.parent)
        if blocker is not None and not blocker.is_dir():
            raise UserError(f"{out}: cannot write: {blocker} is a file, not a folder (--jsonfilename)")
        made = missing_parents(out.parent)
        try:
            n = write_records(out, records())
        except OSError as e:
            raise UserError(f"{out}: cannot write ({e.strerror or e})") from None
        if made:  # a typo in the path would otherwise go unseen
            replaced.append(f"made the folder {made[-1]} for {out.name}")  # (and those above it that were missing)
    else:
        n = sum(1 for _ in records())
    dropped = {r: tally.dropped[r] for r in RULES if tally.dropped.get(r)}
    dropped.update({r: c for r, c in tally.dropped.items() if r not in dropped and c})
    return PrepareReport(
        input=str(cfg.txtfilename),
        source=source,
        output_format=cfg.format,
        layouts=dict(stats.layouts),
        lines_read=stats.lines,
        turns=tally.turns,
        speakers=merge_speakers(tally.speakers),
        samples_written=n,
        per_name=merge_speakers(tally.per_name),
        dropped=dropped,
        dropped_of=_dropped_of(cfg.names, tally),
        replaced_bytes=stats.replaced_bytes,
        repaired_lines=stats.repaired_lines,
        output=str(out) if write else None,
        seconds=time.perf_counter() - t0,
        notes=(_encoding_notes(stats.encodings) + stats.notes + _shared_names(tally.people) + replaced
               + _nobody_note(cfg.names, tally.speakers)),
    )


def _nobody_note(names: list[str], speakers: Counter) -> list[str]:
    """`*` left out the accounts an export says are gone: said, with how to have them anyway."""
    left = sorted({s for s in speakers if nobody(s)}) if ALL in names else []
    if not left:
        return []
    return [f"'*' leaves out {', '.join(left)}: the export's name for accounts that are gone, many people under "
            f"one name (-n {shell_word(left[0])} to train them anyway)"]


def _dropped_of(names: list[str], tally: Tally) -> dict:
    """Each character asked for (not `*`) -> {rule: their lines dropped}, in report order."""
    if wanted_names(names) is None:
        return {}
    order = {r: i for i, r in enumerate(RULES)}
    shown = {name_key(n): n for n in merge_speakers(tally.speakers)}  # as the speakers line writes them
    found = {}
    for name in names:
        folded = name_key(name)
        rules = [(r, c) for (who, r), c in tally.dropped_by.items() if who == folded and c]
        found[shown.get(folded, name)] = dict(sorted(rules, key=lambda rc: order.get(rc[0], len(order))))
    return found


def _encoding_notes(encodings: dict) -> list[str]:
    """A note for each file read in a legacy code page rather than UTF-8 (its letters may be wrong)."""
    return [f"{name} is not UTF-8: read as {_CODE_PAGE_NAMES.get(encoding, encoding)}, a guess; if letters look "
            "wrong in the samples, save the file as UTF-8" for name, encoding in encodings.items()]


_CODE_PAGE_NAMES = {"cp1252": "Windows-1252 (Western European)", "cp1250": "Windows-1250 (Central European)",
                    "cp1251": "Windows-1251 (Cyrillic)", "koi8_u": "KOI8-R/KOI8-U (Cyrillic)",
                    "cp1253": "Windows-1253 (Greek)",
                    "cp1254": "Windows-1254 (Turkish)", "cp1257": "Windows-1257 (Baltic)",
                    "cp1255": "Windows-1255 (Hebrew)", "cp1256": "Windows-1256 (Arabic)",
                    "cp932": "Shift-JIS (Japanese)", "cp949": "Windows-949 (Korean)",
                    "gb18030": "GB18030 (Chinese)", "big5": "Big5 (Chinese)"}


def _shared_names(people: dict, shown: int = 5) -> list[str]:
    """A note for each chat-export name that several accounts use (their messages became one speaker), and
    for each account that goes by several names (it is several speakers)."""
    shared = sorted(((name, ids) for name, ids in people.values() if len(ids) > 1), key=lambda x: x[0].casefold())
    notes = [f"{len(ids)} accounts (ids {', '.join(sorted(ids)[:3])}{', ...' if len(ids) > 3 else ''}) "
             f"go by {name!r}: their messages are one speaker here" for name, ids in shared[:shown]]
    if len(shared) > shown:
        notes.append(f"... and {len(shared) - shown} more names used by several accounts")
    names_of: dict = {}  # and the other way: one account under two names (a server nickname each)
    for name, ids in people.values():
        for i in ids:
            names_of.setdefault(i, []).append(name)
    renamed = sorted((sorted(names, key=str.casefold), i) for i, names in names_of.items() if len(names) > 1)
    notes += [f"one account (id {i}) goes by {' and '.join(map(repr, names))}: they are "
              f"{'two' if len(names) == 2 else len(names)} speakers here (give -n {shell_word(','.join(names))} "
              "for both, as one adapter's characters)" for names, i in renamed[:shown]]
    if len(renamed) > shown:
        notes.append(f"... and {len(renamed) - shown} more accounts under several names")
    return notes


def preview(cfg: PrepareConfig, n: int = 5) -> tuple[list[dict], PrepareReport]:
    """The first `n` records and the full report, writing nothing (the tab's preview)."""
    kept: list[dict] = []
    report = prepare(cfg, write=False, keep=max(n, 0), _kept=kept)
    return kept, report


# What scan_speakers counts for each source, as the tab words it: a Discord count is of raw messages, before
# a speaker's run of messages becomes one turn and before the filters, so it is not the report's samples.
SPEAKER_UNITS = {"discord": "messages", "csv": "rows", "text": "lines"}


def scan_speakers(path: str | os.PathLike, source: str = "auto", **options) -> dict[str, int]:
    """Speaker -> count (most first) of an input, for the tab's dropdown. No filters applied."""
    return scan_speakers_with_unit(path, source, **options)[0]


def scan_speakers_with_unit(path: str | os.PathLike, source: str = "auto", **options) -> tuple[dict[str, int], str]:
    """Speaker -> count of turns (a text's speeches or lines, a CSV's rows, Discord's messages), and
    what was counted (SPEAKER_UNITS). `options` are PrepareConfig fields (e.g. layout) used to read the input.
    """
    cfg = PrepareConfig(names=[ALL], txtfilename=str(path), source=source, **options)
    src = resolve_source(cfg)
    if src == "discord":
        return merge_speakers(scan_discord_speakers(path)), SPEAKER_UNITS[src]
    if src == "csv":
        return merge_speakers(scan_csv_speakers(path, cfg.csv_options())), SPEAKER_UNITS[src]
    counts: Counter = Counter()
    stats = ReadStats()
    for t in iter_turns(cfg, src, stats, Tally()):
        if t is not None and t.speaker and t.text:
            counts[t.speaker] += 1
    # a play's turn is a speech of one or more lines
    unit = "speeches" if {"play", "screenplay"} & set(stats.layouts.values()) else SPEAKER_UNITS["text"]
    return merge_speakers(counts), unit
