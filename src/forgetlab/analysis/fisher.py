"""Diagonal Fisher information from per-sample gradients (SPEC §3, §4 EWC, §7): the ONE
per-sample Fisher of forgetlab, used by EWC, the trace overlap and the analyses; and MAS's
importance, the same machinery with ``|.|`` in place of ``(.)²``.

``F_θ = mean_i (∂ log p(y_i | x_i) / ∂θ)²`` over samples i, with y_i the true label
(``kind="empirical"``), a label sampled from the model's own prediction
(``kind="true"``) or the model's most probable label (``kind="predicted"``, van de Ven &
Tolias' 2019 EWC). The model runs in eval mode (BN running statistics, no dropout):
per-sample gradients are only defined when samples do not interact.

Methods:

* ``"exact"`` (default): exact per-sample squared gradients from one forward and one
  backward pass per batch, with per-layer tricks: ``nn.Linear`` (Σ_i g_i² a_i²ᵀ as one
  GEMM), ``nn.Conv2d`` (per-sample weight gradients of one layer at a time as a single
  grouped-convolution weight gradient, samples as groups), ``nn.BatchNorm1d/2d`` affine
  parameters (with running stats), ``nn.Embedding`` (each sample's rows summed over its
  positions), ``nn.LayerNorm`` and Hugging Face's ``Conv1D`` (GPT-2's linear layers), so
  that a transformer's Fisher needs no per-sample pass. Every other trainable parameter (other layer types,
  weights shared between several calls, Conv2d with ``padding="same"`` or non-zero
  padding modes) falls back to per-sample
  gradients with ``torch.func.vmap`` restricted to those parameters, and to a plain
  per-sample loop if vmap cannot trace the model: slower, equally exact.
* ``"batch_gradient"``: the cheap approximation ``Σ_b (n_b/N) (∂ mean_{i in b} loss_i / ∂θ)²``,
  i.e. squared *minibatch* gradients. It is about ``batch_size`` times smaller than the
  exact Fisher, so an EWC ``lambda`` tuned with one is not comparable with the other.
* ``"vmap"``: naive per-sample gradients of every parameter with ``torch.func.vmap``
  (materialises batch x parameters; a slow reference).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from forgetlab.analysis._checks import check_positive_int
from forgetlab.analysis.activations import Prepare, eval_mode, iter_batches, model_device
from forgetlab.errors import ConfigError, IncompatibleError
from forgetlab.models.base import BlockModel

__all__ = ["diagonal_fisher", "mas_importance"]

# per-sample value (B,) from logits (B, K) and labels (B,); labels from logits and the targets;
# op: square (Fisher) or abs (MAS), both multiplicative: op(g a) = op(g) op(a)
Value = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Labels = Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]
Op = Callable[..., torch.Tensor]

_F64 = torch.float64
_KINDS = ("empirical", "true", "predicted")
_METHODS = ("exact", "batch_gradient", "vmap")
# Per-sample weight gradients of a conv layer are built for this many elements at a time.
_CONV_CHUNK_ELEMENTS = 1 << 24
_CONV_GROUP_SAMPLES = 32


def _call(model: nn.Module, x: torch.Tensor, head_index: int) -> torch.Tensor:
    out = model(x, head_index) if isinstance(model, BlockModel) else model(x)
    if not isinstance(out, torch.Tensor) or out.dim() not in (2, 3) or out.shape[0] != x.shape[0]:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise IncompatibleError(
            f"Per-sample gradients need a model returning logits of shape (batch, n_classes), or (batch, n_classes, "
            f"n_tokens) per token, for inputs of shape {tuple(x.shape)}. Got {shape}."
        )
    return out


def _labels(
    logits: torch.Tensor, targets: torch.Tensor | None, kind: str, generator: torch.Generator | None
) -> torch.Tensor:
    if logits.dim() == 3:
        return _token_labels(logits, targets, kind, generator)
    if kind == "predicted":
        return logits.detach().argmax(1)
    if kind == "true":
        # Softmax in the model's precision, then float64 for the draw (EWC's Fisher since v1).
        probs = torch.softmax(logits.detach(), dim=1).to(_F64).cpu()
        return torch.multinomial(probs, 1, generator=generator).squeeze(1).to(logits.device)
    if targets is None:
        raise ConfigError(
            "kind='empirical' needs labels: pass 'targets' (or batches of (inputs, targets)); "
            "or use kind='true' to sample labels from the model."
        )
    targets = targets.reshape(-1).long()
    if targets.shape[0] != logits.shape[0]:
        raise IncompatibleError(
            f"targets must hold one label per input. Got targets of shape {tuple(targets.shape)} "
            f"for logits of shape {tuple(logits.shape)}."
        )
    n_classes = logits.shape[1]
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= n_classes):
        raise ConfigError(
            f"targets must be class indices in [0, {n_classes - 1}] for this head. Got values in "
            f"[{int(targets.min())}, {int(targets.max())}]."
        )
    return targets


def _token_labels(
    logits: torch.Tensor, targets: torch.Tensor | None, kind: str, generator: torch.Generator | None
) -> torch.Tensor:
    """Labels ``(B, T)`` for per-token logits ``(B, K, T)``: the targets (``empirical``), a draw
    from the model per token (``true``) or its argmax (``predicted``); positions whose target
    is negative (``-100``: padding) stay -100 and do not count."""
    if kind == "empirical" and targets is None:
        raise ConfigError("kind='empirical' needs labels: pass 'targets' (per token, -100 at padding).")
    if targets is not None and tuple(targets.shape) != (logits.shape[0], logits.shape[2]):
        raise IncompatibleError(
            f"targets must hold one label per token. Got targets of shape {tuple(targets.shape)} for logits of shape "
            f"{tuple(logits.shape)} (batch, n_classes, n_tokens)."
        )
    if kind == "empirical":
        return targets.long()
    flat = logits.detach().transpose(1, 2).reshape(-1, logits.shape[1])
    if kind == "predicted":
        labels = flat.argmax(1)
    else:
        probs = torch.softmax(flat, dim=1).to(_F64).cpu()
        labels = torch.multinomial(probs, 1, generator=generator).squeeze(1).to(logits.device)
    labels = labels.view(logits.shape[0], logits.shape[2])
    return labels if targets is None else torch.where(targets >= 0, labels, torch.full_like(labels, -100))


def _nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample ``-log p(y | x)`` ``(B,)``: the Fisher's per-sample value (per-token logits
    ``(B, K, T)``: the sum over the tokens whose label is not negative)."""
    if logits.dim() == 3:
        valid = labels >= 0
        picked = torch.log_softmax(logits, dim=1).gather(1, labels.clamp(min=0)[:, None]).squeeze(1)
        return -(picked * valid).sum(1)
    return -torch.log_softmax(logits, dim=1).gather(1, labels[:, None]).squeeze(1)


