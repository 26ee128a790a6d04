#!/usr/bin/env bash
# make demo: the whole flow on a fresh machine, on the embedded PostgreSQL unless ETL_PG_DSN is
# set: generate an ATSPro-shaped arangodump directory, apply the schema, migrate everything,
# reconcile, and print where the reports are.
set -euo pipefail
cd "$(dirname "$0")/.."
ETL=.venv/bin/etl
DUMP=.etl/demo-dump
DOCS=${DEMO_RESUMES:-2000}

echo "== generating an ATSPro data set ($DOCS resumes, with jobs, documents, edges, task results, and bad inputs) in $DUMP"
rm -rf "$DUMP"
.venv/bin/python -m tests.datagen --resumes "$DOCS" --out "$DUMP" --format dump --bad
echo "== etl apply-schema"
$ETL apply-schema
echo "== etl migrate --all --source dump:$DUMP"
$ETL migrate --all --source "dump:$DUMP" || test $? -eq 1   # 1 = finished with rejects (the bad inputs)
if $ETL --help | grep -q reconcile; then
  echo "== etl reconcile --all --source dump:$DUMP"
  $ETL reconcile --all --source "dump:$DUMP"
fi
echo "== etl status"
$ETL status
