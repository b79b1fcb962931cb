"""How much of an added model's gain can a profile borrowed from the trained models carry?

    cargo build --release && python3 -m pip install ./python
    python3 scripts/profile_ceiling.py routerbench --cache /tmp/rb-emb.npy
    python3 scripts/profile_ceiling.py mmlupro --cache /tmp/mmlu-emb.npy

`add-model` learns a new model's per-cluster accuracy from a few answers by borrowing the shape
of its profile from the trained models' profiles. This measures the most that borrowing can give,
with no answers and no noise: for each model `pool_changes.py` holds out (where removing it costs
at least MIN_GAIN of area), its own cells in the router trained with it on all its training
queries are replaced by their least-squares fit (clusters weighted by size, every k-means
solution on its own) on the trained models' cells: on their mean profile moved to the model's
true level ("level"; "level+0.03": that level off by +0.03), on an intercept, that mean profile
and its leading r principal directions ("rank r"), on an intercept and the one other model's
profile that fits best ("nearest"), or on an intercept and every other model's profile ("all").
Its costs stay the true ones. Reported: the share of the area gain over the router without the
model that each fit keeps, per model, mean over seeds. A fit with few terms is what a few answers
can pin down; a gain only the many-term fits keep is out of reach of a handful of answers.
Printed beside: how far from the model's training mean its level lands when estimated from 50
uniformly drawn training answers, paired with the trained models' mean score on the same queries
(standard deviation over 2,000 draws).

Routers use kroute's defaults (60 clusters, bag 3, prior strength 5) and `pool_changes.py`'s
split and judge. Needs the kroute Python package and numpy.
"""

import argparse
import json
import pathlib
import shutil
import statistics
import sys
import tempfile

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import kroute  # noqa: E402
import pool_changes  # noqa: E402
import routing_data  # noqa: E402

# A cell counted this often is routed on its mean as it stands: shrinkage moves it by ~1e-9.
SETTLED = 10**9


def effective_cells(router_json):
    """Per k-means solution: each model's accuracy and cost per cluster as routing sees them
    (shrunk toward the model's means over the first solution), and the clusters' sizes."""
    clusters, bag = router_json["clusters"], router_json["bag"]
    strength = router_json["routing"]["prior_strength"]
    k = len(clusters) // bag

    def columns(member, key):
        return np.array([[v or 0.0 for v in c[key]] for c in member], float)

    first = clusters[:k]
    count = columns(first, "count")
    totals = np.maximum(count.sum(0), 1)
    mean_accuracy = (count * columns(first, "accuracy")).sum(0) / totals
    mean_cost = (count * columns(first, "cost")).sum(0) / totals
    solutions = []
    for b in range(bag):
        member = clusters[b * k:(b + 1) * k]
        n = columns(member, "count")
        accuracy = (n * columns(member, "accuracy") + strength * mean_accuracy) / (n + strength)
        cost = (n * columns(member, "cost") + strength * mean_cost) / (n + strength)
        sizes = np.array([c["size"] for c in member], float)
        solutions.append((accuracy, cost, sizes))
    return solutions


def fitted_profile(accuracy, sizes, model, fit):
    """The model's column of `accuracy` fitted on the other columns as `fit` names it."""
    target = accuracy[:, model]
    others = np.delete(accuracy, model, axis=1)
    shape = others.mean(1)
    if fit.startswith("level"):
        offset = float(fit[len("level"):] or 0)
        return shape - np.average(shape, weights=sizes) + np.average(target, weights=sizes) + offset
    if fit == "nearest":
        # The one trained model whose profile, moved and stretched, comes closest.
        fits = [fitted_profile(np.column_stack([accuracy[:, model], others[:, o]]), sizes, 0, "all")
                for o in range(others.shape[1])]
        return min(fits, key=lambda f: np.average((f - target) ** 2, weights=sizes))
    if fit == "all":
        terms = others
    else:
        spread = others - shape[:, None]
        spread -= np.average(spread, axis=0, weights=sizes)
        weight = np.sqrt(sizes)[:, None]
        directions, _, _ = np.linalg.svd(spread * weight, full_matrices=False)
        terms = np.column_stack([shape, directions[:, :int(fit)] / weight])
    design = np.column_stack([np.ones(len(target)), terms])
    root = np.sqrt(sizes)
    coefficients, *_ = np.linalg.lstsq(design * root[:, None], target * root, rcond=None)
    return np.clip(design @ coefficients, 0.0, 1.0)


