//! The layers point one way: `daemon` wires the engines (`source`, `render`, `sync`,
//! `drift`, `status`), the engines stand on `cluster`, `model`, `ssa` and `desired`, and
//! nothing below reaches back up (`ssa`, the comparison sync and drift share, is pure). `render` stays pure: it knows no cluster connection and no daemon
//! config. This test reads the sources, so a path written inline counts as much as a `use`.

use std::path::{Path, PathBuf};

/// Which module paths a folder (or file) of `src/` must never name.
const RULES: &[(&str, &[&str])] = &[
    (
        "render",
        &[
            "crate::cluster",
            "crate::config",
            "crate::expand",
            "crate::daemon",
            "crate::sync",
            "crate::drift",
            "crate::status",
            "crate::server",
        ],
    ),
    (
        "model",
        &[
            "crate::cluster",
            "crate::config",
            "crate::daemon",
            "crate::render",
            "crate::sync",
            "crate::drift",
            "crate::status",
            "crate::server",
        ],
    ),
    (
        "desired.rs",
        &[
            "crate::cluster",
            "crate::config",
            "crate::daemon",
            "crate::render",
            "crate::sync",
            "crate::drift",
            "crate::status",
            "crate::server",
            "crate::source",
        ],
    ),
    (
        "desired",
        &[
            "crate::cluster",
            "crate::config",
            "crate::daemon",
            "crate::render",
            "crate::sync",
            "crate::drift",
            "crate::status",
            "crate::server",
            "crate::source",
        ],
    ),
    (
        "cluster",
        &[
            "crate::daemon",
            "crate::render",
            "crate::sync",
            "crate::drift",
            "crate::status",
            "crate::server",
            "crate::source",
        ],
    ),
    (
        "ssa",
        &[
            "crate::cluster",
            "crate::config",
            "crate::daemon",
            "crate::model",
            "crate::render",
            "crate::sync",
            "crate::drift",
            "crate::status",
            "crate::server",
            "crate::source",
        ],
    ),
    (
        "sops",
        &[
            "crate::cluster",
            "crate::config",
            "crate::daemon",
            "crate::model",
            "crate::render",
            "crate::sync",
            "crate::drift",
            "crate::status",
            "crate::server",
            "crate::source",
        ],
    ),
    (
        "expand",
        &[
            "crate::cluster",
            "crate::config",
            "crate::daemon",
            "crate::render",
            "crate::sync",
            "crate::drift",
            "crate::status",
            "crate::server",
            "crate::source",
        ],
    ),
    ("sync", &["crate::daemon", "crate::server"]),
    ("drift", &["crate::daemon", "crate::server"]),
    ("status", &["crate::daemon", "crate::server"]),
    ("units", &["crate::daemon", "crate::server"]),
    (
        "notify",
        &[
            "crate::daemon",
            "crate::server",
            "crate::render",
            "crate::sync",
            "crate::drift",
            "crate::status",
            "crate::source",
            "crate::cluster",
        ],
    ),
    (
        "source",
        &[
            "crate::daemon",
            "crate::server",
            "crate::sync",
            "crate::drift",
            "crate::render",
        ],
    ),
];

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)
            .expect("read src dir")
            .map(|e| e.expect("dir entry").path())
            .collect();
        entries.sort();
        for p in entries {
            rust_files(&p, out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_path_buf());
    }
}

/// Every `crate::…` path a module names that its layer forbids, as `file:line: text`.
fn violations(src: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for (module, forbidden) in RULES {
        let mut files = Vec::new();
        rust_files(&src.join(module), &mut files);
        assert!(
            !files.is_empty(),
            "no Rust file under src/{module}: the rule names a module that moved"
        );
        for file in files {
            let text = std::fs::read_to_string(&file).expect("read source");
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                if let Some(bad) = forbidden.iter().find(|f| {
                    code.match_indices(*f).any(|(i, _)| {
                        // `crate::sync` must not match `crate::sync_helpers`.
                        !code[i + f.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_')
                    })
                }) {
                    found.push(format!(
                        "{}:{}: {bad} in `{}`",
                        file.display(),
                        n + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    found
}

#[test]
fn layers_point_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = violations(&src);
    assert!(
        found.is_empty(),
        "imports against the layers:\n{}",
        found.join("\n")
    );
}

#[test]
fn a_forbidden_path_is_found_inline_as_well_as_in_a_use() {
    let dir = std::env::temp_dir().join(format!("pontoon-layers-{}", std::process::id()));
    let render = dir.join("render");
    std::fs::create_dir_all(&render).expect("temp dir");
    for module in RULES.iter().map(|(m, _)| *m) {
        let path = dir.join(module);
        if module.ends_with(".rs") {
            std::fs::write(&path, "").expect("write");
        } else {
            std::fs::create_dir_all(&path).expect("mkdir");
            std::fs::write(path.join("mod.rs"), "").expect("write");
        }
    }
    std::fs::write(
        render.join("mod.rs"),
        "use crate::desired::Team;\n// crate::cluster in a comment is fine\nfn f() { crate::config::x(); }\n",
    )
    .expect("write");
    std::fs::write(
        dir.join("drift/mod.rs"),
        "use crate::daemon::leader;\nuse crate::sync_x;\n",
    )
    .expect("write");
    let found = violations(&dir);
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found[0].contains("render/mod.rs:3: crate::config"),
        "{found:?}"
    );
    assert!(
        found[1].contains("drift/mod.rs:1: crate::daemon"),
        "{found:?}"
    );
}
