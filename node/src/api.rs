//! The `Daemon` gRPC service: node-local requests (info, swarm init/leave, images), answered
//! whether or not the node is in a swarm.

use std::io::Write;
use std::sync::Arc;

use futures::StreamExt;
use shoal_manager::allocator::PoolConfig;
use shoal_proto::validate::network::default_addr_pool;
use shoal_proto::{
    daemon_server, CreateVolumeRequest, Empty, ImageChunk, InfoResponse, ListImagesResponse,
    ListVolumesResponse, LoadImageResponse, NodeRole, RegistryAuth, RegistryLoginResponse,
    RemoveVolumeRequest, SwarmInitRequest, SwarmInitResponse, SwarmJoinRequest, SwarmLeaveRequest,
    SwarmUnlockRequest, TaskState, Volume, VolumeRef,
};
use shoal_worker::image::LoginError;
use tonic::{Request, Response, Status, Streaming};

use super::{swarm, volumes, Daemon};

pub struct DaemonApi {
    daemon: Arc<Daemon>,
}

impl DaemonApi {
    pub fn new(daemon: Arc<Daemon>) -> Self {
        DaemonApi { daemon }
    }
}

#[tonic::async_trait]
impl daemon_server::Daemon for DaemonApi {
    async fn info(&self, _: Request<Empty>) -> Result<Response<InfoResponse>, Status> {
        let d = &self.daemon;
        let state = d.swarm.lock().await;
        let mut info = InfoResponse {
            node_id: state.identity.node_id.clone(),
            swarm_state: if d.locked.is_locked() {
                "locked"
            } else if state.identity.swarm.is_some() {
                "active"
            } else {
                "inactive"
            }
            .into(),
            is_manager: state.identity.swarm.as_ref().is_some_and(|m| m.manager),
            node_addr: state
                .identity
                .swarm
                .as_ref()
                .map(|m| m.advertise_addr.clone())
                .unwrap_or_default(),
            containerd_version: d.containerd.version().await.unwrap_or_default(),
            containerd_address: d.args.containerd.display().to_string(),
            data_dir: d.args.data_dir.display().to_string(),
            hostname: nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_default(),
            shoal_version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        };
        if let Some(m) = state.manager() {
            let status = m.raft().status();
            info.raft_applied_index = status.applied;
            info.raft_term = status.term;
            m.store().view(|st| {
                info.cluster_id = st
                    .cluster
                    .as_ref()
                    .map(|c| c.id.clone())
                    .unwrap_or_default();
                info.nodes = st.nodes.len() as u32;
                let managers: Vec<_> = st
                    .nodes
                    .values()
                    .filter(|n| n.role == NodeRole::Manager as i32)
                    .collect();
                info.managers = managers.len() as u32;
                info.manager_addrs = managers.iter().map(|n| n.addr.clone()).collect();
                info.services = st.services.len() as u32;
                info.tasks_running = st
                    .tasks
                    .values()
                    .filter(|t| t.state() == TaskState::Running)
                    .count() as u32;
            });
        }
        Ok(Response::new(info))
    }

    async fn swarm_init(
        &self,
        request: Request<SwarmInitRequest>,
    ) -> Result<Response<SwarmInitResponse>, Status> {
        let req = request.into_inner();
        let expiry = match req.cert_expiry_ms {
            0 => shoal_tls::DEFAULT_CERT_EXPIRY,
            ms => std::time::Duration::from_millis(ms),
        };
        if req.dispatcher_heartbeat_ms != 0 {
            shoal_proto::validate::cluster::dispatcher_heartbeat(req.dispatcher_heartbeat_ms)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
        }
        let out = swarm::init(
            &self.daemon,
            &req.advertise_addr,
            &req.listen_addr,
            shoal_manager::roles::InitSettings {
                cert_expiry: expiry,
                addr_pool: addr_pool(&req.default_addr_pool, req.default_addr_pool_mask_len)?,
                dispatcher_heartbeat_ms: req.dispatcher_heartbeat_ms,
                // `swarm::init` makes the key when `--autolock` asks for one.
                unlock_key: None,
            },
            req.force_new_cluster,
            req.autolock,
        )
        .await?;
        Ok(Response::new(SwarmInitResponse {
            node_id: out.node_id,
            worker_join_command: out.join_command,
            unlock_key: out.unlock_key,
        }))
    }

