"""Qwen3 embedding on CPU: kroute vs sentence-transformers on the same random weights of a real
Qwen3-Embedding shape, same texts, same machine, one run.

The real weights are not reachable offline, so this builds a random-weight checkpoint with the
shape of benches/configs/<shape>.json (default: Qwen3-Embedding-0.6B) in the
sentence-transformers layout (the tiny test checkpoint's tokenizer, last-token pooling,
normalisation), then times `kroute embed` and `SentenceTransformer.encode` on the first --limit
RouterBench queries, checks that both give the same vectors, and adds `kroute bench
--random-weights` for the encoder alone at fixed lengths.

    python3 -m venv /tmp/bench-venv && /tmp/bench-venv/bin/pip install torch sentence-transformers
    cargo build --release
    /tmp/bench-venv/bin/python benches/compare_qwen3.py [--shape qwen3-embedding-0.6b] [--limit 100]
"""

import argparse
import gzip
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
KROUTE = ROOT / "target" / "release" / "kroute"
TINY = ROOT / "tests" / "fixtures" / "tiny" / "qwen3"
MAX_SEQ_LENGTH = 512


def build_checkpoint(shape: str, target: pathlib.Path) -> dict:
    """Random weights (transformers' own initialisation, seed 0) of the shape, f32."""
    import torch
    import transformers

    config = json.loads((ROOT / "benches" / "configs" / f"{shape}.json").read_text())
    torch.manual_seed(0)
    model = transformers.Qwen3Model(transformers.Qwen3Config(**config)).eval()
    model.save_pretrained(target)
    for name in ["tokenizer.json", "modules.json", "config_sentence_transformers.json"]:
        shutil.copy(TINY / name, target / name)
    shutil.copytree(TINY / "1_Pooling", target / "1_Pooling")
    shutil.copytree(TINY / "2_Normalize", target / "2_Normalize")
    tokenizer_config = json.loads((TINY / "tokenizer_config.json").read_text())
    tokenizer_config["model_max_length"] = MAX_SEQ_LENGTH
    (target / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return config


def flops_per_token(config: dict, seq: float) -> float:
    """What `kroute bench` counts: dense layers plus QKᵀ and AV over every key."""
    h, d = config["hidden_size"], config["head_dim"]
    q, kv = config["num_attention_heads"] * d, config["num_key_value_heads"] * d
    dense = h * (q + 2 * kv) + q * h + 3 * h * config["intermediate_size"]
    return 2 * config["num_hidden_layers"] * (dense + 2 * seq * q)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="qwen3-embedding-0.6b")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2, help="best of N runs for each engine")
    parser.add_argument("--json", type=pathlib.Path, help="write the numbers here")
    args = parser.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    corpus = ROOT / "data" / "routerbench-3k.jsonl.gz"
    with gzip.open(corpus, "rt") as f:
        texts = [json.loads(line)["query"] for line in f][: args.limit]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        model_dir = tmp / "model"
        config = build_checkpoint(args.shape, model_dir)
        inputs = tmp / "texts.jsonl"
        inputs.write_text("".join(json.dumps({"query": t}) + "\n" for t in texts))

        kroute = None
        for _ in range(args.repeats):
            summary = tmp / "summary.json"
            subprocess.run([str(KROUTE), "embed", str(inputs), "--model", str(model_dir), "-o",
                            str(tmp / "out.npy"), "--summary", str(summary), "--quiet"],
                           check=True)
            s = json.loads(summary.read_text())
            if kroute is None or s["seconds"] < kroute["seconds"]:
                kroute = s
        ours = np.load(tmp / "out.npy")
        print(f"kroute: {len(texts) / kroute['seconds']:.2f} sentences/s", file=sys.stderr)

        st = SentenceTransformer(str(model_dir), device="cpu")
        assert st.max_seq_length == MAX_SEQ_LENGTH, st.max_seq_length
        st.encode(texts[:8], batch_size=8)
        st_seconds, reference = float("inf"), None
        for _ in range(args.repeats):
            start = time.perf_counter()
            reference = st.encode(texts, batch_size=32, normalize_embeddings=True)
            st_seconds = min(st_seconds, time.perf_counter() - start)
        print(f"sentence-transformers: {len(texts) / st_seconds:.2f} sentences/s", file=sys.stderr)

        bench = json.loads(subprocess.run(
            [str(KROUTE), "bench", "--random-weights", str(model_dir / "config.json"),
             "--seq-lens", "32,128", "--batch-tokens", "2048", "--kmeans-points", "1000",
             "--kmeans-clusters", "8", "--route-queries", "1000", "--json"],
            check=True, capture_output=True, text=True).stdout)

    tokens = kroute["tokens"]
    mean_len = tokens / len(texts)
    cos = np.sum(ours * reference, axis=1)
    rows = {}
    print(f"shape: {args.shape} ({config['num_hidden_layers']} layers, "
          f"hidden {config['hidden_size']}), random weights, f32; {len(texts)} RouterBench "
          f"queries, {tokens} tokens ({mean_len:.1f} per query, max {MAX_SEQ_LENGTH}), "
          f"{os.cpu_count()} cores, torch {torch.get_num_threads()} threads\n")
    print("| engine | seconds | sentences/s | tokens/s | TFLOP/s | vs sentence-transformers |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, seconds in [("kroute", kroute["seconds"]), ("sentence-transformers", st_seconds)]:
        tflops = tokens * flops_per_token(config, mean_len) / seconds / 1e12
        rows[name] = {"seconds": seconds, "sentences_per_s": len(texts) / seconds,
                      "tokens_per_s": tokens / seconds, "tflops": tflops,
                      "speedup_vs_st": st_seconds / seconds}
        print(f"| {name} | {seconds:.2f} | {len(texts) / seconds:.2f} | {tokens / seconds:.0f} "
              f"| {tflops:.3f} | {st_seconds / seconds:.2f}x |")
    print(f"\nmin cosine kroute vs sentence-transformers: {cos.min():.6f}")
    print("\nkroute bench --random-weights (encoder only, 2048-token batches):\n")
    print("| tokens per sequence | rows | sentences/s | tokens/s | TFLOP/s |")
    print("|---:|---:|---:|---:|---:|")
    for case in bench["encoder"]:
        print(f"| {case['seq_len']} | {case['rows']} | {case['sentences_per_s']:.2f} "
              f"| {case['tokens_per_s']:.0f} | {case['tflops']:.3f} |")
    if args.json:
        args.json.write_text(json.dumps({"shape": args.shape, "texts": len(texts), "tokens": tokens,
                                         "min_cosine": float(cos.min()), "results": rows,
                                         "bench": bench["encoder"]}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
