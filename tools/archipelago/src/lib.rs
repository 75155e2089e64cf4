//! `archipelago`: the host service manager. It starts this host's peers (blocker,
//! mapperd, vlmcd) on the segment named by the configuration, stops them, and reports on
//! them. The configuration format, the role/port plan and the "in use" rule are in
//! `archip-config`'s documentation.
//!
//! Behaviour worth knowing:
//! * `start` creates the segment if absent, then launches each missing peer with
//!   `--daemonize --pidfile --log-file` and waits for its ready report; a peer that fails
//!   is reported with its own error, and what this `start` launched is stopped again (and
//!   the segment it created removed). `start` while everything runs says so, changes
//!   nothing, and exits **0** (it is idempotent, so scripts may call it unconditionally).
//! * `stop` refuses (exit 1) while the stack is in use, unless `-f`; sends SIGTERM in
//!   reverse order and waits for each peer (its drain time + 5 s, then SIGKILL with a
//!   warning); a peer already dead is named and its pidfile removed; stopping every role
//!   removes the segment. Nothing running: a message and exit 0.
//! * `restart` stops and starts without the in-use check and keeps the segment, so
//!   clients ride over the restart (their ports and mappings survive).
//! * `status` exits 0 when every peer runs, 3 otherwise.
//! * start, stop and restart of one host stack are serialized by `<home>/run/archipelago.lock`.

pub mod cli;
pub mod stack;

use std::process::ExitCode;

use cli::{Cli, Command, Role};

/// Runs the parsed command; returns the exit code for success-ish outcomes (0, or 3 for a
/// stack that is not running), an error for failures (exit 1).
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::Generate(what) = &cli.command {
        for path in archip_config::generate::run(<Cli as clap::CommandFactory>::command(), what)? {
            println!("{}", path.display());
        }
        return Ok(ExitCode::SUCCESS);
    }
    if let Command::Config { default: true } = &cli.command {
        print!("{}", archip_config::embedded_default().to_toml());
        return Ok(ExitCode::SUCCESS);
    }
    let cfg = archip_config::load(cli.config.as_deref())?;
    let roles = |role: &Option<Role>| role.map_or(Role::ALL.to_vec(), |r| vec![r]);
    match &cli.command {
        Command::Start { role } => stack::start(&cfg, &roles(role))?,
        Command::Stop { force, role } => stack::stop(&cfg, &roles(role), *force, true)?,
        Command::Restart { role } => stack::restart(&cfg, &roles(role))?,
        Command::Status { json } => {
            let status = stack::status(&cfg);
            if *json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                stack::print_status(&status);
            }
            return Ok(if status.running { ExitCode::SUCCESS } else { ExitCode::from(3) });
        }
        Command::Config { .. } => {
            println!("# effective configuration, from {}", cfg.source);
            print!("{}", cfg.to_toml());
        }
        Command::Generate(_) => unreachable!("handled above"),
    }
    Ok(ExitCode::SUCCESS)
}
