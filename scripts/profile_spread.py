"""How widely does a held-out model's accuracy profile lie around the others'?

    python3 scripts/profile_spread.py routerbench --cache /tmp/rb-emb.npy
    python3 scripts/profile_spread.py mmlupro --cache /tmp/mmlu-emb.npy

Trains a router with kroute's defaults on the training split (seed 0), then holds each model
out in turn: the prior `add-model` builds from the others (their mean profile over each k-means
solution's clusters, their scatter times s, a level as uncertain as `prior_strength` answers,
and a cell scatter p(1−p)/D) is scored by the Gaussian log-likelihood of the held-out model's
own shrunk profile. Printed: the s that fits best, over all models and per model, for each D.
Needs the kroute Python package and numpy.
"""

import argparse
import json
import pathlib
import sys
import tempfile

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import kroute  # noqa: E402
import profile_ceiling  # noqa: E402
import routing_data  # noqa: E402
from routing_data import split  # noqa: E402

SCALES = [0.25, 0.5, 1, 1.5, 2, 3, 4, 6, 8]


def log_likelihood(deviation, directions, level, scatter, scale):
    covariance = scale * directions @ directions.T + level + np.diag(scatter)
    _, log_det = np.linalg.slogdet(covariance)
    return -0.5 * (deviation @ np.linalg.solve(covariance, deviation) + log_det)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", choices=sorted(routing_data.DATA))
    parser.add_argument("--cache", help="keep the query embeddings in this .npy file")
    parser.add_argument("--cell-scatter", default="5,50,500", help="values of D, comma-separated")
    args = parser.parse_args()
    records = routing_data.load(args.dataset)
    embeddings = routing_data.embeddings(records, args.cache)
    train, _ = split(records, 0)
    router = kroute.Router.fit(embeddings[train], [records[i] for i in train], use_all=True, seed=0,
                               missing_cost="zero")
    with tempfile.TemporaryDirectory() as work:
        router.save(pathlib.Path(work) / "router")
        saved = json.loads((pathlib.Path(work) / "router" / "router.json").read_text())
    names = saved["models"]
    strength = saved["routing"]["prior_strength"]
    for d in map(float, args.cell_scatter.split(",")):
        per_model = np.zeros((len(names), len(SCALES)))
        for estimates, _, _ in profile_ceiling.effective_cells(saved):
            for h in range(len(names)):
                others = np.delete(estimates, h, axis=1)
                mu = others.mean(1)
                directions = (others - mu[:, None]) / np.sqrt(len(names) - 2)
                pool = np.clip(mu.mean(), 0.05, 0.95)
                cell = np.clip(mu, 0.05, 0.95)
                per_model[h] += [log_likelihood(estimates[:, h] - mu, directions,
                                                pool * (1 - pool) / strength, cell * (1 - cell) / d, s)
                                 for s in SCALES]
        best = SCALES[int(np.argmax(per_model.sum(0)))]
        print(f"cell scatter p(1-p)/{d:g}: best s over all models {best}")
        for h, name in enumerate(names):
            print(f"  {name}: {SCALES[int(np.argmax(per_model[h]))]}")


if __name__ == "__main__":
    main()