def _squared_norm(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample ``||f(x)||^2`` ``(B,)``: MAS's per-sample value (labels unused)."""
    return logits.square().flatten(1).sum(1)


def _supported(module: nn.Module) -> bool:
    if isinstance(module, nn.Linear):
        return True
    if isinstance(module, nn.Conv2d):
        padding_ok = module.padding == "valid" or not isinstance(module.padding, str)
        return module.padding_mode == "zeros" and padding_ok
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return module.affine and module.running_mean is not None and module.running_var is not None
    if isinstance(module, nn.Embedding):
        return module.max_norm is None and not module.scale_grad_by_freq and not module.sparse
    if isinstance(module, nn.LayerNorm):
        return module.elementwise_affine and len(module.normalized_shape) == 1
    return _is_conv1d(module)


def _is_conv1d(module: nn.Module) -> bool:
    """Hugging Face's ``Conv1D`` (GPT-2): ``y = x @ weight + bias``, a linear layer with the
    weight stored ``(in, out)``."""
    weight = getattr(module, "weight", None)
    return type(module).__name__ == "Conv1D" and isinstance(weight, torch.Tensor) and weight.dim() == 2 and hasattr(module, "nf")


def _embedding_squares(module: nn.Embedding, a: torch.Tensor, g: torch.Tensor, op: Op) -> dict[str, torch.Tensor]:
    """A sample's gradient of row v is the sum of its output gradients at the positions
    where its index is v: summed per (sample, index) pair, then op, then summed per index."""
    ids = a.reshape(a.shape[0], -1).long()
    grads = g.reshape(g.shape[0], -1, g.shape[-1])
    keys = (torch.arange(ids.shape[0], device=ids.device)[:, None] * module.num_embeddings + ids).reshape(-1)
    pairs, where = torch.unique(keys, return_inverse=True)
    per_pair = grads.new_zeros(pairs.shape[0], grads.shape[-1]).index_add_(0, where, grads.reshape(-1, grads.shape[-1]))
    weight = torch.zeros_like(module.weight).index_add_(0, pairs % module.num_embeddings, op(per_pair).to(module.weight.dtype))
    if module.padding_idx is not None:
        weight[module.padding_idx] = 0  # its row gets no gradient
    return {"weight": weight}


def _layernorm_squares(module: nn.LayerNorm, a: torch.Tensor, g: torch.Tensor, op: Op) -> dict[str, torch.Tensor]:
    """Per sample, dL/dweight = Σ_positions g ⊙ x̂ and dL/dbias = Σ_positions g (x̂: the normalised input)."""
    a3 = a.reshape(a.shape[0], -1, a.shape[-1])
    g3 = g.reshape(g.shape[0], -1, g.shape[-1])
    normalised = torch.nn.functional.layer_norm(a3, module.normalized_shape, eps=module.eps)
    out = {"weight": op((g3 * normalised).sum(1)).sum(0)}
    if module.bias is not None:
        out["bias"] = op(g3.sum(1)).sum(0)
    return out


def _conv1d_squares(module: nn.Module, a: torch.Tensor, g: torch.Tensor, op: Op) -> dict[str, torch.Tensor]:
    """Hugging Face's ``Conv1D``: :func:`_linear_squares` of its transposed weight."""
    view = nn.Linear(module.weight.shape[0], module.weight.shape[1], bias=module.bias is not None, device="meta")
    out = _linear_squares(view, a, g, op, zeros=torch.zeros_like(module.weight.T))
    out["weight"] = out["weight"].T
    return out


def _linear_squares(module: nn.Linear, a: torch.Tensor, g: torch.Tensor, op: Op, zeros: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    if a.dim() == 2:  # op(g a^T) = op(g) op(a)^T for op = square or abs: one GEMM
        g2 = op(g)
        out["weight"] = g2.T @ op(a)
        if module.bias is not None:
            out["bias"] = g2.sum(0)
        return out
    a3 = a.reshape(a.shape[0], -1, a.shape[-1])
    g3 = g.reshape(g.shape[0], -1, g.shape[-1])
    step = max(1, _CONV_CHUNK_ELEMENTS // max(1, module.weight.numel()))
    weight = torch.zeros_like(module.weight) if zeros is None else zeros
    for start in range(0, a3.shape[0], step):
        per_sample = torch.einsum("bto,bti->boi", g3[start : start + step], a3[start : start + step])
        weight += op(per_sample, out=per_sample).sum(0)
    out["weight"] = weight
    if module.bias is not None:
        out["bias"] = op(g3.sum(1)).sum(0)
    return out


def _conv_squares(module: nn.Conv2d, a: torch.Tensor, g: torch.Tensor, op: Op) -> dict[str, torch.Tensor]:
    """Per-sample weight gradients as ONE grouped-convolution weight gradient: the batch
    becomes the group dimension (samples x groups), so every sample's gradient comes out
    of the backend's convolution kernel instead of an unfold + batched matmul."""
    padding = 0 if module.padding == "valid" else module.padding
    weight: torch.Tensor | None = None
    out_channels, in_per_group = module.weight.shape[0], module.weight.shape[1]
    # At most 32 samples per grouped call: oneDNN is several times faster on such
    # groups than on a whole batch as groups (measured on CPU, e.g. 64->64 channels at 8x8).
    step = max(1, min(_CONV_GROUP_SAMPLES, _CONV_CHUNK_ELEMENTS // max(1, module.weight.numel())))
    for start in range(0, a.shape[0], step):
        ai, gi = a[start : start + step], g[start : start + step]
        n = ai.shape[0]
        per_sample = torch.nn.grad.conv2d_weight(
            ai.reshape(1, n * ai.shape[1], *ai.shape[2:]),
            (n * out_channels, in_per_group, *module.weight.shape[2:]),
            gi.reshape(1, n * out_channels, *gi.shape[2:]),
            stride=module.stride,
            padding=padding,
            dilation=module.dilation,
            groups=n * module.groups,
        ).reshape(n, *module.weight.shape)
        chunk = op(per_sample, out=per_sample).sum(0)
        weight = chunk if weight is None else weight + chunk
    assert weight is not None
    out = {"weight": weight}
    if module.bias is not None:
        out["bias"] = op(g.sum((2, 3))).sum(0)
    return out


def _batchnorm_squares(
    module: nn.modules.batchnorm._BatchNorm, a: torch.Tensor, g: torch.Tensor, op: Op
) -> dict[str, torch.Tensor]:
    # Eval mode: y = weight·(a - running_mean)/sqrt(running_var + eps) + bias, so per sample
    # dL/dweight = (Σ g·a - running_mean·Σ g) / sqrt(running_var + eps) over positions.
    dims = tuple(range(2, a.dim()))
    g_sum = g.sum(dims) if dims else g
    if dims:  # Σ over positions of g·a as a batched dot product (no full-size temporary)
        flat = (g.shape[0] * g.shape[1], 1, -1)
        ga_sum = torch.bmm(g.reshape(flat), a.reshape(flat).transpose(1, 2)).reshape(g.shape[:2])
    else:
        ga_sum = g * a
    inv_std = torch.rsqrt(module.running_var + module.eps).to(g.dtype)
    gamma = (ga_sum - module.running_mean.to(g.dtype) * g_sum) * inv_std
    return {"weight": op(gamma, out=gamma).sum(0), "bias": op(g_sum).sum(0)}


def _squares(module: nn.Module, a: torch.Tensor, g: torch.Tensor, op: Op, n: int) -> dict[str, torch.Tensor] | None:
    """Σ_samples op(per-sample gradient) of ``module``'s parameters from its input ``a`` and
    output gradient ``g``; ``None`` when they are not one row per sample (e.g. position
    embeddings shared by the batch): the fallback computes those."""
    if not a.shape[0] == g.shape[0] == n:
        return None
    if isinstance(module, nn.Linear):
        return _linear_squares(module, a, g, op)
    if isinstance(module, nn.Conv2d):
        return _conv_squares(module, a, g, op)
    if isinstance(module, nn.Embedding):
        return _embedding_squares(module, a, g, op)
    if isinstance(module, nn.LayerNorm):
        return _layernorm_squares(module, a, g, op)
    if _is_conv1d(module):
        return _conv1d_squares(module, a, g, op)
    return _batchnorm_squares(module, a, g, op)


def _vmap_squares(
    model: nn.Module, x: torch.Tensor, labels: torch.Tensor, names: list[str], head_index: int, value: Value, op: Op
) -> dict[str, torch.Tensor]:
    """Σ_i op(per-sample grad) of the parameters ``names``: vmap, else a per-sample loop."""
    from torch.func import functional_call, grad, vmap

    params = dict(model.named_parameters())
    fixed: dict[str, torch.Tensor] = {n: p.detach() for n, p in params.items() if n not in names}
    fixed.update({n: b.detach() for n, b in model.named_buffers()})
    train = {n: params[n].detach() for n in names}
    kwargs = {"head_index": head_index} if isinstance(model, BlockModel) else {}

    def loss_one(train_params: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, {**fixed, **train_params}, (xi.unsqueeze(0),), kwargs)
        return value(out, yi.unsqueeze(0)).sum()

    try:
        per_sample = vmap(grad(loss_one), in_dims=(None, 0, 0))(train, x, labels)
        return {n: op(per_sample[n]).sum(0) for n in names}
    except (RuntimeError, NotImplementedError, TypeError, ValueError):
        pass
    sums = {n: torch.zeros_like(params[n]) for n in names}
    wanted = [params[n] for n in names]
    for i in range(x.shape[0]):
        loss = value(_call(model, x[i : i + 1], head_index), labels[i : i + 1]).sum()
        grads = torch.autograd.grad(loss, wanted, allow_unused=True)
        for n, gi in zip(names, grads):
            if gi is not None:
                sums[n] += op(gi)
    return sums


def _exact_batch(
    model: nn.Module,
    x: torch.Tensor,
    targets: torch.Tensor | None,
    *,
    labels_of: Labels,
    value: Value,
    op: Op,
    head_index: int,
    trainable: dict[str, nn.Parameter],
    clone_outputs: set[nn.Module],
) -> dict[str, torch.Tensor]:
    uses: dict[int, int] = {}
    for module in model.modules():
        for p in module.parameters(recurse=False):
            uses[id(p)] = uses.get(id(p), 0) + 1
    owners: dict[nn.Module, str] = {}
    for prefix, module in model.named_modules():
        own = list(module.parameters(recurse=False))
        # Tied parameters (owned by several modules) go to the fallback: their per-sample
        # gradient sums over the modules, which the per-layer tricks cannot see.
        if _supported(module) and any(p.requires_grad for p in own) and all(uses[id(p)] == 1 for p in own):
            owners[module] = prefix
    records: dict[nn.Module, list[tuple[torch.Tensor, torch.Tensor, int]]] = {m: [] for m in owners}

    def hook(module: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor | None:
        if module in clone_outputs:
            # A later in-place op (ReLU(inplace=True), +=) would otherwise overwrite `output`.
            records[module].append((inputs[0].detach(), output, output._version))
            return output.clone()
        records[module].append((inputs[0].detach(), output, output._version))
        return None

    handles = [module.register_forward_hook(hook) for module in owners]
    try:
        logits = _call(model, x, head_index)
    finally:
        for handle in handles:
            handle.remove()
    modified = {m for m, rec in records.items() if any(out._version != version for _, out, version in rec)}
    if modified:  # seen once per call: clone these outputs from now on and redo the batch
        clone_outputs.update(modified)
        return _exact_batch(
            model, x, targets, labels_of=labels_of, value=value, op=op, head_index=head_index,
            trainable=trainable, clone_outputs=clone_outputs,
        )
    labels = labels_of(logits, targets)
    loss = value(logits, labels).sum()
    once = [m for m in owners if len(records[m]) == 1 and records[m][0][1].requires_grad]
    grads = torch.autograd.grad(loss, [records[m][0][1] for m in once], allow_unused=True) if once else ()
    sums: dict[str, torch.Tensor] = {}
    declined: set[nn.Module] = set()
    for module, g in zip(once, grads):
        prefix = owners[module]
        if g is None:
            continue
        a = records[module][0][0]
        squares = _squares(module, a, g.detach(), op, x.shape[0])
        if squares is None:
            declined.add(module)
            continue
        for local, result in squares.items():
            full = f"{prefix}.{local}" if prefix else local
            if full in trainable:
                sums[full] = result
    covered = set(sums)
    for module in (m for m in once if m not in declined):  # ran once but unused by the loss: zero gradient
        for local, p in module.named_parameters(recurse=False):
            full = f"{owners[module]}.{local}" if owners[module] else local
            if full in trainable and full not in covered:
                sums[full] = torch.zeros_like(p)
                covered.add(full)
    never_ran = {
        (f"{owners[m]}.{local}" if owners[m] else local)
        for m in owners
        if not records[m]
        for local, _ in m.named_parameters(recurse=False)
    }
    for name in never_ran & set(trainable):
        sums[name] = torch.zeros_like(trainable[name])
        covered.add(name)
    rest = [n for n in trainable if n not in covered]
    if rest:
        sums.update(_vmap_squares(model, x, labels, rest, head_index, value, op))
    return sums


def _batches(inputs: torch.Tensor | Iterable[Any], targets: torch.Tensor | None, batch_size: int) -> Iterable[Any]:
    """``inputs`` (and ``targets``) as batches, or the caller's own iterable of batches."""
    if not isinstance(inputs, torch.Tensor):
        if targets is not None:
            raise ConfigError("Pass 'targets' only with an inputs tensor; batches of (inputs, targets) carry their own.")
        return inputs
    if targets is None:
        return inputs.split(batch_size)
    targets = torch.as_tensor(targets)
    if targets.shape[0] != inputs.shape[0]:
        raise IncompatibleError(
            f"inputs and targets must hold the same number of samples. Got inputs of shape "
            f"{tuple(inputs.shape)} and targets of shape {tuple(targets.shape)}."
        )
    return list(zip(inputs.split(batch_size), targets.split(batch_size)))


def _check_model(model: nn.Module, head_index: int, caller: str) -> dict[str, nn.Parameter]:
    if not isinstance(model, BlockModel) and head_index != 0:
        raise ConfigError(
            f"The 'head_index' parameter applies only to BlockModel models; {type(model).__name__} has one "
            f"output. Got head_index={head_index}."
        )
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if not trainable:
        raise ConfigError(f"{type(model).__name__} has no parameter with requires_grad=True: its {caller} is empty.")
    return trainable


def _mean_over_samples(
    model: nn.Module,
    batches: Iterable[Any],
    *,
    labels_of: Labels,
    value: Value,
    op: Op,
    method: str,
    head_index: int,
    trainable: dict[str, nn.Parameter],
    batch_size: int,
    prepare: Prepare | None,
    device: torch.device | str | None,
    caller: str,
) -> dict[str, torch.Tensor]:
    """``mean_i op(∂ value_i / ∂θ)`` over the batches, in eval mode, accumulated in float64."""
    sums = {n: torch.zeros_like(p, dtype=_F64) for n, p in trainable.items()}
    clone_outputs: set[nn.Module] = set()
    n_samples = 0
    target_device = model_device(model, device)
    with eval_mode(model), torch.enable_grad():
        for x, y in iter_batches(batches, batch_size=batch_size, device=target_device, prepare=prepare, with_targets=True):
            n = x.shape[0]
            if method == "exact":
                squares = _exact_batch(
                    model, x, y, labels_of=labels_of, value=value, op=op, head_index=head_index,
                    trainable=trainable, clone_outputs=clone_outputs,
                )
            elif method == "vmap":
                logits = _call(model, x, head_index)
                squares = _vmap_squares(model, x, labels_of(logits, y), list(trainable), head_index, value, op)
            else:
                logits = _call(model, x, head_index)
                params = list(trainable.values())
                grads = torch.autograd.grad(value(logits, labels_of(logits, y)).sum() / n, params, allow_unused=True)
                # Weight each batch by its size, so the result is a mean over samples too.
                squares = {
                    name: (op(g) * n if g is not None else torch.zeros_like(p))
                    for (name, p), g in zip(trainable.items(), grads)
                }
            for name, result in squares.items():
                sums[name] += result.to(_F64)
            n_samples += n
    if n_samples == 0:
        raise ConfigError(f"The 'inputs' parameter of {caller} holds no samples.")
    return {name: (total / n_samples).to(trainable[name].dtype) for name, total in sums.items()}


def diagonal_fisher(
    model: nn.Module,
    inputs: torch.Tensor | Iterable[Any],
    targets: torch.Tensor | None = None,
    *,
    head_index: int = 0,
    kind: str = "empirical",
    method: str = "exact",
    batch_size: int = 128,
    prepare: Prepare | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> dict[str, torch.Tensor]:
    """Diagonal Fisher ``{parameter name: tensor like the parameter}``, mean over samples.

    ``inputs``: a tensor ``(n_samples, ...)`` with ``targets`` ``(n_samples,)``, or an
    iterable of ``(inputs, targets)`` batches. ``kind``: ``"empirical"`` (the given
    labels), ``"true"`` (one label per input drawn, in input order, from the model's
    softmax with ``generator``) or ``"predicted"`` (each input's argmax label); with
    ``"true"`` and ``"predicted"`` the ``targets`` are not used. ``method``:
    ``"exact"`` (per-sample, default), ``"batch_gradient"`` (squared minibatch
    gradients: about ``batch_size`` times smaller; say which one a number uses) or
    ``"vmap"`` (naive reference). Only parameters with ``requires_grad`` are included.
    The model's parameters, ``.grad`` fields, train/eval flags and hooks are left as they were.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
        >>> fisher = diagonal_fisher(net, x, y)
        >>> sorted(fisher), tuple(fisher["0.weight"].shape)
        (['0.bias', '0.weight', '2.bias', '2.weight'], (8, 4))
        >>> slow = diagonal_fisher(net, x, y, method="vmap")
        >>> all(torch.allclose(fisher[n], slow[n], rtol=1e-4, atol=1e-7) for n in fisher)
        True
    """
    if kind not in _KINDS:
        raise ConfigError(f"The 'kind' parameter of diagonal_fisher must be one of {_KINDS}. Got {kind!r} instead.")
    if method not in _METHODS:
        raise ConfigError(f"The 'method' parameter of diagonal_fisher must be one of {_METHODS}. Got {method!r} instead.")
    batch_size = check_positive_int(batch_size, "batch_size")
    trainable = _check_model(model, head_index, "Fisher")
    return _mean_over_samples(
        model, _batches(inputs, targets, batch_size),
        labels_of=lambda logits, y: _labels(logits, y, kind, generator), value=_nll, op=torch.square,
        method=method, head_index=head_index, trainable=trainable, batch_size=batch_size, prepare=prepare,
        device=device, caller="diagonal_fisher",
    )


def mas_importance(
    model: nn.Module,
    inputs: torch.Tensor | Iterable[Any],
    *,
    head_index: int = 0,
    batch_size: int = 128,
    prepare: Prepare | None = None,
    device: torch.device | str | None = None,
) -> dict[str, torch.Tensor]:
    """MAS importance ``Ω_θ = mean_i |∂ ||f(x_i)||² / ∂θ|`` (Aljundi et al. 2018), ``f`` = the
    logits of head ``head_index``, exact per sample with the same per-layer tricks as
    :func:`diagonal_fisher` (``|g aᵀ| = |g| |a|ᵀ`` for a Linear layer), in eval mode.

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> bool(mas_importance(net, torch.randn(16, 4))["2.bias"].ge(0).all())
        True
    """
    batch_size = check_positive_int(batch_size, "batch_size")
    trainable = _check_model(model, head_index, "MAS importance")
    return _mean_over_samples(
        model, _batches(inputs, None, batch_size),
        labels_of=lambda logits, y: torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device),
        value=_squared_norm, op=torch.abs, method="exact", head_index=head_index, trainable=trainable,
        batch_size=batch_size, prepare=prepare, device=device, caller="mas_importance",
    )
