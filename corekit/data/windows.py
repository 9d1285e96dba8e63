"""Training and validation windows over token shards.

A window is ``context_length + 1`` consecutive tokens: inputs are the first
``context_length``, targets the last ``context_length`` (shifted by one).

Train windows are a pure function of ``(seed, index)``, so any worker, rank or resumed run
computes the same window for the same index. Each shard is cut into chunks of
``context_length`` tokens; index ``i`` falls in epoch ``i // n_chunks``, whose chunk order
is a seeded pseudo-random permutation (a Feistel network with cycle walking, Black &
Rogaway 2002), shifted by a per-epoch offset so epochs see different alignments. Within an
epoch every chunk is used once, so ranks given disjoint indices (a
``DistributedSampler``) see disjoint windows. Nothing of size ``n_chunks`` is stored,
which keeps this usable for corpora of any size.

Validation windows are fixed: non-overlapping windows spread evenly over the val shards.
"""

from __future__ import annotations

import bisect
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from corekit.data.shards import read_manifest, shard_problem
from corekit.errors import CorekitError

MASK64 = (1 << 64) - 1


def mix64(x: int) -> int:
    """SplitMix64's finaliser: a fast, well-mixing 64-bit hash."""
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def permute(index: int, n: int, key: int, rounds: int = 4) -> int:
    """A bijection of ``[0, n)`` chosen by ``key``: ``index``'s place in a shuffled order."""
    if not 0 <= index < n:
        raise IndexError(f"index {index} outside [0, {n})")
    half = max(1, ((n - 1).bit_length() + 1) // 2)
    mask = (1 << half) - 1
    x = index
    while True:  # cycle-walk until the value lands inside [0, n)
        left, right = x >> half, x & mask
        for r in range(rounds):
            left, right = right, left ^ (mix64(key ^ (r << 56) ^ right) & mask)
        x = (left << half) | right
        if x < n:
            return x


class ShardSet:
    """The shards of one split, opened lazily as read-only memory maps."""

    def __init__(self, data_dir: str | Path, split: str, *, check_hash: bool = False) -> None:
        self.data_dir = Path(data_dir)
        manifest = read_manifest(self.data_dir)
        if manifest is None or not manifest.get("complete"):
            raise CorekitError(
                f"{self.data_dir} holds no complete token shards; run `corekit data prepare` first"
            )
        self.dtype = np.dtype(manifest["config"]["dtype"])
        self.entries = [e for e in manifest["shards"][split] if e["tokens"] > 0]
        for entry in self.entries:
            problem = shard_problem(self.data_dir, entry, self.dtype.itemsize, check_hash,
                                    vocab_size=manifest["config"].get("vocab_size"))
            if problem is not None:
                raise CorekitError(f"{problem}; run `corekit data prepare` to rebuild it")
        self.eot_id = manifest["config"]["eot_id"]
        self._maps: dict[int, np.ndarray] = {}

    def tokens(self, shard: int) -> np.ndarray:
        """Shard ``shard`` as a 1-D array (memory-mapped, opened on first use)."""
        if shard not in self._maps:
            path = self.data_dir / self.entries[shard]["file"]
            self._maps[shard] = np.memmap(path, dtype=self.dtype, mode="r")
        return self._maps[shard]

    def __getstate__(self) -> dict[str, Any]:
        # worker processes reopen the maps themselves instead of copying them
        return {**self.__dict__, "_maps": {}}


def _window(tokens: np.ndarray, start: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    window = torch.from_numpy(tokens[start:start + length + 1].astype(np.int64))
    return window[:-1], window[1:]  # inputs (T,), targets (T,)


class TrainWindows(Dataset):
    """Seeded random windows: item ``i`` is window ``offset + i``, a pure function of the seed
    and that index. ``offset`` lets a resumed run start where the interrupted one stopped.

    The length stays ``num_samples`` whatever the offset: Lightning restores its batch count
    inside the epoch, and a shorter dataset would end that epoch early and start it again.
    """

    def __init__(
        self, shards: ShardSet, context_length: int, seed: int, num_samples: int | None = None, offset: int = 0
    ) -> None:
        self.shards, self.length, self.seed = shards, context_length, seed
        # room for a shift of up to length - 1 tokens and the one extra target token
        counts = [max(0, (e["tokens"] - context_length) // context_length) for e in shards.entries]
        self.cumulative = np.cumsum(counts).tolist()
        self.n_chunks = self.cumulative[-1] if counts else 0
        if self.n_chunks == 0:
            total = sum(e["tokens"] for e in shards.entries)
            raise CorekitError(
                f"the train split has {total} tokens, too few for one window of context_length="
                f"{context_length} (+1); add documents or lower model.context_length"
            )
        self.num_samples = num_samples or self.n_chunks
        self.offset = offset

    def __len__(self) -> int:
        return self.num_samples

    def locate(self, index: int) -> tuple[int, int]:
        """``(shard, start token)`` of window ``index``."""
        epoch, pos = divmod(index, self.n_chunks)
        key = mix64(self.seed * 0x100000001B3 + epoch)
        chunk = permute(pos, self.n_chunks, key)
        shard = bisect.bisect_right(self.cumulative, chunk)
        within = chunk - (self.cumulative[shard - 1] if shard else 0)
        return shard, key % self.length + within * self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        shard, start = self.locate(self.offset + index)
        return _window(self.shards.tokens(shard), start, self.length)


class ValWindows(Dataset):
    """``max_windows`` non-overlapping windows spread evenly over the val split, always the same."""

    def __init__(self, shards: ShardSet, context_length: int, max_windows: int) -> None:
        self.shards, self.length = shards, context_length
        counts = [max(0, (e["tokens"] - 1) // context_length) for e in shards.entries]
        total = sum(counts)
        picks = (sorted({round(k * total / max_windows) for k in range(max_windows)})
                 if total > max_windows else range(total))
        cumulative = np.cumsum(counts).tolist()
        self.starts: list[tuple[int, int]] = []
        for chunk in picks:
            shard = bisect.bisect_right(cumulative, chunk)
            within = chunk - (cumulative[shard - 1] if shard else 0)
            self.starts.append((shard, within * context_length))
        if not self.starts:
            raise CorekitError(
                f"the val split is too small for one window of context_length={context_length} (+1); "
                "raise data.val_fraction or add documents"
            )

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        shard, start = self.starts[index]
        return _window(self.shards.tokens(shard), start, self.length)
