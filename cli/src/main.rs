//! `shoal`: the client CLI (docker's command shapes) and, as `shoal daemon`, the daemon.

mod client;
mod commands;
mod daemon;
mod docker_config;
mod output;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::client::DEFAULT_HOST;
use crate::commands::{
    image, info, login, network, node, secret, service, swarm, volume, AlreadyReported,
};
use shoal_proto::validate::secrets::Kind;

/// The daemon's runtime has at least this many worker threads, whatever the core count.
/// Role rounds read the whole store without yielding (a long stretch at 100,000 tasks); with
/// one worker per core, two of them at once left no worker for the sessions and the Raft
/// server's connections on a two-core machine. Spare workers let the kernel share the cores
/// between them instead.
const MIN_DAEMON_WORKERS: usize = 4;

/// Shoal: a container orchestrator in the manner of Docker Swarm
#[derive(Debug, Parser)]
#[command(name = "shoal", version, disable_version_flag = true)]
struct Cli {
    /// Daemon socket to connect to
    #[arg(
        short = 'H',
        long,
        env = "SHOAL_HOST",
        value_name = "unix:///PATH",
        default_value = DEFAULT_HOST
    )]
    host: String,
    /// Print version information and quit
    #[arg(short = 'v', long, action = clap::ArgAction::Version)]
    version: Option<bool>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the Shoal daemon
    Daemon(daemon::DaemonArgs),
    /// Display system-wide information
    Info(info::InfoArgs),
    /// Show the Shoal version information
    Version(info::VersionArgs),
    /// Manage the swarm
    #[command(subcommand)]
    Swarm(swarm::SwarmCommand),
    /// Manage swarm nodes
    #[command(subcommand)]
    Node(node::NodeCommand),
    /// Manage swarm services
    #[command(subcommand)]
    Service(service::ServiceCommand),
    /// Manage images
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Manage networks
    #[command(subcommand)]
    Network(network::NetworkCommand),
    /// Manage this node's volumes
    #[command(subcommand)]
    Volume(volume::VolumeCommand),
    /// Manage swarm secrets
    #[command(subcommand)]
    Secret(secret::SecretCommand),
    /// Manage swarm configs
    #[command(subcommand)]
    Config(secret::SecretCommand),
    /// Log in to a registry
    Login(login::LoginArgs),
    /// Log out from a registry
    Logout(login::LogoutArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Docker's rule: an empty SHOAL_HOST is the same as none.
    let host = if cli.host.is_empty() {
        DEFAULT_HOST.to_string()
    } else {
        cli.host
    };
    match cli.command {
        Command::Daemon(args) => {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(cores.max(MIN_DAEMON_WORKERS))
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(daemon::run(&host, args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("shoal daemon: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Info(args) => run_client(info::info(&host, args)),
        Command::Version(args) => run_client(info::version(&host, args)),
        Command::Swarm(c) => run_client(swarm::run(&host, c)),
        Command::Node(c) => run_client(node::run(&host, c)),
        Command::Service(c) => run_client(service::run(&host, c)),
        Command::Image(c) => run_client(image::run(&host, c)),
        Command::Network(c) => run_client(network::run(&host, c)),
        Command::Volume(c) => run_client(volume::run(&host, c)),
        Command::Secret(c) => run_client(secret::run(&host, Kind::Secret, c)),
        Command::Config(c) => run_client(secret::run(&host, Kind::Config, c)),
        Command::Login(args) => run_client(login::login(&host, args)),
        Command::Logout(args) => run_client(async move { login::logout(args) }),
    }
}

/// Runs a client command on a single-threaded runtime: it only waits on the daemon.
fn run_client(command: impl std::future::Future<Output = Result<()>>) -> ExitCode {
    // A client printing into `| head` should end quietly, as other Unix tools do, not fail on
    // EPIPE. The daemon keeps Rust's ignored SIGPIPE.
    // SAFETY: resetting a signal disposition before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(&e),
    }
}

/// Prints a failed command's error (docker style: the message alone) and picks the exit status.
fn report(err: &anyhow::Error) -> ExitCode {
    if err.downcast_ref::<AlreadyReported>().is_none() {
        eprintln!("{err:#}");
    }
    ExitCode::FAILURE
}
