-- Model artifacts carry no code, and what scoring loads is what the gate judged.
-- Every file of a registered model version is hashed (SHA-256) when the version is gated and recorded here in
-- the same transaction as its alias history row; scoring and shadow scoring refuse a version whose files no
-- longer match (a changed, added or missing file). Rows are only ever inserted: a version's files never change.
CREATE TABLE IF NOT EXISTS ${schema}.model_artifact_digests (
    model_name   text        NOT NULL,
    version      integer     NOT NULL,
    path         text        NOT NULL,
    sha256       text        NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$$'),
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model_name, version, path)
);
COMMENT ON TABLE ${schema}.model_artifact_digests IS 'SHA-256 of every file of a registered model version, recorded when the gate judged it; scoring verifies them before loading.';
COMMENT ON COLUMN ${schema}.model_artifact_digests.path IS 'File path relative to the model version''s artifact folder (POSIX separators), e.g. artifacts/fraud_model/booster.json.';

-- An alias move is two writes in two systems (MLflow's alias, this history row). The row is written first as
-- pending, the alias is moved, then the row is marked applied; registry.reconcile() settles rows left pending by
-- a crash in between (applied when MLflow shows the move, abandoned when it does not).
ALTER TABLE ${schema}.model_alias_history ADD COLUMN IF NOT EXISTS state text NOT NULL DEFAULT 'applied';
ALTER TABLE ${schema}.model_alias_history DROP CONSTRAINT IF EXISTS model_alias_history_state_check;
ALTER TABLE ${schema}.model_alias_history
    ADD CONSTRAINT model_alias_history_state_check CHECK (state IN ('pending', 'applied', 'abandoned'));
COMMENT ON COLUMN ${schema}.model_alias_history.state IS 'pending (written before the MLflow alias move), applied (MLflow shows the move), abandoned (the move never happened; settled by registry.reconcile).';
CREATE INDEX IF NOT EXISTS model_alias_history_pending
    ON ${schema}.model_alias_history (model_name) WHERE state = 'pending';

-- Only moves that happened count for the champion of a day.
CREATE OR REPLACE VIEW ${schema}.champion_by_day AS
SELECT d::date AS day, h.model_name, h.version, h.run_id, h.moved_at
FROM generate_series(
    (SELECT min(moved_at)::date FROM ${schema}.model_alias_history WHERE state = 'applied'), current_date, interval '1 day'
) AS d
CROSS JOIN LATERAL (
    SELECT * FROM ${schema}.model_alias_history h
    WHERE h.alias = 'champion' AND h.state = 'applied' AND h.moved_at < d + interval '1 day'
    ORDER BY h.moved_at DESC, h.id DESC LIMIT 1
) AS h;
COMMENT ON VIEW ${schema}.champion_by_day IS 'Which model version was champion at the end of each day (applied moves only).';
