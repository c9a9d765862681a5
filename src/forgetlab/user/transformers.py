"""Hugging Face transformer models (issue 17): a ``save_pretrained`` folder and text data,
seen through the same machinery as any user model.

* :func:`load_hf_model`: a folder written by ``save_pretrained`` (``config.json``, the
  weights, the tokenizer files) with a sequence-classification or a causal-LM head, as
  an :class:`HFModel`, a :class:`~forgetlab.user.wrap.WrappedModel` whose blocks are the
  embeddings, each transformer layer and the head, found from the model itself and named
  by their module paths (``bert.embeddings``, ``bert.encoder.layer.0``, ...,
  ``classifier``); ``blocks=`` (``--blocks``) overrides. :func:`save_hf_model` writes one
  back (``save_pretrained``, the tokenizer, ``forgetlab.json``).
* :func:`load_text_data`: CSV (``text_column``, ``label_column``), JSONL (one object per
  line) or plain text (one example per line), tokenised in batches by the model's own
  tokenizer, truncated to ``max_length`` tokens (counted and reported) and right-padded;
  the result is :class:`~forgetlab.user.userdata.UserData` whose ``x`` packs token ids
  and attention mask as ``(N, 2, L)`` float32 (ids are exact below 2**24) and whose ``y``
  is the label (classifiers) or the next-token targets ``(N, L - 1)`` with ``-100`` at
  padding (causal LMs).
* :class:`LoRA`: low-rank adapters through ``peft`` for ``finetune(lora=...)``, merged
  into the weights afterwards (the saved model has the original architecture).

:func:`~forgetlab.user.diagnose` and :func:`~forgetlab.user.finetune` take an
:class:`HFModel` like any other model. A classifier is scored by accuracy; a causal LM
by its mean next-token cross-entropy over non-padding tokens (``metric = "loss"``,
perplexity = ``exp(loss)``). Hidden states are compared per layer after pooling over
tokens: the mean over non-padding tokens, or the last non-padding token
(``token_pooling``; default: mean for classifiers, last for causal LMs), streamed
batch by batch into the CKA accumulators.

``transformers`` is imported only when a model is loaded: without the ``hf`` extra,
that raises a one-line error naming ``pip install -e ".[hf]"``.

Example:
    >>> is_hf_folder(".")
    False
"""

from __future__ import annotations

import copy
import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from forgetlab.errors import ConfigError, DataError, IncompatibleError
from forgetlab.strategies import create_strategy
from forgetlab.strategies.distillation import LwF, PseudoRehearsal
from forgetlab.user.userdata import UserData
from forgetlab.user.wrap import WrappedModel

__all__ = [
    "CAUSAL_LM", "CLASSIFIER", "HFModel", "LoRA", "TOKEN_POOLINGS", "TextData", "align_lengths", "default_blocks",
    "block_similarity", "is_hf_folder", "load_hf_model", "load_text_data", "next_token_targets", "require_transformers",
    "save_hf_model", "truncation_notes",
]

CLASSIFIER, CAUSAL_LM = "sequence-classification", "causal-lm"
TOKEN_POOLINGS = ("auto", "mean", "last")
INSTALL = 'pip install -e ".[hf]"'
SIDECAR = "forgetlab.json"
IGNORE = -100  # next-token target at padding (F.cross_entropy's ignore_index)
MAX_SIMILARITY_WIDTH = 8192  # wider block outputs (an LM head's vocabulary) get no CKA / subspace


def require_transformers(feature: str = "Hugging Face models") -> Any:
    """The ``transformers`` module, or a one-line :class:`ConfigError` naming the extra.

    Example:
        >>> require_transformers().__name__  # doctest: +SKIP
        'transformers'
    """
    try:
        import transformers
    except ImportError as exc:
        raise ConfigError(
            f"{feature} need the 'hf' extra (transformers, peft, tokenizers), which is not installed ({exc}): "
            f"{INSTALL} (from a checkout) or pip install 'forgetlab[hf]'."
        ) from None
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers


def is_hf_folder(path: str | Path) -> bool:
    """True when ``path`` is a folder holding a ``config.json`` (as ``save_pretrained`` writes)."""
    path = Path(path)
    return path.is_dir() and (path / "config.json").is_file()


def _kind_of(config: Any, folder: str) -> str:
    names = list(getattr(config, "architectures", None) or [])
    if any(n.endswith("ForSequenceClassification") for n in names):
        return CLASSIFIER
    if any(n.endswith("ForCausalLM") or n.endswith("LMHeadModel") for n in names):
        return CAUSAL_LM
    raise IncompatibleError(
        f"The model folder {folder!r} holds a {', '.join(names) or 'model without architectures in config.json'}: "
        "forgetlab handles sequence-classification (...ForSequenceClassification) and causal-LM (...ForCausalLM, "
        "...LMHeadModel) models."
    )


# ------------------------------------------------------------------------ blocks -----

