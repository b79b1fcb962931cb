"""Does the router that learns while it serves follow a world that changed after training?

    cargo build --release && python3 -m pip install ./python
    python3 scripts/drift_replay.py routerbench --out /tmp/drift-routerbench.json
    python3 scripts/drift_replay.py mmlupro --out /tmp/drift-mmlupro.json

Replays a data set's test split as traffic through a running `kroute serve` (the release
binary) with a local mock upstream: every request is routed (`model: "kroute:alpha=A"`), the
mock answers, and the recorded score of the model that answered (in the changed world) is posted
to /v1/feedback with the answer's decision id and its cost, before the next request. Scenarios:

- worse: the strongest model (best training accuracy) answers like a weak, cheap one from now on
  (its scores are the weak model's; its price stays). Feedback alone must find it.
- better: the weak model answers like the strongest (its price stays low). Only exploration can
  find it, since the router no longer sends it traffic.
- none: nothing changes; feedback must not hurt.

Three routers per scenario and seed: the static router trained on the old records (no
feedback), the learning router (the same router served with --feedback-half-life and
--explore), and the true router, trained on the changed records. Static and true routers decide
offline with the library (their decisions do not depend on traffic); the learning router
decides through the server. Accuracy is measured prequentially: each decision before its
outcome is posted. Reported: accuracy per window of 100 requests, the mean after the first
1,000 outcomes, and the share of the static→true gap the learning router closes there. With
no drift the stream uses half the test split and the frontier area (`kroute eval`'s
definition) of the static and the learned router is compared on the other half. The drifted
model's share of traffic per window (learning and true routers) is reported too, as are the
learning server's explored decisions per model after 1,000 requests and at the end
(`/admin/state`) and each model's outcomes and the distinct queries among them; `--keep-state
DIR` keeps each learning server's state directory for a closer look.

Needs the kroute Python package (training on embeddings computed once) and numpy.
"""

import argparse
import http.client
import http.server
import json
import pathlib
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import kroute  # noqa: E402
import routing_data  # noqa: E402
from routing_data import ROOT  # noqa: E402
WINDOW = 100
ALPHAS = [round(a * 0.1, 1) for a in range(11)]


class Mock(http.server.BaseHTTPRequestHandler):
    """An upstream that answers every chat completion at once."""

    def do_POST(self):  # noqa: N802 (the http.server API)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        answer = json.dumps({
            "id": "mock", "object": "chat.completion", "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


def load(name: str) -> list:
    """The records with a `split` field: theirs, else a fixed seeded 70/30 split per dataset."""
    records = routing_data.load(name)
    train = set(routing_data.split(records, 0)[0])
    for i, r in enumerate(records):
        r["split"] = "train" if i in train else "test"
    return records


def pick_models(records: list) -> tuple:
    """The strongest model by training accuracy, and a weak cheap one: the cheapest among the
    less accurate half."""
    train = [r for r in records if r["split"] == "train"]
    models = list(records[0]["records"])
    acc = {m: np.mean([r["records"][m] for r in train if r["records"].get(m) is not None])
           for m in models}
    price = {m: np.mean([routing_data.cost_of(r, m) for r in train]) for m in models}
    strong = max(models, key=lambda m: acc[m])
    weak_half = sorted(models, key=lambda m: acc[m])[: len(models) // 2]
    weak = min(weak_half, key=lambda m: price[m])
    return strong, weak, acc, price


def drift(records: list, scenario: str, strong: str, weak: str) -> list:
    """The records of the world after the change: scores move, prices stay."""
    if scenario == "none":
        return records
    source, target = (weak, strong) if scenario == "worse" else (strong, weak)
    changed = []
    for r in records:
        r = json.loads(json.dumps(r))
        if r["records"].get(target) is not None:  # not evaluated stays not evaluated
            r["records"][target] = r["records"].get(source)
        changed.append(r)
    return changed


def accuracy_and_cost(records: list, rows: list, chosen: list) -> tuple:
    """`kroute eval`'s measures: accuracy and the dollars of every chosen answer."""
    dollars, accuracy = routing_data.policy_point(records, rows, chosen)
    return accuracy, dollars


class Server:
    """`kroute serve` on a free port, in front of the mock."""

    def __init__(self, kroute_bin: str, router: pathlib.Path, mock_url: str, state: pathlib.Path,
                 flags: list):
        config = state.parent / "kroute.toml"
        config.write_text(f'[upstream.default]\nbase_url = "{mock_url}"\n')
        self.admin_key = secrets.token_hex(16)
        self.process = subprocess.Popen(
            [kroute_bin, "serve", "--router", str(router), "--config", str(config), "--port", "0",
             "--state", str(state), "--admin-key", self.admin_key, *flags],
            stderr=subprocess.PIPE, text=True)
        for line in self.process.stderr:
            if "listening on " in line:
                url = urllib.parse.urlparse(line.split("listening on ")[1].split()[0])
                break
        else:
            raise RuntimeError("kroute serve did not start")
        threading.Thread(target=self.process.stderr.read, daemon=True).start()
        self.connection = http.client.HTTPConnection(url.hostname, url.port)
        while self.request("GET", "/health")[0] != 200:
            time.sleep(0.05)

    def request(self, method: str, path: str, body=None) -> tuple:
        headers = {"Content-Type": "application/json"}
        if path.startswith("/admin/"):
            headers["Authorization"] = f"Bearer {self.admin_key}"
        try:
            self.connection.request(method, path, None if body is None else json.dumps(body),
                                    headers)
            response = self.connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        except (ConnectionError, http.client.HTTPException):
            self.connection.close()
            return 0, {}, b""

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)


