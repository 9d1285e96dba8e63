"""Training windows over token shards, and the Lightning DataModule that serves them."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import model_section
from torch.utils.data import DataLoader, DistributedSampler

from corekit.data.datamodule import TokenDataModule
from corekit.data.shards import prepare_shards
from corekit.data.windows import ShardSet, TrainWindows, ValWindows, mix64, permute
from corekit.errors import CorekitError
from corekit.rundir import RunDir, ensure_tokenizer, file_sha256
from corekit.spec import load_spec

L = 16  # context length of most tests
WORDS = "the of and to in is was for on that with as by at from alpha beta gamma delta epsilon".split()


def build_data_dir(
    registry, root: Path, n_docs: int, shard_tokens: int, seed: int = 0, lo: int = 20, hi: int = 80
) -> Path:
    """Token shards (bytes tokenizer) of ``n_docs`` random documents; returns the data dir."""
    rng = random.Random(seed)
    corpus = root / "corpus"
    corpus.mkdir(parents=True)
    for i in range(n_docs):
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))
        (corpus / f"{i:04d}.txt").write_text(f"{i}: {words}\n", encoding="utf-8")
    spec = load_spec({"model": model_section(), "tokenizer": "bytes",
                      "data": {"paths": [str(corpus)], "min_chars": 1, "val_fraction": 0.2,
                               "shard_tokens": shard_tokens}}, registry=registry)
    run = RunDir(root / "run")
    tokenizer, _ = ensure_tokenizer(spec, run, registry)
    prepare_shards(run.data, spec.data, tokenizer, file_sha256(run.tokenizer), workers=1)
    return run.data


@pytest.fixture(scope="module")
def data_dir(registry, tmp_path_factory) -> Path:
    """About 30k train tokens in several shards, about 7k val tokens. Read-only: copy to damage."""
    path = build_data_dir(registry, tmp_path_factory.mktemp("windows"), 120, shard_tokens=6000)
    manifest = json.loads((path / "manifest.json").read_text())
    assert len(manifest["shards"]["train"]) >= 3
    return path


@pytest.fixture
def own_copy(data_dir, tmp_path) -> Path:
    return Path(shutil.copytree(data_dir, tmp_path / "data"))


def train_windows(data_dir, seed=1337, length=L, num_samples=None) -> TrainWindows:
    return TrainWindows(ShardSet(data_dir, "train"), length, seed, num_samples)


# --------------------------------------------------------------------------- permute
@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 1000, 4097])
@pytest.mark.parametrize("key", [0, 1, 12345, mix64(99), 2**64 - 1])
def test_permute_is_a_bijection(n, key):
    image = [permute(i, n, key) for i in range(n)]
    assert sorted(image) == list(range(n))


def test_permute_shuffles_and_depends_on_the_key():
    n = 1000
    a = [permute(i, n, 1) for i in range(n)]
    b = [permute(i, n, 2) for i in range(n)]
    assert a != list(range(n)) and a != b
    assert a == [permute(i, n, 1) for i in range(n)]
    assert sum(x == i for i, x in enumerate(a)) < 20  # not nearly the identity


@pytest.mark.parametrize("index,n", [(-1, 10), (10, 10), (0, 0)])
def test_permute_refuses_indices_outside_the_range(index, n):
    with pytest.raises(IndexError):
        permute(index, n, 0)


# --------------------------------------------------------------------------- train windows
def test_train_windows_are_shifted_by_one_and_come_from_the_shards(data_dir):
    ds = train_windows(data_dir)
    shards = ShardSet(data_dir, "train")
    assert len(ds) == ds.n_chunks > 1000
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.dtype == y.dtype == torch.int64 and x.shape == y.shape == (L,)
        assert torch.equal(x[1:], y[:-1])
        shard, start = ds.locate(i)
        tokens = np.asarray(shards.tokens(shard))
        assert start + L + 1 <= len(tokens)
        window = torch.from_numpy(tokens[start:start + L + 1].astype(np.int64))
        assert torch.equal(x, window[:-1]) and torch.equal(y, window[1:])


def test_train_windows_use_the_whole_shard_set(data_dir):
    ds = train_windows(data_dir)
    used = {ds.locate(i)[0] for i in range(len(ds))}
    assert used == set(range(len(ds.shards.entries)))


def test_train_windows_are_deterministic_per_seed(data_dir):
    a, b, c = train_windows(data_dir, seed=7), train_windows(data_dir, seed=7), train_windows(data_dir, seed=8)
    locs_a = [a.locate(i) for i in range(len(a))]
    assert locs_a == [b.locate(i) for i in range(len(b))]
    for i in range(0, len(a), 97):
        assert all(torch.equal(u, v) for u, v in zip(a[i], b[i]))
    locs_c = [c.locate(i) for i in range(len(c))]
    assert locs_c != locs_a
    assert sum(p == q for p, q in zip(locs_a, locs_c)) < len(a) // 10
    assert locs_a[:50] != sorted(locs_a[:50])  # shuffled, not in shard order


def test_within_an_epoch_every_window_is_a_distinct_chunk(data_dir):
    ds = train_windows(data_dir, num_samples=None)
    n = ds.n_chunks
    for epoch in range(2):
        ds2 = train_windows(data_dir, num_samples=2 * n)
        locs = [ds2.locate(epoch * n + i) for i in range(n)]
        assert len(set(locs)) == n
        by_shard: dict[int, list[int]] = {}
        for shard, start in locs:
            by_shard.setdefault(shard, []).append(start)
        for starts in by_shard.values():  # inputs never overlap
            starts.sort()
            assert all(b - a >= L for a, b in zip(starts, starts[1:]))
    assert len(ds) == n


def test_num_samples_continues_into_later_epochs(data_dir):
    n = train_windows(data_dir).n_chunks
    ds = train_windows(data_dir, num_samples=3 * n + 5)
    assert len(ds) == 3 * n + 5
    x, y = ds[3 * n + 4]
    assert x.shape == (L,) and torch.equal(x[1:], y[:-1])
    with pytest.raises(IndexError):
        ds[3 * n + 5]
    first, second = [ds.locate(i) for i in range(n)], [ds.locate(n + i) for i in range(n)]
    assert first != second  # a new order (and alignment) each epoch


def ranges(locs):
    return {(shard, start, start + L) for shard, start in locs}


def test_two_ranks_see_disjoint_windows(data_dir):
    ds = train_windows(data_dir)
    n = ds.n_chunks - ds.n_chunks % 2  # an even length: DistributedSampler pads odd ones by repeating
    ds = train_windows(data_dir, num_samples=n)
    per_rank = []
    for rank in range(2):
        sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=False)
        indices = list(sampler)
        assert len(indices) == n // 2
        per_rank.append([ds.locate(i) for i in indices])
        # the batches a rank's loader gives are the windows of its indices
        loader = DataLoader(ds, batch_size=8, sampler=sampler)
        x, y = next(iter(loader))
        assert torch.equal(x, torch.stack([ds[i][0] for i in indices[:8]])) and x.shape == (8, L)
        assert torch.equal(y, torch.stack([ds[i][1] for i in indices[:8]]))
    a, b = per_rank
    assert len(set(a)) == len(a) and len(set(b)) == len(b)
    assert not set(a) & set(b)
    # and the token ranges of their inputs do not overlap
    spans = sorted([(s, lo, hi, 0) for s, lo, hi in ranges(a)] + [(s, lo, hi, 1) for s, lo, hi in ranges(b)])
    for (s1, _, hi1, _), (s2, lo2, _, _) in zip(spans, spans[1:]):
        assert s1 != s2 or hi1 <= lo2


def test_num_workers_do_not_change_the_batches(data_dir):
    batches = {}
    for workers in (0, 2):
        dm = TokenDataModule(data_dir, L, batch_size=8, seed=5, num_workers=workers, val_windows=16)
        dm.setup("fit")
        batches[workers] = [b for _, b in zip(range(12), dm.train_dataloader())]
        batches[f"val{workers}"] = list(dm.val_dataloader())
    assert len(batches[0]) == 12
    for (x0, y0), (x2, y2) in zip(batches[0], batches[2], strict=True):
        assert torch.equal(x0, x2) and torch.equal(y0, y2)
    for (x0, y0), (x2, y2) in zip(batches["val0"], batches["val2"], strict=True):
        assert torch.equal(x0, x2) and torch.equal(y0, y2)


# --------------------------------------------------------------------------- val windows
def test_val_windows_are_fixed_and_non_overlapping(data_dir):
    shards = ShardSet(data_dir, "val")
    a, b = ValWindows(shards, L, 40), ValWindows(ShardSet(data_dir, "val"), L, 40)
    assert len(a) == 40 and a.starts == b.starts
    tokens = np.asarray(shards.tokens(0))
    for i in range(len(a)):
        x, y = a[i]
        assert torch.equal(x, b[i][0]) and torch.equal(y, b[i][1])
        assert torch.equal(x[1:], y[:-1]) and x.dtype == torch.int64 and x.shape == (L,)
        shard, start = a.starts[i]
        assert shard == 0 and start % L == 0  # on the chunk grid
        window = torch.from_numpy(tokens[start:start + L + 1].astype(np.int64))
        assert torch.equal(x, window[:-1]) and torch.equal(y, window[1:])
    starts = [start for _, start in a.starts]
    assert all(b - a_ >= L for a_, b in zip(starts, starts[1:]))  # non-overlapping, in order
    assert starts[-1] > len(tokens) // 2  # spread over the split, not bunched at its start


def test_val_windows_stop_at_the_end_of_the_split(data_dir):
    shards = ShardSet(data_dir, "val")
    every = ValWindows(shards, L, 10**9)
    total = sum((e["tokens"] - 1) // L for e in shards.entries)
    assert len(every) == total
    for shard, start in every.starts:
        assert start + L + 1 <= shards.entries[shard]["tokens"]


# --------------------------------------------------------------------------- the DataModule
def test_datamodule_serves_batches_of_the_right_shape(data_dir):
    dm = TokenDataModule(data_dir, L, batch_size=4, seed=3, val_windows=10)
    dm.setup("fit")
    train, val = dm.train_dataloader(), dm.val_dataloader()
    assert len(dm.train_set) == dm.train_set.n_chunks and len(train) == len(dm.train_set) // 4
    x, y = next(iter(train))
    assert x.shape == y.shape == (4, L) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert torch.equal(x, torch.stack([dm.train_set[i][0] for i in range(4)]))
    val_batches = list(val)
    assert [b[0].shape[0] for b in val_batches] == [4, 4, 2]  # val keeps its last, short batch
    assert all(b[0].shape[1] == L for b in val_batches)


def test_datamodule_train_samples_and_seed(data_dir):
    a = TokenDataModule(data_dir, L, batch_size=2, seed=1, train_samples=10)
    b = TokenDataModule(data_dir, L, batch_size=2, seed=2, train_samples=10)
    a.setup(), b.setup()
    assert len(a.train_set) == 10 and len(a.train_dataloader()) == 5
    xa = torch.cat([x for x, _ in a.train_dataloader()])
    xb = torch.cat([x for x, _ in b.train_dataloader()])
    assert xa.shape == (10, L) and not torch.equal(xa, xb)


def test_a_train_split_too_small_for_one_window_is_an_error(data_dir):
    with pytest.raises(CorekitError) as exc:
        TokenDataModule(data_dir, 100_000, batch_size=2).setup("fit")
    assert "context_length=100000" in str(exc.value) and "train" in str(exc.value)


def test_a_val_split_too_small_for_one_window_is_an_error(registry, tmp_path):
    data_dir = build_data_dir(registry, tmp_path, 30, shard_tokens=10**6)
    val_tokens = json.loads((data_dir / "manifest.json").read_text())["stats"]["val"]["tokens"]
    with pytest.raises(CorekitError, match="val split is too small"):
        ValWindows(ShardSet(data_dir, "val"), val_tokens, 4)


def test_a_missing_data_dir_is_an_error(tmp_path):
    with pytest.raises(CorekitError) as exc:
        TokenDataModule(tmp_path / "nowhere", L, batch_size=2).setup("fit")
    assert "corekit data prepare" in str(exc.value) and "nowhere" in str(exc.value)


def test_an_incomplete_data_dir_is_an_error(own_copy):
    manifest = json.loads((own_copy / "manifest.json").read_text())
    manifest["complete"] = False
    (own_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CorekitError, match="corekit data prepare"):
        ShardSet(own_copy, "train")


def test_a_truncated_shard_is_refused_not_read(own_copy):
    manifest = json.loads((own_copy / "manifest.json").read_text())
    victim = own_copy / manifest["shards"]["train"][1]["file"]
    victim.write_bytes(victim.read_bytes()[:-2])
    with pytest.raises(CorekitError) as exc:
        ShardSet(own_copy, "train")
    assert victim.name in str(exc.value) and "corekit data prepare" in str(exc.value)
    with pytest.raises(CorekitError, match="corekit data prepare"):
        TokenDataModule(own_copy, L, batch_size=2).setup("fit")
    ShardSet(own_copy, "val")  # the other split is fine


def test_a_corrupted_shard_is_refused_when_hashes_are_checked(own_copy):
    manifest = json.loads((own_copy / "manifest.json").read_text())
    victim = own_copy / manifest["shards"]["val"][0]["file"]
    raw = bytearray(victim.read_bytes())
    raw[3] ^= 0xFF
    victim.write_bytes(bytes(raw))
    ShardSet(own_copy, "val")  # sizes only, by default: fast for large corpora
    with pytest.raises(CorekitError, match="sha256"):
        ShardSet(own_copy, "val", check_hash=True)
    with pytest.raises(CorekitError, match="corekit data prepare"):
        TokenDataModule(own_copy, L, batch_size=2, check_hash=True).setup("fit")


# --------------------------------------------------------------------------- Lightning
@pytest.mark.slow
def test_the_datamodule_plugs_into_a_lightning_fit_loop(data_dir):
    import lightning as L_

    class Tiny(L_.LightningModule):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(257, 8)
            self.head = torch.nn.Linear(8, 257)
            self.seen = []

        def training_step(self, batch, _):
            x, y = batch
            self.seen.append(x.clone())
            logits = self.head(self.embed(x))
            return torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    torch.manual_seed(0)
    module = Tiny()
    dm = TokenDataModule(data_dir, L, batch_size=4, seed=11)
    trainer = L_.Trainer(max_steps=2, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=dm)
    assert trainer.global_step == 2 and len(module.seen) == 2
    assert module.seen[0].shape == (4, L)
    expected = torch.stack([dm.train_set[i][0] for i in range(4, 8)])
    assert torch.equal(module.seen[1], expected)


def test_an_offset_continues_the_same_stream(data_dir):
    """A resumed run's dataset (offset k) serves exactly items k, k+1, ... of the full one."""
    full = TrainWindows(ShardSet(data_dir, "train"), L, seed=3, num_samples=200)
    resumed = TrainWindows(ShardSet(data_dir, "train"), L, seed=3, num_samples=200, offset=72)
    assert len(resumed) == len(full)  # Lightning's restored batch count needs the full length
    for i in range(0, 128, 7):
        assert torch.equal(resumed[i][0], full[72 + i][0])
