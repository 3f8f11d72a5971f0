"""Loading a base model and its tokenizer: device, dtype, 4-bit/8-bit quantisation, base fingerprint.

Training, evaluation, the chat script and the standalone app load models through `load_base`, so
they all pick the same device and precision:

- device: CUDA (this process's GPU under torchrun/accelerate: LOCAL_RANK), else Apple MPS, else CPU;
- dtype: bf16 on GPUs that support it (Ampere and newer), fp16 on older GPUs (T4, V100), fp32 on CPU
  and MPS (fp32 is the reliable, and usually the fastest, choice there);
- 4-bit (QLoRA): nf4 weights with double quantisation, compute in bf16 where supported (fp16 on older
  GPUs, fp32 on CPU); 8-bit: LLM.int8(). Both need bitsandbytes (which also runs on CPU).

`base_fingerprint` names the architecture a model has (type, width, depth, vocabulary) so an adapter
trained on one base can be told apart from another before PEFT fails with a shape error.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from .errors import UserError, brief

FINGERPRINT_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "vocab_size")


def quiet_libraries() -> None:
    """The libraries' own log lines and download bars off: a script's progress and report say what happens.
    Set before transformers is imported (it reads them then); a user's own setting wins."""
    for key, value in (("TRANSFORMERS_VERBOSITY", "error"), ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
                       ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1"), ("TOKENIZERS_PARALLELISM", "false")):
        os.environ.setdefault(key, value)


def local_rank() -> int:
    """This process's GPU index under torchrun / accelerate launch (0 when run alone)."""
    return int(os.environ.get("LOCAL_RANK", "0") or 0)


def pick_device(prefer: str | None = None):
    """The device to run on: `prefer` if given ("cpu", "cuda", "cuda:1", "mps"), else the best available."""
    import torch

    if prefer:
        if prefer.split(":")[0] == "hip" and torch.version.hip:  # a ROCm torch calls its AMD GPUs `cuda`
            prefer = "cuda" + prefer[3:]
        try:
            device = torch.device(prefer)
        except (RuntimeError, ValueError):
            raise UserError(f"--device {prefer!r} is not a device name (cpu, cuda, cuda:1, mps)") from None
        missing = device_missing(device)
        if missing:
            raise UserError(f"--device {prefer}: {missing}; use --device cpu, or leave --device out to pick the best there is")
        if device.type == "cuda" and device.index is None:
            # under torchrun each process has its own GPU: a bare "cuda" would put every one on GPU 0
            device = _own_gpu()
    elif torch.cuda.is_available():
        device = _own_gpu()
    else:
        mps = getattr(torch.backends, "mps", None)
        return torch.device("mps" if mps is not None and mps.is_available() else "cpu")
    missing = _kernels_missing(device) if device.type == "cuda" else None
    if missing:
        raise UserError(f"{missing}; or run on the CPU with --device cpu")
    return device


def device_label(device) -> str:
    """`cuda:0, NVIDIA GeForce RTX 4090`, `mps`, `cpu`: where a run computes, for its first line."""
    import torch

    if device.type != "cuda":
        return device.type
    index = device.index if device.index is not None else torch.cuda.current_device()
    return f"cuda:{index}, {torch.cuda.get_device_name(index)}"


def free_memory() -> None:
    """Give back the memory of tensors nothing holds any more (a model dropped or half loaded, a failed
    step's): to Python, and a GPU's cache to other processes. Imports no torch that is not loaded yet."""
    import gc

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif torch is not None and torch.backends.mps.is_available():
        torch.mps.empty_cache()


def _own_gpu():
    """This process's GPU: its local rank's under torchrun, else the first."""
    import torch

    return torch.device("cuda", local_rank() % max(torch.cuda.device_count(), 1))


def _capability(device) -> tuple[int, int]:
    """A CUDA device's compute capability (the current GPU's for a bare "cuda")."""
    import torch

    return torch.cuda.get_device_capability(device.index if device.index is not None else torch.cuda.current_device())


def _gfx(device) -> str:
    """An AMD card's architecture (`gfx1100`) under a ROCm torch; "" when it does not say."""
    import torch

    index = device.index if device.index is not None else torch.cuda.current_device()
    return str(getattr(torch.cuda.get_device_properties(index), "gcnArchName", "") or "").split(":")[0]


# ROCm's stand-ins for the cards its builds leave out: each generation runs as its first, supported card
_GFX_OVERRIDES = {"gfx103": "10.3.0", "gfx110": "11.0.0", "gfx115": "11.0.0", "gfx120": "12.0.0"}


def _gfx_missing(device) -> str | None:
    """Why this ROCm torch has no kernels for the AMD card (an RX 6700 XT's gfx1031, a 780M's gfx1103), or
    None. torch reports such a card as available, and its first operation fails ("invalid device function")."""
    import torch

    gfx, archs = _gfx(device), [a.split(":")[0] for a in torch.cuda.get_arch_list()]
    if not gfx or not archs or gfx in archs or os.environ.get("HSA_OVERRIDE_GFX_VERSION"):
        return None
    override = next((v for prefix, v in _GFX_OVERRIDES.items() if gfx.startswith(prefix)), None)
    advice = (f"set HSA_OVERRIDE_GFX_VERSION={override} (it runs as the first card of its generation), or "
              if override else "")
    return (f"this torch {torch.__version__} (ROCm {torch.version.hip}) has no kernels for the "
            f"{torch.cuda.get_device_name(device.index)} ({gfx}; it was built for {', '.join(archs)}): {advice}"
            f"install a torch build for {gfx}")


def _kernels_missing(device) -> str | None:
    """Why this torch build has no kernels for the CUDA card, or None. Recent CUDA builds leave old cards out
    (12.8 and newer Maxwell and Pascal, GTX 9xx and 10xx; 13.0 Volta too, V100), which torch still reports
    as available: the first operation then fails with "no kernel image is available". ROCm: _gfx_missing."""
    import torch

    if torch.version.hip:
        return _gfx_missing(device)
    archs = torch.cuda.get_arch_list()
    # "sm_61" runs on 6.1 and later 6.x; "sm_90a" on 9.0 alone; "sm_100f" on 10.x from 10.0; PTX
    # "compute_90" is compiled for 9.0 and later
    built = [m.groups() for m in (re.fullmatch(r"(sm|compute)_(\d+)(\d)([af]?)", a) for a in archs) if m]
    if not built:
        return None  # ROCm, or a build that does not say
    major, minor = _capability(device)

    def runs(kind: str, m: str, n: str, suffix: str) -> bool:
        if kind == "compute":  # "compute_90a" is compiled for 9.0 alone
            return (int(m), int(n)) == (major, minor) if suffix == "a" else (int(m), int(n)) <= (major, minor)
        return int(m) == major and (int(n) == minor if suffix == "a" else int(n) <= minor)

    if any(runs(*b) for b in built):
        return None
    name = torch.cuda.get_device_name(device.index)
    return (f"this torch {torch.__version__} has no kernels for the {name} (compute capability {major}.{minor}; it "
            f"was built for {', '.join(archs)}): install a torch build for sm_{major}{minor} (PyTorch's CUDA 12.6 "
            "builds have Maxwell, Pascal and Volta)")


def device_missing(device) -> str | None:
    """Why `device` cannot be used here, or None when it can."""
    import torch

    if device.type == "cpu":
        return None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            if torch.version.hip:  # a ROCm build (AMD's GPUs are `cuda` there) that sees none
                return (f"this torch {torch.__version__} is a ROCm build but sees no AMD GPU (check `rocminfo`, and "
                        "that your user is in the render and video groups)")
            built = "this torch has no CUDA support" if torch.version.cuda is None else "no CUDA GPU is visible"
            return f"{built} (torch {torch.__version__})"
        if device.index is not None and device.index >= torch.cuda.device_count():
            return f"there are only {torch.cuda.device_count()} CUDA device(s) (cuda:0 to cuda:{torch.cuda.device_count() - 1})"
        return None
    if device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        return None if mps is not None and mps.is_available() else "Apple's MPS is not available on this machine"
    return f"{device.type} devices are not supported (cpu, cuda, mps)"


def _as_device(device):
    import torch

    if device is None or isinstance(device, str):
        return pick_device(device)  # a name is checked: a clear error for a device that is not there
    return device if isinstance(device, torch.device) else torch.device(device)


# AMD's with bf16 matrix instructions: MI100 (gfx908) and later Instinct cards, RDNA3 (RX 7000) and later.
# RDNA2 (RX 6000, gfx103x) and Vega (gfx906) have none: bf16 there runs at fp32's speed, fp16 at twice it.
_GFX_BF16 = ("gfx908", "gfx90a", "gfx94", "gfx95", "gfx11", "gfx12")


def bf16_supported(device) -> bool:
    """Whether `device` computes in bf16 natively: NVIDIA cards from Ampere (compute capability 8) on, and
    AMD's of _GFX_BF16 (one that does not name its architecture: yes, as before). torch.cuda.is_bf16_supported()
    also says yes for older cards (T4, V100, GTX 10xx; RDNA2) that only emulate it, slowly and without tensor
    cores, and asks the current GPU rather than `device`."""
    import torch

    device = _as_device(device)
    if device.type != "cuda":
        return False
    if torch.version.hip:
        gfx = _gfx(device)
        return not gfx or gfx.startswith(_GFX_BF16)
    return _capability(device)[0] >= 8


def pick_dtype(device=None):
    """Weights/compute dtype for `device`: bf16 where the GPU supports it, fp16 on older GPUs, else fp32."""
    import torch

    device = _as_device(device)
    if device.type == "cuda":
        return torch.bfloat16 if bf16_supported(device) else torch.float16
    return torch.float32


PRECISIONS = ("auto", "bf16", "fp32")


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (AMX or AVX512-BF16, through oneDNN)."""
    import torch

    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # an older or non-x86 build without the probe
        return False


def training_dtype(device=None, precision: str = "auto", quantized: bool = False):
    """The dtype a frozen base model is trained in (the adapter's own weights stay fp32).

    auto: as `pick_dtype` on GPUs; on a CPU with bf16 matrix units (AMX, AVX512-BF16) bf16, whose
    products run 4-5x faster there than fp32's (quantised bases keep fp32 compute on a CPU); fp32
    elsewhere. bf16 asks for it where the device allows it; fp32 turns mixed precision off.
    """
    import torch

    device = _as_device(device)
    if precision == "fp32":
        return torch.float32
    if device.type == "cuda":
        if precision == "bf16" and not bf16_supported(device):
            raise UserError(f"--precision bf16: {torch.cuda.get_device_name(device)} has no bf16; use auto (fp16) or fp32")
        return pick_dtype(device)
    if device.type == "cpu" and not quantized and (precision == "bf16" or cpu_has_bf16()):
        return torch.bfloat16
    if device.type == "mps" and precision == "bf16":  # asked for: half the memory of a Mac's shared RAM
        if not mps_bf16(device):
            raise UserError("--precision bf16: this Mac's GPU (mps) multiplies bf16 from macOS 14 on; use auto "
                            "or fp32 (fp32 there)")
        return torch.bfloat16  # trained as a CPU's bf16 base is: no autocast, the adapter's weights fp32
    return torch.float32


def mps_bf16(device) -> bool:
    """Whether an Apple GPU multiplies bf16 matrices (macOS 14 and later, with a torch that has the kernels)."""
    import torch

    try:
        x = torch.ones(2, 2, dtype=torch.bfloat16, device=device)
        return bool((x @ x)[0, 0].item() == 2)
    except (RuntimeError, TypeError):
        return False


def freeze_for_training(model, gradient_checkpointing: bool) -> None:
    """Freeze the base model's weights, quantised or not, and switch on gradient checkpointing if asked.

    Nothing is cast. PEFT's `prepare_model_for_kbit_training` would also cast every weight that is not
    quantised to fp32: on an 8B Llama the embeddings and the head, 2.1 GB more, and on a GPU autocast
    casts the head back to bf16 at every step. The quantised base is trained like an unquantised one,
    in the training dtype with the adapter in fp32. Checkpointing is the non-reentrant kind, which needs
    no input that requires grad (transformers' enable call still hooks the embeddings' output to require
    one: harmless, the embeddings stay frozen).
    """
    for p in model.parameters():
        p.requires_grad_(False)
    # bitsandbytes repacks a CPU 4-bit weight for inference at its first forward in eval mode, and
    # never back: from then on no gradient passes that layer (silently; the evaluations between
    # training steps would set it off). The model being trained keeps the trainable layout.
    for module in model.modules():
        if getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False
    if gradient_checkpointing:
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x; the old name is deprecated
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


FUSED_KERNELS = ("auto", "on", "off")


def fused_kernels_missing(device, model=None) -> str | None:
    """Why liger-kernel's fused kernels cannot run on `device` (and on `model`'s type, when given: the
    check before loading has no model yet), or None when they can."""
    device = _as_device(device)
    if device.type != "cuda":
        return f"they need CUDA, and this run is on {device.type}"
    if importlib.util.find_spec("liger_kernel") is None:
        return "liger-kernel is not installed (pip install liger-kernel)"
    import torch

    if not torch.version.hip:
        major, minor = _capability(device)
        if major < 7:  # Triton builds no kernels for Pascal and older
            return f"their Triton kernels need a GPU of compute capability 7.0 or newer (this one is {major}.{minor})"
    elif _gfx(device) and not _gfx(device).startswith(_GFX_BF16):  # Triton on ROCm: Instinct and RDNA3 on
        return f"their Triton kernels are not known to run on the {_gfx(device)} (ROCm)"  # (RDNA2 may fail)
    try:  # a liger-kernel made for a newer transformers, or a broken Triton, fails here: the plain path
        from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN
    except Exception as e:  # noqa: BLE001 (whatever an optional package raises on import)
        return f"liger-kernel does not load here ({type(e).__name__}: {brief(e)})"
    if model is None:
        return None
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in MODEL_TYPE_TO_APPLY_LIGER_FN:
        return f"liger-kernel has no kernels for model type {model_type!r}"
    return None


def apply_fused_kernels(model, device, wanted: str = "auto") -> str:
    """liger-kernel's fused RMSNorm and SwiGLU on `model`'s own modules, where they can run.

    They are Triton kernels: CUDA only, for the model types liger-kernel knows (Llama, Mistral, Qwen,
    Gemma and more), and only when liger-kernel is installed (an optional package). On an H100, liger
    (these two, its rotary kernel and its fused loss together) took 8B bf16 LoRA training from 32.5% to
    34.6% of the card's peak and its memory from 30.5 to 24.7 GB (bench/RESULTS.md). The loss keeps our
    own path, which computes logits only where the loss reads them.

    liger-kernel patches the model type's transformers module too (its norm and MLP classes, its
    rotary function), which would reach every model built later in the process, on the CPU as well,
    where Triton cannot run. Those names are put back at once: only this model's own modules keep the
    kernels. The rotary embedding is looked up in the module at each call, so it stays unfused.

    Returns "liger", or "off" with the reason; `wanted` "on" turns the reason into a UserError.
    """
    if wanted == "off":
        return "off"
    reason = fused_kernels_missing(device, model)
    if reason:
        if wanted == "on":
            raise UserError(f"--fused_kernels on: {reason}")
        return f"off ({reason})"
    from liger_kernel.transformers.monkey_patch import _apply_liger_kernel_to_instance

    module = sys.modules[type(model).__module__]
    before = dict(vars(module))
    try:
        _apply_liger_kernel_to_instance(model, rope=False, rms_norm=True, swiglu=True, cross_entropy=False,
                                        fused_linear_cross_entropy=False)
    finally:
        for name, value in before.items():
            if vars(module).get(name) is not value:
                setattr(module, name, value)
    return "liger"


def compute_dtype_4bit(device=None):
    """The compute dtype of 4-bit layers: bf16 where supported, fp16 on older GPUs, fp32 on CPU/MPS."""
    return pick_dtype(device)


def has_bitsandbytes() -> bool:
    return importlib.util.find_spec("bitsandbytes") is not None


def require_bitsandbytes(flag: str = "--load_in_4bit") -> None:
    """A clear error when quantised loading is asked for without bitsandbytes installed."""
    if not has_bitsandbytes():
        raise UserError(
            f"{flag} needs the bitsandbytes package, which is not installed: run "
            "`pip install bitsandbytes` (or drop the flag to load the model unquantised)"
        )


def quantization_config(load_in_4bit: bool = False, load_in_8bit: bool = False, device=None, dtype=None):
    """The transformers BitsAndBytesConfig for the flags, or None when neither is set. `dtype`: the 4-bit
    layers' compute type when asked for (`--precision fp32`), else the device's (`compute_dtype_4bit`)."""
    if load_in_4bit and load_in_8bit:
        raise UserError("--load_in_4bit and --load_in_8bit cannot be used together")
    if not (load_in_4bit or load_in_8bit):
        return None
    require_bitsandbytes("--load_in_4bit" if load_in_4bit else "--load_in_8bit")
    from transformers import BitsAndBytesConfig

    if load_in_4bit:
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype if dtype is not None else compute_dtype_4bit(device),
        )
    return BitsAndBytesConfig(load_in_8bit=True)


def ensure_pad_token(tokenizer) -> None:
    """Give the tokenizer a pad token when it has none (EOS, else UNK, else a new <pad> token)."""
    if tokenizer.pad_token_id is not None:
        return
    if tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    elif getattr(tokenizer, "unk_token", None) is not None:
        tokenizer.pad_token = tokenizer.unk_token
    else:  # no special token at all: a new one (the model's embeddings must then be resized)
        tokenizer.add_special_tokens({"pad_token": "<pad>"})


def oom_error_types() -> tuple:
    """The out-of-memory exception types of this torch (torch.OutOfMemoryError is new in torch 2.5)."""
    import torch

    return tuple({getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError), torch.cuda.OutOfMemoryError})


def out_of_memory(error: BaseException) -> bool:
    """Whether an error is memory running out: a GPU's OutOfMemoryError, Python's MemoryError, or torch's
    CPU allocator failing (a plain RuntimeError there). Catch (RuntimeError, MemoryError), then ask this."""
    if isinstance(error, (MemoryError, *oom_error_types())):
        return True
    text = str(error)
    # a nearly full card also fails as "CUDA error: out of memory" (torch.AcceleratorError) or in cuBLAS's
    # workspace; Apple's GPU and ROCm say it in plain RuntimeErrors of their own
    return isinstance(error, RuntimeError) and any(s in text for s in (
        "DefaultCPUAllocator", "can't allocate memory", "CUDA error: out of memory", "CUBLAS_STATUS_ALLOC_FAILED",
        "HIPBLAS_STATUS_ALLOC_FAILED",
        "MPS backend out of memory", "HIP error: out of memory", "HIP out of memory",
        "Invalid buffer size"))  # (Metal: one tensor larger than the GPU may hold)


def damaged_file_types() -> tuple:
    """What reading a truncated or corrupt weights, state or JSON file raises (never out of memory)."""
    import pickle

    from safetensors import SafetensorError

    return (OSError, ValueError, EOFError, pickle.UnpicklingError, SafetensorError)


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "spiece.model")


def tokenizer_problem(model_path: str | os.PathLike) -> str | None:
    """Why a model folder's tokenizer cannot load, where its files alone say so (checked before the model)."""
    if Path(model_path).is_dir() and not any((Path(model_path) / f).is_file() for f in _TOKENIZER_FILES):
        return (f"{model_path} holds no tokenizer ({', '.join(_TOKENIZER_FILES[:3])}, ...): copy the tokenizer "
                "files from where the model came from into that folder")
    return None


