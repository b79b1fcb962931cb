"""A router that learns after training: Router.observe against `kroute update`, what an outcome
changes, and Router.load on a running server's state directory."""

import json
import signal
import subprocess
import time
import urllib.request

import pytest

import kroute


@pytest.fixture(scope="module")
def router_dir(records, cli, tmp_path_factory):
    path = tmp_path_factory.mktemp("learning") / "router"
    cli("train", records, "-o", path, "--clusters", 10, "--quiet")
    return path


def test_observe_equals_kroute_update(router_dir, cli, queries, tmp_path):
    router = kroute.Router.load(router_dir)
    model = router.models[1]
    texts = queries[:40]
    scores = [float(i % 2) for i in range(len(texts))]
    costs = [0.001 * i if i % 3 == 0 else None for i in range(len(texts))]
    assert router.observe(texts, model, scores, costs, source="judge") == 40
    assert router.info["feedback"] == {
        "observations": 40,
        "sources": [{"source": "judge", "observations": 40}],
    }
    feedback = tmp_path / "judged.jsonl"
    feedback.write_text(
        "".join(
            json.dumps(
                {
                    "query": text,
                    "records": {model: score},
                    "usages": {model: {"cost": cost}} if cost is not None else {},
                }
            )
            + "\n"
            for text, score, cost in zip(texts, scores, costs)
        )
    )
    cli("update", router_dir, "--feedback", feedback, "-o", tmp_path / "updated", "--quiet")
    updated = kroute.Router.load(tmp_path / "updated")
    assert updated.info["feedback"]["observations"] == 40
    for alpha in (0.2, 0.8):
        assert [d["model"] for d in router.route(queries, alpha=alpha)] == [
            d["model"] for d in updated.route(queries, alpha=alpha)
        ]
    # What was learned is saved with the router.
    router.save(tmp_path / "saved")
    assert kroute.Router.load(tmp_path / "saved").route(queries) == router.route(queries)


def test_a_bad_outcome_can_change_a_close_decision(router_dir, queries):
    router = kroute.Router.load(router_dir)
    flipped = 0
    for text in queries[:60]:
        learner = kroute.Router.load(router_dir)
        chosen = learner.route([text])[0]["model"]
        learner.observe([text], chosen, [0.0])
        flipped += learner.route([text])[0]["model"] != chosen
    assert 0 < flipped < 60
    # Embeddings observe like the texts they came from.
    vectors = kroute.Embedder().embed(queries[:5])
    assert router.observe(vectors, router.models[0], [1.0] * 5) == 5


def test_bad_outcomes_are_refused(router_dir, queries):
    router = kroute.Router.load(router_dir)
    with pytest.raises(ValueError, match="gpt-9"):
        router.observe(queries[:2], "gpt-9", [1.0, 0.0])
    with pytest.raises(ValueError, match="2 queries for 3 scores"):
        router.observe(queries[:2], router.models[0], [1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        router.observe(queries[:1], router.models[0], [1.5])
    assert router.info["feedback"]["observations"] == 0


def test_load_reads_a_serving_state_directory(router_dir, kroute_bin, cli, queries, tmp_path):
    config = tmp_path / "kroute.toml"
    # Only outcomes are posted: the upstream is never called.
    config.write_text('[upstream.default]\nbase_url = "http://127.0.0.1:9/v1"\n')
    state = tmp_path / "state"
    server = subprocess.Popen(
        [str(kroute_bin), "serve", "--router", str(router_dir), "--config", str(config),
         "--state", str(state), "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = None
        for line in server.stderr:
            if "listening on " in line:
                base = line.split("listening on ")[1].split()[0]
                break
        assert base, "kroute serve did not start"
        for _ in range(600):
            try:
                if urllib.request.urlopen(f"{base}/health").status == 200:
                    break
            except OSError:
                time.sleep(0.05)
        models = kroute.Router.load(router_dir).models
        for i, text in enumerate(queries[:3]):
            body = json.dumps({"input": text, "model": models[i], "score": i / 2}).encode()
            request = urllib.request.Request(
                f"{base}/v1/feedback", body, {"Content-Type": "application/json"}
            )
            assert json.load(urllib.request.urlopen(request))["duplicate"] is False
        # Read while the server runs: the latest snapshot plus the log after it.
        learned = kroute.Router.load(state)
        assert learned.info["feedback"]["observations"] == 3
        path = tmp_path / "queries.jsonl"
        path.write_text("".join(json.dumps({"query": q}) + "\n" for q in queries[:50]))
        out = tmp_path / "decisions.jsonl"
        cli("route", state, "--input", path, "-o", out, "--quiet")
        expected = [json.loads(line)["model"] for line in out.read_text().splitlines()]
        assert [d["model"] for d in learned.route(queries[:50])] == expected
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


def test_pace_is_the_servers_budget_pacer():
    # On an even pace or under it: the tenant's own α; the budget left at 80 % of an even
    # pace's (4 of 10 dollars left with half the period gone) gives 60 % of it.
    assert kroute.pace(10.0, 0.8, 5.0, 0.5) == (0.8, False)
    alpha, exhausted = kroute.pace(10.0, 0.8, 6.0, 0.5)
    assert alpha == pytest.approx(0.48) and not exhausted
    assert kroute.pace(10.0, 0.8, 7.5, 0.5) == (0.0, False)
    assert kroute.pace(10.0, 0.8, 10.0, 0.1) == (0.0, True)
    with pytest.raises(ValueError, match="budget"):
        kroute.pace(0.0, 0.8, 1.0, 0.5)
