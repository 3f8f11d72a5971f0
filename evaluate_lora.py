"""Measure a character adapter against its base model on held-out samples.

    python evaluate_lora.py -m MODEL -l LORA [-d HELD_OUT.json] [--max_new_tokens N] [--max_samples N]

Writes loras/LORA/eval.json, eval.md (table, base vs adapter replies, loss curve) and loss_curve.png,
and prints the table. The library behind it is extensions/dialogue_lora/evaluation.py.
"""
from __future__ import annotations

import argparse
import sys

try:
    from extensions.dialogue_lora.errors import CliParser, run_cli
    from extensions.dialogue_lora.generation import DEFAULT_MAX_NEW_TOKENS, add_loading_arguments
    from extensions.dialogue_lora.modeling import quiet_libraries
except KeyboardInterrupt:  # Ctrl+C while the modules load: a line, not a traceback
    sys.stderr.write("error: interrupted\n")
    sys.exit(130)


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-m", "--model_name", required=True, help="base model: a folder under the models directory, or a path")
    p.add_argument("-l", "--lora_name", required=True, help="adapter: a folder under the loras directory, or a path")
    p.add_argument("-d", "--dataset", "--dataset_name", dest="dataset", default=None,
                   help="held-out samples, any format prepare_dataset writes (default: the adapter's held-out split)")
    p.add_argument("--max_new_tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS,
                   help="most tokens generated per reply (default %(default)s)")
    p.add_argument("--max_samples", type=int, default=0, help="evaluate only the first N held-out samples (0: all)")
    p.add_argument("-b", "--batch_size", type=int, default=8, help="samples per forward pass / generate call (default 8)")
    p.add_argument("-c", "--cutoff_len", type=int, default=None, help="token limit per sample (default: as in training)")
    p.add_argument("-n", "--name", default=None, help="character cue for multi-turn samples without a name (default: as in training)")
    add_loading_arguments(p)
    p.add_argument("--dataset_dir", default=None,
                   help="datasets directory, where a bare -d name is found (default: user_data/training/datasets, "
                        "or training/datasets without a user_data folder)")
    p.add_argument("--no_similarity", action="store_true", help="skip the sentence-embedding similarity")
    p.add_argument("--no_meteor", action="store_true", help="skip METEOR")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_libraries()
    from extensions.dialogue_lora.evaluation import (EvalConfig, base_loading, evaluate, format_table, samples_line,
                                                     write_report)

    cfg = EvalConfig(
        model_name=args.model_name,
        lora_name=args.lora_name,
        dataset=args.dataset,
        max_new_tokens=args.max_new_tokens,
        max_samples=args.max_samples,
        batch_size=args.batch_size,
        cutoff_len=args.cutoff_len,
        name=args.name,
        load_in_4bit=args.load_in_4bit,
        load_in_8bit=args.load_in_8bit,
        as_trained=not args.unquantised,
        model_dir=args.model_dir,
        lora_dir=args.lora_dir,
        dataset_dir=args.dataset_dir,
        similarity=not args.no_similarity,
        meteor=not args.no_meteor,
        device=args.device,
    )
    from tqdm import tqdm

    bar = {"stage": None, "bar": None}

    def on_progress(info: dict) -> None:
        if info["stage"] != bar["stage"]:
            if bar["bar"] is not None:
                bar["bar"].close()
            bar["stage"] = info["stage"]
            if not sys.stderr.isatty() and info["total"] > 1:  # a log file (nohup): a line a stage, not silence
                print(f"{info['stage']}: {info['total']:,} to do ...", file=sys.stderr, flush=True)
            bar["bar"] = tqdm(total=info["total"], desc=info["stage"], file=sys.stderr, leave=False,
                              disable=not sys.stderr.isatty())
        bar["bar"].n = info["done"]
        bar["bar"].refresh()

    from extensions.dialogue_lora.paths import resolve_adapter, resolve_dirs

    # found before: a checkpoint of a run still training may be rotated away while it is evaluated
    lora_path = resolve_adapter(cfg.lora_name, resolve_dirs(model_dir=cfg.model_dir, lora_dir=cfg.lora_dir).loras)
    try:
        result = evaluate(cfg, on_progress)
    finally:
        if bar["bar"] is not None:
            bar["bar"].close()
    # the figures first: a report that cannot be written (the folder gone, the weights saved again, a full
    # disk) does not take them with it
    print(f"{result['adapter']} on {result['model']}: {samples_line(result)}{base_loading(result)}")
    print(format_table(result))
    for note in result["notes"]:
        print(f"note: {note}")
    sys.stdout.flush()
    written = write_report(result, lora_path)
    files = [str(f) for f in (written["json"], written["markdown"], written.get("loss_curve")) if f]
    print(f"wrote {', '.join(files[:-1])} and {files[-1]}")
    if written.get("replaced"):
        print(f"note: the earlier report in {lora_path.name} ({written['replaced']}) was replaced; to keep a "
              "report, copy eval.md elsewhere before evaluating again")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
