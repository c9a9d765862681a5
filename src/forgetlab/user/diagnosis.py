"""Diagnose forgetting between two checkpoints of one model: OLD (before) and NEW (after).

For the old task's data (``data``) and optionally the new task's (``new_data``):

* accuracy of OLD and NEW;
* per block: relative weight change ``||w_new - w_old|| / ||w_old||`` (parameters of the
  block), linear CKA (debiased, and biased as in Kornblith et al. 2019) and top-``k``
  PCA subspace similarity between OLD's and NEW's activations on the old task's inputs;
* a reset analysis: copies of NEW with some blocks rewound to OLD's weights (buffers,
  e.g. BatchNorm statistics, too): each block alone, the first ``j`` blocks
  (bottom-up) and the last ``j`` blocks (top-down), with their old-task (and new-task)
  accuracy. Which rewind recovers the old skill, at what cost on the new task?

NEW may have a head grown by ``finetune`` (more outputs, the old rows first): its
predictions are the argmax over all its outputs; blocks whose shapes differ (the head's)
are compared on their common part (weight change over the old rows) and left out of the
reset analysis (``Diagnosis.skipped`` says which and why). The normalisation OLD records
(a forgetlab checkpoint's) is applied to raw inputs (``input_normalization="auto"``).
:attr:`Diagnosis.conclusion` sums the numbers up in one paragraph.

Analyses run on copies or under hooks that are removed afterwards: neither model changes.

See :func:`diagnose` for an example.
"""

from __future__ import annotations

import copy
import math
import textwrap
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from forgetlab.analysis import LinearCKAAccumulator, NumericalError, cka_table, collect_activations, eval_mode, subspace_similarity
from forgetlab.analysis.subspace import similarity_of_bases
from forgetlab.errors import ConfigError, DataError, IncompatibleError
from forgetlab.report.diagnose import diagnosis_report
from forgetlab.user.userdata import UserData, as_inputs, check_fits, chosen_normalization, normalize_inputs
from forgetlab.user.wrap import WrappedModel, wrap_model

__all__ = ["BlockDiagnosis", "Diagnosis", "ResetResult", "accuracy", "diagnose", "predict", "reset_analysis", "score",
           "streamed_similarity", "weight_change", "write_report"]


@dataclass(frozen=True)
class BlockDiagnosis:
    """One row of the diagnosis table (similarities on the old task's inputs; ``None``
    where a measure is undefined, e.g. a block without parameters has no weight change)."""

    block: str
    weight_change: float | None
    cka_debiased: float
    cka: float
    subspace_similarity: float | None
    subspace_k: int
    old_accuracy_after_reset: float | None
    new_accuracy_after_reset: float | None


@dataclass(frozen=True)
class ResetResult:
    """Accuracy of NEW with ``blocks`` rewound to OLD. ``kind``: ``block`` (one block),
    ``bottom-up`` (the first blocks) or ``top-down`` (the last blocks)."""

    kind: str
    blocks: tuple[str, ...]
    old_accuracy: float
    new_accuracy: float | None

    @property
    def label(self) -> str:
        if self.kind == "block":
            return self.blocks[0]
        return f"{self.kind} {len(self.blocks)} ({self.blocks[0]}..{self.blocks[-1]})"


