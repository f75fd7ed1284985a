"""warehouse_elt's write-audit-publish in one call, for the tests: the functions its blocks call,
in the order Mage runs them (pipelines/warehouse_elt/metadata.yaml)."""

from __future__ import annotations

import shlex

from mage_project import transform
from mage_project.pipelines import quality_gates


def build_and_publish(run_id: str, select: str | None = None) -> dict:
    """Run the marts' write-audit-publish as warehouse_elt does after its raw quality gate:

    - ``plan_marts_build``: ``quality_gates.plan_build``;
    - the ``marts_out_of_date`` condition: ``quality_gates.build_still_planned``; false, Mage
      skips the dbt block and ``publish_marts``, and nothing is published;
    - ``build_dbt_warehouse``, Mage's dbt block: ``dbt build`` with the plan's ``dbt_args`` on
      the configured warehouse (here a subprocess through ``transform.run_dbt``); when it fails
      its callback ``store_dbt_build_results`` calls ``quality_gates.store_failed_build``, and
      the error (dbt's output) is raised;
    - ``publish_marts``: ``quality_gates.publish_build``.

    Returns what ``publish_marts`` returns, or, when the dbt block was skipped, what ran: nothing
    (``published`` False, ``up_to_date`` as planned).
    """
    plan = quality_gates.plan_build(run_id, select)
    if not quality_gates.build_still_planned(plan):
        return {"models": 0, "tests": 0, "statuses": {}, "published": False,
                "up_to_date": plan["up_to_date"]}
    try:
        transform.run_dbt("build", *shlex.split(plan["dbt_args"]))
    except RuntimeError:
        quality_gates.store_failed_build(run_id)
        raise
    return quality_gates.publish_build(plan)
