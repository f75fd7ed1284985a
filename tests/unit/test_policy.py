"""python -m mage_project check: the repository is clean, and each rule fires on its defect."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from mage_project import policy

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = "contracts/finance/revenue.yaml"


def test_the_repository_has_no_error():
    findings = policy.check(ROOT)
    assert [f.text() for f in findings] == []


def project_copy(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    for name in ("contracts", "pipelines", "data_loaders", "transformers", "data_exporters",
                 "dbt/warehouse/models", "mage_project/warehouse/sql/postgres"):
        shutil.copytree(ROOT / name, root / name)
    for name in ("io_config.yaml", "metadata.yaml", ".secrets.baseline"):
        shutil.copy(ROOT / name, root / name)
    return root


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=root,
                   check=True, capture_output=True)


def edit_contract(root: Path, change) -> None:
    path = root / CONTRACT
    document = yaml.safe_load(path.read_text())
    change(document)
    path.write_text(yaml.safe_dump(document, sort_keys=False))


def findings(root: Path, rule: str, base: str | None = None) -> list[tuple[str, str]]:
    return [(f.path, f.message) for f in policy.check(root, base=base, rules=[rule])]


def test_a_mart_without_its_model_fires_dp003(tmp_path):
    root = project_copy(tmp_path)
    (root / "dbt/warehouse/models/marts/dim_customers.sql").unlink()
    assert findings(root, "DP003") == [(CONTRACT, (
        "marts.dim_customers has no dbt model dbt/warehouse/models/marts/dim_customers.sql: "
        "add the dbt model or migration, or remove the table from the contract"))]


def test_io_config_literal_password_fires_dp013(tmp_path):
    root = project_copy(tmp_path)
    path = root / "io_config.yaml"
    path.write_text(path.read_text().replace("\"{{ env_var('POSTGRES_PASSWORD') }}\"", "hunter2"))
    assert findings(root, "DP013") == [("io_config.yaml", (
        "default.POSTGRES_PASSWORD holds a value, not an environment reference: "
        "use \"{{ env_var('NAME') }}\" and set NAME in the environment (.env)"))]


def committed(tmp_path: Path) -> Path:
    root = project_copy(tmp_path)
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "base")
    return root


def columns(document: dict) -> list[dict]:
    return document["schema"][1]["properties"]  # marts.dim_customers


def test_removed_column_is_breaking(tmp_path):
    root = committed(tmp_path)
    edit_contract(root, lambda d: columns(d).pop())
    assert findings(root, "DP014", "HEAD") == [(CONTRACT, (
        "marts.dim_customers column 'lifetime_net_revenue' removed (at HEAD contracts/finance/revenue.yaml "
        "1.0.0, now 1.0.0): make the change additive, or raise the contract's major version"))]


def test_removed_column_with_major_version_raised_is_not(tmp_path):
    root = committed(tmp_path)
    edit_contract(root, lambda d: (columns(d).pop(), d.update(version="2.0.0")))
    assert findings(root, "DP014", "HEAD") == []


def test_added_column_is_not_breaking(tmp_path):
    root = committed(tmp_path)
    edit_contract(root, lambda d: columns(d).append(dict(columns(d)[-1], name="new_column")))
    assert findings(root, "DP014", "HEAD") == []


def test_changed_type_is_breaking(tmp_path):
    root = committed(tmp_path)
    edit_contract(root, lambda d: columns(d)[1].update(physicalType="varchar(2)"))
    assert [m for _, m in findings(root, "DP014", "HEAD")] == [
        "marts.dim_customers column 'country': physicalType changed from text to varchar(2) (at HEAD "
        "contracts/finance/revenue.yaml 1.0.0, now 1.0.0): make the change additive, or raise the "
        "contract's major version"]


def test_column_turned_required_is_breaking(tmp_path):
    root = committed(tmp_path)
    edit_contract(root, lambda d: columns(d)[1].update(required=True))
    assert [m for _, m in findings(root, "DP014", "HEAD")] == [
        "marts.dim_customers column 'country': required changed from False to True (at HEAD "
        "contracts/finance/revenue.yaml 1.0.0, now 1.0.0): make the change additive, or raise the "
        "contract's major version"]
