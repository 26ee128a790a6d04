"""Settings precedence and validation: flag > env > file > default; errors name file/var and key."""

import pytest

from etl.errors import ConfigError
from etl.settings import load_settings, safe_dsn


def write(tmp_path, text):
    p = tmp_path / "etl.toml"
    p.write_text(text)
    return p


def test_settings_precedence_flag_over_env_over_file(tmp_path):
    f = write(tmp_path, '[migrate]\nbatch_size = 100\n[arango]\nurl = "http://file:8529"\n')
    s = load_settings(f, env={})
    assert s.migrate.batch_size == 100 and s.arango.url == "http://file:8529"
    s = load_settings(f, env={"ETL_BATCH_SIZE": "200"})
    assert s.migrate.batch_size == 200
    s = load_settings(f, env={"ETL_BATCH_SIZE": "200"}, overrides={"migrate": {"batch_size": 300}})
    assert s.migrate.batch_size == 300
    assert (
        load_settings(tmp_path / "absent.toml" if False else None, env={}).migrate.batch_size
        == 5000
    )


def test_settings_invalid_value_names_file_and_key(tmp_path):
    f = write(tmp_path, "[migrate]\nbatch_size = 0\n")
    with pytest.raises(ConfigError, match=r"settings file .*etl.toml: key 'migrate.batch_size'"):
        load_settings(f, env={})


def test_settings_unknown_key_is_refused(tmp_path):
    f = write(tmp_path, '[arango]\nurll = "x"\n')
    with pytest.raises(ConfigError, match=r"key 'arango.urll': unknown key"):
        load_settings(f, env={})


def test_settings_bad_env_value_names_the_variable(tmp_path):
    with pytest.raises(ConfigError, match=r"environment variable ETL_ARANGO_URL: key 'arango.url'"):
        load_settings(None, env={"ETL_ARANGO_URL": "ftp://x"})


def test_settings_malformed_toml_names_file(tmp_path):
    f = write(tmp_path, "[arango\nurl=")
    with pytest.raises(ConfigError, match=r"settings file .*etl.toml: cannot be read"):
        load_settings(f, env={})


def test_settings_missing_explicit_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", env={})


def test_settings_password_never_printed(tmp_path):
    s = load_settings(
        None, env={"ETL_ARANGO_PASSWORD": "s3cret-pw", "ETL_PG_DSN": "postgresql://u:pgpw@h/db"}
    )
    assert s.arango.password.get_secret_value() == "s3cret-pw"
    for text in (repr(s), str(s), s.model_dump_json()):
        assert "s3cret-pw" not in text and "pgpw" not in text
    assert "pgpw" not in safe_dsn(s.postgres.dsn.get_secret_value())
    assert "***" in safe_dsn(s.postgres.dsn.get_secret_value())
