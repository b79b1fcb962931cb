"""How much of a changed model could its outcomes give back if it were learned again as a new model?

    cargo build --release && python3 -m pip install ./python
    python3 scripts/drift_relearn.py mmlupro --cache /tmp/mmlu-emb.npy --out /tmp/relearn-mmlupro.json

The "got better" world of `scripts/drift_replay.py` (the weak cheap model answers as the
strongest does, its price unchanged). Instead of serving, the weak model is taken out of the
router and added back with `Router.add_model` from N of its answers in the changed world, its
own scores alone (what a server's outcomes give), on uniformly drawn training queries (`--draws`
independent draws) and on the queries `Router.suggest` picks. Each router's accuracy on the whole
test split at α = 0.8 (null scores left out), its spend and the weak model's share of decisions
are set against the static router (trained on the old records) and the true one (trained on the
changed records): the share of the static→true gap closed is what `drift_replay.py` reports for
the learning server, here for a model learned afresh from its outcomes instead of the training
profile moved by a shift.

Needs the kroute Python package and numpy.
"""

import argparse
import json
import pathlib
import random
import sys
import tempfile

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import drift_replay  # noqa: E402
import kroute  # noqa: E402
import pool_changes  # noqa: E402
import routing_data  # noqa: E402


def judge(router, world, rows, embeddings, alpha, model):
    """Accuracy (null scores left out), dollars per query and `model`'s share of decisions."""
    chosen = [d["model"] for d in router.route(embeddings[rows], alpha=alpha)]
    scores = [world[i]["records"].get(m) for i, m in zip(rows, chosen)]
    return {
        "accuracy": float(np.mean([float(s) for s in scores if s is not None])),
        "dollars_per_query": float(np.mean([routing_data.cost_of(world[i], m) for i, m in zip(rows, chosen)])),
        "share": float(np.mean([m == model for m in chosen])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", help="routerbench, mmlupro or a records file")
    parser.add_argument("--seeds", default="42,142,242")
    parser.add_argument("--sizes", default="50,100")
    parser.add_argument("--draws", type=int, default=2, help="uniform draws of N queries per seed")
    parser.add_argument("--alpha", type=float, default=0.8)
    parser.add_argument("--out", help="write every number here (JSON)")
    parser.add_argument("--cache", help="keep the query embeddings in this .npy file")
    args = parser.parse_args()

    records = drift_replay.load(args.data)
    strong, weak, _, _ = drift_replay.pick_models(records)
    world = drift_replay.drift(records, "better", strong, weak)
    embeddings = routing_data.embeddings(records, args.cache)
    train = [i for i, r in enumerate(records) if r["split"] == "train"]
    test = [i for i, r in enumerate(records) if r["split"] == "test"]
    sizes = [int(n) for n in args.sizes.split(",")]
    results = {"data": args.data, "strong": strong, "weak": weak, "alpha": args.alpha, "runs": []}
    for seed in map(int, args.seeds.split(",")):
        measure = lambda router: judge(router, world, test, embeddings, args.alpha, weak)  # noqa: E731
        static = measure(kroute.Router.fit(embeddings, records, seed=seed))
        true = measure(kroute.Router.fit(embeddings, world, seed=seed))
        gap = true["accuracy"] - static["accuracy"]
        run = {"seed": seed, "static": static, "true": true, "relearned": []}
        without = kroute.Router.fit(embeddings, records, seed=seed, exclude_models=[weak])
        rng = random.Random(seed)
        shuffled = train[:]
        rng.shuffle(shuffled)
        train_world = [world[i] for i in train]
        suggested = [train[i] for i in pool_changes.suggested_rows(without, train_world, embeddings[train], max(sizes))]
        with tempfile.TemporaryDirectory() as tmp:
            saved = pathlib.Path(tmp) / "without"
            without.save(saved)
            for n in sizes:
                picks = [("suggest", suggested[:n])]
                picks += [(f"uniform {d + 1}", shuffled[d * n: (d + 1) * n]) for d in range(args.draws)]
                for name, rows in picks:
                    router = kroute.Router.load(saved)
                    answers = [pool_changes.probe(world[i], weak, new_model_only=True) for i in rows]
                    router.add_model(answers, embeddings=embeddings[rows])
                    point = measure(router)
                    point.update(n=n, queries=name, gap_closed=(point["accuracy"] - static["accuracy"]) / gap)
                    run["relearned"].append(point)
        results["runs"].append(run)
        print(f"seed {seed}: static {static['accuracy']:.3f}, true {true['accuracy']:.3f} "
              f"(weak model's share {true['share']:.2f}); relearned: "
              + ", ".join(f"{p['queries']} {p['n']}: {p['gap_closed']:.0%} (share {p['share']:.2f})"
                          for p in run["relearned"]), flush=True)
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