@dataclass
class Diagnosis:
    """What :func:`diagnose` returns; :meth:`format_table` renders it for a terminal.
    ``n_samples``: the old-task inputs the similarities (CKA, subspace) use;
    ``n_examples``: ``{"old_task": N, "new_task": M}``, the examples each accuracy uses;
    ``sources``: the data files (``data``, ``new_data``) and model files (``old_model``,
    ``new_model``) when known; ``skipped``: ``{block: reason}`` for blocks left out of
    the reset analysis; ``input_normalization``: what was applied to the inputs (see
    :func:`~forgetlab.user.userdata.chosen_normalization`). ``metric``: ``accuracy``, or
    ``loss`` for a causal language model, whose every accuracy field (``old_task``,
    ``new_task``, the reset results) then holds its mean next-token cross-entropy in nats
    per non-padding token (lower is better; perplexity = ``exp(loss)``).
    ``representation``: how block outputs were turned into the rows CKA compares (a
    transformer's pooling over tokens); ``notes``: what else the numbers rest on."""

    old_task: dict[str, float]
    new_task: dict[str, float] | None
    blocks: list[BlockDiagnosis]
    resets: list[ResetResult]
    n_samples: int
    k: int
    sources: dict[str, str] = field(default_factory=dict)
    n_examples: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    input_normalization: dict[str, Any] = field(default_factory=dict)
    metric: str = "accuracy"
    representation: str = ""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-ready), with the :attr:`conclusion`."""
        out = asdict(self)
        finite = lambda v: None if isinstance(v, float) and not math.isfinite(v) else v  # noqa: E731 - JSON has no NaN
        out["blocks"] = [{key: finite(value) for key, value in row.items()} for row in out["blocks"]]
        out["resets"] = [{**asdict(r), "blocks": list(r.blocks), "label": r.label} for r in self.resets]
        out["conclusion"] = self.conclusion
        return out

    @property
    def conclusion(self) -> str:
        """One paragraph from the numbers: the old-task change, the best single-block
        rewind and what share of the loss it recovers, where the weights and the
        representation changed most.

        Example:
            >>> d = Diagnosis({"old": 0.9, "new": 0.2}, None, [BlockDiagnosis("fc1", 0.5, 0.8, 0.85, 0.7, 3, 0.6, None)],
            ...     [ResetResult("block", ("fc1",), 0.6, None)], 100, 3, n_examples={"old_task": 100})
            >>> d.conclusion
            'NEW lost 70.0 points on the old task (OLD 90.0%, NEW 20.0%; n = 100). Rewinding `fc1` alone to OLD recovers 57 % of the loss (old task 60.0%). No rewind analysed recovers 90 % of the loss. Most change is in `fc1` (relative weight change 0.500, debiased CKA 0.800).'
        """
        return _conclusion(self)

    def format_table(self) -> str:
        """The diagnosis as text tables (accuracies in percent; losses with their perplexity)."""
        def pct(value: float | None) -> str:
            return "-" if value is None else _fmt(value, self.metric)

        def num(value: float | None) -> str:
            return "-" if value is None or not math.isfinite(value) else f"{value:.3f}"

        n_old, n_new = self.n_examples.get("old_task", "?"), self.n_examples.get("new_task", "?")
        lines = []
        if "old_model" in self.sources or "new_model" in self.sources:
            lines.append(f"OLD = {self.sources.get('old_model', '(in memory)')}; NEW = {self.sources.get('new_model', '(in memory)')}")
        lines += textwrap.wrap("Conclusion: " + self.conclusion, 110) + [""]
        if self.input_normalization:
            lines.append(f"input normalisation: {self.input_normalization['description']}")
        what = "loss (perplexity)" if self.metric == "loss" else "accuracy"
        if self.metric == "loss":
            lines.append("loss = mean next-token cross-entropy in nats per non-padding token; perplexity = exp(loss)")
        lines.append(
            f"old-task {what} ({self.sources.get('data', 'data')}, n = {n_old}): "
            f"OLD {pct(self.old_task['old'])}  NEW {pct(self.old_task['new'])}"
        )
        if self.new_task is not None:
            lines.append(
                f"new-task {what} ({self.sources.get('new_data', 'new data')}, n = {n_new}): "
                f"OLD {pct(self.new_task['old'])}  NEW {pct(self.new_task['new'])}"
            )
        lines.append(f"CKA and subspace similarity: on the first {self.n_samples} old-task inputs (n = {self.n_samples}); "
                     f"{what} if reset: on all of them (n = {n_old})")
        if self.representation:
            lines.append(self.representation)
        short = "loss" if self.metric == "loss" else "acc"
        header = ["block", "weight change", "CKA debiased (biased)", f"subspace sim (k<={self.k})", f"old {short} if reset"]
        if self.new_task is not None:
            header.append(f"new {short} if reset")
        rows = []
        for b in self.blocks:
            row = [
                b.block, num(b.weight_change), f"{num(b.cka_debiased)} ({num(b.cka)})",
                num(b.subspace_similarity) + (f" k={b.subspace_k}" if b.subspace_similarity is not None else ""),
                pct(b.old_accuracy_after_reset),
            ]
            if self.new_task is not None:
                row.append(pct(b.new_accuracy_after_reset))
            rows.append(row)
        lines += ["", _render(header, rows)]
        prefix_rows = [
            [r.label, pct(r.old_accuracy)] + ([pct(r.new_accuracy)] if self.new_task is not None else [])
            for r in self.resets
            if r.kind != "block"
        ]
        if prefix_rows:
            head = ["rewound to OLD", f"old {short}"] + ([f"new {short}"] if self.new_task is not None else [])
            lines += ["", _render(head, prefix_rows)]
        lines += [f"not rewound: {name}: {reason}" for name, reason in self.skipped.items()]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def _fmt(value: float, metric: str) -> str:
    """An accuracy in percent, or a loss with its perplexity."""
    if metric == "loss":
        return f"{value:.3f} (ppl {math.exp(value):.4g})" if math.isfinite(value) else "-"
    return f"{100 * value:.1f}%"


def _conclusion(d: Diagnosis) -> str:
    pct = lambda v: _fmt(v, d.metric)  # noqa: E731
    old, new = d.old_task["old"], d.old_task["new"]
    loss = d.metric == "loss"
    drop = (new - old) if loss else (old - new)  # > 0: the old skill got worse
    n = d.n_examples.get("old_task")
    where = f"OLD {pct(old)}, NEW {pct(new)}" + (f"; n = {n}" if n is not None else "")
    if drop > 0.005:
        first = (f"NEW's old-task loss rose by {drop:.3f} nats per token" if loss else
                 f"NEW lost {100 * drop:.1f} points on the old task") + f" ({where})"
    elif drop < -0.005:
        first = (f"NEW's old-task loss fell by {-drop:.3f} nats per token" if loss else
                 f"NEW gained {-100 * drop:.1f} points on the old task") + f" ({where})"
    else:
        first = f"NEW kept the old task ({where})"
    if d.new_task is not None:
        first += f"; on the new task OLD {pct(d.new_task['old'])}, NEW {pct(d.new_task['new'])}"
    sentences = [first + "."]
    singles = [r for r in d.resets if r.kind == "block"]
    if drop > 0.005 and singles:
        recovery = lambda r: (r.old_accuracy - new) / (old - new)  # noqa: E731 - the share of the change undone
        best = max(singles, key=recovery)
        cost = "" if best.new_accuracy is None else f", new task {pct(best.new_accuracy)}"
        harm = "the rise" if loss else "the loss"
        if recovery(best) <= 0:
            sentences.append(f"No single block rewound to OLD recovers any of {harm}.")
        else:
            sentences.append(f"Rewinding `{best.blocks[0]}` alone to OLD recovers {100 * recovery(best):.0f} % of {harm} "
                             f"(old task {pct(best.old_accuracy)}{cost}).")
        if recovery(best) < 0.9:
            enough = [r for r in d.resets if recovery(r) >= 0.9]
            if enough:
                fewest = min(enough, key=lambda r: len(r.blocks))
                sentences.append(f"At least 90 % needs {len(fewest.blocks)} blocks: {fewest.label} "
                                 f"(old task {pct(fewest.old_accuracy)}).")
            else:
                sentences.append(f"No rewind analysed recovers 90 % of {harm}.")
    changes = [b for b in d.blocks if b.weight_change is not None and math.isfinite(b.weight_change)]
    similar = [b for b in d.blocks if math.isfinite(b.cka_debiased)]
    if changes:
        most = max(changes, key=lambda b: b.weight_change)  # type: ignore[arg-type,return-value]
        text = f"Most change is in `{most.block}` (relative weight change {most.weight_change:.3f}"
        lowest = min(similar, key=lambda b: b.cka_debiased) if similar else None
        if lowest is None or lowest.block == most.block:
            text += f", debiased CKA {most.cka_debiased:.3f})." if lowest is not None else ")."
        else:
            text += f"); the representation moved most at `{lowest.block}` (debiased CKA {lowest.cka_debiased:.3f})."
        sentences.append(text)
    if d.skipped:
        sentences.append(f"Not rewound (shapes differ): {', '.join(f'`{name}`' for name in d.skipped)}.")
    return " ".join(sentences)


def _render(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    fmt = lambda cells: "  ".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows])


def _under(key: str, prefix: str) -> bool:
    return not prefix or key == prefix or key.startswith(prefix + ".")


def _check_pair(old: WrappedModel, new: WrappedModel) -> dict[str, str]:
    """Raise unless OLD and NEW are one architecture (NEW's head may be grown: more
    outputs); return ``{block: reason}`` for the blocks whose shapes differ."""
    a, b = old.module.state_dict(), new.module.state_dict()
    shapes = {k: (tuple(a[k].shape), tuple(b[k].shape)) for k in a if k in b and tuple(a[k].shape) != tuple(b[k].shape)}
    grown = new.head_name == old.head_name and new.n_outputs > old.n_outputs and all(
        _under(k, old.head_name) and all(x <= y for x, y in zip(*shapes[k])) for k in shapes
    )
    if set(a) != set(b) or (shapes and not grown):
        missing = sorted(set(a) - set(b))[:10]
        extra = sorted(set(b) - set(a))[:10]
        listed = [f"{k}: {sa} vs {sb}" for k, (sa, sb) in shapes.items()][:10]
        raise IncompatibleError(
            "OLD and NEW must be the same architecture (only a head grown by finetune, with more outputs, may differ): "
            f"NEW lacks keys {missing}, has extra keys {extra}, shape mismatches (OLD vs NEW) {listed}."
        )
    if old.block_names != new.block_names:
        raise IncompatibleError(f"OLD and NEW must name the same blocks. Got {list(old.block_names)} and {list(new.block_names)}.")
    reason = (f"the head {old.head_name!r} grew from {old.n_outputs} to {new.n_outputs} outputs (shapes differ): "
              "its weight change is over the old rows; it is not rewound")
    return {name: reason for name in old.block_names if any(_under(k, name) for k in shapes)}


def accuracy(model: nn.Module, data: UserData, batch_size: int = 512) -> float:
    """Accuracy of ``model`` (eval mode; modes restored) on ``data``.

    Example:
        >>> from forgetlab.user import WrappedModel, user_data
        >>> net = nn.Sequential(nn.Linear(2, 2))
        >>> accuracy(WrappedModel(net), user_data(torch.zeros(4, 2), [0, 0, 0, 0])) in (0.0, 1.0)
        True
    """
    if data.n_samples == 0:
        return 0.0
    return int((predict(model, data.x, batch_size) == data.y).sum()) / data.n_samples


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Predicted labels ``(N,)`` (argmax of the logits) of ``model`` (eval mode; modes
    restored) on inputs ``x`` (uint8 scaled to [0, 1], else float32).

    Example:
        >>> predict(nn.Sequential(nn.Linear(2, 3)), torch.zeros(4, 2)).shape
        torch.Size([4])
    """
    device = next(model.parameters()).device
    out = []
    with eval_mode(model):
        for start in range(0, x.shape[0], batch_size):
            out.append(model(as_inputs(x[start : start + batch_size]).to(device)).argmax(1).cpu())
    return torch.cat(out)


