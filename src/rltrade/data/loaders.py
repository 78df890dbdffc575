"""``load_bars``: one entry point for every source of bars.

Sources:

* a path to a CSV (plain or compressed) or Parquet file;
* ``sample:EURUSD-1h``, ``sample:GOOG-1d``, ``sample:BTCUSD-1M``: real bars bundled with the
  ``backtesting`` package;
* ``synthetic:KIND`` with optional query parameters, e.g.
  ``synthetic:planted?n_bars=20000&seed=7&timeframe=1h`` (see :func:`synthetic_market`);
* ``store:SYMBOL/TIMEFRAME`` for a series in a :class:`~rltrade.data.store.BarStore`
  (root from ``store_root=``, else ``$RLTRADE_STORE``, else ``./data/store``);
* a pandas DataFrame (validated and brought to the standard layout).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

import pandas as pd
from loguru import logger

from rltrade.data.parsing import OHLCV, POLYGON_FLAT_COLUMNS, read_polygon, read_table
from rltrade.data.timeframes import parse_timeframe, to_utc
from rltrade.data.validation import Policy, ValidationReport, validate_bars
from rltrade.errors import DataError

log = logger.bind(component="data")


class DataWarning(UserWarning):
    """Something about the data deserves attention but does not stop loading."""


@dataclass(frozen=True)
class Sample:
    """A real bar file bundled with the ``backtesting`` package."""

    name: str
    filename: str
    symbol: str
    timeframe: str
    description: str
    # Labels in the file mark the period's end (month-end dates); relabel to its open.
    end_labelled: bool = False


SAMPLES: dict[str, Sample] = {
    "EURUSD-1h": Sample(
        "EURUSD-1h",
        "EURUSD.csv",
        "EURUSD",
        "1h",
        "EUR/USD hourly FX bars, April 2017 to February 2018 (5,000 bars)",
    ),
    "GOOG-1d": Sample(
        "GOOG-1d",
        "GOOG.csv",
        "GOOG",
        "1d",
        "NASDAQ:GOOG daily stock bars, 2004 to 2013 (2,148 bars)",
    ),
    "BTCUSD-1M": Sample(
        "BTCUSD-1M",
        "BTCUSD.csv",
        "BTCUSD",
        "1M",
        "BTC/USD monthly bars, 2012 to 2024 (156 bars); month-end labels moved to month start",
        end_labelled=True,
    ),
}


def sample_path(name: str) -> Path:
    """Path of a bundled sample's CSV file inside the ``backtesting`` package."""
    if name not in SAMPLES:
        raise DataError(f"unknown sample {name!r}: choose one of {', '.join(SAMPLES)}")
    import backtesting

    path = Path(backtesting.__file__).parent / "test" / SAMPLES[name].filename
    if not path.exists():
        raise DataError(f"sample file {path} is missing: reinstall the 'backtesting' package")
    return path


def _load_sample(name: str) -> tuple[pd.DataFrame, Sample]:
    sample = SAMPLES.get(name)
    if sample is None:
        raise DataError(f"unknown sample {name!r}: choose one of {', '.join(SAMPLES)}")
    raw = read_table(sample_path(name))
    if sample.end_labelled:
        first = raw.columns[0]
        ends = pd.to_datetime(raw[first])
        raw[first] = ends.dt.to_period("M").dt.start_time.dt.strftime("%Y-%m-%d")
    return raw, sample


def _parse_synthetic(spec: str) -> pd.DataFrame:
    """``KIND?key=value&...`` -> :func:`synthetic_market` (booleans: 1/0, true/false, yes/no)."""
    from rltrade.data.synthetic import synthetic_market

    kind, _, query = spec.partition("?")
    params: dict[str, object] = {}
    # A literal "+" (a UTC offset in start=...) must not become a space.
    for key, value in parse_qsl(query.replace("+", "%2B"), keep_blank_values=True):
        if key in ("n_bars", "seed"):
            problem = f"synthetic source: {key} must be an integer, got {value!r}"
            try:
                number = float(value)
            except ValueError as exc:
                raise DataError(problem) from exc
            if not number.is_integer():
                raise DataError(problem)
            params[key] = int(number)
        elif key in ("derivatives", "include_truth"):
            flag = value.strip().lower()
            if flag not in _BOOLEANS:
                raise DataError(f"synthetic source: {key} must be true or false, got {value!r}")
            params[key] = _BOOLEANS[flag]
        elif key in ("timeframe", "start"):
            params[key] = value
        else:
            try:
                params[key] = float(value)
            except ValueError as exc:
                raise DataError(f"synthetic source: cannot read {key}={value!r}") from exc
    return synthetic_market(kind or "gbm", **params)  # type: ignore[arg-type]


