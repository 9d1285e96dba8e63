"""``corekit finetune``: a trained run + a ``[finetune]`` spec -> a new, fine-tuned run directory.

The new run has the layout of any run (``spec.toml``, ``tokenizer.json``, ``data/`` hard-linked
from the base, ``model.safetensors``), so ``eval``, ``generate``, ``compress`` and ``export onnx``
take it as it is; with an unmerged adapter, ``model.safetensors`` holds the frozen base weights
(a hard link to the base run's when they are unchanged) and ``adapter.safetensors`` the few
trained tensors. ``finetune-report.json`` holds the figures before and after. Everything is
written into a temporary directory beside the output and renamed into place at the end: a
refused or failed fine-tuning leaves nothing behind and an earlier result untouched.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from corekit.errors import CorekitError, SpecError, SpecIssue

REPORT = "finetune-report.json"
FORMAT = "corekit-finetune-report"
OWN_SECTIONS = ("finetune", "train", "export")


# --------------------------------------------------------------------------- the spec
def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_finetune_spec(spec_file: str | Path, overrides: Iterable[str] = (), registry=None):
    """The fine-tuned run's spec: the base run's spec with the file's ``[finetune]``, its
    ``[train]`` merged over the base's, and its ``[export]``. Returns ``(spec, base RunDir, base spec)``.

    Raises:
        SpecError: a missing ``[finetune]``, sections that belong to the base run, invalid fields
            (with the file and line).
        CorekitError: a base run that is missing, untrained, quantized or a classifier.
    """
    from corekit.plugins import get_registry
    from corekit.run import Run
    from corekit.spec import apply_overrides, load_spec, read_spec_file, spec_to_dict

    registry = registry or get_registry()
    label = str(spec_file)
    data = apply_overrides(read_spec_file(spec_file), overrides)
    ft = data.get("finetune")
    if not isinstance(ft, dict):
        raise SpecError(
            [SpecIssue("finetune", "a fine-tuning spec needs a [finetune] table naming base, task and data")], label
        )
    others = sorted(set(data) - set(OWN_SECTIONS))
    if others:
        raise _located(SpecError([SpecIssue(k, f"section {k!r} comes from the base run; a fine-tuning spec holds only "
                                               f"{', '.join(OWN_SECTIONS)}") for k in others], label), spec_file)
    if "merged" in ft:  # it would be read as an old run's record of its adapter (see FinetuneStage.upgrade)
        raise _located(SpecError([SpecIssue("finetune.merged", "written into run directories by earlier versions; "
                                                               "not a field of a fine-tuning spec: remove it "
                                                               "(merge = true folds the adapter in)")], label),
                       spec_file)
    if not isinstance(ft.get("base"), str):
        raise _located(
            SpecError([SpecIssue("finetune.base", "required: the trained run directory to start from")], label),
            spec_file,
        )
    try:
        opened = Run.open(ft["base"], registry)
    except SpecError:
        raise
    except CorekitError as exc:
        raise CorekitError(f"finetune.base = {ft['base']!r}: {exc}") from None
    base, base_spec = opened.dir, opened.spec
    stored = base.stored_spec() or {}
    merged = {k: v for k, v in stored.items() if k not in ("compress", "compressed", "changes", "finetune", "export")}
    # the new run starts from the plain model of the base (its adapter folded in): its changes, and
    # then the fine-tuning's own (a head, an adapter; see finetune_changes)
    merged["changes"] = spec_to_dict(opened.plain_spec).get("changes", [])
    merged["train"] = _merge(stored.get("train", {}), data.get("train", {}))
    if "export" in data:
        merged["export"] = data["export"]
    merged["finetune"] = ft  # a fine-tuned base's section is replaced; its added tokens stay
    try:
        spec = load_spec(merged, registry=registry)
        _check_head(spec.finetune, registry)
    except SpecError as exc:
        raise _located(SpecError(exc.issues, label), spec_file) from None
    _check_base(base, base_spec, registry)
    return spec, base, base_spec


def _check_head(ft, registry) -> None:
    """A classify fine-tuning's head: its name and options, checked before any work (with stand-in
    labels: the real ones come from the data). Other tasks keep the LM head."""
    if ft.task == "classify":
        head_params(ft, ["a label", "another"], registry)
    elif ft.head != "classifier":
        raise SpecError([SpecIssue("finetune.head", "a head replaces the LM head for task = 'classify'; "
                                                    f"task = {ft.task!r} keeps the LM head")])


def _located(error: SpecError, spec_file) -> SpecError:
    """``error`` with each issue's line in ``spec_file`` where it can be found."""
    from corekit.tomlpos import key_line

    try:
        text = Path(spec_file).read_text(encoding="utf-8")
    except OSError:
        return error
    issues = []
    for issue in error.issues:
        line = key_line(text, [int(p) if p.isdigit() else p for p in issue.path.split(".")]) if issue.path else None
        issues.append(SpecIssue(f"{issue.path} (line {line})" if line else issue.path, issue.message))
    return SpecError(issues, error.source)


