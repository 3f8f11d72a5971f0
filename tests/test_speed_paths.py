"""The trainer's fast paths compute what the plain ones do: the fused LoRA forward, the loss scored on
target positions only, shape rounding, and the choice of training dtype."""
from __future__ import annotations

import pytest

from extensions.dialogue_lora import batching, encoding, fused_lora, modeling
from extensions.dialogue_lora.errors import UserError
from extensions.dialogue_lora.training import TrainConfig

RECORDS = [
    {"input": "Alice: Where is the market?\nBob:", "output": "Arr, by the river, matey!"},
    {"input": "Bob:", "output": "Arr!"},
    {"input": "Alice: Any bread in town tonight, do you think?\nBob:", "output": "Aye."},
    {"input": "Alice: Rain again.\nBob:", "output": "The sea be wetter, lass, and I sail it every day."},
]


def _lora(tiny_model_dir, dropout: float = 0.0, seed: int = 0, flat: bool = False):
    import torch
    from peft import LoraConfig, get_peft_model

    from extensions.dialogue_lora import varlen

    torch.manual_seed(seed)
    model, tok = modeling.load_base(tiny_model_dir, device="cpu", dtype=torch.float32, for_training=True)
    if flat:
        assert varlen.enable(model, "cpu")
    cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules="all-linear", task_type="CAUSAL_LM")
    model = get_peft_model(model, cfg)
    for name, p in model.named_parameters():  # B starts at zero: give it values so the adapter matters
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)
    return model, tok


def _loss_and_grads(model, batch, multiple: int = 1):
    loss, n = batching.loss_sum(model, batch, "cpu", multiple=multiple)
    loss.backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    return float(loss.detach()), grads


def test_fused_lora_forward_matches_peft(tiny_model_dir):
    model, tok = _lora(tiny_model_dir)
    batch = batching.collate([encoding.encode_record(r, tok, 256) for r in RECORDS], tok.pad_token_id, True, 64)
    plain_loss, plain_grads = _loss_and_grads(model, batch)
    assert fused_lora.fuse_lora_forward(model) == 7 * model.config.num_hidden_layers
    assert fused_lora.fuse_lora_forward(model) == 0  # once only
    fused_loss, fused_grads = _loss_and_grads(model, batch)
    assert fused_loss == pytest.approx(plain_loss, rel=1e-5)
    for k, g in plain_grads.items():
        # fp32 sums in another order: equal to a small fraction of the gradient's own scale
        assert (fused_grads[k] - g).abs().max() <= 1e-4 * g.abs().max(), k
    # the adapter disabled: the base model's loss, whichever forward
    with model.disable_adapter():
        base_fused = float(batching.loss_sum(model, batch, "cpu")[0])
    assert base_fused != pytest.approx(fused_loss, rel=1e-4)


def test_fused_lora_keeps_peft_forward_where_it_does_not_apply(tiny_model_dir):
    """With dropout the fused path would skip the mask: PEFT's own forward runs (random, so two calls differ)."""
    import torch

    model, tok = _lora(tiny_model_dir, dropout=0.5)
    fused_lora.fuse_lora_forward(model)
    model.train()
    batch = batching.collate([encoding.encode_record(r, tok, 256) for r in RECORDS], tok.pad_token_id, True, 64)
    with torch.no_grad():
        a = float(batching.loss_sum(model, batch, "cpu")[0])
        b = float(batching.loss_sum(model, batch, "cpu")[0])
    assert a != b


@pytest.mark.parametrize("multiple", [1, 64])
def test_loss_on_target_positions_only_equals_full_logits(tiny_model_dir, multiple):
    import torch

    model, tok = modeling.load_base(tiny_model_dir, device="cpu", dtype=torch.float32)
    samples = [encoding.encode_record(r, tok, 256) for r in RECORDS]
    # capacity small enough for several rows, so rows have targets in different columns
    batch = batching.collate(samples, tok.pad_token_id, True, 48, multiple=multiple)
    assert batch["input_ids"].shape[0] > 1
    assert batch["input_ids"].shape[1] % multiple == 0
    with torch.no_grad():
        kept, n_kept = batching.loss_sum(model, batch, "cpu", keep_logits=True, multiple=multiple)
        full, n_full = batching.loss_sum(model, batch, "cpu", keep_logits=False)
    assert n_kept == n_full == sum(1 for s in samples for t in s["labels"][1:] if t != batching.IGNORE_INDEX)
    assert float(kept) == pytest.approx(float(full), rel=1e-5)


