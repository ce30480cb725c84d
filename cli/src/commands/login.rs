//! `shoal login [SERVER]` and `shoal logout [SERVER]`, as docker's: the daemon checks the
//! credentials against the registry (with its certificates), and the CLI keeps them in the
//! user's docker config for `service create/update --with-registry-auth`.

use std::io::{IsTerminal, Read};

use anyhow::{bail, Result};
use clap::Args;
use shoal_proto::RegistryAuth;

use crate::client::{Client, RpcResult};
use crate::docker_config;

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Username
    #[arg(short, long)]
    pub username: Option<String>,
    /// Password
    #[arg(short, long)]
    pub password: Option<String>,
    /// Take the password from stdin
    #[arg(long)]
    pub password_stdin: bool,
    /// Registry (host[:port]); Docker Hub when left out
    pub server: Option<String>,
}

#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// Registry (host[:port]); Docker Hub when left out
    pub server: Option<String>,
}

fn password(args: &LoginArgs) -> Result<String> {
    match (&args.password, args.password_stdin) {
        (Some(_), true) => bail!("--password and --password-stdin are mutually exclusive"),
        (Some(p), false) => {
            eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
            Ok(p.clone())
        }
        (None, true) => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text)?;
            Ok(text.trim_end_matches(['\n', '\r']).to_string())
        }
        (None, false) if std::io::stdin().is_terminal() => {
            bail!("give the password with --password-stdin (e.g. `cat pass.txt | shoal login --username USER --password-stdin SERVER`)")
        }
        (None, false) => bail!("no password given: use --password-stdin or --password"),
    }
}

pub async fn login(host: &str, args: LoginArgs) -> Result<()> {
    let Some(username) = args.username.clone().filter(|u| !u.is_empty()) else {
        bail!("a username is required: `shoal login --username USER --password-stdin SERVER`");
    };
    let password = password(&args)?;
    if password.is_empty() {
        bail!("the password is empty");
    }
    let auth = RegistryAuth {
        server: docker_config::server_key(args.server.as_deref()),
        username,
        password,
    };
    let answer = Client::connect(host)
        .await?
        .daemon()
        .registry_login(auth.clone())
        .await
        .or_daemon_error()?;
    docker_config::store(&auth)?;
    println!("{}", answer.status);
    Ok(())
}

pub fn logout(args: LogoutArgs) -> Result<()> {
    let server = docker_config::server_key(args.server.as_deref());
    if docker_config::remove(&server)? {
        println!("Removing login credentials for {server}");
    } else {
        println!("Not logged in to {server}");
    }
    Ok(())
}
