//! Keeps ARCHITECTURE.md's invariants true: the core is pure, and every source file says what
//! it owns.

use std::path::Path;

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_core_does_no_io_and_reads_no_clock() {
    let mut files = Vec::new();
    sources(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src/core"),
        &mut files,
    );
    assert!(files.len() >= 6);
    let forbidden = [
        "tokio",
        "redb",
        "aws_",
        "axum",
        "reqwest",
        "std::fs",
        "std::net",
        "std::process",
        "std::thread",
        "::now(",
        "crate::store",
        "crate::provider",
        "crate::engine",
        "crate::cli",
        "crate::drill",
        "crate::clock",
        "crate::config",
    ];
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        // Tests inside core may use what they like; the rules are for the code.
        let code: String = text
            .split("#[cfg(test)]")
            .next()
            .unwrap()
            .lines()
            .filter(|line| !line.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for word in forbidden {
            assert!(
                !code.contains(word),
                "{} uses `{word}`: the core must stay pure",
                file.display()
            );
        }
    }
}

#[test]
fn every_source_file_opens_with_what_it_owns() {
    let mut files = Vec::new();
    sources(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            text.starts_with("//!"),
            "{} does not open with a //! comment",
            file.display()
        );
    }
}
