"""BPE training and caching, .bin files, Hugging Face failures, option checking."""
import sys
import time
import types

import numpy as np
import pytest
import torch

from attnbench.data import make_dataset, tokenizer as tok_mod
from attnbench.data.binfile import LLMC_MAGIC

SAMPLE = "".join(f"To be, or not to be {i}: that is the question.\ndef f{i}(x):\n    return x * {i}\n"
                 for i in range(400))


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(SAMPLE, encoding="utf-8")
    return str(path)


@pytest.fixture
def count_bpe_training(monkeypatch):
    calls = []
    real = tok_mod.train_bpe

    def counting(*args, **kwargs):
        calls.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(tok_mod, "train_bpe", counting)
    return calls


def test_bpe_trains_caches_and_round_trips(text_file, tmp_path, count_bpe_training):
    ds = make_dataset("text", paths=[text_file], tokenizer="bpe", bpe_vocab_size=400, cache_dir=tmp_path)
    assert count_bpe_training == [400] and 256 < ds.vocab_size <= 400
    assert ds.bytes_per_token("train") > 2  # merges compress this repetitive text
    again = make_dataset("text", paths=[text_file], tokenizer="bpe", bpe_vocab_size=400, cache_dir=tmp_path)
    assert count_bpe_training == [400]  # loaded from the cache, not retrained
    np.testing.assert_array_equal(again.shards["train"][0], ds.shards["train"][0])
    for text in ("To be, or not to be", "naïve 🎭 unseen\r\n\t  spaces  ", SAMPLE[:500]):
        assert ds.decode(ds.encode(text)) == text
    assert ds.decode(ds.shards["val"][0]) + "" == SAMPLE[len(ds.decode(ds.shards["train"][0])):]
    make_dataset("text", paths=[text_file], tokenizer="bpe", bpe_vocab_size=300, cache_dir=tmp_path)
    assert count_bpe_training == [400, 300]  # another vocab size is another tokenizer


def test_bpe_learns_from_train_split_only(tmp_path, count_bpe_training):
    path = tmp_path / "two.txt"
    path.write_text("aaaa bbbb\n" * 900 + "zqzq xyxy\n" * 100, encoding="utf-8")  # the tail is val
    ds = make_dataset("text", paths=[str(path)], tokenizer="bpe", bpe_vocab_size=300,
                      val_fraction=0.1, cache_dir=tmp_path)
    assert len(ds.encode("aaaa")) == 1 and len(ds.encode(" zqzq")) > 1


def write_raw(path, ids, dtype):
    np.asarray(ids, dtype=dtype).tofile(path)
    return str(path)


def test_bin_source_reads_raw_files(tmp_path):
    ids = (np.arange(1000) * 7) % 500
    path = write_raw(tmp_path / "tokens.bin", ids, np.uint16)
    ds = make_dataset("bin", paths=[path], cache_dir=tmp_path)
    assert ds.vocab_size == 500 and ds.bytes_per_token("val") is None
    assert ds.num_tokens("train") == 950 and ds.num_tokens("val") == 50
    x, y, mask = ds.batch("val", 0, 1, 49)
    assert x[0].tolist() == ids[950:999].tolist() and y[0].tolist() == ids[951:1000].tolist()
    with pytest.raises(ValueError, match="tokenizer"):
        ds.decode([1, 2])
    big = write_raw(tmp_path / "big.bin", [70_000, 3, 69_999, 5] * 50, np.uint32)
    ds32 = make_dataset("bin", paths=[big], bin_dtype="uint32", cache_dir=tmp_path)
    assert ds32.vocab_size == 70_001 and ds32.batch("train", 0, 2, 8)[0].max() <= 70_000


def test_bin_split_by_file_name_and_llmc_header(tmp_path):
    header = np.zeros(256, dtype=np.int32)
    header[:3] = (LLMC_MAGIC, 1, 300)
    train = tmp_path / "data_train_000001.bin"
    with open(train, "wb") as f:
        f.write(header.tobytes() + np.arange(300, dtype=np.uint16).tobytes())
    val = write_raw(tmp_path / "data_val_000000.bin", np.arange(100, 200), np.uint16)
    ds = make_dataset("bin", paths=[str(tmp_path / "*.bin")], cache_dir=tmp_path)
    assert ds.num_tokens("train") == 300 and ds.num_tokens("val") == 100
    assert ds.batch("val", 0, 1, 10)[0][0].tolist() == list(range(100, 110))
    assert int(ds.shards["train"][0][0]) == 0  # the header was skipped
    with pytest.raises(ValueError, match="bin_dtype"):
        make_dataset("bin", paths=[str(train)], bin_dtype="uint32", cache_dir=tmp_path)


