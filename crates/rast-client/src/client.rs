//! The Rust client: connect to a cluster, find the leader, follow redirects,
//! retry safely, pipeline.
//!
//! Blocking and dependency-free on purpose: it is a library for programs that
//! append and read, for the CLI, and for the test and benchmark harnesses.
//! A [`Connection`] speaks the protocol on one socket and can pipeline many
//! requests; a [`Client`] owns at most one connection at a time, to the node
//! it believes is the leader, and moves when told otherwise.
//!
//! Retries are safe by construction: a request is retried on another node
//! only when the answer proves it was not applied (`NotLeader`,
//! `Unavailable`, a refused connection). Key-value writes carry the client's
//! session id and sequence number, so the state machine applies a retried
//! write once; an append that may have been applied is reported as
//! [`ClientError::Unknown`] rather than retried into a duplicate.
//!
//! ```no_run
//! use rast_client::{Client, ClientOptions};
//!
//! let mut client = Client::new(
//!     &["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"],
//!     ClientOptions::default(),
//! )?;
//! let appended = client.append("default", &[b"hello".as_slice(), b"world"])?;
//! let entries = client.read("default", appended.first_index, 2)?;
//! assert_eq!(entries[0].1, b"hello");
//! # Ok::<(), rast_client::ClientError>(())
//! ```

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::limits::FRAME_BYTES_MAX;
use crate::types::{LogIndex, Term};
use crate::verbs::{self, Answer, Attempt, Backoff, Call, Next, Route, Session, TailBuffer};
use crate::wire::client::{
    self as protocol, ErrorReply, Hello, KvOperation, RequestBody, Response, ResponseBody, Status,
};
use crate::wire::{BatchView, FrameLength, WireError, frame_length};

