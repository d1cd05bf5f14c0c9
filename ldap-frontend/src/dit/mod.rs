//! The directory information tree: where entries live and what they look like.
//!
//! ```text
//! ""                                   root DSE
//! cn=subschema                         subschema entry
//! <base>                               e.g. dc=example,dc=org
//!   ou=people   uid=<userName>         users (inetOrgPerson)
//!   ou=groups   cn=<displayName>       groups (groupOfNames)
//!   ou=services cn=<name>              LDAP service accounts (applicationProcess)
//! ```

mod dn;
mod entry;
pub mod mapping;
mod schema;
mod time;

pub use dn::{Dn, Rdn, escape_value};
pub use entry::*;
pub use mapping::{AttrMap, Mapping, ScimPath, Source, Syntax};
pub use schema::{SUBSCHEMA_OPERATIONAL, subschema_entry};
pub use time::{format_generalized, parse_generalized};

use ldap3_proto::LdapResultCode;

use crate::error::LdapError;

/// The three containers under the base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    People,
    Groups,
    Services,
}

impl Container {
    pub const ALL: [Container; 3] = [Container::People, Container::Groups, Container::Services];
    pub fn ou(self) -> &'static str {
        match self {
            Container::People => "people",
            Container::Groups => "groups",
            Container::Services => "services",
        }
    }
    pub fn rdn_attr(self) -> &'static str {
        match self {
            Container::People => "uid",
            _ => "cn",
        }
    }
}

/// What a DN names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    RootDse,
    Subschema,
    Base,
    Container(Container),
    /// An entry in a container, by its RDN value (userName, group or account name).
    Leaf(Container, String),
}

#[derive(Debug, Clone)]
pub struct Dit {
    pub base: Dn,
    base_str: String,
}

pub const SUBSCHEMA_DN: &str = "cn=subschema";

impl Dit {
    pub fn new(base_dn: &str) -> Result<Dit, LdapError> {
        let base =
            Dn::parse(base_dn).map_err(|e| LdapError::Config(format!("ldap.base_dn: {e}")))?;
        if base.is_root() {
            return Err(LdapError::Config("ldap.base_dn must not be empty".into()));
        }
        Ok(Dit {
            base_str: base.to_string(),
            base,
        })
    }

    pub fn base_dn(&self) -> &str {
        &self.base_str
    }

    pub fn container_dn(&self, c: Container) -> String {
        format!("ou={},{}", c.ou(), self.base_str)
    }

    pub fn leaf_dn(&self, c: Container, name: &str) -> String {
        format!(
            "{}={},ou={},{}",
            c.rdn_attr(),
            escape_value(name),
            c.ou(),
            self.base_str
        )
    }

    /// Locates `dn`; a DN naming nothing gives noSuchObject with the deepest existing
    /// ancestor as matchedDN.
    pub fn locate(&self, dn: &str) -> Result<Target, LdapError> {
        let d = Dn::parse(dn).map_err(|e| LdapError::new(LdapResultCode::InvalidDNSyntax, e))?;
        if d.is_root() {
            return Ok(Target::RootDse);
        }
        if d.norm() == SUBSCHEMA_DN {
            return Ok(Target::Subschema);
        }
        let missing = |matched: String| {
            Err(LdapError::no_such_object(
                format!("no entry {dn:?} in this directory"),
                matched,
            ))
        };
        if !d.is_within(&self.base) {
            return missing(String::new());
        }
        let depth = d.0.len() - self.base.0.len();
        if depth == 0 {
            return Ok(Target::Base);
        }
        let ou_rdn = &d.0[depth - 1];
        let container = Container::ALL
            .into_iter()
            .find(|c| ou_rdn.attr == "ou" && ou_rdn.value.eq_ignore_ascii_case(c.ou()));
        let Some(container) = container else {
            return missing(self.base_str.clone());
        };
        match depth {
            1 => Ok(Target::Container(container)),
            2 if d.0[0].attr == container.rdn_attr() && !d.0[0].value.is_empty() => {
                Ok(Target::Leaf(container, d.0[0].value.clone()))
            }
            _ => missing(self.container_dn(container)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_entries() {
        let dit = Dit::new("dc=Example,dc=org").unwrap();
        assert_eq!(dit.locate("").unwrap(), Target::RootDse);
        assert_eq!(dit.locate("CN=Subschema").unwrap(), Target::Subschema);
        assert_eq!(dit.locate("dc=example, dc=ORG").unwrap(), Target::Base);
        assert_eq!(
            dit.locate("ou=People,dc=example,dc=org").unwrap(),
            Target::Container(Container::People)
        );
        assert_eq!(
            dit.locate("uid=Bjensen,ou=people,dc=example,dc=org")
                .unwrap(),
            Target::Leaf(Container::People, "Bjensen".into())
        );
        let e = dit.locate("cn=x,ou=nowhere,dc=example,dc=org").unwrap_err();
        assert!(
            matches!(e, LdapError::Result { code: LdapResultCode::NoSuchObject, ref matched, .. } if matched == "dc=Example,dc=org")
        );
        let e = dit.locate("uid=x,ou=groups,dc=example,dc=org").unwrap_err();
        assert!(matches!(
            e,
            LdapError::Result {
                code: LdapResultCode::NoSuchObject,
                ..
            }
        ));
        let e = dit.locate("not a dn").unwrap_err();
        assert!(matches!(
            e,
            LdapError::Result {
                code: LdapResultCode::InvalidDNSyntax,
                ..
            }
        ));
        assert_eq!(
            dit.leaf_dn(Container::Groups, "A, B"),
            "cn=A\\, B,ou=groups,dc=Example,dc=org"
        );
    }
}
