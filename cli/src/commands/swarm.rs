//! `shoal swarm init | join | join-token | leave | update | unlock | unlock-key`.

use anyhow::Result;
use clap::{Args, Subcommand};
use shoal_proto::{
    Empty, JoinTokenRequest, SwarmInitRequest, SwarmJoinRequest, SwarmLeaveRequest,
    SwarmUnlockRequest, UpdateClusterRequest,
};

use shoal_proto::validate::network::default_addr_pool;

use crate::client::{Client, RpcResult};
use crate::commands::flags::Role;

#[derive(Debug, Subcommand)]
pub enum SwarmCommand {
    /// Initialize a swarm
    Init(InitArgs),
    /// Join a swarm as a node and/or manager
    Join(JoinArgs),
    /// Manage join tokens
    JoinToken(JoinTokenArgs),
    /// Leave the swarm
    Leave(LeaveArgs),
    /// Update the swarm's settings
    Update(UpdateArgs),
    /// Unlock swarm
    Unlock,
    /// Manage the unlock key
    UnlockKey(UnlockKeyArgs),
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// Prometheus server that `--autoscale-query` policies are evaluated against
    /// (e.g. http://127.0.0.1:9090; "" removes it)
    #[arg(long, value_name = "URL")]
    pub prometheus_url: Option<String>,
    /// Dispatcher heartbeat period (e.g. 5s): a worker silent for three periods is down
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub dispatcher_heartbeat: Option<std::time::Duration>,
    /// Change manager autolocking setting (true|false)
    #[arg(long, value_name = "true|false", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = parse_autolock)]
    pub autolock: Option<bool>,
}

#[derive(Debug, Args)]
pub struct UnlockKeyArgs {
    /// Only display the key
    #[arg(short, long)]
    pub quiet: bool,
    /// Rotate the unlock key
    #[arg(long)]
    pub rotate: bool,
}

/// `--autolock`'s value, as Docker's boolean flags take it.
fn parse_autolock(value: &str) -> Result<bool, String> {
    match value {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        other => Err(format!(
            "invalid value {other:?} for --autolock: use --autolock=true or --autolock=false"
        )),
    }
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Advertised address (format: <ip|interface>[:port])
    #[arg(long, value_name = "ADDR")]
    pub advertise_addr: Option<String>,
    /// Listen address (format: <ip|interface>[:port])
    #[arg(long, value_name = "ADDR:PORT", default_value = "0.0.0.0:2377")]
    pub listen_addr: String,
    /// Force create a new cluster from current state
    #[arg(long)]
    pub force_new_cluster: bool,
    /// Validity period for node certificates (e.g. 2160h = 90 days)
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub cert_expiry: Option<std::time::Duration>,
    /// Default address pool network subnets are allocated from, in CIDR format (default
    /// 10.0.0.0/8)
    #[arg(long, value_name = "CIDR")]
    pub default_addr_pool: Option<String>,
    /// Default address pool subnet mask length (default 24)
    #[arg(long, value_name = "N", default_value_t = 24)]
    pub default_addr_pool_mask_length: u8,
    /// Enable manager autolocking (requiring an unlock key to start a stopped manager)
    #[arg(long)]
    pub autolock: bool,
    /// Dispatcher heartbeat period (default 5s): a worker silent for three periods is down
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub dispatcher_heartbeat: Option<std::time::Duration>,
}

#[derive(Debug, Args)]
pub struct JoinArgs {
    /// Token for entry into the swarm
    #[arg(long, required = true)]
    pub token: String,
    /// Advertised address (format: <ip|interface>[:port])
    #[arg(long, value_name = "ADDR")]
    pub advertise_addr: Option<String>,
    /// Listen address (format: <ip|interface>[:port])
    #[arg(long, value_name = "ADDR:PORT", default_value = "0.0.0.0:2377")]
    pub listen_addr: String,
    /// A manager of the swarm
    #[arg(value_name = "HOST:PORT")]
    pub remote_addr: String,
}

#[derive(Debug, Args)]
pub struct JoinTokenArgs {
    /// Only display token
    #[arg(short, long)]
    pub quiet: bool,
    /// Rotate join token
    #[arg(long)]
    pub rotate: bool,
    /// Which token: worker or manager
    #[arg(value_enum)]
    pub role: Role,
}

#[derive(Debug, Args)]
pub struct LeaveArgs {
    /// Force this node to leave the swarm, ignoring warnings
    #[arg(short, long)]
    pub force: bool,
}