/// Everything that can go wrong on the client side.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket failed.
    #[error("io: {0}")]
    Io(#[from] io::Error),
    /// The node sent bytes we cannot read.
    #[error("protocol: {0}")]
    Wire(#[from] WireError),
    /// The node refused the handshake.
    #[error("refused: {0}")]
    Refused(String),
    /// The node answered with a typed error.
    #[error("{}", .0.message)]
    Reply(ErrorReply),
    /// No node answered usefully within the timeout.
    #[error("no leader reachable among {addresses} after {attempts} attempts: {last}")]
    NoLeader {
        /// Addresses tried.
        addresses: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// The request may or may not have been applied (the connection broke
    /// after it was sent). Appends are not retried blindly.
    #[error("outcome unknown: {0}")]
    Unknown(String),
    /// The node answered something that does not fit the request.
    #[error("unexpected response: {0}")]
    Unexpected(String),
}

/// Client settings.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Cluster id sent in the handshake.
    pub cluster_id: String,
    /// Shared secret, if the cluster requires one.
    pub token: Vec<u8>,
    /// Socket read/write and connect timeout.
    pub timeout: Duration,
    /// Total time to keep looking for a leader before giving up.
    pub deadline: Duration,
    /// Exactly-once session id for key-value writes (0 picks one at random).
    pub client_id: u64,
    /// TLS, for a cluster that serves it (`None`: plain TCP).
    #[cfg(feature = "tls")]
    pub tls: Option<crate::tls::TlsOptions>,
}

impl ClientOptions {
    /// The `Hello` frame a client opens every connection with.
    pub fn hello(&self) -> Vec<u8> {
        protocol::encode_hello(&Hello {
            protocol_version: protocol::PROTOCOL_VERSION,
            cluster_id: self.cluster_id.clone(),
            node_id: 0,
            token: self.token.clone(),
            core: 0,
            cores: 0,
        })
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            cluster_id: "rast".to_owned(),
            token: Vec::new(),
            timeout: Duration::from_secs(5),
            deadline: Duration::from_secs(15),
            client_id: 0,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

/// A connection's byte stream: plain TCP, or TLS over it. Clones share
/// the socket (and the TLS session), so one can read while another writes
/// in turn; a TLS stream must not block in a read on one thread while
/// another writes (they share the session's lock).
#[derive(Debug)]
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// A TLS session over TCP.
    #[cfg(feature = "tls")]
    Tls(crate::tls::Session),
}

impl Stream {
    /// Connects to `address` (no-delay, the options' timeouts) and opens
    /// TLS when the options ask for it; no handshake of the protocol yet.
    pub fn connect(address: &str, options: &ClientOptions) -> Result<Self, ClientError> {
        let socket_address = address
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address"))?;
        let stream = TcpStream::connect_timeout(&socket_address, options.timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(options.timeout))?;
        stream.set_write_timeout(Some(options.timeout))?;
        #[cfg(feature = "tls")]
        if let Some(tls) = &options.tls {
            return Ok(Self::Tls(tls.wrap(address, stream)?));
        }
        Ok(Self::Plain(stream))
    }

    /// The TCP socket underneath (a clone of its descriptor), e.g. to shut
    /// it from another thread.
    pub fn socket(&self) -> io::Result<TcpStream> {
        match self {
            Self::Plain(stream) => stream.try_clone(),
            #[cfg(feature = "tls")]
            Self::Tls(session) => crate::tls::lock(session)?.sock.try_clone(),
        }
    }

    /// Another handle on the same stream.
    pub fn try_clone(&self) -> io::Result<Self> {
        match self {
            Self::Plain(stream) => stream.try_clone().map(Self::Plain),
            #[cfg(feature = "tls")]
            Self::Tls(session) => Ok(Self::Tls(std::sync::Arc::clone(session))),
        }
    }

    /// Sets the socket's read timeout.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Self::Plain(stream) => stream.set_read_timeout(timeout),
            #[cfg(feature = "tls")]
            Self::Tls(session) => crate::tls::lock(session)?.sock.set_read_timeout(timeout),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(stream) => stream.read(buffer),
            #[cfg(feature = "tls")]
            Self::Tls(session) => crate::tls::lock(session)?.read(buffer),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buffer: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(stream) => stream.write(buffer),
            #[cfg(feature = "tls")]
            Self::Tls(session) => crate::tls::lock(session)?.write(buffer),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(stream) => stream.flush(),
            #[cfg(feature = "tls")]
            Self::Tls(session) => crate::tls::lock(session)?.flush(),
        }
    }
}

/// One protocol connection to one node; pipelines requests.
#[derive(Debug)]
pub struct Connection {
    reader: BufReader<Stream>,
    writer: BufWriter<Stream>,
    node_id: u64,
    next_request_id: u64,
}

