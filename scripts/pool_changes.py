"""How well does a router take in a model it was not trained with, and follow a price change?

    cargo build --release && python3 -m pip install ./python
    python3 scripts/pool_changes.py routerbench --out /tmp/pool-routerbench.json --cache /tmp/rb-emb.npy
    python3 scripts/pool_changes.py mmlupro --out /tmp/pool-mmlupro.json --cache /tmp/mmlu-emb.npy

For each of the 3 most accurate models and the 2 cheapest (by their training means) in turn,
and each seed: a router is trained without the model, and the model is added back with
`Router.add_model` from N of its evaluated training queries, chosen by `Router.suggest` or
uniformly at random (N = 0: on a declared prior, the model's mean accuracy and cost over the
training queries, as a published benchmark score would give). The evaluated records are the
training lines as `suggest --from` copies them, the router's models' scores and costs beside the
added model's (`--new-model-only`: its own alone; `--declared`: with the declared prior's
accuracy beside them, as `add-model --records --prior-accuracy` takes it, off by
`--declared-error` if given). Each router is judged on the
test split by `kroute eval`'s area under the accuracy–cost frontier (costs normalised by the
most accurate single model's, α from 0 to 1 by 0.05) and its best accuracy, against the router
trained with the model on all its training queries. Reported: the share of the full router's
area gain over the router without the model that the added model recovers.

With token counts (MMLU-Pro), the most accurate model's price is halved and doubled: the router
repriced with `Router.reprice` against a router trained on records whose costs were recomputed
at the new price, by their decisions, the model's selection share and the frontier area.

The split is the records' `split` field where they have one (RouterBench), else a seeded 70/30
shuffle of each dataset (MMLU-Pro), per seed. Routers use kroute's defaults (60 clusters,
bag 3, prior strength 5). Needs the kroute Python package and numpy; matplotlib for --plot.
"""

import argparse
import json
import pathlib
import random
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import kroute  # noqa: E402
import routing_data  # noqa: E402
from routing_data import DATA, cost_of, policy_point, split  # noqa: E402

SIZES = [0, 10, 25, 50, 100, 200]
ALPHAS = [round(a * 0.05, 2) for a in range(21)]
# Area gains below this are noise between seeds; the share recovered is not reported for them.
MIN_GAIN = 0.002


def means(records, rows, model):
    scores = [records[i]["records"].get(model) for i in rows]
    evaluated = [i for i, s in zip(rows, scores) if s is not None]
    accuracy = statistics.fmean(float(records[i]["records"][model]) for i in evaluated)
    cost = statistics.fmean(cost_of(records[i], model) for i in evaluated)
    return accuracy, cost


class Judge:
    """Frontier area and best accuracy of a router on the test rows."""

    def __init__(self, records, test, embeddings, models):
        self.records, self.test, self.embeddings = records, test, embeddings[test]
        singles = [policy_point(records, test, [m] * len(test)) for m in models]
        # The most accurate single model's cost (the cheaper among equals) normalises costs.
        self.reference = min(singles, key=lambda p: (-p[1], p[0]))[0]

    def chosen(self, router, alpha):
        return [d["model"] for d in router.route(self.embeddings, alpha=alpha, max_models=1)]

    def __call__(self, router):
        points = [policy_point(self.records, self.test, self.chosen(router, a)) for a in ALPHAS]
        return {
            "area": kroute.frontier_area(points, self.reference),
            "best_accuracy": max(p[1] for p in points),
        }


def probe(record, model, new_model_only):
    """The record as a probe file gives it back once `model` has answered: as `suggest --from`
    copied it, with the router's models' scores beside `model`'s, or with `model`'s alone."""
    if not new_model_only:
        return record
    usage = (record.get("usages") or {}).get(model)
    return {
        "query": record["query"],
        "dataset": record.get("dataset", "default"),
        "records": {model: record["records"].get(model)},
        "usages": {model: usage} if usage else {},
    }


def fit(embeddings, records, seed, **kwargs):
    return kroute.Router.fit(embeddings, records, use_all=True, seed=seed, missing_cost="zero", **kwargs)


def add_back(without_dir, model, rows, records, embeddings, prior, options):
    router = kroute.Router.load(without_dir)
    if not rows:
        router.add_model(model=model, prior_accuracy=prior[0], prior_cost=prior[1])
    else:
        evaluated = [probe(records[i], model, options.new_model_only) for i in rows]
        declared = None
        if options.declared:
            declared = min(1.0, max(0.0, prior[0] + options.declared_error))
        router.add_model(evaluated, embeddings=embeddings[rows], prior_accuracy=declared)
    return router


def held_out_models(records, train, models):
    stats = {m: means(records, train, m) for m in models}
    strongest = sorted(models, key=lambda m: -stats[m][0])[:3]
    cheapest = [m for m in sorted(models, key=lambda m: stats[m][1]) if m not in strongest][:2]
    return strongest + cheapest, stats


