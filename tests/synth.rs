//! What `synth` renders: snapshots of every file of every shipped
//! environment, determinism, and a manifest whose wiring holds together.

mod common;

use pipeline_cli::spec::Loader;
use pipeline_cli::synth::{Synthesis, context::Source, synthesize};

const SHIPPED: [&str; 4] = ["dev", "dit", "uat", "prod"];

fn synth(env: &str) -> Synthesis {
    let mut loader = Loader::new(Some(common::repo().join("environments")));
    let env = loader
        .load(env)
        .unwrap_or_else(|e| panic!("{env} does not load: {e:?}"));
    synthesize(&env).unwrap_or_else(|e| panic!("synth failed: {e}"))
}

#[test]
fn snapshots_of_every_file() {
    for env in SHIPPED {
        for (name, text) in synth(env).files {
            insta::assert_snapshot!(format!("{env}__{name}"), text);
        }
    }
}

#[test]
fn output_is_byte_for_byte_deterministic() {
    for env in SHIPPED {
        let first = synth(env).files;
        let second = synth(env).files;
        assert_eq!(first, second, "{env}");
    }
}

#[test]
fn parameters_come_from_earlier_stacks_outputs() {
    for env in SHIPPED {
        let synthesis = synth(env);
        let stacks = &synthesis.manifest.stacks;
        assert_eq!(
            stacks.iter().map(|s| s.id).collect::<Vec<_>>(),
            vec!["network", "data", "monitoring", "app"]
        );
        for (i, stack) in stacks.iter().enumerate() {
            let template: serde_json::Value = synthesis
                .files
                .iter()
                .find(|(n, _)| *n == stack.template)
                .map(|(_, t)| serde_json::from_str(t).expect("template json"))
                .expect("template file");
            let declared: Vec<&String> = template["Parameters"]
                .as_object()
                .map(|o| o.keys().collect())
                .unwrap_or_default();
            assert_eq!(declared.len(), stack.parameters.len(), "{env} {}", stack.id);
            for param in &stack.parameters {
                assert!(
                    declared.iter().any(|d| *d == param.name),
                    "{env}: {} not declared",
                    param.name
                );
                if let Source::Output {
                    stack: from,
                    output,
                } = &param.source
                {
                    let earlier = stacks[..i].iter().find(|s| s.id == *from);
                    let earlier = earlier.unwrap_or_else(|| {
                        panic!("{env}: {} reads {from}, not an earlier stack", param.name)
                    });
                    assert!(
                        earlier.outputs.iter().any(|o| o == output),
                        "{env}: {from} has no output {output}"
                    );
                }
            }
            // Templates hand values on through parameters, never through exports.
            let outputs = template["Outputs"].as_object().cloned().unwrap_or_default();
            assert!(
                outputs.values().all(|o| o.get("Export").is_none()),
                "{env} {} exports",
                stack.id
            );
        }
    }
}

#[test]
fn every_checkov_skip_gives_a_reason() {
    for env in SHIPPED {
        for (name, text) in synth(env)
            .files
            .iter()
            .filter(|(n, _)| n.ends_with(".template.json"))
        {
            let template: serde_json::Value = serde_json::from_str(text).expect("json");
            for (id, resource) in template["Resources"].as_object().into_iter().flatten() {
                for skip in resource["Metadata"]["checkov"]["skip"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    let comment = skip["comment"].as_str().unwrap_or("");
                    assert!(
                        comment.len() > 20,
                        "{env}/{name} {id}: skip {} has no reason",
                        skip["id"]
                    );
                }
            }
        }
    }
}

#[test]
fn prod_keeps_its_data_and_dev_does_not() {
    let data = |env: &str| -> serde_json::Value {
        let files = synth(env).files;
        let text = &files
            .iter()
            .find(|(n, _)| n == "data.template.json")
            .expect("data")
            .1;
        serde_json::from_str(text).expect("json")
    };
    let prod = data("prod");
    assert_eq!(prod["Resources"]["Database"]["DeletionPolicy"], "Snapshot");
    assert_eq!(prod["Resources"]["RawBucket"]["DeletionPolicy"], "Retain");
    assert_eq!(
        prod["Resources"]["Database"]["Properties"]["DeletionProtection"],
        true
    );
    assert!(prod["Resources"]["Replica2"].is_object());
    assert!(prod["Resources"]["Proxy"].is_object());
    let dev = data("dev");
    assert_eq!(dev["Resources"]["Database"]["DeletionPolicy"], "Delete");
    assert_eq!(dev["Resources"]["Database"]["Properties"]["MultiAZ"], false);
    assert!(dev["Resources"]["Replica1"].is_null());
}

#[test]
fn image_functions_name_their_image_and_zip_functions_their_package() {
    let specs = common::workspace(&[(
        "pr-7.yaml",
        "extends: dev\nfunctions:\n  ingest: {package: image}\n  query: {package: image, base_image: 'registry.example.com/base@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef'}\n",
    )]);
    let mut loader = Loader::new(Some(specs.path().join("environments")));
    let env = loader.load("pr-7").expect("pr-7 loads");
    let synthesis = synthesize(&env).expect("synth");
    let (_, text) = synthesis
        .files
        .iter()
        .find(|(name, _)| name == "app.template.json")
        .expect("app template");
    let template: serde_json::Value = serde_json::from_str(text).expect("json");
    let resources = &template["Resources"];
    for (id, image) in [("Ingest", true), ("Loader", false), ("Query", true)] {
        let props = &resources[format!("{id}Function")]["Properties"];
        if image {
            assert_eq!(props["PackageType"], "Image", "{id}");
            assert_eq!(
                props["Code"],
                serde_json::json!({"ImageUri": {"Ref": format!("{id}ImageUri")}})
            );
            assert!(props.get("Runtime").is_none() && props.get("Handler").is_none());
        } else {
            assert!(props.get("PackageType").is_none(), "{id}");
            assert_eq!(props["Code"]["S3Key"]["Ref"], format!("{id}CodeKey"));
            assert_eq!(props["Runtime"], "provided.al2023");
        }
    }
    let params = template["Parameters"].as_object().expect("parameters");
    assert!(params.contains_key("IngestImageUri") && !params.contains_key("IngestCodeKey"));
    assert!(params.contains_key("LoaderCodeKey") && params.contains_key("AssetsBucket"));
    let app = synthesis
        .manifest
        .stacks
        .iter()
        .find(|s| s.id == "app")
        .expect("app stack");
    let source = app
        .parameters
        .iter()
        .find(|p| p.name == "QueryImageUri")
        .map(|p| p.source.clone());
    assert_eq!(source, Some(Source::Asset { asset: "query" }));
}
