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
            "model.arch: got 'resnet9000'; allowed: 'mlp', 'cnn', 'rnn', 'transformer', 'tfidf'",
        ),
        ("experiments.mlp.train.optimizer", "adamm", "experiments.mlp.train.optimizer"),
        ("train.optimizer", "adamm", "'sgd', 'momentum', 'nesterov'"),
        ("data.dataset", "cifar", "data.dataset: got 'cifar'; allowed: 'digits', 'fashion_mnist'"),
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
        ConfigError, match="unknown experiment 'resnet'; .*params.yaml defines: cnn, mlp"
    ):
        load(write(tmp_path, TINY_PARAMS)).experiment("resnet")


def test_messages_name_the_params_file_that_was_read(tmp_path):
    """`--params FILE`: every message names FILE, not params.yaml."""
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(TINY_PARAMS))
    params = load(path)
    with pytest.raises(ConfigError, match=f"; {path} defines: cnn, mlp") as info:
        params.experiment("resnet")
    assert "params.yaml" not in str(info.value)
    bad = copy.deepcopy(TINY_PARAMS)
    bad["suites"] = {"s": {"experiment": "mlp", "variants": {"v": {"model.arch": "resnet"}}}}
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match=f"^{path}: invalid params") as info:
        load(path)
    assert "suites.s.variants.v.model.arch" in str(info.value)


def test_an_empty_params_file_is_refused_by_name(tmp_path):
    empty = tmp_path / "params.yaml"
    for text in ("", "# nothing yet\n"):
        empty.write_text(text)
        with pytest.raises(ConfigError, match=f"{empty}: empty: nothing to fetch, train or tune"):
            load(empty)


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


def test_a_momentum_ramp_without_momentum_is_refused_at_load(tmp_path):
    with pytest.raises(ConfigError, match="experiments.mlp.train: .*momentum_epochs.*'adam'"):
        load(write(tmp_path, TINY_PARAMS), ["experiments.mlp.train.schedule.momentum_epochs=5"])
    exp = load(
        write(tmp_path, TINY_PARAMS),
        [
            "experiments.mlp.train.optimizer=momentum",
            "experiments.mlp.train.schedule.momentum_epochs=5",
        ],
    ).experiment("mlp")
    assert exp.train.schedule.momentum_epochs == 5


def test_a_per_step_schedule_on_a_gan_is_refused_at_load(tmp_path):
    tree = copy.deepcopy(TINY_PARAMS)
    tree["experiments"]["gan"] = {"task": "generate", "model": {"arch": "gan"},
                                  "train": {"schedule": {"name": "inverse_power"}}}  # fmt: skip
    with pytest.raises(ConfigError, match="experiments.gan: train.schedule.name: .*once per epoch"):
        load(write(tmp_path, tree))


def with_suite(tmp_path, suite):
    tree = copy.deepcopy(TINY_PARAMS)
    tree["suites"] = {"s": suite}
    return write(tmp_path, tree)


def test_suite_expands_variants_over_seeds_with_common_overrides(tmp_path):
    path = with_suite(
        tmp_path,
        {
            "experiment": "cnn",
            "seeds": [3, 4],
            "common": {"data.subset": 100, "train": {"max_epochs": 5}},
            "variants": {
                "baseline": {},
                "bn": {"model.batch_norm": True},
                "smooth": {"train": {"regularize": {"label_smoothing": 0.1}}},
            },
        },
    )
    runs = load(path).suite_runs("s")
    assert [(r.variant, r.seed) for r in runs] == [
        ("baseline", 3), ("baseline", 4), ("bn", 3), ("bn", 4), ("smooth", 3), ("smooth", 4),
    ]  # fmt: skip
    bn = runs[2].experiment
    assert bn.seed == 3 and bn.subset == 100 and bn.train.max_epochs == 5
    assert bn.model.batch_norm is True and bn.model.channels == [4, 8]  # the experiment's own
    assert runs[0].experiment.model.batch_norm is False
    assert runs[4].experiment.train.regularize.label_smoothing == 0.1
    assert bn.train.lr == 0.01  # inherited from the train defaults


