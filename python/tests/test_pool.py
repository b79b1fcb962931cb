"""Changing the model pool from Python: suggest, add_model, remove_model and reprice against
the CLI's `kroute suggest`, `add-model`, `remove-model` and `reprice` on the same inputs."""

import gzip
import json
from pathlib import Path

import pytest

import kroute

ADDED = "gpt-4-1106-preview"
MMLU = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "mmlupro-sample.jsonl.gz"


@pytest.fixture(scope="module")
def without(records, cli, tmp_path_factory):
    """A router trained on the subset without one model."""
    path = tmp_path_factory.mktemp("pool") / "router"
    cli("train", records, "-o", path, "--clusters", 8, "--exclude-models", ADDED, "--quiet")
    return path


def test_suggest_equals_kroute_suggest(without, records, cli, tmp_path):
    router = kroute.Router.load(without)
    suggested = router.suggest(25, records)
    probe = tmp_path / "probe.jsonl"
    cli("suggest", without, "--n", 25, "--from", records, "-o", probe, "--quiet")
    assert suggested == [json.loads(line) for line in probe.read_text().splitlines()]
    # From dicts: the same records, in the same order.
    dicts = [json.loads(line) for line in Path(records).read_text().splitlines()]
    assert router.suggest(25, dicts) == suggested
    assert router.suggest(10, records) == suggested[:10]


def test_add_model_equals_kroute_add_model_and_remove_undoes_it(without, records, cli, tmp_path):
    router = kroute.Router.load(without)
    probe = router.suggest(30, records)
    assert router.add_model(probe) == [ADDED]
    assert router.models[-1] == ADDED
    assert router.info["pool"][0]["change"] == "added"
    assert router.info["pool"][0]["evaluations"] == 30

    probe_file = tmp_path / "probe.jsonl"
    probe_file.write_text("".join(json.dumps(r) + "\n" for r in probe))
    cli("add-model", without, "--records", probe_file, "-o", tmp_path / "added", "--quiet")
    from_cli = kroute.Router.load(tmp_path / "added")
    queries = [r["query"] for r in probe]
    for alpha in (0.2, 0.8):
        mine = [d["ranked"] for d in router.route(queries, alpha=alpha)]
        theirs = [d["ranked"] for d in from_cli.route(queries, alpha=alpha)]
        assert mine == theirs

    router.remove_model(ADDED)
    assert ADDED not in router.models
    with pytest.raises(ValueError, match="no model `nope`"):
        router.remove_model("nope")


def test_a_model_on_a_declared_prior(without, queries):
    router = kroute.Router.load(without)
    router.add_model(model="perfect-llm", prior_accuracy=1.0, prior_cost=0.0)
    assert router.info["prior_only"] == ["perfect-llm"]
    decisions = router.route(queries[:20], alpha=0.5, explain=True)
    assert all(d["model"] == "perfect-llm" for d in decisions)
    assert decisions[0]["prior_only"] == ["perfect-llm"]
    with pytest.raises(ValueError, match=r"prior-accuracy must be in \[0, 1\]"):
        router.add_model(model="other", prior_accuracy=2.0, prior_cost=0.0)


def test_a_declared_accuracy_beside_answers_equals_kroute_add_model(without, records, cli, tmp_path):
    probe = kroute.Router.load(without).suggest(30, records)
    declared, alone = kroute.Router.load(without), kroute.Router.load(without)
    declared.add_model(probe, prior_accuracy=0.95)
    alone.add_model(probe)
    assert declared.info["pool"][0]["prior"] == {"accuracy": 0.95}
    assert declared.info["prior_only"] == []

    probe_file = tmp_path / "probe.jsonl"
    probe_file.write_text("".join(json.dumps(r) + "\n" for r in probe))
    cli("add-model", without, "--records", probe_file, "--prior-accuracy", 0.95, "-o", tmp_path / "added",
        "--quiet")
    from_cli = kroute.Router.load(tmp_path / "added")
    queries = [r["query"] for r in probe]
    mine = [d["ranked"] for d in declared.route(queries, alpha=0.8)]
    assert mine == [d["ranked"] for d in from_cli.route(queries, alpha=0.8)]
    # Declared at 0.95, the model is chosen more often than on its answers alone.
    share = lambda router: sum(d["model"] == ADDED for d in router.route(queries, alpha=0.8))
    assert share(declared) > share(alone)
    with pytest.raises(TypeError, match="not prior_cost"):
        kroute.Router.load(without).add_model(probe, prior_accuracy=0.95, prior_cost=0.01)


def test_reprice_equals_kroute_reprice(cli, tmp_path):
    trained = tmp_path / "mmlu"
    cli("train", MMLU, "-o", trained, "--clusters", 6, "--quiet")
    router = kroute.Router.load(trained)
    report = router.reprice({"gemini-1.5-pro-002": (0.625, 2.5)})
    assert report[0]["model"] == "gemini-1.5-pro-002"
    assert report[0]["mean_cost_after"] < report[0]["mean_cost_before"]
    prices = tmp_path / "prices.toml"
    prices.write_text('"gemini-1.5-pro-002" = { input_per_mtok = 0.625, output_per_mtok = 2.5 }\n')
    cli("reprice", trained, prices, "-o", tmp_path / "repriced")
    from_cli = kroute.Router.load(tmp_path / "repriced")
    queries = [json.loads(line)["query"] for line in gzip.open(MMLU, "rt").readlines()[:50]]
    assert [d["ranked"] for d in router.route(queries)] == [
        d["ranked"] for d in from_cli.route(queries)
    ]
    with pytest.raises(ValueError, match="no model `nope`"):
        router.reprice({"nope": (1.0, 1.0)})

