//! What `synth` renders: snapshots of every file of every shipped
//! environment, determinism, and a manifest whose wiring holds together.

use crate::common;

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
    assert_eq!(
        prod["Resources"]["RawBucket"]["DeletionPolicy"],
        "RetainExceptOnCreate"
    );
    assert_eq!(
        prod["Resources"]["RawBucket"]["UpdateReplacePolicy"],
        "Retain"
    );
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

/// A rendered template of a shipped environment, as JSON.
fn template(env: &str, file: &str) -> serde_json::Value {
    let files = synth(env).files;
    let text = &files
        .iter()
        .find(|(n, _)| n == file)
        .unwrap_or_else(|| panic!("{env} has no {file}"))
        .1;
    serde_json::from_str(text).expect("json")
}

/// The statements of the inline policy of a function's role.
fn role_statements(app: &serde_json::Value, role: &str) -> Vec<serde_json::Value> {
    app["Resources"][role]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("{role} has no inline policy"))
}

/// A statement's actions, whether one string or a list.
fn actions(statement: &serde_json::Value) -> Vec<String> {
    match &statement["Action"] {
        serde_json::Value::String(a) => vec![a.clone()],
        serde_json::Value::Array(list) => list
            .iter()
            .filter_map(|a| a.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

#[test]
fn whoever_sends_to_the_encrypted_queue_may_make_data_keys_with_its_key() {
    for env in SHIPPED {
        let app = template(env, "app.template.json");
        for role in ["IngestRole", "LoaderRole", "QueryRole"] {
            let statements = role_statements(&app, role);
            let sends = statements.iter().any(|s| {
                actions(s)
                    .iter()
                    .any(|a| a == "sqs:SendMessage" || a == "s3:PutObject")
            });
            let key: Vec<&serde_json::Value> = statements
                .iter()
                .filter(|s| actions(s).iter().any(|a| a.starts_with("kms:")))
                .collect();
            assert_eq!(key.len(), 1, "{env} {role}");
            assert_eq!(key[0]["Resource"], serde_json::json!({"Ref": "KeyArn"}));
            let key_actions = actions(key[0]);
            assert!(key_actions.contains(&"kms:Decrypt".to_string()));
            assert_eq!(
                key_actions.contains(&"kms:GenerateDataKey".to_string()),
                sends,
                "{env} {role}: {key_actions:?}"
            );
        }
        // The loader fans chunks out through the queue.
        let loader = role_statements(&app, "LoaderRole");
        assert!(
            loader
                .iter()
                .any(|s| actions(s).contains(&"sqs:SendMessage".to_string()))
        );
    }
}

#[test]
fn the_functions_that_read_raw_batches_may_list_the_raw_prefix() {
    for env in SHIPPED {
        let app = template(env, "app.template.json");
        for (role, lists, prefixes) in [
            ("IngestRole", true, serde_json::json!(["raw/*"])),
            // The loader also looks up its decoded copies.
            (
                "LoaderRole",
                true,
                serde_json::json!(["raw/*", "decoded/*"]),
            ),
            ("QueryRole", false, serde_json::json!([])),
        ] {
            let listing: Vec<serde_json::Value> = role_statements(&app, role)
                .into_iter()
                .filter(|s| actions(s).iter().any(|a| a.starts_with("s3:List")))
                .collect();
            if !lists {
                assert!(listing.is_empty(), "{env} {role}");
                continue;
            }
            assert_eq!(listing.len(), 1, "{env} {role}");
            let s = &listing[0];
            assert_eq!(actions(s), ["s3:ListBucket"], "{env} {role}");
            assert_eq!(s["Effect"], "Allow");
            assert_eq!(
                s["Resource"],
                serde_json::json!({"Fn::Sub": "arn:${AWS::Partition}:s3:::${RawBucketName}"})
            );
            assert_eq!(
                s["Condition"],
                serde_json::json!({"StringLike": {"s3:prefix": prefixes}}),
                "{env} {role}"
            );
        }
    }
}

/// Migrations run in a function of their own, the loader's package under
/// the only role that may read the database's admin secret: the loader,
/// which parses untrusted uploads, can neither read it nor name it.
#[test]
fn only_the_migrations_function_reads_the_admin_secret() {
    for env in SHIPPED {
        let app = template(env, "app.template.json");
        let resources = app["Resources"].as_object().expect("resources");
        for (id, resource) in resources {
            if resource["Type"] != "AWS::IAM::Role" {
                continue;
            }
            let reads = role_statements(&app, id)
                .iter()
                .any(|s| actions(s).iter().any(|a| a.starts_with("secretsmanager:")));
            assert_eq!(reads, id == "MigrateRole", "{env} {id}");
        }
        let function = |id: &str| resources[id]["Properties"].clone();
        let (migrate, loader) = (function("MigrateFunction"), function("LoaderFunction"));
        let variables = |f: &serde_json::Value| f["Environment"]["Variables"].clone();
        assert_eq!(
            variables(&migrate)["DB_SECRET_ARN"],
            serde_json::json!({"Ref": "DbSecretArn"}),
            "{env}"
        );
        assert!(variables(&loader).get("DB_SECRET_ARN").is_none(), "{env}");
        assert_eq!(
            migrate["Code"], loader["Code"],
            "{env}: the loader's package"
        );
        assert_eq!(migrate["Timeout"], 900, "{env}");
        assert_eq!(
            migrate["Role"],
            serde_json::json!({"Fn::GetAtt": ["MigrateRole", "Arn"]})
        );
        assert_eq!(
            app["Outputs"]["MigrateFunctionName"]["Value"],
            serde_json::json!({"Ref": "MigrateFunction"})
        );
    }
}

/// The functions log in with IAM and hold no password, so prod's RDS Proxy
/// authenticates them with IAM end to end: no database secrets for it, and
/// its role may connect to the primary as the writing functions' users only.
#[test]
fn the_rds_proxy_uses_iam_end_to_end() {
    let data = template("prod", "data.template.json");
    let proxy = &data["Resources"]["Proxy"]["Properties"];
    assert_eq!(proxy["DefaultAuthScheme"], "IAM_AUTH");
    assert!(proxy.get("Auth").is_none(), "{proxy}");
    assert_eq!(proxy["RequireTLS"], true);
    // The functions' pools close a connection before the proxy would.
    let idle = proxy["IdleClientTimeout"]
        .as_u64()
        .expect("IdleClientTimeout");
    assert!(
        idle > pipeline_shared::runtime::POOL_IDLE_LIMIT.as_secs(),
        "{idle}"
    );
    let statements = role_statements(&data, "ProxyRole");
    assert_eq!(statements.len(), 1, "{statements:?}");
    assert_eq!(actions(&statements[0]), ["rds-db:connect"]);
    let users: Vec<String> = statements[0]["Resource"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["Fn::Sub"].as_str())
        .map(|arn| arn.rsplit('/').next().unwrap_or("").to_string())
        .collect();
    assert_eq!(users, ["pipeline_ingest", "pipeline_loader"]);
    let resources = data["Resources"].as_object().expect("resources");
    assert!(
        !resources.contains_key("IngestDbSecret") && !resources.contains_key("LoaderDbSecret"),
        "no password secrets for the functions' users"
    );
    // The dev-sized environments have no proxy at all.
    let dev = template("dev", "data.template.json");
    assert!(dev["Resources"].get("Proxy").is_none());
}

#[test]
fn kept_resources_go_when_the_create_that_made_them_rolls_back() {
    for env in SHIPPED {
        let synthesis = synth(env);
        let mut kept = 0;
        for (name, text) in synthesis
            .files
            .iter()
            .filter(|(n, _)| n.ends_with(".template.json"))
        {
            let template: serde_json::Value = serde_json::from_str(text).expect("json");
            for (id, resource) in template["Resources"].as_object().into_iter().flatten() {
                let deletion = resource["DeletionPolicy"].as_str().unwrap_or("Delete");
                let replace = resource["UpdateReplacePolicy"].as_str().unwrap_or("Delete");
                // A retained resource with a fixed name would make the create
                // that follows a rolled-back first create fail.
                assert_ne!(deletion, "Retain", "{env}/{name} {id}");
                // UpdateReplacePolicy takes Delete, Retain or Snapshot only.
                assert!(
                    matches!(replace, "Delete" | "Retain" | "Snapshot"),
                    "{env}/{name} {id}: {replace}"
                );
                if deletion == "RetainExceptOnCreate" {
                    assert_eq!(replace, "Retain", "{env}/{name} {id}");
                    kept += 1;
                }
            }
        }
        // The bootstrap stack's bucket, role and repository at least.
        assert!(kept >= 3, "{env}: {kept}");
    }
}

#[test]
fn a_first_create_can_roll_back_and_a_deployed_database_stays_protected() {
    use pipeline_cli::synth::{Options, synthesize_with};
    let data = |first_create: bool| -> serde_json::Value {
        let mut loader = Loader::new(Some(common::repo().join("environments")));
        let env = loader.load("prod").expect("prod loads");
        let synthesis = synthesize_with(&env, Options { first_create }).expect("synth");
        let text = &synthesis
            .files
            .iter()
            .find(|(n, _)| n == "data.template.json")
            .expect("data")
            .1;
        serde_json::from_str(text).expect("json")
    };
    let instances = ["Database", "Replica1", "Replica2"];
    // A deployed database, and the updates of its stack, keep protection on.
    let deployed = data(false);
    for id in instances {
        let r = &deployed["Resources"][id];
        assert_eq!(r["Properties"]["DeletionProtection"], true, "{id}");
        let skips = r["Metadata"]["checkov"]["skip"].as_array().cloned();
        assert!(
            skips
                .unwrap_or_default()
                .iter()
                .all(|s| s["id"] != "CKV_AWS_293"),
            "{id}"
        );
    }
    // The create of the stack: a rollback must be able to delete them.
    let first = data(true);
    for id in instances {
        let r = &first["Resources"][id];
        assert_eq!(r["Properties"]["DeletionProtection"], false, "{id}");
        let skips = r["Metadata"]["checkov"]["skip"].as_array().cloned();
        assert!(
            skips
                .unwrap_or_default()
                .iter()
                .any(|s| s["id"] == "CKV_AWS_293"),
            "{id}"
        );
    }
    // Nothing else differs.
    let strip = |mut t: serde_json::Value| {
        for id in instances {
            let r = &mut t["Resources"][id];
            r["Properties"]["DeletionProtection"] = serde_json::Value::Null;
            r["Metadata"] = serde_json::Value::Null;
        }
        t
    };
    assert_eq!(strip(first), strip(deployed));
    // The default synthesis is the deployed one.
    assert_eq!(
        template("prod", "data.template.json"),
        data(false),
        "synthesize renders the update"
    );
}

#[test]
fn rollout_gates_watch_the_new_version_and_new_dead_letters_minute_by_minute() {
    use serde_json::json;
    assert_eq!(
        pipeline_cli::synth::context::gate_version_parameter(
            pipeline_cli::spec::model::FunctionId::Ingest,
        ),
        "IngestGateVersion"
    );
    let synthesis = synth("prod");
    let monitoring: serde_json::Value = serde_json::from_str(
        &synthesis
            .files
            .iter()
            .find(|(n, _)| n == "monitoring.template.json")
            .expect("monitoring")
            .1,
    )
    .expect("json");
    let alarm = |id: &str| monitoring["Resources"][id]["Properties"].clone();
    // prod gates on ingest-errors; its alarm keeps its name, watches the
    // live alias and, while a rollout names one, the new version alone.
    let errors = alarm("IngestErrorsAlarm");
    assert_eq!(errors["AlarmName"], "pipeline-prod-ingest-errors");
    assert_eq!(errors["Period"], 60);
    let alias = json!([
        {"Name": "FunctionName", "Value": "pipeline-prod-ingest"},
        {"Name": "Resource", "Value": "pipeline-prod-ingest:live"}
    ]);
    let mut version = alias.clone();
    version
        .as_array_mut()
        .expect("list")
        .push(json!({"Name": "ExecutedVersion", "Value": {"Ref": "IngestGateVersion"}}));
    assert_eq!(
        errors["Dimensions"],
        json!({"Fn::If": ["IngestGateVersionSet", version, alias]})
    );
    assert_eq!(
        monitoring["Conditions"]["IngestGateVersionSet"],
        json!({"Fn::Not": [{"Fn::Equals": [{"Ref": "IngestGateVersion"}, "all"]}]})
    );
    assert_eq!(
        monitoring["Parameters"]["IngestGateVersion"]["Default"],
        "all"
    );
    let stack = synthesis
        .manifest
        .stacks
        .iter()
        .find(|s| s.id == "monitoring")
        .expect("monitoring stack");
    let param = stack
        .parameters
        .iter()
        .find(|p| p.name == "IngestGateVersion")
        .expect("parameter");
    assert_eq!(
        param.source,
        Source::Deploy {
            value: pipeline_cli::synth::context::DeployValue::GateVersion
        }
    );
    // Not a gate of prod: five-minute periods, as before.
    let duration = alarm("IngestDurationAlarm");
    assert_eq!(duration["Period"], 300);
    assert_eq!(duration["Dimensions"]["Fn::If"][2], alias);
    assert_eq!(alarm("DbCpuAlarm")["Period"], 300);
    // Throttled requests run no version: the function's throttles.
    assert_eq!(
        alarm("IngestThrottlesAlarm")["Dimensions"],
        json!([{"Name": "FunctionName", "Value": "pipeline-prod-ingest"}])
    );
    for id in ["ApiLatencyAlarm", "ReplicaLag1Alarm", "ReplicaLag2Alarm"] {
        assert_eq!(alarm(id)["Period"], 60, "{id}");
    }
    // Dead letters: what arrived, not what has been waiting; moves by
    // redrive are not in NumberOfMessagesSent, so the depth's rise it is.
    let dead = alarm("DeadLettersAlarm");
    assert_eq!(dead["AlarmName"], "pipeline-prod-dead-letters");
    assert!(dead.get("MetricName").is_none() && dead.get("Period").is_none());
    let metrics = dead["Metrics"].as_array().expect("metric math");
    let returned: Vec<&serde_json::Value> =
        metrics.iter().filter(|m| m["ReturnData"] == true).collect();
    assert_eq!(returned.len(), 1);
    let expression = returned[0]["Expression"].as_str().expect("expression");
    assert!(expression.starts_with("DIFF("), "{expression}");
    let inputs: Vec<&serde_json::Value> = metrics
        .iter()
        .filter(|m| m["ReturnData"] == false)
        .collect();
    let names: Vec<&str> = inputs
        .iter()
        .map(|m| {
            m["MetricStat"]["Metric"]["MetricName"]
                .as_str()
                .unwrap_or("")
        })
        .collect();
    assert_eq!(
        names,
        [
            "ApproximateNumberOfMessagesVisible",
            "ApproximateNumberOfMessagesNotVisible"
        ]
    );
    for m in &inputs {
        assert!(expression.contains(m["Id"].as_str().expect("id")));
        assert_eq!(m["MetricStat"]["Period"], 60);
        assert_eq!(m["MetricStat"]["Stat"], "Maximum");
        assert_eq!(
            m["MetricStat"]["Metric"]["Dimensions"],
            json!([{"Name": "QueueName", "Value": {"Ref": "DeadLetterQueueName"}}])
        );
    }
    assert_eq!(dead["Threshold"], 1.0);
    assert_eq!(dead["ComparisonOperator"], "GreaterThanOrEqualToThreshold");
    assert_eq!(dead["DatapointsToAlarm"], 1);
    assert!(dead["EvaluationPeriods"].as_u64().unwrap_or(0) >= 15);
}

/// AWS managed policies a role may carry, and why: each grants only what
/// its service needs, on resources no template can name beforehand.
const MANAGED_POLICIES: [(&str, &str); 3] = [
    (
        "AWSXRayDaemonWriteAccess",
        "trace segments; X-Ray's actions take no resource-level permissions",
    ),
    (
        "service-role/AmazonRDSEnhancedMonitoringRole",
        "the role RDS's enhanced monitoring assumes, as the RDS guide sets it up",
    ),
    (
        "service-role/AmazonAPIGatewayPushToCloudWatchLogs",
        "the account-wide role API Gateway writes access logs with; its log groups are named by API Gateway",
    ),
];

/// Actions that take no resource-level permissions (EC2's service
/// authorization reference), so that only `*` names their resource.
const UNSCOPED_ACTIONS: [&str; 2] = ["ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets"];

/// Resources named by a wildcard because AWS, not the project, names them:
/// the network interfaces Lambda makes in the functions' subnets.
const AWS_NAMED_RESOURCES: [&str; 1] = [":network-interface/*"];

/// Whether a statement's resource names something of the project: a
/// reference to one of the stack's resources or parameters, or an ARN that
/// takes a name from one of them (not only the partition, region and
/// account), or one of [`AWS_NAMED_RESOURCES`].
fn names_the_project(resource: &serde_json::Value) -> bool {
    if resource.get("Ref").is_some() || resource.get("Fn::GetAtt").is_some() {
        return true;
    }
    let Some(sub) = resource.get("Fn::Sub") else {
        return false;
    };
    let text = sub
        .as_str()
        .or_else(|| sub.get(0).and_then(|s| s.as_str()))
        .unwrap_or("");
    let own_name = text
        .split("${")
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name))
        .any(|name| !name.starts_with("AWS::"));
    own_name || AWS_NAMED_RESOURCES.iter().any(|r| text.ends_with(r))
}

/// Every statement of every role of every shipped environment: no action
/// with a wildcard; `*` as a resource only for actions that take nothing
/// else; every other resource one of the project's; managed policies only
/// from the list above (and on a function's role only X-Ray's). Before, each
/// function role carried AWSLambdaVPCAccessExecutionRole, which grants log
/// writes and network interface actions on every resource.
#[test]
fn every_role_is_least_privilege() {
    for env in SHIPPED {
        for (file, text) in synth(env).files {
            let Ok(template) = serde_json::from_str::<serde_json::Value>(&text) else {
                continue;
            };
            let resources = template["Resources"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            for (id, resource) in resources {
                if resource["Type"] != "AWS::IAM::Role" {
                    continue;
                }
                let at = format!("{env} {file} {id}");
                check_managed_policies(&at, &resource);
                let statements = resource["Properties"]["Policies"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|p| {
                        p["PolicyDocument"]["Statement"]
                            .as_array()
                            .cloned()
                            .unwrap_or_default()
                    });
                for statement in statements {
                    check_statement(&at, &statement);
                }
            }
        }
    }
}

fn check_managed_policies(at: &str, role: &serde_json::Value) {
    let function_role = role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]
        ["Service"]
        == "lambda.amazonaws.com";
    for arn in role["Properties"]["ManagedPolicyArns"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let arn = arn["Fn::Sub"].as_str().unwrap_or_default();
        let name = arn.split(":policy/").nth(1).unwrap_or(arn);
        assert!(
            MANAGED_POLICIES.iter().any(|(allowed, _)| *allowed == name),
            "{at}: managed policy {name} is not in the allowed list"
        );
        assert!(
            !function_role || name == "AWSXRayDaemonWriteAccess",
            "{at}: a function's role carries {name}"
        );
    }
}

fn check_statement(at: &str, statement: &serde_json::Value) {
    let sid = statement["Sid"].as_str().unwrap_or("(no Sid)");
    let acts = actions(statement);
    assert!(!acts.is_empty(), "{at} {sid}: no action");
    for action in &acts {
        assert!(!action.contains('*'), "{at} {sid}: action {action}");
    }
    let resources = match &statement["Resource"] {
        serde_json::Value::Array(list) => list.clone(),
        one => vec![one.clone()],
    };
    for resource in &resources {
        if resource == "*" {
            assert!(
                acts.iter().all(|a| UNSCOPED_ACTIONS.contains(&a.as_str())),
                "{at} {sid}: `*` as the resource of {acts:?}"
            );
        } else {
            assert!(
                names_the_project(resource),
                "{at} {sid}: {resource} is not one of the project's resources"
            );
        }
    }
}

/// Prod and uat: every operation takes an access token with a scope of
/// its own (no API key alone), in the template's API body and in the
/// clients' document alike; a WAF web ACL is associated with the stage.
#[test]
fn prod_like_apis_take_scoped_tokens_behind_a_web_acl() {
    for env in ["uat", "prod"] {
        let app = template(env, "app.template.json");
        let resources = app["Resources"].as_object().expect("resources");
        // uat meters its clients with API keys, which go beside the tokens.
        let keys = resources
            .values()
            .filter(|r| r["Type"] == "AWS::ApiGateway::ApiKey")
            .count();
        assert_eq!(keys, if env == "uat" { 2 } else { 0 }, "{env}");
        let association = &resources["ApiWebAclAssociation"]["Properties"];
        assert_eq!(
            association["WebACLArn"],
            serde_json::json!({"Fn::GetAtt": ["ApiWebAcl", "Arn"]})
        );
        assert!(
            association["ResourceArn"]["Fn::Sub"]
                .as_str()
                .is_some_and(|arn| arn.ends_with("/restapis/${Api}/stages/${ApiStage}"))
        );
        let files = synth(env).files;
        let public: serde_json::Value = serde_json::from_str(
            &files
                .iter()
                .find(|(n, _)| n == "openapi.json")
                .expect("openapi.json")
                .1,
        )
        .expect("json");
        let body = &resources["Api"]["Properties"]["Body"];
        for doc in [body, &public] {
            let scheme = &doc["components"]["securitySchemes"]["cognito"];
            assert!(!scheme.is_null(), "{env}: no cognito scheme");
            for (path, item) in doc["paths"].as_object().expect("paths") {
                for (method, operation) in item.as_object().expect("operation") {
                    if method == "options" {
                        continue;
                    }
                    let requirement = &operation["security"][0];
                    assert_eq!(
                        requirement.get("api_key").is_some(),
                        keys > 0,
                        "{env} {method} {path}: {operation}"
                    );
                    let scopes = requirement["cognito"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default();
                    assert!(!scopes.is_empty(), "{env} {method} {path}: {operation}");
                    assert!(
                        scopes
                            .iter()
                            .all(|s| s.as_str().is_some_and(|s| s.starts_with("pipeline/"))),
                        "{env} {method} {path}: {scopes:?}"
                    );
                }
            }
        }
        let flow =
            &public["components"]["securitySchemes"]["cognito"]["flows"]["clientCredentials"];
        assert_eq!(
            flow["scopes"].as_object().map(|s| s.len()),
            Some(4),
            "{env}: {flow}"
        );
    }
}

/// The API's stage has an X-Ray sampling rule of its own: the first
/// request each second and `monitoring.trace_percent` of the rest (prod 1,
/// the default 5, X-Ray's own). Before, nothing set the rate.
#[test]
fn the_stage_samples_traces_at_the_specs_rate() {
    for (env, rate) in [("dev", 0.05), ("prod", 0.01)] {
        let app = template(env, "app.template.json");
        let rule = &app["Resources"]["ApiTraceSampling"]["Properties"]["SamplingRule"];
        assert_eq!(rule["FixedRate"].as_f64(), Some(rate), "{env}: {rule}");
        assert_eq!(rule["ReservoirSize"], 1);
        assert_eq!(rule["ServiceName"], format!("pipeline-{env}-api/live"));
        assert_eq!(rule["ServiceType"], "AWS::ApiGateway::Stage");
    }
}