def test_rounded_shapes_add_only_padding(tiny_model_dir):
    _, tok = modeling.load_base(tiny_model_dir, device="cpu")
    samples = [encoding.encode_record(r, tok, 256) for r in RECORDS]
    plain = batching.collate(samples, tok.pad_token_id, True, 256)
    rounded = batching.collate(samples, tok.pad_token_id, True, 256, multiple=64)
    L = plain["input_ids"].shape[1]
    assert rounded["input_ids"].shape[1] == -(-L // 64) * 64
    assert (rounded["input_ids"][:, :L] == plain["input_ids"]).all()
    assert (rounded["targets"][:, L:] == encoding.IGNORE_INDEX).all()
    padded = batching.collate(samples, tok.pad_token_id, False, None, multiple=64)
    assert padded["input_ids"].shape[1] % 64 == 0
    assert padded["attention_mask"][:, L:].sum() == 0


def test_training_dtype():
    import torch

    assert modeling.training_dtype("cpu", "fp32") == torch.float32
    assert modeling.training_dtype("cpu", "bf16") == torch.bfloat16
    assert modeling.training_dtype("cpu", "bf16", quantized=True) == torch.float32
    expected = torch.bfloat16 if modeling.cpu_has_bf16() else torch.float32
    assert modeling.training_dtype("cpu", "auto") == expected


def test_an_apple_gpu_takes_bf16_when_asked_and_able(monkeypatch):
    """mps: --precision bf16 was fp32 without a word (twice the memory; a bf16 run from a CUDA card could
    not be resumed on the Mac). auto stays fp32 there."""
    import torch

    assert modeling.mps_bf16(torch.device("mps")) is torch.backends.mps.is_available()  # (no Apple GPU here)
    mps = torch.device("mps")
    monkeypatch.setattr(modeling, "mps_bf16", lambda device: False)
    with pytest.raises(UserError, match=r"--precision bf16: this Mac's GPU \(mps\) multiplies bf16 from macOS 14"):
        modeling.training_dtype(mps, "bf16")
    monkeypatch.setattr(modeling, "mps_bf16", lambda device: True)
    assert modeling.training_dtype(mps, "bf16") == torch.bfloat16
    assert modeling.training_dtype(mps, "auto") == modeling.training_dtype(mps, "fp32") == torch.float32


@pytest.fixture
def fake_gpus(monkeypatch):
    """Two CUDA cards of the compute capability the test sets (`fake_gpus.capability`), on a CPU machine."""
    import importlib.util
    import types

    import torch

    cards = types.SimpleNamespace(capability=(8, 6), flash_attn=True, liger=True,
                                  archs=["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90", "compute_90"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: cards.capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: "Fake GPU")
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: cards.archs)
    monkeypatch.setattr(torch.version, "hip", None)
    find_spec = importlib.util.find_spec
    installed = {"flash_attn": lambda: cards.flash_attn, "liger_kernel": lambda: cards.liger}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: (object() if installed[name]() else None)
                        if name in installed else find_spec(name, *a))
    monkeypatch.setattr("transformers.utils.is_flash_attn_2_available", lambda: cards.flash_attn)
    return cards


def test_bf16_and_flash_attention_only_on_cards_that_have_them(fake_gpus):
    """A T4, V100 or GTX 10xx (compute capability < 8) only emulates bf16 (torch.cuda.is_bf16_supported says
    yes) and flash-attn 2 refuses it: fp16 and sdpa there; an Ampere card or newer gets bf16 and flash."""
    import torch

    cuda = torch.device("cuda", 0)
    assert modeling.pick_dtype(cuda) == modeling.training_dtype(cuda) == torch.bfloat16
    assert modeling.default_attn_implementation(cuda) == "flash_attention_2"
    assert modeling.default_attn_implementation(cuda, torch.float32) == "sdpa"  # flash-attn has no fp32 kernels
    fake_gpus.capability = (7, 5)
    assert modeling.pick_dtype(cuda) == modeling.training_dtype(cuda) == modeling.compute_dtype_4bit(cuda) == torch.float16
    # --precision fp32 with a 4-bit base computes its layers in fp32 too (they were fp16, with no loss scaling)
    assert modeling.quantization_config(True, device=cuda).bnb_4bit_compute_dtype == torch.float16
    assert modeling.quantization_config(True, device=cuda, dtype=torch.float32).bnb_4bit_compute_dtype == torch.float32
    assert modeling.default_attn_implementation(cuda) == "sdpa"
    with pytest.raises(UserError, match="--precision bf16: Fake GPU has no bf16"):
        modeling.training_dtype(cuda, "bf16")
    fake_gpus.capability, fake_gpus.flash_attn = (9, 0), False
    assert modeling.default_attn_implementation(cuda) == "sdpa"


