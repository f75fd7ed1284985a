"""make editor's credentials: no editor reachable from other machines with the local default
password, and no session signed with Mage's public default secret."""

from __future__ import annotations

import re
import stat

import pytest

from mage_project import cli, config, editor, transform

MAGE_DEFAULT_JWT_SECRET = "materia"  # mage_ai/settings/server.py: JWT_SECRET's default


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("PROJECT_DATA_DIR", str(tmp_path))
    # The warehouse's settings are not what these tests are about (resolving them starts the
    # embedded PostgreSQL).
    monkeypatch.setattr(transform, "warehouse_environment", lambda: {})
    return tmp_path


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "editor.example.com"])
def test_an_editor_beyond_loopback_with_the_local_password_is_refused_before_it_starts(
        data_dir, monkeypatch, capsys, host):
    monkeypatch.setenv("MAGE_EDITOR_HOST", host)
    assert cli.main(["editor"]) == 2
    assert capsys.readouterr().err == (
        f"error: bad setting: MAGE_EDITOR_HOST={host!r} makes the editor reachable from other machines"
        " while DEFAULT_OWNER_PASSWORD is the local default: set DEFAULT_OWNER_PASSWORD (and"
        " DEFAULT_OWNER_EMAIL) first, or keep MAGE_EDITOR_HOST=127.0.0.1\n")
    with pytest.raises(config.ConfigError, match="the local default"):  # set, to the default
        editor.check_exposure(host, {"DEFAULT_OWNER_PASSWORD": "change-me-locally"})


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_a_loopback_editor_may_keep_the_local_password(host):
    editor.check_exposure(host, {})


def test_an_editor_beyond_loopback_with_its_own_password_is_allowed():
    editor.check_exposure("0.0.0.0", {"DEFAULT_OWNER_PASSWORD": "a-password-of-its-own"})


def test_sessions_are_signed_with_the_data_directorys_own_secret(data_dir, monkeypatch):
    monkeypatch.delenv("JWT_SECRET", raising=False)
    first = editor.editor_environment()["JWT_SECRET"]
    assert re.fullmatch(r"[0-9a-f]{64}", first) and first != MAGE_DEFAULT_JWT_SECRET
    assert editor.editor_environment()["JWT_SECRET"] == first  # kept: sessions survive a restart
    kept = data_dir / "mage" / "jwt_secret"
    assert kept.read_text() == first and stat.S_IMODE(kept.stat().st_mode) == 0o600
    monkeypatch.setenv("PROJECT_DATA_DIR", str(data_dir / "another"))
    assert editor.editor_environment()["JWT_SECRET"] != first  # another data directory's own
    monkeypatch.setenv("JWT_SECRET", "set-by-the-deployer")
    assert editor.editor_environment()["JWT_SECRET"] == "set-by-the-deployer"
