"""Under `nox -s tests` every backend's framework must be importable, so that no backend's
tests can be skipped for a missing install without anyone noticing."""

import importlib
import os

import pytest


@pytest.mark.skipif(
    os.environ.get("LRLC_REQUIRE_ALL_BACKENDS") != "1",
    reason="only enforced inside `nox -s tests`, which installs every backend",
)
@pytest.mark.parametrize("module", ["torch", "jax", "tensorflow", "keras", "safetensors"])
def test_framework_installed(module):
    importlib.import_module(module)
