//! Helpers shared by the fuzz targets.

#![allow(dead_code)] // each target uses a part

/// Rewrites the CRCs in `buf` so that the fuzzer's structural mutations reach the checks that
/// sit behind them (payload sizes, magic, versions, entry counts). Walks records from the
/// start; every record that fits gets its correct CRC, and a block header record whose data
/// region fits gets that region's records fixed and then its `block_crc`. Stops at the first
/// record that does not fit.
pub(crate) fn fix_crcs(buf: &mut [u8]) {
    let mut pos = 0;
    while pos + 9 <= buf.len() {
        let kind = buf[pos + 4];
        let len = u32::from_le_bytes([buf[pos + 5], buf[pos + 6], buf[pos + 7], buf[pos + 8]]);
        let Some(end) = (pos + 9)
            .checked_add(len as usize)
            .filter(|&e| e <= buf.len())
        else {
            return;
        };
        let mut next = end;
        if kind == 5 && len == 28 {
            let at = pos + 9 + 20;
            let block_length = u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
            if let Some(region_end) = end
                .checked_add(block_length as usize)
                .filter(|&e| e <= buf.len())
            {
                fix_crcs(&mut buf[end..region_end]);
                let crc = crc32fast::hash(&buf[end..region_end]);
                buf[pos + 9 + 24..pos + 9 + 28].copy_from_slice(&crc.to_le_bytes());
                next = region_end;
            }
        }
        fix_record_crc(&mut buf[pos..end]);
        pos = next;
    }
}

/// Sets the CRC of the record that fills `record` exactly.
pub(crate) fn fix_record_crc(record: &mut [u8]) {
    if record.len() >= 9 {
        let crc = crc32fast::hash(&record[4..]);
        record[..4].copy_from_slice(&crc.to_le_bytes());
    }
}