def load_tokenizer(model_path: str | os.PathLike):
    """The model folder's tokenizer, with a pad token."""
    from transformers import AutoTokenizer

    problem = tokenizer_problem(model_path)
    if problem:
        raise UserError(problem)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model_path))
    except (OSError, ValueError) as e:
        raise UserError(f"could not load the tokenizer of {model_path}: {brief(e)}") from None
    ensure_pad_token(tokenizer)
    return tokenizer


def default_attn_implementation(device, dtype=None) -> str:
    """flash_attention_2 where it runs (packed samples use its varlen path), else sdpa: on CUDA, with
    flash-attn installed and importable, on an Ampere or newer card (flash-attn 2 refuses older ones at
    the first forward), in fp16 or bf16 (it has no fp32 kernels; `dtype` None: the device's own).
    load_base falls back to sdpa for a model type that has no flash-attention path."""
    import torch

    device = _as_device(device)
    if device.type != "cuda" or torch.version.hip or importlib.util.find_spec("flash_attn") is None:
        return "sdpa"
    if (dtype or pick_dtype(device)) not in (torch.float16, torch.bfloat16):
        return "sdpa"
    if _capability(device)[0] < 8:
        return "sdpa"
    try:
        from transformers.utils import is_flash_attn_2_available
    except ImportError:  # pragma: no cover - an older transformers
        return "sdpa"
    return "flash_attention_2" if is_flash_attn_2_available() else "sdpa"