def test_suite_grid_names_variants_and_picks_the_first_as_baseline(tmp_path):
    path = with_suite(
        tmp_path,
        {"experiment": "mlp", "grid": {"model.dropout": [0.0, 0.5], "train.lr": [0.1, 0.01]}},
    )
    suite = load(path).suites["s"]
    assert list(suite.variant_overrides()) == [
        "dropout=0.0,lr=0.1", "dropout=0.0,lr=0.01", "dropout=0.5,lr=0.1", "dropout=0.5,lr=0.01",
    ]  # fmt: skip
    assert suite.baseline_name() == "dropout=0.0,lr=0.1"


def test_full_recipe_replaces_seeds_merges_common_and_adds_variants(tmp_path):
    path = with_suite(tmp_path, {
        "experiment": "mlp", "seeds": [1, 2],
        "common": {"data": {"subset": 100}, "train.max_epochs": 2},
        "variants": {"baseline": {}, "wide": {"model.width": 64}},
        "full": {"seeds": [1, 2, 3], "common": {"train": {"max_epochs": 9}},
                 "variants": {"deep": {"model.depth": 3}}},
    })  # fmt: skip
    params = load(path)
    assert [(r.variant, r.seed) for r in params.suite_runs("s")][-1] == ("wide", 2)
    full = params.full_size()
    runs = full.suite_runs("s")
    assert [r.variant for r in runs] == ["baseline"] * 3 + ["wide"] * 3 + ["deep"] * 3
    deep = runs[-1].experiment
    assert deep.train.max_epochs == 9 and deep.subset == 100 and deep.model.depth == 3
    assert params.suites["s"].seeds == [1, 2]  # the default suite is unchanged


def test_full_recipe_runs_only_the_variants_it_names(tmp_path):
    path = with_suite(tmp_path, {
        "experiment": "mlp", "seeds": [1], "baseline": "baseline",
        "variants": {"baseline": {}, "wide": {"model.width": 64}},
        "full": {"variants": {"deep": {"model.depth": 3}}, "only": ["baseline", "deep"]},
    })  # fmt: skip
    runs = load(path).full_size().suite_runs("s")
    assert [r.variant for r in runs] == ["baseline", "deep"]
    with pytest.raises(ConfigError, match="full.only: the baseline 'baseline' must run too"):
        load(path, ["suites.s.full.only=[deep]"])
    with pytest.raises(ConfigError, match="full.only: dep not a variant; variants: baseline"):
        load(path, ["suites.s.full.only=[baseline, dep]"])


@pytest.mark.parametrize(
    "suite, expected",
    [
        ({"experiment": "mlp", "variants": {"a": {}},
          "full": {"variants": {"b": {"model.widht": 3}}}},
         "suites.s.variants.b.model.widht: unknown key"),
        ({"experiment": "mlp", "grid": {"model.depth": [1, 2]},
          "full": {"variants": {"b": {}}}},
         "a grid suite's full recipe changes seeds and common"),
        ({"experiment": "resnet", "variants": {"a": {}}},
         "suites.s.experiment: unknown experiment 'resnet'"),
        ({"experiment": "mlp", "variants": {"a": {"train.regularize.dropkonnect": 0.5}}},
         "suites.s.variants.a.train.regularize.dropkonnect: unknown key"),
        ({"experiment": "mlp", "variants": {"a": {"train.optimizer": "adamm"}}},
         "suites.s.variants.a.train.optimizer: got 'adamm'"),
        ({"experiment": "mlp", "variants": {"a": {"model.activation": "swish"}}},
         "suites.s.variants.a.model.activation: got 'swish'"),
        ({"experiment": "mlp", "variants": {"a": {"modle.depth": 3}}},
         "suites.s.variants.a.modle: unknown key"),
        ({"experiment": "mlp", "variants": {"a": {}}, "grid": {"model.depth": [1]}},
         "either variants or grid"),
        ({"experiment": "mlp", "variants": {"a": {}}, "baseline": "b"},
         "baseline 'b' is not a variant"),
        ({"experiment": "mlp", "grid": {"model.dropout": [0.2, 1.5]}},
         "suites.s.variants.dropout=1.5.model.dropout"),
    ],
)  # fmt: skip
def test_bad_suites_are_named_at_load(tmp_path, suite, expected):
    with pytest.raises(ConfigError) as err:
        load(with_suite(tmp_path, suite))
    assert expected in str(err.value)
    assert str(tmp_path / "params.yaml") in str(err.value)


