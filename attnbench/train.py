"""The training loop, read top to bottom (nanoGPT style).

    summary = train(cfg)    # cfg from attnbench.config.compose([...overrides])

Builds the data and the model, trains with AdamW or Muon under warmup + cosine/WSD, evaluates
on fixed validation batches, and writes the run folder (see attnbench.results). Batches are a
pure function of (data seed, split, index), and index = step · grad_accum + micro-step, so a run
resumed from its last checkpoint replays exactly the steps it would have taken.
"""
from __future__ import annotations

import json
import math
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
import yaml
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from attnbench import results
from attnbench.checkpoint import load_checkpoint, save_checkpoint
from attnbench.config import validate
from attnbench.env import environment
from attnbench.optim import build_optimizers, lr_factor, set_lr


# ---- setup ----------------------------------------------------------------------------------
def pick_device(trainer) -> tuple[torch.device, torch.dtype | None]:
    """(device, autocast dtype or None). auto precision: bf16 autocast on CUDA, fp32 on CPU."""
    if trainer.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("trainer.device='cuda' but torch sees no CUDA device; use trainer.device=auto or cpu")
    use_cuda = trainer.device == "cuda" or (trainer.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if use_cuda else "cpu")
    bf16 = trainer.precision == "bf16" or (trainer.precision == "auto" and use_cuda)
    return device, torch.bfloat16 if bf16 else None


def build_data(data, seq_len: int):
    """A Dataset: batch(split, index, batch_size, seq_len) -> (x, y, mask | None)."""
    if data.task is not None:
        from attnbench.data.tasks import make_task

        return make_task(data.task, seq_len=seq_len, vocab_size=data.task_vocab_size, seed=data.seed,
                         **OmegaConf.to_container(data.task_params, resolve=True))
    from attnbench.data import make_dataset

    return make_dataset(
        source=data.source, paths=list(data.paths), bin_dtype=data.bin_dtype, hf_name=data.hf_name,
        hf_split=data.hf_split, hf_text_field=data.hf_text_field, tokenizer=data.tokenizer,
        bpe_vocab_size=data.bpe_vocab_size, val_fraction=data.val_fraction, max_bytes=data.max_bytes,
        cache_dir=data.cache_dir, seed=data.seed)


def resolved_config(cfg, model) -> dict:
    """The run's config as written to config.yaml: model as built (matched d_ff, resolved MoE)
    plus model.layers, the expanded per-layer mixer list."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.pop("hydra", None)
    plain["model"] = {**asdict(model.cfg), "layers": list(model.layer_names)}
    return plain


# ---- loss and evaluation ----------------------------------------------------------------------
def token_losses(model, x, y, amp_dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-token cross-entropy [B, T] in fp32, logits [B, T, V])."""
    with torch.autocast(x.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        logits, _ = model(x)
    losses = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="none")
    return losses.view_as(y), logits


