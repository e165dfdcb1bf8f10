"""One trained image classifier from the MLflow store explained, never retrained: found by
experiment name (its latest run that logged a model), registry URI (`models:/name@alias`) or run
id; its logged network rebuilt from the run's params.yaml and loaded with the logged weights;
every method's maps, faithfulness and sanity numbers, and the pictures, logged into a child run
of the run that trained it (tag ablab.explains) and, for an experiment, results/explain/<name>/."""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np
import torch
import yaml
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from torch import nn

from ablab import tracking
from ablab.config import ConfigError, Experiment, Params
from ablab.config.explain import ExplainParams
from ablab.explain import activation_max, faithfulness, figures, maps
from ablab.figures import png_bytes
from ablab.files import write_atomic

BASELINES = ("random", "intensity")


@dataclass
class Target:
    """What is explained: the run that trained it and the logged model's URI."""

    run: Run
    model_uri: str
    label: str  # the experiment's name, or the URI / run id asked for


@dataclass
class Explanation:
    metrics: dict[str, float]
    table: dict[str, dict[str, float]]
    curves: dict[str, np.ndarray]  # order -> 2 x (steps + 1): mean deletion, insertion curves
    skipped: dict[str, str] = field(default_factory=dict)  # method -> why it cannot apply
    failing: list[str] = field(default_factory=list)  # methods failing the sanity check


def locate(client: MlflowClient, experiment_id: str, params: Params, what: str) -> Target:
    """An experiment's latest run (of its own, not a suite's) with a logged model, a
    `models:/` URI, or a run id / run name with a logged model."""
    if what.startswith("models:/"):
        try:
            info = mlflow.models.get_model_info(what)
        except MlflowException as exc:
            if not tracking.absent(exc):
                raise
            raise ConfigError(f"{what}: no such model in the store ({exc})") from None
        return Target(client.get_run(info.run_id), what, what.removeprefix("models:/"))
    if what in params.experiments:
        query = (f"tags.`ablab.experiment` = '{what}' and tags.`ablab.stage` = 'train' "
                 "and tags.`ablab.suite` = '' and attributes.status = 'FINISHED'")  # fmt: skip
        runs = client.search_runs([experiment_id], query, order_by=["start_time DESC"])
        if not runs:
            raise ConfigError(f"experiment {what!r} has no finished run in the store: "
                              f"`ablab train {what}` first")  # fmt: skip
        return Target(runs[0], _logged_model(client, runs[0], what), what)
    runs = client.search_runs([experiment_id], f"attributes.run_name = '{what}'",
                              order_by=["start_time DESC"])  # fmt: skip
    try:
        run = runs[0] if runs else client.get_run(what)
    except MlflowException as exc:
        if not tracking.absent(exc):
            raise
        raise ConfigError(
            f"{what!r} is not an experiment in params.yaml, a models:/ URI, a run name or a run "
            f"id in the store; experiments: {', '.join(params.experiments)}"
        ) from None
    return Target(run, _logged_model(client, run, what), what)


def _logged_model(client: MlflowClient, run: Run, what: str) -> str:
    found = [m for m in client.search_logged_models([run.info.experiment_id])
             if m.source_run_id == run.info.run_id]  # fmt: skip
    if not found:
        raise ConfigError(
            f"{what}: its run {run.info.run_name} ({run.info.run_id}) logged no model; train it "
            "with train.log_model=true (e.g. `ablab train NAME --set train.log_model=true`)"
        )
    return f"models:/{found[0].model_id}"


