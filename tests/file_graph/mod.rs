//! The file graph of a crate's `src/`, for `tests/import_cycles.rs`: which file imports
//! which, and the cycles among them. See that file for the rules.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use proc_macro2::{TokenStream, TokenTree};
use syn::visit::Visit;

/// One module: a file or an inline `mod x { … }` inside one.
#[derive(Debug)]
pub(crate) struct Module {
    /// The file that holds it, relative to the crate root.
    file: String,
    parent: Option<usize>,
    children: BTreeMap<String, usize>,
    /// Names of the items it defines (child modules aside).
    defs: BTreeSet<String>,
    /// Its `use` bindings: name → (absolute target path, `pub`).
    uses: BTreeMap<String, (Vec<String>, bool)>,
    /// Glob imports (absolute module paths).
    globs: Vec<Vec<String>>,
    /// Absolute paths its code names, with the text that named them.
    refs: Vec<(Vec<String>, String)>,
    /// The first segment of every path in its code outside `use` items (the names it
    /// uses by themselves).
    heads: BTreeSet<String>,
}

/// The module tree of a crate rooted at `root/src/lib.rs`.
pub(crate) struct Crate {
    root: PathBuf,
    pub(crate) modules: Vec<Module>,
}

fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.parse_args::<syn::Ident>()
                .is_ok_and(|ident| ident == "test")
    })
}

impl Crate {
    pub(crate) fn load(root: &Path) -> Self {
        let mut krate = Self {
            root: root.to_owned(),
            modules: Vec::new(),
        };
        let lib = root.join("src/lib.rs");
        krate.load_file(&lib, root.join("src"), None, None);
        krate
    }

    fn load_file(
        &mut self,
        file: &Path,
        dir: PathBuf,
        parent: Option<usize>,
        name: Option<&str>,
    ) -> usize {
        let text = std::fs::read_to_string(file)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        let ast = syn::parse_file(&text)
            .unwrap_or_else(|e| panic!("cannot parse {}: {e}", file.display()));
        let rel = file
            .strip_prefix(&self.root)
            .unwrap_or(file)
            .display()
            .to_string();
        self.add_module(rel, dir, parent, name, &ast.items)
    }

    fn add_module(
        &mut self,
        file: String,
        dir: PathBuf,
        parent: Option<usize>,
        name: Option<&str>,
        items: &[syn::Item],
    ) -> usize {
        let id = self.modules.len();
        self.modules.push(Module {
            file: file.clone(),
            parent,
            children: BTreeMap::new(),
            defs: BTreeSet::new(),
            uses: BTreeMap::new(),
            globs: Vec::new(),
            refs: Vec::new(),
            heads: BTreeSet::new(),
        });
        if let (Some(p), Some(n)) = (parent, name) {
            self.modules[p].children.insert(n.to_owned(), id);
        }
        // Child modules and definitions first: `use` paths and code may name them before
        // they are declared.
        for item in items {
            match item {
                syn::Item::Mod(m) if is_cfg_test(&m.attrs) => {}
                syn::Item::Mod(m) => {
                    let child = m.ident.to_string();
                    match &m.content {
                        Some((_, inner)) => {
                            self.add_module(
                                file.clone(),
                                dir.join(&child),
                                Some(id),
                                Some(&child),
                                inner,
                            );
                        }
                        None => {
                            let flat = dir.join(format!("{child}.rs"));
                            let (path, child_dir) = if flat.exists() {
                                (flat, dir.join(&child))
                            } else {
                                (dir.join(&child).join("mod.rs"), dir.join(&child))
                            };
                            self.load_file(&path, child_dir, Some(id), Some(&child));
                        }
                    }
                }
                other => {
                    if let Some(name) = item_name(other) {
                        self.modules[id].defs.insert(name);
                    }
                }
            }
        }
        let mut code = Code::default();
        for item in items {
            match item {
                syn::Item::Mod(_) => {}
                syn::Item::Use(u) if is_cfg_test(&u.attrs) => {}
                syn::Item::Use(u) => {
                    let public = !matches!(u.vis, syn::Visibility::Inherited);
                    let mut prefix = Vec::new();
                    self.collect_use(id, &u.tree, &mut prefix, public);
                }
                other if item_is_cfg_test(other) => {}
                other => code.visit_item(other),
            }
        }
        let module = &mut self.modules[id];
        module.heads = code.heads;
        let raw = code.paths;
        for (segments, text) in raw {
            if let Some(abs) = self.absolute(id, &segments) {
                self.modules[id].refs.push((abs, text));
            }
        }
        id
    }