def test_a_card_this_torch_has_no_kernels_for_is_refused_before_loading(fake_gpus):
    """torch's CUDA 12.8+ wheels leave out Pascal and Volta (GTX 10xx, V100) yet report them available: the
    run would load the model and fail at its first operation ("no kernel image"). One line says so first."""
    import torch

    fake_gpus.archs = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120", "compute_120"]
    assert modeling.pick_device("cuda:1") == torch.device("cuda", 1)
    for capability, runs in [((7, 5), True), ((8, 9), True), ((12, 1), True), ((6, 1), False), ((7, 0), False)]:
        fake_gpus.capability = capability
        for prefer in (None, "cuda", "cuda:1"):
            if runs:
                assert modeling.pick_device(prefer).type == "cuda"
            else:
                with pytest.raises(UserError, match=rf"^this torch .* has no kernels for the Fake GPU \(compute "
                                   rf"capability {capability[0]}\.{capability[1]}; .*sm_75, .*--device cpu$"):
                    modeling.pick_device(prefer)
    fake_gpus.archs = ["sm_60", "compute_60"]  # an older build: PTX compiles for newer cards
    fake_gpus.capability = (8, 6)
    assert modeling.pick_device().type == "cuda"
    fake_gpus.archs = ["sm_61"]
    fake_gpus.capability = (6, 0)  # sm_61 code does not run on 6.0
    with pytest.raises(UserError, match="no kernels"):
        modeling.pick_device()
    # arch-specific builds: sm_90a runs on 9.0 alone, sm_100f on 10.x, sm_120f on 12.x
    fake_gpus.archs = ["sm_80", "sm_90a", "sm_100f", "sm_120f"]
    for capability, runs in [((9, 0), True), ((10, 3), True), ((12, 1), True), ((8, 9), True), ((9, 1), False),
                             ((11, 0), False), ((7, 5), False)]:
        fake_gpus.capability = capability
        if runs:
            assert modeling.pick_device().type == "cuda", capability
        else:
            with pytest.raises(UserError, match="no kernels"):
                modeling.pick_device()
    fake_gpus.archs = []  # a build that does not say: no check
    assert modeling.pick_device().type == "cuda"


