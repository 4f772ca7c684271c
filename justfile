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
