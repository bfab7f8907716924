"""Test-suite settings shared by every test module."""

from __future__ import annotations

import os

import torch

# CI runs on 2 cores, often beside Ray workers: one intra-op thread per process avoids oversubscription, which
# otherwise made single tests up to 15x slower.
torch.set_num_threads(1)
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