def _check_base(base, base_spec, registry) -> None:
    quantized = [c.name for c in base_spec.change_params("compressor")
                 if getattr(registry.build("compressor", c), "quantizes", False)]
    if quantized:
        raise CorekitError(f"{base.path} holds quantized weights ({', '.join(quantized)}), which cannot be trained; "
                           "fine-tune the float run, then compress the result")
    if base_spec.change_params("head"):
        origin = f" ({base_spec.finetune.base})" if base_spec.finetune is not None else ""
        raise CorekitError(f"{base.path} is a classifier (its LM head was replaced); fine-tune the language model it "
                           f"started from{origin} instead")


def head_params(ft, labels: list[str], registry):
    """The Params of the head (kind ``head``) a classify fine-tuning puts on the model: the one
    ``finetune.head`` names, with the section's labels, pooling and max_length.

    Raises:
        SpecError: an unknown head, or options it does not accept (named under ``finetune.head``).
    """
    from pydantic import ValidationError

    table = {"name": ft.head} if isinstance(ft.head, str) else dict(ft.head)
    name = table.get("name", "classifier")
    taken = [key for key in ("labels", "pooling", "max_length") if key in table]
    if taken:
        raise SpecError([SpecIssue(f"finetune.head.{key}", f"set {key} in [finetune] itself") for key in taken])
    if not isinstance(name, str) or ("head", name) not in registry:
        raise SpecError([SpecIssue("finetune.head.name", f"unknown head {name!r}; available: "
                                                         f"{', '.join(registry.names('head'))}")])
    model = registry.resolve(registry.get("head", name).params)
    try:
        return model.model_validate({**table, "name": name, "labels": labels, "pooling": ft.pooling,
                                     "max_length": ft.max_length})
    except ValidationError as exc:
        raise SpecError([SpecIssue(".".join(["finetune.head", *map(str, e["loc"])]),
                                   f"unknown field {e['loc'][-1]!r}; allowed: {', '.join(model.model_fields)}"
                                   if e["type"] == "extra_forbidden" else e["msg"])
                         for e in exc.errors()]) from None


def finetune_changes(p: "Prepared", merged: bool) -> list[tuple[str, Any]]:
    """The entries fine-tuning adds to the new run's ``changes``: its classification head, and its
    adapter unless ``merged`` into the weights."""
    ft = p.spec.finetune
    entries: list[tuple[str, Any]] = [("head", p.head)] if p.head is not None else []
    if ft.adapter is not None and not merged:
        entries.append(("adapter", ft.adapter))
    return entries


# --------------------------------------------------------------------------- preparing
@dataclass
class Prepared:
    """Everything a fine-tuning needs, made before anything is written."""

    spec: Any
    base: Any
    base_spec: Any
    tokenizer: Any
    template: Any = None
    labels: list[str] = field(default_factory=list)
    head: Any = None  # classify: the head's Params (kind head)
    train: list = field(default_factory=list)
    val: list = field(default_factory=list)
    held_out: list = field(default_factory=list)  # instruct: conversations for generation
    dropped: int = 0
    old_vocab: int | None = None  # the base tokenizer's size: ids from here on are tokens a template added

    @property
    def new_ids(self) -> tuple[int, int] | None:
        """``(first, end)`` of the ids of tokens added for the template, if any."""
        end = self.tokenizer.vocab_size
        return (self.old_vocab, end) if self.old_vocab is not None and end > self.old_vocab else None


