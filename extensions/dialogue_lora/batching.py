"""Encoded samples -> model inputs: packing (no attention between the samples of a row), padding, batch order, the loss.

Packing (the default for LoRA): the samples of a batch are laid end to end in as few rows as fit
`capacity` tokens, so no compute goes to padding. Each sample keeps its own positions (0, 1, 2, ...)
and a 4D block-diagonal causal boolean mask (rows, 1, L, L) stops it from attending to its neighbours:
with sdpa/eager attention in transformers, reset position_ids alone do not isolate packed samples.
With flash-attention-2 the mask is left out and the reset position_ids select its varlen kernel.
On the CPU (varlen.py) a batch is a single row and attention is cut at the samples' bounds
(`cu_seqlens`): no padding and no mask (collate_flat).

Padding (prompt tuning, or `packing=False`): one sample a row, padded on the right to the longest in
the batch (never to cutoff_len), with a 2D mask.

Targets are shifted inside each sample (token i learns token i+1 of the same sample), so the last token
of one packed sample never learns the first of the next. The loss is the mean over target tokens.
"""
from __future__ import annotations

import random
from array import array
from typing import Sequence

from . import last_layer
from .encoding import IGNORE_INDEX
from .varlen import band_mask, seq_kwargs


def as_tensor(ids):
    """A sample's ids or labels (a list, or encode_records' 32-bit array, read in place) as an int64 tensor."""
    import torch

    if isinstance(ids, array):
        return torch.frombuffer(ids, dtype=torch.int32).long()
    return torch.tensor(ids, dtype=torch.long)


def shifted_targets(labels):
    """What each position learns to predict, as an int64 tensor: the next label of the same sample (the last
    learns nothing)."""
    import torch

    t = as_tensor(labels)
    return torch.cat([t[1:], t.new_full((1,), IGNORE_INDEX)])


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Sample indices in batches for one epoch: a shuffle fixed by (seed, epoch), so a resumed run repeats it."""
    order = list(range(n))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def pack_rows(lengths: Sequence[int], capacity: int | None) -> list[list[int]]:
    """Positions of samples grouped into rows of at most `capacity` tokens (None: all in one row).

    First-fit decreasing: the longest samples are placed first, each in the first row with room, so a
    batch needs few rows and little padding. Every sample must fit in `capacity` on its own.
    """
    if capacity is None:
        return [list(range(len(lengths)))]
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        n = lengths[i]
        for r, free in enumerate(room):
            if n <= free:
                rows[r].append(i)
                room[r] -= n
                break
        else:
            rows.append([i])
            room.append(capacity - n)
    return rows


def block_causal_mask(segment_ids, window: int | None = None, additive=None):
    """(rows, 1, L, L) bool mask: True where query i may attend key j (same sample and j <= i, and
    i - j < window for a model whose every layer slides: the mask replaces the one it would build).
    With `additive` (a float dtype), 0 there and the dtype's lowest elsewhere: eager attention adds the
    mask to its scores, and a bool one would add 1 and 0, masking nothing."""
    import torch

    L = segment_ids.shape[1]
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    causal = band_mask(L, window, segment_ids.device) if window else torch.ones(
        L, L, dtype=torch.bool, device=segment_ids.device).tril()
    allowed = (same & causal)[:, None, :, :]
    if additive is None:
        return allowed
    return torch.zeros(allowed.shape, dtype=additive).masked_fill_(~allowed, torch.finfo(additive).min)


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def collate_packed(
    samples: Sequence[dict], pad_id: int, capacity: int | None, with_mask: bool = True, multiple: int = 1,
    window: int | None = None, additive=None,
) -> dict:
    """Tensors for one packed batch: input_ids, position_ids, targets (rows, L), attention_mask (4D or None).

    Padding positions (at the end of shorter rows) get a segment of their own, so they attend only to
    themselves (no fully masked rows, no NaN), and learn nothing. L is rounded up to `multiple`: oneDNN's
    bf16 kernels are compiled once per matrix shape (tens of ms), so few distinct lengths keep them cached.
    """
    import torch

    rows = pack_rows([len(s["input_ids"]) for s in samples], capacity)
    L = round_up(max(sum(len(samples[i]["input_ids"]) for i in row) for row in rows), multiple)
    R = len(rows)
    input_ids = torch.full((R, L), pad_id, dtype=torch.long)
    targets = torch.full((R, L), IGNORE_INDEX, dtype=torch.long)
    position_ids = torch.zeros((R, L), dtype=torch.long)
    # padding: distinct negative segment ids, one per position
    segment = -1 - torch.arange(L, dtype=torch.long).repeat(R, 1)
    for r, row in enumerate(rows):
        at = 0
        for k, i in enumerate(row):
            ids = samples[i]["input_ids"]
            n = len(ids)
            input_ids[r, at : at + n] = as_tensor(ids)
            targets[r, at : at + n] = shifted_targets(samples[i]["labels"])
            position_ids[r, at : at + n] = torch.arange(n)
            segment[r, at : at + n] = k
            at += n
    batch = {"input_ids": input_ids, "position_ids": position_ids, "targets": targets}
    batch["attention_mask"] = block_causal_mask(segment, window, additive) if with_mask else None
    batch["n_tokens"] = sum(len(s["input_ids"]) for s in samples)
    return batch


def collate_flat(samples: Sequence[dict], pad_id: int, multiple: int = 1) -> dict:
    """Tensors for one batch as a single row, the samples end to end: input_ids, position_ids, targets
    (1, L), cu_seqlens (the sample bounds, for varlen attention) and no mask.

    Padding only rounds L up to `multiple` (see collate_packed); it forms one more segment of its own.
    """
    import torch

    lengths = [len(s["input_ids"]) for s in samples]
    n = sum(lengths)
    n_pad = round_up(n, multiple) - n
    if n_pad:
        lengths.append(n_pad)
    ids = [as_tensor(s["input_ids"]) for s in samples]
    targets = [shifted_targets(s["labels"]) for s in samples]
    if n_pad:
        ids.append(torch.full((n_pad,), pad_id, dtype=torch.long))
        targets.append(torch.full((n_pad,), IGNORE_INDEX, dtype=torch.long))
    bounds = torch.tensor([0, *lengths], dtype=torch.int32).cumsum(0, dtype=torch.int32)
    return {
        "input_ids": torch.cat(ids)[None],
        "position_ids": torch.cat([torch.arange(k) for k in lengths])[None],
        "targets": torch.cat(targets)[None],
        "attention_mask": None,
        "cu_seqlens": bounds,
        "n_tokens": n,
    }


def collate_padded(samples: Sequence[dict], pad_id: int, multiple: int = 1) -> dict:
    """Tensors for one batch, a sample a row, right-padded to the longest (rounded up to `multiple`):
    input_ids, targets, 2D mask."""
    import torch

    L = round_up(max(len(s["input_ids"]) for s in samples), multiple)
    R = len(samples)
    input_ids = torch.full((R, L), pad_id, dtype=torch.long)
    targets = torch.full((R, L), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((R, L), dtype=torch.long)
    for r, s in enumerate(samples):
        n = len(s["input_ids"])
        input_ids[r, :n] = as_tensor(s["input_ids"])
        targets[r, :n] = shifted_targets(s["labels"])
        mask[r, :n] = 1
    return {
        "input_ids": input_ids,
        "position_ids": None,
        "targets": targets,
        "attention_mask": mask,
        "n_tokens": sum(len(s["input_ids"]) for s in samples),
    }


def collate(
    samples: Sequence[dict],
    pad_id: int,
    packing: bool,
    capacity: int | None,
    with_mask: bool = True,
    multiple: int = 1,
    flat: bool = False,
    window: int | None = None,
    additive=None,
) -> dict:
    if packing and flat:
        return collate_flat(samples, pad_id, multiple)
    if packing:
        return collate_packed(samples, pad_id, capacity, with_mask, multiple, window, additive)
    return collate_padded(samples, pad_id, multiple)


def accepts_logits_to_keep(model) -> bool:
    """Whether the model's forward takes `logits_to_keep` (older transformers' models swallow it in **kwargs,
    or refuse it)."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return "logits_to_keep" in inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return False


