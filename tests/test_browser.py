"""The whole path in a real browser: headless Chromium (Debian's package, driven by Playwright) against the
standalone app on a tiny model. Prepare the example dialogue, train a few steps while progress updates, see
the adapter listed, get a one-line reply in the chat box. A screenshot of each stage goes to
tests/screenshots/ (git-ignored). Never runs `playwright install`: it uses /usr/bin/chromium
(override with DIALOGUE_LORA_CHROMIUM); .ci/run installs it with apt.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import expect

from extensions.dialogue_lora.ui import DEFAULT_DATASET_NAME

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "dataset.txt"
SHOTS = Path(__file__).resolve().parent / "screenshots"
CHROMIUM = os.environ.get("DIALOGUE_LORA_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
# Enough steps that training outlasts a few of the tab's once-a-second progress updates even on a fast
# CPU (16 steps finished within one update on a 2-core EPYC, and the live-progress check failed).
STEPS = 200

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def app_url(webui_root):
    """`python -m extensions.dialogue_lora --port N` in a webui-like folder holding the tiny model."""
    port = _free_port()
    log = open(webui_root / "app.log", "wb")
    env = dict(os.environ, PYTHONPATH=str(ROOT), GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, "-m", "extensions.dialogue_lora", "--port", str(port)],
                            cwd=webui_root, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 120
        while True:
            assert proc.poll() is None, (webui_root / "app.log").read_text(errors="replace")[-3000:]
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                assert time.time() < deadline, "the app did not start in 120 s"
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture
def page():
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install chromium (see .ci/run)"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        pg = browser.new_page(viewport={"width": 1280, "height": 1000})
        pg.set_default_timeout(60_000)
        yield pg
        browser.close()


def _type_until_kept(fields) -> None:
    """Fill each (box, value); again until all values stay (an accordion opening can reset a typed value)."""
    for _ in range(20):
        for box, value in fields:
            if box.input_value() != value:
                box.fill(value)
        time.sleep(0.5)
        if all(box.input_value() == value for box, value in fields):
            return


def _wait_for(condition, what: str, seconds: float = 30) -> None:
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def shot(page, name: str) -> None:
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / name), full_page=True)


def test_prepare_train_chat_in_the_browser(app_url, page, webui_root):
    page.goto(app_url)

    # 1. Prepare: upload the example, pick Bob among the detected speakers, preview, save
    page.locator("input[type=file]").first.set_input_files(str(EXAMPLE))
    page.get_by_text("speakers found").wait_for()
    page.get_by_label("Character(s) to learn").click()
    page.get_by_role("option", name="Bob (4 lines)").click()
    page.keyboard.press("Escape")
    save_as = page.get_by_label("Save as (in the datasets folder)")
    deadline = time.time() + 30
    while save_as.input_value() != "bob.json":  # the name follows the character picked
        assert time.time() < deadline, save_as.input_value()
        time.sleep(0.2)
    page.get_by_role("button", name="Preview").click()
    page.get_by_text("Preview of the first").wait_for()
    preview = page.get_by_label("Preview: what the model reads").input_value()
    assert "Alice: Hi Bob! Are you coming to the party tonight?\nBob: «I don't know, Alice." in preview
    page.get_by_role("button", name="Save dataset").click()
    page.get_by_text("Saved bob.json").first.wait_for()
    shot(page, "1-prepared.png")
    assert (webui_root / "user_data" / "training" / "datasets" / "bob.json").is_file()
    # Saving again is refused (not ticked to overwrite): the last save's report goes, as it would read
    # as this one's; after a preview, a refused save keeps the preview's report
    report = page.get_by_label("Report", exact=True)
    page.get_by_role("button", name="Save dataset").click()
    page.get_by_text("bob.json already exists").wait_for()
    _wait_for(lambda: report.input_value() == "", "the last save's report is cleared")
    page.get_by_role("button", name="Preview").click()
    _wait_for(lambda: report.input_value() != "", "the preview's report")
    assert report.input_value().lower().startswith("read "), report.input_value()[:200]
    page.get_by_role("button", name="Save dataset").click()
    page.get_by_text("bob.json already exists").wait_for()
    time.sleep(1)
    assert report.input_value().lower().startswith("read ")

    # 2. Train: the model, the saved dataset and the adapter name (from the dataset) are filled in
    page.get_by_role("tab", name="2. Train").click()
    page.get_by_label(re.compile("Base model")).first.click()
    page.get_by_role("option", name="tiny-llama").click()
    assert page.get_by_label(re.compile("^Dataset")).input_value() == "bob.json"
    assert page.get_by_label("Adapter name (saved in the loras folder)").input_value() == "bob"
    page.get_by_text("Training settings").click()
    # The accordion mounts its fields as it opens: a value typed at that moment can be reset to the
    # field's initial one (a CI run trained 10 steps, not 200). Type until each value stays.
    fields = [(page.get_by_label(re.compile("^Max steps")), str(STEPS)),
              (page.get_by_label("Learning rate", exact=False).first, "0.01"),
              (page.get_by_label("Held-out share (val_ratio)"), "0")]
    _type_until_kept(fields)
    assert [box.input_value() for box, _ in fields] == [v for _, v in fields]
    # a LoRA run has no virtual tokens: the field shows with prompt tuning only
    virtual = page.get_by_label("Virtual tokens (prompt tuning)")
    assert not virtual.is_visible()
    method = page.get_by_label("Method", exact=True)
    method.click()
    page.get_by_role("option", name="prompt_tuning").click()
    virtual.wait_for(state="visible")
    method.click()
    page.get_by_role("option", name="lora", exact=True).click()
    virtual.wait_for(state="hidden")
    page.get_by_role("button", name="Start training").click()

    seen: list[int] = []  # steps shown while training runs
    finished = page.get_by_text("Finished: bob")
    deadline = time.time() + 300  # 200 tiny steps take 10-30 s; the margin is for a machine under load
    while not finished.is_visible():
        assert time.time() < deadline, f"training did not finish in 300 s; steps seen: {seen}"
        status = page.locator("h3:has-text('Training: bob') + p, h3:has-text('Training: bob') ~ p")
        text = " ".join(status.all_inner_texts())
        m = re.search(rf"step (\d+)/{STEPS}", text)
        if m and (not seen or int(m.group(1)) != seen[-1]):
            seen.append(int(m.group(1)))
            if len(seen) == 1:
                shot(page, "2-training.png")
        assert not page.get_by_text("Failed: bob").is_visible(), page.locator("code").all_inner_texts()
        time.sleep(0.25)
    assert len(seen) >= 2 and seen[0] < STEPS, f"progress did not update live: {seen}"
    page.get_by_text(f"step {STEPS}/{STEPS}").wait_for()
    # the curve is drawn once the run ends, whatever was skipped while it trained (drawn every 10 s at most)
    page.locator("img[src^='data:image/webp'], img[src^='data:image/png']").first.wait_for(timeout=30_000)
    shot(page, "3-trained.png")

    # 3. Use: the adapter is listed; load it with the base model. A copy said to be trained in 4 bits
    # (QLoRA) ticks 'Load in 4-bit' when picked, so that its base fits the card it was trained on.
    loras = webui_root / "user_data" / "loras"
    shutil.copytree(loras / "bob", loras / "bob4")
    params = json.loads((loras / "bob4" / "training_parameters.json").read_text(encoding="utf-8"))
    (loras / "bob4" / "training_parameters.json").write_text(json.dumps(dict(params, load_in_4bit=True)))
    page.get_by_role("tab", name="4. Use").click()
    page.get_by_label("Base model", exact=True).last.click()
    page.get_by_role("option", name="tiny-llama").click()
    four, eight = (page.get_by_label(label, exact=True).last for label in ("Load in 4-bit", "Load in 8-bit"))
    assert not four.is_checked() and not eight.is_checked()
    page.get_by_label("Adapter", exact=True).last.click()
    page.get_by_role("option", name="bob4").click()
    expect(four).to_be_checked()
    eight.check()  # one at a time
    expect(four).not_to_be_checked()
    four.check()
    expect(eight).not_to_be_checked()
    page.get_by_role("button", name="Load adapter").click()
    page.get_by_text("Loaded tiny-llama + bob4 (the base in 4 bits) for chat.").wait_for()
    # a reload shows what is loaded, and how (not how the adapter was trained: 8 bits was loaded)
    eight.check()
    page.get_by_role("button", name="Load adapter").click()
    page.get_by_text("Loaded tiny-llama + bob4 (the base in 8 bits) for chat.").wait_for()
    page.reload()
    page.get_by_role("tab", name="4. Use").click()
    page.get_by_text("In use: tiny-llama + bob4 (the base in 8 bits)").wait_for()
    four, eight = (page.get_by_label(label, exact=True).last for label in ("Load in 4-bit", "Load in 8-bit"))
    expect(eight).to_be_checked()
    expect(four).not_to_be_checked()
    assert page.get_by_label("Adapter", exact=True).last.input_value() == "bob4"
    page.get_by_label("Adapter", exact=True).last.click()
    page.get_by_role("option", name="bob", exact=True).click()
    expect(four).not_to_be_checked()  # bob was trained unquantised
    expect(eight).not_to_be_checked()
    page.get_by_role("button", name="Load adapter").click()
    page.get_by_text("Loaded tiny-llama + bob for chat.").wait_for()
    assert page.get_by_label("Character name").input_value() == "Bob"
    shot(page, "4-adapter-listed.png")

    # Merge: the adapter picked above into a model folder, the base model filled in from the adapter
    page.get_by_text("Merge into a model").click()
    assert page.get_by_label("Base model (the adapter's)").input_value() == "tiny-llama"

    expect(page.get_by_label("Merged model name")).to_have_attribute("placeholder", "tiny-llama-bob")
    page.get_by_role("button", name="Merge", exact=True).click()
    page.get_by_text(re.compile(r"Wrote .*tiny-llama-bob")).wait_for(timeout=120_000)
    shot(page, "4b-merged.png")
    assert (webui_root / "user_data" / "models" / "tiny-llama-bob" / "dialogue_lora_merge.json").is_file()

    # 4. Chat: one reply, one line
    page.get_by_role("tab", name="Chat").click()
    page.get_by_label("Message").fill("Are you coming tonight?")
    page.get_by_role("button", name="Send").click()
    bot = page.locator("[data-testid='bot']")
    bot.last.wait_for()
    deadline = time.time() + 60
    while not bot.last.inner_text().strip():
        assert not page.get_by_text("⚠️").first.is_visible(), page.get_by_text("⚠️").first.inner_text()
        assert time.time() < deadline, "no reply in 60 s"
        time.sleep(0.25)
    reply = bot.last.inner_text().strip()
    shot(page, "5-chat.png")
    assert reply and "\n" not in reply, repr(reply)


def _train_form(page, adapter: str, steps: int) -> None:
    """Section 2 filled in: the tiny model, bob.json, `adapter`, `steps` steps and no held-out split."""
    page.get_by_role("tab", name="2. Train").click()
    page.get_by_label(re.compile("Base model")).first.click()
    page.get_by_role("option", name="tiny-llama").click()
    page.get_by_label(re.compile("^Dataset")).click()
    page.get_by_role("option", name="bob.json").click()
    page.get_by_label("Adapter name (saved in the loras folder)").fill(adapter)
    page.get_by_text("Training settings").click()
    fields = [(page.get_by_label(re.compile("^Max steps")), str(steps)),
              (page.get_by_label("Held-out share (val_ratio)"), "0")]
    _type_until_kept(fields)


def test_a_second_page_cannot_queue_a_run_behind_the_first(app_url, page, webui_root):
    """Gradio runs one call of a handler at a time unless told otherwise: a second page's Start used to
    wait behind the first page's run (which streams until it ends), then start unseen."""
    from extensions.dialogue_lora.prepare import PrepareConfig, prepare

    datasets = webui_root / "user_data" / "training" / "datasets"
    prepare(PrepareConfig(names=["Bob"], txtfilename=str(EXAMPLE), jsonfilename=str(datasets / "bob.json")))
    loras = webui_root / "user_data" / "loras"
    page.goto(app_url)
    _train_form(page, "first", 100_000)
    page.get_by_role("button", name="Start training").click()
    page.get_by_text(re.compile(r"step \d+/100000")).first.wait_for(timeout=120_000)

    other = page.context.browser.new_page(viewport={"width": 1280, "height": 1000})
    other.set_default_timeout(60_000)
    other.goto(app_url)
    _train_form(other, "second", 5)
    other.get_by_role("button", name="Start training").click()
    other.get_by_text("a training run is already running").first.wait_for(timeout=60_000)  # the first run keeps both cores busy
    shot(other, "6-second-page-refused.png")
    # the page whose Start is streaming the run: Gradio dropped a second click there without a word
    warning = page.get_by_text("a training run is already running")
    page.get_by_role("button", name="Start training").click()
    warning.first.wait_for(timeout=60_000)
    time.sleep(3)  # the run's stream polls every second: the warning stays on show
    assert warning.first.is_visible()

    page.get_by_role("button", name="Stop").first.click()
    page.get_by_text(re.compile("Stopped at step")).first.wait_for(timeout=120_000)
    warning.first.wait_for(state="detached", timeout=30_000)  # the run has ended: no longer true
    time.sleep(5)  # a queued Start would begin as soon as the first run's stream ended
    assert not (loras / "second").exists() and not list(loras.glob(".second*"))


