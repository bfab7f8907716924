"""Test-suite settings shared by every test module."""

from __future__ import annotations

import os

import pytest
import torch

# CI runs on 2 cores, often beside Ray workers: one intra-op thread per process avoids oversubscription, which
# otherwise made single tests up to 15x slower.
torch.set_num_threads(1)
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module's tests, restored afterwards (use it with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``): the tiny models gain nothing from more on the
    2 shared CI cores, and a test elsewhere may have raised the count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
