//! Agent packages: the streamed upload (checked, hashed and stored as it arrives), the
//! list, the delete, and the reads the upgrade tasks push a package to agents with.

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};

use super::errors::check_id;
use super::{ApiOperation, Caller, Core, CoreError, Field};
use crate::model::elf::{self, HEADER_LEN};
use crate::model::package::{check_version, parse_sha256};
use crate::model::{AgentPackage, Arch, Page, PageRequest};
use crate::store::{CHUNK_BYTES, Finished, Store, StoreError};

/// The largest package accepted unless `--max-package-bytes` says otherwise: an
/// `ocp-agent` binary is tens of MB, and the store keeps every version uploaded.
pub const DEFAULT_MAX_PACKAGE_BYTES: u64 = 256 << 20;

/// An upload's rows in the store until it finishes. Dropped unfinished (an error, or
/// the request's future dropped with its connection) it removes them, so that a refused
/// or truncated upload leaves nothing behind; a controller that dies mid-upload leaves
/// them to the sweep in `Store::begin_package_upload`.
struct Pending {
    store: Store,
    id: Option<i64>,
}

impl Pending {
    /// Removes the upload now, for an answer that is given once nothing is left of it.
    async fn discard(mut self) {
        let Some(id) = self.id.take() else {
            return;
        };
        if let Err(e) = self.store.discard_package_upload(id).await {
            tracing::warn!(package_id = id, "discarding a refused package upload: {e}");
        }
    }

    fn finished(mut self) {
        self.id = None;
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let Some(id) = self.id.take() else {
            return;
        };
        let store = self.store.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = store.discard_package_upload(id).await {
                    tracing::warn!(
                        package_id = id,
                        "discarding an interrupted package upload: {e}"
                    );
                }
            });
        }
    }
}

/// Where an upload's bytes go once its header was read.
enum Sink {
    /// Into the store, under this incomplete row.
    Store { pending: Pending, seq: i64 },
    /// Nowhere: the version already has a package for the architecture, and the upload
    /// is only hashed to tell whether it is the same one.
    Compare(AgentPackage),
}

impl Core {
    /// Stores the `ocp-agent` binary that `content` streams as `version`, answering
    /// with the package: a new one, or the one already stored when the version has it
    /// with the same content.
    ///
    /// The content is judged by its ELF header before anything is stored, hashed as it
    /// arrives, and written in chunks: at most one chunk and the piece being read are in
    /// memory. Reading stops at the first refusal (and at `max_package_bytes`): the face
    /// owns `content`, to drain what the client still sends, if it wants it to read the
    /// answer. `sha256`, when given, must be the content's.
    pub async fn upload_package<S, E>(
        &self,
        caller: &Caller,
        version: &str,
        sha256: Option<&str>,
        content: &mut S,
    ) -> Result<AgentPackage, CoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
        E: std::fmt::Display,
    {
        caller.admitted(ApiOperation::UploadPackage)?;
        check_version(version)
            .map_err(|m| CoreError::invalid(Field::PackageVersion, version, m))?;
        let expected = match sha256 {
            None => None,
            Some(text) => Some(parse_sha256(text).ok_or_else(|| {
                CoreError::invalid(
                    Field::PackageSha256,
                    text,
                    "must be a SHA-256 digest: 64 hexadecimal digits",
                )
            })?),
        };
        let limit = self.options.max_package_bytes;
        let mut upload = Upload {
            content,
            limit,
            hasher: Sha256::new(),
            size: 0,
            buffer: BytesMut::with_capacity(CHUNK_BYTES),
        };
        while upload.buffer.len() < HEADER_LEN && upload.read().await? {}
        let arch = elf::read_header(&upload.buffer).map_err(|refusal| {
            CoreError::invalid(Field::PackageContent, "", refusal.to_string())
        })?;
        let mut sink = match self.store.package_by_version(version, arch).await? {
            Some(existing) => Sink::Compare(existing),
            None => Sink::Store {
                pending: Pending {
                    store: self.store.clone(),
                    id: Some(
                        self.store
                            .begin_package_upload(version, arch, caller.name())
                            .await?,
                    ),
                },
                seq: 0,
            },
        };
        let streamed = upload.stream_into(&mut sink, &self.store).await;
        let result = match streamed {
            Ok(()) => self.finish(version, arch, upload, expected, sink).await,
            Err(e) => Err((e, sink)),
        };
        match result {
            Ok(package) => Ok(package),
            Err((e, Sink::Store { pending, .. })) => {
                pending.discard().await;
                Err(e)
            }
            Err((e, Sink::Compare(_))) => Err(e),
        }
    }