    fn collect_use(
        &mut self,
        id: usize,
        tree: &syn::UseTree,
        prefix: &mut Vec<String>,
        public: bool,
    ) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.collect_use(id, &p.tree, prefix, public);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                let name = n.ident.to_string();
                let (binding, target) = if name == "self" {
                    (prefix.last().cloned().unwrap_or_default(), prefix.clone())
                } else {
                    let mut t = prefix.clone();
                    t.push(name.clone());
                    (name, t)
                };
                self.bind(id, binding, &target, public);
            }
            syn::UseTree::Rename(r) => {
                let mut target = prefix.clone();
                if r.ident != "self" {
                    target.push(r.ident.to_string());
                }
                self.bind(id, r.rename.to_string(), &target, public);
            }
            syn::UseTree::Glob(_) => {
                // A public glob re-exports; a private one imports.
                if !public && let Some(abs) = self.absolute(id, prefix) {
                    self.modules[id].globs.push(abs);
                }
            }
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.collect_use(id, t, prefix, public);
                }
            }
        }
    }

    fn bind(&mut self, id: usize, binding: String, target: &[String], public: bool) {
        if let Some(abs) = self.absolute(id, target) {
            self.modules[id].uses.insert(binding, (abs, public));
        }
    }

    /// The crate-absolute form of a path written in module `id` (without the leading
    /// `crate`), or `None` for a path into another crate or a local name.
    fn absolute(&self, id: usize, segments: &[String]) -> Option<Vec<String>> {
        let first = segments.first()?;
        let mut base = self.path_of(id);
        let mut rest = segments;
        match first.as_str() {
            "crate" => {
                base.clear();
                rest = &segments[1..];
            }
            "self" => rest = &segments[1..],
            "super" => {
                while rest.first().is_some_and(|s| s == "super") {
                    base.pop()?;
                    rest = &rest[1..];
                }
            }
            name if self.modules[id].children.contains_key(name) => {}
            name => {
                let (target, _) = self.modules[id].uses.get(name)?;
                base.clone_from(target);
                rest = &segments[1..];
            }
        }
        base.extend(rest.iter().cloned());
        Some(base)
    }

    fn path_of(&self, mut id: usize) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(p) = self.modules[id].parent {
            let name = self.modules[p]
                .children
                .iter()
                .find(|(_, c)| **c == id)
                .map(|(n, _)| n.clone())
                .unwrap_or_default();
            out.push(name);
            id = p;
        }
        out.reverse();
        out
    }

    /// The module that defines what an absolute path names, following re-exports.
    fn resolve(&self, path: &[String], depth: usize) -> usize {
        let mut cur = 0;
        for (i, seg) in path.iter().enumerate() {
            let m = &self.modules[cur];
            if let Some(&child) = m.children.get(seg) {
                cur = child;
                continue;
            }
            if !m.defs.contains(seg)
                && let Some((target, _)) = m.uses.get(seg)
                && depth < 32
            {
                let mut next = target.clone();
                next.extend(path[i + 1..].iter().cloned());
                return self.resolve(&next, depth + 1);
            }
            return cur;
        }
        cur
    }

    /// File → file edges, each with the path text that made it.
    fn edges(&self) -> BTreeMap<(String, String), String> {
        let mut edges = BTreeMap::new();
        for m in &self.modules {
            let mut add = |path: &[String], why: String| {
                let to = &self.modules[self.resolve(path, 0)].file;
                if *to != m.file {
                    edges.entry((m.file.clone(), to.clone())).or_insert(why);
                }
            };
            for (name, (target, public)) in &m.uses {
                if !public || m.heads.contains(name) {
                    add(target, format!("use {}", target.join("::")));
                }
            }
            for g in &m.globs {
                add(g, format!("use {}::*", g.join("::")));
            }
            for (path, text) in &m.refs {
                add(path, text.clone());
            }
        }
        edges
    }

    /// Every cycle (strongly connected set of two or more files), described.
    pub(crate) fn cycles(&self) -> Vec<String> {
        let edges = self.edges();
        let files: BTreeSet<&String> = self.modules.iter().map(|m| &m.file).collect();
        let mut out = Vec::new();
        for component in strongly_connected(&files, &edges) {
            if component.len() < 2 {
                continue;
            }
            let mut text = format!("cycle between {}:", component.join(", "));
            let mut shown = BTreeSet::new();
            for start in &component {
                let cycle = shortest_cycle(start, &component, &edges);
                if shown.insert(cycle.clone()) {
                    for (from, to) in cycle.iter().zip(cycle.iter().skip(1)) {
                        let why = &edges[&(from.clone(), to.clone())];
                        let _ = write!(text, "\n    {from} -> {to}  ({why})");
                    }
                    text.push_str("\n    --");
                }
            }
            out.push(text);
        }
        out
    }
}