class _OnceEach:
    """A logging filter that lets each message through once (bitsandbytes' 8-bit layers say that they
    cast their input at every product: a thousand lines an evaluation)."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def filter(self, record) -> bool:
        key = str(record.msg)
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


def quiet_known_notices() -> None:
    """Hide two harmless notices every run would print: bitsandbytes' optional CPU kernel hub download
    (which cannot work offline and falls back on its own) and transformers' deprecation of a name that
    PEFT still calls; say bitsandbytes' 8-bit cast once, not at every product."""
    import logging
    import warnings

    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    functions = logging.getLogger("bitsandbytes.autograd._functions")
    if not any(isinstance(f, _OnceEach) for f in functions.filters):
        functions.addFilter(_OnceEach())
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def _caps_scores(model_path) -> bool:
    """Whether the model caps its attention scores (Gemma 2's attn_logit_softcapping)."""
    try:
        config = text_part(config_of(model_path))
    except UserError:  # no readable config.json: from_pretrained says so
        return False
    return isinstance(config, dict) and bool(config.get("attn_logit_softcapping"))


def _transformers_release() -> tuple:
    import transformers
    from packaging.version import Version

    return Version(transformers.__version__).release


def _dtype_keyword() -> str:
    """from_pretrained's name for the weights' dtype: `dtype` from transformers 4.56 on, `torch_dtype` before
    (an older webui's transformers, which requirements.txt allows)."""
    return "dtype" if _transformers_release() >= (4, 56) else "torch_dtype"


