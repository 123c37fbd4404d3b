-- Email notifications over SMTP: recipients per tenant and a delivery outbox,
-- written in the same transaction as the events (like webhook_deliveries).

CREATE TABLE email_recipients (
    id            bigserial PRIMARY KEY,
    tenant_id     bigint NOT NULL REFERENCES tenants ON DELETE CASCADE,
    address       text NOT NULL CHECK (address ~ '^[^@\s]+@[^@\s]+$'),
    types         text[],                        -- NULL: every event type
    min_severity  text NOT NULL DEFAULT 'warning' CHECK (min_severity IN ('info', 'warning', 'critical')),
    enabled       boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, address)
);

CREATE TABLE email_deliveries (
    id              bigserial PRIMARY KEY,
    recipient_id    bigint NOT NULL REFERENCES email_recipients ON DELETE CASCADE,
    event_id        bigint NOT NULL REFERENCES events ON DELETE CASCADE,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    UNIQUE (recipient_id, event_id)
);
CREATE INDEX email_deliveries_due ON email_deliveries (next_attempt_at) WHERE status = 'pending';