_BOOLEANS = {"1": True, "true": True, "yes": True, "on": True,
             "0": False, "false": False, "no": False, "off": False}


def load_bars_with_report(
    source: str | Path | pd.DataFrame,
    *,
    timeframe: str | None = None,
    start: str | pd.Timestamp | None = None,
    end: str | pd.Timestamp | None = None,
    policy: Policy = "strict",
    naive_tz: str | None = None,
    symbol: str | None = None,
    store_root: str | Path | None = None,
    columns: Iterable[str] = OHLCV,
    calendar: str | None = "auto",
    format: str | None = None,
) -> tuple[pd.DataFrame, ValidationReport]:
    """Like :func:`load_bars` but also returns the :class:`ValidationReport`."""
    label = source if isinstance(source, str | Path) else "DataFrame"
    label = str(label)
    attrs: dict[str, object] = {"source": label}
    if isinstance(source, pd.DataFrame):
        raw = source
    elif isinstance(source, str) and source.startswith("sample:"):
        raw, sample = _load_sample(source.removeprefix("sample:"))
        attrs.update(symbol=sample.symbol, timeframe=sample.timeframe)
        timeframe = timeframe or sample.timeframe
        naive_tz = naive_tz or "UTC"  # documented: the bundled samples are UTC
    elif isinstance(source, str) and source.startswith("synthetic:"):
        raw = _parse_synthetic(source.removeprefix("synthetic:"))
        attrs.update(symbol="SYNTH", timeframe=raw.attrs.get("timeframe"))
        timeframe = timeframe or raw.attrs.get("timeframe")
    elif isinstance(source, str) and source.startswith("store:"):
        from rltrade.data.store import BarStore

        sym, _, tf = source.removeprefix("store:").rpartition("/")
        if not sym or not tf:
            raise DataError(
                f"store source {source!r}: use store:SYMBOL/TIMEFRAME, e.g. store:BTCUSDT/1h"
            )
        root = store_root or os.environ.get("RLTRADE_STORE") or "data/store"
        raw = BarStore(root).read(sym, tf)
        attrs.update(symbol=sym, timeframe=parse_timeframe(tf).name)
        timeframe = timeframe or tf
    elif is_polygon_source(Path(source), format):
        raw = read_polygon(Path(source), symbol)
        attrs["symbol"] = raw.attrs.get("symbol")
    else:
        path = Path(source)
        raw = read_table(path)
        attrs["symbol"] = path.name.split(".")[0]

    report = validate_bars(raw, timeframe, policy, naive_tz=naive_tz, source=label,
                           columns=columns, calendar=calendar)
    for finding in report.findings:
        if finding.severity == "warning":
            if finding.code == "naive_timestamps":
                warnings.warn(f"{label}: {finding.message}", DataWarning, stacklevel=3)
            log.warning("{}: {}", label, finding.message)
        elif finding.severity == "error" and finding.fixed:
            log.info("{}: repaired {}: {}", label, finding.code, finding.fixed)
    bars = report.bars
    assert bars is not None
    if start is not None:
        bars = bars[bars.index >= to_utc(start)]
    if end is not None:
        bars = bars[bars.index < to_utc(end)]
    if (start is not None or end is not None) and bars.empty:
        raise DataError(f"{label}: no bars between {start} and {end}")
    bars = bars.copy() if bars is raw else bars
    attrs["timeframe"] = attrs.get("timeframe") or report.timeframe
    attrs["calendar"] = report.calendar
    if symbol:
        attrs["symbol"] = symbol
    bars.attrs.update(attrs)
    return bars, report


