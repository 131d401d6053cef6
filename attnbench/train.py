"""The training loop, read top to bottom (nanoGPT style).

    summary = train(cfg)    # cfg from attnbench.config.compose([...overrides])

Builds the data and the model, trains with AdamW or Muon under warmup + cosine/WSD, evaluates
on fixed validation batches, and writes the run folder (see attnbench.results). Batches are a
pure function of (data seed, split, index), and index = step · grad_accum + micro-step, so a run
resumed from its last checkpoint replays exactly the steps it would have taken.

With ``trainer.distributed=ddp|fsdp`` under torchrun, each rank trains on its rows of every
step (attnbench.distributed: the global batch and the loss are those of one process) and rank
0 alone writes the folder; checkpoints resume at any world size (attnbench.checkpoint).
"""
from __future__ import annotations

import math
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import torch
import yaml
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from attnbench import distributed as dist
from attnbench import results
from attnbench.checkpoint import load_checkpoint, save_checkpoint
from attnbench.config import validate
from attnbench.evaluation import evaluate, fetch, scored_count_tensor, scored_sum, token_losses
from attnbench.optim import build_optimizers, lr_factor, set_lr
from attnbench.runlog import append_metrics, memory_gb, open_wandb, write_env


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


def scored_total(world: dist.World, batches: list, tokens_per_step: int, device):
    """Scored positions in this step over all ranks: known without counting for language-model
    data (every position), summed over ranks on the device for masked task data."""
    if all(mask is None for _, _, mask in batches):
        return tokens_per_step
    local = sum(scored_count_tensor(mask, y) for _, y, mask in batches)
    return dist.reduce_sum(world, local.float()).clamp(min=1)


