//! Hostile and careless clients: bind timing that does not tell which accounts exist, NUL
//! in DNs and filter values, oversized messages, connection limits and slow clients.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use ldap_frontend::{Directory, Session};
use ldap3_proto::LdapCodec;
use ldap3_proto::proto::{
    LdapBindCred, LdapBindRequest, LdapDerefAliases, LdapFilter, LdapMsg, LdapOp, LdapResultCode,
    LdapSearchRequest, LdapSearchScope,
};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use crate::{BASE, Hub, run, test_config};

const NOTICE_OID: &str = "1.3.6.1.4.1.1466.20036";

fn bind(id: i32, dn: &str, pw: &str) -> LdapMsg {
    LdapMsg::new(
        id,
        LdapOp::BindRequest(LdapBindRequest {
            version: 3,
            dn: dn.into(),
            cred: LdapBindCred::Simple(pw.into()),
        }),
    )
}

fn search(id: i32, base: &str, filter: LdapFilter) -> LdapMsg {
    LdapMsg::new(
        id,
        LdapOp::SearchRequest(LdapSearchRequest {
            base: base.into(),
            scope: LdapSearchScope::Subtree,
            aliases: LdapDerefAliases::Never,
            sizelimit: 0,
            timelimit: 0,
            typesonly: false,
            filter,
            attrs: vec![],
        }),
    )
}

fn bind_code(msgs: &[LdapMsg]) -> LdapResultCode {
    match &msgs.last().expect("a reply").op {
        LdapOp::BindResponse(r) => r.res.code.clone(),
        other => panic!("unexpected {other:?}"),
    }
}

/// The result code of a search and the number of entries it returned.
fn search_outcome(msgs: &[LdapMsg]) -> (LdapResultCode, usize) {
    let entries = msgs
        .iter()
        .filter(|m| matches!(m.op, LdapOp::SearchResultEntry(_)))
        .count();
    match &msgs.last().expect("a reply").op {
        LdapOp::SearchResultDone(r) => (r.code.clone(), entries),
        other => panic!("unexpected {other:?}"),
    }
}

