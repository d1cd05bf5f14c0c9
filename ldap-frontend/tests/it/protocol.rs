//! Protocol edge cases through `Directory::handle` (no sockets) and over a raw socket.

use std::sync::Arc;

use ldap_frontend::{Directory, Session};
use ldap3_proto::control::LdapControl;
use ldap3_proto::proto::{
    LdapBindCred, LdapBindRequest, LdapDerefAliases, LdapExtendedRequest, LdapFilter, LdapMsg,
    LdapOp, LdapResultCode, LdapSearchRequest, LdapSearchScope, SaslCredentials,
};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{BASE, Hub, run, store, test_config};

fn code_of(msgs: &[LdapMsg]) -> LdapResultCode {
    match &msgs.last().expect("a reply").op {
        LdapOp::BindResponse(r) => r.res.code.clone(),
        LdapOp::SearchResultDone(r)
        | LdapOp::CompareResult(r)
        | LdapOp::AddResponse(r)
        | LdapOp::ModifyResponse(r) => r.code.clone(),
        LdapOp::ExtendedResponse(r) => r.res.code.clone(),
        other => panic!("unexpected {other:?}"),
    }
}

fn search(base: &str, filter: LdapFilter) -> LdapSearchRequest {
    LdapSearchRequest {
        base: base.into(),
        scope: LdapSearchScope::Subtree,
        aliases: LdapDerefAliases::Never,
        sizelimit: 0,
        timelimit: 0,
        typesonly: false,
        filter,
        attrs: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_sockets() {
    let s = store().await;
    let (_, pw) = s
        .create_ldap_account("svc", "", &store::Actor::cli())
        .await
        .unwrap();
    let dir = Directory::new(s.clone(), Arc::new(test_config()), false).unwrap();
    let mut session = Session::new(None, false);
    let bind = |version, cred| {
        LdapMsg::new(
            1,
            LdapOp::BindRequest(LdapBindRequest {
                version,
                dn: format!("cn=svc,ou=services,{BASE}"),
                cred,
            }),
        )
    };

    assert_eq!(
        code_of(
            &dir.handle(&mut session, bind(2, LdapBindCred::Simple(pw.clone())))
                .await
        ),
        LdapResultCode::ProtocolError
    );
    let sasl = LdapBindCred::SASL(SaslCredentials {
        mechanism: "EXTERNAL".into(),
        credentials: vec![],
    });
    assert_eq!(
        code_of(&dir.handle(&mut session, bind(3, sasl)).await),
        LdapResultCode::AuthMethodNotSupported
    );
    assert_eq!(
        code_of(
            &dir.handle(&mut session, bind(3, LdapBindCred::Simple(String::new())))
                .await
        ),
        LdapResultCode::UnwillingToPerform
    );
    assert_eq!(
        code_of(
            &dir.handle(&mut session, bind(3, LdapBindCred::Simple(pw)))
                .await
        ),
        LdapResultCode::Success
    );

    let unknown_ext = LdapMsg::new(
        2,
        LdapOp::ExtendedRequest(LdapExtendedRequest {
            name: "1.2.3.4".into(),
            value: None,
        }),
    );
    let r = dir.handle(&mut session, unknown_ext).await;
    assert_eq!(code_of(&r), LdapResultCode::ProtocolError);
    assert!(
        !session.closing,
        "an unknown extended operation keeps the connection"
    );

    let starttls = LdapMsg::new(
        3,
        LdapOp::ExtendedRequest(LdapExtendedRequest {
            name: "1.3.6.1.4.1.1466.20037".into(),
            value: None,
        }),
    );
    assert_eq!(
        code_of(&dir.handle(&mut session, starttls).await),
        LdapResultCode::Unavailable
    );

    let critical = LdapMsg::new_with_ctrls(
        4,
        LdapOp::SearchRequest(search(BASE, LdapFilter::Present("objectClass".into()))),
        vec![LdapControl::Unknown {
            oid: "1.2.3.999".into(),
            criticality: true,
            value: None,
        }],
    );
    assert_eq!(
        code_of(&dir.handle(&mut session, critical).await),
        LdapResultCode::UnavailableCriticalExtension
    );
    let noncritical = LdapMsg::new_with_ctrls(
        5,
        LdapOp::SearchRequest(search(BASE, LdapFilter::Present("objectClass".into()))),
        vec![LdapControl::Unknown {
            oid: "1.2.3.999".into(),
            criticality: false,
            value: None,
        }],
    );
    assert_eq!(
        code_of(&dir.handle(&mut session, noncritical).await),
        LdapResultCode::Success
    );

    // Paged results: a cookie is bound to its search and used once.
    let paged = |id, filter: &str, cookie: Vec<u8>| {
        LdapMsg::new_with_ctrls(
            id,
            LdapOp::SearchRequest(search(BASE, LdapFilter::Present(filter.into()))),
            vec![LdapControl::SimplePagedResults { size: 2, cookie }],
        )
    };
    let first = dir
        .handle(&mut session, paged(6, "objectClass", vec![]))
        .await;
    assert_eq!(first.len(), 3, "two entries and done");
    let cookie = match &first[2].ctrl[..] {
        [LdapControl::SimplePagedResults { cookie, .. }] => cookie.clone(),
        other => panic!("{other:?}"),
    };
    assert!(!cookie.is_empty());
    assert_eq!(
        code_of(
            &dir.handle(&mut session, paged(7, "cn", cookie.clone()))
                .await
        ),
        LdapResultCode::UnwillingToPerform
    );
    assert_eq!(
        code_of(
            &dir.handle(&mut session, paged(8, "objectClass", cookie))
                .await
        ),
        LdapResultCode::UnwillingToPerform,
        "used up by the mismatched request"
    );
    assert_eq!(
        code_of(
            &dir.handle(&mut session, paged(9, "objectClass", b"forged".to_vec()))
                .await
        ),
        LdapResultCode::UnwillingToPerform
    );

    let unbind = dir
        .handle(&mut session, LdapMsg::new(10, LdapOp::UnbindRequest))
        .await;
    assert!(unbind.is_empty() && session.closing);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_ber_closes_only_that_connection() {
    let hub = Hub::start().await;
    hub.user("ivy", json!({})).await;
    let mut sock = tokio::net::TcpStream::connect(hub.server.addr)
        .await
        .unwrap();
    // A SEQUENCE whose content is not an LDAPMessage.
    sock.write_all(&[0x30, 0x06, 0x02, 0x01, 0x01, 0x7f, 0x01, 0x00])
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        sock.read_to_end(&mut buf),
    )
    .await;
    assert!(read.is_ok(), "the server closes the connection");
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.contains("1.3.6.1.4.1.1466.20036"),
        "notice of disconnection: {buf:?}"
    );

    let mut http = tokio::net::TcpStream::connect(hub.server.addr)
        .await
        .unwrap();
    http.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        http.read_to_end(&mut buf),
    )
    .await;

    // The listener is unaffected.
    let o = hub.search(&["-b", BASE, "(uid=ivy)", "uid"]).await;
    assert_eq!(o.values("uid"), vec!["ivy"]);
    let who = run("ldapwhoami", vec!["-x".into(), "-H".into(), hub.url()], &[]).await;
    assert_eq!(who.code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_lookups_by_name_each_get_their_entry() {
    let hub = Hub::start().await;
    for i in 0..40 {
        hub.user(&format!("c{i:02}"), json!({"title": format!("t{i}")}))
            .await;
    }
    hub.user("gone", json!({"active": false})).await;
    let dir = Arc::new(Directory::new(hub.store.clone(), Arc::new(test_config()), false).unwrap());
    let (_, pw) = hub
        .store
        .create_ldap_account("conc", "", &store::Actor::cli())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..42 {
        let dir = dir.clone();
        let pw = pw.clone();
        tasks.push(tokio::spawn(async move {
            let mut session = Session::new(None, false);
            let bind = LdapMsg::new(
                1,
                LdapOp::BindRequest(LdapBindRequest {
                    version: 3,
                    dn: format!("cn=conc,ou=services,{BASE}"),
                    cred: LdapBindCred::Simple(pw),
                }),
            );
            assert_eq!(
                code_of(&dir.handle(&mut session, bind).await),
                LdapResultCode::Success
            );
            let uid = match i {
                40 => "gone".to_string(),
                41 => "nobody".to_string(),
                _ => format!("C{i:02}"),
            };
            let mut req = search(BASE, LdapFilter::Equality("uid".into(), uid));
            req.attrs = vec!["title".into()];
            let r = dir
                .handle(&mut session, LdapMsg::new(2, LdapOp::SearchRequest(req)))
                .await;
            assert_eq!(code_of(&r), LdapResultCode::Success);
            let titles: Vec<String> = r
                .iter()
                .filter_map(|m| match &m.op {
                    LdapOp::SearchResultEntry(e) => {
                        Some(String::from_utf8(e.attributes[0].vals[0].clone()).unwrap())
                    }
                    _ => None,
                })
                .collect();
            (i, titles)
        }));
    }
    for t in tasks {
        let (i, titles) = t.await.unwrap();
        if i < 40 {
            assert_eq!(titles, vec![format!("t{i}")]);
        } else {
            assert!(titles.is_empty(), "{i}: {titles:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_reported_to_the_observer() {
    let s = store().await;
    let seen = Arc::new(std::sync::Mutex::new(Vec::<(&'static str, u32)>::new()));
    let sink = seen.clone();
    let dir = Directory::new(s, Arc::new(test_config()), false)
        .unwrap()
        .with_observer(Arc::new(move |op, code, _| {
            sink.lock().unwrap().push((op, code))
        }));
    let mut session = Session::new(None, false);
    let bind = LdapMsg::new(
        1,
        LdapOp::BindRequest(LdapBindRequest {
            version: 3,
            dn: format!("uid=x,ou=people,{BASE}"),
            cred: LdapBindCred::Simple("bad".into()),
        }),
    );
    dir.handle(&mut session, bind).await;
    dir.handle(
        &mut session,
        LdapMsg::new(
            2,
            LdapOp::SearchRequest(search(BASE, LdapFilter::Present("objectClass".into()))),
        ),
    )
    .await;
    dir.handle(
        &mut session,
        LdapMsg::new(3, LdapOp::DelRequest(format!("uid=x,ou=people,{BASE}"))),
    )
    .await;
    dir.handle(&mut session, LdapMsg::new(4, LdapOp::UnbindRequest))
        .await;
    assert_eq!(
        *seen.lock().unwrap(),
        vec![("bind", 49), ("search", 50), ("delete", 53), ("unbind", 0)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_get_a_notice_and_are_closed() {
    let mut cfg = test_config();
    cfg.idle_timeout_seconds = 1;
    let hub = Hub::with_config(cfg).await;
    let mut sock = tokio::net::TcpStream::connect(hub.server.addr)
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        sock.read_to_end(&mut buf),
    )
    .await;
    assert!(read.is_ok(), "closed after the idle timeout");
    assert!(String::from_utf8_lossy(&buf).contains("1.3.6.1.4.1.1466.20036"));
}
