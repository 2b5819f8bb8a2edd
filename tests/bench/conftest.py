"""Fixtures for the bench tests: trained test tokenizers and the timing-controlled fake server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from bench_fake_server import FakeBehaviour, FakeServer
from bench_tokenizers import byte_level_bpe, metaspace_bpe


@pytest.fixture(scope="session")
def bpe_tokenizer():
    return byte_level_bpe()


@pytest.fixture(scope="session")
def metaspace_tokenizer():
    return metaspace_bpe()


@pytest.fixture(scope="session", params=["byte-level", "metaspace"])
def any_tokenizer(request, bpe_tokenizer, metaspace_tokenizer):
    return bpe_tokenizer if request.param == "byte-level" else metaspace_tokenizer


@pytest.fixture(scope="session")
def tokenizer_dir(bpe_tokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bench-tokenizer")
    bpe_tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def fake_server() -> Iterator[FakeServer]:
    with FakeServer(FakeBehaviour()) as server:
        yield server
