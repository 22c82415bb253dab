//! Receiving an upload body: one pass over the stream, fanned out to three consumers that run in
//! parallel — the sha256 hasher, the tarball inspector (inflate + tar walk), and the blob writer.
//! Bounded channels keep memory flat whatever the tarball's size.

use std::fmt::Display;
use std::io::{self, Read};

use bytes::{Buf, Bytes};
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::blobs::{BlobWriter, Blobs};
use crate::domain::tarball::{self, Limits, Manifest};
use crate::error::{Error, Result};

/// A fully received and validated upload, parked under its temporary key.
#[derive(Debug)]
pub struct Received {
    pub upload: Uuid,
    pub sha256: String,
    pub size: u64,
    pub manifest: Manifest,
}

/// Chunks in flight per consumer; with ~64 KiB body chunks this is a few MiB at most.
const CHANNEL_DEPTH: usize = 16;

/// Bounds on one upload body.
#[derive(Clone, Debug)]
pub struct BodyLimits {
    pub max_bytes: u64,
    /// The longest wait for the next chunk: a client that trickles bytes (slow-loris) is cut
    /// off with 408 instead of holding a connection and a temporary blob forever.
    pub idle_timeout: std::time::Duration,
}

/// Streams `body` into a temporary blob while hashing and inspecting it. On any failure the
/// temporary blob is removed and nothing else has changed.
pub async fn receive<S, E>(
    blobs: &Blobs,
    body: S,
    body_limits: &BodyLimits,
    limits: &Limits,
) -> Result<Received>
where
    S: Stream<Item = Result<Bytes, E>> + Send,
    E: Display,
{
    let mut writer = blobs.begin_upload().await?;
    let upload = writer.id;
    let outcome = pump(&mut writer, body, body_limits, limits).await;
    let outcome = match outcome {
        Ok(parts) => writer.finish().await.map(|()| parts).map_err(Error::from),
        Err(error) => {
            writer.abort().await;
            Err(error)
        }
    };
    match outcome {
        Ok((sha256, size, manifest)) => Ok(Received {
            upload,
            sha256,
            size,
            manifest,
        }),
        Err(error) => {
            blobs.discard(upload).await;
            Err(error)
        }
    }
}

async fn pump<S, E>(
    writer: &mut BlobWriter,
    body: S,
    body_limits: &BodyLimits,
    limits: &Limits,
) -> Result<(String, u64, Manifest)>
where
    S: Stream<Item = Result<Bytes, E>> + Send,
    E: Display,
{
    let (hash_tx, hash_rx) = mpsc::channel::<Bytes>(CHANNEL_DEPTH);
    let hasher = tokio::task::spawn_blocking(move || hash(hash_rx));
    let (inspect_tx, inspect_rx) = mpsc::channel::<Bytes>(CHANNEL_DEPTH);
    let limits = limits.clone();
    let inspector = tokio::task::spawn_blocking(move || {
        tarball::inspect(ChannelReader::new(inspect_rx), &limits)
    });

    let mut body = std::pin::pin!(body);
    let mut size = 0u64;
    let mut inspector_stopped = false;
    let max_bytes = body_limits.max_bytes;
    loop {
        let next = tokio::time::timeout(body_limits.idle_timeout, body.next())
            .await
            .map_err(|_| {
                Error::new(
                    axum::http::StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    format!(
                        "No upload data arrived for {} seconds; the upload was abandoned.",
                        body_limits.idle_timeout.as_secs()
                    ),
                )
            })?;
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|e| {
            Error::bad_request(
                "body_read_failed",
                format!("Reading the upload body failed: {e}."),
            )
        })?;
        size += chunk.len() as u64;
        if size > max_bytes {
            return Err(Error::too_large(format!(
                "The upload is larger than this registry's maximum of {max_bytes} bytes."
            )));
        }
        if inspector.is_finished() || inspect_tx.send(chunk.clone()).await.is_err() {
            // The inspector only stops early when it has refused the tarball.
            inspector_stopped = true;
            break;
        }
        hash_tx
            .send(chunk.clone())
            .await
            .map_err(|_| Error::internal("the hasher stopped"))?;
        writer.write(chunk).await?;
    }
    drop(inspect_tx);
    drop(hash_tx);
    let manifest = inspector
        .await
        .map_err(Error::internal)?
        .map_err(|rejection| {
            Error::unprocessable(rejection.code, rejection.message, rejection.problems)
        })?;
    if inspector_stopped {
        return Err(Error::internal(
            "the tarball inspector stopped without a verdict",
        ));
    }
    let sha256 = hasher.await.map_err(Error::internal)?;
    Ok((sha256, size, manifest))
}

fn hash(mut chunks: mpsc::Receiver<Bytes>) -> String {
    let mut hasher = Sha256::new();
    while let Some(chunk) = chunks.blocking_recv() {
        hasher.update(&chunk);
    }
    hex::encode(hasher.finalize())
}

/// A blocking `Read` over chunks arriving on a channel; end of stream when the sender is gone.
struct ChannelReader {
    chunks: mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl ChannelReader {
    fn new(chunks: mpsc::Receiver<Bytes>) -> Self {
        Self {
            chunks,
            current: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}
