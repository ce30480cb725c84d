//! The content store and leases, as image operations use them: blobs written in streaming
//! form and verified by digest, small documents read back, GC labels set, all under one lease.
//!
//! containerd's garbage collector removes content and snapshots nothing refers to. While an
//! image is half written nothing does yet, so every write happens under a lease (a GC root
//! that expires on its own if Shoal dies mid-way); once the image record and the GC labels
//! link everything, the lease is dropped.

use std::collections::BTreeMap;

use containerd_client::services::v1::{
    AbortRequest, CreateRequest, DeleteRequest, Info, InfoRequest, ReadContentRequest,
    UpdateRequest, WriteAction, WriteContentRequest, WriteContentResponse,
};
use containerd_client::services::v1::{AddResourceRequest, Resource};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use super::media::MAX_DOCUMENT;
use super::ImageError;
use crate::containerd::{not_found_as_none, Containerd};

/// The gRPC metadata key containerd reads the lease of a request from.
const LEASE_HEADER: &str = "containerd-lease";
/// containerd's lease label: the lease stops protecting anything after this time.
const LEASE_EXPIRE_LABEL: &str = "containerd.io/gc.expire";
/// A lease outlives any sane pull or load; it only matters when Shoal dies mid-way.
const LEASE_LIFETIME_HOURS: i64 = 24;
/// Data goes to containerd in messages of this size (its limit is 16 MiB).
const WRITE_CHUNK: usize = 1 << 20;

/// A connection to containerd's content store, optionally under a lease.
pub(crate) struct Store<'a> {
    pub(crate) cd: &'a Containerd,
    lease: Option<String>,
}

impl<'a> Store<'a> {
    /// Reads only: no lease.
    pub(crate) fn read_only(cd: &'a Containerd) -> Self {
        Store { cd, lease: None }
    }

    /// Creates a lease that everything written through the returned store belongs to.
    /// Call [`Store::release`] when the image is complete (or has failed).
    pub(crate) async fn leased(cd: &'a Containerd) -> Result<Store<'a>, ImageError> {
        let id = format!("shoal-image-{:016x}", rand::random::<u64>());
        let expire = chrono::Utc::now() + chrono::Duration::hours(LEASE_LIFETIME_HOURS);
        let mut labels = std::collections::HashMap::new();
        labels.insert(
            LEASE_EXPIRE_LABEL.to_string(),
            expire.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        );
        cd.leases()
            .create(cd.request(CreateRequest {
                id: id.clone(),
                labels,
            }))
            .await
            .map_err(|s| ImageError::containerd("creating a lease", s))?;
        tracing::debug!(lease = %id, "lease created");
        Ok(Store {
            cd,
            lease: Some(id),
        })
    }

    /// Deletes the lease; what the image records and labels do not reach becomes garbage.
    pub(crate) async fn release(self) {
        let Some(id) = self.lease else { return };
        let result = self
            .cd
            .leases()
            .delete(self.cd.request(DeleteRequest {
                id: id.clone(),
                sync: false,
            }))
            .await;
        if let Err(status) = result {
            // The lease expires by itself; nothing is lost but some disk space for a while.
            tracing::warn!(lease = %id, error = %status, "could not delete lease");
        }
    }

    /// A request carrying the namespace and, if any, the lease.
    pub(crate) fn req<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = self.cd.request(msg);
        if let Some(lease) = &self.lease {
            if let Ok(value) = lease.parse() {
                req.metadata_mut().insert(LEASE_HEADER, value);
            }
        }
        req
    }

    /// Puts an existing object under this store's lease, so GC cannot take it between now and
    /// the moment the image record refers to it. `kind` is "content" or "snapshots/NAME".
    pub(crate) async fn hold(&self, kind: &str, id: &str) -> Result<(), ImageError> {
        let Some(lease) = &self.lease else {
            return Ok(());
        };
        self.cd
            .leases()
            .add_resource(self.cd.request(AddResourceRequest {
                id: lease.clone(),
                resource: Some(Resource {
                    id: id.to_string(),
                    r#type: kind.to_string(),
                }),
            }))
            .await
            .map_err(|s| ImageError::containerd("adding content to the lease", s))?;
        Ok(())
    }

    pub(crate) async fn info(&self, digest: &str) -> Result<Option<Info>, ImageError> {
        let got = self
            .cd
            .content()
            .info(self.req(InfoRequest {
                digest: digest.to_string(),
            }))
            .await;
        let found = not_found_as_none(got)
            .map_err(|s| ImageError::containerd("reading content info", s))?;
        Ok(found.and_then(|resp| resp.into_inner().info))
    }

