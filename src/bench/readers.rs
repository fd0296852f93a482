//! The fan-out generator's receive side: a few threads, each waiting on its share of the viewers'
//! sockets with one `mio` poll and reading them in a plain loop.
//!
//! The generator shares the machine's cores with the server it measures, so every cycle it
//! spends receiving is one a multi-threaded server cannot spend sending. One tokio task per
//! viewer cost, per frame, a readiness wake-up, a task poll, a `select!` against the run's
//! cancellation and a waker registration: the generator used as much CPU per update as the
//! relay that sent it (`perf stat -e task-clock`, 1,000 viewers). Here a frame costs the
//! `recvmsg` and a header parse. Connecting and the opening handshake stay on tokio
//! ([`super::rawws::RawWs`]); a viewer is handed over once it has asked for the document.
//!
//! As many threads as the tokio runtime has workers (two here), so the generator's parallelism
//! is what it was.

use std::io::{self, Read as _, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};

use super::rawws::{Frame, Frames, RawWs, client_frame};

/// Read at most this much per call (a fan-out frame is tens of bytes; a join's state more).
const READ_CHUNK: usize = 64 * 1024;

/// The token of each thread's waker (connections are numbered from 0).
const WAKE: Token = Token(usize::MAX);

/// What a reader does with each viewer's messages.
pub trait Handler: Send + 'static {
    /// A binary message, and when the kernel took in its last bytes (`None` without stamps,
    /// or when the same read also took in bytes after it: one stamp per read, the last
    /// packet's, so the message may have come well before).
    fn message(&mut self, payload: &[u8], arrived: Option<SystemTime>);
}

/// One viewer's socket, as a reader thread holds it.
struct Conn<H> {
    stream: TcpStream,
    frames: Frames,
    /// Room for the arrival stamp's control message, when the socket stamps.
    cmsg: Option<Vec<u8>>,
    /// Pongs the socket has not taken yet.
    out: Vec<u8>,
    open: bool,
    handler: H,
}

struct Thread<H> {
    tx: mpsc::Sender<Conn<H>>,
    waker: Arc<Waker>,
    handle: std::thread::JoinHandle<Vec<H>>,
}

/// The reader threads. Viewers are added with [`Readers::adder`]; [`Readers::finish`] stops
/// the threads and gives back every handler.
pub struct Readers<H> {
    threads: Vec<Thread<H>>,
    stop: Arc<AtomicBool>,
}

/// Hands viewers to the reader threads (cloneable, for the tasks that connect them).
pub struct Adder<H> {
    threads: Vec<(mpsc::Sender<Conn<H>>, Arc<Waker>)>,
}

impl<H> Clone for Adder<H> {
    fn clone(&self) -> Self {
        Adder {
            threads: self.threads.clone(),
        }
    }
}

impl<H: Handler> Readers<H> {
    /// Starts `threads` reader threads (at least one).
    pub fn start(threads: usize) -> io::Result<Readers<H>> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut started = Vec::new();
        for i in 0..threads.max(1) {
            let poll = Poll::new()?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
            let (tx, rx) = mpsc::channel();
            let stop = stop.clone();
            let handle = std::thread::Builder::new()
                .name(format!("fanout-reader-{i}"))
                .spawn(move || run(poll, &rx, &stop))?;
            started.push(Thread { tx, waker, handle });
        }
        Ok(Readers {
            threads: started,
            stop,
        })
    }

    /// How many threads read.
    pub fn threads(&self) -> usize {
        self.threads.len()
    }

    pub fn adder(&self) -> Adder<H> {
        Adder {
            threads: self
                .threads
                .iter()
                .map(|t| (t.tx.clone(), t.waker.clone()))
                .collect(),
        }
    }

    /// Stops the threads and gives back the handlers of every viewer they were given, after
    /// a last read of every socket. Blocks until the threads are done (within one poll).
    pub fn finish(mut self) -> Vec<H> {
        self.stop();
        let mut handlers = Vec::new();
        for t in std::mem::take(&mut self.threads) {
            match t.handle.join() {
                Ok(mine) => handlers.extend(mine),
                Err(_) => eprintln!("fanout: a reader thread panicked; its viewers are lost"),
            }
        }
        handlers
    }
}

