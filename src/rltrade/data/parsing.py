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
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
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
# A strptime format no timestamp matches: pyarrow then infers no timestamp column.
_NO_TIMESTAMP_FORMAT = "no timestamp matches this format"


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


_EXCERPT_WIDTH = 60


def _escaped(text: str) -> str:
    """``text`` with every non-printable character escaped as ``repr`` would (no quotes)."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def excerpt(value: Any, width: int = _EXCERPT_WIDTH) -> str:
    """A short, quoted, escaped excerpt of a raw value for messages (``repr`` style).

    Control characters (NUL, ESC, newlines...) appear escaped (``\x00``, ``\x1b``, ``\n``) so
    a raw byte from a file never reaches the terminal; the result is at most about ``width``
    characters, ``...`` marking a cut.

    :param value: a raw cell, a column name, a line of a file (bytes are decoded as UTF-8
        with replacement).
    :param width: the longest excerpt, quotes included.
    """
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    out: list[str] = []
    used = 2  # the quotes
    for ch in text:
        piece = "\\'" if ch == "'" else (ch if ch.isprintable() else repr(ch)[1:-1])
        if used + len(piece) > width - 3:
            return "'" + "".join(out) + "'..."
        out.append(piece)
        used += len(piece)
    return "'" + "".join(out) + "'"


def _column_list(columns: Any, shown: int = 8) -> str:
    """Column names for an error message: the first few, each a short escaped excerpt."""
    names = [excerpt(c, 30) for c in list(columns)[:shown]]
    more = f", ... ({len(columns)} in all)" if len(columns) > shown else ""
    return "[" + ", ".join(names) + more + "]"


def _parse_error(path: Path, exc: BaseException) -> str:
    """A parser's error message about ``path``, with any raw row quoted as a short excerpt."""
    text = str(exc)
    # pyarrow: "CSV parse error: Expected 6 columns, got 1: <the raw row>"
    match = re.match(r"^(.*?(?:got|found) \d+): (.*)$", text, flags=re.DOTALL)
    if match:
        detail = f"{_escaped(match.group(1))}: row {excerpt(match.group(2))}"
    else:
        first = text.splitlines()[0] if text else type(exc).__name__
        detail = _escaped(first)
        if len(detail) > 200:
            detail = detail[:197] + "..."
    return f"{path}: cannot parse the file: {detail}"


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
            # Timestamps stay text: their UTC offsets are checked (a mix is named) and
            # day-month dates decided per column by parse_timestamps, not guessed here.
            convert_options=pacsv.ConvertOptions(
                strings_can_be_null=True, timestamp_parsers=[_NO_TIMESTAMP_FORMAT]
            ),
        )
    except DataError:
        raise
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError, UnicodeDecodeError, EOFError) as exc:
        raise DataError(_parse_error(path, exc)) from exc
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


@dataclass
class _Stamps:
    """Timestamps parsed by one of the readers below, before the final UTC conversion."""

    index: pd.DatetimeIndex
    naive: int = 0  # values without a zone, taken as ``naive_tz`` (or UTC)
    date_only: bool = False  # every naive value is a date at midnight
    findings: list[Finding] = field(default_factory=list)


def _all_midnight(values: pd.DatetimeIndex | pd.Series) -> bool:
    valid = values.dropna()
    if isinstance(valid, pd.Series):
        return bool(len(valid)) and bool(np.all(valid.dt.normalize() == valid))
    return bool(len(valid)) and bool(np.all(valid.normalize() == valid))