def resolved_config(cfg, model) -> dict:
    """The run's config as written to config.yaml: model as built (matched d_ff, resolved MoE)
    plus model.layers, the expanded per-layer mixer list."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.pop("hydra", None)
    plain["model"] = {**asdict(model.cfg), "layers": list(model.layer_names)}
    return plain


# ---- the run --------------------------------------------------------------------------------
def train(cfg, on_step: Callable[[int, dict], None] | None = None) -> dict:
    """Run (or resume) one training run in cfg.trainer.out_dir; return its summary.

    Exceptions are recorded in summary.json (status failed, traceback) and re-raised; Ctrl-C
    records status interrupted. ``on_step(step, record)`` is called after every optimizer step.
    Under torchrun every rank calls this; rank 0 alone writes the folder (attnbench.distributed)."""
    validate(cfg)
    t = cfg.trainer
    if not t.out_dir:
        raise ValueError("trainer.out_dir must name the run folder (the CLI sets one from the overrides)")
    out = Path(t.out_dir)
    device, amp_dtype = pick_device(t)
    world = dist.init_world(t.distributed, device.type)
    if device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    summary: dict[str, Any] = {"status": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%S")}

    def record_end(**fields):  # rank 0 records how the run ended
        if world.is_main:
            results.write_json(out / "summary.json", {**summary, **fields})

    try:
        if world.is_main:
            (out / "checkpoints").mkdir(parents=True, exist_ok=True)
            results.write_json(out / "summary.json", summary)
        return _train(cfg, out, summary, on_step, world, device, amp_dtype)
    except KeyboardInterrupt:
        record_end(status="interrupted")
        raise
    except Exception as exc:
        record_end(status="failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
        raise
    finally:
        dist.close_world(world)


def _train(cfg, out: Path, summary: dict, on_step, world: dist.World, device: torch.device, amp_dtype) -> dict:
    t, o = cfg.trainer, cfg.optim
    main = world.is_main
    dist.check_batch(world, t.batch_size, t.grad_accum)
    if world.sharded and o.name == "muon":
        raise ValueError("optim.name=muon needs whole matrices; with trainer.distributed=fsdp use optim=adamw "
                         "(or trainer.distributed=ddp)")
    if t.threads is not None:
        torch.set_num_threads(t.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        torch.cuda.reset_peak_memory_stats(device)  # a sweep runs many runs in one process

    # Data first: the tokenizer fixes the vocabulary (rank 0 fills the tokenizer/token caches
    # before the others read them). Then the model, seeded by trainer.seed, the same on every rank.
    if not main:
        dist.barrier(world)
    data = build_data(cfg.data, t.seq_len)
    if main:
        dist.barrier(world)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    model_cfg["vocab_size"] = data.vocab_size
    from attnbench.models.sizing import build_model

    torch.manual_seed(t.seed)
    model = build_model(model_cfg).to(device)
    config = resolved_config(cfg, model)
    sizes = model.summary(t.seq_len)  # params (non-embedding, active, total), FLOPs/token, widths
    trained = dist.wrap(model, world, amp_dtype)  # DDP around it, or sharded in place (FSDP)
    optimizers = build_optimizers(model, o, device)
    step, state = load_checkpoint(out / "checkpoints", model, optimizers, config, world)
    if main:
        results.truncate_metrics(out / "metrics.jsonl", step)  # drop lines logged after that checkpoint
        (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    # Compiled, the forward and its cross-entropy are one graph: left eager, the loss over float32
    # logits took 5.6 ms of a 52.2 ms compiled step (bench.throughput, D=1024, V=32000, H200).
    losses_of = torch.compile(token_losses) if t.compile else token_losses
    logger = open_wandb(cfg, out, config) if main else None
    summary.update(sizes, layers=",".join(sizes["layers"]), flops_per_token=sizes["flops_per_token_forward"],
                   data=data.describe() if hasattr(data, "describe") else None, world_size=world.size,
                   distributed=world.mode)
    best, elapsed, last_eval = state.get("best_val_loss", math.inf), state.get("elapsed_s", 0.0), {}
    wall, session = state.get("wall_s", 0.0), time.time()  # wall time over all sessions of this run
    tokens_per_step = t.batch_size * t.seq_len * t.grad_accum  # global: the same at every world size
    pieces = dist.step_pieces(world, t.batch_size, t.grad_accum)  # this rank's rows of each step
    speeds, interval_start, interval_steps = [], time.perf_counter(), 0
    loss_sum = state.get("train_loss")
    bar = tqdm(total=t.steps, initial=step, disable=not (t.progress and main), desc=out.name, dynamic_ncols=True)
    model.train()
    start = step
    while step < t.steps:
        # ---- one optimizer step: this rank's micro-batches, clip, update -------------------
        set_lr(optimizers, o.lr * lr_factor(step, o, t.steps))
        batches = [fetch(data, "train", step * t.grad_accum + micro, t.batch_size, t.seq_len, rows, device)
                   for micro, rows in pieces]
        scored = scored_total(world, batches, tokens_per_step, device)
        totals = torch.zeros(2, device=device)  # (loss, aux) of this rank, kept on the device: no sync
        for i, (x, y, mask) in enumerate(batches):
            with dist.grad_sync(trained, world, enabled=i == len(batches) - 1):
                losses, _ = losses_of(trained, x, y, amp_dtype)
                part, aux = scored_sum(losses, mask) / scored, model.aux_loss() / len(batches)
                (part * world.size + aux).backward()  # DDP/FSDP average over ranks: x world.size sums
            totals += torch.stack([part.detach(), aux.detach() / world.size])
        grad_norm = dist.clip_grads(model, o.grad_clip or math.inf)
        for opt in optimizers:
            opt.step()
            opt.zero_grad(set_to_none=True)
        step, interval_steps = step + 1, interval_steps + 1
        bar.update(1)
        if step == start + 1 and main:  # the impls are known once a forward has run; each session rewrites it
            write_env(out, model, resumed_from=start, world_size=world.size, distributed=world.mode)
        # Read the numbers back (a host-device sync) only on steps that log, evaluate or save, so
        # the host keeps queueing kernels ahead of the GPU in between; divergence is caught there.
        synced = any(step % every == 0 for every in (t.log_every, t.eval_every, t.checkpoint_every)) or step == t.steps
        record = {"step": step, "lr": optimizers[0].param_groups[0]["lr"]}
        if synced:
            loss_sum, aux_sum = dist.reduce_sum(world, totals).tolist()
            record.update(loss=loss_sum, grad_norm=grad_norm.item())
            if aux_sum:
                record["aux_loss"] = aux_sum
        if synced and not (math.isfinite(loss_sum) and math.isfinite(record["grad_norm"])):
            bar.close()
            summary.update(status="diverged", steps_done=step, final_train_loss=loss_sum,
                           error=f"non-finite loss {loss_sum} / grad norm {record['grad_norm']} at step {step}")
            if main:
                append_metrics(out, {"step": step, "loss": loss_sum, "grad_norm": record["grad_norm"]})
                results.write_json(out / "summary.json", summary)
            return summary

        # ---- log, evaluate, checkpoint -------------------------------------------------------
        if step % t.log_every == 0 or step == t.steps:
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - interval_start
            elapsed += seconds
            speed = tokens_per_step * interval_steps / seconds
            record.update(tokens_per_s=speed, tokens_per_s_per_device=speed / world.size, mem_gb=memory_gb(device),
                          tokens=step * tokens_per_step, elapsed_s=elapsed)
            speeds.append(speed)
            bar.set_postfix(loss=f"{loss_sum:.3f}", lr=f"{record['lr']:.2e}")
        paused = time.perf_counter()  # evaluation and checkpoints do not count against tokens/s
        if step % t.eval_every == 0 or step == t.steps:
            last_eval = evaluate(trained, data, t, device, amp_dtype, world, losses_of)
            record.update(last_eval)
            best = min(best, last_eval["val_loss"])
        if main and ("tokens_per_s" in record or "val_loss" in record):
            append_metrics(out, record)
            if logger is not None:
                logger.log(record, step=step)
        if step % t.checkpoint_every == 0 or step == t.steps:
            save_checkpoint(out / "checkpoints", model, optimizers, step, config,
                            {"best_val_loss": best, "train_loss": loss_sum, "elapsed_s": elapsed,
                             "wall_s": wall + time.time() - session}, world)
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
        last_eval = evaluate(trained, data, t, device, amp_dtype, world, losses_of)
        best = min(best, last_eval["val_loss"])
    speed = _typical(speeds)
    summary.update(status="finished", steps_done=step, final_train_loss=loss_sum,
                   final_val_loss=last_eval.get("val_loss"), final_val_ppl=last_eval.get("val_ppl"),
                   final_val_bpb=last_eval.get("val_bpb"), best_val_loss=best, best_val_ppl=math.exp(min(best, 700)),
                   tokens_per_s=speed, tokens_per_s_per_device=speed / world.size if speed else None,
                   train_time_s=elapsed, wall_time_s=wall + time.time() - session,
                   finished=time.strftime("%Y-%m-%dT%H:%M:%S"),
                   **{k: v for k, v in last_eval.items() if k in ("val_acc", "val_seq_acc")})
    if main:
        results.write_json(out / "summary.json", summary)
    return summary


def _typical(speeds: list[float]) -> float | None:
    """Median tokens/s over the log intervals after the first (warm-up, compilation)."""
    speeds = speeds[1:] or speeds
    return sorted(speeds)[len(speeds) // 2] if speeds else None
