"""Does a tenant's budget hold? A replayed period of routing traffic at three budgets.

    cargo build --release && python3 -m pip install ./python
    python3 scripts/budget_replay.py routerbench --cache /tmp/rb-emb.npy --out /tmp/budget-rb.json
    python3 scripts/budget_replay.py mmlupro --cache /tmp/mmlu-emb.npy --out /tmp/budget-mmlu.json

A router is trained on the training split (kroute's defaults; one per seed) and the test
queries, shuffled, arrive through one budget period, evenly or front-loaded (half of them in
the first quarter of the period). The tenant's own α is --alpha. Each query is routed at the
α that `kroute serve`'s pacer gives for the spend so far (`kroute.pace`, the server's code:
the tenant's α while the budget left keeps up with the time left, falling to 0 as it runs
ahead; the cheapest model once the budget is spent) and charged its model's recorded cost.
Budgets lie between what the period costs at α = 0 and at the tenant's α: at 25, 50 and 75 %
of the way.

Reported per budget: the spend as a share of the budget (the goal: within ±5 %), the accuracy
the pacer kept, and the accuracy of the best fixed α that does not spend more (the most
accurate α on a 0.01 grid from 0 to the tenant's, among those spending at most what the pacer
spent); and a hard cap without pacing (the tenant's α until the budget is spent, then the
cheapest model): its spend, accuracy and where in the period it was cut off. Accuracy is the
mean over datasets of the mean score, as `kroute eval` reports it. Routing α is taken on the
same 0.01 grid (decisions are precomputed per grid α).
"""

import argparse
import json
import pathlib
import random
import statistics
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import kroute  # noqa: E402
import routing_data  # noqa: E402

GRID = [round(a * 0.01, 2) for a in range(101)]
SHARES = [0.25, 0.5, 0.75]


def accuracy(records, rows, chosen):
    """Mean over datasets of the mean score of the chosen models (null scores left out)."""
    by_dataset = {}
    for i, model in zip(rows, chosen):
        score = records[i]["records"].get(model)
        if score is not None:
            by_dataset.setdefault(records[i].get("dataset", "default"), []).append(float(score))
    return statistics.fmean(statistics.fmean(s) for s in by_dataset.values())


def arrivals(n, shape):
    """The share of the period gone when each of n queries arrives."""
    even = [i / n for i in range(n)]
    if shape == "even":
        return even
    # Front-loaded: half the queries in the first quarter of the period.
    return [t * t for t in even]


def replay(records, rows, choices, costs, budget, alpha, times, pacing):
    """Routes the rows in order at the paced α (or the tenant's, without pacing, until the
    budget is spent); returns (spent, chosen models, share of the period at exhaustion)."""
    spent, chosen, exhausted_at = 0.0, [], None
    own = round(alpha * 100)
    for k, (i, t) in enumerate(zip(rows, times)):
        paced, exhausted = kroute.pace(budget, alpha, spent, t)
        if exhausted and exhausted_at is None:
            exhausted_at = t
        step = 0 if exhausted else (int(paced * 100 + 1e-9) if pacing else own)
        model = choices[step][k]
        chosen.append(model)
        spent += costs[(i, model)]
    return spent, chosen, exhausted_at


