"""Keep the sparsity tests fast and deterministic on a shared 2-core machine."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread_fixed_seed():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # many agents share 2 cores: intra-op threads only contend
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)
