-- Written to mirror, statement for statement, what the service issues for this workload
-- (captured with log_statement = all; the session check is answered from each instance's
-- revocation-aware cache in steady state, so it has no line here); ids follow integration/src/bench.rs's fixture.
-- Variables: run, i (start 0), clients (the client count); set with pgbench -D.
\set member random(3, 10000)
\set vid :client_id * 100000000 + :i
BEGIN;
SELECT "balances"."user_id", "balances"."minutes", "balances"."starting_minutes", "balances"."updated_at" FROM "balances" WHERE "balances"."user_id" IN (('00000000-0000-4000-8000-' || lpad((:member)::text, 12, '0'))::uuid) ORDER BY "balances"."user_id" ASC FOR UPDATE;
SELECT SUM("visits"."minutes") AS "total" FROM "visits" WHERE "visits"."member_id" = ('00000000-0000-4000-8000-' || lpad((:member)::text, 12, '0'))::uuid AND "visits"."status" IN ('REQUESTED', 'ACCEPTED') LIMIT 1;
INSERT INTO "visits" ("id", "member_id", "pal_id", "date", "minutes", "status", "idempotency_key", "idempotency_fingerprint", "created_at", "updated_at") VALUES (('ffff' || lpad(:run::text, 4, '0') || '-0000-4000-8000-' || lpad((:vid)::text, 12, '0'))::uuid, ('00000000-0000-4000-8000-' || lpad((:member)::text, 12, '0'))::uuid, NULL, current_date + 1, 1, 'REQUESTED', NULL, NULL, now(), now()) RETURNING "id", "member_id", "pal_id", "date", "minutes", "status", "idempotency_key", "idempotency_fingerprint", "created_at", "updated_at";
INSERT INTO "visit_tasks" ("visit_id", "position", "name", "description") VALUES (('ffff' || lpad(:run::text, 4, '0') || '-0000-4000-8000-' || lpad((:vid)::text, 12, '0'))::uuid, 0, 'Company', NULL);
COMMIT;
\set i :i + 1
