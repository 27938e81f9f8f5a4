//! Wyoming frames over a byte stream: read and write, nothing more.
//!
//! A frame is one JSON header line (`type`, optional `data`, `data_length`,
//! `payload_length`, `version`), then `data_length` bytes of JSON merged
//! over the header's `data`, then `payload_length` bytes of payload (PCM
//! audio, for TTS). This is the shape of mini-redis's `Connection`: the
//! struct owns the stream and a read buffer, [`Connection::read_frame`]
//! first checks whether a whole frame is buffered and only then parses it,
//! and returns `Ok(None)` on a clean close. Every length is checked against
//! its limit before anything is allocated for it, so a peer cannot make
//! piperd buffer more than [`MAX_LINE`] + [`MAX_DATA`] + [`MAX_PAYLOAD`].
//!
//! A length that promises more than the peer sends is not detected here
//! (the bytes may still be on their way): the handler bounds every wait
//! with the connection's idle timeout and then asks
//! [`Connection::has_partial_frame`].

use bytes::{Buf, Bytes, BytesMut};
use serde_json::{Map, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};

/// Longest header line, newline excluded.
pub const MAX_LINE: usize = 1 << 20;
/// Longest data block.
pub const MAX_DATA: usize = 1 << 20;
/// Longest payload.
pub const MAX_PAYLOAD: usize = 1 << 20;

/// The protocol version written in every header: that of the `wyoming`
/// Python package whose events and fields this front-end follows.
pub const PROTOCOL_VERSION: &str = "1.10.2";

/// One event as it travels: its type, its data (header `data` with the data
/// block merged over it) and its payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub kind: String,
    pub data: Map<String, Value>,
    pub payload: Bytes,
}

impl Frame {
    pub fn new(kind: impl Into<String>, data: Map<String, Value>) -> Frame {
        Frame {
            kind: kind.into(),
            data,
            payload: Bytes::new(),
        }
    }
}

/// Why a frame could not be read. The connection cannot go on after any of
/// them: where the next frame starts is no longer known.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("the event header is not valid JSON: {0}")]
    HeaderNotJson(String),
    #[error("the event header is not a JSON object")]
    HeaderNotObject,
    #[error("the event header has no \"type\" string")]
    NoType,
    #[error("the event header's {field} is not a length in bytes: {value}")]
    BadLength { field: &'static str, value: String },
    #[error("the event header's \"data\" is not a JSON object")]
    DataNotObject,
    #[error("the event's data block is not a JSON object: {0}")]
    DataBlockNotObject(String),
    #[error("the event header line is longer than {MAX_LINE} bytes")]
    LineTooLong,
    #[error("the event's {field} of {length} bytes is over the limit of {limit}")]
    TooLarge {
        field: &'static str,
        length: u64,
        limit: usize,
    },
    #[error("the connection closed in the middle of an event ({have} of {want} bytes came)")]
    Truncated { have: usize, want: usize },
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
}

/// A header line parsed, waiting for its data block and payload.
#[derive(Debug)]
struct Header {
    /// The line with its newline.
    line_len: usize,
    kind: String,
    data: Map<String, Value>,
    data_len: usize,
    payload_len: usize,
}

impl Header {
    fn frame_len(&self) -> usize {
        self.line_len + self.data_len + self.payload_len
    }
}

/// A Wyoming connection: frames in from a buffer, frames out through a
/// `BufWriter` (flushed by [`Connection::flush`], so that the chunks of one
/// sentence go out in few writes).
pub struct Connection<S> {
    stream: BufWriter<S>,
    buffer: BytesMut,
    /// The header of the frame being received, parsed once: its data and
    /// payload may take many reads.
    pending: Option<Header>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    pub fn new(stream: S) -> Connection<S> {
        Connection {
            stream: BufWriter::new(stream),
            buffer: BytesMut::with_capacity(8 * 1024),
            pending: None,
        }
    }

