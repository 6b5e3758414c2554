//! src/ is one folder per concern, in layers: a folder's code names only
//! its own folder and the folders below it ([`ORDER`], lowest first), and
//! no module reaches itself again through its imports. Read from the
//! sources, so that an import pointing up or closing a loop fails
//! `make test`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// src/'s folders, lowest layer first, as lib.rs lists them.
const ORDER: &[&str] = &[
    "wire", "config", "logging", "link", "client", "backend", "terminal", "front", "service",
];

/// A file of src/ (bin/ and lib.rs aside): its folder, the module it is
/// (`wire::tlv`; `backend` for backend/mod.rs) and its code outside tests.
struct File {
    folder: String,
    module: String,
    path: PathBuf,
    code: String,
}

fn files() -> Vec<File> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("src");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_stem().unwrap().to_string_lossy().into_owned();
        if !p.is_dir() || name == "bin" {
            continue;
        }
        for f in walk(&p) {
            let rel = f.strip_prefix(&p).unwrap();
            let first = rel.iter().next().unwrap().to_string_lossy();
            let first = first.strip_suffix(".rs").unwrap_or(&first);
            let module = if first == "mod" {
                name.clone()
            } else {
                format!("{name}::{first}")
            };
            let text = std::fs::read_to_string(&f).unwrap();
            out.push(File {
                folder: name.clone(),
                module,
                path: f.strip_prefix(root).unwrap().to_path_buf(),
                // Test code may reach anywhere.
                code: without_tests(&text),
            });
        }
    }
    out
}

/// Every path the code names from the crate's root, as segments:
/// `crate::wire::tlv::Frame` and `use crate::{wire::{tlv, pan}, config}`
/// (the latter three paths).
fn crate_paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let b = code.as_bytes();
    for (i, _) in code.match_indices("crate::") {
        if i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_') {
            continue;
        }
        let mut at = i + 7;
        tree(b, &mut at, Vec::new(), &mut out);
    }
    out
}

/// Reads one use tree at `b[*at..]`: a name, `name::tree` or `{tree, ...}`.
fn tree(b: &[u8], at: &mut usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    if b.get(*at) == Some(&b'{') {
        *at += 1;
        loop {
            blank(b, at);
            match b.get(*at) {
                None => return,
                Some(b'}') => {
                    *at += 1;
                    return;
                }
                Some(b',') => *at += 1,
                _ => {
                    let before = *at;
                    tree(b, at, prefix.clone(), out);
                    blank(b, at);
                    if b[*at..].starts_with(b"as ") {
                        *at += 3;
                        blank(b, at);
                        ident(b, at);
                    }
                    if *at == before {
                        // Not a tree: leave the list rather than loop.
                        return;
                    }
                }
            }
        }
    }
    let name = ident(b, at);
    if name.is_empty() {
        if !prefix.is_empty() {
            out.push(prefix);
        }
        return;
    }
    let mut path = prefix;
    path.push(name);
    if b[*at..].starts_with(b"::") {
        *at += 2;
        tree(b, at, path, out);
    } else {
        out.push(path);
    }
}

fn ident(b: &[u8], at: &mut usize) -> String {
    let start = *at;
    while *at < b.len() && (b[*at].is_ascii_alphanumeric() || b[*at] == b'_' || b[*at] == b'*') {
        *at += 1;
    }
    String::from_utf8_lossy(&b[start..*at]).into_owned()
}

/// Skips white space and `//` comments inside a use list.
fn blank(b: &[u8], at: &mut usize) {
    loop {
        while *at < b.len() && b[*at].is_ascii_whitespace() {
            *at += 1;
        }
        if b[*at..].starts_with(b"//") {
            while *at < b.len() && b[*at] != b'\n' {
                *at += 1;
            }
        } else {
            return;
        }
    }
}

/// The module a path names: `folder::file` where that file exists, else
/// the folder (its mod.rs).
fn module_of(path: &[String], modules: &BTreeSet<String>) -> Option<String> {
    let first = path.first()?;
    if let Some(second) = path.get(1) {
        let m = format!("{first}::{second}");
        if modules.contains(&m) {
            return Some(m);
        }
    }
    modules.contains(first).then(|| first.clone())
}

/// The modules of src/ and the others each names; a folder's mod.rs
/// naming its own files is left out, as a parent that declares them may
/// also assemble them (backend/mod.rs builds the backend its configuration
/// names, and each backend implements the trait of backend/mod.rs).
fn module_graph(files: &[File]) -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeSet<String> = files.iter().map(|f| f.module.clone()).collect();
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let deps = g.entry(f.module.clone()).or_default();
        for p in crate_paths(&f.code) {
            if let Some(m) = module_of(&p, &modules) {
                let child = m
                    .strip_prefix(&f.module)
                    .is_some_and(|r| r.starts_with("::"));
                if m != f.module && !child {
                    deps.insert(m);
                }
            }
        }
    }
    g
}

