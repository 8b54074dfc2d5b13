"""The package's face: `import minidt` is lean (the heavy subpackages come on first use), and every name it
promises resolves."""

from __future__ import annotations

import subprocess
import sys

import minidt


def test_import_minidt_leaves_the_heavy_libraries_for_first_use():
    code = ("import sys, minidt; heavy = ['gymnasium', 'h5py', 'minari', 'matplotlib', 'torch', 'transformers', "
            "'minidt.data', 'minidt.evaluate', 'minidt.parallel']; print([m for m in heavy if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_every_lazy_name_resolves():
    for name in minidt.SUBPACKAGES:
        assert getattr(minidt, name).__name__ == f"minidt.{name}"
    for name, module in minidt.LAZY_NAMES.items():
        assert getattr(minidt, name) is getattr(getattr(minidt, module), name)
    from minidt import DataParallel, load_policy  # noqa: F401  `from minidt import X` goes through __getattr__
    assert {"DataParallel", "load_policy", "optim", "no_grad"} <= set(dir(minidt))
