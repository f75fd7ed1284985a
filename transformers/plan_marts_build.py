"""Plan the marts' write-audit-publish: up to date (nothing they are built from changed since
their last publish: the dbt block is skipped), or the arguments of the dbt build, with the
marts' build lease taken for this run so no other run builds into the audit schema meanwhile.

Run from the notebook, the build belongs to the editor session's run (`editor-<pid>-<hash>`, of
the kernel that runs the session's blocks): running this block again takes its own lease again,
another editor session's build waits for it or is refused, naming it; publish_marts (or a failing
dbt block) gives it up, and until then a scheduled run waits for it. Refuses while a loaded
file version has not passed the raw quality gate. The pipeline variable `dbt_select` (a dbt
selector) rebuilds that selection too, even when up to date.
"""
from mage_project import checks, runs
from mage_project.pipelines import quality_gates

if 'transformer' not in globals():
    from mage_ai.data_preparation.decorators import transformer
if 'test' not in globals():
    from mage_ai.data_preparation.decorators import test


@transformer
def plan_marts_build(gate, *args, **kwargs):
    return quality_gates.plan_build(run_id=runs.run_id_for(kwargs, notebook=quality_gates.EDITOR),
                                    select=kwargs.get('dbt_select'))


@test
def test_plan_names_the_audit_build(output, *args) -> None:
    checks.require(checks.marts_build_planned(output))