    /// Whether the blob is present; if it is, it is also put under the lease.
    pub(crate) async fn has(&self, digest: &str) -> Result<bool, ImageError> {
        if self.info(digest).await?.is_none() {
            return Ok(false);
        }
        self.hold("content", digest).await?;
        Ok(true)
    }

    /// Reads a whole (small) blob: an index, manifest or config.
    pub(crate) async fn read(&self, digest: &str) -> Result<Vec<u8>, ImageError> {
        let opened = self
            .cd
            .content()
            .read(self.req(ReadContentRequest {
                digest: digest.to_string(),
                offset: 0,
                size: 0,
            }))
            .await;
        let mut stream = not_found_as_none(opened)
            .map_err(|s| ImageError::containerd("reading content", s))?
            .ok_or_else(|| ImageError::content_missing(digest))?
            .into_inner();
        let mut data = Vec::new();
        while let Some(msg) = stream.next().await {
            let msg = not_found_as_none(msg)
                .map_err(|s| ImageError::containerd("reading content", s))?
                .ok_or_else(|| ImageError::content_missing(digest))?;
            data.extend_from_slice(&msg.data);
            if data.len() > MAX_DOCUMENT {
                return Err(ImageError::Unsupported(format!(
                    "document {digest} is larger than {MAX_DOCUMENT} bytes; image indexes, \
                     manifests and configs are small JSON documents"
                )));
            }
        }
        let actual = super::media::sha256_digest(&data);
        if actual != digest {
            return Err(ImageError::Corrupt(format!(
                "content {digest} in containerd's store hashes to {actual}; remove the image \
                 and load or pull it again"
            )));
        }
        Ok(data)
    }

    /// Writes `data` as the blob `digest` unless it is already present.
    pub(crate) async fn write_all(&self, digest: &str, data: &[u8]) -> Result<(), ImageError> {
        if self.has(digest).await? {
            return Ok(());
        }
        if let Some(mut w) = self.writer(Some(digest), Some(data.len() as u64)).await? {
            w.write(data).await?;
            w.commit().await?;
        }
        Ok(())
    }

    /// Opens a streaming write. With `expected`, containerd verifies the digest on commit and
    /// `None` comes back if the blob already exists; without, the digest is whatever the data
    /// hashes to.
    pub(crate) async fn writer(
        &self,
        expected: Option<&str>,
        total: Option<u64>,
    ) -> Result<Option<BlobWriter<'_>>, ImageError> {
        let reference = format!("shoal-{:016x}", rand::random::<u64>());
        let (tx, rx) = mpsc::channel(2);
        let first = WriteContentRequest {
            action: WriteAction::Stat as i32,
            r#ref: reference.clone(),
            total: total.map_or(0, |t| t as i64),
            expected: expected.unwrap_or_default().to_string(),
            ..Default::default()
        };
        // The channel has room, so this cannot wait; containerd answers the first message.
        tx.send(first)
            .await
            .map_err(|_| ImageError::internal("write channel closed"))?;
        let mut responses = match self
            .cd
            .content()
            .write(self.req(ReceiverStream::new(rx)))
            .await
        {
            Ok(resp) => resp.into_inner(),
            Err(s) if s.code() == Code::AlreadyExists => return Ok(None),
            Err(s) => return Err(ImageError::containerd("opening a content write", s)),
        };
        match responses.message().await {
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err(ImageError::internal(
                    "containerd closed the content write before answering",
                ))
            }
            Err(s) if s.code() == Code::AlreadyExists => return Ok(None),
            Err(s) => return Err(ImageError::containerd("opening a content write", s)),
        }
        Ok(Some(BlobWriter {
            store: self,
            reference,
            tx,
            responses,
            offset: 0,
            buf: Vec::with_capacity(WRITE_CHUNK),
            hasher: Sha256::new(),
            expected: expected.map(String::from),
            total,
        }))
    }

    /// Sets (adds or replaces) the given labels on a blob, leaving its other labels alone.
    pub(crate) async fn set_labels(
        &self,
        digest: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), ImageError> {
        if labels.is_empty() {
            return Ok(());
        }
        let info = self
            .info(digest)
            .await?
            .ok_or_else(|| ImageError::content_missing(digest))?;
        let changed: Vec<(&String, &String)> = labels
            .iter()
            .filter(|(k, v)| info.labels.get(*k) != Some(*v))
            .collect();
        if changed.is_empty() {
            return Ok(());
        }
        let paths = changed.iter().map(|(k, _)| format!("labels.{k}")).collect();
        let new_labels = changed
            .iter()
            .map(|(k, v)| ((*k).clone(), (*v).clone()))
            .collect();
        self.cd
            .content()
            .update(self.req(UpdateRequest {
                info: Some(Info {
                    digest: digest.to_string(),
                    labels: new_labels,
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask { paths }),
            }))
            .await
            .map_err(|s| ImageError::containerd("labelling content", s))?;
        Ok(())
    }
}

