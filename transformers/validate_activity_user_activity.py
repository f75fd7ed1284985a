"""Validate every landed event against the entity's declared schema.

Every landed row ends valid (ready for COPY, its timestamp stored as UTC by the load) or in
rejects with its reason and raw payload. Returns the manifest with those files and counts.
"""
from mage_project import checks
from mage_project.pipelines import user_activity

if 'transformer' not in globals():
    from mage_ai.data_preparation.decorators import transformer
if 'test' not in globals():
    from mage_ai.data_preparation.decorators import test


@transformer
def validate_activity_user_activity(manifest, *args, **kwargs):
    return user_activity.validate(manifest)


@test
def test_every_landed_row_validated(output, *args) -> None:
    checks.require(checks.every_landed_row_validated(output))