def _stamps_from_numbers(series: pd.Series) -> _Stamps:
    """``YYYYMMDD`` integers (naive dates), else Unix epoch numbers (UTC, unit detected)."""
    nums = series.to_numpy(dtype=np.float64, na_value=np.nan)
    if _is_yyyymmdd(nums):
        text = pd.Series(nums).map(lambda x: "" if np.isnan(x) else f"{int(x):08d}")
        parsed = pd.DatetimeIndex(pd.to_datetime(text, format="%Y%m%d", errors="coerce"))
        return _Stamps(parsed, naive=len(parsed), date_only=True)
    unit = _epoch_unit(nums)
    ints = series.astype("Int64") if series.isna().any() else series.astype(np.int64)
    parsed = pd.DatetimeIndex(pd.to_datetime(ints, unit=unit, utc=True, errors="coerce"))
    note = Finding("epoch_unit", "info", len(parsed), f"numeric timestamps read as Unix {unit}")
    return _Stamps(parsed, findings=[note])


# A day and a month in either order, then a year: 01-03-2021, 1/3/21, 25.03.2021 10:00.
_DAY_MONTH = re.compile(r"^(\d{1,2})([-/.])(\d{1,2})\2(\d{4}|\d{2})(?=$|[T ])")


def _day_month_to_iso(text: pd.Series) -> pd.Series:
    """Rewrite ``DD-MM-YYYY`` / ``MM-DD-YYYY`` dates as ISO, deciding the order per column.

    The order is read from the column as a whole: a first number above 12 somewhere makes the
    column day-first, a second number above 12 month-first. A column where neither happens
    (``01-03-2021`` could be 1 March or 3 January) or both happen is refused: ISO dates are
    the documented form. Two-digit years follow pandas (69-99 -> 19xx, else 20xx).

    :raises DataError: for an ambiguous or inconsistent column.
    """
    parts = text.str.extract(_DAY_MONTH)
    matched = parts[0].notna().to_numpy()
    if not matched.any():
        return text
    first = parts[0][matched].astype(int).to_numpy()
    second = parts[2][matched].astype(int).to_numpy()
    day_first, month_first = bool((first > 12).any()), bool((second > 12).any())
    sample = excerpt(text[matched].iloc[0])
    if day_first == month_first:
        why = ("some dates have a day first and others a month first" if day_first else
               "every first and second number is 12 or less, so day and month cannot be "
               f"told apart ({sample} could be either)")
        raise DataError(
            f"ambiguous day-month dates such as {sample}: {why}; write dates as ISO "
            "YYYY-MM-DD (e.g. 2021-03-01), the documented form"
        )
    day, month = (first, second) if day_first else (second, first)
    year = parts[3][matched].astype(int).to_numpy()
    short = parts[3][matched].str.len().to_numpy() == 2
    year = np.where(short, np.where(year < 69, 2000 + year, 1900 + year), year)
    head = parts[0][matched].str.len() + parts[2][matched].str.len() + parts[3][matched].str.len()
    rest = [t[h + 2:] for t, h in zip(text[matched], head, strict=True)]
    out = text.copy()
    out[matched] = [f"{y:04d}-{m:02d}-{d:02d}{r}" for y, m, d, r in
                    zip(year, month, day, rest, strict=True)]
    return out


def _offset_label(suffix: str) -> str | None:
    """``"+HH:MM"`` for the UTC offset ending a timestamp string (``Z``: ``"+00:00"``), else
    ``None`` (a naive timestamp). Offsets beyond 14 hours are no offsets: ``01-03-2021`` ends
    with a year, not with ``-20:21``."""
    match = _ZONED.search(suffix)
    if match is None:
        return None
    zone = match.group(0)
    if zone in ("z", "Z"):
        return "+00:00"
    digits = zone[1:].replace(":", "")
    if int(digits[:2]) > 14 or int(digits[2:]) > 59:
        return None
    return f"{zone[0]}{digits[:2]}:{digits[2:]}"


