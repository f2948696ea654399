//! The client for tokio applications (feature `tokio`): the same verbs,
//! leader discovery, retry rule and exactly-once session as the blocking
//! [`Client`](crate::Client) — both take them from `verbs` — over tokio's
//! sockets, so no thread blocks on a node.
//!
//! ```no_run
//! # async fn run() -> Result<(), rast_client::ClientError> {
//! use rast_client::ClientOptions;
//! use rast_client::asynchronous::AsyncClient;
//!
//! let mut client = AsyncClient::new(&["127.0.0.1:7001", "127.0.0.1:7002"], ClientOptions::default())?;
//! let appended = client.append("default", &["hello", "world"]).await?;
//! let entries = client.read("default", appended.first_index, 2).await?;
//! client.put(b"color", b"red").await?;
//! let mut tail = client.tail("default", appended.first_index).await?;
//! while let Some(entry) = tail.next().await {
//!     let (index, payload) = entry?;
//!     println!("{index}: {} bytes", payload.len());
//! }
//! # Ok(())
//! # }
//! ```

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::{Instant, sleep, timeout};

use crate::client::{Appended, CasOutcome, ClientError, ClientOptions};
use crate::types::LogIndex;
use crate::verbs::{self, Answer, Attempt, Backoff, Call, Next, Route, Session, TailBuffer};
use crate::wire::client::{
    self as protocol, AdminRequest, KvOperation, RequestBody, ResponseBody, Status,
};
use crate::wire::{BatchView, FrameLength, frame_length};

/// One protocol connection to one node over tokio; pipelines requests.
#[derive(Debug)]
pub struct AsyncConnection {
    reader: BufReader<OwnedReadHalf>,
    writer: BufWriter<OwnedWriteHalf>,
    node_id: u64,
    next_request_id: u64,
    /// Bound on each socket operation (`None`: wait, as a tail does).
    io_timeout: Option<Duration>,
}

impl AsyncConnection {
    /// Connects and performs the handshake, within `options.timeout`.
    pub async fn open(address: &str, options: &ClientOptions) -> Result<Self, ClientError> {
        let stream = timeout(options.timeout, TcpStream::connect(address))
            .await
            .map_err(|_| timed_out("connect"))??;
        stream.set_nodelay(true)?;
        let (read, write) = stream.into_split();
        let mut connection = Self {
            reader: BufReader::with_capacity(256 * 1024, read),
            writer: BufWriter::with_capacity(256 * 1024, write),
            node_id: 0,
            next_request_id: 1,
            io_timeout: Some(options.timeout),
        };
        let hello = options.hello();
        connection.writer.write_all(&hello).await?;
        connection.flush().await?;
        let frame = connection.read_frame().await?;
        connection.node_id = verbs::welcomed(&frame)?;
        Ok(connection)
    }

    /// The id of the node at the other end.
    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// Queues a request (and, for an append, its batch frame) without
    /// waiting for its answer; returns its id. Call [`Self::flush`] to send.
    pub async fn send(
        &mut self,
        log: &str,
        body: RequestBody,
        batch: Option<&[u8]>,
    ) -> Result<u64, ClientError> {
        let (request_id, frame) = verbs::request_frame(&mut self.next_request_id, log, body);
        self.writer.write_all(&frame).await?;
        if let Some(batch) = batch {
            self.writer.write_all(batch).await?;
        }
        Ok(request_id)
    }

    /// Sends everything queued.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        match self.io_timeout {
            Some(limit) => timeout(limit, self.writer.flush())
                .await
                .map_err(|_| timed_out("send"))??,
            None => self.writer.flush().await?,
        }
        Ok(())
    }

    /// Receives the next response and the batch frames that follow it.
    pub async fn receive(&mut self) -> Result<(protocol::Response, Vec<Vec<u8>>), ClientError> {
        let frame = self.read_frame().await?;
        let response = protocol::decode_response(&frame)?;
        let mut batches = Vec::new();
        if let ResponseBody::Batches(count) = response.body {
            for _ in 0..count {
                let batch = self.read_frame().await?;
                BatchView::parse(&batch)?.verify_checksum()?;
                batches.push(batch);
            }
        }
        Ok((response, batches))
    }

    /// Sends one request and waits for its answer.
    pub async fn call(
        &mut self,
        log: &str,
        body: RequestBody,
        batch: Option<&[u8]>,
    ) -> Result<(ResponseBody, Vec<Vec<u8>>), ClientError> {
        let id = self.send(log, body, batch).await?;
        self.flush().await?;
        let (response, batches) = self.receive().await?;
        if response.request_id != id {
            return Err(ClientError::Unexpected(format!(
                "answer to request {} where {id} was expected",
                response.request_id
            )));
        }
        Ok((response.body, batches))
    }

    /// Reads one frame, refusing a declared size over the limit before
    /// buffering it, each read within the connection's timeout.
    async fn read_frame(&mut self) -> Result<Vec<u8>, ClientError> {
        let mut frame = vec![0u8; 4];
        self.read_exact(0, &mut frame).await?;
        loop {
            let (need, done) = match frame_length(&frame)? {
                FrameLength::NeedHeader(need) => (need, false),
                FrameLength::Complete { frame_bytes, .. } => (frame_bytes, true),
            };
            let have = frame.len();
            frame.resize(need, 0);
            self.read_exact(have, &mut frame).await?;
            if done {
                return Ok(frame);
            }
        }
    }

    async fn read_exact(&mut self, from: usize, frame: &mut [u8]) -> Result<(), ClientError> {
        let read = self.reader.read_exact(&mut frame[from..]);
        match self.io_timeout {
            Some(limit) => timeout(limit, read)
                .await
                .map_err(|_| timed_out("receive"))??,
            None => read.await?,
        };
        Ok(())
    }
}

