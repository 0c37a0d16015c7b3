-- Two-phase retraining triggers. drift_monitor's decide step records a wanted trigger as 'pending' (under a
-- per-model advisory lock, so two nights of one model cannot both decide to trigger); confirm_trigger marks it
-- 'confirmed' only once the train_model run exists. A failed trigger stays 'pending', so a rerun of the night
-- triggers again, and the cooldown counts only confirmed triggers. `triggered` now means "confirmed".

ALTER TABLE ${schema}.retraining_decisions
    ADD COLUMN IF NOT EXISTS trigger_state    text,
    ADD COLUMN IF NOT EXISTS triggered_run_id text,
    ADD COLUMN IF NOT EXISTS confirmed_at     timestamptz;

-- Rows written before this migration: a recorded trigger was a trigger that ran.
UPDATE ${schema}.retraining_decisions
SET trigger_state = 'confirmed', triggered_run_id = train_run_id, confirmed_at = decided_at
WHERE triggered AND trigger_state IS NULL;

ALTER TABLE ${schema}.retraining_decisions
    ADD CONSTRAINT retraining_decisions_trigger_state CHECK (trigger_state IN ('pending', 'confirmed')),
    ADD CONSTRAINT retraining_decisions_triggered_is_confirmed
        CHECK (triggered = (trigger_state IS NOT DISTINCT FROM 'confirmed'));

COMMENT ON COLUMN ${schema}.retraining_decisions.triggered IS 'true once the triggered train_model run was confirmed to exist (trigger_state = confirmed).';
COMMENT ON COLUMN ${schema}.retraining_decisions.trigger_state IS 'NULL: no trigger wanted (or suppressed); pending: a trigger was decided and not yet confirmed (a failed trigger stays pending; a rerun of the night triggers again); confirmed: the train_model run exists.';
COMMENT ON COLUMN ${schema}.retraining_decisions.triggered_run_id IS 'run_id of the train_model run confirm_trigger found (NULL until confirmed).';
COMMENT ON COLUMN ${schema}.retraining_decisions.confirmed_at IS 'When confirm_trigger saw the triggered run.';
COMMENT ON COLUMN ${schema}.retraining_decisions.train_run_id IS 'run_id the night asks train_model to use (set while pending and once confirmed; NULL when no trigger is wanted).';

CREATE INDEX IF NOT EXISTS retraining_decisions_pending
    ON ${schema}.retraining_decisions (model_name, decided_at DESC) WHERE trigger_state = 'pending';
