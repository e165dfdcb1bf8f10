"""Records of long runs (reproductions/*.json): each committed one recomputes to its result and
matches the committed recipe; a bad one is named; the README's table is made from them; and
`--record` refuses what would make a record lie."""

import copy
import json
import math
import subprocess

import pytest
import yaml

from ablab import records
from ablab.cli import main
from ablab.config import ConfigError, load
from tests.conftest import REPO, TINY_PARAMS
from tests.unit.test_config import write

PARAMS = load(REPO / "params.yaml")
COMMITTED = sorted((REPO / records.FOLDER).glob("*.json"))


NO_RECORD = pytest.param(None, marks=pytest.mark.skip(reason="no record in reproductions/ yet: "
                         "`ablab suite NAME --full --record` writes one"), id="none")  # fmt: skip


@pytest.mark.parametrize("path", COMMITTED or [NO_RECORD], ids=[p.stem for p in COMMITTED] or None)
def test_every_committed_record_recomputes_and_matches_its_recipe(path):
    assert records.problems(path, PARAMS) == []
    record = json.loads(path.read_text())
    ancestor = subprocess.run(["git", "merge-base", "--is-ancestor", record["commit"], "HEAD"],
                              cwd=REPO, capture_output=True)  # fmt: skip
    assert ancestor.returncode == 0, f"{path}: commit {record['commit']} is not in this history"


def test_the_readme_table_is_made_from_the_records():
    text = (REPO / "README.md").read_text()
    table = text.split(records.START, 1)[1].split(records.END, 1)[0]
    assert table == "\n" + records.table(PARAMS, records.load_all(REPO))


def fake_report():
    """A finished full recipe of mnist_cnn: cnn at 0.99 +- seed, mlp at 0.98, one mlp seed
    diverged."""
    runs = []
    for variant, base in (("cnn", 0.990), ("mlp", 0.980)):
        for seed in (1, 2, 3):
            failed = variant == "mlp" and seed == 3
            summary = {} if failed else {"test_accuracy": base + seed / 1000, "test_loss": 0.1}
            status = "diverged" if failed else "finished"
            runs.append({"variant": variant, "seed": seed, "run_id": f"{variant}{seed}",
                         "status": status, "summary": summary})  # fmt: skip
    return {"seeds": [1, 2, 3], "variants": {"cnn": "", "mlp": ""},
            "metrics": ["test_accuracy", "test_loss"], "runs": runs}  # fmt: skip


def test_a_record_holds_per_seed_values_and_its_result(tmp_path):
    record = records.build(PARAMS, "mnist_cnn", fake_report(), "abc", 3600.0,
                           [{"host": "h", "cpu": "c", "accelerator": "cpu"}])  # fmt: skip
    assert record["variants"]["cnn"]["test_accuracy"] == pytest.approx([0.991, 0.992, 0.993])
    assert record["variants"]["mlp"]["test_accuracy"][2] is None  # the diverged seed
    assert record["runs"]["mlp"] == ["mlp1", "mlp2", "mlp3"]
    assert record["result"]["test_accuracy"] == pytest.approx(0.992)
    assert record["result"]["mlp_test_accuracy"] == pytest.approx(0.9815)  # finished seeds
    mean, low, high = records.interval(record["variants"]["cnn"]["test_accuracy"], "error")
    assert mean == pytest.approx(0.008) and low < mean < high
    path = records.write(tmp_path, record)
    assert path == tmp_path / "reproductions" / "mnist_cnn.json"
    assert records.problems(path, PARAMS) == []


@pytest.mark.parametrize("damage, says", [
    (lambda r: r.pop("machines"), "missing machines"),
    (lambda r: r["result"].update(test_accuracy=0.999), "result.test_accuracy is 0.999"),
    (lambda r: r["variants"]["cnn"]["test_accuracy"].__setitem__(0, 0.5),
     "result.test_accuracy is"),
    (lambda r: r.update(params_digest="0" * 16), "the recipe changed since it ran"),
])  # fmt: skip
def test_a_bad_record_is_named(tmp_path, damage, says):
    record = records.build(PARAMS, "mnist_cnn", fake_report(), "abc", 10.0, [])
    damage(record)
    path = tmp_path / "mnist_cnn.json"
    path.write_text(json.dumps(record))
    found = records.problems(path, PARAMS)
    assert found and all(line.startswith(str(path)) for line in found)
    assert any(says in line for line in found), found


def test_record_is_refused_where_it_would_lie(tmp_path, monkeypatch, capsys):
    tree = copy.deepcopy(TINY_PARAMS)
    tree["suites"]["reg"]["full"] = {"record": {
        "name": "reg", "source": "s", "result": {"acc": {"variant": "dropout",
                                                         "metric": "test_accuracy"}}}}  # fmt: skip
    path = write(tmp_path, tree)
    monkeypatch.setenv("ABLAB_ROOT", str(tmp_path))
    for args, says in (
        (["suite", "reg", "--record"], "add --full"),
        (["suite", "reg", "--full", "--record", "--set", "seed=1"], "no --set"),
        (["suite", "reg", "reg", "--full", "--record", "--as", "x"], "--as names one record"),
    ):
        with pytest.raises(SystemExit):
            main([*args, "--params", str(path)])
        assert says in capsys.readouterr().err
    with pytest.raises(ConfigError, match="needs a git checkout"):
        records.clean_commit(tmp_path)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["git", "add", "-A"], cwd=tmp_path, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"],
                   cwd=tmp_path, check=True)  # fmt: skip
    assert len(records.clean_commit(tmp_path)) == 40
    path.write_text(yaml.safe_dump({**tree, "seed": 3}))
    with pytest.raises(ConfigError, match=r"uncommitted changes \(params.yaml\)"):
        records.clean_commit(tmp_path)


def test_a_record_spec_names_real_variants_and_metrics(tmp_path):
    tree = copy.deepcopy(TINY_PARAMS)
    tree["suites"]["reg"]["full"] = {"record": {
        "name": "reg", "source": "s", "result": {"acc": {"variant": "wide",
                                                         "metric": "test_accuracy"}}}}  # fmt: skip
    with pytest.raises(ConfigError, match="suites.reg.full.record.result.acc.variant: got 'wide'"):
        load(write(tmp_path, tree))
    tree["suites"]["reg"]["full"]["record"]["result"]["acc"] = {"variant": "dropout",
                                                                 "metric": "test_bleu"}  # fmt: skip
    with pytest.raises(ConfigError, match="result.acc.metric: got 'test_bleu'"):
        load(write(tmp_path, tree))
    assert math.isnan(records.interval([None])[1])
