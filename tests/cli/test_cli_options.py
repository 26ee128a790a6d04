"""The common options reach Settings one way (etl.cli.options.settings_from): an option given
wins over the environment, an option not given leaves the environment's value."""

from __future__ import annotations

import pytest

from etl.cli.options import settings_from


@pytest.fixture
def env(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no etl.toml here: the environment alone
    monkeypatch.delenv("ETL_SETTINGS", raising=False)
    monkeypatch.setenv("ETL_PG_DSN", "postgresql://env@localhost/envdb")
    monkeypatch.setenv("ETL_REPORTS_DIR", "env-reports")
    monkeypatch.setenv("ETL_ALLOW_TRUNCATED", "1")


def test_settings_from_options_not_given_leave_the_environment(env):
    s = settings_from()
    assert s.postgres.dsn.get_secret_value() == "postgresql://env@localhost/envdb"
    assert s.migrate.reports_dir == "env-reports"
    # --allow-truncated absent is "not given", not "false": the setting stays on
    assert s.migrate.allow_truncated is True


def test_settings_from_options_given_win(env, tmp_path):
    mapping = tmp_path / "m.toml"
    s = settings_from("postgresql://flag@localhost/flagdb", str(mapping), "flag-reports", True)
    assert s.postgres.dsn.get_secret_value() == "postgresql://flag@localhost/flagdb"
    assert str(s.migrate.mapping) == str(mapping)
    assert s.migrate.reports_dir == "flag-reports"
