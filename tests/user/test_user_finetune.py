from __future__ import annotations


import pytest
import torch
from user_models import TinyTransformer, token_data

import forgetlab.strategies.distillation as distillation
from forgetlab.config import TrainConfig
from forgetlab.data.augment import BatchTransform
from forgetlab.data.streams import Task, TaskStream
from forgetlab.engine.train import train_stream
from forgetlab.errors import ConfigError, IncompatibleError
from forgetlab.strategies import Strategy
from forgetlab.user import FINETUNE_METHODS, WrappedModel, finetune, make_params, user_data


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    net = TinyTransformer()
    x, y = token_data(48, n_classes=2, seed=1)  # old task: classes 0, 1
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(30):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()
    net.eval()
    x_new, y_new = token_data(40, n_classes=2, seed=2)
    return net, user_data(x, y, "old"), user_data(x_new, y_new + 2, "new")  # new task: classes 2, 3


def _state(net):
    return {k: v.clone() for k, v in net.state_dict().items()}


@pytest.mark.parametrize("method", FINETUNE_METHODS)
def test_every_method_runs_and_leaves_the_original_alone(setup, method):
    net, old, new = setup
    before = _state(net)
    params = {"fisher_samples": 16} if method == "ewc" else None
    result = finetune(WrappedModel(net), new, method=method, params=params, old_data=old, epochs=1, batch_size=16)
    assert result.method == method and result.old_source == "old" and result.after["revision_agreement"] is None
    assert 0 <= result.after["old_accuracy"] <= 1 and 0 <= result.after["new_accuracy"] <= 1
    assert result.before["new_accuracy"] == 0.0  # the old model never predicts classes 2, 3
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert not all(torch.equal(before[k], v) for k, v in result.model.module.state_dict().items())
    assert "before" in result.format_report()


def test_pseudo_rehearsal_teacher_is_frozen_and_never_updated(setup, monkeypatch):
    net, _, new = setup
    teachers = []

    def spy(model):
        teacher = original(model)
        teachers.append((teacher, _state(teacher)))
        return teacher

    original = distillation.frozen_copy
    monkeypatch.setattr(distillation, "frozen_copy", spy)
    result = finetune(WrappedModel(net), new, method="pseudo-rehearsal", epochs=2, batch_size=16)
    assert len(teachers) == 1
    teacher, state = teachers[0]
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert all(torch.equal(state[k], v) for k, v in teacher.state_dict().items())
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in teacher.module.state_dict().items())
    # no old data: old-task accuracy unknown; agreement with the original model on held-out new inputs
    assert result.before["old_accuracy"] is None and result.before["revision_agreement"] == 1.0
    assert "old task: accuracy UNKNOWN" in result.format_report()


def test_revision_data_and_noise_sources(setup):
    net, old, new = setup
    revision = user_data(old.x, torch.zeros_like(old.y), "revision")  # labels are ignored
    result = finetune(WrappedModel(net), new, method="pseudo-rehearsal", revision_data=revision, epochs=1)
    assert result.params.revision_size == old.n_samples - round(0.2 * old.n_samples)  # the rest is held out
    assert result.revision_source == "revision" and result.before["revision_agreement"] == 1.0
    result = finetune(WrappedModel(net), new, method="pseudo-rehearsal", params={"revision_source": "noise"}, epochs=1)
    assert result.params.revision_source == "noise"


def test_errors(setup):
    net, old, new = setup
    with pytest.raises(ConfigError, match="Unknown finetune method 'ewk'.*Did you mean 'ewc'"):
        finetune(WrappedModel(net), new, method="ewk")
    with pytest.raises(ConfigError, match="Unknown hyperparameter 'lamda' for method 'ewc'. Did you mean 'lam'"):
        make_params("ewc", {"lamda": 1.0})
    with pytest.raises(ConfigError, match="'lam' parameter of EWC must be >= 0"):
        make_params("ewc", {"lam": -1.0})
    with pytest.raises(ConfigError, match="must not be 'user' in finetune"):
        finetune(WrappedModel(net), new, params={"revision_source": "user", "revision_path": "x.npz"})
    with pytest.raises(IncompatibleError, match="bigger: labels go up to 5 but the model has 4 outputs"):
        finetune(WrappedModel(net), new, old_data=user_data(new.x, new.y + 2, "bigger"))  # only NEW data adds classes
    with pytest.raises(IncompatibleError, match=r"wrong: inputs of shape \(6, 3\) do not fit the model"):
        finetune(WrappedModel(net), user_data(torch.zeros(8, 6, 3), torch.zeros(8, dtype=torch.long), "wrong"))