pub async fn run(host: &str, command: SwarmCommand) -> Result<()> {
    let client = Client::connect(host).await?;
    match command {
        SwarmCommand::Init(args) => init(&client, args).await,
        SwarmCommand::Join(args) => join(&client, args).await,
        SwarmCommand::JoinToken(args) => join_token(&client, args).await,
        SwarmCommand::Leave(args) => {
            client
                .daemon()
                .swarm_leave(SwarmLeaveRequest { force: args.force })
                .await
                .or_daemon_error()?;
            println!("Node left the swarm.");
            Ok(())
        }
        SwarmCommand::Update(args) => {
            let dispatcher_heartbeat_ms =
                args.dispatcher_heartbeat.map(heartbeat_ms).transpose()?;
            client
                .control()
                .update_cluster(UpdateClusterRequest {
                    prometheus_url: args.prometheus_url,
                    autolock: args.autolock,
                    rotate_unlock_key: false,
                    dispatcher_heartbeat_ms,
                })
                .await
                .or_daemon_error()?;
            println!("Swarm updated.");
            if args.autolock == Some(true) {
                let key = client
                    .control()
                    .get_unlock_key(Empty {})
                    .await
                    .or_daemon_error()?;
                print!("{}", unlock_message(&key.unlock_key));
            }
            Ok(())
        }
        SwarmCommand::Unlock => unlock(&client).await,
        SwarmCommand::UnlockKey(args) => unlock_key(&client, args).await,
    }
}

/// Docker's words for where the unlock key goes.
fn unlock_message(key: &str) -> String {
    format!(
        "To unlock a swarm manager after it restarts, run the `shoal swarm unlock`\n\
         command and provide the following key:\n\n    {key}\n\n\
         Please remember to store this key in a password manager, since without it you\n\
         will not be able to restart the manager.\n"
    )
}

/// `swarm unlock`: the key from the terminal (not echoed), or a line of stdin.
async fn unlock(client: &Client) -> Result<()> {
    let key = read_unlock_key()?;
    client
        .daemon()
        .swarm_unlock(SwarmUnlockRequest { unlock_key: key })
        .await
        .or_daemon_error()?;
    Ok(())
}

fn read_unlock_key() -> Result<String> {
    use std::io::{BufRead, IsTerminal, Write};
    let stdin = std::io::stdin();
    let mut line = String::new();
    if stdin.is_terminal() {
        print!("Please enter unlock key: ");
        std::io::stdout().flush()?;
        let _echo_off = EchoOff::new(&stdin);
        stdin.lock().read_line(&mut line)?;
        println!();
    } else {
        stdin.lock().read_line(&mut line)?;
    }
    let key = line.trim().to_string();
    if key.is_empty() {
        anyhow::bail!(
            "no unlock key given: type it, or pipe it in (`shoal swarm unlock-key -q` prints it)"
        );
    }
    Ok(key)
}

/// Turns the terminal's echo off while the key is typed, and back on when dropped.
struct EchoOff(Option<nix::sys::termios::Termios>);

impl EchoOff {
    fn new(stdin: &std::io::Stdin) -> Self {
        use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
        let Ok(saved) = tcgetattr(stdin) else {
            return EchoOff(None);
        };
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        let _ = tcsetattr(stdin, SetArg::TCSANOW, &quiet);
        EchoOff(Some(saved))
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                saved,
            );
        }
    }
}

/// `swarm unlock-key [-q] [--rotate]`.
async fn unlock_key(client: &Client, args: UnlockKeyArgs) -> Result<()> {
    if args.rotate {
        client
            .control()
            .update_cluster(UpdateClusterRequest {
                rotate_unlock_key: true,
                ..Default::default()
            })
            .await
            .or_daemon_error()?;
        if !args.quiet {
            println!("Successfully rotated manager unlock key.\n");
        }
    }
    let key = client
        .control()
        .get_unlock_key(Empty {})
        .await
        .or_daemon_error()?
        .unlock_key;
    if key.is_empty() {
        anyhow::bail!(
            "no unlock key is set: autolock is off (turn it on with `shoal swarm update --autolock=true`)"
        );
    }
    if args.quiet {
        println!("{key}");
        return Ok(());
    }
    print!("{}", unlock_message(&key));
    if args.rotate {
        println!(
            "\nEvery running manager re-encrypts its key files with the new key at once; until \
             it has, the old key still unlocks it."
        );
    }
    Ok(())
}

