import copy

import pytest
import yaml

from ablab.config import ConfigError, load
from tests.conftest import REPO, TINY_PARAMS


def write(tmp_path, tree):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def test_repo_params_are_valid_and_resolve():
    params = load(REPO / "params.yaml")
    assert {"mlp", "cnn"} <= set(params.experiments)
    cnn = params.experiment("cnn")
    assert cnn.dataset == "fashion_mnist"
    assert cnn.train.batch_size == params.train.batch_size  # inherited


def test_experiment_overrides_only_what_it_names(tmp_path):
    tree = copy.deepcopy(TINY_PARAMS)
    tree["experiments"]["mlp"]["train"] = {"lr": 0.05, "early_stopping": {"patience": 9}}
    exp = load(write(tmp_path, tree)).experiment("mlp")
    assert exp.train.lr == 0.05
    assert exp.train.early_stopping.patience == 9
    assert exp.train.early_stopping.enabled is True  # the default's sibling survives
    assert exp.train.batch_size == 64


def test_set_overrides_parse_yaml_values(tmp_path):
    params = load(
        write(tmp_path, TINY_PARAMS),
        ["experiments.cnn.model.channels=[2, 3]", "train.lr=0.5", "seed=3"],
    )
    assert params.experiment("cnn").model.channels == [2, 3]
    assert params.experiment("cnn").train.lr == 0.5
    assert params.seed == 3


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("experiments.cnn.model.dropout", 1.5, "experiments.cnn.model.dropout"),
        (
            "experiments.cnn.model.arch",
            "resnet9000",
            "model.arch: got 'resnet9000'; allowed: 'mlp', 'cnn'",
        ),
        ("experiments.mlp.train.optimizer", "adamm", "experiments.mlp.train.optimizer"),
        ("train.optimizer", "adamm", "'sgd', 'momentum', 'nesterov'"),
        ("data.dataset", "cifar", "'digits', 'fashion_mnist' or 'mnist'"),
        ("experiments.mlp.model.widht", 3, "experiments.mlp.model.widht: unknown key"),
        ("trian.lr", 0.1, "trian: unknown key"),
        ("train.batch_size", "big", "train.batch_size"),
    ],
)
def test_bad_values_name_the_file_key_and_allowed(tmp_path, key, value, expected):
    path = write(tmp_path, TINY_PARAMS)
    with pytest.raises(ConfigError) as err:
        load(path, [f"{key}={value}"])
    message = str(err.value)
    assert str(path) in message
    assert expected in message


def test_unknown_experiment_is_named(tmp_path):
    with pytest.raises(
        ConfigError, match="unknown experiment 'resnet'; params.yaml defines: cnn, mlp"
    ):
        load(write(tmp_path, TINY_PARAMS)).experiment("resnet")


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(bad)


def test_cli_rejects_bad_params_before_touching_data_or_mlflow(tmp_path, monkeypatch, capsys):
    from ablab.cli import main

    path = write(tmp_path, TINY_PARAMS)
    monkeypatch.setenv("ABLAB_ROOT", str(tmp_path))
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--params", str(path), "--set", "experiments.cnn.model.dropout=1.5"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "experiments.cnn.model.dropout" in err and "less than 1" in err
    assert not (tmp_path / "mlruns").exists()
    assert not (tmp_path / "data").exists()


def test_plateau_with_warmup_is_refused_at_load(tmp_path):
    with pytest.raises(ConfigError, match="experiments.mlp.train.schedule: .*warmup_epochs"):
        load(
            write(tmp_path, TINY_PARAMS),
            ["experiments.mlp.train.schedule={name: plateau, warmup_epochs: 2}"],
        )