def load_base(
    model_path: str | os.PathLike,
    *,
    load_in_4bit: bool = False,
    load_in_8bit: bool = False,
    device=None,
    for_training: bool = False,
    attn_implementation: str | None = None,
    dtype=None,
):
    """Load a causal LM and its tokenizer from a folder; returns (model, tokenizer).

    The model is placed on `device` (default: `pick_device()`) in `pick_dtype(device)` (or `dtype`).
    With `load_in_4bit`/`load_in_8bit` it is quantised by bitsandbytes on load (a UserError explains
    a missing bitsandbytes). `for_training` turns the KV cache off; otherwise the model is put in eval
    mode. `attn_implementation` defaults to "sdpa" ("eager" is slower; "flash_attention_2" needs
    flash-attn and a GPU).
    """
    from transformers import AutoModelForCausalLM

    quiet_known_notices()
    device = _as_device(device)
    qconfig = quantization_config(load_in_4bit, load_in_8bit, device, dtype)
    tokenizer = load_tokenizer(model_path)
    flag = "--load_in_4bit" if load_in_4bit else "--load_in_8bit"
    if qconfig is not None and device.type == "cpu" and _transformers_release() < (4, 57):
        # older ones fail inside their own bitsandbytes check, with a traceback
        import transformers

        raise UserError(f"{flag}: quantising on the CPU takes "
                        f"transformers 4.57 or newer (this is {transformers.__version__}): pip install -U "
                        "transformers bitsandbytes")
    if dtype is None:
        dtype = pick_dtype(device)
    kwargs: dict[str, Any] = {_dtype_keyword(): dtype}
    caps = _caps_scores(model_path)
    if attn_implementation in (None, "sdpa") and caps:
        # sdpa cannot cap scores (Gemma 2): transformers 5 refuses it, 4.5x dropped the cap without a word
        attn_implementation = "eager"
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if qconfig is not None:
        kwargs["quantization_config"] = qconfig
    if qconfig is not None or device.type == "cuda":
        # straight onto the GPU: loaded in RAM first, an 8B model needs 16 GB of it before moving over
        kwargs["device_map"] = {"": device}
    from .paths import unreadable_weights

    unreadable = unreadable_weights(Path(model_path))
    if unreadable:
        raise UserError(unreadable)
    try:
        # a model type without a flash-attention path (or a flash-attn that fails to import) takes sdpa; one
        # without an sdpa path either (Gemma 2, whose scores are capped) takes the eager one
        fallbacks = {"flash_attention_2": "eager" if caps else "sdpa", "sdpa": "eager"}
        while True:
            try:
                model = AutoModelForCausalLM.from_pretrained(str(model_path), **kwargs)
                break
            except (ValueError, ImportError):
                if kwargs.get("attn_implementation") not in fallbacks:
                    raise
                kwargs["attn_implementation"] = fallbacks[kwargs["attn_implementation"]]
    except (RuntimeError, MemoryError) as e:
        if qconfig is not None and "bitsandbytes" in str(e) and not out_of_memory(e):
            advice = ("on the CPU it takes bitsandbytes 0.46 and transformers 4.57 or newer: pip install -U "
                      "bitsandbytes transformers") if device.type == "cpu" else "python -m bitsandbytes says why"
            raise UserError(f"{flag}: the installed bitsandbytes and transformers cannot quantise on the "
                            f"{device.type} ({brief(e)}); {advice}") from None
        if not out_of_memory(e):
            raise
        raise UserError(
            f"out of memory loading {model_path}: try --load_in_4bit (or --load_in_8bit), "
            "or a smaller model"
        ) from None
    except damaged_file_types() as e:
        raise UserError(f"could not load the model in {model_path}: {brief(e)}") from None
    if "device_map" not in kwargs:
        model.to(device)
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    gen = getattr(model, "generation_config", None)
    if gen is not None and gen.pad_token_id is None:
        gen.pad_token_id = tokenizer.pad_token_id
    if for_training:
        model.config.use_cache = False
    else:
        model.eval()
    return model, tokenizer


