//! How values are written to sled: a format byte, a CRC-32 of the payload, then JSON.
//!
//! Every value is checked when it is read back; a value written by another format version is
//! refused with a clear message rather than misread.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::StoreError;

/// The format of stored values. Bump it when a stored type changes incompatibly.
pub const FORMAT_VERSION: u8 = 1;

pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    let json = serde_json::to_vec(v).map_err(|e| StoreError::Encode(e.to_string()))?;
    let mut out = Vec::with_capacity(json.len() + 5);
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&crc32fast::hash(&json).to_le_bytes());
    out.extend_from_slice(&json);
    // Pair assertion: what we are about to write must read back.
    debug_assert!(decode_raw(&out).is_ok());
    Ok(out)
}

fn decode_raw(bytes: &[u8]) -> Result<&[u8], String> {
    if bytes.len() < 5 {
        return Err(format!("value of {} bytes is too short", bytes.len()));
    }
    if bytes[0] != FORMAT_VERSION {
        return Err(format!("value has format {} but this idgraph reads format {FORMAT_VERSION}", bytes[0]));
    }
    let crc = u32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    let payload = &bytes[5..];
    if crc32fast::hash(payload) != crc {
        return Err("checksum mismatch".into());
    }
    Ok(payload)
}

pub fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    let payload = decode_raw(bytes).map_err(|e| StoreError::Corrupt(format!("key {}: {e}", show_key(key))))?;
    serde_json::from_slice(payload).map_err(|e| StoreError::Corrupt(format!("key {}: {e}", show_key(key))))
}

fn show_key(k: &[u8]) -> String {
    match std::str::from_utf8(k) {
        Ok(s) if s.chars().all(|c| !c.is_control()) => s.to_string(),
        _ => k.iter().map(|b| format!("{b:02x}")).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_detects_damage() {
        let v = vec![1u32, 2, 3];
        let mut bytes = encode(&v).unwrap();
        assert_eq!(decode::<Vec<u32>>(b"k", &bytes).unwrap(), v);
        let last = bytes.len() - 2;
        bytes[last] ^= 0x01;
        assert!(matches!(decode::<Vec<u32>>(b"k", &bytes), Err(StoreError::Corrupt(_))));
        let mut newer = encode(&v).unwrap();
        newer[0] = FORMAT_VERSION + 1;
        let err = decode::<Vec<u32>>(b"k", &newer).unwrap_err().to_string();
        assert!(err.contains("format"), "{err}");
    }
}
