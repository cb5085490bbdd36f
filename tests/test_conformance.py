"""Every backend and evaluation strategy against the conformance catalogue (spec section 15),
on configs drawn by hypothesis, and the adapters' own contract.

Rows are backend x strategy. 'lc' evaluates every fixed case in the locally connected form;
the input-dependent cases have one filter bank per example, so the adapters run them with
Algorithm 1, as 'auto' does. A framework that is not installed skips its rows (under
`nox -s tests` every framework must be installed: tests/test_environment.py).
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import conformance
import lrlc_numpy
from conformance import backends, runner

from .configs import lrlc_configs

FRAMEWORK = {"numpy": None, "torch": "torch", "jax": "jax", "tf": "tensorflow"}
# (backend, strategy); None: the adapter's default.
ROWS = [
    ("numpy", None),
    ("torch", "conv"),
    ("torch", "lc"),
    ("jax", "auto"),
    ("jax", "lc"),
    ("tf", "conv"),
    ("tf", "lc"),
]
ROW_IDS = [backend if strategy is None else f"{backend}[{strategy}]" for backend, strategy in ROWS]


def load(backend: str, strategy: str | None = None):
    """The adapter of `backend` with `strategy`, skipping when its framework is absent."""
    if FRAMEWORK[backend]:
        pytest.importorskip(FRAMEWORK[backend])
    return backends.load(backend, **({} if strategy is None else {"strategy": strategy}))


# JAX compiles once per case and dtype, which makes a second full catalogue run the slowest
# test. Strategy 'lc' differs from Algorithm 1 in how windows are cut (kernel size, stride,
# dilation, padding) and in forming banks from the weights; the weights, biases and g are
# shared code that the full run under 'auto' covers. So jax[lc] runs every fixed case of the
# geometry groups (all but the catalogue's first group), the first group's fixed 'row' and
# 'col' cases and its case without biases, the fixed mixed-basis cases and the fixed 1-D and
# 3-D cases.
JAX_LC_BASE_CASES = (
    "fixed-row-softmax-bias[sc]",
    "fixed-col-l2-bias[sc]",
    "fixed-rowcol-none-bias[]",
)


def jax_lc_cases():
    return [
        case
        for case in conformance.catalogue()
        if not case.config.input_dependent
        and ("/" in case.name or case.name in JAX_LC_BASE_CASES or case.config.spatial_dims != 2)
    ]


def catalogue_for(backend: str, strategy: str | None):
    return jax_lc_cases() if (backend, strategy) == ("jax", "lc") else conformance.catalogue()


def assert_every_cell(report, adapter, cases):
    """Each check x dtype ran every case on the CPU: passed, except what the adapter says it
    lacks (the mixed basis, init_params), which is skipped with that reason."""
    # Every backend runs sequences and volumes (spec section 17): none of those is skipped.
    assert tuple(getattr(adapter, runner.SPATIAL_GATE, (2,))) == (1, 2, 3), adapter.name
    mixed_ok = getattr(adapter, runner.MIXED_GATE, False)
    n_mixed = 0 if mixed_ok else sum(case.config.mixed for case in cases)
    matrix = report.matrix[adapter.name]
    assert set(matrix) == set(runner.CHECKS)
    for check, cells in matrix.items():
        for dtype, by_device in cells.items():
            once = check in ("checkpoint", "init")  # files and initial values: float64 only
            runs = len(cases) if not once or dtype == "float64" else 0
            absent = check == "init" and not hasattr(adapter, "init_params")
            skipped = runs if absent else n_mixed if runs else 0
            want = {"passed": runs - skipped, "failed": 0, "skipped": skipped}
            assert by_device["cpu"] == want, (check, dtype)
            if skipped and not absent:
                reason = report.skipped_reasons[(check, dtype, "cpu")]
                assert runner.MIXED_GATE in reason, (check, dtype)


def _run_in_own_process(backend, strategy, cases, tmp_path):
    """The report of `python -m conformance` for one row, run in a fresh process: XLA's CPU
    compiler crashed (SIGSEGV in backend_compile_and_load) on this catalogue inside a pytest
    process that had also loaded torch and TensorFlow, and never in a process of its own."""
    out = tmp_path / "report.json"
    names = ",".join(case.name for case in cases)
    command = [sys.executable, "-m", "conformance", "--backend", backend, "--json", str(out)]
    command += ["--option", f"strategy={strategy}", "--dtype", "float64", "float32"]
    command += ["--device", "cpu"]
    env = {**os.environ, "LRLC_CONFORMANCE_CASES": names}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=3000)
    assert out.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    (data,) = json.loads(out.read_text())
    report = conformance.Report(data["backend"])
    for key, cells in data["matrix"].items():
        for dtype, by_device in cells.items():
            for device, counts in by_device.items():
                report.counts[(key, dtype, device)] = collections.Counter(counts)
    for key, why in data["skipped"].items():
        report.skipped_reasons[tuple(key.split("/"))] = why
    report.failures.extend(conformance.Failure(**f) for f in data["failures"])
    return report


@pytest.mark.parametrize(("backend", "strategy"), ROWS, ids=ROW_IDS)
def test_backend_passes_the_catalogue(backend, strategy, tmp_path):
    adapter = load(backend, strategy)
    cases = catalogue_for(backend, strategy)
    if backend == "jax":
        report = _run_in_own_process(backend, strategy, cases, tmp_path)
    else:
        report = conformance.run(
            adapter, devices=["cpu"], dtypes=["float64", "float32"], cases=cases
        )
    print(conformance.format_matrix([report]))
    assert report.ok, "\n".join(map(str, report.failures))
    assert_every_cell(report, adapter, cases)


def test_jax_lc_subset_covers_every_geometry():
    cases = [c for c in jax_lc_cases() if not c.config.mixed and c.config.spatial_dims == 2]
    geometries = {(c.config.kernel_size, c.config.stride, c.config.dilation) for c in cases}
    assert len(cases) == 27 and len(geometries) == 6
    assert any(case.config.mixed for case in jax_lc_cases())
    fixed_nd = [c.name for c in conformance.catalogue()
                if c.config.spatial_dims != 2 and not c.config.input_dependent]  # fmt: skip
    assert fixed_nd and set(fixed_nd) <= {case.name for case in jax_lc_cases()}


@settings(max_examples=6, deadline=None)
@given(
    config=lrlc_configs(mixed=None, spatial_dims=None),
    dtype=st.sampled_from(["float64", "float32"]),
)
@pytest.mark.parametrize(("backend", "strategy"), ROWS[1:], ids=ROW_IDS[1:])
def test_random_configs(backend, strategy, config, dtype):
    """Configs built field by field, so a failure shrinks to a small config; sequences,
    images and volumes, plain and mixed bases."""
    adapter = load(backend, strategy)
    if config.mixed and not getattr(adapter, runner.MIXED_GATE, False):
        return  # reported as skipped by the runner; the catalogue test counts those
    case = conformance.Case("hypothesis", config)
    report = conformance.check_case(adapter, case, dtype=dtype, seed=0)
    assert report.ok, "\n".join(map(str, report.failures))


# ---------------------------------------------------------------------------------------------
# GPU rows: skipped without an accelerator (CI never has one).


def _accelerators(adapter):
    return [device for device in adapter.devices if device != "cpu"]


@pytest.mark.gpu
@pytest.mark.parametrize(("backend", "strategy"), ROWS[1:], ids=ROW_IDS[1:])
def test_backend_passes_the_catalogue_on_accelerators(backend, strategy):
    adapter = load(backend, strategy)
    devices = _accelerators(adapter)
    if not devices:
        pytest.skip(f"no accelerator visible to {backend}: accelerator conformance not run")
    report = conformance.run(adapter, devices=devices)
    print(conformance.format_matrix([report]))
    assert report.ok, "\n".join(map(str, report.failures))
    assert "bfloat16" in adapter.dtypes
    mixed_ok = getattr(adapter, runner.MIXED_GATE, False)
    n_mixed = 0 if mixed_ok else sum(case.config.mixed for case in conformance.catalogue())
    for key, counts in report.counts.items():
        assert counts["skipped"] == n_mixed, key


# ---------------------------------------------------------------------------------------------
# The adapters' contract: names, options, what the install offers, initial values.


@pytest.mark.parametrize("backend", ["torch", "jax", "tf"])
def test_adapter_names_and_options(backend):
    assert load(backend).name == backend
    assert load(backend, "auto").name == backend
    assert load(backend, "lc").name == f"{backend}[strategy=lc]"
    with pytest.raises(ValueError, match=r"unknown strategy 'fast'; expected one of"):
        backends.load(backend, strategy="fast")
    with pytest.raises(ValueError, match=r"unknown options \['precision'\]"):
        backends.load(backend, precision="high")


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match=r"unknown backend 'mxnet'; expected one of"):
        backends.load("mxnet")


def _framework_accelerated(backend) -> bool:
    if backend == "torch":
        import torch

        return torch.cuda.is_available()
    if backend == "jax":
        import jax

        platforms = {device.platform for device in jax.devices()}
        return bool(platforms & {"gpu", "cuda", "rocm", "tpu"})
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


@pytest.mark.parametrize("backend", ["torch", "jax", "tf"])
def test_adapter_reports_what_this_install_offers(backend):
    adapter = load(backend)
    accelerated = _framework_accelerated(backend)
    assert adapter.devices[0] == "cpu" and (len(adapter.devices) > 1) == accelerated
    assert adapter.dtypes[:2] == ("float64", "float32")
    assert ("bfloat16" in adapter.dtypes) == accelerated


def test_jax_adapter_enables_float64():
    load("jax")
    import jax

    assert jax.numpy.zeros(1, "float64").dtype == np.float64


def test_tf_adapter_rejects_an_absent_device():
    adapter = load("tf")
    case = conformance.catalogue()[0]
    x, params, _ = conformance.case_data(case, 0)
    with pytest.raises(ValueError, match="tpu"):
        adapter.forward(case.config, params, x, device="tpu")


def test_torch_adapter_turns_tf32_off_for_its_calls_only(monkeypatch):
    """Spec 15.4: float32 checks need IEEE float32; PyTorch lets cuDNN use TF32 by default.
    The flags seen by the layer during a call are off, and the user's flags come back."""
    adapter = load("torch", "conv")
    import torch

    import lrlc_torch

    seen = []
    original = lrlc_torch.LRLC2d.forward

    def spy(self, x):
        seen.append((torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32))
        return original(self, x)

    monkeypatch.setattr(lrlc_torch.LRLC2d, "forward", spy)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    case = conformance.catalogue()[0]
    x, params, _ = conformance.case_data(case, 0)
    adapter.forward(case.config, params, x)
    assert seen == [(False, False)]
    assert torch.backends.cudnn.allow_tf32 is True