/// Every import from a folder to one that is not below it in `order`, as
/// "file: crate::path"; every import from a folder `order` does not name.
fn upward(files: &[File], order: &[&str]) -> Vec<String> {
    let rank = |f: &str| order.iter().position(|o| *o == f);
    let mut out = Vec::new();
    for f in files {
        for p in crate_paths(&f.code) {
            let to = &p[0];
            if *to == f.folder {
                continue;
            }
            let fine = match (rank(&f.folder), rank(to)) {
                (Some(a), Some(b)) => b < a,
                // Not a folder of src/ (an item of lib.rs, if it ever has
                // one): no layer to break.
                (Some(_), None) => true,
                // A folder the order does not place.
                (None, _) => false,
            };
            if !fine {
                out.push(format!("{}: crate::{}", f.path.display(), p.join("::")));
            }
        }
    }
    out
}

/// The text without the items marked `#[cfg(test)]` (a test module, a
/// test-only function or field), found by matching their braces.
fn without_tests(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..i]);
        let item = &rest[i..];
        // The item ends at its first `;` if that comes before any `{`,
        // else at the brace matching its first `{`.
        let (semi, brace) = (item.find(';'), item.find('{'));
        let end = match (semi, brace) {
            (Some(s), Some(b)) if s < b => s + 1,
            (_, Some(b)) => {
                let mut depth = 0usize;
                let mut end = item.len();
                for (j, c) in item[b..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = b + j + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                end
            }
            (Some(s), None) => s + 1,
            (None, None) => item.len(),
        };
        rest = &item[end..];
    }
    out.push_str(rest);
    out
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out
}

/// Every cycle's members, as strongly connected components (Tarjan).
fn cycles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        let n = t.index.len();
        t.index.insert(v, n);
        t.low.insert(v, n);
        t.stack.push(v);
        t.on.insert(v);
        for w in t.g.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !t.index.contains_key(w) {
                visit(t, w);
                let l = t.low[v].min(t.low[w]);
                t.low.insert(v, l);
            } else if t.on.contains(w) {
                let l = t.low[v].min(t.index[w]);
                t.low.insert(v, l);
            }
        }
        if t.low[v] == t.index[v] {
            let mut c = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                c.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if c.len() > 1 {
                c.sort();
                t.out.push(c);
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

#[test]
fn no_module_reaches_itself_through_its_imports() {
    let g = module_graph(&files());
    assert!(g.len() > 30, "{g:?}");
    let c = cycles(&g);
    assert!(c.is_empty(), "import cycles among src's modules: {c:?}");
}

#[test]
fn folders_import_only_the_folders_below_them() {
    let files = files();
    assert!(files.len() > 40, "{} files", files.len());
    let up = upward(&files, ORDER);
    assert!(
        up.is_empty(),
        "imports that point up the layers of src/ ({ORDER:?}, lowest first):\n{}",
        up.join("\n")
    );
}

/// `ls src` is the map: lib.rs, bin/ and the folders of [`ORDER`], which
/// lib.rs declares in that order.
#[test]
fn src_holds_the_folders_lib_rs_lists_in_layer_order() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut entries: Vec<String> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "lib.rs" && n != "bin")
        .collect();
    entries.sort();
    let mut folders: Vec<String> = ORDER.iter().map(|s| s.to_string()).collect();
    folders.sort();
    assert_eq!(entries, folders, "src/ besides lib.rs and bin/");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let declared: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod ")?.strip_suffix(';'))
        .collect();
    assert_eq!(declared, ORDER, "lib.rs's modules");
}

#[test]
fn the_import_reader_reads_nested_lists() {
    let code = "use crate::{wire::{tlv::{self, Frame}, pan}, config as c};\n\
                fn f() { crate::front::net::bind(); }\n\
                use crate::{\n    // a comment\n    terminal,\n};\n";
    let paths: Vec<String> = crate_paths(code).iter().map(|p| p.join("::")).collect();
    assert_eq!(
        paths,
        [
            "wire::tlv::self",
            "wire::tlv::Frame",
            "wire::pan",
            "config",
            "front::net::bind",
            "terminal",
        ]
    );
}

#[test]
fn an_import_pointing_up_is_found() {
    let file = |folder: &str, code: &str| File {
        folder: folder.into(),
        module: format!("{folder}::x"),
        path: PathBuf::from(format!("src/{folder}/x.rs")),
        code: code.into(),
    };
    let files = [
        file("wire", "use crate::wire::tlv;"),
        file("front", "use crate::{wire::tlv, terminal::worker};"),
        file("config", "fn f() { crate::service::control::run() }"),
        file("extra", "use crate::wire::tlv;"),
    ];
    assert_eq!(
        upward(&files, &["wire", "config", "terminal", "front", "service"]),
        [
            "src/config/x.rs: crate::service::control::run",
            "src/extra/x.rs: crate::wire::tlv",
        ]
    );
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut edge = |a: &str, b: &str| {
        g.entry(a.into()).or_default().insert(b.into());
        g.entry(b.into()).or_default();
    };
    edge("a", "b");
    edge("b", "c");
    edge("c", "a");
    edge("c", "d");
    assert_eq!(
        cycles(&g),
        vec![vec!["a".to_string(), "b".into(), "c".into()]]
    );
}
