"""A minimal GPT in the nanoGPT style, the reference of ``train_speed.py``.

One ``nn.Module`` per part, ``F.scaled_dot_product_attention``, the loss inside ``forward`` and
fused AdamW. Options cover the shapes the benchmark compares: layernorm or RMSNorm, GELU (exact
or tanh) or SwiGLU, learned positions or RoPE, and grouped KV heads. ``kit_to_reference`` maps a
corekit model's parameter names to this model's, so both can hold the same weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class RefConfig:
    vocab: int
    context: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    hidden: int
    norm: str  # layernorm | rmsnorm
    eps: float
    activation: str  # gelu | gelu_tanh | swiglu
    position: str  # learned | rope
    rope_theta: float
    bias: bool


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def make_norm(cfg: RefConfig) -> nn.Module:
    if cfg.norm == "rmsnorm":
        return RMSNorm(cfg.d_model, cfg.eps)
    return nn.LayerNorm(cfg.d_model, eps=cfg.eps, bias=cfg.bias)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: RefConfig) -> None:
        super().__init__()
        self.cfg = cfg
        head = cfg.d_model // cfg.n_heads
        self.c_attn = nn.Linear(cfg.d_model, (cfg.n_heads + 2 * cfg.n_kv_heads) * head, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)

    def forward(self, x, rope):
        B, T, C = x.shape
        nh, nkv = self.cfg.n_heads, self.cfg.n_kv_heads
        hs = C // nh
        q, k, v = self.c_attn(x).split([nh * hs, nkv * hs, nkv * hs], dim=2)
        q = q.view(B, T, nh, hs).transpose(1, 2)
        k = k.view(B, T, nkv, hs).transpose(1, 2)
        v = v.view(B, T, nkv, hs).transpose(1, 2)
        if rope is not None:
            cos, sin = rope
            q = q * cos + torch.cat([-q[..., hs // 2:], q[..., : hs // 2]], dim=-1) * sin
            k = k * cos + torch.cat([-k[..., hs // 2:], k[..., : hs // 2]], dim=-1) * sin
        if nkv != nh:
            k = k.repeat_interleave(nh // nkv, dim=1)
            v = v.repeat_interleave(nh // nkv, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class MLP(nn.Module):
    def __init__(self, cfg: RefConfig) -> None:
        super().__init__()
        self.cfg = cfg
        gated = cfg.activation == "swiglu"
        self.c_fc = nn.Linear(cfg.d_model, cfg.hidden * (2 if gated else 1), bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.hidden, cfg.d_model, bias=cfg.bias)

    def forward(self, x):
        h = self.c_fc(x)
        if self.cfg.activation == "swiglu":
            gate, value = h.chunk(2, dim=-1)
            h = F.silu(gate) * value
        else:
            h = F.gelu(h, approximate="tanh" if self.cfg.activation == "gelu_tanh" else "none")
        return self.c_proj(h)


class Block(nn.Module):
    def __init__(self, cfg: RefConfig) -> None:
        super().__init__()
        self.ln_1, self.attn = make_norm(cfg), CausalSelfAttention(cfg)
        self.ln_2, self.mlp = make_norm(cfg), MLP(cfg)

    def forward(self, x, rope):
        x = x + self.attn(self.ln_1(x), rope)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, cfg: RefConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab, cfg.d_model)
        self.wpe = nn.Embedding(cfg.context, cfg.d_model) if cfg.position == "learned" else None
        self.h = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = make_norm(cfg)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab, bias=False)
        self.wte.weight = self.lm_head.weight  # weight tying
        if cfg.position == "rope":
            hs = cfg.d_model // cfg.n_heads
            inv = cfg.rope_theta ** (-torch.arange(0, hs, 2, dtype=torch.float32) / hs)
            angles = torch.outer(torch.arange(cfg.context, dtype=torch.float32), inv)
            angles = torch.cat([angles, angles], dim=-1)
            self.register_buffer("rope_cos", angles.cos(), persistent=False)
            self.register_buffer("rope_sin", angles.sin(), persistent=False)

    def forward(self, idx, targets):
        T = idx.shape[1]
        x = self.wte(idx)
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(T, device=idx.device))
        rope = (self.rope_cos[:T], self.rope_sin[:T]) if self.cfg.position == "rope" else None
        for block in self.h:
            x = block(x, rope)
        logits = self.lm_head(self.ln_f(x))
        return logits, F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.view(-1))

    def configure_optimizers(self, weight_decay: float, lr: float, betas, eps: float):
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=True)


def reference_config(spec, kit_model) -> RefConfig:
    m = spec.model
    norm, act, pos = m.norm.name, m.mlp.activation.name, m.position.name
    if m.layout != "pre" or norm not in ("layernorm", "rmsnorm") or pos not in ("learned", "rope") \
            or act not in ("gelu", "swiglu") or not m.tie_embeddings:
        raise SystemExit("the reference GPT covers pre-norm, tied, layernorm|rmsnorm, gelu|swiglu, "
                         f"learned|rope models, not {m}")
    if act == "gelu" and m.mlp.activation.approximate == "tanh":
        act = "gelu_tanh"
    if norm == "layernorm" and m.norm.bias is not None and m.norm.bias != m.bias:
        raise SystemExit("the reference's layernorm bias follows model.bias")
    return RefConfig(
        vocab=kit_model.vocab_size, context=m.context_length, d_model=m.d_model, n_layers=m.n_layers,
        n_heads=m.attention.n_heads, n_kv_heads=m.attention.kv_heads, hidden=kit_model.blocks[0].mlp.down.in_features,
        norm=norm, eps=m.norm.eps, activation=act, position=pos, rope_theta=getattr(m.position, "theta", 10000.0),
        bias=m.bias,
    )


def kit_to_reference(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The kit's parameter names mapped to the reference's."""
    renames = [("tok_emb.", "wte."), ("positional.table.", "wpe."), ("blocks.", "h."), ("norm1.", "ln_1."),
               ("norm2.", "ln_2."), ("attn.qkv.", "attn.c_attn."), ("attn.out.", "attn.c_proj."),
               ("mlp.up.", "mlp.c_fc."), ("mlp.down.", "mlp.c_proj.")]
    out = {}
    for name, value in state.items():
        new = "ln_f." + name[len("norm."):] if name.startswith("norm.") else name
        for old, repl in renames:
            new = new.replace(old, repl)
        out[new] = value
    return out


def reference_from(spec, kit_model) -> GPT:
    """A reference GPT of the kit model's shape, holding the kit model's weights."""
    ref = GPT(reference_config(spec, kit_model)).to(next(kit_model.parameters()).device)
    ref.load_state_dict(kit_to_reference(kit_model.state_dict()), strict=True)
    return ref
