"""Weight penalties and importances against hand computations and independent references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from strategy_helpers import make_context, tiny_model

from forgetlab.models import create_model
from forgetlab.strategies import EWC, L2, MAS, SI, EWCParams, L2Params, MASParams, SIParams, StrategyContext
from forgetlab.strategies.base import penalised_parameters
from forgetlab.analysis.fisher import diagonal_fisher, mas_importance
from forgetlab.strategies.regularizers import si_importance, si_path_step, task_inputs


def _four_parameter_model():
    """Input 2 -> 1 hidden unit -> 1 logit... as an MLP: fc1 (1x2 weight, 1 bias), head (1x1, 1)."""
    model = create_model("mlp", input_shape=(1, 1, 2), head_sizes=(1,), width=1, depth=1)
    with torch.no_grad():
        model.blocks["fc1"][1].weight.copy_(torch.tensor([[1.0, 2.0]]))
        model.blocks["fc1"][1].bias.copy_(torch.tensor([3.0]))
        model.heads[0].weight.copy_(torch.tensor([[4.0]]))
        model.heads[0].bias.copy_(torch.tensor([5.0]))
    return model


NAMES = ("blocks.fc1.1.weight", "blocks.fc1.1.bias", "heads.0.weight", "heads.0.bias")


def _named(values):
    shapes = {"blocks.fc1.1.weight": (1, 2), "blocks.fc1.1.bias": (1,), "heads.0.weight": (1, 1), "heads.0.bias": (1,)}
    return {name: torch.tensor(v, dtype=torch.float32).reshape(shapes[name]) for name, v in zip(NAMES, values)}


def _context():
    """A context for code paths that read only the device (no stream)."""
    return StrategyContext(None, 1, torch.device("cpu"), None, torch.Generator())


def test_l2_penalty_by_hand():
    model = _four_parameter_model()  # theta = (1, 2, 3, 4, 5)
    strategy = L2(L2Params(lam=0.5))
    strategy.load_state_dict({"anchor": _named([[0.0, 2.0], [1.0], [4.0], [2.0]])})
    strategy.before_task(model, _context())
    # differences (1, 0, 2, 0, 3): sum of squares 14; lam/2 * 14 = 3.5
    assert strategy.penalty(model, None).item() == pytest.approx(3.5)


def test_ewc_penalty_with_a_known_fisher_by_hand():
    model = _four_parameter_model()
    first = {"anchor": _named([[0.0, 0.0], [0.0], [0.0], [0.0]]), "fisher": _named([[1.0, 0.5], [0.0], [0.0], [2.0]])}
    second = {"anchor": _named([[1.0, 1.0], [3.0], [2.0], [5.0]]), "fisher": _named([[0.0, 4.0], [1.0], [0.25], [9.0]])}
    strategy = EWC(EWCParams(lam=10.0))
    strategy.load_state_dict({"terms": [first]})
    strategy.before_task(model, _context())
    # task 1: 1*1^2 + 0.5*2^2 + 2*5^2 = 1 + 2 + 50 = 53;  lam/2 * 53 = 265
    assert strategy.penalty(model, None).item() == pytest.approx(265.0)
    strategy.load_state_dict({"terms": [first, second]})
    strategy.before_task(model, _context())
    # task 2 adds 4*(2-1)^2 + 1*0 + 0.25*(4-2)^2 + 9*0 = 5;  5 * 58 = 290
    assert strategy.penalty(model, None).item() == pytest.approx(290.0)
    # and its gradient is lam * sum_t F_t (theta - theta*_t)
    strategy.penalty(model, None).backward()
    assert model.heads[0].bias.grad.item() == pytest.approx(10.0 * 2.0 * 5.0)


def _linear_model(n_in: int, n_out: int, seed: int = 0):
    """A softmax-regression model (MLP with no hidden block): logits = W x + b."""
    torch.manual_seed(seed)
    model = create_model("mlp", input_shape=(1, 1, n_in), head_sizes=(n_out, n_out), width=1, depth=0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    return model.eval()


def test_empirical_and_true_fisher_match_the_closed_form():
    """For logits = W x + b: d log p_y / dW = (e_y - p) x^T and d/db = e_y - p (closed form)."""
    model = _linear_model(4, 3)
    x = torch.randn(37, 1, 1, 4)
    y = torch.randint(0, 3, (37,))
    weight, bias = model.heads[1].weight.detach(), model.heads[1].bias.detach()
    flat = x.flatten(1)

    def closed_form(labels):
        residual = F.one_hot(labels, 3).float() - F.softmax(flat @ weight.T + bias, 1)  # (N, K)
        per_sample_w = residual[:, :, None] * flat[:, None, :]  # (N, K, D)
        return per_sample_w.square().mean(0), residual.square().mean(0)

    fisher = diagonal_fisher(model, x, y, head_index=1)
    expected_w, expected_b = closed_form(y)
    torch.testing.assert_close(fisher["heads.1.weight"], expected_w)
    torch.testing.assert_close(fisher["heads.1.bias"], expected_b)
    assert fisher["heads.0.weight"].abs().sum() == 0  # head 0 is not in the likelihood

    # true Fisher: labels drawn from the model's softmax with the generator given
    probs = F.softmax(flat @ weight.T + bias, 1)
    sampled = torch.multinomial(probs.double(), 1, generator=torch.Generator().manual_seed(7)).squeeze(1)
    true = diagonal_fisher(model, x, head_index=1, kind="true", generator=torch.Generator().manual_seed(7))
    expected_w, expected_b = closed_form(sampled)
    torch.testing.assert_close(true["heads.1.weight"], expected_w)
    torch.testing.assert_close(true["heads.1.bias"], expected_b)


def test_fisher_is_per_sample_not_batch_gradient():
    """The per-sample Fisher of two examples whose gradients cancel is not zero; the batch one is."""
    x = torch.tensor([[[[1.0, 0.0]]], [[[1.0, 0.0]]]])
    model = create_model("mlp", input_shape=(1, 1, 2), head_sizes=(2,), width=1, depth=0)  # a linear model
    with torch.no_grad():
        model.heads[0].weight.zero_()
        model.heads[0].bias.zero_()
    y = torch.tensor([0, 1])
    fisher = diagonal_fisher(model, x, y)
    # d log p(y|x) / d b_k = 1[k=y] - 1/2: per-sample squares are 1/4 everywhere
    torch.testing.assert_close(fisher["heads.0.bias"], torch.tensor([0.25, 0.25]))
    batch_grad = torch.autograd.grad(F.log_softmax(model(x, 0), 1).gather(1, y[:, None]).mean(), model.heads[0].bias)[0]
    assert batch_grad.abs().max() == 0


def test_mas_importance_matches_the_closed_form():
    """For f = W x + b: d ||f||^2 / dW = 2 f x^T, d/db = 2 f."""
    model = _linear_model(3, 2, seed=1)
    x = torch.randn(21, 1, 1, 3)
    importance = mas_importance(model, x)
    flat = x.flatten(1)
    f = flat @ model.heads[0].weight.detach().T + model.heads[0].bias.detach()
    torch.testing.assert_close(importance["heads.0.weight"], (2 * f[:, :, None] * flat[:, None, :]).abs().mean(0))
    torch.testing.assert_close(importance["heads.0.bias"], (2 * f).abs().mean(0))


def test_mas_penalty_by_hand():
    model = _four_parameter_model()
    strategy = MAS(MASParams(lam=2.0))
    strategy.load_state_dict({
        "importance": _named([[1.0, 1.0], [0.5], [0.0], [0.1]]),
        "anchor": _named([[1.0, 0.0], [1.0], [0.0], [0.0]]),
    })
    strategy.before_task(model, _context())
    # 1*0 + 1*4 + 0.5*4 + 0 + 0.1*25 = 8.5;  lam * 8.5 = 17
    assert strategy.penalty(model, None).item() == pytest.approx(17.0)


def test_si_path_integral_on_a_known_trajectory(tiny_streams):
    """Two steps with known gradients and parameter values; omega and Omega by hand."""
    stream = tiny_streams["multi"]
    model = tiny_model(stream, width=4, depth=1)
    bias = model.heads[0].bias  # 5 values; we follow the first two
    strategy = SI(SIParams(c=1.0, xi=0.1))
    context = make_context(stream, 0)
    with torch.no_grad():
        bias.zero_()
    strategy.before_task(model, context)
    trajectory = [
        (torch.tensor([1.0, -2.0, 0, 0, 0]), torch.tensor([-0.1, 0.3, 0, 0, 0])),
        (torch.tensor([0.5, 1.0, 0, 0, 0]), torch.tensor([-0.2, 0.1, 0, 0, 0])),
    ]
    for grad, new_value in trajectory:
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        bias.grad = grad.clone()
        strategy.after_backward(model, None, context)
        with torch.no_grad():
            bias.copy_(new_value)
        strategy.after_step(model, context)
    strategy.after_task(model, context)
    omega_1 = -(1.0 * -0.1) - (0.5 * -0.1)  # 0.15
    omega_2 = -(-2.0 * 0.3) - (1.0 * -0.2)  # 0.8
    expected = torch.tensor([omega_1 / (0.2**2 + 0.1), omega_2 / (0.1**2 + 0.1), 0, 0, 0])
    torch.testing.assert_close(strategy.importance_["heads.0.bias"], expected)
    torch.testing.assert_close(strategy.anchor_["heads.0.bias"], torch.tensor([-0.2, 0.1, 0, 0, 0]))
    assert "heads.1.bias" not in strategy.importance_  # head 2 was not trained yet

    # next task: the path integral uses the task gradient, not the penalty's own gradient
    with torch.no_grad():
        bias.zero_()
    context = make_context(stream, 1)
    strategy.before_task(model, context)
    model.zero_grad()
    task_grad = torch.tensor([0.0, 3.0, 0, 0, 0])
    ((task_grad * bias).sum() + strategy.penalty(model, None)).backward()
    assert bias.grad[1].item() != pytest.approx(3.0)  # the penalty pulls towards the anchor too
    strategy.after_backward(model, None, context)
    with torch.no_grad():
        bias.copy_(torch.tensor([0.0, 0.5, 0, 0, 0]))
    strategy.after_step(model, context)
    strategy.after_task(model, context)
    # omega = -3 * 0.5 for bias[1] (0 for bias[0], which did not move); Delta = (0, 0.5)
    torch.testing.assert_close(
        strategy.importance_["heads.0.bias"][:2], expected[:2] + torch.tensor([0.0, -1.5 / (0.5**2 + 0.1)])
    )


def test_si_pure_functions():
    assert si_path_step(torch.tensor(2.0), torch.tensor(1.0), torch.tensor(0.25)).item() == pytest.approx(1.5)
    assert si_importance(torch.tensor(3.0), torch.tensor(2.0), 1.0).item() == pytest.approx(0.6)


def test_online_ewc_accumulates_gamma_times_old_plus_new(tiny_streams):
    stream = tiny_streams["single"]
    model = tiny_model(stream, width=8)
    strategy = EWC(EWCParams(mode="online", gamma=0.5, fisher_samples=0))
    fishers = []
    for task_index in range(2):
        context = make_context(stream, task_index)
        strategy.before_task(model, context)
        task = stream.tasks[task_index]
        x = context.transform(task.train_x, train=False)
        fishers.append(diagonal_fisher(model, x, task.train_y))
        strategy.after_task(model, context)
        with torch.no_grad():  # pretend training moved the weights
            for p in model.parameters():
                p.add_(0.01)
    assert len(strategy.terms_) == 1
    for name, value in strategy.terms_[0]["fisher"].items():
        torch.testing.assert_close(value, 0.5 * fishers[0][name] + fishers[1][name])


def test_penalised_parameters_leave_out_untrained_heads(tiny_streams):
    model = tiny_model(tiny_streams["multi"])
    names = list(penalised_parameters(model, [0]))
    assert "heads.0.weight" in names and not any(n.startswith("heads.1.") for n in names)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: EWCParams(lam=-1), r"The 'lam' parameter of EWC must be >= 0. Got -1.0 instead."),
        (lambda: EWCParams(fisher="empiricl"), r"The 'fisher' parameter of EWC must be one of 'empirical', 'true', 'predicted'. Got 'empiricl' instead. Did you mean 'empirical'\?"),
        (lambda: EWCParams(gamma=1.5), r"The 'gamma' parameter of EWC must be in \[0, 1\]. Got 1.5 instead."),
        (lambda: EWCParams(lam="x"), r"The 'lam' parameter of EWC must be a number. Got 'x' instead."),
        (lambda: EWCParams(fisher_samples=True), r"The 'fisher_samples' parameter of EWC must be an integer. Got True instead."),
        (lambda: SIParams(xi=0), r"The 'xi' parameter of SI must be > 0. Got 0.0 instead."),
        (lambda: L2Params(lam=float("nan")), r"The 'lam' parameter of L2 must be a number. Got nan instead."),
        (lambda: MASParams(importance_samples=-1), r"The 'importance_samples' parameter of MAS must be >= 0 \(0 = all\)."),
    ],
)
def test_hyperparameter_errors(build, message):
    from forgetlab.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        build()


# ------------------------------------------- EWC / MAS against the old per-example loop -----

def _per_example_gradients(model, x, head_index, value):
    """The per-example loop EWC and MAS used before they shared analysis.fisher (an independent
    reference): one forward and one ``autograd.grad`` per example, in eval mode."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        for i in range(x.shape[0]):
            logits = model(x[i : i + 1], head_index)[0]
            grads = torch.autograd.grad(value(i, logits), [p for _, p in named], allow_unused=True, materialize_grads=True)
            yield dict(zip((n for n, _ in named), grads))
    finally:
        for module, mode in modes:
            module.training = mode