def weight_change(old: nn.Module, new: nn.Module, blocks: Sequence[str] | None = None) -> dict[str, float | None]:
    """``{block: ||w_new - w_old|| / ||w_old||}`` over each block's parameters (``None``
    for a block without parameters; ``inf`` when OLD's weights are all zero). A head
    grown in NEW is compared on its old rows (NEW's tensors cut to OLD's shapes).

    Example:
        >>> a = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
        >>> b = copy.deepcopy(a)
        >>> with torch.no_grad():
        ...     _ = b[0].weight.mul_(2.0)
        >>> change = weight_change(a, b)
        >>> 0 < change["0"] < 1, change["1"]
        (True, None)
    """
    old_w, new_w = wrap_model(old, blocks), wrap_model(new, blocks)
    _check_pair(old_w, new_w)
    out: dict[str, float | None] = {}
    for name in old_w.block_names:
        pairs = list(zip(old_w.blocks[name].parameters(), new_w.blocks[name].parameters()))
        if not pairs:
            out[name] = None
            continue
        pairs = [(a, b[tuple(slice(0, n) for n in a.shape)]) for a, b in pairs]  # a grown head: its old rows
        diff = math.sqrt(sum(float((b.detach().double() - a.detach().double()).square().sum()) for a, b in pairs))
        norm = math.sqrt(sum(float(a.detach().double().square().sum()) for a, _ in pairs))
        out[name] = diff / norm if norm > 0 else (0.0 if diff == 0 else math.inf)
    return out


