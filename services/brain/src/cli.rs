//! The brain's own subcommands, beside the common ones ([`shared::cli`]).

use std::process::ExitCode;

use clap::Subcommand;
use shared::config::CommonConfig;
use shared::service::Spec;

use crate::Config;

/// Subcommands only the brain has.
#[derive(Debug, Subcommand)]
pub enum Subcommands {
    /// Read a PDF on stdin and print it as Markdown, in JSON (the console's import runs this
    /// in a child process it can kill; not for people).
    #[command(name = "extract-pdf", hide = true)]
    ExtractPdf,
    /// The same for an HTML page.
    #[command(name = "extract-html", hide = true)]
    ExtractHtml,
}

impl shared::service::Commands<Config> for Subcommands {
    /// The converters need no configuration at all.
    fn before_config(self, _: Spec) -> Result<ExitCode, Self> {
        use crate::console::convert::{Kind, child_main};
        Ok(match self {
            Self::ExtractPdf => child_main(Kind::Pdf),
            Self::ExtractHtml => child_main(Kind::Html),
        })
    }

    async fn run(self, _: Spec, _: &CommonConfig, _: &Config) -> anyhow::Result<()> {
        match self {
            Self::ExtractPdf | Self::ExtractHtml => unreachable!("handled before config"),
        }
    }
}
