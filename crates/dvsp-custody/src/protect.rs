//! Unlinkable, renewable templates (ISO/IEC 24745): before it is stored, a feature f is
//! multiplied by a gallery's secret random orthogonal matrix Q, t = Q f. Cosine distances
//! are unchanged (D(Q a, Q b) = 1 - a^T Q^T Q b = D(a, b), eq. 1), so accuracy costs nothing,
//! while the same face enrolled in two galleries gives unrelated templates (t_A^T t_B =
//! f^T Q_A^T Q_B f, of order 1/sqrt(d)), and renewing a gallery's secret re-issues every
//! template as Q' Q^T t without any photo; the old secret is then destroyed, so old templates
//! (a backup, a leak) no longer compare with anything.
//!
//! Q is Haar-distributed: the Q of the QR decomposition (R with a positive diagonal, here
//! by twice-repeated modified Gram-Schmidt) of a d x d matrix of independent N(0, 1)
//! entries. The entries come from a generator fixed by this file alone, so a secret gives the
//! same Q in every build: SHA-256 in counter mode over the secret, uniform 53-bit doubles,
//! Box-Muller. Epoch 0 is the identity (templates enrolled before this existed, until their
//! gallery is renewed).
use sha2::{Digest, Sha256};

/// An orthogonal d x d matrix, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Transform {
    d: usize,
    q: Vec<f64>,
}

/// Uniform doubles in (0, 1) from SHA-256(domain || secret || d || counter).
struct Stream<'a> {
    secret: &'a [u8],
    d: usize,
    counter: u64,
    block: Vec<f64>,
}

impl Stream<'_> {
    fn next(&mut self) -> f64 {
        if self.block.is_empty() {
            let h = Sha256::new()
                .chain_update(b"dvsp-orthogonal-v1\0")
                .chain_update(self.secret)
                .chain_update((self.d as u64).to_le_bytes())
                .chain_update(self.counter.to_le_bytes())
                .finalize();
            self.counter += 1;
            self.block = h
                .chunks_exact(8)
                .map(|c| {
                    let u = u64::from_le_bytes(c.try_into().expect("8 bytes"));
                    ((u >> 11) as f64 + 0.5) / (1u64 << 53) as f64
                })
                .collect();
        }
        self.block.pop().expect("refilled above")
    }
}

impl Transform {
    pub fn identity(d: usize) -> Transform {
        let mut q = vec![0.0; d * d];
        for i in 0..d {
            q[i * d + i] = 1.0;
        }
        Transform { d, q }
    }

    /// The gallery transform of `secret` in dimension `d`.
    pub fn from_secret(secret: &[u8], d: usize) -> Transform {
        let mut s = Stream {
            secret,
            d,
            counter: 0,
            block: Vec::new(),
        };
        // Columns of G, N(0, 1) by Box-Muller.
        let mut cols: Vec<Vec<f64>> = (0..d)
            .map(|_| {
                (0..d)
                    .map(|_| {
                        let (u, v) = (s.next(), s.next());
                        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
                    })
                    .collect()
            })
            .collect();
        // Modified Gram-Schmidt, each column orthogonalised twice against the ones before.
        for j in 0..d {
            let (done, rest) = cols.split_at_mut(j);
            let c = &mut rest[0];
            for _ in 0..2 {
                for b in done.iter() {
                    let dot: f64 = b.iter().zip(c.iter()).map(|(x, y)| x * y).sum();
                    for (x, y) in c.iter_mut().zip(b) {
                        *x -= dot * y;
                    }
                }
            }
            let norm = c.iter().map(|x| x * x).sum::<f64>().sqrt();
            for x in c.iter_mut() {
                *x /= norm;
            }
        }
        let mut q = vec![0.0; d * d];
        for (j, c) in cols.iter().enumerate() {
            for (i, x) in c.iter().enumerate() {
                q[i * d + j] = *x;
            }
        }
        Transform { d, q }
    }

    pub fn dim(&self) -> usize {
        self.d
    }

    /// t = Q f.
    pub fn apply(&self, f: &[f32]) -> Vec<f32> {
        self.q
            .chunks_exact(self.d)
            .map(|row| row.iter().zip(f).map(|(q, x)| q * *x as f64).sum::<f64>() as f32)
            .collect()
    }

    /// f = Q^T t.
    pub fn invert(&self, t: &[f32]) -> Vec<f32> {
        let mut f = vec![0.0f64; self.d];
        for (row, x) in self.q.chunks_exact(self.d).zip(t) {
            for (fj, q) in f.iter_mut().zip(row) {
                *fj += q * *x as f64;
            }
        }
        f.into_iter().map(|v| v as f32).collect()
    }
}

/// A fresh random secret for (`gallery`, `epoch`), wrapped by `keyring`'s active key.
pub fn new_secret(
    keyring: &crate::seal::Keyring,
    gallery: &str,
    epoch: i64,
) -> crate::store::GallerySecret {
    use rand::RngCore;
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let (key_id, wrapped) = keyring.wrap_secret(gallery, epoch, &secret);
    crate::store::GallerySecret {
        gallery_id: gallery.to_string(),
        epoch,
        key_id,
        wrapped,
    }
}

/// The transform of a stored secret in dimension `d`.
pub fn transform_of(
    keyring: &crate::seal::Keyring,
    s: &crate::store::GallerySecret,
    d: usize,
) -> Result<Transform, crate::seal::SealError> {
    let secret = keyring.unwrap_secret(&s.gallery_id, s.epoch, &s.key_id, &s.wrapped)?;
    Ok(Transform::from_secret(&secret, d))
}