    /// The next frame, or `None` when the peer closed between frames.
    ///
    /// Cancel-safe: everything read so far stays in the connection's
    /// buffer, so the handler may race this against its speech events and
    /// call it again.
    pub async fn read_frame(&mut self) -> Result<Option<Frame>, CodecError> {
        loop {
            if let Some(frame) = self.parse_frame()? {
                return Ok(Some(frame));
            }
            // Read no more than the frame still needs (or a header's worth):
            // the limits bound the buffer, whatever the peer sends.
            let want = match &self.pending {
                Some(header) => header.frame_len() - self.buffer.len(),
                None => (MAX_LINE + 1 - self.buffer.len()).min(64 * 1024),
            };
            self.buffer.reserve(want.min(64 * 1024));
            let read = (&mut self.stream)
                .take(want as u64)
                .read_buf(&mut self.buffer)
                .await?;
            if read == 0 {
                if self.buffer.is_empty() && self.pending.is_none() {
                    return Ok(None);
                }
                let want = self.pending.as_ref().map_or(0, Header::frame_len);
                return Err(CodecError::Truncated {
                    have: self.buffer.len(),
                    want: want.max(self.buffer.len() + 1),
                });
            }
        }
    }

    /// Whether part of a frame has arrived and the rest has not.
    pub fn has_partial_frame(&self) -> bool {
        self.pending.is_some() || !self.buffer.is_empty()
    }

    /// A whole frame from the buffer, if one is there.
    fn parse_frame(&mut self) -> Result<Option<Frame>, CodecError> {
        if self.pending.is_none() {
            let Some(end) = self.buffer.iter().position(|&b| b == b'\n') else {
                if self.buffer.len() > MAX_LINE {
                    return Err(CodecError::LineTooLong);
                }
                return Ok(None);
            };
            if end > MAX_LINE {
                return Err(CodecError::LineTooLong);
            }
            self.pending = Some(parse_header(&self.buffer[..end], end + 1)?);
        }
        let header = self.pending.as_ref().expect("set above");
        if self.buffer.len() < header.frame_len() {
            return Ok(None);
        }
        let header = self.pending.take().expect("checked above");
        self.buffer.advance(header.line_len);
        let mut data = header.data;
        if header.data_len > 0 {
            let block = self.buffer.split_to(header.data_len);
            match serde_json::from_slice::<Value>(&block) {
                Ok(Value::Object(more)) => data.extend(more),
                Ok(_) => return Err(CodecError::DataBlockNotObject("not an object".into())),
                Err(err) => return Err(CodecError::DataBlockNotObject(err.to_string())),
            }
        }
        let payload = self.buffer.split_to(header.payload_len).freeze();
        Ok(Some(Frame {
            kind: header.kind,
            data,
            payload,
        }))
    }

    /// Writes a frame into the buffer: data as a block after the header
    /// line, as the `wyoming` package does, since its reader takes header
    /// lines of at most 64 KiB (asyncio's default line limit) and an `info`
    /// with many voices is longer.
    pub async fn write_frame(&mut self, frame: &Frame) -> Result<(), CodecError> {
        let data = if frame.data.is_empty() {
            Vec::new()
        } else {
            serde_json::to_vec(&frame.data).expect("a JSON map serializes")
        };
        let mut header = Map::new();
        header.insert("type".into(), Value::from(frame.kind.as_str()));
        header.insert("version".into(), Value::from(PROTOCOL_VERSION));
        if !data.is_empty() {
            header.insert("data_length".into(), Value::from(data.len()));
        }
        if !frame.payload.is_empty() {
            header.insert("payload_length".into(), Value::from(frame.payload.len()));
        }
        let mut line = serde_json::to_vec(&header).expect("a JSON map serializes");
        line.push(b'\n');
        self.stream.write_all(&line).await?;
        self.stream.write_all(&data).await?;
        self.stream.write_all(&frame.payload).await?;
        Ok(())
    }