impl<H> Readers<H> {
    fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        for t in &self.threads {
            // A thread that cannot be woken still sees `stop` within its poll timeout.
            let _ = t.waker.wake();
        }
    }
}

/// Readers left without [`Readers::finish`] (a run that failed part-way) stop too.
impl<H> Drop for Readers<H> {
    fn drop(&mut self) {
        self.stop();
    }
}

impl<H: Handler> Adder<H> {
    /// Gives `ws` (plain TCP only) to reader thread `thread` (modulo their number); its
    /// messages, including any already read, go to `handler`.
    pub fn add(&self, thread: usize, ws: RawWs, handler: H) -> anyhow::Result<()> {
        let conn = Conn::new(ws, handler)?;
        let (tx, waker) = &self.threads[thread % self.threads.len()];
        tx.send(conn)
            .ok()
            .context("the reader thread has stopped")?;
        // The viewer is the thread's now; a failed wake-up only delays it to the poll's timeout.
        let _ = waker.wake();
        Ok(())
    }
}

/// A reader thread: waits for its sockets, reads what arrives, until `stop`; then reads every
/// socket once more (what came before the run ended counts) and gives back the handlers.
fn run<H: Handler>(mut poll: Poll, rx: &mpsc::Receiver<Conn<H>>, stop: &AtomicBool) -> Vec<H> {
    let mut conns: Vec<Conn<H>> = Vec::new();
    let mut events = Events::with_capacity(1024);
    let mut scratch = vec![0u8; READ_CHUNK];
    loop {
        let mut stopping = false;
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(100))) {
            events.clear();
            if e.kind() != io::ErrorKind::Interrupted {
                eprintln!("fanout: a reader thread cannot wait for its sockets: {e}");
                stopping = true;
            }
        }
        stopping |= stop.load(Ordering::Acquire);
        for ev in &events {
            if let Some(conn) = conns.get_mut(ev.token().0) {
                conn.readable(&mut scratch);
            }
        }
        while let Ok(mut conn) = rx.try_recv() {
            let token = Token(conns.len());
            if let Err(e) = poll
                .registry()
                .register(&mut conn.stream, token, Interest::READABLE)
            {
                eprintln!("fanout: a viewer's socket cannot be watched: {e}");
                conn.close();
            }
            // What the handshake read past the upgrade, then what waits in the socket (an
            // edge-triggered poll reports only what arrives from now on... or was there).
            conn.take_messages(None);
            conn.readable(&mut scratch);
            conns.push(conn);
        }
        if stopping {
            for conn in &mut conns {
                conn.readable(&mut scratch);
            }
            break;
        }
    }
    conns.into_iter().map(|c| c.handler).collect()
}

impl<H: Handler> Conn<H> {
    /// `ws` (plain TCP only), to be read with [`Conn::readable`].
    fn new(ws: RawWs, handler: H) -> anyhow::Result<Conn<H>> {
        let (stream, frames, cmsg) = ws.into_parts();
        let tokio_util::either::Either::Left(tcp) = stream else {
            anyhow::bail!("the fan-out readers take plain TCP (ws://), not TLS");
        };
        // tokio's socket is non-blocking, as mio wants it.
        let stream = TcpStream::from_std(tcp.into_std()?);
        Ok(Conn {
            stream,
            frames,
            cmsg,
            out: Vec::new(),
            open: true,
            handler,
        })
    }

