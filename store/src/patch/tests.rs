use serde_json::{Map, Value, json};

use super::*;
use crate::model::{ENTERPRISE_USER_SCHEMA, SchemaRegistry};

fn ops(v: Value) -> Vec<PatchOperation> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|o| PatchOperation::from_json(o).unwrap())
        .collect()
}

fn user() -> Map<String, Value> {
    json!({
        "userName": "bjensen",
        "name": {"givenName": "Barbara", "familyName": "Jensen"},
        "active": true,
        "emails": [
            {"value": "b@work.example", "type": "work", "primary": true},
            {"value": "b@home.example", "type": "home"}
        ]
    })
    .as_object()
    .unwrap()
    .clone()
}

fn patch_user(v: Value) -> Result<Patched, StoreError> {
    apply_patch(
        &SchemaRegistry::builtin(),
        ResourceKind::User,
        &user(),
        Some("ext-1"),
        &ops(v),
        &FilterLimits::default(),
    )
}

#[test]
fn replace_simple_and_sub_attributes() {
    let p = patch_user(json!([
        {"op": "Replace", "path": "name.familyName", "value": "Smith"},
        {"op": "replace", "path": "displayName", "value": "Babs"}
    ]))
    .unwrap();
    assert_eq!(
        p.doc["name"],
        json!({"givenName": "Barbara", "familyName": "Smith"})
    );
    assert_eq!(p.doc["displayName"], "Babs");
}

#[test]
fn entra_no_path_replace_with_dotted_and_urn_keys_and_string_booleans() {
    let p = patch_user(json!([{
        "op": "Replace",
        "value": {
            "active": "False",
            "name.givenName": "Barb",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber": "42",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager": "mgr-id"
        }
    }]))
    .unwrap();
    assert_eq!(p.doc["active"], false);
    assert_eq!(p.doc["name"]["givenName"], "Barb");
    assert_eq!(
        p.doc[ENTERPRISE_USER_SCHEMA],
        json!({"employeeNumber": "42", "manager": {"value": "mgr-id"}})
    );
}

#[test]
fn filtered_sub_attribute_paths() {
    let p = patch_user(json!([
        {"op": "replace", "path": "emails[type eq \"work\"].value", "value": "new@work.example"}
    ]))
    .unwrap();
    assert_eq!(p.doc["emails"][0]["value"], "new@work.example");
    assert_eq!(p.doc["emails"][1]["value"], "b@home.example");

    // No matching element: created from an eq-only filter (Entra ID's first write).
    let p = patch_user(json!([
        {"op": "add", "path": "phoneNumbers[type eq \"mobile\"].value", "value": "+1 555"}
    ]))
    .unwrap();
    assert_eq!(
        p.doc["phoneNumbers"],
        json!([{"type": "mobile", "value": "+1 555"}])
    );

    let e = patch_user(json!([
        {"op": "replace", "path": "emails[value co \"nomatch\"].type", "value": "home"}
    ]))
    .unwrap_err();
    assert!(matches!(e, StoreError::NoTarget(_)), "{e:?}");
}

#[test]
fn remove_forms() {
    let p = patch_user(json!([{"op": "remove", "path": "emails[type eq \"home\"]"}])).unwrap();
    assert_eq!(p.doc["emails"].as_array().unwrap().len(), 1);
    let p = patch_user(
        json!([{"op": "remove", "path": "emails", "value": [{"value": "b@work.example"}]}]),
    )
    .unwrap();
    assert_eq!(
        p.doc["emails"],
        json!([{"value": "b@home.example", "type": "home"}])
    );
    let p = patch_user(
        json!([{"op": "remove", "path": "name.givenName"}, {"op": "remove", "path": "externalId"}]),
    )
    .unwrap();
    assert_eq!(p.doc["name"], json!({"familyName": "Jensen"}));
    assert_eq!(p.external_id, None);
    let e = patch_user(json!([{"op": "remove"}])).unwrap_err();
    assert!(matches!(e, StoreError::NoTarget(_)));
}

#[test]
fn add_to_multi_valued_appends_and_moves_primary() {
    let p = patch_user(json!([
        {"op": "add", "path": "emails", "value": [{"value": "c@x.example", "type": "other", "primary": true}]}
    ]))
    .unwrap();
    let emails = p.doc["emails"].as_array().unwrap();
    assert_eq!(emails.len(), 3);
    assert_eq!(emails[0]["primary"], false);
    assert_eq!(emails[2]["primary"], true);
}

#[test]
fn errors_carry_scim_types() {
    let cases = [
        (
            json!([{"op": "replace", "path": "id", "value": "x"}]),
            "mutability",
        ),
        (
            json!([{"op": "replace", "path": "groups", "value": []}]),
            "mutability",
        ),
        (
            json!([{"op": "replace", "path": "nosuch", "value": 1}]),
            "invalidPath",
        ),
        (
            json!([{"op": "replace", "path": "emails[type eq", "value": 1}]),
            "invalidPath",
        ),
        (
            json!([{"op": "replace", "path": "active", "value": "maybe"}]),
            "invalidValue",
        ),
        (
            json!([{"op": "remove", "path": "userName"}]),
            "invalidValue",
        ),
    ];
    for (v, want) in cases {
        let e = patch_user(v.clone()).unwrap_err();
        let got = match e {
            StoreError::Mutability(_) => "mutability",
            StoreError::InvalidPath(_) => "invalidPath",
            StoreError::InvalidValue(_) => "invalidValue",
            ref other => panic!("{v}: {other:?}"),
        };
        assert_eq!(got, want, "{v}: {e}");
    }
    let e = PatchOperation::from_json(&json!({"op": "merge", "path": "x"})).unwrap_err();
    assert!(matches!(e, StoreError::InvalidSyntax(_)));
}

