"""Generic tables: one JSONB table per ArangoDB collection, for any database (issue #17).

names (identifiers), spec (the compiled mapping entry), transform (document -> row), ddl (the
generated migration), apply (apply-schema --mapping), load (stage + merge), discover (the
mapping file from a source's collections, indexes and a sample). docs/generic.md explains it.
"""