def _path_of(module: nn.Module, target: nn.Module) -> str:
    for name, sub in module.named_modules():
        if sub is target:
            return name
    raise IncompatibleError(f"{type(target).__name__} is not a submodule of {type(module).__name__}.")


def _layer_list(module: nn.Module) -> str:
    """The path of the ``nn.ModuleList`` of transformer layers (``config.num_hidden_layers`` long)."""
    n_layers = getattr(module.config, "num_hidden_layers", None)
    found = [name for name, sub in module.named_modules() if isinstance(sub, nn.ModuleList) and len(sub) == n_layers]
    if not found:
        raise ConfigError(
            f"The 'blocks' parameter (--blocks) is required for {type(module).__name__}: forgetlab found no list of its "
            f"{n_layers} transformer layers. Name the blocks as dotted module paths."
        )
    return min(found, key=lambda name: name.count("."))


def head_path(module: nn.Module, kind: str) -> str:
    """The final linear layer: the output embeddings of a causal LM, the last ``nn.Linear``
    of a classifier (``classifier``, RoBERTa's ``classifier.out_proj``)."""
    if kind == CAUSAL_LM:
        return _path_of(module, module.get_output_embeddings())
    return [name for name, sub in module.named_modules() if isinstance(sub, nn.Linear)][-1]


def default_blocks(module: nn.Module, kind: str) -> tuple[str, ...]:
    """The embeddings, each transformer layer, every other part with parameters (a
    pooler, the final norm) and the head, as module paths in the order of the parameters
    (input side first). The embedding block is the module holding the input embeddings
    (BERT's ``bert.embeddings``), or each embedding table when they sit in the base model
    itself (GPT-2's ``transformer.wte``, ``transformer.wpe``). A head tied to the input
    embeddings (GPT-2's ``lm_head``) has no weights of its own and is not a block.
    (Examples: ``tests/user/test_hf.py``, on models built from configs.)
    """
    layers = _layer_list(module)
    n_layers = len(module.get_submodule(layers))
    embedding = _path_of(module, module.get_input_embeddings())
    parent = embedding.rpartition(".")[0]
    if parent and not layers.startswith(parent + "."):
        chosen = [parent]
    else:
        base = module.get_submodule(parent) if parent else module
        chosen = [f"{parent}.{n}" if parent else n for n, sub in base.named_children() if isinstance(sub, nn.Embedding)]
    chosen += [f"{layers}.{i}" for i in range(n_layers)]
    head = head_path(module, kind)
    covered = {id(p) for name in chosen for p in module.get_submodule(name).parameters()}
    tied = all(id(p) in covered for p in module.get_submodule(head).parameters())
    if not tied:
        chosen.append(head)
        covered |= {id(p) for p in module.get_submodule(head).parameters()}
    order = {id(p): i for i, p in enumerate(module.parameters())}
    for name, p in module.named_parameters():  # the rest: the shortest path that holds no block's parameter
        if id(p) in covered:
            continue
        pieces = name.split(".")[:-1]
        for depth in range(1, len(pieces) + 1):
            prefix = ".".join(pieces[:depth])
            if not any(id(q) in covered for q in module.get_submodule(prefix).parameters()):
                break
        else:
            continue
        chosen.append(prefix)
        covered |= {id(q) for q in module.get_submodule(prefix).parameters()}
    first = lambda block: min((order[id(p)] for p in module.get_submodule(block).parameters()), default=len(order))  # noqa: E731
    return tuple(sorted(chosen, key=first))


# ------------------------------------------------------------------------- model -----

