//! The ESP data path (RFC 4303), tunnel mode, UDP-encapsulated (RFC 3948).

#[cfg(test)]
mod kat;
pub mod replay;
pub mod sa;
pub mod suite;
