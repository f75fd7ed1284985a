#!/bin/sh
# The project's warehouse roles and a login for each (README: Warehouse roles), created by the
# postgres image at its first initialisation (it runs /docker-entrypoint-initdb.d/ as
# POSTGRES_USER over its socket, before the server listens on the network); the Mage services log
# in as these logins (docker-compose.yml). It may run again, e.g. on a volume initialised before it
# existed, or to change a password:
#   docker compose exec warehouse /docker-entrypoint-initdb.d/10-project-roles.sh
#
# The passwords reach psql as variables (-v) and its SQL quotes them (:'var'): no password is
# spliced into SQL text by the shell, whatever characters it holds. The roles themselves come
# from the project's own SQL (PROJECT_ROLES_SQL, a mount of postgres_roles.sql).
# Plain POSIX sh, and no `set`: the image sources a script that is not executable into its own shell.

: "${POSTGRES_LOADER_USER:?the loader's login}" "${POSTGRES_LOADER_PASSWORD:?the loader's password}"
: "${POSTGRES_TRANSFORMER_USER:?dbt's login}" "${POSTGRES_TRANSFORMER_PASSWORD:?dbt's password}"
: "${POSTGRES_ANALYST_USER:?the analyst's login}" "${POSTGRES_ANALYST_PASSWORD:?the analyst's password}"
: "${PROJECT_ROLES_SQL:?the path of postgres_roles.sql}"

for login in "$POSTGRES_LOADER_USER" "$POSTGRES_TRANSFORMER_USER" "$POSTGRES_ANALYST_USER"; do
    if [ "$login" = "$POSTGRES_USER" ]; then
        # Its sessions would take a project role: the migrations would run without their privileges.
        echo "10-project-roles.sh: $login is POSTGRES_USER, the warehouse's superuser: give each role a login of its own" >&2
        exit 1
    fi
done

psql -v ON_ERROR_STOP=1 --no-psqlrc --no-password --single-transaction \
    --username "$POSTGRES_USER" --dbname "${POSTGRES_DB:-$POSTGRES_USER}" \
    -v loader="$POSTGRES_LOADER_USER" -v loader_password="$POSTGRES_LOADER_PASSWORD" \
    -v transformer="$POSTGRES_TRANSFORMER_USER" -v transformer_password="$POSTGRES_TRANSFORMER_PASSWORD" \
    -v analyst="$POSTGRES_ANALYST_USER" -v analyst_password="$POSTGRES_ANALYST_PASSWORD" \
    -f "$PROJECT_ROLES_SQL" -f - <<'SQL'
-- Each login: created if new, then a member of its role only, which its sessions take at login
-- (`set role`), so that what it creates is the role's (dbt's tables are mage_transformer's).
select format('create role %I', :'loader') where not exists (select from pg_roles where rolname = :'loader') \gexec
alter role :"loader" with login nosuperuser nocreatedb nocreaterole password :'loader_password';
grant mage_loader to :"loader";
alter role :"loader" set role mage_loader;

select format('create role %I', :'transformer') where not exists (select from pg_roles where rolname = :'transformer') \gexec
alter role :"transformer" with login nosuperuser nocreatedb nocreaterole password :'transformer_password';
grant mage_transformer to :"transformer";
alter role :"transformer" set role mage_transformer;

select format('create role %I', :'analyst') where not exists (select from pg_roles where rolname = :'analyst') \gexec
alter role :"analyst" with login nosuperuser nocreatedb nocreaterole password :'analyst_password';
grant mage_analyst to :"analyst";
alter role :"analyst" set role mage_analyst;
SQL
