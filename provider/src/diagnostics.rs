//! The one place where errors become Terraform diagnostics.

use kvmhost::libvirt::Error as HostError;
use tfplugin::{AttributePath, Diagnostic, Diagnostics};

/// The one place a host error becomes a diagnostic saying `summary`, with
/// the error's own text (what is wrong and what to do) as its detail.
///
/// It is pinned to one attribute, chosen by one rule:
/// 1. the caller's `attr` when it is the field the error names, located
///    more precisely (`disk.0` for `disk`, `xml.0.xslt` for `xml.xslt`);
/// 2. else the field the error names (invalid input knows where it came
///    from better than the call that passed it on);
/// 3. else the caller's `attr` (the attribute the failed call acted on);
/// 4. else none: the diagnostic is about the whole resource.
pub fn to_diag(summary: &str, e: &HostError, attr: Option<&str>) -> Diagnostic {
    let own = match e {
        HostError::Invalid { field, .. } => Some(attribute_of(field)),
        _ => None,
    };
    let at = match (own, attr) {
        (Some(f), Some(a)) if without_indexes(a) == f => Some(a),
        (Some(f), _) => Some(f),
        (None, a) => a,
    };
    let detail = match (e, own) {
        (HostError::Invalid { message, .. }, Some(f)) => format!("invalid {f}: {message}"),
        _ => e.to_string(),
    };
    match at {
        Some(a) => Diagnostic::new(summary.to_string(), detail, path_of(a)),
        None => Diagnostic::root(summary.to_string(), detail),
    }
}

/// kvmhost names the fields of its own types; where the provider's
/// attribute for one is called otherwise, this names the attribute.
fn attribute_of(field: &'static str) -> &'static str {
    match field {
        "interface.mac" => "network_interface.mac",
        "xslt" => "xml.xslt",
        "base_volume_key" => "base_volume_id",
        "extra_base_volume_keys" => "disk.volume_id",
        other => other,
    }
}

/// "disk.0.volume_id" -> "disk.volume_id": an attribute path as the
/// schema names it, without the list positions.
fn without_indexes(path: &str) -> String {
    path.split('.')
        .filter(|p| p.parse::<i64>().is_err())
        .collect::<Vec<_>>()
        .join(".")
}

/// "a.b" -> attribute path a, b; "disk.0.volume_id" -> disk, [0], volume_id.
pub fn path_of(field: &str) -> AttributePath {
    let mut parts = field.split('.');
    let mut p = AttributePath::new(parts.next().unwrap_or_default().to_string());
    for part in parts {
        p = match part.parse::<i64>() {
            Ok(i) => p.index(i),
            Err(_) => p.attribute(part.to_string()),
        };
    }
    p
}

/// Adds a diagnostic and returns `None`, for `?`-style early exits.
pub fn fail<T>(diags: &mut Diagnostics, d: Diagnostic) -> Option<T> {
    diags.add_error(d);
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(field: &'static str) -> HostError {
        HostError::Invalid {
            field,
            message: "must be at least 1".into(),
        }
    }

    // Diagnostics carry a backtrace after the message when RUST_BACKTRACE
    // is set, as it may be in a test run.
    fn first_line(d: &Diagnostic) -> &str {
        d.detail.lines().next().unwrap_or_default()
    }

    fn at(d: &Diagnostic) -> String {
        d.attribute.to_string()
    }

    #[test]
    fn invalid_input_lands_on_its_own_field_over_the_callers() {
        let d = to_diag("Cannot create the domain", &invalid("memory"), Some("name"));
        assert_eq!(at(&d), path_of("memory").to_string());
        assert_eq!(d.summary, "Cannot create the domain");
        assert_eq!(first_line(&d), "invalid memory: must be at least 1");
    }

    #[test]
    fn kvmhost_fields_are_shown_as_the_provider_attributes_they_come_from() {
        for (field, attr) in [
            ("interface.mac", "network_interface.mac"),
            ("xslt", "xml.xslt"),
            ("base_volume_key", "base_volume_id"),
            ("extra_base_volume_keys", "disk.volume_id"),
        ] {
            let d = to_diag("Cannot create the template", &invalid(field), None);
            assert_eq!(at(&d), path_of(attr).to_string());
            assert_eq!(
                first_line(&d),
                format!("invalid {attr}: must be at least 1")
            );
        }
        let d = to_diag(
            "Cannot create the domain",
            &invalid("xslt"),
            Some("xml.0.xslt"),
        );
        assert_eq!(at(&d), path_of("xml.0.xslt").to_string());
    }

    #[test]
    fn the_callers_indexed_path_to_the_same_field_wins() {
        let d = to_diag(
            "Cannot create the domain",
            &invalid("xml.xslt"),
            Some("xml.0.xslt"),
        );
        assert_eq!(at(&d), path_of("xml.0.xslt").to_string());
        let d = to_diag("Cannot create the domain", &invalid("disk"), Some("disk.2"));
        assert_eq!(at(&d), path_of("disk.2").to_string());
    }

    #[test]
    fn other_errors_land_on_the_callers_attribute_or_the_resource() {
        let e = HostError::NotFound {
            kind: "storage pool",
            name: "nosuchpool".into(),
        };
        let d = to_diag("Cannot create the volume", &e, Some("pool"));
        assert_eq!(at(&d), path_of("pool").to_string());
        assert_eq!(
            first_line(&d),
            "storage pool 'nosuchpool' does not exist on the host"
        );
        let d = to_diag("Cannot read the volume", &e, None);
        assert_eq!(at(&d), AttributePath::root().to_string());
        let d = to_diag("Cannot read the volume", &invalid("size"), None);
        assert_eq!(at(&d), path_of("size").to_string());
    }
}
