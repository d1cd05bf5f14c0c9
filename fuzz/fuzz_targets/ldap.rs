//! LDAP messages as a client sends them on one connection: bytes are framed and decoded
//! by the server's codec, and every message decoded is answered by `Directory::handle`
//! over the process's SQLite store, in order, on one session. No reply may be an internal
//! error (resultCode 80 other): a malformed or hostile request gets a protocol answer.
#![no_main]

use std::sync::{Arc, OnceLock};

use bytes::BytesMut;
use ldap_frontend::{Directory, LdapConfig, Session};
use ldap3_proto::LdapCodec;
use ldap3_proto::proto::{LdapBindCred, LdapMsg, LdapOp, LdapResultCode};
use libfuzzer_sys::fuzz_target;
use scimhub_fuzz::{block_on, store};
use tokio_util::codec::Decoder;

/// The most messages answered per input: more only repeats work.
const MAX_MESSAGES: usize = 16;

fn directory() -> &'static Directory {
    static DIR: OnceLock<Directory> = OnceLock::new();
    DIR.get_or_init(|| {
        let cfg = LdapConfig {
            allow_anonymous: true,
            ..LdapConfig::default()
        };
        Directory::new(store().clone(), Arc::new(cfg), false).expect("the directory opens")
    })
}

fn result_code(op: &LdapOp) -> Option<&LdapResultCode> {
    Some(match op {
        LdapOp::BindResponse(r) => &r.res.code,
        LdapOp::ExtendedResponse(r) => &r.res.code,
        LdapOp::SearchResultDone(r)
        | LdapOp::ModifyResponse(r)
        | LdapOp::AddResponse(r)
        | LdapOp::DelResponse(r)
        | LdapOp::ModifyDNResponse(r)
        | LdapOp::CompareResult(r) => &r.code,
        _ => return None,
    })
}

/// A simple bind with a password costs an argon2 verification (tens of milliseconds, on
/// purpose); answering it would make this target a thousand times slower and find
/// nothing the bind tests do not cover. It is still decoded.
fn costs_a_password_check(msg: &LdapMsg) -> bool {
    matches!(&msg.op, LdapOp::BindRequest(b) if matches!(&b.cred, LdapBindCred::Simple(p) if !p.is_empty()))
}

fuzz_target!(|data: &[u8]| {
    let dir = directory();
    let mut codec = LdapCodec::new(Some(1024 * 1024), None);
    let mut buf = BytesMut::from(data);
    let mut session = Session::new(None, false);
    for _ in 0..MAX_MESSAGES {
        let msg = match codec.decode(&mut buf) {
            Ok(Some(m)) => m,
            Ok(None) | Err(_) => break,
        };
        if costs_a_password_check(&msg) {
            continue;
        }
        let replies = block_on(dir.handle(&mut session, msg.clone()));
        for r in &replies {
            if let Some(LdapResultCode::Other) = result_code(&r.op) {
                panic!("internal error answering {msg:?}: {r:?}");
            }
        }
        if session.closing || session.start_tls {
            break;
        }
    }
});