def _rewound(old: WrappedModel, new: WrappedModel, blocks: Sequence[str]) -> WrappedModel:
    model = copy.deepcopy(new)
    for name in blocks:
        model.blocks[name].load_state_dict(old.blocks[name].state_dict())
    return model


def reset_analysis(
    old: nn.Module, new: nn.Module, data: UserData, new_data: UserData | None = None, blocks: Sequence[str] | None = None
) -> list[ResetResult]:
    """Accuracy of copies of NEW with blocks rewound to OLD: each block, then the first
    ``j`` (bottom-up) and the last ``j`` (top-down) blocks, ``j >= 2``, over the blocks
    whose shapes match (a head grown in NEW cannot be rewound). Neither model changes.

    Example:
        >>> from forgetlab.user import user_data
        >>> a = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2))
        >>> rows = reset_analysis(a, copy.deepcopy(a), user_data(torch.randn(8, 2), torch.arange(8) % 2))
        >>> [(r.kind, len(r.blocks)) for r in rows]
        [('block', 1), ('block', 1), ('block', 1), ('bottom-up', 2), ('bottom-up', 3), ('top-down', 2)]
    """
    old_w, new_w = wrap_model(old, blocks), wrap_model(new, blocks)
    skipped = _check_pair(old_w, new_w)
    names = tuple(name for name in old_w.block_names if name not in skipped)
    sets: list[tuple[str, tuple[str, ...]]] = [("block", (name,)) for name in names]
    sets += [("bottom-up", names[:j]) for j in range(2, len(names) + 1)]
    sets += [("top-down", names[-j:]) for j in range(2, len(names))]  # all blocks = bottom-up n
    results = []
    for kind, chosen in sets:
        model = _rewound(old_w, new_w, chosen)
        results.append(
            ResetResult(kind, tuple(chosen), score(model, data), None if new_data is None else score(model, new_data))
        )
    return results


