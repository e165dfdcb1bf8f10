import pytest
import torch

from ablab.optim import inverse_power, make_optimizer, make_scheduler, momentum_at


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


def test_inverse_power_follows_its_formula_every_step():
    """Ganin et al.'s lr / (1 + 10 p)^0.75 at progress p = step / all steps."""
    params = [torch.nn.Parameter(torch.zeros(1))]
    optimizer = make_optimizer(params, "momentum", lr=0.01)
    scheduler = make_scheduler(optimizer, "inverse_power", 1, total_steps=4)
    seen = []
    for _ in range(5):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = [0.01 / (1 + 10 * p) ** 0.75 for p in (0, 0.25, 0.5, 0.75, 1.0)]
    assert seen == pytest.approx(expected)
    assert seen[2] == pytest.approx(0.01 / 6**0.75)  # 0.002610...
    assert inverse_power(2.0, 10, 0.75) == inverse_power(1.0, 10, 0.75)  # held past the end
    with pytest.raises(ValueError, match="total_steps"):
        make_scheduler(optimizer, "inverse_power", 1)


def test_momentum_ramps_linearly_then_holds():
    assert [momentum_at(e, 0.5, 0.95, 10) for e in (0, 2, 5, 10, 50)] == pytest.approx(
        [0.5, 0.59, 0.725, 0.95, 0.95]
    )
    assert momentum_at(3, 0.5, 0.9, 0) == 0.9  # no ramp: train.momentum throughout


def test_momentum_ramp_sets_every_group_as_each_epoch_starts():
    import lightning.pytorch as pl

    from ablab.optim import MomentumRamp

    class Net(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.momenta = []

        def training_step(self, batch, batch_idx):
            self.momenta.append(self.trainer.optimizers[0].param_groups[0]["momentum"])
            return (self.w - batch[0]).pow(2).sum()

        def configure_optimizers(self):
            return make_optimizer(self.parameters(), "momentum", 0.1, momentum=0.9)

    net = Net()
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(2, 1)))
    trainer = pl.Trainer(max_epochs=3, callbacks=[MomentumRamp(0.5, 0.9, 2)], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)  # fmt: skip
    trainer.fit(net, data)
    assert net.momenta == pytest.approx([0.5, 0.5, 0.7, 0.7, 0.9, 0.9])
