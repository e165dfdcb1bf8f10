import pytest
import torch

from ablab.optim import make_optimizer, make_scheduler


def rates(name, epochs=6, **options):
    params = [torch.nn.Parameter(torch.zeros(1))]
    optimizer = make_optimizer(params, "sgd", lr=1.0)
    scheduler = make_scheduler(optimizer, name, epochs, **options)
    out = []
    for _ in range(epochs):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(1.0)  # a val_loss that never improves
        elif scheduler is not None:
            scheduler.step()
    return out


def test_schedules_give_documented_rates():
    assert rates("none") == [1.0] * 6
    assert rates("step", step_size=2, gamma=0.5) == [1, 1, 0.5, 0.5, 0.25, 0.25]
    assert rates("exponential", gamma=0.5) == pytest.approx([1, 0.5, 0.25, 0.125, 0.0625, 0.03125])
    cosine = rates("cosine", epochs=4)
    assert cosine == pytest.approx([1.0, 0.8535534, 0.5, 0.1464466])
    # plateau: the first epoch sets the best, then `patience` bad epochs, then decay
    assert rates("plateau", gamma=0.1, patience=1) == pytest.approx([1, 1, 1, 0.1, 0.1, 0.01])


def test_warmup_ramps_linearly_then_hands_over():
    warm = rates("cosine", epochs=6, warmup_epochs=2)
    assert warm[:2] == pytest.approx([0.1, 0.55])
    assert warm[2] == pytest.approx(1.0)
    assert warm[3:] == pytest.approx([0.8535534, 0.5, 0.1464466])


@pytest.mark.parametrize(
    "name, kind, extra",
    [
        ("sgd", torch.optim.SGD, {"momentum": 0}),
        ("momentum", torch.optim.SGD, {"momentum": 0.9, "nesterov": False}),
        ("nesterov", torch.optim.SGD, {"nesterov": True}),
        ("adagrad", torch.optim.Adagrad, {}),
        ("rmsprop", torch.optim.RMSprop, {}),
        ("adam", torch.optim.Adam, {"weight_decay": 0.01}),
        ("adamw", torch.optim.AdamW, {"weight_decay": 0.01}),
    ],
)
def test_optimizers_by_name(name, kind, extra):
    optimizer = make_optimizer([torch.nn.Parameter(torch.zeros(1))], name, 0.1, weight_decay=0.01)
    assert type(optimizer) is kind
    for key, value in extra.items():
        assert optimizer.param_groups[0][key] == value
