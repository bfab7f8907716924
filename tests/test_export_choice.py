"""`nas export` choosing the subnet from a store: ties, runs with nothing to export, runs without accuracy.

The stores are written directly (no search), the supernet run directory holds an untrained small supernet.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch

from nas.cli import main
from nas.search.store import open_store
from nas.train.checkpoint import save_weights
from search_spaces import mobilenetv3

KWARGS = {"preset": "small", "num_classes": 10, "in_channels": 1, "quant": False, "sparsity": False}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("sn")
    (out / "supernet.json").write_text(json.dumps({"space": "mobilenetv3", "kwargs": KWARGS}))
    save_weights(mobilenetv3.supernet(**KWARGS), out / "supernet.safetensors")
    return out


def write_store(path, objectives, rows):
    """A store of ``rows`` (values, status) over the first configs of the small space's min/max family."""
    space = mobilenetv3.supernet(**KWARGS).space
    store = open_store(f"sqlite:///{path}")
    store.write_meta(
        {
            "algorithm": "random",
            "budget": len(rows),
            "constraints": [],
            "objectives": [{"name": n, "direction": d, "expensive": False} for n, d in objectives],
            "seed": 0,
            "space": space.name,
        }
    )
    configs = [space.canonical(space.sample(seed)) for seed in range(len(rows))]
    for cfg, (values, status) in zip(configs, rows):
        store.add(
            {
                "key": cfg.key,
                "config": cfg.to_json(),
                "values": values,
                "violation": 0.0 if status == "ok" else None,
                "status": status,
                "error": None if status == "ok" else "RuntimeError: boom",
            }
        )
    store.close()
    return configs


def test_equally_accurate_subnets_export_the_faster_one(run_dir, tmp_path, capsys):
    # Both are Pareto-optimal (the slower one has fewer MACs); the faster one used to lose to the earlier one.
    objectives = [("accuracy", "max"), ("latency@cpu", "min"), ("macs", "min")]
    rows = [
        ({"accuracy": 90.0, "latency@cpu": 5.0, "macs": 1.0}, "ok"),
        ({"accuracy": 90.0, "latency@cpu": 3.0, "macs": 2.0}, "ok"),
        ({"accuracy": 80.0, "latency@cpu": 1.0, "macs": 3.0}, "ok"),
    ]
    configs = write_store(tmp_path / "s.db", objectives, rows)
    out = tmp_path / "m"
    args = ["export", str(tmp_path / "s.db"), "--supernet", str(run_dir), "--format", "safetensors"]
    assert main([*args, "--out", str(out)]) == 0
    assert json.loads((out / "manifest.json").read_text())["key"] == configs[1].key
    assert "latency@cpu=3.000 ms" in capsys.readouterr().out


def test_runs_with_nothing_to_export_or_no_accuracy_say_why(run_dir, tmp_path, capsys):
    failed = {"accuracy": float("nan"), "latency@cpu": float("nan")}
    write_store(tmp_path / "f.db", [("accuracy", "max"), ("latency@cpu", "min")], [(failed, "failed")] * 2)
    args = ["--supernet", str(run_dir), "--out", str(tmp_path / "m")]
    assert main(["export", str(tmp_path / "f.db"), *args]) == 2
    err = capsys.readouterr().err
    # it used to say "... meets --max-latency None; relax the bound" although no bound was given
    assert "of 2, 2 failed" in err and "None" not in err
    write_store(tmp_path / "e.db", [("accuracy", "max"), ("latency@cpu", "min")], [])
    assert main(["export", str(tmp_path / "e.db"), *args]) == 2
    assert "holds no evaluations yet" in capsys.readouterr().err
    write_store(
        tmp_path / "t.db",
        [("accuracy", "max"), ("latency@cpu", "min")],
        [({"accuracy": 1.0, "latency@cpu": 2.0}, "ok")],
    )
    assert main(["export", str(tmp_path / "t.db"), "--max-latency", "1ms", *args]) == 2
    assert "(the fastest takes 2.000 ms); relax the bound" in capsys.readouterr().err
    # a run without an accuracy objective: it used to end in "nas export: error: accuracy" (a KeyError)
    write_store(tmp_path / "m.db", [("top1", "max"), ("macs", "min")], [({"top1": 1.0, "macs": 2.0}, "ok")])
    assert main(["export", str(tmp_path / "m.db"), *args]) == 2
    assert "has no 'accuracy' objective (objectives: top1, macs)" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_tolerance_and_no_verify_reach_export(run_dir, tmp_path, monkeypatch, capsys):
    from nas import export as export_mod

    write_store(tmp_path / "s.db", [("accuracy", "max")], [({"accuracy": 90.0}, "ok")])
    out = tmp_path / "m"
    args = [
        "export",
        str(tmp_path / "s.db"),
        "--supernet",
        str(run_dir),
        "--format",
        "onnx",
        "--out",
        str(out),
    ]
    # an ONNX writer whose file computes another function (logits 0.01 off): the export fails, in one line
    write_onnx = export_mod._write_onnx

    def off(model, *rest):
        model = copy.deepcopy(model)
        with torch.no_grad():
            [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1].bias.add_(0.01)
        write_onnx(model, *rest)

    monkeypatch.setattr(export_mod, "_write_onnx", off)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "nas export: error: export: the onnx file does not compute what the model does" in err
    assert "nas export --tolerance X" in err and not out.exists()
    # relative to the logits of this untrained supernet (~1e-10), 0.01 off takes a tolerance of 1e9 to pass
    assert main([*args, "--tolerance", "1e9"]) == 0
    assert json.loads((out / "manifest.json").read_text())["verification"]["verify_tolerance"] == 1e9
    assert main([*args, "--no-verify"]) == 0
    assert json.loads((out / "manifest.json").read_text())["verification"]["verify_tolerance"] is None
    assert main([*args, "--tolerance", "-1"]) == 2
    assert "--tolerance -1 must be >= 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # one or the other
        main([*args, "--tolerance", "0.5", "--no-verify"])