def test_amd_cards_under_a_rocm_torch(fake_gpus, monkeypatch):
    """A ROCm build: AMD's cards are `cuda`. One its build left out (an RX 6700 XT's gfx1031) is one line with
    the override that runs it, before loading (its first operation failed, "invalid device function"); bf16
    only where AMD has bf16 matrix instructions (an RX 6800, gfx1030, ran it at fp32's speed); no GPU seen
    by a ROCm build is not 'no CUDA support, reinstall'; `--device hip` is `cuda`."""
    import types

    import torch

    card = types.SimpleNamespace(gcnArchName="gfx1031:sramecc-:xnack-")
    monkeypatch.setattr(torch.version, "hip", "6.2.41133")
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index=None: card)
    monkeypatch.delenv("HSA_OVERRIDE_GFX_VERSION", raising=False)
    fake_gpus.archs = ["gfx900", "gfx906", "gfx908", "gfx90a", "gfx942", "gfx1030", "gfx1100", "gfx1101"]
    with pytest.raises(UserError, match=r"^this torch .* \(ROCm 6.2.41133\) has no kernels for the Fake GPU \(gfx1031; "
                                        r"it was built for gfx900, .*\): set HSA_OVERRIDE_GFX_VERSION=10.3.0 .*--device cpu$"):
        modeling.pick_device("cuda")
    monkeypatch.setenv("HSA_OVERRIDE_GFX_VERSION", "10.3.0")  # the user's override: the card runs as a gfx1030
    assert modeling.pick_device("hip").type == "cuda"
    cuda = torch.device("cuda", 0)
    for gfx, dtype in (("gfx1030", torch.float16), ("gfx906", torch.float16), ("gfx1100", torch.bfloat16),
                       ("gfx90a:sramecc+:xnack-", torch.bfloat16), ("gfx942", torch.bfloat16), ("", torch.bfloat16)):
        card.gcnArchName = gfx
        assert modeling.pick_dtype(cuda) == dtype, gfx
    card.gcnArchName = "gfx1030"
    assert modeling.fused_kernels_missing(cuda) == "their Triton kernels are not known to run on the gfx1030 (ROCm)"
    assert modeling.out_of_memory(RuntimeError("CUDA error: HIPBLAS_STATUS_ALLOC_FAILED when calling hipblasCreate"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match=r"is a ROCm build but sees no AMD GPU \(check `rocminfo`, and that your user "
                                        r"is in the render and video groups\)"):
        modeling.pick_device("cuda")


def test_fused_kernels_need_a_gpu_triton_builds_for(fake_gpus, tmp_path, monkeypatch):
    import sys

    import torch

    # a liger-kernel that imports, and one made for a newer transformers, which fails to (the plain path then)
    patch = tmp_path / "liger_kernel" / "transformers" / "monkey_patch.py"
    patch.parent.mkdir(parents=True)
    (tmp_path / "liger_kernel" / "__init__.py").write_text("", encoding="utf-8")
    (patch.parent / "__init__.py").write_text("", encoding="utf-8")
    patch.write_text("MODEL_TYPE_TO_APPLY_LIGER_FN = {'llama': None}\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m.startswith("liger_kernel")]:
        monkeypatch.delitem(sys.modules, name)
    cuda = torch.device("cuda", 0)
    assert modeling.fused_kernels_missing(cuda) is None
    for name in [m for m in sys.modules if m.startswith("liger_kernel")]:
        monkeypatch.delitem(sys.modules, name)
    patch.write_text("raise ImportError('liger-kernel needs transformers>=4.52')\n", encoding="utf-8")
    assert modeling.fused_kernels_missing(cuda) == (
        "liger-kernel does not load here (ImportError: liger-kernel needs transformers>=4.52)")
    with pytest.raises(UserError, match="^--fused_kernels on: liger-kernel does not load here"):
        modeling.apply_fused_kernels(torch.nn.Linear(1, 1), cuda, "on")
    assert modeling.apply_fused_kernels(torch.nn.Linear(1, 1), cuda, "auto").startswith("off (liger-kernel does not")
    fake_gpus.capability = (6, 1)  # a GTX 1080
    assert modeling.fused_kernels_missing(cuda) == ("their Triton kernels need a GPU of compute capability 7.0 "
                                                    "or newer (this one is 6.1)")
    fake_gpus.liger = False
    assert "not installed" in modeling.fused_kernels_missing(cuda)


def test_a_checkpoint_from_more_gpus_resumes_on_fewer(fake_gpus, monkeypatch):
    import random

    import torch

    from extensions.dialogue_lora import training

    set_states = []
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, index: set_states.append(index))
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "cuda": [torch.zeros(8, dtype=torch.uint8)] * 4}  # saved on 4 GPUs
    training._set_rng_state(state)
    assert set_states == [0, 1]  # the two here


def test_inputs_go_where_the_input_embeddings_are():
    import torch

    from extensions.dialogue_lora.generation import model_device

    class Spread(torch.nn.Module):  # a device_map="auto" model whose first parameter is not with its inputs
        def __init__(self):
            super().__init__()
            self.head = torch.nn.Linear(2, 2, device="meta")
            self.embed = torch.nn.Embedding(4, 2)

        def get_input_embeddings(self):
            return self.embed

    assert model_device(Spread()) == torch.device("cpu")
    assert model_device(torch.nn.Linear(2, 2)) == torch.device("cpu")  # no embeddings: the first parameter's


def test_a_bare_cuda_device_is_this_processs_gpu_under_torchrun(fake_gpus, monkeypatch):
    import torch

    assert modeling.pick_device("cuda") == torch.device("cuda", 0)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert modeling.pick_device("cuda") == modeling.pick_device() == torch.device("cuda", 1)
    assert modeling.pick_device("cuda:0") == torch.device("cuda", 0)  # asked for by number: as asked


def test_precision_flag_is_checked():
    with pytest.raises(UserError, match="--precision must be one of auto, bf16, fp32"):
        TrainConfig(precision="fp8")


# ------------------------------------------------------------------ one row a batch, varlen attention