def paired_level_error(records, rows, models, model, answers=50, draws=2000):
    """The standard deviation of the model's level estimated from `answers` uniformly drawn rows:
    the trained models' mean score over all rows plus the model's mean difference from it on
    the drawn ones."""
    scores = np.array([[np.nan if records[i]["records"].get(m) is None else float(records[i]["records"][m])
                        for m in models] for i in rows])
    column = models.index(model)
    scores = scores[~np.isnan(scores[:, column])]
    own = scores[:, column]
    pool = np.nanmean(np.delete(scores, column, axis=1), axis=1)
    rng = np.random.default_rng(0)
    drawn = [rng.choice(len(own), answers, replace=False) for _ in range(draws)]
    estimates = np.array([pool.mean() + (own[d] - pool[d]).mean() for d in drawn])
    return float(np.std(estimates - own.mean()))


def with_profile(full_dir, out_dir, model, fit):
    """The router in `full_dir` with `model`'s cells replaced by their fit (None: kept as they
    are, shrinkage included), written to `out_dir` and loaded."""
    saved = json.loads((full_dir / "router.json").read_text())
    k = len(saved["clusters"]) // saved["bag"]
    for b, (accuracy, cost, sizes) in enumerate(effective_cells(saved)):
        profile = accuracy[:, model] if fit is None else fitted_profile(accuracy, sizes, model, fit)
        for c, cell in enumerate(saved["clusters"][b * k:(b + 1) * k]):
            cell["accuracy"][model] = float(profile[c])
            cell["cost"][model] = float(cost[c, model])
            cell["count"][model] = SETTLED
    out_dir.mkdir(exist_ok=True)
    shutil.copy(full_dir / "centroids.safetensors", out_dir / "centroids.safetensors")
    (out_dir / "router.json").write_text(json.dumps(saved))
    return kroute.Router.load(out_dir)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", choices=sorted(routing_data.DATA))
    parser.add_argument("--cache", help="keep the query embeddings in this .npy file")
    parser.add_argument("--seeds", default="0,100,200")
    parser.add_argument("--fits", default="level-0.03,level,level+0.03,1,3,5,10,20,nearest,all",
                        help="'level' (with an offset: 'level+0.03'), a rank r, 'nearest' or 'all', "
                             "comma-separated")
    parser.add_argument("--out", help="results (JSON)")
    args = parser.parse_args()
    fits = args.fits.split(",")
    records = routing_data.load(args.dataset)
    models = list(records[0]["records"])
    embeddings = routing_data.embeddings(records, args.cache)
    kept, level_error = {}, {}
    with tempfile.TemporaryDirectory() as work:
        work = pathlib.Path(work)
        for seed in map(int, args.seeds.split(",")):
            train, test = routing_data.split(records, seed)
            held_out, _ = pool_changes.held_out_models(records, train, models)
            judge = pool_changes.Judge(records, test, embeddings, models)
            train_records, train_embeddings = [records[i] for i in train], embeddings[train]
            full_dir = work / "full"
            full_router = pool_changes.fit(train_embeddings, train_records, seed)
            full_router.save(full_dir)
            full = judge(full_router)["area"]
            for model in held_out:
                without = judge(pool_changes.fit(train_embeddings, train_records, seed,
                                                 exclude_models=[model]))["area"]
                if full - without < pool_changes.MIN_GAIN:
                    continue
                column = models.index(model)
                # Settling the cells as they are must route as the trained router does.
                settled = judge(with_profile(full_dir, work / "fit", column, None))["area"]
                assert abs(settled - full) < 1e-4, (model, settled, full)
                row = {fit: (judge(with_profile(full_dir, work / "fit", column, fit))["area"] - without)
                       / (full - without) for fit in fits}
                for fit, share in row.items():
                    kept.setdefault(model, {}).setdefault(fit, []).append(share)
                level_error.setdefault(model, []).append(paired_level_error(records, train, models, model))
                print(f"seed {seed} {model}: gain {full - without:.4f}, kept "
                      + ", ".join(f"{fit} {100 * share:.0f} %" for fit, share in row.items()), flush=True)
    summary = {model: {fit: statistics.fmean(shares) for fit, shares in by_fit.items()}
               for model, by_fit in kept.items()}
    print("| held out | " + " | ".join(f"rank {f}" if f.isdigit() else f
                                      for f in fits) + " | level from 50 answers |")
    print("|---|" + "---:|" * len(fits) + "---:|")
    for model, by_fit in summary.items():
        print(f"| {model} | " + " | ".join(f"{100 * by_fit[f]:.0f} %" for f in fits)
              + f" | ±{statistics.fmean(level_error[model]):.3f} |")
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps({"dataset": args.dataset, "kept": kept, "summary": summary,
                                                      "paired_level_error": level_error}, indent=1))


if __name__ == "__main__":
    main()
