#[test]
fn schema_graphql_matches_the_code() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema.graphql");
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();

    assert!(
        on_disk == home_visits::api::sdl(),
        "schema.graphql is out of date: run `cargo run -q -- schema > schema.graphql`"
    );
}

#[test]
fn the_client_recipe_maps_every_custom_scalar_and_each_declares_its_specification() {
    let sdl = home_visits::api::sdl();
    let recipe = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/clients.md"),
    )
    .unwrap_or_default();
    let scalars: Vec<&str> = sdl
        .lines()
        .filter_map(|line| line.strip_prefix("scalar "))
        .collect();
    assert_eq!(scalars.len(), 2, "{scalars:?}");
    for scalar in scalars {
        let name = scalar.split_whitespace().next().unwrap_or_default();
        assert!(scalar.contains("@specifiedBy(url: \"https://"), "{scalar}");
        assert!(
            recipe.contains(&format!("{name}: \"string\"")),
            "docs/clients.md maps {name}"
        );
    }
}
