"""Family `generate` and the evaluator: the Fréchet distance against its closed form, real
images near the floor and noise far from it, the class statistics, the GANs' own metrics and
pictures, and a collapsed run failing alone while its suite goes on."""

import math

import numpy as np
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from scipy import linalg

from ablab import evaluator as quality
from ablab import tracking
from ablab.config import ConfigError, load
from ablab.families import DivergedError
from ablab.families.generate import GANTask, grid_image, to_layout
from ablab.models.gan import build_dcgan, build_mlp_gan
from ablab.suite import run_suite


def test_frechet_distance_matches_the_closed_form_for_two_gaussians():
    rng = np.random.default_rng(0)
    d, n = 4, 40_000
    a = rng.standard_normal((d, d))
    cov1, cov2 = a @ a.T / d + np.eye(d) * 0.5, np.diag([1.0, 2.0, 0.5, 1.5])
    mu1, mu2 = np.zeros(d), np.array([1.0, -0.5, 0.0, 2.0])
    x = torch.from_numpy(rng.multivariate_normal(mu1, cov1, n)).float()
    y = torch.from_numpy(rng.multivariate_normal(mu2, cov2, n)).float()
    root = linalg.sqrtm(cov1 @ cov2).real
    expected = float(np.sum((mu1 - mu2) ** 2) + np.trace(cov1 + cov2 - 2 * root))
    got = quality.frechet_distance(quality.Identity(d), x, y)
    assert got == pytest.approx(expected, rel=0.03)
    same = quality.frechet_distance(quality.Identity(d), x[: n // 2], x[n // 2 :])
    assert same < 0.01 * expected


def test_class_stats_entropy_is_log_k_for_every_class_equally_and_zero_for_one():
    uniform = torch.eye(10).repeat(5, 1)
    entropy, confidence, predicted = quality.class_stats(uniform)
    assert entropy == pytest.approx(math.log(10)) and confidence == 1.0
    assert list(predicted[:10]) == list(range(10))
    one = torch.zeros(30, 10)
    one[:, 3] = 1.0
    assert quality.class_stats(one)[0] == 0.0


@pytest.fixture(scope="module")
def digits_evaluator(tmp_path_factory):
    """The digits evaluator, trained on real digits (scikit-learn's) in a root of its own."""
    from ablab.data.preprocess import preprocess
    from ablab.data.sources import fetch

    root = tmp_path_factory.mktemp("evaluator-root")
    fetch("digits", root / "data" / "raw")
    preprocess("digits", root / "data" / "raw", root / "data" / "processed", 0.15, 0.2, 7)
    info = quality.train_evaluator(root / "data" / "processed", "digits", epochs=8, seed=0)
    return root, info


def test_real_images_sit_near_the_floor_and_noise_far_from_it(digits_evaluator):
    root, info = digits_evaluator
    net, loaded = quality.load_evaluator(root / "data" / "processed", "digits")
    assert loaded == info
    assert info["test_accuracy"] > 0.9
    assert info["real_class_entropy"] > 2.2 and info["real_inception_score"] > 5
    from ablab.data.datamodules import ImageDataModule

    data = ImageDataModule(root / "data" / "processed" / "digits", 64, 0, normalize=False)
    data.setup()
    train, test = data.tensors["train"].tensors[0], data.tensors["test"].tensors[0]
    noise = torch.rand(test.shape, generator=torch.Generator().manual_seed(0))
    real = quality.score(net, train, test)
    fake = quality.score(net, train, noise)
    assert real.frechet_distance == pytest.approx(info["real_frechet_distance"], rel=0.2)
    assert fake.frechet_distance > 20 * real.frechet_distance
    assert fake.kernel_distance > 20 * max(real.kernel_distance, 1e-3)
    assert fake.inception_score < real.inception_score


def test_a_missing_evaluator_names_the_file_and_the_command(tmp_path):
    with pytest.raises(quality.EvaluatorMissing, match=r"mnist\.pt.*ablab evaluator mnist"):
        quality.load_evaluator(tmp_path / "data" / "processed", "mnist")


def test_generate_without_an_evaluator_for_its_dataset_is_refused(tmp_path):
    tree = {"experiments": {"g": {"task": "generate", "model": {"arch": "gan"},
                                  "data": {"dataset": "mnist"}}}}  # fmt: skip
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tree))
    with pytest.raises(ConfigError, match=r"evaluator\.datasets.*add mnist"):
        load(tmp_path / "params.yaml")
    tree["experiments"]["g"]["train"] = {"regularize": {"l2": 0.1}}
    tree["evaluator"] = {"datasets": ["mnist"]}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tree))
    with pytest.raises(ConfigError, match=r"train\.regularize\.l2: not for task generate"):
        load(tmp_path / "params.yaml")


