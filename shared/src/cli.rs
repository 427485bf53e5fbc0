//! The command line every service binary shares: no arguments runs the service; subcommands
//! `healthcheck`, `migrate` (services with a database), `vars` (the environment variables it
//! reads) and `dlq list|replay <stream>` — plus a service's own subcommands (`X`, e.g. the
//! gateway's `qr` and `console-link`), flattened beside them.

use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Switchboard service. Without a subcommand, runs the service."
)]
/// Every service binary's command line: no subcommand runs the service.
pub struct Cli<X: Subcommand = NoCommands> {
    /// What to do instead of running.
    #[command(subcommand)]
    pub command: Option<Command<X>>,
}

/// A service without subcommands of its own.
#[derive(Debug, Clone, Copy, Subcommand)]
pub enum NoCommands {}

/// Subcommands of every service binary, and `X`, the service's own.
#[derive(Debug, Subcommand)]
pub enum Command<X: Subcommand = NoCommands> {
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
    /// The service's own subcommands (listed here, between the common ones, in `--help`).
    #[command(flatten)]
    Service(X),
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
        /// inbound, outbound, transcribe, transcripts, usage, webhooks or events.
        stream: String,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Move dead letters back to their stream (all, or those given with --id).
    Replay {
        /// inbound, outbound, transcribe, transcripts, usage, webhooks or events.
        stream: String,
        /// Only these dead-letter ids (repeatable).
        #[arg(long = "id")]
        ids: Vec<String>,
    },
}

/// `http://<addr><path>` on the service's internal listener (`0.0.0.0` becomes `127.0.0.1`):
/// how a subcommand reaches the running service beside it.
pub fn internal_url(addr_var: &str, default_addr: &str, path: &str) -> String {
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

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser, Subcommand};

    use super::{Cli, Command, NoCommands};

    /// A service's own subcommands, as a service declares them.
    #[derive(Debug, Subcommand)]
    enum Own {
        /// Says hello.
        Hello {
            /// To whom.
            #[arg(long)]
            name: String,
        },
    }

    fn names<X: Subcommand>() -> Vec<String> {
        Cli::<X>::command()
            .get_subcommands()
            .map(|c| c.get_name().to_owned())
            .collect()
    }

    #[test]
    fn a_service_adds_its_own_subcommands_beside_the_common_ones() {
        assert_eq!(
            names::<Own>(),
            [
                "healthcheck",
                "migrate",
                "backup-db",
                "vars",
                "check-config",
                "hello",
                "dlq"
            ]
        );
        let cli = Cli::<Own>::try_parse_from(["svc", "hello", "--name", "Ana"]).unwrap();
        assert!(
            matches!(&cli.command, Some(Command::Service(Own::Hello { name })) if name == "Ana"),
            "{cli:?}"
        );
        let cli = Cli::<Own>::try_parse_from(["svc", "dlq", "list", "inbound"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Dlq { .. })), "{cli:?}");
        let cli = Cli::<Own>::try_parse_from(["svc"]).unwrap();
        assert!(cli.command.is_none());
    }

    #[test]
    fn a_service_without_its_own_has_only_the_common_ones() {
        assert_eq!(
            names::<NoCommands>(),
            [
                "healthcheck",
                "migrate",
                "backup-db",
                "vars",
                "check-config",
                "dlq"
            ]
        );
        for gateway_only in ["qr", "console-link"] {
            let e = Cli::<NoCommands>::try_parse_from(["brain", gateway_only]).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::InvalidSubcommand);
        }
    }
}