def stored_quantization(model_path) -> str | None:
    """How a model folder's weights are stored quantised ("bitsandbytes 4-bit", "gptq 4-bit", "awq"), from
    its config's quantization_config; None for full-precision weights."""
    stored = _stored(model_path)
    if stored is None:
        return None
    method, bits = stored
    return f"{method} {bits}-bit" if bits else method


def stored_bits(model_path) -> tuple[bool, bool] | None:
    """(4-bit, 8-bit) of a model folder stored quantised, as load_in_4bit/load_in_8bit would say it (AWQ
    is 4-bit); None for full-precision weights."""
    stored = _stored(model_path)
    if stored is None:
        return None
    method, bits = stored
    return bits == 4 or (bits is None and method == "awq"), bits == 8


def _stored(model_path) -> tuple[str, int | None] | None:
    config = config_of(model_path)
    q = config.get("quantization_config") if isinstance(config, dict) else None
    if not isinstance(q, dict):
        return None
    bits = q.get("bits") or (4 if q.get("load_in_4bit") else 8 if q.get("load_in_8bit") else None)
    return str(q.get("quant_method") or "quantised"), bits if isinstance(bits, int) else None


def config_of(model_or_config):
    """The (text) config of a model, a PEFT model, a config object, a config dict or a model folder (a
    folder's config.json as a dict, whole: see `text_part`)."""
    obj = model_or_config
    if isinstance(obj, (str, os.PathLike)):
        path = Path(obj)
        if path.is_dir():
            path = path / "config.json"
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(f"could not read the model config {path}: {brief(e)}") from None
    if hasattr(obj, "get_base_model"):  # a PeftModel
        obj = obj.get_base_model()
    config = getattr(obj, "config", obj)
    if hasattr(config, "get_text_config"):
        config = config.get_text_config()
    return config