def explored_per_model(server: Server) -> dict:
    """Decisions that explored, per model, since the server started (`/admin/state`)."""
    status, _, body = server.request("GET", "/admin/state")
    assert status == 200, body
    return {m: c["explored"] for m, c in json.loads(body)["per_model"].items() if c["explored"]}


def replay(server: Server, world: list, stream: list, alpha: float) -> tuple:
    """Routes each request through the server, posts its outcome; returns the models chosen,
    how many decisions explored, and the explored decisions per model after 1,000 requests and
    at the end."""
    chosen, explored, looks = [], 0, {}
    for k, i in enumerate(stream, 1):
        r = world[i]
        body = {"model": f"kroute:alpha={alpha}", "messages": [{"role": "user", "content": r["query"]}]}
        status, headers, _ = server.request("POST", "/v1/chat/completions", body)
        assert status == 200, status
        model = headers["x-kroute-model"]
        explored += headers.get("x-kroute-explored") == "true"
        chosen.append(model)
        score = r["records"].get(model)
        if score is not None:
            outcome = {"decision_id": headers["x-kroute-decision-id"], "score": float(score),
                       "cost": routing_data.cost_of(r, model)}
            status, _, text = server.request("POST", "/v1/feedback", outcome)
            assert status == 200, text
        if k in (1000, len(stream)):
            looks[k] = explored_per_model(server)
    return chosen, explored, looks


def outcomes_per_model(world: list, stream: list, chosen: list) -> dict:
    """Per model, the outcomes it got and on how many distinct queries."""
    rows = {}
    for i, model in zip(stream, chosen):
        if world[i]["records"].get(model) is not None:
            rows.setdefault(model, []).append(i)
    return {m: {"outcomes": len(r), "distinct_queries": len(set(r))} for m, r in rows.items()}


def scores(world: list, stream: list, chosen: list) -> list:
    out = []
    for i, model in zip(stream, chosen):
        s = world[i]["records"].get(model)
        out.append(np.nan if s is None else float(s))
    return out


