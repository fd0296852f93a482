//! The fan-out generator's viewer side of a WebSocket: the opening handshake (async, on tokio),
//! then frames taken apart out of one buffer without any I/O ([`Frames`]), for the reader threads
//! of `super::readers` to feed.
//!
//! The generator shares the machine's two cores with the server it measures, so every cycle it
//! spends receiving is a cycle a multi-threaded server cannot use for sending. Through
//! tokio-tungstenite a viewer's frame cost zeroing a 4 KiB read buffer, a split-off allocation
//! and two waker registrations (about a third of the generator's samples at 1,000 viewers);
//! here it costs the read and a header parse. Only what a viewer needs: binary messages
//! (fragmented or not), pings (answered by the reader), a close. Frames it sends are masked
//! (RFC 6455 requires it of a client) with a zero key, which servers accept like any other.
//!
//! On Linux, over plain TCP, a viewer can also tell when the kernel took in the bytes it read
//! ([`RawWs::stamp_arrivals`], `SO_TIMESTAMPNS`, [`recv_stamped`]): when the server's data
//! reached the viewer, apart from when the generator got round to reading it.

use anyhow::Context as _;
use bytes::{Buf as _, BytesMut};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::net::NetStream;

/// The handshake reads this much at a time.
const READ_CHUNK: usize = 4096;

/// An HTTP response head longer than this is not a WebSocket upgrade.
const MAX_HEAD: usize = 16 * 1024;

/// Largest frame or message taken (a join's whole document is one message).
const MAX_MESSAGE: usize = 256 << 20;

pub struct RawWs {
    stream: NetStream,
    frames: Frames,
    /// Room for the timestamp's control message; `Some` once stamping is on.
    cmsg: Option<Vec<u8>>,
}

/// The frames read so far, taken apart without any I/O: bytes go in with [`Frames::extend`],
/// what they complete comes out of [`Frames::next`]. Shared by [`RawWs`] and the generator's
/// reader threads (`super::readers`).
#[derive(Default)]
pub struct Frames {
    buf: BytesMut,
    /// A fragmented message's pieces so far.
    partial: Vec<u8>,
    /// Whether the fragmented message being read is text (its pieces are dropped).
    partial_text: bool,
}

/// What [`Frames::next`] took out.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A whole binary message (its fragments joined).
    Binary(Vec<u8>),
    /// A ping, to be answered with a pong of this payload.
    Ping(Vec<u8>),
    /// The server closed.
    Close,
}

impl Frames {
    /// Adds bytes read from the socket.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Whether bytes are waiting that [`Frames::next`] has not taken (part of a frame, or
    /// frames after the one it gave).
    pub fn has_more(&self) -> bool {
        !self.buf.is_empty()
    }

    /// The next message, ping or close the buffered bytes complete; `None` until more arrive.
    /// Pongs and text messages (not part of the protocol) are skipped.
    pub fn next(&mut self) -> anyhow::Result<Option<Frame>> {
        while let Some(h) = header(&self.buf)? {
            if self.buf.len() < h.start + h.len {
                break;
            }
            let payload = h.start..h.start + h.len;
            let got = match h.opcode {
                0x8 => Some(Frame::Close),
                0x9 => Some(Frame::Ping(self.buf[payload].to_vec())),
                // A message's first frame: binary is kept, text (not part of the protocol)
                // dropped, with the continuations of either.
                0x1 | 0x2 => {
                    self.partial_text = h.opcode == 0x1;
                    self.partial.clear();
                    if self.partial_text {
                        None
                    } else if h.fin {
                        Some(Frame::Binary(self.buf[payload].to_vec()))
                    } else {
                        self.partial.extend_from_slice(&self.buf[payload]);
                        None
                    }
                }
                0x0 if !self.partial_text => {
                    anyhow::ensure!(
                        self.partial.len() + h.len <= MAX_MESSAGE,
                        "a message over {MAX_MESSAGE} bytes"
                    );
                    self.partial.extend_from_slice(&self.buf[payload]);
                    h.fin
                        .then(|| Frame::Binary(std::mem::take(&mut self.partial)))
                }
                // Pongs, and a text message's continuations.
                _ => None,
            };
            self.buf.advance(h.start + h.len);
            if got.is_some() {
                return Ok(got);
            }
        }
        Ok(None)
    }
}

/// A frame from a client: masked (RFC 6455 requires it) with a zero key, so the payload goes as
/// it is.
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(payload.len() + 14);
    frame.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= usize::from(u16::MAX) => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&[0; 4]);
    frame.extend_from_slice(payload);
    frame
}

/// One frame's header, parsed: its opcode, FIN bit, and where its payload lies in the buffer.
struct Header {
    fin: bool,
    opcode: u8,
    start: usize,
    len: usize,
}

