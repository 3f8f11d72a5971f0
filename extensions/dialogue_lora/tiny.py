"""Build a small Llama-shaped model with random weights and a byte-level BPE tokenizer, offline.

For tests, benchmarks and trying the whole pipeline on a machine with no model downloaded:

    python -m extensions.dialogue_lora.tiny models/tiny-llama --corpus examples/dataset.txt

The tokenizer is trained on the given text in well under a second; the model is a standard
`LlamaForCausalLM` folder (config.json, model.safetensors, tokenizer files) that transformers, PEFT
and the webui load like any other. It knows nothing: training is what makes it speak.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from .dialogue import check_text_file, open_text
from .errors import CliParser, UserError, join_problems, run_cli

SPECIAL_TOKENS = ["<s>", "</s>", "<pad>", "<unk>"]

# A little built-in text so a tokenizer can be made with no corpus at all.
_BUILTIN = """Alice: Hello Bob, how are you today?
Bob: I'm fine, thanks. And you?
Carol: We should go to the market before it closes.
Narrator: The rain kept falling on the old town.
Dave: What time is it? It's 10:30 already!
Eve: Don't worry, we'll make it. (laughs) *waves*
ROMEO: But soft, what light through yonder window breaks?
JULIET: O Romeo, Romeo, wherefore art thou Romeo?
"""


MAX_HIDDEN, MAX_LAYERS, MAX_VOCAB = 4096, 64, 65536
MAX_PARAMS = 1_000_000_000  # 4 GiB in float32


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512):
    """A byte-level BPE tokenizer (any text encodes) that prepends <s> like Llama's does."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts) or [_BUILTIN], trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=4096,
    )


def build_tiny_model(
    out_dir: str | os.PathLike,
    texts: Iterable[str] = (),
    vocab_size: int = 512,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int | None = None,
    max_positions: int = 2048,
    seed: int = 0,
) -> Path:
    """Write a random-weight Llama model and its tokenizer to `out_dir`; returns the folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    tokenizer = train_tokenizer(texts, vocab_size=vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or hidden_size * 4,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


# What build_tiny_model writes: a folder holding only these is an earlier tiny model, safe to rebuild.
_WRITES = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
           "special_tokens_map.json", "chat_template.jinja"}


def _check_out_dir(out: Path) -> None:
    """Refuse a folder that holds anything but an earlier tiny model (an adapter, a real model, notes)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: is a file, not a folder")
    if out.is_dir():
        others = sorted(p.name for p in out.iterdir() if p.name not in _WRITES)
        if others:
            shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
            raise UserError(f"{out}: holds other files ({shown}): not touched; pick a new folder for the tiny model")


def main(argv: list[str] | None = None) -> int:
    p = CliParser(prog="python -m extensions.dialogue_lora.tiny", description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir", help="folder to write, e.g. models/tiny-llama (an earlier tiny model there is rebuilt)")
    p.add_argument("--corpus", nargs="*", default=[], help="text files to train the tokenizer on")
    p.add_argument("--vocab_size", type=int, default=512, help="tokenizer vocabulary (default 512)")
    p.add_argument("--hidden_size", type=int, default=64,
                   help="a multiple of 8 (4 heads of an even size; default 64)")
    p.add_argument("--num_layers", type=int, default=2, help="decoder layers (default 2)")
    args = p.parse_args(argv)
    problems = []
    # small models for tests and experiments: the upper bounds keep a typo from filling the memory
    if not 8 <= args.hidden_size <= MAX_HIDDEN or args.hidden_size % 8:
        problems.append(f"--hidden_size must be a multiple of 8 (4 heads of an even size) up to {MAX_HIDDEN}, "
                        f"not {args.hidden_size}")
    if not 1 <= args.num_layers <= MAX_LAYERS:
        problems.append(f"--num_layers must be 1 to {MAX_LAYERS}, not {args.num_layers}")
    if not 32 <= args.vocab_size <= MAX_VOCAB:
        problems.append(f"--vocab_size must be 32 to {MAX_VOCAB}, not {args.vocab_size}")
    params = 2 * args.vocab_size * args.hidden_size + 16 * args.num_layers * args.hidden_size ** 2
    if not problems and params > MAX_PARAMS:
        problems.append(f"about {params / 1e9:.1f}B parameters ({params * 4 / 2**30:.0f} GiB in float32): "
                        f"at most {MAX_PARAMS / 1e9:.0f}B for a model built here; lower --hidden_size or --num_layers")
    if problems:
        raise UserError(join_problems(problems))
    out = Path(os.path.expanduser(args.out_dir))  # (cmd and PowerShell leave `~` as it is)
    _check_out_dir(out)
    texts = []
    for name in args.corpus:
        with open_text(check_text_file(name, "--corpus")) as f:
            texts.append(f.read())
    out = build_tiny_model(out, texts, args.vocab_size, args.hidden_size, args.num_layers)
    print(f"wrote a tiny random Llama model to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
