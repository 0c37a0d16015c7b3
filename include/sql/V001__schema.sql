-- Loopline's analyst-facing schema. Every statement is idempotent: migrations are applied on every deploy.
-- ${schema} is the validated identifier of postgres.schema in the config.
CREATE SCHEMA IF NOT EXISTS ${schema};

CREATE TABLE IF NOT EXISTS ${schema}.schema_migrations (
    version     text PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE ${schema}.schema_migrations IS 'Versioned SQL files of include/sql applied to this database.';
