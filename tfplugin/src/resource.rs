//! What a provider implements: the provider block, resources and data
//! sources, each with a typed state. Every method adds what went wrong to
//! `diags` and returns `None` when it cannot go on.

use std::collections::HashMap;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::diagnostics::{AttributePath, Diagnostics};
use crate::schema::Schema;
use crate::value::RawValue;

/// A managed resource.
#[async_trait]
pub trait Resource: Send + Sync {
    /// Its state (and configuration, and plan): a serde struct of `Value`s.
    type State<'a>: Serialize + DeserializeOwned + Send;
    /// What the provider keeps beside the state, hidden from users.
    type PrivateState<'a>: Serialize + DeserializeOwned + Send;
    /// The `provider_meta` block.
    type ProviderMetaState<'a>: Serialize + DeserializeOwned + Send;

    /// The schema; raise its version when stored state must be upgraded.
    fn schema(&self, diags: &mut Diagnostics) -> Option<Schema>;

    /// Checks a configuration (values may be unknown).
    async fn validate<'a>(&self, diags: &mut Diagnostics, config: Self::State<'a>) -> Option<()> {
        let _ = (diags, config);
        Some(())
    }

    /// Reads the resource back; a null state means it is gone.
    async fn read<'a>(
        &self,
        diags: &mut Diagnostics,
        state: Self::State<'a>,
        private_state: Self::PrivateState<'a>,
        provider_meta_state: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)>;

    /// Plans a new resource.
    async fn plan_create<'a>(
        &self,
        diags: &mut Diagnostics,
        proposed_state: Self::State<'a>,
        config_state: Self::State<'a>,
        provider_meta_state: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)>;

    /// Plans a change; the paths returned force a replacement when they
    /// differ from the prior state.
    async fn plan_update<'a>(
        &self,
        diags: &mut Diagnostics,
        prior_state: Self::State<'a>,
        proposed_state: Self::State<'a>,
        config_state: Self::State<'a>,
        prior_private_state: Self::PrivateState<'a>,
        provider_meta_state: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>, Vec<AttributePath>)>;

    /// Plans a destroy. By default the destroy goes ahead as planned,
    /// keeping the private state; a resource that must check or refuse
    /// something first overrides it.
    async fn plan_destroy<'a>(
        &self,
        diags: &mut Diagnostics,
        prior_state: Self::State<'a>,
        prior_private_state: Self::PrivateState<'a>,
        provider_meta_state: Self::ProviderMetaState<'a>,
    ) -> Option<Self::PrivateState<'a>> {
        let _ = (diags, prior_state, provider_meta_state);
        Some(prior_private_state)
    }

    /// Creates it.
    async fn create<'a>(
        &self,
        diags: &mut Diagnostics,
        planned_state: Self::State<'a>,
        config_state: Self::State<'a>,
        planned_private_state: Self::PrivateState<'a>,
        provider_meta_state: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)>;

    /// Changes it in place.
    async fn update<'a>(
        &self,
        diags: &mut Diagnostics,
        prior_state: Self::State<'a>,
        planned_state: Self::State<'a>,
        config_state: Self::State<'a>,
        planned_private_state: Self::PrivateState<'a>,
        provider_meta_state: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)>;

    /// Destroys it.
    async fn destroy<'a>(
        &self,
        diags: &mut Diagnostics,
        prior_state: Self::State<'a>,
        planned_private_state: Self::PrivateState<'a>,
        provider_meta_state: Self::ProviderMetaState<'a>,
    ) -> Option<()>;

    /// `terraform import`: the state of what `id` names.
    async fn import<'a>(
        &self,
        diags: &mut Diagnostics,
        id: String,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let _ = id;
        diags.root_error_short("Import is not supported");
        None
    }

    /// Turns state stored under schema `version` (older than the current
    /// one) into the current state. `prior_state` is the stored JSON; it may
    /// hold attributes the current schema does not have.
    async fn upgrade<'a>(
        &self,
        diags: &mut Diagnostics,
        version: i64,
        prior_state: RawValue,
    ) -> Option<Self::State<'a>> {
        let _ = prior_state;
        diags.root_error(
            "Cannot upgrade the stored state",
            format!("this provider cannot read state of schema version {version}"),
        );
        None
    }
}

/// A data source.
#[async_trait]
pub trait DataSource: Send + Sync {
    /// Its configuration and result.
    type State<'a>: Serialize + DeserializeOwned + Send;
    /// The `provider_meta` block.
    type ProviderMetaState<'a>: Serialize + DeserializeOwned + Send;