def loss_sum(model, batch: dict, device, *, keep_logits: bool | None = None, n_virtual: int = 0, multiple: int = 1):
    """(sum of token losses over the batch's targets, number of targets), as a tensor and an int.

    With `keep_logits` (by default where the model's forward takes it) only the positions that have a target
    get logits: transformers' `logits_to_keep`
    (an index tensor) keeps the columns where any row has a target, and a pre-hook on the output head
    passes it just the target positions, so no vocabulary projection goes to context tokens or to other
    rows' columns (half or more of those columns). Whatever the model does to its head's output (soft
    capping, scaling) still applies, element by element. The number of positions is rounded up to
    `multiple` (see collate_packed). `n_virtual` is the number of prompt-tuning tokens PEFT puts in
    front of each row (their logits are dropped).
    """
    import torch
    import torch.nn.functional as F

    targets = batch["targets"].to(device)
    kwargs = {"input_ids": batch["input_ids"].to(device)}
    if batch.get("attention_mask") is not None:
        kwargs["attention_mask"] = batch["attention_mask"].to(device)
    if batch.get("position_ids") is not None:
        kwargs["position_ids"] = batch["position_ids"].to(device)
    if batch.get("cu_seqlens") is not None:
        kwargs.update(seq_kwargs(batch["cu_seqlens"].to(device)))
    has_target = targets != IGNORE_INDEX
    n = int(has_target.sum())
    inner = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    if keep_logits is None:
        keep_logits = accepts_logits_to_keep(inner)
    head = inner.get_output_embeddings() if keep_logits and not n_virtual else None
    if head is not None:
        cols = has_target.any(dim=0).nonzero().flatten()
        at = has_target[:, cols].flatten().nonzero().flatten()
        extra = round_up(len(at), multiple) - len(at)
        targets = targets[:, cols].flatten()[at]
        if extra:  # repeat the first position, its copies learn nothing
            at = torch.cat([at, at[:1].expand(extra)])
            targets = torch.cat([targets, targets.new_full((extra,), IGNORE_INDEX)])
        at = at.to(device)

        if batch.get("cu_seqlens") is not None and len(at) and last_layer.installed(inner):
            # a single row: its last layer runs only at the scored positions (last_layer.py)
            with last_layer.scored_only(inner, cols.to(device)[at], kwargs["cu_seq_lens_q"]):
                logits = model(**kwargs, logits_to_keep=0).logits
        else:

            def only_targets(_module, args):
                hidden = args[0]
                return (hidden.reshape(-1, hidden.shape[-1])[at][None],) + tuple(args[1:])

            hook = head.register_forward_pre_hook(only_targets)
            try:
                logits = model(**kwargs, logits_to_keep=cols).logits
            finally:
                hook.remove()
    else:
        logits = model(**kwargs).logits
        if n_virtual:
            logits = logits[:, n_virtual:, :]
    loss = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    return loss, n