def _arrow_text(text: pd.Series) -> pa.Array:
    """A text column as one arrow string array (missing values null)."""
    arr = pa.array(text, type=pa.string(), from_pandas=True)
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def _offset_codes(text: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Per string, a code into the returned labels: its UTC offset as ``"+HH:MM"``, or
    ``None`` where it has none (code -1, missing values, points at a final ``None``).

    Read from the last six characters, classified once per distinct ending (fast on long
    columns, where a few endings repeat).
    """
    endings = pc.dictionary_encode(pc.utf8_slice_codeunits(_arrow_text(text), start=-6))
    labels = [_offset_label(u) for u in endings.dictionary.to_pylist()]
    return endings.indices.fill_null(-1).to_numpy(), np.array([*labels, None], dtype=object)


def _utc_offsets(text: pd.Series) -> pd.Series:
    """The UTC offset of each string as ``"+HH:MM"``, ``None`` where it has none."""
    codes, labels = _offset_codes(text)
    return pd.Series(labels[codes], index=text.index, dtype=object)


def _offset_minutes(offset: str) -> int:
    """``"+05:30"`` -> 330, ``"-04:00"`` -> -240."""
    minutes = int(offset[1:3]) * 60 + int(offset[4:6])
    return -minutes if offset[0] == "-" else minutes


def _offset_finding(text: pd.Series, offsets: pd.Series, parsed: pd.Series) -> Finding | None:
    """Name the UTC offsets of zoned strings when there are several.

    One offset per row is normal for local times across a DST change (the times convert to
    UTC in order: ``info``). When the converted times go back or repeat, the mix is the likely
    cause of the unsorted and duplicate rows: a ``warning`` naming each offset and its rows.
    Its message starts ``"mixed UTC offsets +01:00, +02:00: "``.
    """
    counts = offsets.value_counts(sort=False)
    if len(counts) < 2:
        return None
    order = sorted(counts.index, key=_offset_minutes)
    names = ", ".join(order)
    per = ", ".join(f"{o}: {counts[o]:,} rows" for o in order)
    ns = pd.DatetimeIndex(parsed.dropna()).asi8
    first_of = [excerpt(text[offsets == o].iloc[0]) for o in order][:3]
    if len(ns) < 2 or bool(np.all(np.diff(ns) > 0)):
        return Finding("mixed_utc_offsets", "info", len(text),
                       f"mixed UTC offsets {names}: {per}; converted to UTC in order "
                       "(e.g. a daylight-saving change)", first_of)
    return Finding("mixed_utc_offsets", "warning", len(text),
                   f"mixed UTC offsets {names}: {per}; converted to UTC the rows go back in "
                   "time or repeat: check that each offset is right for its rows", first_of)


def _iso(text: pd.Series, zoned: bool) -> pd.Series:
    """ISO 8601 strings -> datetimes (UTC when ``zoned``, naive otherwise); NaT if not ISO.

    Arrow's parser first (fast, exact for ISO 8601 with offsets); pandas when some value is
    not ISO, row by row.
    """
    target = pa.timestamp("ns", "UTC" if zoned else None)
    try:
        parsed = pc.cast(_arrow_text(text), target)
        return pd.Series(parsed.to_pandas().array, index=text.index)  # by position
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        pass
    if zoned:
        return pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce").dt.as_unit("ns")
    return pd.to_datetime(text, format="ISO8601", errors="coerce").dt.as_unit("ns")


def _stamps_all_zoned(text: pd.Series) -> _Stamps | None:
    """The common case at arrow speed: every value an ISO string with a UTC offset (``None``
    when some value is not)."""
    try:
        parsed = pc.cast(_arrow_text(text), pa.timestamp("ns", "UTC"))
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None
    stamps = _Stamps(pd.DatetimeIndex(parsed.to_pandas().array))
    codes, labels = _offset_codes(text)
    if len({label for label in labels if label is not None}) > 1:  # several offsets
        present = text.notna().to_numpy()
        offsets = pd.Series(labels[codes], index=text.index, dtype=object)[present]
        mixed = _offset_finding(text[present], offsets, pd.Series(stamps.index[present]))
        if mixed is not None:
            stamps.findings.append(mixed)
    return stamps


def _stamps_from_text(series: pd.Series, naive_tz: str | None) -> _Stamps:
    """ISO strings (zoned, naive or a mixture), day-month dates, and what pandas can guess."""
    text = series if isinstance(series.dtype, pd.StringDtype) else series.astype("string")
    fast = _stamps_all_zoned(text)
    if fast is not None:
        return fast
    text = text.str.strip()
    text = text.where(text != "", pd.NA)
    offsets = _utc_offsets(text)
    zoned_mask = offsets.notna()
    naive_mask = text.notna() & ~zoned_mask
    zoned, naive = _iso(text[zoned_mask], True), _iso(text[naive_mask], False)
    failed = pd.concat([zoned.isna(), naive.isna()]).reindex(text.index, fill_value=False)
    if failed.any():
        # Not ISO: day-month dates, their order decided over all such rows of the column.
        rewritten = _day_month_to_iso(text[failed])
        changed = rewritten.index[(rewritten != text[failed]).fillna(False).to_numpy()]
        if len(changed):
            text.loc[changed] = rewritten[changed]
            redo_z, redo_n = changed[zoned_mask[changed]], changed[naive_mask[changed]]
            zoned.loc[redo_z] = _iso(text[redo_z], True)
            naive.loc[redo_n] = _iso(text[redo_n], False)
        retry = naive.isna()
        if retry.any():  # still not ISO: let pandas guess (e.g. Jan 31 2024)
            naive[retry] = pd.to_datetime(text[naive.index[retry]], errors="coerce")

    stamps = _Stamps(pd.DatetimeIndex([]))
    result = pd.Series(pd.NaT, index=series.index, dtype="datetime64[ns, UTC]")
    if len(zoned):
        result[zoned_mask] = zoned
        mixed = _offset_finding(text[zoned_mask], offsets[zoned_mask], zoned)
        if mixed is not None:
            stamps.findings.append(mixed)
    if len(naive):
        stamps.date_only = _all_midnight(naive)
        result[naive_mask] = (
            naive.dt.tz_localize(naive_tz or "UTC", ambiguous="NaT", nonexistent="NaT")
            .dt.tz_convert("UTC")
            .dt.as_unit("ns")
        )
        naive_mask = naive_mask & result.notna()  # unparseable text is reported later
    stamps.naive = int(naive_mask.sum())
    stamps.index = pd.DatetimeIndex(result)
    zoned_count = int(zoned_mask.sum())
    if zoned_count and stamps.naive:
        idx = np.flatnonzero(naive_mask.to_numpy())[:3]
        stamps.findings.append(
            Finding(
                "mixed_timezones",
                "error",
                min(zoned_count, stamps.naive),
                f"{zoned_count} timestamps carry a time zone and {stamps.naive} do not",
                [excerpt(text.iloc[i]) for i in idx],
            )
        )
        stamps.naive = 0  # reported as mixed, not as plain naive
    return stamps


def _read_stamps(series: pd.Series, naive_tz: str | None) -> _Stamps:
    """Dispatch on the column's type: zoned or naive datetimes, numbers, or text."""
    dtype = series.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        return _Stamps(pd.DatetimeIndex(series).tz_convert("UTC"))
    if pd.api.types.is_datetime64_dtype(dtype):
        parsed = pd.DatetimeIndex(series)
        return _Stamps(parsed, naive=len(parsed), date_only=_all_midnight(parsed))
    if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
        return _stamps_from_numbers(series)
    # Dates from pyarrow arrive as python date objects; everything else as strings.
    return _stamps_from_text(series, naive_tz)


def _naive_finding(count: int, date_only: bool) -> Finding:
    if date_only:
        return Finding("date_labels", "info", count, "dates taken as 00:00 UTC labels")
    return Finding(
        "naive_timestamps",
        "warning",
        count,
        "timestamps have no time zone and were treated as UTC "
        "(pass naive_tz='America/New_York' or similar if they are local times)",
    )


def parse_timestamps(
    values: pd.Series, naive_tz: str | None = None
) -> tuple[pd.DatetimeIndex, list[Finding]]:
    """Parse a column of timestamps into a UTC nanosecond :class:`pandas.DatetimeIndex`.

    Accepts datetimes (zoned or naive), dates, ISO strings (zoned, naive, or a mixture), and Unix
    epoch numbers in seconds, milliseconds, microseconds or nanoseconds (the unit is detected from
    the magnitude), or ``YYYYMMDD`` integers. Naive values are localised to ``naive_tz`` when given,
    otherwise taken as UTC and reported with a warning. Unparseable values become ``NaT`` and are
    reported as an error. Zoned strings with several UTC offsets are reported, naming them
    (``mixed_utc_offsets``: a warning when the converted times go back or repeat).
    ``DD-MM-YYYY`` / ``MM-DD-YYYY`` dates are read in the order the whole column proves (a
    number above 12 in one place); a column where the order cannot be told is refused.

    :raises DataError: for ambiguous day-month dates.
    """
    series = pd.Series(values).reset_index(drop=True)
    stamps = _read_stamps(series, naive_tz)
    parsed = stamps.index
    if parsed.tz is None:
        parsed = parsed.tz_localize(naive_tz or "UTC", ambiguous="NaT", nonexistent="NaT")
    parsed = parsed.tz_convert("UTC").as_unit("ns")

    findings = stamps.findings
    if stamps.naive and not naive_tz:
        findings.append(_naive_finding(stamps.naive, stamps.date_only))
    bad_count = int(parsed.isna().sum())
    if bad_count:
        examples = [excerpt(v) for v in series[np.asarray(parsed.isna())].head(3)]
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


def _numeric_column(
    col: str, raw: pd.Series, ts_values: pd.Series, checked: bool
) -> tuple[np.ndarray | None, Finding | None]:
    """A column as float64 (``None``: an extra column with no number at all, dropped) and
    what was wrong with it.

    Non-numeric cells become NaN: an error in a checked column or an extra column, a note in a
    price column that is not checked (an external series' open/high/low).
    """
    if pd.api.types.is_float_dtype(raw.dtype):
        return raw.to_numpy(dtype=np.float64), None
    if pd.api.types.is_numeric_dtype(raw.dtype) and not pd.api.types.is_bool_dtype(raw.dtype):
        return raw.to_numpy(dtype=np.float64, na_value=np.nan), None
    coerced = pd.to_numeric(raw, errors="coerce").astype(np.float64)
    present = raw.notna() & (raw.astype("string").str.strip() != "").fillna(False)
    bad = present & coerced.isna()
    n_bad = int(bad.sum())
    if col not in OHLCV and n_bad == int(present.sum()):
        return None, Finding("dropped_column", "info", 1,
                             f"dropped non-numeric column {excerpt(col, 40)}")
    if not n_bad:
        return coerced.to_numpy(), None
    examples = [f"{_escaped(str(ts_values.iloc[i]))[:40]}: {excerpt(raw.iloc[i])}"
                for i in np.flatnonzero(bad)[:3]]
    severity = "error" if checked or col not in OHLCV else "info"
    unchecked = "" if severity == "error" else " (not checked; read as NaN)"
    finding = Finding("non_numeric", severity, n_bad,
                      f"{n_bad} non-numeric value(s) in column {excerpt(col, 40)}{unchecked}",
                      examples)
    return coerced.to_numpy(), finding


def standardize(
    frame: pd.DataFrame, naive_tz: str | None = None, columns: Iterable[str] = OHLCV
) -> tuple[pd.DataFrame, list[Finding]]:
    """Bring a table of bars into rltrade's layout, reporting (never fixing) what is odd.

    Returns a DataFrame with a UTC nanosecond ``DatetimeIndex`` named ``timestamp`` (possibly
    unsorted, duplicated or with ``NaT``), float64 ``open, high, low, close, volume`` and any
    extra numeric columns, plus the findings. Raises :class:`DataError` when no timestamp
    column or a required price column can be found.

    :param columns: the columns required (prices) or filled (volume: 0, with a warning, when
        missing); by default all of ``open, high, low, close, volume``. With ``("close",)``
        (an external series) a file of timestamps and closes is enough; the price columns not
        listed are kept when present, never invented.
    """
    wanted = tuple(columns)
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
                f"open_time (columns are {_column_list(frame.columns)})"
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

    missing = [c for c in PRICE_COLUMNS if c in wanted and c not in frame.columns]
    if missing:
        raise DataError(
            f"missing price column(s) {missing}: expected "
            f"{', '.join(c for c in PRICE_COLUMNS if c in wanted)} "
            f"(any case, or O/H/L/C); found {_column_list(frame.columns)}"
        )

    out: dict[str, np.ndarray] = {}
    for col in frame.columns:
        values, finding = _numeric_column(col, frame[col], ts_values, checked=col in wanted)
        if finding is not None:
            findings.append(finding)
        if values is not None:
            out[col] = values

    if "volume" in wanted and ("volume" not in out or np.all(np.isnan(out["volume"]))):
        findings.append(Finding("no_volume", "warning", 1, "no volume data; volume set to 0"))
        out["volume"] = np.zeros(len(frame), dtype=np.float64)

    index, ts_findings = parse_timestamps(ts_values, naive_tz=naive_tz)
    findings = ts_findings + findings
    index.name = "timestamp"
    ordered = [*(c for c in OHLCV if c in out), *(c for c in out if c not in OHLCV)]
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


# --------------------------------------------------------------------------------------------
# Polygon.io aggregates

#: Columns of Polygon's flat files of aggregates (``minute_aggs_v1``, ``day_aggs_v1``).
POLYGON_FLAT_COLUMNS = ("ticker", "volume", "open", "close", "high", "low", "window_start",
                        "transactions")
# REST "results" keys -> rltrade columns (t: Unix ms of the bar's open)
_POLYGON_REST = {"o": "open", "h": "high", "l": "low", "c": "close", "v": "volume",
                 "vw": "vwap", "n": "trades"}
_POLYGON_SUFFIXES = (".json", ".json.gz", ".csv", ".csv.gz")
_POLYGON_HELP = (
    "a Polygon aggregates file is either the REST API's JSON (a 'results' list of bars with "
    "t, o, h, l, c, v and optionally vw, n) or a flat file CSV with the columns "
    + ", ".join(POLYGON_FLAT_COLUMNS)
)


def _polygon_files(path: Path) -> list[Path]:
    """``path`` itself, or every ``.json``/``.csv`` (optionally ``.gz``) file under a folder."""
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*")
                   if p.is_file() and p.name.lower().endswith(_POLYGON_SUFFIXES))
    if not files:
        raise DataError(f"{path}: no Polygon files (*.json, *.csv, *.csv.gz) in this folder")
    return files


