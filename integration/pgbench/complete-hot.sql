-- Written to mirror, statement for statement, what the service issues for this workload
-- (captured with log_statement = all; the session check is answered from each instance's
-- revocation-aware cache in steady state, so it has no line here); ids follow integration/src/bench.rs's fixture.
-- Variables: run, i (start 0), clients (the client count); set with pgbench -D.
\set v :client_id + :i * :clients + 1
\set member 2
\set pal 3 + ((:v + 1) % 9998)
BEGIN;
SELECT "visits"."id", "visits"."member_id", "visits"."pal_id", "visits"."date", "visits"."minutes", "visits"."status", "visits"."idempotency_key", "visits"."idempotency_fingerprint", "visits"."created_at", "visits"."updated_at" FROM "visits" WHERE "visits"."id" = ('30000000-0000-4000-8000-' || lpad((:v)::text, 12, '0'))::uuid LIMIT 1 FOR UPDATE;
SELECT "balances"."user_id", "balances"."minutes", "balances"."starting_minutes", "balances"."updated_at" FROM "balances" WHERE "balances"."user_id" IN (('00000000-0000-4000-8000-' || lpad((:member)::text, 12, '0'))::uuid, ('00000000-0000-4000-8000-' || lpad((:pal)::text, 12, '0'))::uuid) ORDER BY "balances"."user_id" ASC FOR UPDATE;
WITH moved AS (UPDATE balances SET minutes = minutes + CASE WHEN user_id = ('00000000-0000-4000-8000-' || lpad((:member)::text, 12, '0'))::uuid THEN -10 ELSE 9 END, updated_at = now() WHERE user_id IN (('00000000-0000-4000-8000-' || lpad((:member)::text, 12, '0'))::uuid, ('00000000-0000-4000-8000-' || lpad((:pal)::text, 12, '0'))::uuid)) INSERT INTO transactions (id, visit_id, member_id, pal_id, minutes, pal_credit, fee, created_at) VALUES (gen_random_uuid(), ('30000000-0000-4000-8000-' || lpad((:v)::text, 12, '0'))::uuid, ('00000000-0000-4000-8000-' || lpad((:member)::text, 12, '0'))::uuid, ('00000000-0000-4000-8000-' || lpad((:pal)::text, 12, '0'))::uuid, 10, 9, 1, now()) RETURNING *;
UPDATE "visits" SET "status" = 'COMPLETED', "pal_id" = ('00000000-0000-4000-8000-' || lpad((:pal)::text, 12, '0'))::uuid, "updated_at" = now() WHERE "visits"."id" = ('30000000-0000-4000-8000-' || lpad((:v)::text, 12, '0'))::uuid RETURNING "id", "member_id", "pal_id", "date", "minutes", "status", "idempotency_key", "idempotency_fingerprint", "created_at", "updated_at";
COMMIT;
\set i :i + 1
