-- Outbound provisioning: consumers, what each holds (links), the delivery queue and
-- scheduled actions.
CREATE TABLE outbound_consumers (
    id {TEXT_C} PRIMARY KEY,
    name {TEXT_C} NOT NULL UNIQUE,
    state {TEXT_C} NOT NULL,
    paused_reason TEXT,
    spec TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    consecutive_failures BIGINT NOT NULL DEFAULT 0,
    last_success_at {TEXT_C},
    last_failure_at {TEXT_C},
    created_at {TEXT_C} NOT NULL,
    updated_at {TEXT_C} NOT NULL
);

-- One row per (consumer, hub resource) the consumer has been given.
CREATE TABLE outbound_links (
    consumer_id {TEXT_C} NOT NULL REFERENCES outbound_consumers (id) ON DELETE CASCADE,
    resource_id {TEXT_C} NOT NULL,
    resource_type {TEXT_C} NOT NULL,
    remote_id {TEXT_C},
    state {TEXT_C} NOT NULL,
    synced TEXT NOT NULL,
    hold_rule TEXT,
    hold_action {TEXT_C},
    updated_at {TEXT_C} NOT NULL,
    PRIMARY KEY (consumer_id, resource_id)
);
CREATE INDEX outbound_links_remote ON outbound_links (consumer_id, remote_id);

-- Group members as the consumer holds them, so that membership goes as deltas.
CREATE TABLE outbound_link_members (
    consumer_id {TEXT_C} NOT NULL REFERENCES outbound_consumers (id) ON DELETE CASCADE,
    group_id {TEXT_C} NOT NULL,
    member_id {TEXT_C} NOT NULL,
    PRIMARY KEY (consumer_id, group_id, member_id)
);
CREATE INDEX outbound_link_members_member ON outbound_link_members (consumer_id, member_id);

-- Work to do: one row per (consumer, resource); later changes coalesce into it.
CREATE TABLE outbound_queue (
    consumer_id {TEXT_C} NOT NULL REFERENCES outbound_consumers (id) ON DELETE CASCADE,
    resource_id {TEXT_C} NOT NULL,
    resource_type {TEXT_C} NOT NULL,
    seq BIGINT NOT NULL,
    reason {TEXT_C} NOT NULL,
    state {TEXT_C} NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    -- Set when work arrives for a unit while it is in flight: it goes round again.
    dirty BIGINT NOT NULL DEFAULT 0,
    next_at {TEXT_C} NOT NULL,
    claimed_until {TEXT_C},
    last_status BIGINT,
    last_error TEXT,
    enqueued_at {TEXT_C} NOT NULL,
    updated_at {TEXT_C} NOT NULL,
    PRIMARY KEY (consumer_id, resource_id)
);
CREATE INDEX outbound_queue_due ON outbound_queue (state, next_at);

CREATE TABLE scheduled_actions (
    id {PK_AUTO},
    consumer_id {TEXT_C} NOT NULL REFERENCES outbound_consumers (id) ON DELETE CASCADE,
    resource_id {TEXT_C} NOT NULL,
    rule_name TEXT NOT NULL,
    action {TEXT_C} NOT NULL,
    due_at {TEXT_C} NOT NULL,
    state {TEXT_C} NOT NULL,
    created_at {TEXT_C} NOT NULL,
    done_at {TEXT_C}
);
CREATE INDEX scheduled_actions_due ON scheduled_actions (state, due_at);
CREATE INDEX scheduled_actions_resource ON scheduled_actions (consumer_id, resource_id, state);

CREATE TABLE outbound_state (
    name {TEXT_C} PRIMARY KEY,
    value BIGINT NOT NULL
);

CREATE INDEX audit_consumer ON audit (consumer, seq)