    async fn swarm_unlock(
        &self,
        request: Request<SwarmUnlockRequest>,
    ) -> Result<Response<Empty>, Status> {
        swarm::unlock(&self.daemon, &request.into_inner().unlock_key).await?;
        Ok(Response::new(Empty {}))
    }

    async fn swarm_leave(
        &self,
        request: Request<SwarmLeaveRequest>,
    ) -> Result<Response<Empty>, Status> {
        swarm::leave(&self.daemon, request.into_inner().force).await?;
        Ok(Response::new(Empty {}))
    }

    async fn swarm_join(
        &self,
        request: Request<SwarmJoinRequest>,
    ) -> Result<Response<Empty>, Status> {
        swarm::join(&self.daemon, request.into_inner()).await?;
        Ok(Response::new(Empty {}))
    }

    async fn load_image(
        &self,
        request: Request<Streaming<ImageChunk>>,
    ) -> Result<Response<LoadImageResponse>, Status> {
        let mut stream = request.into_inner();
        // The archive is spooled to disk: image archives can be far larger than memory allows.
        let dir = self.daemon.args.data_dir.join("tmp");
        std::fs::create_dir_all(&dir)
            .map_err(|e| Status::internal(format!("cannot create {}: {e}", dir.display())))?;
        let mut file = tempfile::NamedTempFile::new_in(&dir).map_err(|e| {
            Status::internal(format!("cannot create a file in {}: {e}", dir.display()))
        })?;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            file.write_all(&chunk.data)
                .map_err(|e| Status::internal(format!("cannot spool the image archive: {e}")))?;
        }
        file.flush()
            .map_err(|e| Status::internal(format!("cannot spool the image archive: {e}")))?;
        let names = shoal_worker::image::load_archive(&self.daemon.containerd, file.path())
            .await
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(LoadImageResponse { names }))
    }

    async fn create_volume(
        &self,
        req: Request<CreateVolumeRequest>,
    ) -> Result<Response<Volume>, Status> {
        let req = req.into_inner();
        volumes::create(&self.daemon, &req.name, &req.labels).map(Response::new)
    }

    async fn list_volumes(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<ListVolumesResponse>, Status> {
        let volumes = volumes::list(&self.daemon)?;
        Ok(Response::new(ListVolumesResponse { volumes }))
    }

    async fn inspect_volume(&self, req: Request<VolumeRef>) -> Result<Response<Volume>, Status> {
        volumes::inspect(&self.daemon, &req.into_inner().name).map(Response::new)
    }

    async fn remove_volume(
        &self,
        req: Request<RemoveVolumeRequest>,
    ) -> Result<Response<Empty>, Status> {
        let req = req.into_inner();
        volumes::remove(&self.daemon, &req.name, req.force).await?;
        Ok(Response::new(Empty {}))
    }

    async fn registry_login(
        &self,
        req: Request<RegistryAuth>,
    ) -> Result<Response<RegistryLoginResponse>, Status> {
        let auth = req.into_inner();
        let tls = self.daemon.executor.registry_tls();
        match shoal_worker::image::login(&auth, tls).await {
            Ok(()) => Ok(Response::new(RegistryLoginResponse {
                status: "Login Succeeded".into(),
            })),
            Err(e @ LoginError::Unauthorized { .. }) => Err(Status::unauthenticated(e.to_string())),
            Err(e) => Err(Status::unavailable(e.to_string())),
        }
    }

    async fn list_images(&self, _: Request<Empty>) -> Result<Response<ListImagesResponse>, Status> {
        let images = shoal_worker::image::list_images(&self.daemon.containerd)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(ListImagesResponse {
            images: images
                .into_iter()
                .map(|i| shoal_proto::Image {
                    name: i.name,
                    digest: i.digest,
                    size: i.size,
                    created_at_ms: i.created_at_ms,
                })
                .collect(),
        }))
    }
}

/// `--default-addr-pool` and `--default-addr-pool-mask-length` as `swarm init` got them: the
/// mask applies to docker's 10.0.0.0/8 when no pool is given.
fn addr_pool(pool: &str, mask_len: u32) -> Result<PoolConfig, Status> {
    let mask_len = u8::try_from(mask_len).unwrap_or(u8::MAX);
    default_addr_pool(pool, mask_len)
        .and_then(|(base, len)| PoolConfig::new(base, len))
        .map_err(|e| Status::invalid_argument(e.to_string()))
}
