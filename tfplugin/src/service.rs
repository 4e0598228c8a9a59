//! The tfplugin6 `Provider` service: decodes each call, hands it to the
//! typed provider, encodes the answer. Protocol errors never become gRPC
//! errors: Terraform shows diagnostics, so everything is a diagnostic.

use std::collections::HashMap;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::diagnostics::Diagnostics;
use crate::proto::{self, tfplugin6::provider_server};
use crate::resource::{DynamicDataSource, DynamicProvider, DynamicResource, Provider};
use crate::schema::Schema;
use crate::value::RawValue;

/// A provider with its schemas, ready to serve.
pub struct ProviderService {
    provider: Box<dyn DynamicProvider>,
    schema: Option<Schema>,
    meta_schema: Option<Schema>,
    resources: HashMap<String, (Box<dyn DynamicResource>, Schema)>,
    data_sources: HashMap<String, (Box<dyn DynamicDataSource>, Schema)>,
    /// Problems found while collecting the schemas, reported on every
    /// schema call.
    init_diags: Diagnostics,
    stop: Arc<tokio::sync::Notify>,
    record: Option<Recorder>,
}

/// Writes each call's request and response, as protobuf bytes, into a
/// folder (`TFPLUGIN_RECORD_DIR`): `007-PlanResourceChange.req.pb`, `.resp.pb`.
/// The bytes hold the values Terraform sends, sensitive ones included:
/// for capturing test vectors, never for production runs.
struct Recorder {
    dir: std::path::PathBuf,
    next: std::sync::atomic::AtomicUsize,
}

impl Recorder {
    fn from_env() -> Option<Self> {
        let dir = std::path::PathBuf::from(std::env::var_os("TFPLUGIN_RECORD_DIR")?);
        std::fs::create_dir_all(&dir).ok()?;
        let next = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
        Some(Self {
            dir,
            next: next.into(),
        })
    }

    fn write(&self, method: &str, req: &impl prost::Message, resp: &impl prost::Message) {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let base = format!("{:03}-{}-{method}", n, std::process::id());
        let _ = std::fs::write(self.dir.join(format!("{base}.req.pb")), req.encode_to_vec());
        let _ = std::fs::write(
            self.dir.join(format!("{base}.resp.pb")),
            resp.encode_to_vec(),
        );
    }
}

impl ProviderService {
    /// Collects the schemas of `provider`, whose types Terraform knows as
    /// `<name>_<type>`.
    pub fn new<P: Provider>(name: &str, provider: P) -> Self {
        let mut diags = Diagnostics::default();
        let schema = Provider::schema(&provider, &mut diags);
        let meta_schema = Provider::meta_schema(&provider, &mut diags);
        let mut resources = HashMap::new();
        for (t, r) in Provider::get_resources(&provider, &mut diags).unwrap_or_default() {
            if let Some(s) = r.schema(&mut diags) {
                resources.insert(format!("{name}_{t}"), (r, s));
            }
        }
        let mut data_sources = HashMap::new();
        for (t, d) in Provider::get_data_sources(&provider, &mut diags).unwrap_or_default() {
            if let Some(s) = d.schema(&mut diags) {
                data_sources.insert(format!("{name}_{t}"), (d, s));
            }
        }
        Self {
            provider: Box::new(provider),
            schema,
            meta_schema,
            resources,
            data_sources,
            init_diags: diags,
            stop: Arc::new(tokio::sync::Notify::new()),
            record: Recorder::from_env(),
        }
    }

    /// Notified when Terraform asks the provider to stop.
    pub fn stop_signal(&self) -> Arc<tokio::sync::Notify> {
        self.stop.clone()
    }

    fn resource(
        &self,
        diags: &mut Diagnostics,
        t: &str,
    ) -> Option<&(Box<dyn DynamicResource>, Schema)> {
        let r = self.resources.get(t);
        if r.is_none() {
            diags.root_error(
                "Unknown resource type",
                format!("this provider has no resource type '{t}'"),
            );
        }
        r
    }

    fn data_source(&self, diags: &mut Diagnostics, t: &str) -> Option<&dyn DynamicDataSource> {
        let d = self.data_sources.get(t).map(|(d, _)| &**d);
        if d.is_none() {
            diags.root_error(
                "Unknown data source",
                format!("this provider has no data source '{t}'"),
            );
        }
        d
    }

    fn capabilities() -> Option<proto::ServerCapabilities> {
        Some(proto::ServerCapabilities {
            plan_destroy: true,
            get_provider_schema_optional: false,
            move_resource_state: true,
        })
    }