def load_classifier(target: Target) -> tuple[nn.Module, Experiment, dict]:
    """(the network with its normalisation, pixels in [0, 1] in, in eval mode; the run's
    experiment; the model's preprocessing.json), rebuilt from the run's params.yaml and the
    weights the model carries."""
    from ablab.families.base import network_regularizers
    from ablab.models import build
    from ablab.serving import Normalized

    run_id = target.run.info.run_id
    tree = yaml.safe_load(mlflow.artifacts.load_text(f"runs:/{run_id}/params.yaml"))
    exp = Experiment.model_validate(tree)
    with tempfile.TemporaryDirectory(prefix="ablab-explain-") as folder:
        local = Path(mlflow.artifacts.download_artifacts(target.model_uri, dst_path=folder))
        meta = json.loads((local / "artifacts" / "preprocessing.json").read_text())
        traced = torch.jit.load(str(local / "artifacts" / "network.pt"))
    if meta["kind"] == "text_classifier":  # the traced network is the classifier itself
        state = dict(traced.state_dict())
        rows = next(v.shape[0] for k, v in state.items() if k.endswith("embedding.weight"))
        net = build(exp.model, (int(meta["max_len"]),), len(meta["classes"]), rows)
        network_regularizers(net, exp)
        net.load_state_dict(state)
        net.eval()
        for p in net.parameters():
            p.requires_grad_(False)
        return net, exp, meta
    state = {k.removeprefix("net."): v for k, v in traced.state_dict().items()
             if k.startswith("net.")}  # fmt: skip
    net = build(exp.model, tuple(meta["image_shape"]), len(meta["classes"]))
    network_regularizers(net, exp)
    net.load_state_dict(state)
    model = Normalized(net, meta["mean"], meta["std"]).eval()
    for p in model.parameters():
        p.requires_grad_(False)  # gradients flow to the input only
    return maps.without_inplace(model), exp, meta


def run_data(exp: Experiment, processed_dir: Path, run: Run):
    """The experiment's data module, set up; it must hold the data the run was trained on."""
    from ablab.families import family

    data = family(exp.task).data(exp, processed_dir)
    data.setup()
    if data.meta["data_hash"] != run.data.tags.get("ablab.data_hash"):
        raise ConfigError(
            f"the processed {exp.dataset} data changed since run {run.info.run_id} was trained "
            f"(data hash {data.meta['data_hash']} vs {run.data.tags.get('ablab.data_hash')}); "
            "retrain it before explaining"
        )
    return data


def test_images(exp: Experiment, processed_dir: Path, meta: dict, run: Run):
    """The run's test split as pixels in [0, 1] and labels; the data must be the run's."""

    data = run_data(exp, processed_dir, run)
    x, y = data.tensors["test"].tensors
    x = (x.float() * meta["std"] + meta["mean"]).clamp(0, 1)
    return x.contiguous(), y


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    probs = torch.cat([torch.softmax(model(b), 1) for b in x.split(faithfulness.BATCH)])
    confidence, predicted = probs.max(1)
    return predicted, confidence


def explain_model(model: nn.Module, x: torch.Tensor, cfg: ExplainParams,
                  methods: list[str]) -> Explanation:  # fmt: skip
    """Every method's faithfulness (deletion / insertion AUC over `cfg.images` images, beside
    the random and intensity orders) and sanity (rank correlation with a randomized network's
    maps over `cfg.sanity_images`), for the class the model predicts."""
    generator = torch.Generator().manual_seed(cfg.seed)
    x = x[: cfg.images]
    target, _ = predict(model, x)
    start = faithfulness.blurred(x, cfg.blur_sigma)
    n, pixels = len(x), x.shape[-2] * x.shape[-1]
    orders = {"random": faithfulness.random_order(n, pixels, generator),
              "intensity": faithfulness.pixel_order(x.mean(1), generator)}  # fmt: skip
    metrics: dict[str, float] = {"explained_images": n}
    skipped: dict[str, str] = {}
    trained_maps: dict[str, torch.Tensor] = {}
    for method in methods:
        try:
            maps.check(method, model)
        except maps.NotApplicable as exc:
            skipped[method] = str(exc)
            continue
        torch.manual_seed(cfg.seed)  # SmoothGrad's noise
        started = time.perf_counter()
        found = maps.attribute(method, model, x, target, cfg)
        metrics[f"{method}_ms_per_image"] = 1000 * (time.perf_counter() - started) / n
        metrics[f"{method}_empty_maps"] = float((found.flatten(1).amax(1) <= 0).float().mean())
        trained_maps[method] = found
        orders[method] = faithfulness.pixel_order(found, generator)
    table: dict[str, dict[str, float]] = {}
    curves: dict[str, np.ndarray] = {}
    for name, order in orders.items():
        deletion, insertion = faithfulness.curves(model, x, target, order, cfg.steps, start)
        table[name] = {"deletion_auc": float(faithfulness.auc(deletion).mean()),
                       "insertion_auc": float(faithfulness.auc(insertion).mean())}  # fmt: skip
        curves[name] = np.stack([deletion.mean(0), insertion.mean(0)])
    failing = []
    if trained_maps:
        twin = maps.without_inplace(faithfulness.randomized(model, cfg.seed))
        k = min(cfg.sanity_images, n)
        for method, found in trained_maps.items():
            torch.manual_seed(cfg.seed)
            other = maps.attribute(method, twin, x[:k], target[:k], cfg)
            rho = float(np.mean(faithfulness.rank_correlation(found[:k], other)))
            table[method]["randomization_rank_correlation"] = rho
            if rho >= cfg.sanity_threshold:
                failing.append(method)
    for name, row in table.items():
        metrics.update({f"{name}_{k}": v for k, v in row.items()})
    # methods first, then the two orders every method should beat
    table = {k: table[k] for k in [*trained_maps, *BASELINES]}
    return Explanation(metrics, table, curves, skipped, failing)