class _TokenHead(nn.Module):
    """A causal LM's output layer seen per token: hidden states ``(B, T, H)`` -> logits
    ``(B, V, T)`` (the class dimension second, as ``F.cross_entropy`` takes sequences)."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.head(hidden).transpose(1, 2)


class HFModel(WrappedModel):
    """A Hugging Face sequence classifier or causal LM as a :class:`WrappedModel`.

    Inputs are the packed ``(B, 2, L)`` tensors of :func:`load_text_data` (token ids,
    attention mask, right-padded); every batch is cut to its longest text before the
    model runs. A classifier returns logits ``(B, n_labels)``; a causal LM returns the
    next-token logits ``(B, V, L - 1)`` (position t predicts token t + 1; positions past
    a text's end hold zeros and have target ``-100``), ``features`` its last hidden
    states ``(B, L - 1, H)`` and ``heads[0]`` maps them to those logits, so that the
    engine's cross-entropy, the replay buffer and EWC's Fisher see per-token losses with
    padding excluded. ``token_pooling``: how block outputs ``(B, T, H)`` become one
    vector per text for CKA and subspace similarity (``mean`` over non-padding tokens,
    or the ``last`` non-padding token).
    """

    def __init__(
        self, module: nn.Module, kind: str, tokenizer: Any = None, blocks: Sequence[str] | str | None = None,
        token_pooling: str = "auto",
    ) -> None:
        if kind not in (CLASSIFIER, CAUSAL_LM):
            raise ConfigError(f"The 'kind' parameter must be {CLASSIFIER!r} or {CAUSAL_LM!r}. Got {kind!r}.")
        if token_pooling not in TOKEN_POOLINGS:
            raise ConfigError(f"The 'token_pooling' parameter (--token-pooling) must be one of {TOKEN_POOLINGS}. Got {token_pooling!r}.")
        super().__init__(module, blocks=default_blocks(module, kind) if blocks is None else blocks, head=head_path(module, kind))
        self.kind, self.tokenizer = kind, tokenizer
        self.token_level = kind == CAUSAL_LM
        self.metric = "loss" if self.token_level else "accuracy"
        self.token_pooling = ("last" if self.token_level else "mean") if token_pooling == "auto" else token_pooling
        self.label_names: list[str] = _label_names(module) if kind == CLASSIFIER else []
        if kind == CLASSIFIER and self.n_outputs < 2:
            raise IncompatibleError(
                f"{type(module).__name__} has {self.n_outputs} output (a regression head): forgetlab handles classifiers "
                "with at least 2 labels."
            )
        if kind == CLASSIFIER:
            _check_pooled_head(module, self.head_name)
        self.notes: list[str] = []

    # -- running the model ----------------------------------------------------------------
    @staticmethod
    def _cut(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and attention mask of packed inputs, cut to the batch's longest text."""
        if x.dim() != 3 or x.shape[1] != 2:
            raise IncompatibleError(
                f"A Hugging Face model takes packed token inputs (batch, 2, length) from load_text_data; got shape "
                f"{tuple(x.shape)}."
            )
        mask = x[:, 1] > 0.5
        length = max(int(mask.sum(1).max()), 1) if mask.numel() else 1
        return x[:, 0, :length].long(), mask[:, :length].long()

    def _run(self, x: torch.Tensor) -> tuple[Any, int]:
        """The HF model's output on packed inputs (cut to the batch's longest text) and their full length L."""
        ids, mask = self._cut(x)
        return self.module(input_ids=ids, attention_mask=mask), int(x.shape[2])

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        out, length = self._run(x)
        if not self.token_level:
            return out.logits
        logits = out.logits[:, :-1].transpose(1, 2)
        return F.pad(logits, (0, length - 1 - logits.shape[2]))

    @property
    def heads(self) -> tuple[nn.Module, ...]:
        head = self.module.get_submodule(self.head_name)
        return (_TokenHead(head),) if self.token_level else (head,)  # type: ignore[return-value]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if not self.token_level:
            return super().features(x)
        captured: list[torch.Tensor] = []
        handle = self.module.get_submodule(self.head_name).register_forward_hook(lambda _m, i, _o: captured.append(i[0]))
        try:
            _, length = self._run(x)
        finally:
            handle.remove()
        hidden = captured[-1][:, :-1]
        return F.pad(hidden, (0, 0, 0, length - 1 - hidden.shape[1]))

    def next_token_mask(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, L - 1)``: True where position t has a next token (t + 1 is not padding)."""
        return x[:, 1, 1:] > 0.5

    # -- scores -------------------------------------------------------------------------
    @torch.no_grad()
    def score(self, data: UserData, batch_size: int = 64) -> float:
        """Accuracy (classifier) or mean next-token loss over non-padding tokens (causal LM) on ``data``."""
        from forgetlab.analysis.activations import eval_mode
        from forgetlab.user.diagnosis import accuracy

        if not self.token_level:
            return accuracy(self, data, batch_size)
        device = next(self.parameters()).device
        total, count = 0.0, 0
        with eval_mode(self):
            for start in range(0, data.n_samples, batch_size):
                x = data.x[start : start + batch_size].to(device).float()
                y = data.y[start : start + batch_size].to(device)
                total += float(F.cross_entropy(self(x), y, ignore_index=IGNORE, reduction="sum"))
                count += int((y != IGNORE).sum())
        return total / count if count else math.nan

    # -- pooled block outputs (diagnose, analyze) ---------------------------------------------
    def block_features(self, x: torch.Tensor, names: Sequence[str]) -> dict[str, torch.Tensor | None]:
        """``{block: (B, width)}``: each block's output pooled over tokens (``token_pooling``),
        ``None`` for a block whose output is not one row per text or is wider than
        :data:`MAX_SIMILARITY_WIDTH`. Runs under ``no_grad`` (the caller sets eval mode)."""
        captured: dict[str, list[torch.Tensor]] = {name: [] for name in names}
        handles = [self.module.get_submodule(name).register_forward_hook(
            lambda _m, _i, out, name=name: captured[name].append(out[0] if isinstance(out, (tuple, list)) else out))
            for name in names]
        ids, mask = self._cut(x)
        try:
            with torch.no_grad():
                self.module(input_ids=ids, attention_mask=mask)
        finally:
            for handle in handles:
                handle.remove()
        result: dict[str, torch.Tensor | None] = {}
        for name in names:
            outs = captured[name]
            value = outs[0] if len(outs) == 1 and isinstance(outs[0], torch.Tensor) else None
            if value is not None and value.dim() == 3 and value.shape[:2] == mask.shape:
                value = self._pool(value, mask)
            ok = value is not None and value.dim() == 2 and value.shape[0] == x.shape[0] and value.shape[1] <= MAX_SIMILARITY_WIDTH
            result[name] = value.float() if ok else None
        return result

    def _pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.token_pooling == "last":
            last = (mask.sum(1) - 1).clamp(min=0)
            return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        weights = mask.to(hidden.dtype).unsqueeze(2)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)

    def describe_pooling(self) -> str:
        how = "the last non-padding token" if self.token_pooling == "last" else "the mean over non-padding tokens"
        return f"hidden states per text: {how} (token_pooling {self.token_pooling!r})"

    # -- data ---------------------------------------------------------------------------
    def align_data(self, datasets: Sequence[UserData | None]) -> list[UserData | None]:
        """The token data sets padded to one length (strategies concatenate their batches)."""
        return align_lengths(datasets)

    # -- copies -------------------------------------------------------------------------
    def rewrap(self, module: nn.Module) -> HFModel:
        """This model's settings around another module of the same kind (a grown head)."""
        other = HFModel(module, self.kind, self.tokenizer, self.block_names, self.token_pooling)
        other.source, other.label_names, other.notes = self.source, list(self.label_names), list(self.notes)
        if self.kind == CLASSIFIER and other.n_outputs > len(other.label_names):
            other.label_names += [str(k) for k in range(len(other.label_names), other.n_outputs)]
        if self.kind == CLASSIFIER:
            _set_labels(module, other.label_names)
        return other

    def with_blocks(self, blocks: Sequence[str] | str | None) -> HFModel:
        other = HFModel(self.module, self.kind, self.tokenizer, blocks, self.token_pooling)
        other.source, other.label_names, other.notes = self.source, list(self.label_names), list(self.notes)
        return other

    def with_lora(self, lora: LoRA) -> HFModel:
        """A copy with low-rank adapters injected (``peft``): only the adapters and the
        classifier head train."""
        return lora.apply(self)

    def merged(self) -> HFModel:
        """A copy with every LoRA adapter merged into its base weights (the original architecture)."""
        return LoRA.merge(self)

    def make_strategy(self, method: str, params: Any) -> Any:
        """The strategy of ``method`` for a causal LM, whose distillation matches next-token
        distributions over non-padding tokens; ``None`` (the usual one) for a classifier."""
        if not self.token_level:
            return None
        if method == "pseudo-rehearsal":
            if params.revision_source == "noise":
                raise ConfigError("The 'revision_source' parameter of PseudoRehearsal must not be 'noise' for a language model: pass revision texts (--revision-data).")
            return TokenPseudoRehearsal(params)
        if method == "lwf":
            if params.weighting != "sum":
                raise ConfigError(f"The 'weighting' parameter of LwF must be 'sum' for a language model. Got {params.weighting!r}.")
            return TokenLwF(params)
        if method == "replay" and params.buffer != "reservoir":
            raise ConfigError(f"The 'buffer' parameter of replay must be 'reservoir' for a language model (its targets are tokens, not classes). Got {params.buffer!r}.")
        return create_strategy(method, params)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, " + super().extra_repr()


def masked_soft_cross_entropy(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, temperature: float) -> torch.Tensor:
    """Soft-target cross-entropy of per-token logits ``(B, V, T)`` at temperature T, mean over
    the positions where ``mask`` ``(B, T)`` is True.

    Example:
        >>> s = torch.zeros(1, 2, 3); t = torch.zeros(1, 2, 3)
        >>> round(masked_soft_cross_entropy(s, t, torch.tensor([[True, True, False]]), 1.0).item(), 4)
        0.6931
    """
    per_token = -(F.softmax(teacher / temperature, dim=1) * F.log_softmax(student / temperature, dim=1)).sum(1)
    return per_token[mask].mean() if bool(mask.any()) else per_token.sum() * 0.0


class TokenPseudoRehearsal(PseudoRehearsal):
    """Pseudo-rehearsal for a causal LM: the frozen original's next-token distributions on
    revision texts, matched over their non-padding tokens (soft cross-entropy at
    ``temperature``, or MSE of the logits)."""

    def revision_loss(self, model: nn.Module, features: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        assert self._teacher is not None
        with torch.no_grad():
            teacher = self._teacher.heads[0](self._teacher.features(inputs))
        student, mask = model.heads[0](features), model.next_token_mask(inputs)
        if self.params.loss == "mse":
            return (student - teacher).square().mean(1)[mask].mean()
        return masked_soft_cross_entropy(student, teacher, mask, self.params.temperature)


class TokenLwF(LwF):
    """LwF for a causal LM: next-token loss on the new texts + ``lam`` x the soft
    cross-entropy to the original's next-token distributions on the same texts (every
    token of the vocabulary: an LM has no old classes to restrict to)."""

    def batch_loss(self, model: nn.Module, batch: Any, context: Any) -> torch.Tensor:
        if self._teacher is None:
            return super().batch_loss(model, batch, context)
        logits = model.heads[0](model.features(batch.inputs))
        with torch.no_grad():
            teacher = self._teacher.heads[0](self._teacher.features(batch.inputs))
        distill = masked_soft_cross_entropy(logits, teacher, batch.targets != IGNORE, self.params.temperature)
        task = F.cross_entropy(logits, batch.targets, ignore_index=IGNORE, label_smoothing=context.label_smoothing)
        return task + self.params.lam * distill


def _layer_linears(module: nn.Module) -> list[str]:
    """The names of the linear layers (``nn.Linear``, GPT-2's ``Conv1D``) inside the transformer layers."""
    layers = module.get_submodule(_layer_list(module))
    return sorted({name.rpartition(".")[2] for name, sub in layers.named_modules()
                   if isinstance(sub, nn.Linear) or type(sub).__name__ == "Conv1D"})


def _check_pooled_head(module: nn.Module, head: str) -> None:
    """Refuse a classifier whose head runs on every token and pools afterwards (GPT-2's
    ``...ForSequenceClassification``): the distillation methods need the head's input, one
    vector per text. One forward pass of a two-token text tells."""
    shapes: list[tuple[int, ...]] = []
    handle = module.get_submodule(head).register_forward_hook(lambda _m, i, _o: shapes.append(tuple(i[0].shape)))
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad():
            module(input_ids=torch.zeros(1, 2, dtype=torch.long, device=next(module.parameters()).device),
                   attention_mask=torch.ones(1, 2, dtype=torch.long, device=next(module.parameters()).device))
    finally:
        handle.remove()
        module.train(was_training)
    if shapes and len(shapes[0]) != 2:
        raise IncompatibleError(
            f"The classifier {head!r} of {type(module).__name__} runs on every token (its input has shape {shapes[0]}) and "
            "pools afterwards: forgetlab needs a head on one vector per text (BERT, DistilBERT, RoBERTa, ... "
            "ForSequenceClassification)."
        )


def _label_names(module: nn.Module) -> list[str]:
    id2label = getattr(module.config, "id2label", None) or {}
    n = int(getattr(module.config, "num_labels", len(id2label)) or len(id2label))
    return [str(id2label.get(i, id2label.get(str(i), i))) for i in range(n)]


def _set_labels(module: nn.Module, names: Sequence[str]) -> None:
    module.config.num_labels = len(names)
    module.config.id2label = {i: str(name) for i, name in enumerate(names)}
    module.config.label2id = {str(name): i for i, name in enumerate(names)}


# ------------------------------------------------------------------- load / save -----

def load_hf_model(
    folder: str | Path, *, blocks: Sequence[str] | None = None, token_pooling: str = "auto",
) -> HFModel:
    """The model in a ``save_pretrained`` folder (weights, ``config.json``, tokenizer files)
    as an :class:`HFModel` in eval mode; read offline (``local_files_only``). Its kind
    comes from ``config.architectures``; a ``forgetlab.json`` there (written by
    :func:`save_hf_model`) supplies the blocks by default."""
    transformers = require_transformers()
    folder = Path(folder).expanduser()
    if not is_hf_folder(folder):
        raise DataError(f"Model folder {str(folder)!r} has no config.json: is it a folder written by save_pretrained?")
    try:
        config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - transformers raises many types for a bad config
        raise DataError(f"Model folder {str(folder)!r}: config.json cannot be read ({_first_line(exc)}).") from None
    kind = _kind_of(config, str(folder))
    auto = transformers.AutoModelForSequenceClassification if kind == CLASSIFIER else transformers.AutoModelForCausalLM
    try:
        module = auto.from_pretrained(folder, local_files_only=True)
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"Model folder {str(folder)!r}: the weights cannot be loaded ({_first_line(exc)}).") from None
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except Exception as exc:  # noqa: BLE001
        raise DataError(
            f"Model folder {str(folder)!r}: its tokenizer cannot be loaded ({_first_line(exc)}); save it there with "
            "tokenizer.save_pretrained(folder)."
        ) from None
    meta = _read_sidecar(folder)
    model = HFModel(module, kind, tokenizer, blocks if blocks is not None else meta.get("blocks"), token_pooling).eval()
    model.source = str(folder)
    if kind == CAUSAL_LM and getattr(config, "tie_word_embeddings", False) and model.head_name not in model.block_names:
        model.notes.append(f"the head {model.head_name!r} is tied to the input embeddings: its weights belong to the embedding block")
    return model


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _read_sidecar(folder: Path) -> dict[str, Any]:
    path = folder / SIDECAR
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"Metadata file {str(path)!r} is not valid JSON ({exc}).") from None
    return meta if isinstance(meta, dict) else {}