def test_flat_rows_score_like_padded_rows(tiny_model_dir):
    """A batch as one row (varlen attention, samples cut apart) gives the loss of padded rows + block mask."""
    import torch

    from extensions.dialogue_lora import varlen

    model, tok = modeling.load_base(tiny_model_dir, device="cpu", dtype=torch.float32, for_training=True)
    samples = [encoding.encode_record(r, tok, 256) for r in RECORDS]
    with torch.no_grad():
        padded, n_padded = batching.loss_sum(model, batching.collate(samples, tok.pad_token_id, True, 256), "cpu")
        assert varlen.enable(model, "cpu")
        flat_batch = batching.collate(samples, tok.pad_token_id, True, 256, multiple=64, flat=True)
        flat, n_flat = batching.loss_sum(model, flat_batch, "cpu")
    assert flat_batch["input_ids"].shape[0] == 1
    assert n_flat == n_padded
    assert float(flat) == pytest.approx(float(padded), rel=1e-4)


def test_collate_flat_layout(tiny_model_dir):
    _, tok = modeling.load_base(tiny_model_dir, device="cpu")
    samples = [encoding.encode_record(r, tok, 256) for r in RECORDS]
    lengths = [len(s["input_ids"]) for s in samples]
    b = batching.collate_flat(samples, tok.pad_token_id, multiple=64)
    total = sum(lengths)
    L = b["input_ids"].shape[1]
    assert L == -(-total // 64) * 64 and b["n_tokens"] == total
    bounds = b["cu_seqlens"].tolist()
    assert bounds[: len(samples) + 1] == [sum(lengths[:i]) for i in range(len(samples) + 1)]
    assert bounds[-1] == L  # the padding is a segment of its own
    for (a, z) in zip(bounds, bounds[1:]):
        assert b["position_ids"][0, a:z].tolist() == list(range(z - a))
    assert (b["targets"][0, total:] == encoding.IGNORE_INDEX).all()


def test_varlen_is_refused_where_it_would_not_isolate(tiny_model_dir, monkeypatch):
    """If the model does not pass the sample bounds on, training keeps the block mask."""
    from extensions.dialogue_lora import varlen

    model, _ = modeling.load_base(tiny_model_dir, device="cpu")
    before = model.config._attn_implementation
    monkeypatch.setattr(varlen, "isolates", lambda m, d: False)
    assert not varlen.enable(model, "cpu")
    assert model.config._attn_implementation == before


# ------------------------------------------------------------------ the last layer on scored positions only


def _flat_lora(tiny_model_dir):
    model, tok = _lora(tiny_model_dir, flat=True)
    fused_lora.fuse_lora_forward(model)
    return model, tok


def _long_records():
    """Samples whose replies sit at the end of longer contexts, as in real data."""
    lines = ["Alice: The tide is turning, and the boats are not back yet.", "Bob: Arr, they be late again.",
             "Alice: Will you go and look for them before the storm?"]
    return [{"input": "\n".join(lines[: k + 1]) + "\nBob:", "output": f"Aye, lass, {'and again ' * k}I will."}
            for k in range(3)] + RECORDS


@pytest.mark.parametrize("multiple", [1, 64])
def test_scored_last_layer_gives_the_same_loss_and_gradients(tiny_model_dir, multiple):
    """The last layer run only where the loss reads it: same loss, same adapter gradients as the full row."""
    import torch

    from extensions.dialogue_lora import last_layer

    model, tok = _flat_lora(tiny_model_dir)
    samples = [encoding.encode_record(r, tok, 256) for r in _long_records()]
    batch = batching.collate(samples, tok.pad_token_id, True, None, multiple=multiple, flat=True)
    full_loss, full_grads = _loss_and_grads(model, batch, multiple)
    assert last_layer.enable(model, "cpu") and last_layer.installed(model)
    seen = []
    layer = model.get_base_model().model.layers[-1]
    hook = layer.register_forward_hook(lambda _m, _a, out: seen.append((out[0] if isinstance(out, tuple) else out).shape))
    part_loss, part_grads = _loss_and_grads(model, batch, multiple)
    hook.remove()
    n = int((batch["targets"] != encoding.IGNORE_INDEX).sum())
    assert seen[0][1] == batching.round_up(n, multiple) < batch["input_ids"].shape[1] / 2  # scored rows only
    assert part_loss == pytest.approx(full_loss, rel=1e-4)
    for k, g in full_grads.items():
        assert (part_grads[k] - g).abs().max() <= 1e-3 * g.abs().max(), k
    # outside a scored batch the layer is the model's own: full-length output
    seen.clear()
    hook = layer.register_forward_hook(lambda _m, _a, out: seen.append((out[0] if isinstance(out, tuple) else out).shape))
    with torch.no_grad():
        model(input_ids=batch["input_ids"])
    hook.remove()
    assert seen[0][1] == batch["input_ids"].shape[1]


def test_scored_last_layer_left_off_for_other_layouts(tiny_model_dir, monkeypatch):
    """A layer with parts the scored forward does not know, or a probe that disagrees: the model is left as it was."""
    import torch

    from extensions.dialogue_lora import last_layer

    model, _ = _flat_lora(tiny_model_dir)
    layer = model.get_base_model().model.layers[-1]
    forward = layer.forward
    layer.extra_norm = torch.nn.Identity()  # as Gemma's extra norms
    assert not last_layer.enable(model, "cpu") and not last_layer.installed(model)
    del layer.extra_norm
    monkeypatch.setattr(last_layer, "_rotate", lambda x, cos, sin: x)  # a wrong rotary: the probe disagrees
    assert not last_layer.enable(model, "cpu") and not last_layer.installed(model)
    assert layer.forward == forward


@pytest.mark.parametrize("kind", ["mistral", "gemma3"])
def test_sliding_window_models_keep_their_window_on_every_packed_path(tiny_model_dir, kind):
    """A model whose layers see only their last few positions (Mistral in every layer, Gemma 3 in its
    local ones) trains with that window on the fast paths too: the CPU's per-sample attention, the
    scored last layer and (Mistral) the block mask give the loss of samples alone with the model's own
    masks; a full causal mask would not."""
    import torch
    import transformers as T

    from extensions.dialogue_lora import last_layer, varlen

    _, tok = modeling.load_base(tiny_model_dir, device="cpu", dtype=torch.float32)
    common = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  pad_token_id=tok.pad_token_id)
    config = (T.MistralConfig(**common, sliding_window=6) if kind == "mistral"
              else T.Gemma3TextConfig(**common, head_dim=16, sliding_window=6, sliding_window_pattern=2))
    torch.manual_seed(0)
    model = T.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").float().eval()
    with torch.no_grad():  # sharper attention: the window's effect well above rounding
        for name, p in model.named_parameters():
            if "q_proj" in name or "k_proj" in name:
                p.mul_(4.0)
    samples = [encoding.encode_record(r, tok, 256) for r in RECORDS]
    assert max(len(s["input_ids"]) for s in samples) > 3 * 6
    window, everywhere = varlen.sliding_window(model.config)
    assert (window, everywhere) == (6, kind == "mistral")

    def mean(batch, **kw):
        with torch.no_grad():
            loss, n = batching.loss_sum(model, batch, "cpu", **kw)
        return float(loss) / n

    alone = mean(batching.collate_padded(samples, tok.pad_token_id))
    no_window = mean(batching.collate_packed(samples, tok.pad_token_id, 256))  # the old block mask
    assert abs(no_window - alone) > 1e-3  # the window matters in this check
    if everywhere:
        assert mean(batching.collate_packed(samples, tok.pad_token_id, 256, window=6)) == pytest.approx(alone, rel=1e-5)
    assert varlen.enable(model, "cpu")
    flat = batching.collate_flat(samples, tok.pad_token_id)
    assert mean(flat) == pytest.approx(alone, rel=1e-5)
    if last_layer.enable(model, "cpu"):
        assert mean(flat, keep_logits=True) == pytest.approx(alone, rel=1e-5)


