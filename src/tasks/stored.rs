//! How a log chunk's bytes are kept in the store: as written, or LZ4-compressed
//! when that saves enough (most program output is text and shrinks several
//! times, which halves or better what the store writes and checkpoints).

use bytes::Bytes;

/// Chunks shorter than this are stored as written: too small to gain.
const MIN_TO_COMPRESS: usize = 512;
/// The largest chunk the store holds once decompressed; a row claiming more is
/// corrupt, and is refused before anything is allocated for it.
const MAX_DECODED: usize = 16 * 1024 * 1024;

/// The `codec` column: how `data` is stored.
const RAW: i64 = 0;
const LZ4: i64 = 1;

/// A chunk's bytes in their stored form.
#[derive(Debug, Clone)]
pub struct StoredData {
    codec: i64,
    blob: Bytes,
}

/// A stored chunk that cannot be read back.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown chunk codec {0}")]
    UnknownCodec(i64),
    #[error("a compressed chunk claims {0} bytes, more than a chunk can hold")]
    TooLarge(usize),
    #[error("a compressed chunk is damaged: {0}")]
    Damaged(String),
}

impl StoredData {
    /// The stored form of `data`: compressed when that saves at least an eighth.
    pub fn encode(data: &Bytes) -> StoredData {
        if data.len() >= MIN_TO_COMPRESS {
            let packed = lz4_flex::block::compress_prepend_size(data);
            if packed.len() <= data.len() - data.len() / 8 {
                return StoredData {
                    codec: LZ4,
                    blob: Bytes::from(packed),
                };
            }
        }
        StoredData {
            codec: RAW,
            blob: data.clone(),
        }
    }

    pub fn codec(&self) -> i64 {
        self.codec
    }

    pub fn blob(&self) -> &[u8] {
        &self.blob
    }
}

/// The bytes a stored chunk holds.
pub fn decode(codec: i64, blob: Vec<u8>) -> Result<Vec<u8>, DecodeError> {
    match codec {
        RAW => Ok(blob),
        LZ4 => {
            let (size, packed) = lz4_flex::block::uncompressed_size(&blob)
                .map_err(|e| DecodeError::Damaged(e.to_string()))?;
            if size > MAX_DECODED {
                return Err(DecodeError::TooLarge(size));
            }
            lz4_flex::block::decompress(packed, size)
                .map_err(|e| DecodeError::Damaged(e.to_string()))
        }
        other => Err(DecodeError::UnknownCodec(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_compressed_and_read_back_exactly() {
        let text: Bytes = "cargo build: compiling crate 42 of 300\n"
            .repeat(1000)
            .into_bytes()
            .into();
        let stored = StoredData::encode(&text);
        assert_eq!(stored.codec(), LZ4);
        assert!(
            stored.blob().len() < text.len() / 4,
            "{}",
            stored.blob().len()
        );
        assert_eq!(
            decode(stored.codec(), stored.blob().to_vec()).unwrap(),
            text
        );
    }

    #[test]
    fn small_or_incompressible_chunks_are_stored_as_written() {
        let small = Bytes::from_static(b"hello\n");
        assert_eq!(StoredData::encode(&small).codec(), RAW);
        // A byte sequence without repeats (an LCG's high bytes).
        let mut x: u32 = 12345;
        let noise: Bytes = (0..64 * 1024)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                (x >> 24) as u8
            })
            .collect::<Vec<u8>>()
            .into();
        let stored = StoredData::encode(&noise);
        assert_eq!(stored.codec(), RAW);
        assert_eq!(
            decode(stored.codec(), stored.blob().to_vec()).unwrap(),
            noise
        );
    }

    #[test]
    fn damaged_or_unknown_rows_are_errors_not_panics() {
        assert!(matches!(
            decode(7, vec![1, 2]),
            Err(DecodeError::UnknownCodec(7))
        ));
        assert!(matches!(decode(LZ4, vec![1]), Err(DecodeError::Damaged(_))));
        let huge = u32::MAX.to_le_bytes().to_vec();
        assert!(matches!(decode(LZ4, huge), Err(DecodeError::TooLarge(_))));
        let mut packed = lz4_flex::block::compress_prepend_size(&[b'a'; 4096]);
        packed.truncate(packed.len() - 2);
        assert!(matches!(decode(LZ4, packed), Err(DecodeError::Damaged(_))));
    }
}
