//! `shoal image load | ls`.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use shoal_proto::{reference, Empty, Image, ImageChunk};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::client::{Client, RpcResult};
use crate::output::{self, Format, Listing, Row};

/// Chunk size of the upload stream.
const CHUNK: usize = 1024 * 1024;

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Load an image from a tar archive or STDIN
    Load(LoadArgs),
    /// List images
    #[command(visible_alias = "list")]
    Ls(LsArgs),
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Read from tar archive file, instead of STDIN
    #[arg(short, long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// The tar archive, as `-i FILE` (docker takes only `-i`; both work here)
    #[arg(value_name = "FILE", conflicts_with = "input")]
    pub file: Option<PathBuf>,
    /// Suppress the load output
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only show image IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Don't truncate output
    #[arg(long)]
    pub no_trunc: bool,
    /// Format output: table, json, or a Go-style template such as '{{.Repository}}'
    #[arg(long)]
    pub format: Option<String>,
}

pub async fn run(host: &str, command: ImageCommand) -> Result<()> {
    match command {
        ImageCommand::Load(args) => load(host, args).await,
        ImageCommand::Ls(args) => {
            let client = Client::connect(host).await?;
            ls(&client, args).await
        }
    }
}

async fn load(host: &str, mut args: LoadArgs) -> Result<()> {
    if args.input.is_none() {
        args.input = args.file.take();
    }
    // Open the input before dialling the daemon: a typo in the path is the likelier mistake.
    let input: Box<dyn AsyncRead + Send + Unpin> = match &args.input {
        Some(path) => Box::new(
            tokio::fs::File::open(path)
                .await
                .with_context(|| format!("cannot open {}", path.display()))?,
        ),
        None => {
            if std::io::stdin().is_terminal() {
                bail!("requested load from stdin, but stdin is empty: pass `-i FILE` or redirect a tar archive (`shoal image load < image.tar`)");
            }
            Box::new(tokio::io::stdin())
        }
    };
    let source = args
        .input
        .as_ref()
        .map_or_else(|| "stdin".to_string(), |p| p.display().to_string());
    let client = Client::connect(host).await?;

    let (tx, rx) = mpsc::channel::<ImageChunk>(4);
    let mut reader = tokio::spawn(send_chunks(input, tx));
    let mut daemon = client.daemon();
    let upload = daemon.load_image(ReceiverStream::new(rx));
    tokio::pin!(upload);
    let response = tokio::select! {
        response = &mut upload => response,
        read = &mut reader => {
            // On a read error, dropping the upload resets the stream, so the daemon sees an
            // aborted upload rather than a short archive that happens to end cleanly.
            read.map_err(|e| anyhow!("the reader task failed: {e}"))?
                .with_context(|| format!("cannot read the image archive from {source}"))?;
            upload.await
        }
    };
    let response = response.or_daemon_error()?;
    if !args.quiet {
        for name in &response.names {
            println!("{}", loaded_line(name));
        }
    }
    Ok(())
}

async fn send_chunks(
    mut input: Box<dyn AsyncRead + Send + Unpin>,
    tx: mpsc::Sender<ImageChunk>,
) -> std::io::Result<()> {
    loop {
        let mut buf = Vec::with_capacity(CHUNK);
        // Fill whole chunks: reads from a pipe come in much smaller pieces.
        while buf.len() < CHUNK {
            let n = (&mut input)
                .take((CHUNK - buf.len()) as u64)
                .read_to_end(&mut buf)
                .await?;
            if n == 0 {
                break;
            }
        }
        if buf.is_empty() {
            return Ok(());
        }
        let last = buf.len() < CHUNK;
        if tx.send(ImageChunk { data: buf }).await.is_err() {
            // The daemon ended the upload (it answers with why): stop reading.
            return Ok(());
        }
        if last {
            return Ok(());
        }
    }
}

/// "Loaded image: busybox:latest", or docker's "Loaded image ID: sha256:…" for an untagged one.
pub fn loaded_line(name: &str) -> String {
    if name.starts_with("sha256:") {
        return format!("Loaded image ID: {name}");
    }
    match reference::parse_normalized(name) {
        Ok(r) => format!("Loaded image: {}", r.familiar()),
        Err(_) => format!("Loaded image: {name}"),
    }
}