def prepare(spec, base, base_spec, registry) -> Prepared:
    """Read and tokenize the data, fix the labels and the tokenizer's added tokens, and fill in
    ``spec.model.vocab_size`` and ``spec.finetune.labels``."""
    from corekit.assemble import build_tokenizer
    from corekit.finetune import data as fd
    from corekit.finetune.tasks import encode_segments
    from corekit.finetune.template import TemplateError
    from corekit.run import Run
    from corekit.spec import padded_vocab

    ft = spec.finetune
    if ft.adapter is not None and ft.trainable_blocks != "all":
        raise CorekitError(f"finetune.trainable_blocks = {ft.trainable_blocks} applies to full fine-tuning; with an "
                           f"adapter ({ft.adapter.name}) only the adapter trains: leave trainable_blocks out")
    records = fd.read_records(ft.data.train)
    train_recs, val_recs = fd.split(records, ft.data.val, ft.data.val_fraction, spec.train.seed)
    context = spec.model.context_length
    max_len = ft.max_length or context
    if max_len > context:
        raise CorekitError(f"finetune.max_length = {max_len} is longer than the model's context_length = {context}")
    p = Prepared(spec, base, base_spec, None)

    if ft.task == "classify":
        p.tokenizer = base.load_tokenizer(build_tokenizer(spec, registry))
        train_ex = fd.classify_examples(train_recs, ft.data.text_field, ft.data.label_field)
        val_ex = fd.classify_examples(val_recs, ft.data.text_field, ft.data.label_field)
        p.labels = list(ft.labels) if ft.labels else sorted({label for _, label, _ in train_ex})
        if len(p.labels) < 2:
            raise CorekitError(f"{ft.data.train}: classification needs at least two labels, found {p.labels}")
        ft.labels = p.labels
        p.head = head_params(ft, p.labels, registry)
        for examples, out in ((train_ex, p.train), (val_ex, p.val)):
            ids = fd.label_ids(examples, p.labels)
            out += [(fd.text_ids(p.tokenizer, text, max_len), i) for (text, _, _), i in zip(examples, ids)]
        return p

    p.template = registry.build("template", ft.template)
    known = Run(base, base_spec, registry).tokenizer
    p.old_vocab = known.vocab_size
    missing = [t for t in p.template.special_tokens if t not in known.special_tokens]
    spec.tokenizer = spec.tokenizer.model_copy(update={"added_tokens": [*base_spec.tokenizer.added_tokens, *missing]})
    p.tokenizer = base.load_tokenizer(build_tokenizer(spec, registry))
    spec.model.vocab_size = max(base_spec.model.vocab_size,
                                padded_vocab(p.tokenizer.vocab_size, spec.model.pad_vocab_multiple))

    def render(rec, messages) -> list:
        try:
            return p.template.render(messages)
        except TemplateError as exc:
            raise fd.DataError(f"{rec.where}: {exc}") from None

    def encode(rec, messages):
        example = encode_segments(p.tokenizer, render(rec, messages), max_len + 1)
        if example is None:
            p.dropped += 1
        return example

    for recs, out, held in ((train_recs, p.train, False), (val_recs, p.val, True)):
        for rec in recs:
            if ft.task == "instruct":
                messages = fd.conversation(rec)
                example = encode(rec, messages)
                if example is not None:
                    out.append(example)
                    if held and len(p.held_out) < ft.eval_examples and messages[-1]["role"] == "assistant":
                        p.held_out.append(messages)
            else:
                prompt, chosen, rejected = fd.preference_triple(rec)
                user = {"role": "user", "content": prompt}
                pair = (encode(rec, [user, {"role": "assistant", "content": chosen}]),
                        encode(rec, [user, {"role": "assistant", "content": rejected}]))
                if None not in pair:
                    out.append(pair)
    for name, items in (("train", p.train), ("val", p.val)):
        if not items:
            raise CorekitError(f"no {name} example keeps a response token within finetune.max_length = {max_len} "
                               f"tokens ({p.dropped} cut away); shorten the prompts or raise max_length")
    return p


# --------------------------------------------------------------------------- the model
@dataclass
class Setup:
    """The model being fine-tuned and what of it trains."""

    model: Any
    adapter: Any = None
    extra_keys: set = field(default_factory=set)  # trained tensors saved beside the adapter's (a classifier head)
    new_rows: dict = field(default_factory=dict)  # table key -> first row the adapter file keeps (new tokens' rows)
    partial: dict = field(default_factory=dict)  # id(param) -> how many of its entries train (row-masked tables)
    no_decay: list = field(default_factory=list)  # row-masked tables, kept out of weight decay


def build_model(p: Prepared, registry) -> Setup:
    """The base model, merged if the base had an adapter, grown, headed and adapted/frozen."""
    from corekit.finetune import model as fm
    from corekit.run import Run

    ft = p.spec.finetune
    model = Run(p.base, p.base_spec, registry).plain_model()
    setup = Setup(model)
    fm.resize_vocab(model, p.spec.model.vocab_size)
    if ft.task == "classify":
        registry.build("head", p.head).restore(model)
    if ft.adapter is not None:
        setup.adapter = registry.build("adapter", ft.adapter)
        setup.adapter.apply(model)
        if ft.task == "classify":
            model.lm_head.requires_grad_(True)
            setup.extra_keys |= {f"lm_head.{k}" for k in model.lm_head.state_dict()}
    else:
        fm.freeze_for(model, ft.trainable_blocks)
    if p.new_ids is not None:
        first, end = p.new_ids
        for key, table in fm.init_new_rows(model, first, end):
            if not table.requires_grad:
                fm.train_rows(table, first, end)
                setup.partial[id(table)] = (end - first) * table.shape[1]
                setup.no_decay.append(table)
            if setup.adapter is not None:
                setup.new_rows[key] = first
    return setup


def count(setup: Setup) -> tuple[int, int]:
    """(trainable, total) parameters, shared ones once; a row-masked table counts its new rows."""
    seen, trainable, total = set(), 0, 0
    for param in setup.model.parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        total += param.numel()
        trainable += setup.partial.get(id(param), param.numel()) if param.requires_grad else 0
    return trainable, total