def load_bars(
    source: str | Path | pd.DataFrame,
    *,
    timeframe: str | None = None,
    start: str | pd.Timestamp | None = None,
    end: str | pd.Timestamp | None = None,
    policy: Policy = "strict",
    naive_tz: str | None = None,
    symbol: str | None = None,
    store_root: str | Path | None = None,
    columns: Iterable[str] = OHLCV,
    calendar: str | None = "auto",
    format: str | None = None,
) -> pd.DataFrame:
    """Load bars from a file, a bundled sample, a synthetic market or the store, validated.

    :param source: a CSV/Parquet path, ``"sample:EURUSD-1h"``, ``"synthetic:gbm?n_bars=5000"``,
        ``"store:BTCUSDT/1h"`` or a DataFrame.
    :param timeframe: expected bar spacing (``"1h"``...); inferred when omitted.
    :param start: keep bars whose open time is at or after this (UTC unless zoned).
    :param end: keep bars whose open time is before this (exclusive).
    :param policy: ``"strict"`` (default) raises :class:`~rltrade.errors.ValidationError` on any
        error; ``"repair"`` applies the documented fixes (see
        :mod:`rltrade.data.validation`); ``"report"`` returns the bars as they are.
    :param naive_tz: time zone of naive timestamps; default UTC with a :class:`DataWarning`.
    :param columns: the price/volume columns required and checked (see
        :func:`~rltrade.data.validate_bars`); ``("close",)`` for a series of which only the
        close is used (an external series such as VIX): a file of dates and closes is enough,
        and broken open/high/low are neither errors nor repaired.
    :param calendar: the market calendar (``24/7``, ``24/5``, ``XNYS-RTH``, ``XNYS-EXT``,
        ``CMES``; see :mod:`rltrade.data.calendars`) whose sessions gaps are counted in;
        ``"auto"`` infers it from the bars, ``None`` uses none.
    :param format: ``"polygon"`` for Polygon.io aggregates (a REST JSON response, a flat
        file, or a folder tree of them; see :func:`~rltrade.data.parsing.read_polygon`),
        filtered by ``symbol`` (the ticker); ``None`` works it out (a ``.json`` file, a
        folder, or a CSV with Polygon's flat-file header are read as Polygon).
    :returns: a DataFrame with a UTC ``DatetimeIndex`` named ``timestamp`` and float64 columns
        ``open, high, low, close, volume`` plus any extra numeric columns (``open_interest``,
        ``funding_rate``, ``spread``, ``vwap``, ``trades``...). ``df.attrs`` holds ``source``,
        ``symbol``, ``timeframe`` and ``calendar`` (the calendar used, ``None`` when none).
    """
    bars, _ = load_bars_with_report(
        source,
        timeframe=timeframe,
        start=start,
        end=end,
        policy=policy,
        naive_tz=naive_tz,
        symbol=symbol,
        store_root=store_root,
        columns=columns,
        calendar=calendar,
        format=format,
    )
    return bars


_FORMATS = ("polygon",)


def is_polygon_source(path: Path, fmt: str | None) -> bool:
    """Whether ``path`` is read as Polygon aggregates: ``fmt="polygon"``, or recognised (a
    folder, a ``.json`` file, or a CSV with Polygon's flat-file header).

    :param path: a file or folder.
    :param fmt: the format asked for (``None``: recognise it).
    :raises DataError: for an unknown ``fmt``.
    """
    if fmt is not None:
        if fmt.lower() not in _FORMATS:
            raise DataError(f"unknown format {fmt!r}: use polygon (or leave it out: CSV and "
                            "Parquet are recognised)")
        return True
    name = path.name.lower()
    if path.is_dir() or name.endswith((".json", ".json.gz")):
        return True
    if not name.endswith((".csv", ".csv.gz")) or not path.is_file():
        return False
    try:
        import gzip

        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8", errors="replace") as fh:
            header = fh.readline().strip().lower().split(",")
    except OSError:
        return False
    return set(POLYGON_FLAT_COLUMNS) <= set(header)


def symbol_from_path(path: str | Path) -> str:
    """The symbol a file's name suggests: its name before the first dot, without a trailing
    ``_<timeframe>`` (``HD_1d.csv`` -> ``HD``, ``btcusdt_1h.csv.gz`` -> ``btcusdt``).

    :param path: a bar file's path.
    """
    stem = Path(path).name.split(".")[0]
    head, sep, tail = stem.rpartition("_")
    if sep and head:
        try:
            parse_timeframe(tail)
            return head
        except DataError:
            pass
    return stem
