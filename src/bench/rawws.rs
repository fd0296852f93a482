//! The fan-out generator's viewer side of a WebSocket: the opening handshake, then frames read
//! straight out of one reused buffer.
//!
//! The generator shares the machine's two cores with the server it measures, so every cycle it
//! spends receiving is a cycle a multi-threaded server cannot use for sending. Through
//! tokio-tungstenite a viewer's frame cost zeroing a 4 KiB read buffer, a split-off allocation
//! and two waker registrations (about a third of the generator's samples at 1,000 viewers);
//! here it costs the read and a header parse. Only what a viewer needs: binary messages
//! (fragmented or not), pings answered, a close ends the stream. Frames it sends are masked
//! (RFC 6455 requires it of a client) with a zero key, which servers accept like any other.
//!
//! On Linux, over plain TCP, it can also tell when the kernel took in the bytes it read
//! ([`RawWs::stamp_arrivals`], `SO_TIMESTAMPNS`): when the server's data reached the viewer, apart
//! from when the generator got round to reading it.

use anyhow::Context as _;
use bytes::{Buf as _, BytesMut};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::net::NetStream;

/// Read at most this much per call (a fan-out frame is tens of bytes; a join's state more).
const READ_CHUNK: usize = 4096;

/// An HTTP response head longer than this is not a WebSocket upgrade.
const MAX_HEAD: usize = 16 * 1024;

/// Largest frame or message taken (a join's whole document is one message).
const MAX_MESSAGE: usize = 256 << 20;

pub struct RawWs {
    stream: NetStream,
    buf: BytesMut,
    /// A fragmented message's pieces so far.
    partial: Vec<u8>,
    /// Whether the fragmented message being read is text (its pieces are dropped).
    partial_text: bool,
    /// When the kernel took in the bytes read last (once [`RawWs::stamp_arrivals`] is on).
    arrived: Option<std::time::SystemTime>,
    /// Room for the timestamp's control message; `Some` once stamping is on.
    #[cfg(target_os = "linux")]
    cmsg: Option<Vec<u8>>,
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
            buf,
            partial: Vec::new(),
            partial_text: false,
            arrived: None,
            #[cfg(target_os = "linux")]
            cmsg: None,
        })
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

    /// When the message [`RawWs::next_binary`] returned last reached the socket: the kernel's
    /// stamp of the read that took in its last bytes. `None` unless [`RawWs::stamp_arrivals`]
    /// is on, and `None` when that read also took in bytes after the message: TCP gives one
    /// stamp per read, the last packet's (and a packet merged into an earlier one passes its
    /// stamp on), so the message may have arrived well before it.
    pub fn arrived(&self) -> Option<std::time::SystemTime> {
        self.arrived.filter(|_| self.buf.is_empty())
    }

    /// Reads what the socket has into the buffer; 0 at its end.
    async fn read_more(&mut self) -> std::io::Result<usize> {
        #[cfg(target_os = "linux")]
        if let (Some(cmsg), tokio_util::either::Either::Left(tcp)) =
            (self.cmsg.as_mut(), &self.stream)
        {
            let (n, at) = stamped::read(tcp, &mut self.buf, cmsg).await?;
            // Bytes that came unstamped (the kernel turns stamping on a moment after it is
            // asked) leave no stamp rather than the last one.
            self.arrived = at;
            return Ok(n);
        }
        self.buf.reserve(READ_CHUNK);
        self.stream.read_buf(&mut self.buf).await
    }

    /// Sends `payload` as one binary message.
    pub async fn send_binary(&mut self, payload: &[u8]) -> anyhow::Result<()> {
        self.send(0x2, payload).await
    }

    async fn send(&mut self, opcode: u8, payload: &[u8]) -> anyhow::Result<()> {
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
        // The masking key: zero, so the payload goes as it is.
        frame.extend_from_slice(&[0; 4]);
        frame.extend_from_slice(payload);
        self.stream.write_all(&frame).await?;
        Ok(())
    }

    /// The next binary message; `None` once the server closed. Pings are answered on the way.
    /// Cancel-safe: what was read stays in the buffer.
    pub async fn next_binary(&mut self) -> anyhow::Result<Option<Vec<u8>>> {
        loop {
            while let Some(h) = header(&self.buf)? {
                if self.buf.len() < h.start + h.len {
                    break;
                }
                let payload = self.buf[h.start..h.start + h.len].to_vec();
                self.buf.advance(h.start + h.len);
                match h.opcode {
                    0x8 => return Ok(None),
                    0x9 => self.send(0xA, &payload).await?,
                    // A message's first frame: binary is kept, text (not part of the protocol)
                    // dropped, with the continuations of either.
                    0x1 | 0x2 => {
                        self.partial_text = h.opcode == 0x1;
                        self.partial.clear();
                        if h.fin {
                            if !self.partial_text {
                                return Ok(Some(payload));
                            }
                        } else if !self.partial_text {
                            self.partial = payload;
                        }
                    }
                    0x0 if !self.partial_text => {
                        anyhow::ensure!(
                            self.partial.len() + payload.len() <= MAX_MESSAGE,
                            "a message over {MAX_MESSAGE} bytes"
                        );
                        self.partial.extend_from_slice(&payload);
                        if h.fin {
                            return Ok(Some(std::mem::take(&mut self.partial)));
                        }
                    }
                    // Pongs, and a text message's continuations.
                    _ => {}
                }
            }
            if self.read_more().await? == 0 {
                return Ok(None);
            }
        }
    }
}