def test_as_given_transform():
    transform = BatchTransform((), (), augment=False)
    x = torch.tensor([[0.5, -2.0]])
    assert torch.equal(transform(x, train=True), x)
    assert transform(torch.tensor([[255]], dtype=torch.uint8), train=False).tolist() == [[1.0]]
    with pytest.raises(ConfigError, match="'augment' parameter of BatchTransform must be False"):
        BatchTransform((), (), augment=True)


class Recorder(Strategy):
    """Records every hook call and the weights the model has at each task's ``after_task``."""

    def __init__(self):
        super().__init__()
        self.calls, self.weights = [], {}

    def before_task(self, model, context):
        self.calls.append(("before_task", context.task_index))

    def after_task(self, model, context):
        self.calls.append(("after_task", context.task_index))
        self.weights[context.task_index] = {k: v.clone() for k, v in model.state_dict().items()}


def test_train_stream_start_task_runs_hooks_without_training():
    torch.manual_seed(0)
    net = WrappedModel(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)))
    original = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(20, 3)
    y = (x[:, 0] > 0).long()
    task = lambda name, labels: Task(name, x, labels, x, labels, 0, (0, 1))  # noqa: E731
    stream = TaskStream("t", (task("a", y), task("b", 1 - y)), (2,), (3,), (), (), False, ("0", "1"))
    strategy = Recorder()
    result = train_stream(net, stream, TrainConfig(lr=0.01, epochs=2, batch_size=8), strategy=strategy, n_learned_tasks=1)
    assert strategy.calls == [("before_task", 0), ("after_task", 0), ("before_task", 1), ("after_task", 1)]
    assert all(torch.equal(original[k], v) for k, v in strategy.weights[0].items())  # task 0: not trained
    assert not all(torch.equal(original[k], v) for k, v in strategy.weights[1].items())
    assert list(result.accuracy_matrix[0]) == list(result.initial_accuracy)
    assert len(result.curves) == 2 and all(point.task_index == 1 for point in result.curves)
    with pytest.raises(ConfigError, match=r"'n_learned_tasks' parameter must be in \[0, 1\]. Got 2"):
        train_stream(net, stream, TrainConfig(lr=0.01, epochs=1), n_learned_tasks=2)


def test_without_old_data_old_accuracy_is_unknown_and_agreement_is_on_held_out_revision_inputs(setup):
    from forgetlab.user.diagnosis import predict
    from forgetlab.user.userdata import split_data

    net, old, new = setup
    revision = user_data(old.x, torch.zeros_like(old.y), "rev.npz")
    result = finetune(WrappedModel(net), new, method="pseudo-rehearsal", revision_data=revision, epochs=2, batch_size=16)
    held_out = split_data(revision, 0.2)[1].x  # never used for training
    expected = float((predict(result.model, held_out) == predict(net, held_out)).double().mean())
    assert result.after["revision_agreement"] == pytest.approx(expected)
    assert result.before["old_accuracy"] is None and result.after["old_accuracy"] is None and result.after["all_accuracy"] is None
    report = result.format_report()
    table = report.rsplit("\n\n", 1)[1]  # the last block: the before/after table
    assert "old task: accuracy UNKNOWN" in report and "held-out revision inputs (rev.npz)" in report
    assert "old task" not in table and "agreement" in table
    # the conclusion at the top: what it could not measure, and what it measured on how many inputs
    assert report.startswith("Conclusion: Fine-tuned with pseudo-rehearsal: the new task went")
    assert "old-task accuracy is unknown (no old data given)" in result.conclusion
    assert (f"the model agrees with the original on {100 * expected:.1f}% of {held_out.shape[0]} held-out revision "
            "inputs (rev.npz)") in result.conclusion and result.to_dict()["conclusion"] == result.conclusion


def test_new_task_left_near_chance_warns_with_the_likely_cause(setup):
    net, old, new = setup
    result = finetune(WrappedModel(net), new, method="ewc", params={"lam": 1e12, "fisher_samples": 16}, old_data=old,
                      epochs=1, batch_size=16)
    assert result.after["new_accuracy"] <= 0.6
    report = result.format_report()
    assert "warning: the new task's accuracy" in report and "near chance (50.0% for 2 classes)" in report
    assert "lam=1e+12 is likely too strong for lr 0.001" in report and "--set method.lam=" in report


def test_set_keys_are_the_same_as_run(capsys):
    from forgetlab.cli import main

    assert make_params("ewc", {"method.lam": 3}).lam == 3.0 == make_params("ewc", {"lam": 3}).lam
    with pytest.raises(SystemExit):
        main(["finetune", "--help"])
    assert "method.lam=1000" in " ".join(capsys.readouterr().out.split())
