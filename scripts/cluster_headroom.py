"""How much can any per-cluster choice of model gain over always-gpt-4 on the bundled data?

    target/release/kroute embed data/routerbench-3k.jsonl.gz -o /tmp/routerbench-emb.safetensors
    python3 scripts/cluster_headroom.py /tmp/routerbench-emb.safetensors   # numpy, scikit-learn, safetensors

For k clusters of the training queries (scikit-learn KMeans on kroute's embeddings), pick in each
cluster the model with the best *training* accuracy (ties: cheaper) and score that choice on the
training queries themselves (in-sample: an upper bound for routing on these clusters) and on the
test queries (what a p=1 router at α=1 would get). Accuracy is the mean over datasets, as in
`kroute eval`. Diagnostic only: nothing here feeds back into kroute's defaults.
"""

import gzip
import json
import pathlib
import sys

import numpy as np
from safetensors.numpy import load_file
from sklearn.cluster import KMeans

ROOT = pathlib.Path(__file__).resolve().parent.parent


def main() -> None:
    x = load_file(sys.argv[1])["embeddings"]
    with gzip.open(ROOT / "data/routerbench-3k.jsonl.gz", "rt") as f:
        records = [json.loads(line) for line in f]
    models = list(records[0]["records"])
    score = np.array([[np.nan if r["records"].get(m) is None else r["records"][m] for m in models] for r in records])
    cost = np.array([[r["usages"].get(m, {}).get("cost", 0.0) for m in models] for r in records])
    dataset = np.array([r["dataset"] for r in records])
    train = np.array([r["split"] == "train" for r in records])
    gpt4 = models.index("gpt-4-1106-preview")

    def average_accuracy(rows: np.ndarray, choice: np.ndarray) -> float:
        picked = score[rows, choice]
        return float(np.mean([np.nanmean(picked[dataset[rows] == d]) for d in np.unique(dataset)]))

    train_rows, test_rows = np.where(train)[0], np.where(~train)[0]
    print(f"always gpt-4: train {average_accuracy(train_rows, np.full(len(train_rows), gpt4)):.3f}, "
          f"test {average_accuracy(test_rows, np.full(len(test_rows), gpt4)):.3f}")
    print("| k | in-sample (train) | held out (test) |\n|---:|---:|---:|")
    for k in [1, 3, 10, 30, 60, 120, 300]:
        km = KMeans(n_clusters=k, n_init=3, random_state=0).fit(x[train_rows])
        best = []
        for c in range(k):
            members = train_rows[km.labels_ == c]
            accuracy = np.nanmean(score[members], axis=0)
            mean_cost = cost[members].mean(axis=0)
            best.append(max(range(len(models)), key=lambda m: (accuracy[m], -mean_cost[m])))
        best = np.array(best)
        test_labels = km.predict(x[test_rows])
        print(f"| {k} | {average_accuracy(train_rows, best[km.labels_]):.3f} | "
              f"{average_accuracy(test_rows, best[test_labels]):.3f} |")


if __name__ == "__main__":
    main()