const IMAGE_COLUMNS: &[(&str, &str)] = &[
    ("Repository", "REPOSITORY"),
    ("Tag", "TAG"),
    ("ID", "IMAGE ID"),
    ("CreatedSince", "CREATED"),
    ("Size", "SIZE"),
];

async fn ls(client: &Client, args: LsArgs) -> Result<()> {
    let images = client
        .daemon()
        .list_images(Empty {})
        .await
        .or_daemon_error()?
        .images;
    let listing = image_listing(&images, args.no_trunc, output::now_ms());
    if args.quiet {
        let mut seen = std::collections::HashSet::new();
        for row in &listing.rows {
            if let Some(serde_json::Value::String(id)) = row.fields.get("ID") {
                if seen.insert(id.clone()) {
                    println!("{id}");
                }
            }
        }
        return Ok(());
    }
    print!(
        "{}",
        listing.render(&Format::parse(args.format.as_deref()))?
    );
    Ok(())
}

/// Newest first, as docker lists them.
pub fn image_listing(images: &[Image], no_trunc: bool, now_ms: i64) -> Listing {
    let mut sorted: Vec<&Image> = images.iter().collect();
    sorted.sort_by(|a, b| {
        b.created_at_ms
            .cmp(&a.created_at_ms)
            .then(a.name.cmp(&b.name))
    });
    let rows = sorted
        .into_iter()
        .map(|image| {
            let (repository, tag) = match reference::parse_normalized(&image.name) {
                Ok(r) => (
                    r.familiar_name(),
                    r.tag.clone().unwrap_or_else(|| "<none>".into()),
                ),
                Err(_) => (image.name.clone(), "<none>".into()),
            };
            let hex = image
                .digest
                .strip_prefix("sha256:")
                .unwrap_or(&image.digest);
            let id = if no_trunc {
                image.digest.clone()
            } else {
                hex.chars().take(12).collect()
            };
            let created = if image.created_at_ms > 0 {
                output::ago(image.created_at_ms, now_ms)
            } else {
                "N/A".into()
            };
            let cells = vec![repository, tag, id, created, output::human_size(image.size)];
            let mut fields: serde_json::Map<String, serde_json::Value> = IMAGE_COLUMNS
                .iter()
                .zip(&cells)
                .map(|((k, _), v)| (k.to_string(), v.clone().into()))
                .collect();
            fields.insert("Digest".into(), image.digest.clone().into());
            fields.insert(
                "CreatedAt".into(),
                output::rfc3339(image.created_at_ms).into(),
            );
            Row { cells, fields }
        })
        .collect();
    Listing {
        columns: IMAGE_COLUMNS,
        rows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ls_rows_like_docker() {
        let now = 1_700_000_000_000;
        let images = vec![
            Image {
                name: "docker.io/library/busybox:latest".into(),
                digest: format!("sha256:6fd955f66c23{}", "0".repeat(52)),
                size: 4_261_000,
                created_at_ms: now - 60 * 86_400_000,
            },
            Image {
                name: "localhost:5000/app:1.0".into(),
                digest: format!("sha256:abcdef012345{}", "1".repeat(52)),
                size: 187_300_000,
                created_at_ms: now - 3 * 3_600_000,
            },
        ];
        let out = image_listing(&images, false, now)
            .render(&Format::Table)
            .unwrap();
        assert_eq!(
            out,
            "REPOSITORY           TAG       IMAGE ID       CREATED        SIZE\n\
             localhost:5000/app   1.0       abcdef012345   3 hours ago    187MB\n\
             busybox              latest    6fd955f66c23   2 months ago   4.26MB\n"
        );
    }

    #[test]
    fn loaded_lines() {
        assert_eq!(
            loaded_line("docker.io/library/busybox:latest"),
            "Loaded image: busybox:latest"
        );
        assert_eq!(loaded_line("sha256:abc"), "Loaded image ID: sha256:abc");
    }

    #[tokio::test]
    async fn chunks_are_whole_mebibytes() {
        let data = vec![7u8; CHUNK * 2 + 10];
        let (tx, mut rx) = mpsc::channel(8);
        send_chunks(Box::new(std::io::Cursor::new(data)), tx)
            .await
            .unwrap();
        let mut sizes = Vec::new();
        while let Some(c) = rx.recv().await {
            sizes.push(c.data.len());
        }
        assert_eq!(sizes, vec![CHUNK, CHUNK, 10]);
    }
}
