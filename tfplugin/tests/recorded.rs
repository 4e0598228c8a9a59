//! Unit tests against protocol exchanges recorded from real Terraform 1.11
//! and 1.15 driving terraform-provider-libvirt (`testdata/terraform-*`,
//! written by `tests/tests/provider_record.rs`): every request Terraform
//! sent decodes, and requests replayed through this crate with a pool
//! resource of the same schema give, byte for byte, the answers Terraform
//! accepted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use prost::Message;
use serde::{Deserialize, Serialize};
use tfplugin::proto::{self, tfplugin6::provider_server::Provider as _};
use tfplugin::schema::{
    Attribute, AttributeConstraint as C, AttributeType as T, Block, NestedBlock, Schema,
};
use tfplugin::service::ProviderService;
use tfplugin::value::{serde_as_vec, RawValue, Value, ValueEmpty};
use tfplugin::{
    map, AttributePath, DataSource, Diagnostics, DynamicDataSource, DynamicResource, Provider,
    Resource,
};

/// One recorded call.
struct Exchange {
    method: String,
    req: Vec<u8>,
    resp: Vec<u8>,
    file: PathBuf,
}

fn exchanges(version: &str) -> Vec<Exchange> {
    // The running checkout's folder (cargo sets it when it runs the test),
    // not the one the binary was built in: checkouts share a target folder.
    let crate_dir =
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or(env!("CARGO_MANIFEST_DIR").into());
    let dir = Path::new(&crate_dir).join(format!("testdata/terraform-{version}"));
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".req.pb"))
        .collect();
    names.sort();
    assert!(names.len() > 20, "few recordings in {}", dir.display());
    names
        .into_iter()
        .map(|req| {
            let name = req.file_name().unwrap().to_string_lossy().into_owned();
            let method = name
                .trim_end_matches(".req.pb")
                .rsplit('-')
                .next()
                .unwrap()
                .to_string();
            let resp = PathBuf::from(req.to_string_lossy().replace(".req.pb", ".resp.pb"));
            Exchange {
                method,
                req: std::fs::read(&req).unwrap(),
                resp: std::fs::read(&resp).unwrap(),
                file: req,
            }
        })
        .collect()
}

fn decoded<M: Message + Default>(b: &[u8], x: &Exchange) -> M {
    M::decode(b).unwrap_or_else(|e| panic!("{}: {e}", x.file.display()))
}

/// Our answers carry only fields we know: nothing is lost decoding them
/// (map entries may come out in another order, so lengths are compared).
fn answer_roundtrips<M: Message + Default + PartialEq>(x: &Exchange) {
    let m: M = decoded(&x.resp, x);
    assert_eq!(m.encoded_len(), x.resp.len(), "{}", x.file.display());
    assert!(
        M::decode(m.encode_to_vec().as_slice()).unwrap() == m,
        "{}",
        x.file.display()
    );
}

