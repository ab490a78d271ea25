//! Metrics as pure functions over scores.
pub mod bootstrap;
pub mod eer;
pub mod lfw;
pub mod robustness;

/// Cosine distance D = 1 - a.b between unit-norm features (eq. 1).
pub fn distance(a: &[f32], b: &[f32]) -> f64 {
    1.0 - a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64) * (*y as f64))
        .sum::<f64>()
}