def _polygon_json(path: Path) -> tuple[pd.DataFrame, set[str]]:
    """One REST API response: its bars (UTC open times) and its ticker."""
    import json

    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path}: not readable as JSON ({_escaped(str(exc))[:120]}); "
                        f"{_POLYGON_HELP}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), list):
        status = doc.get("status") if isinstance(doc, dict) else None
        said = doc.get("error") or doc.get("message") if isinstance(doc, dict) else None
        detail = f" (status {excerpt(status)}: {excerpt(said or '')})" if status else ""
        raise DataError(f"{path}: no 'results' list{detail}; {_POLYGON_HELP}")
    rows = doc["results"]
    if not rows:
        raise DataError(f"{path}: the response has no bars (results is empty)")
    frame = pd.DataFrame(rows)
    missing = [k for k in ("t", "o", "h", "l", "c") if k not in frame.columns]
    if missing:
        raise DataError(f"{path}: results lack {missing}; {_POLYGON_HELP}")
    stamps = pd.to_numeric(frame["t"], errors="coerce")
    out = pd.DataFrame({"timestamp": pd.to_datetime(stamps, unit="ms", utc=True)})
    for key, name in _POLYGON_REST.items():
        if key in frame.columns:
            out[name] = pd.to_numeric(frame[key], errors="coerce")
    ticker = doc.get("ticker")
    return out, {str(ticker)} if ticker else set()