impl Connection {
    /// Connects and performs the handshake.
    pub fn open(address: &str, options: &ClientOptions) -> Result<Self, ClientError> {
        let stream = Stream::connect(address, options)?;
        let mut connection = Self {
            reader: BufReader::with_capacity(256 * 1024, stream.try_clone()?),
            writer: BufWriter::with_capacity(256 * 1024, stream),
            node_id: 0,
            next_request_id: 1,
        };
        connection.writer.write_all(&options.hello())?;
        connection.writer.flush()?;
        // A TLS record (an alert, 0x15, or a handshake, 0x16, of version
        // 3.x) where a frame should be: the node serves TLS.
        if let [0x15 | 0x16, 0x03, ..] = std::io::BufRead::fill_buf(&mut connection.reader)? {
            return Err(ClientError::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                "the node serves TLS: give the cluster's CA certificate (--tls-ca, TlsOptions)",
            )));
        }
        let frame = connection.read_frame()?;
        connection.node_id = verbs::welcomed(&frame)?;
        Ok(connection)
    }

    /// The id of the node at the other end.
    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// Queues a request (and, for an append, its batch frame) without
    /// waiting; returns its id. Call [`Self::flush`] to send.
    pub fn send(
        &mut self,
        log: &str,
        body: RequestBody,
        batch: Option<&[u8]>,
    ) -> Result<u64, ClientError> {
        let (request_id, frame) = verbs::request_frame(&mut self.next_request_id, log, body);
        self.writer.write_all(&frame)?;
        if let Some(batch) = batch {
            self.writer.write_all(batch)?;
        }
        Ok(request_id)
    }

    /// Sends everything queued.
    pub fn flush(&mut self) -> Result<(), ClientError> {
        self.writer.flush()?;
        Ok(())
    }

    /// Receives the next response and the batch frames that follow it.
    pub fn receive(&mut self) -> Result<(Response, Vec<Vec<u8>>), ClientError> {
        let frame = self.read_frame()?;
        let response = protocol::decode_response(&frame)?;
        let mut batches = Vec::new();
        if let ResponseBody::Batches(count) = response.body {
            for _ in 0..count {
                let batch = self.read_frame()?;
                let view = BatchView::parse(&batch)?;
                view.verify_checksum()?;
                batches.push(batch);
            }
        }
        Ok((response, batches))
    }

    /// Sends one request and waits for its answer.
    pub fn call(
        &mut self,
        log: &str,
        body: RequestBody,
        batch: Option<&[u8]>,
    ) -> Result<(ResponseBody, Vec<Vec<u8>>), ClientError> {
        let id = self.send(log, body, batch)?;
        self.flush()?;
        loop {
            let (response, batches) = self.receive()?;
            if response.request_id == id {
                return Ok((response.body, batches));
            }
        }
    }

    /// Sets the socket's read timeout (`None`: wait forever, for tails).
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) -> Result<(), ClientError> {
        self.reader.get_ref().set_read_timeout(timeout)?;
        Ok(())
    }

    /// Reads one frame, refusing a declared size over the limit before
    /// buffering it.
    fn read_frame(&mut self) -> Result<Vec<u8>, ClientError> {
        let mut frame = vec![0u8; 4];
        self.reader.read_exact(&mut frame)?;
        loop {
            match frame_length(&frame)? {
                FrameLength::NeedHeader(need) => {
                    let have = frame.len();
                    frame.resize(need, 0);
                    self.reader.read_exact(&mut frame[have..])?;
                }
                FrameLength::Complete { frame_bytes, .. } => {
                    debug_assert!(frame_bytes <= FRAME_BYTES_MAX);
                    let have = frame.len();
                    frame.resize(frame_bytes, 0);
                    self.reader.read_exact(&mut frame[have..])?;
                    return Ok(frame);
                }
            }
        }
    }
}

/// The answer to an append.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// Index of the first entry.
    pub first_index: LogIndex,
    /// Entries appended.
    pub count: u32,
    /// The term they were appended in.
    pub term: Term,
}

/// Committed entries of a log as they commit (see [`Client::tail`]).
#[derive(Debug)]
pub struct TailStream {
    connection: Connection,
    buffer: TailBuffer,
}

impl Iterator for TailStream {
    type Item = Result<(LogIndex, Vec<u8>), ClientError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(entry) = self.buffer.pop() {
                return Some(Ok(entry));
            }
            if let Err(error) = self.buffer.fill(self.connection.receive()) {
                return Some(Err(error));
            }
        }
    }
}

/// Outcome of a compare-and-put.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CasOutcome {
    /// The value was replaced.
    Swapped,
    /// The current value differed; here it is (`None`: absent).
    Mismatch(Option<Vec<u8>>),
}

/// A cluster client: leader discovery, redirects, safe retries.
#[derive(Debug)]
pub struct Client {
    route: Route,
    options: ClientOptions,
    connection: Option<Connection>,
    session: Session,
}

impl Client {
    /// A client for the cluster at `addresses`; connects lazily.
    pub fn new<S: AsRef<str>>(
        addresses: &[S],
        options: ClientOptions,
    ) -> Result<Self, ClientError> {
        Ok(Self {
            route: Route::new(addresses)?,
            session: Session::new(options.client_id),
            options,
            connection: None,
        })
    }