def _other_model(tiny_model_dir, folder, kind: str, **overrides):
    """A tiny random model of another architecture in `folder`, with the tiny model's tokenizer."""
    import shutil

    import torch
    import transformers as T

    _, tok = modeling.load_base(tiny_model_dir, device="cpu", dtype=torch.float32)
    common = {"vocab_size": len(tok), "pad_token_id": tok.pad_token_id}
    if kind == "gemma2":
        config = T.Gemma2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                num_key_value_heads=2, head_dim=16, max_position_embeddings=256, **common)
    elif kind == "gpt_neo":
        config = T.GPTNeoConfig(hidden_size=64, num_layers=2, num_heads=4, attention_types=[[["global", "local"], 1]],
                                window_size=256, max_position_embeddings=256, **common)
    else:
        config = T.BloomConfig(hidden_size=64, n_layer=2, n_head=4, **common)
    for key, value in overrides.items():
        setattr(config, key, value)
    torch.manual_seed(0)
    T.AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tiny_model_dir / name).exists():
            shutil.copy(tiny_model_dir / name, folder)


def test_gemma2_loads_with_its_own_attention_and_trains(tiny_model_dir, tmp_path):
    """Gemma 2 has no sdpa path in transformers (its scores are capped): it loads with the eager one, the
    CPU's per-sample attention (which would drop the cap) stays off, and a run trains."""
    import json

    import torch

    from extensions.dialogue_lora import varlen
    from extensions.dialogue_lora.training import train

    folder = tmp_path / "models" / "tiny-gemma2"
    _other_model(tiny_model_dir, folder, "gemma2", sliding_window=32)
    model, _ = modeling.load_base(folder, device="cpu", dtype=torch.float32)
    assert model.config._attn_implementation == "eager" and model.config.attn_logit_softcapping
    assert not varlen.enable(model, "cpu") and model.config._attn_implementation == "eager"
    data = tmp_path / "bob.json"
    data.write_text(json.dumps(RECORDS * 4), encoding="utf-8")
    result = train(TrainConfig(dataset_name=str(data), model_name="tiny-gemma2", model_dir=str(tmp_path / "models"),
                               lora_dir=str(tmp_path / "loras"), lora_name="g2", max_steps=2, batch_size=4,
                               val_ratio=0, device="cpu"))
    assert result.step == 2 and (tmp_path / "loras" / "g2" / "adapter_model.safetensors").is_file()


