//! The schema against the `kafka-protocol` decoder, and [`decode`] against broken frames.
//!
//! Frames are generated from the schema itself (random counts, strings, tagged fields, known
//! and unknown), so every field of every version is exercised: the decoder must accept each
//! one and re-encode its body to the same bytes, which holds only if the schema walks the
//! fields exactly as the decoder reads them. Then every such frame, cut short or with bytes
//! changed, must be refused or decoded, never panic.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;

use super::schema::{APIS, Api, Field, Ty};
use super::{Body, decodable_versions, decode};

/// A small deterministic generator (xorshift), so that a failure names its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Gen<'a> {
    rng: &'a mut Rng,
    version: i16,
    flexible: bool,
}

impl Gen<'_> {
    fn uvarint(&mut self, out: &mut BytesMut, mut v: u32) {
        while v >= 0x80 {
            out.put_u8((v as u8) | 0x80);
            v >>= 7;
        }
        out.put_u8(v as u8);
    }

    fn length(&mut self, out: &mut BytesMut, n: usize, wide: bool) {
        if self.flexible {
            self.uvarint(out, n as u32 + 1);
        } else if wide {
            out.put_i32(n as i32);
        } else {
            out.put_i16(n as i16);
        }
    }

    fn value(&mut self, out: &mut BytesMut, ty: &Ty) {
        match ty {
            // The decoder reads any non-zero byte as true and writes 1 back.
            Ty::Bool => out.put_u8(self.rng.below(2) as u8),
            Ty::Int8 => out.put_u8(self.rng.next() as u8),
            Ty::Int16 => out.put_u16(self.rng.next() as u16),
            Ty::Int32 => out.put_u32(self.rng.next() as u32),
            Ty::Int64 => out.put_u64(self.rng.next()),
            // A finite value: the comparison after a round trip is by value.
            Ty::Float64 => out.put_f64(self.rng.below(1 << 20) as f64 / 8.0),
            Ty::Uuid => {
                out.put_u64(self.rng.next());
                out.put_u64(self.rng.next());
            }
            Ty::String => {
                // Never empty: a known tagged field at its default is not written back.
                let n = 1 + self.rng.below(6) as usize;
                self.length(out, n, false);
                for _ in 0..n {
                    out.put_u8(b'a' + self.rng.below(26) as u8);
                }
            }
            Ty::Bytes | Ty::Records => {
                let n = self.rng.below(9) as usize;
                self.length(out, n, true);
                for _ in 0..n {
                    out.put_u8(self.rng.next() as u8);
                }
            }
            Ty::Array(element) => {
                let n = self.rng.below(4) as usize;
                self.length(out, n, true);
                for _ in 0..n {
                    self.value(out, element);
                }
            }
            Ty::Struct(fields) => self.fields(out, fields),
        }
    }

    fn fields(&mut self, out: &mut BytesMut, fields: &[Field]) {
        for field in fields {
            if field.tag.is_none() && field.versions.contains(self.version) {
                self.value(out, &field.ty);
            }
        }
        if !self.flexible {
            return;
        }
        // Known tagged fields of this version (each sometimes), then unknown ones with tags
        // no version uses; the decoder keeps both in tag order.
        let mut tags: Vec<(u32, Bytes)> = Vec::new();
        for field in fields {
            if let Some(tag) = field.tag
                && field.versions.contains(self.version)
                && self.rng.below(2) == 0
            {
                let mut value = BytesMut::new();
                self.value(&mut value, &field.ty);
                tags.push((tag, value.freeze()));
            }
        }
        if self.rng.below(4) == 0 {
            let tag = 100 + self.rng.below(5) as u32;
            let value: Vec<u8> = (0..self.rng.below(4))
                .map(|_| self.rng.next() as u8)
                .collect();
            tags.push((tag, Bytes::from(value)));
        }
        tags.sort_by_key(|(tag, _)| *tag);
        tags.dedup_by_key(|(tag, _)| *tag);
        self.uvarint(out, tags.len() as u32);
        for (tag, value) in tags {
            self.uvarint(out, tag);
            self.uvarint(out, value.len() as u32);
            out.extend_from_slice(&value);
        }
    }
}

/// A random valid frame of `api` at `version`, and where its body starts.
fn frame(api: &Api, version: i16, rng: &mut Rng) -> (Bytes, usize) {
    let flexible = api.flexible.contains(version);
    let mut out = BytesMut::new();
    out.put_i16(api.key);
    out.put_i16(version);
    out.put_i32(rng.next() as i32);
    let client = b"fuzz-client";
    out.put_i16(client.len() as i16);
    out.extend_from_slice(client);
    if flexible {
        out.put_u8(0);
    }
    let body_at = out.len();
    Gen {
        rng,
        version,
        flexible,
    }
    .fields(&mut out, api.fields);
    (out.freeze(), body_at)
}