    /// Appends one batch of entries to `log`.
    ///
    /// ```no_run
    /// # use rast_client::*;
    /// # let mut client = Client::new(&["127.0.0.1:7001"], ClientOptions::default())?;
    /// let appended = client.append("default", &["one", "two"])?;
    /// assert_eq!(appended.count, 2); // indexes first_index and first_index + 1
    /// # Ok::<(), ClientError>(())
    /// ```
    pub fn append<P: AsRef<[u8]>>(
        &mut self,
        log: &str,
        entries: &[P],
    ) -> Result<Appended, ClientError> {
        verbs::appended(self.request(&verbs::append(log, entries))?)
    }

    /// Reads up to `max_entries` committed entries from `from`.
    ///
    /// ```no_run
    /// # use rast_client::*;
    /// # let mut client = Client::new(&["127.0.0.1:7001"], ClientOptions::default())?;
    /// for (index, payload) in client.read("default", types::LogIndex(1), 100)? {
    ///     println!("{index}: {}", String::from_utf8_lossy(&payload));
    /// }
    /// # Ok::<(), ClientError>(())
    /// ```
    pub fn read(
        &mut self,
        log: &str,
        from: LogIndex,
        max_entries: u32,
    ) -> Result<Vec<(LogIndex, Vec<u8>)>, ClientError> {
        let answer = self.request(&verbs::read(log, from, max_entries))?;
        verbs::entries(answer, from, max_entries)
    }

    /// Follows `log` from `from`: the returned stream yields committed
    /// entries as they commit, forever (read it from a thread of its own).
    ///
    /// ```no_run
    /// # use rast_client::*;
    /// # let mut client = Client::new(&["127.0.0.1:7001"], ClientOptions::default())?;
    /// for entry in client.tail("default", types::LogIndex(1))? {
    ///     let (index, payload) = entry?;
    ///     println!("{index}: {} bytes", payload.len());
    /// }
    /// # Ok::<(), ClientError>(())
    /// ```
    pub fn tail(&mut self, log: &str, from: LogIndex) -> Result<TailStream, ClientError> {
        let mut connection = Connection::open(self.route.current(), &self.options)?;
        connection.send(log, verbs::tail(from), None)?;
        connection.flush()?;
        connection.set_read_timeout(None)?;
        Ok(TailStream {
            connection,
            buffer: TailBuffer::new(from),
        })
    }

    /// Reads a key; `None` when absent.
    ///
    /// ```no_run
    /// # use rast_client::*;
    /// # let mut client = Client::new(&["127.0.0.1:7001"], ClientOptions::default())?;
    /// let linearizable = client.get(b"color", false)?; // a ReadIndex round on the leader
    /// let local = client.get(b"color", true)?; // the connected node's copy, maybe stale
    /// println!("{linearizable:?} {local:?}");
    /// # Ok::<(), ClientError>(())
    /// ```
    pub fn get(&mut self, key: &[u8], stale: bool) -> Result<Option<Vec<u8>>, ClientError> {
        verbs::got(self.request(&verbs::get(key, stale)))
    }