def save_hf_model(model: HFModel, folder: str | Path, metadata: Mapping[str, Any] | None = None) -> Path:
    """Write ``model`` with ``save_pretrained`` (config with the label names of a grown
    head, safetensors weights), its tokenizer and ``forgetlab.json`` (kind, blocks, head,
    ``metadata``) into ``folder``; it loads back with :func:`load_hf_model` or with
    ``transformers`` itself."""
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"The 'out' parameter must be a folder for a Hugging Face model. Got {str(folder)!r}, which is a file.")
    folder.mkdir(parents=True, exist_ok=True)
    if model.kind == CLASSIFIER:
        _set_labels(model.module, model.label_names)
    model.module.save_pretrained(folder)
    if model.tokenizer is not None:
        model.tokenizer.save_pretrained(folder)
    meta = {"format": "forgetlab-hf-model", "kind": model.kind, "blocks": list(model.block_names),
            "head": model.head_name, "n_outputs": model.n_outputs, **dict(metadata or {})}
    (folder / SIDECAR).write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return folder


# -------------------------------------------------------------------------- data -----

@dataclass(frozen=True)
class TextData(UserData):
    """Tokenised texts: ``x`` ``(N, 2, L)`` float32 (token ids, attention mask), ``y`` labels
    ``(N,)`` or next-token targets ``(N, L - 1)`` (``-100`` at padding); ``n_truncated``
    texts were cut to ``max_length`` tokens."""

    n_truncated: int = 0
    max_length: int = 0
    labelled: bool = True
    label_names: tuple[str, ...] = field(default_factory=tuple)
    new_label_names: tuple[str, ...] = field(default_factory=tuple)