def score(model: nn.Module, data: UserData) -> float:
    """``model``'s score on ``data``: its own ``score`` (a causal LM's next-token loss,
    :class:`~forgetlab.user.transformers.HFModel`) when it has one, else its accuracy.

    Example:
        >>> from forgetlab.user import WrappedModel, user_data
        >>> score(WrappedModel(nn.Sequential(nn.Linear(2, 2))), user_data(torch.zeros(4, 2), [0, 0, 0, 0])) in (0.0, 1.0)
        True
    """
    own = getattr(model, "score", None)
    return own(data) if callable(own) else accuracy(model, data)


def diagnose(
    old: nn.Module,
    new: nn.Module,
    data: UserData,
    new_data: UserData | None = None,
    *,
    blocks: Sequence[str] | None = None,
    k: int = 10,
    max_samples: int = 2000,
    pool: bool = False,
    batch_size: int = 256,
    input_normalization: str = "auto",
) -> Diagnosis:
    """The full diagnosis of OLD vs NEW (see the module docstring).

    ``old`` / ``new``: the same architecture (WrappedModels, or any modules, wrapped with
    ``blocks``), NEW's head possibly grown. ``data``: the old task's labelled data; the
    similarity measures use its first ``max_samples`` inputs. ``k``: subspace dimension
    (lowered per block to the rank of its activations and to half its width: a subspace
    of the whole space is trivially 1). ``pool``: average conv maps over space before
    CKA / subspace. ``input_normalization``: ``auto`` applies the normalisation OLD
    records (``old.input_normalization``, a forgetlab checkpoint's) to the raw inputs of
    both data sets; ``none`` feeds them as given.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from forgetlab.user import WrappedModel, user_data
        >>> torch.manual_seed(0) and None
        >>> old = WrappedModel(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)))
        >>> new = WrappedModel(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)))
        >>> data = user_data(torch.randn(50, 4), torch.arange(50) % 2)
        >>> result = diagnose(old, new, data, k=2)
        >>> [row.block for row in result.blocks], len(result.resets)
        (['0', '1', '2'], 6)
    """
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ConfigError(f"The 'k' parameter must be an integer >= 1. Got {k!r}.")
    if not isinstance(max_samples, int) or max_samples < 4:
        raise ConfigError(
            f"The 'max_samples' parameter (--max-samples) must be an integer >= 4: debiased CKA needs at least 4 "
            f"examples. Got {max_samples!r}."
        )
    old_w, new_w = wrap_model(old, blocks), wrap_model(new, blocks)
    skipped = _check_pair(old_w, new_w)
    normalization, normalization_record = chosen_normalization(old_w, input_normalization)
    check_fits(data, old_w)
    if new_data is not None:
        check_fits(new_data, new_w)  # its labels may be NEW's added classes
    if data.n_samples < 4:
        raise DataError(f"diagnose needs at least 4 examples for debiased CKA; the file {data.source} has {data.n_samples}.")
    if normalization is not None:
        data = normalize_inputs(data, normalization)
        new_data = None if new_data is None else normalize_inputs(new_data, normalization)
    names = old_w.block_names
    inputs = as_inputs(data.x[:max_samples])
    notes = list(getattr(old_w, "notes", []))
    if hasattr(old_w, "block_features"):  # a transformer: pooled over tokens, streamed
        similarity = streamed_similarity(old_w, new_w, inputs, names, k, batch_size=min(batch_size, 64))
        notes += [f"block {name!r}: no CKA / subspace similarity ({why})" for name, (*_, why) in similarity.items() if why]
    else:
        similarity = _similarity(old_w, new_w, inputs, names, k, pool, batch_size)
    changes = weight_change(old_w, new_w)
    resets = reset_analysis(old_w, new_w, data, new_data)
    single = {r.blocks[0]: r for r in resets if r.kind == "block"}
    rows = []
    for name in names:
        cka_debiased, cka_biased, sim, k_used, _ = similarity[name]
        reset = single.get(name)
        rows.append(
            BlockDiagnosis(
                name, changes[name], cka_debiased, cka_biased, sim, k_used,
                None if reset is None else reset.old_accuracy, None if reset is None else reset.new_accuracy,
            )
        )
    models = {key: w.source for key, w in (("old_model", old_w), ("new_model", new_w)) if w.source}
    return Diagnosis(
        old_task={"old": score(old_w, data), "new": score(new_w, data)},
        new_task=None if new_data is None else {"old": score(old_w, new_data), "new": score(new_w, new_data)},
        blocks=rows,
        resets=resets,
        n_samples=int(inputs.shape[0]),
        k=k,
        sources={"data": data.source, **({"new_data": new_data.source} if new_data is not None else {}), **models},
        n_examples={"old_task": data.n_samples, **({"new_task": new_data.n_samples} if new_data is not None else {})},
        skipped=skipped,
        input_normalization=normalization_record,
        metric=old_w.metric,
        representation=old_w.describe_pooling() if hasattr(old_w, "describe_pooling") else "",
        notes=notes,
    )


