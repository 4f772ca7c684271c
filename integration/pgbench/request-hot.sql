-- Written to mirror, statement for statement, what the service issues for this workload
-- (captured with log_statement = all; the balance read under the lock feeds the booking, as in
-- the service, through \gset; the session check is answered from each instance's
-- revocation-aware cache in steady state, so it has no line here); ids follow integration/src/bench/fixture.rs.
-- The event (visit.requested) goes in through the service's one outbox statement (events::record_all).
-- Variables: run, i (start 0), clients (the client count); set with pgbench -D.
\set member 1
\set vid :client_id * 100000000 + :i
BEGIN;
SELECT "balances"."user_id", "balances"."minutes", "balances"."starting_minutes", "balances"."updated_at" FROM "balances" WHERE "balances"."user_id" IN (('00000000-0000-4000-8000-' || lpad((:member)::text, 12, '0'))::uuid) ORDER BY "balances"."user_id" ASC FOR UPDATE \gset balance_
WITH outstanding AS (SELECT COALESCE(SUM(minutes), 0)::int4 AS minutes FROM visits WHERE member_id = ('00000000-0000-4000-8000-' || lpad((:member)::text, 12, '0'))::uuid AND status = ANY('{REQUESTED,ACCEPTED}'::text[])), booked AS (INSERT INTO visits (id, member_id, date, minutes, status, idempotency_key, idempotency_fingerprint, created_at, updated_at) SELECT ('ffff' || lpad(:run::text, 4, '0') || '-0000-4000-8000-' || lpad((:vid)::text, 12, '0'))::uuid, ('00000000-0000-4000-8000-' || lpad((:member)::text, 12, '0'))::uuid, current_date + 1, 1, 'REQUESTED', NULL, NULL, now(), now() FROM outstanding WHERE :balance_minutes - outstanding.minutes >= 1 RETURNING *), listed AS (INSERT INTO visit_tasks (visit_id, position, name, description) SELECT booked.id, (task.ordinality - 1)::int2, task.name, NULLIF(task.description, '') FROM booked, unnest('{Company}'::text[], '{""}'::text[]) WITH ORDINALITY AS task(name, description, ordinality)) SELECT outstanding.minutes AS outstanding, booked.* FROM outstanding LEFT JOIN booked ON true;
INSERT INTO outbox (id, type, version, aggregate_type, aggregate_id, aggregate_version, traceparent, payload) VALUES (gen_random_uuid(), 'visit.requested', 1, 'visit', ('ffff' || lpad(:run::text, 4, '0') || '-0000-4000-8000-' || lpad((:vid)::text, 12, '0'))::uuid, COALESCE((SELECT max(o.aggregate_version) FROM outbox o WHERE o.aggregate_type = 'visit' AND o.aggregate_id = ('ffff' || lpad(:run::text, 4, '0') || '-0000-4000-8000-' || lpad((:vid)::text, 12, '0'))::uuid), 0) + 1, NULL, json_build_object('visitId', ('ffff' || lpad(:run::text, 4, '0') || '-0000-4000-8000-' || lpad((:vid)::text, 12, '0'))::uuid, 'memberId', ('00000000-0000-4000-8000-' || lpad((:member)::text, 12, '0'))::uuid, 'palId', NULL, 'date', current_date + 1, 'minutes', 1, 'status', 'REQUESTED', 'taskCount', 1)::text::jsonb);
COMMIT;
\set i :i + 1