def _read_rows(path: Path, text_column: str, label_column: str) -> tuple[list[str], list[Any] | None]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            if text_column not in columns:
                raise DataError(f"{path}: has no text column {text_column!r} (--text-column); its columns: {', '.join(columns) or '(none)'}.")
            rows = list(reader)
        labels = [row[label_column] for row in rows] if label_column in columns else None
        return [row[text_column] or "" for row in rows], labels
    if suffix in (".jsonl", ".json"):
        texts, labels, has_labels = [], [], True
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise DataError(f"{path}: line {number} is not a JSON object ({exc}).") from None
            if not isinstance(row, dict) or text_column not in row:
                raise DataError(f"{path}: line {number} has no text field {text_column!r} (--text-column).")
            texts.append(str(row[text_column]))
            has_labels = has_labels and label_column in row
            labels.append(row.get(label_column))
        return texts, labels if has_labels else None
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()], None


def _label_ids(raw: Sequence[Any], names: list[str], source: str) -> list[int]:
    """Label values -> ids: integers as given; names through the model's ``id2label``, a
    name it lacks becomes a new label (the next id: the head grows in finetune)."""
    ids = []
    for value in raw:
        text = str(value).strip()
        number = _integer(text)
        if number is not None and text not in names:
            label = number
            if label < 0:
                raise DataError(f"{source}: labels must be >= 0; got {label}.")
        elif text in names:
            label = names.index(text)
        elif not text:
            raise DataError(f"{source}: a row has an empty label.")
        else:
            names.append(text)
            label = len(names) - 1
        ids.append(label)
    return ids


