//! NTS Key Establishment records (RFC 8915 §4): the record codec, the
//! client's request, and reading a server's response or a client's request
//! into what was negotiated.

use thiserror::Error;

use super::{AEAD_AES_SIV_CMAC_256, NEXT_PROTOCOL_NTPV4};

/// The largest NTS-KE message either side accepts (a response with eight
/// cookies and a host name is well under 2 KiB).
pub const MAX_MESSAGE_LEN: usize = 16 * 1024;
/// Bytes in a record's type and length words.
const RECORD_HEAD: usize = 4;
/// The critical bit in the record type word.
const CRITICAL: u16 = 0x8000;

/// Record types (RFC 8915 §4.1, IANA "NTS Key Establishment Record Types").
pub mod record_type {
    /// End of Message.
    pub const END_OF_MESSAGE: u16 = 0;
    /// NTS Next Protocol Negotiation.
    pub const NEXT_PROTOCOL: u16 = 1;
    /// Error.
    pub const ERROR: u16 = 2;
    /// Warning.
    pub const WARNING: u16 = 3;
    /// AEAD Algorithm Negotiation.
    pub const AEAD_ALGORITHM: u16 = 4;
    /// New Cookie for NTPv4.
    pub const NEW_COOKIE: u16 = 5;
    /// NTPv4 Server Negotiation.
    pub const SERVER: u16 = 6;
    /// NTPv4 Port Negotiation.
    pub const PORT: u16 = 7;
}

/// Error codes of the Error record (RFC 8915 §4.1.3).
pub mod error_code {
    /// Unrecognized Critical Record.
    pub const UNRECOGNIZED_CRITICAL_RECORD: u16 = 0;
    /// Bad Request.
    pub const BAD_REQUEST: u16 = 1;
    /// Internal Server Error.
    pub const INTERNAL_SERVER_ERROR: u16 = 2;
}

/// One NTS-KE record as on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The critical bit: a receiver that does not know the type must fail.
    pub critical: bool,
    /// The record type (15 bits).
    pub record_type: u16,
    /// The body.
    pub body: Vec<u8>,
}

impl Record {
    /// A record with a body of 16-bit words.
    #[must_use]
    pub fn words(critical: bool, record_type: u16, words: &[u16]) -> Self {
        Self { critical, record_type, body: words.iter().flat_map(|w| w.to_be_bytes()).collect() }
    }

    /// Appends the wire form. A body longer than 65535 bytes cannot be
    /// sent; callers never build one (cookies and names are short).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let head = (self.record_type & !CRITICAL) | if self.critical { CRITICAL } else { 0 };
        out.extend_from_slice(&head.to_be_bytes());
        let len = u16::try_from(self.body.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&self.body[..usize::from(len)]);
    }

    /// The body read as 16-bit words, if its length is even.
    fn body_words(&self) -> Option<Vec<u16>> {
        if self.body.len() % 2 != 0 {
            return None;
        }
        Some(self.body.chunks_exact(2).map(|w| u16::from_be_bytes([w[0], w[1]])).collect())
    }
}