def run(records, embeddings, seed, alpha, shape):
    train, test = routing_data.split(records, seed)
    router = kroute.Router.fit(
        embeddings[train], [records[i] for i in train], use_all=True, seed=seed, missing_cost="zero"
    )
    rows = test[:]
    random.Random(seed).shuffle(rows)
    queries = embeddings[rows]
    choices = [[d["model"] for d in router.route(queries, alpha=a, max_models=1)] for a in GRID]
    costs = {(i, m): routing_data.cost_of(records[i], m) for k, i in enumerate(rows) for m in {c[k] for c in choices}}
    fixed = [
        (a, sum(costs[(i, m)] for i, m in zip(rows, choices[step])), accuracy(records, rows, choices[step]))
        for step, a in enumerate(GRID)
        if a <= alpha + 1e-9
    ]
    floor, ceiling = fixed[0][1], fixed[-1][1]
    times = arrivals(len(rows), shape)
    results = []
    for share in SHARES:
        budget = floor + share * (ceiling - floor)
        spent, chosen, _ = replay(records, rows, choices, costs, budget, alpha, times, pacing=True)
        paced_accuracy = accuracy(records, rows, chosen)
        affordable = [f for f in fixed if f[1] <= spent]
        best_fixed = max(affordable, key=lambda f: f[2]) if affordable else fixed[0]
        capped, capped_chosen, cut_at = replay(records, rows, choices, costs, budget, alpha, times, pacing=False)
        results.append(
            {
                "seed": seed,
                "shape": shape,
                "budget_share": share,
                "budget": budget,
                "spent": spent,
                "spent_over_budget": spent / budget,
                "paced_accuracy": paced_accuracy,
                "fixed_alpha": best_fixed[0],
                "fixed_spent": best_fixed[1],
                "fixed_accuracy": best_fixed[2],
                "hard_cap_spent": capped,
                "hard_cap_accuracy": accuracy(records, rows, capped_chosen),
                "hard_cap_cut_at": cut_at,
                "cost_at_alpha_0": floor,
                "cost_at_own_alpha": ceiling,
                "own_alpha_accuracy": fixed[-1][2],
            }
        )
        print(
            f"seed {seed} {shape:12} budget {share:.2f}: spent {spent / budget:6.1%} of ${budget:.3f}, "
            f"accuracy {paced_accuracy:.4f} vs fixed α={best_fixed[0]:.2f} {best_fixed[2]:.4f} "
            f"(${best_fixed[1]:.3f}); hard cap {accuracy(records, rows, capped_chosen):.4f}, "
            f"cut at {'-' if cut_at is None else f'{cut_at:.0%}'}",
            flush=True,
        )
    return results


def summarise(runs):
    table = {}
    for r in runs:
        table.setdefault((r["shape"], r["budget_share"]), []).append(r)
    rows = []
    for (shape, share), group in table.items():
        mean = lambda key: statistics.fmean(r[key] for r in group if r[key] is not None)  # noqa: E731
        cuts = [r["hard_cap_cut_at"] for r in group if r["hard_cap_cut_at"] is not None]
        rows.append(
            {
                "shape": shape,
                "budget_share": share,
                "spent_over_budget": mean("spent_over_budget"),
                "worst_spent_over_budget": max((r["spent_over_budget"] for r in group), key=lambda v: abs(v - 1)),
                "paced_accuracy": mean("paced_accuracy"),
                "fixed_accuracy": mean("fixed_accuracy"),
                "fixed_spent_over_budget": statistics.fmean(r["fixed_spent"] / r["budget"] for r in group),
                "hard_cap_accuracy": mean("hard_cap_accuracy"),
                "hard_cap_cut_at": statistics.fmean(cuts) if cuts else None,
                "own_alpha_accuracy": mean("own_alpha_accuracy"),
            }
        )
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", choices=sorted(routing_data.DATA))
    parser.add_argument("--alpha", type=float, default=0.9, help="the tenant's own α [0.9]")
    parser.add_argument("--seeds", default="42,142,242")
    parser.add_argument("--shapes", default="even,front-loaded")
    parser.add_argument("--cache", help="keep the query embeddings in this .npy file")
    parser.add_argument("--out", help="write every number here (JSON)")
    args = parser.parse_args()

    records = routing_data.load(args.dataset)
    embeddings = routing_data.embeddings(records, args.cache)
    runs = []
    for shape in args.shapes.split(","):
        for seed in map(int, args.seeds.split(",")):
            runs += run(records, embeddings, seed, args.alpha, shape)
    summary = summarise(runs)
    print(f"\n{args.dataset}, tenant α {args.alpha}, mean over seeds {args.seeds}")
    print("| traffic | budget | spent / budget (worst seed) | paced accuracy | fixed α, same spend | hard cap | cut off at |")
    print("|---|---|---|---|---|---|---|")
    for r in summary:
        cut = "-" if r["hard_cap_cut_at"] is None else f"{r['hard_cap_cut_at']:.0%} of the period"
        print(
            f"| {r['shape']} | {r['budget_share']:.0%} | {r['spent_over_budget']:.1%} "
            f"({r['worst_spent_over_budget']:.1%}) | {r['paced_accuracy']:.4f} | {r['fixed_accuracy']:.4f} "
            f"| {r['hard_cap_accuracy']:.4f} | {cut} |"
        )
    if args.out:
        pathlib.Path(args.out).write_text(
            json.dumps({"dataset": args.dataset, "alpha": args.alpha, "runs": runs, "summary": summary}, indent=1)
        )


if __name__ == "__main__":
    main()
