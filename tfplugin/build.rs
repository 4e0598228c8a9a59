//! Generates the gRPC service glue for our hand-written prost messages
//! (src/proto.rs). No `.proto` file and no `protoc` are involved.

use tonic_build::manual::{Builder, Method, Service};

fn method(name: &str, route: &str, input: &str, output: &str) -> Method {
    Method::builder()
        .name(name)
        .route_name(route)
        .input_type(format!("crate::proto::{input}"))
        .output_type(format!("crate::proto::{output}"))
        .codec_path("tonic::codec::ProstCodec")
        .build()
}

fn main() {
    let provider = [
        (
            "get_metadata",
            "GetMetadata",
            "Empty",
            "GetMetadataResponse",
        ),
        (
            "get_provider_schema",
            "GetProviderSchema",
            "Empty",
            "GetProviderSchemaResponse",
        ),
        (
            "validate_provider_config",
            "ValidateProviderConfig",
            "ValidateProviderConfigRequest",
            "ValidateProviderConfigResponse",
        ),
        (
            "validate_resource_config",
            "ValidateResourceConfig",
            "ValidateConfigRequest",
            "Diagnostics1",
        ),
        (
            "validate_data_resource_config",
            "ValidateDataResourceConfig",
            "ValidateConfigRequest",
            "Diagnostics1",
        ),
        (
            "upgrade_resource_state",
            "UpgradeResourceState",
            "UpgradeResourceStateRequest",
            "UpgradeResourceStateResponse",
        ),
        (
            "configure_provider",
            "ConfigureProvider",
            "ConfigureProviderRequest",
            "Diagnostics1",
        ),
        (
            "read_resource",
            "ReadResource",
            "ReadResourceRequest",
            "ReadResourceResponse",
        ),
        (
            "plan_resource_change",
            "PlanResourceChange",
            "PlanResourceChangeRequest",
            "PlanResourceChangeResponse",
        ),
        (
            "apply_resource_change",
            "ApplyResourceChange",
            "ApplyResourceChangeRequest",
            "ApplyResourceChangeResponse",
        ),
        (
            "import_resource_state",
            "ImportResourceState",
            "ImportResourceStateRequest",
            "ImportResourceStateResponse",
        ),
        (
            "move_resource_state",
            "MoveResourceState",
            "MoveResourceStateRequest",
            "MoveResourceStateResponse",
        ),
        (
            "read_data_source",
            "ReadDataSource",
            "ReadDataSourceRequest",
            "ReadDataSourceResponse",
        ),
        (
            "get_functions",
            "GetFunctions",
            "Empty",
            "GetFunctionsResponse",
        ),
        (
            "stop_provider",
            "StopProvider",
            "Empty",
            "StopProviderResponse",
        ),
    ];
    let mut service = Service::builder().name("Provider").package("tfplugin6");
    for (name, route, input, output) in provider {
        service = service.method(method(name, route, input, output));
    }
    let stdio = Service::builder()
        .name("GRPCStdio")
        .package("plugin")
        .method(
            Method::builder()
                .name("stream_stdio")
                .route_name("StreamStdio")
                .input_type("crate::proto::Empty")
                .output_type("crate::proto::StdioData")
                .codec_path("tonic::codec::ProstCodec")
                .server_streaming()
                .build(),
        )
        .build();
    let controller = Service::builder()
        .name("GRPCController")
        .package("plugin")
        .method(method("shutdown", "Shutdown", "Empty", "Empty"))
        .build();
    Builder::new().compile(&[service.build(), stdio, controller]);
    println!("cargo:rerun-if-changed=build.rs");
}