@pytest.mark.parametrize("build", [build_mlp_gan, build_dcgan])
@pytest.mark.parametrize("classes", [0, 10])
def test_generators_make_images_in_range_and_discriminators_one_logit(build, classes):
    generator, discriminator = build((1, 28, 28), [8, 4], 6, classes, True, 0.1)
    labels = torch.arange(5) % 10 if classes else None
    images = generator(torch.randn(5, 6), labels)
    assert images.shape == (5, 1, 28, 28) and images.abs().max() <= 1
    assert discriminator(images, labels).shape == (5,)


def test_dcgan_refuses_a_size_it_cannot_halve():
    with pytest.raises(ValueError, match="not divisible by 8"):
        build_dcgan((1, 28, 28), [8, 8, 8], 4)


def test_digits_fit_mnist_layout_in_a_centred_box():
    x = torch.ones(2, 1, 8, 8)
    out = to_layout(x, (1, 28, 28))
    assert out.shape == (2, 1, 28, 28)
    assert out[:, :, 4:24, 4:24].min() > 0.999 and out[:, :, :4].max() == 0
    assert to_layout(out, (1, 28, 28)) is out
    assert grid_image(out, 2).shape == (2 + 30, 2 + 60)


def test_a_non_finite_loss_ends_the_epoch_as_diverged():
    generator, discriminator = build_mlp_gan((1, 8, 8), [4], 2)
    task = GANTask(generator, discriminator, latent_size=2)
    task._record({"d_loss": torch.tensor(float("nan")), "g_loss": torch.tensor(1.0)})
    with pytest.raises(DivergedError, match="d_loss not finite"):
        task.epoch_extras()


def _gans_params(root, collapse: float):
    model = {"channels": [8, 8], "latent_size": 8, "collapse_entropy": 0.0}  # only one may fail
    tree = {
        "seed": 1, "mlflow_experiment": "gans-test",
        "data": {"dataset": "digits", "val_fraction": 0.15, "test_fraction": 0.2},
        "train": {"max_epochs": 2, "batch_size": 64, "lr": 0.002, "threads": 1,
                  "log_model": False, "schedule": {"name": "none"},
                  "early_stopping": {"enabled": False, "monitor": "val_frechet_distance"}},
        "evaluator": {"datasets": ["digits"]},
        "experiments": {"dcgan": {"task": "generate", "model": {"arch": "dcgan", **model}}},
        "suites": {"gans": {"experiment": "dcgan", "seeds": [1], "variants": {
            "dcgan": {"train.schedule": {"name": "plateau"}},  # stepped by hand, on val FD
            "cgan": {"model.conditional": True, "train.regularize.grad_clip": 1.0,
                     "train.schedule": {"name": "cosine"}},
            "collapsing": {"model.collapse_entropy": collapse},
            "cyclegan": {"model": {"arch": "cyclegan", "source": "digits", "width": 4,
                                   "residual_blocks": 0}},
        }}},
    }  # fmt: skip
    (root / "params.yaml").write_text(yaml.safe_dump(tree))
    return load(root / "params.yaml")


