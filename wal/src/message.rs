//! Messages and message ids, in the Go project's encodings.
//!
//! * An entry is stored as the protobuf `LogMessageLayout{payload = 1; properties = 2}`: the
//!   payload and string properties of a [`WriteMessage`]. Readers accept the properties in any
//!   order (Go writes its map in random order); this crate writes them sorted.
//! * A [`LogMessageId`] is (segment id, entry id), ordered lexicographically. Its serialised
//!   form is the protobuf `LogMessageIdData{segId = 1; entryId = 2}` (so (0, 0) is empty), and
//!   Milvus keeps that as standard base64 ([`LogMessageId::to_base64`]).
//! * Entry ids are dense per segment from 0; segment ids are dense per log from 0.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use prost::Message as _;
use proto::logstore::{LogMessageIdData, LogMessageLayout};

/// Why a message or id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// A message with neither payload nor properties (Go: `ErrInvalidMessage`, 8100).
    #[error("invalid message: payload and properties are both empty")]
    Empty,
    /// Stored entry bytes that are not a `LogMessageLayout`.
    #[error("entry {id} is not a LogMessageLayout: {detail}")]
    Malformed {
        /// The entry.
        id: LogMessageId,
        /// Why it does not decode.
        detail: String,
    },
    /// Bytes or text that are not a message id.
    #[error("invalid message id {input:?}: {detail}")]
    InvalidId {
        /// The input, as text.
        input: String,
        /// What is wrong.
        detail: String,
    },
}

impl MessageError {
    /// The Go project's error code.
    pub fn code(&self) -> i32 {
        8100
    }
}

/// The position of an entry: segment id, then entry id within the segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LogMessageId {
    /// The segment.
    pub segment_id: i64,
    /// The entry within the segment.
    pub entry_id: i64,
}

impl LogMessageId {
    /// The first possible id, (0, 0): read from the start of the log.
    pub const EARLIEST: LogMessageId = LogMessageId {
        segment_id: 0,
        entry_id: 0,
    };

    /// The last possible id, (max, max): read from the tail (resolved by the reader).
    pub const LATEST: LogMessageId = LogMessageId {
        segment_id: i64::MAX,
        entry_id: i64::MAX,
    };

    /// An id.
    pub const fn new(segment_id: i64, entry_id: i64) -> Self {
        LogMessageId {
            segment_id,
            entry_id,
        }
    }

    /// The id right after this one in the same segment (Milvus's "start after").
    pub fn next_in_segment(self) -> Self {
        LogMessageId {
            entry_id: self.entry_id.saturating_add(1),
            ..self
        }
    }

    /// The Go serialisation: protobuf `LogMessageIdData`.
    pub fn serialize(&self) -> Vec<u8> {
        LogMessageIdData {
            seg_id: self.segment_id,
            entry_id: self.entry_id,
        }
        .encode_to_vec()
    }

    /// Parses [`serialize`](Self::serialize)'s output.
    pub fn deserialize(bytes: &[u8]) -> Result<Self, MessageError> {
        let data = LogMessageIdData::decode(bytes).map_err(|e| MessageError::InvalidId {
            input: format!("{bytes:02x?}"),
            detail: e.to_string(),
        })?;
        Ok(LogMessageId::new(data.seg_id, data.entry_id))
    }

    /// Standard base64 of the serialisation: the form Milvus stores.
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.serialize())
    }

    /// Parses [`to_base64`](Self::to_base64)'s output.
    pub fn from_base64(text: &str) -> Result<Self, MessageError> {
        let bytes = BASE64
            .decode(text.trim())
            .map_err(|e| MessageError::InvalidId {
                input: text.to_string(),
                detail: e.to_string(),
            })?;
        Self::deserialize(&bytes)
    }
}

impl fmt::Display for LogMessageId {
    /// `SEGMENT:ENTRY`, the form the command line reads and prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.segment_id, self.entry_id)
    }
}

impl FromStr for LogMessageId {
    type Err = MessageError;