    /// Reads until the socket is empty (the poll is edge-triggered), handing on each message.
    fn readable(&mut self, scratch: &mut [u8]) {
        while self.open {
            let (n, arrived) = match self.recv(scratch) {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => (0, None),
            };
            if n == 0 {
                self.close();
                break;
            }
            self.frames.extend(&scratch[..n]);
            self.take_messages(arrived);
            // A read that did not fill the buffer emptied the socket: a later arrival is a
            // new edge.
            if n < scratch.len() {
                break;
            }
        }
        self.flush();
    }

    /// Stops reading, and tells the server so (a viewer that no longer reads must not look to
    /// it like one that is slow).
    fn close(&mut self) {
        if self.open {
            self.open = false;
            let _ = self.stream.shutdown(std::net::Shutdown::Both);
        }
    }

    fn recv(&mut self, scratch: &mut [u8]) -> io::Result<(usize, Option<SystemTime>)> {
        #[cfg(target_os = "linux")]
        if let Some(cmsg) = self.cmsg.as_mut() {
            return super::rawws::recv_stamped(&self.stream, scratch, cmsg);
        }
        Ok(((&self.stream).read(scratch)?, None))
    }

    /// Hands on every message the buffered bytes complete, answers pings; a close or a broken
    /// frame ends the connection. `arrived` is the stamp of the read that took them in.
    fn take_messages(&mut self, arrived: Option<SystemTime>) {
        while self.open {
            match self.frames.next() {
                Ok(Some(Frame::Binary(message))) => {
                    let arrived = arrived.filter(|_| !self.frames.has_more());
                    self.handler.message(&message, arrived);
                }
                Ok(Some(Frame::Ping(payload))) => {
                    self.out.extend_from_slice(&client_frame(0xA, &payload));
                }
                Ok(Some(Frame::Close)) | Err(_) => self.close(),
                Ok(None) => break,
            }
        }
    }

