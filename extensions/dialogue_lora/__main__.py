"""`python -m extensions.dialogue_lora [--port N] [--model_dir D] [--lora_dir D]`: the standalone app."""
from .errors import run_cli
from .standalone import main

raise SystemExit(run_cli(main))
