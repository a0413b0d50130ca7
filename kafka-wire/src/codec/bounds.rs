//! The bounds check every request passes before it is decoded.
//!
//! The `kafka-protocol` decoder sizes its buffers from the counts and lengths it reads
//! (`Vec::with_capacity(count)`, `vec![0; length]`), so a frame of a few bytes that claims
//! two billion topics would make it ask for hundreds of gigabytes and abort the process.
//! This module walks the frame along the request's [schema](super::schema) first and refuses
//! it unless every array count, string and byte length and tagged-field size fits in the
//! bytes that follow it: an array of `n` elements needs at least `n` times the smallest
//! encoding of one element. After that, what the decoder allocates for a frame is bounded by
//! a small multiple of the frame's own size.
//!
//! It checks shape, not meaning: a null where none is allowed, bad UTF-8 or an unknown tag
//! are left to the decoder, which reports them without allocating first.

use super::schema::{Api, Field, HEADER, Ty};

/// Why a frame was refused, with where in it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path} at byte {at}: {detail}")]
pub struct BoundsError {
    /// The field, as `Topics[3].Name`.
    pub path: String,
    /// Its offset in the frame.
    pub at: usize,
    /// What is wrong.
    pub detail: String,
}

/// Checks a whole request frame (header and body, without the 4-byte size) of `api` at
/// `version`.
pub(crate) fn check_frame(api: &Api, version: i16, frame: &[u8]) -> Result<(), BoundsError> {
    let flexible = api.flexible.contains(version);
    let mut walk = Walk {
        buf: frame,
        at: 0,
        end: frame.len(),
        version,
        flexible,
        path: Vec::new(),
    };
    // Header v1, or v2 with tagged fields; the client id is never compact.
    walk.fixed_fields(HEADER)?;
    if flexible {
        walk.tagged_section(&[])?;
    }
    walk.fields(api.fields)?;
    Ok(())
}

struct Walk<'a> {
    buf: &'a [u8],
    at: usize,
    /// Where the current region ends: the frame, or a tagged field's declared size.
    end: usize,
    version: i16,
    flexible: bool,
    path: Vec<String>,
}