def _integer(text: str) -> int | None:
    """``"3"`` or ``"3.0"`` -> 3; anything else (a label name) -> None."""
    try:
        number = float(text)
    except ValueError:
        return None
    return int(number) if math.isfinite(number) and number == int(number) else None


def load_text_data(
    path: str | Path, model: HFModel, *, text_column: str = "text", label_column: str = "label",
    max_length: int = 128, require_labels: bool = True, batch_size: int = 1000,
) -> TextData:
    """Read and tokenise a text file with ``model``'s tokenizer (see the module docstring).

    ``.csv`` (a header row; ``text_column``, ``label_column``), ``.jsonl`` (one JSON object
    per line with those keys) or any other file as plain text, one example per line. A
    classifier's labels are integers or names (``config.id2label``; a new name gets the
    next id and is added to ``model.label_names``); without a label column,
    ``require_labels=False`` gives labels 0 (revision texts). A causal LM's targets are
    the texts' own next tokens. Texts longer than ``max_length`` tokens (special tokens
    included) are truncated by the tokenizer and counted; all are right-padded to the
    longest (at most ``max_length``)."""
    path = Path(path).expanduser()
    source = str(path)
    if not path.is_file():
        raise DataError(f"Data file {source!r} does not exist.")
    if not isinstance(max_length, int) or max_length < 2:
        raise ConfigError(f"The 'max_length' parameter (--max-length) must be an integer >= 2. Got {max_length!r}.")
    texts, raw_labels = _read_rows(path, text_column, label_column)
    if not texts:
        raise DataError(f"{source}: holds no texts.")
    tokenizer = model.tokenizer
    if tokenizer is None:
        raise ConfigError("The model has no tokenizer: load it with load_hf_model from a folder that holds one.")
    vocab = int(getattr(model.module.config, "vocab_size", 0) or 0)
    if vocab >= 1 << 24:
        raise IncompatibleError(f"A vocabulary of {vocab} tokens is too large: token ids travel as float32 (exact below 2**24).")
    ids: list[list[int]] = []
    n_truncated = 0
    for start in range(0, len(texts), batch_size):
        chunk = texts[start : start + batch_size]
        full = tokenizer(chunk, truncation=False, padding=False)["input_ids"]
        long = [i for i, row in enumerate(full) if len(row) > max_length]
        if long:
            cut = tokenizer([chunk[i] for i in long], truncation=True, max_length=max_length, padding=False)["input_ids"]
            for i, row in zip(long, cut):
                full[i] = row
        n_truncated += len(long)
        ids += [list(row) for row in full]
    length = max(2, max(len(row) for row in ids))
    config = model.module.config
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if isinstance(limit, int) and length > limit:
        raise ConfigError(
            f"The 'max_length' parameter (--max-length) must be at most the model's {limit} positions: {source} has texts "
            f"of {length} tokens at --max-length {max_length}. Pass --max-length {limit} or less."
        )
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    x = torch.zeros(len(ids), 2, length, dtype=torch.float32)
    x[:, 0] = float(pad)
    for i, row in enumerate(ids):
        if row:
            x[i, 0, : len(row)] = torch.tensor(row, dtype=torch.float32)
            x[i, 1, : len(row)] = 1.0
    labelled = raw_labels is not None
    if model.token_level:
        y = next_token_targets(x)
    elif labelled:
        known = len(model.label_names)
        y = torch.tensor(_label_ids(raw_labels, model.label_names, source), dtype=torch.int64)
        new_names = model.label_names[known:]
    elif require_labels:
        raise DataError(f"{source}: has no label column {label_column!r} (--label-column); a classifier's data needs labels.")
    else:
        y = torch.zeros(len(ids), dtype=torch.int64)
    added = tuple(new_names) if labelled and not model.token_level else ()
    return TextData(x, y, source, n_truncated, max_length, labelled, tuple(model.label_names), added)


