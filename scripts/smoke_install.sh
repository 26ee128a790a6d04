#!/usr/bin/env bash
# Install etl as an operator does and run it with no checkout in reach: build the sdist and the
# wheel (python -m build), install the wheel into a new venv outside the checkout, and from empty
# temporary directories run etl --version, etl init, apply-schema, migrate and reconcile of
# generated arangodumps on the embedded PostgreSQL, then stop it (etl pg-stop).
#   1. the plain flow, in a temporary ETL_EMBEDDED_DIR, every command must exit 0:
#      etl apply-schema && etl migrate --all --source dump:D && etl reconcile --all --source dump:D
#   2. a dump with every bad input (migrate exits 1: rejects), on the per-user default data
#      directory under a temporary XDG_DATA_HOME; a second directory reaches the same server.
# Usage: scripts/smoke_install.sh   (make install first: the build and the data generator run
# in .venv). PYTHON picks the interpreter of the new venv (default python3); KEEP=1 keeps the
# work directory.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
dev_py=$repo/.venv/bin/python
py=${PYTHON:-python3}
[ -x "$dev_py" ] && "$dev_py" -c 'import build' 2>/dev/null \
    || { echo "$0: run make install first (.venv with the test extras, which hold build)" >&2; exit 2; }
work=$(mktemp -d "${TMPDIR:-/tmp}/etl-smoke.XXXXXX")
chmod 755 "$work"   # as root the embedded server runs as another user, who must reach its data
venv=$work/venv

stop_servers() {
    for d in "$work/pg-plain" "$work/xdg/etl/pgdata"; do
        if [ -f "$d/postmaster.pid" ]; then
            ETL_EMBEDDED_DIR=$d "$venv/bin/etl" pg-stop || true
        fi
    done
    if [ "${KEEP:-}" = 1 ]; then echo "smoke: kept $work"; else rm -rf "$work"; fi
}
trap stop_servers EXIT

step() { echo "== smoke: $*"; }
fail() { echo "smoke: FAILED: $*" >&2; exit 1; }

step "python -m build (sdist, and the wheel built from it)"
"$dev_py" -m build --outdir "$work/dist" "$repo" >"$work/build.log" 2>&1 || {
    tail -n 30 "$work/build.log" >&2
    fail "python -m build"
}
wheel=$(ls "$work"/dist/etl-*.whl)
echo "built $(basename "$wheel") and $(basename "$(ls "$work"/dist/etl-*.tar.gz)")"

step "install the wheel into a new venv ($venv)"
"$py" -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check "$wheel"

step "generate two arangodumps (300 resumes; one with every bad input)"
(cd "$repo" && "$dev_py" -m tests.datagen --resumes 300 --out "$work/dump-plain" --format dump >/dev/null)
(cd "$repo" && "$dev_py" -m tests.datagen --resumes 300 --out "$work/dump-bad" --format dump --bad >/dev/null)

# The operator's shell: the installed etl first on PATH, no ETL_* variable, no checkout near.
for v in $(compgen -e); do
    case $v in ETL_*) unset "$v" ;; esac
done
export PATH="$venv/bin:$PATH"
unset PYTHONPATH
mkdir -p "$work/plain" "$work/bad" "$work/elsewhere"
cd "$work/plain"

step "the installed package, not the checkout"
where=$(python -c 'import etl, sys; print(etl.__file__)')
case $where in
    "$venv"/*) echo "etl imported from $where" ;;
    *) fail "etl imported from $where, not from the new venv" ;;
esac
[ "$(command -v etl)" = "$venv/bin/etl" ] || fail "etl on PATH is $(command -v etl)"
site=$(dirname "$where")
(cd "$repo/sql" && sha256sum ./*.sql) >"$work/sql.repo.sha256"
(cd "$site/sql" && sha256sum ./*.sql) >"$work/sql.installed.sha256"
cmp -s "$work/sql.repo.sha256" "$work/sql.installed.sha256" \
    || fail "the installed sql files differ from sql/ (migration_history records their sha256)"
echo "the installed sql files are sql/'s, byte for byte ($(wc -l <"$work/sql.repo.sha256") files)"
cmp -s "$repo/configs/atspro.toml" "$site/configs/atspro.toml" || fail "installed mapping differs"

step "etl --version; python -m etl --version"
etl --version | tee "$work/version.txt"
newest=$(ls "$repo"/sql/[0-9][0-9][0-9]_*.sql | sort | tail -n 1 | xargs basename | cut -c1-3)
grep -q "^schema $newest " "$work/version.txt" || fail "etl --version names no schema $newest"
python -m etl --version >/dev/null

step "etl init; a second etl init refuses to overwrite (exit 2, one line)"
etl init
[ -f etl.toml ] || fail "etl init wrote no etl.toml"
set +e
etl init 2>"$work/init.err"
rc=$?
set -e
[ "$rc" = 2 ] && [ "$(wc -l <"$work/init.err")" = 1 ] || fail "second etl init: exit $rc, $(cat "$work/init.err")"

step "1. in an empty directory: etl apply-schema && etl migrate && etl reconcile (embedded server in ETL_EMBEDDED_DIR)"
export ETL_EMBEDDED_DIR=$work/pg-plain
etl apply-schema && etl migrate --all --source "dump:$work/dump-plain" \
    && etl reconcile --all --source "dump:$work/dump-plain" \
    || fail "the plain flow (exit $?)"
etl schema-status >/dev/null || fail "etl schema-status"
ls reports/*.html >/dev/null || fail "no HTML report in ./reports"
etl pg-stop
unset ETL_EMBEDDED_DIR

step "2. bad inputs, on the per-user data directory (XDG_DATA_HOME=$work/xdg), one server per project directory"
export XDG_DATA_HOME=$work/xdg
cd "$work/bad"
etl apply-schema 2>&1 | tee "$work/apply.err"
grep -q "embedded server in $work/xdg/etl/projects/bad-[0-9a-f]*/pgdata" "$work/apply.err" \
    || fail "the embedded server is not this project's, in the per-user data directory"
set +e
etl migrate --all --source "dump:$work/dump-bad"
rc=$?
set -e
[ "$rc" = 1 ] || fail "migrate of the bad dump exited $rc, not 1 (finished, with rejects)"
etl reconcile --all --source "dump:$work/dump-bad" || fail "reconcile of the bad dump (exit $?)"
etl status >"$work/status.txt" 2>&1 || fail "etl status (exit $?)"
grep -q "^reconcile-.* finished" "$work/status.txt" || fail "etl status shows no reconcile run"
bad_url=$(etl pg-url 2>/dev/null)
etl pg-stop
# another project directory gets its own server: demo rows never mix with another project's
cd "$work/elsewhere"
[ "$(etl pg-url 2>/dev/null)" != "$bad_url" ] || fail "another project directory reached the same server"
etl --version >"$work/version-elsewhere.txt"
grep -q "$work/xdg/etl/projects/elsewhere-" "$work/version-elsewhere.txt" \
    || fail "etl --version elsewhere names no server of its own"
[ ! -e "$work/elsewhere/.etl" ] && [ ! -e "$work/bad/.etl" ] || fail "a ./.etl directory appeared"
etl pg-stop >/dev/null 2>&1 || true

echo "smoke: OK: wheel installed outside the checkout; --version, init, apply-schema, migrate, reconcile from empty directories"
