"""Convert HW-NAS-Bench's NAS-Bench-201 table into the six built-in ``nb201-<device>`` profiles.

Run by hand from the repository root (it reads the reference copy outside the package)::

    .venv/bin/python hw_profiles/build_nb201.py [--source ../shared/data/nb201/hwnasbench_cifar10.csv]

Output is reproducible byte for byte: gzip without timestamps, rows in NB201 index order, floats written with
``repr`` so every value round-trips exactly.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_SOURCE = ROOT.parent / "shared" / "data" / "nb201" / "hwnasbench_cifar10.csv"

CITATION = (
    "Li, Chaojian et al. HW-NAS-Bench: Hardware-Aware Neural Architecture Search Benchmark. ICLR 2021. "
    "https://github.com/GATECH-EIC/HW-NAS-Bench (MIT license)"
)
# device -> (hardware, how the numbers were obtained), from the HW-NAS-Bench paper
DEVICES = {
    "edgegpu": ("NVIDIA Jetson TX2 (edge GPU)", "measured, PyTorch"),
    "raspi4": ("Raspberry Pi 4 (ARM Cortex-A72 CPU)", "measured, TensorFlow Lite"),
    "edgetpu": ("Google Coral Edge TPU dev board", "measured, TensorFlow Lite (Edge TPU compiled)"),
    "pixel3": ("Google Pixel 3 (mobile CPU)", "measured, TensorFlow Lite"),
    "eyeriss": ("Eyeriss ASIC accelerator", "estimated by a cycle-accurate simulator (Accelergy + Timeloop)"),
    "fpga": (
        "Xilinx ZC706 FPGA (chunk-based pipeline accelerator)",
        "estimated by a validated analytical model",
    ),
}


def build(source: Path, out_dir: Path) -> list[Path]:
    """Write ``nb201-<device>.csv.gz`` (+ meta JSON) for every device; return the table paths."""
    import pandas as pd

    sys.path.insert(0, str(ROOT))
    from nas.hw.profiles import Profile
    from search_spaces import nb201

    df = pd.read_csv(source, index_col=0)
    if len(df) != 15625:
        raise SystemExit(f"{source}: expected 15,625 cells, found {len(df)}")
    configs = [nb201.from_arch_str(s) for s in df.index]
    written = []
    for device, (hardware, method) in DEVICES.items():
        lat = df[f"{device}_latency"].to_numpy(dtype=float)
        keep = lat > 0
        notes = [
            "Latency of the whole CIFAR-10 NAS-Bench-201 network (batch 1) built from each cell; rows in NB201 "
            "index order.",
            "HW-NAS-Bench reports one value per cell, without spread or repeat count: latency_iqr_ms and "
            "latency_cv are empty and repeats is 0 (not reported).",
        ]
        if not keep.all():
            notes.append(
                f"{int((~keep).sum())} cells with latency -1 (not measured by HW-NAS-Bench) were dropped; "
                f"{int(keep.sum())} remain."
            )
        extras = {}
        if f"{device}_energy" in df:
            extras["energy_mj"] = df[f"{device}_energy"].to_numpy(dtype=float)[keep]
        if f"{device}_arithmetic_intensity" in df:
            extras["arithmetic_intensity"] = df[f"{device}_arithmetic_intensity"].to_numpy(dtype=float)[keep]
        profile = Profile(
            "nb201",
            [c for c, k in zip(configs, keep) if k],
            lat[keep],
            extras=extras,
            metadata={
                "device": device,
                "hardware": hardware,
                "method": method,
                "backend": method.split(", ")[-1],
                "batch_size": 1,
                "dataset": "cifar10",
                "units": {"latency_ms": "ms", "energy_mj": "mJ", "arithmetic_intensity": "ops/byte"},
                "source": "HW-NAS-Bench, hwnasbench_cifar10.csv (NAS-Bench-201 space, CIFAR-10 input)",
                "citation": CITATION,
                "license": "MIT",
                "notes": notes,
            },
        )
        path = out_dir / f"nb201-{device}.csv.gz"
        profile.save(path)
        written.append(path)
        print(f"{path.relative_to(ROOT)}: {len(profile)} rows, {path.stat().st_size / 1e3:.0f} kB")
    return written


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="hwnasbench_cifar10.csv")
    parser.add_argument("--out", type=Path, default=HERE, help="output directory (default: hw_profiles/)")
    args = parser.parse_args()
    build(args.source, args.out)


if __name__ == "__main__":
    main()