    /// Parses `SEGMENT:ENTRY`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = |detail: &str| MessageError::InvalidId {
            input: text.to_string(),
            detail: detail.to_string(),
        };
        let (seg, entry) = text
            .trim()
            .split_once(':')
            .ok_or_else(|| invalid("expected SEGMENT:ENTRY"))?;
        let seg: i64 = seg
            .parse()
            .map_err(|_| invalid("segment is not an integer"))?;
        let entry: i64 = entry
            .parse()
            .map_err(|_| invalid("entry is not an integer"))?;
        if seg < 0 || entry < 0 {
            return Err(invalid("ids are not negative"));
        }
        Ok(LogMessageId::new(seg, entry))
    }
}

/// The property that marks an entry `woodpecker log repair` put where a damaged block's entry
/// was: its value says which block and what was wrong, and its payload is empty. Readers get
/// such entries like any other ([`LogMessage::lost`] tells them apart); the Kafka front door
/// leaves their offsets out.
pub const LOST_PROPERTY: &str = "woodpecker-rs.lost";

/// A message to append: a payload and string properties.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WriteMessage {
    /// The payload.
    pub payload: Bytes,
    /// Properties (Milvus keeps its message headers here).
    pub properties: BTreeMap<String, String>,
}

impl WriteMessage {
    /// A message with a payload and no properties.
    pub fn new(payload: impl Into<Bytes>) -> Self {
        WriteMessage {
            payload: payload.into(),
            properties: BTreeMap::new(),
        }
    }

    /// Adds a property.
    pub fn with_property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.insert(key.into(), value.into());
        self
    }

    /// The entry `woodpecker log repair` writes in place of one it could not read: no
    /// payload, and [`LOST_PROPERTY`] set to `why`.
    pub fn lost(why: impl Into<String>) -> Self {
        WriteMessage::default().with_property(LOST_PROPERTY, why)
    }

    /// Refuses a message with neither payload nor properties, as Go does.
    pub fn validate(&self) -> Result<(), MessageError> {
        if self.payload.is_empty() && self.properties.is_empty() {
            Err(MessageError::Empty)
        } else {
            Ok(())
        }
    }

    /// The stored form: `LogMessageLayout` bytes.
    pub fn encode(&self) -> Result<Bytes, MessageError> {
        self.validate()?;
        Ok(Bytes::from(
            LogMessageLayout {
                payload: self.payload.clone(),
                properties: self.properties.clone(),
            }
            .encode_to_vec(),
        ))
    }
}

/// A message read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogMessage {
    /// Where it is.
    pub id: LogMessageId,
    /// The payload.
    pub payload: Bytes,
    /// The properties.
    pub properties: BTreeMap<String, String>,
}

impl LogMessage {
    /// Why the entry was lost, when it is a marker `woodpecker log repair` put in place of an
    /// entry of a damaged block ([`WriteMessage::lost`]).
    pub fn lost(&self) -> Option<&str> {
        self.properties.get(LOST_PROPERTY).map(String::as_str)
    }