    /// The schema.
    fn schema(&self, diags: &mut Diagnostics) -> Option<Schema>;

    /// Checks a configuration.
    async fn validate<'a>(&self, diags: &mut Diagnostics, config: Self::State<'a>) -> Option<()> {
        let _ = (diags, config);
        Some(())
    }

    /// Reads it.
    async fn read<'a>(
        &self,
        diags: &mut Diagnostics,
        config: Self::State<'a>,
        provider_meta_state: Self::ProviderMetaState<'a>,
    ) -> Option<Self::State<'a>>;
}

/// The provider block and what the provider serves.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// The provider block.
    type Config<'a>: Serialize + DeserializeOwned + Send;
    /// The `provider_meta` block.
    type MetaState<'a>: Serialize + DeserializeOwned + Send;

    /// The provider block's schema.
    fn schema(&self, diags: &mut Diagnostics) -> Option<Schema>;

    /// Checks the provider block.
    async fn validate<'a>(&self, diags: &mut Diagnostics, config: Self::Config<'a>) -> Option<()> {
        let _ = (diags, config);
        Some(())
    }

    /// Takes the provider block before any resource is planned or applied.
    async fn configure<'a>(
        &self,
        diags: &mut Diagnostics,
        terraform_version: String,
        config: Self::Config<'a>,
    ) -> Option<()>;

    /// The `provider_meta` schema, if any.
    fn meta_schema(&self, diags: &mut Diagnostics) -> Option<Schema> {
        let _ = diags;
        None
    }

    /// Resources by type name without the provider prefix.
    fn get_resources(
        &self,
        diags: &mut Diagnostics,
    ) -> Option<HashMap<String, Box<dyn DynamicResource>>>;

    /// Data sources by type name without the provider prefix.
    fn get_data_sources(
        &self,
        diags: &mut Diagnostics,
    ) -> Option<HashMap<String, Box<dyn DynamicDataSource>>>;
}

/// A [`Resource`] behind raw values, as the server calls it.
#[async_trait]
pub trait DynamicResource: Send + Sync {
    /// See [`Resource::schema`].
    fn schema(&self, diags: &mut Diagnostics) -> Option<Schema>;
    /// See [`Resource::validate`].
    async fn validate(&self, diags: &mut Diagnostics, config: RawValue) -> Option<()>;
    /// See [`Resource::read`].
    async fn read(
        &self,
        diags: &mut Diagnostics,
        state: RawValue,
        private: Vec<u8>,
        meta: RawValue,
    ) -> Option<(RawValue, Vec<u8>)>;
    /// See [`Resource::plan_create`].
    async fn plan_create(
        &self,
        diags: &mut Diagnostics,
        proposed: RawValue,
        config: RawValue,
        meta: RawValue,
    ) -> Option<(RawValue, Vec<u8>)>;
    /// See [`Resource::plan_update`].
    async fn plan_update(
        &self,
        diags: &mut Diagnostics,
        prior: RawValue,
        proposed: RawValue,
        config: RawValue,
        private: Vec<u8>,
        meta: RawValue,
    ) -> Option<(RawValue, Vec<u8>, Vec<AttributePath>)>;
    /// See [`Resource::plan_destroy`].
    async fn plan_destroy(
        &self,
        diags: &mut Diagnostics,
        prior: RawValue,
        private: Vec<u8>,
        meta: RawValue,
    ) -> Option<Vec<u8>>;
    /// See [`Resource::create`].
    async fn create(
        &self,
        diags: &mut Diagnostics,
        planned: RawValue,
        config: RawValue,
        private: Vec<u8>,
        meta: RawValue,
    ) -> Option<(RawValue, Vec<u8>)>;
    /// See [`Resource::update`].
    async fn update(
        &self,
        diags: &mut Diagnostics,
        prior: RawValue,
        planned: RawValue,
        config: RawValue,
        private: Vec<u8>,
        meta: RawValue,
    ) -> Option<(RawValue, Vec<u8>)>;
    /// See [`Resource::destroy`].
    async fn destroy(
        &self,
        diags: &mut Diagnostics,
        prior: RawValue,
        private: Vec<u8>,
        meta: RawValue,
    ) -> Option<()>;
    /// See [`Resource::import`].
    async fn import(&self, diags: &mut Diagnostics, id: String) -> Option<(RawValue, Vec<u8>)>;
    /// Stored JSON state of schema `version` to the current state: older
    /// versions go through [`Resource::upgrade`]; the current one is read
    /// as the state type, which drops attributes the schema no longer has
    /// (state written by other providers) and fills missing ones with null.
    async fn upgrade(
        &self,
        diags: &mut Diagnostics,
        version: i64,
        current: i64,
        state: RawValue,
    ) -> Option<RawValue>;
}

