"""Shared fixtures: a tiny Llama-shaped model and BPE tokenizer built offline, and a webui-like folder.

Nothing is downloaded: the tokenizer is trained on a few hundred lines in well under a second and the
model has random weights (extensions/dialogue_lora/tiny.py).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

EXAMPLE = ROOT / "examples" / "dataset.txt"


def _two_speaker_corpus(n: int = 300) -> list[str]:
    """Dialogue with a distinctive speaker (Bob) and a plain one (Alice) for tokenizer training."""
    import random

    rng = random.Random(0)
    words = "the a market rain town bread river light night day friend road home song boat".split()
    lines = []
    for i in range(n):
        w = rng.sample(words, 4)
        lines.append(f"Alice: Where is the {w[0]} and the {w[1]}?")
        lines.append(f"Bob: Arr, the {w[2]} be by the {w[3]}, matey!")
    return lines


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A saved tiny random Llama model + tokenizer (a standard transformers folder)."""
    from extensions.dialogue_lora.tiny import build_tiny_model

    out = tmp_path_factory.mktemp("models") / "tiny-llama"
    texts = ["\n".join(_two_speaker_corpus())]
    if EXAMPLE.exists():
        texts.append(EXAMPLE.read_text(encoding="utf-8", errors="replace"))
    return build_tiny_model(out, texts, vocab_size=384, hidden_size=64, num_layers=2)


@pytest.fixture
def webui_root(tmp_path, tiny_model_dir, monkeypatch) -> Path:
    """A working folder laid out like the webui (user_data/models/tiny-llama, user_data/loras); cwd is set to it."""
    import shutil

    root = tmp_path / "webui"
    models = root / "user_data" / "models"
    models.mkdir(parents=True)
    (root / "user_data" / "loras").mkdir()
    (root / "user_data" / "training" / "datasets").mkdir(parents=True)
    shutil.copytree(tiny_model_dir, models / "tiny-llama")
    monkeypatch.chdir(root)
    return root
