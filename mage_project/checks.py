"""Named checks that blocks' ``@test`` functions call; each returns a result, never just passes.

A check states what it compared, so a failing test explains itself in Mage's output.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

from mage_project.landing import LandingZone


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    observed: object
    expected: object = None

    def __str__(self) -> str:
        status = "passed" if self.passed else "FAILED"
        return f"{self.name} {status}: observed {self.observed!r}, expected {self.expected!r}"


def require(result: CheckResult) -> CheckResult:
    """Print the result, and raise AssertionError in its own words if it failed (for ``@test``)."""
    print(result)
    if not result.passed:
        raise AssertionError(str(result))
    return result


def landing_files_complete(manifest: dict) -> CheckResult:
    """Every file of the manifest is in the landing zone and the rows add up to what was fetched."""
    landing = LandingZone(manifest["landing_url"])
    missing = [f["key"] for f in manifest["files"] if not landing.exists(f["key"])]
    total = sum(f["rows"] for f in manifest["files"])
    return CheckResult(
        "landing_files_complete",
        not missing and total == manifest["rows_fetched"],
        {"missing": missing, "rows_in_files": total},
        {"missing": [], "rows_in_files": manifest["rows_fetched"]},
    )


def every_landed_row_validated(validated: dict) -> CheckResult:
    """Each landing file's rows ended as valid or rejected, none lost."""
    landed = {f["key"]: f["rows"] for f in validated["files"]}
    seen = {c["key"]: c["valid"] + c["rejected"] for c in validated["validated"]}
    return CheckResult("every_landed_row_validated", seen == landed, seen, landed)


def load_reconciles(summary: dict) -> CheckResult:
    """fetched = loaded + rejected + duplicates collapsed, and the run succeeded."""
    accounted = summary["rows_loaded"] + summary["rows_rejected"] + summary["rows_duplicate"]
    return CheckResult(
        "load_reconciles",
        summary.get("status") == "success" and accounted == summary["rows_fetched"],
        {"status": summary.get("status"), "accounted": accounted},
        {"status": "success", "accounted": summary["rows_fetched"]},
    )


def file_loads_reconcile(summary: dict) -> CheckResult:
    """Every pending file ended loaded, skipped, failed (its content: retried when rewritten) or
    error (a local failure: retried by the next run), and each loaded file's rows are all
    accounted for (loaded + rejected = read)."""
    unaccounted = [
        f["key"] for f in summary["files"]
        if f["status"] not in ("loaded", "skipped", "failed", "error")
        or (f["status"] == "loaded" and f["rows_loaded"] + f["rows_rejected"] != f["rows"])
    ]
    return CheckResult("file_loads_reconcile", not unaccounted, {"unaccounted": unaccounted},
                       {"unaccounted": []})


def dbt_build_passed(summary: dict) -> CheckResult:
    """Every model built and every dbt test passed (or nothing needed building)."""
    bad = {k: v for k, v in summary["statuses"].items() if k not in ("success", "pass")}
    built = summary["models"] > 0 or summary.get("up_to_date") is True
    return CheckResult("dbt_build_passed", built and not bad,
                       {"models": summary["models"], "not_passed": bad},
                       {"models": "> 0", "not_passed": {}})


def raw_quality_passed(summary: dict) -> CheckResult:
    """No error-level expectation failed on the raw loads, and every check result was stored."""
    return CheckResult("raw_quality_passed",
                       not summary["failed_error"] and summary["stored"] == summary["checks"],
                       {"failed_error": summary["failed_error"], "stored": summary["stored"]},
                       {"failed_error": [], "stored": summary["checks"]})


def marts_build_planned(plan: dict) -> CheckResult:
    """Up to date, or a build into the audit schema with artifacts in the run's own target path."""
    args = shlex.split(plan["dbt_args"])
    audit = "--vars" in args and json.loads(args[args.index("--vars") + 1]).get("audit") is True
    own_target = args[args.index("--target-path") + 1] == plan["target_path"] \
        if "--target-path" in args else False
    observed = {"up_to_date": plan["up_to_date"], "audit": audit, "own_target_path": own_target}
    return CheckResult("marts_build_planned", plan["up_to_date"] is True or (audit and own_target),
                       observed, "up_to_date, or audit and own_target_path")


def marts_published(summary: dict) -> CheckResult:
    """The audited marts were swapped in, after every dbt test passed (or were up to date:
    nothing they are built from changed since their last publish)."""
    observed = {"published": summary.get("published"), "up_to_date": summary.get("up_to_date")}
    return CheckResult("marts_published", summary.get("published") is True
                       or summary.get("up_to_date") is True, observed,
                       "published or up_to_date")