def example_rows(y: torch.Tensor, predicted: torch.Tensor, classes: list[str],
                 per_class: int) -> list[int]:  # fmt: skip
    """Test indices for the figure: per true class, a correctly classified image first, then
    misclassified ones (else more correct ones), `per_class` in all."""
    rows = []
    for c in range(len(classes)):
        mine = (y == c).nonzero()[:, 0]
        right = mine[predicted[mine] == c].tolist()
        wrong = mine[predicted[mine] != c].tolist()
        picked = right[:1] + wrong[: per_class - 1]
        picked += [i for i in right[1:] if len(picked) < per_class][: per_class - len(picked)]
        rows += picked[:per_class]
    return rows


def pictures(model: nn.Module, x: torch.Tensor, y: torch.Tensor, meta: dict,
             cfg: ExplainParams, result: Explanation, title: str) -> dict[str, bytes]:  # fmt: skip
    """The PNGs: examples with every method's map, activation maximization, the first conv
    layer's filters beside what its units and the last conv layer's respond to (with a conv
    layer), the faithfulness table with its curves."""
    classes = list(meta["classes"])
    predicted, confidence = predict(model, x)
    rows = example_rows(y, predicted, classes, cfg.examples_per_class)
    xs, targets = x[rows], predicted[rows]
    captions = [f"{classes[int(y[i])]}\n-> {classes[int(predicted[i])]} {confidence[i]:.2f}"
                for i in rows]  # fmt: skip
    methods = [m for m in result.table if m not in BASELINES]
    shown = {}
    for method in methods:
        torch.manual_seed(cfg.seed)
        shown[method] = maps.attribute(method, model, xs, targets, cfg)
    out = {
        "explanations.png": png_bytes(
            figures.examples_figure(
                xs, captions, shown, f"{title}: what the network looks at (true -> predicted)"
            )
        )
    }
    am = cfg.activation_max
    shape = tuple(x.shape[1:])
    with torch.enable_grad():
        center = float(meta["mean"])
        class_images = activation_max.classes(model, len(classes), shape, am, cfg.seed, center)
        channel_images, layer, filters = None, "", None
        try:
            conv = maps.last_conv(model)
            layer = "last conv"
            count = min(am.channels, conv.out_channels)
            if count:
                channel_images = activation_max.channels(model, conv, count, shape, am, cfg.seed,
                                                         center)  # fmt: skip
                first = maps.first_conv(model)
                units = [activation_max.channels(model, c, min(am.channels, c.out_channels),
                                                 shape, am, cfg.seed, center, unit=True)
                         for c in (first, conv)]  # fmt: skip
                filters = (first.weight[: len(units[0])].detach(), *units)
        except maps.NotApplicable:
            pass
    out["activation_max.png"] = png_bytes(
        figures.activation_max_figure(
            class_images,
            classes,
            channel_images,
            layer,
            f"{title}: the input each class (top) and channel (bottom) responds to most",
        )
    )
    if filters is not None:
        out["filters.png"] = png_bytes(
            figures.filters_figure(
                *filters,
                f"{title}: the first conv layer's filters (top); the input a centre unit\nof "
                "each responds to most (middle), and of the last conv layer's (bottom)",
            )
        )  # fmt: skip
    out["faithfulness.png"] = png_bytes(
        figures.faithfulness_figure(
            result.table,
            result.curves,
            cfg.sanity_threshold,
            f"{title}: faithfulness over {int(result.metrics['explained_images'])} test images",
        )
    )
    return out  # fmt: skip


