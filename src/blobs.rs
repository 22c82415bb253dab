//! The blob store: tarballs in any `object_store` backend, addressed by typed keys.
//!
//! Finished blobs are content-addressed (`sha256/<hex>`), so identical tarballs are stored once
//! and writing the same blob twice is harmless. Uploads stream into `uploads/<uuid>` first and are
//! promoted only once their digest is known and validated.

use std::ops::Range;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{
    ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, RetryConfig, WriteMultipart,
};
use reliquary_client::types::BlobRef;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::memory_cache::{bytes_cache, BytesCache};

/// Where a blob lives; nobody builds blob paths by hand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlobKey {
    /// A finished tarball, by the hex sha256 of its bytes.
    Sha256(String),
    /// An upload in progress (or abandoned, for gc to collect).
    Upload(Uuid),
    /// A provenance bundle kept beside a slot, by the sha256 of its bytes.
    Attestation(String),
}

impl BlobKey {
    pub fn sha256(hex: &str) -> Self {
        Self::Sha256(hex.to_owned())
    }

    fn path(&self) -> Path {
        match self {
            BlobKey::Sha256(hex) => Path::from(format!("sha256/{hex}")),
            BlobKey::Upload(id) => Path::from(format!("uploads/{id}")),
            BlobKey::Attestation(hex) => Path::from(format!("attestations/{hex}")),
        }
    }
}

/// A download: the asked range of a blob.
pub struct BlobStream {
    /// The blob's full size, whatever range was asked for.
    pub size: u64,
    pub body: BlobBody,
}

pub enum BlobBody {
    /// Small blobs, read whole (and cached): sent in one piece.
    InMemory(Bytes),
    Streaming(BoxStream<'static, Result<Bytes, object_store::Error>>),
}

impl BlobBody {
    pub fn into_stream(self) -> BoxStream<'static, Result<Bytes, object_store::Error>> {
        match self {
            BlobBody::InMemory(bytes) => futures::stream::once(async move { Ok(bytes) }).boxed(),
            BlobBody::Streaming(stream) => stream,
        }
    }
}

impl BlobStream {
    /// `range` of a blob held in memory.
    fn in_memory(whole: Bytes, range: Option<Range<u64>>) -> Self {
        let size = whole.len() as u64;
        let part = match range {
            // Clamped: a blob shorter than its slot must not panic here (the caller refuses it).
            Some(range) => {
                let end = range.end.min(size);
                whole.slice(range.start.min(end) as usize..end as usize)
            }
            None => whole,
        };
        Self {
            size,
            body: BlobBody::InMemory(part),
        }
    }
}

/// A blob as opened: read whole when small, else a stream of the asked range.
enum Opened {
    Whole(Bytes),
    Streaming(BlobStream),
}

#[derive(Clone)]
pub struct Blobs {
    store: Arc<dyn ObjectStore>,
    /// For local storage, the directory behind `store`: downloads read files directly.
    local_root: Option<PathBuf>,
    /// Small finished tarballs kept in memory. Content-addressed blobs never change, so a cached
    /// copy cannot go stale, and serving one skips the file open (or the S3 GET) that cost more
    /// than the rest of a small download (docs/benchmarks.md).
    small_blobs: Arc<BytesCache<Bytes>>,
    /// For S3: the bucket's own client (it signs URLs) and the root dir blobs live under.
    presigner: Option<(Arc<object_store::aws::AmazonS3>, String)>,
}

/// Read size for local downloads: each chunk costs a trip to the blocking pool, and at 4 MiB
/// those trips stop showing against nginx's `sendfile` (1 MiB: 1.2x, 4 MiB: 1.0-1.1x). A
/// download holds at most two chunks: the one hyper is writing and the one being read.
const LOCAL_READ_CHUNK: usize = 4 * 1024 * 1024;
/// The largest chunk a streamed download yields (what the response budget reserves per read).
pub const MAX_STREAM_CHUNK: usize = LOCAL_READ_CHUNK;

/// Tarballs up to this size are read whole and cached; larger ones are streamed.
const SMALL_BLOB_MAX: u64 = 1024 * 1024;

/// The memory the small-tarball cache may hold (least recently used go first).
const SMALL_BLOB_CACHE_BYTES: u64 = 32 * 1024 * 1024;

fn small_blob_cache() -> Arc<BytesCache<Bytes>> {
    Arc::new(bytes_cache(SMALL_BLOB_CACHE_BYTES, 64 * 1024))
}

