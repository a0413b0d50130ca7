//! `decode_block` two ways.
//!
//! * Raw: arbitrary bytes (CRCs fixed up or not) never panic, and an accepted block re-encodes
//!   to exactly its input.
//! * Damaged: a valid block built from the input, then changed at input-chosen positions, is
//!   either rejected or decodes to the original entries (only when the changes cancel out):
//!   damage never yields wrong data.
#![no_main]

#[path = "common.rs"]
mod common;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use storage::codec::{FORMAT_V6, HeaderRecord, decode_block, decode_block_prefix, encode_block};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => raw(rest),
        1 => {
            let mut fixed = rest.to_vec();
            common::fix_crcs(&mut fixed);
            raw(&fixed);
        }
        _ => damaged(rest),
    }
});

fn raw(data: &[u8]) {
    let buf = Bytes::copy_from_slice(data);
    let Ok(block) = decode_block(&buf) else {
        return;
    };
    let mut again = Vec::new();
    let bh = encode_block(
        block.header.as_ref(),
        block.block_header.block_number,
        block.block_header.first_entry_id,
        &block.entries,
        &mut again,
    );
    assert_eq!(bh, block.block_header);
    assert_eq!(&again[..], data, "re-encoding changed the bytes");
    assert_eq!(decode_block_prefix(&buf).ok(), Some((block, data.len())));
}

fn damaged(data: &[u8]) {
    // Layout of the input: [control][flips: (pos u16, mask u8) * n][entry lengths and bytes...]
    // where control holds the number of flips (bits 0-1) and whether to add a long entry (bit
    // 7), which takes the CRC-combine path of the codec.
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let n_flips = usize::from(control % 4);
    let long = control & 0x80 != 0;
    if rest.len() < 3 * n_flips {
        return;
    }
    let (flips, mut body) = rest.split_at(3 * n_flips);
    let mut entries: Vec<Vec<u8>> = Vec::new();
    while let Some((&len, tail)) = body.split_first() {
        let len = usize::from(len).min(tail.len());
        entries.push(tail[..len].to_vec());
        body = &tail[len..];
    }
    if long {
        // 70,000 bytes made from the last entry (or sevens when there is none).
        let seed = entries.last().cloned().unwrap_or_default();
        let mut big: Vec<u8> = seed.iter().copied().cycle().take(70_000).collect();
        big.resize(70_000, 7);
        entries.insert(entries.len() / 2, big);
    }
    let header = HeaderRecord {
        version: FORMAT_V6,
        flags: 0,
        first_entry_id: 0,
    };
    let mut bytes = Vec::new();
    encode_block(Some(&header), 0, 0, &entries, &mut bytes);
    let original = bytes.clone();
    for flip in flips.chunks_exact(3) {
        let scale = if long { 3 } else { 1 };
        let pos = usize::from(u16::from_le_bytes([flip[0], flip[1]])) * scale % bytes.len();
        bytes[pos] ^= flip[2];
    }
    match decode_block(&Bytes::from(bytes.clone())) {
        Ok(block) => {
            assert_eq!(bytes, original, "damaged block accepted");
            assert_eq!(block.entries.len(), entries.len());
            for (got, want) in block.entries.iter().zip(&entries) {
                assert_eq!(&got[..], &want[..]);
            }
        }
        Err(_) => assert_ne!(bytes, original, "valid block rejected"),
    }
}
