"""Reading sentence-transformers files: pooling (old and new spellings), Normalize, max_seq_length,
Matryoshka dimensions, the message modality; refusals for what is not served."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fleetserve.runtime.engine.embedding.st_config import EmbeddingSpec, read_embedding_spec
from fleetserve.runtime.engine.types import EngineError

TRANSFORMER = {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}
POOLING = {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}
NORMALIZE = {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}


def write(directory: Path, modules: list | None, pooling: dict | None = None, config: dict | None = None,
          sbert: dict | None = None, tokenizer: dict | None = None) -> Path:
    (directory / "config.json").write_text(json.dumps(config or {"architectures": ["BertModel"]}))
    if modules is not None:
        (directory / "modules.json").write_text(json.dumps(modules))
    if pooling is not None:
        (directory / "1_Pooling").mkdir()
        (directory / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    if sbert is not None:
        (directory / "sentence_bert_config.json").write_text(json.dumps(sbert))
    if tokenizer is not None:
        (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer))
    return directory


@pytest.mark.parametrize(("pooling", "mode"), [
    ({"word_embedding_dimension": 8, "pooling_mode_mean_tokens": True, "pooling_mode_cls_token": False}, "mean"),
    ({"word_embedding_dimension": 8, "pooling_mode_cls_token": True}, "cls"),
    ({"word_embedding_dimension": 8, "pooling_mode_lasttoken": True}, "lasttoken"),
    ({"word_embedding_dimension": 8}, "mean"),  # no flag set: sentence-transformers' default
    ({"embedding_dimension": 8, "pooling_mode": "cls"}, "cls"),
    ({"embedding_dimension": 8, "pooling_mode": ["lasttoken"]}, "lasttoken"),
])
def test_pooling_modes_old_and_new_spelling(tmp_path: Path, pooling: dict, mode: str) -> None:
    spec = read_embedding_spec(write(tmp_path, [TRANSFORMER, POOLING], pooling), "encoder")
    assert spec.pooling == mode and not spec.normalize


def test_normalize_and_max_seq_length_from_sentence_bert_config(tmp_path: Path) -> None:
    spec = read_embedding_spec(write(tmp_path, [TRANSFORMER, POOLING, NORMALIZE], {"pooling_mode": "mean"},
                                     sbert={"max_seq_length": 256}, tokenizer={"model_max_length": 512}), "encoder")
    assert spec.normalize and spec.max_seq_length == 256 and spec.message_format == "auto"


def test_max_seq_length_from_the_tokenizer_and_modality(tmp_path: Path) -> None:
    sbert = {"modality_config": {"text": {"method": "forward"}, "message": {"method": "forward", "format": "flat"}}}
    spec = read_embedding_spec(write(tmp_path, [TRANSFORMER, POOLING], {"pooling_mode": "lasttoken"}, sbert=sbert,
                                     tokenizer={"model_max_length": 96}), "decoder")
    assert spec.max_seq_length == 96 and spec.message_format == "flat"


def test_unbounded_tokenizer_length_and_text_only_modality(tmp_path: Path) -> None:
    sbert = {"modality_config": {"text": {"method": "forward"}}}
    spec = read_embedding_spec(write(tmp_path, [TRANSFORMER, POOLING], {"pooling_mode": "cls"}, sbert=sbert,
                                     tokenizer={"model_max_length": 1e30}), "encoder")
    assert spec.max_seq_length is None and spec.message_format is None


def test_defaults_without_sentence_transformers_files(tmp_path: Path) -> None:
    assert read_embedding_spec(write(tmp_path, None), "encoder") == EmbeddingSpec(
        "cls", True, None, from_sentence_transformers=False)
    assert read_embedding_spec(tmp_path, "decoder").pooling == "lasttoken"


def test_matryoshka_declarations(tmp_path: Path) -> None:
    spec = read_embedding_spec(write(tmp_path, None, config={"architectures": ["BertModel"],
                                                             "matryoshka_dimensions": [64, 16, 32]}), "encoder")
    assert spec.matryoshka_dimensions == (16, 32, 64)
    assert spec.check_dimensions(32, 64) is None
    assert "one of 16, 32, 64" in spec.check_dimensions(20, 64)
    plain = EmbeddingSpec("mean", True, None)
    assert "does not support the dimensions" in plain.check_dimensions(8, 64)
    anything = EmbeddingSpec("mean", True, None, is_matryoshka=True)
    assert anything.check_dimensions(8, 64) is None and "at most" in anything.check_dimensions(65, 64)


@pytest.mark.parametrize(("modules", "pooling", "match"), [
    ([TRANSFORMER, {"idx": 1, "path": "2_Dense", "type": "sentence_transformers.models.Dense"}], None, "Dense"),
    ([TRANSFORMER], None, "no Pooling"),
    ([TRANSFORMER, POOLING], {"pooling_mode": "max"}, "max"),
    ([TRANSFORMER, POOLING], {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": True}, "cls"),
    ([{**TRANSFORMER, "path": "0_Transformer"}, POOLING], {"pooling_mode": "cls"}, "root"),
])
def test_refuses_what_it_cannot_serve(tmp_path: Path, modules: list, pooling: dict | None, match: str) -> None:
    with pytest.raises(EngineError, match=match):
        read_embedding_spec(write(tmp_path, modules, pooling), "encoder")
