"""Names and paths typed by the user (a QA pass): `~`, spaces around, combining marks, names differing only in
case, checkpoint-like names, Windows' device names and path length, a file where a model folder is looked for."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from extensions.dialogue_lora import merging
from extensions.dialogue_lora.errors import UserError
from extensions.dialogue_lora.merging import MergeConfig
from extensions.dialogue_lora.paths import MAX_NAME_BYTES, case_twin, check_name, resolve_adapter, resolve_dirs, resolve_model
from extensions.dialogue_lora.prepare import PrepareConfig, prepare

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "dataset.txt"


def _model(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"x")
    return folder


def _adapter(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    return folder


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """`~` is this test's folder (HOME, and USERPROFILE for Windows)."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("USERPROFILE", str(home))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return home


# ------------------------------------------------------------------------------------------------ 1. ~


def test_tilde_is_expanded_in_folders_and_paths(home):
    dirs = resolve_dirs(model_dir="~/m", lora_dir="~/l", dataset_dir="~/d")
    assert (dirs.models, dirs.loras, dirs.datasets) == (home / "m", home / "l", home / "d")
    _model(home / "m" / "tiny")
    _adapter(home / "l" / "bob")
    assert resolve_model("~/m/tiny", "models") == (home / "m" / "tiny").resolve()
    assert resolve_adapter("~/l/bob", "loras") == (home / "l" / "bob").resolve()
    assert not Path("~").exists()


def test_tilde_in_the_training_dataset(home):
    from extensions.dialogue_lora.training import resolve_dataset

    (home / "bob.json").write_text("[]")
    assert resolve_dataset("~/bob.json", Path("datasets")) == (home / "bob.json").resolve()


def test_prepare_expands_tilde_in_input_and_output(home):
    (home / "in.txt").write_text(EXAMPLE.read_text(encoding="utf-8"), encoding="utf-8")
    cfg = PrepareConfig(names=["Bob"], txtfilename="~/in.txt", jsonfilename="~/out/bob.json")
    assert cfg.txtfilename == str(home / "in.txt") and cfg.jsonfilename == str(home / "out" / "bob.json")
    prepare(cfg)
    assert (home / "out" / "bob.json").is_file() and not Path("~").exists()


# ------------------------------------------------------------------------------------ 2. spaces around


def test_names_are_written_as_checked_without_spaces_around(home, tmp_path):
    assert MergeConfig(model_name="m", lora_name="l", output_name="x ").output_name == "x"
    out = tmp_path / "x.json"
    cfg = PrepareConfig(names=["Bob"], txtfilename=str(EXAMPLE), jsonfilename=f"  {out} ")
    assert cfg.jsonfilename == str(out)
    prepare(cfg)
    assert out.is_file() and not list(Path(".").iterdir())  # no `./ /tmp/...` made


def test_a_name_with_spaces_around_finds_what_was_trained(tmp_path):
    _adapter(tmp_path / "loras" / "x")
    _model(tmp_path / "models" / "tiny")
    assert resolve_adapter(" x ", tmp_path / "loras") == (tmp_path / "loras" / "x").resolve()
    assert resolve_model(" tiny ", tmp_path / "models") == (tmp_path / "models" / "tiny").resolve()


# ------------------------------------------------------------------------------------ 3. combining marks


@pytest.mark.parametrize("name", ["प्रिया", "தமிழ்", "Zoe\u0308", "Zoë"])
def test_names_with_combining_marks_are_accepted(name):
    import unicodedata

    assert check_name(name, "--lora_name") == unicodedata.normalize("NFC", name)


def test_a_mark_cannot_start_a_name():
    with pytest.raises(UserError, match="not allowed"):
        check_name("\u0308x", "--lora_name")


def test_the_default_dataset_name_keeps_marks():
    from extensions.dialogue_lora.ui import dataset_name_for

    assert dataset_name_for(["Zoe\u0308"]) == "zoë.json"
    assert dataset_name_for(["प्रिया"]) == "प्रिया.json"
    assert dataset_name_for(["Romeo", "Juliet"]) == "romeo-juliet.json"
    # many names in a script of three bytes a letter: cut to what Save as takes (it refused 136 bytes)
    many = dataset_name_for(["アスカ・ラングレー", "碇シンジ", "綾波レイ", "葛城ミサト", "赤木リツコ", "渚カヲル", "鈴原トウジ", "相田ケンスケ"])
    assert check_name(many) == many and many.startswith("アスカ-ラングレー-碇シンジ") and many.endswith(".json")
    # a character Windows' device names name: a name Save as, and the adapter named after it, take
    for name, expected in (("Con", "con-lines.json"), ("AUX", "aux-lines.json"), ("Com1", "com1-lines.json"),
                           ("Con Artist", "con-artist.json"), ("Conan", "conan.json")):
        assert dataset_name_for([name]) == expected and check_name(expected) == expected
        check_name(expected.removesuffix(".json"))