impl Blobs {
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self {
            store,
            local_root: None,
            small_blobs: small_blob_cache(),
            presigner: None,
        }
    }

    /// Blobs under a local directory, created if missing.
    pub fn local(root: &FsPath) -> std::io::Result<Self> {
        std::fs::create_dir_all(root)?;
        // fsync: an upload is acknowledged only once its metadata is committed (SQLite with
        // synchronous=FULL), and that metadata must not outlive a power cut that loses the blob.
        let store = LocalFileSystem::new_with_prefix(root)
            .map_err(std::io::Error::other)?
            .with_fsync(true);
        Ok(Self {
            store: Arc::new(store),
            local_root: Some(root.canonicalize()?),
            small_blobs: small_blob_cache(),
            presigner: None,
        })
    }

    /// Blobs in an S3 bucket under a root dir: `s3://bucket/root-dir`. Credentials and region
    /// come from the standard `AWS_*` variables; `endpoint` points at an S3-compatible server
    /// (plain HTTP allowed, for loopback test servers).
    pub fn s3(url: &str, endpoint: Option<&str>) -> anyhow::Result<Self> {
        let rest = url.strip_prefix("s3://").unwrap_or(url);
        let (bucket, root) = rest.split_once('/').unwrap_or((rest, ""));
        anyhow::ensure!(!bucket.is_empty(), "`{url}` names no bucket");
        // Fail within seconds when the bucket is unreachable: requests answer 503 instead of
        // hanging through minutes of retries.
        let retry = RetryConfig {
            max_retries: 2,
            retry_timeout: Duration::from_secs(10),
            backoff: Default::default(),
        };
        let client = ClientOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(120));
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_retry(retry)
            .with_client_options(client);
        if let Some(endpoint) = endpoint {
            builder = builder
                .with_allow_http(endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(false)
                .with_endpoint(endpoint);
        }
        if std::env::var_os("AWS_REGION").is_none()
            && std::env::var_os("AWS_DEFAULT_REGION").is_none()
        {
            builder = builder.with_region("us-east-1");
        }
        let s3 = Arc::new(builder.build()?);
        let store: Arc<dyn ObjectStore> = s3.clone();
        let root = root.trim_matches('/');
        let mut blobs = Self::new(if root.is_empty() {
            store
        } else {
            Arc::new(PrefixStore::new(store, root))
        });
        blobs.presigner = Some((s3, root.to_owned()));
        Ok(blobs)
    }

    /// Whether [`Self::presigned_download`] can sign (the blobs are in S3).
    pub fn can_presign(&self) -> bool {
        self.presigner.is_some()
    }

    /// A URL that lets whoever holds it GET one tarball straight from the bucket until `ttl`
    /// passes, served as a gzip download named `filename`. `None` when the blobs are not in S3.
    pub async fn presigned_download(
        &self,
        sha256: &str,
        ttl: Duration,
        filename: &str,
    ) -> Result<Option<String>, object_store::Error> {
        use object_store::signer::{SignedUrlOptions, Signer};
        let Some((s3, root)) = &self.presigner else {
            return Ok(None);
        };
        let key = BlobKey::sha256(sha256).path();
        let path = if root.is_empty() {
            key
        } else {
            Path::from(format!("{root}/{key}"))
        };
        // The bucket answers with the headers a download from the registry has.
        let options = SignedUrlOptions::new().with_query([
            ("response-content-type", "application/gzip".to_owned()),
            (
                "response-content-disposition",
                format!("attachment; filename=\"{filename}\""),
            ),
        ]);
        let url = s3
            .signed_url_opts(object_store::signer::Method::GET, &path, ttl, &options)
            .await?;
        Ok(Some(url.to_string()))
    }

    /// Starts streaming an upload into a fresh temporary key.
    pub async fn begin_upload(&self) -> Result<BlobWriter, object_store::Error> {
        let id = Uuid::new_v4();
        let key = BlobKey::Upload(id);
        if let Some(root) = &self.local_root {
            let path = root.join(key.path().as_ref());
            return Ok(BlobWriter {
                id,
                inner: Writer::Local(LocalWriter::create(path).await.map_err(local_error)?),
            });
        }
        let upload = self.store.put_multipart(&key.path()).await?;
        Ok(BlobWriter {
            id,
            // 8 MiB parts keep S3 part counts low while bounding memory per upload.
            inner: Writer::Multipart(WriteMultipart::new_with_chunk_size(upload, 8 << 20)),
        })
    }

    /// Moves a finished upload to its content address. When the address already holds the
    /// blob (same digest, same bytes) it is replaced all the same: that refreshes its
    /// modification time, which is what keeps a blob that was about to be collected alive (see
    /// `gc`).
    pub async fn promote(&self, upload: Uuid, sha256: &str) -> Result<(), object_store::Error> {
        let from = BlobKey::Upload(upload).path();
        let to = BlobKey::sha256(sha256).path();
        self.store.rename(&from, &to).await
    }

    /// Keys under `prefix` with their last modification time.
    pub async fn list_with_times(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, chrono::DateTime<chrono::Utc>)>, object_store::Error> {
        let listing = self.store.list(Some(&Path::from(prefix)));
        let metas: Vec<_> = listing.try_collect().await?;
        Ok(metas
            .into_iter()
            .map(|meta| (meta.location.to_string(), meta.last_modified))
            .collect())
    }

    /// Deletes a finished blob (for `gc`).
    pub async fn delete(&self, key: &BlobKey) -> Result<(), object_store::Error> {
        self.delete_listed(key.path().as_ref()).await
    }

    /// Deletes an object by the full key `list` returned.
    pub async fn delete_listed(&self, key: &str) -> Result<(), object_store::Error> {
        match self.store.delete(&Path::from(key)).await {
            Err(object_store::Error::NotFound { .. }) => Ok(()),
            other => other,
        }
    }

    /// Stores a small provenance bundle under its digest.
    pub async fn put_attestation(&self, bundle: Bytes) -> Result<BlobRef, object_store::Error> {
        let reference = BlobRef {
            sha256: hex::encode(Sha256::digest(&bundle)),
            size: bundle.len() as u64,
        };
        let key = BlobKey::Attestation(reference.sha256.clone());
        self.store.put(&key.path(), bundle.into()).await?;
        Ok(reference)
    }

    pub async fn read_attestation(&self, sha256: &str) -> Result<Bytes, object_store::Error> {
        let key = BlobKey::Attestation(sha256.to_owned());
        self.store.get(&key.path()).await?.bytes().await
    }

    /// Removes an upload that will not be promoted. Best effort: gc collects what this misses.
    pub async fn discard(&self, upload: Uuid) {
        if let Err(error) = self.store.delete(&BlobKey::Upload(upload).path()).await {
            if !matches!(error, object_store::Error::NotFound { .. }) {
                tracing::warn!(%error, %upload, "could not remove an abandoned upload");
            }
        }
    }

    /// Streams a blob, or the half-open byte range `range` of it.
    pub async fn open(
        &self,
        key: &BlobKey,
        range: Option<Range<u64>>,
    ) -> Result<BlobStream, object_store::Error> {
        let cache_key = match key {
            BlobKey::Sha256(hex) => Some(hex),
            _ => None,
        };
        if let Some(whole) = cache_key.and_then(|hex| self.small_blobs.get(hex)) {
            return Ok(BlobStream::in_memory(whole, range));
        }
        let opened = match &self.local_root {
            Some(root) => open_local(root, key, range.clone()).await?,
            None => self.open_remote(key, range.clone()).await?,
        };
        match opened {
            Opened::Whole(whole) => {
                // Only verified bytes are cached: a copy damaged on disk is served as it is
                // (clients check the digest) but never outlives its repair.
                if let Some(hex) = cache_key {
                    if hex::encode(Sha256::digest(&whole)) == *hex {
                        self.small_blobs.insert(hex.clone(), whole.clone());
                    } else {
                        tracing::error!(blob = %hex, "a stored tarball does not match its digest");
                    }
                }
                Ok(BlobStream::in_memory(whole, range))
            }
            Opened::Streaming(stream) => Ok(stream),
        }
    }

    async fn open_remote(
        &self,
        key: &BlobKey,
        range: Option<Range<u64>>,
    ) -> Result<Opened, object_store::Error> {
        let whole_wanted = range.is_none();
        if let Some(range) = &range {
            // A range past the object's real end would fail as an unreachable store; its true
            // size lets the caller see a blob shorter than its slot for what it is.
            let meta = self.store.head(&key.path()).await?;
            if range.end > meta.size {
                return Ok(Opened::Streaming(BlobStream {
                    size: meta.size,
                    body: BlobBody::Streaming(futures::stream::empty().boxed()),
                }));
            }
        }
        let options = GetOptions {
            range: range.map(GetRange::Bounded),
            ..Default::default()
        };
        let result = self.store.get_opts(&key.path(), options).await?;
        let size = result.meta.size;
        if whole_wanted && size <= SMALL_BLOB_MAX {
            return Ok(Opened::Whole(result.bytes().await?));
        }
        Ok(Opened::Streaming(BlobStream {
            size,
            body: BlobBody::Streaming(result.into_stream().boxed()),
        }))
    }

    pub async fn exists(&self, key: &BlobKey) -> Result<bool, object_store::Error> {
        match self.store.head(&key.path()).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(other) => Err(other),
        }
    }

    /// The keys under a prefix (`sha256`, `uploads`, `attestations`), as `prefix/name` strings.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, object_store::Error> {
        let listed = self.list_with_times(prefix).await?;
        Ok(listed.into_iter().map(|(key, _)| key).collect())
    }

    /// Fails when the store is unreachable (`/readyz`).
    pub async fn ping(&self) -> Result<(), object_store::Error> {
        let mut listing = self.store.list(Some(&Path::from("sha256")));
        listing.try_next().await.map(|_| ())
    }
}

