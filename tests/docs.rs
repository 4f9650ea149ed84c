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

/// Every long option the README's command-line block names is one `--help`
/// lists for that command, and every option `--help` lists for `run` and
/// `serve` is in the README: the two cannot drift apart.
#[test]
fn the_readme_flag_list_matches_help() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let section = &readme[readme.find("## Command line").unwrap()..];
    let start = section.find("```text\n").unwrap() + "```text\n".len();
    let block = &section[start..start + section[start..].find("```").unwrap()];
    let long_options = |text: &str| -> std::collections::BTreeSet<String> {
        text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .filter(|word| word.starts_with("--") && word.len() > 2)
            .map(str::to_string)
            .collect()
    };
    let help = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_wasmpool"))
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let documented = long_options(block);
    let mut listed = std::collections::BTreeSet::new();
    for command in ["run", "serve", "pull", "prune", "bench", "images", "wizer"] {
        listed.extend(long_options(&help(&[command, "--help"])));
    }
    listed.extend(long_options(&help(&["--help"])));
    for option in &documented {
        assert!(
            listed.contains(option),
            "the README names {option}, --help does not"
        );
    }
    for command in ["run", "serve"] {
        for option in long_options(&help(&[command, "--help"])) {
            if option == "--help" || option == "--version" {
                continue;
            }
            assert!(
                documented.contains(&option),
                "`wasmpool {command} --help` lists {option}; the README's command line does not"
            );
        }
    }
    for short in ["-S OPT", "-W OPT"] {
        assert!(block.contains(short), "the README lacks {short}");
    }
}

/// The README's figure for a log line's overhead is the constant's.
#[test]
fn the_readme_says_the_log_line_overhead_it_has() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let said = format!("{} bytes on 64-bit targets", wasmpool::LOG_LINE_OVERHEAD);
    assert!(readme.contains(&said), "the README does not say {said}");
}

/// Every figure the README's Figures table gives as measured is one that
/// docs/performance.md, the record of the runs, holds: a number rounded,
/// re-measured or made up in one place and not the other fails here.
#[test]
fn the_readme_figures_are_in_the_performance_record() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let record = std::fs::read_to_string(format!("{root}/docs/performance.md")).unwrap();
    let section = &readme[readme.find("## Figures").unwrap()..];
    let section = &section[..section[3..]
        .find("\n## ")
        .map_or(section.len(), |end| end + 3)];
    let mut checked = 0;
    let mut missing = Vec::new();
    for row in section
        .lines()
        .filter(|line| line.starts_with("| "))
        .skip(2)
    {
        let measured = row.split('|').nth(2).unwrap_or("");
        let numbers = measured
            .split(|c: char| !(c.is_ascii_digit() || c == '.' || c == ','))
            .map(|word| word.trim_matches(|c| c == '.' || c == ','))
            .filter(|word| word.chars().any(|c| c.is_ascii_digit()));
        for number in numbers {
            checked += 1;
            if !record.contains(number) {
                missing.push(format!("{number} (in: {})", measured.trim()));
            }
        }
    }
    assert!(checked > 20, "the table was read ({checked} figures)");
    assert!(
        missing.is_empty(),
        "not in docs/performance.md: {missing:#?}"
    );
}
