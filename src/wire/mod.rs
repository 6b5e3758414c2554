//! The protocol's bytes and values, with no I/O: V3 TLV elements and V2
//! messages, the link-layer bytes, where a TCP request ends, requests,
//! answers and tickets, and the values they carry (currencies, dates,
//! card numbers and how they are masked, the channel a request came in on).

pub mod answer;
pub mod assemble;
pub mod base64;
pub mod channel;
pub mod clock;
pub mod currency;
pub mod framing;
pub mod operation;
pub mod pan;
pub mod profile;
pub mod request;
pub mod ticket;
pub mod tlv;
pub mod v2;
