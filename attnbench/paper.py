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