def test_gans_suite_scores_each_model_and_a_collapsed_run_fails_alone(digits_evaluator):
    root, _ = digits_evaluator
    # above log(10): no sample set can pass, so that variant must end as collapsed
    params = _gans_params(root, collapse=2.5)
    report = run_suite(params, "gans", root)
    runs = {r["variant"]: r for r in report["runs"]}
    assert runs["collapsing"]["status"] == "collapsed"
    assert "test_class_entropy" in runs["collapsing"]["failure"]
    for name in ("dcgan", "cgan", "cyclegan"):
        assert runs[name]["status"] == "finished", name
        summary = runs[name]["summary"]
        assert summary["test_frechet_distance"] > summary["real_frechet_distance"] > 0
        assert 0 <= summary["test_class_entropy"] <= math.log(10) + 1e-9
    assert 0 <= runs["cgan"]["summary"]["test_conditional_accuracy"] <= 1
    assert "test_conditional_accuracy" not in runs["dcgan"]["summary"]
    cycle = runs["cyclegan"]["summary"]
    assert 0 <= cycle["test_mapped_accuracy"] <= 1 and cycle["test_unmapped_accuracy"] > 0.9
    history = runs["dcgan"]["history"]
    assert len(history) == 2
    assert {"d_loss", "g_loss", "d_real", "d_fake", "val_frechet_distance"} <= set(history[0])

    client = MlflowClient(tracking.tracking_uri(root))
    failed = client.get_run(runs["collapsing"]["run_id"])
    assert failed.info.status == "FAILED"
    assert failed.data.tags["ablab.failure"].startswith("collapsed: test_class_entropy")
    artifacts = {
        name: {f.path for f in client.list_artifacts(runs[name]["run_id"])}
        | {f.path for f in client.list_artifacts(runs[name]["run_id"], "samples")}
        for name in ("cgan", "cyclegan")
    }
    assert {"samples.gif", "samples.png", "interpolation.png", "classes.png",
            "samples/epoch_000.png", "samples/epoch_001.png"} <= artifacts["cgan"]  # fmt: skip
    assert {"mapping.png", "samples.gif"} <= artifacts["cyclegan"]
    cgan = client.get_run(runs["cgan"]["run_id"])
    steps = client.get_metric_history(cgan.info.run_id, "val_frechet_distance")
    assert [m.step for m in steps] == [0, 1]
    lrs = [m.value for m in client.get_metric_history(cgan.info.run_id, "lr")]
    assert lrs[0] == pytest.approx(0.002) and lrs[1] < lrs[0]  # the cosine schedule stepped


def test_gan_augment_adds_generated_images_normalised_like_the_real_ones(digits_evaluator):
    import lightning.pytorch as pl

    from ablab.data.datamodules import ImageDataModule
    from ablab.families import Fit
    from ablab.families.generate import add_generated

    root, _ = digits_evaluator
    data = ImageDataModule(root / "data" / "processed" / "digits", 64, 3, subset=200)
    data.setup()
    x, y = data.tensors["train"].tensors
    fit = Fit(pl.Trainer(logger=False), fast_dev_run=False)
    add_generated(fit, data, samples=30, epochs=2, hidden=[8, 8], lr=1e-3)
    x2, y2 = data.tensors["train"].tensors
    assert len(x2) == len(x) + 30 and torch.equal(x2[: len(x)], x)
    assert y2[len(x) :].tolist() == [i % 10 for i in range(30)]
    lowest, highest = (
        -data.meta["mean"] / data.meta["std"],
        (1 - data.meta["mean"]) / data.meta["std"],
    )
    made = x2[len(x) :]
    assert made.min() >= lowest - 1e-5 and made.max() <= highest + 1e-5
    assert data.meta["generated_size"] == 30


def test_gan_augment_is_refused_where_there_is_no_image_classifier(tmp_path):
    tree = {"experiments": {"ae": {"task": "reconstruct",
                                   "model": {"arch": "autoencoder"},
                                   "train": {"gan_augment": {"samples": 100},
                                             "log_model": False}}}}  # fmt: skip
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tree))
    with pytest.raises(ConfigError, match="train.gan_augment: generated images are added"):
        load(tmp_path / "params.yaml")