Similarity = tuple[float, float, "float | None", int, str]  # debiased CKA, CKA, subspace, its k, why missing


def _similarity(old: WrappedModel, new: WrappedModel, inputs: torch.Tensor, names: Sequence[str], k: int, pool: bool,
                batch_size: int) -> dict[str, Similarity]:
    """Per block, OLD vs NEW on ``inputs``: CKA from :func:`~forgetlab.analysis.cka_table`, subspace
    similarity of the activations (held in memory: a plain model's blocks are small)."""
    cka_rows = cka_table(old.module, new.module, inputs, names, condition="OLD vs NEW", pool=pool, batch_size=batch_size)
    cka = {(r.block, r.measure): r.value for r in cka_rows}
    acts_old = collect_activations(old.module, inputs, names, pool=pool, batch_size=batch_size)
    acts_new = collect_activations(new.module, inputs, names, pool=pool, batch_size=batch_size)
    out = {}
    for name in names:
        same_space = acts_old[name].shape[1:] == acts_new[name].shape[1:]
        sim, k_used = _subspace(acts_old[name], acts_new[name], k) if same_space else (None, 0)
        out[name] = (cka[(name, "linear_cka_debiased")], cka[(name, "linear_cka")], sim, k_used, "")
    return out


def streamed_similarity(
    old: nn.Module, new: nn.Module, inputs: torch.Tensor, names: Sequence[str], k: int, batch_size: int = 64,
) -> dict[str, Similarity]:
    """Per block, OLD vs NEW: debiased and biased linear CKA and the top-``k`` subspace
    similarity of the models' ``block_features`` (one row per input: a transformer's
    hidden states pooled over tokens), streamed batch by batch into one
    :class:`~forgetlab.analysis.LinearCKAAccumulator` per block: memory O(blocks x
    width²), whatever the number of inputs. The subspaces come from the accumulator's
    centred scatter matrices; ``k`` is lowered to their rank and to half the width. A
    block without rows (``None``) or whose similarity is undefined gets NaN / ``None``
    and the reason."""
    accumulators = {name: LinearCKAAccumulator() for name in names}
    missing: dict[str, str] = {}
    device = next(old.parameters()).device
    with eval_mode(old), eval_mode(new), torch.no_grad():
        for start in range(0, inputs.shape[0], batch_size):
            x = inputs[start : start + batch_size].to(device)
            a, b = old.block_features(x, names), new.block_features(x, names)
            for name in names:
                if a[name] is None or b[name] is None:
                    missing[name] = "its output is not one row of at most 8192 values per input"
                elif name not in missing:
                    accumulators[name].update(a[name].cpu(), b[name].cpu())
    out: dict[str, Similarity] = {}
    for name in names:
        acc = accumulators[name]
        if name in missing:
            out[name] = (math.nan, math.nan, None, 0, missing[name])
            continue
        try:
            debiased, biased = acc.compute(debiased=True), acc.compute()
        except NumericalError as exc:
            out[name] = (math.nan, math.nan, None, 0, str(exc).rstrip("."))
            continue
        sx, sy = acc.scatter_matrices()
        sim, k_used = _subspace_from_scatter(sx, sy, k) if sx.shape == sy.shape else (None, 0)
        out[name] = (debiased, biased, sim, k_used, "")
    return out


