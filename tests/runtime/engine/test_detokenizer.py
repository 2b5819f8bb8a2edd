"""IncrementalDetokenizer: streaming equals a full decode, multi-byte characters, stop strings."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, normalizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from fleetserve.runtime.demo import default_demo_model_dir
from fleetserve.runtime.engine.detokenizer import DetokenizerDelta, IncrementalDetokenizer

REPLACEMENT = "\ufffd"
PLAIN_ADDED_TOKEN = "<tool_call>"  # an added token that is not special: kept by skip_special_tokens


@pytest.fixture(scope="module")
def tokenizer():
    """The demo model's tokenizer: byte-level BPE with ChatML special tokens."""
    return AutoTokenizer.from_pretrained(default_demo_model_dir("qwen2"))


@pytest.fixture(scope="module")
def byte_fallback_tokenizer():
    """A SentencePiece-style tokenizer (Llama, Mistral): characters outside the vocabulary become
    <0xNN> byte tokens, and an incomplete character decodes to one U+FFFD per byte."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2} | {f"<0x{b:02X}>": 3 + b for b in range(256)}
    for piece in ["▁", "h", "e", "l", "o", "w", "r", "d", "▁hello", "é"]:
        vocab[piece] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True))
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    backend.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    backend.add_special_tokens(["<s>", "</s>"])
    return PreTrainedTokenizerFast(tokenizer_object=backend, clean_up_tokenization_spaces=False)


def _byte_token_ids(tokenizer) -> dict[int, int]:
    """Byte value → id of the single-byte token (GPT-2's printable byte alphabet, rebuilt here)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + shifted)
            shifted += 1
    vocab = tokenizer.get_vocab()
    return {b: vocab[c] for b, c in chars.items()}


def _ids_for_bytes(tokenizer, data: bytes) -> list[int]:
    byte_ids = _byte_token_ids(tokenizer)
    return [byte_ids[b] for b in data]


def _stream(
    detok: IncrementalDetokenizer, ids: list[int], chunk_sizes: list[int] | None = None
) -> list[DetokenizerDelta]:
    sizes = iter(chunk_sizes or [])
    deltas, position = [], 0
    while position < len(ids):
        size = max(1, next(sizes, 1))
        deltas.append(detok.add_tokens(ids[position : position + size]))
        position += size
    return deltas


def test_character_split_over_byte_tokens_is_emitted_whole(tokenizer):
    ids = _ids_for_bytes(tokenizer, "a中🙂".encode())
    detok = IncrementalDetokenizer(tokenizer, [])
    texts = [delta.text for delta in _stream(detok, ids)]
    assert texts == ["a", "", "", "中", "", "", "", "🙂"]
    assert detok.flush() == ""
    assert detok.output_text == "a中🙂"


@pytest.mark.parametrize("text", ["naïve café 中文 🙂👍 done", "👩‍💻🇫🇷 über Größe", "plain ascii text"])
def test_streamed_text_equals_full_decode_without_replacement_chars(tokenizer, text):
    ids = tokenizer.encode(text)
    detok = IncrementalDetokenizer(tokenizer, tokenizer.encode("prompt: "))
    deltas = _stream(detok, ids)
    assert all(REPLACEMENT not in delta.text for delta in deltas)
    assert "".join(d.text for d in deltas) + detok.flush() == tokenizer.decode(ids) == text


def test_byte_fallback_character_is_emitted_whole(byte_fallback_tokenizer):
    tokenizer = byte_fallback_tokenizer
    ids = tokenizer.encode("hello 中🙂 é", add_special_tokens=False)
    tokens = tokenizer.convert_ids_to_tokens(ids)
    first_byte = tokens.index("<0xE4>")
    assert tokens[first_byte : first_byte + 7] == [
        "<0xE4>",
        "<0xB8>",
        "<0xAD>",
        "<0xF0>",
        "<0x9F>",
        "<0x99>",
        "<0x82>",
    ]
    detok = IncrementalDetokenizer(tokenizer, [])
    texts = [delta.text for delta in _stream(detok, ids)]
    assert texts[first_byte : first_byte + 7] == ["", "", "中", "", "", "", "🙂"]
    assert "".join(texts) + detok.flush() == tokenizer.decode(ids) == "hello 中🙂 é"


def test_stripped_leading_space_is_kept_after_a_prompt(byte_fallback_tokenizer):
    tokenizer = byte_fallback_tokenizer
    output = tokenizer.encode("world", add_special_tokens=False)  # "▁world": its space is stripped alone
    with_prompt = IncrementalDetokenizer(tokenizer, tokenizer.encode("hello", add_special_tokens=False))
    without_prompt = IncrementalDetokenizer(tokenizer, [])
    assert "".join(d.text for d in _stream(with_prompt, output)) == " world"
    assert "".join(d.text for d in _stream(without_prompt, output)) == tokenizer.decode(output) == "world"


# A byte-fallback decoder turns a whole run of byte tokens into U+FFFDs when the run is not valid
# UTF-8, valid characters before the bad byte included; a stream cannot know that in advance, so
# the equality with a full decode is checked on valid text.
@settings(max_examples=150, deadline=None)
@given(
    text=st.text(st.characters(exclude_categories=["Cs"]), max_size=20),
    chunk_sizes=st.lists(st.integers(1, 4)),
)
def test_byte_fallback_stream_equals_full_decode(byte_fallback_tokenizer, text, chunk_sizes):
    tokenizer = byte_fallback_tokenizer
    ids = tokenizer.encode(text, add_special_tokens=False)
    detok = IncrementalDetokenizer(tokenizer, [])
    deltas = _stream(detok, ids, chunk_sizes)
    if REPLACEMENT not in text:
        assert all(REPLACEMENT not in d.text for d in deltas)
    assert "".join(d.text for d in deltas) + detok.flush() == tokenizer.decode(ids)


class _CountingTokenizer:
    """Wraps a tokenizer and records how many ids each decode call gets."""

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer
        self.decoded_lengths: list[int] = []

    def decode(self, ids, **kwargs):
        self.decoded_lengths.append(len(ids))
        return self._tokenizer.decode(ids, **kwargs)


def test_decoding_cost_per_token_does_not_grow_with_the_output(tokenizer):
    counting = _CountingTokenizer(tokenizer)
    ids = tokenizer.encode("naïve café 中文 🙂 🦩 hello world " * 60)
    detok = IncrementalDetokenizer(counting, tokenizer.encode("prompt"))
    _stream(detok, ids)
    assert len(ids) > 300
    assert max(counting.decoded_lengths) <= 8  # a character's bytes plus the previous context
    assert detok.output_text + detok.flush() == tokenizer.decode(ids)


def test_invalid_bytes_are_released_by_flush(tokenizer):
    ids = _ids_for_bytes(tokenizer, b"ok\xe4\xb8")  # ends inside a character
    detok = IncrementalDetokenizer(tokenizer, [])
    assert "".join(d.text for d in _stream(detok, ids)) == "ok"
    assert detok.flush() == REPLACEMENT
    assert detok.output_text == tokenizer.decode(ids) == "ok" + REPLACEMENT


def test_permanent_replacement_char_is_emitted_once_later_text_arrives(tokenizer):
    ids = _ids_for_bytes(tokenizer, b"a\x80b")  # a lone continuation byte
    detok = IncrementalDetokenizer(tokenizer, [])
    assert [d.text for d in _stream(detok, ids)] == ["a", "", REPLACEMENT + "b"]


def test_prompt_ending_inside_a_character_does_not_corrupt_output(tokenizer):
    prompt = _ids_for_bytes(tokenizer, b"x" + "中".encode()[:2])
    output = _ids_for_bytes(tokenizer, "中".encode()[2:] + b"ab")
    detok = IncrementalDetokenizer(tokenizer, prompt)
    _stream(detok, output)
    detok.flush()
    assert detok.output_text == tokenizer.decode(output) == REPLACEMENT + "ab"


def test_leading_space_of_first_output_token_is_kept(tokenizer):
    prompt = tokenizer.encode("Hello")
    output = tokenizer.encode(" world")
    detok = IncrementalDetokenizer(tokenizer, prompt)
    assert "".join(d.text for d in _stream(detok, output)) == " world"


@pytest.mark.parametrize("skip", [True, False])
def test_special_tokens(tokenizer, skip):
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    tool = tokenizer.convert_tokens_to_ids(PLAIN_ADDED_TOKEN)
    ids = [*tokenizer.encode("Hi 🙂"), tool, *tokenizer.encode(" there"), im_end]
    detok = IncrementalDetokenizer(tokenizer, [], skip_special_tokens=skip)
    text = "".join(d.text for d in _stream(detok, ids)) + detok.flush()
    assert text == tokenizer.decode(ids, skip_special_tokens=skip)
    assert ("<|im_end|>" in text) is not skip
    assert PLAIN_ADDED_TOKEN in text


def test_stop_string_across_token_boundaries(tokenizer):
    ids = [
        *tokenizer.encode("Hello world. "),
        *_ids_for_bytes(tokenizer, b"ST"),
        *_ids_for_bytes(tokenizer, b"OP"),
    ]
    ids += tokenizer.encode(" after")
    detok = IncrementalDetokenizer(tokenizer, [], stop=["STOP"])
    deltas = _stream(detok, ids)
    assert [d.stop_str for d in deltas].count("STOP") == 1
    assert "".join(d.text for d in deltas) == "Hello world. "
    assert detok.output_text == "Hello world. "
    assert detok.stop_str == "STOP"
    assert detok.add_tokens(tokenizer.encode("more")) == DetokenizerDelta("", None)
    assert detok.flush() == ""


def test_stop_string_included_in_output(tokenizer):
    detok = IncrementalDetokenizer(tokenizer, [], stop=["<END>"], include_stop_str_in_output=True)
    deltas = _stream(detok, tokenizer.encode("text <END> tail"))
    assert "".join(d.text for d in deltas) == "text <END>"
    assert [d.stop_str for d in deltas if d.stop_str] == ["<END>"]


def test_possible_stop_prefix_is_held_back_until_resolved(tokenizer):
    detok = IncrementalDetokenizer(tokenizer, [], stop=["<END>"])
    assert detok.add_tokens(_ids_for_bytes(tokenizer, b"abc<EN")).text == "abc"
    assert detok.add_tokens(_ids_for_bytes(tokenizer, b"X")).text == "<ENX"
    assert detok.add_tokens(_ids_for_bytes(tokenizer, b"<")).text == ""
    assert detok.flush() == "<"
    assert detok.output_text == "abc<ENX<"
    assert detok.stop_str is None


def test_partial_stop_then_stop(tokenizer):
    detok = IncrementalDetokenizer(tokenizer, [], stop=["###"])
    assert detok.add_tokens(_ids_for_bytes(tokenizer, b"a##")).text == "a"
    assert detok.add_tokens(_ids_for_bytes(tokenizer, b"#b")) == DetokenizerDelta("", "###")
    assert detok.output_text == "a"


def test_stop_completing_first_wins(tokenizer):
    detok = IncrementalDetokenizer(tokenizer, [], stop=["world", "o w", "hello"])
    delta = detok.add_tokens(tokenizer.encode("say hello world"))
    assert delta == DetokenizerDelta("say ", "hello")
    detok = IncrementalDetokenizer(tokenizer, [], stop=["abcd", "bc"])
    assert detok.add_tokens(tokenizer.encode("xabcde")) == DetokenizerDelta("xa", "bc")


def _first_stop(text: str, stops: list[str]) -> tuple[int, str] | None:
    """Reference: the occurrence that ends first (then starts first), by brute force."""
    matches = [(i + len(s), i, s) for s in stops if s for i in range(len(text)) if text.startswith(s, i)]
    if not matches:
        return None
    _, start, stop = min(matches)
    return start, stop


def _check_stream(tokenizer, ids, chunk_sizes, stops, include, skip):
    detok = IncrementalDetokenizer(
        tokenizer, [], skip_special_tokens=skip, stop=stops, include_stop_str_in_output=include
    )
    max_held = max(len(s) for s in stops) - 1
    snapshots, sizes, position = [], iter(chunk_sizes), 0
    while position < len(ids) and detok.stop_str is None:
        size = next(sizes, 1)
        detok.add_tokens(ids[position : position + size])
        position += size
        snapshots.append(detok.output_text)
        if detok.stop_str is None:  # held back: at most max_held characters besides an unfinished character
            decoded = tokenizer.decode(ids[:position], skip_special_tokens=skip).rstrip(REPLACEMENT)
            assert len(detok.output_text) >= len(decoded) - max_held
    released = detok.output_text + detok.flush()
    full = tokenizer.decode(ids, skip_special_tokens=skip)
    match = _first_stop(full, stops)
    if match is None:
        assert released == full and detok.stop_str is None
    else:
        start, stop = match
        assert released == full[: start + (len(stop) if include else 0)]
        assert detok.stop_str == stop
    # Streaming only ever appends: nothing after (or, unless included, of) the stop string was emitted.
    assert all(released.startswith(snapshot) for snapshot in snapshots)
    assert detok.output_text == released


# Token ids, reduced modulo the vocabulary size by _in_vocab: single bytes (the first 256 ids), any
# token, and the added tokens at the end of the vocabulary (negative before reduction).
ANY_ID = st.one_of(st.integers(0, 255), st.integers(0, 2**16), st.integers(-5, -1))


def _in_vocab(tokenizer, ids: list[int]) -> list[int]:
    return [i % len(tokenizer) for i in ids]


FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FAST
@given(
    ids=st.lists(ANY_ID, max_size=40),
    chunk_sizes=st.lists(st.integers(1, 5), max_size=40),
    skip=st.booleans(),
    prompt=st.lists(ANY_ID, max_size=8),
)
def test_random_ids_stream_equals_full_decode(tokenizer, ids, chunk_sizes, skip, prompt):
    ids, prompt = _in_vocab(tokenizer, ids), _in_vocab(tokenizer, prompt)
    if tokenizer.decode(prompt).endswith(REPLACEMENT):
        prompt = []  # a prompt cut inside a character changes how the first output bytes decode
    detok = IncrementalDetokenizer(tokenizer, prompt, skip_special_tokens=skip)
    streamed = "".join(d.text for d in _stream(detok, ids, chunk_sizes)) + detok.flush()
    assert streamed == tokenizer.decode(ids, skip_special_tokens=skip)


@FAST
@given(
    text=st.text(st.characters(exclude_categories=["Cs"]), max_size=30),
    chunk_sizes=st.lists(st.integers(1, 4)),
)
def test_unicode_text_never_streams_replacement_chars(tokenizer, text, chunk_sizes):
    ids = tokenizer.encode(text)
    detok = IncrementalDetokenizer(tokenizer, tokenizer.encode("Q: "))
    deltas = _stream(detok, ids, chunk_sizes)
    if REPLACEMENT not in text:
        assert all(REPLACEMENT not in d.text for d in deltas)
    # the demo tokenizer normalizes to NFC, so compare with the normalized text
    assert "".join(d.text for d in deltas) + detok.flush() == unicodedata.normalize("NFC", text)


@st.composite
def _text_and_stops(draw):
    text = draw(st.text(st.sampled_from("ab c中🙂\n"), min_size=1, max_size=25))
    stops = []
    for _ in range(draw(st.integers(1, 3))):
        start = draw(st.integers(0, len(text) - 1))
        stops.append(text[start : start + draw(st.integers(1, 4))])
    if draw(st.booleans()):
        stops.append(draw(st.text(st.sampled_from("abc中"), min_size=1, max_size=3)))
    return text, stops


@FAST
@given(case=_text_and_stops(), chunk_sizes=st.lists(st.integers(1, 3)), include=st.booleans())
def test_stop_strings_on_random_text(tokenizer, case, chunk_sizes, include):
    text, stops = case
    _check_stream(tokenizer, tokenizer.encode(text), chunk_sizes, stops, include, skip=True)


@FAST
@given(
    ids=st.lists(ANY_ID, min_size=1, max_size=30),
    chunk_sizes=st.lists(st.integers(1, 3)),
    data=st.data(),
)
def test_stop_strings_on_random_ids(tokenizer, ids, chunk_sizes, data):
    ids = _in_vocab(tokenizer, ids)
    full = tokenizer.decode(ids)
    stops = [data.draw(st.text(st.sampled_from("e t" + REPLACEMENT), min_size=1, max_size=2))]
    if full:
        start = data.draw(st.integers(0, len(full) - 1))
        stops.append(full[start : start + data.draw(st.integers(1, 3))])
    _check_stream(tokenizer, ids, chunk_sizes, stops, include=data.draw(st.booleans()), skip=True)