#[test]
fn password_is_extracted_not_stored() {
    let p = patch_user(json!([{"op": "replace", "path": "password", "value": "n3w"}])).unwrap();
    assert_eq!(p.password, PasswordChange::Set("n3w".into()));
    assert!(!p.doc.contains_key("password"));
}

#[test]
fn group_member_dialects_become_member_ops() {
    let reg = SchemaRegistry::builtin();
    let doc = json!({"displayName": "G"}).as_object().unwrap().clone();
    let p = apply_patch(
        &reg,
        ResourceKind::Group,
        &doc,
        None,
        &ops(json!([
            {"op": "Add", "path": "members", "value": [{"value": "u1"}, {"value": "u2", "type": "User"}]},
            {"op": "Remove", "path": "members", "value": [{"value": "u3"}]},
            {"op": "remove", "path": "members[value eq \"u4\"]"},
            {"op": "remove", "path": "members[type eq \"Group\"]"},
            {"op": "replace", "path": "members", "value": [{"value": "u5"}]},
            {"op": "replace", "value": {"displayName": "G2", "members": [{"value": "u6"}]}}
        ])),
        &FilterLimits::default(),
    )
    .unwrap();
    assert_eq!(p.doc["displayName"], "G2");
    assert_eq!(
        p.member_ops,
        vec![
            MemberOp::Add(vec![
                MemberRef {
                    value: "u1".into(),
                    kind: None
                },
                MemberRef {
                    value: "u2".into(),
                    kind: Some(ResourceKind::User)
                }
            ]),
            MemberOp::Remove(vec!["u3".into()]),
            MemberOp::Remove(vec!["u4".into()]),
            MemberOp::RemoveWhere(Filter::parse("type eq \"Group\"").unwrap()),
            MemberOp::RemoveAll,
            MemberOp::Add(vec![MemberRef {
                value: "u5".into(),
                kind: None
            }]),
            MemberOp::RemoveAll,
            MemberOp::Add(vec![MemberRef {
                value: "u6".into(),
                kind: None
            }]),
        ]
    );
}

#[test]
fn whole_extension_replace_and_remove() {
    let p = patch_user(json!([
        {"op": "add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User", "value": {"department": "R&D"}},
    ]))
    .unwrap();
    assert_eq!(p.doc[ENTERPRISE_USER_SCHEMA], json!({"department": "R&D"}));
    let p = apply_patch(
        &SchemaRegistry::builtin(),
        ResourceKind::User,
        &p.doc,
        None,
        &ops(json!([{"op": "remove", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"}])),
        &FilterLimits::default(),
    )
    .unwrap();
    assert!(!p.doc.contains_key(ENTERPRISE_USER_SCHEMA));
}

/// `members[value eq "0" or … ]` with 30,000 terms (over 500 KB): refused as invalidFilter
/// naming the limit, on every kind of target; 1,000 ids become one member removal.
#[test]
fn long_value_filters_in_paths_are_refused_by_the_limits() {
    let reg = SchemaRegistry::builtin();
    let chain = |n: usize| {
        (0..n)
            .map(|i| format!("value eq \"{i}\""))
            .collect::<Vec<_>>()
            .join(" or ")
    };
    let huge = chain(30_000);
    assert!(huge.len() > 500_000);
    let group = json!({"displayName": "G"}).as_object().unwrap().clone();
    let limits = FilterLimits {
        max_length: usize::MAX,
        ..FilterLimits::default()
    };
    for (kind, doc, path) in [
        (ResourceKind::User, user(), format!("emails[{huge}]")),
        (ResourceKind::User, user(), format!("emails[{huge}].type")),
        (
            ResourceKind::Group,
            group.clone(),
            format!("members[{huge}]"),
        ),
    ] {
        for op in ["remove", "replace"] {
            let o = ops(json!([{"op": op, "path": path, "value": "x"}]));
            for l in [FilterLimits::default(), limits] {
                match apply_patch(&reg, kind, &doc, None, &o, &l) {
                    Err(StoreError::InvalidFilter(m)) => {
                        assert!(m.contains("max_filter_") && m.len() < 300, "{m}")
                    }
                    other => panic!("{op} {}: {other:?}", &path[..20]),
                }
            }
        }
    }
    let o = ops(json!([{"op": "remove", "path": format!("members[{}]", chain(1000))}]));
    let p = apply_patch(&reg, ResourceKind::Group, &group, None, &o, &limits).unwrap();
    assert!(matches!(&p.member_ops[..], [MemberOp::Remove(ids)] if ids.len() == 1000));
}