#[test]
fn every_recorded_call_decodes_and_every_answer_roundtrips() {
    for version in ["1.11", "1.15"] {
        let mut seen = HashMap::<String, usize>::new();
        for x in exchanges(version) {
            *seen.entry(x.method.clone()).or_default() += 1;
            match x.method.as_str() {
                "GetProviderSchema" => answer_roundtrips::<proto::GetProviderSchemaResponse>(&x),
                "ValidateProviderConfig" => {
                    decoded::<proto::ValidateProviderConfigRequest>(&x.req, &x);
                    answer_roundtrips::<proto::ValidateProviderConfigResponse>(&x);
                }
                "ValidateResourceConfig" | "ValidateDataResourceConfig" => {
                    let r: proto::ValidateConfigRequest = decoded(&x.req, &x);
                    assert!(r.type_name.starts_with("libvirt_"));
                    answer_roundtrips::<proto::Diagnostics1>(&x);
                }
                "ConfigureProvider" => {
                    let r: proto::ConfigureProviderRequest = decoded(&x.req, &x);
                    assert!(
                        r.terraform_version.starts_with(version),
                        "{}",
                        r.terraform_version
                    );
                    answer_roundtrips::<proto::Diagnostics1>(&x);
                }
                "UpgradeResourceState" => {
                    let r: proto::UpgradeResourceStateRequest = decoded(&x.req, &x);
                    assert!(!r.raw_state.unwrap().json.is_empty(), "state comes as JSON");
                    answer_roundtrips::<proto::UpgradeResourceStateResponse>(&x);
                }
                "ReadResource" => {
                    decoded::<proto::ReadResourceRequest>(&x.req, &x);
                    answer_roundtrips::<proto::ReadResourceResponse>(&x);
                }
                "PlanResourceChange" => {
                    decoded::<proto::PlanResourceChangeRequest>(&x.req, &x);
                    answer_roundtrips::<proto::PlanResourceChangeResponse>(&x);
                }
                "ApplyResourceChange" => {
                    decoded::<proto::ApplyResourceChangeRequest>(&x.req, &x);
                    answer_roundtrips::<proto::ApplyResourceChangeResponse>(&x);
                }
                "ImportResourceState" => {
                    decoded::<proto::ImportResourceStateRequest>(&x.req, &x);
                    answer_roundtrips::<proto::ImportResourceStateResponse>(&x);
                }
                "ReadDataSource" => {
                    decoded::<proto::ReadDataSourceRequest>(&x.req, &x);
                    answer_roundtrips::<proto::ReadDataSourceResponse>(&x);
                }
                other => panic!("unexpected method {other} in {}", x.file.display()),
            }
        }
        for m in [
            "PlanResourceChange",
            "ApplyResourceChange",
            "UpgradeResourceState",
            "ReadResource",
            "ImportResourceState",
        ] {
            assert!(seen.contains_key(m), "Terraform {version}: no {m} recorded");
        }
    }
}

/// `libvirt_pool` as terraform-provider-libvirt declares it (schema
/// version 1), with its planning for a new pool; nothing else.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Pool {
    id: Value<String>,
    name: Value<String>,
    #[serde(rename = "type")]
    kind: Value<String>,
    path: Value<String>,
    capacity: Value<i64>,
    allocation: Value<i64>,
    available: Value<i64>,
    #[serde(default, with = "serde_as_vec")]
    target: Value<Target>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Target {
    path: Value<String>,
}

struct PoolResource;

fn a(t: T, c: C) -> Attribute {
    Attribute {
        attr_type: t,
        constraint: c,
        ..Default::default()
    }
}

#[async_trait]
impl Resource for PoolResource {
    type State<'a> = Option<Pool>;
    type PrivateState<'a> = ValueEmpty;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _: &mut Diagnostics) -> Option<Schema> {
        Some(Schema {
            version: 1,
            block: Block {
                attributes: map! {
                    "id" => a(T::String, C::Computed),
                    "name" => a(T::String, C::Required),
                    "type" => a(T::String, C::Required),
                    "path" => a(T::String, C::OptionalComputed),
                    "capacity" => a(T::Number, C::Computed),
                    "allocation" => a(T::Number, C::Computed),
                    "available" => a(T::Number, C::Computed),
                },
                blocks: map! {
                    "target" => NestedBlock::Optional(Block {
                        attributes: map! { "path" => a(T::String, C::Required) },
                        ..Default::default()
                    }),
                },
                ..Default::default()
            },
        })
    }
    async fn read<'a>(
        &self,
        d: &mut Diagnostics,
        _: Option<Pool>,
        _: ValueEmpty,
        _: ValueEmpty,
    ) -> Option<(Option<Pool>, ValueEmpty)> {
        d.root_error_short("not in this test");
        None
    }
    async fn plan_create<'a>(
        &self,
        _: &mut Diagnostics,
        proposed: Option<Pool>,
        _: Option<Pool>,
        _: ValueEmpty,
    ) -> Option<(Option<Pool>, ValueEmpty)> {
        let mut s = proposed?;
        s.id = Value::Unknown;
        s.capacity = Value::Unknown;
        s.allocation = Value::Unknown;
        s.available = Value::Unknown;
        Some((Some(s), ValueEmpty::Null))
    }
    async fn plan_update<'a>(
        &self,
        d: &mut Diagnostics,
        _: Option<Pool>,
        _: Option<Pool>,
        _: Option<Pool>,
        _: ValueEmpty,
        _: ValueEmpty,
    ) -> Option<(Option<Pool>, ValueEmpty, Vec<AttributePath>)> {
        d.root_error_short("not in this test");
        None
    }
    async fn create<'a>(
        &self,
        d: &mut Diagnostics,
        _: Option<Pool>,
        _: Option<Pool>,
        _: ValueEmpty,
        _: ValueEmpty,
    ) -> Option<(Option<Pool>, ValueEmpty)> {
        d.root_error_short("not in this test");
        None
    }
    async fn update<'a>(
        &self,
        d: &mut Diagnostics,
        _: Option<Pool>,
        _: Option<Pool>,
        _: Option<Pool>,
        _: ValueEmpty,
        _: ValueEmpty,
    ) -> Option<(Option<Pool>, ValueEmpty)> {
        d.root_error_short("not in this test");
        None
    }
    async fn destroy<'a>(
        &self,
        _: &mut Diagnostics,
        _: Option<Pool>,
        _: ValueEmpty,
        _: ValueEmpty,
    ) -> Option<()> {
        Some(())
    }
}