def windows(values: list) -> list:
    return [float(np.nanmean(values[k: k + WINDOW])) for k in range(0, len(values), WINDOW)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", help="routerbench, mmlupro or a records file")
    # k-means restart r of seed s starts from seed s + r (10 restarts): spaced seeds share none.
    parser.add_argument("--seeds", default="42,142,242")
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--alpha", type=float, default=0.8)
    parser.add_argument("--half-life", type=float, default=20.0)
    parser.add_argument("--explore", default="optimistic")
    parser.add_argument("--explore-max-share", type=float, default=0.05)
    parser.add_argument("--scenarios", default="worse,better,none")
    parser.add_argument("--kroute", default=str(ROOT / "target/release/kroute"))
    parser.add_argument("--out", help="write every number here (JSON)")
    parser.add_argument("--cache", help="keep the query embeddings in this .npy file")
    parser.add_argument("--keep-state", help="copy each learning server's state directory here")
    args = parser.parse_args()

    records = load(args.data)
    strong, weak, acc, price = pick_models(records)
    print(f"{args.data}: strong {strong} (accuracy {acc[strong]:.3f}, ${price[strong]:.5f}/query), "
          f"weak {weak} ({acc[weak]:.3f}, ${price[weak]:.5f}/query)")
    embeddings = routing_data.embeddings(records, args.cache)
    test = [i for i, r in enumerate(records) if r["split"] == "test"]
    mock = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Mock)
    threading.Thread(target=mock.serve_forever, daemon=True).start()
    mock_url = f"http://127.0.0.1:{mock.server_address[1]}/v1"
    flags = ["--feedback-half-life", str(args.half_life), "--explore", args.explore,
             "--explore-max-share", str(args.explore_max_share)]
    results = {"data": args.data, "strong": strong, "weak": weak, "alpha": args.alpha,
               "half_life": args.half_life, "explore": args.explore,
               "explore_max_share": args.explore_max_share, "runs": []}
    for scenario in args.scenarios.split(","):
        world = drift(records, scenario, strong, weak)
        drifted = {"worse": strong, "better": weak}.get(scenario)
        for seed in map(int, args.seeds.split(",")):
            rng = random.Random(seed)
            rows = test[:]
            rng.shuffle(rows)
            held_out = []
            if scenario == "none":
                rows, held_out = rows[: len(rows) // 2], rows[len(rows) // 2:]
            stream = [rows[k % len(rows)] for k in range(args.events)]
            static = kroute.Router.fit(embeddings, records, seed=seed)
            true = kroute.Router.fit(embeddings, world, seed=seed)
            decide = lambda router, rows: [d["model"] for d in router.route(  # noqa: E731
                embeddings[rows], alpha=args.alpha)]
            run = {"scenario": scenario, "seed": seed}
            for name, router in (("static", static), ("true", true)):
                run[name] = windows(scores(world, stream, decide(router, stream)))
            with tempfile.TemporaryDirectory() as tmp:
                tmp = pathlib.Path(tmp)
                static.save(tmp / "router")
                server = Server(args.kroute, tmp / "router", mock_url, tmp / "state",
                                flags + ["--explore-seed", str(seed)])
                t0 = time.time()
                chosen, explored, looks = replay(server, world, stream, args.alpha)
                seconds = time.time() - t0
                server.stop()
                if args.keep_state:
                    shutil.copytree(tmp / "state", pathlib.Path(args.keep_state) / f"{scenario}-{seed}",
                                    dirs_exist_ok=True)
                run["learning"] = windows(scores(world, stream, chosen))
                if drifted:
                    run["drifted_share"] = {
                        "learning": windows([float(m == drifted) for m in chosen]),
                        "true": windows([float(m == drifted) for m in decide(true, stream)]),
                    }
                run["explored_share"] = explored / len(stream)
                run["explored_per_model"] = looks
                run["outcomes_per_model"] = outcomes_per_model(world, stream, chosen)
                run["events_per_s"] = len(stream) / seconds
                if held_out:
                    learned = kroute.Router.load(tmp / "state")
                    singles = {m: accuracy_and_cost(world, held_out, [m] * len(held_out))
                               for m in records[0]["records"]}
                    best = max(singles, key=lambda m: singles[m][0])
                    for name, router in (("static", static), ("learning", learned)):
                        points = [accuracy_and_cost(world, held_out, decide_at(router, embeddings,
                                                                                held_out, a))
                                  for a in ALPHAS]
                        run[f"{name}_area"] = kroute.frontier_area([(c, a) for a, c in points],
                                                            singles[best][1])
            after = slice(1000 // WINDOW, None)
            means = {k: float(np.mean(run[k][after])) for k in ("static", "learning", "true")}
            gap = means["true"] - means["static"]
            run["after_1000"] = means
            run["gap_closed"] = (means["learning"] - means["static"]) / gap if abs(gap) > 1e-9 else None
            results["runs"].append(run)
            closed = "n/a" if run["gap_closed"] is None else f"{run['gap_closed']:.0%}"
            area = (f", area static {run['static_area']:.4f} learned {run['learning_area']:.4f}"
                    if held_out else "")
            print(f"{scenario:>6} seed {seed}: after 1,000 outcomes static {means['static']:.3f} "
                  f"learning {means['learning']:.3f} true {means['true']:.3f} (gap closed "
                  f"{closed}), explored {run['explored_share']:.1%}, "
                  f"{run['events_per_s']:.0f} requests+outcomes/s{area}")
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


def decide_at(router, embeddings, rows, alpha):
    return [d["model"] for d in router.route(embeddings[rows], alpha=alpha)]


if __name__ == "__main__":
    main()
