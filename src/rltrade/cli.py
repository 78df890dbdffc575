"""The ``rltrade`` command: a thin shell over functions a user can also call from Python.

Every deliberate error (:class:`~rltrade.errors.RLTradeError`) and every usage error (an unknown
or missing option, an extra argument) becomes one line on stderr starting with ``error:`` and
exit code 2; ``rltrade data validate`` uses 1 for "the file was read and has problems".

Log lines are held back while a command runs and printed when it succeeds (or, for training, as
soon as the run has started), so a command that fails prints only its ``error:`` line; ``-v``
streams every log line (DEBUG and up) as it happens.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from rltrade import __version__
from rltrade.errors import DataError, RLTradeError, ValidationError
from rltrade.logs import (
    discard_deferred_logs,
    progress_bar,
    release_deferred_logs,
    setup_logging,
)

app = typer.Typer(
    name="rltrade",
    help="Train and honestly judge reinforcement-learning trading agents.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(
    help="Bars: load, validate, resample, store, download. Alone: summarise a source.",
    no_args_is_help=False,
)
app.add_typer(data_app, name="data")
features_app = typer.Typer(
    help="Features, strategy signals and Datasets: list, build, write the default spec.",
    no_args_is_help=True,
)
app.add_typer(features_app, name="features")

console = Console(width=None if sys.stdout.isatty() else 150)
err_console = Console(stderr=True)

DEFAULT_SOURCE = "sample:EURUSD-1h"
StoreOpt = Annotated[
    Path,
    typer.Option("--store", help="Bar store folder.", envvar="RLTRADE_STORE"),
]
PolicyOpt = Annotated[
    bool,
    typer.Option("--repair", help="Apply the documented fixes instead of failing on errors."),
]
NaiveTzOpt = Annotated[
    str | None,
    typer.Option("--naive-tz", help="Time zone of naive timestamps (default UTC, with a warning)."),
]


def _version_callback(value: bool) -> None:
    if value:
        console.print(f"rltrade {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True)
    ] = False,
) -> None:
    setup_logging("DEBUG" if verbose else "INFO", defer=not verbose)
    # Data warnings are logged (and shown in reports); don't print them twice.
    from rltrade.data import DataWarning

    warnings.simplefilter("ignore", DataWarning)


# ------------------------------------------------------------------------------------------
# data


def _fmt_pct(x: float) -> str:
    return "n/a" if not np.isfinite(x) else f"{x * 100:+.2f}%"


def _findings_table(report) -> Table:
    from rich.markup import escape  # messages quote file contents: no markup from them

    table = Table(title=f"Validation: {report.verdict()}", title_justify="left")
    table.add_column("severity")
    table.add_column("check")
    table.add_column("count", justify="right")
    table.add_column("details")
    table.add_column("repair")
    style = {"error": "red", "warning": "yellow", "info": "dim"}
    for f in report.findings:
        details = f.message + (f"\ne.g. {', '.join(f.examples)}" if f.examples else "")
        table.add_row(
            f"[{style[f.severity]}]{f.severity}[/]", f.code, str(f.count), escape(details),
            escape(f.fixed or ""),
        )
    if not report.findings:
        table.add_row("[green]ok[/]", "all checks", "0", "nothing to report", "")
    return table


def _summary(source: str, policy: str, naive_tz: str | None) -> None:
    from rltrade.data import load_bars_with_report
    from rltrade.data.store import fingerprint_bars
    from rltrade.evaluation.series import resolve_bars_per_year

    bars, report = load_bars_with_report(source, policy=policy, naive_tz=naive_tz)  # type: ignore[arg-type]
    tf = bars.attrs.get("timeframe")
    close = bars["close"].to_numpy()
    logret = np.diff(np.log(close))
    ann, basis = resolve_bars_per_year(bars.index, tf, calendar=bars.attrs.get("calendar"))
    table = Table(title=f"Bars: {source}", title_justify="left", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    table.add_row("symbol", str(bars.attrs.get("symbol", "")))
    table.add_row("timeframe", str(tf))
    table.add_row("calendar", str(bars.attrs.get("calendar") or "-"))
    table.add_row("range", f"{bars.index[0]} -> {bars.index[-1]}")
    table.add_row("bars", f"{len(bars):,}")
    table.add_row("columns", ", ".join(bars.columns))
    table.add_row("first / last close", f"{close[0]:.6g} / {close[-1]:.6g}")
    table.add_row("total return", _fmt_pct(close[-1] / close[0] - 1))
    table.add_row("annualised volatility", f"{np.std(logret) * np.sqrt(ann) * 100:.1f}%")
    table.add_row("bars per year", f"{ann:,.0f} ({basis})")
    table.add_row("mean volume", f"{bars['volume'].mean():,.2f}")
    table.add_row("fingerprint", fingerprint_bars(bars)[:16])
    console.print(table)
    console.print(_findings_table(report))
    discard_deferred_logs()  # the findings table says what the held log lines said


@data_app.callback(invoke_without_command=True)
def data_main(
    ctx: typer.Context,
    source: Annotated[
        str,
        typer.Option(
            "--source",
            "-s",
            help="File, sample:NAME, synthetic:KIND?n_bars=..&seed=.., or store:SYMBOL/TF.",
        ),
    ] = DEFAULT_SOURCE,
    repair: PolicyOpt = False,
    naive_tz: NaiveTzOpt = None,
) -> None:
    """Load, validate and summarise bars (default: the bundled EURUSD hourly sample)."""
    if ctx.invoked_subcommand is None:
        _summary(source, "repair" if repair else "strict", naive_tz)


@data_app.command("summary")
def data_summary(
    source: Annotated[
        str, typer.Argument(help="File, sample:NAME, synthetic:KIND or store:SYM/TF.")
    ],
    repair: PolicyOpt = False,
    naive_tz: NaiveTzOpt = None,
) -> None:
    """Load, validate and summarise one source of bars."""
    _summary(source, "repair" if repair else "strict", naive_tz)


@data_app.command("samples")
def data_samples() -> None:
    """List the bundled real samples and the synthetic market kinds."""
    from rltrade.data import SAMPLES
    from rltrade.data.synthetic import KINDS

    table = Table(title="Sources", title_justify="left")
    table.add_column("source")
    table.add_column("description")
    for name, sample in SAMPLES.items():
        table.add_row(f"sample:{name}", sample.description)
    for kind in KINDS:
        table.add_row(f"synthetic:{kind}", "seeded synthetic market (?n_bars=&seed=&timeframe=)")
    console.print(table)


@data_app.command("validate")
def data_validate(
    file: Annotated[str, typer.Argument(help="CSV/Parquet file (or any source load_bars takes).")],
    timeframe: Annotated[
        str | None, typer.Option("--timeframe", "-t", help="Expected bar spacing, e.g. 1h.")
    ] = None,
    repair: PolicyOpt = False,
    out: Annotated[
        Path | None, typer.Option("--out", help="With --repair: write the repaired bars here.")
    ] = None,
    naive_tz: NaiveTzOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    fail_on: Annotated[
        str,
        typer.Option(
            "--fail-on",
            help="error (default): exit 1 on errors; warning: on warnings too (gaps, jumps...).",
        ),
    ] = "error",
    calendar: Annotated[
        str | None,
        typer.Option("--calendar", help="Market calendar whose sessions gaps are counted in: "
                     "24/7, 24/5, XNYS-RTH, XNYS-EXT, CMES, none (default: inferred)."),
    ] = None,
    fmt: Annotated[
        str | None, typer.Option("--format", help="polygon: Polygon.io aggregates.")
    ] = None,
    symbol: Annotated[
        str | None, typer.Option("--symbol", help="Polygon: the ticker to keep.")
    ] = None,
) -> None:
    """Validate a file of bars: exit 0 when usable, 1 when it has errors (or warnings, with
    --fail-on warning), 2 when unreadable. Gaps are counted inside the sessions of the
    market calendar (given, or inferred from the bars)."""
    from rltrade.data.loaders import load_bars_with_report

    if fail_on not in ("error", "warning"):
        raise typer.BadParameter(f"{fail_on!r}: use error or warning", param_hint="--fail-on")

    policy = "repair" if repair else "report"
    cal = None if calendar is not None and calendar.strip().lower() == "none" else (
        calendar or "auto")
    bars, report = load_bars_with_report(
        file, timeframe=timeframe, policy=policy, naive_tz=naive_tz, calendar=cal, format=fmt,
        symbol=symbol,
    )
    if as_json:
        console.print_json(json.dumps(report.to_dict()))
    else:
        console.print(_findings_table(report))
        console.print(
            f"{report.rows_in:,} rows in, {report.rows_out:,} out; timeframe {report.timeframe}; "
            f"calendar {report.calendar or '-'}; {report.start} -> {report.end}"
        )
    discard_deferred_logs()  # the findings were the log lines held back: printed once, above
    if out is not None:
        if not repair and report.errors:
            raise ValidationError(f"{file}: not writing bars with errors; add --repair", report)
        _write_bars(bars, out)
        console.print(f"wrote {len(bars):,} bars to {out}")
    if report.errors and not (repair and report.ok):
        raise typer.Exit(1)
    if fail_on == "warning" and report.warnings:
        err_console.print(
            f"{len(report.warnings)} warning(s) and --fail-on warning: exit 1",
            markup=False, highlight=False,
        )
        raise typer.Exit(1)


def _exchange_client(exchange: str, exchange_config: Path | None) -> object:
    """The exchange id, or a ccxt client built with the settings of ``--exchange-config``."""
    from rltrade.data.exchange import make_exchange
    from rltrade.errors import ConfigError

    if exchange_config is None:
        return exchange
    try:
        settings = json.loads(exchange_config.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"--exchange-config {exchange_config}: {exc}") from exc
    if not isinstance(settings, dict):
        raise ConfigError(f"--exchange-config {exchange_config}: expected a JSON object")
    return make_exchange(exchange, config=settings)


def _write_bars(bars, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() in (".parquet", ".pq"):
        bars.to_parquet(out)
    else:
        bars.to_csv(out, date_format="%Y-%m-%dT%H:%M:%SZ")


@data_app.command("resample")
def data_resample(
    source: Annotated[str, typer.Argument(help="Bars to resample (any load_bars source).")],
    timeframe: Annotated[str, typer.Option("--timeframe", "-t", help="Target, e.g. 4h.")],
    out: Annotated[Path, typer.Option("--out", help="Output CSV or Parquet file.")],
    repair: PolicyOpt = False,
) -> None:
    """Resample bars to a higher timeframe (open-time labels, incomplete last bar dropped)."""
    from rltrade.data import load_bars
    from rltrade.data.resample import resample

    bars = load_bars(source, policy="repair" if repair else "strict")
    result = resample(bars, timeframe)
    _write_bars(result, out)
    console.print(f"{len(bars):,} bars -> {len(result):,} {timeframe} bars in {out}")


@data_app.command("import")
def data_import(
    files: Annotated[
        list[str],
        typer.Argument(help="Files to import: CSV/Parquet, or Polygon JSON / flat files / a "
                       "folder of them; several, or a quoted glob such as 'daily/*.csv'."),
    ],
    symbol: Annotated[
        str | None,
        typer.Option("--symbol", help="Symbol to store under (Polygon: the ticker to keep). "
                     "Default: each file's name (HD_1d.csv -> HD), or a Polygon file's ticker."),
    ] = None,
    timeframe: Annotated[
        str | None, typer.Option("--timeframe", "-t", help="Bar timeframe (inferred if omitted).")
    ] = None,
    store: StoreOpt = Path("data/store"),
    repair: PolicyOpt = False,
    naive_tz: NaiveTzOpt = None,
    fmt: Annotated[
        str | None,
        typer.Option("--format", help="polygon: Polygon.io aggregates (REST JSON or flat "
                     "files); default: recognised from the file."),
    ] = None,
    calendar: Annotated[
        str | None,
        typer.Option("--calendar", help="Market calendar for the gap check: 24/7, 24/5, "
                     "XNYS-RTH, XNYS-EXT, CMES (default: inferred)."),
    ] = None,
) -> None:
    """Validate files of bars and merge them into the bar store, one summary row per file.

    Polygon files (``--format polygon``, or recognised) are read together as one series of
    ``--symbol``. Exit 1 when a file of several could not be imported (the others are)."""
    from rich.markup import escape

    from rltrade.data.loaders import is_polygon_source

    paths = _expand_files(files)
    policy = "repair" if repair else "strict"
    cal = calendar or "auto"
    polygon = is_polygon_source(Path(paths[0]), fmt)
    groups = [paths] if polygon else [[p] for p in paths]
    if len(groups) == 1:
        row = _import_one(groups[0], symbol, timeframe, store, policy, naive_tz, fmt, cal)
        console.print(f"{row['symbol']} {row['timeframe']}: {row['added']:,} added, "
                      f"{row['replaced']:,} replaced, {row['unchanged']:,} unchanged in {store} "
                      f"(calendar {row['calendar'] or '-'}; {escape(row['verdict'])})")
        return
    table = Table(title=f"Import into {store}", title_justify="left")
    for col in ("file", "symbol", "timeframe", "calendar", "rows", "validation", "added",
                "replaced", "unchanged"):
        table.add_column(col, justify="right" if col in ("rows", "added", "replaced",
                                                         "unchanged") else "left")
    failed = 0
    for group in groups:
        try:
            row = _import_one(group, symbol, timeframe, store, policy, naive_tz, fmt, cal)
        except RLTradeError as exc:
            failed += 1
            table.add_row(escape(group[0]), symbol or "", "", "", "",
                          f"[red]{escape(str(exc))}[/]", "", "", "")
            continue
        table.add_row(escape(group[0]), row["symbol"], row["timeframe"], row["calendar"] or "-",
                      f"{row['rows']:,}", escape(row["verdict"]), f"{row['added']:,}",
                      f"{row['replaced']:,}", f"{row['unchanged']:,}")
    console.print(table)
    discard_deferred_logs()  # each file's findings are its row's verdict
    if failed:
        err_console.print(f"{failed} of {len(groups)} file(s) not imported", markup=False,
                          highlight=False)
        raise typer.Exit(1)


def _expand_files(files: list[str]) -> list[str]:
    """The files named, quoted glob patterns expanded (in name order)."""
    import glob

    out: list[str] = []
    for item in files:
        if not Path(item).exists() and glob.has_magic(item):
            matched = sorted(glob.glob(item, recursive=True))
            if not matched:
                raise DataError(f"{item}: no file matches this pattern")
            out.extend(matched)
        else:
            out.append(item)
    return out


def _import_one(
    group: list[str], symbol: str | None, timeframe: str | None, store: Path, policy: str,
    naive_tz: str | None, fmt: str | None, calendar: str,
) -> dict[str, Any]:
    """Load (validated), write into the store, and the summary row of one file (or one
    Polygon series of several files)."""
    import pandas as pd

    from rltrade.data.loaders import is_polygon_source, load_bars_with_report, symbol_from_path
    from rltrade.data.parsing import read_polygon
    from rltrade.data.store import BarStore

    if len(group) > 1:  # Polygon files of one series: read together
        frames = [read_polygon(Path(p), symbol) for p in group]
        raw = pd.concat(frames, ignore_index=True)
        sym = symbol or frames[0].attrs.get("symbol")
        bars, report = load_bars_with_report(raw, timeframe=timeframe, policy=policy,  # type: ignore[arg-type]
                                             naive_tz=naive_tz, calendar=calendar)
        source = f"polygon:{Path(group[0]).name}+{len(group) - 1}"
    else:
        bars, report = load_bars_with_report(group[0], timeframe=timeframe, policy=policy,  # type: ignore[arg-type]
                                             naive_tz=naive_tz, symbol=symbol, format=fmt,
                                             calendar=calendar)
        sym = symbol or (bars.attrs.get("symbol") if is_polygon_source(Path(group[0]), fmt)
                         else symbol_from_path(group[0]))
        source = f"file:{Path(group[0]).name}"
    tf = timeframe or bars.attrs.get("timeframe")
    if not tf:
        raise ValidationError(f"{group[0]}: cannot infer the timeframe; pass --timeframe")
    if not sym:
        raise DataError(f"{group[0]}: no symbol; pass --symbol")
    stats = BarStore(store).write(str(sym), tf, bars, source=source)
    return {"symbol": str(sym), "timeframe": str(tf), "calendar": report.calendar,
            "rows": len(bars), "verdict": report.verdict(), **stats}


@data_app.command("info")
def data_info(store: StoreOpt = Path("data/store")) -> None:
    """Symbols, timeframes, ranges, row counts and gaps in the bar store."""
    from rltrade.data.store import BarStore

    rows = BarStore(store).info()
    table = Table(title=f"Bar store {store}", title_justify="left")
    for col in ("symbol", "timeframe", "start", "end", "rows", "gaps", "missing", "fingerprint"):
        table.add_column(col, justify="right" if col in ("rows", "gaps", "missing") else "left")
    for r in rows:
        table.add_row(
            r.symbol,
            r.timeframe,
            str(r.start),
            str(r.end),
            f"{r.rows:,}",
            str(r.gaps),
            str(r.missing_bars),
            r.fingerprint[:16],
        )
    if not rows:
        table.add_row("(empty)", "", "", "", "0", "", "", "")
    console.print(table)


@data_app.command("download")
def data_download(
    exchange: Annotated[str, typer.Option("--exchange", help="CCXT exchange id, e.g. binance.")],
    symbol: Annotated[
        str, typer.Option("--symbol", help="Market, e.g. BTC/USDT or BTC/USDT:USDT.")
    ],
    timeframe: Annotated[str, typer.Option("--timeframe", "-t", help="e.g. 1h.")],
    start: Annotated[str, typer.Option("--start", help="UTC start (inclusive), e.g. 2024-01-01.")],
    end: Annotated[str, typer.Option("--end", help="UTC end (exclusive).")],
    store: StoreOpt = Path("data/store"),
    with_derivatives: Annotated[
        bool,
        typer.Option("--with-derivatives", help="Also fetch open interest and funding rates."),
    ] = False,
    exchange_config: Annotated[
        Path | None,
        typer.Option(
            "--exchange-config",
            help="JSON file of ccxt client settings (options, urls, timeout); no credentials: "
            "those come from RLTRADE_<EXCHANGE>_API_KEY / _SECRET.",
        ),
    ] = None,
    backoff: Annotated[
        float,
        typer.Option("--backoff", min=0.0,
                     help="First retry delay in seconds (doubles on each retry)."),
    ] = 1.0,
) -> None:
    """Download bars through CCXT into the store; only what the store lacks is fetched.

    Exit code 1 when some bars could not be fetched (empty pages although the exchange has
    later bars): they are not recorded as covered, so running the same command again asks for
    them.
    """
    from rltrade.data.exchange import download_bars
    from rltrade.data.store import BarStore

    client = _exchange_client(exchange, exchange_config)
    with progress_bar(f"download {symbol} {timeframe}", unit="bars") as update:
        result = download_bars(
            client, symbol, timeframe, start, end, BarStore(store),  # type: ignore[arg-type]
            with_derivatives=with_derivatives, backoff=backoff, progress=update,
        )
    console.print(result.summary(), markup=False, highlight=False)
    for line in result.derivative_gaps:
        err_console.print(f"warning: {line}", markup=False, highlight=False)
    if not result.complete:
        err_console.print(
            f"incomplete: {result.bars_missing} bar(s) not fetched; run the same command again",
            markup=False, highlight=False,
        )
        raise typer.Exit(1)


# ------------------------------------------------------------------------------------------
# features


@features_app.command("list")
def features_list() -> None:
    """Every available feature group and strategy, with its parameters."""
    from rltrade.features import FEATURES, STRATEGIES

    table = Table(title="Feature groups", title_justify="left")
    for col in ("name", "parameters (defaults)", "columns", "description"):
        table.add_column(col)
    for name, definition in FEATURES.items():
        cols = ", ".join(definition.norms(definition.defaults))
        notes = definition.description
        if definition.requires:
            notes += f" [needs {', '.join(definition.requires)}]"
        if definition.intraday_only:
            notes += " [intraday only]"
        table.add_row(name, _params(definition.defaults), cols, notes)
    table.add_row("external", "name, source, column=close, shift=1d", "ext_<name>",
                  "a daily series (e.g. VIX) joined after a one-day shift (spec: external:)")
    console.print(table)
    table = Table(title="Strategies (signals one-hot: FLAT, LONG, SHORT, HOLD)",
                  title_justify="left")
    for col in ("name", "timeframe", "parameters (defaults)", "description"):
        table.add_column(col)
    for name, cls in STRATEGIES.items():
        table.add_row(name, cls.timeframe or "base", _params(cls.defaults), cls.description)
    console.print(table)


def _params(values: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items()) or "-"


@features_app.command("spec")
def features_spec(
    out: Annotated[Path | None, typer.Option("--out", help="Write here (default: stdout).")] = None,
) -> None:
    """Write the default feature spec as YAML, every default spelled out."""
    from rltrade.features import FeatureSpec

    text = "# rltrade feature spec (defaults). Edit, then: rltrade features build --spec FILE\n"
    text += FeatureSpec.default().to_yaml()
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text)
        console.print(f"wrote {out}")


@features_app.command("build")
def features_build(
    data: Annotated[str, typer.Option("--data", help="Bars: file, sample:, synthetic: or store:.")],
    out: Annotated[Path, typer.Option("--out", help="Folder to write the Dataset into.")],
    spec: Annotated[
        Path | None, typer.Option("--spec", help="Feature spec YAML (default spec if omitted).")
    ] = None,
    start: Annotated[str | None, typer.Option("--start", help="First bar (UTC).")] = None,
    end: Annotated[str | None, typer.Option("--end", help="End (exclusive, UTC).")] = None,
    repair: PolicyOpt = False,
) -> None:
    """Build a Dataset (features + strategy signals) from bars and save it."""
    from rltrade.data import load_bars
    from rltrade.features import FeatureSpec, build_dataset

    feature_spec = FeatureSpec.from_yaml(spec) if spec else FeatureSpec.default()
    bars = load_bars(data, start=start, end=end, policy="repair" if repair else "strict")
    dataset = build_dataset(bars, feature_spec)
    dataset.save(out)
    table = Table(title=f"Dataset {out}", title_justify="left", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    meta = dataset.describe()
    table.add_row("bars", f"{data} ({meta['timeframe']}) {meta['start']} -> {meta['end']}")
    table.add_row("rows", f"{meta['rows']:,} ({meta['warmup_dropped']:,} warm-up rows dropped)")
    table.add_row("features", f"{len(meta['feature_names'])}: {', '.join(meta['feature_names'])}")
    table.add_row("strategies", ", ".join(
        f"{n}@{tf}" for n, tf in zip(meta["strategy_order"], meta["strategy_timeframes"],
                                     strict=True)) or "-")
    table.add_row("skipped", "; ".join(meta["skipped"]) or "-")
    table.add_row("spec hash", meta["spec_hash"][:16])
    table.add_row("data fingerprint", meta["fingerprint"][:16])
    console.print(table)


# ------------------------------------------------------------------------------------------
# config, train, demo

config_app = typer.Typer(help="Run configs: write a commented example, validate a file.",
                         no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("example")
def config_example(
    out: Annotated[Path | None, typer.Option("--out", help="Write here (default: stdout).")] = None,
    preset: Annotated[str | None, typer.Option(
        "--preset", help="Costs and instrument of a market: crypto-spot, crypto-perp, fx, "
                         "us-equity or cme-micro (docs/engine.md, Instruments).")] = None,
) -> None:
    """Write a commented starting config (every key optional, defaults shown)."""
    from rltrade.config import example_yaml

    text = example_yaml(preset)
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text)
        console.print(f"wrote {out}")


@config_app.command("validate")
def config_validate(
    file: Annotated[Path, typer.Argument(help="A run config YAML file.")],
) -> None:
    """Check a run config: unknown keys, bad values and hyperparameters, ranges, credentials
    (exit 2); says how the step counts round to whole rollouts."""
    from rltrade.agents.algorithms import check_hyperparams
    from rltrade.agents.training import step_plan
    from rltrade.config import RunConfig

    cfg = RunConfig.from_yaml(file)
    check_hyperparams(cfg.agent)
    plan = step_plan(cfg)
    console.print(f"{file}: valid ({cfg.agent.algorithm}, {cfg.env.action_scheme}, "
                  f"{cfg.env.reward}, {plan.total_steps:,} steps on {cfg.data.source})",
                  markup=False, highlight=False, soft_wrap=True)
    for note in plan.notes():
        console.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)


RegistryOpt = Annotated[
    Path | None,
    typer.Option("--registry", envvar="RLTRADE_REGISTRY",
                 help="Trial registry file (default: RUNS_DIR/registry.sqlite)."),
]


def _eval_table(title: str, rows: list[tuple[str, dict]]) -> Table:
    table = Table(title=title, title_justify="left")
    for col in ("policy", "total return", "max drawdown", "trades", "Sharpe", "bars"):
        table.add_column(col, justify="right" if col != "policy" else "left")
    for name, r in rows:
        dd = r.get("max_drawdown")
        table.add_row(name, _fmt_pct(_num(r.get("total_return"))),
                      _fmt_pct(-abs(dd)) if dd is not None else "-",
                      str(r.get("trades", "-")),
                      f"{r['sharpe']:.2f}" if r.get("sharpe") is not None else "-",
                      _bars_text(r) if "bars_requested" in r else "-")
    return table


@app.command("train")
def train_cmd(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Run config YAML.")] = None,
    name: Annotated[str | None, typer.Option("--name", "-n",
                                             help="Run name (letters, digits, _).")] = None,
    resume: Annotated[Path | None, typer.Option("--resume",
                                                help="Continue runs/NAME from its last "
                                                     "checkpoint.")] = None,
    runs_dir: Annotated[Path, typer.Option("--runs-dir", help="Where runs live.")] = Path("runs"),
    backtest_start: Annotated[str | None, typer.Option(
        "--backtest-start", help="After training, backtest from here (UTC).")] = None,
    backtest_end: Annotated[str | None, typer.Option(
        "--backtest-end", help="Backtest end (exclusive).")] = None,
    allow_overlap: Annotated[bool, typer.Option(
        "--allow-overlap", help="Accept a backtest range overlapping training (marked).")] = False,
    steps: Annotated[int | None, typer.Option("--steps",
                                              help="Override training.total_steps.")] = None,
    overwrite_failed: Annotated[bool, typer.Option(
        "--overwrite-failed",
        help="If a failed run holds --name, move it aside to NAME.failed-<time> and train "
             "under the name again.")] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
    experiment: Annotated[str | None, typer.Option(
        "--experiment", help="Record the run as a trial of this experiment (default: the run "
                             "name).")] = None,
    registry: RegistryOpt = None,
) -> None:
    """Train an agent into runs/NAME (or resume a crashed run).

    Nothing is written before the data and config are checked; a run is trained by one process
    at a time (a second one, e.g. a --resume of a run still training, exits 2 naming the pid).
    A completed run is recorded as a trial in the registry (see 'rltrade trials').
    """
    from rltrade.agents.training import resume as resume_run
    from rltrade.agents.training import train
    from rltrade.config import RunConfig
    from rltrade.errors import ConfigError

    if resume is not None:
        # (--registry is not refused: RLTRADE_REGISTRY fills it; a resumed run records itself
        # where its metadata says, else $RLTRADE_REGISTRY, else beside the run)
        if config is not None or name is not None or overwrite_failed or experiment is not None:
            raise ConfigError("--resume continues a run with its own config: drop "
                              "--config/--name/--overwrite-failed/--experiment")
        result = resume_run(resume, progress=progress)
    else:
        if name is None:
            raise ConfigError("--name is required (letters, digits and underscores)")
        cfg = RunConfig.from_yaml(config) if config is not None else RunConfig()
        if steps is not None:
            cfg = cfg.with_overrides(training={"total_steps": steps})
        result = train(cfg, name, runs_root=runs_dir, backtest_start=backtest_start,
                       backtest_end=backtest_end, allow_overlap=allow_overlap,
                       progress=progress, overwrite_failed=overwrite_failed,
                       experiment=experiment, registry=registry)
    _after_training(result)


def _after_training(result) -> None:
    from rltrade.evaluation.backtest import stop_text

    run = result.run
    data = result.data
    if run.replaced is not None:
        console.print(f"the failed run of this name was moved aside to {run.replaced}",
                      markup=False, highlight=False, soft_wrap=True)
    console.print(result.describe(), markup=False, highlight=False, soft_wrap=True)
    final = result.final_eval
    rows = [("agent (final)", final)]
    if result.best_eval is not None:
        rows.append((f"agent (best, step {result.best_eval['step']:,})", result.best_eval))
    # the final evaluation's benchmark: buy-and-hold at 1x, same costs, same bars
    rows.append(("buy and hold", {"total_return": final.get("buy_and_hold_return")}))
    console.print(_eval_table("Evaluation on the held-out slice", rows))
    if final.get("stopped_early"):
        console.print(f"agent (final): {stop_text({**final, 'bars_run': final['bars']})}")
    if data.backtest is not None:
        from rltrade.evaluation.judge import backtest_run

        cfg_bt = run.config.backtest
        bt = backtest_run(run, data.backtest, model="final",
                          force_close=bool(cfg_bt and cfg_bt.force_close),
                          allow_overlap=bool(data.backtest_request.get("allow_overlap")),
                          timings=result.timings)
        run.update_metadata(phases=result.timings.to_dict())
        console.print("Backtest range (out of sample):")
        _print_backtest(bt)


BarsPerYearOpt = Annotated[
    float | None,
    typer.Option("--bars-per-year",
                 help="Annualisation override for Sharpe, volatility, CAGR (default: the run's "
                      "evaluation.bars_per_year, else inferred from the data)."),
]


def _bars_per_year(value: float | None) -> float | None:
    from rltrade.errors import ConfigError

    if value is not None and not (np.isfinite(value) and value > 0):
        raise ConfigError(f"--bars-per-year must be a positive number, got {value:g}")
    return value


@app.command("backtest")
def backtest_cmd(
    run: Annotated[Path, typer.Option("--run", help="The trained run, e.g. runs/NAME.")],
    data: Annotated[str | None, typer.Option("--data", help="Bars (default: the run's "
                                             "source).")] = None,
    start: Annotated[str | None, typer.Option("--start", help="First decision bar (UTC).")
                     ] = None,
    end: Annotated[str | None, typer.Option("--end", help="End (exclusive, UTC).")] = None,
    model: Annotated[str, typer.Option("--model", help="final, best or last.")] = "final",
    force_close: Annotated[bool, typer.Option("--force-close",
                                              help="Close the open position at the end.")
                           ] = False,
    baselines: Annotated[bool, typer.Option("--baselines/--no-baselines",
                                            help="Compare with every baseline in the report.")
                         ] = True,
    state_debug: Annotated[bool, typer.Option("--state-debug",
                                              help="Also write the observations.")] = False,
    allow_overlap: Annotated[bool, typer.Option(
        "--allow-overlap", help="Accept a range overlapping training (recorded, marked "
        "in-sample).")] = False,
    bars_per_year: BarsPerYearOpt = None,
) -> None:
    """Backtest a trained run (checks that the data fits the model and does not overlap its
    training first)."""
    from rltrade.evaluation.judge import backtest_run

    result = backtest_run(run, source=data, start=start, end=end, model=model,
                          force_close=force_close, baselines=baselines,
                          state_debug=state_debug, allow_overlap=allow_overlap,
                          bars_per_year=_bars_per_year(bars_per_year))
    _print_backtest(result)


def _bars_text(row) -> str:
    from rltrade.evaluation.judge import bars_text

    return bars_text(row if "bars_run" in row else {**row, "bars_run": row.get("bars")})


def _print_backtest(result) -> None:
    from rltrade.evaluation.backtest import stop_text

    s = result.summary
    m = result.metrics or {}
    perf = m.get("performance") or {}
    sig = m.get("significance") or {}
    bench = m.get("benchmark") or {}
    table = Table(title=f"Backtest {s.get('name')}", title_justify="left", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    table.add_row("range", f"{s.get('start')} -> {s.get('end')} ({_bars_text(s)} bars)")
    table.add_row("equity", f"{s['initial_equity']:,.2f} -> {s['final_equity']:,.2f}")
    table.add_row("total return", _fmt_pct(_num(s.get("total_return"))))
    table.add_row("buy and hold", _fmt_pct(_num(bench.get("total_return"))))
    table.add_row("Sharpe (annualised)", f"{_num(perf.get('sharpe')):.2f}")
    table.add_row("max drawdown", _fmt_pct(_num(perf.get("max_drawdown"))))
    table.add_row("closed trades", str(s.get("n_trades")))
    table.add_row("fills", str(s.get("n_fills")))
    if s.get("open_position"):
        table.add_row("open position at the end", f"{s['open_position']:g} (not closed)")
    table.add_row("PSR / DSR", f"{_num(sig.get('psr')):.3f} / {_num(sig.get('dsr')):.3f}")
    run_info = m.get("run") or {}
    if run_info.get("bars_per_year") is not None:
        table.add_row("bars per year", f"{run_info['bars_per_year']:,.6g} "
                                       f"({run_info.get('bars_per_year_source')})")
    if s.get("stopped_early"):
        table.add_row("[bold red]early stop[/]", stop_text(s))
    if result.path is not None:
        table.add_row("files", str(result.path))
        report = result.path / "report.html"
        if report.exists():
            table.add_row("report", str(report))
    console.print(table)


def _num(x) -> float:
    return float("nan") if x is None else float(x)


def _comparison_table(title: str, table) -> Table:
    from rltrade.evaluation.judge import end_text

    out = Table(title=title, title_justify="left")
    for col in ("policy", "total return", "Sharpe", "max DD", "win rate", "PF", "trades",
                "PSR", "DSR", "bars", "end"):
        out.add_column(col, justify="left" if col == "policy" else "right")
    for r in table.to_dict("records"):
        style = "bold" if r["kind"] == "agent" else None
        out.add_row(str(r["name"]), _fmt_pct(_num(r["total_return"])),
                    f"{_num(r['sharpe']):.2f}", _fmt_pct(_num(r["max_drawdown"])),
                    _fmt_pct(_num(r["win_rate"])).lstrip("+"), f"{_num(r['profit_factor']):.2f}",
                    str(r["trades"]), f"{_num(r['psr']):.3f}", f"{_num(r['dsr']):.3f}",
                    _bars_text(r), end_text(r), style=style)
    return out


def _print_comparison(title: str, table, baselines_under: str | None) -> None:
    from rltrade.evaluation.judge import early_stops

    console.print(_comparison_table(title, table))
    if (table["kind"] == "agent").sum() > 1:
        console.print("each run ran under its own settings (action scheme, costs, engine, "
                      "risk manager, evaluation section)")
    if baselines_under is not None and (table["kind"] == "baseline").any():
        console.print(f"baselines ran under the settings (costs, engine, risk manager) of "
                      f"{baselines_under}")
    for line in early_stops(table):
        console.print(line, style="bold red", markup=False, highlight=False)


@app.command("compare")
def compare_cmd(
    runs: Annotated[list[Path], typer.Argument(help="Trained runs (runs/NAME ...).")],
    data: Annotated[str | None, typer.Option("--data", help="Bars (default: the first run's "
                                             "source).")] = None,
    start: Annotated[str | None, typer.Option("--start", help="First decision bar (UTC).")
                     ] = None,
    end: Annotated[str | None, typer.Option("--end", help="End (exclusive, UTC).")] = None,
    baselines: Annotated[str, typer.Option("--baselines", help="all, none, or a comma list "
                                           "(buy_and_hold,oracle,...).")] = "all",
    out: Annotated[Path | None, typer.Option("--out", help="Folder for comparison.csv/.md "
                                             "and equity.png.")] = None,
    baselines_under: Annotated[str | None, typer.Option(
        "--baselines-under", help="Run (by name) whose costs, engine and risk settings the "
        "baselines run under (default: the first run).")] = None,
    bars_per_year: BarsPerYearOpt = None,
) -> None:
    """Every run over the same bars, each under its own settings (its row is its own
    backtest), and the baselines: one table, one chart."""
    from datetime import UTC, datetime

    from rltrade.evaluation.judge import compare

    chosen: list[str] | str | None
    chosen = None if baselines == "none" else (
        "all" if baselines == "all" else [b.strip() for b in baselines.split(",") if b.strip()])
    out = out or Path("comparisons") / datetime.now(UTC).strftime("cmp_%Y%m%d_%H%M%S")
    result = compare(list(runs), source=data, start=start, end=end, baselines=chosen,
                     out_dir=out, bars_per_year=_bars_per_year(bars_per_year),
                     baselines_under=baselines_under)
    _print_comparison("Comparison (same bars, each run under its own settings)", result.table,
                      result.baselines_under)
    console.print(f"wrote {out}/comparison.csv, comparison.md, equity.png")


@app.command("walkforward")
def walkforward_cmd(
    config: Annotated[Path, typer.Option("--config", "-c", help="Run config YAML with a "
                                         "walkforward: section.")],
    name: Annotated[str, typer.Option("--name", "-n", help="Folder name under --runs-dir "
                                      "(letters, digits, _).")],
    workers: Annotated[int | None, typer.Option("--workers", help="Processes (default: one "
                                                "per core; 1 runs in this process).")] = None,
    runs_dir: Annotated[Path, typer.Option("--runs-dir", help="Where runs live.")] = Path("runs"),
    steps: Annotated[int | None, typer.Option("--steps",
                                              help="Override training.total_steps.")] = None,
    experiment: Annotated[str | None, typer.Option(
        "--experiment", help="Record the fold x seed runs as trials of this experiment "
                             "(default: NAME); walk-forwards of several configs under one "
                             "experiment get a PBO.")] = None,
    registry: RegistryOpt = None,
) -> None:
    """Walk-forward: train every fold with every seed, select on validation, test once; writes
    runs/NAME/walkforward.json, oos_steps.csv and folds/fold_<k>/seed_<s>/ run directories,
    and records every fold x seed run in the trial registry."""
    from rltrade.config import RunConfig
    from rltrade.experiments.walkforward import CpcvResult, walk_forward

    cfg = RunConfig.from_yaml(config)
    if steps is not None:
        cfg = cfg.with_overrides(training={"total_steps": steps})
    result = walk_forward(cfg, name, runs_root=runs_dir, workers=workers, registry=registry,
                          experiment=experiment)
    if isinstance(result, CpcvResult):
        cpcv = Table(title=f"Walk-forward {name} (cpcv): annualised Sharpe of the backtest paths",
                     title_justify="left")
        for col in ("seed", "paths", "min", "q25", "median", "q75", "max"):
            cpcv.add_column(col, justify="right")
        for seed, stats in result.statistics.items():
            d = stats["sharpe"]
            cpcv.add_row(seed, str(d["n"]), *(f"{d[k]:.2f}" if d[k] is not None else "-"
                                              for k in ("min", "q25", "median", "q75", "max")))
        console.print(cpcv)
        console.print(f"report: {result.path / 'report.html'}", markup=False, highlight=False,
                      soft_wrap=True)
        return
    table = Table(title=f"Walk-forward {name}: out of sample, each fold's test window",
                  title_justify="left")
    for col in ("fold", "seed", "test window", "selected step", "validation", "test",
                "buy and hold", "Sharpe"):
        table.add_column(col, justify="left" if col == "test window" else "right")
    for r in result.results:
        fold = result.plan.folds[r.fold]
        ts = result.oos.index[result.oos["fold"] == r.fold]
        window = f"{ts[0]:%Y-%m-%d %H:%M} .. {ts[-1]:%Y-%m-%d %H:%M}" if len(ts) else "-"
        bh = r.baselines.get("buy_and_hold", {}).get("total_return")
        sharpe = r.test.get("sharpe")
        table.add_row(str(fold.index), str(r.seed), window, f"{r.selected.get('step') or 0:,}",
                      _fmt_pct(_num(r.selected["validation"].get("total_return"))),
                      _fmt_pct(_num(r.test.get("total_return"))), _fmt_pct(_num(bh)),
                      f"{sharpe:.2f}" if sharpe is not None else "-")
    console.print(table)
    last = result.oos.iloc[-1]
    parts = [f"{col} {_fmt_pct(float(last[col]) - 1.0)}" for col in result.oos.columns
             if col.startswith("agent_") or col in ("buy_and_hold", "flat")]
    console.print("stitched out-of-sample return: " + ", ".join(parts), markup=False,
                  highlight=False, soft_wrap=True)
    report = result.report
    stats, sig = report["statistics"], report["significance"]
    sh, bh, spa, pbo = (stats["sharpe"], stats["beats_buy_and_hold"], stats["spa"],
                        sig["pbo"])

    def g(x: float | None) -> str:
        return "n/a" if x is None else f"{float(x):.3g}"

    console.print(
        f"IQM Sharpe (annualised) {g(sh['iqm'])} [{g(sh['ci_lower'])}, {g(sh['ci_upper'])}]; "
        f"folds beating buy and hold {bh['folds_beating']}/{bh['folds']}; SPA p "
        f"{g(spa['consistent']) if spa else 'n/a'}; PSR {g(sig['psr'])}, DSR {g(sig['dsr'])} "
        f"(N = {g(sig['n_trials'])} trials of {sig['experiment']}); PBO "
        f"{g(pbo['pbo']) if pbo else 'n/a'}", markup=False, highlight=False, soft_wrap=True)
    console.print(f"wrote {result.path}/walkforward.json, oos_steps.csv and "
                  f"{len(result.results)} fold runs in {result.wall_seconds:.1f} s",
                  markup=False, highlight=False, soft_wrap=True)


@app.command("sweep")
def sweep_cmd(
    config: Annotated[Path, typer.Option("--config", "-c", help="Base run config YAML with a "
                                         "walkforward: section.")],
    space: Annotated[Path, typer.Option("--space", help="YAML: dotted config keys -> "
                                        "distributions (see docs/sweep.md).")],
    trials: Annotated[int, typer.Option("--trials", help="Finished trials wanted.")],
    name: Annotated[str, typer.Option("--name", "-n", help="Folder name under --runs-dir "
                                      "(letters, digits, _); also the experiment.")],
    runs_dir: Annotated[Path, typer.Option("--runs-dir", help="Where runs live.")] = Path("runs"),
    resume: Annotated[bool, typer.Option("--resume", help="Continue the interrupted sweep "
                                         "NAME; finished trials are not run again.")] = False,
    storage: Annotated[str | None, typer.Option(
        "--storage", help="Optuna storage URL (default: sqlite in RUNS_DIR/NAME/).")] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="Local processes (default: "
                                                "one per core; 1 runs in this process).")
                       ] = None,
    ray_address: Annotated[str | None, typer.Option(
        "--ray-address", envvar="RAY_ADDRESS",
        help="Run the units as Ray tasks on this cluster ('local': a private local Ray).")
    ] = None,
    parallel_trials: Annotated[int, typer.Option(
        "--parallel-trials", help="Trials run together per batch (shapes TPE's suggestions: "
                                  "keep it fixed to reproduce a sweep).")] = 4,
    seed: Annotated[int | None, typer.Option("--seed", help="Sampler seed (default: "
                                             "training.seed).")] = None,
    prune: Annotated[bool, typer.Option("--prune/--no-prune", help="Median pruner on the "
                                        "folds.")] = True,
    steps: Annotated[int | None, typer.Option("--steps",
                                              help="Override training.total_steps.")] = None,
    registry: RegistryOpt = None,
) -> None:
    """Hyperparameter sweep (Optuna): every trial walks forward on the validation windows, the
    best configuration once on the test windows (runs/NAME/final/); writes runs/NAME/sweep.json
    and report.html, every trial in the trial registry."""
    from rltrade.config import RunConfig
    from rltrade.experiments.sweep import sweep

    cfg = RunConfig.from_yaml(config)
    if steps is not None:
        cfg = cfg.with_overrides(training={"total_steps": steps})
    executor = None
    if ray_address:
        from rltrade.experiments.ray_executor import RayExecutor, connect, unit_resources

        connect(ray_address)
        cpus, gpus = unit_resources(cfg)
        executor = RayExecutor(num_cpus=cpus, num_gpus=gpus)
    result = sweep(cfg, space, name, trials, runs_dir, workers=workers, executor=executor,
                   storage=storage, resume=resume, seed=seed, parallel_trials=parallel_trials,
                   prune=prune, registry=registry)
    table = Table(title=f"Sweep {name}: objective = median validation Sharpe (annualised)",
                  title_justify="left")
    for col in ("trial", "state", "objective", "parameters"):
        table.add_column(col, justify="left" if col == "parameters" else "right")
    for r in result.trials:
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in r["params"].items())
        table.add_row(str(r["number"]), r["state"],
                      "-" if r["value"] is None else f"{r['value']:.3f}",
                      params if not r["error"] else f"{params} ({r['error']})")
    console.print(table)
    sig = result.report.get("significance")
    if result.best is not None and sig:
        pbo = sig.get("pbo")

        def g(x: float | None) -> str:
            return "n/a" if x is None else f"{float(x):.3g}"

        console.print(
            f"best trial {result.best['number']} walked forward in {result.path / 'final'}: "
            f"DSR {g(sig['dsr'])} (N = {g(sig['n_trials'])} trials of {name}), PBO "
            f"{g(pbo['pbo']) if pbo else 'n/a'}", markup=False, highlight=False,
            soft_wrap=True)
        for why in (sig.get("dsr_skipped"), sig.get("pbo_skipped")):
            if why:
                console.print(f"  n/a: {why}", markup=False, highlight=False, soft_wrap=True)
        oos = getattr(result.final, "oos", None)
        if oos is not None and len(oos):
            last = oos.iloc[-1]
            console.print(
                "  its test windows, stitched, after costs: agent (seeds' median) "
                f"{last['agent_median'] - 1:+.2%}, buy-and-hold {last['buy_and_hold'] - 1:+.2%}, "
                f"flat {last['flat'] - 1:+.2%}", markup=False, highlight=False, soft_wrap=True)
    console.print(f"report: {result.path / 'report.html'}", markup=False, highlight=False,
                  soft_wrap=True)


@app.command("demo")
def demo_cmd(
    steps: Annotated[int | None, typer.Option("--steps", help="Training steps "
                                              "(default: a few minutes on 2 cores).")] = None,
    runs_dir: Annotated[Path, typer.Option("--runs-dir", help="Where runs live.")] = Path("runs"),
    name: Annotated[str | None, typer.Option("--name", help="Run name (default demo_<time>).")
                    ] = None,
    source: Annotated[str, typer.Option("--data", help="Bars to use.")] = DEFAULT_SOURCE,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
) -> None:
    """End to end: train PPO on EUR/USD 1h, judge it on the held-out last 25 %, report."""
    from rltrade.demo import DEMO_STEPS, run_demo

    result = run_demo(runs_root=runs_dir, name=name, steps=steps or DEMO_STEPS, source=source,
                      progress=progress)
    console.print(result.train.describe(), markup=False, highlight=False, soft_wrap=True)
    if result.comparison is not None:
        _print_comparison("Out of sample: the last 25 % of the bars, same engine and costs",
                          result.comparison, result.train.run.name)
    if result.backtest is not None:
        _print_backtest(result.backtest)


# ------------------------------------------------------------------------------------------
# wizard


@app.command("wizard")
def wizard_cmd(
    mode: Annotated[str | None, typer.Option(
        "--mode", help="TRAIN_AND_BACKTEST, TRAIN_ONLY or BACKTEST_ONLY.")] = None,
    name: Annotated[str | None, typer.Option("--name", "-n", help="New run's name.")] = None,
    description: Annotated[str | None, typer.Option("--description")] = None,
    data: Annotated[str | None, typer.Option(
        "--data", help="File, store:SYMBOL/TF, sample:NAME, synthetic:KIND or "
                       "download:EXCHANGE:SYMBOL:TF.")] = None,
    train_start: Annotated[str | None, typer.Option(
        "--train-start", help="First training day, DD-MM-YYYY.")] = None,
    train_end: Annotated[str | None, typer.Option(
        "--train-end", help="Last training day (included), DD-MM-YYYY.")] = None,
    backtest_start: Annotated[str | None, typer.Option(
        "--backtest-start", help="First backtest day, DD-MM-YYYY.")] = None,
    backtest_end: Annotated[str | None, typer.Option(
        "--backtest-end", help="Last backtest day (included), DD-MM-YYYY.")] = None,
    algorithm: Annotated[str | None, typer.Option("--algorithm")] = None,
    action_scheme: Annotated[str | None, typer.Option("--action-scheme")] = None,
    model: Annotated[str | None, typer.Option(
        "--model", help="BACKTEST_ONLY: the run to backtest (name under --runs-dir, or a path).")
    ] = None,
    allow_overlap: Annotated[bool, typer.Option(
        "--allow-overlap", help="Accept a backtest range overlapping training (marked).")] = False,
    start: Annotated[bool | None, typer.Option(
        "--start/--no-start", help="Answer the last question (Start?) in advance.")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Accept the default of every "
                                      "question not answered by a flag.")] = False,
    steps: Annotated[int | None, typer.Option("--steps",
                                              help="Override training.total_steps.")] = None,
    base_config: Annotated[Path | None, typer.Option(
        "--config", "-c", help="Start from this run config (features, env, costs, training); "
                               "the answers replace its data, ranges, algorithm and scheme.")
    ] = None,
    runs_dir: Annotated[Path, typer.Option("--runs-dir", help="Where runs live.")] = Path("runs"),
    store: StoreOpt = Path("data/store"),
    exchange_config: Annotated[Path | None, typer.Option(
        "--exchange-config", help="With download:...: JSON file of ccxt client settings (as "
                                  "for 'rltrade data download').")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
) -> None:
    """The guided flow: mode, description, data, date ranges (DD-MM-YYYY), algorithm and action
    scheme (or an existing model to backtest); writes the config beside the run and runs it.
    See docs/wizard.md."""
    from rltrade.wizard import Prompter, WizardOptions, ask_plan, write_config

    options = WizardOptions(
        mode=mode.upper() if mode else None, name=name, description=description, data=data,
        train_start=train_start, train_end=train_end, backtest_start=backtest_start,
        backtest_end=backtest_end, algorithm=algorithm, action_scheme=action_scheme,
        model=model, allow_overlap=allow_overlap, start=start, steps=steps, runs_dir=runs_dir,
        base_config=base_config)
    plan = ask_plan(options, Prompter(yes=yes, say=_say, read=input))
    if plan.mode == "BACKTEST_ONLY":
        from rltrade.evaluation.judge import backtest_run

        assert plan.backtest is not None
        command = (f"rltrade backtest --run {plan.run} --data {plan.source} --start "
                   f"{plan.backtest[0]} --end {plan.backtest[1]}"
                   + (" --allow-overlap" if plan.allow_overlap else ""))
        if not plan.start:
            _say(f"not started; the same later: {command}")
            return
        if plan.download is not None:
            _wizard_download(plan, store, exchange_config)
        release_deferred_logs()
        result = backtest_run(plan.run, source=plan.source, start=plan.backtest[0],
                              end=plan.backtest[1], allow_overlap=plan.allow_overlap)
        _print_backtest(result)
        _say(f"the same again: {command}")
        return
    from rltrade.agents.training import train

    assert plan.config is not None and plan.name is not None
    path = write_config(plan, runs_dir)
    again = (f"rltrade train --config {path} --name "
             + ("NAME" if plan.start else plan.name)
             + (" --allow-overlap" if plan.allow_overlap else ""))
    if not plan.start:
        _say(f"wrote {path}; not started: train it with {again}")
        return
    _say(f"wrote {path} (train it again: {again})")
    if plan.download is not None:
        _wizard_download(plan, store, exchange_config)
    result = train(plan.config, plan.name, runs_root=runs_dir, allow_overlap=plan.allow_overlap,
                   progress=progress)
    _after_training(result)


def _say(text: str) -> None:
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def _wizard_download(plan, store: Path, exchange_config: Path | None) -> None:
    """The wizard's exchange download, over the dates it asked for, into the bar store."""
    from rltrade.data.exchange import download_bars
    from rltrade.data.store import BarStore

    spec = plan.download
    assert plan.download_range is not None
    release_deferred_logs()
    os.environ["RLTRADE_STORE"] = str(store)  # where the run's store: source reads from
    with progress_bar(f"download {spec.symbol} {spec.timeframe}", unit="bars") as update:
        result = download_bars(_exchange_client(spec.exchange, exchange_config),  # type: ignore[arg-type]
                               spec.symbol, spec.timeframe,
                               plan.download_range[0], plan.download_range[1], BarStore(store),
                               progress=update)
    _say(result.summary())
    if not result.complete:
        err_console.print(f"warning: {result.bars_missing} bar(s) not fetched", markup=False,
                          highlight=False)


