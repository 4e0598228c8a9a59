//! Errors and warnings for Terraform to show, each optionally pinned to
//! the attribute it is about (`disk[0].volume_id`).

use std::borrow::Cow;
use std::fmt;

use crate::proto;

/// One step of an [`AttributePath`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum AttributePathStep {
    /// An attribute or block by name.
    Attribute(Cow<'static, str>),
    /// A map element.
    Key(Cow<'static, str>),
    /// A list element.
    Index(i64),
}

/// Where in a value a diagnostic points; empty means the whole thing.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct AttributePath {
    /// From the root down.
    pub steps: Vec<AttributePathStep>,
}

impl AttributePath {
    /// The top-level attribute `name`.
    pub fn new(name: impl Into<Cow<'static, str>>) -> Self {
        Self::root().attribute(name)
    }
    /// The whole value.
    pub fn root() -> Self {
        Self::default()
    }
    /// Then attribute `name`.
    pub fn attribute(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.steps.push(AttributePathStep::Attribute(name.into()));
        self
    }
    /// Then map key `key`.
    pub fn key(mut self, key: impl Into<Cow<'static, str>>) -> Self {
        self.steps.push(AttributePathStep::Key(key.into()));
        self
    }
    /// Then list index `i`.
    pub fn index(mut self, i: impl Into<i64>) -> Self {
        self.steps.push(AttributePathStep::Index(i.into()));
        self
    }

    pub(crate) fn into_proto(self) -> proto::AttributePath {
        proto::AttributePath {
            steps: self
                .steps
                .into_iter()
                .map(|s| proto::Step {
                    selector: Some(match s {
                        AttributePathStep::Attribute(n) => proto::Selector::AttributeName(n.into()),
                        AttributePathStep::Key(k) => proto::Selector::ElementKeyString(k.into()),
                        AttributePathStep::Index(i) => proto::Selector::ElementKeyInt(i),
                    }),
                })
                .collect(),
        }
    }
}

impl fmt::Display for AttributePath {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        for (i, s) in self.steps.iter().enumerate() {
            match s {
                AttributePathStep::Attribute(n) if i == 0 => write!(f, "{n}")?,
                AttributePathStep::Attribute(n) => write!(f, ".{n}")?,
                AttributePathStep::Key(k) => write!(f, "[{k:?}]")?,
                AttributePathStep::Index(x) => write!(f, "[{x}]")?,
            }
        }
        Ok(())
    }
}

/// One error or warning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// One line.
    pub summary: Cow<'static, str>,
    /// What happened and what to do.
    pub detail: Cow<'static, str>,
    /// The attribute it is about.
    pub attribute: AttributePath,
}

impl Diagnostic {
    /// A diagnostic about `attribute`.
    pub fn new(
        summary: impl Into<Cow<'static, str>>,
        detail: impl Into<Cow<'static, str>>,
        attribute: AttributePath,
    ) -> Self {
        Self {
            summary: summary.into(),
            detail: detail.into(),
            attribute,
        }
    }
    /// About the whole resource.
    pub fn root(
        summary: impl Into<Cow<'static, str>>,
        detail: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self::new(summary, detail, AttributePath::root())
    }
    /// A summary alone, about `attribute`.
    pub fn short(summary: impl Into<Cow<'static, str>>, attribute: AttributePath) -> Self {
        Self::new(summary, "", attribute)
    }
    /// A summary alone, about the whole resource.
    pub fn root_short(summary: impl Into<Cow<'static, str>>) -> Self {
        Self::root(summary, "")
    }

    fn into_proto(self, severity: i32) -> proto::Diagnostic {
        proto::Diagnostic {
            severity,
            summary: self.summary.into(),
            detail: self.detail.into(),
            attribute: (!self.attribute.steps.is_empty()).then(|| self.attribute.into_proto()),
        }
    }
}

/// What one call produced: errors (the call failed) and warnings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diagnostics {
    /// Errors.
    pub errors: Vec<Diagnostic>,
    /// Warnings.
    pub warnings: Vec<Diagnostic>,
}

impl Diagnostics {
    /// Adds an error.
    pub fn add_error(&mut self, d: Diagnostic) {
        self.errors.push(d);
    }
    /// Adds a warning.
    pub fn add_warning(&mut self, d: Diagnostic) {
        self.warnings.push(d);
    }
    /// Adds an error about `attribute`.
    pub fn error(
        &mut self,
        summary: impl Into<Cow<'static, str>>,
        detail: impl Into<Cow<'static, str>>,
        attribute: AttributePath,
    ) {
        self.add_error(Diagnostic::new(summary, detail, attribute));
    }
    /// Adds an error about the whole resource.
    pub fn root_error(
        &mut self,
        summary: impl Into<Cow<'static, str>>,
        detail: impl Into<Cow<'static, str>>,
    ) {
        self.add_error(Diagnostic::root(summary, detail));
    }
    /// Adds an error with a summary alone.
    pub fn error_short(&mut self, summary: impl Into<Cow<'static, str>>, attribute: AttributePath) {
        self.add_error(Diagnostic::short(summary, attribute));
    }
    /// Adds an error with a summary alone, about the whole resource.
    pub fn root_error_short(&mut self, summary: impl Into<Cow<'static, str>>) {
        self.add_error(Diagnostic::root_short(summary));
    }
    /// Adds a warning about `attribute`.
    pub fn warning(
        &mut self,
        summary: impl Into<Cow<'static, str>>,
        detail: impl Into<Cow<'static, str>>,
        attribute: AttributePath,
    ) {
        self.add_warning(Diagnostic::new(summary, detail, attribute));
    }
    /// Adds a warning about the whole resource.
    pub fn root_warning(
        &mut self,
        summary: impl Into<Cow<'static, str>>,
        detail: impl Into<Cow<'static, str>>,
    ) {
        self.add_warning(Diagnostic::root(summary, detail));
    }
    /// Moves `other`'s diagnostics into these.
    pub fn add_diagnostics(&mut self, mut other: Diagnostics) {
        self.errors.append(&mut other.errors);
        self.warnings.append(&mut other.warnings);
    }

    /// A call that returned nothing must say why: when it added no error,
    /// say that it failed without one rather than let Terraform go on.
    pub(crate) fn fail_unexplained(&mut self) {
        if self.errors.is_empty() {
            self.root_error_short("Internal error");
        }
    }

    pub(crate) fn into_proto(self) -> Vec<proto::Diagnostic> {
        let errors = self
            .errors
            .into_iter()
            .map(|d| d.into_proto(proto::severity::ERROR));
        let warnings = self
            .warnings
            .into_iter()
            .map(|d| d.into_proto(proto::severity::WARNING));
        errors.chain(warnings).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_print_like_terraform_writes_them() {
        let p = AttributePath::new("disk")
            .index(0)
            .attribute("volume_id")
            .key("k");
        assert_eq!(p.to_string(), "disk[0].volume_id[\"k\"]");
    }

    #[test]
    fn a_root_diagnostic_carries_no_path() {
        let mut d = Diagnostics::default();
        d.root_error("a", "b");
        d.warning("w", "", AttributePath::new("x"));
        let p = d.into_proto();
        assert_eq!(p[0].severity, proto::severity::ERROR);
        assert!(p[0].attribute.is_none());
        assert_eq!(p[1].severity, proto::severity::WARNING);
        assert_eq!(
            p[1].attribute.as_ref().unwrap().steps[0].selector,
            Some(proto::Selector::AttributeName("x".into()))
        );
    }
}