def suggested_rows(router, records, embeddings, n):
    """The rows of `records` that `router.suggest` picks, best first."""
    # Suggestions come back as records: find each one's row.
    position = {json.dumps(r, sort_keys=True): i for i, r in enumerate(records)}
    return [position[json.dumps(r, sort_keys=True)] for r in router.suggest(n, records, embeddings=embeddings)]


def uniform_rows(records, model, seed, n):
    """`n` rows of `records` that `model` answered, drawn uniformly with the seed."""
    evaluated = [i for i, r in enumerate(records) if r["records"].get(model) is not None]
    return random.Random(seed * 7919 + 1).sample(evaluated, n)


def add_model_runs(records, embeddings, models, seeds, work, options):
    runs = []
    for seed in seeds:
        train, test = split(records, seed)
        held_out, stats = held_out_models(records, train, models)
        judge = Judge(records, test, embeddings, models)
        train_records = [records[i] for i in train]
        train_embeddings = embeddings[train]
        for model in held_out:
            began = time.time()
            full = judge(fit(train_embeddings, train_records, seed))
            without_router = fit(train_embeddings, train_records, seed, exclude_models=[model])
            without = judge(without_router)
            without_dir = work / f"without-{seed}-{models.index(model)}"
            without_router.save(without_dir)
            suggested = suggested_rows(without_router, train_records, train_embeddings, max(SIZES))
            uniform = uniform_rows(train_records, model, seed, max(SIZES))
            for n in SIZES:
                for rule, order in (("suggest", suggested), ("random", uniform)):
                    if n == 0 and rule == "random":
                        continue
                    rows = [i for i in order if train_records[i]["records"].get(model) is not None][:n]
                    added = judge(add_back(without_dir, model, rows, train_records, train_embeddings, stats[model],
                                           options))
                    gain = full["area"] - without["area"]
                    runs.append(
                        {
                            "seed": seed,
                            "model": model,
                            "kind": "strong" if held_out.index(model) < 3 else "cheap",
                            "n": n,
                            "rule": "prior" if n == 0 else rule,
                            "area": added["area"],
                            "best_accuracy": added["best_accuracy"],
                            "full_area": full["area"],
                            "full_best_accuracy": full["best_accuracy"],
                            "without_area": without["area"],
                            "without_best_accuracy": without["best_accuracy"],
                            "gain_recovered": (added["area"] - without["area"]) / gain if gain > 1e-6 else None,
                        }
                    )
            print(f"seed {seed} {model}: full {full['area']:.4f}, without {without['area']:.4f} "
                  f"({time.time() - began:.0f} s)", flush=True)
    return runs


def price_of(records, rows, model):
    """The model's (input, output) dollars per million tokens, by least squares on its costs."""
    tokens, costs = [], []
    for i in rows:
        usage = (records[i].get("usages") or {}).get(model)
        if usage and records[i]["records"].get(model) is not None:
            tokens.append([usage["prompt_tokens_est"], usage["completion_tokens_est"]])
            costs.append(usage["cost"])
    solution, *_ = np.linalg.lstsq(np.array(tokens, float), np.array(costs) * 1e6, rcond=None)
    return float(solution[0]), float(solution[1])


def reprice_runs(records, embeddings, models, seed, work):
    train, test = split(records, seed)
    held_out, _ = held_out_models(records, train, models)
    model = held_out[0]
    judge = Judge(records, test, embeddings, models)
    train_records = [records[i] for i in train]
    train_embeddings = embeddings[train]
    base_dir = work / "reprice-base"
    base = fit(train_embeddings, train_records, seed)
    base.save(base_dir)
    price = price_of(records, train, model)
    runs = []
    for factor in (1.0, 0.5, 2.0):
        new_price = (price[0] * factor, price[1] * factor)
        repriced = kroute.Router.load(base_dir)
        repriced.reprice({model: new_price})
        changed = []
        for r in train_records:
            r = json.loads(json.dumps(r))
            usage = (r.get("usages") or {}).get(model)
            if usage:
                usage["cost"] = (usage["prompt_tokens_est"] * new_price[0]
                                 + usage["completion_tokens_est"] * new_price[1]) / 1e6
            changed.append(r)
        retrained = fit(train_embeddings, changed, seed)
        row = {"model": model, "factor": factor, "price": new_price}
        for name, router in (("repriced", repriced), ("retrained", retrained)):
            judged = judge(router)
            shares = [statistics.fmean(m == model for m in judge.chosen(router, a)) for a in ALPHAS]
            row[name] = {**judged, "share_by_alpha": dict(zip(map(str, ALPHAS), shares))}
        row["same_decisions"] = all(
            judge.chosen(repriced, a) == judge.chosen(retrained, a) for a in ALPHAS
        )
        row["area_difference"] = abs(row["repriced"]["area"] - row["retrained"]["area"])
        runs.append(row)
        print(f"{model} ×{factor}: area {row['repriced']['area']:.4f} vs retrained "
              f"{row['retrained']['area']:.4f}, same decisions {row['same_decisions']}", flush=True)
    return runs


