//! One connection to containerd, and the clients of the services Shoal uses.
//!
//! Every request carries the `shoal` containerd namespace (or the one given), so Shoal's images,
//! snapshots and containers never mix with those of Docker or `ctr` on the same containerd.

use std::path::{Path, PathBuf};

use containerd_client::services::v1::{
    containers_client::ContainersClient, content_client::ContentClient, diff_client::DiffClient,
    events_client::EventsClient, images_client::ImagesClient, leases_client::LeasesClient,
    snapshots::snapshots_client::SnapshotsClient, tasks_client::TasksClient,
    version_client::VersionClient,
};
use tonic::transport::Channel;

/// The containerd namespace Shoal keeps its objects in.
pub const NAMESPACE: &str = "shoal";

#[derive(Debug, thiserror::Error)]
pub enum ContainerdError {
    #[error(
        "cannot reach containerd at {}: {reason}. Is containerd running? Start it \
         (`systemctl start containerd`, or `containerd --address {}`) or pass \
         `--containerd SOCKET` to `shoal daemon`", .address.display(), .address.display()
    )]
    Unreachable { address: PathBuf, reason: String },
}

#[derive(Clone)]
pub struct Containerd {
    channel: Channel,
    namespace: String,
    address: PathBuf,
}

impl Containerd {
    /// Connects and checks that containerd answers (the Version call), so that a wrong socket
    /// is reported here rather than on the first task.
    pub async fn connect(address: &Path, namespace: &str) -> Result<Self, ContainerdError> {
        // The whole cause chain in one line: tonic's own message is only "transport error".
        let unreachable = |source: Box<dyn std::error::Error + Send + Sync>| {
            let mut reason = source.to_string();
            let mut next = source.source();
            while let Some(e) = next {
                let text = e.to_string();
                if !reason.ends_with(&text) {
                    reason = format!("{reason}: {text}");
                }
                next = e.source();
            }
            ContainerdError::Unreachable {
                address: address.to_path_buf(),
                reason,
            }
        };
        let channel = containerd_client::connect(address)
            .await
            .map_err(|e| unreachable(Box::new(e)))?;
        let this = Containerd {
            channel,
            namespace: namespace.to_string(),
            address: address.to_path_buf(),
        };
        this.version().await.map_err(|e| unreachable(Box::new(e)))?;
        Ok(this)
    }

    pub fn address(&self) -> &Path {
        &self.address
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Wraps `msg` in a request that carries this connection's namespace.
    pub fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        if let Ok(value) = self.namespace.parse() {
            req.metadata_mut().insert("containerd-namespace", value);
        }
        req
    }

    pub async fn version(&self) -> Result<String, tonic::Status> {
        let resp = VersionClient::new(self.channel.clone())
            .version(())
            .await?
            .into_inner();
        Ok(resp.version)
    }

    pub fn content(&self) -> ContentClient<Channel> {
        ContentClient::new(self.channel.clone())
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    }

    pub fn images(&self) -> ImagesClient<Channel> {
        ImagesClient::new(self.channel.clone())
    }

    pub fn snapshots(&self) -> SnapshotsClient<Channel> {
        SnapshotsClient::new(self.channel.clone())
    }

    pub fn diff(&self) -> DiffClient<Channel> {
        DiffClient::new(self.channel.clone())
    }

    pub fn containers(&self) -> ContainersClient<Channel> {
        ContainersClient::new(self.channel.clone())
    }

    pub fn tasks(&self) -> TasksClient<Channel> {
        TasksClient::new(self.channel.clone())
    }

    pub fn events(&self) -> EventsClient<Channel> {
        EventsClient::new(self.channel.clone())
    }

    pub fn leases(&self) -> LeasesClient<Channel> {
        LeasesClient::new(self.channel.clone())
    }
}

/// A tonic channel over a unix socket. containerd-client's connector is a plain UDS connector,
/// so Shoal's own local gRPC (CLI → daemon, agent → local dispatcher) uses it too.
pub async fn connect_unix(path: &Path) -> Result<Channel, tonic::transport::Error> {
    containerd_client::connect(path).await
}

/// A call's result with containerd's NotFound turned into `None`: for lookups of what may not
/// exist, and for removals that are done when the thing is already gone.
pub(crate) fn not_found_as_none<T>(
    result: Result<T, tonic::Status>,
) -> Result<Option<T>, tonic::Status> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
        Err(s) => Err(s),
    }
}
