from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from forgetlab.analysis import diagonal_fisher
from forgetlab.analysis.fisher import mas_importance
from forgetlab.errors import ConfigError, IncompatibleError
from forgetlab.models import BlockModel, create_model

F64 = torch.float64


def loop_fisher(model, x, labels, head_index=0):
    """Textbook reference: one backward pass per sample, squared gradients averaged."""
    model = copy.deepcopy(model).eval()
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    sums = {n: torch.zeros_like(p) for n, p in params.items()}
    for i in range(x.shape[0]):
        out = model(x[i : i + 1], head_index) if isinstance(model, BlockModel) else model(x[i : i + 1])
        log_p = torch.log_softmax(out, dim=1)[0, labels[i]]
        for (name, _), g in zip(params.items(), torch.autograd.grad(log_p, list(params.values()), allow_unused=True)):
            if g is not None:
                sums[name] += g.square()
    return {n: s / x.shape[0] for n, s in sums.items()}


def batch_reference(model, x, labels, batch_size, head_index=0):
    model = copy.deepcopy(model).eval()
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    sums = {n: torch.zeros_like(p) for n, p in params.items()}
    for start in range(0, x.shape[0], batch_size):
        xb, yb = x[start : start + batch_size], labels[start : start + batch_size]
        out = model(xb, head_index) if isinstance(model, BlockModel) else model(xb)
        loss = nn.functional.cross_entropy(out, yb)
        for (name, _), g in zip(params.items(), torch.autograd.grad(loss, list(params.values()), allow_unused=True)):
            if g is not None:
                sums[name] += g.square() * xb.shape[0]
    return {n: s / x.shape[0] for n, s in sums.items()}


def assert_same(ours, reference, rtol=1e-9):  # float64: far inside the 1e-6 target
    assert list(ours) == list(reference)
    for name in reference:
        scale = float(reference[name].abs().max()) + 1e-300
        torch.testing.assert_close(ours[name], reference[name], rtol=rtol, atol=rtol * scale * 1e-3, msg=name)