async fn init(client: &Client, args: InitArgs) -> Result<()> {
    // Checked before dialling, with the words the daemon would use.
    let pool = args.default_addr_pool.unwrap_or_default();
    default_addr_pool(&pool, args.default_addr_pool_mask_length)?;
    let dispatcher_heartbeat_ms = args.dispatcher_heartbeat.map(heartbeat_ms).transpose()?;
    let response = client
        .daemon()
        .swarm_init(SwarmInitRequest {
            advertise_addr: args.advertise_addr.unwrap_or_default(),
            listen_addr: args.listen_addr,
            force_new_cluster: args.force_new_cluster,
            cert_expiry_ms: args
                .cert_expiry
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            default_addr_pool: pool,
            default_addr_pool_mask_len: u32::from(args.default_addr_pool_mask_length),
            autolock: args.autolock,
            dispatcher_heartbeat_ms: dispatcher_heartbeat_ms.unwrap_or(0),
        })
        .await
        .or_daemon_error()?;
    print!(
        "{}",
        init_message(&response.node_id, &response.worker_join_command)
    );
    if !response.unlock_key.is_empty() {
        print!("{}", unlock_message(&response.unlock_key));
    }
    Ok(())
}

/// `--dispatcher-heartbeat` as the API carries it, checked before dialling.
fn heartbeat_ms(d: std::time::Duration) -> Result<u64> {
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    shoal_proto::validate::cluster::dispatcher_heartbeat(ms)?;
    Ok(ms)
}

fn init_message(node_id: &str, join_command: &str) -> String {
    format!(
        "Swarm initialized: current node ({node_id}) is now a manager.\n\n\
         To add a worker to this swarm, run the following command:\n\n    \
         {join_command}\n\n\
         To add a manager to this swarm, run 'shoal swarm join-token manager' and follow the instructions.\n\n"
    )
}

async fn join(client: &Client, args: JoinArgs) -> Result<()> {
    client
        .daemon()
        .swarm_join(SwarmJoinRequest {
            token: args.token,
            remote_addr: args.remote_addr,
            advertise_addr: args.advertise_addr.unwrap_or_default(),
            listen_addr: args.listen_addr,
        })
        .await
        .or_daemon_error()?;
    // The token does not say which role it grants: ask the node what it became.
    match client.daemon().info(Empty {}).await.or_daemon_error() {
        Ok(info) if info.is_manager => println!("This node joined a swarm as a manager."),
        Ok(_) => println!("This node joined a swarm as a worker."),
        Err(_) => println!("This node joined a swarm."),
    }
    Ok(())
}

async fn join_token(client: &Client, args: JoinTokenArgs) -> Result<()> {
    let role = args.role.as_str();
    let response = client
        .control()
        .get_join_token(JoinTokenRequest {
            role: role.to_string(),
            rotate: args.rotate,
        })
        .await
        .or_daemon_error()?;
    if args.quiet {
        println!("{}", response.token);
        return Ok(());
    }
    if args.rotate {
        println!("Successfully rotated {role} join token.\n");
    }
    println!(
        "To add a {role} to this swarm, run the following command:\n\n    {}\n",
        response.join_command
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_message_matches_docker() {
        let msg = init_message("abc", "shoal swarm join --token T 10.0.0.1:2377");
        assert_eq!(
            msg,
            "Swarm initialized: current node (abc) is now a manager.\n\n\
             To add a worker to this swarm, run the following command:\n\n    \
             shoal swarm join --token T 10.0.0.1:2377\n\n\
             To add a manager to this swarm, run 'shoal swarm join-token manager' and follow the instructions.\n\n"
        );
    }

    #[test]
    fn autolock_values_are_true_or_false() {
        assert_eq!(parse_autolock("true"), Ok(true));
        assert_eq!(parse_autolock("false"), Ok(false));
        let err = parse_autolock("maybe").expect_err("maybe");
        assert!(
            err.contains("use --autolock=true or --autolock=false"),
            "{err}"
        );
    }

    #[test]
    fn unlock_message_matches_docker() {
        assert_eq!(
            unlock_message("SWMKEY-1-k"),
            "To unlock a swarm manager after it restarts, run the `shoal swarm unlock`\n\
             command and provide the following key:\n\n    SWMKEY-1-k\n\n\
             Please remember to store this key in a password manager, since without it you\n\
             will not be able to restart the manager.\n"
        );
    }
}
