//! Rules of the code base that a tool can check, checked (as rust-analyzer's
//! `tidy` does): each failure names the file and the rule.
//!
//! - Route modules are thin adapters over the modules beneath them and never
//!   import one another (`docs/ARCHITECTURE.md`, `src/`).
//! - The repository stands on its own: nothing in it cites a file outside it.
//! - Only the connection registry (`src/connections.rs`) names connection
//!   kinds; no other code decides a protocol by comparing kind names.
//! - Every test the threat model (`docs/security.md`) cites exists.
//!
//! `clippy.toml` holds the rules clippy can check (no wall-clock reads
//! outside the clock).

use std::path::{Path, PathBuf};

fn files(dir: &Path, extensions: &[&str], out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if !matches!(name.as_str(), "target" | "node_modules" | ".venv" | ".git" | "proptest-regressions")
            {
                files(&path, extensions, out);
            }
        } else if extensions.iter().any(|e| name.ends_with(e)) {
            out.push(path);
        }
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn route_modules_do_not_import_each_other() {
    let mut routes = Vec::new();
    files(&root().join("src/routes"), &[".rs"], &mut routes);
    assert!(routes.len() > 5);
    let mut wrong = Vec::new();
    for path in routes.iter().filter(|p| !p.ends_with("mod.rs")) {
        let text = std::fs::read_to_string(path).unwrap();
        for (n, line) in text.lines().enumerate() {
            if line.contains("routes::") {
                wrong.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(wrong.is_empty(), "a route module reaches into another:\n{}", wrong.join("\n"));
}

/// The pages and the JSON routes are two adapters over the same modules:
/// neither reaches into the other, so what one needs moves down to where
/// both can use it.
#[test]
fn pages_and_routes_stay_apart() {
    let mut wrong = Vec::new();
    for (dir, other) in [("src/pages", "routes::"), ("src/routes", "pages::")] {
        let mut sources = Vec::new();
        files(&root().join(dir), &[".rs"], &mut sources);
        assert!(sources.len() > 3, "{dir}");
        for path in &sources {
            let text = std::fs::read_to_string(path).unwrap();
            for (n, line) in text.lines().enumerate() {
                if line.contains(other) {
                    wrong.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "pages and routes reach into each other:\n{}", wrong.join("\n"));
}

#[test]
fn nothing_cites_a_file_outside_the_repository() {
    let mut all = Vec::new();
    for dir in ["src", "crates", "tests", "benches", "docs", "fixtures", "scripts", ".ci"] {
        files(
            &root().join(dir),
            &[".rs", ".md", ".toml", ".mjs", ".py", ".sql", ".sh", "run", "setup"],
            &mut all,
        );
    }
    all.push(root().join("README.md"));
    let outside =
        ["shared/reference", "../shared", "idp-interop.md", "architecture-models.md", "test-rigs.md"];
    let mut wrong = Vec::new();
    for path in &all {
        if path.ends_with("tests/tidy.rs") {
            continue;
        }
        let text = std::fs::read_to_string(path).unwrap_or_default();
        for (n, line) in text.lines().enumerate() {
            if outside.iter().any(|o| line.contains(o)) {
                wrong.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "cites a file outside the repository (say it in docs/ instead):\n{}",
        wrong.join("\n")
    );
}

#[test]
fn only_the_registry_names_connection_kinds() {
    let mut sources = Vec::new();
    files(&root().join("src"), &[".rs"], &mut sources);
    let names = ["\"okta\"", "\"azure_ad\"", "\"ping\""];
    let mut wrong = Vec::new();
    for path in sources.iter().filter(|p| !p.ends_with("connections.rs")) {
        let text = std::fs::read_to_string(path).unwrap();
        for (n, line) in text.lines().enumerate() {
            // SCIM token labels (`idp`) name the provisioning client, not a
            // connection kind.
            let scim_client = path.ends_with("routes/scim.rs") || line.contains("SCIM_CLIENTS");
            if names.iter().any(|k| line.contains(k)) && !scim_client {
                wrong.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(wrong.is_empty(), "a connection kind named outside src/connections.rs:\n{}", wrong.join("\n"));
}

#[test]
fn the_threat_model_cites_tests_that_exist() {
    let model = std::fs::read_to_string(root().join("docs/security.md")).unwrap();
    let mut sources = Vec::new();
    for dir in ["src", "crates", "tests"] {
        files(&root().join(dir), &[".rs"], &mut sources);
    }
    let code: String = sources.iter().map(|p| std::fs::read_to_string(p).unwrap()).collect();
    let mut missing = Vec::new();
    for line in model.lines().filter(|l| l.starts_with("*Tests.*")) {
        for name in line.split('`').skip(1).step_by(2) {
            let is_fn = name.contains('_')
                && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if is_fn && !code.contains(&format!("fn {name}(")) {
                missing.push(name.to_owned());
            }
        }
    }
    assert!(missing.is_empty(), "docs/security.md cites tests that do not exist: {missing:?}");
}