def test_load_base_asks_what_this_transformers_takes(tiny_model_dir, tmp_path, monkeypatch):
    """Gemma 2 is asked for eager attention at once (transformers 4.57 took sdpa and dropped its score cap
    without the ValueError the fallback waits for); the dtype goes as `torch_dtype` before transformers 4.56
    (`dtype` failed every load there); bitsandbytes that cannot quantise on this device is one line."""
    import torch
    import transformers

    folder = tmp_path / "tiny-gemma2"
    _other_model(tiny_model_dir, folder, "gemma2", sliding_window=32)
    asked = []

    class Asked(Exception):
        pass

    def from_pretrained(path, **kwargs):
        asked.append(kwargs)
        raise Asked

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", from_pretrained)
    for attn in (None, "sdpa"):
        with pytest.raises(Asked):
            modeling.load_base(folder, device="cpu", dtype=torch.float32, attn_implementation=attn)
    assert [a["attn_implementation"] for a in asked] == ["eager", "eager"]
    assert asked[0][modeling._dtype_keyword()] == torch.float32
    with pytest.raises(Asked):
        modeling.load_base(tiny_model_dir, device="cpu", dtype=torch.float32)  # Llama: left to transformers
    assert "attn_implementation" not in asked[-1]
    monkeypatch.setattr(transformers, "__version__", "4.55.4")
    with pytest.raises(Asked):
        modeling.load_base(tiny_model_dir, device="cpu", dtype=torch.float32)
    assert asked[-1] == {"torch_dtype": torch.float32}
    with pytest.raises(UserError, match=r"^--load_in_8bit: quantising on the CPU takes transformers 4.57 or newer "
                                        r"\(this is 4.55.4\)"):  # 4.46 failed in its own check, with a traceback
        modeling.load_base(tiny_model_dir, device="cpu", load_in_8bit=True)
    monkeypatch.setattr(transformers, "__version__", "5.24.0")

    def no_cpu_bnb(path, **kwargs):
        raise RuntimeError("CUDA is required but not available for bitsandbytes. Please consider installing ...")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_cpu_bnb)
    with pytest.raises(UserError, match=r"^--load_in_4bit: the installed bitsandbytes and transformers cannot "
                                        r"quantise on the cpu \(.*\); on the CPU it takes bitsandbytes 0.46"):
        modeling.load_base(tiny_model_dir, device="cpu", load_in_4bit=True)


