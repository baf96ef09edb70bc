//! Any bytes in a team's file: the renderer must not panic, must be deterministic, and
//! must leave every other team exactly as it renders without the file.
//!
//!     make fuzz   (from the repository root; seeds: the example platform's team files)

#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pontoon::desired::{DesiredState, TeamName, UnitDesired};

type Files = BTreeMap<String, Vec<u8>>;

fn example() -> &'static (Files, DesiredState) {
    static EXAMPLE: OnceLock<(Files, DesiredState)> = OnceLock::new();
    EXAMPLE.get_or_init(|| {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/example-platform");
        let files = pontoon::source::dir::read(&root).expect("example platform").files;
        let state = pontoon::render::render(&files, "r");
        (files, state)
    })
}

fn units<'a>(s: &'a DesiredState, team: &str) -> Vec<&'a UnitDesired> {
    s.units.values().filter(|u| u.unit.team.0 == team).collect()
}

fuzz_target!(|data: &[u8]| {
    let (files, baseline) = example();
    let mut files = files.clone();
    files.insert("teams/payments/fuzzed.yaml".to_owned(), data.to_vec());
    let a = pontoon::render::render(&files, "r");
    let b = pontoon::render::render(&files, "r");
    assert!(a == b, "rendering is not deterministic");
    for other in ["data", "search"] {
        assert!(units(&a, other) == units(baseline, other), "team {other} changed");
        assert!(!a.failed_teams.contains_key(&TeamName(other.to_owned())));
    }
});