/// Private state as this provider wrote it. Bytes it cannot read were
/// written by another provider (state moved with `replace-provider`, e.g.
/// dmacvicar/libvirt's JSON): they mean nothing to us and read as null.
fn private_state<T: DeserializeOwned>(diags: &mut Diagnostics, b: Vec<u8>) -> Option<T> {
    let mut ignored = Diagnostics::default();
    RawValue::MessagePack(b)
        .deserialize(&mut ignored)
        .or_else(|| RawValue::default().deserialize(diags))
}

fn encode_private<T: Serialize>(diags: &mut Diagnostics, v: &T) -> Option<Vec<u8>> {
    crate::value::encode(diags, v)
}

/// A typed state and private state as the server sends them.
fn encode_states<S: Serialize, P: Serialize>(
    diags: &mut Diagnostics,
    (state, private): (S, P),
) -> Option<(RawValue, Vec<u8>)> {
    Some((
        RawValue::serialize(diags, &state)?,
        encode_private(diags, &private)?,
    ))
}

#[async_trait]
impl<R: Resource> DynamicResource for R {
    fn schema(&self, diags: &mut Diagnostics) -> Option<Schema> {
        Resource::schema(self, diags)
    }

    async fn validate(&self, diags: &mut Diagnostics, config: RawValue) -> Option<()> {
        let config = config.deserialize(diags)?;
        Resource::validate(self, diags, config).await
    }

    async fn read(
        &self,
        diags: &mut Diagnostics,
        state: RawValue,
        private: Vec<u8>,
        meta: RawValue,
    ) -> Option<(RawValue, Vec<u8>)> {
        let state = state.deserialize(diags)?;
        let private = private_state(diags, private)?;
        let meta = meta.deserialize(diags)?;
        let states = Resource::read(self, diags, state, private, meta).await?;
        encode_states(diags, states)
    }

    async fn plan_create(
        &self,
        diags: &mut Diagnostics,
        proposed: RawValue,
        config: RawValue,
        meta: RawValue,
    ) -> Option<(RawValue, Vec<u8>)> {
        let proposed = proposed.deserialize(diags)?;
        let config = config.deserialize(diags)?;
        let meta = meta.deserialize(diags)?;
        let states = Resource::plan_create(self, diags, proposed, config, meta).await?;
        encode_states(diags, states)
    }

    async fn plan_update(
        &self,
        diags: &mut Diagnostics,
        prior: RawValue,
        proposed: RawValue,
        config: RawValue,
        private: Vec<u8>,
        meta: RawValue,
    ) -> Option<(RawValue, Vec<u8>, Vec<AttributePath>)> {
        let prior = prior.deserialize(diags)?;
        let proposed = proposed.deserialize(diags)?;
        let config = config.deserialize(diags)?;
        let private = private_state(diags, private)?;
        let meta = meta.deserialize(diags)?;
        let (s, p, replace) =
            Resource::plan_update(self, diags, prior, proposed, config, private, meta).await?;
        Some((
            RawValue::serialize(diags, &s)?,
            encode_private(diags, &p)?,
            replace,
        ))
    }

    async fn plan_destroy(
        &self,
        diags: &mut Diagnostics,
        prior: RawValue,
        private: Vec<u8>,
        meta: RawValue,
    ) -> Option<Vec<u8>> {
        let prior = prior.deserialize(diags)?;
        let private = private_state(diags, private)?;
        let meta = meta.deserialize(diags)?;
        let p = Resource::plan_destroy(self, diags, prior, private, meta).await?;
        encode_private(diags, &p)
    }

    async fn create(
        &self,
        diags: &mut Diagnostics,
        planned: RawValue,
        config: RawValue,
        private: Vec<u8>,
        meta: RawValue,
    ) -> Option<(RawValue, Vec<u8>)> {
        let planned = planned.deserialize(diags)?;
        let config = config.deserialize(diags)?;
        let private = private_state(diags, private)?;
        let meta = meta.deserialize(diags)?;
        let states = Resource::create(self, diags, planned, config, private, meta).await?;
        encode_states(diags, states)
    }

    async fn update(
        &self,
        diags: &mut Diagnostics,
        prior: RawValue,
        planned: RawValue,
        config: RawValue,
        private: Vec<u8>,
        meta: RawValue,
    ) -> Option<(RawValue, Vec<u8>)> {
        let prior = prior.deserialize(diags)?;
        let planned = planned.deserialize(diags)?;
        let config = config.deserialize(diags)?;
        let private = private_state(diags, private)?;
        let meta = meta.deserialize(diags)?;
        let states = Resource::update(self, diags, prior, planned, config, private, meta).await?;
        encode_states(diags, states)
    }

