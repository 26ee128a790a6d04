"""What an installed etl carries and where it keeps things: the shipped sql files, mapping and
settings template (etl/resources.py), the settings file lookup, the per-user embedded data
directory, `etl init`, `etl --version`, `python -m etl` and shell completion.

The built wheel itself, installed into a new venv and run from empty directories, is proven by
scripts/smoke_install.sh (run by .ci/run)."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import psycopg
import pytest

from etl import __version__, resources
from etl.errors import ConfigError
from etl.settings import ENV_VARS, Settings, load_settings, render_template
from tests.datagen import generate, write_dump
from tests.helpers import REPO, assert_one_line_error, etl

TEMPLATE = REPO / "configs" / "etl.toml"


# the embedded server's directory depends on the project (the settings file's directory)
_WHERE = {"source_file": True, "dsn_origin": True, "postgres": {"embedded_dir"}}


def _defaults() -> dict:
    return Settings().model_dump(mode="json", exclude=_WHERE)


def _loaded(path: Path) -> dict:
    return load_settings(path, env={}).model_dump(mode="json", exclude=_WHERE)


# -- shipped files -------------------------------------------------------------------------------


def test_package_links_to_the_top_level_sql_and_configs():
    # etl/sql and etl/configs are links: one copy of each file, in the checkout and the package
    for name in ("sql", "configs"):
        link = REPO / "etl" / name
        assert link.is_symlink() and link.resolve() == (REPO / name).resolve(), link


def test_shipped_sql_files_are_the_repository_ones_byte_for_byte(monkeypatch):
    monkeypatch.delenv("ETL_SQL_DIR", raising=False)
    shipped = {p.name: p.read_bytes() for p in resources.sql_dir().glob("*.sql")}
    repo = {p.name: p.read_bytes() for p in (REPO / "sql").glob("*.sql")}
    assert shipped == repo and len(repo) >= 7
    assert resources.schema_version() == max(n[:3] for n in repo)
    assert (
        resources.default_mapping().read_bytes() == (REPO / "configs" / "atspro.toml").read_bytes()
    )
    assert resources.settings_template() == TEMPLATE.read_text(encoding="utf-8")


def test_etl_sql_dir_overrides_and_a_bad_one_names_the_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("ETL_SQL_DIR", str(tmp_path))
    assert resources.sql_dir() == tmp_path
    monkeypatch.setenv("ETL_SQL_DIR", str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match=r"ETL_SQL_DIR: .*nope is not a directory"):
        resources.sql_dir()


# -- the settings template -------------------------------------------------------------------------


def test_shipped_template_is_generated_from_the_settings_model():
    assert TEMPLATE.read_text(encoding="utf-8") == render_template(), (
        "configs/etl.toml is out of date with etl/settings.py: regenerate it with "
        "`.venv/bin/python -m etl.settings > configs/etl.toml`"
    )


def test_template_lists_every_key_with_its_default_and_variable():
    text = render_template()
    sections = re.split(r"^\[(\w+)\]$", text, flags=re.M)
    by_section = dict(zip(sections[1::2], sections[2::2]))
    env_of = {key: var for var, key in ENV_VARS.items()}
    for section, field in Settings.model_fields.items():
        if section in ("source_file", "dsn_origin"):
            continue
        body = by_section[section]
        for key, f in field.annotation.model_fields.items():
            assert f.description, f"{section}.{key} has no description"
            line = next(ln for ln in body.splitlines() if ln.startswith(f"#{key} = "))
            assert (env_of.get((section, key)) or "(no environment variable)") in line, line
    assert set(env_of.values()) <= set(re.findall(r"# (ETL_\w+)$", text, flags=re.M))


def test_template_loads_back_as_the_defaults_as_written_and_uncommented(tmp_path):
    written = tmp_path / "etl.toml"
    written.write_text(render_template(), encoding="utf-8")
    assert _loaded(written) == _defaults()
    uncommented = tmp_path / "uncommented.toml"
    uncommented.write_text(re.sub(r"^#(\w+ = )", r"\1", render_template(), flags=re.M))
    raw = tomllib.loads(uncommented.read_text())
    assert sum(len(v) for v in raw.values()) == sum(
        len(f.annotation.model_fields)
        for n, f in Settings.model_fields.items()
        if n not in ("source_file", "dsn_origin")
    )
    assert _loaded(uncommented) == _defaults()


# -- defaults that do not depend on the current directory ------------------------------------------


def test_defaults_are_the_shipped_mapping_and_a_data_dir_per_project(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    seen = []
    for d in ("a", "b", "a"):
        (tmp_path / d).mkdir(exist_ok=True)
        monkeypatch.chdir(tmp_path / d)
        s = load_settings(None, env={})
        assert s.source_file is None
        seen.append((s.postgres.embedded_dir, s.migrate.mapping, s.migrate.reports_dir))
    assert seen[0] == seen[2] and seen[0][0] != seen[1][0]  # one server per directory
    embedded, mapping, reports = seen[0]
    assert Path(embedded).is_relative_to(tmp_path / "xdg" / "etl" / "projects")
    assert Path(embedded).parent.name.startswith("a-") and Path(embedded).name == "pgdata"
    assert Path(mapping) == resources.default_mapping() and Path(mapping).is_file()
    assert reports == "reports"  # relative: ./reports of wherever etl runs
    # a settings file named by --config or ETL_SETTINGS: its directory is the project
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "night.toml").write_text("")
    named = load_settings(tmp_path / "proj" / "night.toml", env={}).postgres.embedded_dir
    assert Path(named).parent.name.startswith("proj-")


def test_root_without_xdg_data_home_keeps_its_server_out_of_root(monkeypatch, tmp_path):
    from etl.settings import default_embedded_dir

    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    root = default_embedded_dir(tmp_path / "night")
    assert root.is_relative_to("/var/lib/etl/projects") and root.parent.name.startswith("night-")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("HOME", "/home/op")
    user = default_embedded_dir(tmp_path / "night")
    assert user.is_relative_to("/home/op/.local/share/etl/projects")
    assert user.parent.name == root.parent.name


def test_overrides_of_the_data_dir_and_the_mapping(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    s = load_settings(None, env={"ETL_EMBEDDED_DIR": "pg", "ETL_MAPPING": "m.toml"})
    assert (s.postgres.embedded_dir, s.migrate.mapping) == ("pg", "m.toml")
    (tmp_path / "etl.toml").write_text('[postgres]\nembedded_dir = "here"\n')
    assert load_settings(None, env={}).postgres.embedded_dir == "here"


def test_settings_file_lookup_prefers_etl_toml_over_configs(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "etl.toml").write_text("[migrate]\nbatch_size = 7\n")
    assert load_settings(None, env={}).migrate.batch_size == 7
    (tmp_path / "etl.toml").write_text("[migrate]\nbatch_size = 9\n")
    s = load_settings(None, env={})
    assert (s.migrate.batch_size, s.source_file) == (9, "etl.toml")


# -- the CLI ---------------------------------------------------------------------------------------


def test_etl_init_writes_the_template_and_refuses_to_overwrite(tmp_path):
    target = tmp_path / "night" / "etl.toml"
    proc = etl("init", str(tmp_path / "night"))
    assert proc.returncode == 0, proc.stderr
    assert target.read_text(encoding="utf-8") == render_template()
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert _loaded(target) == _defaults()

    target.write_text("[migrate]\nbatch_size = 7\n")
    proc = etl("init", str(tmp_path / "night"))
    assert_one_line_error(proc, "error:", str(target), "already exists", "--force")
    assert target.read_text() == "[migrate]\nbatch_size = 7\n"

    proc = etl("init", "--force", cwd=tmp_path / "night")
    assert proc.returncode == 0, proc.stderr
    assert target.read_text(encoding="utf-8") == render_template()


def test_etl_init_into_an_unwritable_place_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    proc = etl("init", str(tmp_path / "file"))
    assert_one_line_error(proc, "error: cannot create the directory", "file")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "etl.toml").mkdir()
    proc = etl("init", "--force", str(tmp_path / "dir"))
    assert_one_line_error(proc, "error: cannot write", "etl.toml")


def test_an_init_file_is_read_where_etl_runs(tmp_path):
    assert etl("init", cwd=tmp_path).returncode == 0
    text = (tmp_path / "etl.toml").read_text()
    (tmp_path / "etl.toml").write_text(text.replace("#batch_size = 5000", "batch_size = 0"))
    proc = etl("status", cwd=tmp_path)
    assert_one_line_error(proc, "settings file etl.toml", "migrate.batch_size")


def test_version_names_etl_schema_python_psycopg_and_libpq():
    proc = etl("--version")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"etl {__version__}"
    assert lines[1].startswith(f"schema {resources.schema_version()} ")
    assert lines[2] == f"Python {sys.version.split()[0]}"
    assert lines[3].startswith(f"psycopg {psycopg.__version__} ") and "libpq " in lines[3]


def test_python_m_etl_and_the_etl_script_are_one_program(tmp_path):
    script = Path(sys.executable).parent / "etl"
    proc = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert proc.returncode == 0 and proc.stdout == etl("--version", cwd=tmp_path).stdout


def test_shell_completion(tmp_path):
    env = {"_ETL_COMPLETE": "complete_bash", "COMP_WORDS": "etl mig", "COMP_CWORD": "1"}
    proc = etl(env=env)
    assert proc.returncode == 0 and proc.stdout.split() == ["migrate"], proc
    env = {"_ETL_COMPLETE": "complete_bash", "COMP_WORDS": "etl migrate --sour", "COMP_CWORD": "2"}
    assert etl(env=env).stdout.split() == ["--source"]
    # typer takes the shell from the process tree (shellingham), not from an argument: run it
    # from bash, as an operator would, whatever started this test
    proc = subprocess.run(
        ["bash", "-c", f"'{sys.executable}' -m etl --show-completion; exit $?"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 0 and "complete" in proc.stdout and "_ETL_COMPLETE" in proc.stdout


def test_reports_dir_is_announced_when_etl_creates_it(schema_db, tmp_path):
    dump = tmp_path / "dump"
    write_dump(dump, generate(3, seed=2), gzip=False)
    env = {"ETL_PG_DSN": schema_db}
    first = etl("migrate", "--all", "--source", f"dump:{dump}", env=env, cwd=tmp_path)
    assert first.returncode in (0, 1), first.stderr
    said = [ln for ln in first.stderr.splitlines() if ln.startswith("etl: reports go to")]
    assert said == [
        f"etl: reports go to {tmp_path / 'reports'} (a new directory; --reports-dir, "
        "ETL_REPORTS_DIR or migrate.reports_dir change it)"
    ]
    again = etl("reconcile", "--all", "--source", f"dump:{dump}", env=env, cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "reports go to" not in again.stderr
    assert len(list((tmp_path / "reports").glob("*.json"))) == 2


def test_each_project_directory_has_its_own_embedded_server(tmp_path):
    """No DSN, no ETL_EMBEDDED_DIR: one server per project directory (a demo's rows never mix
    with a real night's), kept under XDG_DATA_HOME, not in the project; --version and status
    say where."""
    env = {"XDG_DATA_HOME": str(tmp_path / "xdg")}
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
    where = {d: etl("--version", env=env, cwd=tmp_path / d).stdout.splitlines()[-1] for d in "ab"}
    assert where["a"] != where["b"], where
    assert where["a"].startswith("PostgreSQL embedded at ") and "this project's" in where["a"]
    data = Path(where["a"].split(" at ", 1)[1].split(" (")[0])
    assert data.is_relative_to(tmp_path / "xdg") and data.parent.name.startswith("a-")
    try:
        first = etl("status", env=env, cwd=tmp_path / "a")
        assert first.returncode == 2  # no schema yet; the server was created all the same
        assert f"created and started the embedded server in {data}" in first.stderr
        assert first.stderr.splitlines()[0].endswith(f"etl: PostgreSQL embedded at {data}")
        url = etl("pg-url", env=env, cwd=tmp_path / "a").stdout
        assert url.startswith("postgresql://")
        again = etl("status", env=env, cwd=tmp_path / "a").stderr
        assert "created" not in again and f"embedded at {data}" in again
        assert not (tmp_path / "b" / "xdg").exists() and not (tmp_path / "a" / ".etl").exists()
    finally:
        stop = etl("pg-stop", env=env, cwd=tmp_path / "a")
    assert stop.returncode == 0 and str(data) in stop.stdout, stop.stderr


def test_suite_never_uses_the_operators_data_dir():
    xdg = os.environ["XDG_DATA_HOME"]
    assert Path(Settings().postgres.embedded_dir).is_relative_to(xdg)
    assert "etl-test-xdg-" in xdg