/// Why an NTS-KE message is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeError {
    /// The message ended inside a record, or without End of Message.
    #[error("NTS-KE message truncated")]
    Truncated,
    /// The message is longer than [`MAX_MESSAGE_LEN`].
    #[error("NTS-KE message too long")]
    TooLong,
    /// A record whose body does not fit its type.
    #[error("malformed NTS-KE record of type {0}")]
    Malformed(u16),
    /// A critical record of a type this implementation does not know.
    #[error("unrecognized critical NTS-KE record of type {0}")]
    UnrecognizedCritical(u16),
    /// A record that must appear once appeared twice, or one is missing.
    #[error("NTS-KE message is a bad request: {0}")]
    BadRequest(&'static str),
    /// The server sent an Error record.
    #[error("NTS-KE server reported error {0}")]
    ServerError(u16),
    /// The server chose no protocol or algorithm this client offered.
    #[error("NTS-KE negotiation failed: {0}")]
    Negotiation(&'static str),
    /// The server gave no cookies.
    #[error("NTS-KE server sent no cookies")]
    NoCookies,
}

impl KeError {
    /// The Error record code a server sends back for this fault in a request.
    #[must_use]
    pub fn error_code(&self) -> u16 {
        match self {
            Self::UnrecognizedCritical(_) => error_code::UNRECOGNIZED_CRITICAL_RECORD,
            _ => error_code::BAD_REQUEST,
        }
    }
}

/// Splits a whole message into records, up to and including End of
/// Message. `Ok(None)` means more bytes are needed; nothing after End of
/// Message is allowed.
pub fn decode_message(bytes: &[u8]) -> Result<Option<Vec<Record>>, KeError> {
    let mut records = Vec::new();
    let mut rest = bytes;
    loop {
        let Some(head) = rest.first_chunk::<RECORD_HEAD>() else {
            return if bytes.len() > MAX_MESSAGE_LEN { Err(KeError::TooLong) } else { Ok(None) };
        };
        let word = u16::from_be_bytes([head[0], head[1]]);
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let Some(body) = rest.get(RECORD_HEAD..RECORD_HEAD + len) else {
            return if bytes.len() > MAX_MESSAGE_LEN { Err(KeError::TooLong) } else { Ok(None) };
        };
        let record = Record { critical: word & CRITICAL != 0, record_type: word & !CRITICAL, body: body.to_vec() };
        rest = &rest[RECORD_HEAD + len..];
        let end = record.record_type == record_type::END_OF_MESSAGE;
        if end && !record.body.is_empty() {
            return Err(KeError::Malformed(record_type::END_OF_MESSAGE));
        }
        records.push(record);
        if end {
            if !rest.is_empty() {
                return Err(KeError::BadRequest("bytes after End of Message"));
            }
            if bytes.len() > MAX_MESSAGE_LEN {
                return Err(KeError::TooLong);
            }
            return Ok(Some(records));
        }
    }
}

/// Encodes records and appends End of Message.
#[must_use]
pub fn encode_message(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::new();
    for record in records {
        record.encode_into(&mut out);
    }
    Record { critical: true, record_type: record_type::END_OF_MESSAGE, body: Vec::new() }.encode_into(&mut out);
    out
}

/// The client's request: NTPv4 with AEAD_AES_SIV_CMAC_256 (RFC 8915 §4.1.2).
#[must_use]
pub fn client_request() -> Vec<u8> {
    encode_message(&[
        Record::words(true, record_type::NEXT_PROTOCOL, &[NEXT_PROTOCOL_NTPV4]),
        Record::words(true, record_type::AEAD_ALGORITHM, &[AEAD_AES_SIV_CMAC_256]),
    ])
}

/// What a server's response settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The AEAD algorithm chosen.
    pub aead: u16,
    /// Cookies for NTPv4 requests.
    pub cookies: Vec<Vec<u8>>,
    /// The NTP server to use, if other than the NTS-KE server.
    pub server: Option<String>,
    /// The NTP port to use, if other than 123.
    pub port: Option<u16>,
}

