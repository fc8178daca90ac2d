//! One deploy at a time per environment: a lock object in the assets
//! bucket, written only if absent (an S3 conditional write).

use serde::Serialize;

use super::Session;
use crate::Error;
use crate::aws::aws_error;

/// One deploy at a time per environment: an object in the assets bucket,
/// created only if absent (an S3 conditional write), removed at the end.
pub struct Lock {
    bucket: String,
    key: String,
}

#[derive(Debug, Serialize, serde::Deserialize)]
struct LockRecord {
    started_at: String,
    by: String,
    pid: u32,
}

impl Lock {
    pub async fn acquire(session: &Session, bucket: &str, force: bool) -> Result<Lock, Error> {
        let lock = Lock {
            bucket: bucket.to_string(),
            key: format!("locks/{}.json", session.env.name),
        };
        let s3 = &session.clients.s3;
        if force {
            lock.release(session).await;
        }
        let record = LockRecord {
            started_at: chrono::Utc::now().to_rfc3339(),
            by: std::env::var("USER")
                .or_else(|_| std::env::var("GITHUB_ACTOR"))
                .unwrap_or_else(|_| "unknown".into()),
            pid: std::process::id(),
        };
        let body = serde_json::to_vec(&record).unwrap_or_default();
        let put = s3
            .put_object()
            .bucket(bucket)
            .key(&lock.key)
            .if_none_match("*")
            .body(body.into())
            .send()
            .await;
        match put {
            Ok(_) => Ok(lock),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 412) => {
                let holder =
                    match s3.get_object().bucket(bucket).key(&lock.key).send().await {
                        Ok(o) => o.body.collect().await.ok().and_then(|b| {
                            serde_json::from_slice::<LockRecord>(&b.into_bytes()).ok()
                        }),
                        Err(_) => None,
                    };
                let who = holder
                    .map(|h| format!(" (started {} by {}, pid {})", h.started_at, h.by, h.pid))
                    .unwrap_or_default();
                Err(Error::Refused {
                    message: format!(
                        "another deploy of `{}` is in progress{who}",
                        session.env.name
                    ),
                    help: Some(
                        "wait for it to finish; if it died, deploy again with --force-unlock"
                            .into(),
                    ),
                })
            }
            Err(e) => Err(aws_error("cannot take the deploy lock", e)),
        }
    }

    pub async fn release(&self, session: &Session) {
        let deleted = session
            .clients
            .s3
            .delete_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .send()
            .await;
        if let Err(e) = deleted {
            tracing::warn!(
                "cannot remove the deploy lock s3://{}/{}: {e}",
                self.bucket,
                self.key
            );
        }
    }
}
