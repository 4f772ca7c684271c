#[test]
fn schema_graphql_matches_the_code() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema.graphql");
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();

    assert!(
        on_disk == home_visits::api::sdl(),
        "schema.graphql is out of date: run `cargo run -q -- schema > schema.graphql`"
    );
}
