//! `.env` as compose's `env_file` and interpolation read it. Compose's own parser (compose-go)
//! cannot run here — it needs Go 1.23+ or a Docker engine, neither of which this machine has —
//! so its documented syntax (docs.docker.com, "Syntax for environment files") is modelled below
//! and `.env.example` is checked to mean the same to it as to the services (dotenvy): every active
//! line, and every commented `# NAME=value` example an operator may uncomment. What the model
//! does not cover (multi-line values, `${VAR:-default}` defaults) fails the check, so
//! `.env.example` keeps to the syntax the three readers share; the scripts' reader is checked
//! against dotenvy in ops.rs.

use opscheck::root;
use std::collections::HashMap;

/// `$NAME` and `${NAME}` replaced by earlier values (compose: unquoted and double-quoted).
fn interpolate(value: &str, vars: &HashMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        let braced = chars.peek() == Some(&'{');
        if braced {
            chars.next();
        }
        let mut name = String::new();
        while let Some(&n) = chars.peek() {
            if n.is_ascii_alphanumeric() || n == '_' {
                name.push(n);
                chars.next();
            } else {
                break;
            }
        }
        if braced && chars.next() != Some('}') {
            return Err(format!(
                "${{{name}…}}: only ${{NAME}} is shared by every reader"
            ));
        }
        if name.is_empty() {
            out.push('$');
        } else {
            out.push_str(vars.get(&name).map_or("", String::as_str));
        }
    }
    Ok(out)
}

/// One line's value as compose reads it.
fn compose_value(raw: &str, vars: &HashMap<String, String>) -> Result<String, String> {
    if let Some(rest) = raw.strip_prefix('\'') {
        let end = rest.find('\'').ok_or("unclosed single quote")?;
        if rest[..end].contains('\\') {
            return Err("a backslash in single quotes: compose reads \\' as a quote".into());
        }
        check_after_quote(&rest[end + 1..])?;
        return Ok(rest[..end].to_owned());
    }
    if let Some(rest) = raw.strip_prefix('"') {
        let mut value = String::new();
        let mut chars = rest.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    check_after_quote(&rest[i + 1..])?;
                    return interpolate(&value, vars);
                }
                '\\' => match chars.next().map(|(_, e)| e) {
                    Some('n') => value.push('\n'),
                    Some('t') => value.push('\t'),
                    Some('r') => value.push('\r'),
                    Some(e @ ('\\' | '"')) => value.push(e),
                    other => return Err(format!("escape \\{other:?} is not compose's")),
                },
                c => value.push(c),
            }
        }
        return Err("unclosed double quote".into());
    }
    // Unquoted: an inline comment starts at " #"; surrounding spaces go.
    let value = raw.split(" #").next().unwrap_or("").trim();
    if value.contains(['"', '\'', '\\']) {
        return Err("quotes or backslashes inside an unquoted value".into());
    }
    interpolate(value, vars)
}

fn check_after_quote(rest: &str) -> Result<(), String> {
    let rest = rest.trim_start();
    if rest.is_empty() || rest.starts_with('#') {
        Ok(())
    } else {
        Err(format!("text after the closing quote: {rest:?}"))
    }
}

/// A whole file as compose reads it (the syntax shared with dotenvy: no `export`, no spaces
/// around `=`, one line per value).
fn compose_read(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut vars = HashMap::new();
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let (name, raw) = t.split_once('=').ok_or(format!("line {}: no =", n + 1))?;
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("line {}: name {name:?}", n + 1));
        }
        let value = compose_value(raw, &vars).map_err(|e| format!("line {}: {e}", n + 1))?;
        vars.insert(name.to_owned(), value.clone());
        out.push((name.to_owned(), value));
    }
    Ok(out)
}

fn dotenvy_read(text: &str) -> Vec<(String, String)> {
    let dir = shared::testing::TempDir::new("envfile");
    let path = dir.path().join(".env");
    std::fs::write(&path, text).unwrap();
    dotenvy::from_path_iter(&path)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("dotenvy: {e}\n{text}"))
}

#[test]
fn env_example_means_the_same_to_compose_as_to_the_services() {
    let text = std::fs::read_to_string(root().join(".env.example")).unwrap();
    let compose = compose_read(&text).unwrap_or_else(|e| panic!(".env.example: {e}"));
    assert_eq!(compose, dotenvy_read(&text));
    // A quoted example with an apostrophe, uncommented, reads the same to both.
    let budget = text
        .lines()
        .find_map(|l| l.strip_prefix("# BUDGET_MESSAGE="))
        .expect("the BUDGET_MESSAGE example");
    let line = format!("BUDGET_MESSAGE={budget}");
    let compose = compose_read(&line).unwrap();
    assert!(
        compose.iter().any(|(_, v)| v.contains("We'll")),
        "{compose:?}"
    );
    assert_eq!(compose, dotenvy_read(&line));

    // Each commented example, uncommented as an operator would.
    let mut examples = 0;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# ") else {
            continue;
        };
        let Some((name, _)) = rest.split_once('=') else {
            continue;
        };
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        {
            continue;
        }
        examples += 1;
        let compose = compose_read(rest).unwrap_or_else(|e| panic!("{rest}: {e}"));
        assert_eq!(compose, dotenvy_read(rest), "{rest}");
    }
    assert!(examples > 40, "only {examples} commented examples found");
}

#[test]
fn the_compose_model_knows_compose_from_dotenvy() {
    // Where compose's documented syntax and dotenvy's differ, the model says so (so the check
    // above could fail).
    let vars = HashMap::new();
    assert!(compose_value(r"'Let\'s go'", &vars).is_err());
    assert!(compose_value("${X:-default}", &vars).is_err());
    assert_eq!(compose_value("a # note", &vars).unwrap(), "a");
    assert_eq!(compose_value("a#b", &vars).unwrap(), "a#b");
    assert_eq!(compose_value(r#""x\ty""#, &vars).unwrap(), "x\ty");
    let vars = HashMap::from([("A".to_owned(), "1".to_owned())]);
    assert_eq!(compose_value("'$A'", &vars).unwrap(), "$A");
    assert_eq!(compose_value("\"${A}-$A\"", &vars).unwrap(), "1-1");
}