/// Reads a server's response (records as from [`decode_message`]).
pub fn parse_response(records: &[Record]) -> Result<Negotiated, KeError> {
    let mut protocol = None;
    let mut aead = None;
    let mut negotiated = Negotiated { aead: 0, cookies: Vec::new(), server: None, port: None };
    for record in records {
        let malformed = || KeError::Malformed(record.record_type);
        match record.record_type {
            record_type::END_OF_MESSAGE | record_type::WARNING => {}
            record_type::ERROR => {
                let code = record.body_words().and_then(|w| w.first().copied()).ok_or_else(malformed)?;
                return Err(KeError::ServerError(code));
            }
            record_type::NEXT_PROTOCOL => {
                let words = record.body_words().ok_or_else(malformed)?;
                once(&mut protocol, words)?;
            }
            record_type::AEAD_ALGORITHM => {
                let words = record.body_words().ok_or_else(malformed)?;
                once(&mut aead, words)?;
            }
            record_type::NEW_COOKIE => negotiated.cookies.push(record.body.clone()),
            record_type::SERVER => {
                let name = std::str::from_utf8(&record.body).map_err(|_| malformed())?;
                if name.is_empty() || !name.is_ascii() {
                    return Err(malformed());
                }
                negotiated.server = Some(name.to_owned());
            }
            record_type::PORT => {
                let words = record.body_words().filter(|w| w.len() == 1).ok_or_else(malformed)?;
                negotiated.port = Some(words[0]);
            }
            other if record.critical => return Err(KeError::UnrecognizedCritical(other)),
            _ => {}
        }
    }
    if protocol.as_deref() != Some(&[NEXT_PROTOCOL_NTPV4][..]) {
        return Err(KeError::Negotiation("server did not choose NTPv4"));
    }
    match aead.as_deref() {
        Some(&[AEAD_AES_SIV_CMAC_256]) => negotiated.aead = AEAD_AES_SIV_CMAC_256,
        _ => return Err(KeError::Negotiation("server did not choose AEAD_AES_SIV_CMAC_256")),
    }
    // Cookies must fit an NTP extension field, whose length is a multiple of 4.
    negotiated.cookies.retain(|cookie| !cookie.is_empty() && cookie.len() % 4 == 0 && cookie.len() <= 1024);
    if negotiated.cookies.is_empty() {
        return Err(KeError::NoCookies);
    }
    Ok(negotiated)
}

/// What a client asked for, as a server reads it (RFC 8915 §4.1.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRequest {
    /// The client offers NTPv4.
    pub ntpv4: bool,
    /// The client offers AEAD_AES_SIV_CMAC_256.
    pub aes_siv: bool,
}

/// Reads a client's request: Next Protocol must appear exactly once,
/// unknown critical records are refused.
pub fn parse_request(records: &[Record]) -> Result<ClientRequest, KeError> {
    let mut protocol = None;
    let mut aead = None;
    for record in records {
        let malformed = || KeError::Malformed(record.record_type);
        match record.record_type {
            record_type::END_OF_MESSAGE | record_type::WARNING => {}
            record_type::NEXT_PROTOCOL => once(&mut protocol, record.body_words().ok_or_else(malformed)?)?,
            record_type::AEAD_ALGORITHM => once(&mut aead, record.body_words().ok_or_else(malformed)?)?,
            // Clients may suggest a server or port; the server decides.
            record_type::SERVER | record_type::PORT => {}
            record_type::ERROR | record_type::NEW_COOKIE => {
                return Err(KeError::BadRequest("record a client must not send"))
            }
            other if record.critical => return Err(KeError::UnrecognizedCritical(other)),
            _ => {}
        }
    }
    let protocol = protocol.ok_or(KeError::BadRequest("no Next Protocol record"))?;
    Ok(ClientRequest {
        ntpv4: protocol.contains(&NEXT_PROTOCOL_NTPV4),
        aes_siv: aead.is_some_and(|a| a.contains(&AEAD_AES_SIV_CMAC_256)),
    })
}

fn once(slot: &mut Option<Vec<u16>>, words: Vec<u16>) -> Result<(), KeError> {
    if slot.replace(words).is_some() {
        return Err(KeError::BadRequest("a record that must appear once appeared twice"));
    }
    Ok(())
}

