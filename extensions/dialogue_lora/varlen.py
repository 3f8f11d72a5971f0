"""Packed samples without padding or masks on the CPU: attention one sample at a time.

A batch becomes a single row, its samples end to end (batching.collate_flat), so every linear layer
(most of the compute) sees only real tokens. Attention is the one step that must keep the samples
apart: this registers a transformers attention function that cuts the row at the sample bounds it is
given (`cu_seq_lens_q`, the keyword flash-attention's varlen kernel takes) and runs causal SDPA on each
piece. Compared with rows padded to the longest and a block-diagonal mask, nothing is computed for
padding and attention costs the sum of n^2 over the samples instead of rows x L^2.

It runs in fp32 whatever the model's dtype (autocast off): oneDNN compiles its bf16 attention kernels
for each new sequence length (about 15 ms apiece, and here every sample has its own), fp32's are not.

Models that do not route attention through transformers' AttentionInterface, or do not pass the
keyword on, are caught by `enable`, which checks that a packed row gives the same logits as its
samples alone; training then keeps the padded rows and block mask.
"""
from __future__ import annotations

NAME = "dialogue_lora_varlen"


def _has_enable_gqa() -> bool:
    import torch

    major, minor = (int(x) for x in torch.__version__.split(".")[:2])
    return (major, minor) >= (2, 5)


def attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """query (rows, heads, L, d), key/value (rows, kv_heads, L, d) -> ((rows, L, heads, d), None)."""
    import torch
    import torch.nn.functional as F

    dtype = query.dtype
    p = dropout if module.training else 0.0
    cu = kwargs.get("cu_seq_lens_q")
    window = kwargs.get("sliding_window")  # this layer's (Mistral's every layer, Gemma's local ones), or None
    with torch.autocast(query.device.type, enabled=False):
        q, k, v = query.float(), key.float(), value.float()
        gqa = {}
        if k.shape[1] != q.shape[1]:  # grouped-query attention: torch >= 2.5 shares the kv heads, no copies
            if _has_enable_gqa():
                gqa = {"enable_gqa": True}
            else:
                groups = q.shape[1] // k.shape[1]
                k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        def causal(qi, ki, vi):
            n = qi.shape[2]
            if window and n > window:  # the layer sees only its last `window` positions
                mask = band_mask(n, window, qi.device)
                return F.scaled_dot_product_attention(qi, ki, vi, attn_mask=mask, dropout_p=p, scale=scaling, **gqa)
            return F.scaled_dot_product_attention(qi, ki, vi, is_causal=True, dropout_p=p, scale=scaling, **gqa)

        if cu is None:  # one sample a row
            out = causal(q, k, v)
        else:
            sizes = (cu[1:] - cu[:-1]).tolist()
            # split, not slicing: a split's backward is one cat, a slice's a zeroed full-size copy each
            out = torch.cat([causal(qi, ki, vi) for qi, ki, vi in zip(q.split(sizes, 2), k.split(sizes, 2),
                                                                     v.split(sizes, 2))], dim=2)
    return out.transpose(1, 2).contiguous().to(dtype), None


def band_mask(n: int, window: int, device=None):
    """(n, n) bool: query i attends key j when j <= i and i - j < window (transformers' sliding window)."""
    import torch

    i = torch.arange(n, device=device)
    d = i[:, None] - i[None, :]
    return (d >= 0) & (d < window)


def layer_window(attn) -> int | None:
    """The sliding window an attention module's layer uses: its own (Gemma's and Qwen's local layers),
    else its config's for a model that slides in every layer (Mistral); None for full attention."""
    if hasattr(attn, "sliding_window"):
        return attn.sliding_window or None
    return sliding_window(getattr(attn, "config", None))[0]


_EVERY_LAYER = frozenset(("mistral", "mixtral"))


