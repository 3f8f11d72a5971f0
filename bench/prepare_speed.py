"""How fast is prepare_dataset, next to the fastest thing that could possibly do the job?

    python bench/prepare_speed.py                 # a million lines (about 70 MB), under a minute here
    python bench/prepare_speed.py --lines 200000  # quicker

Generates a `Name: line` file (realistic line lengths, eight speakers of uneven weight, some narration,
stage directions, actions, colons inside lines, a little non-ASCII and mojibake, scene breaks) in a
temporary folder, then runs, each in its own process and timed as the user would see it:

- the floor: a bare Python loop that reads the lines, splits each at the first colon and writes it as
  one JSON object (no cleaning, no context, no checks); and
- ours: `prepare_dataset.py --name Alice -t FILE -j OUT` (defaults: rounds 5, the rounds format).

The two alternate (`--repeats` times each, best time kept) so that load from other processes on the
machine hits both alike. Ours also runs on a quarter-size file to show that peak memory does not grow
with the file (it streams). The last line is `prepare: N lines/s, R x floor, peak memory M MB`, where
R is our time over the floor's in this run. Every run is appended to bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import itertools
import random
import sys
import tempfile
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:  # `python bench/x.py` from anywhere: the repo root holds bench/ and extensions/
    sys.path.insert(0, _ROOT)
from bench.common import ROOT, append_results, child_env, load_average, machine_info, run_measured  # noqa: E402

# (name, weight): a protagonist who speaks most, then a tail, like a novel or a game's voice lines.
SPEAKERS = [
    ("Alice", 30), ("Bob", 20), ("Captain Reyes", 14), ("Mira", 10),
    ("Old Tom", 8), ("Dr. Okafor", 7), ("Jin", 6), ("Sage-7", 5),
]
TARGET = "Alice"

_WORDS = (
    "the I you to a and it of that is in what we me this he for my your on have be not with but no "
    "do was just know so all they are there here can like now get go about one if right out up she "
    "him her how come want think at well see why yes don't it's I'm oh time back been would could "
    "never good tell did really where who something said let going take look off then more need man "
    "way make only over should down little say those mean because thing after night home sure before "
    "still again father mother ship captain river town market bread rain light road friend door "
    "listen wait maybe tomorrow tonight together money gold sword letter king queen war storm sea "
    "quiet careful honest strange afraid tired hungry ready wrong true old young long last first "
    "everyone nothing anything someone always already enough anyway though through across between"
).split()
_ENDS = [".", ".", ".", ".", "?", "?", "!", "...", ","]
_EXTRAS = [
    " (laughs)", " *sighs*", " At 10:30, sharp.", " Note: bring the map.", " It's café time.",
    " That’s what she said.", " See http://example.com/a:b for more.", " don\u00e2\u20ac\u2122t worry.",
    " — or so they say.", " 3:1 odds, no more.",
]
_NARRATION = [
    "The rain kept falling on the old town.",
    "(Alice walks to the window and looks out.)",
    "*A door slams somewhere below.*",
    "Hours pass. The fire burns low.",
    "[The ship lurches as a wave hits the bow.]",
    "Nobody answers for a long time.",
]


def generate_lines(n: int, seed: int = 0):
    """Yield `n` lines of dialogue (no newline): mostly `Speaker: text`, some narration and blank lines.

    Line lengths follow a log-normal spread (median about 9 words, a long tail up to 80), which matches
    chat and screenplay dialogue far better than a fixed length does.
    """
    rng = random.Random(seed)
    names = [s for s, _ in SPEAKERS]
    name_cum = list(_cumulative(w for _, w in SPEAKERS))
    # Zipf-like word frequencies: common words first.
    word_cum = list(_cumulative(1.0 / (i + 1) for i in range(len(_WORDS))))
    choices, random_ = rng.choices, rng.random
    lognorm = rng.lognormvariate
    for _ in range(n):
        r = random_()
        if r < 0.01:
            yield ""
            continue
        if r < 0.06:
            yield _NARRATION[int(random_() * len(_NARRATION))]
            continue
        k = max(1, min(80, int(lognorm(2.2, 0.7))))
        words = choices(_WORDS, cum_weights=word_cum, k=k)
        text = " ".join(words)
        text = text[0].upper() + text[1:] + _ENDS[int(random_() * len(_ENDS))]
        if random_() < 0.05:
            text += _EXTRAS[int(random_() * len(_EXTRAS))]
        name = choices(names, cum_weights=name_cum)[0]
        sep = ": " if random_() < 0.97 else ":"
        yield name + sep + text


def _cumulative(weights):
    total = 0.0
    for w in weights:
        total += w
        yield total


def write_dialogue(path: Path, n: int, seed: int = 0) -> int:
    """Write the generated dialogue; returns its size in bytes."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        buf = []
        for line in generate_lines(n, seed):
            buf.append(line)
            if len(buf) >= 10000:
                f.write("\n".join(buf) + "\n")
                buf.clear()
        if buf:
            f.write("\n".join(buf) + "\n")
    return path.stat().st_size


