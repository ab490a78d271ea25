//! dvsp-lab: experiments and benchmarks, kept out of the serving path.
//!
//! Owns the paper's tables end to end (`reproduce`: tuning, training, evaluation and audits of
//! every row, the table with its intervals) and the benchmarks (`bench`: training and attack
//! speed, inference precision, HTTP and gRPC load, 1:N search, model rollout), each reported
//! as ratios against a reference run in the same command.
//!
//! Builds on every other library crate; nothing but the `dvsp` binary may import it.
pub mod bench;
pub mod reproduce;