/// A cluster client for tokio: leader discovery, redirects, safe retries.
#[derive(Debug)]
pub struct AsyncClient {
    route: Route,
    options: ClientOptions,
    connection: Option<AsyncConnection>,
    session: Session,
}

impl AsyncClient {
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

    /// Appends one batch of entries to `log` (see [`crate::Client::append`]).
    pub async fn append<P: AsRef<[u8]>>(
        &mut self,
        log: &str,
        entries: &[P],
    ) -> Result<Appended, ClientError> {
        verbs::appended(self.request(&verbs::append(log, entries)).await?)
    }

    /// Reads up to `max_entries` committed entries from `from`.
    pub async fn read(
        &mut self,
        log: &str,
        from: LogIndex,
        max_entries: u32,
    ) -> Result<Vec<(LogIndex, Vec<u8>)>, ClientError> {
        let answer = self.request(&verbs::read(log, from, max_entries)).await?;
        verbs::entries(answer, from, max_entries)
    }

    /// Follows `log` from `from`: [`AsyncTail::next`] yields committed
    /// entries as they commit, forever.
    pub async fn tail(&mut self, log: &str, from: LogIndex) -> Result<AsyncTail, ClientError> {
        let mut connection = AsyncConnection::open(self.route.current(), &self.options).await?;
        connection.send(log, verbs::tail(from), None).await?;
        connection.flush().await?;
        connection.io_timeout = None;
        Ok(AsyncTail {
            connection,
            buffer: TailBuffer::new(from),
        })
    }

    /// Reads a key (`None` when absent): linearizable, or this node's copy
    /// at once when `stale`.
    pub async fn get(&mut self, key: &[u8], stale: bool) -> Result<Option<Vec<u8>>, ClientError> {
        verbs::got(self.request(&verbs::get(key, stale)).await)
    }

    /// Sets a key, exactly once.
    pub async fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), ClientError> {
        verbs::done(self.write(key, verbs::put(value)).await)
    }

    /// Removes a key, exactly once.
    pub async fn delete(&mut self, key: &[u8]) -> Result<(), ClientError> {
        verbs::done(self.write(key, KvOperation::Delete).await)
    }

    /// Sets `key` to `new` only if it holds `expected` (`None`: absent).
    pub async fn cas(
        &mut self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<CasOutcome, ClientError> {
        verbs::cas_outcome(self.write(key, verbs::cas(expected, new)).await)
    }

    /// Status of the node this client talks to (or the first that answers).
    pub async fn status(&mut self, log: &str) -> Result<Status, ClientError> {
        verbs::status_of(self.request(&verbs::status(log)).await?)
    }

    /// Sends an administrative request to the leader of `log`.
    pub async fn admin_on(
        &mut self,
        log: &str,
        request: AdminRequest,
    ) -> Result<ResponseBody, ClientError> {
        Ok(self.request(&verbs::admin(log, request)).await?.0)
    }

    async fn write(
        &mut self,
        key: &[u8],
        operation: KvOperation,
    ) -> Result<ResponseBody, ClientError> {
        let call = self.session.write(key, operation);
        let result = self.request(&call).await;
        self.session.observe(&result);
        Ok(result?.0)
    }

    /// Sends `call` to the leader, following redirects, by the retry rule
    /// the blocking client follows too, until the deadline.
    async fn request(&mut self, call: &Call) -> Result<Answer, ClientError> {
        let started = Instant::now();
        let (mut attempts, mut last, mut backoff) =
            (0u32, String::from("no attempt"), Backoff::new());
        while started.elapsed() < self.options.deadline {
            attempts += 1;
            if self.connection.is_none() {
                match AsyncConnection::open(self.route.current(), &self.options).await {
                    Ok(connection) => self.connection = Some(connection),
                    Err(error) => {
                        self.retry(&mut backoff, Attempt::NotSent(error), call, &mut last)
                            .await?;
                        continue;
                    }
                }
            }
            let connection = self.connection.as_mut().expect("connected above");
            let answer = connection
                .call(&call.log, call.body.clone(), call.batch.as_deref())
                .await;
            if let Some(answer) = self
                .retry(&mut backoff, Attempt::Sent(answer), call, &mut last)
                .await?
            {
                return Ok(answer);
            }
        }
        Err(self.route.gave_up(attempts, last))
    }

    /// Judges an attempt: its answer, an error, or a move (after a wait).
    async fn retry(
        &mut self,
        backoff: &mut Backoff,
        attempt: Attempt,
        call: &Call,
        last: &mut String,
    ) -> Result<Option<Answer>, ClientError> {
        match verbs::judge(attempt, call.repeatable, last) {
            Next::Answer(answer) => Ok(Some(answer)),
            Next::Fail(error) => {
                self.connection = None;
                Err(error)
            }
            Next::Move { hint, wait } => {
                if wait {
                    sleep(backoff.next()).await;
                }
                self.connection = None;
                self.route.advance(hint);
                Ok(None)
            }
        }
    }
}

/// Committed entries of a log as they commit (see [`AsyncClient::tail`]).
#[derive(Debug)]
pub struct AsyncTail {
    connection: AsyncConnection,
    buffer: TailBuffer,
}

impl AsyncTail {
    /// The next committed entry; waits for one to commit. `None` never
    /// comes from a live tail: an error ends it.
    pub async fn next(&mut self) -> Option<Result<(LogIndex, Vec<u8>), ClientError>> {
        loop {
            if let Some(entry) = self.buffer.pop() {
                return Some(Ok(entry));
            }
            if let Err(error) = self.buffer.fill(self.connection.receive().await) {
                return Some(Err(error));
            }
        }
    }
}

fn timed_out(what: &str) -> ClientError {
    ClientError::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("{what} timed out"),
    ))
}