    /// Sends what was written.
    pub async fn flush(&mut self) -> Result<(), CodecError> {
        self.stream.flush().await?;
        Ok(())
    }

    /// Reads and drops what the peer still sends, up to `limit` bytes or
    /// its close. Closing a socket with unread input makes the kernel
    /// answer with a reset, which can destroy an `error` event still on its
    /// way to the peer: after a failure the handler drains first (bounded
    /// by a timeout), as HTTP servers linger before closing.
    pub async fn discard_input(&mut self, limit: usize) -> Result<(), CodecError> {
        self.buffer.clear();
        self.pending = None;
        let mut scratch = vec![0; 16 * 1024];
        let mut total = 0;
        while total < limit {
            let read = self.stream.read(&mut scratch).await?;
            if read == 0 {
                break;
            }
            total += read;
        }
        Ok(())
    }

    /// Flushes and closes the sending side, so the peer reads to the end.
    pub async fn shutdown(&mut self) -> Result<(), CodecError> {
        self.stream.shutdown().await?;
        Ok(())
    }
}

fn parse_header(line: &[u8], line_len: usize) -> Result<Header, CodecError> {
    let value: Value =
        serde_json::from_slice(line).map_err(|e| CodecError::HeaderNotJson(e.to_string()))?;
    let Value::Object(mut header) = value else {
        return Err(CodecError::HeaderNotObject);
    };
    let kind = match header.remove("type") {
        Some(Value::String(kind)) => kind,
        _ => return Err(CodecError::NoType),
    };
    let data = match header.remove("data") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(data)) => data,
        Some(_) => return Err(CodecError::DataNotObject),
    };
    let data_len = length(&header, "data_length", MAX_DATA)?;
    let payload_len = length(&header, "payload_length", MAX_PAYLOAD)?;
    Ok(Header {
        line_len,
        kind,
        data,
        data_len,
        payload_len,
    })
}