struct Libvirt;

#[async_trait]
impl Provider for Libvirt {
    type Config<'a> = ValueEmpty;
    type MetaState<'a> = ValueEmpty;
    fn schema(&self, _: &mut Diagnostics) -> Option<Schema> {
        Some(Schema::default())
    }
    async fn configure<'a>(&self, _: &mut Diagnostics, _: String, _: ValueEmpty) -> Option<()> {
        Some(())
    }
    fn get_resources(
        &self,
        _: &mut Diagnostics,
    ) -> Option<HashMap<String, Box<dyn DynamicResource>>> {
        Some(map! { "pool" => PoolResource })
    }
    fn get_data_sources(
        &self,
        _: &mut Diagnostics,
    ) -> Option<HashMap<String, Box<dyn DynamicDataSource>>> {
        Some(HashMap::new())
    }
}

// Keeps the DataSource trait in the public API exercised by this test.
#[allow(dead_code)]
fn _is_data_source<D: DataSource>() {}

fn pool_calls<'a>(all: &'a [Exchange], method: &str) -> Vec<&'a Exchange> {
    all.iter()
        .filter(|x| x.method == method)
        .filter(|x| {
            let t = match method {
                "UpgradeResourceState" => {
                    decoded::<proto::UpgradeResourceStateRequest>(&x.req, x).type_name
                }
                "PlanResourceChange" => {
                    decoded::<proto::PlanResourceChangeRequest>(&x.req, x).type_name
                }
                _ => unreachable!(),
            };
            t == "libvirt_pool"
        })
        .collect()
}

/// The pool's recorded plans with a prior state or not, and a proposed
/// one or not (a create has only the proposed state, a destroy only the
/// prior one).
fn pool_plans(
    all: &[Exchange],
    with_prior: bool,
    with_proposed: bool,
) -> Vec<(&Exchange, proto::PlanResourceChangeRequest)> {
    pool_calls(all, "PlanResourceChange")
        .into_iter()
        .map(|x| (x, decoded::<proto::PlanResourceChangeRequest>(&x.req, x)))
        .filter(|(_, req)| {
            let prior = RawValue::from_proto(req.prior_state.clone());
            let proposed = RawValue::from_proto(req.proposed_new_state.clone());
            prior.is_null() != with_prior && proposed.is_null() != with_proposed
        })
        .collect()
}

