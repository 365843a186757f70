//! Length-prefixed frames: `[frame version u8][payload length u32 BE][payload]`.
//!
//! The length is checked against the limit before anything is allocated, so a forged
//! length costs the reader nothing.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The frame format this build speaks.
pub const FRAME_VERSION: u8 = 1;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 5;

/// Why a frame could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The stream ended inside the frame.
    #[error("truncated frame: stream ended after {got} of {expected} bytes")]
    Truncated {
        /// Bytes read.
        got: usize,
        /// Bytes the frame needed.
        expected: usize,
    },
    /// The first byte is not a frame version we know.
    #[error("unsupported frame version {found} (this build speaks {supported})")]
    UnsupportedVersion {
        /// The version found.
        found: u8,
        /// Ours.
        supported: u8,
    },
    /// The declared length is over the limit.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Declared length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// No byte arrived for this long, in the middle of a frame or before it.
    #[error("no byte arrived for {after:?}")]
    Silent {
        /// The silence allowed.
        after: Duration,
    },
    /// The stream failed.
    #[error("stream error: {0}")]
    Io(String),
}

/// The payload length a header declares, checked against `max`.
pub fn parse_header(header: [u8; HEADER_LEN], max: usize) -> Result<usize, FrameError> {
    if header[0] != FRAME_VERSION {
        return Err(FrameError::UnsupportedVersion { found: header[0], supported: FRAME_VERSION });
    }
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok(len)
}

/// Reads the header of the next frame. `Ok(None)` if the stream ended cleanly first.
pub async fn read_header<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> Result<Option<usize>, FrameError> {
    let mut header = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match reader.read(&mut header[got..]).await {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(FrameError::Truncated { got, expected: HEADER_LEN }),
            Ok(n) => got += n,
            Err(e) => return Err(FrameError::Io(e.to_string())),
        }
    }
    parse_header(header, max).map(Some)
}

/// Reads a payload of `len` bytes announced by a header.
pub async fn read_payload<R: AsyncRead + Unpin>(reader: &mut R, len: usize) -> Result<Vec<u8>, FrameError> {
    let mut payload = vec![0u8; len];
    let mut got = 0;
    while got < len {
        match reader.read(&mut payload[got..]).await {
            Ok(0) => return Err(FrameError::Truncated { got: HEADER_LEN + got, expected: HEADER_LEN + len }),
            Ok(n) => got += n,
            Err(e) => return Err(FrameError::Io(e.to_string())),
        }
    }
    Ok(payload)
}

/// Reads one whole frame. `Ok(None)` if the stream ended cleanly before it.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> Result<Option<Vec<u8>>, FrameError> {
    match read_header(reader, max).await? {
        None => Ok(None),
        Some(len) => read_payload(reader, len).await.map(Some),
    }
}

/// One frame, as [`read_frame`], or [`FrameError::Silent`] once no byte has arrived
/// for `silence` (noticed within twice that) — however long the whole frame takes
/// while bytes keep coming.
pub async fn read_frame_within<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: usize,
    silence: Duration,
) -> Result<Option<Vec<u8>>, FrameError> {
    let mut watched = Watchdog {
        inner: reader,
        silence,
        sleep: Box::pin(tokio::time::sleep(silence)),
        progressed: false,
        timed_out: false,
    };
    let frame = read_frame(&mut watched, max).await;
    match watched.timed_out {
        true => Err(FrameError::Silent { after: silence }),
        false => frame,
    }
}

/// A reader that fails once no byte has arrived for a whole `silence` period. Reads only
/// note that bytes came; when the period ends with some, the next one starts (so the
/// timer is touched once per period, not once per read, and silence is noticed after
/// between one and two periods).
struct Watchdog<'a, R> {
    inner: &'a mut R,
    silence: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
    progressed: bool,
    timed_out: bool,
}

impl<R: AsyncRead + Unpin> AsyncRead for Watchdog<'_, R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut *this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                this.progressed |= buf.filled().len() > before;
                Poll::Ready(result)
            }
            Poll::Pending => loop {
                match this.sleep.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(()) if this.progressed => {
                        this.progressed = false;
                        let next = tokio::time::Instant::now() + this.silence;
                        this.sleep.as_mut().reset(next);
                    }
                    Poll::Ready(()) => {
                        this.timed_out = true;
                        let error = std::io::Error::new(std::io::ErrorKind::TimedOut, "no byte arrived");
                        return Poll::Ready(Err(error));
                    }
                }
            },
        }
    }
}

/// The header for a payload of `len` bytes.
pub fn header(len: usize) -> Result<[u8; HEADER_LEN], FrameError> {
    let len32 = u32::try_from(len).map_err(|_| FrameError::TooLarge { len, max: u32::MAX as usize })?;
    let l = len32.to_be_bytes();
    Ok([FRAME_VERSION, l[0], l[1], l[2], l[3]])
}

