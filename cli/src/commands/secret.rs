//! `shoal secret create | ls | inspect | rm` and `shoal config …`, as docker's: the two groups
//! have the same shape, so one set of commands serves both, told apart by [`Kind`]. A secret's
//! data goes to the daemon once, at `create`; nothing the daemon answers carries it back
//! (`config inspect` shows a config's data, base64, as docker's does).

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use shoal_proto::validate::secrets::{self as checks, Kind};
use shoal_proto::{
    Config, ConfigRef, ConfigSpec, CreateConfigRequest, CreateSecretRequest, Empty, Meta, Secret,
    SecretRef, SecretSpec,
};

use crate::client::{Client, RpcResult};
use crate::commands::flags::parse_label;
use crate::commands::{each, print_inspected, remove_each, report_each};
use crate::output::{self, Format, Listing, Row};

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Create one from a file or STDIN (`-`) as content
    Create(CreateArgs),
    /// List them
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Display detailed information on one or more (never a secret's data)
    Inspect(InspectArgs),
    /// Remove one or more (refused while a service uses it)
    #[command(visible_alias = "remove")]
    Rm(RmArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Labels
    #[arg(short, long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub label: Vec<(String, String)>,
    /// Name
    pub name: String,
    /// File to read the content from, or `-` for STDIN
    #[arg(value_name = "FILE|-")]
    pub file: String,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only display IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Format output: table, json, or a Go-style template such as '{{.Name}}'
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Format output using a Go-style template
    #[arg(short, long)]
    pub format: Option<String>,
    /// Print the information in a human friendly format
    #[arg(long)]
    pub pretty: bool,
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
}

/// A secret or a config as the commands print it.
struct Object {
    id: String,
    meta: Meta,
    name: String,
    labels: HashMap<String, String>,
    /// A config's data; a secret's is never answered.
    data: Option<Vec<u8>>,
}

impl From<Secret> for Object {
    fn from(s: Secret) -> Self {
        let spec = s.spec.unwrap_or_default();
        Object {
            id: s.id,
            meta: s.meta.unwrap_or_default(),
            name: spec.name,
            labels: spec.labels,
            data: None,
        }
    }
}

impl From<Config> for Object {
    fn from(c: Config) -> Self {
        let spec = c.spec.unwrap_or_default();
        Object {
            id: c.id,
            meta: c.meta.unwrap_or_default(),
            name: spec.name,
            labels: spec.labels,
            data: Some(spec.data),
        }
    }
}

pub async fn run(host: &str, kind: Kind, command: SecretCommand) -> Result<()> {
    // What can be refused without the daemon is refused before dialling it.
    let create = match &command {
        SecretCommand::Create(args) => Some(read_create(kind, args)?),
        _ => None,
    };
    let client = Client::connect(host).await?;
    match command {
        SecretCommand::Create(_) => {
            let (name, labels, data) = create.unwrap_or_default();
            let id = match kind {
                Kind::Secret => {
                    let spec = SecretSpec { name, labels, data };
                    let req = CreateSecretRequest { spec: Some(spec) };
                    client
                        .control()
                        .create_secret(req)
                        .await
                        .or_daemon_error()?
                        .id
                }
                Kind::Config => {
                    let spec = ConfigSpec { name, labels, data };
                    let req = CreateConfigRequest { spec: Some(spec) };
                    client
                        .control()
                        .create_config(req)
                        .await
                        .or_daemon_error()?
                        .id
                }
            };
            println!("{id}");
            Ok(())
        }
        SecretCommand::Ls(args) => {
            let objects = list(&client, kind).await?;
            if args.quiet {
                objects.iter().for_each(|o| println!("{}", o.id));
                return Ok(());
            }
            let listing = listing(kind, &objects, output::now_ms());
            print!(
                "{}",
                listing.render(&Format::parse(args.format.as_deref()))?
            );
            Ok(())
        }
        SecretCommand::Inspect(args) => {
            let (found, errors) = each(&args.names, |name| get(&client, kind, name.clone())).await;
            if let Some(template) = &args.format {
                for o in &found {
                    println!("{}", output::render_object(template, &inspect_json(o))?);
                }
                return report_each(&errors);
            }
            let pretty = args.pretty.then_some(pretty as fn(&Object) -> String);
            print_inspected(&found, &errors, pretty, |o| Ok(inspect_json(o)))
        }
        SecretCommand::Rm(args) => {
            remove_each(&args.names, |name| {
                let mut control = client.control();
                async move {
                    match kind {
                        Kind::Secret => {
                            let req = SecretRef {
                                secret: name.clone(),
                            };
                            control.remove_secret(req).await.or_daemon_error()?;
                        }
                        Kind::Config => {
                            let req = ConfigRef {
                                config: name.clone(),
                            };
                            control.remove_config(req).await.or_daemon_error()?;
                        }
                    }
                    Ok(())
                }
            })
            .await
        }
    }
}

type CreateParts = (String, HashMap<String, String>, Vec<u8>);

/// The name, labels and content of `create`, checked as the daemon will check them.
fn read_create(kind: Kind, args: &CreateArgs) -> Result<CreateParts> {
    let data = if args.file == "-" {
        let mut data = Vec::new();
        std::io::stdin()
            .read_to_end(&mut data)
            .context("error reading content from STDIN")?;
        data
    } else {
        std::fs::read(Path::new(&args.file))
            .with_context(|| format!("error reading content from {:?}", args.file))?
    };
    let labels: HashMap<String, String> = args.label.iter().cloned().collect();
    checks::object(kind, &args.name, &labels, &data)?;
    Ok((args.name.clone(), labels, data))
}

async fn list(client: &Client, kind: Kind) -> Result<Vec<Object>> {
    let mut control = client.control();
    Ok(match kind {
        Kind::Secret => {
            let all = control.list_secrets(Empty {}).await.or_daemon_error()?;
            all.secrets.into_iter().map(Object::from).collect()
        }
        Kind::Config => {
            let all = control.list_configs(Empty {}).await.or_daemon_error()?;
            all.configs.into_iter().map(Object::from).collect()
        }
    })
}

async fn get(client: &Client, kind: Kind, key: String) -> Result<Object> {
    let mut control = client.control();
    Ok(match kind {
        Kind::Secret => {
            let req = SecretRef { secret: key };
            control.get_secret(req).await.or_daemon_error()?.into()
        }
        Kind::Config => {
            let req = ConfigRef { config: key };
            control.get_config(req).await.or_daemon_error()?.into()
        }
    })
}

const SECRET_COLUMNS: &[(&str, &str)] = &[
    ("ID", "ID"),
    ("Name", "NAME"),
    ("Driver", "DRIVER"),
    ("CreatedAt", "CREATED"),
    ("UpdatedAt", "UPDATED"),
];
const CONFIG_COLUMNS: &[(&str, &str)] = &[
    ("ID", "ID"),
    ("Name", "NAME"),
    ("CreatedAt", "CREATED"),
    ("UpdatedAt", "UPDATED"),
];

/// Docker's `secret ls` / `config ls` table (a secret's has an empty DRIVER column).
fn listing(kind: Kind, objects: &[Object], now_ms: i64) -> Listing {
    let columns = match kind {
        Kind::Secret => SECRET_COLUMNS,
        Kind::Config => CONFIG_COLUMNS,
    };
    let rows = objects
        .iter()
        .map(|o| {
            let mut values = vec![o.id.clone(), o.name.clone()];
            if kind == Kind::Secret {
                values.push(String::new());
            }
            values.push(output::ago(o.meta.created_at_ms, now_ms));
            values.push(output::ago(o.meta.updated_at_ms, now_ms));
            let fields = columns
                .iter()
                .zip(&values)
                .map(|((k, _), v)| (k.to_string(), Value::from(v.clone())))
                .chain([("Labels".to_string(), json!(o.labels))])
                .collect();
            Row {
                cells: values,
                fields,
            }
        })
        .collect();
    Listing { columns, rows }
}

/// Docker's `inspect` shape: ID, version, times and the spec (a config's data in base64).
fn inspect_json(o: &Object) -> Value {
    let mut spec = json!({ "Name": o.name, "Labels": o.labels });
    if let Some(data) = &o.data {
        spec["Data"] = Value::from(base64(data));
    }
    json!({
        "ID": o.id,
        "Version": { "Index": o.meta.version },
        "CreatedAt": output::rfc3339(o.meta.created_at_ms),
        "UpdatedAt": output::rfc3339(o.meta.updated_at_ms),
        "Spec": spec,
    })
}

/// `inspect --pretty`: docker's block (a config's data as text).
fn pretty(o: &Object) -> String {
    let mut p = output::Pretty::default();
    p.field(0, "ID", o.id.clone());
    p.field(0, "Name", o.name.clone());
    p.labels(0, &o.labels);
    p.field(0, "Created at", output::rfc3339(o.meta.created_at_ms));
    p.field(0, "Updated at", output::rfc3339(o.meta.updated_at_ms));
    let mut out = p.render();
    if let Some(data) = &o.data {
        out.push_str("Data:\n");
        out.push_str(&String::from_utf8_lossy(data));
        out.push('\n');
    }
    out
}

/// Standard base64 with padding (what Go's JSON encoding gives `[]byte`).
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_as_go_encodes_bytes() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar\n"), "Zm9vYmFyCg==");
    }

    #[test]
    fn listings_and_inspect_look_like_dockers() {
        let secret = Object::from(Secret {
            id: "ziu1vd6dg1yj2ewcrcmpmecfz".into(),
            meta: Some(Meta {
                version: 11,
                created_at_ms: 1_000,
                updated_at_ms: 1_000,
            }),
            spec: Some(SecretSpec {
                name: "db_pass".into(),
                ..Default::default()
            }),
        });
        let table = listing(Kind::Secret, std::slice::from_ref(&secret), 61_000)
            .render(&Format::Table)
            .expect("render");
        let header = table.lines().next().unwrap_or_default();
        let words: Vec<&str> = header.split_whitespace().collect();
        assert_eq!(words, ["ID", "NAME", "DRIVER", "CREATED", "UPDATED"]);
        assert!(
            table.contains("db_pass") && table.contains("About a minute ago"),
            "{table}"
        );
        let v = inspect_json(&secret);
        assert_eq!(v["Spec"]["Name"], "db_pass");
        assert!(v["Spec"].get("Data").is_none(), "{v}");
        let config = Object::from(Config {
            spec: Some(ConfigSpec {
                name: "app.conf".into(),
                data: b"foo".to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(inspect_json(&config)["Spec"]["Data"], "Zm9v");
    }
}
