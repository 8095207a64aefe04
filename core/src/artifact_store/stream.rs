//! Byte streams in and out of the store: a reader cut into chunks, a local
//! file read in large chunks, and a stream that holds its last chunk back
//! until the whole has hashed right.

use std::io::{Read, Seek, SeekFrom};

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use object_store::{GetResult, GetResultPayload};
use sha2::{Digest, Sha256};
use tokio::io::AsyncRead;

use super::{ByteStream, StoreError};

/// Chunks read from a reader and from a local file: large enough that a
/// 200 MB download is a few hundred reads, small enough to stay in cache.
pub(crate) const CHUNK: usize = 1024 * 1024;

/// `reader` as a stream of chunks of up to [`CHUNK`] bytes.
pub(crate) fn read_chunks<R>(reader: R) -> impl Stream<Item = std::io::Result<Bytes>> + Send
where
    R: AsyncRead + Send + Unpin,
{
    futures::stream::try_unfold(reader, |mut reader| async move {
        Ok(super::read_chunk(&mut reader, CHUNK)
            .await?
            .map(|chunk| (chunk, reader)))
    })
}

/// The bytes of a get. A local file is read in [`CHUNK`]s on the blocking
/// pool (`object_store` reads 8 KiB at a time, too slow for checkpoints).
pub(crate) fn payload_chunks(
    got: GetResult,
) -> BoxStream<'static, Result<Bytes, object_store::Error>> {
    match got.payload {
        GetResultPayload::File(file, path) => {
            let range = got.range;
            let io_err = move |source: std::io::Error| object_store::Error::Generic {
                store: "LocalFileSystem",
                source: format!("reading {}: {source}", path.display()).into(),
            };
            futures::stream::try_unfold(
                (file, range.start, range.end, false),
                move |(mut file, at, end, seeked)| {
                    let io_err = io_err.clone();
                    async move {
                        if at >= end {
                            return Ok(None);
                        }
                        let want = usize::try_from((end - at).min(CHUNK as u64)).unwrap_or(CHUNK);
                        let read = tokio::task::spawn_blocking(move || {
                            if !seeked {
                                file.seek(SeekFrom::Start(at))?;
                            }
                            let mut buf = vec![0u8; want];
                            file.read_exact(&mut buf)?;
                            Ok::<_, std::io::Error>((file, buf))
                        })
                        .await
                        .map_err(|e| io_err(std::io::Error::other(e)))?;
                        let (file, buf) = read.map_err(io_err)?;
                        let next = at + buf.len() as u64;
                        Ok(Some((Bytes::from(buf), (file, next, end, true))))
                    }
                },
            )
            .boxed()
        }
        // Fused for the same reason as [`held_until_hashed`].
        GetResultPayload::Stream(s) => s.fuse().boxed(),
    }
}

/// `bytes`, hashed on the way, with the last chunk held back until the end:
/// `check` gets the hex sha256 of everything and decides whether the last
/// chunk goes out or the stream ends with its error instead.
pub(crate) fn held_until_hashed<F>(bytes: ByteStream, check: F) -> ByteStream
where
    F: FnOnce(String) -> Result<(), StoreError> + Send + 'static,
{
    struct State<F> {
        bytes: ByteStream,
        hasher: Sha256,
        held: Option<Bytes>,
        check: Option<F>,
    }
    let start = State {
        bytes,
        hasher: Sha256::new(),
        held: None,
        check: Some(check),
    };
    futures::stream::unfold(start, |mut s| async move {
        let check = s.check.take()?;
        loop {
            match s.bytes.next().await {
                Some(Ok(chunk)) => {
                    s.hasher.update(&chunk);
                    if let Some(previous) = s.held.replace(chunk) {
                        s.check = Some(check);
                        return Some((Ok(previous), s));
                    }
                }
                Some(Err(e)) => return Some((Err(e), s)),
                None => {
                    let actual = hex::encode(std::mem::take(&mut s.hasher).finalize());
                    return match (check(actual), s.held.take()) {
                        (Ok(()), Some(last)) => Some((Ok(last), s)),
                        (Ok(()), None) => None,
                        (Err(e), _) => Some((Err(e), s)),
                    };
                }
            }
        }
    })
    // Fused: a body that polls once more after the end gets None again,
    // not unfold's panic.
    .fuse()
    .boxed()
}
