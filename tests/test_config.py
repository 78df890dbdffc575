"""Run config hygiene: no import of the agents from the config, hyperparameters checked by the
agents, ranges in order, empty files refused, credentials refused at any depth."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import rltrade.config
from cli_helpers import run_cli
from rltrade.agents.algorithms import check_hyperparams, hyperparameter_names
from rltrade.config import RunConfig
from rltrade.credentials import credential_paths, looks_like_credential
from rltrade.errors import ConfigError, ExchangeError


# -- no import circle ----------------------------------------------------------------------------
def test_config_module_imports_nothing_from_agents():
    tree = ast.parse(Path(rltrade.config.__file__).read_text())
    imported = [node.module for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module]
    imported += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for alias in node.names]
    assert not [m for m in imported if m.startswith("rltrade.agents")]
    # and building a config with hyperparameters loads nothing of rltrade.agents
    code = ("import sys\nfrom rltrade.config import RunConfig\n"
            "RunConfig.from_dict({'agent': {'algorithm': 'a2c', 'hyperparams': {'n_steps': 8}}})\n"
            "print(sorted(m for m in sys.modules if m.startswith('rltrade.agents')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert out.strip() == "[]"


def test_hyperparameters_are_checked_by_the_agents(tmp_path, capsys):
    cfg = RunConfig.from_dict({"agent": {"hyperparams": {"n_stepz": 3}}})  # the config is data
    with pytest.raises(ConfigError) as err:
        check_hyperparams(cfg.agent)
    msg = str(err.value)
    assert "agent.hyperparams: unknown key(s) ['n_stepz'] for ppo" in msg and "n_steps" in msg
    a3c = RunConfig.from_dict({"agent": {"algorithm": "a3c", "hyperparams": {"batch_size": 3}}})
    with pytest.raises(ConfigError, match=r"\['batch_size'\] for a3c"):
        check_hyperparams(a3c.agent)
    assert "n_workers" in hyperparameter_names("a3c")
    assert {"buffer_size", "tau"} <= hyperparameter_names("sac")
    assert not {"env", "seed", "policy_kwargs"} & hyperparameter_names("ppo")
    path = tmp_path / "c.yaml"
    path.write_text("agent:\n  hyperparams:\n    n_stepz: 3\n")
    code, out, err = run_cli(["config", "validate", str(path)], capsys)
    assert code == 2 and out == ""
    assert err.startswith("error: agent.hyperparams: unknown key(s) ['n_stepz']")
    assert err.count("\n") == 1


# -- ranges ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"data": {"start": "2021-03-01", "end": "2021-01-01"}}, "data.end: start"),
        ({"data": {"start": "2021-03-01", "end": "2021-03-01"}}, "is not before end"),
        ({"data": {"start": "2021-01-01T00:30:00Z", "end": "2021-01-01T02:00:00+02:00"}},
         "is not before end"),  # the end is midnight UTC
        ({"backtest": {"start": "2022-01-01", "end": "2021-06-01"}}, "backtest.end: start"),
    ],
)
def test_a_range_must_start_before_it_ends(data, needle):
    with pytest.raises(ConfigError, match=needle):
        RunConfig.from_dict(data)


def test_ordered_ranges_are_accepted():
    cfg = RunConfig.from_dict({"data": {"start": "2021-01-01", "end": "2021-03-01"},
                               "backtest": {"start": "2021-03-01"}})
    assert cfg.data.end == "2021-03-01"


def test_config_validate_refuses_a_start_after_the_end(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  start: 2021-03-01\n  end: 2021-01-01\n")
    code, out, err = run_cli(["config", "validate", str(path)], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "start '2021-03-01' is not before end '2021-01-01'" in err


# -- empty files ---------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n  # another\n"])
def test_an_empty_config_file_is_refused_naming_it(text, tmp_path, capsys):
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"{path}: the config is empty"):
        RunConfig.from_yaml(path)
    code, out, err = run_cli(["config", "validate", str(path)], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith(f"error: {path}: the config is empty")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match=r"list\.yaml: the YAML document must be a mapping"):
        RunConfig.from_yaml(tmp_path / "list.yaml")


# -- credentials ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("settings", "path"),
    [
        ({"apikey": "k"}, "apikey"),
        ({"API_KEY": "k"}, "API_KEY"),
        ({"headers": {"X-MBX-APIKEY": "k"}}, "headers.X-MBX-APIKEY"),
        ({"options": {"apiKey": "k"}}, "options.apiKey"),
        ({"options": {"nested": [{"Secret_Key": "s"}]}}, "options.nested[0].Secret_Key"),
        ({"Password": "p"}, "Password"),
        ({"headers": {"Authorization": "Bearer x"}}, "headers.Authorization"),
        ({"access_token": "t"}, "access_token"),
        ({"passphrase": "p"}, "passphrase"),
        ({"private-key": "p"}, "private-key"),
        ({"uid": "u"}, "uid"),
    ],
)
def test_credentials_are_refused_at_any_depth(settings, path):
    assert credential_paths(settings) == [path]
    with pytest.raises(ExchangeError) as err:
        from rltrade.data.exchange import make_exchange

        make_exchange("binance", config=settings)
    assert path in str(err.value) and "RLTRADE_BINANCE_API_KEY" in str(err.value)
    with pytest.raises(ConfigError, match="environment variables") as err:
        RunConfig.from_dict({"agent": {"hyperparams": {"extra": settings}}})
    assert f"agent.hyperparams.extra.{path}" in str(err.value)


@pytest.mark.parametrize("key", ["timeout", "options", "defaultType", "recvWindow", "urls",
                                 "User-Agent", "tokenBucket", "adjustForTimeDifference",
                                 "enableRateLimit", "hostname", "keys_per_page"])
def test_ordinary_settings_are_not_credentials(key):
    assert not looks_like_credential(key)


def test_data_download_refuses_a_nested_credential_in_one_line(tmp_path, capsys):
    cfg = tmp_path / "exchange.json"
    cfg.write_text(json.dumps({"options": {"defaultType": "spot"},
                               "headers": {"X-MBX-APIKEY": "abc"}}))
    code, _out, err = run_cli(["data", "download", "--exchange", "binance", "--symbol", "BTC/USDT",
                              "-t", "1h", "--start", "2024-01-01", "--end", "2024-01-02",
                              "--store", str(tmp_path / "store"), "--exchange-config", str(cfg)],
                             capsys)
    assert code == 2 and err.count("\n") == 1
    assert "headers.X-MBX-APIKEY" in err and "abc" not in err
    assert not (tmp_path / "store").exists()