def text_part(config):
    """A config dict's text model part (a multimodal model's `text_config`), else the config itself."""
    if isinstance(config, dict) and isinstance(config.get("text_config"), dict):
        return config["text_config"]
    return config


def context_limit(model_or_config) -> int | None:
    """The most positions the model was built for (config's max_position_embeddings, GPT-2's n_positions),
    or None when its config does not say."""
    config = config_of(model_or_config)
    get = config.get if isinstance(config, dict) else lambda k: getattr(config, k, None)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def fit_cutoff(cutoff: int, model, n_virtual: int = 0) -> tuple[int, str | None]:
    """(cutoff_len, note): a cutoff past the model's context (less a soft prompt's virtual tokens) is cut
    to it, since positions the model never saw train and score nonsense (or, where positions are learnt
    weights, fail); the note says so."""
    limit = context_limit(model)
    if limit is None or cutoff + n_virtual <= limit or limit - n_virtual < 2:
        return cutoff, None
    fit = limit - n_virtual
    less = f", less the {n_virtual} virtual tokens" if n_virtual else ""
    return fit, f"--cutoff_len {cutoff} is longer than the model's context ({limit} positions{less}): samples cut at {fit} tokens"


def base_fingerprint(model_or_config) -> dict:
    """{"model_type", "hidden_size", "num_hidden_layers", "vocab_size"} of a base model.

    Accepts a model, a PeftModel, a transformers config, a config dict or a model folder. Saved in
    training_parameters.json; `fingerprint_mismatch` compares two of them.
    """
    config = config_of(model_or_config)
    if isinstance(config, dict):
        text = text_part(config)
        get = lambda k: text.get(k, config.get(k))  # noqa: E731
    else:
        get = lambda k: getattr(config, k, None)  # noqa: E731
    return {k: get(k) for k in FINGERPRINT_KEYS}


def fingerprint_mismatch(saved: dict | None, current: dict) -> list[str]:
    """The differences between an adapter's saved base fingerprint and a model's, as readable lines.

    Keys missing on either side (older adapters) are not counted as differences.
    """
    if not saved:
        return []
    out = []
    for k in FINGERPRINT_KEYS:
        a, b = saved.get(k), current.get(k)
        if a is not None and b is not None and a != b:
            out.append(f"{k}: adapter trained on {a}, this model has {b}")
    return out
