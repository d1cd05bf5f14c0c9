-- Audit retention. Pruning deletes the oldest audit rows; the hash of the last deleted row
-- is kept here and becomes the anchor from which the remaining chain is verified (the first
-- remaining row's prev_hash must equal it). One row per pruning step; the newest one is the
-- anchor, and each step also appends an `audit.prune` row naming it, so that altering the
-- anchor is detected by the chain itself.
CREATE TABLE audit_anchor (
    id {PK_AUTO},
    through_seq BIGINT NOT NULL,
    hash TEXT NOT NULL,
    pruned_at {TEXT_C} NOT NULL,
    rows_pruned BIGINT NOT NULL
);

-- The audit query API filters by action and consumer and pages by seq (IF NOT EXISTS: the
-- outbound migration may have created the consumer index already).
CREATE INDEX IF NOT EXISTS audit_action ON audit (action, seq);
CREATE INDEX IF NOT EXISTS audit_consumer ON audit (consumer, seq)
