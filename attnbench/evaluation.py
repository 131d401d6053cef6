"""Losses over the scored positions, and the validation pass.

Language-model data scores every position; task data (attnbench.data.tasks) carries a mask of
the positions that count, and only those enter the loss and the accuracies.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from attnbench.distributed import World, all_sum, eval_rows


def token_losses(model, x, y, amp_dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-token cross-entropy [B, T] in fp32, logits [B, T, V])."""
    with torch.autocast(x.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        logits, _ = model(x)
    losses = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="none")
    return losses.view_as(y), logits


def scored_sum(losses: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Sum of the losses at the positions the data marks (mask True), or at all positions."""
    return losses.sum() if mask is None else (losses * mask.to(losses.dtype)).sum()


def scored_count_tensor(mask: torch.Tensor | None, y: torch.Tensor) -> torch.Tensor:
    """How many positions of a batch are scored (a 0-dim tensor on the batch's device)."""
    return torch.tensor(y.numel(), device=y.device) if mask is None else mask.sum()


def fetch(data, split: str, index: int, batch_size: int, seq_len: int, rows: slice, device) -> tuple:
    """(x, y, mask | None) of batch ``index``, only ``rows`` of it, on ``device``."""
    return tuple(t[rows].to(device, non_blocking=True) if t is not None else None
                 for t in data.batch(split, index, batch_size, seq_len))


@torch.no_grad()
def evaluate(model, data, trainer, device, amp_dtype, world: World = World(), losses_of=token_losses) -> dict:
    """Loss, perplexity and bits per byte over the fixed val batches 0..eval_batches-1; for masked
    (task) data also per-position accuracy and whole-sequence accuracy over the masked positions.
    Under data parallelism each rank scores its rows of every batch and the sums are reduced.
    ``losses_of``: token_losses, or the training run's compiled token_losses."""
    model.eval()
    sums = [0.0] * 5  # loss, scored tokens, correct tokens, whole sequences right, sequences scored
    rows = eval_rows(world, trainer.batch_size)
    for index in range(trainer.eval_batches):
        x, y, mask = fetch(data, "val", index, trainer.batch_size, trainer.seq_len, rows, device)
        losses, logits = losses_of(model, x, y, amp_dtype)
        weight = torch.ones_like(losses) if mask is None else mask.to(losses.dtype)
        sums[0] += (losses * weight).sum().item()
        sums[1] += weight.sum().item()
        if mask is not None:
            right, scored = logits.argmax(-1) == y, mask.bool()  # [B, T]
            has_target = scored.any(-1)  # [B]
            sums[2] += (right & scored).sum().item()
            sums[3] += ((right | ~scored).all(-1) & has_target).sum().item()  # every scored position right
            sums[4] += has_target.sum().item()
    model.train()
    loss_sum, tokens, correct, seq_ok, seqs = all_sum(world, sums, device)
    val_loss = loss_sum / max(tokens, 1)
    out = {"val_loss": val_loss, "val_ppl": math.exp(min(val_loss, 700))}
    bytes_per_token = data.bytes_per_token("val")
    out["val_bpb"] = val_loss / math.log(2) / bytes_per_token if bytes_per_token else None
    if seqs:
        out.update(val_acc=correct / tokens, val_seq_acc=seq_ok / seqs)
    return out
