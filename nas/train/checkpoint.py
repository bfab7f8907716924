"""Checkpoints and final weights: safetensors for tensors, JSON (in the safetensors metadata) for the rest.

Every file is written atomically (a temporary file in the same folder, fsync, then ``os.replace``), so a run
killed at any moment leaves either the previous checkpoint or the new one, never a torn file.

Files in a run directory:

* ``checkpoint.safetensors``: model state, optimizer state, torch RNG state, plus the JSON training state
  (step, epoch, hyper-parameters) in the metadata field ``nas.train_state``.
* ``supernet.safetensors``: the final weights (model state only), read by :func:`load_weights`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nas.atomic import write_bytes, write_text

__all__ = ["CHECKPOINT", "WEIGHTS", "load_checkpoint", "load_weights", "save_checkpoint", "save_weights"]

CHECKPOINT = "checkpoint.safetensors"
WEIGHTS = "supernet.safetensors"
_STATE_KEY = "nas.train_state"


def _atomic_save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    from safetensors.torch import save

    write_bytes(path, save(tensors, metadata=metadata))


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file atomically."""
    write_text(path, text)


def _model_tensors(net: nn.Module) -> dict[str, torch.Tensor]:
    # clone(): safetensors refuses shared or non-contiguous storage (views, channels_last weights).
    return {f"model.{k}": v.detach().cpu().contiguous().clone() for k, v in net.state_dict().items()}


def _optimizer_split(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    state_json: dict[str, dict[str, Any]] = {}
    for idx, pstate in sd["state"].items():
        entry: dict[str, Any] = {}
        for key, value in pstate.items():
            if torch.is_tensor(value):
                tensors[f"optim.{idx}.{key}"] = value.detach().cpu().contiguous().clone()
                entry[key] = {"tensor": f"optim.{idx}.{key}"}
            else:
                entry[key] = value
        state_json[str(idx)] = entry
    return tensors, {"state": state_json, "param_groups": sd["param_groups"]}


def save_checkpoint(
    path: str | Path, net: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> None:
    """Atomically write model, optimizer and RNG state plus the JSON-able ``state`` to one file."""
    tensors = _model_tensors(net)
    opt_tensors, opt_json = _optimizer_split(optimizer)
    tensors.update(opt_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {_STATE_KEY: json.dumps({**state, "optimizer": opt_json})}
    _atomic_save(tensors, Path(path), meta)


def _read_safetensors(path: Path, fix: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file.

    Files are written atomically, so a torn or foreign file was damaged afterwards (a copy cut short, a full
    disk, another program): the reader's ``SafetensorError`` would end a command with a traceback, so it becomes
    a ``ValueError`` naming the file and ``fix``.
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except SafetensorError as exc:
        raise ValueError(f"{path} is not a readable safetensors file ({exc}); {fix}") from None
    return tensors, meta


def load_checkpoint(path: str | Path, net: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore a checkpoint written by :func:`save_checkpoint` in place; returns its JSON state."""
    path = Path(path)
    tensors, meta = _read_safetensors(path, "restore it from a copy, or move it away to train from the start")
    if _STATE_KEY not in meta:
        raise ValueError(f"{path} is not a nas training checkpoint (no {_STATE_KEY!r} metadata)")
    state = json.loads(meta[_STATE_KEY])
    _load_model(net, {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}, path)
    opt_json = state.pop("optimizer")
    opt_state = {}
    for idx, entry in opt_json["state"].items():
        opt_state[int(idx)] = {
            key: (tensors[value["tensor"]] if isinstance(value, dict) and "tensor" in value else value)
            for key, value in entry.items()
        }
    optimizer.load_state_dict({"state": opt_state, "param_groups": opt_json["param_groups"]})
    torch.set_rng_state(tensors["rng.torch"])
    return state


def _load_model(net: nn.Module, tensors: dict[str, torch.Tensor], source: Path) -> None:
    own = net.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    wrong = [k for k in own if k in tensors and tuple(own[k].shape) != tuple(tensors[k].shape)]
    if missing or unexpected or wrong:
        details = []
        if missing:
            details.append(f"missing {missing[:3]}{'...' if len(missing) > 3 else ''}")
        if unexpected:
            details.append(f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}")
        if wrong:
            k = wrong[0]
            details.append(f"shape of {k}: file {tuple(tensors[k].shape)}, net {tuple(own[k].shape)}")
        raise ValueError(
            f"{source} does not fit this {type(net).__name__} ({'; '.join(details)}); build the supernet with "
            "the same space, preset and options as the training run (see supernet.json in the run directory)"
        )
    with torch.no_grad():
        for k, v in own.items():
            v.copy_(tensors[k])


def save_weights(net: nn.Module, path: str | Path, metadata: dict[str, Any] | None = None) -> None:
    """Atomically write the model state (parameters and buffers) to a safetensors file."""
    meta = {"nas.meta": json.dumps(metadata or {})}
    tensors = {k[len("model.") :]: v for k, v in _model_tensors(net).items()}
    _atomic_save(tensors, Path(path), meta)


def load_weights(net: nn.Module, run_dir: str | Path) -> nn.Module:
    """Load final weights into a freshly built supernet from a run directory (or a ``.safetensors`` file).

    Example:
        >>> import tempfile, torch
        >>> from search_spaces import mobilenetv3
        >>> a, b = mobilenetv3.supernet("small"), mobilenetv3.supernet("small")
        >>> d = tempfile.mkdtemp()
        >>> save_weights(a, f"{d}/supernet.safetensors")
        >>> _ = load_weights(b, d)
        >>> bool(torch.equal(a.classifier[1].weight, b.classifier[1].weight))
        True
    """
    path = Path(run_dir)
    if path.is_dir():
        path = path / WEIGHTS
    if not path.is_file():
        hint = ""
        if (path.parent / CHECKPOINT).is_file():
            hint = f"; training has not finished there (a {CHECKPOINT} exists: resume it with resume=True)"
        raise FileNotFoundError(f"{path} not found: no trained supernet weights in {run_dir}{hint}")
    fix = "restore it from a copy"
    if (path.parent / CHECKPOINT).is_file():
        fix += (
            f", or rewrite it from the run's {CHECKPOINT} by resuming the training run (nas train --resume)"
        )
    _load_model(net, _read_safetensors(path, fix)[0], path)
    return net