/// A header's length field: absent or null is 0; anything but a whole
/// number up to `limit` is an error.
fn length(
    header: &Map<String, Value>,
    field: &'static str,
    limit: usize,
) -> Result<usize, CodecError> {
    match header.get(field) {
        None | Some(Value::Null) => Ok(0),
        Some(value) => match value.as_u64() {
            Some(length) if length > limit as u64 => Err(CodecError::TooLarge {
                field,
                length,
                limit,
            }),
            Some(length) => Ok(length as usize),
            None => Err(CodecError::BadLength {
                field,
                value: value.to_string(),
            }),
        },
    }
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tokio::io::{duplex, DuplexStream};

    fn pair() -> (Connection<DuplexStream>, DuplexStream) {
        let (ours, theirs) = duplex(4 << 20);
        (Connection::new(ours), theirs)
    }

    async fn read_bytes(bytes: &[u8]) -> Result<Option<Frame>, CodecError> {
        let (mut conn, mut peer) = pair();
        peer.write_all(bytes).await.unwrap();
        drop(peer);
        conn.read_frame().await
    }

    fn data(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[tokio::test]
    async fn data_inline_as_a_block_or_absent() {
        let inline = read_bytes(b"{\"type\":\"synthesize\",\"data\":{\"text\":\"hi\"}}\n")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(inline.kind, "synthesize");
        assert_eq!(inline.data, data(json!({"text": "hi"})));

        // The block is merged over the header's data: its fields win.
        let block = br#"{"type":"synthesize","data":{"text":"old","keep":1},"data_length":14}
{"text":"new"}"#;
        let frame = read_bytes(block).await.unwrap().unwrap();
        assert_eq!(frame.data, data(json!({"text": "new", "keep": 1})));

        let bare = read_bytes(b"{\"type\":\"describe\"}\n")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(bare.kind, "describe");
        assert!(bare.data.is_empty() && bare.payload.is_empty());

        // Zero and null lengths are no block at all.
        let zero = read_bytes(b"{\"type\":\"x\",\"data_length\":0,\"payload_length\":null}\n")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(zero.kind, "x");
    }

    #[tokio::test]
    async fn payload_follows_the_data_block() {
        let mut bytes = br#"{"type":"audio-chunk","data_length":11,"payload_length":4}"#.to_vec();
        bytes.extend_from_slice(b"\n{\"rate\":16}");
        bytes.extend_from_slice(&[1, 2, 3, 4]);
        bytes.extend_from_slice(b"{\"type\":\"audio-stop\"}\n");
        let (mut conn, mut peer) = pair();
        peer.write_all(&bytes).await.unwrap();
        drop(peer);
        let chunk = conn.read_frame().await.unwrap().unwrap();
        assert_eq!(chunk.data, data(json!({"rate": 16})));
        assert_eq!(&chunk.payload[..], &[1, 2, 3, 4]);
        let stop = conn.read_frame().await.unwrap().unwrap();
        assert_eq!(stop.kind, "audio-stop");
        assert!(conn.read_frame().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn frames_arrive_whole_from_reads_of_one_byte() {
        let (mut conn, mut peer) = pair();
        let bytes = b"{\"type\":\"synthesize-chunk\",\"data_length\":14}\n{\"text\":\"Hel\"}{\"type\":\"synthesize-stop\"}\n".to_vec();
        let writer = tokio::spawn(async move {
            for byte in bytes {
                peer.write_all(&[byte]).await.unwrap();
                peer.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        let chunk = conn.read_frame().await.unwrap().unwrap();
        assert_eq!(chunk.data, data(json!({"text": "Hel"})));
        let stop = conn.read_frame().await.unwrap().unwrap();
        assert_eq!(stop.kind, "synthesize-stop");
        writer.await.unwrap();
        assert!(conn.read_frame().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_read_cancelled_midway_loses_nothing() {
        let (mut conn, mut peer) = pair();
        peer.write_all(b"{\"type\":\"synthesize-chunk\",\"data_len")
            .await
            .unwrap();
        let early =
            tokio::time::timeout(std::time::Duration::from_millis(50), conn.read_frame()).await;
        assert!(early.is_err(), "a partial header is not a frame");
        assert!(conn.has_partial_frame());
        peer.write_all(b"gth\":12}\n{\"text\":\"a\"}")
            .await
            .unwrap();
        let frame = conn.read_frame().await.unwrap().unwrap();
        assert_eq!(frame.data, data(json!({"text": "a"})));
        assert!(!conn.has_partial_frame());
    }

    #[tokio::test]
    async fn a_header_that_is_not_a_json_object_is_refused() {
        for (bytes, expected) in [
            (&b"hello\n"[..], "not valid JSON"),
            (b"[1,2]\n", "not a JSON object"),
            (b"{\"data\":{}}\n", "no \"type\""),
            (b"{\"type\":3}\n", "no \"type\""),
            (b"{\"type\":\"x\",\"data\":[1]}\n", "\"data\" is not"),
            (b"{\"type\":\"x\",\"data_length\":-1}\n", "not a length"),
            (
                b"{\"type\":\"x\",\"payload_length\":\"4\"}\n",
                "not a length",
            ),
            (b"{\"type\":\"x\",\"data_length\":2}\n[]", "data block"),
            (b"{\"type\":\"x\",\"data_length\":3}\n{\"a", "data block"),
        ] {
            let err = read_bytes(bytes).await.unwrap_err();
            assert!(err.to_string().contains(expected), "{err} for {bytes:?}");
        }
    }

    #[tokio::test]
    async fn lengths_over_the_limits_are_refused_before_reading_them() {
        let over = MAX_DATA + 1;
        let (mut conn, mut peer) = pair();
        // Nothing follows the header: the error comes without waiting.
        peer.write_all(format!("{{\"type\":\"x\",\"data_length\":{over}}}\n").as_bytes())
            .await
            .unwrap();
        let err = conn.read_frame().await.unwrap_err();
        assert!(
            matches!(
                err,
                CodecError::TooLarge {
                    field: "data_length",
                    ..
                }
            ),
            "{err}"
        );

        let err = read_bytes(
            format!("{{\"type\":\"x\",\"payload_length\":{}}}\n", 1u64 << 40).as_bytes(),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(
                err,
                CodecError::TooLarge {
                    field: "payload_length",
                    ..
                }
            ),
            "{err}"
        );

        // A line with no end in sight: refused once it passes the limit.
        let (mut conn, mut peer) = pair();
        let writer = tokio::spawn(async move {
            let block = vec![b'x'; 64 * 1024];
            for _ in 0..20 {
                if peer.write_all(&block).await.is_err() {
                    break;
                }
            }
            peer
        });
        let err = conn.read_frame().await.unwrap_err();
        assert!(matches!(err, CodecError::LineTooLong), "{err}");
        drop(conn);
        drop(writer.await.unwrap());
    }

    #[tokio::test]
    async fn a_length_that_lies_is_an_error_or_a_partial_frame_never_a_frame() {
        // Longer than what came, then the peer closes: truncated.
        let err = read_bytes(b"{\"type\":\"x\",\"data_length\":100}\n{\"text\":\"a\"}")
            .await
            .unwrap_err();
        assert!(
            matches!(err, CodecError::Truncated { want: 131, .. }),
            "{err}"
        );

        // Longer than what came, and the peer waits: the frame stays partial
        // (the handler's idle timeout turns that into an error).
        let (mut conn, mut peer) = pair();
        peer.write_all(b"{\"type\":\"x\",\"payload_length\":10}\n1234")
            .await
            .unwrap();
        let waited =
            tokio::time::timeout(std::time::Duration::from_millis(50), conn.read_frame()).await;
        assert!(waited.is_err());
        assert!(conn.has_partial_frame());

        // Shorter than what came: the rest is taken for the next header.
        let err = read_bytes(b"{\"type\":\"x\",\"data_length\":5}\n{\"text\":\"abc\"}\n")
            .await
            .unwrap_err();
        assert!(matches!(err, CodecError::DataBlockNotObject(_)), "{err}");

        // A close in the middle of a header line is truncation too.
        let err = read_bytes(b"{\"type\":").await.unwrap_err();
        assert!(matches!(err, CodecError::Truncated { .. }), "{err}");
    }

    #[tokio::test]
    async fn written_frames_read_back_with_data_as_a_block() {
        let (mut conn, peer) = pair();
        let mut frame = Frame::new("audio-chunk", data(json!({"rate": 22050, "width": 2})));
        frame.payload = Bytes::from_static(&[9, 8, 7, 6]);
        conn.write_frame(&frame).await.unwrap();
        conn.write_frame(&Frame::new("audio-stop", Map::new()))
            .await
            .unwrap();
        conn.flush().await.unwrap();

        let mut reader = Connection::new(peer);
        let back = reader.read_frame().await.unwrap().unwrap();
        assert_eq!(back, frame);
        let stop = reader.read_frame().await.unwrap().unwrap();
        assert_eq!(stop.kind, "audio-stop");

        // The header line carries the lengths and the version, not the data.
        let (mut conn, mut peer) = pair();
        conn.write_frame(&frame).await.unwrap();
        conn.flush().await.unwrap();
        let mut raw = vec![0; 256];
        let n = peer.read(&mut raw).await.unwrap();
        let line = raw[..n].split(|&b| b == b'\n').next().unwrap();
        let header: Value = serde_json::from_slice(line).unwrap();
        assert_eq!(header["type"], "audio-chunk");
        assert_eq!(header["version"], PROTOCOL_VERSION);
        assert_eq!(header["payload_length"], 4);
        assert!(header["data_length"].as_u64().unwrap() > 0);
        assert!(header.get("data").is_none());
    }
}
