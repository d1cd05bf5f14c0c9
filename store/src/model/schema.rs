//! Schema and resource-type definitions (RFC 7643 §7, §6), loaded from JSON so that the
//! documents served at `/Schemas` are exactly the ones the store enforces.

use serde::{Deserialize, Serialize};

use crate::error::StoreError;

pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const ENTERPRISE_USER_SCHEMA: &str =
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
pub const PACS_CARDHOLDER_SCHEMA: &str =
    "urn:scimhub:params:scim:schemas:extension:pacs:1.0:Cardholder";

const BUILTIN_USER: &str = include_str!("../../schemas/user.json");
const BUILTIN_GROUP: &str = include_str!("../../schemas/group.json");
const BUILTIN_ENTERPRISE: &str = include_str!("../../schemas/enterprise-user.json");
const BUILTIN_PACS: &str = include_str!("../../schemas/pacs-cardholder.json");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ResourceKind {
    User,
    Group,
}

impl ResourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::User => "User",
            ResourceKind::Group => "Group",
        }
    }
    pub fn endpoint(self) -> &'static str {
        match self {
            ResourceKind::User => "/Users",
            ResourceKind::Group => "/Groups",
        }
    }
    /// The attribute that names a resource of this type: unique, its directory entry's RDN.
    pub fn name_attribute(self) -> &'static str {
        match self {
            ResourceKind::User => "userName",
            ResourceKind::Group => "displayName",
        }
    }
    pub fn core_schema(self) -> &'static str {
        match self {
            ResourceKind::User => USER_SCHEMA,
            ResourceKind::Group => GROUP_SCHEMA,
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        if s.eq_ignore_ascii_case("User") {
            Some(ResourceKind::User)
        } else if s.eq_ignore_ascii_case("Group") {
            Some(ResourceKind::Group)
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AttrType {
    String,
    Boolean,
    Decimal,
    Integer,
    DateTime,
    Binary,
    Reference,
    Complex,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum Mutability {
    ReadOnly,
    #[default]
    ReadWrite,
    Immutable,
    WriteOnly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum Returned {
    Always,
    Never,
    #[default]
    Default,
    Request,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum Uniqueness {
    #[default]
    None,
    Server,
    Global,
}

/// One attribute definition with every RFC 7643 §7 characteristic filled in.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttributeDef {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: AttrType,
    #[serde(default)]
    pub multi_valued: bool,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub required: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub canonical_values: Vec<String>,
    #[serde(default)]
    pub case_exact: bool,
    #[serde(default)]
    pub mutability: Mutability,
    #[serde(default)]
    pub returned: Returned,
    #[serde(default)]
    pub uniqueness: Uniqueness,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reference_types: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sub_attributes: Vec<AttributeDef>,
}

impl AttributeDef {
    pub fn sub(&self, name: &str) -> Option<&AttributeDef> {
        self.sub_attributes
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case(name))
    }

    /// Whether a filter on this (simple) attribute compares case-sensitively.
    /// Non-string types have canonical forms, so folding never applies to them.
    pub fn folds_case(&self) -> bool {
        matches!(self.kind, AttrType::String | AttrType::Reference) && !self.case_exact
    }

    fn validate(&self, schema: &str, depth: usize) -> Result<(), StoreError> {
        let ok_name = {
            let mut chars = self.name.chars();
            match chars.next() {
                Some(c) if c.is_ascii_alphabetic() || (c == '$' && self.name == "$ref") => {
                    chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                        || self.name == "$ref"
                }
                _ => false,
            }
        };
        if !ok_name {
            return Err(StoreError::Config(format!(
                "schema {schema}: attribute name {:?} is not a valid ATTRNAME (RFC 7643 §2.1)",
                self.name
            )));
        }
        if self.kind == AttrType::Complex {
            if depth > 0 {
                return Err(StoreError::Config(format!(
                    "schema {schema}: sub-attribute {:?} is complex; RFC 7643 §2.3.8 forbids nesting complex attributes",
                    self.name
                )));
            }
            if self.sub_attributes.is_empty() {
                return Err(StoreError::Config(format!(
                    "schema {schema}: complex attribute {:?} has no subAttributes",
                    self.name
                )));
            }
            for s in &self.sub_attributes {
                s.validate(schema, depth + 1)?;
            }
        } else if !self.sub_attributes.is_empty() {
            return Err(StoreError::Config(format!(
                "schema {schema}: attribute {:?} of type {:?} cannot have subAttributes",
                self.name, self.kind
            )));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SchemaDef {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub attributes: Vec<AttributeDef>,
}

impl SchemaDef {
    pub fn attribute(&self, name: &str) -> Option<&AttributeDef> {
        self.attributes
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case(name))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SchemaExtensionRef {
    pub schema: String,
    pub required: bool,
}

#[derive(Debug, Clone)]
pub struct ResourceTypeDef {
    pub kind: ResourceKind,
    pub description: String,
    pub extensions: Vec<SchemaExtensionRef>,
}

/// Where an attribute lives: in the resource type's core schema or in an extension.
#[derive(Debug, Clone, Copy)]
pub struct AttrLocation<'a> {
    pub schema: &'a SchemaDef,
    pub is_core: bool,
    pub attr: &'a AttributeDef,
}

/// An extension schema loaded from configuration, and the resource type it extends.
#[derive(Debug, Clone, Deserialize)]
pub struct ExtensionFile {
    #[serde(rename = "resourceType")]
    pub resource_type: String,
    #[serde(default)]
    pub required: bool,
    pub schema: SchemaDef,
}

/// Every schema and resource type the service provider serves.
#[derive(Debug, Clone)]
pub struct SchemaRegistry {
    schemas: Vec<SchemaDef>,
    user: ResourceTypeDef,
    group: ResourceTypeDef,
}

impl SchemaRegistry {
    /// The built-in schemas: core User and Group, EnterpriseUser and the PACS cardholder extension.
    pub fn builtin() -> Self {
        let parse = |s: &str| -> SchemaDef {
            serde_json::from_str(s).expect("built-in schema JSON is valid")
        };
        let reg = SchemaRegistry {
            schemas: vec![
                parse(BUILTIN_USER),
                parse(BUILTIN_GROUP),
                parse(BUILTIN_ENTERPRISE),
                parse(BUILTIN_PACS),
            ],
            user: ResourceTypeDef {
                kind: ResourceKind::User,
                description: "User Account".into(),
                extensions: vec![
                    SchemaExtensionRef {
                        schema: ENTERPRISE_USER_SCHEMA.into(),
                        required: false,
                    },
                    SchemaExtensionRef {
                        schema: PACS_CARDHOLDER_SCHEMA.into(),
                        required: false,
                    },
                ],
            },
            group: ResourceTypeDef {
                kind: ResourceKind::Group,
                description: "Group".into(),
                extensions: vec![],
            },
        };
        for s in &reg.schemas {
            for a in &s.attributes {
                a.validate(&s.id, 0).expect("built-in schema is valid");
            }
        }
        reg
    }

    /// Adds an extension schema from a JSON document shaped like [`ExtensionFile`].
    pub fn add_extension_json(&mut self, json: &str) -> Result<(), StoreError> {
        let ext: ExtensionFile = serde_json::from_str(json)
            .map_err(|e| StoreError::Config(format!("extension schema file: {e}")))?;
        let kind = ResourceKind::parse(&ext.resource_type).ok_or_else(|| {
            StoreError::Config(format!(
                "extension schema {}: resourceType must be \"User\" or \"Group\", not {:?}",
                ext.schema.id, ext.resource_type
            ))
        })?;
        if !ext.schema.id.to_ascii_lowercase().starts_with("urn:") {
            return Err(StoreError::Config(format!(
                "extension schema id {:?} must be a URN",
                ext.schema.id
            )));
        }
        if self.schema(&ext.schema.id).is_some() {
            return Err(StoreError::Config(format!(
                "extension schema {} is defined twice",
                ext.schema.id
            )));
        }
        let mut seen = std::collections::HashSet::new();
        for a in &ext.schema.attributes {
            a.validate(&ext.schema.id, 0)?;
            if !seen.insert(a.name.to_ascii_lowercase()) {
                return Err(StoreError::Config(format!(
                    "extension schema {}: attribute {:?} is defined twice",
                    ext.schema.id, a.name
                )));
            }
        }
        let rt = match kind {
            ResourceKind::User => &mut self.user,
            ResourceKind::Group => &mut self.group,
        };
        rt.extensions.push(SchemaExtensionRef {
            schema: ext.schema.id.clone(),
            required: ext.required,
        });
        self.schemas.push(ext.schema);
        Ok(())
    }

    /// Stops serving a built-in extension (configuration `scim.builtin_extensions`).
    pub fn remove_extension(&mut self, urn: &str) {
        self.user
            .extensions
            .retain(|e| !e.schema.eq_ignore_ascii_case(urn));
        self.group
            .extensions
            .retain(|e| !e.schema.eq_ignore_ascii_case(urn));
        self.schemas.retain(|s| !s.id.eq_ignore_ascii_case(urn));
    }

    pub fn schemas(&self) -> &[SchemaDef] {
        &self.schemas
    }

    pub fn schema(&self, urn: &str) -> Option<&SchemaDef> {
        self.schemas.iter().find(|s| s.id.eq_ignore_ascii_case(urn))
    }

    pub fn resource_type(&self, kind: ResourceKind) -> &ResourceTypeDef {
        match kind {
            ResourceKind::User => &self.user,
            ResourceKind::Group => &self.group,
        }
    }

    pub fn core(&self, kind: ResourceKind) -> &SchemaDef {
        self.schema(kind.core_schema())
            .expect("core schema registered")
    }

    /// The extension schemas of a resource type, in declaration order.
    pub fn extensions(&self, kind: ResourceKind) -> impl Iterator<Item = (&SchemaDef, bool)> {
        self.resource_type(kind)
            .extensions
            .iter()
            .filter_map(|e| self.schema(&e.schema).map(|s| (s, e.required)))
    }

    /// The extension schema of `kind` whose URN is `urn` (case-insensitive).
    pub fn extension(&self, kind: ResourceKind, urn: &str) -> Option<&SchemaDef> {
        self.extensions(kind)
            .map(|(s, _)| s)
            .find(|s| s.id.eq_ignore_ascii_case(urn))
    }

    /// Finds a top-level attribute by name: `urn` selects a schema; without it the core
    /// schema is searched first, then the extensions (RFC 7644 §3.10 lets clients omit the
    /// URN where the name is unambiguous).
    pub fn locate(
        &self,
        kind: ResourceKind,
        urn: Option<&str>,
        name: &str,
    ) -> Option<AttrLocation<'_>> {
        let core = self.core(kind);
        match urn {
            Some(urn) if urn.eq_ignore_ascii_case(&core.id) => {
                core.attribute(name).map(|attr| AttrLocation {
                    schema: core,
                    is_core: true,
                    attr,
                })
            }
            Some(urn) => {
                let s = self.extension(kind, urn)?;
                s.attribute(name).map(|attr| AttrLocation {
                    schema: s,
                    is_core: false,
                    attr,
                })
            }
            None => core
                .attribute(name)
                .map(|attr| AttrLocation {
                    schema: core,
                    is_core: true,
                    attr,
                })
                .or_else(|| {
                    self.extensions(kind).find_map(|(s, _)| {
                        s.attribute(name).map(|attr| AttrLocation {
                            schema: s,
                            is_core: false,
                            attr,
                        })
                    })
                }),
        }
    }

    /// Splits a URN-qualified attribute reference ("urn:…:User:name.givenName") into the
    /// schema URN it names and the rest, recognising only URNs this registry knows so that a
    /// dotted version such as "2.0" is never taken for a sub-attribute.
    pub fn split_urn<'p>(&self, kind: ResourceKind, path: &'p str) -> Option<(&str, &'p str)> {
        let lower = path.to_ascii_lowercase();
        let mut candidates: Vec<&SchemaDef> = vec![self.core(kind)];
        candidates.extend(self.extensions(kind).map(|(s, _)| s));
        candidates
            .into_iter()
            .filter(|s| {
                let id = s.id.to_ascii_lowercase();
                lower.starts_with(&id)
                    && (lower.len() == id.len() || lower.as_bytes()[id.len()] == b':')
            })
            .max_by_key(|s| s.id.len())
            .map(|s| {
                let rest = if path.len() > s.id.len() {
                    &path[s.id.len() + 1..]
                } else {
                    ""
                };
                (s.id.as_str(), rest)
            })
    }

    /// The `/Schemas` representation of one schema (RFC 7643 §7), with `meta`.
    pub fn schema_json(&self, s: &SchemaDef, base_url: &str) -> serde_json::Value {
        serde_json::json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
            "id": s.id,
            "name": s.name,
            "description": s.description,
            "attributes": s.attributes,
            "meta": {
                "resourceType": "Schema",
                "location": format!("{base_url}/Schemas/{}", s.id),
            }
        })
    }

    /// The `/ResourceTypes` representation of one resource type (RFC 7643 §6).
    pub fn resource_type_json(&self, kind: ResourceKind, base_url: &str) -> serde_json::Value {
        let rt = self.resource_type(kind);
        serde_json::json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
            "id": kind.as_str(),
            "name": kind.as_str(),
            "endpoint": kind.endpoint(),
            "description": rt.description,
            "schema": kind.core_schema(),
            "schemaExtensions": rt.extensions,
            "meta": {
                "resourceType": "ResourceType",
                "location": format!("{base_url}/ResourceTypes/{}", kind.as_str()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_schemas_fill_in_rfc_defaults() {
        let reg = SchemaRegistry::builtin();
        let user = reg.core(ResourceKind::User);
        let user_name = user.attribute("USERNAME").unwrap();
        assert_eq!(user_name.name, "userName");
        assert!(user_name.required);
        assert_eq!(user_name.uniqueness, Uniqueness::Server);
        assert!(!user_name.case_exact);
        let password = user.attribute("password").unwrap();
        assert_eq!(password.returned, Returned::Never);
        assert_eq!(password.mutability, Mutability::WriteOnly);
    }

    #[test]
    fn locate_resolves_extension_attributes_with_and_without_urn() {
        let reg = SchemaRegistry::builtin();
        let loc = reg
            .locate(
                ResourceKind::User,
                Some(ENTERPRISE_USER_SCHEMA),
                "employeenumber",
            )
            .unwrap();
        assert!(!loc.is_core);
        assert_eq!(loc.attr.name, "employeeNumber");
        let loc = reg.locate(ResourceKind::User, None, "costCenter").unwrap();
        assert_eq!(loc.schema.id, ENTERPRISE_USER_SCHEMA);
        assert!(
            reg.locate(ResourceKind::Group, None, "costCenter")
                .is_none()
        );
    }

    #[test]
    fn split_urn_keeps_version_dots_in_the_urn() {
        let reg = SchemaRegistry::builtin();
        let (urn, rest) = reg
            .split_urn(
                ResourceKind::User,
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value",
            )
            .unwrap();
        assert_eq!(urn, ENTERPRISE_USER_SCHEMA);
        assert_eq!(rest, "manager.value");
        let (urn, rest) = reg
            .split_urn(
                ResourceKind::User,
                "URN:IETF:PARAMS:SCIM:SCHEMAS:CORE:2.0:USER:userName",
            )
            .unwrap();
        assert_eq!(urn, USER_SCHEMA);
        assert_eq!(rest, "userName");
        assert!(
            reg.split_urn(ResourceKind::User, "urn:example:unknown:attr")
                .is_none()
        );
    }

    #[test]
    fn extension_files_are_validated() {
        let mut reg = SchemaRegistry::builtin();
        let bad = r#"{"resourceType":"User","schema":{"id":"urn:x:ext","attributes":[
            {"name":"a","type":"complex","subAttributes":[{"name":"b","type":"complex","subAttributes":[{"name":"c","type":"string"}]}]}]}}"#;
        let err = reg.add_extension_json(bad).unwrap_err().to_string();
        assert!(err.contains("forbids nesting"), "{err}");
        let good = r#"{"resourceType":"User","schema":{"id":"urn:x:ext","name":"X","attributes":[{"name":"affiliation","type":"string"}]}}"#;
        reg.add_extension_json(good).unwrap();
        assert_eq!(
            reg.locate(ResourceKind::User, Some("urn:X:EXT"), "Affiliation")
                .unwrap()
                .attr
                .name,
            "affiliation"
        );
    }
}