/// A local file read with large buffered reads on the async runtime: object_store's local
/// backend reads in small chunks, each on the blocking pool, which made downloads several
/// times slower than the disk (see docs/benchmarks.md).
async fn open_local(
    root: &FsPath,
    key: &BlobKey,
    range: Option<Range<u64>>,
) -> Result<Opened, object_store::Error> {
    use std::io::{Read, Seek};
    let path = root.join(key.path().as_ref());
    let describe = path.display().to_string();
    // One trip to the blocking pool opens, sizes and positions the file, and reads it whole when
    // it is small: most plugin tarballs are, and each extra trip costs more than the read.
    let opened = tokio::task::spawn_blocking(
        move || -> std::io::Result<(u64, u64, Result<Bytes, std::fs::File>)> {
            let mut file = std::fs::File::open(&path)?;
            let size = file.metadata()?.len();
            if size <= SMALL_BLOB_MAX {
                let mut bytes = Vec::with_capacity(size as usize);
                file.read_to_end(&mut bytes)?;
                return Ok((size, size, Ok(Bytes::from(bytes))));
            }
            let range = range.unwrap_or(0..size);
            file.seek(std::io::SeekFrom::Start(range.start))?;
            Ok((size, range.end.saturating_sub(range.start), Err(file)))
        },
    )
    .await
    .map_err(|e| object_store::Error::Generic {
        store: "local",
        source: Box::new(e),
    })?;
    let (size, length, content) = opened.map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            object_store::Error::NotFound {
                path: describe,
                source: Box::new(source),
            }
        } else {
            object_store::Error::Generic {
                store: "local",
                source: Box::new(source),
            }
        }
    })?;
    let file = match content {
        Ok(whole) => return Ok(Opened::Whole(whole)),
        Err(file) => file,
    };
    let chunks = read_chunks(file, length)
        .map_err(|source| object_store::Error::Generic {
            store: "local",
            source: Box::new(source),
        })
        .boxed();
    Ok(Opened::Streaming(BlobStream {
        size,
        body: BlobBody::Streaming(chunks),
    }))
}