def summarise(runs):
    """Per (model, n, rule): the mean over seeds of the area, best accuracy and gain recovered."""
    table = {}
    for run in runs:
        table.setdefault((run["model"], run["kind"], run["n"], run["rule"]), []).append(run)
    rows = []
    for (model, kind, n, rule), group in table.items():
        row = {"model": model, "kind": kind, "n": n, "rule": rule}
        for key in ("area", "best_accuracy", "full_area", "without_area"):
            row[key] = statistics.fmean(r[key] for r in group)
        gain = row["full_area"] - row["without_area"]
        # A model whose removal costs the router almost nothing has no gain to recover.
        row["gain_recovered"] = (row["area"] - row["without_area"]) / gain if gain >= MIN_GAIN else None
        rows.append(row)
    return rows


def print_table(rows, reprice):
    print("| model | kind | N | rule | area | best accuracy | gain recovered |")
    print("|---|---|---:|---|---:|---:|---:|")
    for r in rows:
        recovered = "–" if r["gain_recovered"] is None else f"{100 * r['gain_recovered']:.0f} %"
        print(f"| {r['model']} | {r['kind']} | {r['n']} | {r['rule']} | {r['area']:.4f} | "
              f"{r['best_accuracy']:.4f} | {recovered} |")
    for r in reprice:
        shares = r["repriced"]["share_by_alpha"]
        print(f"reprice {r['model']} ×{r['factor']}: area {r['repriced']['area']:.6f} "
              f"(retrained {r['retrained']['area']:.6f}), share at α 0.5 {shares['0.5']:.3f}, "
              f"same decisions {r['same_decisions']}")


def plot(rows, path, dataset):
    import matplotlib

    matplotlib.use("Agg")
    # The same numbers draw the same file: no date, fixed element ids.
    matplotlib.rcParams["svg.hashsalt"] = "kroute"
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, len(models), figsize=(3.2 * len(models), 3.2), sharey=True)
    for ax, model in zip(axes, models):
        mine = [r for r in rows if r["model"] == model]
        for rule, style in (("suggest", "o-"), ("random", "s--")):
            points = sorted((r["n"], r["area"]) for r in mine if r["rule"] in (rule, "prior"))
            ax.plot([p[0] for p in points], [p[1] for p in points], style, label=rule, markersize=4)
        ax.axhline(mine[0]["full_area"], color="green", lw=1, label="trained with it")
        ax.axhline(mine[0]["without_area"], color="red", lw=1, label="without it")
        ax.set_xscale("symlog", linthresh=10)
        ax.set_title(model[:28], fontsize=8)
        ax.set_xlabel("evaluated queries")
    axes[0].set_ylabel("frontier area (test)")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{dataset}: a model added back to a router trained without it", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, metadata={"Date": None})


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", choices=sorted(DATA))
    parser.add_argument("--out", required=True, help="results (JSON)")
    parser.add_argument("--cache", help="keep the query embeddings in this .npy file")
    # k-means restart r of seed s starts from seed s + r (10 restarts): seeds closer than
    # that share restarts and often give the same clustering.
    parser.add_argument("--seeds", default="0,100,200,300,400,500")
    parser.add_argument("--plot", help="write an SVG of area against evaluated queries here")
    parser.add_argument("--table", action="store_true",
                        help="print the table of an --out file again (and draw it with --plot)")
    parser.add_argument("--new-model-only", action="store_true",
                        help="probe records carry the added model's scores alone, not the router's "
                             "models' on the same queries too")
    parser.add_argument("--declared", action="store_true",
                        help="add models from their evaluated queries and the declared prior's accuracy "
                             "together (N = 0 stays the declared prior alone)")
    parser.add_argument("--declared-error", type=float, default=0.0,
                        help="with --declared: add this to the declared accuracy (how a published "
                             "score that misses the model's true mean shows)")
    args = parser.parse_args()
    if args.table:
        result = json.loads(pathlib.Path(args.out).read_text())
        rows = summarise(result["runs"])
        print_table(rows, result["reprice"])
        if args.plot:
            plot(rows, args.plot, result["dataset"])
        return
    records = routing_data.load(args.dataset)
    models = list(records[0]["records"])
    embeddings = routing_data.embeddings(records, args.cache)
    seeds = [int(s) for s in args.seeds.split(",")]
    has_tokens = "prompt_tokens_est" in next(iter(records[0]["usages"].values()))
    with tempfile.TemporaryDirectory() as work:
        work = pathlib.Path(work)
        runs = add_model_runs(records, embeddings, models, seeds, work, args)
        reprice = reprice_runs(records, embeddings, models, seeds[0], work) if has_tokens else []
    rows = summarise(runs)
    pathlib.Path(args.out).write_text(
        json.dumps({"dataset": args.dataset, "seeds": seeds, "new_model_only": args.new_model_only,
                    "declared": args.declared, "declared_error": args.declared_error,
                    "summary": rows, "runs": runs, "reprice": reprice}, indent=1)
    )
    print_table(rows, reprice)
    if args.plot:
        plot(rows, args.plot, args.dataset)


if __name__ == "__main__":
    main()