@pytest.mark.parametrize(
    "override, expected",
    [
        ("experiments.mlp.model.depth=0", "dropconnect needs a hidden linear layer"),
        ("experiments.cnn.model.head=[]", "dropconnect needs a hidden linear layer"),
    ],
)
def test_dropconnect_on_a_model_without_hidden_linear_layers_is_refused(tmp_path, override,
                                                                         expected):  # fmt: skip
    with pytest.raises(ConfigError, match=expected):
        load(write(tmp_path, TINY_PARAMS), [override, "train.regularize.dropconnect=0.5"])


def test_technique_checks_name_the_key(tmp_path):
    with pytest.raises(
        ConfigError, match=r"experiments.\w+: data.skew.classes: digits has classes 0..9"
    ):
        load(write(tmp_path, TINY_PARAMS), ["data.skew={classes: [3, 10], keep: 0.1}"])
    with pytest.raises(ConfigError, match="experiments.mlp.train.folds: .*at least 2"):
        load(write(tmp_path, TINY_PARAMS), ["experiments.mlp.train.folds=1"])


def test_a_technique_or_model_the_data_cannot_take_is_refused(tmp_path):
    path = write(tmp_path, TINY_PARAMS)
    with pytest.raises(
        ConfigError, match="model.arch: mlp takes image or series data; tweets is text"
    ):
        load(path, ["experiments.mlp.data.dataset=tweets"])
    rnn = "experiments.rnn={task: classify, model: {arch: rnn}, data: {dataset: tweets}}"
    with pytest.raises(ConfigError, match="augment and input_noise need images; tweets is text"):
        load(path, [rnn, "experiments.rnn.train.augment.hflip=true"])
    load(path, [rnn])  # the rnn itself is fine on text


AE = "experiments.ae={task: reconstruct, model: {arch: autoencoder, hidden: [8], code_size: 2}}"


@pytest.mark.parametrize(
    "overrides, expected",
    [
        # every experiment says its family
        (
            ["experiments.x={model: {arch: mlp}}"],
            "experiments.x.task: missing; allowed: 'adapt', 'classify', 'generate', "
            "'masked_lm', 'pseudo_label', 'reconstruct', 'regress', 'tag', 'translate'",
        ),
        (["experiments.mlp.task=explain"], "experiments.mlp.task: got 'explain'; allowed:"),
        # a key the family does not take is an unknown key, named
        (["experiments.mlp.model.code_size=4"], "experiments.mlp.model.code_size: unknown key"),
        (
            ["experiments.mlp.model.arch=autoencoder"],
            "experiments.mlp.model.arch: got 'autoencoder'; allowed: 'mlp', 'cnn', 'rnn', "
            "'transformer', 'tfidf'",
        ),
        (
            [AE, "experiments.ae.data.dataset=tweets"],
            "experiments.ae: task: reconstruct takes image data; tweets is text",
        ),
        (
            [AE, "experiments.ae.model.encoder=conv", "experiments.ae.model.tied=true"],
            "experiments.ae.model: Value error, tied needs encoder 'mlp'|"
            "experiments.ae.model: tied needs encoder 'mlp'",
        ),
        (
            [AE, "experiments.ae.model.sparsity={kind: kl, target: 1.5}"],
            "experiments.ae.model.sparsity.target: Input should be less than 1",
        ),
        (
            [AE, "experiments.ae.model.sparsity={kind: kl, target: 0}"],
            "experiments.ae.model.sparsity.target: Input should be greater than 0",
        ),
        ([AE, "experiments.ae.model.sparsity={kind: kl}"], "needs code_activation 'sigmoid'"),
        ([AE, "experiments.ae.model.corruption={kind: masking, level: 1.0}"], "0 < level < 1"),
        ([AE, "experiments.ae.train.regularize.input_noise=0.1"], "use model.corruption"),
        (
            [AE, "experiments.ae.train.regularize.label_smoothing=0.1"],
            "label_smoothing: only for task classify; this is reconstruct",
        ),
        ([AE, "experiments.ae.data.label_noise=0.2"], "data.label_noise: only for task classify"),
        (
            [
                "experiments.rnn={task: classify, model: {arch: rnn}, data: {dataset: tweets}, "
                "train: {ae_augment: {samples: 100}}}"
            ],
            "experiments.rnn: train.ae_augment: decoded images are added to an image "
            "classifier's training set .* this is task classify, tweets \\(text\\), rnn",
        ),
        (
            [
                "experiments.mlp.data.dataset=fashion_mnist",
                "experiments.mlp.train.imbalance=combined",
            ],
            "experiments.mlp: train.imbalance: combined evens out unequal classes, but "
            "fashion_mnist's training classes are equal in number",
        ),
        (
            ["experiments.mlp.data.target_outliers={fraction: 0.05, size: 5}"],
            "experiments.mlp: data.target_outliers: corrupts a series' training targets, for "
            "task regress; this is classify",
        ),
        (
            ["experiments.mlp.train.augment.brightness=1.5"],
            "experiments.mlp.train.augment.brightness: Input should be less than or equal to 1",
        ),
        (["experiments.mlp.data.label_noise=1.0"], "label_noise: Input should be less than 1"),
        (
            ["suites={s: {experiment: mlp, smallest_effect: 0, variants: {a: {}}}}"],
            "suites.s.smallest_effect: Input should be greater than 0",
        ),
        (
            [AE, "experiments.ae.train.early_stopping.monitor=val_accuracy"],
            "reconstruct reports val_loss per epoch; got 'val_accuracy'",
        ),
        (
            [AE, "suites={s: {experiment: ae, headline: test_accuracy, variants: {a: {}}}}"],
            "suites.s.headline: got 'test_accuracy'; a reconstruct suite compares",
        ),
        (
            [AE, "suites={s: {experiment: ae, variants: {a: {model.tied: maybe}}}}"],
            "suites.s.variants.a.model.tied: Input should be a valid boolean",
        ),
    ],
)
def test_family_schemas_refuse_what_the_family_cannot_take(tmp_path, overrides, expected):
    with pytest.raises(ConfigError, match=expected) as err:
        load(write(tmp_path, TINY_PARAMS), overrides)
    assert str(err.value).startswith(str(tmp_path / "params.yaml"))
    assert "classify." not in str(err.value) and "reconstruct." not in str(err.value)


