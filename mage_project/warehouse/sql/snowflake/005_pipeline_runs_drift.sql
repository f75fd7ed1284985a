-- What drifted from the entity's declaration in a run: kind -> field -> records, as JSON text
-- (kinds: unknown_field, missing_field, wrong_type; see mage_project.entities.DriftPolicy).
alter table ops.pipeline_runs add column if not exists drift varchar;