def _polygon_csv(path: Path, symbol: str | None) -> tuple[pd.DataFrame, set[str]]:
    """One flat file: the rows of ``symbol`` (all rows when ``None``) and the tickers seen."""
    try:
        table = pacsv.read_csv(str(path), convert_options=pacsv.ConvertOptions(
            column_types={"ticker": pa.string(), "window_start": pa.int64()}))
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError, EOFError) as exc:
        raise DataError(_parse_error(path, exc) + f"; {_POLYGON_HELP}") from exc
    missing = [c for c in POLYGON_FLAT_COLUMNS if c not in table.column_names]
    if missing:
        raise DataError(f"{path}: not a Polygon flat file: missing column(s) {missing} "
                        f"(found {_column_list(table.column_names)}); {_POLYGON_HELP}")
    tickers = set(pc.unique(table["ticker"]).to_pylist()) - {None}
    if symbol is not None:
        table = table.filter(pc.equal(table["ticker"], symbol))
    frame = table.to_pandas()
    out = pd.DataFrame({"timestamp": pd.to_datetime(frame["window_start"], unit="ns", utc=True)})
    for col in ("open", "high", "low", "close", "volume"):
        out[col] = frame[col].astype(np.float64)
    out["trades"] = frame["transactions"].astype(np.float64)
    if "vwap" in frame.columns:
        out["vwap"] = frame["vwap"].astype(np.float64)
    return out, tickers