/// The shortest path `start → … → start` inside a strongly connected set of files
/// (breadth-first), as the list of files it passes, `start` at both ends.
fn shortest_cycle(
    start: &String,
    component: &[String],
    edges: &BTreeMap<(String, String), String>,
) -> Vec<String> {
    let mut came_from: BTreeMap<&String, &String> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for (from, to) in edges.keys() {
            if from != v || !component.contains(to) {
                continue;
            }
            if to == start {
                let mut path = vec![start.clone(), v.clone()];
                let mut at = v;
                while at != start {
                    at = came_from[at];
                    path.push(at.clone());
                }
                path.reverse();
                return path;
            }
            if !came_from.contains_key(to) {
                came_from.insert(to, v);
                queue.push_back(to);
            }
        }
    }
    Vec::new()
}

/// Tarjan's algorithm, iterated from each unvisited file in order.
fn strongly_connected(
    files: &BTreeSet<&String>,
    edges: &BTreeMap<(String, String), String>,
) -> Vec<Vec<String>> {
    struct State<'a> {
        next: BTreeMap<&'a str, Vec<&'a str>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.next.get(v).cloned().unwrap_or_default() {
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            component.sort();
            s.out.push(component);
        }
    }
    let mut state = State {
        next: BTreeMap::new(),
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for (from, to) in edges.keys() {
        state
            .next
            .entry(from.as_str())
            .or_default()
            .push(to.as_str());
    }
    for f in files {
        if !state.index.contains_key(f.as_str()) {
            visit(&mut state, f.as_str());
        }
    }
    state.out
}

fn item_name(item: &syn::Item) -> Option<String> {
    let ident = match item {
        syn::Item::Const(i) => &i.ident,
        syn::Item::Enum(i) => &i.ident,
        syn::Item::Fn(i) => &i.sig.ident,
        syn::Item::Macro(i) => i.ident.as_ref()?,
        syn::Item::Static(i) => &i.ident,
        syn::Item::Struct(i) => &i.ident,
        syn::Item::Trait(i) => &i.ident,
        syn::Item::Type(i) => &i.ident,
        syn::Item::Union(i) => &i.ident,
        _ => return None,
    };
    Some(ident.to_string())
}

