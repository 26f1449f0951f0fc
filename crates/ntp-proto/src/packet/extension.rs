//! What may follow the header: extension fields (RFC 7822) and a trailing
//! legacy MAC (key ID and a 16- or 20-byte digest, RFC 5905 §7.3).

use super::DecodeError;

/// Bytes in the type and length words that open an extension field.
const FIELD_HEAD: usize = 4;
/// A MAC is a 4-byte key ID and a 16-byte (MD5) or 20-byte (SHA-1) digest.
const MAC_LENGTHS: [usize; 2] = [20, 24];

/// One extension field, kept as it was on the wire so that encoding gives
/// back exactly the bytes that were decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionField {
    /// The field type (RFC 7822 §3; RFC 8915 §5.7 for NTS).
    pub field_type: u16,
    /// The value, including any padding, so its length is a multiple of 4.
    pub value: Vec<u8>,
}

impl ExtensionField {
    /// Length of the whole field on the wire.
    #[must_use]
    pub fn wire_len(&self) -> usize {
        FIELD_HEAD + self.value.len()
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.field_type.to_be_bytes());
        // A field built by hand could be longer than the 16-bit length allows;
        // the length saturates rather than failing (encoding cannot fail).
        let len = u16::try_from(self.wire_len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&self.value);
    }
}

/// A legacy symmetric-key message authentication code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mac {
    /// Key identifier.
    pub key_id: u32,
    /// The digest: 16 bytes (MD5) or 20 bytes (SHA-1).
    pub digest: Vec<u8>,
}

/// What followed the header: zero or more extension fields, then an optional MAC.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Trailer {
    /// Extension fields in wire order.
    pub extensions: Vec<ExtensionField>,
    /// A trailing MAC, if present.
    pub mac: Option<Mac>,
}

impl Trailer {
    /// Walks the bytes after the 48-byte header. A remainder of exactly 20
    /// or 24 bytes is a MAC (RFC 7822 §7.5: without a MAC the last extension
    /// field is at least 28 bytes, so the two cannot be confused).
    pub fn decode(mut rest: &[u8], header_len: usize) -> Result<Self, DecodeError> {
        let mut trailer = Self::default();
        let mut offset = header_len;
        while !rest.is_empty() {
            if MAC_LENGTHS.contains(&rest.len()) {
                let (key_id, digest) = rest.split_at(4);
                let key_id = u32::from_be_bytes([key_id[0], key_id[1], key_id[2], key_id[3]]);
                trailer.mac = Some(Mac { key_id, digest: digest.to_vec() });
                break;
            }
            let (field, len) = decode_field(rest, offset)?;
            trailer.extensions.push(field);
            rest = &rest[len..];
            offset += len;
        }
        Ok(trailer)
    }

    /// Appends the wire form to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        for field in &self.extensions {
            field.encode_into(out);
        }
        if let Some(mac) = &self.mac {
            out.extend_from_slice(&mac.key_id.to_be_bytes());
            out.extend_from_slice(&mac.digest);
        }
    }

    /// Length of the wire form.
    #[must_use]
    pub fn wire_len(&self) -> usize {
        let fields: usize = self.extensions.iter().map(ExtensionField::wire_len).sum();
        fields + self.mac.as_ref().map_or(0, |mac| 4 + mac.digest.len())
    }
}

/// Decodes one extension field at the start of `rest`, returning it and its
/// length. The length must cover at least the type and length words, be a
/// multiple of 4 and fit in what is left. RFC 7822's 16-byte minimum is not
/// enforced: NTS (RFC 8915 §5.3) uses shorter fields.
pub(crate) fn decode_field(rest: &[u8], offset: usize) -> Result<(ExtensionField, usize), DecodeError> {
    let malformed = |reason| DecodeError::MalformedExtension { offset, reason };
    let Some(head) = rest.first_chunk::<FIELD_HEAD>() else {
        return Err(malformed("fewer than 4 bytes left for a field header"));
    };
    let field_type = u16::from_be_bytes([head[0], head[1]]);
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    if len < FIELD_HEAD {
        return Err(malformed("length shorter than the field header"));
    }
    if len % 4 != 0 {
        return Err(malformed("length not a multiple of 4"));
    }
    let Some(value) = rest.get(FIELD_HEAD..len) else {
        return Err(malformed("length runs past the end of the packet"));
    };
    Ok((ExtensionField { field_type, value: value.to_vec() }, len))
}