def _subspace_from_scatter(sx: torch.Tensor, sy: torch.Tensor, k: int) -> tuple[float | None, int]:
    """Subspace similarity of the top eigenvectors of two scatter matrices; only the top
    ``min(k, width // 2)`` eigenpairs are computed (SciPy's ``eigh`` with a subset)."""
    import scipy.linalg

    width = sx.shape[0]
    top = min(k, width // 2)
    if top < 1:
        return None, 0
    bases, ranks = [], []
    for scatter in (sx, sy):
        values, vectors = scipy.linalg.eigh(scatter.numpy(), subset_by_index=[width - top, width - 1], driver="evr")
        values, vectors = values[::-1].copy(), vectors[:, ::-1].copy()
        largest = float(values[0])
        ranks.append(int((values > 1e-6 * largest).sum()) if largest > 0 else 0)  # float32 products: 1e-6 is noise
        bases.append(torch.from_numpy(vectors))
    k_used = min(top, *ranks)
    if k_used < 1:
        return None, 0
    return similarity_of_bases(bases[0][:, :k_used], bases[1][:, :k_used]), k_used


def _rank(x: torch.Tensor) -> int:
    x = x.double() - x.double().mean(0)
    s = torch.linalg.svdvals(x)
    return int((s > 1e-6 * s[0]).sum()) if s.numel() and float(s[0]) > 0 else 0


def _subspace(a: torch.Tensor, b: torch.Tensor, k: int) -> tuple[float | None, int]:
    k_used = min(k, _rank(a), _rank(b), a.shape[1] // 2)  # k = n_features would give 1 trivially
    if k_used < 1:
        return None, 0
    return subspace_similarity(a, b, k_used), k_used


def write_report(diagnosis: Diagnosis, directory: str | Path, title: str = "forgetlab diagnose") -> Path:
    """Write the HTML report of ``diagnosis`` (page and figures: :mod:`forgetlab.report.diagnose`)
    into ``directory``; return the path of ``report.html``.

    Example:
        >>> import tempfile
        >>> d = Diagnosis({"old": 0.9, "new": 0.2}, None,
        ...     [BlockDiagnosis("fc1", 0.5, 0.8, 0.85, 0.7, 3, 0.3, None)], [ResetResult("block", ("fc1",), 0.3, None)], 100, 3)
        >>> path = write_report(d, tempfile.mkdtemp())
        >>> path.name, "<img" in path.read_text()
        ('report.html', True)
    """
    return diagnosis_report(diagnosis.to_dict(), directory, title)
