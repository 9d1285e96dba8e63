"""Generate from an export bundle with onnxruntime, numpy and HF ``tokenizers`` only: no torch.

:class:`EdgeModel` loads a bundle (checking the manifest's sha256s), runs the graph's prefill
on the (left-padded) prompts and then one token per step, feeding the present keys and values
back as the next step's past. Positions come from the attention mask, so a left-padded row
decodes exactly as it would alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from corekit.edge.manifest import MODEL, TOKENIZER, read_manifest
from corekit.edge.sampling import check_sampling, sample_next
from corekit.errors import CorekitError


def cpu_session(path: str | Path, threads: int | None = None):
    """A quiet CPU onnxruntime session for the graph at ``path`` (``threads``: intra-op threads)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class EdgeModel:
    """An exported model and its tokenizer, ready to generate on CPU."""

    def __init__(self, bundle: str | Path, *, verify: bool = True, threads: int | None = None) -> None:
        """
        Args:
            bundle: a directory written by ``corekit export onnx``.
            verify: check every file against the manifest's sha256 (skip only for files you trust).
            threads: onnxruntime intra-op threads (default: onnxruntime's choice).
        """
        try:
            import onnxruntime  # noqa: F401 - a clear error here if it is missing
            from tokenizers import Tokenizer as HFTokenizer
        except ModuleNotFoundError as exc:
            raise CorekitError(
                f"the edge runtime needs {exc.name}, which is not installed; pip install 'corekit[edge]'"
            ) from None

        self.path = Path(bundle)
        self.manifest = read_manifest(self.path, verify=verify)
        cache = self.manifest["cache"]
        self.n_layers, self.n_kv_heads, self.head_dim = cache["n_layers"], cache["n_kv_heads"], cache["head_dim"]
        self.context_length = self.manifest["model"]["context_length"]
        self.vocab_size = self.manifest["model"]["vocab_size"]
        self.past_names = [i["name"] for i in self.manifest["inputs"][2:]]
        try:
            self.session = cpu_session(self.path / MODEL, threads)
            self.tokenizer = HFTokenizer.from_file(str(self.path / TOKENIZER))
        except Exception as exc:  # onnxruntime raises its own exception types
            raise CorekitError(f"cannot load the bundle {self.path}: {exc}") from None
        tok = self.manifest["tokenizer"]
        self.special_tokens: dict[str, int] = tok.get("special_tokens", {})
        self.eot_id: int | None = tok.get("eot_id")
        self.usable_vocab: int = tok.get("vocab_size", self.vocab_size)
        #: {"kind": "generate"}, or {"kind": "classify", "labels": [...], "pooling": "last" | "mean"}
        self.task: dict = self.manifest.get("task", {"kind": "generate"})

    def empty_past(self, batch: int) -> list[np.ndarray]:
        """Past keys and values of length 0 for ``batch`` rows."""
        shape = (batch, self.n_kv_heads, 0, self.head_dim)
        return [np.zeros(shape, np.float32) for _ in range(2 * self.n_layers)]

    def forward(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, past: list[np.ndarray]
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """One graph call: (B, T) ids, (B, P + T) mask, the past -> (B, T, V) logits and the present."""
        feed = {"input_ids": input_ids.astype(np.int64), "attention_mask": attention_mask.astype(np.int64)}
        feed.update(zip(self.past_names, past, strict=True))
        try:
            logits, *present = self.session.run(None, feed)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise CorekitError(f"onnxruntime could not run {self.path / MODEL}: {exc}") from None
        return logits, present

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (special-token strings become their ids)."""
        try:
            return self.tokenizer.encode(text, add_special_tokens=False).ids
        except Exception as exc:  # HF tokenizers raises a bare Exception, e.g. for unknown characters
            raise CorekitError(f"the bundle's tokenizer cannot encode {text[:40]!r}: {exc}") from None

    def decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids``."""
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    def generate(
        self,
        prompts: Sequence[str] | Sequence[Sequence[int]],
        *,
        max_new_tokens: int = 64,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        stop_tokens: Sequence[int | str | None] = (),
        seed: int | None = None,
        use_cache: bool = True,
        on_token: Callable[[int, int], None] | None = None,
    ) -> list[list[int]] | list[str]:
        """Continue each prompt; the same contract as :func:`corekit.generation.generate`.

        Args:
            prompts: strings (then strings are returned) or token id lists.
            max_new_tokens: most tokens to add per prompt; a row also stops at the context length.
            temperature: 0 for greedy decoding; otherwise logits are divided by it.
            top_k: sample only from the k most likely tokens.
            top_p: sample only from the smallest set of tokens with this much probability.
            stop_tokens: ids or special-token strings that end a row (not included in its output).
            seed: seed for sampling, for reproducible results.
            use_cache: feed the present keys/values back (False re-runs the whole sequence each step).
            on_token: called as ``on_token(row, token_id)`` for each new token, as it comes.
        """
        check_sampling(max_new_tokens, temperature, top_k, top_p)
        if self.task.get("kind") == "classify":
            raise CorekitError(f"{self.path} is a classifier ({', '.join(self.task['labels'])}): it has no LM head "
                               "to generate with; classify texts instead (corekit-edge BUNDLE --classify TEXT)")
        if isinstance(prompts, str):
            raise CorekitError("prompts must be a list of prompts; wrap a single string as [text]")
        as_text = bool(prompts) and isinstance(prompts[0], str)
        rows = [self.encode(p) if isinstance(p, str) else [int(i) for i in p] for p in prompts]
        if not rows:
            return []
        if any(not r for r in rows):
            raise CorekitError("every prompt needs at least one token")
        bad = sorted({i for r in rows for i in r if not 0 <= i < self.vocab_size})
        if bad:
            raise CorekitError(f"prompt token ids {bad[:5]} are outside the model's vocabulary [0, {self.vocab_size})")
        longest = max(len(r) for r in rows)
        if longest >= self.context_length:
            raise CorekitError(
                f"a prompt of {longest} tokens leaves no room in the context of {self.context_length} tokens"
            )
        stops = {self._stop_id(s) for s in stop_tokens if s is not None}
        limits = [min(max_new_tokens, self.context_length - len(r)) for r in rows]
        rng = np.random.default_rng(seed)

        batch = len(rows)
        ids = np.zeros((batch, longest), np.int64)
        mask = np.zeros((batch, longest), np.int64)
        for i, r in enumerate(rows):  # left padding: every row ends at the same column
            ids[i, longest - len(r):] = r
            mask[i, longest - len(r):] = 1
        out: list[list[int]] = [[] for _ in rows]
        done = np.array([limit == 0 for limit in limits])
        past = self.empty_past(batch)
        step_ids, full_ids = ids, ids
        while not done.all():
            if use_cache:
                logits, past = self.forward(step_ids, mask, past)
            else:
                logits, _ = self.forward(full_ids, mask, self.empty_past(batch))
            last = logits[:, -1, : self.usable_vocab]
            nxt = sample_next(last, temperature=temperature, top_k=top_k, top_p=top_p, rng=rng)
            for row in np.flatnonzero(~done):
                token = int(nxt[row])
                if token in stops:
                    done[row] = True
                    continue
                out[row].append(token)
                if on_token is not None:
                    on_token(int(row), token)
                if len(out[row]) >= limits[row]:
                    done[row] = True
            if done.all():
                break
            step_ids = nxt[:, None]  # (B, 1)
            full_ids = np.concatenate([full_ids, step_ids], axis=1)
            # a finished row's further tokens are padding: its positions stop advancing
            mask = np.concatenate([mask, (~done).astype(np.int64)[:, None]], axis=1)
        return [self.decode(r) for r in out] if as_text else out

    def classify(self, texts: Sequence[str]) -> list[dict]:
        """Label each text with a classifier bundle: ``{"text", "label", "probability",
        "probabilities": {label: p}}``, pooling the per-token logits as the model was trained to."""
        if self.task.get("kind") != "classify":
            raise CorekitError(f"{self.path} is a language model, not a classifier; generate with it instead")
        labels, results = self.task["labels"], []
        for text in texts:
            ids = self.encode(text)[: self.task.get("max_length", self.context_length)]
            if not ids:
                raise CorekitError("every text to classify needs at least one token")
            logits, _ = self.forward(np.array([ids]), np.ones((1, len(ids)), np.int64), self.empty_past(1))
            pooled = logits[0, -1] if self.task.get("pooling", "last") == "last" else logits[0].mean(0)  # (C,)
            probs = np.exp(pooled - pooled.max())
            probs /= probs.sum()
            best = int(probs.argmax())
            results.append({"text": text, "label": labels[best], "probability": float(probs[best]),
                            "probabilities": {label: float(p) for label, p in zip(labels, probs)}})
        return results

    def _stop_id(self, stop: int | str) -> int:
        if isinstance(stop, str):
            if stop not in self.special_tokens:
                raise CorekitError(
                    f"stop token {stop!r} is not a special token of this bundle; known: {sorted(self.special_tokens)}"
                )
            return self.special_tokens[stop]
        return int(stop)