fn encode_body(body: &Body, version: i16) -> BytesMut {
    let mut out = BytesMut::new();
    body.encode(&mut out, version).expect("re-encode");
    out
}

fn every_api_and_version() -> impl Iterator<Item = (&'static Api, i16)> {
    APIS.iter().flat_map(|api| {
        let key = ApiKey::try_from(api.key).expect("a known key");
        let (lo, hi) = decodable_versions(key).expect("decodable");
        (lo..=hi).map(move |v| (api, v))
    })
}

#[test]
fn the_decoder_reads_every_generated_frame_as_the_schema_says() {
    let mut checked = 0;
    for (api, version) in every_api_and_version() {
        for seed in 1..=40u64 {
            let mut rng = Rng(seed * 7919 + api.key as u64 * 131 + version as u64);
            let (frame, body_at) = frame(api, version, &mut rng);
            let request = decode(frame.clone()).unwrap_or_else(|e| {
                panic!("{} v{version} seed {seed}: {e}\n{frame:02x?}", api.name)
            });
            let again = encode_body(&request.body, version);
            assert_eq!(
                &again[..],
                &frame[body_at..],
                "{} v{version} seed {seed}: the body re-encodes differently",
                api.name
            );
            checked += 1;
        }
    }
    assert!(checked > 3000, "{checked}");
}

#[test]
fn broken_frames_are_refused_or_decoded_never_a_panic() {
    for (api, version) in every_api_and_version() {
        let mut rng = Rng(0x5eed + api.key as u64 * 64 + version as u64);
        let (frame, _) = frame(api, version, &mut rng);
        // Every truncation: a short frame never decodes into something else silently.
        for cut in 0..frame.len() {
            let _ = decode(frame.slice(..cut));
        }
        // Bytes changed at random, including lengths and counts.
        for _ in 0..200 {
            let mut bytes = frame.to_vec();
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(bytes.len() as u64) as usize;
                bytes[at] = match rng.below(3) {
                    0 => 0xff,
                    1 => 0x7f,
                    _ => rng.next() as u8,
                };
            }
            let _ = decode(Bytes::from(bytes));
        }
    }
}

#[test]
fn the_reported_frames_are_refused_by_name() {
    // Metadata v4 claiming 0x7fffffff topics (19 bytes with its size).
    let frame = Bytes::from_static(b"\x00\x03\x00\x04\x00\x00\x00\x01\x00\x00\x7f\xff\xff\xff\x00");
    let err = decode(frame).unwrap_err().to_string();
    assert!(err.contains("Metadata v4"), "{err}");
    assert!(err.contains("Topics at byte 10"), "{err}");
    // Too short for a header, an unknown key, a version nobody decodes.
    assert!(decode(Bytes::from_static(b"\x00\x03\x00")).is_err());
    assert!(decode(Bytes::from_static(b"\x7f\x00\x00\x00\x00\x00\x00\x01")).is_err());
    let err = decode(Bytes::from_static(
        b"\x00\x03\x00\x63\x00\x00\x00\x01\x00\x00",
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("decodable versions are 0..=12"), "{err}");
}

/// Writes the request fuzz target's seeds (`kafka-wire/fuzz/seeds/request/`): one generated
/// frame per API and version, and the frames reported against the listener. Run with
/// `cargo test -p woodpecker-kafka-wire --lib write_request_fuzz_seeds -- --ignored`.
#[test]
#[ignore = "writes files: run by hand to refresh the fuzz seeds"]
fn write_request_fuzz_seeds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/request");
    std::fs::create_dir_all(&dir).unwrap();
    for (api, version) in every_api_and_version() {
        let mut rng = Rng(1 + api.key as u64 * 97 + version as u64);
        let (frame, _) = frame(api, version, &mut rng);
        std::fs::write(dir.join(format!("{}-v{version}", api.name)), &frame).unwrap();
    }
    let reported: [(&str, &[u8]); 4] = [
        (
            "reported-metadata-v4-2147483647-topics",
            b"\x00\x03\x00\x04\x00\x00\x00\x01\x00\x00\x7f\xff\xff\xff\x00",
        ),
        (
            "reported-metadata-v12-compact-count",
            b"\x00\x03\x00\x0c\x00\x00\x00\x01\xff\xff\x00\xff\xff\xff\xff\x0f",
        ),
        (
            "reported-join-group-v9-4gib-group-id",
            b"\x00\x0b\x00\x09\x00\x00\x00\x01\xff\xff\x00\xff\xff\xff\xff\x0f",
        ),
        (
            "reported-header-2pow28-tagged-fields",
            b"\x00\x03\x00\x0c\x00\x00\x00\x01\xff\xff\x80\x80\x80\x80\x01",
        ),
    ];
    for (name, bytes) in reported {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}
