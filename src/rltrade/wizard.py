"""The guided flow of questions (``rltrade wizard``; ``rltrade`` alone on a terminal).

The source documents start their system through questions; this is that flow over rltrade's
own pieces. It asks, in order:

1. the **mode**: ``TRAIN_AND_BACKTEST`` (train, then backtest a later range), ``TRAIN_ONLY`` or
   ``BACKTEST_ONLY`` (an existing model on new dates);
2. for the training modes: the run's **name** and a **description**;
   for ``BACKTEST_ONLY``: the **model**, picked from a list of the trained runs showing each
   one's metadata (algorithm, data, training range, created);
3. the **data**: a file, a store series (``store:SYMBOL/TF``), a bundled sample or synthetic
   market, or an exchange download (``download:EXCHANGE:SYMBOL:TIMEFRAME``, fetched into the bar
   store for the dates asked next); what the data covers is shown;
4. the **date ranges**, as ``DD-MM-YYYY`` (``YYYY-MM-DD`` is accepted too; nothing else: no
   two-digit years, no slashes), both ends inclusive, echoed back in words for confirmation;
   a backtest range that overlaps training is warned about and needs a confirmation (then the
   run is marked in-sample);
5. for the training modes: the **algorithm** and the **action scheme**;
6. a summary, and whether to start.

Every question has a flag (``--mode``, ``--name``, ``--description``, ``--data``,
``--train-start`` ...; ``rltrade wizard --help``); a question whose flag is given is not
asked, and ``--yes`` accepts the default of every other one (a backtest range that overlaps
training then needs ``--allow-overlap``).

The training modes write the config they built beside the run directory,
``RUNS_DIR/NAME.wizard.yaml``, before training: ``rltrade train --config RUNS_DIR/NAME.wizard.yaml
--name OTHER`` trains the same run again. :func:`ask_plan` asks the questions and returns a
:class:`WizardPlan`; the CLI runs it (``rltrade.cli``).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import yaml

from rltrade.config import ALGORITHMS, RunConfig
from rltrade.envs.schemes import ACTION_SCHEME_NAMES
from rltrade.errors import ConfigError, RLTradeError

__all__ = [
    "MODES",
    "DownloadSpec",
    "Prompter",
    "RunChoice",
    "WizardOptions",
    "WizardPlan",
    "ask_plan",
    "day_text",
    "list_runs",
    "parse_day",
    "parse_download",
    "write_config",
]

#: the three modes of the source documents
MODES = ("TRAIN_AND_BACKTEST", "TRAIN_ONLY", "BACKTEST_ONLY")
T = TypeVar("T")

_DMY = re.compile(r"(\d{2})-(\d{2})-(\d{4})")
_YMD = re.compile(r"(\d{4})-(\d{2})-(\d{2})")


# -- dates -------------------------------------------------------------------------------
def parse_day(text: str) -> dt.date:
    """A day written ``DD-MM-YYYY`` (the source documents' form) or ``YYYY-MM-DD``.

    Anything else is refused rather than guessed: two-digit years, slashes, ``MM-DD-YYYY``
    (``12-31-2024`` has no month 31), single digits.

    :raises ConfigError: not one of the two forms, or no such day.
    """
    value = str(text).strip()
    m = _DMY.fullmatch(value)
    if m:
        day, month, year = (int(g) for g in m.groups())
    else:
        m = _YMD.fullmatch(value)
        if not m:
            raise ConfigError(f"{value!r} is not a date as DD-MM-YYYY (e.g. 31-12-2024)")
        year, month, day = (int(g) for g in m.groups())
    try:
        return dt.date(year, month, day)
    except ValueError as exc:
        raise ConfigError(f"{value!r} is not a day ({exc}); write DD-MM-YYYY, e.g. 31-12-2024"
                          ) from None


def day_text(day: dt.date) -> str:
    """``31-12-2024 (Tuesday 31 December 2024)``: the form asked for, and in words."""
    return f"{day:%d-%m-%Y} ({day:%A} {day.day} {day:%B %Y})"


def _range_text(first: dt.date, last: dt.date) -> str:
    days = (last - first).days + 1
    return (f"{day_text(first)} .. {day_text(last)}, both days included "
            f"({days} day{'s' * (days != 1)}, UTC)")


# -- data ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class DownloadSpec:
    """An exchange download asked for as ``download:EXCHANGE:SYMBOL:TIMEFRAME``."""

    exchange: str
    symbol: str
    timeframe: str

    @property
    def source(self) -> str:
        """The store series the download lands in (the run's ``data.source``)."""
        return f"store:{self.symbol}/{self.timeframe}"


def parse_download(text: str) -> DownloadSpec | None:
    """``download:binance:BTC/USDT:1h`` -> :class:`DownloadSpec` (the symbol may hold a ``:``,
    ``BTC/USDT:USDT``); ``None`` for any other source.

    :raises ConfigError: a ``download:`` source missing a part.
    """
    if not text.startswith("download:"):
        return None
    body = text.removeprefix("download:")
    exchange, _, rest = body.partition(":")
    symbol, _, timeframe = rest.rpartition(":")
    if not exchange or not symbol or not timeframe:
        raise ConfigError(f"{text!r}: write download:EXCHANGE:SYMBOL:TIMEFRAME, e.g. "
                          f"download:binance:BTC/USDT:1h")
    from rltrade.data.timeframes import parse_timeframe

    parse_timeframe(timeframe)
    return DownloadSpec(exchange, symbol, timeframe)


@dataclass(frozen=True)
class _Coverage:
    first: pd.Timestamp
    last: pd.Timestamp
    bars: int
    symbol: str
    timeframe: str

    @property
    def first_day(self) -> dt.date:
        return self.first.date()

    @property
    def last_day(self) -> dt.date:
        return self.last.date()

    def day_at(self, share: float) -> dt.date:
        return (self.first + (self.last - self.first) * share).date()


def _coverage(source: str, config: RunConfig) -> _Coverage:
    from rltrade.data.loaders import load_bars

    dc = config.data
    bars = load_bars(source, timeframe=dc.timeframe, policy=dc.policy, symbol=dc.symbol)
    return _Coverage(bars.index[0], bars.index[-1], len(bars),
                     str(bars.attrs.get("symbol") or ""), str(bars.attrs.get("timeframe") or ""))


# -- runs to pick from ---------------------------------------------------------------------
@dataclass(frozen=True)
class RunChoice:
    """A trained run, as the ``BACKTEST_ONLY`` list shows it (from its ``metadata.json``)."""

    path: Path
    name: str
    algorithm: str
    action_scheme: str
    data: str
    training_range: tuple[str | None, str | None]
    created_at: str
    description: str

    def row(self) -> list[str]:
        lo, hi = (str(v)[:10] if v else "?" for v in self.training_range)
        return [self.name, self.algorithm, self.action_scheme, self.data, f"{lo} .. {hi}",
                self.created_at[:19], self.description]


def list_runs(runs_dir: str | Path) -> list[RunChoice]:
    """The completed runs directly under ``runs_dir`` (those with a final model and a
    ``metadata.json``), oldest first."""
    root = Path(runs_dir)
    found: list[RunChoice] = []
    if not root.is_dir():
        return found
    for path in sorted(p for p in root.iterdir() if p.is_dir()):
        meta_file = path / "metadata.json"
        if not meta_file.is_file() or not (path / "model" / "model.json").is_file():
            continue
        try:
            meta = json.loads(meta_file.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        rl = meta.get("rl") or {}
        data = meta.get("data") or {}
        rng = (meta.get("training") or {}).get("range") or {}
        found.append(RunChoice(
            path=path, name=path.name, algorithm=str(rl.get("algorithm", "?")),
            action_scheme=str((meta.get("env_spec") or {}).get("action_scheme", "?")),
            data=f"{data.get('source', '?')} ({data.get('symbol') or '?'} "
                 f"{data.get('timeframe') or '?'})",
            training_range=(rng.get("start"), rng.get("end")),
            created_at=str(meta.get("created_at", "")), description=str(meta.get("description",
                                                                               ""))))
    found.sort(key=lambda r: (r.created_at, r.name))
    return found


# -- asking ---------------------------------------------------------------------------------
class Prompter:
    """Asks one question at a time on a terminal (or any ``read``/``say`` pair).

    :param yes: accept the default of every question whose flag is not given.
    :param say: prints one line.
    :param read: reads one answer after printing its prompt (``input``).
    """

    def __init__(self, yes: bool = False, say: Callable[[str], None] = print,
                 read: Callable[[str], str] = input) -> None:
        self.yes = yes
        self.say = say
        self.read = read

    def ask(self, question: str, parse: Callable[[str], T], *, default: str | None = None,
            given: Any = None, flag: str = "") -> T:
        """The answer to ``question``, parsed; asked again (saying why) until ``parse``
        accepts it.

        :param given: the flag's value: not asked, used as is (a bad one is an error).
        :param flag: the question's flag, named in messages.
        :raises ConfigError: a bad flag value; ``--yes`` without a default; no more input.
        """
        if given is not None:
            try:
                value = parse(str(given))
            except RLTradeError as exc:
                raise ConfigError(f"{flag} {given}: {exc}") from None
            self.say(f"{question}: {given} ({flag})")
            return value
        if self.yes:
            if default is None:
                raise ConfigError(f"--yes: the question {question!r} has no default; "
                                  f"answer it with {flag}")
            try:
                value = parse(default)
            except RLTradeError as exc:
                raise ConfigError(f"--yes: the default of {question!r} ({default}) does not "
                                  f"do: {exc}; answer it with {flag}") from None
            self.say(f"{question}: {default} (default)")
            return value
        while True:
            shown = f" [{default}]" if default not in (None, "") else ""
            try:
                text = self.read(f"{question}{shown}: ").strip()
            except EOFError:
                raise ConfigError(f"no answer to {question!r} (input closed): answer it with "
                                  f"{flag}, or pass --yes for the defaults") from None
            if not text and default is not None:
                text = default
            try:
                return parse(text)
            except RLTradeError as exc:
                self.say(f"  {exc}")

    def confirm(self, question: str, *, default: bool, given: bool | None = None,
                flag: str = "") -> bool:
        """A yes / no question (``y``, ``yes``, ``n``, ``no``)."""

        def parse(text: str) -> bool:
            low = text.strip().lower()
            if low in ("y", "yes"):
                return True
            if low in ("n", "no"):
                return False
            raise ConfigError("answer y or n")

        if given is not None:
            self.say(f"{question} {'yes' if given else 'no'} ({flag})")
            return given
        return self.ask(f"{question} (y/n)", parse, default="y" if default else "n",
                        flag=flag or "--yes")

    def choose(self, question: str, options: list[str], *, default: str, given: str | None,
               flag: str, rows: list[list[str]] | None = None,
               header: list[str] | None = None) -> str:
        """One of ``options``, by number or by name; the options are listed first (with
        ``rows``: one table row each)."""
        if given is None and not self.yes:
            self.say(question + ":")
            if header:
                self.say("       " + " | ".join(header))
            for i, opt in enumerate(options, 1):
                text = " | ".join(rows[i - 1]) if rows else opt
                self.say(f"  {i:>2}) {text}")

        def parse(text: str) -> str:
            value = text.strip()
            if value.isdigit() and 1 <= int(value) <= len(options):
                return options[int(value) - 1]
            for opt in options:
                if value.lower() == opt.lower():
                    return opt
            raise ConfigError(f"{value!r} is not one of: {', '.join(options)} "
                              f"(or their numbers 1..{len(options)})")

        return self.ask(question, parse, default=default, given=given, flag=flag)


@dataclass
class WizardOptions:
    """The wizard's flags: ``None`` asks the question."""

    mode: str | None = None
    name: str | None = None
    description: str | None = None
    data: str | None = None
    train_start: str | None = None
    train_end: str | None = None
    backtest_start: str | None = None
    backtest_end: str | None = None
    algorithm: str | None = None
    action_scheme: str | None = None
    model: str | None = None
    allow_overlap: bool = False
    start: bool | None = None
    steps: int | None = None
    runs_dir: Path = Path("runs")
    base_config: Path | None = None


@dataclass
class WizardPlan:
    """What the answers amount to; the CLI runs it.

    :param config: the run config built (training modes).
    :param name: the new run's name (training modes).
    :param run: the run to backtest (``BACKTEST_ONLY``).
    :param source: the bars (``BACKTEST_ONLY``: what the backtest reads).
    :param backtest: ``(start, end)``, ISO, ``end`` exclusive (``BACKTEST_ONLY``).
    :param allow_overlap: the backtest range overlaps training and the user accepted it.
    :param download: the exchange download to make before running.
    :param download_range: its ``(start, end)``, ISO, ``end`` exclusive.
    :param start: the answer to "Start?" (``False``: the config is written, nothing runs).
    """

    mode: str
    config: RunConfig | None = None
    name: str | None = None
    run: Path | None = None
    source: str | None = None
    backtest: tuple[str, str] | None = None
    allow_overlap: bool = False
    download: DownloadSpec | None = None
    download_range: tuple[str, str] | None = None
    start: bool = True


def _day_after(day: dt.date) -> str:
    return (day + dt.timedelta(days=1)).isoformat()


def _ask_backtest_range(p: Prompter, options: WizardOptions,
                        default: tuple[dt.date | None, dt.date | None],
                        cov: _Coverage | None,
                        trained: tuple[dt.date, dt.date] | None, trained_text: str,
                        marked: str) -> tuple[dt.date, dt.date, bool]:
    """Ask the backtest range until it does not overlap ``trained`` or the overlap is accepted
    (``--allow-overlap`` or a yes); ``(first, last, allow_overlap)``.

    :raises ConfigError: an overlapping range given by flags or accepted by ``--yes``.
    """
    while True:
        first, last = _ask_range(p, "Backtest", (options.backtest_start, options.backtest_end),
                                 default, ("--backtest-start", "--backtest-end"), cov)
        if trained is None or first > trained[1] or last < trained[0]:
            return first, last, False
        p.say(f"warning: the backtest range {first:%d-%m-%Y} .. {last:%d-%m-%Y} overlaps "
              f"{trained_text}: its results are in-sample, not a test{marked}")
        if options.allow_overlap or (not p.yes and options.backtest_start is None and
                                     p.confirm("Backtest the overlapping range anyway?",
                                               default=False, flag="--allow-overlap")):
            return first, last, True
        if p.yes or options.backtest_start is not None:
            raise ConfigError("the backtest range overlaps the training range: change the "
                              "dates, or pass --allow-overlap to backtest in-sample")
        p.say("  then choose another backtest range:")


def _ask_range(p: Prompter, what: str, given: tuple[str | None, str | None],
               defaults: tuple[dt.date | None, dt.date | None], flags: tuple[str, str],
               coverage: _Coverage | None) -> tuple[dt.date, dt.date]:
    """Two days (first, last, inclusive), echoed back in words and confirmed."""
    while True:
        first = p.ask(f"{what} starts on (DD-MM-YYYY)", parse_day, given=given[0],
                      default=f"{defaults[0]:%d-%m-%Y}" if defaults[0] else None,
                      flag=flags[0])
        last = p.ask(f"{what} ends on, included (DD-MM-YYYY)", parse_day, given=given[1],
                     default=f"{defaults[1]:%d-%m-%Y}" if defaults[1] else None, flag=flags[1])
        problem = None
        if last < first:
            problem = f"{what}: the end {day_text(last)} is before the start {day_text(first)}"
        elif coverage is not None and (last < coverage.first_day or first > coverage.last_day):
            problem = (f"{what} {first:%d-%m-%Y} .. {last:%d-%m-%Y} lies outside the data "
                       f"({coverage.first_day:%d-%m-%Y} .. {coverage.last_day:%d-%m-%Y})")
        if problem is not None:
            if given != (None, None) or p.yes:
                raise ConfigError(problem)
            p.say(f"  {problem}; again:")
            continue
        p.say(f"{what}: {_range_text(first, last)}")
        if p.confirm("Is that right?", default=True, given=True if given != (None, None)
                     else None, flag=f"{flags[0]}/{flags[1]}"):
            return first, last


def _base_config(options: WizardOptions) -> RunConfig:
    cfg = RunConfig.from_yaml(options.base_config) if options.base_config else RunConfig()
    if options.steps is not None:
        cfg = cfg.with_overrides(training={"total_steps": options.steps})
    return cfg


def ask_plan(options: WizardOptions, prompter: Prompter) -> WizardPlan:
    """Ask the wizard's questions (those whose flag is not given) and return the plan."""
    p = prompter
    mode = p.choose("Mode", list(MODES), default=MODES[0], given=options.mode, flag="--mode")
    if mode == "BACKTEST_ONLY":
        return _ask_backtest_only(options, p)
    return _ask_training(options, p, mode)


def _check_name(runs_dir: Path) -> Callable[[str], str]:
    from rltrade.runs import Run

    def check(name: str) -> str:
        Run.check_name_free(name, runs_dir)
        if (runs_dir / f"{name}.wizard.yaml").exists():
            raise ConfigError(f"{runs_dir / (name + '.wizard.yaml')} exists: choose another name")
        return name

    return check


def _ask_data(p: Prompter, options: WizardOptions, base: RunConfig, default: str
              ) -> tuple[str, DownloadSpec | None, _Coverage | None]:
    """The data source, its download spec (if one) and what it covers (if readable now)."""
    holder: dict[str, Any] = {}

    def parse(text: str) -> str:
        value = text.strip()
        spec = parse_download(value)
        holder["download"] = spec
        holder["coverage"] = None
        if spec is None:
            holder["coverage"] = _coverage(value, base)
        return value

    source = p.ask("Data (file, store:SYMBOL/TF, sample:NAME, synthetic:KIND, or "
                   "download:EXCHANGE:SYMBOL:TF)", parse, default=default, given=options.data,
                   flag="--data")
    cov: _Coverage | None = holder.get("coverage")
    if cov is not None:
        p.say(f"  {cov.symbol} {cov.timeframe}: {cov.bars:,} bars, "
              f"{cov.first.isoformat()} .. {cov.last.isoformat()}")
    return source, holder.get("download"), cov


def _ask_training(options: WizardOptions, p: Prompter, mode: str) -> WizardPlan:
    base = _base_config(options)
    runs_dir = Path(options.runs_dir)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d_%H%M%S")
    name = p.ask("Run name (letters, digits, _)", _check_name(runs_dir),
                 default=f"wizard_{stamp}", given=options.name, flag="--name")
    description = p.ask("Description", str, default=base.description, given=options.description,
                        flag="--description")
    source, download, cov = _ask_data(p, options, base, base.data.source)
    backtesting = mode == "TRAIN_AND_BACKTEST"
    share = 0.75 if backtesting else 1.0
    train_first, train_last = _ask_range(
        p, "Training", (options.train_start, options.train_end),
        (cov.first_day, cov.day_at(share) if backtesting else cov.last_day) if cov else
        (None, None), ("--train-start", "--train-end"), cov)
    sections: dict[str, Any] = {
        "description": description,
        "data": {**base.data.model_dump(mode="json"),
                 "source": download.source if download else source,
                 "start": train_first.isoformat(), "end": _day_after(train_last)},
    }
    allow_overlap = False
    bt: tuple[dt.date, dt.date] | None = None
    if backtesting:
        first, last, allow_overlap = _ask_backtest_range(
            p, options, (train_last + dt.timedelta(days=1), cov.last_day) if cov else (None, None),
            cov, (train_first, train_last),
            f"the training range {train_first:%d-%m-%Y} .. {train_last:%d-%m-%Y}",
            " (the run is marked so)")
        bt = (first, last)
        sections["backtest"] = {**(base.backtest.model_dump(mode="json") if base.backtest
                                   else {}),
                                "start": bt[0].isoformat(), "end": _day_after(bt[1])}
    else:
        sections["backtest"] = None
    algorithm = p.choose("Algorithm", list(ALGORITHMS), default=base.agent.algorithm,
                         given=options.algorithm, flag="--algorithm")
    def p_scheme(text: str) -> str:
        value = text.strip()
        if value.isdigit() and 1 <= int(value) <= len(ACTION_SCHEME_NAMES):
            return ACTION_SCHEME_NAMES[int(value) - 1]
        if value not in ACTION_SCHEME_NAMES:
            raise ConfigError(f"{value!r} is not one of: {', '.join(ACTION_SCHEME_NAMES)}")
        return value

    holder: dict[str, RunConfig] = {}

    def build(text: str) -> str:
        """The scheme, checked by building the whole config (SAC needs exposure_sl...)."""
        scheme = p_scheme(text)
        agent = base.agent.model_dump(mode="json")
        if algorithm != base.agent.algorithm:
            agent["hyperparams"] = {}  # the base's overrides were for its own algorithm
        agent["algorithm"] = algorithm
        data = {**base.to_dict(), **sections, "agent": agent}  # whole sections replaced
        data["env"] = {**data["env"], "action_scheme": scheme}
        holder["config"] = RunConfig.from_dict(data)
        return scheme

    default_scheme = "exposure_sl" if algorithm == "sac" else (
        "discrete3" if algorithm == "dqn" and base.env.action_scheme == "exposure_sl"
        else base.env.action_scheme)
    if options.action_scheme is None and not p.yes:
        p.say("Action scheme:")
        for i, opt in enumerate(ACTION_SCHEME_NAMES, 1):
            p.say(f"  {i:>2}) {opt}")
    p.ask("Action scheme", build, default=default_scheme, given=options.action_scheme,
          flag="--action-scheme")
    config = holder["config"]
    plan = WizardPlan(mode=mode, config=config, name=name, allow_overlap=allow_overlap,
                      download=download)
    if download is not None:
        lo = train_first if bt is None else min(train_first, bt[0])
        hi = train_last if bt is None else max(train_last, bt[1])
        plan.download_range = (lo.isoformat(), _day_after(hi))
    _summary(p, plan)
    plan.start = p.confirm("Start?", default=True, given=options.start, flag="--start")
    return plan


def _summary(p: Prompter, plan: WizardPlan) -> None:
    cfg = plan.config
    assert cfg is not None
    p.say(f"Run {plan.name}: {plan.mode}, {cfg.agent.algorithm} with {cfg.env.action_scheme} on "
          f"{cfg.data.source}; training {cfg.data.start} .. {cfg.data.end} (end excluded), "
          f"split {cfg.split.describe()}"
          + (f"; backtest {cfg.backtest.start} .. {cfg.backtest.end} (end excluded)"
             if cfg.backtest else "")
          + ("; IN-SAMPLE backtest (overlaps training)" if plan.allow_overlap else "")
          + (f"; downloads {plan.download.symbol} {plan.download.timeframe} from "
             f"{plan.download.exchange} first" if plan.download else ""))


def _ask_backtest_only(options: WizardOptions, p: Prompter) -> WizardPlan:
    runs = list_runs(options.runs_dir)
    if not runs and options.model is None:
        raise ConfigError(f"no trained run in {options.runs_dir} to backtest: train one first "
                          f"(mode TRAIN_ONLY), or point --runs-dir at your runs")
    by_name = {r.name: r for r in runs}

    def pick(text: str) -> str:
        value = text.strip()
        if value.isdigit() and 1 <= int(value) <= len(runs):
            return runs[int(value) - 1].name
        if value in by_name:
            return value
        path = Path(value)
        if (path / "metadata.json").is_file():
            return str(path)
        raise ConfigError(f"{value!r} is not a run of the list (a number 1..{len(runs)} or a "
                          f"name)")

    if options.model is None and not p.yes:
        p.say("Trained runs:")
        p.say("       name | algorithm | scheme | data | training range | created | "
              "description")
        for i, r in enumerate(runs, 1):
            p.say(f"  {i:>2}) " + " | ".join(r.row()))
    chosen = p.ask("Model to backtest (number or name)", pick,
                   default=runs[-1].name if runs else None, given=options.model, flag="--model")
    run_path = by_name[chosen].path if chosen in by_name else Path(chosen)
    from rltrade.runs import Run

    run = Run.open(run_path)
    config = run.config
    rng = (run.metadata.get("training") or {}).get("range") or {}
    trained = (pd.Timestamp(rng["start"]).date(), pd.Timestamp(rng["end"]).date()) \
        if rng.get("start") and rng.get("end") else None
    if trained:
        p.say(f"  {run.name} trained on {_range_text(*trained)}")
    source, download, cov = _ask_data(p, options, config, config.data.source)
    default_first = trained[1] + dt.timedelta(days=1) if trained else (
        cov.first_day if cov else None)
    if cov and default_first and default_first > cov.last_day:
        default_first = cov.first_day
    first, last, allow_overlap = _ask_backtest_range(
        p, options, (default_first, cov.last_day if cov else None), cov, trained,
        f"the range {run.name} was trained on ({trained[0]:%d-%m-%Y} .. "
        f"{trained[1]:%d-%m-%Y})" if trained else "", "")
    plan = WizardPlan(mode="BACKTEST_ONLY", run=run.path,
                      source=download.source if download else source,
                      backtest=(first.isoformat(), _day_after(last)),
                      allow_overlap=allow_overlap, download=download)
    if download is not None:
        plan.download_range = plan.backtest
    p.say(f"Backtest of {run.name} on {plan.source}: {first.isoformat()} .. {_day_after(last)} "
          f"(end excluded)" + ("; IN-SAMPLE (overlaps training)" if allow_overlap else ""))
    plan.start = p.confirm("Start?", default=True, given=options.start, flag="--start")
    return plan


def write_config(plan: WizardPlan, runs_dir: str | Path) -> Path:
    """Write the plan's config beside the run: ``RUNS_DIR/NAME.wizard.yaml`` (atomically), with
    the command that trains it again in its first lines."""
    from rltrade.data.store import atomic_write_bytes

    assert plan.config is not None and plan.name is not None
    path = Path(runs_dir) / f"{plan.name}.wizard.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = " --allow-overlap" if plan.allow_overlap else ""
    head = (f"# written by `rltrade wizard` ({plan.mode}) at "
            f"{dt.datetime.now(dt.UTC):%Y-%m-%dT%H:%M:%SZ} for run {plan.name}\n"
            f"# train it again: rltrade train --config {path} --name NEW_NAME{flags}\n")
    if plan.download is not None:
        head += (f"# its bars were downloaded from {plan.download.exchange} into the bar store "
                 f"(rltrade data download)\n")
    text = head + yaml.safe_dump(plan.config.to_dict(), sort_keys=False)
    atomic_write_bytes(path, text.encode())
    return path