/// Writes one frame.
pub async fn write_frame<W: AsyncWrite + Unpin>(writer: &mut W, payload: &[u8]) -> Result<(), FrameError> {
    let header = header(payload.len())?;
    writer.write_all(&header).await.map_err(|e| FrameError::Io(e.to_string()))?;
    writer.write_all(payload).await.map_err(|e| FrameError::Io(e.to_string()))
}

/// Writes one frame, as [`write_frame`], but [`FrameError::Silent`] once the writer has
/// taken no byte for `stall` (a reader that stopped reading holds the stream's flow
/// control shut) — however long the whole frame takes while bytes keep going.
pub async fn write_frame_within<W: AsyncWrite + Unpin>(
    writer: &mut W,
    payload: &[u8],
    stall: Duration,
) -> Result<(), FrameError> {
    let header = header(payload.len())?;
    for mut part in [&header[..], payload] {
        // Each write takes what the writer has room for: any byte taken is progress.
        while !part.is_empty() {
            match tokio::time::timeout(stall, writer.write(part)).await {
                Ok(Ok(0)) => return Err(FrameError::Io("the stream takes no more bytes".into())),
                Ok(Ok(n)) => part = &part[n..],
                Ok(Err(e)) => return Err(FrameError::Io(e.to_string())),
                Err(_) => return Err(FrameError::Silent { after: stall }),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_writer_that_takes_nothing_for_the_stall_time_is_silent() {
        // A pipe whose reader never reads takes its buffer's worth, then nothing.
        let (mut writer, _reader) = tokio::io::duplex(1024);
        let stall = Duration::from_millis(100);
        let error = write_frame_within(&mut writer, &[7u8; 300_000], stall).await.unwrap_err();
        assert_eq!(error, FrameError::Silent { after: stall });
        // A reader that keeps reading, slowly, gets the whole frame however long it takes.
        let (mut writer, mut reader) = tokio::io::duplex(1024);
        let read = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                tokio::time::sleep(Duration::from_millis(1)).await;
                match reader.read(&mut buf).await.unwrap() {
                    0 => return got,
                    n => got.extend_from_slice(&buf[..n]),
                }
            }
        });
        write_frame_within(&mut writer, &[9u8; 200_000], stall).await.unwrap();
        drop(writer);
        let got = read.await.unwrap();
        assert_eq!(got.len(), HEADER_LEN + 200_000);
    }

    #[tokio::test]
    async fn frames_round_trip_and_bad_ones_are_named() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"hello").await.unwrap();
        write_frame(&mut buf, b"").await.unwrap();
        let mut r = &buf[..];
        assert_eq!(read_frame(&mut r, 100).await.unwrap().unwrap(), b"hello");
        assert_eq!(read_frame(&mut r, 100).await.unwrap().unwrap(), b"");
        assert_eq!(read_frame(&mut r, 100).await.unwrap(), None);

        let mut r = &buf[..];
        assert_eq!(read_frame(&mut r, 4).await, Err(FrameError::TooLarge { len: 5, max: 4 }));
        let mut r = &buf[..];
        assert_eq!(read_frame_within(&mut r, 100, Duration::from_secs(1)).await.unwrap().unwrap(), b"hello");
        let mut r = &buf[..7];
        assert_eq!(read_frame(&mut r, 100).await, Err(FrameError::Truncated { got: 7, expected: 10 }));
        let mut r = &buf[..3];
        assert_eq!(read_frame(&mut r, 100).await, Err(FrameError::Truncated { got: 3, expected: 5 }));
        let bad = [9u8, 0, 0, 0, 0];
        let mut r = &bad[..];
        assert_eq!(
            read_frame(&mut r, 100).await,
            Err(FrameError::UnsupportedVersion { found: 9, supported: 1 })
        );
    }

    #[tokio::test]
    async fn a_forged_length_allocates_nothing() {
        let forged = [FRAME_VERSION, 0xff, 0xff, 0xff, 0xff];
        let mut r = &forged[..];
        assert!(matches!(read_frame(&mut r, 16 << 20).await, Err(FrameError::TooLarge { .. })));
    }

    #[tokio::test]
    async fn silence_is_no_byte_for_a_while_not_a_slow_frame() {
        let silence = Duration::from_millis(300);
        // A 40-byte frame trickling in a byte every 20 ms takes 900 ms: read whole.
        let (mut tx, mut rx) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            let mut frame = Vec::new();
            write_frame(&mut frame, &[7u8; 40]).await.unwrap();
            for b in frame {
                tx.write_all(&[b]).await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tx
        });
        assert_eq!(read_frame_within(&mut rx, 100, silence).await.unwrap().unwrap(), vec![7u8; 40]);
        let mut tx = writer.await.unwrap();
        // Half a header, then nothing: silent.
        tx.write_all(&[FRAME_VERSION, 0]).await.unwrap();
        assert_eq!(
            read_frame_within(&mut rx, 100, silence).await,
            Err(FrameError::Silent { after: silence })
        );
    }
}
