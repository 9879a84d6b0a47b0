//! TCP pass-through: a client's connection joined to a node's, bytes untouched both ways. Used
//! for TLS whose name is a node's own (TLS ends at the node), and for RTMP(S) to an ingest
//! node. What the front read before it chose (the ClientHello) is sent first.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// How long connecting to a node may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a pass-through ended early.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PassError {
    /// The node's name did not resolve.
    #[error("cannot resolve {0}")]
    Resolve(String),
    /// The node did not answer in time, or refused.
    #[error("cannot reach {0}: {1}")]
    Connect(String, io::Error),
    /// Either side failed or was idle too long.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Connects to `host:port` (a node's registered name; first address that answers).
pub async fn connect(host: &str, port: u16) -> Result<TcpStream, PassError> {
    let addrs: Vec<_> =
        tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::lookup_host((host, port)))
            .await
            .map_err(|_| PassError::Resolve(host.to_owned()))?
            .map_err(|_| PassError::Resolve(host.to_owned()))?
            .collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for addr in addrs {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(err)) => last = err,
            Err(_) => last = io::Error::new(io::ErrorKind::TimedOut, "connect timed out"),
        }
    }
    Err(PassError::Connect(format!("{host}:{port}"), last))
}

/// Sends `first` to `node`, then copies both ways until both sides close, or until nothing
/// moved either way for `idle`. The bytes each way, when it ends well.
pub async fn join<C, N>(
    client: C,
    node: N,
    first: &[u8],
    idle: Duration,
) -> Result<(u64, u64), PassError>
where
    C: AsyncRead + AsyncWrite + Unpin,
    N: AsyncRead + AsyncWrite + Unpin,
{
    let mut node = node;
    node.write_all(first).await?;
    let mut client = Idle::new(client, idle);
    let mut node = Idle::new(node, idle);
    let (up, down) = tokio::io::copy_bidirectional(&mut client, &mut node).await?;
    Ok((up + first.len() as u64, down))
}

/// A stream whose reads fail once nothing arrived for `idle` (a silent peer holds nothing).
struct Idle<S> {
    inner: S,
    idle: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl<S> Idle<S> {
    fn new(inner: S, idle: Duration) -> Self {
        Self {
            inner,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Idle<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                let next = tokio::time::Instant::now() + this.idle;
                this.deadline.as_mut().reset(next);
                Poll::Ready(result)
            }
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "idle too long",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

/// Writes go straight to the inner stream: the wrappers here change only reads.
macro_rules! write_through {
    ($wrapper:ident) => {
        impl<S: AsyncWrite + Unpin> AsyncWrite for $wrapper<S> {
            fn poll_write(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                Pin::new(&mut self.inner).poll_write(cx, buf)
            }

            fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                Pin::new(&mut self.inner).poll_flush(cx)
            }

            fn poll_shutdown(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<io::Result<()>> {
                Pin::new(&mut self.inner).poll_shutdown(cx)
            }
        }
    };
}

write_through!(Idle);

/// A stream that yields `prefix` before what `inner` reads: the bytes peeked to choose a route,
/// handed back to whatever serves the connection (TLS termination here).
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    /// `prefix`, then `inner`.
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Self {
            prefix,
            at: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.at < this.prefix.len() {
            let n = (this.prefix.len() - this.at).min(buf.remaining());
            buf.put_slice(&this.prefix[this.at..this.at + n]);
            this.at += n;
            if this.at == this.prefix.len() {
                this.prefix = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

write_through!(Prefixed);

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn the_prefix_comes_first_then_both_ways_untouched() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let node = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = vec![0; 11];
            s.read_exact(&mut got).await.unwrap();
            s.write_all(b"pong").await.unwrap();
            got
        });
        let (mut client, front_side) = tokio::io::duplex(64);
        let to_node = connect("127.0.0.1", addr.port()).await.unwrap();
        let joined = tokio::spawn(async move {
            join(front_side, to_node, b"hello", Duration::from_secs(5)).await
        });
        client.write_all(b" world").await.unwrap();
        let mut pong = [0; 4];
        client.read_exact(&mut pong).await.unwrap();
        assert_eq!(&pong, b"pong");
        assert_eq!(node.await.unwrap(), b"hello world");
        drop(client);
        let (up, down) = joined.await.unwrap().unwrap();
        assert_eq!((up, down), (11, 4));
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_pair_is_cut_after_the_idle_time() {
        let (_client, front_side) = tokio::io::duplex(64);
        let (_node, node_side) = tokio::io::duplex(64);
        let result = join(front_side, node_side, b"", Duration::from_secs(30)).await;
        assert!(matches!(result, Err(PassError::Io(e)) if e.kind() == io::ErrorKind::TimedOut));
    }

    #[tokio::test]
    async fn prefixed_replays_then_reads_on() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(b"def").await.unwrap();
        drop(a);
        let mut p = Prefixed::new(b"abc".to_vec(), b);
        let mut all = String::new();
        p.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "abcdef");
    }
}
