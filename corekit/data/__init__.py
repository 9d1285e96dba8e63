"""The data path: corpus sources and cleaning, token shards, and the training DataModule."""
