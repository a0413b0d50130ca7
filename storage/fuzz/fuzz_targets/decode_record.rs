//! `decode_record` on arbitrary bytes: never panics, and whatever it accepts re-encodes to
//! exactly the bytes it consumed (the format has one encoding per record). The first input
//! byte chooses whether CRCs are fixed up first, so that both the CRC check and what lies
//! behind it get explored.
#![no_main]

#[path = "common.rs"]
mod common;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use storage::codec::{
    BlockHeaderRecord, FooterRecord, HeaderRecord, IndexRecord, Record, decode_record,
};

fuzz_target!(|input: &[u8]| {
    let Some((&mode, data)) = input.split_first() else {
        return;
    };
    let mut data = data.to_vec();
    if mode & 1 == 1 {
        common::fix_crcs(&mut data);
    }
    let data = &data[..];
    let buf = Bytes::copy_from_slice(data);
    let decoded = decode_record(&buf);
    if let Ok((record, len)) = &decoded {
        assert!(*len <= data.len());
        assert_eq!(record.encoded_len(), *len);
        let mut again = Vec::new();
        record.encode(&mut again);
        assert_eq!(&again[..], &data[..*len], "re-encoding changed the bytes");
        if let Record::Data(payload) = record {
            // Zero-copy: the payload points into the input buffer.
            assert_eq!(payload.as_ptr() as usize, buf.as_ptr() as usize + 9);
        }
    }
    // The typed decoders agree with the generic one.
    let typed = [
        HeaderRecord::decode(data).map(|(r, n)| (Record::Header(r), n)),
        IndexRecord::decode(data).map(|(r, n)| (Record::Index(r), n)),
        FooterRecord::decode(data).map(|(r, n)| (Record::Footer(r), n)),
        BlockHeaderRecord::decode(data).map(|(r, n)| (Record::BlockHeader(r), n)),
    ];
    for result in typed {
        if let Ok(ok) = result {
            assert_eq!(decoded.as_ref().ok(), Some(&ok));
        }
    }
});
