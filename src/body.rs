//! A request body read whole up to a bound, for every front-end that reads
//! bodies over HTTP (piperd's API, OpenAI's, MaryTTS's): each maps the two
//! failures to its own errors.

use bytes::{Buf, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use std::time::Duration;

/// Why a body could not be read.
#[derive(Debug, PartialEq)]
pub enum BodyError<E> {
    /// Over the bound.
    TooLarge,
    /// The connection failed while it was read.
    Unreadable(E),
}

/// How much of a refused body is still read and thrown away before the
/// answer, and for how long. A server that answers 413 and closes with the
/// body unread makes the kernel reset the connection, and a client that
/// sends its whole body before it reads (Python's `http.client` and
/// `requests`, reqwest on a busy machine) gets that reset instead of the
/// answer. Reading the rest first is what nginx's lingering close does;
/// beyond these bounds the connection is closed as before.
const DISCARD_BYTES: u64 = 16 << 20;
const DISCARD_TIME: Duration = Duration::from_secs(5);

/// Reads `stream` whole, refusing it when its declared length (the
/// Content-Length) or what arrives passes `max` bytes. A refused body is
/// read to its end and dropped first, within [`DISCARD_BYTES`] and
/// [`DISCARD_TIME`], so that its sender can read the refusal.
pub async fn read_bounded<S, B, E>(
    stream: S,
    declared: Option<u64>,
    max: usize,
) -> Result<Bytes, BodyError<E>>
where
    S: Stream<Item = Result<B, E>>,
    B: Buf,
{
    let mut stream = std::pin::pin!(stream);
    if let Some(declared) = declared.filter(|&len| len > max as u64) {
        if declared <= DISCARD_BYTES {
            discard(stream, declared).await;
        }
        return Err(BodyError::TooLarge);
    }
    let mut out = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let mut chunk = chunk.map_err(BodyError::Unreadable)?;
        if out.len() + chunk.remaining() > max {
            let read = (out.len() + chunk.remaining()) as u64;
            discard(stream, DISCARD_BYTES.saturating_sub(read)).await;
            return Err(BodyError::TooLarge);
        }
        while chunk.has_remaining() {
            let piece = chunk.chunk();
            let n = piece.len();
            out.extend_from_slice(piece);
            chunk.advance(n);
        }
    }
    Ok(out.freeze())
}

/// Reads and drops the rest of `stream`, at most `bytes` more of it and for
/// at most [`DISCARD_TIME`]; a broken stream ends it.
async fn discard<S, B, E>(stream: S, bytes: u64)
where
    S: Stream<Item = Result<B, E>>,
    B: Buf,
{
    let mut stream = std::pin::pin!(stream);
    let drain = async {
        let mut read = 0u64;
        while read <= bytes {
            match stream.next().await {
                Some(Ok(chunk)) => read += chunk.remaining() as u64,
                _ => return,
            }
        }
    };
    let _ = tokio::time::timeout(DISCARD_TIME, drain).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bodies_are_read_whole_within_the_bound() {
        let parts =
            || futures::stream::iter([Ok::<_, ()>(Bytes::from("ab")), Ok(Bytes::from("cd"))]);
        assert_eq!(
            read_bounded(parts(), None, 4).await,
            Ok(Bytes::from("abcd"))
        );
        assert_eq!(
            read_bounded(parts(), Some(4), 4).await,
            Ok(Bytes::from("abcd"))
        );
        assert_eq!(
            read_bounded(parts(), None, 3).await,
            Err(BodyError::TooLarge)
        );
        assert_eq!(
            read_bounded(parts(), Some(4), 3).await,
            Err(BodyError::TooLarge)
        );
        let broken = futures::stream::iter([Ok(Bytes::from("ab")), Err("reset")]);
        assert_eq!(
            read_bounded(broken, None, 10).await,
            Err(BodyError::Unreadable("reset"))
        );
    }

    /// A body that arrives in `n` pieces and counts how many were taken.
    fn counted(
        n: usize,
        taken: &std::sync::atomic::AtomicUsize,
    ) -> impl Stream<Item = Result<Bytes, ()>> + '_ {
        futures::stream::iter(0..n).map(move |_| {
            taken.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(Bytes::from(vec![0u8; 1 << 20]))
        })
    }

    #[tokio::test]
    async fn a_refused_body_is_read_to_its_end_within_the_bound() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        // Over the limit as it arrives: the rest is still taken.
        let taken = AtomicUsize::new(0);
        let refused = read_bounded(counted(6, &taken), None, 3 << 20).await;
        assert_eq!(
            (refused, taken.load(Ordering::SeqCst)),
            (Err(BodyError::TooLarge), 6)
        );
        // Over the limit by its declared length: all of it is taken.
        let taken = AtomicUsize::new(0);
        let refused = read_bounded(counted(6, &taken), Some(6 << 20), 3 << 20).await;
        assert_eq!(
            (refused, taken.load(Ordering::SeqCst)),
            (Err(BodyError::TooLarge), 6)
        );
        // Declared beyond the discard bound: refused without reading it.
        let taken = AtomicUsize::new(0);
        let refused = read_bounded(counted(64, &taken), Some(64 << 20), 3 << 20).await;
        assert_eq!(
            (refused, taken.load(Ordering::SeqCst)),
            (Err(BodyError::TooLarge), 0)
        );
        // Arriving without end: taken up to the bound, then given up.
        let taken = AtomicUsize::new(0);
        let refused = read_bounded(counted(1000, &taken), None, 3 << 20).await;
        let bound = (DISCARD_BYTES >> 20) as usize;
        assert_eq!(refused, Err(BodyError::TooLarge));
        assert!((bound..=bound + 1).contains(&taken.load(Ordering::SeqCst)));
    }
}
