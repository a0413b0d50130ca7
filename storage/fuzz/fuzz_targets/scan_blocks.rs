//! The block scanner on arbitrary bytes: never panics; the blocks it returns lie back to back
//! and re-encode to exactly the bytes they cover; cutting the image at the reported end gives
//! the same blocks and a clean end. The second input byte chooses whether CRCs are fixed up.
#![no_main]

#[path = "common.rs"]
mod common;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use storage::codec::{HEADER_RECORD_LEN, ScanStop, encode_block, scan_blocks};

fuzz_target!(|data: &[u8]| {
    // The first byte picks where to start: at the header (0), after it (25), or elsewhere.
    let [start, mode, image @ ..] = data else {
        return;
    };
    let mut image = image.to_vec();
    let start = *start;
    if mode & 1 == 1 {
        let from = if start < 128 {
            0
        } else {
            HEADER_RECORD_LEN.min(image.len())
        };
        common::fix_crcs(&mut image[from..]);
    }
    let image = &image[..];
    let start = match start {
        0..=127 => 0,
        128..=191 => HEADER_RECORD_LEN,
        other => usize::from(other - 192),
    };
    let buf = Bytes::copy_from_slice(image);
    let report = scan_blocks(&buf, start);
    assert!(report.end <= image.len());
    if report.stop == ScanStop::End {
        assert_eq!(report.end, image.len());
    }
    let mut pos = if report.header.is_some() {
        HEADER_RECORD_LEN
    } else {
        start
    };
    for block in &report.blocks {
        assert_eq!(block.offset, pos, "blocks must lie back to back");
        let mut again = Vec::new();
        let bh = encode_block(
            None,
            block.block_header.block_number,
            block.block_header.first_entry_id,
            &block.entries,
            &mut again,
        );
        assert_eq!(bh, block.block_header);
        assert_eq!(&again[..], &image[block.offset..block.end()]);
        pos = block.end();
    }
    if start <= image.len() {
        assert_eq!(report.end, pos);
        let again = scan_blocks(&buf.slice(..report.end), start);
        assert_eq!(again.blocks, report.blocks);
        assert_eq!(again.header, report.header);
        assert_eq!(again.stop, ScanStop::End);
    }
});
