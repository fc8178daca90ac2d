//! `pipeline logs`: a function's log events from CloudWatch Logs, as far
//! back as `--since`, filtered, and followed with `--follow`.

use crate::synth::StackKind;
use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use serde::Serialize;

use super::Cli;
use super::load;
use crate::aws::{AwsArgs, aws_error, runtime};
use crate::deploy::Session;
use crate::{Error, output::Ui};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Environment whose function to read.
    #[arg(short, long = "env", value_name = "ENV")]
    pub env: String,
    /// The function.
    #[arg(short, long, value_parser = super::rollout::function_name())]
    pub function: crate::spec::model::FunctionId,
    /// How far back to start: seconds, minutes, hours or days (`30s`, `10m`, `2h`, `1d`).
    #[arg(long, default_value = "10m", value_parser = parse_since)]
    pub since: Duration,
    /// Keep printing new events until Ctrl-C.
    #[arg(long)]
    pub follow: bool,
    /// CloudWatch Logs filter pattern, such as `ERROR` or `"batch failed"`.
    #[arg(long, value_name = "PATTERN")]
    pub filter: Option<String>,
    #[command(flatten)]
    pub aws: AwsArgs,
}

/// Parses `90s`, `10m`, `2h`, `1d` (a bare number is seconds).
pub fn parse_since(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, "s"), |i| text.split_at(i));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration such as 30s, 10m, 2h or 1d"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("`{text}`: the unit is one of s, m, h, d")),
    };
    Ok(Duration::from_secs(n * seconds))
}

/// One log event.
#[derive(Debug, Serialize)]
pub struct LogLine {
    pub timestamp: String,
    pub stream: String,
    pub message: String,
}

impl fmt::Display for LogLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} {}", self.timestamp, self.message.trim_end())
    }
}

pub fn run(cli: &Cli, args: &Args, ui: &Ui) -> Result<(), Error> {
    let (env, synthesis) = load(cli, &args.env, ui)?;
    runtime()?.block_on(async {
        let session = Session::open(env, synthesis, &args.aws).await;
        let monitoring = session
            .stacks()
            .await?
            .into_iter()
            .find(|(m, _)| m.id == StackKind::Monitoring.id())
            .and_then(|(_, s)| s);
        let key = crate::deploy::function_key(args.function, "LogGroupName");
        let group = monitoring
            .and_then(|s| s.outputs.get(&key).cloned())
            .ok_or_else(|| Error::Rejected {
                message: format!(
                    "`{}` has no log group for {}: its monitoring stack is not deployed",
                    session.env.name, args.function
                ),
            })?;
        let start = chrono::Utc::now().timestamp_millis() - args.since.as_millis() as i64;
        let follow = async {
            let mut from = start;
            let mut seen: HashSet<String> = HashSet::new();
            loop {
                let (last, ids) = print_events(&session, &group, from, &seen, args, ui).await?;
                if last > from {
                    seen.clear();
                    from = last;
                }
                seen.extend(ids);
                if !args.follow {
                    return Ok::<_, Error>(());
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        };
        tokio::select! {
            r = follow => r,
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })
}

/// Prints the events from `from` (milliseconds) on, but those already
/// seen; the newest timestamp and the ids printed at it.
async fn print_events(
    session: &Session,
    group: &str,
    from: i64,
    seen: &HashSet<String>,
    args: &Args,
    ui: &Ui,
) -> Result<(i64, Vec<String>), Error> {
    let mut last = from;
    let mut at_last = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let out = session
            .clients
            .logs
            .filter_log_events()
            .log_group_name(group)
            .start_time(from)
            .set_filter_pattern(args.filter.clone())
            .set_next_token(token.take())
            .send()
            .await
            .map_err(|e| aws_error(&format!("cannot read the log group {group}"), e))?;
        for e in out.events() {
            let id = e.event_id().unwrap_or_default().to_string();
            if seen.contains(&id) {
                continue;
            }
            let ts = e.timestamp().unwrap_or(from);
            if ts > last {
                last = ts;
                at_last.clear();
            }
            at_last.push(id);
            ui.event(&LogLine {
                timestamp: chrono::DateTime::from_timestamp_millis(ts)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                    .unwrap_or_default(),
                stream: e.log_stream_name().unwrap_or_default().to_string(),
                message: e.message().unwrap_or_default().to_string(),
            });
        }
        token = out.next_token().map(str::to_string);
        if token.is_none() {
            return Ok((last, at_last));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_a_unit() {
        assert_eq!(parse_since("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_since("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_since("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_since("1d"), Ok(Duration::from_secs(86400)));
        assert_eq!(
            parse_since("5w"),
            Err("`5w`: the unit is one of s, m, h, d".to_string())
        );
        assert_eq!(
            parse_since("m"),
            Err("`m` is not a duration such as 30s, 10m, 2h or 1d".to_string())
        );
    }
}