    /// Stored JSON state of `version` for type `t` as current msgpack state.
    async fn upgrade(
        &self,
        diags: &mut Diagnostics,
        t: &str,
        version: i64,
        raw: Option<proto::RawState>,
    ) -> Option<RawValue> {
        let (r, schema) = self.resource(diags, t)?;
        let raw = raw.unwrap_or_default();
        if raw.json.is_empty() && !raw.flatmap.is_empty() {
            diags.root_error(
                "Cannot upgrade the stored state",
                "the state is in the flatmap form of Terraform 0.11 and older; \
                 refresh it with a Terraform release between 0.12 and 1.x first",
            );
            return None;
        }
        let mut json = raw.json;
        if version == schema.version && !json.is_empty() {
            // State of the current version, perhaps written by another
            // provider of the same types: shaped to our schema first, so
            // that the typed state reads it whatever its serde attributes.
            match serde_json::from_slice(&json) {
                Ok(v) => json = serde_json::to_vec(&schema.block.normalize_json(v)).unwrap_or(json),
                Err(e) => {
                    diags.root_error(
                        "Cannot read the stored state",
                        format!("it is not JSON: {e}"),
                    );
                    return None;
                }
            }
        }
        r.upgrade(diags, version, schema.version, RawValue::Json(json))
            .await
    }
}

impl ProviderService {
    /// Serves one call: `work` gets the request and the answer's
    /// diagnostics, and a `None` from it that added no error gets a generic
    /// one; `answer` builds the response from its result, which is
    /// recorded when recording.
    async fn serve<Q, T, A>(
        &self,
        method: &str,
        req: Request<Q>,
        work: impl AsyncFnOnce(Q, &mut Diagnostics) -> Option<T>,
        answer: impl FnOnce(Option<T>, Vec<proto::Diagnostic>) -> A,
    ) -> Result<Response<A>, Status>
    where
        Q: prost::Message + Clone,
        A: prost::Message,
    {
        let copy = self.record.is_some().then(|| req.get_ref().clone());
        let mut diags = Diagnostics::default();
        let out = work(req.into_inner(), &mut diags).await;
        if out.is_none() {
            diags.fail_unexplained();
        }
        self.recorded(method, &copy, answer(out, diags.into_proto()))
    }

    #[allow(clippy::result_large_err)]
    fn recorded<Q: prost::Message, A: prost::Message>(
        &self,
        method: &str,
        req: &Option<Q>,
        resp: A,
    ) -> Result<Response<A>, Status> {
        if let (Some(r), Some(q)) = (&self.record, req) {
            r.write(method, q, &resp);
        }
        answer(resp)
    }
}

fn read(v: Option<proto::DynamicValue>) -> RawValue {
    RawValue::from_proto(v)
}

// tonic fixes the error type of every service method.
#[allow(clippy::result_large_err)]
fn answer<T>(t: T) -> Result<Response<T>, Status> {
    Ok(Response::new(t))
}

#[tonic::async_trait]
impl provider_server::Provider for ProviderService {
    async fn get_metadata(
        &self,
        _: Request<proto::Empty>,
    ) -> Result<Response<proto::GetMetadataResponse>, Status> {
        let names = |m: Vec<&String>| {
            let mut v: Vec<_> = m
                .into_iter()
                .map(|t| proto::TypeName {
                    type_name: t.clone(),
                })
                .collect();
            v.sort_by(|a, b| a.type_name.cmp(&b.type_name));
            v
        };
        self.recorded(
            "GetMetadata",
            &Some(proto::Empty {}),
            proto::GetMetadataResponse {
                server_capabilities: Self::capabilities(),
                diagnostics: self.init_diags.clone().into_proto(),
                data_sources: names(self.data_sources.keys().collect()),
                resources: names(self.resources.keys().collect()),
                functions: vec![],
            },
        )
    }

    async fn get_provider_schema(
        &self,
        _: Request<proto::Empty>,
    ) -> Result<Response<proto::GetProviderSchemaResponse>, Status> {
        self.recorded(
            "GetProviderSchema",
            &Some(proto::Empty {}),
            proto::GetProviderSchemaResponse {
                provider: self.schema.as_ref().map(Schema::to_proto),
                resource_schemas: self
                    .resources
                    .iter()
                    .map(|(k, (_, s))| (k.clone(), s.to_proto()))
                    .collect(),
                data_source_schemas: self
                    .data_sources
                    .iter()
                    .map(|(k, (_, s))| (k.clone(), s.to_proto()))
                    .collect(),
                diagnostics: self.init_diags.clone().into_proto(),
                provider_meta: self.meta_schema.as_ref().map(Schema::to_proto),
                server_capabilities: Self::capabilities(),
            },
        )
    }

