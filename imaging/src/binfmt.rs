//! Bounds-checked little-endian decoding shared by the library's binary
//! objects (packs, index files, chunk lists). Every read checks the remaining
//! length first, so a truncated or hostile object yields an error, never a
//! panic or an oversized allocation.

/// Why a binary object failed to decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The object ends before a field it declares.
    #[error("truncated at byte {offset}: needed {needed} more bytes")]
    Truncated {
        /// where the missing field starts
        offset: usize,
        /// bytes it needs
        needed: usize,
    },
    /// The object does not start with the expected magic.
    #[error("not a {expected} object (bad magic)")]
    Magic {
        /// what was expected
        expected: &'static str,
    },
    /// A format version this build does not know.
    #[error("format version {found} is not supported (this build reads {supported})")]
    Version {
        /// found in the object
        found: u32,
        /// understood here
        supported: u32,
    },
    /// A field with an impossible value.
    #[error("invalid field at byte {offset}: {what}")]
    Invalid {
        /// where the field is
        offset: usize,
        /// what is wrong
        what: String,
    },
    /// Bytes left over after the declared content.
    #[error("{extra} unexpected bytes after the declared content")]
    Trailing {
        /// how many
        extra: usize,
    },
}

/// A reader over a byte slice.
pub struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// Starts at the beginning of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data, at: 0 }
    }

    /// Current offset.
    pub fn offset(&self) -> usize {
        self.at
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.data.len() - self.at
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated {
                offset: self.at,
                needed: n - self.remaining(),
            });
        }
        let s = &self.data[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    /// A fixed-size array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    /// A little-endian u32.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// A little-endian u64.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// Checks an 8-byte magic and a u32 version, as every object starts.
    pub fn header(
        &mut self,
        magic: &[u8; 8],
        name: &'static str,
        version: u32,
    ) -> Result<(), DecodeError> {
        if self.take(8).ok() != Some(&magic[..]) {
            return Err(DecodeError::Magic { expected: name });
        }
        let found = self.u32()?;
        if found != version {
            return Err(DecodeError::Version {
                found,
                supported: version,
            });
        }
        Ok(())
    }

    /// Checks that a declared count of fixed-size records fits in what is
    /// left, before anything is allocated for them.
    pub fn expect_records(&self, count: u64, size: usize) -> Result<usize, DecodeError> {
        let need = count.checked_mul(size as u64);
        match need {
            Some(n) if n <= self.remaining() as u64 => Ok(count as usize),
            _ => Err(DecodeError::Invalid {
                offset: self.at,
                what: format!(
                    "declares {count} records of {size} bytes but only {} bytes remain",
                    self.remaining()
                ),
            }),
        }
    }

    /// Fails if anything is left.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(DecodeError::Trailing { extra }),
        }
    }
}

/// Starts an object: magic then version.
pub fn write_header(out: &mut Vec<u8>, magic: &[u8; 8], version: u32) {
    out.extend_from_slice(magic);
    out.extend_from_slice(&version.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_is_an_error_not_a_panic() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u8(), Ok(1));
        assert!(matches!(
            r.u32(),
            Err(DecodeError::Truncated {
                offset: 1,
                needed: 2
            })
        ));
    }

    #[test]
    fn absurd_counts_are_refused() {
        let r = Reader::new(&[0; 100]);
        assert!(r.expect_records(u64::MAX, 48).is_err());
        assert!(r.expect_records(3, 48).is_err());
        assert_eq!(r.expect_records(2, 48), Ok(2));
    }
}
