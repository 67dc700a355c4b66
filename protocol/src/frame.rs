//! Frames: a 4-byte big-endian length N, then N bytes holding one message encoded
//! with bincode 2's standard configuration (little-endian, variable-length integers).
//!
//! The length is checked against the limit *before* anything is allocated, and the
//! decoder is given a byte limit so that a length inside a message can never make it
//! allocate more than the frame could hold.

use serde::{de::DeserializeOwned, Serialize};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Frames larger than this are refused unless configured otherwise.
pub const DEFAULT_MAX_FRAME: u32 = 8 * 1024 * 1024;
/// No configuration may raise the limit past this.
pub const HARD_MAX_FRAME: u32 = 64 * 1024 * 1024;

#[derive(Debug, Error)]
pub enum FrameError {
    #[error("frame of {len} bytes is larger than the limit of {max} bytes")]
    TooLarge { len: u64, max: u32 },
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error("undecodable message: {0}")]
    Decode(String),
    #[error("message has {0} trailing bytes")]
    TrailingBytes(usize),
    #[error("cannot encode message: {0}")]
    Encode(String),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes `msg` as one frame (length prefix included).
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let mut buf = vec![0u8; 4];
    bincode::serde::encode_into_std_write(msg, &mut buf, config())
        .map_err(|e| FrameError::Encode(e.to_string()))?;
    let len = u32::try_from(buf.len() - 4).map_err(|_| FrameError::TooLarge {
        len: (buf.len() - 4) as u64,
        max: HARD_MAX_FRAME,
    })?;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf)
}

/// Decodes one message from a frame body. The whole body must be consumed.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    // Nothing inside a message can legitimately be longer than the message, so the
    // smallest limit at least as large as the body bounds every allocation.
    fn run<T: DeserializeOwned, const N: usize>(body: &[u8]) -> Result<(T, usize), FrameError> {
        bincode::serde::decode_from_slice(body, config().with_limit::<N>())
            .map_err(|e| FrameError::Decode(e.to_string()))
    }
    let (msg, used) = match body.len() {
        0..=65_536 => run::<T, 65_536>(body)?,
        65_537..=1_048_576 => run::<T, 1_048_576>(body)?,
        1_048_577..=8_388_608 => run::<T, 8_388_608>(body)?,
        _ => run::<T, { HARD_MAX_FRAME as usize }>(body)?,
    };
    if used != body.len() {
        return Err(FrameError::TrailingBytes(body.len() - used));
    }
    Ok(msg)
}

/// Reads one frame body. `Ok(None)` is a clean end of stream between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: u32,
) -> Result<Option<Vec<u8>>, FrameError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = r.read(&mut len[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated)
            };
        }
        got += n;
    }
    let len = u32::from_be_bytes(len);
    if len > max.min(HARD_MAX_FRAME) {
        return Err(FrameError::TooLarge {
            len: len as u64,
            max,
        });
    }
    // Grow with what actually arrives: a length prefix alone reserves little, so
    // many slow connections cannot make the daemon hold their claimed sizes.
    let mut body = Vec::with_capacity((len as usize).min(64 * 1024));
    let got = r.take(u64::from(len)).read_to_end(&mut body).await?;
    if got != len as usize {
        return Err(FrameError::Truncated);
    }
    Ok(Some(body))
}

/// Reads and decodes one message.
pub async fn read_message<T: DeserializeOwned, R: AsyncRead + Unpin>(
    r: &mut R,
    max: u32,
) -> Result<Option<T>, FrameError> {
    match read_frame(r, max).await? {
        None => Ok(None),
        Some(body) => decode(&body).map(Some),
    }
}

/// Encodes and writes one message, without flushing.
pub async fn write_message<T: Serialize, W: AsyncWrite + Unpin>(
    w: &mut W,
    msg: &T,
) -> Result<(), FrameError> {
    let frame = encode(msg)?;
    w.write_all(&frame).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Request;

    #[test]
    fn hello_matches_the_documented_bytes() {
        let frame = encode(&Request::Hello {
            protocol_version: 1,
            client: "cli".into(),
        })
        .unwrap();
        assert_eq!(frame, [0, 0, 0, 6, 0x00, 0x01, 0x03, b'c', b'l', b'i']);
    }

    #[test]
    fn round_trip_and_trailing_bytes() {
        let req = Request::Chunk {
            data: vec![7; 1000],
        };
        let frame = encode(&req).unwrap();
        assert_eq!(decode::<Request>(&frame[4..]).unwrap(), req);
        let mut long = frame[4..].to_vec();
        long.push(0);
        assert!(matches!(
            decode::<Request>(&long),
            Err(FrameError::TrailingBytes(1))
        ));
    }

    #[test]
    fn huge_inner_length_is_an_error_not_an_abort() {
        // Variant 3 (Chunk) claiming a 2^62-byte payload.
        let body = [3u8, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0x40];
        assert!(decode::<Request>(&body).is_err());
    }

    #[tokio::test]
    async fn oversized_length_is_refused_before_reading() {
        let mut input: &[u8] = &[0xff, 0xff, 0xff, 0xff];
        let err = read_frame(&mut input, DEFAULT_MAX_FRAME).await.unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { .. }));
    }
}
