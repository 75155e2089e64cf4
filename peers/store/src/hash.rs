//! The content digest of [`ObjectStore::hash`](crate::ObjectStore::hash).

use sha2::{Digest, Sha256};

static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// SHA-256 of a byte stream with its trailing zero bytes stripped, computed incrementally.
///
/// Zero bytes are held back until a non-zero byte follows them, so an object and the same object
/// zero-padded (or extended by a hole) hash alike. Every store computes `hash` with this, which is
/// what makes digests comparable across stores.
#[derive(Clone, Default)]
pub struct ContentHasher {
    sha: Sha256,
    pending_zeros: u64,
}

impl ContentHasher {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next bytes of the stream.
    pub fn update(&mut self, data: &[u8]) {
        match data.iter().rposition(|&b| b != 0) {
            Some(last) => {
                self.flush_zeros();
                self.sha.update(&data[..=last]);
                self.pending_zeros = (data.len() - 1 - last) as u64;
            }
            None => self.pending_zeros += data.len() as u64,
        }
    }

    /// Feeds `n` zero bytes (a hole) without materializing them.
    pub fn update_zeros(&mut self, n: u64) {
        self.pending_zeros += n;
    }

    fn flush_zeros(&mut self) {
        while self.pending_zeros > 0 {
            let n = self.pending_zeros.min(ZEROS.len() as u64);
            self.sha.update(&ZEROS[..n as usize]);
            self.pending_zeros -= n;
        }
    }

    /// The digest of everything fed, trailing zeros excluded.
    pub fn finish(self) -> [u8; 32] {
        self.sha.finalize().into()
    }
}

/// The content digest of `data` in one call.
pub fn content_digest(data: &[u8]) -> [u8; 32] {
    let mut h = ContentHasher::new();
    h.update(data);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_zeros_are_ignored_and_inner_zeros_are_not() {
        let plain = content_digest(b"abc");
        assert_eq!(plain, <[u8; 32]>::from(Sha256::digest(b"abc")));
        assert_eq!(content_digest(b"abc\0\0\0"), plain);
        let mut h = ContentHasher::new();
        h.update(b"ab");
        h.update(&[0; 100_000]);
        h.update_zeros(5);
        h.update(b"c");
        h.update(&[0; 7]);
        let mut inner = b"ab".to_vec();
        inner.extend(std::iter::repeat_n(0, 100_005));
        inner.push(b'c');
        assert_eq!(h.finish(), <[u8; 32]>::from(Sha256::digest(&inner)));
        assert_eq!(content_digest(&[0; 10]), content_digest(b""));
    }
}
