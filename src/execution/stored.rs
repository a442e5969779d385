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
pub(crate) struct StoredData {
    codec: i64,
    blob: Bytes,
}

/// A stored chunk that cannot be read back.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DecodeError {
    #[error("unknown chunk codec {0}")]
    UnknownCodec(i64),
    #[error("a compressed chunk claims {0} bytes, more than a chunk can hold")]
    TooLarge(usize),
    #[error("a compressed chunk is damaged: {0}")]
    Damaged(String),
}

/// Bytes before an LZ4 block: the decoded size, little-endian (lz4_flex's
/// "prepend size" format, which `Decoder::decode` reads).
const SIZE_PREFIX: usize = 4;

/// Turns chunks into their stored form, compressing into a scratch buffer it
/// keeps: no chunk pays for allocating and zeroing room for the worst case.
#[derive(Debug, Default)]
pub(crate) struct Compressor {
    scratch: Vec<u8>,
}

impl Compressor {
    pub(crate) fn new() -> Compressor {
        Compressor::default()
    }

    /// The stored form of `data`: compressed when that saves at least an eighth.
    pub(crate) fn encode(&mut self, data: &Bytes) -> StoredData {
        if data.len() >= MIN_TO_COMPRESS
            && let Ok(size) = u32::try_from(data.len())
        {
            let room = SIZE_PREFIX + lz4_flex::block::get_maximum_output_size(data.len());
            if self.scratch.len() < room {
                self.scratch.resize(room, 0);
            }
            self.scratch[..SIZE_PREFIX].copy_from_slice(&size.to_le_bytes());
            if let Ok(n) =
                lz4_flex::block::compress_into(data, &mut self.scratch[SIZE_PREFIX..room])
                && SIZE_PREFIX + n <= data.len() - data.len() / 8
            {
                return StoredData {
                    codec: LZ4,
                    blob: Bytes::copy_from_slice(&self.scratch[..SIZE_PREFIX + n]),
                };
            }
        }
        StoredData {
            codec: RAW,
            blob: data.clone(),
        }
    }
}

impl StoredData {
    pub(crate) fn codec(&self) -> i64 {
        self.codec
    }

    pub(crate) fn blob(&self) -> &[u8] {
        &self.blob
    }
}

/// Reads stored chunks back into a buffer it keeps, so that reading many
/// chunks in a row neither allocates nor zeroes room for each of them.
#[derive(Debug, Default)]
pub(crate) struct Decoder {
    scratch: Vec<u8>,
}

impl Decoder {
    pub(crate) fn new() -> Decoder {
        Decoder::default()
    }

    /// The bytes a stored chunk holds: `blob` itself when stored as written,
    /// else decompressed into the scratch buffer (valid until the next call).
    pub(crate) fn decode<'a>(
        &'a mut self,
        codec: i64,
        blob: &'a [u8],
    ) -> Result<&'a [u8], DecodeError> {
        match codec {
            RAW => Ok(blob),
            LZ4 => {
                let (size, packed) = lz4_flex::block::uncompressed_size(blob)
                    .map_err(|e| DecodeError::Damaged(e.to_string()))?;
                if size > MAX_DECODED {
                    return Err(DecodeError::TooLarge(size));
                }
                if self.scratch.len() < size {
                    self.scratch.resize(size, 0);
                }
                let n = lz4_flex::block::decompress_into(packed, &mut self.scratch[..size])
                    .map_err(|e| DecodeError::Damaged(e.to_string()))?;
                if n != size {
                    return Err(DecodeError::Damaged(format!(
                        "{n} bytes decompressed where {size} were recorded"
                    )));
                }
                Ok(&self.scratch[..size])
            }
            other => Err(DecodeError::UnknownCodec(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What one fresh decoder reads back from a stored form.
    fn decode(codec: i64, blob: &[u8]) -> Result<Vec<u8>, DecodeError> {
        Decoder::new().decode(codec, blob).map(<[u8]>::to_vec)
    }

    /// `pattern` repeated and cut to exactly `len` bytes.
    fn text_of_len(pattern: &str, len: usize) -> Bytes {
        pattern.repeat(len).into_bytes()[..len].to_vec().into()
    }

    #[test]
    fn text_is_compressed_and_read_back_exactly() {
        let text: Bytes = "cargo build: compiling crate 42 of 300\n"
            .repeat(1000)
            .into_bytes()
            .into();
        let stored = Compressor::new().encode(&text);
        assert_eq!(stored.codec(), LZ4);
        assert!(
            stored.blob().len() < text.len() / 4,
            "{}",
            stored.blob().len()
        );
        assert_eq!(decode(stored.codec(), stored.blob()).unwrap(), text);
    }

    #[test]
    fn small_or_incompressible_chunks_are_stored_as_written() {
        let small = Bytes::from_static(b"hello\n");
        let mut compressor = Compressor::new();
        assert_eq!(compressor.encode(&small).codec(), RAW);
        // A byte sequence without repeats (an LCG's high bytes).
        let mut x: u32 = 12345;
        let noise: Bytes = (0..64 * 1024)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                (x >> 24) as u8
            })
            .collect::<Vec<u8>>()
            .into();
        let stored = compressor.encode(&noise);
        assert_eq!(stored.codec(), RAW);
        assert_eq!(decode(stored.codec(), stored.blob()).unwrap(), noise);
    }

    #[test]
    fn one_compressor_reused_across_sizes_writes_the_prepend_size_format() {
        // Rows written before the scratch buffer used lz4_flex's own
        // `compress_prepend_size`: the bytes must be the same.
        let mut compressor = Compressor::new();
        for (i, len) in [64 * 1024, 600, 40_000, 512, 64 * 1024]
            .into_iter()
            .enumerate()
        {
            let text = text_of_len(&format!("line {i} of a build log\n"), len);
            let stored = compressor.encode(&text);
            assert_eq!(stored.codec(), LZ4, "{len} bytes");
            assert_eq!(
                stored.blob(),
                &lz4_flex::block::compress_prepend_size(&text)[..]
            );
            assert_eq!(decode(stored.codec(), stored.blob()).unwrap(), text);
        }
    }

    #[test]
    fn one_decoder_reads_chunks_of_any_size_in_any_order() {
        let mut compressor = Compressor::new();
        let mut decoder = Decoder::new();
        for len in [64 * 1024, 600, 40_000, 5, 64 * 1024, 1000] {
            let text = text_of_len("x = 1; y = 2\n", len);
            let stored = compressor.encode(&text);
            assert_eq!(
                decoder.decode(stored.codec(), stored.blob()).unwrap(),
                &text[..]
            );
        }
        let mut short = lz4_flex::block::compress_prepend_size(&[b'a'; 4096]);
        short[..4].copy_from_slice(&5000u32.to_le_bytes());
        assert!(matches!(
            decoder.decode(LZ4, &short),
            Err(DecodeError::Damaged(_))
        ));
    }

    #[test]
    fn damaged_or_unknown_rows_are_errors_not_panics() {
        assert!(matches!(
            decode(7, &[1, 2]),
            Err(DecodeError::UnknownCodec(7))
        ));
        assert!(matches!(decode(LZ4, &[1]), Err(DecodeError::Damaged(_))));
        let huge = u32::MAX.to_le_bytes();
        assert!(matches!(decode(LZ4, &huge), Err(DecodeError::TooLarge(_))));
        let mut packed = lz4_flex::block::compress_prepend_size(&[b'a'; 4096]);
        packed.truncate(packed.len() - 2);
        assert!(matches!(decode(LZ4, &packed), Err(DecodeError::Damaged(_))));
    }
}