/// `length` bytes from the file's position, in chunks of [`LOCAL_READ_CHUNK`]. Each chunk is read
/// on the blocking pool straight into the buffer that becomes the body chunk: `tokio::fs::File`
/// reads into a buffer of its own and copies from it, a user-space copy that profiled at a tenth
/// of a large download's CPU time.
fn read_chunks(
    file: std::fs::File,
    length: u64,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> {
    futures::stream::try_unfold((file, length), |(mut file, left)| async move {
        if left == 0 {
            return Ok(None);
        }
        let wanted = left.min(LOCAL_READ_CHUNK as u64);
        let (file, chunk) = tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let mut chunk = Vec::with_capacity(wanted as usize);
            (&mut file).take(wanted).read_to_end(&mut chunk)?;
            Ok::<_, std::io::Error>((file, chunk))
        })
        .await
        .map_err(std::io::Error::other)??;
        if chunk.is_empty() {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let left = left - chunk.len() as u64;
        Ok(Some((Bytes::from(chunk), (file, left))))
    })
}

/// An upload being streamed into the blob store.
pub struct BlobWriter {
    pub id: Uuid,
    inner: Writer,
}

enum Writer {
    Multipart(WriteMultipart),
    Local(LocalWriter),
}

impl BlobWriter {
    /// Buffers `chunk`, waiting while too many chunks are in flight so memory stays bounded.
    pub async fn write(&mut self, chunk: Bytes) -> Result<(), object_store::Error> {
        match &mut self.inner {
            Writer::Multipart(multipart) => {
                multipart.wait_for_capacity(2).await?;
                multipart.put(chunk);
                Ok(())
            }
            Writer::Local(local) => local.write(chunk).await.map_err(local_error),
        }
    }