def truncation_notes(datasets: Sequence[UserData | None]) -> list[str]:
    """One line per text file whose texts were cut to ``max_length`` tokens.

    Example:
        >>> data = TextData(torch.zeros(4, 2, 3), torch.zeros(4, dtype=torch.long), "a.csv", n_truncated=1, max_length=3)
        >>> truncation_notes([data, None])
        ['1 of 4 texts of a.csv were truncated to 3 tokens (--max-length)']
    """
    notes = []
    for d in datasets:
        if isinstance(d, TextData) and d.n_truncated:
            notes.append(f"{d.n_truncated} of {d.n_samples} texts of {d.source} were truncated to {d.max_length} tokens (--max-length)")
        if isinstance(d, TextData) and d.new_label_names:
            first = len(d.label_names) - len(d.new_label_names)
            names = ", ".join(f"{name!r} = {first + i}" for i, name in enumerate(d.new_label_names))
            notes.append(f"{d.source}: labels the model's config.id2label lacks are new labels: {names}")
    return notes


def block_similarity(
    a: HFModel, b: HFModel, data: UserData, *, measure: str = "cka", k: int = 10, max_samples: int = 0,
) -> list[Any]:
    """``forgetlab analyze`` for two model folders: per block, CKA (debiased and biased) or
    the top-``k`` subspace similarity of A's and B's pooled hidden states on ``data``'s
    texts (the first ``max_samples``; 0 = all), streamed (as in ``diagnose``), as
    :class:`~forgetlab.analysis.BlockSimilarity` rows."""
    from forgetlab.analysis import BlockSimilarity
    from forgetlab.user.diagnosis import streamed_similarity

    if measure not in ("cka", "subspace"):
        raise ConfigError(f"The 'measure' parameter must be 'cka' or 'subspace'. Got {measure!r}.")
    x = data.x[:max_samples] if max_samples else data.x
    if x.shape[0] < 4:
        raise DataError(f"{data.source}: CKA needs at least 4 texts; got {x.shape[0]}.")
    found = streamed_similarity(a, b, x, a.block_names, k)
    rows = []
    for name, (debiased, biased, sim, k_used, _) in found.items():
        if measure == "cka":
            rows += [BlockSimilarity(name, "A vs B", "linear_cka_debiased", debiased, int(x.shape[0]), 0),
                     BlockSimilarity(name, "A vs B", "linear_cka", biased, int(x.shape[0]), 0)]
        else:
            rows.append(BlockSimilarity(name, "A vs B", "subspace_similarity", math.nan if sim is None else sim,
                                        int(x.shape[0]), 0, k_used))
    return rows


def next_token_targets(x: torch.Tensor) -> torch.Tensor:
    """``(N, L - 1)`` targets of packed inputs ``x``: token t + 1, or -100 where it is padding.

    Example:
        >>> x = torch.tensor([[[5.0, 6.0, 0.0], [1.0, 1.0, 0.0]]])
        >>> next_token_targets(x).tolist()
        [[6, -100]]
    """
    ids, mask = x[:, 0, 1:].long(), x[:, 1, 1:] > 0.5
    return torch.where(mask, ids, torch.full_like(ids, IGNORE))


