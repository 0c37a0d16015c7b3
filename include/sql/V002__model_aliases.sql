-- Every move of a registry alias (champion / challenger), so any day's champion can be looked up.
CREATE TABLE IF NOT EXISTS ${schema}.model_alias_history (
    id                bigserial PRIMARY KEY,
    model_name        text        NOT NULL,
    alias             text        NOT NULL CHECK (alias IN ('champion', 'challenger')),
    version           integer     NOT NULL,
    previous_version  integer,
    run_id            text        NOT NULL,
    moved_at          timestamptz NOT NULL DEFAULT now(),
    triggered_by      text        NOT NULL,
    reason            text        NOT NULL,
    decision          text        NOT NULL,
    metrics           jsonb       NOT NULL DEFAULT '{}'::jsonb
);
COMMENT ON TABLE ${schema}.model_alias_history IS 'Append-only log of registry alias moves (champion/challenger) with the evidence.';
COMMENT ON COLUMN ${schema}.model_alias_history.version IS 'MLflow registered model version the alias points to after the move.';
COMMENT ON COLUMN ${schema}.model_alias_history.previous_version IS 'Version the alias pointed to before (NULL for the first).';
COMMENT ON COLUMN ${schema}.model_alias_history.triggered_by IS 'What started it: schedule, manual (user), drift_monitor, rollback.';
COMMENT ON COLUMN ${schema}.model_alias_history.reason IS 'Why the training ran or the alias moved, in words.';
COMMENT ON COLUMN ${schema}.model_alias_history.decision IS 'The gate''s verdict, e.g. promoted: roc_auc +0.012 over v3.';
COMMENT ON COLUMN ${schema}.model_alias_history.metrics IS 'Candidate and champion holdout metrics compared by the gate.';
CREATE INDEX IF NOT EXISTS model_alias_history_lookup
    ON ${schema}.model_alias_history (model_name, alias, moved_at DESC);

-- The champion on any day: the last champion move at or before the end of that day.
CREATE OR REPLACE VIEW ${schema}.champion_by_day AS
SELECT d::date AS day, h.model_name, h.version, h.run_id, h.moved_at
FROM generate_series((SELECT min(moved_at)::date FROM ${schema}.model_alias_history), current_date, interval '1 day') AS d
CROSS JOIN LATERAL (
    SELECT * FROM ${schema}.model_alias_history h
    WHERE h.alias = 'champion' AND h.moved_at < d + interval '1 day'
    ORDER BY h.moved_at DESC, h.id DESC LIMIT 1
) AS h;
COMMENT ON VIEW ${schema}.champion_by_day IS 'Which model version was champion at the end of each day.';
