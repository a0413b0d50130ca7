//! A produce request's record set through `batch::split_and_validate`, then every batch it
//! accepts through `batch::find_record` (which decompresses gzip, snappy in both framings,
//! lz4 and zstd as a stream). The first input byte's low bit asks for the first batch's
//! CRC-32C to be set right first, so that mutations reach the checks behind it.
#![no_main]

use bytes::Bytes;
use kafka_wire::batch::{find_record, split_and_validate};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&mode, data)) = input.split_first() else {
        return;
    };
    let mut data = data.to_vec();
    if mode & 1 == 1 && data.len() >= 61 {
        let length = i32::from_be_bytes([data[8], data[9], data[10], data[11]]);
        if let Some(end) = usize::try_from(length).ok().and_then(|l| l.checked_add(12))
            && (21..=data.len()).contains(&end)
        {
            let crc = crc32c::crc32c(&data[21..end]);
            data[17..21].copy_from_slice(&crc.to_be_bytes());
        }
    }
    let Ok(batches) = split_and_validate(&Bytes::from(data)) else {
        return;
    };
    for (header, batch) in batches {
        assert!(header.record_count >= 1);
        let mut seen = 0;
        let _ = find_record(&batch, |_, _| {
            seen += 1;
            false
        });
        assert!(seen <= header.record_count);
    }
});