def sliding_window(config) -> tuple[int | None, bool]:
    """(window, in every layer) of a model's config; (None, False) where no layer slides."""
    config = getattr(config, "text_config", None) or config
    window = getattr(config, "sliding_window", None)
    if not isinstance(window, int) or window <= 0 or getattr(config, "use_sliding_window", True) is False:
        return None, False
    kind = getattr(config, "model_type", "") or ""
    if kind in _EVERY_LAYER:  # their attention slides in every layer, whatever else the config says
        return window, True
    kinds = getattr(config, "layer_types", None)
    if kinds:
        sliding = [k == "sliding_attention" for k in kinds]
        return (window, all(sliding)) if any(sliding) else (None, False)
    # an older transformers' config, with no layer types: Gemma's and Cohere's alternate local and global
    # layers, and so do configs that say how (`sliding_window_pattern`, Qwen's `max_window_layers`)
    mixed = kind.startswith(("gemma", "cohere")) or any(
        getattr(config, k, None) is not None for k in ("sliding_window_pattern", "max_window_layers"))
    return window, not mixed


def register() -> bool:
    """Make NAME known to transformers; False where this transformers has no AttentionInterface."""
    try:
        from transformers import AttentionInterface
    except ImportError:
        return False
    AttentionInterface.register(NAME, attention)
    return True


def seq_kwargs(cu_seqlens) -> dict:
    """The forward keywords that carry a packed row's sample bounds to the attention function."""
    longest = int((cu_seqlens[1:] - cu_seqlens[:-1]).max()) if len(cu_seqlens) > 1 else 0
    return {"cu_seq_lens_q": cu_seqlens, "cu_seq_lens_k": cu_seqlens, "max_length_q": longest, "max_length_k": longest}


def probe_row(model, device):
    """A packed row of two random samples (5 and 7 tokens) for the checks before training:
    input_ids (1, 12), position_ids restarting at the second sample, and the bounds cu_seqlens."""
    import torch

    vocab = model.get_input_embeddings().weight.shape[0]
    g = torch.Generator().manual_seed(0)
    a = torch.randint(3, vocab, (1, 5), generator=g)
    b = torch.randint(3, vocab, (1, 7), generator=g)
    row = torch.cat([a, b], dim=1).to(device)
    pos = torch.cat([torch.arange(5), torch.arange(7)])[None].to(device)
    cu = torch.tensor([0, 5, 12], dtype=torch.int32, device=device)
    return row, pos, cu


def isolates(model, device) -> bool:
    """Whether a packed row of two samples gives the second the logits it gets alone (not attending
    to the first changes them by a large fraction; rounding by well under 2%)."""
    import torch

    row, pos, cu = probe_row(model, device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            packed = model(input_ids=row, position_ids=pos, **seq_kwargs(cu)).logits[0, 5:].float()
            alone = model(input_ids=row[:, 5:], position_ids=pos[:, 5:]).logits[0].float()
    finally:
        model.train(was_training)
    return same_logits(packed, alone)


def same_logits(got, want) -> bool:
    """Whether a fast path's logits are the plain path's, within rounding: off by well under 2% of their
    scale (a sample attending to another, or a dropped cap, moves them by a large fraction)."""
    return bool(((got - want).abs().max() / want.abs().max().clamp_min(1e-6)) < 2e-2)


def enable(model, device) -> bool:
    """Switch `model` (before the adapter is attached) to per-sample attention, if it takes it and it
    keeps packed samples apart; otherwise leave it as it was. Returns whether it is on."""
    before = getattr(model.config, "_attn_implementation", None)
    text = getattr(model.config, "text_config", None) or model.config
    if getattr(text, "attn_logit_softcapping", None):  # Gemma 2 caps its scores: SDPA here would not
        return False
    if not register() or not hasattr(model, "set_attn_implementation"):
        return False
    try:
        model.set_attn_implementation(NAME)
    except (ValueError, TypeError, ImportError):
        return False
    if getattr(model.config, "_attn_implementation", None) == NAME and isolates(model, device):
        return True
    if before is not None:
        model.set_attn_implementation(before)
    return False