/// One blob being written to the content store (containerd's Content.Write stream: each
/// message is answered before the next is sent).
pub(crate) struct BlobWriter<'s> {
    store: &'s Store<'s>,
    reference: String,
    tx: mpsc::Sender<WriteContentRequest>,
    responses: tonic::Streaming<WriteContentResponse>,
    offset: i64,
    buf: Vec<u8>,
    hasher: Sha256,
    expected: Option<String>,
    total: Option<u64>,
}

impl BlobWriter<'_> {
    pub(crate) async fn write(&mut self, mut data: &[u8]) -> Result<(), ImageError> {
        self.hasher.update(data);
        while !data.is_empty() {
            let room = WRITE_CHUNK - self.buf.len();
            let n = room.min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buf.len() == WRITE_CHUNK {
                self.flush().await?;
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), ImageError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(WRITE_CHUNK));
        let len = data.len() as i64;
        self.exchange(WriteContentRequest {
            action: WriteAction::Write as i32,
            r#ref: self.reference.clone(),
            offset: self.offset,
            data,
            ..Default::default()
        })
        .await
        .map_err(|s| ImageError::containerd("writing content", s))?;
        self.offset += len;
        Ok(())
    }

    async fn exchange(
        &mut self,
        req: WriteContentRequest,
    ) -> Result<WriteContentResponse, tonic::Status> {
        if self.tx.send(req).await.is_err() {
            // containerd ended the stream; its status says why.
            return match self.responses.message().await {
                Err(s) => Err(s),
                _ => Err(tonic::Status::unavailable(
                    "containerd closed the write stream",
                )),
            };
        }
        match self.responses.message().await? {
            Some(resp) => Ok(resp),
            None => Err(tonic::Status::unavailable(
                "containerd closed the write stream",
            )),
        }
    }

    /// Commits the blob and returns its digest. A blob that appeared meanwhile (another
    /// writer of the same content) counts as written.
    pub(crate) async fn commit(mut self) -> Result<String, ImageError> {
        let result = self.commit_inner().await;
        if result.is_err() {
            self.abort().await;
        }
        result
    }

    async fn commit_inner(&mut self) -> Result<String, ImageError> {
        self.flush().await?;
        let digest = format!("sha256:{}", hex::encode(self.hasher.clone().finalize()));
        if let Some(expected) = &self.expected {
            if *expected != digest {
                return Err(ImageError::Corrupt(format!(
                    "blob {expected} has content hashing to {digest}; the source is corrupt, \
                     fetch or export it again"
                )));
            }
        }
        if let Some(total) = self.total {
            if total != self.offset as u64 {
                return Err(ImageError::Corrupt(format!(
                    "blob {digest} is {} bytes, {total} were announced; the source is corrupt \
                     or truncated",
                    self.offset
                )));
            }
        }
        let commit = WriteContentRequest {
            action: WriteAction::Commit as i32,
            r#ref: self.reference.clone(),
            total: self.offset,
            offset: self.offset,
            expected: digest.clone(),
            ..Default::default()
        };
        match self.exchange(commit).await {
            Ok(_) => {}
            Err(s) if s.code() == Code::AlreadyExists => {
                self.store.hold("content", &digest).await?;
            }
            Err(s) => return Err(ImageError::containerd("committing content", s)),
        }
        tracing::debug!(%digest, size = self.offset, "blob written");
        Ok(digest)
    }

    /// Abandons the write and removes what containerd has of it.
    pub(crate) async fn abort(self) {
        drop(self.tx);
        let store = self.store;
        let _ = store
            .cd
            .content()
            .abort(store.req(AbortRequest {
                r#ref: self.reference,
            }))
            .await;
    }
}
