"""Using a fine-tuned run: classifying texts, and chatting through its template."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from corekit.errors import CorekitError


def load_run(run_dir: str | Path, registry=None):
    """``(spec, tokenizer, model)`` of a trained run directory, the model in eval mode."""
    from corekit.run import Run

    run = Run.open(run_dir, registry)
    return run.spec, run.tokenizer, run.model().eval()


def classify_texts(spec, tokenizer, model, texts: Sequence[str]) -> list[dict]:
    """For each text: ``{"text", "label", "probability", "probabilities": {label: p}}``."""
    from corekit.finetune.evaluate import classify_predictions

    heads = spec.change_params("head")
    if not heads:
        raise CorekitError("this run is not a classifier (fine-tune one with task = 'classify')")
    if not texts or any(not t for t in texts):
        raise CorekitError("give at least one non-empty text to classify")
    from corekit.finetune.data import text_ids

    head = heads[-1]
    examples = [(text_ids(tokenizer, t, head.max_length or spec.model.context_length), 0) for t in texts]
    preds, probs = classify_predictions(model, examples, head.pooling)
    return [{"text": text, "label": head.labels[i], "probability": float(row[i]),
             "probabilities": {label: float(p) for label, p in zip(head.labels, row)}}
            for text, i, row in zip(texts, preds, probs)]


class ChatSession:
    """A conversation with a run's model, rendered through its fine-tuning template (alpaca for a
    run that was not instruction-tuned). Templates that hold one exchange (alpaca) see only the
    latest message; older turns are dropped when the prompt would not leave room to answer."""

    def __init__(self, spec, tokenizer, model, registry=None, *, system: str | None = None,
                 max_new_tokens: int = 128, temperature: float = 0.0, top_k: int | None = None,
                 seed: int | None = 0) -> None:
        from corekit.plugins import get_registry

        registry = registry or get_registry()
        ft = spec.finetune
        if spec.change_params("head"):
            raise CorekitError("this run is a classifier; use `corekit classify RUN --text ...`")
        params = ft.template if ft is not None else registry.get("template", registry.defaults["template"]).params()
        self.template = registry.build("template", params)
        self.tokenizer, self.model = tokenizer, model
        self.system = system
        self.history: list[dict] = []
        self.options = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, seed=seed)
        self.stop = tokenizer.special_tokens.get(self.template.stop)

    def reset(self) -> None:
        self.history = []

    def _prompt_ids(self, message: str) -> list[int]:
        from corekit.finetune.template import TemplateError

        system = [{"role": "system", "content": self.system}] if self.system else []
        turns = [*self.history, {"role": "user", "content": message}]
        context = self.model.context_length
        reserve = min(self.options["max_new_tokens"], context // 4)  # room to answer before older turns go
        while True:
            try:
                ids = self.tokenizer.encode(self.template.prompt(system + turns))
            except TemplateError:
                ids = None  # a one-exchange template (alpaca): older turns go
            if len(turns) == 1 or (ids is not None and len(ids) + reserve <= context):
                break
            turns = turns[2:]
        if ids is None:
            ids = self.tokenizer.encode(self.template.prompt(system + turns))
        return ids[-(context - 1):]  # a message longer than the context keeps its end

    def reply(self, message: str, on_text: Callable[[str], None] | None = None) -> str:
        """The model's answer to ``message`` (streamed to ``on_text`` piece by piece)."""
        from corekit.generation import generate

        ids = self._prompt_ids(message)
        state = {"ids": [], "shown": ""}

        def on_token(row: int, token: int) -> None:
            if on_text is None or token == self.stop:
                return
            state["ids"].append(token)
            text = self.tokenizer.decode([i for i in state["ids"] if i < self.tokenizer.vocab_size])
            if not text.endswith("\ufffd"):
                on_text(text[len(state["shown"]):])
                state["shown"] = text

        out = generate(self.model, [ids], stop_tokens=[self.stop], on_token=on_token, **self.options)[0]
        answer = self.tokenizer.decode([i for i in out if i < self.tokenizer.vocab_size])
        if on_text is not None and len(answer) > len(state["shown"]):
            on_text(answer[len(state["shown"]):])
        self.history += [{"role": "user", "content": message}, {"role": "assistant", "content": answer}]
        return answer
