"""Shared fixtures: the CLI binary (the Rust library's reference), a RouterBench subset."""

import gzip
import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def kroute_bin() -> Path:
    """The `kroute` binary built from the same checkout (`cargo build --release`)."""
    path = Path(os.environ.get("KROUTE_BIN", REPO / "target" / "release" / "kroute"))
    if not path.exists():
        pytest.fail(f"{path} not found: run `cargo build --release` first (or set KROUTE_BIN)")
    return path


@pytest.fixture(scope="session")
def cli(kroute_bin):
    """Runs the CLI; returns stdout, or the CompletedProcess with `check=False`."""

    def run(*args, check=True):
        done = subprocess.run([str(kroute_bin), *map(str, args)], capture_output=True, text=True)
        if check and done.returncode != 0:
            raise AssertionError(f"kroute {' '.join(map(str, args))} failed:\n{done.stderr}")
        return done.stdout if check else done

    return run


@pytest.fixture(scope="session")
def records(tmp_path_factory) -> Path:
    """Every 6th record of the bundled RouterBench data (~530 queries, both splits, all
    datasets): real data, small enough to embed in seconds."""
    lines = gzip.open(REPO / "data" / "routerbench-3k.jsonl.gz", "rt").read().splitlines()
    path = tmp_path_factory.mktemp("data") / "subset.jsonl"
    path.write_text("\n".join(lines[::6]) + "\n")
    return path


@pytest.fixture(scope="session")
def queries(records) -> list:
    return [json.loads(line)["query"] for line in records.read_text().splitlines()]
