"""Writes tests/fixtures/mmlupro-sample.jsonl.gz: 400 MMLU-Pro records (every 30th of the
shared data set) with six of its 29 models, keeping their token counts, for the tests of
token-based repricing and model-pool changes.

    python3 scripts/make_mmlupro_fixture.py ../shared/data/mmlupro-29models.jsonl.gz
"""

import gzip
import json
import pathlib
import sys

MODELS = [
    "gemini-1.5-pro-002",
    "Meta-Llama-3_1-70B-Instruct",
    "gemini-1.5-flash-002",
    "Meta-Llama-3_1-8B-Instruct",
    "Mistral-7B-Instruct-v0.2",
    "Phi-3-mini-4k-instruct",
]

source = pathlib.Path(sys.argv[1])
out = pathlib.Path(__file__).resolve().parent.parent / "tests/fixtures/mmlupro-sample.jsonl.gz"
with gzip.open(source, "rt") as f:
    records = [json.loads(line) for i, line in enumerate(f) if i % 30 == 0][:400]
missing = [m for m in MODELS if m not in records[0]["records"]]
if missing:
    sys.exit(f"models not in {source}: {missing} (it has {sorted(records[0]['records'])})")
with gzip.GzipFile(out, "wb", mtime=0) as f:
    for r in records:
        line = {
            "query": r["query"],
            "records": {m: r["records"].get(m) for m in MODELS},
            "usages": {m: r["usages"][m] for m in MODELS if m in r["usages"]},
            "dataset": r["dataset"],
            "index": r["index"],
            "gold": r["gold"],
        }
        f.write((json.dumps(line) + "\n").encode())
print(f"wrote {len(records)} records to {out}")