def read_polygon(path: str | Path, symbol: str | None = None) -> pd.DataFrame:
    """Read Polygon.io aggregates: a REST API response (JSON), a flat file (CSV, ``.gz``), or
    a folder tree of them (e.g. ``minute_aggs_v1/2024/03/*.csv.gz``), keeping one ticker.

    REST bars (``results``: ``t`` Unix ms, ``o h l c v``, ``vw``, ``n``) and flat-file rows
    (``window_start`` Unix ns, ``transactions``) become ``timestamp`` (UTC), ``open, high,
    low, close, volume``, ``vwap`` (volume-weighted price, when given) and ``trades``.

    :param path: a file or a folder (read recursively, files in name order).
    :param symbol: the ticker to keep (``SPY``); required when the files hold several.
    :returns: the raw bars of that ticker, not yet validated (``load_bars`` does that).
    :raises DataError: for a missing or malformed file (one message naming the file and the
        expected layout), several tickers and no ``symbol``, or no bars of ``symbol``.
    """
    path = Path(path)
    parts: list[pd.DataFrame] = []
    tickers: set[str] = set()
    for file in _polygon_files(path):
        if file.name.lower().endswith((".json", ".json.gz")):
            frame, seen = _polygon_json(file)
            if symbol is not None and seen and symbol not in seen:
                frame = frame.iloc[0:0]
        else:
            frame, seen = _polygon_csv(file, symbol)
        tickers |= seen
        parts.append(frame)
    if symbol is None and len(tickers) > 1:
        names = ", ".join(sorted(tickers)[:5]) + (", ..." if len(tickers) > 5 else "")
        raise DataError(f"{path}: {len(tickers)} tickers ({names}); choose one with "
                        "--symbol / symbol=")
    bars = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if bars.empty:
        which = f" of {symbol}" if symbol else ""
        raise DataError(f"{path}: no bars{which} (tickers seen: "
                        f"{', '.join(sorted(tickers)[:5]) or 'none'})")
    bars.attrs["symbol"] = symbol or (next(iter(tickers)) if tickers else None)
    return bars
