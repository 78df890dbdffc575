"""Regenerate the corpus of malformed bar files in tests/data/malformed/.

Each file takes the same 48 clean hourly bars and breaks them in exactly one way; EXPECTED maps
file name -> the validation finding code it must produce (or "unreadable" for files that cannot
be read at all, exit code 2). Run: python tests/data/make_malformed.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).parent / "malformed"
HEADER = "timestamp,open,high,low,close,volume"

EXPECTED = {
    "unsorted.csv": "unsorted",
    "duplicate_identical.csv": "duplicate_rows",
    "duplicate_conflicting.csv": "conflicting_duplicates",
    "ohlc_violation.csv": "ohlc_envelope",
    "nonpositive_price.csv": "bad_prices",
    "nan_price.csv": "bad_prices",
    "inf_price.csv": "bad_prices",
    "negative_volume.csv": "bad_volume",
    "mixed_timezones.csv": "mixed_timezones",
    "non_numeric.csv": "non_numeric",
    "unparseable_timestamp.csv": "unparseable_timestamps",
    "gaps.csv": "gaps",
    "price_jump.csv": "price_jumps",
    "price_spike.csv": "price_spikes",
    "naive_timestamps.csv": "naive_timestamps",
    "no_timestamp_column.csv": "unreadable",
    "missing_close_column.csv": "unreadable",
    "empty.csv": "unreadable",
    "header_only.csv": "unreadable",
    "ragged.csv": "unreadable",
    "not_a_table.csv": "unreadable",
    "headerless_7_columns.csv": "unreadable",
}


def clean_rows(n: int = 48) -> list[list[str]]:
    rng = np.random.default_rng(42)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.003, n)))
    open_ = np.concatenate(([100.0], close[:-1]))
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.002, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.002, n))
    vol = rng.integers(100, 1000, n)
    rows = []
    for i in range(n):
        ts = f"2024-01-{1 + i // 24:02d}T{i % 24:02d}:00:00Z"
        rows.append(
            [
                ts,
                f"{open_[i]:.4f}",
                f"{high[i]:.4f}",
                f"{low[i]:.4f}",
                f"{close[i]:.4f}",
                str(vol[i]),
            ]
        )
    return rows


def write(name: str, rows: list[list[str]], header: str | None = HEADER) -> None:
    lines = ([header] if header else []) + [",".join(r) for r in rows]
    (HERE / name).write_text("\n".join(lines) + "\n")


def main() -> None:
    HERE.mkdir(parents=True, exist_ok=True)
    base = clean_rows()
    write("clean.csv", base)

    r = [row[:] for row in base]
    r[10], r[11] = r[11], r[10]
    write("unsorted.csv", r)

    write("duplicate_identical.csv", [*base[:20], base[19][:], *base[20:]])

    r = [row[:] for row in base]
    dup = r[19][:]
    dup[4] = f"{float(dup[4]) * 1.001:.4f}"
    dup[2] = f"{max(float(dup[2]), float(dup[4])):.4f}"
    write("duplicate_conflicting.csv", [*r[:20], dup, *r[20:]])

    r = [row[:] for row in base]
    r[5][2] = f"{float(r[5][3]) * 0.999:.4f}"  # high below low
    write("ohlc_violation.csv", r)

    r = [row[:] for row in base]
    r[7][4] = "0"
    r[8][3] = "-1.5"
    write("nonpositive_price.csv", r)

    r = [row[:] for row in base]
    r[12][4] = ""  # an isolated missing close: repair forward-fills it
    write("nan_price.csv", r)

    r = [row[:] for row in base]
    r[30][1] = "inf"
    write("inf_price.csv", r)

    r = [row[:] for row in base]
    r[3][5] = "-50"
    write("negative_volume.csv", r)

    r = [row[:] for row in base]
    for i in (20, 21, 22):
        r[i][0] = r[i][0].replace("Z", "")  # naive among zoned
    write("mixed_timezones.csv", r)

    r = [row[:] for row in base]
    r[15][4] = "n/a?"
    r[16][5] = "lots"
    write("non_numeric.csv", r)

    r = [row[:] for row in base]
    r[9][0] = "yesterday"
    write("unparseable_timestamp.csv", r)

    write("gaps.csv", base[:10] + base[15:30] + base[33:])

    r = [row[:] for row in base]
    for i in range(25, len(r)):
        for k in range(1, 5):
            r[i][k] = f"{float(r[i][k]) * 1.5:.4f}"  # a +50% level shift that stays: real
    write("price_jump.csv", r)

    r = [row[:] for row in base]
    r[25][4] = f"{float(r[25][4]) * 0.025:.4f}"  # a -97.5% close, the next bar back: bad print
    r[25][3] = r[25][4]
    write("price_spike.csv", r)

    r = [[row[0].replace("Z", "").replace("T", " "), *row[1:]] for row in base]
    write("naive_timestamps.csv", r)

    write("no_timestamp_column.csv", [row[1:] for row in base], "open,high,low,close,volume")
    write(
        "missing_close_column.csv",
        [row[:4] + row[5:] for row in base],
        "timestamp,open,high,low,volume",
    )
    (HERE / "empty.csv").write_text("")
    (HERE / "header_only.csv").write_text(HEADER + "\n")
    r = [row[:] for row in base]
    r[4] = [*r[4], "999", "extra"]
    write("ragged.csv", r)
    (HERE / "not_a_table.csv").write_bytes(bytes(range(256)) * 4)
    write("headerless_7_columns.csv", [[*row, "1"] for row in base], header=None)


if __name__ == "__main__":
    main()