/// Everything the server sends until it closes the connection (bounded, so that a server
/// that keeps it open fails the test instead of hanging it).
async fn until_closed(sock: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), sock.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the server closes the connection");
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bind_costs_one_password_verification_whether_the_account_exists_or_not() {
    let mut cfg = test_config();
    cfg.bind_max_failures = 1000;
    let hub = Hub::with_config(cfg.clone()).await;
    hub.user("alice", json!({"password": "right password"}))
        .await;
    hub.user("nopass", json!({})).await;
    hub.user("gone", json!({"password": "pw", "active": false}))
        .await;
    hub.group("staff", &[]).await;
    let (_, svc_pw) = hub
        .store
        .create_ldap_account("revoked", "", &store::Actor::cli())
        .await
        .unwrap();
    hub.store
        .revoke_ldap_account("revoked", &store::Actor::cli())
        .await
        .unwrap();
    let dir = Directory::new(hub.store.clone(), Arc::new(cfg), false).unwrap();
    let mut session = Session::new(None, false);

    let attempts = [
        format!("uid=alice,ou=people,{BASE}"),
        format!("uid=nobody,ou=people,{BASE}"),
        format!("uid=nopass,ou=people,{BASE}"),
        format!("uid=gone,ou=people,{BASE}"),
        format!("cn=reader,ou=services,{BASE}"),
        format!("cn=nobody,ou=services,{BASE}"),
        format!("cn=revoked,ou=services,{BASE}"),
        format!("cn=staff,ou=groups,{BASE}"),
        format!("ou=people,{BASE}"),
        "cn=someone,dc=elsewhere".to_string(),
    ];
    for dn in &attempts {
        let before = hub.store.password_verifications();
        let r = dir
            .handle(&mut session, bind(1, dn, "wrong password"))
            .await;
        assert_eq!(bind_code(&r), LdapResultCode::InvalidCredentials, "{dn}");
        assert_eq!(
            hub.store.password_verifications(),
            before + 1,
            "{dn}: exactly one argon2 verification"
        );
    }
    // The right passwords still work, also at the same cost.
    let before = hub.store.password_verifications();
    let r = dir
        .handle(
            &mut session,
            bind(2, &format!("uid=alice,ou=people,{BASE}"), "right password"),
        )
        .await;
    assert_eq!(bind_code(&r), LdapResultCode::Success);
    let r = dir
        .handle(&mut session, bind(3, &hub.reader_dn, &hub.reader_pw))
        .await;
    assert_eq!(bind_code(&r), LdapResultCode::Success);
    assert_eq!(hub.store.password_verifications(), before + 2);
    // A revoked account's old password is as wrong as any.
    let r = dir
        .handle(
            &mut session,
            bind(4, &format!("cn=revoked,ou=services,{BASE}"), &svc_pw),
        )
        .await;
    assert_eq!(bind_code(&r), LdapResultCode::InvalidCredentials);

    // A name that is not a DN is refused as such, without a verification.
    let before = hub.store.password_verifications();
    for bad in [
        "not a dn",
        "uid=alice\\",
        "uid=al\0ice,ou=people,dc=example,dc=org",
    ] {
        let r = dir.handle(&mut session, bind(5, bad, "pw")).await;
        assert_eq!(bind_code(&r), LdapResultCode::InvalidDNSyntax, "{bad:?}");
    }
    assert_eq!(hub.store.password_verifications(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_in_dns_and_filter_values_gets_ldap_answers() {
    let hub = Hub::start().await;
    hub.user("ivy", json!({})).await;
    let dir = Directory::new(hub.store.clone(), Arc::new(test_config()), false).unwrap();
    let mut session = Session::new(None, false);
    let r = dir
        .handle(&mut session, bind(1, &hub.reader_dn, &hub.reader_pw))
        .await;
    assert_eq!(bind_code(&r), LdapResultCode::Success);

    // An assertion value with NUL, which no stored value holds, makes its filter item
    // Undefined (as an attribute the entry's type lacks does, RFC 4511 §4.5.1.7): it
    // matches no user, and neither does its negation.
    let eq = |attr: &str, v: &str| LdapFilter::Equality(attr.into(), v.into());
    for f in [
        eq("uid", "iv\0y"),
        eq("mail", "\0"),
        eq("cn", "ivy\0"),
        LdapFilter::Substring(
            "cn".into(),
            ldap3_proto::proto::LdapSubstringFilter {
                initial: Some("i\0".into()),
                any: vec![],
                final_: None,
            },
        ),
        LdapFilter::And(vec![eq("objectClass", "inetOrgPerson"), eq("uid", "ivy\0")]),
    ] {
        let r = dir.handle(&mut session, search(2, BASE, f.clone())).await;
        assert_eq!(search_outcome(&r), (LdapResultCode::Success, 0), "{f:?}");
    }
    let r = dir
        .handle(
            &mut session,
            search(2, BASE, LdapFilter::Not(Box::new(eq("uid", "x\0")))),
        )
        .await;
    assert_eq!(search_outcome(&r).0, LdapResultCode::Success);
    let users: Vec<&LdapMsg> = r
        .iter()
        .filter(|m| matches!(&m.op, LdapOp::SearchResultEntry(e) if e.dn.contains("ou=people") && e.dn.starts_with("uid=")))
        .collect();
    assert!(users.is_empty(), "{users:?}");
    // The same search without NUL finds her: the listener and the filter path are fine.
    let r = dir
        .handle(&mut session, search(3, BASE, eq("uid", "ivy")))
        .await;
    assert_eq!(search_outcome(&r), (LdapResultCode::Success, 1));
    // An alternative that does hold finds her beside an Undefined one.
    let r = dir
        .handle(
            &mut session,
            search(
                4,
                BASE,
                LdapFilter::Or(vec![eq("uid", "ivy\0"), eq("uid", "ivy")]),
            ),
        )
        .await;
    assert_eq!(search_outcome(&r), (LdapResultCode::Success, 1));

    // A base DN with NUL is not a DN of this directory.
    for base in [
        format!("uid=iv\0y,ou=people,{BASE}"),
        format!("uid=iv\\00y,ou=people,{BASE}"),
    ] {
        let r = dir
            .handle(
                &mut session,
                search(5, &base, LdapFilter::Present("objectClass".into())),
            )
            .await;
        assert_eq!(
            search_outcome(&r).0,
            LdapResultCode::InvalidDNSyntax,
            "{base:?}"
        );
    }
    // A DN-valued assertion with NUL names no entry.
    let r = dir
        .handle(
            &mut session,
            search(
                6,
                BASE,
                eq("member", &format!("uid=iv\\00y,ou=people,{BASE}")),
            ),
        )
        .await;
    assert_eq!(search_outcome(&r), (LdapResultCode::Success, 0));

    // And with a real client: no internal error, no entry.
    let o = hub.search(&["-b", BASE, "(uid=iv\\00y)", "uid"]).await;
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.dns().is_empty(), "{o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_declaring_100_mb_is_refused_at_its_header() {
    let hub = Hub::start().await;
    hub.user("ivy", json!({})).await;
    // Another client, bound and idle while the oversized one is refused.
    let mut other = Framed::new(
        TcpStream::connect(hub.server.addr).await.unwrap(),
        LdapCodec::default(),
    );
    other
        .send(bind(1, &hub.reader_dn, &hub.reader_pw))
        .await
        .unwrap();
    let r = other.next().await.unwrap().unwrap();
    assert_eq!(bind_code(&[r]), LdapResultCode::Success);

    let mut sock = TcpStream::connect(hub.server.addr).await.unwrap();
    // SEQUENCE, length in four octets: 0x06400000 = 104,857,600 bytes; nothing follows.
    sock.write_all(&[0x30, 0x84, 0x06, 0x40, 0x00, 0x00])
        .await
        .unwrap();
    let text = until_closed(&mut sock).await;
    assert!(
        text.contains(NOTICE_OID),
        "notice of disconnection: {text:?}"
    );
    assert!(
        text.contains("104857606") && text.contains("ldap.max_message_bytes"),
        "{text:?}"
    );

    // The other connection and new ones carry on.
    other
        .send(search(
            2,
            BASE,
            LdapFilter::Equality("uid".into(), "ivy".into()),
        ))
        .await
        .unwrap();
    let entry = other.next().await.unwrap().unwrap();
    assert!(
        matches!(entry.op, LdapOp::SearchResultEntry(_)),
        "{entry:?}"
    );
    let o = hub.search(&["-b", BASE, "(uid=ivy)", "uid"]).await;
    assert_eq!(o.values("uid"), vec!["ivy"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_refused_and_slots_come_back() {
    let mut cfg = test_config();
    cfg.max_connections = 2;
    let hub = Hub::with_config(cfg).await;
    // Two connections that are served (a bind each proves the server holds them).
    let mut held = Vec::new();
    for i in 0..2 {
        let mut c = Framed::new(
            TcpStream::connect(hub.server.addr).await.unwrap(),
            LdapCodec::default(),
        );
        c.send(bind(i + 1, &hub.reader_dn, &hub.reader_pw))
            .await
            .unwrap();
        let r = c.next().await.unwrap().unwrap();
        assert_eq!(bind_code(&[r]), LdapResultCode::Success);
        held.push(c);
    }
    let mut third = TcpStream::connect(hub.server.addr).await.unwrap();
    let text = until_closed(&mut third).await;
    assert!(
        text.contains(NOTICE_OID) && text.contains("ldap.max_connections = 2"),
        "{text:?}"
    );
    // The held connections still work.
    held[0]
        .send(search(3, BASE, LdapFilter::Present("objectClass".into())))
        .await
        .unwrap();
    assert!(held[0].next().await.unwrap().is_ok());

    // Closing one frees its slot (the server notices the close a moment later).
    drop(held.pop());
    let mut whoami = None;
    for _ in 0..100 {
        let o = run(
            "ldapwhoami",
            vec![
                "-x".into(),
                "-H".into(),
                hub.url(),
                "-D".into(),
                hub.reader_dn.clone(),
                "-w".into(),
                hub.reader_pw.clone(),
            ],
            &[],
        )
        .await;
        if o.code == 0 {
            whoami = Some(o);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let o = whoami.expect("a freed slot serves a new client");
    assert!(o.stdout.contains("cn=reader"), "{o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_trickling_clients_are_closed_after_the_request_timeout() {
    let mut cfg = test_config();
    cfg.request_timeout_seconds = 1;
    let hub = Hub::with_config(cfg).await;

    // Connects and says nothing (the idle timeout is 15 minutes).
    let mut silent = TcpStream::connect(hub.server.addr).await.unwrap();
    let text = until_closed(&mut silent).await;
    assert!(
        text.contains(NOTICE_OID) && text.contains("ldap.request_timeout_seconds"),
        "{text:?}"
    );

    // Binds, then sends a request one byte at a time, never completing it.
    let mut c = Framed::new(
        TcpStream::connect(hub.server.addr).await.unwrap(),
        LdapCodec::default(),
    );
    c.send(bind(1, &hub.reader_dn, &hub.reader_pw))
        .await
        .unwrap();
    let r = c.next().await.unwrap().unwrap();
    assert_eq!(bind_code(&[r]), LdapResultCode::Success);
    let mut sock = c.into_inner();
    let (mut rd, mut wr) = sock.split();
    let trickle = async {
        // A SEQUENCE declaring 200 bytes, then a byte every 200 ms.
        for b in [0x30u8, 0x81, 0xc8]
            .into_iter()
            .chain(std::iter::repeat(0x04))
        {
            if wr.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let mut buf = Vec::new();
    let closed = tokio::select! {
        _ = trickle => false,
        r = tokio::time::timeout(Duration::from_secs(20), rd.read_to_end(&mut buf)) => r.is_ok(),
    };
    assert!(closed, "a request trickling in is cut off");
    let text = String::from_utf8_lossy(&buf);
    assert!(text.contains("ldap.request_timeout_seconds"), "{text:?}");

    // A prompt client is served as usual.
    let who = run("ldapwhoami", vec!["-x".into(), "-H".into(), hub.url()], &[]).await;
    assert_eq!(who.code, 0, "{who:?}");
}
