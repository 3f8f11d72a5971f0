"""The tab builds with Gradio 4.37.2, the version text-generation-webui's Gradio fork is based on.

A virtual environment with gradio==4.37.2 (and no torch) is made once and cached in .cache/gradio4-venv
(override with DIALOGUE_LORA_GRADIO4_VENV); the first run takes a minute or two. The extension is loaded in
it both ways the webui loads it, the tab is built and its config serialised, as in tests/test_extension.py.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from test_extension import EXT, ROOT, _run_check, check_loaded

GRADIO4 = "4.37.2"
# gradio 4.37 imports huggingface_hub.HfFolder, which huggingface_hub 1.0 removed
PINS = [f"gradio=={GRADIO4}", "huggingface_hub<1.0"]
VENV = Path(os.environ.get("DIALOGUE_LORA_GRADIO4_VENV", ROOT / ".cache" / "gradio4-venv"))


def _python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _version(python: Path) -> str | None:
    if not python.exists():
        return None
    proc = subprocess.run([str(python), "-c", "import gradio; print(gradio.__version__)"],
                          capture_output=True, text=True, timeout=120)
    return proc.stdout.strip() if proc.returncode == 0 else None


@pytest.fixture(scope="session")
def gradio4_python() -> Path:
    python = _python(VENV)
    if _version(python) == GRADIO4:
        return python
    if VENV.exists():
        shutil.rmtree(VENV)
    VENV.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, timeout=300)
    proc = subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *PINS],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"pip install {' '.join(PINS)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    assert _version(python) == GRADIO4
    return python


@pytest.mark.slow
def test_gradio4_venv_has_no_torch(gradio4_python):
    proc = subprocess.run([str(gradio4_python), "-c", "import importlib.util as u; print(u.find_spec('torch'))"],
                          capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "None"  # the check proves the tab needs no torch, and the venv stays small


@pytest.mark.slow
def test_tab_builds_with_gradio4_loaded_by_file_path(gradio4_python, tmp_path):
    target = tmp_path / "user_data" / "extensions" / "dialogue_lora"
    shutil.copytree(EXT, target, ignore=shutil.ignore_patterns("__pycache__"))
    out = _run_check(tmp_path, str(target / "script.py"), python=str(gradio4_python))
    assert out["gradio"] == GRADIO4
    assert out["module"] == "user_ext_dialogue_lora"
    check_loaded(out)


@pytest.mark.slow
def test_tab_builds_with_gradio4_as_package(gradio4_python, tmp_path):
    out = _run_check(tmp_path, "unused", "--package-root", str(ROOT), python=str(gradio4_python))
    assert out["gradio"] == GRADIO4
    check_loaded(out)


@pytest.mark.slow
def test_standalone_app_builds_with_gradio4(gradio4_python, tmp_path):
    code = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "import gradio as gr\n"
        "from extensions.dialogue_lora.host import StandaloneHost\n"
        "from extensions.dialogue_lora.standalone import build_app, chatbot_value\n"
        "app = build_app(StandaloneHost({}))\n"
        "cfg = app.get_config_file()\n"
        "assert chatbot_value([('A', 'hi'), ('B', 'yo')]) == [['hi', 'yo']], chatbot_value([('A', 'hi'), ('B', 'yo')])\n"
        "print(gr.__version__, len(cfg['components']))\n"
    )
    proc = subprocess.run([str(gradio4_python), "-c", code, str(ROOT)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    version, n = proc.stdout.split()
    assert version == GRADIO4 and int(n) > 50
