//! Limits at the HTTP edge that no single request can see: how long a client may take to send
//! its headers, how long a response write may make no progress, and how much memory response
//! bodies may hold in flight across all connections together.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Config;

/// The budget is counted in KiB: semaphore permits are `u32`.
const UNIT: usize = 1024;

pub struct Edge {
    pub header_timeout: Duration,
    pub send_timeout: Duration,
    /// KiB of streamed response chunks that may be in memory at once.
    budget: Arc<Semaphore>,
    budget_units: u32,
}

impl Edge {
    pub fn new(config: &Config) -> Self {
        let units = u32::try_from(config.response_memory_budget / UNIT as u64)
            .unwrap_or(u32::MAX)
            .max(1);
        Self {
            header_timeout: config.header_timeout,
            send_timeout: config.send_timeout,
            budget: Arc::new(Semaphore::new(units as usize)),
            budget_units: units,
        }
    }

    /// KiB of the budget not held by a chunk right now (for tests and metrics).
    pub fn budget_available_kib(&self) -> usize {
        self.budget.available_permits()
    }

    /// `stream` with every chunk charged to the global budget from before it is read until
    /// hyper has written and dropped it. While stalled readers hold the budget, further
    /// streamed chunks wait (the send timeout frees what the stalled ones hold); memory stays
    /// bounded whatever the number of readers.
    pub fn budgeted<S>(
        &self,
        stream: S,
        max_chunk: usize,
    ) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + Unpin + 'static,
    {
        let reserve = units(max_chunk).min(self.budget_units);
        let budget = self.budget.clone();
        let patience = self.send_timeout;
        futures::stream::unfold((stream, budget), move |(mut stream, budget)| async move {
            // Waiting this long for memory is no progress either: the response fails like a
            // stalled write, so that readers queued behind stalled ones cannot pile up.
            let permit = tokio::time::timeout(patience, budget.clone().acquire_many_owned(reserve));
            let mut permit = match permit.await {
                Ok(Ok(permit)) => permit,
                Ok(Err(_closed)) => return None,
                Err(_elapsed) => {
                    let error = io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the response memory budget stayed spent for the whole send timeout",
                    );
                    return Some((Err(error), (stream, budget)));
                }
            };
            let item = stream.next().await?;
            let item = item.map(|chunk| {
                // Keep what the chunk weighs; give the rest of the reservation back.
                let kept = permit.split(units(chunk.len()).min(reserve) as usize);
                drop(permit);
                Bytes::from_owner(Charged {
                    chunk,
                    _permit: kept,
                })
            });
            Some((item, (stream, budget)))
        })
    }
}

fn units(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX)
}

/// A chunk and the share of the budget it holds, released together when hyper drops it.
struct Charged {
    chunk: Bytes,
    _permit: Option<OwnedSemaphorePermit>,
}

impl AsRef<[u8]> for Charged {
    fn as_ref(&self) -> &[u8] {
        &self.chunk
    }
}

/// A client socket whose writes time out after `send_timeout` without progress, and which
/// reads as closed once one has: hyper answers a failed write by closing its write side and
/// then waits for the client to close the read side — which a stalled reader never does, so
/// the connection (and its descriptor) would stay. Ending the read side ends the connection.
pub struct ClientSocket {
    inner: Pin<Box<tokio_io_timeout::TimeoutStream<tokio::net::TcpStream>>>,
    timed_out: bool,
}

impl ClientSocket {
    pub fn new(stream: tokio::net::TcpStream, send_timeout: Duration) -> Self {
        let mut inner = tokio_io_timeout::TimeoutStream::new(stream);
        inner.set_write_timeout(Some(send_timeout));
        Self {
            inner: Box::pin(inner),
            timed_out: false,
        }
    }

    fn note<T>(&mut self, result: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if let Poll::Ready(Err(error)) = &result {
            if error.kind() == io::ErrorKind::TimedOut {
                tracing::debug!(
                    "a response write made no progress within the send timeout; closing"
                );
                self.timed_out = true;
            }
        }
        result
    }
}

impl AsyncRead for ClientSocket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.timed_out {
            return Poll::Ready(Ok(()));
        }
        self.inner.as_mut().poll_read(cx, buf)
    }
}

impl AsyncWrite for ClientSocket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = self.inner.as_mut().poll_write(cx, buf);
        self.note(result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = self.inner.as_mut().poll_write_vectored(cx, bufs);
        self.note(result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = self.inner.as_mut().poll_flush(cx);
        self.note(result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = self.inner.as_mut().poll_shutdown(cx);
        self.note(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn chunks_hold_the_budget_until_dropped() {
        let mut config = Config::new("/nonexistent");
        config.response_memory_budget = 8 * 1024;
        let edge = Edge::new(&config);
        let chunks = futures::stream::iter((0..4).map(|_| Ok(Bytes::from(vec![0u8; 3 * 1024]))));
        let mut stream = Box::pin(edge.budgeted(chunks, 4 * 1024));
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!(edge.budget_available_kib(), 5);
        let second = stream.next().await.unwrap().unwrap();
        assert_eq!(edge.budget_available_kib(), 2);
        // A third chunk needs a 4 KiB reservation: it waits until a chunk is dropped.
        let waited = tokio::time::timeout(Duration::from_millis(50), stream.next()).await;
        assert!(waited.is_err(), "the budget is exhausted");
        drop(first);
        let third = stream.next().await.unwrap().unwrap();
        assert_eq!(third.len(), 3 * 1024);
        drop((second, third));
        assert_eq!(edge.budget_available_kib(), 8);
    }
}