# ------------------------------------------------------------------------------------------
# paper trading

paper_app = typer.Typer(
    help="Paper trading through the same engine: a run bar by bar against a broker's paper "
    "account or a replay (docs/paper.md).",
    no_args_is_help=False,
)
app.add_typer(paper_app, name="paper")


@paper_app.callback(invoke_without_command=True)
def paper_main(
    ctx: typer.Context,
    run: Annotated[Path | None, typer.Option("--run", help="The trained run, e.g. runs/NAME.")
                   ] = None,
    broker: Annotated[str, typer.Option("--broker", help="sim, ccxt (sandbox) or ibkr "
                                        "(paper account).")] = "sim",
    data: Annotated[str | None, typer.Option("--data", help="Bars to replay (sim; default: "
                                             "the run's source).")] = None,
    start: Annotated[str | None, typer.Option("--start", help="First decision bar (UTC).")
                     ] = None,
    end: Annotated[str | None, typer.Option("--end", help="End of the replay (exclusive, UTC)."
                                            )] = None,
    speed: Annotated[str, typer.Option("--speed", help="Replay pace: max, or a factor like "
                                       "60x.")] = "max",
    session: Annotated[str | None, typer.Option("--session", help="Session name; an existing "
                                                "session resumes.")] = None,
    model: Annotated[str, typer.Option("--model", help="final, best or last.")] = "final",
    max_daily_loss: Annotated[float | None, typer.Option(
        "--max-daily-loss", help="Kill switch: stop at this fraction lost since the UTC day's "
        "start (0.05 = 5 %).")] = None,
    exchange: Annotated[str | None, typer.Option("--exchange", help="ccxt exchange id "
                                                 "(sandbox only).")] = None,
    symbol: Annotated[str | None, typer.Option("--symbol", help="Symbol at the broker "
                                               "(default: the run's).")] = None,
    host: Annotated[str, typer.Option("--host", help="ibkr: TWS / IB Gateway host.")
                    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="ibkr: the paper port (TWS 7497, "
                                      "Gateway 4002).")] = 7497,
    account: Annotated[str | None, typer.Option("--account", help="ibkr: the paper account "
                                                "(DU...).")] = None,
    store: Annotated[Path | None, typer.Option("--store", help="ccxt / ibkr: the bar store "
                                               "new bars are appended to.",
                                               envvar="RLTRADE_STORE")] = None,
) -> None:
    """Run or resume a paper session of a trained run (``paper status RUN`` shows one)."""
    if ctx.invoked_subcommand is not None:
        return
    if run is None:
        raise typer.BadParameter("--run is required (rltrade paper --run runs/NAME ...)",
                                 param_hint="--run")
    from rltrade.live.trader import run_paper

    venue: object = broker
    if broker != "sim":
        from rltrade.live.venues import make_venue

        venue = make_venue(broker, run, exchange=exchange, symbol=symbol, host=host, port=port,
                           account=account, store=store)
    result = run_paper(run, broker=venue, data=data, start=start, end=end, speed=speed,
                       session=session, model=model, max_daily_loss=max_daily_loss)
    s = result.summary
    console.print(f"paper session {s['session']} ({s['broker']}): {s['status']}"
                  f"{' - ' + s['kill_reason'] if s.get('kill_reason') else ''}; "
                  f"{s['start']} .. {s['end']}, {s['bars']} bars, {s['n_trades']} closed "
                  f"trades, equity {s['initial_equity']:,.2f} -> {s['final_equity']:,.2f} "
                  f"({s['total_return']:+.2%}); {result.path}",
                  markup=False, highlight=False, soft_wrap=True)


