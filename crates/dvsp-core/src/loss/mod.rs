//! The paper's losses as free functions over tensors. Each documents its shapes and refuses
//! wrong ones with the dimensions in the message.
pub mod center;
pub mod dvib;
pub mod dvsp;
pub mod sphereface;

use tch::Tensor;

use crate::{Error, Result};

/// Refuses `t` unless it is `[rows, cols]` (`None` = any size on that axis).
pub(crate) fn expect_2d(
    name: &str,
    t: &Tensor,
    rows: Option<i64>,
    cols: Option<i64>,
) -> Result<()> {
    let s = t.size();
    let ok = s.len() == 2 && rows.is_none_or(|r| s[0] == r) && cols.is_none_or(|c| s[1] == c);
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{name}: expected [{}, {}], got {s:?}",
            rows.map_or("B".into(), |r| r.to_string()),
            cols.map_or("k".into(), |c| c.to_string())
        )))
    }
}

/// Mean over `m` samples of the cross-entropy of `logits` `[m, B, C]` against `labels` `[B]`:
/// the Monte-Carlo estimate of -E[log q(y|z)] (the likelihood term of eq. 6 and 13).
pub fn sampled_cross_entropy(logits: &Tensor, labels: &Tensor) -> Tensor {
    let s = logits.size();
    let (m, b, c) = (s[0], s[1], s[2]);
    logits
        .reshape([m * b, c])
        .cross_entropy_for_logits(&labels.repeat([m]))
}
