//! The documentation stays honest: the README's quick start is the example users can run.

/// The first ```rust block after `heading` in `text`.
fn rust_block_after<'a>(text: &'a str, heading: &str) -> &'a str {
    let section = &text[text.find(heading).expect("the heading is in the README")..];
    let start = section.find("```rust\n").expect("a rust block follows") + "```rust\n".len();
    let end = section[start..].find("```\n").expect("the block is closed");
    &section[start..start + end]
}

#[test]
fn the_readme_quick_start_is_the_quickstart_example() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let example = std::fs::read_to_string(format!("{root}/examples/quickstart.rs")).unwrap();
    // The example is the README's block under a `//!` header.
    let body: String = example
        .split_inclusive('\n')
        .skip_while(|line| line.starts_with("//!") || line.trim().is_empty())
        .collect();
    assert_eq!(rust_block_after(&readme, "## Quick start"), body);
}
