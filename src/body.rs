//! A request body read whole up to a bound, for every front-end that reads
//! bodies over HTTP (piperd's API, OpenAI's, MaryTTS's): each maps the two
//! failures to its own errors.

use bytes::{Buf, Bytes, BytesMut};
use futures::{Stream, StreamExt};

/// Why a body could not be read.
#[derive(Debug, PartialEq)]
pub enum BodyError<E> {
    /// Over the bound.
    TooLarge,
    /// The connection failed while it was read.
    Unreadable(E),
}

/// Reads `stream` whole, refusing it as soon as it passes `max` bytes.
pub async fn read_bounded<S, B, E>(stream: S, max: usize) -> Result<Bytes, BodyError<E>>
where
    S: Stream<Item = Result<B, E>>,
    B: Buf,
{
    let mut stream = std::pin::pin!(stream);
    let mut out = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let mut chunk = chunk.map_err(BodyError::Unreadable)?;
        if out.len() + chunk.remaining() > max {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bodies_are_read_whole_within_the_bound() {
        let parts =
            || futures::stream::iter([Ok::<_, ()>(Bytes::from("ab")), Ok(Bytes::from("cd"))]);
        assert_eq!(read_bounded(parts(), 4).await, Ok(Bytes::from("abcd")));
        assert_eq!(read_bounded(parts(), 3).await, Err(BodyError::TooLarge));
        let broken = futures::stream::iter([Ok(Bytes::from("ab")), Err("reset")]);
        assert_eq!(
            read_bounded(broken, 10).await,
            Err(BodyError::Unreadable("reset"))
        );
    }
}
