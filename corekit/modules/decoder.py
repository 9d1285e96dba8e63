"""The decoder-only language model (GPT, Radford et al. 2019), from ready-built parts."""

from __future__ import annotations

import math

import torch
from torch import nn

from corekit.modules.attention import AttnBatch
from corekit.modules.kv_cache import KVCache
from corekit.modules.positional import Positional


class Decoder(nn.Module):
    """Token embedding -> positional scheme -> blocks -> final norm -> LM head."""

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        context_length: int,
        positional: Positional,
        blocks: list[nn.Module],
        final_norm: nn.Module,
        *,
        tie_embeddings: bool = True,
        dropout: float = 0.0,
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.context_length = context_length
        self.tok_emb = nn.Embedding(vocab_size, d_model)
        self.positional = positional
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(blocks)
        self.norm = final_norm
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        self.reset_parameters(init_std)
        if tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight

    def reset_parameters(self, std: float) -> None:
        """GPT-2 initialisation: N(0, std) weights, zero biases, and residual projections
        scaled by 1/sqrt(2 * n_layers). Norms keep their own initialisation."""
        scaled = std / math.sqrt(2 * max(len(self.blocks), 1))
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, scaled if getattr(module, "residual_projection", False) else std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, 0.0, std)

    def new_cache(self) -> KVCache:
        """An empty KV cache for this model."""
        return KVCache(len(self.blocks))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Logits for every position.

        Args:
            input_ids: (B, T) token ids of the new tokens.
            attention_mask: (B, past + T), 1 for real tokens and 0 for padding, covering
                the cached tokens too; None when nothing is padded. Positions count real
                tokens only, so a left-padded row is encoded like the same row unpadded.
            cache: a KV cache to read past keys from and append the new ones to.

        Returns:
            (B, T, vocab_size) logits.
        """
        batch_size, seq_len = input_ids.shape
        past = cache.length if cache is not None else 0
        if attention_mask is None:
            # (1, T): every row has the same positions, so position tables broadcast over the
            # batch instead of being gathered (and their gradients scattered) once per row.
            positions = torch.arange(past, past + seq_len, device=input_ids.device)[None]
            key_padding = None
        else:
            if attention_mask.shape != (batch_size, past + seq_len):
                raise ValueError(
                    f"attention_mask has shape {tuple(attention_mask.shape)}; expected "
                    f"(batch, past + new) = {(batch_size, past + seq_len)}"
                )
            key_padding = attention_mask.bool()
            positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, past:]  # (B, T)
        batch = AttnBatch(self.positional, positions, past, key_padding)

        x = self.tok_emb(input_ids)  # (B, T, d_model)
        pos = self.positional.embed(positions)
        if pos is not None:
            x = x + pos.to(x.dtype)
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            x = block(x, batch, cache.layer(i) if cache is not None else None)
        return self.lm_head(self.norm(x))  # (B, T, vocab)