# Every combining mode, fixed and input-dependent, plain and mixed: a few catalogue cases.
INIT_CASES = conformance.catalogue()[::12] + [
    next(case for case in conformance.catalogue() if case.config.mixed)
]


@pytest.mark.parametrize("backend", ["torch", "jax", "tf"])
@pytest.mark.parametrize("case", INIT_CASES, ids=lambda case: case.name)
def test_adapter_init_params_are_the_backends_defaults(backend, case):
    """Neutral names and shapes in float64; constants (logits, biases) equal lrlc_numpy's
    exactly; random tensors lie within initial_value's limit; the seed fixes the draw."""
    adapter = load(backend)
    if case.config.mixed and not getattr(adapter, runner.MIXED_GATE, False):
        pytest.skip(f"{backend} has no mixed basis yet (spec section 16)")
    got = adapter.init_params(case.config, seed=3)
    want = lrlc_numpy.init_params(case.config, seed=3)
    assert set(got) == set(want)
    for name, value in got.items():
        assert type(value) is np.ndarray and value.dtype == np.float64, name
        assert value.shape == want[name].shape, name
        initial = lrlc_numpy.initial_value(name, case.config)
        if initial.uniform:
            assert 0 < np.abs(value).max() <= initial.limit and np.unique(value).size > 1, name
        else:
            np.testing.assert_array_equal(value, want[name], err_msg=name)
    again = adapter.init_params(case.config, seed=3)
    for name, value in got.items():
        np.testing.assert_array_equal(again[name], value, err_msg=name)
    basis = case.config.basis_names[0]
    assert not np.array_equal(adapter.init_params(case.config, seed=4)[basis], got[basis])


def test_torch_adapter_init_params_leave_the_global_generator_alone():
    adapter = load("torch")
    import torch

    state = torch.random.get_rng_state()
    adapter.init_params(conformance.catalogue()[0].config, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_jax_adapter_init_params_are_lrlc_jax_init():
    adapter = load("jax")
    import jax

    import lrlc_jax

    config = lrlc_numpy.LRLCConfig(3, 4, 3, rank=3, input_size=(9, 10), combining="full")
    direct = lrlc_jax.init(jax.random.key(5), config, dtype=jax.numpy.float64)
    params = adapter.init_params(config, seed=5)
    for name, value in direct.items():
        np.testing.assert_array_equal(params[name], value)
