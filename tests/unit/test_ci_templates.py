"""The CI templates for a domain team's repository (.github/workflows/ci.yml, .gitlab-ci.yml):
they parse, their jobs run exactly the README's commands (make setup, make test, python -m
mage_project check --base <target branch>), and the check's CI formats are what each platform reads.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft7Validator

from mage_project import cli, policy

ROOT = Path(__file__).resolve().parents[2]
GITHUB = ROOT / ".github/workflows/ci.yml"
GITLAB = ROOT / ".gitlab-ci.yml"
IMAGE = "python:3.11-bookworm"  # Debian, with the Python the lock files are compiled for
CHECK = "python -m mage_project check"
REPORT = "gl-code-quality-report.json"


def command(line: str) -> list[str]:
    """A job's shell line as words, the venv's interpreter named as the README names it
    (``python``) and a redirection of stdout cut off."""
    words = shlex.split(line)
    if ">" in words:
        words = words[:words.index(">")]
    return ["python" if w == ".venv/bin/python" else w for w in words]


def github() -> dict:
    return yaml.safe_load(GITHUB.read_text())


def gitlab() -> dict:
    return yaml.safe_load(GITLAB.read_text())


def test_both_templates_parse_as_yaml():
    workflow, pipeline = github(), gitlab()
    # PyYAML reads GitHub's bare `on` key as YAML 1.1's boolean true.
    assert set(workflow[True]) == {"pull_request", "push"}
    assert list(workflow["jobs"]) == ["test"]
    assert [name for name, job in pipeline.items() if isinstance(job, dict) and "script" in job] == ["test"]


def test_github_runs_make_setup_the_check_against_the_base_and_make_test():
    job = github()["jobs"]["test"]
    assert job["container"] == IMAGE
    checkout, *steps = job["steps"]
    assert checkout["uses"].startswith("actions/checkout@")
    assert checkout["with"]["fetch-depth"] == 0  # the base branch and the merge base are there
    runs = [command(step["run"]) for step in steps]
    assert runs == [
        ["git", "config", "--global", "--add", "safe.directory", "$GITHUB_WORKSPACE"],
        ["make", "setup"],
        [*CHECK.split(), "--base", "$CHECK_BASE", "--format", "github"],
        ["make", "test"],
    ]
    assert job["env"]["CHECK_BASE"] == (
        "origin/${{ github.base_ref || github.event.repository.default_branch }}")
    # The tests run even when the rules found something, so one push shows both.
    assert steps[-1]["if"] == "${{ !cancelled() }}"


def test_gitlab_runs_make_setup_the_check_against_the_target_branch_and_make_test():
    pipeline = gitlab()
    job = pipeline["test"]
    assert pipeline["default"]["image"] == IMAGE
    assert pipeline["variables"]["GIT_DEPTH"] == 0
    assert [command(line) for line in job["before_script"]] == [
        ["export", "CHECK_BRANCH=${CI_MERGE_REQUEST_TARGET_BRANCH_NAME:-$CI_DEFAULT_BRANCH}"],
        ["git", "fetch", "--no-tags", "origin",
         "+refs/heads/$CHECK_BRANCH:refs/remotes/origin/$CHECK_BRANCH"],
        ["make", "setup"],
    ]
    check_line, test_line = job["script"]
    assert command(check_line) == [*CHECK.split(), "--base", "origin/$CHECK_BRANCH", "--format", "gitlab"]
    assert shlex.split(check_line)[-2:] == [">", REPORT]
    assert command(test_line) == ["make", "test"]
    assert job["artifacts"]["when"] == "always"  # the report of a failed check is the useful one
    assert job["artifacts"]["reports"]["codequality"] == REPORT


def test_the_templates_commands_are_the_readmes():
    readme = (ROOT / "README.md").read_text()
    development = readme[readme.index("\n## Development"):]
    for verb in ("make setup", "make test"):
        assert f"`{verb}`" in development, verb
    # The check's usage line, as the README shows it: every option the templates pass but --format
    # (which the CLI itself holds to, below) is there.
    [usage] = [line for line in readme.splitlines() if line.startswith(f"{CHECK} [")]
    assert "[--base REF]" in usage
    job = github()["jobs"]["test"]
    used = [command(s["run"]) for s in job["steps"] if "run" in s and "mage_project" in s["run"]]
    used += [command(line) for line in gitlab()["test"]["script"] if "mage_project" in line]
    options = {word for words in used for word in words if word.startswith("--")}
    assert options == {"--base", "--format"}


@pytest.mark.parametrize(("template", "expected_format"), [("github", "github"), ("gitlab", "gitlab")])
def test_the_check_command_line_of_each_template_is_one_the_cli_takes(template, expected_format,
                                                                      monkeypatch):
    if template == "github":
        [words] = [command(s["run"]) for s in github()["jobs"]["test"]["steps"]
                   if "mage_project" in s.get("run", "")]
    else:
        [words] = [command(line) for line in gitlab()["test"]["script"] if "mage_project" in line]
    called = {}
    monkeypatch.setattr(policy, "check_command", lambda **kwargs: called.update(kwargs) or 0)
    assert cli.main(words[3:]) == 0
    assert called["output_format"] == expected_format and called["base"].startswith(("$", "origin/$"))
    assert called["as_json"] is False


FINDINGS = [
    policy.Finding("DP004", policy.ERROR, "contracts/finance/revenue.yaml", 42,
                   "marts.fct_daily_revenue column 'revenue' is not in x.yml: make them agree"),
    policy.Finding("DP007", policy.WARNING, "dbt/warehouse/models/marts/fct_refunds.sql", None,
                   "marts.fct_refunds belongs to no product: declare it"),
]
# A workflow command as the runner parses it (actions/toolkit command.ts): ::name k=v,k=v::data,
# neither the properties nor the data holding a raw newline, a property no raw ',' or ':'.
WORKFLOW_COMMAND = re.compile(
    r"::(?P<level>error|warning) (?P<props>[^:\r\n]*)::(?P<data>[^\r\n]*)")


def test_the_github_format_is_workflow_commands_the_runner_reads():
    lines = [policy.github_annotation(f) for f in FINDINGS]
    parsed = [WORKFLOW_COMMAND.fullmatch(line) for line in lines]
    assert all(parsed), lines
    props = [dict(p.split("=", 1) for p in m["props"].split(",")) for m in parsed]
    assert [m["level"] for m in parsed] == ["error", "warning"]
    assert props == [
        {"file": "contracts/finance/revenue.yaml", "line": "42", "title": "DP004"},
        {"file": "dbt/warehouse/models/marts/fct_refunds.sql", "title": "DP007"}]
    assert [m["data"] for m in parsed] == [f.message for f in FINDINGS]


# What GitLab reads of a Code Quality report (its docs' required fields of the Code Climate spec).
CODE_QUALITY = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["description", "check_name", "fingerprint", "severity", "location"],
        "properties": {
            "description": {"type": "string", "minLength": 1},
            "check_name": {"type": "string", "minLength": 1},
            "fingerprint": {"type": "string", "minLength": 1},
            "severity": {"enum": ["info", "minor", "major", "critical", "blocker"]},
            "location": {
                "type": "object", "required": ["path", "lines"],
                "properties": {
                    "path": {"type": "string", "minLength": 1},
                    "lines": {"type": "object", "required": ["begin"],
                              "properties": {"begin": {"type": "integer", "minimum": 1}}},
                },
            },
        },
    },
}


def test_the_gitlab_format_is_a_code_quality_report():
    report = json.loads(json.dumps([policy.code_quality_issue(f) for f in FINDINGS]))
    assert sorted(e.message for e in Draft7Validator(CODE_QUALITY).iter_errors(report)) == []
    assert [(i["check_name"], i["severity"], i["location"]["path"], i["location"]["lines"]["begin"])
            for i in report] == [
        ("DP004", "major", "contracts/finance/revenue.yaml", 42),
        ("DP007", "minor", "dbt/warehouse/models/marts/fct_refunds.sql", 1)]
    assert report[0]["description"] == f"DP004: {FINDINGS[0].message}"
    assert len({i["fingerprint"] for i in report}) == 2
