//! A small SQL text builder: statements are written once with `?` placeholders and bound
//! values, and rendered for the connected backend (`$n` for PostgreSQL).

use sea_orm::{DbBackend, Statement, Value};

#[derive(Debug, Default, Clone)]
pub(crate) struct Sql {
    pub text: String,
    pub params: Vec<Value>,
}

impl Sql {
    pub fn new(text: &str) -> Self {
        Sql {
            text: text.to_string(),
            params: Vec::new(),
        }
    }

    pub fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Appends one placeholder bound to `v`.
    pub fn bind(&mut self, v: impl Into<Value>) -> &mut Self {
        self.text.push('?');
        self.params.push(v.into());
        self
    }

    /// Appends `(?, ?, …)` for a list of values.
    pub fn bind_list<V: Into<Value> + Clone>(&mut self, vs: &[V]) -> &mut Self {
        self.text.push('(');
        for (i, v) in vs.iter().enumerate() {
            if i > 0 {
                self.text.push_str(", ");
            }
            self.bind(v.clone());
        }
        self.text.push(')');
        self
    }

    pub fn append(&mut self, other: Sql) -> &mut Self {
        self.text.push_str(&other.text);
        self.params.extend(other.params);
        self
    }

    pub fn build(self, backend: DbBackend) -> Statement {
        let text = match backend {
            DbBackend::Postgres => {
                let mut out = String::with_capacity(self.text.len() + 16);
                let mut n = 0;
                for c in self.text.chars() {
                    if c == '?' {
                        n += 1;
                        out.push('$');
                        out.push_str(&n.to_string());
                    } else {
                        out.push(c);
                    }
                }
                out
            }
            _ => self.text,
        };
        Statement::from_sql_and_values(backend, text, self.params)
    }
}

/// Shorthand for a statement with bound values.
pub(crate) fn stmt(text: &str, params: Vec<Value>) -> Sql {
    Sql {
        text: text.to_string(),
        params,
    }
}
