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

/// The code of a source file, without comments and without its tests.
fn code_of(relative: &str) -> String {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)).unwrap();
    text.split("#[cfg(test)]")
        .next()
        .unwrap()
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn code_under(relative: &str) -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    sources(&root.join(relative), &mut files);
    files
        .into_iter()
        .map(|f| {
            let name = f.strip_prefix(root).unwrap().display().to_string();
            let code = code_of(&name);
            (name, code)
        })
        .collect()
}

#[test]
fn regions_are_observed_in_one_place() {
    // `dr status` and the daemon's tick make the same reads through `observe::Observer`; neither
    // reads a health check, a probe, a lag or the writer on its own.
    let reads = [
        "checker_report(",
        "describe_global_cluster(",
        ".probe.probe(",
        ".lag.lag(",
    ];
    for dir in ["src/cli", "src/daemon"] {
        for (name, code) in code_under(dir) {
            for read in reads {
                assert!(
                    !code.contains(read),
                    "{name} calls `{read}`: region observations go through src/observe.rs"
                );
            }
        }
    }
}

#[test]
fn the_cli_reads_the_daemons_api_through_typed_values() {
    for (name, code) in code_under("src/cli") {
        assert!(
            !code.contains("serde_json::Value"),
            "{name} picks through untyped JSON: use the API's types in src/api/view.rs"
        );
        assert!(
            !code.contains("serde_json::json!"),
            "{name} builds untyped JSON"
        );
    }
    let handlers = code_of("src/api/mod.rs");
    assert!(
        !handlers.contains("Json<serde_json::Value>"),
        "src/api/mod.rs answers untyped JSON: use the types in src/api/view.rs"
    );
}

#[test]
fn operator_controls_live_in_the_engine_and_the_daemon_serves_through_one_function() {
    // Pause, unpause and ack are controls like approve and abort: one place, every caller.
    for (name, code) in code_under("src") {
        if name != "src/engine/control.rs" && !name.starts_with("src/store/") {
            assert!(
                !code.contains("set_automation("),
                "{name} changes the automation switches: use engine::control"
            );
        }
        if name != "src/service.rs" && name != "src/api/serve.rs" {
            assert!(
                !code.contains("serve::serve("),
                "{name} starts the API listener itself: use service::serve"
            );
        }
    }
}

#[test]
fn a_run_stores_the_plan_its_caller_built() {
    // Engine::create_run takes the plan value; it never builds one of its own, so the plan an
    // operator confirmed is the plan stored.
    let engine = code_of("src/engine/mod.rs");
    assert!(
        !engine.contains("build_plan("),
        "the engine builds a plan itself"
    );
    assert!(engine.contains("pub fn create_run(&self, plan: Plan, new: NewRun)"));
}
