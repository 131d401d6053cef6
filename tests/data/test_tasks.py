"""Synthetic tasks, each checked by an independent re-derivation of its answers."""
import re

import numpy as np
import pytest
import torch

from attnbench.data import make_task
from attnbench.data.tasks import TASKS


def rows(task, batch_size=16, index=0, split="train"):
    x, y, mask = task.batch(split, index, batch_size, task.seq_len)
    assert x.shape == y.shape == mask.shape == (batch_size, task.seq_len)
    assert x.dtype == y.dtype == torch.int64 and mask.dtype == torch.bool
    assert int(x.min()) >= 0 and int(x.max()) < task.vocab_size and int(y.max()) < task.vocab_size
    return x.numpy(), y.numpy(), mask.numpy()


@pytest.mark.parametrize("seq_len, pairs", [(64, 4), (128, 8), (256, 16), (512, 64), (256, "mamba2")])
@pytest.mark.parametrize("random_non_queries", [False, True])
def test_mqar_answers_are_dictionary_lookups(seq_len, pairs, random_non_queries):
    task = make_task("mqar", seq_len=seq_len, num_kv_pairs=pairs, random_non_queries=random_non_queries)
    P, half = task.params["num_kv_pairs"], 4096
    assert task.vocab_size == 8192 and P == (seq_len // 4 if pairs == "mamba2" else pairs)
    for x, y, m in zip(*rows(task)):
        kv = x[:2 * P]
        table = dict(zip(kv[0::2].tolist(), kv[1::2].tolist()))
        assert len(table) == P and set(table.values()).__len__() == P
        assert all(1 <= k < half for k in table) and all(half <= v < 8192 for v in table.values())
        queried = np.flatnonzero(m)
        assert sorted(x[queried].tolist()) == sorted(table)  # every key asked once
        assert all(y[t] == table[x[t]] for t in queried)
        assert all(t >= 2 * P and (t - 2 * P) % 2 == 0 for t in queried)
        rest = np.ones(seq_len, bool)
        rest[:2 * P] = False
        rest[queried] = False
        if not random_non_queries:
            assert (x[rest] == 0).all()
        assert np.array_equal(y[~m][:-1], x[1:][~m[:-1]])  # unscored targets: the next input


def test_mqar_queries_follow_a_power_law():
    task = make_task("mqar", seq_len=256, num_kv_pairs=16)
    x, _, m = rows(task, batch_size=64)
    slots = (np.nonzero(m)[1] - 32) // 2  # 112 slots after the kv block
    assert np.mean(slots < 56) > 0.6  # uniform would give 0.5


def test_palindrome_reverses_back():
    task = make_task("palindrome", seq_len=41, vocab_size=30)
    n = task.params["length"]
    assert n == 20
    for x, y, m in zip(*rows(task)):
        sep = int(np.flatnonzero(x == 1)[0])
        body = x[:sep]
        assert sep == n and (body >= 2).all()
        assert np.flatnonzero(m).tolist() == list(range(n, 2 * n))
        assert np.array_equal(y[m][::-1], body)
        assert np.array_equal(x[sep + 1:2 * n], body[::-1][:-1])


def test_palindrome_shorter_body_scores_only_the_reversal():
    task = make_task("palindrome", seq_len=40, length=5)
    x, y, m = rows(task, batch_size=2)
    assert m.sum(1).tolist() == [5, 5] and (x[:, 11:] == 0).all()


def simulate_stacks(tokens, num_stacks):
    """Replay <push>/<pop> triples with Python lists; return {position of id: expected symbol}."""
    stacks = {i: [] for i in range(num_stacks)}
    expected = {}
    for j in range(len(tokens) // 3):
        op, sid, sym = tokens[3 * j:3 * j + 3]
        if op == 0:
            break
        assert op in (1, 2) and 3 <= sid < 3 + num_stacks
        if op == 1:
            stacks[sid - 3].append(sym)
        else:
            assert stacks[sid - 3], "popped an empty stack"
            expected[3 * j + 1] = stacks[sid - 3].pop()
    return expected


@pytest.mark.parametrize("seq_len, num_stacks", [(256, 64), (97, 3)])
def test_stack_pops_match_a_separate_simulation(seq_len, num_stacks):
    task = make_task("stack", seq_len=seq_len, num_stacks=num_stacks)
    for x, y, m in zip(*rows(task)):
        full = np.concatenate([x, y[-1:]]).tolist()
        expected = simulate_stacks(full, num_stacks)
        assert sorted(expected) == np.flatnonzero(m).tolist()
        assert all(y[t] == s for t, s in expected.items())
        assert len(expected) > 0


def check_dyck(full, k, m_depth):
    """Validate a Dyck prefix, <sep>, completion; return the positions (in full) of the completion."""
    opens, closes, stack = range(2, 2 + k), range(2 + k, 2 + 2 * k), []
    sep = full.index(1)
    for tok in full[:sep]:
        if tok in opens:
            stack.append(tok)
            assert len(stack) <= m_depth
        else:
            assert tok in closes and stack and stack.pop() == tok - k
    assert stack, "the prefix must leave brackets open"
    completion = full[sep + 1:sep + 1 + len(stack)]
    assert completion == [s + k for s in reversed(stack)]
    assert all(t == 0 for t in full[sep + 1 + len(stack):])
    return list(range(sep + 1, sep + 1 + len(stack)))


@pytest.mark.parametrize("seq_len, k, depth", [(200, 3, 5), (65, 2, 1), (63, 4, 31), (300, 4, 16)])
def test_dyck_brackets_revalidate(seq_len, k, depth):
    task = make_task("dyck", seq_len=seq_len, num_types=k, max_depth=depth)
    ends = []
    for x, y, m in zip(*rows(task, batch_size=32)):
        full = np.concatenate([x, y[-1:]]).tolist()
        answer_positions = check_dyck(full, k, depth)
        assert np.flatnonzero(m).tolist() == [p - 1 for p in answer_positions]
        assert full.index(1) >= seq_len - depth - 2  # the prefix is long
        ends.append(len(answer_positions))
    assert min(ends) >= 1 and max(ends) <= depth and (depth == 1 or len(set(ends)) > 1)


@pytest.mark.parametrize("depth", [None, 0.0, 0.5, 1.0])
def test_passkey_is_found_in_the_input(depth):
    task = make_task("passkey", seq_len=600, key_digits=6, depth=depth)
    for x, y, m in zip(*rows(task, batch_size=8)):
        text = task.decode(x)
        keys = re.findall(r"The pass key is (\d+)\. Remember it\. (\d+) is the pass key\.", text)
        assert len(keys) == 1 and keys[0][0] == keys[0][1] and len(keys[0][0]) == 6
        assert task.decode(y[m]) == keys[0][0] and m.sum() == 6 and m[-6:].all()
        assert text.endswith("What is the pass key? The pass key is " + keys[0][0][:-1])
        where = text.index("The pass key is") / len(text)
        if depth == 0.0:
            assert text.index("The pass key is") < 200
        if depth == 1.0:
            assert where > 0.8


@pytest.mark.parametrize("name", sorted(TASKS))
def test_deterministic_by_seed_and_index(name):
    seq_len = 300
    a, b = make_task(name, seq_len=seq_len, seed=3), make_task(name, seq_len=seq_len, seed=3)
    for split in ("train", "val"):
        for got, again in zip(a.batch(split, 5, 4, seq_len), b.batch(split, 5, 4, seq_len)):
            assert torch.equal(got, again)
    x = a.batch("train", 5, 4, seq_len)[0]
    assert not torch.equal(x, a.batch("train", 6, 4, seq_len)[0])
    assert not torch.equal(x, a.batch("val", 5, 4, seq_len)[0])
    assert not torch.equal(x, make_task(name, seq_len=seq_len, seed=4).batch("train", 5, 4, seq_len)[0])
    assert a.bytes_per_token("val") is None and a.describe()["params"] == a.params


@pytest.mark.parametrize("name", ["mqar", "palindrome", "stack", "dyck"])
def test_token_names_round_trip(name):
    task = make_task(name, seq_len=64)
    x = task.batch("val", 0, 1, 64)[0][0]
    assert task.encode(task.decode(x)) == x.tolist()


@pytest.mark.parametrize("name, kwargs, field", [
    ("nope", dict(seq_len=64), "name"),
    ("mqar", dict(seq_len=64, num_kv_pairs=17), "num_kv_pairs"),
    ("mqar", dict(seq_len=64, num_kv_pairs=0), "num_kv_pairs"),
    ("mqar", dict(seq_len=64, num_kv_pairs=8, vocab_size=16), "vocab_size"),
    ("mqar", dict(seq_len=2), "seq_len"),
    ("mqar", dict(seq_len=64, num_pairs=4), "num_pairs"),
    ("palindrome", dict(seq_len=1), "seq_len"),
    ("palindrome", dict(seq_len=20, length=11), "length"),
    ("palindrome", dict(seq_len=20, vocab_size=3), "vocab_size"),
    ("stack", dict(seq_len=64, push_prob=1.0), "push_prob"),
    ("stack", dict(seq_len=64, num_stacks=0), "num_stacks"),
    ("stack", dict(seq_len=4), "seq_len"),
    ("stack", dict(seq_len=64, vocab_size=60), "vocab_size"),
    ("dyck", dict(seq_len=64, max_depth=0), "max_depth"),
    ("dyck", dict(seq_len=20, max_depth=10), "seq_len"),
    ("dyck", dict(seq_len=64, num_types=0), "num_types"),
    ("passkey", dict(seq_len=100), "seq_len"),
    ("passkey", dict(seq_len=600, depth=1.5), "depth"),
    ("passkey", dict(seq_len=600, key_digits=0), "key_digits"),
    ("passkey", dict(seq_len=600, vocab_size=100), "vocab_size"),
    ("mqar", dict(seq_len=64, seed=-1), "seed"),
])
def test_bad_parameters_raise_naming_them(name, kwargs, field):
    with pytest.raises(ValueError, match=field):
        make_task(name, **kwargs)


def test_batch_checks_its_arguments():
    task = make_task("palindrome", seq_len=32)
    with pytest.raises(ValueError, match="seq_len"):
        task.batch("train", 0, 2, 64)
    with pytest.raises(ValueError, match="split"):
        task.batch("test", 0, 2, 32)
    with pytest.raises(ValueError, match="batch_size"):
        task.batch("train", 0, 0, 32)
