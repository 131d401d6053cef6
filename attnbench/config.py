"""Structured configs for a training run, and Hydra composition of configs/.

One run = ``TrainConfig`` with the groups ``model`` (attnbench.models.config.ModelConfig),
``data``, ``optim``, ``trainer`` and ``launcher``. OmegaConf enforces the types when Hydra
merges overrides (``trainer.steps=abc`` fails with ``full_key: trainer.steps``); ``validate``
checks enums and ranges afterwards, naming the field. Checks cannot live in ``__post_init__``:
Hydra builds the dataclass with its defaults first and merges the overrides later.

    cfg = compose(["preset=tiny", "model.ratio='3:1'"])   # DictConfig, validated
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.errors import ConfigCompositionException
from omegaconf import II, DictConfig, OmegaConf

from attnbench.models.config import ModelConfig, as_model_config

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "configs"
EXPERIMENT_DIR = REPO_ROOT / "experiments"

DATA_SOURCES = ("embedded", "shakespeare", "stdlib", "text", "bin", "hf")
TASKS = ("mqar", "palindrome", "stack", "dyck", "passkey")
TOKENIZERS = ("byte", "bpe")
OPTIMIZERS = ("adamw", "muon")
SCHEDULES = ("cosine", "wsd", "constant")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "bf16", "fp32")
DISTRIBUTED = ("none", "ddp", "fsdp")
LAUNCHERS = ("local", "joblib", "slurm", "submitit_local")  # configs/launcher/*.yaml


@dataclass
class DataConfig:
    """A corpus (``source`` + make_dataset kwargs) or, when ``task`` is set, a synthetic task."""

    source: str = "embedded"
    paths: list[str] = field(default_factory=list)  # text: files or globs; bin: .bin files
    bin_dtype: str = "uint16"
    hf_name: Optional[str] = None
    hf_split: str = "train"
    hf_text_field: str = "text"
    tokenizer: str = "byte"
    bpe_vocab_size: int = 4096
    val_fraction: float = 0.05
    max_bytes: Optional[int] = None
    cache_dir: Optional[str] = None  # None: $ATTNBENCH_CACHE or ~/.cache/attnbench
    seed: int = II("trainer.seed")  # training windows / task samples; follows trainer.seed unless set
    task: Optional[str] = None  # set by the task/ group; overrides source
    task_params: dict[str, Any] = field(default_factory=dict)  # make_task(**params)
    task_vocab_size: Optional[int] = None  # None: the task's own default


@dataclass
class OptimConfig:
    name: str = "adamw"  # muon: torch.optim.Muon on 2-D hidden matrices, AdamW on the rest
    lr: float = 3e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    weight_decay: float = 0.1
    momentum: float = 0.95  # Muon only
    warmup_steps: int = 100
    schedule: str = "cosine"
    min_lr_ratio: float = 0.1  # final lr = lr * min_lr_ratio (cosine and wsd)
    decay_fraction: float = 0.2  # wsd: the last fraction of steps decays linearly
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping


@dataclass
class TrainerConfig:
    steps: int = 1000  # optimizer steps
    batch_size: int = 16  # sequences per micro-batch
    seq_len: int = 256
    grad_accum: int = 1  # micro-batches per optimizer step
    eval_every: int = 200
    eval_batches: int = 8  # fixed validation batches 0..eval_batches-1
    log_every: int = 10
    checkpoint_every: int = 500
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    compile: bool = False
    distributed: str = "none"  # none | ddp | fsdp (launch with torchrun; attnbench.distributed)
    threads: Optional[int] = None  # CPU threads (torch.set_num_threads); None: torch's default
    wandb: bool = False
    wandb_project: str = "attnbench"
    progress: bool = True  # tqdm bar
    out_dir: Optional[str] = None  # None: runs/train/<overrides>


@dataclass
class LauncherConfig:
    """How attnbench-sweep runs the points (attnbench.launch). The scheduler options feed Hydra's
    launcher plugin (hydra.launcher) by interpolation in configs/launcher/*.yaml. None means unset,
    so an option given to a launcher it does not apply to fails instead of being ignored."""

    name: str = "local"  # local: one after another in this process; see LAUNCHERS
    root: str = "runs"  # sweeps write <root>/<experiment>/<preset>/<point>/
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # swept as trainer.seed
    n_jobs: Optional[int] = None  # joblib: runs at a time (None: runs_per_gpu per GPU, else one per core)
    runs_per_gpu: Optional[int] = None  # joblib: runs sharing one GPU (None: 1); small models leave a GPU idle
    partition: Optional[str] = None  # slurm
    account: Optional[str] = None  # slurm
    qos: Optional[str] = None  # slurm
    gpus_per_node: Optional[int] = None  # slurm, submitit_local
    cpus_per_task: Optional[int] = None  # slurm, submitit_local
    mem_gb: Optional[int] = None  # slurm, submitit_local
    tasks_per_node: Optional[int] = None  # slurm, submitit_local
    nodes: Optional[int] = None  # slurm, submitit_local
    timeout_min: Optional[int] = None  # slurm, submitit_local: the job's time limit
    max_num_timeout: Optional[int] = None  # slurm: resubmissions after a time-out (the run resumes)
    additional_parameters: Optional[dict[str, Any]] = None  # slurm: more sbatch options
    setup: Optional[list[str]] = None  # slurm: shell lines run before the job (module load ...)


SUBMITIT = ("slurm", "submitit_local")
LAUNCHER_OPTIONS = {  # option -> the launchers it applies to
    "n_jobs": ("joblib",), "runs_per_gpu": ("joblib",), "partition": ("slurm",), "account": ("slurm",), "qos": ("slurm",),
    "gpus_per_node": SUBMITIT, "cpus_per_task": SUBMITIT, "mem_gb": SUBMITIT, "tasks_per_node": SUBMITIT,
    "nodes": SUBMITIT, "timeout_min": SUBMITIT, "max_num_timeout": ("slurm",),
    "additional_parameters": ("slurm",), "setup": ("slurm",),
}
PLUGIN_HINT = ("the joblib, slurm and submitit_local launchers need Hydra's launcher plugins: "
               "pip install 'attnbench[cluster]'")


def check_launcher(la) -> None:
    """launcher.name is known, and each scheduler option that is set belongs to that launcher."""
    _one_of("launcher.name", la.name, LAUNCHERS)
    _check("launcher.seeds", len(la.seeds) > 0, "a non-empty list of ints", list(la.seeds))
    for key, launchers in LAUNCHER_OPTIONS.items():
        value = getattr(la, key)
        if value is not None and la.name not in launchers:
            raise ValueError(f"launcher.{key} applies to launcher={' or launcher='.join(launchers)} only; "
                             f"got launcher.{key}={value!r} with launcher.name={la.name!r}")
    if la.n_jobs is not None:
        _check("launcher.n_jobs", la.n_jobs > 0 or la.n_jobs == -1, "None, -1 (all cores) or a positive integer",
               la.n_jobs)
    for key in ("gpus_per_node", "cpus_per_task", "mem_gb", "max_num_timeout"):
        value = getattr(la, key)
        _check(f"launcher.{key}", value is None or value >= 0, "None or an integer >= 0", value)
    for key in ("runs_per_gpu", "tasks_per_node", "nodes", "timeout_min"):
        value = getattr(la, key)
        _check(f"launcher.{key}", value is None or value > 0, "None or a positive integer", value)


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    launcher: LauncherConfig = field(default_factory=LauncherConfig)
    preset: str = "none"  # set by configs/preset/*.yaml; names the results folder
    experiment: Optional[str] = None  # set by experiments/*.yaml


ConfigStore.instance().store(name="train_schema", node=TrainConfig)


def params_of(pattern: str, *, _root_: DictConfig) -> int:
    """Resolver ``${params_of:M}``: the non-embedding parameter count of this config's model with
    the layer pattern ``pattern`` at its own d_ff (not matched). Experiments set
    ``model.match_params: ${params_of:M}`` to size every architecture like the all-MLA model
    at whatever width the preset chose."""
    from attnbench.models.sizing import count_params

    root = OmegaConf.to_container(_root_, resolve=False)
    root["model"].update(pattern=pattern, ratio=None, match_params=None)
    model = OmegaConf.to_container(OmegaConf.create(root).model, resolve=True)
    return count_params(as_model_config(model))


OmegaConf.register_new_resolver("params_of", params_of, replace=True)


def _one_of(name: str, value: Any, legal: tuple) -> None:
    if value not in legal:
        raise ValueError(f"{name} must be one of {', '.join(map(str, legal))}; got {value!r}")


def _check(name: str, ok: bool, rule: str, value: Any) -> None:
    if not ok:
        raise ValueError(f"{name} must be {rule}; got {value!r}")


def validate(cfg: DictConfig | TrainConfig) -> None:
    """Raise ValueError naming the first bad field and its legal values or range."""
    from attnbench.models.pattern import expand_layers

    d, o, t, la = cfg.data, cfg.optim, cfg.trainer, cfg.launcher
    _one_of("data.source", d.source, DATA_SOURCES)
    _one_of("data.tokenizer", d.tokenizer, TOKENIZERS)
    if d.task is not None:
        _one_of("data.task", d.task, TASKS)
    _check("data.val_fraction", 0 < d.val_fraction < 1, "in (0, 1)", d.val_fraction)
    _one_of("optim.name", o.name, OPTIMIZERS)
    _one_of("optim.schedule", o.schedule, SCHEDULES)
    _check("optim.lr", o.lr > 0 and math.isfinite(o.lr), "a finite number > 0", o.lr)
    betas_ok = len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas)
    _check("optim.betas", betas_ok, "two numbers in [0, 1)", list(o.betas))
    _check("optim.weight_decay", o.weight_decay >= 0, ">= 0", o.weight_decay)
    _check("optim.warmup_steps", o.warmup_steps >= 0, ">= 0", o.warmup_steps)
    _check("optim.min_lr_ratio", 0 <= o.min_lr_ratio <= 1, "in [0, 1]", o.min_lr_ratio)
    _check("optim.decay_fraction", 0 < o.decay_fraction <= 1, "in (0, 1]", o.decay_fraction)
    _check("optim.grad_clip", o.grad_clip >= 0, ">= 0 (0 disables clipping)", o.grad_clip)
    for name in ("steps", "batch_size", "seq_len", "grad_accum", "eval_every", "eval_batches", "log_every",
                 "checkpoint_every"):
        value = getattr(t, name)
        _check(f"trainer.{name}", value > 0, "a positive integer", value)
    _one_of("trainer.device", t.device, DEVICES)
    _one_of("trainer.precision", t.precision, PRECISIONS)
    _one_of("trainer.distributed", t.distributed, DISTRIBUTED)
    if t.threads is not None:
        _check("trainer.threads", t.threads > 0, "None or a positive integer", t.threads)
    check_launcher(la)
    expand_layers(cfg.model)  # model.* checks: pattern/ratio, mixers, widths


def compose(overrides: list[str] | tuple[str, ...] = (), config_name: str = "train",
            hydra_config: bool = False, check: bool = True, search_root: Path | str = REPO_ROOT) -> DictConfig:
    """Compose configs/<config_name>.yaml with Hydra overrides. ``search_root`` is on the search
    path, so its experiments/ folder is the group ``experiments`` (``+experiments=ratio_ablation``)."""
    if not CONFIG_DIR.is_dir():
        raise FileNotFoundError(f"config directory {CONFIG_DIR} not found: attnbench must run from a source checkout "
                                "(pip install -e .)")
    search = f"hydra.searchpath=['file://{Path(search_root).resolve()}']"
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        try:
            cfg = hydra_compose(config_name, overrides=[search, *overrides], return_hydra_config=hydra_config)
        except ConfigCompositionException as exc:  # say why: Hydra keeps OmegaConf's reason in __cause__
            cause = f": {exc.__cause__}".replace("\n", " ") if exc.__cause__ is not None else ""
            hint = f"{PLUGIN_HINT}. " if "hydra/launcher" in f"{exc}{cause}" else ""  # a plugin not installed
            raise ValueError(f"{hint}{exc}{cause}") from exc
    if check:
        validate(cfg)
    return cfg


def to_yaml(cfg: DictConfig) -> str:
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.pop("hydra", None)
    return OmegaConf.to_yaml(plain)
