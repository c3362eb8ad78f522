//! Lets an in-process worker stop as a crash would: every open connection fails at once.
//!
//! Aborting the server task is not enough. tonic serves each connection on a task of its own,
//! and when the server goes away those connections shut down gracefully: until the abort is
//! processed, and for requests already on the wire, a "dead" worker still answers. Tests of
//! lost workers need the connections cut the moment the worker is killed.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Cuts every connection accepted through [`KillSwitch::wrap`] when pulled.
#[derive(Debug, Clone, Default)]
pub struct KillSwitch {
    token: CancellationToken,
}

impl KillSwitch {
    pub fn wrap(&self, inner: TcpStream) -> KillableStream {
        KillableStream {
            inner,
            killed: Box::pin(self.token.clone().cancelled_owned()),
        }
    }

    /// From now on every read and write on a wrapped connection fails.
    pub fn pull(&self) {
        self.token.cancel();
    }
}

/// A server-side TCP connection that fails, waking its reader and writer, once killed.
pub struct KillableStream {
    inner: TcpStream,
    killed: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl KillableStream {
    fn check_alive(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        // Polling registers the task's waker, so a pending read is woken by the kill.
        match self.killed.as_mut().poll(cx) {
            Poll::Ready(()) => Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "the worker was killed",
            )),
            Poll::Pending => Ok(()),
        }
    }
}

impl AsyncRead for KillableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check_alive(cx)?;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check_alive(cx)?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check_alive(cx)?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl Connected for KillableStream {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_pending_read_fails_when_the_switch_is_pulled() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut client = TcpStream::connect(addr).await.expect("connect");
        let (accepted, _) = listener.accept().await.expect("accept");
        let switch = KillSwitch::default();
        let mut server = switch.wrap(accepted);

        client.write_all(b"ping").await.expect("write");
        let mut buf = [0u8; 4];
        server.read_exact(&mut buf).await.expect("alive");
        assert_eq!(&buf, b"ping");

        let reader = crate::tasks::spawn_owned(async move {
            let mut buf = [0u8; 1];
            server.read(&mut buf).await
        });
        tokio::task::yield_now().await;
        switch.pull();
        let result = tokio::time::timeout(std::time::Duration::from_secs(5), reader)
            .await
            .expect("woken by the kill")
            .expect("join");
        let err = result.expect_err("killed");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    }
}