    async fn validate_provider_config(
        &self,
        req: Request<proto::ValidateProviderConfigRequest>,
    ) -> Result<Response<proto::ValidateProviderConfigResponse>, Status> {
        self.serve(
            "ValidateProviderConfig",
            req,
            async |req: proto::ValidateProviderConfigRequest, diags: &mut Diagnostics| {
                self.provider.validate(diags, read(req.config)).await
            },
            |_, diagnostics| proto::ValidateProviderConfigResponse { diagnostics },
        )
        .await
    }

    async fn validate_resource_config(
        &self,
        req: Request<proto::ValidateConfigRequest>,
    ) -> Result<Response<proto::Diagnostics1>, Status> {
        self.serve(
            "ValidateResourceConfig",
            req,
            async |req: proto::ValidateConfigRequest, diags: &mut Diagnostics| {
                let (r, _) = self.resource(diags, &req.type_name)?;
                r.validate(diags, read(req.config)).await
            },
            |_, diagnostics| proto::Diagnostics1 { diagnostics },
        )
        .await
    }

    async fn validate_data_resource_config(
        &self,
        req: Request<proto::ValidateConfigRequest>,
    ) -> Result<Response<proto::Diagnostics1>, Status> {
        self.serve(
            "ValidateDataResourceConfig",
            req,
            async |req: proto::ValidateConfigRequest, diags: &mut Diagnostics| {
                let d = self.data_source(diags, &req.type_name)?;
                d.validate(diags, read(req.config)).await
            },
            |_, diagnostics| proto::Diagnostics1 { diagnostics },
        )
        .await
    }

    async fn upgrade_resource_state(
        &self,
        req: Request<proto::UpgradeResourceStateRequest>,
    ) -> Result<Response<proto::UpgradeResourceStateResponse>, Status> {
        self.serve(
            "UpgradeResourceState",
            req,
            async |req: proto::UpgradeResourceStateRequest, diags: &mut Diagnostics| {
                self.upgrade(diags, &req.type_name, req.version, req.raw_state)
                    .await
            },
            |state, diagnostics| proto::UpgradeResourceStateResponse {
                upgraded_state: state.map(RawValue::into_proto),
                diagnostics,
            },
        )
        .await
    }

    async fn configure_provider(
        &self,
        req: Request<proto::ConfigureProviderRequest>,
    ) -> Result<Response<proto::Diagnostics1>, Status> {
        self.serve(
            "ConfigureProvider",
            req,
            async |req: proto::ConfigureProviderRequest, diags: &mut Diagnostics| {
                self.provider
                    .configure(diags, req.terraform_version, read(req.config))
                    .await
            },
            |_, diagnostics| proto::Diagnostics1 { diagnostics },
        )
        .await
    }

    async fn read_resource(
        &self,
        req: Request<proto::ReadResourceRequest>,
    ) -> Result<Response<proto::ReadResourceResponse>, Status> {
        self.serve(
            "ReadResource",
            req,
            async |req: proto::ReadResourceRequest, diags: &mut Diagnostics| {
                let (r, _) = self.resource(diags, &req.type_name)?;
                let state = read(req.current_state);
                r.read(diags, state, req.private, read(req.provider_meta))
                    .await
            },
            |out, diagnostics| {
                let (state, private) = out.unzip();
                proto::ReadResourceResponse {
                    new_state: state.map(RawValue::into_proto),
                    diagnostics,
                    private: private.unwrap_or_default(),
                }
            },
        )
        .await
    }

    async fn plan_resource_change(
        &self,
        req: Request<proto::PlanResourceChangeRequest>,
    ) -> Result<Response<proto::PlanResourceChangeResponse>, Status> {
        self.serve(
            "PlanResourceChange",
            req,
            async |req: proto::PlanResourceChangeRequest, diags: &mut Diagnostics| {
                let (r, _) = self.resource(diags, &req.type_name)?;
                let prior = read(req.prior_state);
                let proposed = read(req.proposed_new_state);
                let config = read(req.config);
                let meta = read(req.provider_meta);
                let private = req.prior_private;
                match (prior.is_null(), proposed.is_null()) {
                    (true, false) => r
                        .plan_create(diags, proposed, config, meta)
                        .await
                        .map(|(s, p)| (s, p, vec![])),
                    (false, false) => {
                        r.plan_update(diags, prior, proposed, config, private, meta)
                            .await
                    }
                    (false, true) => r
                        .plan_destroy(diags, prior, private, meta)
                        .await
                        .map(|p| (RawValue::default(), p, vec![])),
                    (true, true) => Some((RawValue::default(), vec![], vec![])),
                }
            },
            |out, diagnostics| {
                let (state, private, replace) = match out {
                    Some((s, p, r)) => (Some(s.into_proto()), p, r),
                    None => (None, vec![], vec![]),
                };
                proto::PlanResourceChangeResponse {
                    planned_state: state,
                    requires_replace: replace.into_iter().map(|p| p.into_proto()).collect(),
                    planned_private: private,
                    diagnostics,
                    legacy_type_system: false,
                }
            },
        )
        .await
    }

