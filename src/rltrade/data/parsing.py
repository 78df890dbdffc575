"""Reading bar files and turning arbitrary tables into rltrade's bar layout.

Two steps, kept apart so that validation can see a file's problems before anything is fixed:

1. :func:`read_table` reads a CSV (optionally gzip/bz2/xz/zstd compressed) or Parquet file into a
   DataFrame without judging it. Delimiters and headers are sniffed; headerless files with 5, 6
   or 12 columns (Binance kline exports) get their names.
2. :func:`standardize` finds the timestamp and OHLCV columns (any case, long or one-letter
   names, common aliases), parses the timestamps into UTC nanoseconds and coerces values to
   float64, and returns what it found along the way as :class:`Finding` objects (non-numeric cells,
   unparseable or naive timestamps, a mixture of zoned and naive timestamps). It never drops or
   reorders rows; that is :func:`rltrade.data.validate_bars`' job.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from rltrade.errors import DataError

PRICE_COLUMNS = ("open", "high", "low", "close")
OHLCV = (*PRICE_COLUMNS, "volume")

# Lower-cased, stripped of spaces/underscores/dashes -> canonical name.
_TIMESTAMP_NAMES = ["timestamp", "date", "datetime", "time", "opentime", "ts", "unnamed0", ""]
_ALIASES = {
    "open": "open",
    "o": "open",
    "openprice": "open",
    "high": "high",
    "h": "high",
    "highprice": "high",
    "low": "low",
    "l": "low",
    "lowprice": "low",
    "close": "close",
    "c": "close",
    "closeprice": "close",
    "last": "close",
    "volume": "volume",
    "v": "volume",
    "vol": "volume",
    "basevolume": "volume",
    "openinterest": "open_interest",
    "oi": "open_interest",
    "fundingrate": "funding_rate",
    "funding": "funding_rate",
    "spread": "spread",
    "vwap": "vwap",
    "trades": "trades",
    "numberoftrades": "trades",
    "tradecount": "trades",
    "count": "trades",
    "transactions": "trades",
    "n": "trades",
    "quoteassetvolume": "quote_volume",
    "quotevolume": "quote_volume",
    "takerbuybaseassetvolume": "taker_buy_volume",
    "takerbuybasevolume": "taker_buy_volume",
    "takerbuyquoteassetvolume": "taker_buy_quote_volume",
    "takerbuyquotevolume": "taker_buy_quote_volume",
    "adjclose": "adj_close",
}
# Binance kline exports (data.binance.vision) have no header and these 12 columns.
BINANCE_KLINE_COLUMNS = [
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "trades",
    "taker_buy_volume",
    "taker_buy_quote_volume",
    "ignore",
]
_HEADERLESS = {
    5: ["timestamp", "open", "high", "low", "close"],
    6: ["timestamp", "open", "high", "low", "close", "volume"],
    12: BINANCE_KLINE_COLUMNS,
}
_DROP_ALWAYS = {"ignore", "close_time", "closetime"}
_ZONED = re.compile(r"(?:[zZ]|[+-]\d{2}:?\d{2})$")


@dataclass
class Finding:
    """One kind of problem (or fact) seen in a table of bars.

    ``severity`` is ``"error"`` (strict validation fails), ``"warning"`` (reported, not fatal) or
    ``"info"``. ``examples`` holds the first few timestamps (or cells) concerned; ``fixed``
    describes what the ``repair`` policy did about it, ``None`` when nothing was changed.
    """

    code: str
    severity: str
    count: int
    message: str
    examples: list[str] = field(default_factory=list)
    fixed: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "severity": self.severity,
            "count": int(self.count),
            "message": self.message,
            "examples": list(self.examples),
            "fixed": self.fixed,
        }


def _normalize_name(name: Any) -> str:
    return re.sub(r"[\s_\-:.]", "", str(name).strip().lower())


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    if path.suffix in (".bz2", ".xz", ".zst", ".zstd"):
        codec = {".bz2": "bz2", ".xz": "lzma", ".zst": "zstd", ".zstd": "zstd"}[path.suffix]
        stream = pa.input_stream(str(path), compression=codec)
        return io.TextIOWrapper(stream, encoding="utf-8", errors="replace")  # type: ignore[arg-type]
    return open(path, encoding="utf-8", errors="replace")


def _looks_like_value(token: str) -> bool:
    token = token.strip().strip('"')
    if not token:
        return True
    try:
        float(token)
        return True
    except ValueError:
        pass
    return bool(
        re.match(r"^\d{4}-\d{2}-\d{2}", token) or re.match(r"^\d{1,2}/\d{1,2}/\d{2,4}", token)
    )


def _sniff(path: Path) -> tuple[str, bool, int]:
    """Delimiter, whether the first line is a header, and the number of fields."""
    with _open_text(path) as fh:
        head = [fh.readline() for _ in range(5)]
    lines = [ln.rstrip("\r\n") for ln in head if ln.strip()]
    if not lines:
        raise DataError(f"{path}: the file is empty")
    first = lines[0].lstrip("\ufeff")
    try:
        delimiter = csv.Sniffer().sniff("\n".join(lines), delimiters=",;\t|").delimiter
    except csv.Error:
        delimiter = max(",;\t|", key=first.count)
    fields = next(csv.reader([first], delimiter=delimiter))
    header = not all(_looks_like_value(f) for f in fields)
    return delimiter, header, len(fields)


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet file of bars into a DataFrame, as written, without judging it.

    Raises :class:`DataError` when the file is missing, empty or cannot be parsed.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a CSV or Parquet file")
    suffixes = [s.lower() for s in path.suffixes]
    try:
        if ".parquet" in suffixes or ".pq" in suffixes:
            table = pq.read_table(path)
            frame = table.to_pandas()
            if isinstance(frame.index, pd.DatetimeIndex) or frame.index.name is not None:
                frame = frame.reset_index()
            return frame
        delimiter, header, nfields = _sniff(path)
        if header:
            read_opts = pacsv.ReadOptions()
        else:
            names = _HEADERLESS.get(nfields)
            if names is None:
                raise DataError(
                    f"{path}: the file has no header and {nfields} columns; add a header row "
                    "(timestamp,open,high,low,close,volume) or use a Binance kline export (12)"
                )
            read_opts = pacsv.ReadOptions(column_names=names)
        table = pacsv.read_csv(
            str(path),
            read_options=read_opts,
            parse_options=pacsv.ParseOptions(delimiter=delimiter),
            convert_options=pacsv.ConvertOptions(strings_can_be_null=True),
        )
    except DataError:
        raise
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError, UnicodeDecodeError, EOFError) as exc:
        raise DataError(f"{path}: cannot parse the file: {str(exc).splitlines()[0]}") from exc
    if table.num_rows == 0:
        raise DataError(f"{path}: the file has a header but no rows")
    return table.to_pandas()


# --------------------------------------------------------------------------------------------
# Timestamps


def _epoch_unit(values: np.ndarray) -> str:
    """Detect s / ms / us / ns from the magnitude of epoch numbers."""
    finite = np.abs(values[np.isfinite(values)])
    mag = float(np.median(finite)) if finite.size else 0.0
    if mag < 1e11:
        return "s"
    if mag < 1e14:
        return "ms"
    if mag < 1e17:
        return "us"
    return "ns"


def _is_yyyymmdd(values: np.ndarray) -> bool:
    finite = values[np.isfinite(values)]
    if finite.size == 0 or not np.all(finite == np.round(finite)):
        return False
    return bool(np.all((finite >= 1800_01_01) & (finite <= 2200_12_31)))


def _fmt(ts: Any) -> str:
    return str(ts)


def parse_timestamps(
    values: pd.Series, naive_tz: str | None = None
) -> tuple[pd.DatetimeIndex, list[Finding]]:
    """Parse a column of timestamps into a UTC nanosecond :class:`pandas.DatetimeIndex`.

    Accepts datetimes (zoned or naive), dates, ISO strings (zoned, naive, or a mixture), and Unix
    epoch numbers in seconds, milliseconds, microseconds or nanoseconds (the unit is detected from
    the magnitude), or ``YYYYMMDD`` integers. Naive values are localised to ``naive_tz`` when given,
    otherwise taken as UTC and reported with a warning. Unparseable values become ``NaT`` and are
    reported as an error.
    """
    findings: list[Finding] = []
    series = pd.Series(values).reset_index(drop=True)
    dtype = series.dtype
    naive_count = 0
    zoned_count = 0
    date_only = False

    if isinstance(dtype, pd.DatetimeTZDtype):
        parsed = pd.DatetimeIndex(series).tz_convert("UTC")
        zoned_count = len(parsed)
    elif pd.api.types.is_datetime64_dtype(dtype):
        parsed = pd.DatetimeIndex(series)
        naive_count = len(parsed)
        valid = parsed[~parsed.isna()]
        date_only = bool(len(valid)) and bool(np.all(valid.normalize() == valid))
    elif pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
        nums = series.to_numpy(dtype=np.float64, na_value=np.nan)
        if _is_yyyymmdd(nums):
            text = pd.Series(nums).map(lambda x: "" if np.isnan(x) else f"{int(x):08d}")
            parsed = pd.DatetimeIndex(pd.to_datetime(text, format="%Y%m%d", errors="coerce"))
            date_only = True
            naive_count = len(parsed)
        else:
            unit = _epoch_unit(nums)
            ints = series.astype("Int64") if series.isna().any() else series.astype(np.int64)
            parsed = pd.DatetimeIndex(pd.to_datetime(ints, unit=unit, utc=True, errors="coerce"))
            zoned_count = len(parsed)  # epoch numbers are UTC by definition
            findings.append(
                Finding(
                    "epoch_unit", "info", len(parsed), f"numeric timestamps read as Unix {unit}"
                )
            )
    else:
        # Dates from pyarrow arrive as python date objects; everything else as strings.
        text = series.astype("string").str.strip()
        present = text.notna() & (text != "")
        zoned_mask = text.str.contains(_ZONED, na=False) & present
        naive_mask = present & ~zoned_mask
        zoned_count = int(zoned_mask.sum())
        naive_count = int(naive_mask.sum())
        result = pd.Series(pd.NaT, index=series.index, dtype="datetime64[ns, UTC]")
        if zoned_count:
            result[zoned_mask] = pd.to_datetime(
                text[zoned_mask], utc=True, format="ISO8601", errors="coerce"
            ).dt.as_unit("ns")
        if naive_count:
            naive = pd.to_datetime(text[naive_mask], format="ISO8601", errors="coerce")
            if naive.isna().any():  # not ISO: let pandas guess (e.g. 01/31/2024)
                retry = naive.isna()
                naive[retry] = pd.to_datetime(text[naive_mask][retry], errors="coerce")
            valid = naive.dropna()
            date_only = bool(len(valid)) and bool(np.all(valid.dt.normalize() == valid))
            tz = naive_tz or "UTC"
            result[naive_mask] = (
                naive.dt.tz_localize(tz, ambiguous="NaT", nonexistent="NaT")
                .dt.tz_convert("UTC")
                .dt.as_unit("ns")
            )
            naive_mask = naive_mask & result.notna()  # unparseable text is reported below
            naive_count = int(naive_mask.sum())
        parsed = pd.DatetimeIndex(result)
        if zoned_count and naive_count:
            idx = np.flatnonzero(naive_mask.to_numpy())[:3]
            findings.append(
                Finding(
                    "mixed_timezones",
                    "error",
                    min(zoned_count, naive_count),
                    f"{zoned_count} timestamps carry a time zone and {naive_count} do not",
                    [str(text.iloc[i]) for i in idx],
                )
            )
            naive_count = 0  # reported as mixed, not as plain naive

    if parsed.tz is None:
        if naive_tz:
            parsed = parsed.tz_localize(naive_tz, ambiguous="NaT", nonexistent="NaT")
        else:
            parsed = parsed.tz_localize("UTC")
    parsed = parsed.tz_convert("UTC").as_unit("ns")

    if naive_count and not naive_tz:
        if date_only:
            findings.append(
                Finding("date_labels", "info", naive_count, "dates taken as 00:00 UTC labels")
            )
        else:
            findings.append(
                Finding(
                    "naive_timestamps",
                    "warning",
                    naive_count,
                    "timestamps have no time zone and were treated as UTC "
                    "(pass naive_tz='America/New_York' or similar if they are local times)",
                )
            )
    nat = parsed.isna()
    bad_count = int(nat.sum())
    if bad_count:
        bad = nat
        examples = [str(v) for v in series[bad].head(3)]
        findings.append(
            Finding(
                "unparseable_timestamps",
                "error",
                bad_count,
                f"{bad_count} timestamps are missing or cannot be parsed",
                examples,
            )
        )
    return parsed, findings


# --------------------------------------------------------------------------------------------
# Columns


def _find_timestamp_column(frame: pd.DataFrame) -> str | None:
    normalized = {_normalize_name(c): c for c in frame.columns}
    for candidate in _TIMESTAMP_NAMES:
        if candidate in normalized:
            return normalized[candidate]
    for col in frame.columns:
        if "time" in _normalize_name(col) or "date" in _normalize_name(col):
            return col
    return None


def standardize(
    frame: pd.DataFrame, naive_tz: str | None = None
) -> tuple[pd.DataFrame, list[Finding]]:
    """Bring a table of bars into rltrade's layout, reporting (never fixing) what is odd.

    Returns a DataFrame with a UTC nanosecond ``DatetimeIndex`` named ``timestamp`` (possibly
    unsorted, duplicated or with ``NaT``), float64 ``open, high, low, close, volume`` and any
    extra numeric columns, plus the findings. Raises :class:`DataError` when no timestamp or
    price columns can be found.
    """
    findings: list[Finding] = []
    frame = frame.copy(deep=False)
    if isinstance(frame.index, pd.DatetimeIndex):
        ts_values: pd.Series = frame.index.to_series(index=range(len(frame)))
        frame = frame.reset_index(drop=True)
    else:
        if not isinstance(frame.index, pd.RangeIndex) and frame.index.name is not None:
            frame = frame.reset_index()
        ts_col = _find_timestamp_column(frame)
        if ts_col is None:
            raise DataError(
                "no timestamp column found: name one of timestamp, date, datetime, time or "
                f"open_time (columns are {[str(c) for c in frame.columns]})"
            )
        ts_values = frame[ts_col].reset_index(drop=True)
        frame = frame.drop(columns=[ts_col]).reset_index(drop=True)

    rename: dict[Any, str] = {}
    for col in frame.columns:
        key = _normalize_name(col)
        canonical = _ALIASES.get(key)
        if canonical is None:
            canonical = re.sub(r"[^0-9a-z]+", "_", str(col).strip().lower()).strip("_") or "unnamed"
        if canonical in rename.values():
            continue  # first wins (e.g. "Close" before "Adj Close" is handled by alias)
        rename[col] = canonical
    frame = frame[list(rename)].rename(columns=rename)
    frame = frame.drop(columns=[c for c in frame.columns if c in _DROP_ALWAYS])

    missing = [c for c in PRICE_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(
            f"missing price column(s) {missing}: expected open, high, low, close "
            f"(any case, or O/H/L/C); found {list(frame.columns)}"
        )

    out: dict[str, np.ndarray] = {}
    for col in frame.columns:
        raw = frame[col]
        if pd.api.types.is_float_dtype(raw.dtype):
            out[col] = raw.to_numpy(dtype=np.float64)
            continue
        if pd.api.types.is_numeric_dtype(raw.dtype) and not pd.api.types.is_bool_dtype(raw.dtype):
            out[col] = raw.to_numpy(dtype=np.float64, na_value=np.nan)
            continue
        coerced = pd.to_numeric(raw, errors="coerce").astype(np.float64)
        present = raw.notna() & (raw.astype("string").str.strip() != "").fillna(False)
        bad = present & coerced.isna()
        n_bad = int(bad.sum())
        if col not in OHLCV and n_bad == int(present.sum()):
            findings.append(
                Finding("dropped_column", "info", 1, f"dropped non-numeric column {col!r}")
            )
            continue
        if n_bad:
            examples = [f"{ts_values.iloc[i]}: {raw.iloc[i]!r}" for i in np.flatnonzero(bad)[:3]]
            findings.append(
                Finding(
                    "non_numeric",
                    "error",
                    n_bad,
                    f"{n_bad} non-numeric value(s) in column {col!r}",
                    examples,
                )
            )
        out[col] = coerced.to_numpy()

    if "volume" not in out or np.all(np.isnan(out["volume"])):
        findings.append(Finding("no_volume", "warning", 1, "no volume data; volume set to 0"))
        out["volume"] = np.zeros(len(frame), dtype=np.float64)

    index, ts_findings = parse_timestamps(ts_values, naive_tz=naive_tz)
    findings = ts_findings + findings
    index.name = "timestamp"
    ordered = [*OHLCV, *[c for c in out if c not in OHLCV]]
    result = pd.DataFrame({c: out[c] for c in ordered}, index=index)
    return result, findings


def is_standard(frame: pd.DataFrame) -> bool:
    """True when a frame already has rltrade's layout (UTC ns index, float64 OHLCV)."""
    idx = frame.index
    return (
        isinstance(idx, pd.DatetimeIndex)
        and idx.name == "timestamp"
        and str(idx.tz) == "UTC"
        and idx.dtype == "datetime64[ns, UTC]"
        and all(c in frame.columns for c in OHLCV)
        and all(frame[c].dtype == np.float64 for c in frame.columns)
    )
