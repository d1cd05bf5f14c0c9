//! BER framing of LDAP messages with a size limit checked at the header.
//!
//! Every LDAPMessage is a SEQUENCE with a definite length (RFC 4511 §5.1): its first bytes
//! say how large it is. A message declaring more than `ldap.max_message_bytes` is refused
//! as soon as those bytes arrive, before any of its content is buffered; one that fits is
//! buffered whole and only then parsed (once, not again for every segment that arrives).

use std::io;

use ldap3_proto::{LdapCodec, LdapMsg};
use tokio_util::bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

/// Why a connection's input cannot be read as LDAP messages.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error(
        "the message declares {declared} bytes, more than this server accepts (ldap.max_message_bytes = {max})"
    )]
    TooLarge { declared: u64, max: usize },
    #[error("{0}")]
    Malformed(&'static str),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// The length a BER header declares for the whole element (header included), once enough
/// of the header has arrived.
fn declared_size(buf: &[u8]) -> Result<Option<u64>, FrameError> {
    let Some(&tag) = buf.first() else {
        return Ok(None);
    };
    if tag != 0x30 {
        return Err(FrameError::Malformed("an LDAP message is a BER SEQUENCE"));
    }
    let Some(&first) = buf.get(1) else {
        return Ok(None);
    };
    if first < 0x80 {
        return Ok(Some(2 + u64::from(first)));
    }
    let octets = usize::from(first & 0x7f);
    if octets == 0 {
        return Err(FrameError::Malformed(
            "LDAP messages use definite lengths (RFC 4511 §5.1)",
        ));
    }
    if octets > 8 {
        return Ok(Some(u64::MAX));
    }
    let Some(len_bytes) = buf.get(2..2 + octets) else {
        return Ok(None);
    };
    let len = len_bytes
        .iter()
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    Ok(Some(len.saturating_add(2 + octets as u64)))
}

/// `LdapCodec` behind a size check at the header.
pub struct LimitedCodec {
    inner: LdapCodec,
    max: usize,
}

impl LimitedCodec {
    pub fn new(max_message_bytes: usize) -> Self {
        LimitedCodec {
            inner: LdapCodec::new(Some(max_message_bytes), None),
            max: max_message_bytes,
        }
    }
}

impl Decoder for LimitedCodec {
    type Item = LdapMsg;
    type Error = FrameError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<LdapMsg>, FrameError> {
        let Some(size) = declared_size(buf)? else {
            return Ok(None);
        };
        if size > self.max as u64 {
            return Err(FrameError::TooLarge {
                declared: size,
                max: self.max,
            });
        }
        // Bounded by `max` just above.
        let size = size as usize;
        if buf.len() < size {
            buf.reserve(size - buf.len());
            return Ok(None);
        }
        let mut frame = buf.split_to(size);
        match self.inner.decode(&mut frame) {
            Ok(Some(msg)) => Ok(Some(msg)),
            Ok(None) => Err(FrameError::Malformed(
                "the message's content does not fill its declared length",
            )),
            Err(_) => Err(FrameError::Malformed(
                "malformed or unsupported LDAP message",
            )),
        }
    }
}

impl Encoder<LdapMsg> for LimitedCodec {
    type Error = io::Error;

    fn encode(&mut self, msg: LdapMsg, buf: &mut BytesMut) -> io::Result<()> {
        self.inner.encode(msg, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ldap3_proto::proto::{LdapOp, LdapResult, LdapResultCode};

    fn encoded() -> BytesMut {
        let mut buf = BytesMut::new();
        let msg = LdapMsg {
            msgid: 7,
            op: LdapOp::BindResponse(ldap3_proto::proto::LdapBindResponse {
                res: LdapResult {
                    code: LdapResultCode::Success,
                    matcheddn: String::new(),
                    message: "x".repeat(300),
                    referral: vec![],
                },
                saslcreds: None,
            }),
            ctrl: vec![],
        };
        LimitedCodec::new(1024).encode(msg, &mut buf).unwrap();
        buf
    }

    #[test]
    fn declared_sizes_are_read_from_the_header() {
        assert_eq!(declared_size(&[]).unwrap(), None);
        assert_eq!(declared_size(&[0x30]).unwrap(), None);
        assert_eq!(declared_size(&[0x30, 0x05]).unwrap(), Some(7));
        assert_eq!(declared_size(&[0x30, 0x82, 0x01]).unwrap(), None);
        assert_eq!(declared_size(&[0x30, 0x82, 0x01, 0x00]).unwrap(), Some(260));
        assert_eq!(
            declared_size(&[0x30, 0x84, 0x06, 0x40, 0x00, 0x00]).unwrap(),
            Some(104_857_606)
        );
        assert!(matches!(
            declared_size(&[0x30, 0x80]),
            Err(FrameError::Malformed(_))
        ));
        assert!(matches!(
            declared_size(&[0x04, 0x01]),
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn a_large_declaration_is_refused_before_its_content_arrives() {
        let mut c = LimitedCodec::new(4096);
        let mut buf = BytesMut::from(&[0x30u8, 0x84, 0x06, 0x40, 0x00, 0x00][..]);
        match c.decode(&mut buf) {
            Err(FrameError::TooLarge { declared, max }) => {
                assert_eq!((declared, max), (104_857_606, 4096));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn messages_are_decoded_once_complete_and_pipelined_ones_stay() {
        let whole = encoded();
        let mut c = LimitedCodec::new(1024);
        let mut buf = BytesMut::new();
        for (i, b) in whole.iter().enumerate() {
            buf.extend_from_slice(&[*b]);
            let got = c.decode(&mut buf).unwrap();
            assert_eq!(got.is_some(), i + 1 == whole.len(), "byte {i}");
        }
        let mut two = whole.clone();
        two.extend_from_slice(&whole);
        assert_eq!(c.decode(&mut two).unwrap().unwrap().msgid, 7);
        assert_eq!(two.len(), whole.len());
        assert_eq!(c.decode(&mut two).unwrap().unwrap().msgid, 7);
        assert!(two.is_empty());
        // Larger than the limit, whatever it holds.
        assert!(matches!(
            LimitedCodec::new(100).decode(&mut whole.clone()),
            Err(FrameError::TooLarge { .. })
        ));
    }
}