# The floor: the least any prepare step must do. Kept as a string so it runs in a bare interpreter.
FLOOR = r"""
import json, sys
with open(sys.argv[1], encoding="utf-8") as src, open(sys.argv[2], "w", encoding="utf-8") as out:
    for line in src:
        name, _, text = line.partition(":")
        out.write(json.dumps({"name": name, "text": text.strip()}, ensure_ascii=False))
        out.write("\n")
"""


def floor_cmd(src: Path, dst: Path) -> list[str]:
    return [sys.executable, "-c", FLOOR, str(src), str(dst)]


def ours_cmd(src: Path, dst: Path, name: str = TARGET) -> list[str]:
    return [sys.executable, str(ROOT / "prepare_dataset.py"), "--name", name, "-t", str(src), "-j", str(dst)]


def _samples_written(report: str) -> int | None:
    """The sample count from prepare_dataset's report line `samples: N (...)`."""
    for line in report.splitlines():
        if line.startswith("samples:"):
            digits = line.split(":", 1)[1].split()[0].replace(",", "")
            return int(digits) if digits.isdigit() else None
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lines", type=int, default=1_000_000, help="lines in the generated file (default 1,000,000)")
    p.add_argument("--repeats", type=int, default=2, help="timed runs of each side; the best is kept (default 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no_record", action="store_true", help="do not append to bench/RESULTS.md")
    args = p.parse_args(argv)
    load_at_start = load_average()
    env = child_env()

    with tempfile.TemporaryDirectory(prefix="prepare_speed.") as tmp:
        tmp = Path(tmp)
        full, quarter = tmp / "dialogue.txt", tmp / "dialogue_quarter.txt"
        size = write_dialogue(full, args.lines, args.seed)
        with open(full, encoding="utf-8") as src, open(quarter, "w", encoding="utf-8") as dst:
            dst.writelines(itertools.islice(src, max(1, args.lines // 4)))
        print(f"generated {args.lines:,} lines ({size / 1e6:.1f} MB), {len(SPEAKERS)} speakers; target {TARGET}")

        floor_runs, ours_runs = [], []
        for i in range(args.repeats):
            floor_runs.append(run_measured(floor_cmd(full, tmp / "floor.jsonl"), env=env).check("the floor"))
            ours_runs.append(run_measured(ours_cmd(full, tmp / "ours.json"), cwd=ROOT, env=env).check("prepare_dataset.py"))
            print(f"run {i + 1}: floor {floor_runs[-1].seconds:.2f} s, ours {ours_runs[-1].seconds:.2f} s")
        report = ours_runs[-1].stdout.strip()
        floor_q = run_measured(floor_cmd(quarter, tmp / "floor_q.jsonl"), env=env).check("the floor (1/4 file)")
        ours_q = run_measured(ours_cmd(quarter, tmp / "ours_q.json"), cwd=ROOT, env=env).check("prepare_dataset.py (1/4 file)")
        out_mb = (tmp / "ours.json").stat().st_size / 1e6

    floor_s = min(m.seconds for m in floor_runs)
    ours_s = min(m.seconds for m in ours_runs)
    ratio = ours_s / floor_s
    rate = args.lines / ours_s
    floor_mem = max(m.peak_rss_mb for m in floor_runs)
    ours_mem = max(m.peak_rss_mb for m in ours_runs)
    n_quarter = max(1, args.lines // 4)
    # What grows with the input: MB per million lines, against the size of the input itself.
    growth = max(0.0, ours_mem - ours_q.peak_rss_mb) / (args.lines - n_quarter) * 1e6
    file_mb = size / 1e6 / args.lines * 1e6
    samples = _samples_written(report)
    per_sample = f", {growth * args.lines / samples:.0f} bytes per sample written" if samples else ""
    figures = [
        "ours, last run: " + " | ".join(line for line in report.splitlines() if line.startswith(("samples", "took"))),
        f"output: {out_mb:.1f} MB",
        f"floor: {floor_s:.2f} s ({args.lines / floor_s:,.0f} lines/s), peak memory {floor_mem:.0f} MB",
        f"ours:  {ours_s:.2f} s ({rate:,.0f} lines/s), peak memory {ours_mem:.0f} MB",
        f"quarter file ({n_quarter:,} lines): floor {floor_q.seconds:.2f} s, ours {ours_q.seconds:.2f} s, "
        f"peak memory {ours_q.peak_rss_mb:.0f} MB",
        f"memory: {ours_q.peak_rss_mb:.0f} MB at 1/4 size, {ours_mem:.0f} MB at full size: grows {growth:.0f} MB per "
        f"million lines{per_sample} (the input is {file_mb:.0f} MB per million lines)",
        f"prepare: {rate:.0f} lines/s, {ratio:.2f} x floor, peak memory {ours_mem:.0f} MB",
    ]
    print("\n".join(figures))
    if not args.no_record:
        settings = {"load at start": load_at_start, "lines": f"{args.lines:,}", "speakers": len(SPEAKERS), "name": TARGET, "rounds": "5 (default)",
                    "format": "rounds (default)", "repeats": args.repeats, "timing": "best of repeats, wall, per process"}
        append_results("prepare_speed", settings, figures, machine=machine_info())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
