"""The Lightning DataModule that serves token windows to training.

Train windows come from :class:`~corekit.data.windows.TrainWindows` (seeded, a pure function
of the index) through a plain sequential sampler; under a distributed strategy Lightning
swaps in a ``DistributedSampler``, which hands each rank disjoint indices and so disjoint
windows. Validation uses a fixed set of windows.

Exact resume: Lightning does not restore a dataloader's position inside an epoch, so when
the train dataloader is built for a resumed run (after the checkpoint restored the global
step), the dataset starts at index ``global_step * accumulate * batch_size * world_size``.
Rank ``r`` then draws, at every step, exactly the windows an uninterrupted run would have.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader

from corekit.data.windows import ShardSet, TrainWindows, ValWindows


class TokenDataModule(L.LightningDataModule):
    """Windows of ``context_length + 1`` tokens from the shards in ``data_dir``."""

    def __init__(
        self,
        data_dir: str | Path,
        context_length: int,
        batch_size: int,
        *,
        seed: int = 1337,
        num_workers: int = 0,
        train_samples: int | None = None,
        val_windows: int = 64,
        check_hash: bool = True,
        accumulate: int = 1,
    ) -> None:
        """
        Args:
            data_dir: a directory written by ``corekit data prepare``.
            context_length: tokens per input sequence.
            batch_size: windows per batch (per process).
            seed: chooses the order of train windows.
            num_workers: DataLoader worker processes.
            train_samples: length of the train dataset (default: one pass over all chunks);
                indices past one pass continue into later epochs of the same stream.
            val_windows: most validation windows.
            check_hash: verify every shard's sha256 at setup, so a damaged shard is never read
                (sizes are always checked); turn off to skip reading hundreds of GB at start.
            accumulate: micro-batches per optimizer step (to find where a resumed run starts).
        """
        super().__init__()
        self.data_dir = Path(data_dir)
        self.context_length, self.batch_size = context_length, batch_size
        self.seed, self.num_workers = seed, num_workers
        self.train_samples, self.val_windows, self.check_hash = train_samples, val_windows, check_hash
        self.accumulate = accumulate
        self.train_set: TrainWindows | None = None
        self.val_set: ValWindows | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            train = ShardSet(self.data_dir, "train", check_hash=self.check_hash)
            self.train_set = TrainWindows(train, self.context_length, self.seed, self.train_samples)
        if self.val_set is None:
            val = ShardSet(self.data_dir, "val", check_hash=self.check_hash)
            self.val_set = ValWindows(val, self.context_length, self.val_windows)

    def _loader(self, dataset, drop_last: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=False,  # the dataset itself is the seeded shuffle
            drop_last=drop_last,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        trainer = getattr(self, "trainer", None)
        if trainer is not None:  # a resumed run continues at the next unseen window
            self.train_set.offset = trainer.global_step * self.accumulate * self.batch_size * trainer.world_size
        return self._loader(self.train_set, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        self.setup("validate")
        return self._loader(self.val_set, drop_last=False)