def test_the_file_chosen_last_is_the_one_read(app_url, page, webui_root):
    """An upload used to win over a file picked from the folder after it, with no sign of it."""
    import shutil

    shutil.copy(ROOT / "examples" / "discord_export.json", webui_root / "user_data" / "training" / "datasets")
    page.goto(app_url)
    page.locator("input[type=file]").first.set_input_files(str(EXAMPLE))
    page.get_by_text("2 speakers found").wait_for()
    page.get_by_label("Character(s) to learn").click()
    page.get_by_role("option", name="Bob (4 lines)").click()
    page.keyboard.press("Escape")
    save_as = page.get_by_label("Save as (in the datasets folder)")
    _wait_for(lambda: save_as.input_value() == "bob.json", "the name following Bob")
    page.get_by_role("button", name="Preview").click()
    preview = page.get_by_label("Preview: what the model reads")
    _wait_for(lambda: "Bob: «" in preview.input_value(), "the preview")
    page.get_by_label(re.compile("or pick a file")).click()
    page.get_by_role("option", name="discord_export.json").click()
    page.get_by_text("3 speakers found").wait_for()
    # the first file's preview, report and the name its character gave are gone
    _wait_for(lambda: preview.input_value() == "" and page.get_by_label("Report", exact=True).input_value() == ""
              and save_as.input_value() == DEFAULT_DATASET_NAME, "the last file's preview and name cleared")
    page.get_by_label("Character(s) to learn").click()
    assert page.get_by_role("option", name=re.compile("^Alex")).is_visible()
    page.keyboard.press("Escape")
    shot(page, "7-picked-after-upload.png")
