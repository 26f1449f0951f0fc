//! Interleaved client/server mode (draft-ietf-ntp-interleaved-modes, as
//! chrony implements it): a reply carries, instead of a transmit time read
//! before the send, the kernel's timestamp of when the server's *previous*
//! reply to the same client really left.
//!
//! How the two sides tell the modes apart:
//! - An interleaved request carries, as its origin, the receive timestamp
//!   (T2) of the last reply it got, and in its receive and transmit fields
//!   two different nonces. A basic request has a zero origin or equal
//!   receive and transmit fields.
//! - A server that still holds the transmit time of the reply whose T2 is
//!   that origin, sent to that same client address, answers
//!   interleaved: origin = the request's receive field, receive = this
//!   request's T2, transmit = that earlier reply's real transmit time.
//!   Otherwise it answers in basic mode: origin = the request's transmit
//!   field, as RFC 5905 says.
//! - The client knows which by the origin echoed: its interleaved nonce
//!   means the timestamps belong to the *previous* exchange (T1 and T4 it
//!   kept, T2 from the previous reply, T3 from this one); its basic nonce
//!   means an ordinary exchange.
//!
//! # Layout
//! - [`table`]: the server's bounded memory of replies sent: receive time
//!   and client to transmit time.
//! - [`client`]: the client's side: the previous exchange kept, requests
//!   built, replies read in either mode.

pub mod client;
pub mod table;

pub use client::{Interleaved, InterleavedRequest, Mode as ExchangeMode};
pub use table::TransmitTable;
