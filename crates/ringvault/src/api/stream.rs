//! A streaming HTTP body fed by a channel: the server streams a large object's chunks through
//! it as they are fetched and verified, and the CLI streams a file's pieces into an upload.
//! At most the channel's capacity (plus one piece in hand) is held in memory.

use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use hyper::body::Bytes;
use tokio::sync::mpsc;

/// A body whose pieces arrive on a channel; an `Err` aborts the transfer (the peer sees a
/// truncated body, never a wrong one). With a known length, HTTP/1 sends `content-length`.
pub struct ChannelBody {
    rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
    len: Option<u64>,
}

impl ChannelBody {
    /// A body of `len` bytes (if known) and the sender that feeds it, holding at most `depth`
    /// pieces.
    pub fn new(
        len: Option<u64>,
        depth: usize,
    ) -> (mpsc::Sender<Result<Bytes, std::io::Error>>, Self) {
        let (tx, rx) = mpsc::channel(depth.max(1));
        (tx, ChannelBody { rx, len })
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|piece| piece.map(|r| r.map(Frame::data)))
    }

    fn size_hint(&self) -> SizeHint {
        self.len.map(SizeHint::with_exact).unwrap_or_default()
    }
}
