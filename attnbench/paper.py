"""Published numbers that attnbench's results are shown next to: one place, with the citation.

Kimi Linear: An Expressive, Efficient Attention Architecture. Kimi Team, arXiv 2510.26692
(v2), Table 1 "Ablation study on the hybrid ratio of KDA to MLA attention and other key
components": training and validation perplexity, lower is better. Setting (§5.2): 16 layers,
16 heads, MoE, all models trained with the same FLOPs budget and hyperparameters; the
validation set is a high-quality corpus whose distribution differs from the training data.
"""
from __future__ import annotations

KIMI_LINEAR_CITATION = "Kimi Team, Kimi Linear (arXiv 2510.26692), Table 1"

# KDA:MLA ratio -> (training ppl, validation ppl)
KIMI_LINEAR_TABLE1_RATIO = {
    "0:1": (9.45, 5.77),
    "1:1": (9.29, 5.66),
    "3:1": (9.23, 5.65),
    "7:1": (9.23, 5.70),
    "15:1": (9.34, 5.82),
}

# Component ablations at 3:1 (same table), for reference.
KIMI_LINEAR_TABLE1_COMPONENTS = {
    "w/o output gate": (9.25, 5.67),
    "w/ swish output gate": (9.43, 5.81),
    "w/o convolution layer": (9.29, 5.70),
}


def table1_rows() -> list[dict]:
    """The ratio rows as records: {arch, paper_train_ppl, paper_val_ppl}."""
    return [{"arch": ratio, "paper_train_ppl": train, "paper_val_ppl": val}
            for ratio, (train, val) in KIMI_LINEAR_TABLE1_RATIO.items()]


# ---- Kimi Linear Fig. 4 (§5.1): synthetic tasks -------------------------------------------------
# Values READ FROM THE FIGURE (not printed in the paper), in percent; setting: 2 layers, 2 heads,
# head dim 128, lr grid {5e-5, 1e-4, 5e-4, 1e-3}, at most 20k steps, best lr per point, training
# accuracy. Source: /work/shared/reference/paper_anchors.md §1b. The paper shows no attention row.
KIMI_LINEAR_FIG4_CITATION = "Kimi Team, Kimi Linear (arXiv 2510.26692), Fig. 4 (values read from the figure)"

# (task, mixer) -> {training length: accuracy %}; mixers as layer names (kda, gdn, mamba2).
KIMI_LINEAR_FIG4_LENGTH = {
    ("palindrome", "kda"): {256: 100.0, 512: 100.0, 1024: 100.0, 2048: 42.2},
    ("palindrome", "gdn"): {256: 100.0, 512: 100.0, 1024: 97.0, 2048: 37.1},
    ("palindrome", "mamba2"): {256: 100.0, 512: 0.0, 1024: 0.0, 2048: 0.0},
    ("mqar", "kda"): {256: 100.0, 512: 100.0, 1024: 100.0, 2048: 47.6},
    ("mqar", "gdn"): {256: 100.0, 512: 100.0, 1024: 78.7, 2048: 29.1},
    ("mqar", "mamba2"): {256: 97.6, 512: 0.0, 1024: 0.0, 2048: 0.0},
    ("stack", "kda"): {256: 100.0, 512: 100.0, 1024: 100.0, 2048: 100.0},
    ("stack", "gdn"): {256: 100.0, 512: 100.0, 1024: 100.0, 2048: 100.0},
    ("stack", "mamba2"): {256: 100.0, 512: 100.0, 1024: 0.0, 2048: 0.0},
}

# (task, mixer) -> accuracy % at length 1024 every 2k steps, 2k..20k (Fig. 4 bottom row).
FIG4_STEPS = tuple(range(2000, 20001, 2000))
KIMI_LINEAR_FIG4_STEPS = {
    ("palindrome", "kda"): (18.2, 94.2, 98.9, 98.8, 99.6, 100, 100, 100, 100, 100),
    ("palindrome", "gdn"): (0, 0, 0, 30.0, 61.9, 76.9, 82.8, 98.7, 99.4, 97.0),
    ("mqar", "kda"): (93.4, 97.6, 99.1, 99.7, 100, 100, 100, 100, 100, 100),
    ("mqar", "gdn"): (0, 0, 0, 0, 0, 3.5, 12.9, 22.6, 41.7, 78.7),
    ("stack", "kda"): (58.9, 98.2, 99.4, 99.4, 99.6, 100, 100, 100, 100, 100),
    ("stack", "gdn"): (0, 63.3, 94.4, 99.2, 100, 100, 100, 100, 100, 100),
    **{(task, "mamba2"): (0,) * 10 for task in ("palindrome", "mqar", "stack")},
}


def fig4_accuracy(task: str, mixer: str, length: int) -> float | None:
    """The paper's accuracy (%) for one cell of Fig. 4's top row, or None where it has none."""
    return KIMI_LINEAR_FIG4_LENGTH.get((task, mixer), {}).get(int(length))