def test_a_decomposed_name_finds_the_adapter_trained_with_it(tmp_path):
    from extensions.dialogue_lora.training import TrainConfig

    name = TrainConfig(model_name="m", dataset_name="d.json", lora_name="Zoe\u0308").lora_name
    assert name == "Zo\u00eb"
    _adapter(tmp_path / name)
    assert resolve_adapter("Zoe\u0308", tmp_path) == (tmp_path / name).resolve()


def test_an_adapter_folder_spelt_decomposed_is_that_adapter(tmp_path):
    """A macOS copy writes Zoë decomposed: training, evaluate, chat and merge find that folder by the name
    typed either way (training made a second, composed folder beside it; the others said not found)."""
    from extensions.dialogue_lora.training import TrainConfig, check

    on_disk = "Zoe\u0308"
    _adapter(tmp_path / "loras" / on_disk)
    assert resolve_adapter("Zo\u00eb", tmp_path / "loras") == (tmp_path / "loras" / on_disk).resolve()
    cfg = TrainConfig(model_name="missing", dataset_name="missing.json", lora_name="Zo\u00eb",
                      model_dir=str(tmp_path / "models"), lora_dir=str(tmp_path / "loras"))
    with pytest.raises(UserError, match="exists"):
        check(cfg)
    assert cfg.lora_name == on_disk and sorted(p.name for p in (tmp_path / "loras").iterdir()) == [on_disk]


def test_resuming_an_adapter_folder_spelt_decomposed_reads_its_checkpoint(tmp_path, monkeypatch):
    """--resume takes the run's own settings and length from its checkpoint: looked for in the folder as spelt
    on disk."""
    import sys

    from extensions.dialogue_lora import training
    from extensions.dialogue_lora.training import TrainConfig

    sys.path.insert(0, str(ROOT))
    import lora_finetune

    on_disk = "Zoe\u0308"
    _adapter(tmp_path / "loras" / on_disk)
    looked = []
    monkeypatch.setattr(training, "resumed_settings", lambda folder: looked.append(folder.name))
    cfg = TrainConfig(model_name="m", dataset_name="d.json", lora_name="Zo\u00eb", lora_dir=str(tmp_path / "loras"),
                      resume=True)
    lora_finetune._stopped_run(cfg)
    assert looked == [on_disk]


# ------------------------------------------------------------------------------- 4. differing in case


def test_case_twin(tmp_path):
    (tmp_path / "base").mkdir()
    assert case_twin(tmp_path, "Base") == "base" and case_twin(tmp_path, "BASE") == "base"
    assert case_twin(tmp_path, "base") is None and case_twin(tmp_path, "other") is None
    assert case_twin(tmp_path / "missing", "x") is None
    (tmp_path / "Zo\u00eb").mkdir()
    assert case_twin(tmp_path, "zoe\u0308") == "Zo\u00eb"
    # a folder a macOS copy left decomposed is that name, whichever way it is typed: no twin to avoid (the
    # advice to use its name would have been refused again)
    (tmp_path / "Ame\u0301lie").mkdir()
    assert case_twin(tmp_path, "Am\u00e9lie") is None and case_twin(tmp_path, "Ame\u0301lie") is None
    assert case_twin(tmp_path, "AM\u00c9LIE") == "Ame\u0301lie"


def test_training_refuses_a_name_differing_only_in_case(tmp_path):
    from extensions.dialogue_lora.training import TrainConfig, check

    _adapter(tmp_path / "loras" / "base")
    cfg = TrainConfig(model_name="missing", dataset_name="missing.json", lora_name="Base",
                      model_dir=str(tmp_path / "models"), lora_dir=str(tmp_path / "loras"))
    with pytest.raises(UserError, match=r"--lora_name 'Base': an adapter 'base' exists, and names differing only in "
                                        r"case are one folder on Windows and macOS: use the name 'base' \(with --overwrite"):
        check(cfg)


def test_merging_refuses_an_output_differing_only_in_case(tmp_path):
    base = _model(tmp_path / "tiny-llama").resolve()
    with pytest.raises(UserError, match=r"'Tiny-Llama': a model 'tiny-llama' \(the base model\) exists"):
        merging._check_output(tmp_path / "Tiny-Llama", base, overwrite=True)
    (tmp_path / "tiny-llama-bob").mkdir()
    with pytest.raises(UserError, match=r"a model 'tiny-llama-bob' exists, .* \(or the name 'tiny-llama-bob', with --overwrite"):
        merging._check_output(tmp_path / "Tiny-Llama-Bob", base, overwrite=True)
    merging._check_output(tmp_path / "tiny-llama-bob", base, overwrite=False)  # the same name: empty, fine


