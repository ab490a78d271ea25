//! IDX files (the MNIST container format), plain or gzipped.
//!
//! Layout: two zero bytes, a type byte (0x08 = unsigned byte, the only type the MNIST family
//! uses), the number of dimensions, one big-endian u32 per dimension, then the data.
use std::io::Read;
use std::path::Path;

use crate::{Error, Result};

/// A decoded IDX array of unsigned bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Idx {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Reads an IDX file; gzip is detected from its magic bytes, not the file name.
pub fn read(path: &Path) -> Result<Idx> {
    let raw = std::fs::read(path).map_err(Error::io(path))?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| bad(path, format!("corrupt gzip stream: {e}")))?;
        out
    } else {
        raw
    };
    parse(&bytes).map_err(|m| bad(path, m))
}

/// Parses IDX bytes; the error says which part is wrong.
pub fn parse(bytes: &[u8]) -> std::result::Result<Idx, String> {
    if bytes.len() < 4 {
        return Err(format!(
            "not an IDX file: {} bytes, the header alone is 4",
            bytes.len()
        ));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err("not an IDX file: the first two bytes must be zero".into());
    }
    if bytes[2] != 0x08 {
        return Err(format!(
            "IDX element type 0x{:02x} unsupported (only 0x08, unsigned byte)",
            bytes[2]
        ));
    }
    let ndim = bytes[3] as usize;
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(format!(
            "truncated header: {ndim} dimensions need {header} bytes, file has {}",
            bytes.len()
        ));
    }
    let dims: Vec<usize> = bytes[4..header]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let len = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or("dimensions overflow")?;
    let data = &bytes[header..];
    if data.len() < len {
        return Err(format!(
            "truncated: dimensions {dims:?} need {len} data bytes, file has {}",
            data.len()
        ));
    }
    if data.len() > len {
        return Err(format!(
            "{} trailing bytes after the {len} data bytes of {dims:?}",
            data.len() - len
        ));
    }
    Ok(Idx {
        dims,
        data: data.to_vec(),
    })
}

/// Encodes an IDX array (used by tests and tools that write small data sets).
pub fn encode(idx: &Idx) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, idx.dims.len() as u8];
    for d in &idx.dims {
        out.extend_from_slice(&(*d as u32).to_be_bytes());
    }
    out.extend_from_slice(&idx.data);
    out
}

fn bad(path: &Path, message: String) -> Error {
    Error::BadData {
        path: path.to_path_buf(),
        message,
    }
}
