//! GitHub's published API description served by Prism in its request-validating mode
//! (`prism.sh`): a request pontoon makes that breaks GitHub's description is answered
//! with a 4xx naming what is wrong.

use std::sync::OnceLock;

use super::script::Script;

static SHARED: OnceLock<Script> = OnceLock::new();

/// The base URL of the Prism every test of this binary shares.
pub fn shared() -> String {
    SHARED
        .get_or_init(|| {
            Script::start(
                "prism.sh",
                "github",
                "PONTOON_PRISM_CLEANUP",
                "it needs Node.js and the npm packages in tests/support/deps/github.txt \
                 (tests/support/install-deps.sh installs them)",
            )
        })
        .get("PRISM_URL")
}