/// Reads with `recvmsg`, for the kernel's arrival stamp beside the bytes.
#[cfg(target_os = "linux")]
mod stamped {
    use std::cell::RefCell;
    use std::io;
    use std::os::fd::AsRawFd as _;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use bytes::BytesMut;
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    use tokio::io::Interest;
    use tokio::net::TcpStream;

    thread_local! {
        /// Where `recvmsg` reads to (it wants initialised memory), before the bytes are copied
        /// to the connection's buffer: one per thread, not one per viewer.
        static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; super::READ_CHUNK]);
    }

    /// Reads what `tcp` has (waiting until it has something) onto `buf`: how many bytes, and
    /// when the kernel took in the last of them.
    pub async fn read(
        tcp: &TcpStream,
        buf: &mut BytesMut,
        cmsg: &mut [u8],
    ) -> io::Result<(usize, Option<SystemTime>)> {
        loop {
            tcp.readable().await?;
            let mut got = None;
            let tried = tcp.try_io(Interest::READABLE, || {
                let (n, at) = SCRATCH.with_borrow_mut(|scratch| {
                    let (n, at) = recv_stamped(tcp, scratch, cmsg)?;
                    buf.extend_from_slice(&scratch[..n]);
                    io::Result::Ok((n, at))
                })?;
                got = Some((n, at));
                // A read that did not fill the buffer emptied the socket: say so, so that
                // tokio forgets its readiness (as its own `read` does) rather than the next
                // read finding nothing, one wasted system call per message.
                if n == 0 || n == super::READ_CHUNK {
                    Ok(())
                } else {
                    Err(io::ErrorKind::WouldBlock.into())
                }
            });
            if let Some(got) = got {
                return Ok(got);
            }
            // No bytes: nothing there after all, or a signal; anything else ends the read.
            if let Err(e) = tried
                && !matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                )
            {
                return Err(e);
            }
        }
    }

    /// One `recvmsg` into `into`: how many bytes, and the kernel's stamp if it gave one.
    fn recv_stamped(
        tcp: &TcpStream,
        into: &mut [u8],
        cmsg: &mut [u8],
    ) -> io::Result<(usize, Option<SystemTime>)> {
        let mut iov = [io::IoSliceMut::new(into)];
        let msg = recvmsg::<()>(tcp.as_raw_fd(), &mut iov, Some(cmsg), MsgFlags::empty())?;
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

    /// A server on loopback that answers the upgrade and then sends `frames`.
    async fn serve(frames: Vec<u8>) -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/r", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let mut b = [0u8; 1];
                if s.read(&mut b).await.unwrap() == 0 {
                    return;
                }
                head.push(b[0]);
            }
            s.write_all(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
                .await
                .unwrap();
            s.write_all(&frames).await.unwrap();
            // Hold the connection until the client is done.
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest).await;
        });
        (url, task)
    }

    #[tokio::test]
    async fn messages_whole_or_in_pieces_and_text_dropped() {
        let frames = [
            &[0x01, 0x02, b'a', b'b'][..], // text, in two pieces: dropped
            &[0x80, 0x02, b'c', b'd'],
            &[0x02, 0x01, b'x'], // binary, in two pieces
            &[0x89, 0x00],       // a ping between them
            &[0x80, 0x01, b'y'],
            &[0x82, 0x01, b'z'], // binary, whole
            &[0x88, 0x00],       // close
        ]
        .concat();
        // Read plainly, and read with recvmsg for arrival stamps: the same messages.
        for stamped in [false, true] {
            let got = read_all(frames.clone(), stamped).await;
            assert_eq!(
                got,
                vec![b"xy".to_vec(), b"z".to_vec()],
                "stamped: {stamped}"
            );
        }
    }

    async fn read_all(frames: Vec<u8>, stamped: bool) -> Vec<Vec<u8>> {
        let (url, server) = serve(frames).await;
        let stream = crate::net::connect(&url, None).await.unwrap();
        let mut ws = RawWs::handshake(&url, stream).await.unwrap();
        if stamped {
            assert_eq!(ws.stamp_arrivals(), cfg!(target_os = "linux"));
        }
        let mut got = Vec::new();
        while let Some(m) =
            tokio::time::timeout(std::time::Duration::from_secs(5), ws.next_binary())
                .await
                .expect("frames arrive")
                .unwrap()
        {
            got.push(m);
        }
        drop(ws);
        server.await.unwrap();
        got
    }

    /// The stamp is when the kernel took the bytes in, not when they were read: it falls
    /// between the server's write and the client's being told of it, though the read comes
    /// later. (The kernel turns stamping on for the system a moment after the first socket asks,
    /// so the first frames may come unstamped: the client asks for frames until one is.)
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn arrival_stamps_are_the_kernels_not_the_reads() {
        use std::time::SystemTime;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/r", listener.local_addr().unwrap());
        let (sent_tx, mut sent_rx) = tokio::sync::mpsc::channel(1);
        let (go_tx, mut go_rx) = tokio::sync::mpsc::channel::<()>(1);
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let mut b = [0u8; 1];
                assert_eq!(s.read(&mut b).await.unwrap(), 1);
                head.push(b[0]);
            }
            s.write_all(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
                .await
                .unwrap();
            // A frame each time the client asks.
            while go_rx.recv().await.is_some() {
                let before = SystemTime::now();
                s.write_all(&[0x82, 0x02, b'h', b'i']).await.unwrap();
                sent_tx.send(before).await.unwrap();
            }
        });
        let stream = crate::net::connect(&url, None).await.unwrap();
        let mut ws = RawWs::handshake(&url, stream).await.unwrap();
        assert!(ws.stamp_arrivals(), "plain TCP on Linux takes stamps");
        assert_eq!(ws.arrived(), None);
        let mut stamped = 0;
        for _ in 0..50 {
            go_tx.send(()).await.unwrap();
            let before_send = sent_rx.recv().await.unwrap();
            let told = SystemTime::now();
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            let got = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next_binary())
                .await
                .expect("the frame arrives")
                .unwrap();
            assert_eq!(got.as_deref(), Some(&b"hi"[..]));
            let Some(arrived) = ws.arrived() else {
                continue;
            };
            assert!(before_send <= arrived, "{arrived:?} is before the write");
            assert!(
                arrived <= told,
                "{arrived:?} is after the client was told, {told:?}"
            );
            stamped += 1;
            if stamped == 3 {
                break;
            }
        }
        assert_eq!(stamped, 3, "frames came stamped");
        // Two frames taken in by one read: the stamp is the second's, so the first has none.
        go_tx.send(()).await.unwrap();
        go_tx.send(()).await.unwrap();
        sent_rx.recv().await.unwrap();
        sent_rx.recv().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(ws.next_binary().await.unwrap().as_deref(), Some(&b"hi"[..]));
        assert_eq!(
            ws.arrived(),
            None,
            "a frame with another behind it in its read"
        );
        assert_eq!(ws.next_binary().await.unwrap().as_deref(), Some(&b"hi"[..]));
        assert!(ws.arrived().is_some(), "the read's last frame");
        drop(go_tx);
        server.await.unwrap();
    }
}
