"""``distill``: train a smaller student from a trained run (the teacher) by knowledge distillation.

The student minimises ``alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE``
(Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network",
arXiv:1503.02531): the soft targets' gradients scale as ``1/T^2``, so the ``T^2`` factor keeps
the two terms' relative weight the same whatever the temperature. Training runs through
Lightning on the teacher run's own token shards, with its trainer settings; the teacher is
frozen (eval mode, no gradients, invisible to the optimizer and to checkpoints).

The student's ``[model]`` starts from the teacher's (or from the ``[model]`` of a spec file,
``spec``) with ``student`` overrides merged in: it may differ in depth, width, heads, norms,
activation and positions, but it shares the teacher's tokenizer, vocabulary and context
length, since the KD term compares the two models' predictions token by token. A student
that changes ``d_model`` without setting ``mlp.hidden_dim`` gets the default MLP width for
its own ``d_model`` (the teacher's resolved spec carries the teacher's width).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, NamedTuple

import torch
import torch.nn.functional as F

from corekit.compress.base import Compressed, Compressor, SourceRun
from corekit.errors import CorekitError, SpecError

#: [model] fields the student must share with the teacher: taken from it when left unset.
SHARED_FIELDS = ("vocab_size", "context_length")


class DistillationLoss(NamedTuple):
    """The distillation objective and its two parts (each a scalar tensor)."""

    loss: torch.Tensor  # alpha * T^2 * kd + (1 - alpha) * ce
    kd: torch.Tensor  # KL(teacher || student) at temperature T, nats per token, before the T^2 scaling
    ce: torch.Tensor  # cross-entropy of the student (T = 1) against the targets


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    alpha: float,
    temperature: float,
) -> DistillationLoss:
    """``alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, targets)``.

    Args:
        student_logits: (B, T, V) logits of the model being trained.
        teacher_logits: (B, T, V) logits of the frozen teacher, same vocabulary.
        targets: (B, T) next-token ids.
        alpha: weight of the distillation term, in [0, 1].
        temperature: softmax temperature of both models in the distillation term.

    Returns:
        The total loss and its parts; the KL sums over the vocabulary and averages over the
        B*T positions, like the cross-entropy.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"distill: student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} differ in shape; the vocabularies must match")
    s = student_logits.flatten(0, 1).float()  # (N, V); fp32 so log-softmax at high T stays accurate
    t = teacher_logits.flatten(0, 1).float().detach()
    ce = F.cross_entropy(s, targets.flatten())
    kd = F.kl_div(F.log_softmax(s / temperature, dim=-1), F.log_softmax(t / temperature, dim=-1),
                  log_target=True, reduction="batchmean")  # sum over V, mean over N
    return DistillationLoss(alpha * temperature**2 * kd + (1.0 - alpha) * ce, kd, ce)


@functools.cache
def _task_class() -> type:
    """:class:`DistillTask`, defined on first use (see ``__getattr__`` below)."""
    from corekit.train.module import LanguageModelTask, NonFiniteLossError

    class DistillTask(LanguageModelTask):
        """:class:`LanguageModelTask` whose training loss is :func:`distillation_loss` against a
        frozen teacher; validation keeps the plain cross-entropy, so ``val_loss`` means what it
        means everywhere else."""

        def __init__(self, model: torch.nn.Module, teacher: torch.nn.Module, spec, registry, *,
                     alpha: float, temperature: float) -> None:
            """
            Args:
                model: the student, trained.
                teacher: the frozen teacher (its parameters lose ``requires_grad``; it is put in eval mode).
                spec: the student's run spec (its ``train`` section drives the optimisation).
                registry: the plugin registry (optimizer and schedule plugins).
                alpha: weight of the distillation term.
                temperature: softmax temperature of the distillation term.
            """
            super().__init__(model, spec, registry)
            for p in teacher.parameters():
                p.requires_grad_(False)
            # Held in a tuple, not as an attribute Module: Lightning's train()/eval() switches, the
            # checkpoint's state_dict and configure_optimizers (self.model only) never see it.
            self._teacher = (teacher.eval(),)
            self.alpha, self.temperature = alpha, temperature

        @property
        def teacher(self) -> torch.nn.Module:
            """The frozen teacher."""
            return self._teacher[0]

        def on_fit_start(self) -> None:
            # Not a submodule, so Lightning does not move it with the student.
            self.teacher.to(self.device).eval()

        def distill(self, batch: tuple[torch.Tensor, torch.Tensor]) -> DistillationLoss:
            """The distillation loss of the student on ``batch`` = (inputs, targets), (B, T) each."""
            inputs, targets = batch
            with torch.no_grad():
                teacher_logits = self.teacher(inputs)  # (B, T, V)
            return distillation_loss(self.model(inputs), teacher_logits, targets,
                                     alpha=self.alpha, temperature=self.temperature)

        def training_step(self, batch, batch_idx: int) -> torch.Tensor:
            parts = self.distill(batch)
            if not torch.isfinite(parts.loss):
                raise NonFiniteLossError(
                    f"the distillation loss became {parts.loss.item()} at step {self.global_step} (kd "
                    f"{parts.kd.item()}, ce {parts.ce.item()}); lower lr or the temperature, or clip gradients"
                )
            self.log("train_loss", parts.loss, prog_bar=True)
            self.log("kd_loss", parts.kd)
            self.log("ce_loss", parts.ce)
            self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"])
            return parts.loss

    return DistillTask


