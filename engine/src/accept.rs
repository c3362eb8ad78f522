//! Accepting connections for shoal's gRPC servers.

use tokio::net::{TcpListener, TcpStream};
use tokio_stream::{Stream, StreamExt};

/// The listener's connections with Nagle's algorithm off. A gRPC response goes out as
/// several small writes (headers, data, trailers); with Nagle on, each small write after the
/// first waits for the peer's delayed ACK, about 40 ms on Linux, so a short query paid that
/// several times over. tonic sets `TCP_NODELAY` only on listeners it binds itself.
pub fn accept_nodelay(listener: TcpListener) -> impl Stream<Item = std::io::Result<TcpStream>> {
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|accepted| {
        let stream = accepted?;
        stream.set_nodelay(true)?;
        Ok(stream)
    })
}