impl Walk<'_> {
    fn fail(&self, detail: String) -> BoundsError {
        self.fail_at(self.at, detail)
    }

    /// An error about the field that starts at `at` (its length or count prefix).
    fn fail_at(&self, at: usize, detail: String) -> BoundsError {
        BoundsError {
            path: if self.path.is_empty() {
                "request".into()
            } else {
                self.path.join(".")
            },
            at,
            detail,
        }
    }

    fn left(&self) -> usize {
        self.end - self.at
    }

    fn skip(&mut self, n: usize) -> Result<(), BoundsError> {
        if n > self.left() {
            return Err(self.fail(format!("needs {n} bytes, {} left", self.left())));
        }
        self.at += n;
        Ok(())
    }

    fn be(&mut self, n: usize) -> Result<i64, BoundsError> {
        if n > self.left() {
            return Err(self.fail(format!("needs {n} bytes, {} left", self.left())));
        }
        let v = self.buf[self.at..self.at + n]
            .iter()
            .fold(0i64, |acc, b| (acc << 8) | i64::from(*b));
        self.at += n;
        // Sign-extend.
        let shift = 64 - 8 * n as u32;
        Ok((v << shift) >> shift)
    }

    /// An UNSIGNED_VARINT of at most 5 bytes that fits in 32 bits.
    fn uvarint(&mut self) -> Result<u32, BoundsError> {
        let mut value: u64 = 0;
        for i in 0..5 {
            let Some(&byte) = self.buf[..self.end].get(self.at) else {
                return Err(self.fail("a varint runs past the end".into()));
            };
            self.at += 1;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return u32::try_from(value)
                    .map_err(|_| self.fail(format!("varint {value} does not fit in 32 bits")));
            }
        }
        Err(self.fail("a varint longer than 5 bytes".into()))
    }

    /// A length or count prefix: `None` for null.
    fn length(&mut self, wide: bool) -> Result<Option<usize>, BoundsError> {
        if self.flexible {
            let n = self.uvarint()?;
            return Ok(n.checked_sub(1).map(|n| n as usize));
        }
        let n = self.be(if wide { 4 } else { 2 })?;
        match n {
            -1 => Ok(None),
            n if n < -1 => Err(self.fail(format!("negative length {n}"))),
            n => Ok(Some(n as usize)),
        }
    }

    fn fields(&mut self, fields: &[Field]) -> Result<(), BoundsError> {
        for field in fields {
            if field.tag.is_none() && field.versions.contains(self.version) {
                self.path.push(field.name.to_string());
                self.value(&field.ty)?;
                self.path.pop();
            }
        }
        if self.flexible {
            self.tagged_section(fields)?;
        }
        Ok(())
    }

    /// The header's fields: never compact, even in flexible versions.
    fn fixed_fields(&mut self, fields: &[Field]) -> Result<(), BoundsError> {
        let flexible = std::mem::replace(&mut self.flexible, false);
        let version = std::mem::replace(&mut self.version, 1);
        let r = fields.iter().try_for_each(|field| {
            self.path.push(field.name.to_string());
            self.value(&field.ty)?;
            self.path.pop();
            Ok(())
        });
        self.flexible = flexible;
        self.version = version;
        r
    }

    fn tagged_section(&mut self, fields: &[Field]) -> Result<(), BoundsError> {
        self.path.push("<tagged fields>".into());
        let count = self.uvarint()? as usize;
        // A tagged field is at least a tag and a size.
        if count > self.left() / 2 {
            return Err(self.fail(format!(
                "{count} tagged fields cannot fit in {} bytes",
                self.left()
            )));
        }
        for _ in 0..count {
            let tag = self.uvarint()?;
            let size = self.uvarint()? as usize;
            if size > self.left() {
                return Err(self.fail(format!(
                    "tagged field {tag} of {size} bytes, {} left",
                    self.left()
                )));
            }
            let known = fields
                .iter()
                .find(|f| f.tag == Some(tag) && f.versions.contains(self.version));
            match known {
                // The decoder reads a known tagged field as its type, not as `size` bytes:
                // its value must fill exactly the declared size.
                Some(field) => {
                    let end = self.at + size;
                    let outer = std::mem::replace(&mut self.end, end);
                    self.path.push(field.name.to_string());
                    let r = self.value(&field.ty);
                    self.path.pop();
                    self.end = outer;
                    r?;
                    if self.at != end {
                        return Err(self.fail(format!(
                            "tagged field {tag} declares {size} bytes but its value ends {} bytes early",
                            end - self.at
                        )));
                    }
                }
                None => self.skip(size)?,
            }
        }
        self.path.pop();
        Ok(())
    }

    fn value(&mut self, ty: &Ty) -> Result<(), BoundsError> {
        match ty {
            Ty::Bool | Ty::Int8 => self.skip(1),
            Ty::Int16 => self.skip(2),
            Ty::Int32 => self.skip(4),
            Ty::Int64 | Ty::Float64 => self.skip(8),
            Ty::Uuid => self.skip(16),
            Ty::String | Ty::Bytes | Ty::Records => {
                let start = self.at;
                let wide = !matches!(ty, Ty::String);
                if let Some(n) = self.length(wide)? {
                    if n > self.left() {
                        let left = self.left();
                        return Err(self.fail_at(start, format!("length {n}, {left} bytes left")));
                    }
                    self.at += n;
                }
                Ok(())
            }
            Ty::Array(element) => {
                let start = self.at;
                let Some(count) = self.length(true)? else {
                    return Ok(());
                };
                let least = self.min_size(element).max(1);
                if count.saturating_mul(least) > self.left() {
                    return Err(self.fail_at(
                        start,
                        format!(
                            "{count} elements of at least {least} bytes cannot fit in {} bytes",
                            self.left()
                        ),
                    ));
                }
                for i in 0..count {
                    if let Some(last) = self.path.last_mut() {
                        truncate_index(last);
                        last.push_str(&format!("[{i}]"));
                    }
                    self.value(element)?;
                }
                if let Some(last) = self.path.last_mut() {
                    truncate_index(last);
                }
                Ok(())
            }
            Ty::Struct(fields) => self.fields(fields),
        }
    }

    /// The fewest bytes a value of `ty` takes in this version.
    fn min_size(&self, ty: &Ty) -> usize {
        match ty {
            Ty::Bool | Ty::Int8 => 1,
            Ty::Int16 => 2,
            Ty::Int32 => 4,
            Ty::Int64 | Ty::Float64 => 8,
            Ty::Uuid => 16,
            // A null or empty one: its length prefix alone.
            Ty::String | Ty::Bytes | Ty::Records | Ty::Array(_) => match (self.flexible, ty) {
                (true, _) => 1,
                (false, Ty::String) => 2,
                (false, _) => 4,
            },
            Ty::Struct(fields) => {
                let own: usize = fields
                    .iter()
                    .filter(|f| f.tag.is_none() && f.versions.contains(self.version))
                    .map(|f| self.min_size(&f.ty))
                    .sum();
                own + usize::from(self.flexible)
            }
        }
    }
}

