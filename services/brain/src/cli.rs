//! The brain's own subcommands, beside the common ones ([`shared::cli`]).

use std::process::ExitCode;

use clap::Subcommand;
use shared::config::CommonConfig;
use shared::service::Spec;

use crate::Config;

/// Subcommands only the brain has.
#[derive(Debug, Subcommand)]
pub enum Subcommands {
    /// Read a PDF on stdin and print its pages' text as a JSON array (the console's PDF
    /// import runs this in a child process it can kill; not for people).
    #[command(name = "extract-pdf", hide = true)]
    ExtractPdf,
}

impl shared::service::Commands<Config> for Subcommands {
    /// `extract-pdf` needs no configuration at all.
    fn before_config(self, _: Spec) -> Result<ExitCode, Self> {
        match self {
            Self::ExtractPdf => Ok(crate::console::import::extract_pdf_stdio()),
        }
    }

    async fn run(self, _: Spec, _: &CommonConfig, _: &Config) -> anyhow::Result<()> {
        match self {
            Self::ExtractPdf => unreachable!("handled before config"),
        }
    }
}
