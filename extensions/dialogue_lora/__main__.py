"""`python -m extensions.dialogue_lora [--port N] [--model_dir D] [--lora_dir D]`: the standalone app."""
from .standalone import main

raise SystemExit(main())