fn truncate_index(name: &mut String) {
    if let Some(open) = name.find('[') {
        name.truncate(open);
    }
}

#[cfg(test)]
mod tests {
    use super::super::schema::api_for;
    use super::*;

    fn metadata_v4(topics: i32) -> Vec<u8> {
        let mut b = vec![0, 3, 0, 4, 0, 0, 0, 1, 0, 0];
        b.extend_from_slice(&topics.to_be_bytes());
        b.push(0);
        b
    }

    #[test]
    fn a_count_larger_than_the_bytes_left_is_refused() {
        let api = api_for(3).unwrap();
        let err = check_frame(api, 4, &metadata_v4(0x7fff_ffff)).unwrap_err();
        assert_eq!(err.path, "Topics");
        assert_eq!(err.at, 10);
        assert!(err.detail.contains("2147483647 elements"), "{err}");
        // One topic needs at least its name's 2-byte length; only 1 byte follows.
        let err = check_frame(api, 4, &metadata_v4(1)).unwrap_err();
        assert!(err.detail.contains("cannot fit"), "{err}");
        // Null topics (all of them) and zero topics are fine.
        check_frame(api, 4, &metadata_v4(-1)).unwrap();
        check_frame(api, 4, &metadata_v4(0)).unwrap();
    }

    #[test]
    fn compact_lengths_and_tagged_fields_are_bounded() {
        let api = api_for(3).unwrap();
        // Metadata v9: header v2 (client id "", no tags), topics: compact count 2^31.
        let mut b = vec![0, 3, 0, 9, 0, 0, 0, 1, 0, 0, 0];
        b.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x08]);
        let err = check_frame(api, 9, &b).unwrap_err();
        assert!(err.detail.contains("elements"), "{err}");
        // A header claiming a billion tagged fields.
        let b = [0, 3, 0, 9, 0, 0, 0, 1, 0, 0, 0x80, 0x80, 0x80, 0x80, 0x04];
        let err = check_frame(api, 9, &b).unwrap_err();
        assert!(err.detail.contains("tagged fields cannot fit"), "{err}");
        // A varint that does not end.
        let b = [
            0, 3, 0, 9, 0, 0, 0, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ];
        let err = check_frame(api, 9, &b).unwrap_err();
        assert!(err.detail.contains("longer than 5 bytes"), "{err}");
    }

    #[test]
    fn a_known_tagged_field_must_fill_its_declared_size() {
        let api = api_for(1).unwrap();
        // Fetch v12: header v2, replica id, max wait, min bytes, max bytes, isolation,
        // session id and epoch, no topics, no forgotten topics, rack id "", then one tagged
        // field: ClusterId (tag 0) declared as 5 bytes but holding a 1-byte string.
        let mut b = vec![0, 1, 0, 12, 0, 0, 0, 1, 0, 0, 0];
        b.extend_from_slice(&[0; 4 * 4 + 1 + 4 * 2]);
        b.extend_from_slice(&[1, 1, 1]);
        b.extend_from_slice(&[1, 0, 5, 2, b'x', 0, 0, 0]);
        let err = check_frame(api, 12, &b).unwrap_err();
        assert!(err.detail.contains("ends 3 bytes early"), "{err}");
        assert_eq!(err.path, "<tagged fields>");
        // Its string claiming more than the declared size.
        let n = b.len();
        b[n - 5] = 100;
        let err = check_frame(api, 12, &b).unwrap_err();
        assert!(err.detail.contains("length 99, 4 bytes left"), "{err}");
        assert_eq!(err.path, "<tagged fields>.ClusterId");
    }
}
