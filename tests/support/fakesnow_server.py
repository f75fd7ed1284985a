"""fakesnow's Snowflake-protocol server, with one translation corrected; run by the stand-ins'
own Python (``.venv-standins/bin/python tests/support/fakesnow_server.py --server ...``).

fakesnow 0.12.1 turns ``CREATE OR REPLACE TABLE t CLONE s`` into DuckDB's ``CREATE TABLE t AS
SELECT * FROM s``, dropping the ``OR REPLACE``: a clone over an existing table, which Snowflake
replaces atomically, fails on the stand-in with "Table ... already exists". The marts' publish
(``snowflake__publish_schema``) is that statement, so every publish after the first would fail on
the stand-in only. This keeps the ``OR REPLACE``; everything else is fakesnow as released.
"""

from __future__ import annotations

import sys

import sqlglot.expressions as exp
from fakesnow import cli, transforms

_create_clone = transforms.create_clone


def create_clone(expression: exp.Expression) -> exp.Expression:
    translated = _create_clone(expression)
    if translated is not expression and expression.args.get("replace"):
        translated.set("replace", True)
    return translated


transforms.create_clone = create_clone

if __name__ == "__main__":
    sys.exit(cli.main(sys.argv[1:]))
