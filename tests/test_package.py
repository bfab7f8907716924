"""The top-level package: light import, lazy attributes, callable ``nas.export``."""

from __future__ import annotations

import subprocess
import sys


def test_import_nas_does_not_load_heavy_packages():
    code = (
        "import sys, nas, nas.search, predictors, hw_profiles, search_spaces; "
        "heavy = [m for m in ('torch', 'ray', 'optuna', 'pymoo', 'onnxruntime', 'matplotlib') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""


def test_export_is_callable_before_and_after_importing_the_submodule():
    import nas

    assert callable(nas.export)
    from nas.export import load_exported

    assert callable(nas.export) and nas.load_exported is load_exported
    assert nas.metrics.macs is not None and nas.LayerSpec.__name__ == "LayerSpec"
