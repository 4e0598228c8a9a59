//! The secrets a template holds, masked wherever the plugin writes text:
//! the Ui, provisioners' output it forwards, and the errors it returns.
//! Packer's own builders register the same values with Packer's log filter.

use serde_json::{Map, Value as Json};

/// What replaces a secret, as in Packer's own output.
pub const MASK: &str = "<sensitive>";

/// Options whose value is always a secret (or may embed one, as
/// `echo 'pw' | sudo -S shutdown` does).
const SECRET_OPTIONS: &[&str] = &["ssh_password", "winrm_password", "shutdown_command"];

/// The values to mask, longest first so a secret inside another is
/// masked as part of the longer one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Secrets(Vec<String>);

impl Secrets {
    /// The secrets of a `Prepare` call: the secret options of `user`, and
    /// the values of the user variables Packer lists as sensitive in
    /// `packer_sensitive_variables`.
    pub fn from_prepare(user: &Map<String, Json>, packer: &Map<String, Json>) -> Self {
        let mut values: Vec<String> = SECRET_OPTIONS
            .iter()
            .filter_map(|o| user.get(*o).and_then(Json::as_str))
            .map(str::to_string)
            .collect();
        let vars = packer
            .get("packer_user_variables")
            .and_then(Json::as_object);
        let sensitive = packer
            .get("packer_sensitive_variables")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .filter_map(Json::as_str);
        for name in sensitive {
            if let Some(v) = vars.and_then(|vars| vars.get(name)).and_then(Json::as_str) {
                values.push(v.to_string());
            }
        }
        Self::new(values)
    }

    /// Secrets from a list of values; empty ones are dropped.
    pub fn new(values: impl IntoIterator<Item = String>) -> Self {
        let mut v: Vec<String> = values.into_iter().filter(|s| !s.is_empty()).collect();
        v.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        v.dedup();
        Secrets(v)
    }

    /// These secrets and `more`.
    pub fn with(self, more: impl IntoIterator<Item = String>) -> Self {
        Self::new(self.0.into_iter().chain(more))
    }

    /// `text` with every secret replaced by [`MASK`].
    pub fn mask(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.0 {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), MASK);
            }
        }
        out
    }

    /// Masks every string inside an RPC value (a provisioner's Ui call).
    pub fn mask_value(&self, v: rmpv::Value) -> rmpv::Value {
        use rmpv::Value;
        if self.0.is_empty() {
            return v;
        }
        match v {
            Value::String(s) => match s.as_str() {
                Some(t) => Value::from(self.mask(t)),
                None => Value::String(s),
            },
            Value::Array(a) => Value::Array(a.into_iter().map(|x| self.mask_value(x)).collect()),
            Value::Map(m) => Value::Map(
                m.into_iter()
                    .map(|(k, x)| (k, self.mask_value(x)))
                    .collect(),
            ),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn passwords_shutdown_commands_and_sensitive_variables_are_masked() {
        let user = json!({
            "ssh_password": "hunter2",
            "winrm_password": "W1nPass!",
            "shutdown_command": "echo 'pw-in-cmd' | sudo -S poweroff",
            "vm_name": "plain",
        });
        let packer = json!({
            "packer_user_variables": {"token": "tok-123", "name": "visible"},
            "packer_sensitive_variables": ["token"],
        });
        let s = Secrets::from_prepare(user.as_object().unwrap(), packer.as_object().unwrap());
        let text = "login hunter2, W1nPass!, run echo 'pw-in-cmd' | sudo -S poweroff, tok-123 visible plain";
        assert_eq!(
            s.mask(text),
            "login <sensitive>, <sensitive>, run <sensitive>, <sensitive> visible plain"
        );
        let v = s.mask_value(rmpv::Value::Array(vec![rmpv::Value::from("a tok-123")]));
        assert_eq!(
            v,
            rmpv::Value::Array(vec![rmpv::Value::from("a <sensitive>")])
        );
    }
}