@paper_app.command("status")
def paper_status_cmd(
    run: Annotated[Path, typer.Argument(help="The run, e.g. runs/NAME.")],
    session: Annotated[str | None, typer.Option("--session", help="Session (default: the "
                                                "latest).")] = None,
) -> None:
    """Show a paper session: last bar, position, equity, open orders, today's PnL, heartbeat
    age, the risk manager's state."""
    from rltrade.live.trader import paper_status

    st = paper_status(run, session)
    age = st["heartbeat_age_s"]
    lines = [
        f"session      {st['session']} ({st['broker']}) - {st['status']}"
        + (f": {st['kill_reason']}" if st.get("kill_reason") else ""),
        f"last bar     {st['last_bar']} ({st['steps']} steps)",
        f"position     {st['position']:g}",
        f"equity       {st['equity']:,.2f} (cash {st['cash']:,.2f})",
        f"today's PnL  {st['today_pnl']:+,.2f}",
        f"open orders  {len(st['open_orders'])}"
        + "".join(f"\n  {o['client_id']} {o['qty']:+g} -> {o['target']:g}"
                  for o in st["open_orders"]),
        f"heartbeat    {'none' if age is None else f'{age:.0f} s ago'}",
        f"risk         interventions {st['risk']['counts'] or 'none'}; manager "
        f"{st['risk']['manager'] or 'off'}; daily-loss kill switch "
        f"{st['risk']['max_daily_loss'] if st['risk']['max_daily_loss'] else 'off'}",
    ]
    if st["reconcile"]:
        lines.append("reconcile    " + "\n             ".join(st["reconcile"][-5:]))
    console.print("\n".join(lines), markup=False, highlight=False, soft_wrap=True)


