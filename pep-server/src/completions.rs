//! `pep-server completions SHELL` and `pep-server man [--out DIR]`: shell completion scripts and
//! roff man pages generated from the command line's own definition, so they never drift from it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use clap_complete::Shell;

/// The subcommands that document the command line (flattened into the binary's own subcommands).
#[derive(Debug, Subcommand)]
pub(crate) enum DocsCommand {
    /// Print the completion script for SHELL on stdout (see docs/operations.md for where it goes).
    Completions {
        /// The shell.
        #[arg(value_enum, value_name = "SHELL")]
        shell: Shell,
    },
    /// Print the man page (roff) on stdout, or with --out write one page per command into DIR.
    Man {
        /// Write `pep-server.1` and `pep-server-<command>.1` into this existing directory.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

/// Runs `command` for the command line `cli` (the binary's `Cli::command()`); exit 1 with one
/// message on stderr when the output cannot be written.
pub(crate) fn run(command: &DocsCommand, mut cli: clap::Command) -> ExitCode {
    let result = match command {
        DocsCommand::Completions { shell } => {
            let name = cli.get_name().to_owned();
            let mut stdout = std::io::stdout().lock();
            clap_complete::generate(*shell, &mut cli, name, &mut stdout);
            stdout.flush()
        }
        DocsCommand::Man { out: None } => {
            let mut stdout = std::io::stdout().lock();
            clap_mangen::Man::new(cli)
                .render(&mut stdout)
                .and_then(|()| stdout.flush())
        }
        DocsCommand::Man { out: Some(dir) } => write_pages(cli, dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pep-server: cannot write the output: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The main page and one per subcommand, named as `man` expects (`NAME[-SUB].1`).
fn write_pages(cli: clap::Command, dir: &Path) -> std::io::Result<()> {
    if !dir.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("--out {}: not a directory", dir.display()),
        ));
    }
    clap_mangen::generate_to(cli, dir)
}