    /// Decodes stored entry bytes (zero-copy for the payload).
    pub fn decode(id: LogMessageId, bytes: Bytes) -> Result<Self, MessageError> {
        let layout = LogMessageLayout::decode(bytes).map_err(|e| MessageError::Malformed {
            id,
            detail: e.to_string(),
        })?;
        Ok(LogMessage {
            id,
            payload: layout.payload,
            properties: layout.properties,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_serialise_like_go() {
        assert!(LogMessageId::EARLIEST.serialize().is_empty());
        assert_eq!(
            LogMessageId::new(3, 7).serialize(),
            [0x08, 0x03, 0x10, 0x07]
        );
        assert_eq!(LogMessageId::new(3, 7).to_base64(), "CAMQBw==");
        assert_eq!(LogMessageId::EARLIEST.to_base64(), "");
        for id in [
            LogMessageId::EARLIEST,
            LogMessageId::new(0, 1),
            LogMessageId::new(12, 0),
            LogMessageId::new(1 << 40, 99_999),
            LogMessageId::LATEST,
        ] {
            assert_eq!(LogMessageId::deserialize(&id.serialize()).unwrap(), id);
            assert_eq!(LogMessageId::from_base64(&id.to_base64()).unwrap(), id);
            assert_eq!(id.to_string().parse::<LogMessageId>().unwrap(), id);
        }
        assert!(LogMessageId::from_base64("not base64!").is_err());
        assert!(LogMessageId::deserialize(&[0x08]).is_err());
    }

    #[test]
    fn ids_order_by_segment_then_entry() {
        let mut ids = vec![
            LogMessageId::new(1, 0),
            LogMessageId::new(0, 9),
            LogMessageId::new(1, 2),
            LogMessageId::new(0, 0),
        ];
        ids.sort();
        assert_eq!(
            ids,
            [
                LogMessageId::new(0, 0),
                LogMessageId::new(0, 9),
                LogMessageId::new(1, 0),
                LogMessageId::new(1, 2)
            ]
        );
        assert_eq!(
            LogMessageId::new(4, 5).next_in_segment(),
            LogMessageId::new(4, 6)
        );
    }

    #[test]
    fn command_line_form() {
        assert_eq!(
            "2:15".parse::<LogMessageId>().unwrap(),
            LogMessageId::new(2, 15)
        );
        for bad in ["", "2", "2:", ":3", "a:1", "1:-1", "-1:0", "1:2:3"] {
            assert!(bad.parse::<LogMessageId>().is_err(), "{bad}");
        }
        assert_eq!(LogMessageId::new(2, 15).to_string(), "2:15");
    }

    #[test]
    fn messages_are_log_message_layouts() {
        let msg = WriteMessage::new(&b"hi"[..]).with_property("k", "v");
        let bytes = msg.encode().unwrap();
        // payload (1, bytes "hi"), properties (2, one map entry {1:"k", 2:"v"}).
        assert_eq!(
            bytes.as_ref(),
            [
                0x0a, 0x02, b'h', b'i', 0x12, 0x06, 0x0a, 0x01, b'k', 0x12, 0x01, b'v'
            ]
        );
        let back = LogMessage::decode(LogMessageId::new(1, 2), bytes).unwrap();
        assert_eq!(back.payload, "hi");
        assert_eq!(back.properties.get("k").map(String::as_str), Some("v"));

        // Properties in another order, as Go may write them, read the same.
        let reordered: &[u8] = &[
            0x12, 0x06, 0x0a, 0x01, b'b', 0x12, 0x01, b'2', 0x12, 0x06, 0x0a, 0x01, b'a', 0x12,
            0x01, b'1', 0x0a, 0x01, b'x',
        ];
        let m = LogMessage::decode(LogMessageId::EARLIEST, Bytes::from_static(reordered)).unwrap();
        assert_eq!(m.payload, "x");
        assert_eq!(m.properties.len(), 2);

        assert_eq!(WriteMessage::default().encode(), Err(MessageError::Empty));
        assert_eq!(MessageError::Empty.code(), 8100);
        // Properties alone are a message.
        assert!(
            WriteMessage::default()
                .with_property("a", "b")
                .encode()
                .is_ok()
        );
        assert!(matches!(
            LogMessage::decode(LogMessageId::new(0, 1), Bytes::from_static(&[0xff, 0xff])),
            Err(MessageError::Malformed { .. })
        ));
    }

    #[test]
    fn lost_markers_are_told_apart() {
        let bytes = WriteMessage::lost("block 3 at offset 4096: crc")
            .encode()
            .unwrap();
        let m = LogMessage::decode(LogMessageId::new(0, 7), bytes).unwrap();
        assert_eq!(m.lost(), Some("block 3 at offset 4096: crc"));
        assert!(m.payload.is_empty());
        let plain = WriteMessage::new(&b"x"[..]).encode().unwrap();
        assert_eq!(
            LogMessage::decode(LogMessageId::EARLIEST, plain)
                .unwrap()
                .lost(),
            None
        );
    }
}