@pytest.mark.parametrize("kind", ["gemma2", "gpt_neo", "bloom"])
def test_packed_samples_stay_apart_on_models_with_eager_attention(tiny_model_dir, tmp_path, kind):
    """Packing must not change a held-out loss. Eager attention (Gemma 2, GPT-Neo) adds the block mask to
    its scores, where a bool mask masked nothing (samples saw each other and later tokens); Bloom takes no
    4D mask at all (it failed at the first step) and trains with padded rows."""
    import json

    from extensions.dialogue_lora.training import train

    _other_model(tiny_model_dir, tmp_path / "models" / kind, kind, sliding_window=4096)
    data = tmp_path / "bob.json"
    data.write_text(json.dumps(RECORDS * 6), encoding="utf-8")
    events, losses = [], []
    for packing in (True, False):
        result = train(TrainConfig(dataset_name=str(data), model_name=kind, model_dir=str(tmp_path / "models"),
                                   lora_dir=str(tmp_path / "loras"), lora_name=f"p{packing}", max_steps=1,
                                   batch_size=4, val_ratio=0.4, precision="fp32", packing=packing, device="cpu"),
                       on_progress=events.append)
        losses.append(result.base_eval_loss)
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    padded_instead = any("packing off" in ev.get("message", "") for ev in events)
    assert padded_instead == (kind == "bloom")


def test_the_packing_probe_takes_rows_without_a_mask(tiny_model_dir):
    """Under flash-attention packed rows have no mask (the positions tell the samples apart), and the probe
    runs there too: a model that does not pass the positions on to its attention (GPTBigCode, Persimmon)
    would mix the samples. Here sdpa with no mask mixes them: said, not an AttributeError on the mask."""
    import functools

    import torch

    from extensions.dialogue_lora import batching
    from extensions.dialogue_lora.training import _packing_problem

    model, tok = modeling.load_base(tiny_model_dir, device="cpu", dtype=torch.float32)
    with_mask = functools.partial(batching.collate, pad_id=tok.pad_token_id, packing=True, capacity=None)
    assert _packing_problem(model, "cpu", functools.partial(with_mask, with_mask=True), None) is None
    assert _packing_problem(model, "cpu", functools.partial(with_mask, with_mask=False), None) == (
        "does not keep samples packed in one row apart")


def test_which_layers_slide_from_configs_old_and_new():
    import types

    from extensions.dialogue_lora import varlen

    cfg = lambda **kw: types.SimpleNamespace(**kw)  # noqa: E731
    assert varlen.sliding_window(cfg(model_type="mistral", sliding_window=4096)) == (4096, True)
    # Mistral slides every layer whatever layer types its config carries
    assert varlen.sliding_window(cfg(model_type="mistral", sliding_window=4096,
                                     layer_types=["full_attention"] * 2)) == (4096, True)
    # an older transformers' Gemma config has no layer types: its layers alternate
    assert varlen.sliding_window(cfg(model_type="gemma2", sliding_window=4096)) == (4096, False)
    assert varlen.sliding_window(cfg(model_type="gemma3_text", sliding_window=1024, sliding_window_pattern=6)) == (
        1024, False)
    assert varlen.sliding_window(cfg(model_type="qwen2", sliding_window=4096, use_sliding_window=False)) == (None, False)
    assert varlen.sliding_window(cfg(model_type="llama")) == (None, False)


def test_load_base_falls_back_to_sdpa_where_flash_attention_is_refused(tiny_model_dir):
    """transformers refuses flash_attention_2 for a model type without it, or where flash-attn does not
    import (here: not installed): the model loads with sdpa, which training then reads off its config."""
    model, _ = modeling.load_base(tiny_model_dir, device="cpu", attn_implementation="flash_attention_2")
    assert model.config._attn_implementation == "sdpa"


def test_a_full_gpu_is_known_by_each_of_its_errors():
    import torch

    assert modeling.out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert modeling.out_of_memory(torch.AcceleratorError("CUDA error: out of memory"))
    assert modeling.out_of_memory(RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate`"))
    assert modeling.out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp] DefaultCPUAllocator: not enough memory"))
    assert not modeling.out_of_memory(RuntimeError("CUDA error: device-side assert triggered"))
    # Apple's: memory short, and one tensor larger than Metal holds (evaluation's logits of a batch)
    assert modeling.out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 17.00 GB)"))
    assert modeling.out_of_memory(RuntimeError("Invalid buffer size: 9.75 GB"))


def test_gradient_checkpointing_is_on_for_every_gpu_by_default():
    import torch

    from extensions.dialogue_lora.training import _use_gc

    auto = TrainConfig(dataset_name="d", model_name="m")
    assert [_use_gc(auto, torch.device(d)) for d in ("cuda", "mps", "cpu")] == [True, True, False]
    assert not _use_gc(TrainConfig(dataset_name="d", model_name="m", gradient_checkpointing="off"), torch.device("mps"))
