//! `pep-cli completions SHELL` and `pep-cli man [--out DIR]`: shell completion scripts and roff
//! man pages generated from the command line's own definition, so they never drift from it.
//! Neither needs the server nor a token.

use std::io::Write;
use std::path::PathBuf;

use clap::{CommandFactory, Subcommand};
use clap_complete::Shell;

use crate::cli::Cli;
use crate::error::CliError;

/// The subcommands that document the command line (flattened into [`crate::cli::Command`]).
#[derive(Debug, Subcommand)]
pub enum DocsCommand {
    /// Print the completion script for SHELL on stdout (see docs/operations.md for where it goes).
    Completions {
        /// The shell.
        #[arg(value_enum, value_name = "SHELL")]
        shell: Shell,
    },
    /// Print the man page (roff) on stdout, or with --out write one page per command into DIR.
    Man {
        /// Write `pep-cli.1` and `pep-cli-<command>.1` into this existing directory.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

/// Writes what `command` asks for.
pub fn run(command: &DocsCommand) -> Result<(), CliError> {
    let mut cli = Cli::command();
    match command {
        DocsCommand::Completions { shell } => {
            let mut stdout = std::io::stdout().lock();
            clap_complete::generate(*shell, &mut cli, "pep-cli", &mut stdout);
            stdout
                .flush()
                .map_err(|e| CliError::io("cannot write the completion script", e))
        }
        DocsCommand::Man { out: None } => {
            let mut stdout = std::io::stdout().lock();
            clap_mangen::Man::new(cli)
                .render(&mut stdout)
                .and_then(|()| stdout.flush())
                .map_err(|e| CliError::io("cannot write the man page", e))
        }
        DocsCommand::Man { out: Some(dir) } => {
            if !dir.is_dir() {
                return Err(CliError::Usage(format!(
                    "--out {}: not a directory",
                    dir.display()
                )));
            }
            clap_mangen::generate_to(cli, dir).map_err(|e| {
                CliError::io(
                    format!("cannot write the man pages to {}", dir.display()),
                    e,
                )
            })
        }
    }
}
