"""The routing data sets the measurement scripts replay, their splits, costs and embeddings.

Imported by scripts/pool_changes.py, scripts/drift_replay.py and scripts/budget_replay.py (run
them from the repository root or anywhere: they put this directory on the path themselves).
"""

import gzip
import json
import pathlib
import random
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA = {
    "routerbench": ROOT / "data/routerbench-3k.jsonl.gz",
    "mmlupro": ROOT.parent / "shared/data/mmlupro-29models.jsonl.gz",
}


def load(name):
    """The records of a data set named in DATA, or of a records file."""
    with gzip.open(DATA.get(name, name), "rt") as f:
        return [json.loads(line) for line in f]


def split(records, seed):
    """(train rows, test rows): the `split` field, else a seeded 70/30 shuffle per dataset
    (as `kroute train --train-ratio 0.7` splits)."""
    if "split" in records[0]:
        train = [i for i, r in enumerate(records) if r["split"] == "train"]
        return train, [i for i, r in enumerate(records) if r["split"] != "train"]
    rng = random.Random(seed)
    by_dataset = {}
    for i, r in enumerate(records):
        by_dataset.setdefault(r.get("dataset", "default"), []).append(i)
    train, test = [], []
    for rows in by_dataset.values():
        rows = rows[:]
        rng.shuffle(rows)
        cut = round(0.7 * len(rows))
        train += rows[:cut]
        test += rows[cut:]
    return sorted(train), sorted(test)


def cost_of(record, model):
    """What `model`'s answer to the record cost (0 when the record does not say)."""
    usage = (record.get("usages") or {}).get(model) or {}
    return usage.get("cost") or 0.0


def embeddings(records, cache=None):
    """The records' query embeddings with kroute's default model, kept in `cache` (.npy)."""
    import kroute

    if cache and pathlib.Path(cache).exists():
        vectors = np.load(cache)
    else:
        started = time.time()
        vectors = kroute.Embedder().embed([r["query"] for r in records])
        print(f"embedded {len(records)} queries in {time.time() - started:.0f} s", flush=True)
        if cache:
            np.save(cache, vectors)
    assert vectors.shape[0] == len(records), f"{cache} holds the embeddings of another data set"
    return vectors


def policy_point(records, rows, chosen):
    """`kroute eval`'s measures of choosing `chosen[k]` for row `rows[k]`: (dollars spent,
    accuracy as the mean over datasets of the chosen models' mean score, null scores left out)."""
    by_dataset, spent = {}, 0.0
    for i, model in zip(rows, chosen):
        record = records[i]
        spent += cost_of(record, model)
        score = record["records"].get(model)
        if score is not None:
            by_dataset.setdefault(record.get("dataset", "default"), []).append(float(score))
    accuracy = sum(sum(s) / len(s) for s in by_dataset.values()) / len(by_dataset)
    return spent, accuracy
