"""The torch backend against the whole conformance catalogue, for each evaluation strategy,
and on random configs.

Strategy 'conv' is Algorithm 1 for every case. Strategy 'lc' evaluates every fixed case in
the locally connected form; the input-dependent cases have one filter bank per example, so
the adapter runs them with Algorithm 1, as 'auto' does (conformance/backends/torch.py).
'auto' is not run separately: at the catalogue's batch of 2 its cost rule picks 'conv' for
every case (tests/test_torch_strategies.py checks the rule).
"""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import conformance
import lrlc_numpy
from conformance import backends
from lrlc_torch import costs

STRATEGIES = ("conv", "lc")


@pytest.fixture(scope="module", params=STRATEGIES)
def torch_backend(request):
    return backends.load("torch", strategy=request.param)


def test_torch_backend_passes_whole_catalogue(torch_backend):
    report = conformance.run(torch_backend, devices=["cpu"], dtypes=["float64", "float32"])
    print(conformance.format_matrix([report]))
    assert report.ok, "\n".join(map(str, report.failures))
    cases = conformance.catalogue()
    # lrlc_torch has no mixed basis yet (spec section 16): those cases are skipped, saying why.
    n_mixed = sum(case.config.mixed for case in cases)
    for check, cells in report.matrix[torch_backend.name].items():
        for dtype, by_device in cells.items():
            once = check in ("checkpoint", "init")  # float64 only
            runs = len(cases) if not once or dtype == "float64" else 0
            skipped = n_mixed if runs else 0
            want = {"passed": runs - skipped, "failed": 0, "skipped": skipped}
            assert by_device["cpu"] == want, check
            if skipped:
                reason = report.skipped_reasons[(check, dtype, "cpu")]
                assert "supports_mixed_basis" in reason, check


def test_catalogue_exercises_the_locally_connected_form():
    cases = conformance.catalogue()
    fixed = [c for c in cases if not c.config.input_dependent]
    assert len(fixed) > len(cases) // 2
    assert all(costs.choose_strategy(c.config, c.batch, "lc") == "lc" for c in fixed)
    assert all(costs.choose_strategy(c.config, c.batch, "auto") == "conv" for c in cases)


def test_adapter_reports_what_this_install_offers(torch_backend):
    has_cuda = torch.cuda.is_available()
    assert torch_backend.devices == (("cpu", "gpu") if has_cuda else ("cpu",))
    assert ("bfloat16" in torch_backend.dtypes) == has_cuda
    assert torch_backend.dtypes[:2] == ("float64", "float32")


def test_adapter_options():
    assert backends.load("torch").name == "torch"
    assert backends.load("torch", strategy="auto").name == "torch"
    assert backends.load("torch", strategy="lc").name == "torch[strategy=lc]"
    with pytest.raises(ValueError, match=r"unknown strategy 'fast'; expected one of"):
        backends.load("torch", strategy="fast")
    with pytest.raises(ValueError, match=r"unknown options \['precision'\]"):
        backends.load("torch", precision="high")


@settings(max_examples=8, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    dtype=st.sampled_from(["float64", "float32"]),
    strategy=st.sampled_from(STRATEGIES),
)
def test_random_configs(seed, dtype, strategy):
    config = conformance.random_config(np.random.default_rng(seed))
    case = conformance.Case(f"random-{seed}", config)
    backend = backends.load("torch", strategy=strategy)
    report = conformance.check_case(backend, case, dtype=dtype, seed=seed)
    assert report.ok, "\n".join(map(str, report.failures))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: GPU conformance not run")
def test_torch_backend_passes_whole_catalogue_on_gpu(torch_backend):
    report = conformance.run(torch_backend, devices=["gpu"])
    print(conformance.format_matrix([report]))
    assert report.ok, "\n".join(map(str, report.failures))
    assert report.total("skipped") == 0 and "bfloat16" in torch_backend.dtypes


def test_adapter_turns_tf32_off_for_its_calls_only(torch_backend, monkeypatch):
    """Spec 15.4: float32 checks need IEEE float32; PyTorch lets cuDNN use TF32 by default.
    The flags seen by the layer during a call are off, and the user's flags come back."""
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
    torch_backend.forward(case.config, params, x)
    assert seen == [(False, False)]
    assert torch.backends.cudnn.allow_tf32 is True


@pytest.mark.parametrize(
    "case",
    [case for case in conformance.catalogue() if not case.config.mixed][::12],
    ids=lambda case: case.name,
)
def test_adapter_init_params_is_the_layers_default_initialisation(case):
    """Deterministic parameters (logits, biases) equal lrlc_numpy.init_params exactly; random
    ones lie within initial_value's limit; the seed fixes them and the caller's generator
    state is left alone."""
    backend = backends.load("torch")
    state = torch.random.get_rng_state()
    got = backend.init_params(case.config, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    want = lrlc_numpy.init_params(case.config, seed=3)
    assert set(got) == set(want)
    for name, value in got.items():
        assert value.dtype == np.float64 and value.shape == want[name].shape, name
        initial = lrlc_numpy.initial_value(name, case.config)
        if initial.uniform:
            assert 0 < np.abs(value).max() <= initial.limit, name
        else:
            np.testing.assert_array_equal(value, want[name], err_msg=name)
    again = backend.init_params(case.config, seed=3)
    other = backend.init_params(case.config, seed=4)
    assert all(np.array_equal(again[name], got[name]) for name in got)
    assert not np.array_equal(other["basis"], got["basis"])
