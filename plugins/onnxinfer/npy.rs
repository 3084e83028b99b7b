// SPDX-License-Identifier: MPL-2.0
//! Input tensors written as NumPy `.npy` files (`input-dump-location`): what the model is fed,
//! for calibrating a quantized model on the frames it will see (`scripts/quantize.py`).
//!
//! Hand-written: the format (version 1.0) is a magic string, a Python-literal header padded to
//! 64 bytes, and the raw little-endian values; a crate for it would bring ndarray's I/O
//! machinery for these few lines.

use std::io::Write;
use std::path::Path;

/// The element type of a tensor written.
pub enum Values<'a> {
    F32(&'a [f32]),
    U8(&'a [u8]),
}

/// Writes `values` of `shape` to `path` as a `.npy` file (through a temporary file, so a
/// reader never sees half a tensor).
pub fn write(path: &Path, shape: &[usize], values: Values<'_>) -> std::io::Result<()> {
    let descr = match values {
        Values::F32(_) => "<f4",
        Values::U8(_) => "|u1",
    };
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // Magic (6) + version (2) + header length (2) + header + '\n', a multiple of 64.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    let tmp = path.with_extension("npy.partial");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    f.write_all(b"\x93NUMPY\x01\x00")?;
    f.write_all(&(header.len() as u16).to_le_bytes())?;
    f.write_all(header.as_bytes())?;
    match values {
        Values::F32(v) => {
            for x in v {
                f.write_all(&x.to_le_bytes())?;
            }
        }
        Values::U8(v) => f.write_all(v)?,
    }
    f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tensor_file_has_the_npy_layout() {
        let dir = std::env::temp_dir().join(format!("videoai-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.npy");
        write(&path, &[1, 3, 2, 2], Values::F32(&[0.5; 12])).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
        let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + hlen) % 64, 0);
        let header = std::str::from_utf8(&bytes[10..10 + hlen]).unwrap();
        assert!(header.contains("'shape': (1, 3, 2, 2)") && header.ends_with('\n'));
        assert_eq!(bytes.len(), 10 + hlen + 12 * 4);
        assert_eq!(&bytes[10 + hlen..10 + hlen + 4], &0.5f32.to_le_bytes());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
