//! Compiles `../proto` with protox (pure Rust), so no system `protoc` is needed; and lists the
//! migrations of `../migrations/{sqlite,postgres}` for `db` to embed (`include_str!`), which is
//! what sqlx's `migrate!` did — without building sqlx's macros, a second SQLite among them.

use std::fmt::Write as _;
use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../proto");
    println!("cargo:rerun-if-changed=../migrations");
    let fds = protox::compile(["switchboard/v1/events.proto"], ["../proto"])?;
    prost_build::Config::new().compile_fds(fds)?;

    let mut out = String::new();
    for (name, dir) in [("SQLITE", "sqlite"), ("POSTGRES", "postgres")] {
        let dir = Path::new("../migrations").join(dir).canonicalize()?;
        let mut files: Vec<_> = std::fs::read_dir(&dir)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        files.sort();
        writeln!(
            out,
            "/// `migrations/{}`: (version, description, SQL), in order.",
            dir.file_name().unwrap_or_default().to_string_lossy()
        )?;
        writeln!(out, "pub(crate) const {name}: &[(i64, &str, &str)] = &[")?;
        for path in files {
            let file = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let Some((version, rest)) = file.split_once('_') else {
                return Err(format!("migration {file}: not <version>_<description>.sql").into());
            };
            let Some(description) = rest.strip_suffix(".sql") else {
                return Err(format!("migration {file}: not a .sql file").into());
            };
            if description.ends_with(".up") || description.ends_with(".down") {
                return Err(format!("migration {file}: reversible migrations are not used").into());
            }
            let version: i64 = version
                .parse()
                .map_err(|_| format!("migration {file}: version not a number"))?;
            let description = description.replace('_', " ");
            writeln!(
                out,
                "    ({version}, {description:?}, include_str!({:?})),",
                path.display().to_string()
            )?;
        }
        writeln!(out, "];")?;
    }
    std::fs::write(
        Path::new(&std::env::var("OUT_DIR")?).join("migrations.rs"),
        out,
    )?;
    Ok(())
}
