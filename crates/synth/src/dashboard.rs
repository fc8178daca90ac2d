//! The CloudWatch dashboard's body.

use serde_json::{Value, json};

use super::context::{Alarm, api_name, function_name};
use pipeline_spec::Spec;

fn widget(x: u32, y: u32, title: &str, metrics: Vec<Value>, stat: &str) -> Value {
    json!({
        "type": "metric",
        "x": x,
        "y": y,
        "width": 12,
        "height": 6,
        "properties": {
            "title": title,
            "region": "${AWS::Region}",
            "view": "timeSeries",
            "stat": stat,
            "period": 300,
            "metrics": metrics,
        }
    })
}

/// The body as a JSON string for `Fn::Sub`: `${AWS::Region}` and the
/// database and queue parameters are filled in by CloudFormation.
pub fn body(prefix: &str, spec: &Spec, alarms: &[Alarm]) -> String {
    let mut widgets = Vec::new();
    let mut y = 0;
    for (name, _) in spec.functions.all() {
        let f = function_name(prefix, name);
        widgets.push(widget(
            0,
            y,
            &format!("{name}: invocations, errors, throttles"),
            vec![
                json!(["AWS/Lambda", "Invocations", "FunctionName", f]),
                json!(["AWS/Lambda", "Errors", "FunctionName", f]),
                json!(["AWS/Lambda", "Throttles", "FunctionName", f]),
            ],
            "Sum",
        ));
        widgets.push(widget(
            12,
            y,
            &format!("{name}: duration p50 / p99 (ms)"),
            vec![
                json!(["AWS/Lambda", "Duration", "FunctionName", f, {"stat": "p50"}]),
                json!(["AWS/Lambda", "Duration", "FunctionName", f, {"stat": "p99"}]),
            ],
            "p99",
        ));
        y += 6;
    }
    let api = api_name(prefix);
    widgets.push(widget(
        0,
        y,
        "API: requests and errors",
        vec![
            json!(["AWS/ApiGateway", "Count", "ApiName", api]),
            json!(["AWS/ApiGateway", "4XXError", "ApiName", api]),
            json!(["AWS/ApiGateway", "5XXError", "ApiName", api]),
        ],
        "Sum",
    ));
    widgets.push(widget(
        12,
        y,
        "API: latency p50 / p99 (ms)",
        vec![
            json!(["AWS/ApiGateway", "Latency", "ApiName", api, {"stat": "p50"}]),
            json!(["AWS/ApiGateway", "Latency", "ApiName", api, {"stat": "p99"}]),
        ],
        "p99",
    ));
    y += 6;
    widgets.push(widget(
        0,
        y,
        "queue: depth, oldest message (s), dead letters",
        vec![
            json!(["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", "${QueueName}"]),
            json!(["AWS/SQS", "ApproximateAgeOfOldestMessage", "QueueName", "${QueueName}", {"stat": "Maximum"}]),
            json!(["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", "${DeadLetterQueueName}"]),
        ],
        "Maximum",
    ));
    let mut db = vec![
        json!([
            "AWS/RDS",
            "CPUUtilization",
            "DBInstanceIdentifier",
            "${DbInstanceId}"
        ]),
        json!([
            "AWS/RDS",
            "DatabaseConnections",
            "DBInstanceIdentifier",
            "${DbInstanceId}"
        ]),
    ];
    for i in 1..=spec.database.read_replicas {
        db.push(json!([
            "AWS/RDS",
            "ReplicaLag",
            "DBInstanceIdentifier",
            format!("${{Replica{i}InstanceId}}")
        ]));
    }
    widgets.push(widget(
        12,
        y,
        "database: CPU %, connections, replica lag (s)",
        db,
        "Average",
    ));
    y += 6;
    let alarm_arns: Vec<String> = alarms
        .iter()
        .map(|a| {
            format!(
                "arn:${{AWS::Partition}}:cloudwatch:${{AWS::Region}}:${{AWS::AccountId}}:alarm:{}",
                a.name
            )
        })
        .collect();
    widgets.push(json!({
        "type": "alarm",
        "x": 0,
        "y": y,
        "width": 24,
        "height": 4,
        "properties": {"title": "alarms", "alarms": alarm_arns},
    }));
    json!({ "widgets": widgets }).to_string()
}