class Custom(nn.Module):
    """Layer types without a per-layer trick (LayerNorm, a conv with padding='same', a raw
    parameter, tied weights) next to tricky supported ones (grouped, strided, dilated
    convs; a Linear applied to a sequence; an in-place ReLU after a conv)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.grouped = nn.Conv2d(4, 4, 3, groups=2, padding="same")  # 'same': fallback
        self.dilated = nn.Conv2d(4, 6, 3, groups=2, padding=2, dilation=2, stride=2)  # trick
        self.pointwise = nn.Conv2d(6, 4, 1)
        self.norm = nn.LayerNorm(4)
        self.token = nn.Linear(4, 4)
        self.scale = nn.Parameter(torch.tensor(1.5))
        self.tied_a = nn.Linear(4, 4)
        self.tied_b = nn.Linear(4, 4)
        self.tied_b.weight = self.tied_a.weight
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        h = self.act(self.conv(x))
        h = self.pointwise(self.dilated(self.grouped(h)))  # (B, 4, H', W')
        seq = h.flatten(2).transpose(1, 2)  # (B, HW, 4)
        seq = self.token(self.norm(seq)).relu()
        pooled = seq.mean(1) * self.scale
        pooled = self.tied_b(torch.tanh(self.tied_a(pooled)))
        return self.head(pooled)


def _models():
    torch.manual_seed(0)
    yield "mlp", create_model("mlp", input_shape=(1, 6, 6), head_sizes=(3, 4), width=10), (1, 6, 6), 1
    yield "vgg", create_model("vgg", input_shape=(3, 8, 8), head_sizes=(3,), width=4, depth=2), (3, 8, 8), 0
    yield "resnet", create_model("resnet", input_shape=(3, 8, 8), head_sizes=(3,), width=4, depth=3), (3, 8, 8), 0
    yield "densenet", create_model("densenet", input_shape=(3, 8, 8), head_sizes=(3,), width=3, depth=1), (3, 8, 8), 0
    yield "custom", Custom(), (2, 5, 5), 0


def _randomise_bn(model):
    # Non-trivial running statistics, so BN's per-sample formula is really exercised.
    gen = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=gen) * 0.1)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=gen) + 0.5)
            module.weight.data.uniform_(0.5, 1.5, generator=gen)


@pytest.mark.parametrize("name,model,shape,head", list(_models()), ids=[m[0] for m in _models()])
def test_exact_fisher_equals_per_sample_loop(name, model, shape, head):
    _randomise_bn(model)
    model = model.to(F64)
    model.train()
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(13, *shape, generator=gen, dtype=F64)
    y = torch.randint(0, 3, (13,), generator=gen)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ours = diagonal_fisher(model, x, y, head_index=head, batch_size=5)
    assert_same(ours, loop_fisher(model, x, y, head))
    assert_same(diagonal_fisher(model, x, y, head_index=head, batch_size=5, method="vmap"), loop_fisher(model, x, y, head))
    batch = diagonal_fisher(model, x, y, head_index=head, batch_size=5, method="batch_gradient")
    assert_same(batch, batch_reference(model, x, y, 5, head))
    # Model left exactly as it was: weights, BN statistics, modes, .grad, hooks.
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())


def loop_mas(model, x, head_index=0):
    """Textbook reference for MAS: mean over samples of |d ||f(x)||^2 / d theta|, one backward each."""
    model = copy.deepcopy(model).eval()
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    sums = {n: torch.zeros_like(p) for n, p in params.items()}
    for i in range(x.shape[0]):
        out = model(x[i : i + 1], head_index) if isinstance(model, BlockModel) else model(x[i : i + 1])
        for (name, _), g in zip(params.items(), torch.autograd.grad(out.square().sum(), list(params.values()), allow_unused=True)):
            if g is not None:
                sums[name] += g.abs()
    return {n: s / x.shape[0] for n, s in sums.items()}


@pytest.mark.parametrize("name,model,shape,head", list(_models()), ids=[m[0] for m in _models()])
def test_mas_importance_equals_per_sample_loop(name, model, shape, head):
    """The same per-layer tricks with |.| in place of (.)^2 (and the fallbacks) give MAS exactly."""
    _randomise_bn(model)
    model = model.to(F64)
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(11, *shape, generator=gen, dtype=F64)
    assert_same(mas_importance(model, x, head_index=head, batch_size=4), loop_mas(model, x, head))


def test_float32_exact_fisher_agrees_with_float64_loop():
    model = create_model("vgg", input_shape=(3, 8, 8), head_sizes=(3,), width=4, depth=2)
    _randomise_bn(model)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(16, 3, 8, 8, generator=gen)
    y = torch.randint(0, 3, (16,), generator=gen)
    ours = diagonal_fisher(model, x, y, batch_size=8)
    reference = loop_fisher(copy.deepcopy(model).to(F64), x.to(F64), y)
    for name in reference:
        scale = float(reference[name].abs().max())
        assert float((ours[name].to(F64) - reference[name]).abs().max()) <= 1e-4 * scale, name


def test_true_fisher_samples_labels_from_the_model_reproducibly():
    model = create_model("mlp", input_shape=(1, 6, 6), head_sizes=(4,), width=8).to(F64)
    x = torch.randn(12, 1, 6, 6, dtype=F64)
    ours = diagonal_fisher(model, x, kind="true", batch_size=6, generator=torch.Generator().manual_seed(7))
    again = diagonal_fisher(model, x, kind="true", batch_size=6, generator=torch.Generator().manual_seed(7))
    gen = torch.Generator().manual_seed(7)
    labels = []
    with torch.no_grad():
        for start in (0, 6):
            probs = torch.softmax(model.eval()(x[start : start + 6]), dim=1)
            labels.append(torch.multinomial(probs, 1, generator=gen).squeeze(1))
    assert_same(ours, loop_fisher(model, x, torch.cat(labels)))
    assert_same(ours, again, rtol=0)


def test_batch_gradient_is_about_batch_size_times_smaller():
    torch.manual_seed(0)
    model = create_model("mlp", input_shape=(1, 6, 6), head_sizes=(3,), width=16)
    x, y = torch.randn(256, 1, 6, 6), torch.randint(0, 3, (256,))
    exact = sum(float(v.sum()) for v in diagonal_fisher(model, x, y, batch_size=64).values())
    approx = sum(float(v.sum()) for v in diagonal_fisher(model, x, y, batch_size=64, method="batch_gradient").values())
    assert 3 < exact / approx < 300


def test_frozen_parameters_are_left_out_and_loader_batches_work():
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)).to(F64)
    model[0].weight.requires_grad_(False)
    x, y = torch.randn(10, 4, dtype=F64), torch.randint(0, 3, (10,))
    loader = [(x[:4], y[:4]), (x[4:], y[4:])]
    ours = diagonal_fisher(model, loader)
    assert "0.weight" not in ours
    assert_same(ours, loop_fisher(model, x, y))


def test_errors():
    model = nn.Sequential(nn.Linear(4, 3))
    x, y = torch.randn(6, 4), torch.randint(0, 3, (6,))
    with pytest.raises(ConfigError, match="'kind' parameter of diagonal_fisher must be one of"):
        diagonal_fisher(model, x, y, kind="fake")
    with pytest.raises(ConfigError, match="'method' parameter of diagonal_fisher must be one of"):
        diagonal_fisher(model, x, y, method="loop")
    with pytest.raises(ConfigError, match="kind='empirical' needs labels"):
        diagonal_fisher(model, x)
    with pytest.raises(ConfigError, match=r"class indices in \[0, 2\].*\[0, 5\]"):
        diagonal_fisher(model, x, torch.tensor([0, 1, 2, 5, 0, 0]))
    with pytest.raises(IncompatibleError, match=r"same number of samples.*\(6, 4\).*\(5,\)"):
        diagonal_fisher(model, x, y[:5])
    with pytest.raises(ConfigError, match="'head_index' parameter applies only to BlockModel"):
        diagonal_fisher(model, x, y, head_index=1)
    with pytest.raises(IncompatibleError, match=r"logits of shape \(batch, n_classes\)"):
        diagonal_fisher(nn.Sequential(nn.Linear(4, 3), nn.Flatten(0)), x, y)
    frozen = nn.Linear(4, 3).requires_grad_(False)
    with pytest.raises(ConfigError, match="no parameter with requires_grad=True"):
        diagonal_fisher(frozen, x, y)


def test_exact_fisher_of_embeddings_and_layer_norms_matches_per_sample_gradients():
    # Token models: an embedding (a padding row, repeated indices), a layer norm, a linear head;
    # the per-layer tricks must equal the squared gradient of each sample, summed over its tokens.
    torch.manual_seed(0)

    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(11, 6, padding_idx=0)
            self.norm = nn.LayerNorm(6)
            self.head = nn.Linear(6, 3)

        def forward(self, x):
            return self.head(self.norm(self.embed(x.long())).mean(1))

    model = Tokens()
    x = torch.randint(0, 11, (7, 5)).float()
    x[0, :3] = 4.0  # one index three times in a sample
    y = torch.randint(0, 3, (7,))
    fisher = diagonal_fisher(model, x, y, batch_size=4)
    manual = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for i in range(7):
        loss = torch.nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1])
        for (n, _), g in zip(model.named_parameters(), torch.autograd.grad(loss, list(model.parameters()))):
            manual[n] += g.square() / 7
    for name in manual:
        assert torch.allclose(fisher[name], manual[name], rtol=1e-4, atol=1e-8), name
    assert float(fisher["embed.weight"][0].abs().sum()) == 0.0  # the padding row learns nothing