def _padded(data: UserData, length: int) -> UserData:
    if data.x.dim() != 3 or data.x.shape[1] != 2:
        raise IncompatibleError(f"{data.source}: is not token data (shape {tuple(data.x.shape)}); read it with load_text_data.")
    extra = length - data.x.shape[2]
    if extra <= 0:
        return data
    x = F.pad(data.x, (0, extra))
    y = F.pad(data.y, (0, extra), value=IGNORE) if data.y.dim() == 2 else data.y
    fields = {"n_truncated": data.n_truncated, "max_length": data.max_length, "labelled": data.labelled,
              "label_names": data.label_names, "new_label_names": data.new_label_names} if isinstance(data, TextData) else {}
    return (TextData if fields else UserData)(x, y, data.source, **fields)


def align_lengths(datasets: Sequence[UserData | None]) -> list[UserData | None]:
    """Token data sets right-padded to the longest of them (``None`` kept).

    Example:
        >>> a = UserData(torch.ones(1, 2, 3), torch.zeros(1, dtype=torch.long), "a")
        >>> b = UserData(torch.ones(1, 2, 5), torch.zeros(1, dtype=torch.long), "b")
        >>> [tuple(d.x.shape) for d in align_lengths([a, None, b]) if d is not None]
        [(1, 2, 5), (1, 2, 5)]
    """
    length = max((d.x.shape[2] for d in datasets if d is not None and d.x.dim() == 3), default=0)
    return [None if d is None else _padded(d, length) for d in datasets]


# -------------------------------------------------------------------------- LoRA -----

@dataclass(frozen=True)
class LoRA:
    """Low-rank adapters (Hu et al. 2021) through ``peft``: rank ``r``, scale ``alpha / r``,
    ``dropout``, on the modules ``target_modules`` (default: peft's choice for the model
    type, e.g. BERT's ``query``/``value``, GPT-2's ``c_attn``). Injected into a copy of
    the model in place (module paths unchanged); the original weights and the embeddings
    are frozen, a classifier's head trains (its new labels need it). :meth:`merge` folds
    the adapters into the weights afterwards."""

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.r, int) or isinstance(self.r, bool) or self.r < 1:
            raise ConfigError(f"The 'r' parameter of LoRA (--lora) must be an integer >= 1. Got {self.r!r}.")
        if not self.alpha > 0:
            raise ConfigError(f"The 'alpha' parameter of LoRA (--lora-alpha) must be > 0. Got {self.alpha!r}.")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"The 'dropout' parameter of LoRA must be in [0, 1). Got {self.dropout!r}.")

    def apply(self, model: HFModel) -> HFModel:
        try:
            import peft
        except ImportError as exc:
            raise ConfigError(f"LoRA needs peft, part of the 'hf' extra, which is not installed ({exc}): {INSTALL}.") from None
        module = copy.deepcopy(model.module)
        targets = list(self.target_modules) or None
        conv1d = any(type(sub).__name__ == "Conv1D" for sub in module.modules())  # GPT-2's transposed linear layers
        config = peft.LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout, target_modules=targets,
                                 bias="none", fan_in_fan_out=conv1d)
        try:
            try:
                module = peft.inject_adapter_in_model(config, module)
            except ValueError:
                if targets:
                    raise
                # peft knows no default for this model type: every linear layer of the transformer layers
                config.target_modules = set(_layer_linears(module))
                module = peft.inject_adapter_in_model(config, module)
        except ValueError as exc:
            raise ConfigError(
                f"LoRA cannot be applied to {type(module).__name__} ({_first_line(exc)}): name the layers with "
                "--lora-targets (e.g. query,value)."
            ) from None
        for name, p in module.named_parameters():
            p.requires_grad_("lora_" in name)
        if model.kind == CLASSIFIER:
            module.get_submodule(model.head_name).requires_grad_(True)
        wrapped = model.rewrap(module)
        n_train = sum(p.numel() for p in module.parameters() if p.requires_grad)
        adapted = sorted(name.rpartition(".")[2] for name, sub in module.named_modules() if isinstance(sub, peft.tuners.lora.LoraLayer))
        wrapped.notes.append(f"LoRA r={self.r} alpha={self.alpha:g} on {', '.join(sorted(set(adapted)))} ({len(adapted)} layers): "
                             f"{n_train} of {sum(p.numel() for p in module.parameters())} parameters train")
        return wrapped

    @staticmethod
    def merge(model: HFModel) -> HFModel:
        """A copy of ``model`` with every adapter merged into its base layer (which replaces it)."""
        from peft.tuners.lora import LoraLayer

        module = copy.deepcopy(model.module)
        for name, sub in list(module.named_modules()):
            if isinstance(sub, LoraLayer):
                sub.merge()
                parent, _, child = name.rpartition(".")
                setattr(module.get_submodule(parent) if parent else module, child, sub.get_base_layer())
        for p in module.parameters():
            p.requires_grad_(True)
        merged = model.rewrap(module)
        merged.notes = list(model.notes)
        return merged