fn item_is_cfg_test(item: &syn::Item) -> bool {
    match item {
        syn::Item::Const(i) => is_cfg_test(&i.attrs),
        syn::Item::Enum(i) => is_cfg_test(&i.attrs),
        syn::Item::Fn(i) => is_cfg_test(&i.attrs),
        syn::Item::Impl(i) => is_cfg_test(&i.attrs),
        syn::Item::Macro(i) => is_cfg_test(&i.attrs),
        syn::Item::Static(i) => is_cfg_test(&i.attrs),
        syn::Item::Struct(i) => is_cfg_test(&i.attrs),
        syn::Item::Trait(i) => is_cfg_test(&i.attrs),
        syn::Item::Type(i) => is_cfg_test(&i.attrs),
        _ => false,
    }
}

/// The paths and identifiers of a module's own code (not its child modules).
#[derive(Default)]
struct Code {
    paths: Vec<(Vec<String>, String)>,
    heads: BTreeSet<String>,
}

impl Code {
    fn tokens(&mut self, tokens: TokenStream) {
        let tokens: Vec<TokenTree> = tokens.into_iter().collect();
        let mut i = 0;
        while i < tokens.len() {
            match &tokens[i] {
                TokenTree::Group(g) => self.tokens(g.stream()),
                TokenTree::Ident(id) => {
                    self.heads.insert(id.to_string());
                    let mut segments = vec![id.to_string()];
                    let mut j = i;
                    while let (
                        Some(TokenTree::Punct(a)),
                        Some(TokenTree::Punct(b)),
                        Some(TokenTree::Ident(next)),
                    ) = (tokens.get(j + 1), tokens.get(j + 2), tokens.get(j + 3))
                    {
                        if a.as_char() != ':' || b.as_char() != ':' {
                            break;
                        }
                        segments.push(next.to_string());
                        j += 3;
                    }
                    if segments.len() > 1 {
                        let text = segments.join("::");
                        self.paths.push((segments, text));
                    }
                    i = j;
                }
                _ => {}
            }
            i += 1;
        }
    }
}

impl<'ast> Visit<'ast> for Code {
    fn visit_item_mod(&mut self, _: &'ast syn::ItemMod) {
        // Nested modules are modules of their own (and inline ones are not in `items`).
    }
    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        // A `use` inside a function: each path it names counts.
        fn walk(tree: &syn::UseTree, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
            match tree {
                syn::UseTree::Path(p) => {
                    prefix.push(p.ident.to_string());
                    walk(&p.tree, prefix, out);
                    prefix.pop();
                }
                syn::UseTree::Name(syn::UseName { ident })
                | syn::UseTree::Rename(syn::UseRename { ident, .. }) => {
                    let mut path = prefix.clone();
                    if ident != "self" {
                        path.push(ident.to_string());
                    }
                    out.push(path);
                }
                syn::UseTree::Glob(_) => out.push(prefix.clone()),
                syn::UseTree::Group(g) => {
                    for t in &g.items {
                        walk(t, prefix, out);
                    }
                }
            }
        }
        let mut paths = Vec::new();
        walk(&u.tree, &mut Vec::new(), &mut paths);
        for path in paths {
            let text = format!("use {}", path.join("::"));
            self.paths.push((path, text));
        }
    }
    fn visit_attribute(&mut self, _: &'ast syn::Attribute) {}
    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        if !is_cfg_test(&f.attrs) {
            syn::visit::visit_impl_item_fn(self, f);
        }
    }
    fn visit_path(&mut self, p: &'ast syn::Path) {
        let segments: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        if p.leading_colon.is_none()
            && let Some(first) = segments.first()
        {
            self.heads.insert(first.clone());
        }
        if segments.len() > 1 {
            let text = segments.join("::");
            self.paths.push((segments, text));
        }
        syn::visit::visit_path(self, p);
    }
    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        self.tokens(m.tokens.clone());
        syn::visit::visit_macro(self, m);
    }
}