# ------------------------------------------------------------------------------------------
# trials

trials_app = typer.Typer(help="The trial registry: every training run, for DSR and PBO.",
                         no_args_is_help=True)
app.add_typer(trials_app, name="trials")


def _open_registry(registry: Path | None, runs_dir: Path):
    from rltrade.experiments.registry import TrialRegistry, registry_path

    return TrialRegistry(registry_path(registry, runs_dir))


@trials_app.command("list")
def trials_list(
    experiment: Annotated[str | None, typer.Option("--experiment", "-e",
                                                   help="Only this experiment.")] = None,
    registry: RegistryOpt = None,
    runs_dir: Annotated[Path, typer.Option("--runs-dir", help="Where runs live.")] = Path("runs"),
) -> None:
    """List the recorded trials (Sharpe: annualised where the bars per year are known)."""
    from rich.markup import escape

    reg = _open_registry(registry, runs_dir)
    trials = reg.trials(experiment)
    scope = f"experiment {experiment!r}" if experiment else "all experiments"
    table = Table(title=f"Trials in {reg.path} ({scope}): {len(trials)}", title_justify="left")
    for col in ("id", "experiment", "run", "config", "seed", "fold", "Sharpe", "bars",
                "recorded"):
        table.add_column(col, justify="right" if col in ("id", "seed", "fold", "Sharpe",
                                                          "bars") else "left")
    for t in trials:
        if t.sharpe is None:
            sharpe = "-"
        elif t.bars_per_year:
            sharpe = f"{t.sharpe * float(np.sqrt(t.bars_per_year)):.2f}"
        else:
            sharpe = f"{t.sharpe:.4f}/bar"
        table.add_row(str(t.id), escape(t.experiment), escape(t.run_path), t.config_hash[:12],
                      "-" if t.seed is None else str(t.seed),
                      "-" if t.fold is None else str(t.fold), sharpe, f"{t.n_returns:,}",
                      t.created_at)
    console.print(table)
    if experiment and trials:
        console.print(_selection_line(reg, experiment), markup=False, highlight=False,
                      soft_wrap=True)


