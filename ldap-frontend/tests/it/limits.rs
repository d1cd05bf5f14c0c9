//! Filters of hostile size over real connections: a flat `(|…)` of 11,500 items used to
//! overflow a worker's stack and abort the process, 1,000 items gave 80 "Expression tree
//! is too large"; now the first is adminLimitExceeded naming the limit, the second is
//! answered, and the directory keeps serving either way.

use ldap3::{LdapConnAsync, Scope};
use ldap3_proto::LdapCodec;
use ldap3_proto::proto::{
    LdapBindCred, LdapBindRequest, LdapDerefAliases, LdapFilter, LdapMsg, LdapOp, LdapResultCode,
    LdapSearchRequest, LdapSearchScope,
};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

use crate::{BASE, Hub};

async fn connect(hub: &Hub) -> ldap3::Ldap {
    let (conn, mut ldap) = LdapConnAsync::new(&hub.url()).await.expect("connect");
    ldap3::drive!(conn);
    ldap.simple_bind(&hub.reader_dn, &hub.reader_pw)
        .await
        .expect("bind")
        .success()
        .expect("bind succeeds");
    ldap
}

fn items(n: usize, item: impl Fn(usize) -> String) -> String {
    (0..n).map(item).collect()
}

/// (result code, message, uids found)
async fn search(ldap: &mut ldap3::Ldap, filter: &str) -> (u32, String, Vec<String>) {
    let r = ldap
        .search(BASE, Scope::Subtree, filter, vec!["uid"])
        .await
        .expect("a search result");
    let uids =
        r.0.into_iter()
            .filter_map(|e| {
                ldap3::SearchEntry::construct(e)
                    .attrs
                    .get("uid")
                    .and_then(|v| v.first().cloned())
            })
            .collect();
    (r.1.rc, r.1.text, uids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flat_filter_of_11500_items_is_refused_and_the_directory_keeps_serving() {
    let hub = Hub::start().await;
    hub.user("ivy", json!({})).await;
    let mut ldap = connect(&hub).await;
    for op in ['|', '&'] {
        let f = format!("({op}{})", items(11_500, |i| format!("(uid=u{i})")));
        let (rc, text, found) = search(&mut ldap, &f).await;
        assert_eq!(rc, 11, "adminLimitExceeded: {text}");
        assert!(
            text.contains("11500 terms") && text.contains("ldap.max_filter_terms"),
            "{text}"
        );
        assert!(found.is_empty());
    }
    // The same connection, a new one and another client are all served.
    assert_eq!(search(&mut ldap, "(uid=ivy)").await.2, ["ivy"]);
    let mut again = connect(&hub).await;
    assert_eq!(search(&mut again, "(uid=ivy)").await.2, ["ivy"]);
    let o = hub.search(&["-b", BASE, "(uid=ivy)", "uid"]).await;
    assert_eq!(o.values("uid"), vec!["ivy"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_items_are_answered() {
    let hub = Hub::start().await;
    for i in 0..300 {
        hub.user(
            &format!("u{i}"),
            json!({"emails": [{"value": format!("u{i}@example.org")}]}),
        )
        .await;
    }
    hub.user("gone", json!({"active": false})).await;
    let mut ldap = connect(&hub).await;
    let uids = items(1000, |i| format!("(uid=u{i})"));
    let mut expect: Vec<String> = (0..300).map(|i| format!("u{i}")).collect();
    expect.sort();
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let (rc, text, found) = search(&mut ldap, &format!("(|{uids})")).await;
    assert_eq!(rc, 0, "{text}");
    assert_eq!(sorted(found), expect);
    // With two more assertions, 1,000 terms in all.
    let (rc, _, found) = search(
        &mut ldap,
        &format!(
            "(&(objectClass=inetOrgPerson)(|{}(uid=gone)))",
            items(998, |i| format!("(uid=u{i})"))
        ),
    )
    .await;
    assert_eq!(
        (rc, sorted(found)),
        (0, expect.clone()),
        "inactive users stay hidden"
    );
    // The complement, and a mix of substring assertions that do not merge.
    let (rc, _, found) = search(
        &mut ldap,
        &format!("(&(uid=*)(!(|{})))", items(999, |i| format!("(uid=u{i})"))),
    )
    .await;
    assert_eq!((rc, found), (0, Vec::<String>::new()));
    let mixed = items(999, |i| match i % 3 {
        0 => format!("(mail=*{i}@*)"),
        1 => format!("(cn=u{i})"),
        _ => format!("(!(sn=x{i}*))"),
    });
    let (rc, text, found) = search(&mut ldap, &format!("(&(uid=u1*)(|{mixed}))")).await;
    assert_eq!(rc, 0, "{text}");
    let mut want: Vec<String> = expect
        .iter()
        .filter(|u| u.starts_with("u1"))
        .cloned()
        .collect();
    want.sort();
    assert_eq!(
        sorted(found),
        want,
        "every user has no sn, so each (!(sn=…)) holds"
    );
    // 1,001 items are one too many.
    let (rc, text, _) = search(&mut ldap, &format!("(|{uids}(uid=ivy))")).await;
    assert_eq!(rc, 11, "{text}");
}

/// Writes one request on a raw socket and reads the replies until the connection closes or
/// a SearchResultDone arrives.
async fn raw_search(hub: &Hub, filter: LdapFilter) -> Vec<LdapMsg> {
    let mut sock = tokio::net::TcpStream::connect(hub.server.addr)
        .await
        .unwrap();
    let mut codec = LdapCodec::default();
    let mut out = BytesMut::new();
    let bind = LdapMsg::new(
        1,
        LdapOp::BindRequest(LdapBindRequest {
            version: 3,
            dn: hub.reader_dn.clone(),
            cred: LdapBindCred::Simple(hub.reader_pw.clone()),
        }),
    );
    let search = LdapMsg::new(
        2,
        LdapOp::SearchRequest(LdapSearchRequest {
            base: BASE.into(),
            scope: LdapSearchScope::Subtree,
            aliases: LdapDerefAliases::Never,
            sizelimit: 0,
            timelimit: 0,
            typesonly: false,
            filter,
            attrs: vec!["uid".into()],
        }),
    );
    codec.encode(bind, &mut out).unwrap();
    codec.encode(search, &mut out).unwrap();
    sock.write_all(&out).await.unwrap();
    let mut replies = Vec::new();
    let mut buf = BytesMut::new();
    let mut reader = LdapCodec::new(Some(8 * 1024 * 1024), None);
    loop {
        while let Ok(Some(msg)) = reader.decode(&mut buf) {
            let done = matches!(msg.op, LdapOp::SearchResultDone(_));
            replies.push(msg);
            if done {
                return replies;
            }
        }
        let mut chunk = vec![0u8; 65536];
        let n = tokio::time::timeout(std::time::Duration::from_secs(30), sock.read(&mut chunk))
            .await
            .expect("the server answers or closes")
            .unwrap_or(0);
        if n == 0 {
            return replies;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn nested(depth: usize) -> LdapFilter {
    let mut f = LdapFilter::Equality("uid".into(), "ivy".into());
    for level in 0..depth {
        let other = LdapFilter::Present("objectClass".into());
        f = if level % 2 == 0 {
            LdapFilter::And(vec![other, f])
        } else {
            LdapFilter::Or(vec![LdapFilter::Equality("uid".into(), "nobody".into()), f])
        };
    }
    f
}

/// The BER decoder bounds nesting (128 levels of the whole message): a filter nested up to
/// that depth is answered; a deeper one is refused as malformed before any filter code runs,
/// and only that connection is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nesting_is_bounded_by_the_decoder() {
    let hub = Hub::start().await;
    hub.user("ivy", json!({})).await;
    let replies = raw_search(&hub, nested(120)).await;
    let entries = replies
        .iter()
        .filter(|m| matches!(m.op, LdapOp::SearchResultEntry(_)))
        .count();
    match &replies.last().map(|m| &m.op) {
        Some(LdapOp::SearchResultDone(r)) => assert_eq!(r.code, LdapResultCode::Success, "{r:?}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(entries, 1);
    let replies = raw_search(&hub, nested(300)).await;
    let notice = replies.iter().any(|m| {
        matches!(&m.op, LdapOp::ExtendedResponse(r)
            if r.res.code == LdapResultCode::ProtocolError)
    });
    assert!(notice, "a notice of disconnection: {replies:?}");
    assert!(
        !replies
            .iter()
            .any(|m| matches!(m.op, LdapOp::SearchResultDone(_))),
        "the search is not run"
    );
    let o = hub.search(&["-b", BASE, "(uid=ivy)", "uid"]).await;
    assert_eq!(o.values("uid"), vec!["ivy"]);
}