#[tokio::test]
async fn stored_pool_state_from_terraform_upgrades_to_the_bytes_terraform_accepted() {
    let service = ProviderService::new("libvirt", Libvirt);
    for version in ["1.11", "1.15"] {
        let all = exchanges(version);
        let calls = pool_calls(&all, "UpgradeResourceState");
        assert!(
            !calls.is_empty(),
            "Terraform {version}: no pool upgrade recorded"
        );
        for x in calls {
            let req: proto::UpgradeResourceStateRequest = decoded(&x.req, x);
            let want: proto::UpgradeResourceStateResponse = decoded(&x.resp, x);
            let got = service
                .upgrade_resource_state(tonic::Request::new(req))
                .await
                .unwrap()
                .into_inner();
            assert_eq!(got, want, "{}", x.file.display());
        }
    }
}

#[tokio::test]
async fn planning_a_new_pool_gives_the_unknowns_terraform_accepted() {
    let service = ProviderService::new("libvirt", Libvirt);
    for version in ["1.11", "1.15"] {
        let all = exchanges(version);
        let mut creates = 0;
        for (x, req) in pool_plans(&all, false, true) {
            creates += 1;
            let want: proto::PlanResourceChangeResponse = decoded(&x.resp, x);
            let mut d = Diagnostics::default();
            let proposed: Option<Pool> = RawValue::from_proto(req.proposed_new_state.clone())
                .deserialize(&mut d)
                .unwrap();
            let proposed = proposed.unwrap();
            assert_eq!(proposed.name, Value::Value("rec".into()));
            assert!(
                proposed.id.is_null(),
                "Terraform leaves computed attributes to the plan"
            );
            let got = service
                .plan_resource_change(tonic::Request::new(req))
                .await
                .unwrap()
                .into_inner();
            assert_eq!(got, want, "{}", x.file.display());
            let planned: Option<Pool> = RawValue::from_proto(got.planned_state)
                .deserialize(&mut d)
                .unwrap();
            let planned = planned.unwrap();
            assert!(planned.id.is_unknown() && planned.capacity.is_unknown());
        }
        assert!(creates > 0, "Terraform {version}: no pool create planned");
    }
}

/// The pool resource here leaves `plan_destroy` to the trait's default.
#[tokio::test]
async fn planning_a_destroy_by_default_gives_the_answer_terraform_accepted() {
    let service = ProviderService::new("libvirt", Libvirt);
    for version in ["1.11", "1.15"] {
        let all = exchanges(version);
        let mut destroys = 0;
        for (x, req) in pool_plans(&all, true, false) {
            destroys += 1;
            let want: proto::PlanResourceChangeResponse = decoded(&x.resp, x);
            let got = service
                .plan_resource_change(tonic::Request::new(req))
                .await
                .unwrap()
                .into_inner();
            assert_eq!(got, want, "{}", x.file.display());
        }
        assert!(destroys > 0, "Terraform {version}: no pool destroy planned");
    }
}

#[test]
fn sensitive_attributes_and_private_state_went_over_the_wire() {
    for version in ["1.11", "1.15"] {
        let all = exchanges(version);
        let schema = all
            .iter()
            .find(|x| x.method == "GetProviderSchema")
            .unwrap();
        let s: proto::GetProviderSchemaResponse = decoded(&schema.resp, schema);
        let seed = s.resource_schemas["libvirt_cloudinit_disk"]
            .block
            .as_ref()
            .unwrap();
        let user_data = seed
            .attributes
            .iter()
            .find(|a| a.name == "user_data")
            .unwrap();
        assert!(user_data.sensitive);

        // The volume keeps private state; Terraform hands it back on read.
        let mut private_reads = 0;
        for x in all.iter().filter(|x| x.method == "ReadResource") {
            let r: proto::ReadResourceRequest = decoded(&x.req, x);
            if r.type_name == "libvirt_volume" && !r.private.is_empty() && r.private != [0xc0] {
                let v: serde_json::Value = rmp_serde::from_slice(&r.private).unwrap();
                assert!(v.is_object(), "{v}");
                private_reads += 1;
            }
        }
        assert!(
            private_reads > 0,
            "Terraform {version}: no volume private state read back"
        );
    }
}
