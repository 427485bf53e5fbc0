//! The gateway's own subcommands, beside the common ones ([`shared::cli`]): `qr` draws the code
//! to link WhatsApp in the terminal, `console-link` prints a one-time sign-in link to the
//! owner's console.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;
use shared::bus::Bus;
use shared::config::CommonConfig;
use shared::console::{Admin, Console, LINK_TTL};
use shared::service::Spec;

use crate::Config;

/// Subcommands only the gateway has.
#[derive(Debug, Subcommand)]
pub enum Commands {
    /// Print the QR code to link WhatsApp (or the pairing code) in the terminal; exit 1 when no
    /// transport waits for one (gateway only).
    Qr,
    /// Print a one-time sign-in link to the owner's console, valid 10 minutes (gateway only).
    ConsoleLink {
        /// Who the audit log names for this session (default: `operator`).
        #[arg(long, default_value = "operator")]
        name: String,
    },
}

impl shared::service::Commands<Config> for Commands {
    /// `qr` asks the running gateway, so it needs only its address, not a valid configuration.
    fn before_config(self, spec: Spec) -> Result<ExitCode, Self> {
        match self {
            Self::Qr => Ok(if qr(spec) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }),
            other => Err(other),
        }
    }

    async fn run(self, _: Spec, common: &CommonConfig, config: &Config) -> anyhow::Result<()> {
        match self {
            Self::ConsoleLink { name } => console_link(common, config, name).await,
            Self::Qr => unreachable!("handled before config"),
        }
    }
}

/// `console-link`: a one-time sign-in link to the console, printed on stdout.
async fn console_link(common: &CommonConfig, config: &Config, name: String) -> anyhow::Result<()> {
    let bus = Bus::new(common)?;
    let console = Console::new(&bus, LINK_TTL);
    let admin = Admin {
        name,
        contact_id: None,
    };
    let token = console
        .issue_link(&admin)
        .await
        .context("cannot reach Redis to keep the link")?;
    println!(
        "{}",
        shared::console::link(&config.console.public_url, &token)
    );
    eprintln!("valid once, for 10 minutes");
    Ok(())
}

/// `qr`: asks the running gateway's internal `/qr` for the code waiting to be scanned and
/// prints it as a terminal QR code (or the pairing code); `false` when none waits or the
/// gateway cannot be asked (the reason on stderr).
fn qr(spec: Spec) -> bool {
    let url = shared::cli::internal_url(
        spec.name.http_addr_var(),
        spec.name.default_http_addr(),
        "/qr?format=json",
    );
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return false;
    };
    let answer = rt.block_on(async {
        let client = shared::http_client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        let r = client.get(&url).send().await?;
        let status = r.status();
        Ok::<_, reqwest::Error>((status, r.json::<serde_json::Value>().await.ok()))
    });
    match answer {
        Ok((status, Some(j))) if status.is_success() => print_code(&j),
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

/// Prints what `/qr?format=json` answered: the QR code drawn, the pairing code, or why there is
/// none; `true` when a code waits.
fn print_code(j: &serde_json::Value) -> bool {
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
        println!("Scan it with WhatsApp on the business phone: Linked devices > Link a device.");
    }
    if let Some(code) = j["pairing_code"].as_str() {
        println!("Pairing code: {code} (WhatsApp > Linked devices > Link with phone number)");
    }
    let waiting = j["qr"].is_string() || j["pairing_code"].is_string();
    if !waiting {
        let state = j["state"].as_str().unwrap_or("unknown");
        eprintln!("no code to scan: the WhatsApp session is {state}");
    }
    waiting
}
