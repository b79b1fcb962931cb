import json

import numpy as np
import pytest

import kroute


@pytest.fixture(scope="module")
def trained(records):
    return kroute.Router.train(records, clusters=12, seed=7)


def cli_decisions(cli, router_dir, queries, tmp_path, *flags):
    path = tmp_path / "queries.jsonl"
    path.write_text("".join(json.dumps({"query": q}) + "\n" for q in queries))
    out = tmp_path / "decisions.jsonl"
    cli("route", router_dir, "--input", path, "-o", out, "--quiet", *flags)
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_python_router_decides_as_kroute_route(trained, cli, queries, tmp_path):
    trained.save(tmp_path / "router")
    for alpha in (0.2, 0.9):
        expected = cli_decisions(cli, tmp_path / "router", queries, tmp_path, "--alpha", alpha)
        got = trained.route(queries, alpha=alpha)
        assert [d["model"] for d in got] == [d["model"] for d in expected]
        assert [d["ranked"] for d in got] == [d["ranked"] for d in expected]


def test_cli_router_loads_and_decides_the_same(records, cli, queries, tmp_path):
    cli("train", records, "-o", tmp_path / "cli-router", "--clusters", 10, "--bag", 2, "--quiet")
    router = kroute.Router.load(tmp_path / "cli-router")
    assert router.info["bag"] == 2 and router.info["clusters"] == 10
    expected = cli_decisions(cli, tmp_path / "cli-router", queries[:100], tmp_path, "--explain")
    got = router.route(queries[:100], explain=True)
    assert got == [{k: v for k, v in d.items() if k not in ("index", "query")} for d in expected]
    assert all(c["weight"] > 0 for c in got[0]["clusters"])


def test_fit_on_embeddings_equals_train(trained, records, queries):
    # The training rows' vectors exactly as `train` embeds them (one call, same batches); the
    # test rows' are never read by fit.
    splits = [json.loads(line)["split"] for line in records.read_text().splitlines()]
    train_rows = [i for i, split in enumerate(splits) if split == "train"]
    embedder = kroute.Embedder()
    embeddings = embedder.embed(queries)
    embeddings[train_rows] = embedder.embed([queries[i] for i in train_rows])
    fitted = kroute.Router.fit(embeddings, records, clusters=12, seed=7)
    assert fitted.models == trained.models
    assert fitted.info == trained.info
    assert fitted.route(queries) == trained.route(queries)
    # Precomputed query vectors route as the texts they came from.
    by_vector = fitted.route(embeddings[:64], explain=True)
    by_text = fitted.route(queries[:64], explain=True)
    assert [d["model"] for d in by_vector] == [d["model"] for d in by_text]
    for a, b in zip(by_vector, by_text):
        assert [c["cluster"] for c in a["clusters"]] == [c["cluster"] for c in b["clusters"]]


def test_records_as_dicts(trained, records, queries):
    rows = [json.loads(line) for line in records.read_text().splitlines()]
    from_dicts = kroute.Router.train(rows, clusters=12, seed=7)
    assert from_dicts.route(queries[:32]) == trained.route(queries[:32])


def test_save_load_round_trip(trained, queries, tmp_path):
    trained.save(tmp_path / "r")
    loaded = kroute.Router.load(tmp_path / "r")
    assert loaded.info == trained.info
    assert loaded.route(queries[:32], alpha=0.7, top_p=2) == trained.route(queries[:32], alpha=0.7, top_p=2)


def test_evaluate_equals_kroute_eval(records, cli, tmp_path):
    cli("eval", records, "-o", tmp_path / "report", "--seeds", "42,43", "--clusters", 10,
        "--alphas", "0,0.5,1", "--no-plots", "--quiet")
    expected = json.loads((tmp_path / "report" / "report.json").read_text())
    got = kroute.evaluate(records, seeds=[42, 43], clusters=10, alphas=[0, 0.5, 1])
    assert got == expected
    assert got["curve"]["router"]["mean"] > 0


def test_check_equals_kroute_check(records, cli):
    assert kroute.check(records) == json.loads(cli("check", records, "--json"))


def test_bad_input_raises_with_the_cli_message(trained, records, cli, tmp_path):
    lines = records.read_text().splitlines()
    bad = json.loads(lines[3])
    bad["records"][next(iter(bad["records"]))] = "yes"
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines[:3] + [json.dumps(bad)] + lines[4:]) + "\n")
    message = cli("check", path, check=False).stderr.strip().removeprefix("error: ")
    assert ":4:" in message
    with pytest.raises(ValueError) as raised:
        kroute.check(path)
    assert str(raised.value) == message
    with pytest.raises(ValueError, match=r"^records:4: "):
        kroute.check([json.loads(line) for line in lines[:3]] + [bad])
    with pytest.raises(FileNotFoundError):
        kroute.check(tmp_path / "missing.jsonl")
    with pytest.raises(ValueError, match="clusters must be between 1"):
        kroute.Router.train(records, clusters=0)
    with pytest.raises(TypeError, match="route takes a list"):
        trained.route("one query")


def test_embeddings_of_the_wrong_shape_are_refused(records, trained):
    with pytest.raises(ValueError, match="one 384-dimensional row per record"):
        kroute.Router.fit(np.zeros((3, 384), np.float32), records)
    with pytest.raises(ValueError, match="dimensions"):
        trained.route(np.zeros((2, 10), np.float32))
