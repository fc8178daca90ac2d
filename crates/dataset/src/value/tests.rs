use super::*;

fn column(kind: ColumnType, edit: impl FnOnce(&mut Column)) -> Column {
    let mut c = Column::new("c", kind);
    edit(&mut c);
    c
}

fn messages(c: &Column) -> Vec<String> {
    c.value_problems().into_iter().map(|p| p.message).collect()
}

#[test]
fn formats_that_read_back_what_they_write_are_accepted() {
    for (kind, format) in [
        (ColumnType::Date, "%Y/%m/%d"),
        (ColumnType::Date, "%d.%m.%Y"),
        (ColumnType::Date, "%m/%d/%y"),
        (ColumnType::Date, "%d %b %Y"),
        (ColumnType::Timestamptz, "%Y-%m-%d %H:%M:%S"),
        (ColumnType::Timestamptz, "%d/%m/%Y %H:%M"),
        (ColumnType::Timestamptz, "%Y-%m-%dT%H:%M:%S%.f%:z"),
        (ColumnType::Timestamptz, "%m/%d/%Y %I:%M %p"),
        (ColumnType::Timestamptz, "epoch_seconds"),
        (ColumnType::Timestamptz, "epoch_millis"),
    ] {
        let c = column(kind, |c| c.format = Some(format.into()));
        assert_eq!(messages(&c), Vec::<String>::new(), "{format}");
    }
}

#[test]
fn each_misplaced_or_unusable_option_is_a_problem() {
    let cases: Vec<(Column, &str, &str)> = vec![
        (
            column(ColumnType::Date, |c| c.format = Some("%Y/%m".into())),
            "format",
            "column `c`: the format `%Y/%m` does not give a whole date",
        ),
        (
            column(ColumnType::Date, |c| c.format = Some("%Q".into())),
            "format",
            "column `c`: the format `%Q` is not a valid strftime pattern",
        ),
        (
            column(ColumnType::Timestamptz, |c| {
                c.format = Some("%Y-%m-%d".into())
            }),
            "format",
            "column `c`: the format `%Y-%m-%d` does not give a whole date and time",
        ),
        (
            column(ColumnType::Date, |c| {
                c.format = Some("epoch_seconds".into())
            }),
            "format",
            "column `c`: `epoch_seconds` is for timestamps, not dates",
        ),
        (
            column(ColumnType::Int, |c| c.format = Some("%Y".into())),
            "format",
            "column `c` is integer: only date and timestamptz columns take a `format`",
        ),
        (
            column(ColumnType::Timestamptz, |c| {
                c.format = Some("%Y-%m-%d %H:%M".into());
                c.timezone = Some("Paris time".into());
            }),
            "timezone",
            "column `c`: `Paris time` is not a time zone",
        ),
        (
            column(ColumnType::Timestamptz, |c| c.timezone = Some("UTC".into())),
            "timezone",
            "column `c`: `timezone` applies only to a timestamptz whose `format` has no offset",
        ),
        (
            column(ColumnType::Timestamptz, |c| {
                c.format = Some("%Y-%m-%d %H:%M%z".into());
                c.timezone = Some("+01:00".into());
            }),
            "timezone",
            "column `c`: `timezone` applies only to a timestamptz whose `format` has no offset",
        ),
        (
            column(ColumnType::Int, |c| c.decimal = Some(DecimalMark::Comma)),
            "decimal",
            "column `c`: only numeric and float columns take a `decimal` mark",
        ),
        (
            column(ColumnType::Text, |c| c.true_values = Some(vec!["Y".into()])),
            "true_values",
            "column `c`: only bool columns take `true_values`",
        ),
        (
            column(ColumnType::Bool, |c| c.false_values = Some(vec![])),
            "false_values",
            "column `c`: `false_values` lists no word, or an empty one",
        ),
        (
            column(ColumnType::Bool, |c| {
                c.true_values = Some(vec!["No".into()])
            }),
            "true_values",
            "column `c`: `No` would be read as both true and false",
        ),
    ];
    for (c, key, message) in cases {
        let problems = c.value_problems();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].path, vec![key.to_string()]);
        assert_eq!(problems[0].message, message);
        assert!(problems[0].help.is_some());
    }
}

#[test]
fn time_zones_are_utc_offsets_or_names() {
    assert_eq!(Timezone::parse("UTC"), Some(Timezone::Utc));
    assert_eq!(
        Timezone::parse("-05:30"),
        Some(Timezone::Offset("-05:30".into()))
    );
    assert_eq!(
        Timezone::parse("America/Argentina/Buenos_Aires"),
        Some(Timezone::Named("America/Argentina/Buenos_Aires".into()))
    );
    assert_eq!(
        Timezone::parse("Etc/GMT+3"),
        Some(Timezone::Named("Etc/GMT+3".into()))
    );
    for bad in [
        "",
        "+1:00",
        "+16:00",
        "Europe/",
        "/Paris",
        "Paris time",
        "01:00",
    ] {
        assert_eq!(Timezone::parse(bad), None, "{bad}");
    }
}

#[test]
fn documents_say_how_values_are_written() {
    let c = column(ColumnType::Date, |c| c.format = Some("%Y/%m/%d".into()));
    assert_eq!(
        c.written_as().as_deref(),
        Some("written as `%Y/%m/%d`, such as 2024/01/31")
    );
    let c = column(ColumnType::Timestamptz, |c| {
        c.format = Some("%d.%m.%Y %H:%M".into());
        c.timezone = Some("Europe/Berlin".into());
    });
    assert_eq!(
        c.written_as().as_deref(),
        Some("written as `%d.%m.%Y %H:%M`, such as 31.01.2024 13:45, in Europe/Berlin")
    );
    let c = column(ColumnType::Timestamptz, |c| {
        c.format = Some("epoch_millis".into())
    });
    assert_eq!(
        c.written_as().as_deref(),
        Some("written as milliseconds since 1970-01-01 UTC")
    );
    assert_eq!(sample_value(&c).as_deref(), Some("1706708730000"));
    let c = column(ColumnType::Bool, |c| c.true_values = Some(vec!["Y".into()]));
    assert_eq!(
        c.written_as().as_deref(),
        Some("true as Y, false as false or f or 0 or no")
    );
    assert_eq!(column(ColumnType::Date, |_| {}).written_as(), None);
}