    /// Checks the digest and makes the upload a package, or tells it from the one its
    /// version already has; on a refusal the sink comes back to be discarded.
    async fn finish<S>(
        &self,
        version: &str,
        arch: Arch,
        upload: Upload<'_, S>,
        expected: Option<String>,
        sink: Sink,
    ) -> Result<AgentPackage, (CoreError, Sink)> {
        let size = upload.size;
        let digest: String = upload
            .hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if let Some(expected) = expected.filter(|e| *e != digest) {
            let refusal = CoreError::invalid(
                Field::PackageSha256,
                &expected,
                format!("does not match the uploaded content, whose SHA-256 is {digest}"),
            );
            return Err((refusal, sink));
        }
        let finished = match sink {
            Sink::Compare(existing) => {
                if existing.sha256 == digest {
                    Finished::Same(existing)
                } else {
                    Finished::Conflict(existing)
                }
            }
            Sink::Store { pending, seq } => {
                let id = pending.id.unwrap_or_default();
                match self
                    .store
                    .finish_package_upload(id, &digest, size as i64)
                    .await
                {
                    Ok(finished) => {
                        pending.finished();
                        finished
                    }
                    Err(e) => return Err((e.into(), Sink::Store { pending, seq })),
                }
            }
        };
        match finished {
            Finished::Stored(package) => {
                tracing::info!(
                    package_id = package.id,
                    version,
                    %arch,
                    size,
                    sha256 = %digest,
                    "agent package uploaded"
                );
                Ok(package)
            }
            Finished::Same(package) => Ok(package),
            // The upload's rows are gone already: the store discarded them.
            Finished::Conflict(existing) => Err((
                CoreError::PackageConflict {
                    version: version.to_string(),
                    arch,
                    existing_id: existing.id,
                    existing_sha256: existing.sha256.clone(),
                },
                Sink::Compare(existing),
            )),
        }
    }

    /// The largest package an upload may bring.
    pub fn max_package_bytes(&self) -> u64 {
        self.options.max_package_bytes
    }

    /// Packages, newest upload first.
    pub async fn list_packages(
        &self,
        caller: &Caller,
        page: PageRequest,
    ) -> Result<Page<AgentPackage>, CoreError> {
        caller.admitted(ApiOperation::ListPackages)?;
        Ok(self.store.list_packages(page).await?)
    }

    /// Deletes a package that no unfinished task uses; answers with it as it was.
    pub async fn delete_package(
        &self,
        caller: &Caller,
        id: i64,
    ) -> Result<AgentPackage, CoreError> {
        caller.admitted(ApiOperation::DeletePackage)?;
        check_id(Field::PackageId, id)?;
        let Some(package) = self.store.get_package(id).await? else {
            return Err(CoreError::PackageNotFound(id));
        };
        if let Some(task_id) = self.store.package_in_use(id).await? {
            return Err(CoreError::PackageInUse {
                package_id: id,
                task_id,
            });
        }
        if !self.store.delete_package(id).await? {
            return Err(CoreError::PackageNotFound(id));
        }
        tracing::info!(
            package_id = id,
            user = caller.name(),
            "agent package deleted"
        );
        Ok(package)
    }

    /// The package of `version` for hosts of `arch`: what an upgrade pushes, found
    /// before its task starts. `None` when the version was not uploaded for it.
    pub async fn agent_package(
        &self,
        version: &str,
        arch: Arch,
    ) -> Result<Option<AgentPackage>, CoreError> {
        Ok(self.store.package_by_version(version, arch).await?)
    }

    /// The package's bytes in order, in chunks of at most `CHUNK_BYTES`, each read from
    /// the store when polled: see `Store::package_content`.
    pub fn package_content(
        &self,
        package: &AgentPackage,
    ) -> impl Stream<Item = Result<Bytes, StoreError>> + Send + 'static {
        self.store.package_content(package)
    }
}

/// An upload being read: what was hashed and counted so far, and the bytes not yet
/// written.
struct Upload<'a, S> {
    content: &'a mut S,
    limit: u64,
    hasher: Sha256,
    size: u64,
    buffer: BytesMut,
}

impl<S, E> Upload<'_, S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
    E: std::fmt::Display,
{
    /// Reads one piece into the buffer; false at the end of the content. Hashing a
    /// piece as it comes costs about what copying it does, so it stays on this task.
    async fn read(&mut self) -> Result<bool, CoreError> {
        match self.content.next().await {
            None => Ok(false),
            Some(Err(e)) => Err(CoreError::UploadInterrupted(e.to_string())),
            Some(Ok(piece)) => {
                self.size += piece.len() as u64;
                if self.size > self.limit {
                    return Err(CoreError::PackageTooLarge { limit: self.limit });
                }
                self.hasher.update(&piece);
                self.buffer.extend_from_slice(&piece);
                Ok(true)
            }
        }
    }

    /// Reads the rest, writing every full chunk as it fills and the last one at the end.
    async fn stream_into(&mut self, sink: &mut Sink, store: &Store) -> Result<(), CoreError> {
        loop {
            while self.buffer.len() >= CHUNK_BYTES {
                let chunk = self.buffer.split_to(CHUNK_BYTES);
                write(sink, store, &chunk).await?;
            }
            if !self.read().await? {
                break;
            }
        }
        if !self.buffer.is_empty() {
            let chunk = self.buffer.split();
            write(sink, store, &chunk).await?;
        }
        Ok(())
    }
}

async fn write(sink: &mut Sink, store: &Store, chunk: &[u8]) -> Result<(), CoreError> {
    if let Sink::Store { pending, seq } = sink {
        let id = pending.id.unwrap_or_default();
        store.add_package_chunk(id, *seq, chunk).await?;
        *seq += 1;
    }
    Ok(())
}
