//! The hidden `generate` subcommand of every tool: shell completions and man pages, made
//! from the tool's clap definition.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// `TOOL generate completions --shell SHELL DIR` / `TOOL generate man DIR`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Generate {
    /// Write the shell completion script for SHELL into DIR.
    Completions {
        #[arg(long, value_enum)]
        shell: clap_complete::Shell,
        /// The directory to write into (created if missing).
        dir: PathBuf,
    },
    /// Write man pages (section 1) into DIR: the tool's and one per subcommand.
    Man {
        /// The directory to write into (created if missing).
        dir: PathBuf,
    },
}

/// Runs `what` for the tool whose clap definition is `cmd`; returns the files written.
pub fn run(mut cmd: clap::Command, what: &Generate) -> anyhow::Result<Vec<PathBuf>> {
    let dir = match what {
        Generate::Completions { dir, .. } | Generate::Man { dir } => dir,
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    match what {
        Generate::Completions { shell, .. } => {
            let name = cmd.get_name().to_string();
            let path = clap_complete::generate_to(*shell, &mut cmd, name, dir)
                .with_context(|| format!("writing completions into {}", dir.display()))?;
            Ok(vec![path])
        }
        Generate::Man { .. } => {
            cmd.build();
            let mut written = Vec::new();
            man_pages(&cmd, cmd.get_name(), dir, &mut written)?;
            Ok(written)
        }
    }
}

fn man_pages(cmd: &clap::Command, name: &str, dir: &Path, written: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    // The page is titled by the full name ("vlmc-create"); a generator runs once, so the
    // leaked name (clap wants a `&'static str`) does not matter.
    let title: &'static str = Box::leak(name.to_string().into_boxed_str());
    let page = cmd.clone().name(title);
    let path = dir.join(format!("{name}.1"));
    let mut out = Vec::new();
    clap_mangen::Man::new(page).render(&mut out).context("rendering a man page")?;
    std::fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        man_pages(sub, &format!("{name}-{}", sub.get_name()), dir, written)?;
    }
    Ok(())
}
