//! A registry that misbehaves on purpose: a small HTTP server on loopback whose
//! answers a test writes byte by byte. Each connection is handled on a thread of
//! its own, bounded in time; the server stops when dropped.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long one connection may be served, whatever the answer.
const CONNECTION_BOUND: Duration = Duration::from_secs(30);

type Respond = dyn Fn(&str, &mut TcpStream) + Send + Sync;

pub struct Hostile {
    pub address: SocketAddr,
    /// The request heads received, in order.
    pub seen: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Hostile {
    /// Serves every request with `respond(head, stream)`.
    pub fn start(respond: impl Fn(&str, &mut TcpStream) + Send + Sync + 'static) -> Hostile {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let respond: Arc<Respond> = Arc::new(respond);
        let thread = {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::Acquire) {
                        return;
                    }
                    let Ok(mut stream) = stream else { continue };
                    let (seen, respond) = (seen.clone(), respond.clone());
                    std::thread::spawn(move || {
                        let _ = stream.set_read_timeout(Some(CONNECTION_BOUND));
                        let _ = stream.set_write_timeout(Some(CONNECTION_BOUND));
                        let started = Instant::now();
                        // Keep-alive: answer requests until the client closes.
                        while started.elapsed() < CONNECTION_BOUND {
                            let Some(head) = read_head(&mut stream) else {
                                return;
                            };
                            seen.lock().unwrap().push(head.clone());
                            respond(&head, &mut stream);
                        }
                    });
                }
            })
        };
        Hostile {
            address,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT` — a loopback registry, spoken to over plain HTTP.
    pub fn host(&self) -> String {
        self.address.to_string()
    }

    /// Whether any request carried an `Authorization` header.
    pub fn saw_credentials(&self) -> bool {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .any(|head| head.to_ascii_lowercase().contains("\r\nauthorization:"))
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.address);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).ok()? == 0 || head.len() > 64 * 1024 {
            return None;
        }
        head.push(byte[0]);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// The request line's path.
pub fn path_of(head: &str) -> &str {
    head.split_whitespace().nth(1).unwrap_or("")
}

/// Writes a whole response with a body.
pub fn answer(stream: &mut TcpStream, status: &str, headers: &str, body: &[u8]) {
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\n{headers}\r\n",
        body.len()
    );
    let _ = stream.write_all(body);
}

/// Writes a chunked body that never ends: `piece` again and again, until the
/// client goes away or `most` bytes were sent.
pub fn endless(stream: &mut TcpStream, status: &str, headers: &str, piece: &[u8], most: u64) {
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nTransfer-Encoding: chunked\r\n{headers}\r\n"
    );
    let chunk = [format!("{:x}\r\n", piece.len()).as_bytes(), piece, b"\r\n"].concat();
    let mut sent = 0u64;
    while sent < most {
        if stream.write_all(&chunk).is_err() {
            return;
        }
        sent += piece.len() as u64;
    }
}

/// An OCI manifest with `layers` (each `(media type, digest, size)`).
pub fn manifest_json(layers: &[(&str, &str, u64)]) -> String {
    let layers: Vec<String> = layers
        .iter()
        .map(|(media, digest, size)| {
            format!(r#"{{"mediaType":"{media}","digest":"{digest}","size":{size}}}"#)
        })
        .collect();
    format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.wasm.config.v0+json","digest":"sha256:{}","size":2}},"layers":[{}]}}"#,
        "0".repeat(64),
        layers.join(",")
    )
}

pub const MANIFEST_TYPE: &str = "Content-Type: application/vnd.oci.image.manifest.v1+json\r\n";
