"""One intra-op thread for the benchmark tests: on a shared 2-core machine, two OpenMP threads
that get descheduled spin at their barriers and tiny ops run 100-1000x slower."""
import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
