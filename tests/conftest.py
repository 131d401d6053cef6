import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

import pytest  # noqa: E402
import torch  # noqa: E402

from attnbench.ops.compare import rel_rms  # noqa: E402,F401  (re-exported for tests)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
