//! The command line every service binary shares: no arguments runs the service; subcommands
//! `healthcheck`, `migrate` (services with a database), `vars` (the environment variables it
//! reads) and `dlq list|replay <stream>`.

use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Switchboard service. Without a subcommand, runs the service."
)]
/// Every service binary's command line: no subcommand runs the service.
pub struct Cli {
    /// What to do instead of running.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands of every service binary.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Probe this service's own /healthz on its internal listener; exit 0 when healthy, 1 when not.
    Healthcheck {
        /// Probe this URL instead of http://<SERVICE>_HTTP_ADDR/healthz.
        #[arg(long)]
        url: Option<String>,
    },
    /// Apply the database migrations and exit.
    Migrate,
    /// Write a consistent copy of the SQLite database to a new file (SQLite's `VACUUM INTO`,
    /// safe while the services write) and exit; how `scripts/backup --compose` copies it out
    /// of the container. PostgreSQL is backed up with `pg_dump` instead.
    BackupDb {
        /// The file to write (must not exist).
        to: std::path::PathBuf,
    },
    /// Print the name of every environment variable this service reads, one per line.
    Vars,
    /// Check the configuration (environment and `.env`) and exit: 0 when valid, 2 listing every
    /// problem otherwise.
    CheckConfig,
    /// Print the QR code to link WhatsApp (or the pairing code) in the terminal; exit 1 when no
    /// transport waits for one (gateway only).
    Qr,
    /// Print a one-time sign-in link to the owner's console, valid 10 minutes (gateway only).
    ConsoleLink {
        /// Who the audit log names for this session (default: `operator`).
        #[arg(long, default_value = "operator")]
        name: String,
    },
    /// List or replay dead letters.
    Dlq {
        /// What to do with them.
        #[command(subcommand)]
        action: DlqAction,
    },
}

/// What `dlq` does.
#[derive(Debug, Subcommand)]
pub enum DlqAction {
    /// Print the dead letters of a stream (JSON lines), oldest first.
    List {
        /// inbound, outbound, transcribe, transcripts or usage.
        stream: String,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Move dead letters back to their stream (all, or those given with --id).
    Replay {
        /// inbound, outbound, transcribe, transcripts or usage.
        stream: String,
        /// Only these dead-letter ids (repeatable).
        #[arg(long = "id")]
        ids: Vec<String>,
    },
}

/// `http://<addr><path>` on the service's internal listener (`0.0.0.0` becomes `127.0.0.1`).
fn internal_url(addr_var: &str, default_addr: &str, path: &str) -> String {
    let addr = std::env::var(addr_var)
        .ok()
        .filter(|a| !a.trim().is_empty())
        .unwrap_or_else(|| default_addr.to_owned());
    let addr = addr
        .trim()
        .replace("0.0.0.0", "127.0.0.1")
        .replace("[::]", "[::1]");
    format!("http://{addr}{path}")
}

/// Probes `url` (default: `http://<addr>/healthz`, where `0.0.0.0` becomes `127.0.0.1`).
pub fn healthcheck(addr_var: &str, default_addr: &str, url: Option<String>) -> bool {
    let url = url.unwrap_or_else(|| internal_url(addr_var, default_addr, "/healthz"));
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return false;
    };
    rt.block_on(async {
        let Ok(client) = crate::http_client::builder()
            .timeout(Duration::from_secs(3))
            .build()
        else {
            return false;
        };
        match client.get(&url).send().await {
            Ok(r) if r.status().is_success() => true,
            Ok(r) => {
                eprintln!("unhealthy: {url} answered {}", r.status());
                false
            }
            Err(e) => {
                eprintln!("unhealthy: {url}: {e}");
                false
            }
        }
    })
}

/// `gateway qr`: asks the running gateway's internal `/qr` for the code waiting to be scanned
/// and prints it as a terminal QR code (or the pairing code); `false` when none waits or the
/// gateway cannot be asked (the reason on stderr).
pub fn qr(addr_var: &str, default_addr: &str) -> bool {
    let url = internal_url(addr_var, default_addr, "/qr?format=json");
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return false;
    };
    let answer = rt.block_on(async {
        let client = crate::http_client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        let r = client.get(&url).send().await?;
        let status = r.status();
        Ok::<_, reqwest::Error>((status, r.json::<serde_json::Value>().await.ok()))
    });
    match answer {
        Ok((status, Some(j))) if status.is_success() => {
            if let Some(code) = j["qr"].as_str() {
                let Ok(qr) = qrcode::QrCode::new(code.as_bytes()) else {
                    eprintln!("the QR code from the gateway cannot be drawn");
                    return false;
                };
                let drawn = qr
                    .render::<qrcode::render::unicode::Dense1x2>()
                    .quiet_zone(true)
                    .build();
                println!("{drawn}");
                println!(
                    "Scan it with WhatsApp on the business phone: Linked devices > Link a device."
                );
            }
            if let Some(code) = j["pairing_code"].as_str() {
                println!(
                    "Pairing code: {code} (WhatsApp > Linked devices > Link with phone number)"
                );
            }
            let waiting = j["qr"].is_string() || j["pairing_code"].is_string();
            if !waiting {
                let state = j["state"].as_str().unwrap_or("unknown");
                eprintln!("no code to scan: the WhatsApp session is {state}");
            }
            waiting
        }
        Ok((_, j)) => {
            let why = j
                .as_ref()
                .and_then(|j| j["error"].as_str())
                .unwrap_or("no answer");
            eprintln!("no code to scan: {why}");
            false
        }
        Err(e) => {
            eprintln!("cannot ask the gateway at {url}: {e}");
            false
        }
    }
}