def _reference_fisher(model, x, head_index, labels, generator):
    """The old EWC Fisher: ``labels=None`` draws one label per example from the float32
    softmax (chunks of 1,024), as float64, with ``generator``."""
    if labels is None:
        modes = [(m, m.training) for m in model.modules()]
        with torch.no_grad():
            model.eval()
            probs = torch.cat([F.softmax(model(x[s : s + 1024], head_index), dim=1) for s in range(0, x.shape[0], 1024)])
        for module, mode in modes:
            module.training = mode
        labels = torch.multinomial(probs.double(), 1, generator=generator).squeeze(1)
    total = None
    for grads in _per_example_gradients(model, x, head_index, lambda i, z: F.log_softmax(z, 0)[labels[i]]):
        squares = {n: g.square() for n, g in grads.items()}
        total = squares if total is None else {n: total[n] + squares[n] for n in total}
    return {n: v / x.shape[0] for n, v in total.items()}


def _reference_mas(model, x, head_index):
    total = None
    for grads in _per_example_gradients(model, x, head_index, lambda i, z: z.square().sum()):
        total = {n: g.abs() for n, g in grads.items()} if total is None else {n: total[n] + g.abs() for n, g in grads.items()}
    return {n: v / x.shape[0] for n, v in total.items()}


def _trained_a_little(model, stream):
    """Move the weights (and the BatchNorm statistics) away from the initialisation."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    task = stream.tasks[1]
    x = task.train_x.float() / 16
    for _ in range(3):
        optimizer.zero_grad()
        F.cross_entropy(model(x, task.head_index), task.train_y).backward()
        optimizer.step()
    return model


@pytest.mark.parametrize("family", ["mlp", "vgg"])
@pytest.mark.parametrize(("fisher", "n_samples"), [("empirical", 0), ("true", 60)])
def test_ewc_fisher_equals_the_old_per_example_loop(family, fisher, n_samples, tiny_streams):
    """The values EWC stores are those of the per-example loop it used before (same draws of
    the true Fisher's labels from the same generator), to float tolerance, BatchNorm included."""
    stream = tiny_streams["multi"]
    torch.manual_seed(0)
    model = _trained_a_little(create_model(
        family, input_shape=stream.input_shape, head_sizes=stream.head_sizes, width=8, depth=2, batch_norm=True
    ), stream)
    strategy = EWC(EWCParams(fisher=fisher, fisher_samples=n_samples))
    context = make_context(stream, 1, seed=3)
    strategy.before_task(model, context)
    strategy.after_task(model, context)
    got = strategy.terms_[0]["fisher"]

    reference_context = make_context(stream, 1, seed=3)
    x, y = task_inputs(reference_context, n_samples)
    expected = _reference_fisher(model, x, 1, y if fisher == "empirical" else None, reference_context.generator)
    assert sorted(got) == sorted(penalised_parameters(model, [0, 1]))
    for name in got:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-6 * float(expected[name].abs().max()), msg=name)
    assert torch.equal(context.generator.get_state(), reference_context.generator.get_state())  # same randomness used
    assert any(float(v.abs().max()) > 0 for v in got.values())


