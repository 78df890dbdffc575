"""The rltrade command: exit codes, one-line errors, and the data commands end to end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from rltrade.cli import main

CORPUS = Path(__file__).parent / "data" / "malformed"


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_command_groups(capsys):
    code, out, _ = run(["--help"], capsys)
    assert code == 0 and "data" in out


def test_data_default_summarises_bundled_sample(capsys):
    code, out, _ = run(["data"], capsys)
    assert code == 0
    assert "EURUSD" in out and "5,000" in out and "Validation" in out


def test_validate_exit_codes(capsys):
    code, out, _ = run(["data", "validate", str(CORPUS / "clean.csv")], capsys)
    assert code == 0 and "clean" in out
    code, out, _ = run(["data", "validate", str(CORPUS / "gaps.csv")], capsys)
    assert code == 0 and "gaps" in out  # warnings only
    code, out, _ = run(["data", "validate", str(CORPUS / "ohlc_violation.csv")], capsys)
    assert code == 1 and "ohlc_envelope" in out
    code, out, err = run(["data", "validate", str(CORPUS / "ragged.csv")], capsys)
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "name", sorted(p.name for p in CORPUS.glob("*.csv") if p.name != "clean.csv")
)
def test_every_corpus_file_gets_a_verdict(name, capsys):
    code, out, err = run(["data", "validate", str(CORPUS / name)], capsys)
    assert code in (0, 1, 2)
    assert "Traceback" not in out + err
    if code == 2:
        assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    else:
        assert "Validation:" in out


def test_validate_repair_writes_clean_file(tmp_path, capsys):
    out_file = tmp_path / "fixed.csv"
    code, out, _ = run(
        ["data", "validate", str(CORPUS / "unsorted.csv"), "--repair", "--out", str(out_file)],
        capsys,
    )
    assert code == 0, out
    code, out, _ = run(["data", "validate", str(out_file)], capsys)
    assert code == 0 and "clean" in out


def test_strict_load_error_is_one_line_with_exit_2(capsys):
    code, _, err = run(["data", "summary", str(CORPUS / "unsorted.csv")], capsys)
    assert code == 2
    assert err.count("\n") == 1 and "unsorted" in err and "--repair" in err


def test_import_info_and_resample(tmp_path, capsys):
    store = tmp_path / "store"
    code, out, _ = run(
        [
            "data",
            "import",
            str(CORPUS / "clean.csv"),
            "--symbol",
            "TEST",
            "--timeframe",
            "1h",
            "--store",
            str(store),
        ],
        capsys,
    )
    assert code == 0 and "48 added" in out
    code, out, _ = run(
        ["data", "import", str(CORPUS / "clean.csv"), "--symbol", "TEST", "--store", str(store)],
        capsys,
    )
    assert code == 0 and "48 unchanged" in out
    code, out, _ = run(["data", "info", "--store", str(store)], capsys)
    assert code == 0 and "TEST" in out and "48" in out
    target = tmp_path / "4h.parquet"
    code, out, _ = run(
        ["data", "resample", str(CORPUS / "clean.csv"), "-t", "4h", "--out", str(target)], capsys
    )
    assert code == 0
    assert len(pd.read_parquet(target)) == 12


def test_console_script_installed():
    """The real entry point, as a user runs it."""
    exe = Path(sys.executable).parent / "rltrade"
    result = subprocess.run(
        [str(exe), "data", "validate", str(CORPUS / "empty.csv")],
        capture_output=True,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {CORPUS / 'empty.csv'}: the file is empty"


def test_features_list_spec_and_build(tmp_path, capsys):
    code, out, _ = run(["features", "list"], capsys)
    assert code == 0
    for name in ("macd", "turbulence", "supertrend", "ott", "atr_breakout", "bbands_rsi"):
        assert name in out
    spec_file = tmp_path / "spec.yaml"
    code, _, _ = run(["features", "spec", "--out", str(spec_file)], capsys)
    assert code == 0 and "turbulence" in spec_file.read_text()
    out_dir = tmp_path / "ds"
    code, out, err = run(["features", "build", "--data", "sample:EURUSD-1h", "--spec",
                          str(spec_file), "--out", str(out_dir)], capsys)
    assert code == 0, err
    assert (out_dir / "arrays.npz").exists() and "warm-up" in out
    from rltrade.features import Dataset

    assert len(Dataset.load(out_dir)) > 4000


def test_features_build_from_a_users_csv(tmp_path, capsys):
    csv = tmp_path / "mine.csv"
    from rltrade.data import load_bars

    load_bars("sample:GOOG-1d").to_csv(csv)
    code, _out, err = run(["features", "build", "--data", str(csv), "--out",
                          str(tmp_path / "goog")], capsys)
    assert code == 0, err
    bad = tmp_path / "bad.yaml"
    bad.write_text("features: {rsi: {length: 3}}\n")
    code, _, err = run(["features", "build", "--data", str(csv), "--spec", str(bad),
                        "--out", str(tmp_path / "x")], capsys)
    assert code == 2 and "unknown parameter" in err and err.count("\n") == 1
