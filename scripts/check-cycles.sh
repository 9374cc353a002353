#!/usr/bin/env bash
# Proves there is no import cycle between the files of src/ (issue 11): file A imports
# file B when A's code uses an item defined in B (through `use`, a path in code or a path
# inside a macro call; re-exports are followed to the defining file; a `pub use` counts
# only where the re-exporting module uses the name itself; `#[cfg(test)]` code does not
# count). Prints every cycle with the paths that close it and exits non-zero if there is
# one. The check is the Rust test tests/import_cycles.rs (it parses src/ with syn); it
# also runs in every `cargo test`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo test --all-features --test import_cycles
