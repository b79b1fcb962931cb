"""k-means on CPU: kroute vs scikit-learn vs faiss-cpu, same data, same machine, one run.

    python3 -m venv /tmp/bench-venv && /tmp/bench-venv/bin/pip install numpy scikit-learn faiss-cpu
    cargo bench --bench routing --no-run
    /tmp/bench-venv/bin/python benches/compare_kmeans.py [--json out.json]

Data: unit-norm points (what kroute clusters: L2-normalised embeddings) drawn around 100 random
directions on the 384-d sphere, seeded. Cases: N=20k, k=64 with n_init 1 and 10;
N=200k, k=256 with n_init 1. Every method's inertia is recomputed here, in float64, from the
centroids it returns, on the full data. Each library runs with its defaults except for k, n_init
and the seed: scikit-learn `KMeans` (greedy k-means++, Lloyd, max_iter 300, tol 1e-4), faiss
`Kmeans` (niter 25, at most 256 training points per centroid, `nredo` = n_init).
"""

import argparse
import json
import os
import pathlib
import subprocess
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
CASES = [(20_000, 64, 1), (20_000, 64, 10), (200_000, 256, 1)]
DIM = 384


def make_data(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    directions = rng.standard_normal((100, DIM))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    x = directions[rng.integers(0, 100, n)] + 0.06 * rng.standard_normal((n, DIM))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def inertia(x: np.ndarray, centroids: np.ndarray) -> float:
    total = 0.0
    c = centroids.astype(np.float64)
    c_sq = (c * c).sum(1)
    for start in range(0, len(x), 20_000):
        t = x[start:start + 20_000].astype(np.float64)
        d = (t * t).sum(1)[:, None] - 2 * t @ c.T + c_sq[None, :]
        total += np.maximum(d.min(1), 0).sum()
    return float(total)


def bench_binary() -> str:
    """The `routing` bench harness, built if needed; cargo says where it is."""
    out = subprocess.run(["cargo", "bench", "--bench", "routing", "--no-run", "--message-format=json"],
                         cwd=ROOT, check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        message = json.loads(line)
        if message.get("target", {}).get("name") == "routing" and message.get("executable"):
            return message["executable"]
    raise RuntimeError("cargo did not build the routing bench")


def bench_kroute(path: pathlib.Path, k: int, n_init: int, tmp: pathlib.Path) -> dict:
    out = tmp / "centroids.npy"
    line = subprocess.run([bench_binary(), "kmeans", str(path), str(k), str(n_init), str(out)],
                          check=True, capture_output=True, text=True).stdout
    result = json.loads(line)
    return {"seconds": result["seconds"], "centroids": np.load(out), "iterations": result["iterations"]}


def bench_sklearn(x: np.ndarray, k: int, n_init: int) -> dict:
    from sklearn.cluster import KMeans

    start = time.perf_counter()
    km = KMeans(n_clusters=k, n_init=n_init, random_state=42).fit(x)
    return {"seconds": time.perf_counter() - start, "centroids": km.cluster_centers_,
            "iterations": int(km.n_iter_)}


def bench_faiss(x: np.ndarray, k: int, n_init: int) -> dict:
    import faiss

    start = time.perf_counter()
    km = faiss.Kmeans(DIM, k, nredo=n_init, seed=42)
    km.train(x)
    return {"seconds": time.perf_counter() - start, "centroids": km.centroids, "iterations": 25}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", type=pathlib.Path)
    args = parser.parse_args()
    import faiss
    import sklearn

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        for n, k, n_init in CASES:
            x = make_data(n)
            path = tmp / f"x_{n}.npy"
            np.save(path, x)
            for name, run in [("kroute", lambda: bench_kroute(path, k, n_init, tmp)),
                              ("scikit-learn", lambda: bench_sklearn(x, k, n_init)),
                              ("faiss-cpu", lambda: bench_faiss(x, k, n_init))]:
                result = run()
                rows.append({"n": n, "k": k, "n_init": n_init, "method": name,
                             "seconds": round(result["seconds"], 3),
                             "inertia": round(inertia(x, result["centroids"]), 3),
                             "iterations": result["iterations"]})
                print(json.dumps(rows[-1]), flush=True)
    print(f"\ncpus: {os.cpu_count()}, scikit-learn {sklearn.__version__}, faiss {faiss.__version__}\n")
    print("| N | k | n_init | method | seconds | inertia | vs kroute time |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        ours = next(r for r in rows if r["method"] == "kroute" and (r["n"], r["k"], r["n_init"]) == (row["n"], row["k"], row["n_init"]))
        print(f"| {row['n']:,} | {row['k']} | {row['n_init']} | {row['method']} | {row['seconds']:.2f} | "
              f"{row['inertia']:.1f} | {row['seconds'] / ours['seconds']:.2f}× |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