def test_autoencoder_defaults_resolve(tmp_path):
    exp = load(write(tmp_path, TINY_PARAMS), [AE]).experiment("ae")
    assert exp.task == "reconstruct" and exp.model.corruption.kind == "none"
    assert exp.train.lr == TINY_PARAMS["train"]["lr"]  # inherits the train defaults


def test_command_help_lists_the_names_it_takes_and_an_example(tmp_path, monkeypatch, capsys):
    from ablab.cli import main

    write(tmp_path, TINY_PARAMS)
    monkeypatch.setenv("ABLAB_ROOT", str(tmp_path))
    for command, names, example in (
        ("train", "experiments in params.yaml: cnn, mlp", "ablab train cnn --set"),
        ("suite", "suites in params.yaml: reg", "ablab suite regularization"),
        ("fetch", "datasets: digits, fashion_mnist, mnist, mnist_m,", "ablab fetch mnist"),
    ):
        with pytest.raises(SystemExit) as done:
            main([command, "--help"])
        assert done.value.code == 0
        out = capsys.readouterr().out
        assert names in out and f"example:\n  {example}" in out, out
    monkeypatch.setenv("ABLAB_ROOT", str(tmp_path / "elsewhere"))
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "experiments in params.yaml: (no readable params.yaml here)" in capsys.readouterr().out


def test_labels_that_leave_nothing_unlabelled_are_refused_at_load(tmp_path):
    """Before any unit of a suite trains, not in its seventh unit."""
    tree = copy.deepcopy(TINY_PARAMS)
    tree["experiments"]["semi"] = {"task": "pseudo_label", "data": {"subset": 1000},
                                   "model": {"arch": "mlp", "depth": 1, "width": 8}}  # fmt: skip
    tree["suites"] = {"semi": {"experiment": "semi", "variants": {
        "few": {"pseudo_label.labels": 100}, "all": {"pseudo_label.labels": 1000}}}}  # fmt: skip
    with pytest.raises(ConfigError, match="suites.semi.variants.all: pseudo_label.labels: 1000 "
                       "labels leave no unlabelled example of the 1000"):  # fmt: skip
        load(write(tmp_path, tree))
