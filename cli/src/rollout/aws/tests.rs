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
