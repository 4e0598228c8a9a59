//! What every resource's typed state shares: a state that can be null,
//! known strings, and reading stored state of an older schema version.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tfplugin::Diagnostics;

/// A state that can be null: a resource read back as gone.
#[derive(Debug, Clone, Default)]
pub struct Maybe<T>(pub Option<T>);

impl<T: Serialize> Serialize for Maybe<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Some(v) => v.serialize(s),
            None => s.serialize_none(),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Maybe<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Option::<T>::deserialize(d).map(Maybe)
    }
}

/// The known string, or `None` for null/unknown.
pub fn known(v: &tfplugin::value::Value<String>) -> Option<&str> {
    v.as_ref_option().map(String::as_str)
}

/// The JSON of a resource's stored state at schema version 0, the only
/// older version there is; any other version is an error naming the
/// resource type and the versions this provider knows (0 and `current`).
pub fn state_v0_json(
    diags: &mut Diagnostics,
    type_name: &str,
    current: i64,
    version: i64,
    prior_state: tfplugin::value::RawValue,
) -> Option<serde_json::Value> {
    if version != 0 {
        diags.root_error(
            format!("Cannot upgrade the stored {type_name} state"),
            format!(
                "schema version {version} is unknown to this provider (it knows 0 and {current})"
            ),
        );
        return None;
    }
    prior_state.json(diags)
}

/// Reads upgraded state JSON as the resource's typed state.
pub fn state_from_json<T: serde::de::DeserializeOwned>(
    diags: &mut Diagnostics,
    upgraded: serde_json::Value,
) -> Option<T> {
    let bytes = serde_json::to_vec(&upgraded).ok()?;
    tfplugin::value::RawValue::Json(bytes).deserialize(diags)
}
