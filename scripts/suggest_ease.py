"""Are the queries `suggest` picks easier than the clusters they stand for?

    cargo build --release && python3 -m pip install ./python
    python3 scripts/suggest_ease.py routerbench --cache /tmp/rb-emb.npy
    python3 scripts/suggest_ease.py mmlupro --cache /tmp/mmlu-emb.npy

The setting of `scripts/pool_changes.py`: per seed, a router trained without one of the 3 most
accurate models, and the first N queries `Router.suggest` picks for it against N drawn uniformly
(the same draws as pool_changes.py). A query's ease for the held-out model is its score there
minus the model's mean score over the training queries of the query's cluster, averaged over
the k-means solutions of the bag: what the model's answers on these queries overstate its
per-cluster accuracy by. Printed: the mean ease of the first N queries per model and rule,
averaged over seeds, and over the three models.

Needs the kroute Python package and numpy.
"""

import argparse
import pathlib
import sys
from collections import defaultdict

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import pool_changes  # noqa: E402
import routing_data  # noqa: E402

SIZES = [10, 25, 50, 100, 200]


def nearest_clusters(router, embeddings):
    """Each query's cluster in every k-means solution (the nearest of `explain`'s voters)."""
    decisions = router.route(embeddings, explain=True)
    bag = router.info["bag"]
    clusters = []
    for decision in decisions:
        voters = decision["clusters"]
        per_member = len(voters) // bag
        clusters.append([voters[b * per_member]["cluster"] for b in range(bag)])
    return clusters


def ease_of(records, clusters, model):
    """Per row: the model's score minus its mean over the rows of the row's clusters."""
    scores = defaultdict(list)
    for record, cs in zip(records, clusters):
        if record["records"].get(model) is not None:
            for c in cs:
                scores[c].append(float(record["records"][model]))
    mean = {c: np.mean(v) for c, v in scores.items()}
    return lambda row: np.mean([float(records[row]["records"][model]) - mean[c] for c in clusters[row]])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", choices=sorted(routing_data.DATA))
    parser.add_argument("--cache", help="keep the query embeddings in this .npy file")
    parser.add_argument("--seeds", default="0,100,200,300,400,500")
    args = parser.parse_args()
    records = routing_data.load(args.dataset)
    models = list(records[0]["records"])
    embeddings = routing_data.embeddings(records, args.cache)
    ease = defaultdict(list)  # (model, rule, n) -> per seed
    for seed in map(int, args.seeds.split(",")):
        train, _ = routing_data.split(records, seed)
        held_out, _ = pool_changes.held_out_models(records, train, models)
        train_records = [records[i] for i in train]
        train_embeddings = embeddings[train]
        for model in held_out[:3]:
            router = pool_changes.fit(train_embeddings, train_records, seed, exclude_models=[model])
            of = ease_of(train_records, nearest_clusters(router, train_embeddings), model)
            suggested = pool_changes.suggested_rows(router, train_records, train_embeddings, 2 * max(SIZES))
            rules = {
                "suggest": [i for i in suggested if train_records[i]["records"].get(model) is not None],
                "random": pool_changes.uniform_rows(train_records, model, seed, max(SIZES)),
            }
            for rule, rows in rules.items():
                for n in SIZES:
                    ease[model, rule, n].append(float(np.mean([of(i) for i in rows[:n]])))
            print(f"seed {seed} {model}: suggest {ease[model, 'suggest', 50][-1]:+.3f}, "
                  f"random {ease[model, 'random', 50][-1]:+.3f} at 50", flush=True)
    held = list(dict.fromkeys(m for m, _, _ in ease))
    print("| held out | rule | " + " | ".join(f"{n}" for n in SIZES) + " |")
    print("|---|---|" + "---:|" * len(SIZES))
    for model in held + ["mean of the three"]:
        for rule in ("suggest", "random"):
            cells = []
            for n in SIZES:
                values = [v for m in (held if model not in held else [model]) for v in ease[m, rule, n]]
                cells.append(f"{np.mean(values):+.3f}")
            print(f"| {model} | {rule} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