    async fn destroy(
        &self,
        diags: &mut Diagnostics,
        prior: RawValue,
        private: Vec<u8>,
        meta: RawValue,
    ) -> Option<()> {
        let prior = prior.deserialize(diags)?;
        let private = private_state(diags, private)?;
        let meta = meta.deserialize(diags)?;
        Resource::destroy(self, diags, prior, private, meta).await
    }

    async fn import(&self, diags: &mut Diagnostics, id: String) -> Option<(RawValue, Vec<u8>)> {
        let states = Resource::import(self, diags, id).await?;
        encode_states(diags, states)
    }

    async fn upgrade(
        &self,
        diags: &mut Diagnostics,
        version: i64,
        current: i64,
        state: RawValue,
    ) -> Option<RawValue> {
        if version > current {
            diags.root_error(
                "State written by a newer provider",
                format!(
                    "the stored state has schema version {version}, this provider knows \
                     versions up to {current}; use the provider version that wrote it"
                ),
            );
            return None;
        }
        let s: R::State<'_> = if version == current {
            state.deserialize(diags)?
        } else {
            Resource::upgrade(self, diags, version, state).await?
        };
        RawValue::serialize(diags, &s)
    }
}

impl<R: Resource + 'static> From<R> for Box<dyn DynamicResource> {
    fn from(r: R) -> Self {
        Box::new(r)
    }
}

/// A [`DataSource`] behind raw values.
#[async_trait]
pub trait DynamicDataSource: Send + Sync {
    /// See [`DataSource::schema`].
    fn schema(&self, diags: &mut Diagnostics) -> Option<Schema>;
    /// See [`DataSource::validate`].
    async fn validate(&self, diags: &mut Diagnostics, config: RawValue) -> Option<()>;
    /// See [`DataSource::read`].
    async fn read(
        &self,
        diags: &mut Diagnostics,
        config: RawValue,
        meta: RawValue,
    ) -> Option<RawValue>;
}

#[async_trait]
impl<D: DataSource> DynamicDataSource for D {
    fn schema(&self, diags: &mut Diagnostics) -> Option<Schema> {
        DataSource::schema(self, diags)
    }
    async fn validate(&self, diags: &mut Diagnostics, config: RawValue) -> Option<()> {
        let config = config.deserialize(diags)?;
        DataSource::validate(self, diags, config).await
    }
    async fn read(
        &self,
        diags: &mut Diagnostics,
        config: RawValue,
        meta: RawValue,
    ) -> Option<RawValue> {
        let config = config.deserialize(diags)?;
        let meta = meta.deserialize(diags)?;
        let s = DataSource::read(self, diags, config, meta).await?;
        RawValue::serialize(diags, &s)
    }
}

impl<D: DataSource + 'static> From<D> for Box<dyn DynamicDataSource> {
    fn from(d: D) -> Self {
        Box::new(d)
    }
}

/// A [`Provider`] behind raw values.
#[async_trait]
pub(crate) trait DynamicProvider: Send + Sync + 'static {
    async fn validate(&self, diags: &mut Diagnostics, config: RawValue) -> Option<()>;
    async fn configure(
        &self,
        diags: &mut Diagnostics,
        version: String,
        config: RawValue,
    ) -> Option<()>;
}

#[async_trait]
impl<P: Provider> DynamicProvider for P {
    async fn validate(&self, diags: &mut Diagnostics, config: RawValue) -> Option<()> {
        let config = config.deserialize(diags)?;
        Provider::validate(self, diags, config).await
    }
    async fn configure(
        &self,
        diags: &mut Diagnostics,
        version: String,
        config: RawValue,
    ) -> Option<()> {
        let config = config.deserialize(diags)?;
        Provider::configure(self, diags, version, config).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::{Value, ValueEmpty};

    #[test]
    fn private_state_another_provider_wrote_reads_as_null() {
        let mut d = Diagnostics::default();
        let sdk_json = br#"{"schema_version":"0"}"#.to_vec();
        let p: ValueEmpty = private_state(&mut d, sdk_json).unwrap();
        assert!(p.is_null());
        let ours: Value<i64> = private_state(&mut d, vec![0x07]).unwrap();
        assert_eq!(ours, Value::Value(7));
        assert!(d.errors.is_empty());
    }
}