def _selection_line(reg, experiment: str) -> str:
    """What the experiment's trials imply for DSR (N, effective N, V) and PBO."""
    from rltrade.errors import RLTradeError
    from rltrade.evaluation.significance import effective_n_trials
    from rltrade.experiments.registry import experiment_pbo

    trials = reg.trials(experiment)
    sharpes = [t.sharpe for t in trials if t.sharpe is not None]
    parts = [f"N = {len(trials)} trial(s)"]
    if len(trials) > 1:
        try:
            n_eff = effective_n_trials(reg.returns_matrix(experiment, join="inner").returns)
            parts.append(f"effective N = {n_eff:.2f}")
        except RLTradeError as exc:
            parts.append(f"effective N: n/a ({exc})")
    if len(sharpes) > 1:
        parts.append(f"V = {float(np.var(sharpes, ddof=1)):.3g} (variance of per-bar Sharpe)")
    if len({t.config_hash for t in trials}) > 1:
        try:
            res = experiment_pbo(reg, experiment)
            parts.append(f"PBO = {res.pbo:.2f} over {res.details['n_configurations']} "
                         f"configurations (CSCV, S = {res.details['n_partitions']})")
        except RLTradeError as exc:
            parts.append(f"PBO: n/a ({exc})")
    return "; ".join(parts)