def test_mas_importance_equals_the_old_per_example_loop(tiny_streams):
    stream = tiny_streams["multi"]
    torch.manual_seed(1)
    model = _trained_a_little(create_model(
        "vgg", input_shape=stream.input_shape, head_sizes=stream.head_sizes, width=8, depth=2, batch_norm=True
    ), stream)
    strategy = MAS(MASParams(importance_samples=40))
    context = make_context(stream, 1, seed=5)
    strategy.after_task(model, context)
    x, _ = task_inputs(make_context(stream, 1, seed=5), 40)
    expected = _reference_mas(model, x, 1)
    for name, value in strategy.importance_.items():
        torch.testing.assert_close(value, expected[name], rtol=1e-4, atol=1e-6 * float(expected[name].abs().max()), msg=name)


def test_ewc_before_task_leaves_an_earlier_state_dict_alone(tiny_streams):
    """before_task moves the state to the device in new containers: a state dict taken
    before (e.g. the checkpoint being written) keeps its tensors where they were."""
    stream = tiny_streams["multi"]
    model = tiny_model(stream, width=8)
    strategy = EWC(EWCParams(fisher_samples=20))
    strategy.after_task(model, make_context(stream, 0))
    state = strategy.state_dict()
    copied = {"terms": [{key: dict(value) for key, value in entry.items()} for entry in state["terms"]]}
    meta = StrategyContext(stream, 1, torch.device("meta"), None, torch.Generator())
    strategy.before_task(model, meta)
    assert all(t.is_meta for entry in strategy.terms_ for part in entry.values() for t in part.values())
    for entry, before in zip(state["terms"], copied["terms"]):
        for key in ("anchor", "fisher"):
            assert all(entry[key][name] is before[key][name] for name in before[key])  # same tensors, same dict
            assert not any(t.is_meta for t in entry[key].values())
