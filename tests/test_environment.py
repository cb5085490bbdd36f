"""Under `nox -s tests` every backend's framework and the experiments' dependencies must be
importable, so that no test can be skipped for a missing install without anyone noticing."""

import importlib
import os

import pytest


@pytest.mark.skipif(
    os.environ.get("LRLC_REQUIRE_ALL_BACKENDS") != "1",
    reason="only enforced inside `nox -s tests`, which installs every optional dependency",
)
@pytest.mark.parametrize(
    "module",
    [
        "torch",
        "jax",
        "tensorflow",
        "keras",
        "safetensors",
        "sklearn",
        "matplotlib",
        "PIL",
        "tqdm",
        "onnxruntime",
        "onnxscript",
        "flax",
        "optax",
    ],
)
def test_framework_installed(module):
    importlib.import_module(module)