/// The header at the start of `b`, if it is all there (an unmasked, server-to-client frame; a
/// masked one is refused).
fn header(b: &[u8]) -> anyhow::Result<Option<Header>> {
    if b.len() < 2 {
        return Ok(None);
    }
    anyhow::ensure!(b[1] & 0x80 == 0, "a server sent a masked frame");
    let (len, start) = match b[1] & 0x7f {
        126 if b.len() >= 4 => (usize::from(u16::from_be_bytes([b[2], b[3]])), 4),
        127 if b.len() >= 10 => {
            let mut n = [0u8; 8];
            n.copy_from_slice(&b[2..10]);
            (usize::try_from(u64::from_be_bytes(n))?, 10)
        }
        126 | 127 => return Ok(None),
        n => (usize::from(n), 2),
    };
    anyhow::ensure!(len <= MAX_MESSAGE, "a frame of {len} bytes");
    Ok(Some(Header {
        fin: b[0] & 0x80 != 0,
        opcode: b[0] & 0x0f,
        start,
        len,
    }))
}

impl RawWs {
    /// Opens a WebSocket to `url` (ws:// or wss://) over `stream`, connected to its host.
    pub async fn handshake(url: &str, mut stream: NetStream) -> anyhow::Result<RawWs> {
        let parsed = url::Url::parse(url).context("bad URL")?;
        let host = parsed.host_str().context("URL without a host")?;
        let host = match parsed.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        let path = match parsed.query() {
            Some(q) => format!("{}?{q}", parsed.path()),
            None => parsed.path().to_string(),
        };
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: cGFpcmVkaXQtYmVuY2gtMQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        let end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            anyhow::ensure!(
                buf.len() < MAX_HEAD,
                "the server's response head is too long"
            );
            buf.reserve(READ_CHUNK);
            anyhow::ensure!(
                stream.read_buf(&mut buf).await? > 0,
                "the server closed during the handshake"
            );
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let status = head.lines().next().unwrap_or_default();
        anyhow::ensure!(
            status.split_whitespace().nth(1) == Some("101"),
            "the server refused the upgrade: {status}"
        );
        buf.advance(end);
        Ok(RawWs {
            stream,
            frames: Frames {
                buf,
                ..Frames::default()
            },
            cmsg: None,
        })
    }

    /// The socket, the frames read but not yet taken, and the room for arrival stamps (`Some`
    /// once [`RawWs::stamp_arrivals`] is on).
    pub fn into_parts(self) -> (NetStream, Frames, Option<Vec<u8>>) {
        (self.stream, self.frames, self.cmsg)
    }

    /// Asks the kernel to stamp what arrives with the time it arrived (see [`RawWs::arrived`]).
    /// `false` where that is not available: over TLS, or off Linux.
    pub fn stamp_arrivals(&mut self) -> bool {
        #[cfg(target_os = "linux")]
        if let tokio_util::either::Either::Left(tcp) = &self.stream {
            use nix::sys::socket::{setsockopt, sockopt::ReceiveTimestampns};
            if setsockopt(tcp, ReceiveTimestampns, &true).is_ok() {
                self.cmsg = Some(nix::cmsg_space!(nix::sys::time::TimeSpec));
                return true;
            }
        }
        false
    }

    /// Sends `payload` as one binary message.
    pub async fn send_binary(&mut self, payload: &[u8]) -> anyhow::Result<()> {
        self.send(0x2, payload).await
    }

    async fn send(&mut self, opcode: u8, payload: &[u8]) -> anyhow::Result<()> {
        self.stream
            .write_all(&client_frame(opcode, payload))
            .await?;
        Ok(())
    }
}

/// One `recvmsg` on `socket` into `into`: how many bytes, and the kernel's arrival stamp of the
/// last of them if it gave one (see [`RawWs::stamp_arrivals`]).
#[cfg(target_os = "linux")]
pub fn recv_stamped(
    socket: &impl std::os::fd::AsRawFd,
    into: &mut [u8],
    cmsg: &mut [u8],
) -> std::io::Result<(usize, Option<std::time::SystemTime>)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    use std::time::{Duration, UNIX_EPOCH};
    let mut iov = [std::io::IoSliceMut::new(into)];
    let msg = recvmsg::<()>(socket.as_raw_fd(), &mut iov, Some(cmsg), MsgFlags::empty())?;
    let at = msg.cmsgs().ok().and_then(|mut all| {
        all.find_map(|c| match c {
            ControlMessageOwned::ScmTimestampns(ts) => {
                let secs = u64::try_from(ts.tv_sec()).ok()?;
                let nanos = u32::try_from(ts.tv_nsec()).ok()?;
                UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
            }
            _ => None,
        })
    });
    Ok((msg.bytes, at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_of_every_length_form() {
        assert!(header(&[0x82]).unwrap().is_none());
        let h = header(&[0x82, 5]).unwrap().unwrap();
        assert_eq!((h.fin, h.opcode, h.start, h.len), (true, 2, 2, 5));
        let h = header(&[0x02, 126, 1, 0]).unwrap().unwrap();
        assert_eq!((h.fin, h.opcode, h.start, h.len), (false, 2, 4, 256));
        assert!(header(&[0x82, 127, 0, 0]).unwrap().is_none());
        let h = header(&[0x80, 127, 0, 0, 0, 0, 0, 1, 0, 0])
            .unwrap()
            .unwrap();
        assert_eq!((h.opcode, h.start, h.len), (0, 10, 65536));
        assert!(header(&[0x82, 0x85]).is_err(), "masked");
        // A length no buffer could hold (from a review: it overflowed the slice's end).
        assert!(header(&[0x82, 127, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
    }
}
