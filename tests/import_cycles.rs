//! No import cycle between the files of `src/` (issue 11, "Done when").
//!
//! The crate's files form a graph: file A → file B when code in A uses an item defined in
//! B, through a `use` or through a path written in the code (`crate::x::f()`,
//! `super::Trait`, `child::Type`, also inside macro calls). A path through a re-export is
//! followed to the file that defines the item, and a `pub use` (a module's `mod.rs`
//! re-exporting its children) counts only if the re-exporting module uses the name itself.
//! `#[cfg(test)]` code does not count: tests may reach anywhere. Every feature's code
//! counts. The test fails listing each cycle with the paths that close it.
//!
//! Hand-written on `syn`: no well-kept tool checks this at file level. `cargo-modules`
//! (`dependencies --acyclic`) works on rust-analyzer's module graph, where a re-export is
//! a use like any other (so every `mod.rs` re-exporting a child that uses `super::` would
//! be a cycle), and it builds rust-analyzer's crates, minutes on CI's two cores;
//! `cargo-cycles` (two 0.x releases) also works on modules, not files.

mod file_graph;

use std::path::Path;

use file_graph::Crate;

#[test]
fn src_has_no_import_cycle_between_files() {
    let krate = Crate::load(Path::new(env!("CARGO_MANIFEST_DIR")));
    assert!(krate.modules.len() > 20, "the module tree was not found");
    let cycles = krate.cycles();
    assert!(cycles.is_empty(), "{}", cycles.join("\n"));
}

/// Writes a small crate and returns its cycles.
fn cycles_of(files: &[(&str, &str)]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    Crate::load(dir.path()).cycles()
}

#[test]
fn finds_a_cycle_through_use_and_through_a_path_in_code() {
    let cycles = cycles_of(&[
        ("src/lib.rs", "mod a; mod b;"),
        ("src/a.rs", "use crate::b::B; pub(crate) struct A;"),
        (
            "src/b.rs",
            "pub(crate) struct B; fn f() { let _ = crate::a::A; }",
        ),
    ]);
    assert_eq!(cycles.len(), 1, "{cycles:?}");
    assert!(
        cycles[0].contains("src/a.rs -> src/b.rs  (use b::B)"),
        "{}",
        cycles[0]
    );
    assert!(
        cycles[0].contains("src/b.rs -> src/a.rs  (crate::a::A)"),
        "{}",
        cycles[0]
    );
}

#[test]
fn finds_a_cycle_through_a_macro_call() {
    let cycles = cycles_of(&[
        ("src/lib.rs", "mod a; mod b;"),
        ("src/a.rs", "use crate::b::B; pub(crate) fn a() {}"),
        (
            "src/b.rs",
            "pub(crate) struct B; fn f() { tracing::info!(x = crate::a::a()); }",
        ),
    ]);
    assert_eq!(cycles.len(), 1, "{cycles:?}");
}

#[test]
fn a_mod_rs_re_exporting_its_children_is_no_cycle() {
    let files = [
        ("src/lib.rs", "mod m;"),
        (
            "src/m/mod.rs",
            "mod child; pub(crate) use self::child::C; pub(crate) trait T {}\n\
             pub(crate) enum Kind { C } fn f(k: Kind) -> bool { matches!(k, Kind::C) }",
        ),
        ("src/m/child.rs", "use super::T; pub(crate) struct C;"),
    ];
    assert_eq!(cycles_of(&files), Vec::<String>::new());
}

#[test]
fn a_mod_rs_calling_its_child_that_uses_it_is_a_cycle() {
    let cycles = cycles_of(&[
        ("src/lib.rs", "mod m;"),
        (
            "src/m/mod.rs",
            "mod child; pub(crate) trait T {} fn run() { child::go(); }",
        ),
        ("src/m/child.rs", "use super::T; pub(crate) fn go() {}"),
    ]);
    assert_eq!(cycles.len(), 1, "{cycles:?}");
    assert!(
        cycles[0].contains("src/m/mod.rs -> src/m/child.rs  (child::go)"),
        "{}",
        cycles[0]
    );
}

#[test]
fn re_exports_are_followed_to_the_defining_file() {
    // `a` imports `X` through `m`'s re-export; `X`'s file imports `a`: a cycle between
    // `a.rs` and `m/inner.rs`, not through `m/mod.rs`.
    let cycles = cycles_of(&[
        ("src/lib.rs", "mod a; mod m;"),
        ("src/a.rs", "use crate::m::X; pub(crate) struct A;"),
        ("src/m/mod.rs", "mod inner; pub(crate) use self::inner::X;"),
        ("src/m/inner.rs", "use crate::a::A; pub(crate) struct X;"),
    ]);
    assert_eq!(cycles.len(), 1, "{cycles:?}");
    assert!(
        cycles[0].starts_with("cycle between src/a.rs, src/m/inner.rs:"),
        "{}",
        cycles[0]
    );
}

#[test]
fn test_code_does_not_count() {
    let files = [
        ("src/lib.rs", "mod a; mod b;"),
        ("src/a.rs", "use crate::b::B; pub(crate) struct A;"),
        (
            "src/b.rs",
            "pub(crate) struct B;\n#[cfg(test)]\nmod tests { use crate::a::A; }\n#[cfg(test)]\nfn helper() { let _ = crate::a::A; }",
        ),
    ];
    assert_eq!(cycles_of(&files), Vec::<String>::new());
}
