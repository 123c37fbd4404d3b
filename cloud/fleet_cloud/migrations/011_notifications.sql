-- Outgoing notifications: webhooks (signed, retried, dead-lettered) and their
-- delivery outbox, written in the same transaction as the events.

CREATE TABLE webhooks (
    id            bigserial PRIMARY KEY,
    tenant_id     bigint NOT NULL REFERENCES tenants ON DELETE CASCADE,
    url           text NOT NULL,
    secret        text NOT NULL,                 -- HMAC-SHA256 key of the signature header
    types         text[],                        -- NULL: every event type
    min_severity  text NOT NULL DEFAULT 'info' CHECK (min_severity IN ('info', 'warning', 'critical')),
    enabled       boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhooks_tenant ON webhooks (tenant_id);

CREATE TABLE webhook_deliveries (
    id              bigserial PRIMARY KEY,
    webhook_id      bigint NOT NULL REFERENCES webhooks ON DELETE CASCADE,
    event_id        bigint NOT NULL REFERENCES events ON DELETE CASCADE,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'sent', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    last_status     integer,
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    UNIQUE (webhook_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';

-- Why an event was or was not notified: 'sent' (queued to channels), 'throttled',
-- 'stale' (older than the notification age limit), 'retracted'.
ALTER TABLE events ADD COLUMN notify_status text;
