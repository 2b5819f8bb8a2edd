import platform

import pytest

from fleetserve.runtime.engine.cpu_malloc import DEFAULT_TOP_PAD, ENV_TOP_PAD, top_pad_bytes, tune_malloc


def test_pad_defaults_and_reads_the_environment(monkeypatch):
    monkeypatch.delenv(ENV_TOP_PAD, raising=False)
    assert top_pad_bytes() == DEFAULT_TOP_PAD
    monkeypatch.setenv(ENV_TOP_PAD, "1048576")
    assert top_pad_bytes() == 1 << 20


@pytest.mark.parametrize("raw", ["lots", "-1", "1.5"])
def test_bad_pad_is_a_clear_error(monkeypatch, raw):
    monkeypatch.setenv(ENV_TOP_PAD, raw)
    with pytest.raises(ValueError, match=ENV_TOP_PAD):
        top_pad_bytes()


def test_zero_leaves_malloc_alone(monkeypatch):
    monkeypatch.setenv(ENV_TOP_PAD, "0")
    assert tune_malloc() is False


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_glibc_accepts_the_pad(monkeypatch):
    monkeypatch.delenv(ENV_TOP_PAD, raising=False)
    assert tune_malloc() is True
