"""Writes tests/fixtures/pyarrow/*.parquet: the same small table as pyarrow writes it with
different options (page versions, dictionaries, statistics, page index, checksums, bloom
filters, sorting columns, compression, many row groups), and many column types, so that
`cargo test` checks kroute's Parquet footer and page-header walk against another writer.

    python3 -m pip install pyarrow && python3 scripts/make_pyarrow_fixtures.py
"""

import datetime
import decimal
import pathlib

import pyarrow as pa
import pyarrow.parquet as pq

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "pyarrow"
ROWS = 40

VARIANTS = {
    "v1": {},
    "v2-pages": {"data_page_version": "2.0"},
    "zstd-row-groups": {"compression": "zstd", "row_group_size": 7},
    "no-dictionary": {"use_dictionary": False},
    "page-index-checksums": {
        "write_page_index": True,
        "write_page_checksum": True,
        "data_page_size": 64,
    },
    "sorted": {"sorting_columns": [pq.SortingColumn(1)]},
    "bloom-filter": {"bloom_filter_options": {"query": {"ndv": 40}}},
}


def table() -> pa.Table:
    start = datetime.datetime(2020, 1, 1)
    return pa.table(
        {
            "query": [f"question {i} \u00e9\U0001f600" for i in range(ROWS)],
            "id": list(range(ROWS)),
            "negative": [-15 - i for i in range(ROWS)],
            "timestamp": [start + datetime.timedelta(seconds=i) for i in range(ROWS)],
            "date": [start.date()] * ROWS,
            "decimal": [decimal.Decimal(i) / 100 for i in range(ROWS)],
            "float16": pa.array([1.5] * ROWS, pa.float16()),
            "flag": [i % 2 == 0 for i in range(ROWS)],
            "list": [[i, i + 1] for i in range(ROWS)],
            "map": pa.array([[("k", i)] for i in range(ROWS)], pa.map_(pa.string(), pa.int64())),
            "fixed": pa.array([b"0123456789abcdef"] * ROWS, pa.binary(16)),
            "missing": pa.array([None] * ROWS, pa.string()),
        }
    )


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, options in VARIANTS.items():
        pq.write_table(table(), OUT / f"{name}.parquet", **options)
        print(OUT / f"{name}.parquet")


if __name__ == "__main__":
    main()
