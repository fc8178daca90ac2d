use super::super::Alarm;

fn alarm(name: &str, state: &str, reason: &str) -> Alarm {
    Alarm {
        name: name.into(),
        state: state.into(),
        reason: reason.into(),
    }
}

#[test]
fn describe_alarms_answers_are_read() {
    let xml = r#"<?xml version="1.0"?><DescribeAlarmsResponse xmlns="http://monitoring.amazonaws.com/doc/2010-08-01/"><DescribeAlarmsResult><MetricAlarms>
<member><AlarmName>p-uat-ingest-errors</AlarmName><Dimensions><member><Name>FunctionName</Name><Value>p</Value></member></Dimensions>
<StateValue>ALARM</StateValue><StateReason>Threshold Crossed: 2 &gt; 1</StateReason></member>
<member><StateReason>fine</StateReason><AlarmActions><member>arn:aws:sns:eu-west-1:1:t</member></AlarmActions><StateValue>OK</StateValue><AlarmName>p-uat-api-5xx</AlarmName><Unit/></member>
</MetricAlarms><CompositeAlarms><member><AlarmRule>ALARM(&quot;a&quot;)</AlarmRule><AlarmName>p-uat-any</AlarmName><StateValue>INSUFFICIENT_DATA</StateValue><StateReason>new</StateReason></member></CompositeAlarms>
<NextToken>page-2</NextToken></DescribeAlarmsResult><ResponseMetadata><RequestId>x</RequestId></ResponseMetadata></DescribeAlarmsResponse>"#;
    assert_eq!(
        super::parse_alarms(xml),
        super::AlarmsPage {
            alarms: vec![
                alarm("p-uat-ingest-errors", "ALARM", "Threshold Crossed: 2 > 1"),
                alarm("p-uat-api-5xx", "OK", "fine"),
                alarm("p-uat-any", "INSUFFICIENT_DATA", "new"),
            ],
            next_token: Some("page-2".into()),
        }
    );
    let last = "<DescribeAlarmsResponse><DescribeAlarmsResult><MetricAlarms/><CompositeAlarms/></DescribeAlarmsResult></DescribeAlarmsResponse>";
    assert_eq!(super::parse_alarms(last), super::AlarmsPage::default());
}

#[test]
fn throttling_and_server_errors_are_tried_again() {
    let throttled = r#"<ErrorResponse xmlns="http://monitoring.amazonaws.com/doc/2010-08-01/"><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>1</RequestId></ErrorResponse>"#;
    assert!(super::retryable(400, throttled));
    assert!(super::retryable(503, ""));
    let denied = throttled.replace("Throttling", "AccessDenied");
    assert!(!super::retryable(403, &denied));
    assert!(!super::retryable(400, &denied));
    assert_eq!(super::error_message(throttled), "Rate exceeded");
    for attempt in 1..10 {
        assert!(super::backoff(attempt) <= super::RETRY_CAP);
    }
}

/// Every setting a published version freezes tells two configurations apart:
/// a change of tracing, subnets, log group, KMS key, layers or ephemeral
/// storage alone gets a new version (before, only code, memory, timeout,
/// role, handler, runtime, architectures and variables did).
#[test]
fn a_configuration_only_change_is_a_new_version() {
    use aws_sdk_lambda::operation::get_function_configuration::GetFunctionConfigurationOutput as Config;
    use aws_sdk_lambda::types::{
        EphemeralStorage, Layer, LoggingConfig, TracingConfigResponse, TracingMode,
        VpcConfigResponse,
    };
    let base = || {
        Config::builder()
            .code_sha256("abc")
            .memory_size(512)
            .timeout(300)
            .tracing_config(
                TracingConfigResponse::builder()
                    .mode(TracingMode::PassThrough)
                    .build(),
            )
            .vpc_config(
                VpcConfigResponse::builder()
                    .subnet_ids("subnet-a")
                    .subnet_ids("subnet-b")
                    .security_group_ids("sg-1")
                    .build(),
            )
            .logging_config(
                LoggingConfig::builder()
                    .log_group("/pipeline/uat/loader")
                    .build(),
            )
            .kms_key_arn("arn:aws:kms:eu-west-1:1:key/a")
    };
    let same = base().build();
    assert_eq!(
        super::fingerprint(&base().build()),
        super::fingerprint(&same)
    );
    // The same subnets listed in another order are the same configuration.
    let reordered = base()
        .vpc_config(
            VpcConfigResponse::builder()
                .subnet_ids("subnet-b")
                .subnet_ids("subnet-a")
                .security_group_ids("sg-1")
                .build(),
        )
        .build();
    assert_eq!(super::fingerprint(&reordered), super::fingerprint(&same));
    let changes = [
        (
            "tracing",
            base()
                .tracing_config(
                    TracingConfigResponse::builder()
                        .mode(TracingMode::Active)
                        .build(),
                )
                .build(),
        ),
        (
            "subnets",
            base()
                .vpc_config(
                    VpcConfigResponse::builder()
                        .subnet_ids("subnet-c")
                        .security_group_ids("sg-1")
                        .build(),
                )
                .build(),
        ),
        (
            "log group",
            base()
                .logging_config(LoggingConfig::builder().log_group("/other").build())
                .build(),
        ),
        (
            "KMS key",
            base().kms_key_arn("arn:aws:kms:eu-west-1:1:key/b").build(),
        ),
        (
            "layers",
            base()
                .layers(
                    Layer::builder()
                        .arn("arn:aws:lambda:eu-west-1:1:layer:x:1")
                        .build(),
                )
                .build(),
        ),
        (
            "ephemeral storage",
            base()
                .ephemeral_storage(
                    EphemeralStorage::builder()
                        .size(1024)
                        .build()
                        .expect("size"),
                )
                .build(),
        ),
    ];
    for (what, changed) in changes {
        assert_ne!(
            super::fingerprint(&changed),
            super::fingerprint(&same),
            "a change of {what} kept the version"
        );
    }
}