    /// Sets a key.
    ///
    /// ```no_run
    /// # use rast_client::*;
    /// # let mut client = Client::new(&["127.0.0.1:7001"], ClientOptions::default())?;
    /// // Applied once even when retried after a lost answer (the session).
    /// client.put(b"color", b"red")?;
    /// # Ok::<(), ClientError>(())
    /// ```
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), ClientError> {
        verbs::done(self.write(key, verbs::put(value)))
    }

    /// Removes a key.
    ///
    /// ```no_run
    /// # use rast_client::*;
    /// # let mut client = Client::new(&["127.0.0.1:7001"], ClientOptions::default())?;
    /// client.delete(b"color")?;
    /// # Ok::<(), ClientError>(())
    /// ```
    pub fn delete(&mut self, key: &[u8]) -> Result<(), ClientError> {
        verbs::done(self.write(key, KvOperation::Delete))
    }

    /// Sets `key` to `new` only if it holds `expected` (`None`: absent).
    ///
    /// ```no_run
    /// # use rast_client::*;
    /// # let mut client = Client::new(&["127.0.0.1:7001"], ClientOptions::default())?;
    /// match client.cas(b"color", Some(b"red"), b"blue")? {
    ///     CasOutcome::Swapped => println!("now blue"),
    ///     CasOutcome::Mismatch(current) => println!("was {current:?}"),
    /// }
    /// # Ok::<(), ClientError>(())
    /// ```
    pub fn cas(
        &mut self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<CasOutcome, ClientError> {
        verbs::cas_outcome(self.write(key, verbs::cas(expected, new)))
    }

    /// Status of the node this client is connected to (or the first that
    /// answers).
    ///
    /// ```no_run
    /// # use rast_client::*;
    /// # let mut client = Client::new(&["127.0.0.1:7001"], ClientOptions::default())?;
    /// let status = client.status("default")?;
    /// println!("node {} is {} at term {}", status.node_id, status.role, status.term);
    /// # Ok::<(), ClientError>(())
    /// ```
    pub fn status(&mut self, log: &str) -> Result<Status, ClientError> {
        verbs::status_of(self.request(&verbs::status(log))?)
    }

    /// Status of the node at `address`, without leader discovery.
    pub fn status_of(&self, address: &str, log: &str) -> Result<Status, ClientError> {
        let mut connection = Connection::open(address, &self.options)?;
        let answer = connection.call(log, RequestBody::Status, None)?;
        verbs::status_of(answer)
    }

    /// Sends an administrative request to the leader of the default log.
    ///
    /// ```no_run
    /// # use rast_client::*;
    /// # let mut client = Client::new(&["127.0.0.1:7001"], ClientOptions::default())?;
    /// let members = client.admin(wire::client::AdminRequest::Members)?;
    /// println!("{members:?}");
    /// # Ok::<(), ClientError>(())
    /// ```
    pub fn admin(&mut self, request: protocol::AdminRequest) -> Result<ResponseBody, ClientError> {
        self.admin_on("", request)
    }

    /// Sends an administrative request to the leader of `log` (each log
    /// has its own configuration). A membership change is answered once it
    /// is committed, with the resulting configuration.
    pub fn admin_on(
        &mut self,
        log: &str,
        request: protocol::AdminRequest,
    ) -> Result<ResponseBody, ClientError> {
        Ok(self.request(&verbs::admin(log, request))?.0)
    }

    fn write(&mut self, key: &[u8], operation: KvOperation) -> Result<ResponseBody, ClientError> {
        let call = self.session.write(key, operation);
        let result = self.request(&call);
        self.session.observe(&result);
        Ok(result?.0)
    }

    /// Sends `call` to the leader, following redirects, by the retry rule
    /// of [`verbs::judge`], until the deadline.
    fn request(&mut self, call: &Call) -> Result<Answer, ClientError> {
        let started = Instant::now();
        let (mut attempts, mut last, mut backoff) =
            (0u32, String::from("no attempt"), Backoff::new());
        while started.elapsed() < self.options.deadline {
            attempts += 1;
            let attempt = match self.connect() {
                Ok(connection) => Attempt::Sent(connection.call(
                    &call.log,
                    call.body.clone(),
                    call.batch.as_deref(),
                )),
                Err(error) => Attempt::NotSent(error),
            };
            match verbs::judge(attempt, call.repeatable, &mut last) {
                Next::Answer(answer) => return Ok(answer),
                Next::Fail(error) => {
                    self.connection = None;
                    return Err(error);
                }
                Next::Move { hint, wait } => {
                    if wait {
                        std::thread::sleep(backoff.next());
                    }
                    self.connection = None;
                    self.route.advance(hint);
                }
            }
        }
        Err(self.route.gave_up(attempts, last))
    }

    fn connect(&mut self) -> Result<&mut Connection, ClientError> {
        if self.connection.is_none() {
            self.connection = Some(Connection::open(self.route.current(), &self.options)?);
        }
        Ok(self.connection.as_mut().expect("connected above"))
    }
}