    async fn apply_resource_change(
        &self,
        req: Request<proto::ApplyResourceChangeRequest>,
    ) -> Result<Response<proto::ApplyResourceChangeResponse>, Status> {
        self.serve(
            "ApplyResourceChange",
            req,
            async |req: proto::ApplyResourceChangeRequest, diags: &mut Diagnostics| {
                let (r, _) = self.resource(diags, &req.type_name)?;
                let prior = read(req.prior_state);
                let planned = read(req.planned_state);
                let config = read(req.config);
                let meta = read(req.provider_meta);
                let private = req.planned_private;
                match (prior.is_null(), planned.is_null()) {
                    (true, false) => r.create(diags, planned, config, private, meta).await,
                    (false, false) => r.update(diags, prior, planned, config, private, meta).await,
                    (false, true) => r
                        .destroy(diags, prior, private, meta)
                        .await
                        .map(|()| (RawValue::default(), vec![])),
                    (true, true) => Some((RawValue::default(), vec![])),
                }
            },
            |out, diagnostics| {
                let (state, private) = out.unzip();
                proto::ApplyResourceChangeResponse {
                    new_state: state.map(RawValue::into_proto),
                    private: private.unwrap_or_default(),
                    diagnostics,
                    legacy_type_system: false,
                }
            },
        )
        .await
    }

    async fn import_resource_state(
        &self,
        req: Request<proto::ImportResourceStateRequest>,
    ) -> Result<Response<proto::ImportResourceStateResponse>, Status> {
        let type_name = req.get_ref().type_name.clone();
        self.serve(
            "ImportResourceState",
            req,
            async |req: proto::ImportResourceStateRequest, diags: &mut Diagnostics| {
                let (r, _) = self.resource(diags, &req.type_name)?;
                r.import(diags, req.id).await
            },
            |out, diagnostics| proto::ImportResourceStateResponse {
                imported_resources: out
                    .map(|(state, private)| proto::ImportedResource {
                        type_name,
                        state: Some(state.into_proto()),
                        private,
                    })
                    .into_iter()
                    .collect(),
                diagnostics,
            },
        )
        .await
    }

    async fn move_resource_state(
        &self,
        req: Request<proto::MoveResourceStateRequest>,
    ) -> Result<Response<proto::MoveResourceStateResponse>, Status> {
        self.serve(
            "MoveResourceState",
            req,
            async |req: proto::MoveResourceStateRequest, diags: &mut Diagnostics| {
                // A move keeps the resource type (state from another provider
                // of the same types, e.g. dmacvicar/libvirt): the stored state
                // then upgrades like our own. Moves between types have no mapping.
                if req.source_type_name != req.target_type_name {
                    diags.root_error(
                        "Cannot move the resource",
                        format!(
                            "state of '{}' cannot become '{}': this provider moves state only \
                             between resources of the same type; remove it from the state and \
                             import it instead",
                            req.source_type_name, req.target_type_name
                        ),
                    );
                    return None;
                }
                self.upgrade(
                    diags,
                    &req.target_type_name,
                    req.source_schema_version,
                    req.source_state,
                )
                .await
            },
            |state, diagnostics| proto::MoveResourceStateResponse {
                target_state: state.map(RawValue::into_proto),
                diagnostics,
                // Private state belongs to the provider that wrote it.
                target_private: vec![],
            },
        )
        .await
    }

    async fn read_data_source(
        &self,
        req: Request<proto::ReadDataSourceRequest>,
    ) -> Result<Response<proto::ReadDataSourceResponse>, Status> {
        self.serve(
            "ReadDataSource",
            req,
            async |req: proto::ReadDataSourceRequest, diags: &mut Diagnostics| {
                let d = self.data_source(diags, &req.type_name)?;
                d.read(diags, read(req.config), read(req.provider_meta))
                    .await
            },
            |state, diagnostics| proto::ReadDataSourceResponse {
                state: state.map(RawValue::into_proto),
                diagnostics,
            },
        )
        .await
    }

    async fn get_functions(
        &self,
        _: Request<proto::Empty>,
    ) -> Result<Response<proto::GetFunctionsResponse>, Status> {
        self.recorded(
            "GetFunctions",
            &Some(proto::Empty {}),
            proto::GetFunctionsResponse {
                diagnostics: self.init_diags.clone().into_proto(),
            },
        )
    }

    async fn stop_provider(
        &self,
        _: Request<proto::Empty>,
    ) -> Result<Response<proto::StopProviderResponse>, Status> {
        self.stop.notify_waiters();
        self.recorded(
            "StopProvider",
            &Some(proto::Empty {}),
            proto::StopProviderResponse {
                error: String::new(),
            },
        )
    }
}
