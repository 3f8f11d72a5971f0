"""Merge a character adapter into its base model: a full model folder any loader reads.

    python merge_lora.py -m MODEL -l LORA [-o NAME] [--dtype auto|bf16|fp16|fp32] [--overwrite]

Writes models/NAME (default MODEL-LORA; user_data/models in a webui folder): the webui's Transformers
loader loads it without the adapter, and llama.cpp's convert_hf_to_gguf.py turns it into a GGUF. The
library behind it is extensions/dialogue_lora/merging.py.
"""
from __future__ import annotations

import argparse
import sys

try:
    from extensions.dialogue_lora.errors import CliParser, run_cli
    from extensions.dialogue_lora.merging import DTYPES
    from extensions.dialogue_lora.modeling import quiet_libraries
except KeyboardInterrupt:  # Ctrl+C while the modules load: a line, not a traceback
    sys.stderr.write("error: interrupted\n")
    sys.exit(130)


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-m", "--model_name", required=True,
                   help="the base model the adapter was trained on: a folder under the models directory, or a path")
    p.add_argument("-l", "--lora_name", required=True, help="the adapter: a folder under the loras directory, or a path")
    p.add_argument("-o", "--output_name", default=None,
                   help="the merged model's folder name in the models directory (default: MODEL-LORA)")
    p.add_argument("--dtype", default="auto", choices=list(DTYPES),
                   help="the merged weights' type (default auto: the base model's own)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier merge of that name")
    p.add_argument("--model_dir", default=None, help="models directory (default: user_data/models or models)")
    p.add_argument("--lora_dir", default=None, help="adapters directory (default: user_data/loras or loras)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_libraries()
    from extensions.dialogue_lora.merging import MergeConfig, merge

    cfg = MergeConfig(model_name=args.model_name, lora_name=args.lora_name, output_name=args.output_name,
                      dtype=args.dtype, overwrite=args.overwrite, model_dir=args.model_dir, lora_dir=args.lora_dir)
    result = merge(cfg, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(result.summary())
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