def __getattr__(name: str) -> Any:
    # DistillTask subclasses a LightningModule, so it is defined on first use: loading a distilled
    # run builds this compressor (for restore()), and that must not import Lightning (~6 s).
    if name == "DistillTask":
        return _task_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def merge_model(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` merged in, tables recursively. A component table that names
    another component (``{"name": "layernorm"}`` over rmsnorm), or a bare name, replaces the
    table whole, since the old component's fields may not exist in the new one."""
    out = dict(base)
    for key, value in overrides.items():
        old = out.get(key)
        if isinstance(old, str) and isinstance(value, dict):  # a component given by name only
            old = {"name": old}
        if isinstance(value, dict) and isinstance(old, dict) and value.get("name", old.get("name")) == old.get("name"):
            out[key] = merge_model(old, value)
        else:
            out[key] = value
    return out


def _describe(component: dict[str, Any]) -> str:
    """``'bpe' (vocab_size=4096, ...)``: a component table for a message."""
    rest = ", ".join(f"{k}={v!r}" for k, v in component.items() if k != "name")
    return f"{component.get('name')!r}" + (f" ({rest})" if rest else "")


class Distill(Compressor):
    """Trains the student spec on the teacher run's data against the teacher's predictions."""

    new_model = True  # the student is not the teacher's weights changed: no earlier restore applies

    def _student_spec(self, source: SourceRun):
        """The student's validated run spec: the teacher's, with the student's [model] and the
        distillation's steps and learning rate in [train]."""
        from corekit.spec import load_spec, read_spec_file, spec_to_dict

        p, teacher = self.params, spec_to_dict(source.spec)
        if p.spec is None:
            model = dict(teacher["model"])
        else:
            path = Path(p.spec)
            data = read_spec_file(path)  # a SpecError naming the file if missing or unreadable
            model = data.get("model")
            if not isinstance(model, dict):
                raise CorekitError(f"distill: spec file {path} has no [model] table for the student to start from")
            if "tokenizer" in data:  # left out: the student simply uses the teacher's
                self._check_tokenizer(source, path, data["tokenizer"], teacher)
        mlp = p.student.get("mlp")
        if p.student.get("d_model", model.get("d_model")) != model.get("d_model") \
                and not (isinstance(mlp, dict) and "hidden_dim" in mlp):
            # A narrower student gets the default MLP width for its own d_model, not the teacher's.
            model = {**model, "mlp": {k: v for k, v in model.get("mlp", {}).items() if k != "hidden_dim"}}
        attention = p.student.get("attention")
        reshaped = p.student.get("d_model", model.get("d_model")) != model.get("d_model") or (
            isinstance(attention, dict) and "n_heads" in attention)
        if reshaped and not (isinstance(attention, dict) and "head_dim" in attention) \
                and isinstance(model.get("attention"), dict):
            # an explicit head width (from structured pruning) belongs to the teacher's shape
            model = {**model, "attention": {k: v for k, v in model["attention"].items() if k != "head_dim"}}
        model = merge_model(model, p.student)
        for key in SHARED_FIELDS:
            wanted = teacher["model"][key]
            if model.setdefault(key, wanted) != wanted:
                raise CorekitError(
                    f"distill: the student's model.{key}={model[key]} differs from the teacher's {wanted}; "
                    f"the distillation loss compares both models' predictions token by token, so {key} must match "
                    f"(leave it unset to take the teacher's)"
                )
        train = teacher["train"]
        if p.lr is not None:
            if "lr" not in type(source.spec.train.optimizer).model_fields:
                raise CorekitError(f"distill: lr is set, but optimizer {train['optimizer']['name']!r} has no lr field")
            train = {**train, "optimizer": {**train["optimizer"], "lr": p.lr}}
        train = {**train, "max_steps": p.steps or source.spec.train.max_steps}
        try:
            return load_spec({**teacher, "model": model, "train": train}, registry=source.registry)
        except SpecError as exc:
            origin = f"[model] of {p.spec}" if p.spec else "the teacher's [model]"
            raise SpecError(exc.issues, f"of the distill student ({origin} with the student overrides)") from None

    @staticmethod
    def _check_tokenizer(source: SourceRun, path: Path, table: Any, teacher: dict[str, Any]) -> None:
        from corekit.spec import load_spec, spec_to_dict

        # Validated beside the teacher's model (vocab_size left open so a larger tokenizer is not
        # reported as a model error), and compared in resolved form, defaults filled in.
        model = {k: v for k, v in teacher["model"].items() if k != "vocab_size"}
        try:
            resolved = load_spec({"model": model, "tokenizer": table}, registry=source.registry)
        except SpecError as exc:
            issues = [i for i in exc.issues if i.path.startswith("tokenizer")] or exc.issues
            raise SpecError(issues, str(path)) from None
        theirs = spec_to_dict(resolved)["tokenizer"]
        if theirs != teacher["tokenizer"]:
            raise CorekitError(
                f"distill: the student spec {path} uses tokenizer {_describe(theirs)}, but the teacher "
                f"{source.run.path} was trained with tokenizer {_describe(teacher['tokenizer'])}; a student must "
                "share its teacher's tokenizer (the distillation loss compares their predictions token by token). "
                f"Make [tokenizer] in {path} the teacher's, or remove it"
            )

    def check(self, source: SourceRun) -> None:
        super().check(source)
        if not source.has_data():
            raise CorekitError(f"distill trains the student on the teacher run's data, but {source.data} holds no "
                               "prepared data; run `corekit data prepare` for the teacher's spec first")
        self._student_spec(source)

    def compress(self, source: SourceRun, work_dir: Path, progress: Callable[[str], None]) -> Compressed:
        from corekit.assemble import build_model
        from corekit.train.fit import fit_steps

        p = self.params
        spec = self._student_spec(source)
        teacher = source.load_model()
        torch.manual_seed(spec.train.seed)  # after building the teacher: the student's init depends on the seed alone
        student = build_model(spec, source.registry).train()
        t = spec.train
        lr = getattr(t.optimizer, "lr", None)
        progress(f"distilling a {spec.model.n_layers}-layer, d_model {spec.model.d_model} student for {t.max_steps} "
                 f"steps (alpha {p.alpha}, T {p.temperature}" + (f", lr {lr:g})" if lr is not None else ")"))
        task = _task_class()(student, teacher, spec, source.registry, alpha=p.alpha, temperature=p.temperature)
        metrics = fit_steps(task, source.data, work_dir, progress=True)
        student.cpu().eval()
        details: dict[str, Any] = {"alpha": p.alpha, "temperature": p.temperature, "steps": t.max_steps, "lr": lr,
                                   "student_layers": spec.model.n_layers, "student_d_model": spec.model.d_model}
        for key in ("train_loss", "kd_loss", "ce_loss"):
            if key in metrics:
                details[f"final_{key}"] = metrics[key]
        return Compressed(student, spec, details)


def build(params) -> Distill:
    """The ``distill`` compressor."""
    return Distill(params)