def test_hf_without_datasets_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(ImportError, match=r"pip install 'attnbench\[hf\]'"):
        make_dataset("hf", hf_name="roneneldan/TinyStories", cache_dir=tmp_path)


class FakeRows:
    column_names = ["text", "id"]
    _fingerprint = "fake"

    def __init__(self, texts):
        self.texts = texts

    def __len__(self):
        return len(self.texts)

    def __getitem__(self, s):
        return {"text": self.texts[s], "id": list(range(len(self.texts)))[s]}


def fake_datasets(monkeypatch, load_dataset):
    module = types.ModuleType("datasets")
    module.load_dataset = load_dataset
    module.DatasetDict = dict
    monkeypatch.setitem(sys.modules, "datasets", module)


def test_hf_offline_fails_fast_with_clear_message(monkeypatch, tmp_path):
    def offline(name, split):
        raise ConnectionError(f"Couldn't reach '{name}' on the Hub (LocalEntryNotFoundError)")

    fake_datasets(monkeypatch, offline)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(ValueError, match=r"hf_name='roneneldan/TinyStories'.*HF_HUB_OFFLINE"):
        make_dataset("hf", hf_name="roneneldan/TinyStories", cache_dir=tmp_path)
    assert time.monotonic() - start < 5


def test_hf_unreachable_hub_fails_fast_without_calling_datasets(monkeypatch, tmp_path):
    def must_not_run(name, split):
        raise AssertionError("datasets was asked while the Hub is unreachable")

    fake_datasets(monkeypatch, must_not_run)
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    start = time.monotonic()
    with pytest.raises(ValueError, match=r"did not answer.*hf_name="):
        make_dataset("hf", hf_name="roneneldan/TinyStories", cache_dir=tmp_path)
    assert time.monotonic() - start < 5


def test_hf_rows_become_documents_split_by_hash(monkeypatch, tmp_path):
    rows = [f"story {i}: once upon a time.\n" for i in range(500)]
    fake_datasets(monkeypatch, lambda name, split: FakeRows(rows))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ds = make_dataset("hf", hf_name="some/stories", cache_dir=tmp_path)
    train, val = ds.decode(ds.shards["train"][0]), ds.decode(ds.shards["val"][0])
    val_rows = [r for r in rows if r in val]
    assert 5 <= len(val_rows) <= 50 and len(train) + len(val) == len("".join(rows))
    assert all(r not in train for r in val_rows)
    with pytest.raises(ValueError, match="hf_text_field.*columns: text, id"):
        make_dataset("hf", hf_name="some/stories", hf_text_field="story", cache_dir=tmp_path)


@pytest.mark.parametrize("kwargs, field", [
    (dict(source="wikipedia"), "source"),
    (dict(tokenizer="wordpiece"), "tokenizer"),
    (dict(val_fraction=0.0), "val_fraction"),
    (dict(val_fraction=1.0), "val_fraction"),
    (dict(val_fraction=-0.5), "val_fraction"),
    (dict(bin_dtype="int8"), "bin_dtype"),
    (dict(max_bytes=0), "max_bytes"),
    (dict(tokenizer="bpe", bpe_vocab_size=100), "bpe_vocab_size"),
    (dict(source="text"), "paths"),
    (dict(source="text", paths=["/no/such/file.txt"]), "paths"),
    (dict(source="text", paths=["/no/such/*.txt"]), "paths"),
    (dict(source="bin", paths=["/no/such/file.bin"]), "paths"),
    (dict(source="embedded", paths=["x.txt"]), "paths"),
    (dict(source="hf"), "hf_name"),
    (dict(seed=-1), "seed"),
])
def test_bad_options_raise_naming_the_field(kwargs, field, tmp_path):
    with pytest.raises(ValueError, match=field):
        make_dataset(cache_dir=tmp_path, **kwargs)


def test_bad_batch_arguments_raise(text_file, tmp_path):
    ds = make_dataset("text", paths=[text_file], cache_dir=tmp_path)
    with pytest.raises(ValueError, match="seq_len"):
        ds.batch("val", 0, 1, ds.num_tokens("val"))  # needs seq_len + 1 tokens
    with pytest.raises(ValueError, match="split"):
        ds.batch("test", 0, 1, 8)
    with pytest.raises(ValueError, match="batch_size"):
        ds.batch("train", 0, 0, 8)
    with pytest.raises(ValueError, match="index"):
        ds.batch("train", -1, 1, 8)
    ds.batch("val", 0, 1, ds.num_tokens("val") - 1)  # the longest that fits
    assert isinstance(ds.batch("train", 0, 1, 8)[0], torch.Tensor)