    /// Completes the upload; it is durable when this returns.
    pub async fn finish(self) -> Result<(), object_store::Error> {
        match self.inner {
            Writer::Multipart(multipart) => multipart.finish().await.map(|_| ()),
            Writer::Local(local) => local.finish().await.map_err(local_error),
        }
    }

    pub async fn abort(self) {
        match self.inner {
            Writer::Multipart(multipart) => {
                if let Err(error) = multipart.abort().await {
                    tracing::warn!(%error, "could not abort an upload");
                }
            }
            // The caller discards the file.
            Writer::Local(local) => drop(local),
        }
    }
}

fn local_error(source: std::io::Error) -> object_store::Error {
    object_store::Error::Generic {
        store: "local",
        source: Box::new(source),
    }
}

/// How much a local upload writes between two background flushes to disk.
const LOCAL_FLUSH_EVERY: u64 = 32 * 1024 * 1024;

/// A local upload written by a blocking thread of its own, which has the kernel write the file
/// out as it grows. Left alone, the kernel keeps a whole upload in its page cache (background
/// writeback starts at a tenth of memory), so the fsync that must precede the commit would write
/// all of it while the client waits: a 1 GiB upload took twice as long.
struct LocalWriter {
    chunks: tokio::sync::mpsc::Sender<WriterMessage>,
    done: tokio::task::JoinHandle<std::io::Result<()>>,
}

enum WriterMessage {
    Chunk(Bytes),
    /// The upload is complete: make it durable. A writer dropped without it stops at once.
    Finish,
}

impl LocalWriter {
    async fn create(path: PathBuf) -> std::io::Result<Self> {
        let file = tokio::task::spawn_blocking(move || {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::File::create_new(&path)
        })
        .await
        .map_err(std::io::Error::other)??;
        let (chunks, mut received) = tokio::sync::mpsc::channel(4);
        let done = tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut file = file;
            let mut unflushed = 0u64;
            let mut flushing: Option<std::thread::JoinHandle<std::io::Result<()>>> = None;
            while let Some(message) = received.blocking_recv() {
                match message {
                    WriterMessage::Chunk(chunk) => {
                        file.write_all(&chunk)?;
                        unflushed += chunk.len() as u64;
                        // One flush at a time, on a thread of its own so writing goes on.
                        if unflushed >= LOCAL_FLUSH_EVERY
                            && flushing
                                .as_ref()
                                .is_none_or(std::thread::JoinHandle::is_finished)
                        {
                            if let Some(previous) = flushing.take() {
                                previous.join().map_err(|_| {
                                    std::io::Error::other("a flush thread panicked")
                                })??;
                            }
                            let handle = file.try_clone()?;
                            flushing = Some(std::thread::spawn(move || handle.sync_data()));
                            unflushed = 0;
                        }
                    }
                    WriterMessage::Finish => {
                        if let Some(previous) = flushing.take() {
                            previous
                                .join()
                                .map_err(|_| std::io::Error::other("a flush thread panicked"))??;
                        }
                        return file.sync_all();
                    }
                }
            }
            Ok(())
        });
        Ok(Self { chunks, done })
    }

    async fn write(&mut self, chunk: Bytes) -> std::io::Result<()> {
        if self.chunks.send(WriterMessage::Chunk(chunk)).await.is_err() {
            // The thread stopped on an error: report it.
            return Err((&mut self.done)
                .await
                .map_err(std::io::Error::other)?
                .err()
                .unwrap_or_else(|| std::io::Error::other("the blob writer stopped")));
        }
        Ok(())
    }

    async fn finish(self) -> std::io::Result<()> {
        // A failed send means the thread already stopped; its result says why.
        let _ = self.chunks.send(WriterMessage::Finish).await;
        self.done.await.map_err(std::io::Error::other)?
    }
}
