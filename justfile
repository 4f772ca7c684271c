# home-visits: `just` lists the recipes.

# List the recipes
default:
    @just --list

# Run the service (provisions a local PostgreSQL when DATABASE_URL is unset)
run:
    cargo run -- serve

# Run every test (unit, API against real PostgreSQL, schema drift)
test:
    cargo test --workspace

# Format check and clippy with warnings as errors
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Regenerate schema.graphql from the code
schema:
    cargo run -q -- schema > schema.graphql

# Start the project-local PostgreSQL and print its URL
db-start:
    cargo run -q -- db start

# Stop the project-local PostgreSQL
db-stop:
    cargo run -q -- db stop

# Two release instances on ports 14001 and 14002 against the local database, the whole harness, then stop them
integration seconds="30":
    cargo build --release --bin home-visits
    url=$(cargo run -q --bin home-visits -- db start) && \
    cargo run --release -q -p integration -- \
        --spawn target/release/home-visits \
        --instance http://127.0.0.1:14001 --instance http://127.0.0.1:14002 \
        --database-url "${url%/*}/home_visits_integration" --fresh-database \
        --seconds {{seconds}}

# The same harness against a build WITHOUT row locks: passes only if the harness catches the races
integration-unlocked:
    cargo build --release --features danger-no-row-locks --bin home-visits
    cp target/release/home-visits target/release/home-visits-unlocked
    cargo build --release --bin home-visits
    url=$(cargo run -q --bin home-visits -- db start) && \
    cargo run --release -q -p integration -- \
        --spawn target/release/home-visits-unlocked \
        --instance http://127.0.0.1:14001 --instance http://127.0.0.1:14002 \
        --database-url "${url%/*}/home_visits_unlocked" --fresh-database \
        --seconds 5 --expect-violations

# The event-stream scenario against a build whose log reader follows the sequence alone: passes only if the harness catches the lost events
integration-position-reader:
    cargo build --release --features danger-position-reader --bin home-visits
    cp target/release/home-visits target/release/home-visits-position-reader
    cargo build --release --bin home-visits
    url=$(cargo run -q --bin home-visits -- db start) && \
    cargo run --release -q -p integration -- \
        --spawn target/release/home-visits-position-reader \
        --instance http://127.0.0.1:14001 --instance http://127.0.0.1:14002 \
        --database-url "${url%/*}/home_visits_position_reader" --fresh-database \
        --scenario event-stream --seconds 6 --expect-violations
    url=$(cargo run -q --bin home-visits -- db start) && \
    cargo run --release -q -p integration -- \
        --spawn target/release/home-visits-position-reader \
        --instance http://127.0.0.1:14001 --instance http://127.0.0.1:14002 \
        --database-url "${url%/*}/home_visits_position_reader_live" --fresh-database \
        --scenario live-updates --seconds 6 --expect-violations

# The harness behind a PgBouncer, on a three-node NATS cluster and on a replica of its own (needs pgbouncer and nats-server)
integration-deployments seconds="12":
    cargo build --release --bin home-visits
    url=$(cargo run -q --bin home-visits -- db start) && \
    for scenario in pooled broker-cluster replica; do \
        cargo run --release -q -p integration -- \
            --spawn target/release/home-visits \
            --instance http://127.0.0.1:14001 --instance http://127.0.0.1:14002 \
            --database-url "${url%/*}/home_visits_deployments" --fresh-database \
            --scenario "$scenario" --seconds {{seconds}} || exit 1; \
    done

# Print the event log as JSON lines (add --follow to keep watching)
events-tail *args:
    cargo run -q -- events tail {{args}}

# Benchmark: two release instances vs pgbench running the same statements (figures, not a test)
bench seconds="10" clients="32" *args:
    cargo build --release --bin home-visits
    url=$(cargo run -q --bin home-visits -- db start) && \
    cargo run --release -q -p integration -- bench \
        --spawn target/release/home-visits \
        --instance http://127.0.0.1:14001 --instance http://127.0.0.1:14002 \
        --database-url "${url%/*}/home_visits_bench" \
        --seconds {{seconds}} --clients {{clients}} {{args}}

# A million visits (or --visits N) of the read-at-scale shape in the local cluster's database
seed *args:
    url=$(cargo run -q --bin home-visits -- db start) && \
    cargo run -q --bin home-visits -- migrate && \
    cargo run --release -q -p integration -- seed --database-url "$url" {{args}}
