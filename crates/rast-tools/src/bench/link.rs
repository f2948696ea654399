//! A benchmark connection: the client protocol on one socket, split into a
//! sending half and a receiving half so an open-loop sender never waits for
//! answers (the blocking [`crate::client::Connection`] cannot be split).
//!
//! ```text
//!  Writer ── requests (+ batch frames) ──► node
//!  Reader ◄── responses (batch frames of reads skipped) ── node
//! ```

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use super::BenchError;
use crate::client::{ClientOptions, Stream};
use crate::wire::client::{
    self as protocol, HelloResponse, Request, RequestBody, Response, ResponseBody,
};
use crate::wire::{FrameLength, frame_length};

/// Socket buffers of the benchmark's connections.
const BUFFER_BYTES: usize = 256 * 1024;

/// The sending half.
#[derive(Debug)]
pub struct Writer {
    writer: BufWriter<Stream>,
}

/// The receiving half.
#[derive(Debug)]
pub struct Reader {
    reader: BufReader<Stream>,
    frame: Vec<u8>,
}

/// Both halves over one socket, after the handshake.
#[derive(Debug)]
pub struct Link {
    /// Sends requests.
    pub writer: Writer,
    /// Receives responses.
    pub reader: Reader,
    /// The socket itself (to shut it from another thread).
    pub stream: TcpStream,
}

impl Link {
    /// Connects to `address` and performs the handshake.
    pub fn open(address: &str, options: &ClientOptions) -> Result<Self, BenchError> {
        let stream = Stream::connect(address, options)
            .map_err(|error| BenchError::Setup(format!("{address}: {error}")))?;
        let socket = stream.socket()?;
        let mut link = Self {
            writer: Writer {
                writer: BufWriter::with_capacity(BUFFER_BYTES, stream.try_clone()?),
            },
            reader: Reader {
                reader: BufReader::with_capacity(BUFFER_BYTES, stream.try_clone()?),
                frame: Vec::with_capacity(4096),
            },
            stream: socket,
        };
        link.writer.writer.write_all(&options.hello())?;
        link.writer.flush()?;
        link.reader.read_frame()?;
        match protocol::decode_hello_response(&link.reader.frame)? {
            HelloResponse::Ok(_) => Ok(link),
            HelloResponse::Refused(why) => Err(BenchError::Setup(format!("{address}: {why}"))),
        }
    }

    /// A handle that can unblock the reader from another thread.
    pub fn shutdown_handle(&self) -> io::Result<TcpStream> {
        self.stream.try_clone()
    }

    /// Sends one request and waits for its answer (status probes).
    pub fn call(&mut self, log: &str, body: RequestBody) -> Result<ResponseBody, BenchError> {
        self.writer.send(1, log, body, None)?;
        self.writer.flush()?;
        loop {
            let response = self.reader.receive()?;
            if response.request_id == 1 {
                return Ok(response.body);
            }
        }
    }
}

impl Writer {
    /// Queues a request and, for an append, its batch frame.
    pub fn send(
        &mut self,
        request_id: u64,
        log: &str,
        body: RequestBody,
        batch: Option<&[u8]>,
    ) -> io::Result<()> {
        let request = Request {
            request_id,
            log: log.to_owned(),
            body,
        };
        self.writer.write_all(&protocol::encode_request(&request))?;
        if let Some(batch) = batch {
            self.writer.write_all(batch)?;
        }
        Ok(())
    }

    /// Sends everything queued.
    pub fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

impl Reader {
    /// True when a response is already buffered (receiving it will not block).
    pub fn has_buffered(&self) -> bool {
        !self.reader.buffer().is_empty()
    }

    /// Receives the next response; batch frames that follow a read's answer
    /// are read and dropped.
    pub fn receive(&mut self) -> Result<Response, BenchError> {
        self.read_frame()?;
        let response = protocol::decode_response(&self.frame)?;
        if let ResponseBody::Batches(count) = response.body {
            for _ in 0..count {
                self.read_frame()?;
            }
        }
        Ok(response)
    }

    /// Sets how long a receive may block.
    pub fn set_timeout(&self, timeout: Duration) -> io::Result<()> {
        self.reader.get_ref().set_read_timeout(Some(timeout))
    }

    fn read_frame(&mut self) -> Result<(), BenchError> {
        self.frame.clear();
        self.frame.resize(4, 0);
        self.reader.read_exact(&mut self.frame)?;
        loop {
            let have = self.frame.len();
            match frame_length(&self.frame)? {
                FrameLength::NeedHeader(need) => {
                    self.frame.resize(need, 0);
                    self.reader.read_exact(&mut self.frame[have..])?;
                }
                FrameLength::Complete { frame_bytes, .. } => {
                    self.frame.resize(frame_bytes, 0);
                    self.reader.read_exact(&mut self.frame[have..])?;
                    return Ok(());
                }
            }
        }
    }
}

/// Unblocks a reader stuck in `receive` on another thread.
pub fn shut(stream: &TcpStream) {
    let _ = stream.shutdown(Shutdown::Both);
}
