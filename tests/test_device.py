"""nnopt.device: device choice, seeding, the NNOPT_SCALE switch."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from nnopt.device import (EXPERIMENT_DTYPE, VERIFY_DTYPE, default_device, make_generator, progress,
                          scale, scaled, seed_everything, torch_threads)


def test_default_device_follows_cuda_and_override(monkeypatch):
    monkeypatch.delenv("NNOPT_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert default_device().type == expected
    monkeypatch.setenv("NNOPT_DEVICE", "cpu")
    assert default_device() == torch.device("cpu")


def test_seed_everything_makes_all_generators_repeat():
    g1 = seed_everything(123)
    draws1 = (random.random(), np.random.rand(), torch.rand(3), torch.rand(3, generator=g1))
    g2 = seed_everything(123)
    draws2 = (random.random(), np.random.rand(), torch.rand(3), torch.rand(3, generator=g2))
    assert draws1[0] == draws2[0] and draws1[1] == draws2[1]
    assert torch.equal(draws1[2], draws2[2]) and torch.equal(draws1[3], draws2[3])
    assert not torch.equal(torch.rand(3, generator=make_generator(1)),
                           torch.rand(3, generator=make_generator(2)))


def test_seed_validation():
    with pytest.raises(ValueError, match="seed must be >= 0"):
        seed_everything(-1)
    with pytest.raises(TypeError, match="seed must be an integer"):
        make_generator(1.5)  # type: ignore[arg-type]


def test_scale_switch(monkeypatch):
    monkeypatch.delenv("NNOPT_SCALE", raising=False)
    assert scale() == "default" and scaled(10, 1000) == 10
    monkeypatch.setenv("NNOPT_SCALE", "large")
    assert scale() == "large" and scaled(10, 1000) == 1000
    monkeypatch.setenv("NNOPT_SCALE", "huge")
    with pytest.raises(ValueError, match="NNOPT_SCALE must be one of"):
        scale()


def test_dtype_policy():
    assert VERIFY_DTYPE == torch.float64 and EXPERIMENT_DTYPE == torch.float32


def test_torch_threads_sets_and_restores():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), torch_threads(1):
        raise RuntimeError("restored even on error")
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="n must be >= 1"):
        with torch_threads(0):
            pass


def test_progress_bar_only_at_the_large_scale(monkeypatch, capsys):
    items = [3, 1, 2]
    monkeypatch.delenv("NNOPT_SCALE", raising=False)
    assert progress(items, "default") is items  # unchanged: the stored outputs hold no bars
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("NNOPT_SCALE", "large")
    assert list(progress(items, "widths")) == items
    err = capsys.readouterr().err
    assert "widths" in err and "3/3" in err
    assert list(progress(iter(items), "gen", total=3, enabled=True)) == items
    assert "3/3" in capsys.readouterr().err
    assert progress(items, "off", enabled=False) is items


def test_progress_validation():
    with pytest.raises(TypeError, match="desc"):
        progress([1], 5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="total"):
        progress([1], "x", total=-1)
    with pytest.raises(TypeError, match="enabled"):
        progress([1], "x", enabled=1)  # type: ignore[arg-type]