    /// Writes pending pongs as far as the socket takes them (the rest waits for the next read:
    /// pings are rare and tiny).
    fn flush(&mut self) {
        while self.open && !self.out.is_empty() {
            match (&self.stream).write(&self.out) {
                Ok(0) => self.close(),
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => self.close(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// Passes each message and its stamp on to the test.
    struct Collect(mpsc::Sender<(Vec<u8>, Option<SystemTime>)>);

    impl Handler for Collect {
        fn message(&mut self, payload: &[u8], arrived: Option<SystemTime>) {
            let _ = self.0.send((payload.to_vec(), arrived));
        }
    }

    /// A server on loopback that answers the upgrade and then sends `frames`, with `101` in the
    /// same write (so the handshake reads some of them); it returns what the client sent after
    /// its request, up to the client's close.
    async fn serve(frames: Vec<u8>) -> (String, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/r", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            read_head(&mut s).await;
            let mut out = b"HTTP/1.1 101 Switching Protocols\r\n\r\n".to_vec();
            out.extend_from_slice(&frames);
            s.write_all(&out).await.unwrap();
            let mut back = Vec::new();
            let _ = s.read_to_end(&mut back).await;
            back
        });
        (url, task)
    }

    async fn read_head(s: &mut tokio::net::TcpStream) {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            assert_eq!(s.read(&mut b).await.unwrap(), 1, "the request head");
            head.push(b[0]);
        }
    }

    #[tokio::test]
    async fn messages_whole_or_in_pieces_pings_answered_text_dropped() {
        let frames = [
            &[0x01, 0x02, b'a', b'b'][..], // text, in two pieces: dropped
            &[0x80, 0x02, b'c', b'd'],
            &[0x02, 0x01, b'x'],       // binary, in two pieces
            &[0x89, 0x02, b'p', b'q'], // a ping between them
            &[0x80, 0x01, b'y'],
            &[0x8A, 0x00],       // a pong: skipped
            &[0x82, 0x01, b'z'], // binary, whole
        ]
        .concat();
        // Read plainly, and read with recvmsg for arrival stamps: the same messages.
        for stamped in [false, true] {
            let (url, server) = serve(frames.clone()).await;
            let stream = crate::net::connect(&url, None).await.unwrap();
            let mut ws = RawWs::handshake(&url, stream).await.unwrap();
            if stamped {
                assert_eq!(ws.stamp_arrivals(), cfg!(target_os = "linux"));
            }
            let readers = Readers::start(2).unwrap();
            let (tx, rx) = mpsc::channel();
            readers.adder().add(1, ws, Collect(tx)).unwrap();
            let got: Vec<Vec<u8>> = (0..2)
                .map(|_| rx.recv_timeout(Duration::from_secs(5)).expect("arrives").0)
                .collect();
            assert_eq!(got, [b"xy".to_vec(), b"z".to_vec()], "stamped: {stamped}");
            assert_eq!(readers.finish().len(), 1, "the handler comes back");
            // The thread has stopped and dropped the socket: the server has all it will get.
            let back = server.await.unwrap();
            assert_eq!(back, client_frame(0xA, b"pq"), "the ping answered, once");
            assert!(rx.try_recv().is_err(), "nothing more");
        }
    }

    /// A close ends the reading and shuts the socket; messages before it still count.
    #[tokio::test]
    async fn a_close_ends_the_connection() {
        let frames = [&[0x82, 0x01, b'a'][..], &[0x88, 0x00], &[0x82, 0x01, b'b']].concat();
        let (url, server) = serve(frames).await;
        let stream = crate::net::connect(&url, None).await.unwrap();
        let ws = RawWs::handshake(&url, stream).await.unwrap();
        let (tx, rx) = mpsc::channel();
        let mut conn = Conn::new(ws, Collect(tx)).unwrap();
        let mut scratch = vec![0; READ_CHUNK];
        // Everything came with the handshake's read.
        conn.take_messages(None);
        conn.readable(&mut scratch);
        assert!(!conn.open);
        assert_eq!(rx.try_recv().unwrap().0, b"a");
        assert!(rx.try_recv().is_err(), "nothing after the close");
        // The viewer told the server it is gone, though the connection is still held.
        let back = tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the socket is shut after the close")
            .unwrap();
        assert!(back.is_empty());
        drop(conn);
    }

    /// The stamp is when the kernel took the bytes in, not when they were read: it falls
    /// between the server's write and the client's being told of it, though the read comes
    /// later. (The kernel turns stamping on for the system a moment after the first socket asks,
    /// so the first frames may come unstamped: the client asks for frames until one is.)
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn arrival_stamps_are_the_kernels_not_the_reads() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/r", listener.local_addr().unwrap());
        let (sent_tx, mut sent_rx) = tokio::sync::mpsc::channel(2);
        let (go_tx, mut go_rx) = tokio::sync::mpsc::channel::<()>(2);
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            read_head(&mut s).await;
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
        let (tx, rx) = mpsc::channel();
        let mut conn = Conn::new(ws, Collect(tx)).unwrap();
        let mut scratch = vec![0; READ_CHUNK];
        let mut stamped = 0;
        for _ in 0..50 {
            go_tx.send(()).await.unwrap();
            let before_send = sent_rx.recv().await.unwrap();
            let told = SystemTime::now();
            tokio::time::sleep(Duration::from_millis(50)).await;
            conn.readable(&mut scratch);
            let (got, arrived) = rx.try_recv().expect("the frame was read");
            assert_eq!(got, b"hi");
            let Some(arrived) = arrived else {
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
        tokio::time::sleep(Duration::from_millis(50)).await;
        conn.readable(&mut scratch);
        let first = rx.try_recv().unwrap();
        assert_eq!(
            first,
            (b"hi".to_vec(), None),
            "a frame with another behind it"
        );
        let (second, arrived) = rx.try_recv().unwrap();
        assert_eq!(second, b"hi");
        assert!(arrived.is_some(), "the read's last frame");
        drop(go_tx);
        server.await.unwrap();
    }
}