def test_prepare_refuses_a_file_differing_only_in_case(tmp_path):
    (tmp_path / "bob.json").write_text("[]")
    with pytest.raises(UserError, match=r"--jsonfilename 'Bob.json': a file 'bob.json' exists"):
        prepare(PrepareConfig(names=["Bob"], txtfilename=str(EXAMPLE), jsonfilename=str(tmp_path / "Bob.json")))
    assert not (tmp_path / "Bob.json").exists()
    # the twin is the input itself (a Discord export `Chat.json`): writing there is no way out
    (tmp_path / "Chat.json").write_bytes((ROOT / "examples" / "discord_export.json").read_bytes())
    with pytest.raises(UserError, match=r"a file 'Chat.json' exists in .* \(the input\), .*: write to another name$"):
        prepare(PrepareConfig(names=["Alex"], txtfilename=str(tmp_path / "Chat.json"),
                              jsonfilename=str(tmp_path / "chat.json")))


def test_the_tabs_save_as_refuses_a_name_differing_only_in_case(tmp_path):
    from extensions.dialogue_lora.host import StandaloneHost
    from extensions.dialogue_lora.ui import TabLogic

    datasets = tmp_path / "training" / "datasets"
    datasets.mkdir(parents=True)
    (datasets / "bob.json").write_text("[]")
    logic = TabLogic(StandaloneHost({}, resolve_dirs(tmp_path)))
    form = (str(EXAMPLE), None, "auto", ["Bob"], 5, "rounds", False, [], "Bob.json", 10)
    with pytest.raises(UserError, match=r"'Save as' 'Bob.json': a dataset 'bob.json' exists"):
        logic.save(*form, overwrite=True)
    assert not (datasets / "Bob.json").exists()


# ------------------------------------------------------------------------------- 5. checkpoint names


@pytest.mark.parametrize("name", ["checkpoint-5", "checkpoint-1234", " checkpoint-7 ", "checkpoint-best"])
def test_a_new_adapter_cannot_be_named_like_a_checkpoint(name):
    """evaluate reads `checkpoint-5` as a checkpoint; merge names `checkpoint-best` after the folder above."""
    from extensions.dialogue_lora.training import TrainConfig

    with pytest.raises(UserError, match=r"^--lora_name 'checkpoint-\w+' is named like a training checkpoint"):
        TrainConfig(model_name="m", dataset_name="d.json", lora_name=name)
    for fine in ("my-checkpoint-5", "checkpoints", "Checkpoint-7"):  # nothing reads these as a checkpoint
        assert TrainConfig(model_name="m", dataset_name="d.json", lora_name=fine).lora_name == fine


# ------------------------------------------------------------------------------- 6, 7. Windows' limits


@pytest.mark.parametrize("name", ["COM¹", "com²", "LPT³", "lpt¹.json", "COM9", "LPT1"])
def test_windows_device_names_with_superscript_digits(name):
    with pytest.raises(UserError, match="Windows reserves it"):
        check_name(name)


def test_names_leave_room_under_windows_path_limit():
    assert MAX_NAME_BYTES == 120
    assert check_name("a" * 120) == "a" * 120
    with pytest.raises(UserError, match=r"^--lora_name is too long \(121 bytes\): at most 120 bytes"):
        check_name("a" * 121, "--lora_name")
    with pytest.raises(UserError, match=r"is too long \(41 characters, 123 bytes in UTF-8\): at most 120 bytes"):
        check_name("小" * 41, "--lora_name")  # a Chinese letter takes three


# ------------------------------------------------------------------------------- 8. a file, not a folder


def test_a_model_name_that_is_a_file_says_so(tmp_path):
    (tmp_path / "filemodel").write_text("x")
    _model(tmp_path / "tiny")
    with pytest.raises(UserError, match=r"filemodel is a file, not a model folder .*models in .*: tiny"):
        resolve_model("filemodel", tmp_path)


def test_the_tabs_adapter_name_is_checked_as_the_flag(tmp_path):
    """The tab's 'Adapter name': a checkpoint-like name, or one differing only in case, in the tab's words."""
    from extensions.dialogue_lora.host import StandaloneHost
    from extensions.dialogue_lora.ui import TabLogic

    datasets = tmp_path / "training" / "datasets"
    datasets.mkdir(parents=True)
    (datasets / "bob.json").write_text("[]")
    _adapter(tmp_path / "loras" / "base")
    logic = TabLogic(StandaloneHost({}, resolve_dirs(tmp_path)))
    with pytest.raises(UserError, match="'Adapter name' 'checkpoint-5' is named like a training checkpoint"):
        logic.train_config("tiny", "bob.json", "checkpoint-5", {}, resume=False, overwrite=False)
    with pytest.raises(UserError, match="'Adapter name' 'Base': an adapter 'base' exists"):
        logic.train_config("tiny", "bob.json", "Base", {}, resume=False, overwrite=False)
