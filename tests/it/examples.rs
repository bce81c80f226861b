//! The example specs shipped in `workflows/pipelines/` stay valid.

#[test]
fn every_example_spec_validates() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows/pipelines");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            tidemark::spec::load(&path).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
    }
    assert!(n >= 2, "expected example specs in {}", dir.display());
}