/// The server's response: NTPv4 with AES-SIV, the cookies, and the NTP
/// port when it is not 123. `request` decides what is offered; a client
/// with nothing in common gets an empty protocol or algorithm list.
#[must_use]
pub fn server_response(request: &ClientRequest, cookies: &[Vec<u8>], port: Option<u16>) -> Vec<u8> {
    if !request.ntpv4 {
        return encode_message(&[Record::words(true, record_type::NEXT_PROTOCOL, &[])]);
    }
    let mut records = vec![Record::words(true, record_type::NEXT_PROTOCOL, &[NEXT_PROTOCOL_NTPV4])];
    if !request.aes_siv {
        records.push(Record::words(true, record_type::AEAD_ALGORITHM, &[]));
        return encode_message(&records);
    }
    records.push(Record::words(true, record_type::AEAD_ALGORITHM, &[AEAD_AES_SIV_CMAC_256]));
    if let Some(port) = port {
        records.push(Record::words(true, record_type::PORT, &[port]));
    }
    for cookie in cookies {
        records.push(Record { critical: false, record_type: record_type::NEW_COOKIE, body: cookie.clone() });
    }
    encode_message(&records)
}

/// An Error record response (RFC 8915 §4.1.3).
#[must_use]
pub fn error_response(code: u16) -> Vec<u8> {
    encode_message(&[Record::words(true, record_type::ERROR, &[code])])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_client_request_is_as_rfc_8915_shows() {
        // Next Protocol [0] critical, AEAD [15] critical, End of Message critical.
        assert_eq!(client_request(), [0x80, 1, 0, 2, 0, 0, 0x80, 4, 0, 2, 0, 15, 0x80, 0, 0, 0],);
        let records = decode_message(&client_request()).unwrap().unwrap();
        assert_eq!(parse_request(&records).unwrap(), ClientRequest { ntpv4: true, aes_siv: true });
    }

    #[test]
    fn a_response_round_trips_with_port_and_cookies() {
        let request = ClientRequest { ntpv4: true, aes_siv: true };
        let cookies = vec![vec![1; 100], vec![2; 100]];
        let bytes = server_response(&request, &cookies, Some(12345));
        let negotiated = parse_response(&decode_message(&bytes).unwrap().unwrap()).unwrap();
        assert_eq!(negotiated, Negotiated { aead: 15, cookies, server: None, port: Some(12345) });
    }

    #[test]
    fn partial_messages_ask_for_more_and_garbage_is_refused() {
        let bytes = client_request();
        for cut in 0..bytes.len() {
            assert_eq!(decode_message(&bytes[..cut]), Ok(None), "cut at {cut}");
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(decode_message(&trailing).is_err());
        let mut long = Vec::new();
        while long.len() <= MAX_MESSAGE_LEN {
            Record { critical: false, record_type: 3, body: vec![0; 100] }.encode_into(&mut long);
        }
        assert_eq!(decode_message(&long), Err(KeError::TooLong));
    }

    #[test]
    fn unknown_critical_records_and_errors_are_reported() {
        let unknown =
            encode_message(&[Record::words(true, record_type::NEXT_PROTOCOL, &[0]), Record::words(true, 0x1234, &[])]);
        let records = decode_message(&unknown).unwrap().unwrap();
        assert_eq!(parse_request(&records), Err(KeError::UnrecognizedCritical(0x1234)));
        assert_eq!(parse_response(&records), Err(KeError::UnrecognizedCritical(0x1234)));
        let error = decode_message(&error_response(error_code::BAD_REQUEST)).unwrap().unwrap();
        assert_eq!(parse_response(&error), Err(KeError::ServerError(1)));
        let no_cookies = server_response(&ClientRequest { ntpv4: true, aes_siv: true }, &[], None);
        assert_eq!(parse_response(&decode_message(&no_cookies).unwrap().unwrap()), Err(KeError::NoCookies));
        let no_aead = server_response(&ClientRequest { ntpv4: true, aes_siv: false }, &[vec![0; 4]], None);
        assert!(matches!(parse_response(&decode_message(&no_aead).unwrap().unwrap()), Err(KeError::Negotiation(_))));
    }

    proptest! {
        #[test]
        fn decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(Some(records)) = decode_message(&bytes) {
                let _ = parse_response(&records);
                let _ = parse_request(&records);
            }
        }
    }
}
