//! An error with its causes, as one line (the SDKs, reqwest and rustls
//! put the useful part of a failure in its sources).

/// The error's message and the messages of its causes, as one line.
pub fn message_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = s.source();
    }
    message
}
