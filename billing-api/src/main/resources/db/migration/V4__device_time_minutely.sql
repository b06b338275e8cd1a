-- Device time measured by the schedulers, per minute, model and device, for reconciliation
-- against the ledger (Reconciliation). Written by ReconciliationRecorder as upserts that add
-- deltas; minute = date_trunc('minute', t) of the instant the deltas were recorded at (UTC).
-- Integer nanoseconds; measured_ns = charged_ns + system_ns for every step recorded.

CREATE TABLE device_time_minutely (
  minute      timestamptz NOT NULL CHECK (extract(epoch FROM minute) % 60 = 0),
  model       text        NOT NULL,
  device      text        NOT NULL,
  measured_ns bigint      NOT NULL CHECK (measured_ns >= 0),
  charged_ns  bigint      NOT NULL CHECK (charged_ns >= 0),
  system_ns   bigint      NOT NULL CHECK (system_ns >= 0),
  steps       bigint      NOT NULL CHECK (steps >= 0),
  PRIMARY KEY (minute, model, device)
);