def _explain_text(net: nn.Module, exp: Experiment, meta: dict, target: Target, root: Path,
                  cfg: ExplainParams) -> tuple[Explanation, float, dict[str, bytes]]:  # fmt: skip
    """A text classifier's attention maps, their faithfulness on tokens and the pictures:
    (the explanation, the rebuilt network's test accuracy, the PNGs)."""
    from ablab.explain import text
    from ablab.families.classify import attention_figure

    if not text.attends(net):
        raise ConfigError(
            f"{target.label}: this text classifier computes no attention map to explain; a "
            "transformer, or an rnn with model.pooling attention, does"
        )
    data = run_data(exp, root / "data" / "processed", target.run)
    tokens, lengths, labels = data.tensors["test"].tensors
    predicted, confidence, weights = text.predict(net, tokens, lengths)
    accuracy = float((predicted == labels).float().mean())
    metrics, table, curves = text.explain_text(net, tokens, lengths, cfg)
    rho = table["attention"]["randomization_rank_correlation"]
    failing = ["attention"] if rho >= cfg.sanity_threshold else []
    result = Explanation(metrics, table, curves, {}, failing)
    classes, title = list(meta["classes"]), target.run.info.run_name
    rows = []
    for i in example_rows(labels, predicted, classes, cfg.examples_per_class):
        words = [data.vocab[t] for t in tokens[i, : lengths[i]].tolist()]
        caption = (f"true {classes[int(labels[i])]}, predicted {classes[int(predicted[i])]} "
                   f"{confidence[i]:.2f}")  # fmt: skip
        rows.append((words, weights[i, : lengths[i]].tolist(), caption))
    images = {
        "explanations.png": png_bytes(attention_figure(rows, f"{title}: attention (true -> "
                                                              "predicted)")),
        "faithfulness.png": png_bytes(figures.faithfulness_figure(
            table, curves, cfg.sanity_threshold,
            f"{title}: faithfulness over {metrics['explained_texts']} test texts (tokens)")),
    }  # fmt: skip
    return result, accuracy, images


def run_explain(params: Params, what: str, root: Path) -> dict[str, float]:
    """Explain one model (see the module's doc); returns the metrics logged."""
    cfg = params.explain
    root = Path(root)
    experiment_id = tracking.use_store(root, params.mlflow_experiment)
    client = MlflowClient()
    target = locate(client, experiment_id, params, what)
    model, exp, meta = load_classifier(target)
    torch.set_num_threads(exp.train.threads)
    parent = target.run.info
    if meta["kind"] == "text_classifier":
        result, accuracy, images = _explain_text(model, exp, meta, target, root, cfg)
    else:
        x, y = test_images(exp, root / "data" / "processed", meta, target.run)
        predicted, _ = predict(model, x)
        accuracy = float((predicted == y).float().mean())
        result = explain_model(model, x, cfg, list(cfg.methods))
        images = pictures(model, x, y, meta, cfg, result, parent.run_name)
    logged = target.run.data.metrics.get("test_accuracy")
    if logged is not None and abs(accuracy - logged) > 1e-3:
        raise ConfigError(
            f"{target.label}: the rebuilt network scores {accuracy:.4f} on the test split, its "
            f"run logged {logged:.4f}: the model does not match its run's params"
        )
    result.metrics["test_accuracy"] = accuracy
    tags = {
        "mlflow.parentRunId": parent.run_id, "ablab.explains": parent.run_id,
        "ablab.stage": "explain", "ablab.experiment": exp.name, "ablab.model_uri": target.model_uri,
        **{f"ablab.explain.skipped.{m}": why for m, why in result.skipped.items()},
        **{f"ablab.explain.fails_sanity.{m}": "true" for m in result.failing},
        **tracking.origin_tags(root),
    }  # fmt: skip
    with mlflow.start_run(experiment_id=parent.experiment_id,
                          run_name=f"{parent.run_name}/explain", tags=tags) as run:  # fmt: skip
        tracking.log_params(run.info.run_id, tracking.flatten(cfg.model_dump(mode="json")))
        tracking.log_metrics(run.info.run_id, result.metrics)
        tracking.log_artifacts({**images, "faithfulness.json": result.table})
        url = tracking.run_url(run.info.experiment_id, run.info.run_id)
    if what in params.experiments:
        out = root / "results" / "explain" / what
        for name, data in images.items():
            write_atomic(out / name, data)
        write_atomic(out / "metrics.json", json.dumps(result.metrics, indent=1) + "\n")
    for method, why in result.skipped.items():
        print(f"{what}: {method}: cannot explain this network: {why}")
    print(f"{what}: explained in MLflow run {run.info.run_id}: {url}")
    return result.metrics