@trials_app.command("forget")
def trials_forget(
    experiment: Annotated[str | None, typer.Option("--experiment", "-e",
                                                   help="Forget every trial of it.")] = None,
    ids: Annotated[list[int] | None, typer.Option("--id", help="Trial id (repeatable).")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    registry: RegistryOpt = None,
    runs_dir: Annotated[Path, typer.Option("--runs-dir", help="Where runs live.")] = Path("runs"),
) -> None:
    """Remove trials from the registry (the run directories stay). Forgetting trials lowers
    the N that deflates every Sharpe ratio of the experiment: only forget mistakes."""
    from rltrade.errors import ConfigError

    if (experiment is None) == (not ids):
        raise ConfigError("trials forget needs --experiment NAME or --id N (not both)")
    reg = _open_registry(registry, runs_dir)
    if experiment is not None:
        chosen = reg.trials(experiment)
    else:
        wanted = set(ids or [])
        chosen = [t for t in reg.trials() if t.id in wanted]
        missing = sorted(wanted - {t.id for t in chosen})
        if missing:
            raise ConfigError(f"no trial with id {', '.join(map(str, missing))} in {reg.path}")
    if not chosen:
        console.print(f"no trials of experiment {experiment!r} in {reg.path}; nothing to forget",
                      markup=False, highlight=False)
        return
    what = f"{len(chosen)} trial(s) ({', '.join(str(t.id) for t in chosen)})"
    if not yes and not typer.confirm(f"Forget {what} in {reg.path}?", default=False):
        console.print("nothing forgotten", markup=False, highlight=False)
        return
    if experiment is not None:
        n = reg.forget(experiment=experiment)
    else:
        n = reg.forget([t.id for t in chosen])
    console.print(f"forgot {n} trial(s) in {reg.path}", markup=False, highlight=False)


# ------------------------------------------------------------------------------------------


def _error_line(text: str) -> None:
    err_console.print(f"error: {' '.join(text.split())}", markup=False, highlight=False,
                      soft_wrap=True)


def _usage_error(exc: typer.TyperException) -> str:
    """A Typer (click) usage error in one line, naming the command and where to find help."""
    message = exc.format_message().strip().rstrip(".")
    ctx = getattr(exc, "ctx", None)
    if ctx is None:
        return message
    return f"{ctx.command_path}: {message} (see '{ctx.command_path} --help')"


def _on_a_terminal() -> bool:
    return all(hasattr(f, "isatty") and f.isatty() for f in (sys.stdin, sys.stdout))


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``rltrade`` console script. ``rltrade`` with no arguments starts the
    wizard (:mod:`rltrade.wizard`) when stdin and stdout are a terminal, and prints the help
    otherwise.

    Exit codes: 0 done; 1 ``data validate`` found errors (or an internal failure); 2 a user
    error (:class:`~rltrade.errors.RLTradeError` or a usage error), printed as one ``error:``
    line and nothing else (held log lines are dropped unless ``-v``); 130 interrupted.
    """
    if argv is None and len(sys.argv) <= 1 and _on_a_terminal():
        argv = ["wizard"]  # `rltrade` alone on a terminal: the guided flow
    try:
        code = app(args=argv, prog_name="rltrade", standalone_mode=False)
    except typer.TyperException as exc:  # usage: unknown / missing option, extra argument...
        if type(exc).__name__ == "NoArgsIsHelpError":  # the help is printed already
            sys.exit(exc.exit_code)
        discard_deferred_logs()
        _error_line(_usage_error(exc))
        sys.exit(2)
    except typer.Abort:
        discard_deferred_logs()
        _error_line("aborted")
        sys.exit(1)
    except ValidationError as exc:
        discard_deferred_logs()
        report = exc.report
        text = report.one_line() if report is not None else str(exc).splitlines()[0]
        _error_line(f"{text} (rerun with --repair to apply the documented fixes)")
        sys.exit(exc.exit_code)
    except RLTradeError as exc:
        discard_deferred_logs()
        _error_line(str(exc))
        sys.exit(exc.exit_code)
    except BaseException:  # a bug: show what was logged before the traceback
        release_deferred_logs()
        raise
    release_deferred_logs()
    if isinstance(code, int) and code != 0:  # typer.Exit(code), e.g. data validate's 1
        sys.exit(code)


if __name__ == "__main__":
    main()
