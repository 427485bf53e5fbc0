//! The shape of the code, kept as issue 13 left it: no source file over 600 lines, no function
//! over 80 lines, and no two top-level modules of a crate that import each other.

use opscheck::root;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under a crate's `src/` (tests and benches are not the product).
fn sources() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    for top in ["services", "shared", "tools"] {
        let top = root().join(top);
        let crates: Vec<PathBuf> = if top.join("src").is_dir() {
            vec![top]
        } else {
            std::fs::read_dir(&top)
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .collect()
        };
        for c in crates {
            if c.join("src").is_dir() {
                walk(&c.join("src"), &mut out);
            }
        }
    }
    out
}

#[test]
fn no_source_file_is_over_600_lines() {
    let files = sources();
    assert!(files.len() > 50, "found only {} sources", files.len());
    let long: Vec<String> = files
        .iter()
        .filter_map(|p| {
            let n = std::fs::read_to_string(p).unwrap().lines().count();
            (n > 600).then(|| format!("{} ({n} lines)", p.display()))
        })
        .collect();
    assert!(long.is_empty(), "split these by concern: {long:?}");
}

#[test]
fn no_two_top_level_modules_of_a_crate_import_each_other() {
    // crate dir → top-level module → the top-level modules it names as `crate::x`.
    let mut graph: BTreeMap<PathBuf, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for p in sources() {
        let src = p
            .ancestors()
            .find(|a| a.ends_with("src"))
            .unwrap()
            .to_path_buf();
        let rel = p.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        if matches!(top.as_str(), "lib" | "main" | "bin") {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        let code: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let uses = graph
            .entry(src)
            .or_default()
            .entry(top.clone())
            .or_default();
        for (i, _) in code.match_indices("crate::") {
            let name: String = code[i + 7..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && name != top {
                uses.insert(name);
            }
        }
    }
    let mut cycles = Vec::new();
    for (krate, modules) in &graph {
        for (a, uses) in modules {
            for b in uses {
                if a < b && modules.get(b).is_some_and(|u| u.contains(a)) {
                    cycles.push(format!("{}: {a} <-> {b}", krate.display()));
                }
            }
        }
    }
    assert!(cycles.is_empty(), "import cycles: {cycles:?}");
}

/// The length in lines of every function body in `text` (before its `#[cfg(test)]` module),
/// by name. Braces inside strings, characters and comments are not counted.
fn function_lengths(text: &str) -> Vec<(String, usize)> {
    let lines: Vec<&str> = text
        .lines()
        .take_while(|l| !l.starts_with("#[cfg(test)]"))
        .collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let t = lines[i].trim_start();
        let decl = ["pub(super) ", "pub(crate) ", "pub ", ""]
            .iter()
            .flat_map(|v| ["async fn ", "const fn ", "fn "].map(move |f| format!("{v}{f}")))
            .find(|p| t.starts_with(p.as_str()));
        let Some(decl) = decl else {
            i += 1;
            continue;
        };
        let name: String = t[decl.len()..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let (mut depth, mut opened, mut in_str) = (0i32, false, false);
        let mut j = i;
        'lines: while j < lines.len() {
            let b = lines[j].as_bytes();
            let mut k = 0;
            while k < b.len() {
                match b[k] {
                    b'\\' if in_str => k += 1,
                    b'"' => in_str = !in_str,
                    b'/' if !in_str && b.get(k + 1) == Some(&b'/') => break,
                    b'\'' if !in_str && b.get(k + 2) == Some(&b'\'') => k += 2,
                    b';' if !in_str && !opened && depth == 0 => break 'lines,
                    b'{' if !in_str => {
                        depth += 1;
                        opened = true;
                    }
                    b'}' if !in_str => depth -= 1,
                    _ => {}
                }
                k += 1;
            }
            if opened && depth == 0 {
                break;
            }
            j += 1;
        }
        if opened {
            out.push((name, j - i + 1));
        }
        i = j + 1;
    }
    out
}

#[test]
fn function_lengths_are_measured_without_strings_and_comments() {
    let text = "fn a() {\n    let s = \"{{\";\n    // }\n}\n\nfn b();\n\npub async fn c(\n    x: u8,\n) -> u8 {\n    x\n}\n";
    assert_eq!(
        function_lengths(text),
        [("a".to_owned(), 4), ("c".to_owned(), 5)]
    );
}

#[test]
fn no_function_is_over_80_lines() {
    let mut long = Vec::new();
    for p in sources() {
        for (name, n) in function_lengths(&std::fs::read_to_string(&p).unwrap()) {
            if n > 80 {
                long.push(format!("{}: {name} ({n} lines)", p.display()));
            }
        }
    }
    assert!(long.is_empty(), "split these: {long:?}");
}