def masked_mean(losses: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over the positions the data marks (mask True), or over all positions."""
    if mask is None:
        return losses.mean()
    mask = mask.to(losses.dtype)
    return (losses * mask).sum() / mask.sum().clamp(min=1)


@torch.no_grad()
def evaluate(model, data, trainer, device, amp_dtype) -> dict:
    """Loss, perplexity and bits per byte over the fixed val batches 0..eval_batches-1; for masked
    (task) data also per-position accuracy and whole-sequence accuracy over the masked positions."""
    model.eval()
    loss_sum = tokens = correct = seq_ok = seqs = 0.0
    for index in range(trainer.eval_batches):
        x, y, mask = (t.to(device) if t is not None else None
                      for t in data.batch("val", index, trainer.batch_size, trainer.seq_len))
        losses, logits = token_losses(model, x, y, amp_dtype)
        weight = torch.ones_like(losses) if mask is None else mask.to(losses.dtype)
        loss_sum += (losses * weight).sum().item()
        tokens += weight.sum().item()
        if mask is not None:
            right, scored = logits.argmax(-1) == y, mask.bool()  # [B, T]
            correct += (right & scored).sum().item()
            has_target = scored.any(-1)  # [B]
            seq_ok += ((right | ~scored).all(-1) & has_target).sum().item()  # every scored position right
            seqs += has_target.sum().item()
    model.train()
    val_loss = loss_sum / max(tokens, 1)
    out = {"val_loss": val_loss, "val_ppl": math.exp(min(val_loss, 700))}
    bytes_per_token = data.bytes_per_token("val")
    out["val_bpb"] = val_loss / math.log(2) / bytes_per_token if bytes_per_token else None
    if seqs:
        out.update(val_acc=correct / tokens, val_seq_acc=seq_ok / seqs)
    return out


def memory_gb(device: torch.device) -> float:
    """Peak allocated CUDA memory, or the process's resident set size on CPU, in GiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * 4096 / 2**30
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def write_env(out: Path, model, resumed_from: int) -> None:
    """env.json: the environment record plus what ran in each layer ('<i>:<mixer>:<impl>'), and
    the step this session started from (0 unless resumed)."""
    env = environment()
    env["impls"] = [f"{i}:{name}:{impl}" for i, (name, impl) in enumerate(zip(model.layer_names, model.impls_ran()))]
    env["resumed_from"] = resumed_from
    results.write_json(out / "env.json", env)


def append_metrics(out: Path, record: dict) -> None:
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


def open_wandb(cfg, out: Path, config: dict):
    """wandb run or None; offline unless WANDB_API_KEY is set. Imported only when asked for."""
    if not cfg.trainer.wandb:
        return None
    import os

    try:
        import wandb
    except ImportError as exc:
        raise ImportError("trainer.wandb=true needs wandb: pip install 'attnbench[wandb]'") from exc
    mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
    return wandb.init(project=cfg.trainer.wandb_project, name=out.name, dir=str(out), config=config,
                      mode=mode, resume="allow", id=out.name.replace("=", "-").replace(",", "_")[:64])


# ---- the run --------------------------------------------------------------------------------
def train(cfg, on_step: Callable[[int, dict], None] | None = None) -> dict:
    """Run (or resume) one training run in cfg.trainer.out_dir; return its summary.

    Exceptions are recorded in summary.json (status failed, traceback) and re-raised; Ctrl-C
    records status interrupted. ``on_step(step, record)`` is called after every optimizer step."""
    validate(cfg)
    t = cfg.trainer
    if not t.out_dir:
        raise ValueError("trainer.out_dir must name the run folder (the CLI sets one from the overrides)")
    out = Path(t.out_dir)
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"status": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    results.write_json(out / "summary.json", summary)
    try:
        return _train(cfg, out, summary, on_step)
    except KeyboardInterrupt:
        results.write_json(out / "summary.json", {**summary, "status": "interrupted"})
        raise
    except Exception as exc:
        results.write_json(out / "summary.json", {**summary, "status": "failed",
                                                   "error": f"{type(exc).__name__}: {exc}",
                                                   "traceback": traceback.format_exc()})
        raise


def _train(cfg, out: Path, summary: dict, on_step) -> dict:
    t, o = cfg.trainer, cfg.optim
    device, amp_dtype = pick_device(t)
    if t.threads is not None:
        torch.set_num_threads(t.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        torch.cuda.reset_peak_memory_stats(device)  # a sweep runs many runs in one process

    # Data first: the tokenizer fixes the vocabulary. Then the model, seeded by trainer.seed.
    data = build_data(cfg.data, t.seq_len)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    model_cfg["vocab_size"] = data.vocab_size
    from attnbench.models.sizing import build_model

    torch.manual_seed(t.seed)
    model = build_model(model_cfg).to(device)
    config = resolved_config(cfg, model)
    optimizers = build_optimizers(model, o, device)
    step, state = load_checkpoint(out / "checkpoints" / "last.pt", model, optimizers, config)
    results.truncate_metrics(out / "metrics.jsonl", step)  # drop lines logged after that checkpoint
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    forward = torch.compile(model) if t.compile else model
    logger = open_wandb(cfg, out, config)
    sizes = model.summary(t.seq_len)  # params (non-embedding, active, total), FLOPs/token, widths
    summary.update(sizes, layers=",".join(sizes["layers"]), flops_per_token=sizes["flops_per_token_forward"],
                   data=data.describe() if hasattr(data, "describe") else None)
    best, elapsed, last_eval = state.get("best_val_loss", math.inf), state.get("elapsed_s", 0.0), {}
    wall, session = state.get("wall_s", 0.0), time.time()  # wall time over all sessions of this run
    tokens_per_step = t.batch_size * t.seq_len * t.grad_accum
    speeds, interval_start, interval_steps = [], time.perf_counter(), 0
    loss_sum = state.get("train_loss")
    bar = tqdm(total=t.steps, initial=step, disable=not t.progress, desc=out.name, dynamic_ncols=True)
    model.train()
    start = step
    while step < t.steps:
        # ---- one optimizer step: grad_accum micro-batches, clip, update --------------------
        set_lr(optimizers, o.lr * lr_factor(step, o, t.steps))
        loss_sum = aux_sum = 0.0
        for micro in range(t.grad_accum):
            x, y, mask = (v.to(device, non_blocking=True) if v is not None else None
                          for v in data.batch("train", step * t.grad_accum + micro, t.batch_size, t.seq_len))
            losses, _ = token_losses(forward, x, y, amp_dtype)
            loss, aux = masked_mean(losses, mask), model.aux_loss()
            ((loss + aux) / t.grad_accum).backward()
            loss_sum, aux_sum = loss_sum + loss.item() / t.grad_accum, aux_sum + float(aux) / t.grad_accum
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip or math.inf).item()
        for opt in optimizers:
            opt.step()
            opt.zero_grad(set_to_none=True)
        step, interval_steps = step + 1, interval_steps + 1
        bar.update(1)
        if step == start + 1:  # the impls are known once a forward has run; each session rewrites it
            write_env(out, model, resumed_from=start)
        if not math.isfinite(loss_sum) or not math.isfinite(grad_norm):
            bar.close()
            append_metrics(out, {"step": step, "loss": loss_sum, "grad_norm": grad_norm})
            summary.update(status="diverged", steps_done=step, final_train_loss=loss_sum,
                           error=f"non-finite loss {loss_sum} / grad norm {grad_norm} at step {step}")
            results.write_json(out / "summary.json", summary)
            return summary

        # ---- log, evaluate, checkpoint -------------------------------------------------------
        record = {"step": step, "loss": loss_sum, "lr": optimizers[0].param_groups[0]["lr"], "grad_norm": grad_norm}
        if aux_sum:
            record["aux_loss"] = aux_sum
        if step % t.log_every == 0 or step == t.steps:
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - interval_start
            elapsed += seconds
            record.update(tokens_per_s=tokens_per_step * interval_steps / seconds, mem_gb=memory_gb(device),
                          tokens=step * tokens_per_step, elapsed_s=elapsed)
            speeds.append(record["tokens_per_s"])
            bar.set_postfix(loss=f"{loss_sum:.3f}", lr=f"{record['lr']:.2e}")
        paused = time.perf_counter()  # evaluation and checkpoints do not count against tokens/s
        if step % t.eval_every == 0 or step == t.steps:
            last_eval = evaluate(forward, data, t, device, amp_dtype)
            record.update(last_eval)
            best = min(best, last_eval["val_loss"])
        if "tokens_per_s" in record or "val_loss" in record:
            append_metrics(out, record)
            if logger is not None:
                logger.log(record, step=step)
        if step % t.checkpoint_every == 0 or step == t.steps:
            save_checkpoint(out / "checkpoints" / "last.pt", model, optimizers, step, config,
                            {"best_val_loss": best, "train_loss": loss_sum, "elapsed_s": elapsed,
                             "wall_s": wall + time.time() - session})
        if "tokens_per_s" in record:
            interval_start, interval_steps = time.perf_counter(), 0
        else:
            interval_start += time.perf_counter() - paused
        if on_step is not None:
            on_step(step, record)
    bar.close()
    if logger is not None:
        logger.finish()
    if not last_eval:  # resumed a run that had already finished: evaluate its final weights
        last_eval = evaluate(forward, data, t, device, amp_dtype)
        best = min(best, last_eval["val_loss"])
    summary.update(status="finished", steps_done=step, final_train_loss=loss_sum,
                   final_val_loss=last_eval.get("val_loss"), final_val_ppl=last_eval.get("val_ppl"),
                   final_val_bpb=last_eval.get("val_bpb"), best_val_loss=best, best_val_ppl=math.exp(min(best, 700)),
                   tokens_per_s=_typical(speeds), train_time_s=elapsed,
                   wall_time_s=wall + time.time() - session,
                   finished=time.strftime("%Y-%m-%dT%H:%M:%S"),
                   **{k: v for k, v in last_eval.items() if k in ("val_acc", "val_seq_acc")})
    results.write_json(out / "summary.json", summary)
    return summary


def _typical(speeds: list[float]) -> float | None:
    """Median tokens/s over the log intervals after the first (warm-up, compilation)."""
    speeds = speeds[1:] or speeds
    return sorted(speeds)[len(speeds) // 2] if speeds else None
